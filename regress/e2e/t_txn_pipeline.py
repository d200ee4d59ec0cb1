"""t_txn_pipeline: extended-protocol pipelines with an error mid-way, in transaction pooling.

The same raw protocol scripts run against PostgreSQL directly and through a private pgtide
(pool_mode=transaction, pool_size=1 so that every client shares one server connection and a
DISCARD ALL from another client makes pgtide prepare statements again, with hidden Parses, on the
next use); the answer sequences (every message but ParameterStatus/notices, errors as SQLSTATE)
must be identical: after the failing 2nd of 4 statements, everything up to Sync is skipped, the
next Sync group runs, and the connection works afterwards. Then psycopg 3 pipeline mode with an
error in the middle, compared with direct too.

Also: the rest of a failing group sent only after its error came back (Flush); an error too large
to be seen whole (over 32 kB); a portal read in parts with Execute+Flush and no Sync (the server
stays this client's until the Sync: another client waits meanwhile); DISCARD ALL through the
extended protocol from another client; pgtide's own ParseComplete due while the client reads a
large result through a small receive window (this did not reproduce the reordering it guards
against, which needs pgtide's write to block at that very message). After each, another client
must get the one server (nothing left queued).
"""
import os
import socket
import threading
import time

import psycopg

from t_txn_common import (B, D, E, H, P, Q, S, Raw, check, describe_msg, direct_dsn, finish, log,
                          read_msg, tide_dsn, txn_tide)


def other_discard(port):
    """Another client runs DISCARD ALL on the same target (pgtide: the shared server forgets its
    statements)."""
    o = Raw(port)
    o.run(Q("DISCARD ALL"))
    o.close()


def other_discard_extended(port):
    """The same through the extended protocol, as JDBC sends every statement."""
    o = Raw(port)
    o.run(P("", "/* pool reset */ DISCARD ALL"), B(""), E(), S())
    o.close()


def read_some(r, n=None):
    """Summaries of the next n messages that describe_msg keeps (n None: up to an error)."""
    out = []
    while (len(out) < n) if n is not None else not (out and out[-1].startswith("E:")):
        typ, body = read_msg(r.sock)
        d = describe_msg(typ, body)
        if d is not None:
            out.append(d)
    return out


def other_client(port):
    """Another client's query on the same target: with pool_size=1 it needs the one server."""
    o = Raw(port) if port else Raw()
    try:
        return o.run(Q("SELECT 'other'"))
    finally:
        o.close()


