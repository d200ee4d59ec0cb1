"""t_txn_workers: the data plane's worker threads (issue 4, config key `workers`).

Private pgtides in front of the harness's PostgreSQL, with workers=3 unless said otherwise:
 1. 60 clients (TCP and unix socket) land on more than one worker (SHOW CLIENTS' `worker`
    column; unix-socket clients are dealt round-robin, so they cover all three), the admin
    console's own rows say worker 0, every client gets its own answer, SHOW STATS sums the
    queries of every worker.
 2. The admin console, served by the main thread, works through the TCP port again and again
    (with and without TLS: the TLS session moves with the socket), and through the unix socket;
    a non-admin user asking for database pgtide is refused with 42501.
 3. Cancel across workers: 10 clients each running pg_sleep(30) are cancelled with the driver's
    cancel (57014) and work afterwards; the unix-socket cancels reach another worker than the
    one that issued the key (round-robin), so they only work if the key is forwarded.
 4. pool_size caps the SUM of servers over workers: 30 threads x 20 short transactions with
    pool_size=2, then 12 x 10 with pool_size=1; all succeed, and a sampler on pg_stat_activity
    (straight to PostgreSQL; backends that existed before this pgtide started do not count)
    never sees more app backends than pool_size, neither busy ones nor all of them.
 5. Session mode, pool_size=2: two sessions on two workers hold both servers; a third
    session's query on the third worker waits (SHOW CLIENTS says so) until one of the first two
    disconnects, then completes.
 6. KILL_CLIENT ends a client living on a worker (FATAL 57P01); PAUSE holds queries of clients
    on every worker (state "held") until RESUME, which releases them all.
 7. workers=1 (the old single loop) serves, and every SHOW CLIENTS row says worker 0.
 8. A second pgtide (workers=2) on the same listen_port refuses to start ("cannot listen")
    instead of silently sharing the port through SO_REUSEPORT; the first keeps serving.
 9. Servers move between workers instead of closing: with pool_size=1 and two workers, two
    psycopg 3 clients on different workers take turns 12 times, each with its own protocol-level
    prepared statement (prepare_threshold=0, different text and result type under the same
    pgtide-side name on each worker); every answer is right, every turn runs on the one backend
    (the server was handed over, not reopened) and PostgreSQL never sees a second one. In 5, the
    waiting session on a third worker gets the backend the closed session had.
11. Session churn over 2 workers: pgbench -C (a new session per transaction) with 16 clients,
    pool_size=20 and query_wait_timeout=5s; no session ever waits out the timeout. (A waiter
    used to stay beside idle servers of its own worker once one of them was handed to another
    worker: pgbench's clients, blocked in their logins, then stalled it all.)
Nothing asserts wall-clock time: waiting is observed through the admin console or
pg_stat_activity, and every wait is bounded.
"""
import os
import subprocess
import threading
import time

import psycopg
import psycopg2

from t_proxy_harness import BINDIR, PGTIDE_BIN, free_port, raw_query, scratch_dir
from t_txn_common import (check, direct_connect, error_fields, finish, log, msg, raw_login,
                          read_msg, tide_dsn, txn_tide, wait_until)

APP_BACKENDS = ("SELECT pid, state FROM pg_stat_activity WHERE usename = 'app' "
                "AND datname = 'appdb' AND backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()")
BUSY = ("active", "idle in transaction")


def wtide(workers, name, mode="transaction", pool_size=5, **extra):
    return txn_tide(mode=mode, pool_size=pool_size, name=name, workers=workers,
                    read_port=free_port(), **extra)


def connect(t, app, unix=False, **kw):
    """An autocommit psycopg2 connection as app, over TCP (no TLS) or the unix socket."""
    if unix:
        kw["host"] = t.sock
    c = psycopg2.connect(tide_dsn(t, application_name=app, **kw))
    c.autocommit = True
    return c


def one(c, sql, args=None):
    cur = c.cursor()
    cur.execute(sql, args)
    return cur.fetchone()


