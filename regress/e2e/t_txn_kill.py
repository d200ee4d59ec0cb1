"""t_txn_kill: a client killed mid-transaction in transaction pooling (pool_size=1, so the next
client must get that very server connection).

The killed client's server is not handed to another client inside its transaction: the next
client is outside any transaction (ReadyForQuery 'I', its statement in a fresh transaction), the
uncommitted rows are never visible; the same after a client killed in the middle of an
extended-protocol pipeline (no Sync yet) and one killed while a query runs inside a transaction.
"""
import socket
import struct

import psycopg2
import psycopg2.extensions as ext

from t_txn_common import (B, E, P, Q, Raw, check, direct_connect, direct_exec, finish, tide_dsn,
                          txn_tide, wait_until)


def hard_close(raw):
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.sock.close()


def next_client_clean(t, label):
    nxt = psycopg2.connect(tide_dsn(t, connect_timeout=30))
    try:
        cur = nxt.cursor()
        cur.execute("SELECT count(*) FROM txn_kill")
        n = cur.fetchone()[0]
        check(n == 0, f"{label}: the next client does not see the uncommitted rows ({n})")
        ts = nxt.info.transaction_status
        check(ts == ext.TRANSACTION_STATUS_INTRANS, f"{label}: psycopg2's own BEGIN only ({ts})")
        nxt.rollback()
        nxt.autocommit = True
        cur.execute("SELECT now() = statement_timestamp(), "
                    "pg_current_xact_id_if_assigned() IS NULL")
        check(cur.fetchone() == (True, True),
              f"{label}: the next client's statement runs in a fresh transaction")
        check(nxt.info.transaction_status == ext.TRANSACTION_STATUS_IDLE,
              f"{label}: ReadyForQuery says idle")
    finally:
        nxt.close()


def main():
    direct_exec("DROP TABLE IF EXISTS txn_kill; CREATE TABLE txn_kill (id int)")
    t = txn_tide(pool_size=1, name="txn_kill")

    r = Raw(t.port)
    out = r.run(Q("BEGIN; INSERT INTO txn_kill VALUES (1)"))
    check(out[-1] == "Z:T", f"killed client was inside a transaction ({out[-1]})")
    hard_close(r)
    next_client_clean(t, "killed after INSERT in a transaction")

    r = Raw(t.port)
    r.run(Q("BEGIN"))
    r.send(P("k", "INSERT INTO txn_kill VALUES ($1::int)"), B("k", [2]), E(), msg_flush())
    hard_close(r)
    next_client_clean(t, "killed mid-pipeline (no Sync) in a transaction")

    r = Raw(t.port)
    r.run(Q("BEGIN; INSERT INTO txn_kill VALUES (3)"))
    r.send(Q("SELECT pg_sleep(30)"))

    def sleeping():
        d = direct_connect()
        cur = d.cursor()
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' "
                    "AND state = 'active'")
        n = cur.fetchone()[0]
        d.close()
        return n > 0
    check(wait_until(sleeping, 30), "the doomed client's pg_sleep runs")
    hard_close(r)
    next_client_clean(t, "killed while a query ran in a transaction")

    d = direct_connect()
    cur = d.cursor()
    cur.execute("SELECT count(*) FROM txn_kill")
    check(cur.fetchone()[0] == 0, "no killed client's row ever becomes visible")
    d.close()
    t.stop()
    finish()


def msg_flush():
    from t_txn_common import H
    return H()


if __name__ == "__main__":
    main()
