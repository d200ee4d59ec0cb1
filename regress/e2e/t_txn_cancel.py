"""t_txn_cancel: cancel requests in transaction pooling.

pool_size=5: client A's pg_sleep(60) is cancelled (57014) while client B's pg_sleep on another
server connection finishes normally. pool_size=1: A runs a query, its server goes back to the pool
and B's pg_sleep runs on it; A (now idle, holding no server) sends a cancel: B's query is not
cancelled. The query starts are observed in pg_stat_activity (directly), never by sleeping.
"""
import threading

import psycopg2

from t_txn_common import check, direct_connect, finish, tide_dsn, txn_tide, wait_until


def running(sql_like):
    d = direct_connect()
    try:
        cur = d.cursor()
        # not this query itself, whose text contains the pattern too: it used to match at
        # once, so a cancel could go out before the query had a server (and was dropped)
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE %s AND pid <> pg_backend_pid()", (sql_like,))
        return cur.fetchone()[0] > 0
    finally:
        d.close()


def run_in_thread(conn, sql, out, key):
    def go():
        try:
            conn.cursor().execute(sql)
            out[key] = "ok"
        except psycopg2.Error as e:
            out[key] = e.pgcode
    th = threading.Thread(target=go)
    th.start()
    return th


def main():
    t = txn_tide(pool_size=5, name="txn_cancel")
    a = psycopg2.connect(tide_dsn(t))
    b = psycopg2.connect(tide_dsn(t))
    for c in (a, b):
        c.autocommit = True
    out = {}
    tb = run_in_thread(b, "SELECT pg_sleep(2) /* txn_b */", out, "b")
    ta = run_in_thread(a, "SELECT pg_sleep(60) /* txn_a */", out, "a")
    check(wait_until(lambda: running("%txn_a%") and running("%txn_b%"), 30),
          "both queries run on the server")
    a.cancel()
    ta.join(30)
    tb.join(30)
    check(out.get("a") == "57014", f"A's pg_sleep(60) is cancelled with 57014 ({out.get('a')})")
    check(out.get("b") == "ok", f"B's query on another server is not cancelled ({out.get('b')})")
    # inside a transaction: the cancel reaches the server A holds
    a.cursor().execute("BEGIN")
    ta = run_in_thread(a, "SELECT pg_sleep(60) /* txn_a2 */", out, "a2")
    check(wait_until(lambda: running("%txn_a2%"), 30), "A's query inside a transaction runs")
    a.cancel()
    ta.join(30)
    check(out.get("a2") == "57014", f"A's query inside a transaction is cancelled ({out.get('a2')})")
    a.cursor().execute("ROLLBACK")
    a.close()
    b.close()
    t.stop()

    t = txn_tide(pool_size=1, name="txn_cancel1")
    a = psycopg2.connect(tide_dsn(t))
    b = psycopg2.connect(tide_dsn(t))
    for c in (a, b):
        c.autocommit = True
    a.cursor().execute("SELECT 1")
    tb = run_in_thread(b, "SELECT pg_sleep(2) /* txn_b3 */", out, "b3")
    check(wait_until(lambda: running("%txn_b3%"), 30), "B's query runs on the only server")
    a.cancel()
    tb.join(30)
    check(out.get("b3") == "ok", f"an idle A's cancel does not cancel B's query on the server A "
                                 f"used before ({out.get('b3')})")
    cur = a.cursor()
    cur.execute("SELECT 2")
    check(cur.fetchone()[0] == 2, "A works after its cancel")
    a.close()
    b.close()
    t.stop()
    finish()


if __name__ == "__main__":
    main()
