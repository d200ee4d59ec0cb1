"""t_proxy_pool: session pooling on a private pgtide with pool_size=2.

Cases: five concurrent sessions share two servers (the 3rd..5th wait, SHOW POOLS counts them as
waiting, and each runs as an earlier one closes; never more than two servers); query_wait_timeout
= 1s with the pool busy gives ErrorResponse 53300 naming query_wait_timeout; server_reset_query
(DISCARD ALL): the next client on the same server (same pg_backend_pid) sees none of the previous
client's session settings, prepared statements or temp tables; a client whose socket dies inside
BEGIN with an uncommitted INSERT: the row never becomes visible and the next client on that pool is
not inside that transaction; a client whose socket dies during pg_sleep: its backend stops running
that query (pg_stat_activity) within a bounded wait; idle servers are reused most recently used
first (LIFO: the server given back last serves the next session, in either order of two closes),
and after server_round_robin = on in DATA/pgtide.conf and RELOAD, idle longest first (the server
given back first).
"""
import os
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import psycopg2  # noqa: E402
import psycopg2.extensions as ext  # noqa: E402

from t_proxy_harness import (Tide, check, finish, log, raw_query,  # noqa: E402
                             wait_until)


def pool_row(t):
    for r in t.admin_rows("SHOW POOLS"):
        if r["database"] == "appdb" and r["user"] == "app":
            return r
    return {}


def app_servers(t):
    return [r for r in t.admin_rows("SHOW SERVERS") if r["user"] == "app"]


def session(t, name):
    c = t.connect(application_name=name)
    c.autocommit = True
    return c


def one(c, sql, args=None):
    cur = c.cursor()
    cur.execute(sql, args)
    return cur.fetchone()[0]


