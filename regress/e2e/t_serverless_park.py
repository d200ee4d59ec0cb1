"""t_serverless_park: suspend to zero with 50 idle connected clients (issue 3, part 5).

Clients, each with its own values:
- 5 real psql processes (stdin pipe): SET statement_timeout, SET search_path, SQL PREPARE;
- 20 psycopg2 sessions (autocommit): the same three, plus custom GUCs (SET myapp.tag, and
  set_config('myapp.tenant', ...) in a simple query); the first also holds a PREPAREd statement
  whose table it dropped, so that its replay fails: the settings and the other statement stay;
- 15 psycopg 3 sessions with prepare_threshold=0 (protocol-level named prepared statements from
  the first execution), SET work_mem and set_config('myapp.p3', $1, false) (a Parse);
- 10 asyncpg connections, each with an explicit conn.prepare() statement (protocol level) and
  SET application_name.
All go idle; the test waits until no compute process remains (/proc, bounded 60 s) and SHOW
COMPUTES says suspended. Then every client runs its next query: it must see its own settings,
run its prepared statement (the protocol-level ones are reused by name, never re-parsed by the
driver), and the server behind it must be a new backend (proof that the session was replayed).
Finally SHOW COMPUTES `starts` must have grown by exactly one.
"""
import asyncio
import os
import subprocess
import threading

import asyncpg
import psycopg
import psycopg2

from lib_serverless import PSQL, Tide, check, finish, log

N_PSQL, N_PG2, N_PG3, N_APG = 5, 20, 15, 10


class PsqlSession:
    """A real interactive psql on pipes; run() sends SQL and returns its output lines."""

    def __init__(self, t, i):
        env = dict(os.environ, PGPASSWORD=t.password)
        self.p = subprocess.Popen([PSQL, "-X", "-At", "-q", "-n", t.dsn()], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)

    def run(self, sql, timeout=90):
        self.p.stdin.write(sql + "\n\\echo __end__\n")
        self.p.stdin.flush()
        out = []
        box = {}

        def reader():
            while True:
                line = self.p.stdout.readline()
                if not line or line.strip() == "__end__":
                    box["done"] = bool(line)
                    return
                out.append(line.rstrip("\n"))

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        th.join(timeout)
        if not box.get("done"):
            out.append("<psql: no answer or exited>")
        return out

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(10)
        except Exception:
            self.p.kill()


def psql_setup(s, i):
    return s.run(f"SET statement_timeout = '{1001 + i}ms';\n"
                 f"SET search_path = psql_{i}, public;\n"
                 f"PREPARE q AS SELECT $1::int + {i};\n"
                 "SELECT pg_backend_pid();")


def psql_check(s, i):
    return s.run("SHOW statement_timeout;\nSHOW search_path;\nEXECUTE q(1000);\n"
                 "SELECT pg_backend_pid();")


def pg2_setup(c, i):
    cur = c.cursor()
    cur.execute(f"SET statement_timeout = '{2001 + i}ms'")
    cur.execute(f"SET search_path = pg2_{i}, public")
    cur.execute("SET myapp.tag = %s", (f"tag-{i}",))
    cur.execute("SELECT pg_catalog.set_config('myapp.tenant', %s, false)", (f"tenant-{i}",))
    cur.execute(f"PREPARE q AS SELECT $1::int * {i}")
    if i == 0:
        # a statement whose table is gone: its replay fails, and must take nothing else along
        cur.execute("CREATE TABLE park_gone_0 (x int)")
        cur.execute("PREPARE gone AS SELECT x FROM park_gone_0")
        cur.execute("DROP TABLE park_gone_0")
    cur.execute("SELECT pg_backend_pid()")
    return cur.fetchone()[0]


def pg2_check(c, i):
    cur = c.cursor()
    got = []
    for q in ("SHOW statement_timeout", "SHOW search_path", "EXECUTE q(7)",
              "SELECT pg_backend_pid()", "SELECT current_setting('myapp.tag')",
              "SELECT current_setting('myapp.tenant')"):
        try:
            cur.execute(q)
            got.append(cur.fetchone()[0])
        except psycopg2.Error as e:
            got.append(f"{type(e).__name__}: {e}".strip())
    return got


def pg3_setup(c, i):
    c.execute(f"SET work_mem = '{1025 + i}kB'")
    # extended protocol (a Parse): the name is in the statement, the value a parameter
    c.execute("SELECT set_config('myapp.p3', %s, false)", (f"p3-{i}",))
    c.execute("SELECT %s::int + %s::int", (i, 1)).fetchone()  # prepared as _pg3_0, first use
    return c.execute("SELECT pg_backend_pid()").fetchone()[0]


def pg3_check(c, i):
    wm = c.execute("SHOW work_mem").fetchone()[0]
    wm += "/" + c.execute("SELECT current_setting('myapp.p3')").fetchone()[0]
    val = c.execute("SELECT %s::int + %s::int", (i, 100)).fetchone()[0]
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    return wm, val, pid


async def apg_setup(conns, stmts, dsn_kw, i):
    c = await asyncpg.connect(**dsn_kw)
    await c.execute(f"SET application_name = 'apg-{i}'")
    stmt = await c.prepare(f"SELECT $1::int - {i}")
    await stmt.fetchval(0)
    conns.append(c)
    stmts.append(stmt)
    return await c.fetchval("SELECT pg_backend_pid()")


