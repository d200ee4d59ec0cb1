"""t_txn_kill: a client killed mid-transaction in transaction pooling (pool_size=1, so the next
client must get that very server connection).

The killed client's server is not handed to another client inside its transaction: the next
client is outside any transaction (ReadyForQuery 'I', its statement in a fresh transaction), the
uncommitted rows are never visible; the same after a client killed in the middle of an
extended-protocol pipeline (no Sync yet) and one killed while a query runs inside a transaction.

And a client that leaves while its server is still applying its settings (state setup: the server
was handed over with another application_name, and its backend is held with SIGSTOP so the SET
cannot finish first): pgtide lets go of it, the server goes back to the pool once the SET is
done, and the next client gets it (this was a use-after-free of the departed client).

And, in transaction and in session pooling, a client killed after an INSERT sent with
Parse/Bind/Execute/Flush but no Sync (outside BEGIN: the backend holds it in an implicit
transaction): the server is closed, not handed on (transaction pooling) or reset with DISCARD ALL
(session pooling), either of which would commit the row.

Last, the server side: a backend terminated while pgtide streams a 20 MB row to a client that
does not read yet. The client then gets the bytes that came and the end of the connection, and
no ErrorResponse written into the middle of the row (it would be read as row bytes).
"""
import os
import signal
import socket
import struct
import time

import psycopg2
import psycopg2.extensions as ext

from t_txn_common import (B, E, H, P, Q, Raw, check, describe_msg, direct_connect, direct_exec,
                          finish, read_msg, tide_dsn, txn_tide, wait_until)


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

    unsynced_then_killed(t, "transaction pooling")
    t.stop()
    # one loop: with workers, a login on the other worker may itself need the stopped backend
    u = txn_tide(pool_size=1, name="txn_kill_setup", workers=1)
    left_during_setup(u)
    u.stop()
    s = txn_tide(mode="session", pool_size=1, name="txn_kill_session")
    unsynced_then_killed(s, "session pooling")
    server_gone_mid_row(s)
    check(s.alive(), "pgtide is still running")
    s.stop()
    finish()


def unsynced_then_killed(t, label):
    r = Raw(t.port)
    r.send(P("", "INSERT INTO txn_kill VALUES (42)"), B(""), E(), H())
    got = []
    while len(got) < 3:
        typ, body = read_msg(r.sock)
        d = describe_msg(typ, body)
        if d is not None:
            got.append(d)
    check(got == ["1", "2", "C:INSERT 0 1"], f"{label}: the INSERT ran, unsynced ({got})")
    hard_close(r)
    nxt = psycopg2.connect(tide_dsn(t, connect_timeout=30))  # pool_size=1: after r's server
    nxt.autocommit = True
    cur = nxt.cursor()
    cur.execute("SELECT count(*) FROM txn_kill")
    n = cur.fetchone()[0]
    nxt.close()
    check(n == 0, f"{label}: the next client does not see the unsynced row ({n})")
    d = direct_connect()
    cur = d.cursor()
    cur.execute("SELECT count(*) FROM txn_kill")
    n = cur.fetchone()[0]
    d.close()
    check(n == 0, f"{label}: the unsynced row was never committed ({n})")


def server_gone_mid_row(t):
    sql = "SELECT repeat('x', 20000000) AS big"
    r = Raw(t.port)
    r.send(Q(sql))

    def blocked():
        d = direct_connect()
        cur = d.cursor()
        cur.execute("SELECT pid FROM pg_stat_activity WHERE query = %s "
                    "AND wait_event = 'ClientWrite'", (sql,))
        rows = cur.fetchall()
        d.close()
        return rows
    rows = wait_until(blocked, 30)
    check(bool(rows), "the backend is blocked writing the row to pgtide")
    if not rows:
        r.close()
        return
    direct_exec(f"SELECT pg_terminate_backend({rows[0][0]})")
    data = b""
    r.sock.settimeout(60)
    while True:
        chunk = r.sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    r.sock.close()
    check(len(data) < 20000000, f"the row was cut short ({len(data)} bytes came)")
    check(b"08006" not in data[-4096:] and b"server connection lost" not in data[-4096:],
          "no ErrorResponse inside the cut row: the connection just ends")


def left_during_setup(t):
    first = psycopg2.connect(tide_dsn(t, application_name="first", connect_timeout=30))
    first.autocommit = True
    cur = first.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]  # the pool's one server
    first.close()
    os.kill(pid, signal.SIGSTOP)
    try:
        r = Raw(t.port, extra={"application_name": "second"})
        r.send(Q("SELECT 1"))

        def in_setup():
            return any(s["state"] == "setup" for s in t.admin_rows("SHOW SERVERS")
                       if s["user"] == "app")
        check(wait_until(in_setup, 30), "the server is applying the second client's settings")
        hard_close(r)
        check(wait_until(lambda: not any(c["user"] == "app" for c in t.admin_rows("SHOW CLIENTS")),
                         30), "pgtide saw the client leave")
    finally:
        os.kill(pid, signal.SIGCONT)
    time.sleep(0.5)  # the SET's answer arrives for a client that is gone
    check(t.alive(), "pgtide is still running")
    nxt = psycopg2.connect(tide_dsn(t, application_name="third", connect_timeout=30))
    nxt.autocommit = True
    cur = nxt.cursor()
    cur.execute("SELECT pg_backend_pid(), current_setting('application_name')")
    got = cur.fetchone()
    check(got == (pid, "third"), f"the next client gets that server with its own settings ({got})")
    nxt.close()


def msg_flush():
    from t_txn_common import H
    return H()


if __name__ == "__main__":
    main()
