#!/usr/bin/python3
"""idle.py HOST PORT USER DB N: opens N client connections (plain TCP, trust authentication),
waits for each one's ReadyForQuery, then holds them all open until stdin closes. Prints
"ready N" once all are up, or "failed K: reason" for the first failures."""
import asyncio
import struct
import sys


async def one(host, port, user, db):
    r, w = await asyncio.open_connection(host, port)
    body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    w.write(struct.pack("!I", len(body) + 4) + body)
    while True:
        hdr = await r.readexactly(5)
        n = struct.unpack("!I", hdr[1:5])[0]
        data = await r.readexactly(n - 4)
        if hdr[0:1] == b"Z":
            return r, w
        if hdr[0:1] == b"E":
            raise RuntimeError(data.decode(errors="replace"))


async def main():
    host, port, user, db, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    conns, failed = [], []
    sem = asyncio.Semaphore(200)

    async def guarded():
        async with sem:
            try:
                conns.append(await one(host, port, user, db))
            except Exception as e:  # noqa: BLE001 - report and go on
                failed.append(str(e))

    await asyncio.gather(*(guarded() for _ in range(n)))
    if failed:
        print(f"failed {len(failed)}: {failed[0][:200]}", flush=True)
    print(f"ready {len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, w in conns:
        w.close()


asyncio.run(main())
