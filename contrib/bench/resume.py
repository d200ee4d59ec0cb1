"""resume.py: pgtide's resume-latency benchmark (issue 3), run by contrib/bench/resume.sh.

Starts its own embedded pgtide (regress/e2e/lib_serverless.Tide) on a fresh data directory,
loads a ~100 MB database with `pgbench -i -s 7` through pgtide, then measures, in milliseconds:
  a) cold:    TCP connect -> first row for a new client on a suspended compute (forced with the
              admin SUSPEND, then waiting until no compute process remains in /proc); next to
              it, the compute's own start time as pgtide reports it (SHOW COMPUTES last_start_ms);
  b) parked:  the next query of a connected idle client after SUSPEND (parked session replayed);
  c) paused:  a query on a frozen compute (pause_after=1s; every compute process in T/D first);
  d) running: the same query right after, on the running compute;
  e) bare postgres over the same data, pgtide stopped: `pg_ctl start -w` then psql, to the first
     row (pg_ctl polls readiness on its own clock, so this is an upper bound), and
  e') bare postgres forked directly, polled with libpq every 2 ms until the first row.
The query is `SELECT abalance FROM pgbench_accounts WHERE aid = $1` with a random aid. Clients
connect with sslmode=BENCH_SSLMODE (default disable) as superuser postgres. Prints p50/p95/p99
(nearest rank), min and max per series. Not a test: nothing is asserted.
"""
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "regress", "e2e"))

import psycopg2  # noqa: E402

from lib_serverless import BINDIR, Tide, log, proc_stat, wait_until  # noqa: E402

TRIES = int(os.environ.get("BENCH_TRIES", "50"))
BARE_TRIES = int(os.environ.get("BENCH_BARE_TRIES", "10"))
SCALE = int(os.environ.get("BENCH_SCALE", "7"))
SSLMODE = os.environ.get("BENCH_SSLMODE", "disable")
QUERY = "SELECT abalance FROM pgbench_accounts WHERE aid = %s"
NACCOUNTS = SCALE * 100000


def ms(t0):
    return (time.perf_counter() - t0) * 1000.0


