#!/usr/bin/python3
"""t_accounting_crash: kill -9 of pgtide while the compute runs loses at most one heartbeat of
usage, and a torn ledger tail is skipped by `pgtide usage` and cut by the next start.

pgtide runs with ledger_heartbeat=2s and a long suspend_after; a session wakes the primary and
keeps it busy; pgtide is killed with SIGKILL, its orphaned compute is stopped (exit time noted),
a few garbage bytes are appended to the ledger (a torn write). `pgtide usage` (no daemon: open
intervals end at their last record) must still answer, report the skipped bytes, and show the
compute's life from its start to the kill minus at most one heartbeat (and never more than the
life). Restarting pgtide closes the interval with a crash-close record (logged), cuts the tail,
and the usage is unchanged by the restart.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_serverless import PGTIDE_BIN, Tide, check, finish, log, wait_until  # noqa

import psycopg2  # noqa: E402

HEARTBEAT = 2.0
HZ = os.sysconf("SC_CLK_TCK")


def proc_start_wall(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    now = time.time()
    fields = data[data.rindex(")") + 2:].split()
    return now - (uptime - int(fields[19]) / HZ)


def usage_json(tide):
    r = subprocess.run([PGTIDE_BIN, "usage", "-D", tide.data, "--format", "json"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"pgtide usage: {r.stderr}")
    return json.loads(r.stdout), r.stderr


def main():
    tide = Tide({"suspend_after": "5min", "pause_after": "0", "compute_units": "1",
                 "ledger_heartbeat": f"{HEARTBEAT:g}s", "metrics_listen": ""}, name="acctcrash")
    conn = psycopg2.connect(tide.dsn())
    pm = wait_until(tide.postmaster_pid, 30)
    start = proc_start_wall(pm)
    cur = conn.cursor()
    end = time.time() + 5.3
    while time.time() < end:
        cur.execute("select 1")
        time.sleep(0.1)
    tide.proc.send_signal(signal.SIGKILL)
    tide.proc.wait(10)
    killed = time.time()
    tide.proc = None
    conn.close()
    log(f"pgtide killed {killed - start:.2f} s after the compute started")
    tide.kill_compute_leftovers()  # the orphaned postmaster is not pgtide's any more
    life = killed - start

    ledgers = sorted(glob.glob(os.path.join(tide.data, "state", "ledger-*")))
    check(len(ledgers) == 1, f"one ledger file: {ledgers}")
    with open(ledgers[-1], "ab") as f:
        f.write(b"\x1f\x00\x00\x00\xde\xad")  # a torn record: length and half a CRC
    doc, err = usage_json(tide)
    check(doc["torn_bytes_skipped"] == 6 and "skipped 6 bytes" in err,
          f"pgtide usage skips the torn tail ({doc['torn_bytes_skipped']} bytes; {err.strip()})")
    secs = doc["total"]["running_seconds"]
    check(life - HEARTBEAT - 1.0 <= secs <= life + 1.0,
          f"usage {secs:.0f} s for a compute alive {life:.2f} s until the kill "
          f"(lost at most one heartbeat of {HEARTBEAT:g} s, plus rounding)")
    check(doc["total"]["intervals"] == 1, "one (open) interval")

    tide.start(tide.settings)
    check(wait_until(lambda: "closed 1 interval(s) left open by a crash" in tide.log_text(), 10),
          "the restart closes the open interval at its last heartbeat (logged)")
    check("cut a torn or corrupt tail of 6 bytes" in tide.log_text(), "the restart cuts the tail")
    doc2, err2 = usage_json(tide)
    check(doc2["torn_bytes_skipped"] == 0 and err2 == "", "no torn bytes after the restart")
    check(doc2["total"]["running_seconds"] == secs and doc2["total"]["intervals"] == 1,
          f"usage unchanged by the crash-close ({doc2['total']['running_seconds']} s)")
    with open(ledgers[-1], "rb") as f:
        data = f.read()
    check(b"primary" in data[-40:], "a crash-close record was appended for the primary")
    finish()


if __name__ == "__main__":
    main()