def clients(t, prefix=None):
    rows = t.admin_rows("SHOW CLIENTS")
    if prefix is None:
        return rows
    return [r for r in rows if (r.get("application_name") or "").startswith(prefix)]


def client_row(t, app):
    rows = clients(t, app)
    return next((r for r in rows if r["application_name"] == app), None)


def app_pool(t):
    return next((r for r in t.admin_rows("SHOW POOLS")
                 if r["database"] == "appdb" and r["user"] == "app"), None)


def app_backends(foreign=frozenset()):
    """(pid, state) of the app user's backends on appdb, straight from PostgreSQL, except
    `foreign` ones (the target pgtide's idle server, a stopped pgtide's exiting ones)."""
    c = direct_connect(user="postgres")
    try:
        cur = c.cursor()
        cur.execute(APP_BACKENDS)
        return [r for r in cur.fetchall() if r[0] not in foreign]
    finally:
        c.close()


def foreign_backends():
    return frozenset(pid for pid, _ in app_backends())


class Sampler(threading.Thread):
    """Counts the app user's backends on appdb that a pgtide started after `foreign` was taken
    has open (all of them, and those in a transaction), until stopped."""

    def __init__(self, foreign):
        super().__init__(daemon=True)
        self.foreign = foreign
        self.halt = threading.Event()
        self.peak = self.busy = self.samples = 0
        self.at_peak = []

    def run(self):
        c = direct_connect(user="postgres")
        cur = c.cursor()
        while not self.halt.is_set():
            cur.execute(APP_BACKENDS)
            rows = [r for r in cur.fetchall() if r[0] not in self.foreign]
            if len(rows) > self.peak:
                self.peak, self.at_peak = len(rows), rows
            self.busy = max(self.busy, sum(1 for r in rows if r[1] in BUSY))
            self.samples += 1
            self.halt.wait(0.01)
        c.close()

    def finish(self):
        self.halt.set()
        self.join(30)
        return self.peak


def leak_note(t):
    text = t.log_text()
    if "LeakSanitizer" in text:
        log(f"note: pgtide {t.pid} reported leaks at exit (ASan): " +
            next((ln for ln in text.splitlines() if ln.startswith("SUMMARY")), ""))


# ---------------------------------------------------------------- 1. spread over workers

def test_spread(t):
    conns = []
    for i in range(60):
        conns.append((i, connect(t, f"w1_{i}", unix=(i % 4 == 0))))
    rows = clients(t, "w1_")
    check(len(rows) == 60, f"SHOW CLIENTS lists the 60 clients ({len(rows)})")
    workers = {int(r["worker"]) for r in rows}
    check(min(workers, default=0) >= 1 and len(workers) >= 2,
          f"the clients live on worker threads, more than one: {sorted(workers)}")
    unix_workers = {int(r["worker"]) for r in rows if r["addr"] == "unix"}
    check(unix_workers == {1, 2, 3},
          f"unix-socket clients are dealt to all three workers: {sorted(unix_workers)}")
    admin = [r for r in clients(t) if r["database"] == "pgtide"]
    check(admin and all(r["worker"] == "0" for r in admin),
          f"admin console clients are on the main thread (worker 0): "
          f"{[r['worker'] for r in admin]}")
    q0 = sum(int(r["total_query_count"]) for r in t.admin_rows("SHOW STATS")
             if r["database"] == "appdb")
    bad = [i for i, c in conns if one(c, "SELECT %s::int * 3, 'w1'", (i,)) != (3 * i, "w1")]
    check(not bad, f"every one of the 60 clients gets its own answer (wrong: {bad})")

    def grown():
        q = sum(int(r["total_query_count"]) for r in t.admin_rows("SHOW STATS")
                if r["database"] == "appdb")
        return q if q >= q0 + 60 else None
    check(wait_until(grown, 30, 0.2), "SHOW STATS counts the queries of every worker (+60)")
    servers = [r for r in t.admin_rows("SHOW SERVERS") if r["user"] == "app"]
    check(servers and all(int(r["worker"]) >= 1 for r in servers),
          f"SHOW SERVERS: app's servers belong to workers: {[r['worker'] for r in servers]}")
    for _, c in conns:
        c.close()


