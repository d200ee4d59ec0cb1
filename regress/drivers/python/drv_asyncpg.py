"""drv_asyncpg: the asyncpg leg of pgtide's driver matrix (see drvcommon for the target).

asyncpg speaks the extended protocol with binary formats and named prepared statements (its
statement cache) throughout. Covers DDL, DML, parameters, explicit prepared statements, a
rolled-back transaction, COPY in and out, a 100,000-row result, LISTEN/NOTIFY, cancel of pg_sleep
(by timeout, which sends a CancelRequest), a syntax error (42601) then recovery, and a wrong
password (28P01).
"""
import asyncio
import hashlib
import io
import time

import asyncpg

from drvcommon import DB, HOST, PASSWORD, PORT, USER, check, copy_text_rows, ok


async def connect(password=PASSWORD):
    return await asyncpg.connect(host=HOST, port=PORT, user=USER, password=password,
                                 database=DB, ssl="require", timeout=10)


async def main():
    conn = await connect()
    check(conn.get_server_pid() != 0, "connected")
    await conn.execute("SET client_min_messages = warning")
    await conn.execute("DROP TABLE IF EXISTS drv_apg_items")
    await conn.execute("CREATE TABLE drv_apg_items (id int PRIMARY KEY, name text, "
                       "ts timestamptz, vals int[], price numeric)")
    await conn.executemany("INSERT INTO drv_apg_items VALUES ($1, $2, now(), $3, $4)",
                           [(i, f"n{i}", [i, i * 2], i / 4) for i in range(1, 51)])
    await conn.execute("UPDATE drv_apg_items SET name = $1 WHERE id = $2", "it's \"x\"", 5)
    status = await conn.execute("DELETE FROM drv_apg_items WHERE id > $1", 40)
    check(status == "DELETE 10", f"delete status {status}")
    row = await conn.fetchrow("SELECT name, vals, price FROM drv_apg_items WHERE id = $1", 5)
    check(row["name"] == "it's \"x\"" and row["vals"] == [5, 10] and float(row["price"]) == 1.25,
          f"param round trip {row}")
    ok("ddl/dml/parameters (binary)")

    stmt = await conn.prepare("SELECT id, vals FROM drv_apg_items WHERE id = ANY($1::int[]) "
                              "ORDER BY id")
    for _ in range(3):
        rows = await stmt.fetch([1, 2, 3])
        check([r["id"] for r in rows] == [1, 2, 3], "prepared fetch")
    check(await stmt.fetchval([4]) == 4, "prepared fetchval")
    ok("prepared statements")

    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO drv_apg_items VALUES (999, 'gone')")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    check(await conn.fetchval("SELECT count(*) FROM drv_apg_items WHERE id = 999") == 0,
          "rollback")
    ok("rollback")

    await conn.execute("CREATE TEMP TABLE drv_apg_copy (id int, t text)")
    payload = copy_text_rows(30000).encode()
    res = await conn.copy_to_table("drv_apg_copy", source=io.BytesIO(payload))
    check(res == "COPY 30000", f"copy in status {res}")
    out = io.BytesIO()
    await conn.copy_from_query("SELECT * FROM drv_apg_copy ORDER BY id", output=out)
    check(out.getvalue() == payload, "copy out == copy in")
    ok("copy in/out")

    rows = await conn.fetch("SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
    check(len(rows) == 100000, "100k rows")
    check(all(r[0] == i + 1 and r[1] == hashlib.md5(str(i + 1).encode()).hexdigest()
              for i, r in enumerate(rows)), "100k row contents")
    ok("100000-row result")

    got = asyncio.get_running_loop().create_future()
    await conn.add_listener("drv_apg_chan", lambda c, pid, ch, p: got.done() or
                            got.set_result((ch, p)))
    other = await connect()
    await other.execute("NOTIFY drv_apg_chan, 'hello asyncpg'")
    note = await asyncio.wait_for(got, 15)
    check(note == ("drv_apg_chan", "hello asyncpg"), f"notify {note}")
    ok("listen/notify")

    start = time.time()
    try:
        await conn.fetch("SELECT pg_sleep(60) /* drv_apg_cancel */", timeout=1)
        check(False, "pg_sleep was not cancelled")
    except asyncio.TimeoutError:
        pass
    check(time.time() - start < 20, "cancel took too long")
    for _ in range(50):
        busy = await other.fetchval("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                                    " AND query LIKE '%drv_apg_cancel%' AND pid <> "
                                    "pg_backend_pid()")
        if busy == 0:
            break
        await asyncio.sleep(0.2)
    check(busy == 0, "the cancelled pg_sleep is still running on the server")
    check(await conn.fetchval("SELECT 1") == 1, "alive after cancel")
    # an explicit server-side cancel error: statement_timeout raises 57014 too
    try:
        await conn.execute("SET statement_timeout = '200ms'; SELECT pg_sleep(5)")
        check(False, "statement_timeout did not fire")
    except asyncpg.exceptions.QueryCanceledError as e:
        check(e.sqlstate == "57014", f"sqlstate {e.sqlstate}")
    await conn.execute("RESET statement_timeout")
    ok("cancel (CancelRequest) and 57014")

    try:
        await conn.execute("SELEC 1")
        check(False, "syntax error accepted")
    except asyncpg.exceptions.PostgresSyntaxError as e:
        check(e.sqlstate == "42601", f"syntax sqlstate {e.sqlstate}")
    check(await conn.fetchval("SELECT $1::int", 2) == 2, "recovery after syntax error")
    ok("syntax error 42601 then recovery")

    await conn.execute("DROP TABLE drv_apg_items")
    await other.close()
    await conn.close()

    try:
        await connect("wrong-password")
        check(False, "wrong password accepted")
    except asyncpg.exceptions.InvalidPasswordError as e:
        check(e.sqlstate == "28P01", f"wrong password sqlstate {e.sqlstate}")
    ok("wrong password 28P01")
    print("all ok")


asyncio.run(main())
