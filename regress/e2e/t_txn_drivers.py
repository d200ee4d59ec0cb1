"""t_txn_drivers: the driver matrix in transaction pooling with protocol-level prepared statements:
50 concurrent clients over 5 server connections (pool_mode=transaction, pool_size=5).

asyncpg (its own named statements, binary results; explicit prepare; a transaction), psycopg 3
with prepare_threshold=0, node-postgres named queries (regress/drivers/node/txn_named.js), JDBC
with prepareThreshold=1 (regress/drivers/jdbc/TxnPool.java): every client writes rows and reads
back exactly its own values. pgbench -M prepared and -M extended (-c 50 -j 2 -T 5): zero failed
transactions, and the TPC-B balances agree afterwards (accounts = tellers = branches = history).
"""
import asyncio
import os
import re
import shutil
import subprocess
import threading

import asyncpg
import psycopg

from t_proxy_harness import BINDIR, TOP
from t_txn_common import (PG_PORT, PG_SOCK, check, direct_connect, direct_exec, finish, log,
                          tide_dsn, txn_tide)

N = 50


async def asyncpg_client(port, cid):
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="app", password="secret",
                                 database="appdb", ssl=False, timeout=60)
    try:
        for i in range(10):
            await conn.execute("INSERT INTO txn_drv (drv, client, k, v) VALUES ($1, $2, $3, $4)",
                               "asyncpg", cid, i, f"a-{cid}-{i}")
            # a per-client text: asyncpg's statement names repeat across connections
            x = await conn.fetchval(f"SELECT $1::int8 * 1000 + {cid}", i)
            if x != i * 1000 + cid:
                raise RuntimeError(f"own statement gave {x}")
        st = await conn.prepare("SELECT k, v, now() IS NOT NULL FROM txn_drv "
                                "WHERE drv = 'asyncpg' AND client = $1 ORDER BY k")
        async with conn.transaction():
            await conn.execute("INSERT INTO txn_drv (drv, client, k, v) VALUES ($1, $2, $3, $4)",
                               "asyncpg", cid, 100, f"a-{cid}-txn")
            inside = await st.fetch(cid)
        rows = await st.fetch(cid)
        want = [(i, f"a-{cid}-{i}", True) for i in range(10)] + [(100, f"a-{cid}-txn", True)]
        got = [tuple(r) for r in rows]
        if got != want or [tuple(r) for r in inside] != want:
            raise RuntimeError(f"read back {got}")
        return True
    finally:
        await conn.close()


async def asyncpg_all(port):
    res = await asyncio.gather(*(asyncpg_client(port, c) for c in range(N)),
                               return_exceptions=True)
    errs = [r for r in res if r is not True]
    for e in errs[:5]:
        log(f"  asyncpg: {e!r}")
    return N - len(errs)


def psycopg3_client(dsn, cid, results):
    try:
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
            for i in range(10):
                conn.execute("INSERT INTO txn_drv (drv, client, k, v) VALUES (%s, %s, %s, %s)",
                             ("psycopg3", cid, i, f"p-{cid}-{i}"))
                x = conn.execute(f"SELECT %s::int + {cid}", (i,)).fetchone()[0]
                if x != i + cid:
                    raise RuntimeError(f"own statement gave {x}")
            with conn.transaction():
                conn.execute("INSERT INTO txn_drv (drv, client, k, v) VALUES (%s, %s, %s, %s)",
                             ("psycopg3", cid, 100, f"p-{cid}-txn"))
            rows = conn.execute("SELECT k, v FROM txn_drv WHERE drv = %s AND client = %s "
                                "ORDER BY k", ("psycopg3", cid)).fetchall()
            want = [(i, f"p-{cid}-{i}") for i in range(10)] + [(100, f"p-{cid}-txn")]
            if rows != want:
                raise RuntimeError(f"read back {rows}")
            results[cid] = True
    except Exception as e:  # noqa: BLE001 - reported below
        results[cid] = e