# ---------------------------------------------------------------- 2. admin console

def test_admin(t):
    ok = 0
    for i in range(12):
        mode = "require" if i % 2 == 0 else "disable"
        app = f"w2_admin_{i}"
        c = t.connect(user="postgres", password=t.superpass, dbname="pgtide", sslmode=mode,
                      application_name=app)
        c.autocommit = True
        cur = c.cursor()
        cur.execute("SHOW VERSION")
        ver = cur.fetchone()[0]
        cur.execute("SHOW CLIENTS")
        cols = [d[0] for d in cur.description]
        me = [r for r in (dict(zip(cols, x)) for x in cur.fetchall())
              if r["application_name"] == app]
        c.close()
        good = (ver.startswith("pgtide ") and len(me) == 1 and me[0]["worker"] == "0" and
                (mode == "disable" or (me[0]["tls"] or "").startswith("TLS")))
        if not good:
            log(f"admin login {i} (sslmode={mode}): version {ver!r}, own row {me}")
        ok += good
    check(ok == 12, f"12 admin console logins over TCP (TLS and not) served by worker 0: {ok}")
    ok = 0
    for i in range(6):
        c = t.connect(user="postgres", password=t.superpass, dbname="pgtide", host=t.sock,
                      sslmode="disable")
        c.autocommit = True
        ok += one(c, "SHOW VERSION")[0].startswith("pgtide ")
        c.close()
    check(ok == 6, f"6 admin console logins over the unix socket: {ok}")
    for tls in (True, False):
        st, info = raw_login(t.port, "app", "secret", "pgtide", tls=tls)
        check(st == "error" and info.get("C") == "42501",
              f"non-admin user on the console (tls={tls}) refused with 42501: {st} {info}")
    try:
        t.connect(dbname="pgtide", host=t.sock, sslmode="disable").close()
        check(False, "non-admin user on the console over the unix socket is refused")
    except psycopg2.Error as e:
        check("not an admin" in str(e), f"non-admin over the unix socket refused: {e}".strip())
    check(t.admin_rows("SHOW VERSION"), "the console still works after the refusals")


# ---------------------------------------------------------------- 3. cancel across workers

def test_cancel(t):
    n = 10
    conns = [connect(t, f"w3_{i}", unix=(i % 2 == 1)) for i in range(n)]
    out = {}

    def sleeper(i):
        try:
            conns[i].cursor().execute(f"SELECT pg_sleep(30) /* w3_sleep_{i} */")
            out[i] = "ok"
        except psycopg2.Error as e:
            out[i] = e.pgcode
    ths = [threading.Thread(target=sleeper, args=(i,), daemon=True) for i in range(n)]
    for th in ths:
        th.start()

    def all_sleep():
        d = direct_connect(user="postgres")
        try:
            return one(d, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                          "AND query LIKE '%%w3_sleep_%%' AND pid <> pg_backend_pid()")[0] == n
        finally:
            d.close()
    check(wait_until(all_sleep, 60, 0.1), f"the {n} pg_sleep(30) run on the server")
    workers = {int(r["worker"]) for r in clients(t, "w3_")}
    check(len(workers) >= 2, f"the sleeping clients live on several workers: {sorted(workers)}")
    for c in conns:
        c.cancel()
    for th in ths:
        th.join(60)
    codes = [out.get(i) for i in range(n)]
    check(all(cd == "57014" for cd in codes), f"every pg_sleep(30) is cancelled (57014): {codes}")
    bad = [i for i, c in enumerate(conns) if one(c, "SELECT %s::int + 100", (i,)) != (i + 100,)]
    check(not bad, f"every cancelled connection works afterwards (wrong: {bad})")
    for c in conns:
        c.close()


# ---------------------------------------------------------------- 4. pool_size over workers

