"""t_serverless_faults: a compute that dies, and a compute that never becomes ready (issue 3).

1. kill -9 of the postmaster (pid from DATA/primary/postmaster.pid) while a client runs a query
   inside a transaction that inserted a row: that client gets an error (not a hang: bounded
   30 s) carrying SQLSTATE 08006 or 57P01, a new client connects and queries, every row committed before the kill is there and
   the uncommitted row is not (crash recovery); an idle client connected before the kill either
   answers or fails cleanly and can reconnect.
2. wake_timeout: the same data directory restarted with pg_bindir pointing at a fake bindir whose
   `postgres` sleeps (the other binaries are symlinks), wake_timeout=1s: a client gets SQLSTATE
   57P03 with a message that says the database is starting, and pgtide is still alive.
"""
import asyncio
import os
import re
import subprocess
import signal
import threading
import time

import asyncpg
import psycopg2

from lib_serverless import BINDIR, Tide, check, finish, log, wait_until

ROWS = 500


def test_kill9(t):
    c = psycopg2.connect(t.dsn())
    c.autocommit = True
    cur = c.cursor()
    cur.execute("CREATE TABLE crash_t (id int PRIMARY KEY, v text)")
    for i in range(ROWS):  # one commit per row: each must survive
        cur.execute("INSERT INTO crash_t VALUES (%s, %s)", (i, f"row {i}"))
    idle = psycopg2.connect(t.dsn())
    idle.autocommit = True
    idle.cursor().execute("SELECT 1")

    # The victim is psql: libpq drivers such as psycopg2 report a FATAL that ends the connection
    # only as "server closed the connection unexpectedly", without its SQLSTATE (PostgreSQL's
    # own FATALs included); psql with VERBOSITY verbose prints the ErrorResponse it received.
    box = {}

    def in_flight():
        script = ("\\set ON_ERROR_STOP on\n\\set VERBOSITY verbose\nBEGIN;\n"
                  "INSERT INTO crash_t VALUES (-1, 'uncommitted');\nSELECT pg_sleep(60);\n")
        r = subprocess.run(["psql", "-X", "-q", t.dsn()], input=script, capture_output=True,
                           text=True, timeout=90)
        m = re.search(r"FATAL:\s+([0-9A-Z]{5}):", r.stderr)
        box["result"] = "no error" if r.returncode == 0 else r.stderr.strip().replace("\n", " | ")
        box["code"] = m.group(1) if m else None

    th = threading.Thread(target=in_flight, daemon=True)
    th.start()
    time.sleep(1.0)
    pm = t.postmaster_pid()
    if not check(pm is not None, "found the postmaster pid in DATA/primary/postmaster.pid"):
        return
    os.kill(pm, signal.SIGKILL)
    log(f"killed postmaster {pm} with SIGKILL")
    th.join(30)
    got = box.get("result", "<still waiting after 30 s>")
    check(got != "no error" and not got.startswith("<"),
          f"the client inside the transaction gets an error ({got})")
    # issue 3 part 2 / DESIGN.md section 4: an ErrorResponse with a real SQLSTATE, not a bare close
    check(box.get("code") in ("08006", "57P01"),
          f"that error is an ErrorResponse with SQLSTATE 08006 or 57P01 (got {box.get('code')})")

    try:
        n2 = psycopg2.connect(t.dsn())
        n2.autocommit = True
        k = n2.cursor()
        k.execute("SELECT count(*), count(*) FILTER (WHERE id < 0) FROM crash_t")
        total, uncommitted = k.fetchone()
        n2.close()
    except psycopg2.Error as e:
        total, uncommitted = f"error: {e}".strip(), None
    check(total == ROWS, f"a new client sees all {ROWS} committed rows (got {total})")
    check(uncommitted == 0, "the uncommitted row is gone")

    try:
        k = idle.cursor()
        k.execute("SELECT count(*) FROM crash_t")
        log(f"the idle client connected before the kill answers: {k.fetchone()[0]}")
    except psycopg2.Error as e:
        log(f"the idle client connected before the kill got: {type(e).__name__} {e.pgcode}: "
            f"{str(e).strip()}; reconnecting")
        idle = psycopg2.connect(t.dsn())
        k = idle.cursor()
        k.execute("SELECT count(*) FROM crash_t")
        check(k.fetchone()[0] == ROWS, "the idle client reconnected and sees every row")
    for conn in (c, idle):
        try:
            conn.close()
        except Exception:
            pass
    log("\n".join(line for line in t.log_text().splitlines()
                  if "compute primary" in line)[-1500:])


def make_fake_bindir(t):
    fake = os.path.join(t.dir, "fakebin")
    os.makedirs(fake)
    os.chmod(fake, 0o755)
    for name in os.listdir(BINDIR):
        if name != "postgres":
            os.symlink(os.path.join(BINDIR, name), os.path.join(fake, name))
    pidfile = os.path.join(t.dir, "fake-postgres.pids")
    with open(pidfile, "w"):
        pass
    os.chmod(pidfile, 0o666)
    script = os.path.join(fake, "postgres")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n"
                "# fake postgres for t_serverless_faults: never becomes ready\n"
                f'case "$1" in -V|--version|-C|--describe-config) exec {BINDIR}/postgres "$@";; '
                "esac\n"
                f"echo $$ >> {pidfile}\n"
                "exec sleep 120\n")
    os.chmod(script, 0o755)
    return fake, pidfile


async def connect_expect_error(t):
    try:
        c = await asyncpg.connect(host="127.0.0.1", port=t.port, user="postgres",
                                  password=t.password, database="postgres", ssl=False,
                                  timeout=60)
    except asyncpg.PostgresError as e:
        return e.sqlstate, str(e)
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
    try:
        v = await c.fetchval("SELECT 1")
        return "accepted", f"SELECT 1 -> {v}"
    except asyncpg.PostgresError as e:
        return e.sqlstate, str(e)
    finally:
        await c.close()


def test_wake_timeout(t):
    t.stop()
    fake, pidfile = make_fake_bindir(t)
    try:
        t.start({"suspend_after": "2", "pause_after": "0", "wake_timeout": "1s",
                 "compute_start_timeout": "20s", "pg_bindir": fake})
        state, msg = asyncio.run(connect_expect_error(t))
        check(state == "57P03", f"wake_timeout: client refused with 57P03 (got {state}: {msg})")
        check("start" in msg.lower(), f"wake_timeout: the message says it is starting ({msg})")
        check(t.proc.poll() is None, "pgtide is still running after the wake timeout")
    finally:
        t.stop()
        with open(pidfile) as f:
            for line in f:
                try:
                    os.kill(int(line), signal.SIGKILL)
                except (OSError, ValueError):
                    pass


def main():
    t = Tide({"suspend_after": "60", "pause_after": "0"}, name="faults")
    try:
        test_kill9(t)
        test_wake_timeout(t)
    finally:
        log("pgtide log tail:\n" + t.log_tail(12))
    finish()


if __name__ == "__main__":
    main()
