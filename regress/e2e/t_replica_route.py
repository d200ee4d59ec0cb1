"""t_replica_route: the reader endpoint routes to replicas (issue 6, data plane).

On pgtide's own embedded instance with an explicit read_port:
1. No replica: a client on the reader endpoint is served by the primary (pg_is_in_recovery()
   false) and can write.
2. SCALE REPLICAS 2: once both are in rotation, reader-endpoint sessions land on replicas
   (pg_is_in_recovery() true), spread over both (distinct inet_server_port()/system
   identifiers are not visible over unix sockets, so the replica is told apart by its data
   directory: current_setting('data_directory')), and a write there fails with PostgreSQL's own
   25006 — never silently succeeds elsewhere.
3. The startup option options=-c pgtide.route=replica on the main port routes the same way.
4. The main port keeps going to the primary.
5. Transaction pooling: each transaction of one reader session may go to another replica;
   all succeed.
"""
import psycopg2

from lib_serverless import Tide, check, finish, free_port, log, wait_until


def where(dsn):
    c = psycopg2.connect(dsn)
    c.autocommit = True
    k = c.cursor()
    k.execute("SELECT pg_is_in_recovery(), current_setting('data_directory')")
    r = k.fetchone()
    c.close()
    return r


def in_rotation(t):
    rows = [r for r in t.admin_rows("SHOW COMPUTES") if r.get("role") == "replica"]
    return len(rows) == 2 and all(r.get("in_rotation") == "yes" for r in rows)


def main():
    rport = free_port()
    t = Tide({"suspend_after": "0", "pause_after": "0", "read_port": str(rport),
              "pool_mode": "session"}, name="route")
    reader = t.dsn().replace(f"port={t.port}", f"port={rport}")
    primary = t.dsn()

    rec, ddir = where(reader)
    check(rec is False, f"no replica: the reader endpoint is served by the primary ({ddir})")
    c = psycopg2.connect(reader)
    c.autocommit = True
    c.cursor().execute("CREATE TABLE route_t (id int)")
    c.cursor().execute("INSERT INTO route_t VALUES (1)")
    c.close()

    t.admin("SCALE REPLICAS 2")
    check(wait_until(lambda: in_rotation(t), 90, 0.5), "two replicas in rotation")

    seen = set()
    for _ in range(12):
        rec, ddir = where(reader)
        check(rec is True, f"a reader-endpoint session is on a replica ({ddir})")
        seen.add(ddir)
    check(len(seen) == 2, f"reads are spread over both replicas ({sorted(seen)})")

    c = psycopg2.connect(reader)
    c.autocommit = True
    try:
        c.cursor().execute("INSERT INTO route_t VALUES (2)")
        check(False, "a write on the reader endpoint is refused")
    except psycopg2.Error as e:
        check(e.pgcode == "25006", f"a write on a replica fails with 25006 (got {e.pgcode})")
    c.close()

    rec, _ = where(primary + " options='-c pgtide.route=replica'")
    check(rec is True, "options=-c pgtide.route=replica on the main port goes to a replica")
    rec, _ = where(primary)
    check(rec is False, "the main port goes to the primary")

    c = psycopg2.connect(primary)
    c.autocommit = True
    k = c.cursor()
    k.execute("SELECT count(*) FROM route_t")
    check(k.fetchone()[0] == 1, "the refused write left nothing behind")
    c.close()
    t.stop()

    # transaction pooling on the reader endpoint: every transaction gets a replica
    rport = free_port()
    t2 = Tide({"suspend_after": "0", "pause_after": "0", "read_port": str(rport),
               "pool_mode": "transaction"}, name="routetx")
    # replicas follow the primary: it runs once a client needs it
    c = psycopg2.connect(t2.dsn().replace(f"port={t2.port}", f"port={rport}"))
    c.autocommit = True
    k = c.cursor()
    k.execute("SELECT 1")
    t2.admin("SCALE REPLICAS 2")
    check(wait_until(lambda: in_rotation(t2), 90, 0.5), "transaction pooling: replicas in rotation")
    dirs = set()
    for _ in range(20):
        k.execute("SELECT pg_is_in_recovery(), current_setting('data_directory')")
        rec, ddir = k.fetchone()
        check(rec is True, "each transaction of a reader session runs on a replica")
        dirs.add(ddir)
    log(f"transactions of one reader session ran on {len(dirs)} replica(s)")
    c.close()
    t2.stop()
    finish()


main()