def run_load(t, nclients, ntx, label):
    errors, pids, done = [], set(), [0]
    lock = threading.Lock()

    def worker(i):
        try:
            c = psycopg2.connect(tide_dsn(t, application_name=f"{label}_{i}",
                                          **({"host": t.sock} if i % 3 == 0 else {})))
            c.autocommit = True
            cur = c.cursor()
            for k in range(ntx):
                cur.execute("BEGIN")
                cur.execute("SELECT pg_backend_pid()")
                pid = cur.fetchone()[0]
                cur.execute("SELECT pg_sleep(0.005), %s::int", (k,))
                got = cur.fetchone()[1]
                cur.execute("COMMIT")
                with lock:
                    pids.add(pid)
                    done[0] += 1
                    if got != k:
                        errors.append(f"client {i} txn {k}: got {got}")
            c.close()
        except psycopg2.Error as e:
            with lock:
                errors.append(f"client {i}: {e.pgcode} {str(e).strip()}")
    sampler = Sampler(foreign_backends())
    sampler.start()
    ths = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(nclients)]
    for th in ths:
        th.start()
    deadline = time.monotonic() + 150  # a bound, not a measurement: the test's own timeout is 300s
    for th in ths:
        th.join(max(0.0, deadline - time.monotonic()))
    sampler.finish()
    hung = sum(th.is_alive() for th in ths)
    return errors, done[0], sampler, hung, len(pids)


def test_shared_cap():
    for pool_size, nclients, ntx in ((2, 30, 20), (1, 12, 10)):
        label = f"w4p{pool_size}"
        t = wtide(3, label, pool_size=pool_size, query_wait_timeout="90s")
        errors, done, smp, hung, npids = run_load(t, nclients, ntx, label)
        check(not errors and not hung and done == nclients * ntx,
              f"pool_size={pool_size}: {nclients} clients x {ntx} transactions all succeed "
              f"({done} done, {hung} threads hung, errors: {errors[:5]})")
        log(f"pool_size={pool_size}: the transactions ran on {npids} distinct backends")
        check(smp.busy <= pool_size,
              f"pool_size={pool_size}: PostgreSQL never sees more than {pool_size} app backends "
              f"in a query or transaction over 3 workers (peak {smp.busy})")
        check(1 <= smp.peak <= pool_size,
              f"pool_size={pool_size}: PostgreSQL never sees more than {pool_size} app backends "
              f"over 3 workers (peak {smp.peak} in {smp.samples} samples: {smp.at_peak})")
        t.stop()
        leak_note(t)


# ---------------------------------------------------------------- 5. session mode

def test_session():
    t = wtide(3, "w5", mode="session", pool_size=2)
    foreign = foreign_backends()
    a = connect(t, "w5_a", unix=True)
    b = connect(t, "w5_b", unix=True)
    pa, pb = one(a, "SELECT pg_backend_pid()")[0], one(b, "SELECT pg_backend_pid()")[0]
    check(pa != pb, "the two sessions hold two servers")
    wa, wb = (int(client_row(t, x)["worker"]) for x in ("w5_a", "w5_b"))
    check(wa != wb, f"the two sessions live on different workers ({wa}, {wb})")
    pool = app_pool(t)
    check(pool and int(pool["sv_active"]) == 2 and int(pool["cl_active"]) == 2,
          f"SHOW POOLS sums over workers: 2 active clients, 2 active servers: {pool}")
    done = threading.Event()
    res = {}

    def third():
        try:
            c = connect(t, "w5_c", unix=True)
            res["q"], res["pid"] = one(c, "SELECT 'third', pg_backend_pid()")
            res["c"] = c
        except psycopg2.Error as e:
            res["q"] = f"error {e.pgcode}: {str(e).strip()}"
        done.set()
    th = threading.Thread(target=third, daemon=True)
    th.start()
    row = wait_until(lambda: (lambda r: r if r and r["state"] == "waiting" else None)(
        client_row(t, "w5_c")), 60, 0.1)
    check(row is not None, f"the third session waits for a server: {client_row(t, 'w5_c')}")
    if row:
        log(f"sessions on workers a={wa} b={wb} c={row['worker']}")
    pool = app_pool(t)
    check(pool and int(pool["cl_waiting"]) == 1, f"SHOW POOLS: one client waiting: {pool}")
    check(not done.is_set(), f"the third query has not completed while both servers are held "
                             f"({res.get('q')})")
    n = app_backends(foreign)
    check(len(n) == 2, f"PostgreSQL has the 2 app backends only: {n}")
    a.close()
    th.join(60)
    check(res.get("q") == "third", f"the third query completes after a session ends: "
                                   f"{res.get('q')}")
    if row and int(row["worker"]) != wa:
        check(res.get("pid") == pa, f"the closed session's server moved to the third session's "
                                    f"worker: backend {res.get('pid')}, the closed one had {pa}")
    n = app_backends(foreign)
    check(len(n) <= 2, f"at most 2 app backends on PostgreSQL afterwards: {n}")
    for c in (b, res.get("c")):
        if c is not None:
            c.close()
    t.stop()
    leak_note(t)


