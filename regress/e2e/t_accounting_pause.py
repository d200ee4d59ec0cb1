#!/usr/bin/python3
"""t_accounting_pause: paused (frozen) time is reported apart and billed at paused_rate.

The primary (1 CU) runs one query, pauses after 1 s idle and suspends after 4 s idle. The ledger
then holds one interval whose paused seconds cover the frozen stretch (about 3 s), whose running
and paused seconds add up to whole seconds close to the postmaster's lifetime, and whose billed
CU-seconds are running + paused_rate (0.25 here) x paused. SHOW USAGE shows the same columns.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_serverless import PGTIDE_BIN, Tide, check, finish, wait_until  # noqa

import psycopg2  # noqa: E402


def main():
    t = Tide({"suspend_after": "4s", "pause_after": "1s", "compute_units": "1",
              "paused_rate": "0.25", "ledger_heartbeat": "1s", "metrics_listen": ""},
             name="acctpause")
    c = psycopg2.connect(t.dsn())
    c.cursor().execute("select 1")
    c.close()
    pm = wait_until(t.postmaster_pid, 30)
    check(pm is not None, "the primary runs")
    check(wait_until(lambda: t.compute()["state"] == "paused", 20, 0.1), "the primary pauses")
    check(wait_until(lambda: not os.path.exists(f"/proc/{pm}"), 60, 0.05), "then suspends")
    r = subprocess.run([PGTIDE_BIN, "usage", "-D", t.data, "-c", "paused_rate=0.25", "--format",
                        "json"],
                       capture_output=True, text=True, timeout=60)
    tot = json.loads(r.stdout)["total"]
    check(tot["intervals"] == 1, "one interval")
    check(2.0 <= tot["paused_seconds"] <= 4.5, f"paused {tot['paused_seconds']} s reported apart")
    both = tot["running_seconds"] + tot["paused_seconds"]
    check(abs(both - round(both)) < 1e-6, f"running + paused = {both:.3f}: whole seconds")
    check(abs(tot["billed_cu_seconds"] - (tot["cu_seconds"] + 0.25 * tot["paused_cu_seconds"]))
          < 1e-3, f"billed {tot['billed_cu_seconds']} = running + 0.25 x paused CU-seconds")
    rows = {r["compute"]: r for r in t.admin_rows("SHOW USAGE")}
    check(abs(float(rows["primary"]["paused_seconds"]) - tot["paused_seconds"]) < 0.01
          and abs(float(rows["primary"]["billed_cu_seconds"]) - tot["billed_cu_seconds"]) < 0.01,
          "SHOW USAGE (live paused_rate) shows the same paused and billed figures")
    finish()


if __name__ == "__main__":
    main()