def pct(sorted_vals, p):
    k = max(0, min(len(sorted_vals) - 1, -(-p * len(sorted_vals) // 100) - 1))
    return sorted_vals[int(k)]


def frozen(t):
    pids = t.compute_pids()
    if not pids:
        return False
    return all((proc_stat(p) or ("?",))[0] in ("T", "D") for p in pids)


def one_query(conn):
    cur = conn.cursor()
    cur.execute(QUERY, (random.randint(1, NACCOUNTS),))
    return cur.fetchone()


def load(t):
    env = dict(os.environ, PGPASSWORD=t.password)
    log(f"pgbench -i -s {SCALE} through pgtide")
    subprocess.run([os.path.join(BINDIR, "pgbench"), "-i", "-q", "-s", str(SCALE),
                    "-h", "127.0.0.1", "-p", str(t.port), "-U", "postgres", "postgres"],
                   env=env, check=True, capture_output=True, timeout=600)
    r = t.psql("SELECT pg_size_pretty(pg_database_size('postgres'))")
    log(f"database size: {r.stdout.strip()}")
    return r.stdout.strip()


def bench_cold(t):
    """Returns (client-side ms, the compute's own start ms from SHOW COMPUTES last_start_ms)."""
    out, starts = [], []
    for _ in range(TRIES):
        if not t.suspend_now(60):
            raise RuntimeError("the compute did not suspend")
        t0 = time.perf_counter()
        c = psycopg2.connect(t.dsn(sslmode=SSLMODE))
        one_query(c)
        out.append(ms(t0))
        c.close()
        starts.append(float(t.compute()["last_start_ms"]))
    return out, starts


def bench_parked(t):
    c = psycopg2.connect(t.dsn(sslmode=SSLMODE))
    c.autocommit = True
    out = []
    for _ in range(TRIES):
        one_query(c)
        if not t.suspend_now(60):
            raise RuntimeError("the compute did not suspend")
        t0 = time.perf_counter()
        one_query(c)
        out.append(ms(t0))
    c.close()
    return out


def bench_paused(t):
    r = t.admin("SET pause_after = '1s'")
    if r.returncode != 0:
        raise RuntimeError(f"SET pause_after: {r.stderr}")
    c = psycopg2.connect(t.dsn(sslmode=SSLMODE))
    c.autocommit = True
    one_query(c)
    paused, running = [], []
    for _ in range(TRIES):
        if not wait_until(lambda: frozen(t), 30, 0.02):
            raise RuntimeError("the compute did not pause")
        t0 = time.perf_counter()
        one_query(c)
        paused.append(ms(t0))
        t0 = time.perf_counter()
        one_query(c)
        running.append(ms(t0))
    c.close()
    t.admin("SET pause_after = '0'")
    return paused, running


def bare_dirs(t):
    sock = os.path.join(t.dir, "bare-sock")
    os.makedirs(sock, exist_ok=True)
    os.chmod(sock, 0o755)
    subprocess.run(["chown", "postgres", sock], check=True)
    return os.path.join(t.data, "primary"), sock


PG_OPTS = ["-c", "listen_addresses=", "-c", "port=5432", "-c", "shared_buffers=256MB",
           "-c", "max_connections=100", "-c", "logging_collector=off"]


def bench_bare_pgctl(t):
    datadir, sock = bare_dirs(t)
    opts = " ".join(PG_OPTS) + f" -c unix_socket_directories={sock}"
    logf = os.path.join(sock, "bare.log")  # a directory the postgres user can write
    out = []
    for _ in range(BARE_TRIES):
        t0 = time.perf_counter()
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(BINDIR, "pg_ctl"),
                        "-D", datadir, "-l", logf, "-o", opts, "-w", "start"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([os.path.join(BINDIR, "psql"), "-X", "-At", "-h", sock, "-U", "postgres",
                        "-d", "postgres", "-c", QUERY % random.randint(1, NACCOUNTS)],
                       check=True, capture_output=True, timeout=60)
        out.append(ms(t0))
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(BINDIR, "pg_ctl"),
                        "-D", datadir, "-m", "fast", "-w", "stop"],
                       check=True, capture_output=True, timeout=120)
    return out


def bench_bare_direct(t):
    datadir, sock = bare_dirs(t)
    out = []
    for _ in range(BARE_TRIES):
        t0 = time.perf_counter()
        p = subprocess.Popen(["runuser", "-u", "postgres", "--", os.path.join(BINDIR, "postgres"),
                              "-D", datadir, "-c", f"unix_socket_directories={sock}"] + PG_OPTS,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                c = psycopg2.connect(host=sock, user="postgres", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.perf_counter() - t0 > 60:
                    raise
                time.sleep(0.002)
        one_query(c)
        out.append(ms(t0))
        c.close()
        # stop: SIGINT (fast shutdown) to the postmaster, which runuser's child is
        pm = int(open(os.path.join(datadir, "postmaster.pid")).readline())
        os.kill(pm, 2)
        p.wait(60)
        wait_until(lambda: not os.path.exists(os.path.join(datadir, "postmaster.pid")), 30)
    return out


def report(rows, size):
    print()
    print(f"# pgtide resume latency, {size} database (pgbench -s {SCALE}), sslmode={SSLMODE}, "
          f"{TRIES} tries ({BARE_TRIES} for bare postgres), milliseconds")
    print(f"{'series':<44} {'n':>3} {'p50':>8} {'p95':>8} {'p99':>8} {'min':>8} {'max':>8}")
    for name, vals in rows:
        s = sorted(vals)
        print(f"{name:<44} {len(s):>3} {pct(s, 50):8.1f} {pct(s, 95):8.1f} {pct(s, 99):8.1f} "
              f"{s[0]:8.1f} {s[-1]:8.1f}")


def main():
    t = Tide({"suspend_after": "1h", "pause_after": "0", "log_level": "warning"}, name="bench")
    try:
        size = load(t)
        rows = []
        cold, starts = bench_cold(t)
        rows.append(("a) cold: connect -> first row (suspended)", cold))
        rows.append(("   of which the compute start (last_start_ms)", starts))
        log("cold done")
        rows.append(("b) parked client: next query after SUSPEND", bench_parked(t)))
        log("parked done")
        paused, running = bench_paused(t)
        rows.append(("c) query on a paused (frozen) compute", paused))
        rows.append(("d) same query on a running compute", running))
        log("paused done")
        t.stop()
        try:
            rows.append(("e) bare postgres: pg_ctl start -w + psql", bench_bare_pgctl(t)))
            rows.append(("e') bare postgres: fork + 2 ms libpq poll", bench_bare_direct(t)))
        finally:
            report(rows, size)
    finally:
        t.stop()


if __name__ == "__main__":
    main()