# ---------------------------------------------------------------- 9. servers move

def test_handover():
    t = wtide(2, "w9", pool_size=1, query_wait_timeout="60s")
    foreign = foreign_backends()
    conns = {}
    for name in ("w9_a", "w9_b"):
        c = psycopg.connect(tide_dsn(t, host=t.sock, application_name=name), autocommit=True,
                            prepare_threshold=0)
        conns[name] = c
    wa, wb = (int(client_row(t, x)["worker"]) for x in ("w9_a", "w9_b"))
    check(wa != wb, f"the two clients live on different workers ({wa}, {wb})")
    # the first statement each worker registers gets the same pgtide-side name on the server
    sql = {"w9_a": "SELECT pg_backend_pid(), %s::int * 2 AS doubled",
           "w9_b": "SELECT pg_backend_pid(), 'b-' || %s::text AS tagged"}
    want = {"w9_a": lambda i: i * 2, "w9_b": lambda i: f"b-{i}"}
    pids, wrong, errors, peak = set(), [], [], 0
    for i in range(12):
        for name, c in conns.items():
            try:
                pid, v = c.execute(sql[name], (i,)).fetchone()
                pids.add(pid)
                if v != want[name](i):
                    wrong.append((name, i, v))
            except psycopg.Error as e:
                errors.append(f"{name} turn {i}: {e.sqlstate} {str(e).strip()}")
        peak = max(peak, len(app_backends(foreign)))
    check(not errors and not wrong, f"24 alternating turns all answer right "
                                    f"(errors {errors[:3]}, wrong {wrong[:3]})")
    check(len(pids) == 1, f"every turn on both workers ran on the one backend: {sorted(pids)}")
    check(peak == 1, f"PostgreSQL never saw a second app backend (peak {peak})")
    for c in conns.values():
        c.close()
    check(t.alive(), "the workers=2 pgtide is still running")
    t.stop()
    leak_note(t)


# ---------------------------------------------------------------- 10. min_pool_size

def steady_backends(foreign, want, label):
    """Waits (bounded) until PostgreSQL has `want` app backends of this pgtide, then watches
    them over several of pgtide's 1 s maintenance rounds; returns (reached, peak, low)."""
    reached = wait_until(lambda: len(app_backends(foreign)) == want, 30, 0.1)
    peak, low = 0, 1 << 30
    for _ in range(25):
        n = len(app_backends(foreign))
        peak, low = max(peak, n), min(low, n)
        time.sleep(0.2)
    log(f"{label}: {want} reached {bool(reached)}, then between {low} and {peak}")
    return reached, peak, low