async def apg_check(c, stmt, i):
    app = await c.fetchval("SHOW application_name")
    val = await stmt.fetchval(50)
    pid = await c.fetchval("SELECT pg_backend_pid()")
    return app, val, pid


def main():
    t = Tide({"suspend_after": "3", "pause_after": "1", "pool_size": "90"}, name="park")
    loop = asyncio.new_event_loop()
    psqls, pg2, pg3, apg, apg_stmts = [], [], [], [], []
    pids = {}
    try:
        for i in range(N_PSQL):
            s = PsqlSession(t, i)
            out = psql_setup(s, i)
            psqls.append(s)
            pids[("psql", i)] = out[-1] if out else None
            check(len(out) == 1 and out[0].isdigit(), f"psql {i} set up (output {out})")
        for i in range(N_PG2):
            c = psycopg2.connect(t.dsn())
            c.autocommit = True
            pids[("pg2", i)] = pg2_setup(c, i)
            pg2.append(c)
        for i in range(N_PG3):
            c = psycopg.connect(t.dsn(), autocommit=True, prepare_threshold=0)
            pids[("pg3", i)] = pg3_setup(c, i)
            pg3.append(c)
        dsn_kw = dict(host="127.0.0.1", port=t.port, user="postgres", password=t.password,
                      database="postgres", ssl=False, timeout=60, command_timeout=90)
        for i in range(N_APG):
            pids[("apg", i)] = loop.run_until_complete(apg_setup(apg, apg_stmts, dsn_kw, i))
        log(f"{N_PSQL + N_PG2 + N_PG3 + N_APG} clients set up and idle")
        starts = t.starts()
        clients = t.clients()
        unparkable = [c for c in clients if c.get("database") == "postgres"
                      and not c.get("parkable", "").startswith("yes")]
        check(not unparkable, f"SHOW CLIENTS: every idle client is parkable ({unparkable[:3]})")

        gone = t.wait_no_compute(60)
        check(gone, "no compute process remains after suspend_after with 50 idle clients")
        if not gone:
            log(t.log_tail(30))
            return
        check(t.compute()["state"] == "suspended", "SHOW COMPUTES says suspended")
        log(f"{t.count_log('parked')} log lines mention parking")

        for i, s in enumerate(psqls):
            out = psql_check(s, i)
            want = [f"{1001 + i}ms", f"psql_{i}, public", str(1000 + i)]
            check(out[:3] == want, f"psql {i}: settings and PREPARE kept ({out} vs {want})")
            check(len(out) == 4 and out[3] != pids[("psql", i)],
                  f"psql {i}: runs on a new backend after the suspend")
        for i, c in enumerate(pg2):
            try:
                got = pg2_check(c, i)
            except Exception as e:
                got = [f"{type(e).__name__}: {e}".strip()]
            want = [f"{2001 + i}ms", f"pg2_{i}, public", 7 * i]
            check(got[:3] == want, f"psycopg2 {i}: settings and PREPARE kept ({got[:3]} vs {want})")
            check(len(got) == 6 and got[3] != pids[("pg2", i)],
                  f"psycopg2 {i}: runs on a new backend after the suspend")
            # A custom (placeholder) setting, as row-level-security apps use: PostgreSQL hides
            # placeholders from pg_settings, so a snapshot taken from there alone misses it.
            check(len(got) == 6 and got[4] == f"tag-{i}",
                  f"psycopg2 {i}: custom setting myapp.tag kept ({got[4:]})")
            check(len(got) == 6 and got[5] == f"tenant-{i}",
                  f"psycopg2 {i}: custom setting from set_config() kept ({got[5:]})")
        for i, c in enumerate(pg3):
            try:
                wm, val, pid = pg3_check(c, i)
            except Exception as e:
                wm, val, pid = f"{type(e).__name__}: {e}".strip(), None, None
            check(wm == f"{1025 + i}kB/p3-{i}" and val == i + 100,
                  f"psycopg3 {i}: work_mem and the protocol-level prepared statement kept "
                  f"({wm}, {val})")
            check(pid is not None and pid != pids[("pg3", i)],
                  f"psycopg3 {i}: runs on a new backend after the suspend")
        for i, (c, stmt) in enumerate(zip(apg, apg_stmts)):
            try:
                app, val, pid = loop.run_until_complete(apg_check(c, stmt, i))
            except Exception as e:
                app, val, pid = f"{type(e).__name__}: {e}".strip(), None, None
            check(app == f"apg-{i}" and val == 50 - i,
                  f"asyncpg {i}: application_name and prepared statement kept ({app}, {val})")
            check(pid is not None and pid != pids[("apg", i)],
                  f"asyncpg {i}: runs on a new backend after the suspend")
        grew = t.starts() - starts
        check(grew == 1, f"the 50 resuming clients caused exactly one start (got {grew})")
    finally:
        for s in psqls:
            s.close()
        for c in pg2 + pg3:
            try:
                c.close()
            except Exception:
                pass
        for c in apg:
            try:
                loop.run_until_complete(asyncio.wait_for(c.close(), 10))
            except Exception:
                pass
        loop.close()
        log("pgtide log tail:\n" + t.log_tail(10))
    finish()


if __name__ == "__main__":
    main()