def scripts(port):
    def named_four(r):
        out = r.run(P("ok", "SELECT $1::int AS v"), P("div", "SELECT 10 / $1::int AS v"), S())
        other_discard(port)
        out += r.run(B("ok", [1]), E(), B("div", [0]), E(), B("ok", [3]), E(), B("ok", [4]), E(),
                     S(), B("ok", [5]), E(), S())
        out += r.run(Q("SELECT 'after'"))
        return out

    def parses_in_failing_group(r):
        # 2nd statement fails: the Parses of the 3rd and 4th never happen on PostgreSQL, so their
        # names do not exist afterwards (26000 on Bind)
        out = r.run(P("a1", "SELECT 1"), B("a1"), E(),
                    P("a2", "SELECT 1/0"), B("a2"), E(),
                    P("a3", "SELECT 3"), B("a3"), E(),
                    P("a4", "SELECT 4"), B("a4"), E(), S())
        out += r.run(B("a3"), E(), S())
        out += r.run(B("a1"), E(), S())
        return out

    def parses_failing_known_text(r):
        # the same texts are already prepared on the server by another client: pgtide may answer
        # those Parses itself; still nothing after the error is answered, and a3 does not exist
        o = Raw(port) if port else Raw()
        o.run(P("x3", "SELECT 3"), P("x4", "SELECT 4"), S())
        o.close()
        out = r.run(P("a1", "SELECT 1"), B("a1"), E(),
                    P("a2", "SELECT 1/0"), B("a2"), E(),
                    P("a3", "SELECT 3"), B("a3"), E(),
                    P("a4", "SELECT 4"), B("a4"), E(), S())
        out += r.run(B("a3"), E(), S())
        out += r.run(B("a4"), E(), S())
        return out

    def bad_parse(r):
        out = r.run(P("bad", "SELEC 1"), B("bad"), E(), S())
        out += r.run(B("bad"), E(), S())
        out += r.run(P("bad", "SELECT 2"), B("bad"), E(), S())
        return out

    def unnamed(r):
        return r.run(P("", "SELECT 1"), B(""), E(), P("", "SELECT 1/0"), B(""), E(),
                     P("", "SELECT 3"), B(""), E(), P("", "SELECT 4"), B(""), E(), S(),
                     P("", "SELECT 5"), B(""), E(), S())

    def many_syncs(r):
        # three Sync groups in flight at once, the middle one failing at its 2nd statement
        msgs = []
        for g in range(3):
            msgs += [P(f"g{g}", f"SELECT {g} AS g, 10 / $1::int AS q"), S()]
        for g in range(3):
            for i in range(4):
                msgs += [B(f"g{g}", [0 if (g == 1 and i == 1) else i + 1]), E()]
            msgs.append(S())
        return r.run(*msgs)

    def in_transaction(r):
        out = r.run(Q("BEGIN"))
        out += r.run(P("t1", "SELECT $1::int"), B("t1", [1]), E(), P("t2", "SELECT 1/$1::int"),
                     B("t2", [0]), E(), B("t1", [3]), E(), B("t1", [4]), E(), S())
        out += r.run(B("t1", [5]), E(), S())
        out += r.run(Q("ROLLBACK"))
        out += r.run(B("t1", [6]), E(), S())
        return out

    def describe_in_pipeline(r):
        out = r.run(P("d1", "SELECT $1::int AS a, 'x'::text AS b"), S())
        other_discard(port)
        out += r.run(D("S", "d1"), B("d1", [1]), D("P", ""), E(), B("nosuch"), E(), D("S", "d1"),
                     B("d1", [2]), E(), S(), D("S", "d1"), B("d1", [3]), E(), S())
        return out

    def rest_after_error(r):
        # the error comes back (Flush) before the rest of its group is sent: those messages are
        # skipped by the server up to the Sync, and nothing of them stays expected
        r.send(P("e1", "SELECT 10 / $1::int"), B("e1", [0]), E(), H())
        out = read_some(r)
        out += r.run(B("e1", [1]), E(), P("e2", "SELECT 2"), B("e2"), E(), S())
        out += r.run(B("e1", [5]), E(), S())
        out += other_client(port)
        out += r.run(B("e2"), E(), S())  # e2's Parse was skipped: 26000
        return out

    def huge_error(r):
        # an ErrorResponse over 32 kB (the value is quoted in it) still skips to the Sync
        out = r.run(P("h1", "SELECT $1::int"), S())
        out += r.run(B("h1", [1]), E(), P("h2", "SELECT repeat('x', 40000)::int"), B("h2"), E(),
                     B("h1", [3]), E(), S())
        out += r.run(B("h1", [4]), E(), S())
        out += other_client(port)
        return out

    def portal_in_parts(r):
        # a cursor-like read (node-postgres' pg-cursor): Execute with a row limit and Flush, no
        # Sync until the end; meanwhile another client waits for the one server
        out = r.run(P("c1", "SELECT generate_series(1, 5) AS n"), S())
        r.send(B("c1", portal="p1"), E("p1", 2), H())
        out += read_some(r, 4)
        res = []
        th = threading.Thread(target=lambda: res.append(other_client(port)))
        th.start()
        time.sleep(0.3)  # gives the other client time to take the server, if pgtide let it
        r.send(E("p1", 2), H())
        out += read_some(r, 3)
        out += r.run(E("p1", 2), S())
        th.join(60)
        out += res[0] if res else ["other client: no answer"]
        return out

    def discard_extended_elsewhere(r):
        out = r.run(P("x1", "SELECT $1::int + 1"), B("x1", [1]), E(), S())
        other_discard_extended(port)
        out += r.run(B("x1", [2]), E(), S())
        return out

    def own_answer_while_reading_slowly(r):
        # pgtide answers P f1 itself (its text is prepared on the server already); that answer
        # falls due while writing a large result to a client that reads slowly: it must still
        # come after the result and before f1's BindComplete
        out = r.run(P("f0", "SELECT 42"), S())
        # a small receive window keeps pgtide's writes to it partial: it is often blocked
        if r.sock.family != socket.AF_UNIX:
            r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        r.send(Q("SELECT repeat('x', 1000) FROM generate_series(1, 3000)"),
               P("f1", "SELECT 42"), B("f1"), E(), S())
        time.sleep(0.5)  # lets the result fill the socket buffers
        rows, n_ready = 0, 0
        while n_ready < 2:
            typ, body = read_msg(r.sock)
            if typ == b"D" and n_ready == 0:
                rows += 1
                continue
            d = describe_msg(typ, body)
            if d is not None:
                out.append(d)
            if typ == b"Z":
                n_ready += 1
        out.append(f"rows {rows}")
        out += other_client(port)
        return out

    return [("4 named statements, the 2nd fails, after a DISCARD ALL elsewhere", named_four),
            ("Parses after the error are skipped (their names do not exist)",
             parses_in_failing_group),
            ("skipped Parses of texts another client prepared", parses_failing_known_text),
            ("a failing named Parse leaves no statement", bad_parse),
            ("unnamed statements, the 2nd fails", unnamed),
            ("three Sync groups in flight, the middle one fails", many_syncs),
            ("error inside an explicit transaction (25P02 until ROLLBACK)", in_transaction),
            ("Describe/Bind/Execute pipeline with an unknown statement", describe_in_pipeline),
            ("the rest of a failing group sent after its error", rest_after_error),
            ("an error over 32 kB mid-group", huge_error),
            ("a portal read in parts with Flush, no Sync", portal_in_parts),
            ("DISCARD ALL through the extended protocol elsewhere", discard_extended_elsewhere),
            ("pgtide's own ParseComplete after a large, slowly read result",
             own_answer_while_reading_slowly)]