def test_min_pool():
    foreign = foreign_backends()
    t = wtide(3, "w10", pool_size=8, min_pool_size=3, server_idle_timeout="1s")
    conns = [connect(t, f"w10_{i}", unix=True) for i in range(3)]
    workers = {int(client_row(t, f"w10_{i}")["worker"]) for i in range(3)}
    check(len(workers) == 3, f"the three clients live on three workers ({sorted(workers)})")
    for c in conns:
        one(c, "SELECT 1")
    reached, peak, low = steady_backends(foreign, 3, "after one query per worker")
    check(reached and peak == 3 and low == 3,
          f"min_pool_size=3 over 3 workers keeps 3 backends, not 3 per worker "
          f"(seen {low}..{peak})")
    # more servers than the minimum, on every worker, then idle: back down to 3 in all
    errors = []

    def busy(i):
        try:
            c = connect(t, f"w10_busy{i}", unix=True)
            one(c, "SELECT pg_sleep(0.5)")
            c.close()
        except psycopg2.Error as e:
            errors.append(str(e).strip())
    threads = [threading.Thread(target=busy, args=(i,), daemon=True) for i in range(18)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    grown = len(app_backends(foreign))
    check(not errors and grown > 3, f"18 concurrent sleepers ran ({errors[:3]}) on more than 3 "
                                    f"backends ({grown})")
    reached, peak, low = steady_backends(foreign, 3, "after the sleepers, idle")
    check(reached and peak == 3 and low == 3,
          f"idle servers above min_pool_size close until 3 stay in all workers (seen "
          f"{low}..{peak})")
    for c in conns:
        check(one(c, "SELECT 7") == (7,), "the first clients still work")
        c.close()
    t.stop()
    leak_note(t)


# ---------------------------------------------------------------- 6. KILL_CLIENT, PAUSE

def test_kill_pause(t):
    st, victim = raw_login(t.port, "app", "secret", "appdb",
                           extra={"application_name": "w6_victim"})
    if not check(st == "ok", f"victim logs in ({victim if st != 'ok' else ''})"):
        return
    raw_query(victim, "SELECT 1")
    other = connect(t, "w6_other", unix=True)
    row = client_row(t, "w6_victim")
    check(row is not None and int(row["worker"]) >= 1, f"the victim lives on a worker: {row}")
    t.admin(f"KILL_CLIENT {row['id']}")
    try:
        typ, body = read_msg(victim)
        got = (typ, error_fields(body) if typ == b"E" else body)
    except (EOFError, OSError) as e:
        got = ("closed", str(e))
    check(got[0] == b"E" and got[1].get("C") == "57P01",
          f"the killed client on a worker gets FATAL 57P01: {got}")
    try:
        victim.sendall(msg(b"Q", b"SELECT 1\0"))
        after = read_msg(victim)[0]
    except (EOFError, OSError) as e:
        after = f"closed ({type(e).__name__})"
    check(not isinstance(after, bytes), f"the killed client's connection is closed: {after}")
    victim.close()
    check(one(other, "SELECT 42") == (42,), "another client keeps working after KILL_CLIENT")
    other.close()

    held = [connect(t, f"w6_p{i}", unix=(i > 0)) for i in range(4)]
    for c in held:
        one(c, "SELECT 1")
    pworkers = {int(r["worker"]) for r in clients(t, "w6_p")}
    done = {}
    events = [threading.Event() for _ in held]

    def q(i):
        try:
            done[i] = one(held[i], "SELECT 'released', %s::int", (i,))
        except psycopg2.Error as e:
            done[i] = f"error {e.pgcode}"
        events[i].set()
    t.admin("PAUSE")
    try:
        ths = [threading.Thread(target=q, args=(i,), daemon=True) for i in range(len(held))]
        for th in ths:
            th.start()
        rows = wait_until(lambda: (lambda rs: rs if len(rs) == len(held) and
                                   all(r["state"] == "held" for r in rs) else None)(
            clients(t, "w6_p")), 60, 0.1)
        check(rows is not None, f"after PAUSE the queries of clients on workers "
                                f"{sorted(pworkers)} are held: "
                                f"{[(r['worker'], r['state']) for r in clients(t, 'w6_p')]}")
        check(not any(e.is_set() for e in events),
              f"no held query completed before RESUME: {done}")
    finally:
        t.admin("RESUME")
    for th in ths:
        th.join(60)
    want = {i: ("released", i) for i in range(len(held))}
    check(done == want, f"RESUME releases every held query: {done}")
    for c in held:
        c.close()


# ---------------------------------------------------------------- 7. workers=1

def test_single():
    t = wtide(1, "w7")
    c = connect(t, "w7_app")
    check(one(c, "SELECT 6 * 7") == (42,), "workers=1 serves a query")
    rows = clients(t)
    check(rows and all(r["worker"] == "0" for r in rows),
          f"workers=1: every SHOW CLIENTS row says worker 0: {[r['worker'] for r in rows]}")
    servers = t.admin_rows("SHOW SERVERS")
    check(all(r["worker"] == "0" for r in servers),
          f"workers=1: every SHOW SERVERS row says worker 0: {[r['worker'] for r in servers]}")
    c.close()
    t.stop()
    leak_note(t)


# ---------------------------------------------------------------- 8. port already taken

def test_port_taken(t):
    d = scratch_dir("w8_second")
    data, sock = os.path.join(d, "data"), os.path.join(d, "sock")
    os.makedirs(data)
    os.makedirs(sock)
    settings = dict(t.settings, workers="2", read_port=str(free_port()))
    args = [PGTIDE_BIN, "-D", data, "-c", f"listen_port={t.port}", "-c", f"unix_socket_dir={sock}"]
    for k, v in settings.items():
        args += ["-c", f"{k}={v}"]
    logpath = os.path.join(d, "pgtide.log")
    with open(logpath, "w") as logf:
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        rc = proc.wait(60)
    except subprocess.TimeoutExpired:
        rc = None
        proc.kill()
        proc.wait(10)
    with open(logpath, errors="replace") as f:
        out = f.read()
    line = next((ln for ln in out.splitlines() if "cannot listen" in ln), out.strip()[-300:])
    check(rc is not None and rc != 0 and "cannot listen" in out,
          f"a second pgtide (workers=2) on listen_port {t.port} refuses to start (rc {rc}): "
          f"{line}")
    bad = []
    for i in range(10):
        c = connect(t, f"w8_{i}")
        if one(c, "SELECT %s::int", (i,)) != (i,):
            bad.append(i)
        c.close()
    check(t.alive() and not bad, f"the first pgtide keeps serving 10 new logins (wrong: {bad})")


def test_session_churn():
    t = wtide(2, "w11", mode="session", pool_size=20, query_wait_timeout="5s")
    script = os.path.join(scratch_dir("w11"), "one.sql")
    with open(script, "w") as f:
        f.write("SELECT 1;\n")
    env = dict(os.environ, PGPASSWORD="secret")
    run = subprocess.run([os.path.join(BINDIR, "pgbench"), "-n", "-C",
                          "-c", "16", "-j", "2", "-T", "6", "-f", script,
                          f"host=127.0.0.1 port={t.port} user=app dbname=appdb sslmode=disable"],
                         env=env, capture_output=True, text=True, timeout=120)
    out = (run.stdout + run.stderr).strip()
    tps = [ln for ln in out.splitlines() if ln.startswith("tps")]
    check(run.returncode == 0 and "abort" not in out,
          f"16 clients, a session each per transaction, over 2 workers: none waited out "
          f"query_wait_timeout ({tps or out[-300:]})")
    check(t.alive(), "that pgtide is still running")
    t.stop()


def main():
    t = wtide(3, "w3", pool_size=12)
    for name, fn in (("1 spread", test_spread), ("2 admin", test_admin),
                     ("3 cancel", test_cancel), ("6 kill/pause", test_kill_pause),
                     ("8 port taken", test_port_taken)):
        log(f"--- {name}")
        try:
            fn(t)
        except Exception as e:  # noqa: BLE001 - a crash of one case is a failure, go on
            check(False, f"{name} raised {type(e).__name__}: {e}")
            log("pgtide log tail:\n" + t.log_tail(20))
    check(t.alive(), "the workers=3 pgtide is still running")
    t.stop()
    leak_note(t)
    for name, fn in (("4 shared cap", test_shared_cap), ("5 session", test_session),
                     ("7 workers=1", test_single), ("9 handover", test_handover),
                     ("10 min_pool_size", test_min_pool),
                     ("11 session churn", test_session_churn)):
        log(f"--- {name}")
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            check(False, f"{name} raised {type(e).__name__}: {e}")
    finish()


if __name__ == "__main__":
    main()