def hard_close(s):
    """Closes a socket with a RST (SO_LINGER 0): the client just disappears."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def test_queueing(t):
    first = [session(t, f"pool_first{i}") for i in range(2)]
    pids = {one(c, "SELECT pg_backend_pid()") for c in first}
    results, release = {}, {}

    def waiter(i):
        try:
            c = session(t, f"pool_wait{i}")
            results[i] = one(c, "SELECT pg_backend_pid()")
            release[i].wait(120)
            c.close()
        except psycopg2.Error as e:
            results[i] = f"error {e.pgcode}: {e}"

    threads = []
    for i in range(3):
        release[i] = threading.Event()
        th = threading.Thread(target=waiter, args=(i,), daemon=True)
        th.start()
        threads.append(th)
    got = wait_until(lambda: int(pool_row(t).get("cl_waiting", 0)) == 3, 30, 0.1)
    check(got, f"SHOW POOLS shows 3 waiting clients with pool_size=2: {pool_row(t)}")
    time.sleep(1)
    check(not results, f"no waiting session ran while both servers are taken: {results}")
    check(len(app_servers(t)) <= 2, f"at most 2 servers: {len(app_servers(t))}")
    # each close lets exactly one waiter in
    for n, c in enumerate(first, start=1):
        c.close()
        ok = wait_until(lambda: len(results) >= n, 30, 0.05)
        time.sleep(0.3)
        check(ok and len(results) == n, f"closing session {n} lets exactly {n} waiter(s) run: "
              f"{results}")
    for i in list(results):
        release[i].set()
    wait_until(lambda: len(results) == 3, 30, 0.05)
    for i in range(3):
        release[i].set()
    for th in threads:
        th.join(60)
    check(len(results) == 3 and all(isinstance(v, int) for v in results.values()),
          f"all five sessions ran: {results}")
    used = pids | {v for v in results.values() if isinstance(v, int)}
    check(len(used) <= 2, f"five sessions used at most two backends: {sorted(used)}")
    check(len(app_servers(t)) <= 2, f"still at most 2 servers: {len(app_servers(t))}")


def test_wait_timeout(t):
    t.admin("SET query_wait_timeout = '1s'")
    holders = [session(t, f"pool_hold{i}") for i in range(2)]
    for c in holders:
        one(c, "SELECT 1")
    st, info = t.raw_login(tls=True)
    check(st == "error" and info.get("C") == "53300" and
          "query_wait_timeout" in info.get("M", ""),
          f"busy pool + query_wait_timeout=1s: ErrorResponse 53300 with a clear message: "
          f"{st} {info}")
    for c in holders:
        c.close()
    t.admin("SET query_wait_timeout = '60s'")
    c = session(t, "pool_after_timeout")
    check(one(c, "SELECT 7") == 7, "the pool serves again once servers are free")
    c.close()


def test_reset(t):
    holder = session(t, "pool_holder")  # takes one of the two servers
    hpid = one(holder, "SELECT pg_backend_pid()")
    same = 0
    for attempt in range(3):
        a = session(t, f"pool_dirty{attempt}")
        apid = one(a, "SELECT pg_backend_pid()")
        cur = a.cursor()
        cur.execute("SET work_mem = '7777kB'")
        cur.execute("SET tprox.flag = 'dirty'")
        cur.execute("PREPARE tprox_stmt AS SELECT 1")
        cur.execute("CREATE TEMP TABLE tprox_temp (x int)")
        a.close()
        b = session(t, f"pool_clean{attempt}")
        bpid = one(b, "SELECT pg_backend_pid()")
        check(bpid != hpid, "the next client does not get the held server")
        if bpid == apid:
            same += 1
        wm = one(b, "SHOW work_mem")
        flag = one(b, "SELECT current_setting('tprox.flag', true)")
        nprep = one(b, "SELECT count(*) FROM pg_prepared_statements")
        ntemp = one(b, "SELECT count(*) FROM pg_class WHERE relname = 'tprox_temp'")
        check(wm != "7777kB" and flag != "dirty" and nprep == 0 and ntemp == 0,
              f"client after a dirty session (backend {apid} -> {bpid}) sees clean state: "
              f"work_mem={wm} flag={flag!r} prepared={nprep} temp={ntemp}")
        b.close()
    check(same >= 1, f"the server was reused by the next client at least once ({same}/3)")
    holder.close()


def idle_servers(t):
    return int(pool_row(t).get("sv_idle", 0))


def config_value(t, key):
    return next((r["value"] for r in t.admin_rows("SHOW CONFIG") if r["key"] == key), None)


def reuse_order(t, round_robin):
    """Two sessions hold both servers and close one after the other; the next session gets the
    server given back last (LIFO, the default) or first (server_round_robin), in both orders."""
    rule = "first" if round_robin else "last"
    for order in ((0, 1), (1, 0)):
        pair = [session(t, f"pool_order{i}") for i in range(2)]
        pids = [one(c, "SELECT pg_backend_pid()") for c in pair]
        check(pids[0] != pids[1], f"two sessions hold two servers: {pids}")
        for n, i in enumerate(order, start=1):
            pair[i].close()  # its reset (DISCARD ALL) runs, then the server is idle
            check(wait_until(lambda: idle_servers(t) >= n, 30, 0.05),
                  f"{n} idle server(s) after {n} close(s): {pool_row(t)}")
        nxt = session(t, "pool_order_next")
        got = one(nxt, "SELECT pg_backend_pid()")
        want = pids[order[0]] if round_robin else pids[order[1]]
        check(got == want, f"closes in order {order}: the next session gets the server given "
              f"back {rule} ({want}), got {got}")
        nxt.close()
        wait_until(lambda: idle_servers(t) >= 2, 30, 0.05)


def test_reuse_order(t):
    reuse_order(t, round_robin=False)
    t.write_conf("server_round_robin = on\n")
    t.admin("RELOAD")
    check(config_value(t, "server_round_robin") == "on", "RELOAD: server_round_robin = on")
    reuse_order(t, round_robin=True)
    t.write_conf("")
    t.admin("RELOAD")
    check(config_value(t, "server_round_robin") == "off", "RELOAD: server_round_robin back off")


def test_killed_in_txn(t):
    setup = session(t, "pool_setup")
    setup.cursor().execute("DROP TABLE IF EXISTS tprox_kill; CREATE TABLE tprox_kill (id int)")
    holder = session(t, "pool_holder2")
    one(holder, "SELECT 1")
    setup.close()
    st, s = t.raw_login(tls=True)
    if not check(st == "ok", f"raw client logs in ({s if st != 'ok' else ''})"):
        holder.close()
        return
    out = raw_query(s, "BEGIN; INSERT INTO tprox_kill VALUES (1)")
    status = out[-1][1]
    check(status == b"T", f"raw client is inside a transaction (ReadyForQuery {status!r})")
    hard_close(s)
    nxt = session(t, "pool_next")
    n = one(nxt, "SELECT count(*) FROM tprox_kill")
    check(n == 0, f"the next client does not see the uncommitted row (count {n})")
    ts = nxt.info.transaction_status
    check(ts == ext.TRANSACTION_STATUS_IDLE, f"the next client is not inside a transaction ({ts})")
    check(one(nxt, "SELECT now() = statement_timestamp()"),
          "the next client's statement runs in its own transaction")
    nxt.close()
    time.sleep(1)
    check(one(holder, "SELECT count(*) FROM tprox_kill") == 0,
          "the killed client's row never becomes visible")
    holder.close()


def test_killed_mid_query(t):
    obs = session(t, "pool_observer")
    st, s = t.raw_login(tls=True)
    if not check(st == "ok", "raw client logs in"):
        obs.close()
        return
    out = raw_query(s, "SELECT pg_backend_pid()")
    pid = int([b for typ, b in out if typ == b"D"][0][6:])
    s.sendall(b"Q" + struct.pack("!I", 4 + len("SELECT pg_sleep(300) -- tprox_sleep") + 1) +
              b"SELECT pg_sleep(300) -- tprox_sleep\0")

    def active():
        return one(obs, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = "
                        "'active' AND query LIKE '%%tprox_sleep%%'", (pid,))
    check(wait_until(active, 30, 0.1), f"backend {pid} runs the pg_sleep")
    hard_close(s)
    gone = wait_until(lambda: active() == 0, 60, 0.2)
    check(gone, f"after the client vanished, backend {pid} no longer runs pg_sleep")
    obs.close()


def main():
    # one data-plane loop: the reuse of a server by the next client is asserted below, and with
    # worker threads the next client may land on another worker, which opens its own server
    # (the shared pool_size cap across workers is t_txn_workers')
    t = Tide({"pool_size": 2, "query_wait_timeout": "60s", "workers": 1}, name="pool")
    for fn in (test_queueing, test_wait_timeout, test_reset, test_reuse_order, test_killed_in_txn,
               test_killed_mid_query):
        log(f"--- {fn.__name__}")
        try:
            fn(t)
        except Exception as e:  # noqa: BLE001 - one broken case is a failure; go on
            check(False, f"{fn.__name__} raised {type(e).__name__}: {e}")
        check(t.alive(), f"pgtide alive after {fn.__name__}")
    t.stop()
    finish()


if __name__ == "__main__":
    main()
