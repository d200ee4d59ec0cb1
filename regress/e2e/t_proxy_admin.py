"""t_proxy_admin: the admin console (database "pgtide").

Against the target pgtide: every SHOW answers with its documented columns (SHOW CLIENTS lists a
connected TLS client with its user, database, state and TLS version; SHOW POOLS counts it; SHOW
STATS query counts grow after queries); a non-admin user is refused with 42501; the extended
protocol gets 0A000 and the console then works again; KILL_CLIENT ends one client (its next query
fails with 57P01) while another keeps working; PAUSE holds a query (and a new login) until RESUME,
which then succeeds. On a private pgtide: RELOAD after editing DATA/pgtide.conf changes what SHOW
CONFIG reports; SET query_wait_timeout = '5s' shows in SHOW CONFIG; a bad SET value gets 22023.
"""
import os
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import psycopg2  # noqa: E402

from t_proxy_harness import (Tide, check, finish, log, msg, raw_query, read_msg,  # noqa: E402
                             error_fields, shared, wait_until)

COLS = {
    "SHOW HELP": ["help"],
    "SHOW VERSION": ["version"],
    "SHOW CONFIG": ["key", "value", "default", "changeable"],
    "SHOW CLIENTS": ["type", "user", "database", "state", "addr", "port", "local_addr",
                     "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr",
                     "link", "remote_pid", "tls", "application_name", "id", "queries",
                     "bytes_recv", "bytes_sent", "txn", "parkable"],
    "SHOW SERVERS": ["type", "user", "database", "state", "addr", "port", "connect_time",
                     "request_time", "ptr", "link", "remote_pid", "txn", "in_flight"],
    "SHOW POOLS": ["database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle",
                   "sv_login", "maxwait", "maxwait_us", "pool_mode"],
    "SHOW STATS": ["database", "total_xact_count", "total_query_count", "total_received",
                   "total_sent", "total_xact_time", "total_query_time", "total_wait_time",
                   "auth_failures"],
    "SHOW DATABASES": ["name", "host", "port", "database", "force_user", "pool_size",
                       "min_pool_size", "pool_mode", "max_connections", "current_connections"],
    "SHOW COMPUTES": ["role", "state", "pid", "cu", "started", "uptime", "connections",
                      "last_activity", "starts", "last_start_ms", "pause_method"],
}

