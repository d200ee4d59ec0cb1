"""t_txn_many: issue 4's headline case, 5,000 application connections over 20 server connections
in transaction pooling, all connected at the same time, each doing real work with protocol-level
prepared statements.

asyncpg clients (SCRAM logins, binary results, named statements that repeat across
connections) connect to a private pgtide (pool_mode=transaction, pool_size=20) until all 5,000
are open, then every one runs, concurrently: a prepared SELECT that echoes its own id, and a
transaction inserting its own row and reading it back. Checked: every client got its own
answers, every row is in the table once, PostgreSQL never saw more than 20 backends of the
pool's user (sampled from pg_stat_activity while the load runs, on a separate direct
connection), and the admin console reports all 5,000 clients at once. Nothing asserts time;
waits are bounded.
"""
import asyncio
import resource
import threading

import asyncpg

from t_txn_common import (check, direct_connect, direct_exec, finish, log, tide_dsn,  # noqa: F401
                          txn_tide)

N = 5000
POOL = 20


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, N * 2 + 512)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


APP_BACKENDS = ("SELECT count(*) FROM pg_stat_activity "
                "WHERE usename = 'app' AND datname = 'appdb'")


def app_backends():
    c = direct_connect(user="postgres")
    try:
        cur = c.cursor()
        cur.execute(APP_BACKENDS)
        return cur.fetchone()[0]
    finally:
        c.close()


class Sampler(threading.Thread):
    """Samples the number of the app user's backends on appdb until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak = 0
        self.samples = 0

    def run(self):
        c = direct_connect(user="postgres")
        cur = c.cursor()
        while not self.stop.is_set():
            cur.execute(APP_BACKENDS)
            self.peak = max(self.peak, cur.fetchone()[0])
            self.samples += 1
            self.stop.wait(0.05)
        c.close()


async def connect_all(port):
    sem = asyncio.Semaphore(64)  # logins in flight at once (the accept backlog stays small)

    async def one(i):
        async with sem:
            for attempt in range(3):
                try:
                    return await asyncpg.connect(host="127.0.0.1", port=port, user="app",
                                                 password="secret", database="appdb", ssl=False,
                                                 timeout=120, statement_cache_size=100)
                except (OSError, asyncio.TimeoutError):
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5)

    return await asyncio.gather(*(one(i) for i in range(N)))


async def work(conn, i):
    v = await conn.fetchval("SELECT $1::int4 + 0", i)
    if v != i:
        return f"client {i}: echo gave {v}"
    async with conn.transaction():
        await conn.execute("INSERT INTO txn_many (client, v) VALUES ($1, $2)", i, f"c{i}")
        got = await conn.fetchval("SELECT v FROM txn_many WHERE client = $1", i)
    if got != f"c{i}":
        return f"client {i}: read back {got!r}"
    return None


def admin_clients(t):
    """How many clients the admin console lists (simple query protocol: psycopg2)."""
    a = t.admin_conn()
    try:
        cur = a.cursor()
        cur.execute("SHOW CLIENTS")
        return len(cur.fetchall())
    finally:
        a.close()


async def scenario(t, baseline):
    conns = await connect_all(t.port)
    check(len(conns) == N, f"{N} clients connected at once")
    try:
        admin_n = await asyncio.to_thread(admin_clients, t)
        check(admin_n >= N, f"SHOW CLIENTS lists every client ({admin_n})")
        sampler = Sampler()
        sampler.start()
        try:
            errors = await asyncio.gather(*(work(c, i) for i, c in enumerate(conns)))
        finally:
            sampler.stop.set()
            sampler.join()
        bad = [e for e in errors if e is not None]
        check(not bad, f"every client saw only its own answers ({len(bad)} wrong: {bad[:3]})")
        check(sampler.samples > 0 and sampler.peak - baseline <= POOL,
              f"PostgreSQL saw at most {POOL} backends of the pool (peak {sampler.peak} over "
              f"{sampler.samples} samples, {baseline} of other clients before the start)")
    finally:
        await asyncio.gather(*(c.close(timeout=30) for c in conns), return_exceptions=True)


def main():
    limit = raise_fd_limit()
    if limit < N + 256:
        log(f"skip: the fd limit {limit} cannot hold {N} clients")
        finish()
        return
    direct_exec("DROP TABLE IF EXISTS txn_many; "
                "CREATE TABLE txn_many (client int PRIMARY KEY, v text NOT NULL)")
    baseline = app_backends()  # e.g. the suite's own pgtide's idle server connection
    t = txn_tide(pool_size=POOL, name="many", max_client_conn=N + 100, log_level="warning")
    try:
        asyncio.run(scenario(t, baseline))
        c = direct_connect()
        cur = c.cursor()
        cur.execute("SELECT count(*), count(DISTINCT client), "
                    "bool_and(v = 'c' || client) FROM txn_many")
        n, distinct, ok = cur.fetchone()
        c.close()
        check(n == N and distinct == N and ok, f"{N} rows, one per client, each its own ({n})")
    finally:
        t.stop()
        direct_exec("DROP TABLE IF EXISTS txn_many")
    finish()


if __name__ == "__main__":
    main()
