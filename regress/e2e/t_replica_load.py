"""t_replica_load: replicas appear under read load and go when it falls (issue 6, policy).

pgtide embedded with max_replicas=1, a short scale_window/scale_cooldown and cpu_high low enough
that a select-only pgbench load on the reader endpoint keeps the primary above it:
1. with no load, no replica;
2. under the load a replica is built and enters rotation (SHOW COMPUTES), and reader sessions
   land on it (pg_is_in_recovery());
3. after the load stops, the replica is drained and removed;
4. the ledger has an interval for it (pgtide usage --per role shows a replica row).
Checks behaviour only; every wait is bounded generously.
"""
import os
import subprocess
import time

import psycopg2

from lib_replica import replicas
from lib_serverless import BINDIR, PGTIDE_BIN, Tide, check, finish, free_port, log, wait_until


def main():
    rport = free_port()
    t = Tide({"suspend_after": "0", "pause_after": "0", "read_port": str(rport),
              "max_replicas": "1", "min_replicas": "0", "scale_window": "2s",
              "scale_cooldown": "4s", "cpu_high": "0.3", "cpu_low": "0.05",
              "ledger_heartbeat": "1s"}, name="load")
    env = dict(os.environ, PGPASSWORD=t.password)
    pgbench = os.path.join(BINDIR, "pgbench")
    init = subprocess.run([pgbench, "-i", "-s", "2", "-q", "-h", "127.0.0.1", "-p", str(t.port),
                           "-U", "postgres", "postgres"], env=env, capture_output=True, text=True)
    check(init.returncode == 0, f"pgbench -i through pgtide ({init.stderr.strip()[-200:]})")
    time.sleep(3)
    check(not replicas(t), "no load: no replica")

    load = subprocess.Popen([pgbench, "-n", "-S", "-c", "8", "-j", "2", "-T", "60",
                             "-h", "127.0.0.1", "-p", str(rport), "-U", "postgres", "postgres"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def serving():
        rows = list(replicas(t).values())
        return bool(rows) and rows[0].get("in_rotation") == "yes"

    up = wait_until(serving, 50, 0.5)
    check(up, "under read load a replica is built and enters rotation")
    if up:
        c = psycopg2.connect(t.dsn().replace(f"port={t.port}", f"port={rport}"))
        c.autocommit = True
        k = c.cursor()
        k.execute("SELECT pg_is_in_recovery()")
        check(k.fetchone()[0] is True, "a new reader session lands on the replica")
        c.close()
    load.terminate()
    try:
        load.wait(10)
    except subprocess.TimeoutExpired:
        load.kill()
    log("load stopped")
    check(wait_until(lambda: not replicas(t), 60, 0.5),
          "after the load the replica is drained and removed")

    r = subprocess.run([PGTIDE_BIN, "usage", "-D", t.data, "--per", "role", "--format", "csv",
                        "-c", "metrics_listen="], capture_output=True, text=True)
    check(r.returncode == 0 and "replica" in r.stdout,
          f"the ledger shows replica usage ({r.stdout.strip()[:200]} {r.stderr.strip()[:200]})")
    t.stop()
    finish()


main()