UNITS = {"ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000}


def duration_ms(text):
    """Milliseconds of a pgtide duration as SHOW CONFIG prints it ("5s", "5000ms", "5")."""
    text = text.strip()
    for u in sorted(UNITS, key=len, reverse=True):
        if text.endswith(u) and text[:-len(u)].strip().isdigit():
            return int(text[:-len(u)]) * UNITS[u]
    return int(text) * 1000 if text.isdigit() else None


def config_value(ep, key):
    for r in ep.admin_rows("SHOW CONFIG"):
        if r["key"] == key:
            return r["value"]
    return None


def app_conn(ep, name):
    c = ep.connect(sslmode="require", application_name=name)
    c.autocommit = True
    return c


def client_row(ep, appname):
    for r in ep.admin_rows("SHOW CLIENTS"):
        if r["application_name"] == appname:
            return r
    return None


def test_shows(ep):
    held = app_conn(ep, "t_proxy_admin_a")
    cur = held.cursor()
    cur.execute("SELECT 1")
    for cmd, cols in COLS.items():
        try:
            got, rows = ep.admin(cmd)
        except psycopg2.Error as e:
            check(False, f"{cmd} answers (got {e})")
            continue
        # the documented columns, in this order; columns added later are allowed after them
        check(got[:len(cols)] == cols, f"{cmd} columns {got}")
        if cmd != "SHOW COMPUTES" or os.environ.get("PGTIDE_TARGET") == "embedded":
            check(len(rows) > 0, f"{cmd} returns rows ({len(rows)})")
    ver = ep.admin_rows("SHOW VERSION")
    check(ver and ver[0]["version"].startswith("pgtide "), f"SHOW VERSION says pgtide: {ver}")
    port = config_value(ep, "listen_port")
    check(port == str(ep.port), f"SHOW CONFIG listen_port = {port} (connected to {ep.port})")
    row = client_row(ep, "t_proxy_admin_a")
    check(row is not None, "SHOW CLIENTS lists the connected client by application_name")
    if row:
        check(row["user"] == "app" and row["database"] == "appdb",
              f"client row user/database = {row['user']}/{row['database']}")
        check(row["state"] == "active", f"client row state = {row['state']}")
        check((row["tls"] or "").startswith("TLS"), f"client row tls = {row['tls']!r}")
        check(row["type"] == "C" and row["addr"] == "127.0.0.1", f"client row type/addr {row}")
    dbs = {r["name"] for r in ep.admin_rows("SHOW DATABASES")}
    check("appdb" in dbs and "pgtide" in dbs, f"SHOW DATABASES lists appdb and pgtide: {dbs}")
    servers = [r for r in ep.admin_rows("SHOW SERVERS") if r["user"] == "app"]
    check(len(servers) >= 1, f"SHOW SERVERS lists a server of app ({len(servers)})")

    def pool():
        for r in ep.admin_rows("SHOW POOLS"):
            if r["database"] == "appdb" and r["user"] == "app":
                return r
        return None

    before = pool()
    check(before is not None and int(before["cl_active"]) >= 1,
          f"SHOW POOLS counts the connected client: {before}")
    extra = [app_conn(ep, f"t_proxy_admin_p{i}") for i in range(2)]
    after = pool()
    if before and after:
        check(int(after["cl_active"]) == int(before["cl_active"]) + 2,
              f"two more clients: cl_active {before['cl_active']} -> {after['cl_active']}")
        check(int(after["sv_active"]) >= int(before["sv_active"]) + 2 or
              after["pool_mode"] != "session",
              f"session mode: sv_active {before['sv_active']} -> {after['sv_active']}")
    for c in extra:
        c.close()

    def queries():
        for r in ep.admin_rows("SHOW STATS"):
            if r["database"] == "appdb":
                return int(r["total_query_count"]), int(r["total_received"])
        return None

    q0 = queries()
    for i in range(25):
        cur.execute("SELECT %s", (i,))
    q1 = wait_until(lambda: (lambda q: q if q and q0 and q[0] >= q0[0] + 25 else None)(queries()),
                    10, 0.2) or queries()
    check(q0 is not None and q1 is not None and q1[0] >= q0[0] + 25 and q1[1] > q0[1],
          f"SHOW STATS appdb total_query_count/received grow by >= 25 queries: {q0} -> {q1}")
    held.close()


def test_non_admin(ep):
    st, info = ep.raw_login("app", "secret", "pgtide", tls=True)
    check(st == "error" and info.get("C") == "42501",
          f"non-admin user on the console refused with 42501: {st} {info}")
    # and an admin works over the same raw path
    st, s = ep.raw_login("postgres", ep.superpass, "pgtide", tls=True)
    check(st == "ok", f"admin postgres logs in to the console raw ({s if st != 'ok' else ''})")
    if st != "ok":
        return
    # extended protocol: Parse + Sync -> 0A000 then ReadyForQuery; Bind/Execute before Sync skipped
    s.sendall(msg(b"P", b"\0SHOW VERSION\0\0\0") + msg(b"B", b"\0\0\0\0\0\0\0\0") +
              msg(b"E", b"\0\0\0\0\0") + msg(b"S", b""))
    got = []
    while True:
        typ, body = read_msg(s)
        got.append((typ, body))
        if typ == b"Z":
            break
    errs = [error_fields(b) for t, b in got if t == b"E"]
    check(len(errs) == 1 and errs[0].get("C") == "0A000",
          f"extended protocol on the console: one ErrorResponse 0A000 then Z: "
          f"{[t for t, _ in got]} {errs}")
    out = raw_query(s, "SHOW VERSION")
    rows = [b for t, b in out if t == b"D"]
    check(len(rows) == 1 and b"pgtide" in rows[0] and not [t for t, _ in out if t == b"E"],
          f"simple query works again after the error: {[t for t, _ in out]}")
    s.close()


def test_kill_client(ep):
    # the victim speaks raw protocol, so the ErrorResponse pgtide sends can be read as it comes
    # (libpq only reports "server closed the connection" for a FATAL that arrives between queries)
    st, a = ep.raw_login("app", "secret", "appdb", tls=True,
                         extra={"application_name": "t_proxy_kill_a"})
    if not check(st == "ok", f"victim logs in ({a if st != 'ok' else ''})"):
        return
    b = app_conn(ep, "t_proxy_kill_b")
    b.cursor().execute("SELECT 1")
    raw_query(a, "SELECT 1")
    row = client_row(ep, "t_proxy_kill_a")
    if not check(row is not None, "victim client listed"):
        return
    ep.admin(f"KILL_CLIENT {row['id']}")
    try:
        typ, body = read_msg(a)
        got = (typ, error_fields(body) if typ == b"E" else body)
    except (EOFError, OSError) as e:
        got = ("closed", str(e))
    check(got[0] == b"E" and got[1].get("C") == "57P01" and got[1].get("S") == "FATAL",
          f"killed client receives FATAL 57P01: {got}")
    try:
        a.sendall(msg(b"Q", b"SELECT 1\0"))
        typ, body = read_msg(a)
        after = typ
    except (EOFError, OSError) as e:
        after = f"closed ({type(e).__name__})"
    check(after != b"Z" and not isinstance(after, bytes),
          f"killed client's next query gets no answer, the connection is closed: {after}")
    cur = b.cursor()
    cur.execute("SELECT 42")
    check(cur.fetchone() == (42,), "the other client keeps working after KILL_CLIENT")
    try:
        ep.admin("KILL_CLIENT 999999999")
        check(False, "KILL_CLIENT of an unknown id is an error")
    except psycopg2.Error as e:
        check(e.pgcode == "42704", f"KILL_CLIENT of an unknown id: {e.pgcode}")
    # C-<id> spelling
    b_row = client_row(ep, "t_proxy_kill_b")
    ep.admin(f"KILL_CLIENT C-{b_row['id']}")
    check(wait_until(lambda: client_row(ep, "t_proxy_kill_b") is None, 10, 0.1) is not None,
          "KILL_CLIENT C-<id> removes the client from SHOW CLIENTS")
    a.close()
    b.close()


def test_pause(ep):
    c = app_conn(ep, "t_proxy_pause")
    c.cursor().execute("SELECT 1")
    done = {}

    def run_query():
        try:
            cur = c.cursor()
            cur.execute("SELECT 'released'")
            done["q"] = cur.fetchone()[0]
        except psycopg2.Error as e:
            done["q"] = f"error {e.pgcode}: {e}"

    def run_login():
        try:
            n = app_conn(ep, "t_proxy_pause_new")
            cur = n.cursor()
            cur.execute("SELECT 'new released'")
            done["n"] = cur.fetchone()[0]
            n.close()
        except psycopg2.Error as e:
            done["n"] = f"error {e.pgcode}: {e}"

    ep.admin("PAUSE")
    try:
        t1 = threading.Thread(target=run_query, daemon=True)
        t2 = threading.Thread(target=run_login, daemon=True)
        t1.start()
        t2.start()
        t1.join(3)
        t2.join(0.5)
        check("q" not in done, f"a query started after PAUSE is held ({done.get('q')})")
        check("n" not in done, f"a new session's query after PAUSE is held ({done.get('n')})")
    finally:
        ep.admin("RESUME")
    t1.join(60)
    t2.join(60)
    check(done.get("q") == "released", f"held query succeeds after RESUME: {done.get('q')}")
    check(done.get("n") == "new released", f"held new session succeeds after RESUME: "
          f"{done.get('n')}")
    c.close()


def test_reload_set():
    t = Tide({}, name="admin", conf="server_idle_timeout = 111s\n", reuse="admin")
    v = config_value(t, "server_idle_timeout")
    check(duration_ms(v or "") == 111000, f"pgtide.conf value shown: server_idle_timeout = {v}")
    t.write_conf("server_idle_timeout = 222s\n")
    t.admin("RELOAD")
    v = config_value(t, "server_idle_timeout")
    check(duration_ms(v or "") == 222000, f"after RELOAD: server_idle_timeout = {v}")
    t.admin("SET query_wait_timeout = '5s'")
    v = config_value(t, "query_wait_timeout")
    check(duration_ms(v or "") == 5000, f"after SET: query_wait_timeout = {v}")
    for bad in ("SET query_wait_timeout = 'soon'", "SET pool_size = '-3'"):
        try:
            t.admin(bad)
            check(False, f"{bad} is refused")
        except psycopg2.Error as e:
            check(e.pgcode == "22023", f"{bad}: {e.pgcode} {str(e).strip()}")
    v = config_value(t, "query_wait_timeout")
    check(duration_ms(v or "") == 5000, f"a refused SET changes nothing: {v}")
    # a broken file: RELOAD reports it and keeps the running values
    t.write_conf("server_idle_timeout = 222s\nno_such_key = 1\n")
    try:
        t.admin("RELOAD")
        check(False, "RELOAD of a file with an unknown key is an error")
    except psycopg2.Error as e:
        check("pgtide.conf:2" in str(e), f"RELOAD error names file:line: {str(e).strip()}")
    c = t.connect()
    c.cursor().execute("SELECT 1")
    c.close()
    t.stop()


def main():
    ep = shared()
    log(f"target {os.environ.get('PGTIDE_TARGET')} port {ep.port}")
    for fn in (test_shows, test_non_admin, test_kill_client, test_pause):
        log(f"--- {fn.__name__}")
        try:
            fn(ep)
        except Exception as e:  # noqa: BLE001 - a crash of one case is a failure, go on
            check(False, f"{fn.__name__} raised {type(e).__name__}: {e}")
    log("--- test_reload_set")
    try:
        test_reload_set()
    except Exception as e:  # noqa: BLE001
        check(False, f"test_reload_set raised {type(e).__name__}: {e}")
    finish()


if __name__ == "__main__":
    main()