def psycopg3_pipeline(dsn):
    """4 statements in psycopg 3 pipeline mode, the 2nd fails; returns what happened."""
    out = []
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        curs = []
        try:
            with conn.pipeline():
                for sql, arg in (("SELECT %s::int", 1), ("SELECT 10 / %s::int", 0),
                                 ("SELECT %s::int", 3), ("SELECT %s::int", 4)):
                    c = conn.cursor()
                    c.execute(sql, (arg,))
                    curs.append(c)
        except psycopg.Error as e:
            out.append(f"error {e.sqlstate}")
        # when the error surfaces (how many execute() calls returned first) depends on timing;
        # the first statement's rows and the skipped later ones do not
        for i, c in enumerate(curs[:2]):
            try:
                out.append(f"rows {i} {c.fetchall()}")
            except psycopg.Error as e:
                out.append(f"fetch error {i} {type(e).__name__}")
        with conn.pipeline():
            a = conn.execute("SELECT %s::int", (7,))
            b = conn.execute("SELECT %s::text", ("x",))
        out.append(f"after {a.fetchone()} {b.fetchone()}")
        out.append(f"status {conn.info.transaction_status.name}")
    return out


def main():
    t = txn_tide(pool_size=1, name="txn_pipeline")
    only = os.environ.get("T_TXN_PIPELINE_ONLY", "")  # a debugging aid: one script by name
    for name, script in scripts(t.port):
        if only not in name:
            continue
        # the direct side's DISCARD ALL runs in another session: it changes nothing there
        direct_script = dict(scripts(None))[name]
        want = None
        d = Raw()
        try:
            want = direct_script(d)
        finally:
            d.close()
        r = Raw(t.port)
        try:
            got = script(r)
        except Exception as e:  # noqa: BLE001 - a hang or a closed socket is a failure
            got = [f"exception {e!r}"]
        finally:
            r.close()
        if not check(got == want, f"{name}: same answers as PostgreSQL"):
            log(f"  direct: {want}")
            log(f"  pgtide: {got}")
            log("  pgtide log tail:\n" + t.log_tail(10))
    want = psycopg3_pipeline(direct_dsn())
    got = psycopg3_pipeline(tide_dsn(t))
    log(f"psycopg 3 pipeline direct: {want}")
    check(got == want, f"psycopg 3 pipeline with an error mid-way: same as PostgreSQL ({got})")
    r = Raw(t.port)
    check(r.run(Q("SELECT 'alive'"))[-2:] == ["C:SELECT 1", "Z:I"], "pgtide still serves")
    r.close()
    t.stop()
    finish()


if __name__ == "__main__":
    main()