def psycopg3_all(dsn):
    results = {}
    ths = [threading.Thread(target=psycopg3_client, args=(dsn, c, results)) for c in range(N)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(120)
    errs = [r for r in results.values() if r is not True]
    for e in errs[:5]:
        log(f"  psycopg3: {e!r}")
    return sum(1 for r in results.values() if r is True)


def env_for(t):
    return dict(os.environ, PGTIDE_HOST="127.0.0.1", PGTIDE_PORT=str(t.port), PGPASSWORD="secret")


def run_node(t):
    d = os.path.join(TOP, "regress", "drivers", "node")
    if not os.path.isdir(os.path.join(d, "node_modules", "pg")) or not shutil.which("node"):
        log("node-postgres not installed (regress/drivers/node/node_modules): skipped")
        return None
    r = subprocess.run(["node", os.path.join(d, "txn_named.js"), str(N)], capture_output=True,
                       text=True, env=env_for(t), timeout=180)
    log("node: " + (r.stdout + r.stderr).strip().replace("\n", "\n  "))
    return r.returncode == 0


def run_jdbc(t):
    jar = "/usr/share/java/postgresql.jar"
    if not os.path.exists(jar) or not shutil.which("javac"):
        log("JDBC driver or javac missing: skipped")
        return None
    out = os.environ.get("PGTIDE_SCRATCH") or "/tmp"
    src = os.path.join(TOP, "regress", "drivers", "jdbc", "TxnPool.java")
    subprocess.run(["javac", "-d", out, "-cp", jar, src], check=True, timeout=180)
    r = subprocess.run(["java", "-cp", f"{out}:{jar}", "TxnPool", str(N)], capture_output=True,
                       text=True, env=env_for(t), timeout=180)
    log("jdbc: " + (r.stdout + r.stderr).strip().replace("\n", "\n  "))
    return r.returncode == 0


def pgbench_balances():
    d = direct_connect()
    cur = d.cursor()
    cur.execute("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                "(SELECT sum(tbalance) FROM pgbench_tellers), "
                "(SELECT sum(bbalance) FROM pgbench_branches), "
                "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
                "(SELECT count(*) FROM pgbench_history)")
    r = cur.fetchone()
    d.close()
    return r


def run_pgbench(t, mode, threads):
    pgbench = os.path.join(BINDIR, "pgbench")
    r = subprocess.run([pgbench, "-h", "127.0.0.1", "-p", str(t.port), "-U", "app", "-M", mode,
                        "-c", str(N), "-j", str(threads), "-T", "5", "appdb"],
                       capture_output=True, text=True, env=env_for(t), timeout=180)
    text = r.stdout + r.stderr
    m = re.search(r"number of transactions actually processed: (\d+)", text)
    done = int(m.group(1)) if m else 0
    f = re.search(r"number of failed transactions: (\d+)", text)
    failed = int(f.group(1)) if f else None
    ok = check(r.returncode == 0 and done > 0 and failed == 0,
               f"pgbench -M {mode} -c {N} -j {threads} -T 5: exit {r.returncode}, {done} transactions, "
               f"{failed} failed")
    if not ok:
        log("  " + text.strip()[-1500:].replace("\n", "\n  "))
        log("  pgtide log tail:\n" + t.log_tail(10))
    a, tl, b, h, n = pgbench_balances()
    check(a == tl == b == h and n == done,
          f"pgbench -M {mode}: balances agree (accounts {a}, tellers {tl}, branches {b}, "
          f"history {h}; {n} history rows for {done} transactions)")


def main():
    direct_exec("DROP TABLE IF EXISTS txn_drv; CREATE TABLE txn_drv (drv text, client int, "
                "k int, v text, PRIMARY KEY (drv, client, k))")
    t = txn_tide(pool_size=5, name="txn_drivers")
    ok = asyncio.run(asyncpg_all(t.port))
    check(ok == N, f"asyncpg: {ok} of {N} clients read back their own rows")
    ok = psycopg3_all(tide_dsn(t))
    check(ok == N, f"psycopg 3 (prepare_threshold=0): {ok} of {N} clients read back their rows")
    r = run_node(t)
    if r is not None:
        check(r, f"node-postgres named queries: {N} clients read back their rows")
    r = run_jdbc(t)
    if r is not None:
        check(r, f"JDBC prepareThreshold=1: {N} clients read back their rows")
    init = subprocess.run([os.path.join(BINDIR, "pgbench"), "-i", "-q", "-s", "1", "-h", PG_SOCK,
                           "-p", PG_PORT, "-U", "app", "appdb"], capture_output=True, text=True,
                          timeout=180)
    if check(init.returncode == 0, "pgbench -i (directly)"):
        # pgbench 15 prepares a client's statements with a blocking PQprepare at its first
        # transaction: with -j 2 one thread blocked there (waiting for a server connection)
        # stalls its other clients that hold all 5 servers inside transactions, until
        # query_wait_timeout; a thread per client avoids that self-inflicted deadlock
        for mode, threads in (("prepared", N), ("extended", 2)):
            direct_exec("TRUNCATE pgbench_history; UPDATE pgbench_accounts SET abalance = 0; "
                        "UPDATE pgbench_tellers SET tbalance = 0; "
                        "UPDATE pgbench_branches SET bbalance = 0")
            run_pgbench(t, mode, threads)
    else:
        log(init.stderr)
    rows = [r for r in t.admin_rows("SHOW SERVERS") if r.get("database") == "appdb"]
    log(f"server connections at the end: {len(rows)}")
    check(0 < len(rows) <= 5, f"at most 5 server connections were used ({len(rows)})")
    t.stop()
    finish()


if __name__ == "__main__":
    main()
