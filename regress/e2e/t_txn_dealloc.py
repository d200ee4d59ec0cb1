"""t_txn_dealloc: DEALLOCATE name, DEALLOCATE ALL and DISCARD ALL from a client in transaction
pooling (pool_mode=transaction, pool_size=1: all clients share one server connection).

The client's statements are gone for it (Bind gives 26000 as on PostgreSQL) while another
client's statements with the same text (and the same names) keep working. Each client's script is
also run against PostgreSQL directly, and the answer sequences compared.

Also DEALLOCATE of a statement whose table is gone, on a server that no longer has it (another
client's DISCARD ALL): PostgreSQL answers DEALLOCATE; pgtide used to prepare the statement first,
hidden, which failed and made the server ignore the DEALLOCATE (the client waited forever). The
same inside an aborted transaction (25P02, as PostgreSQL).
"""
from t_txn_common import B, E, P, Q, S, Raw, check, finish, log, txn_tide


def two_clients(port, first_cmd, name, prep_name="s", other_discard=False):
    """X and Y prepare the same text as prep_name; optionally a third client DISCARDs ALL (so
    pgtide's server has to prepare again); X runs first_cmd; both then Bind prep_name."""
    x, y = Raw(port), Raw(port)
    try:
        out_x = x.run(P(prep_name, "SELECT 42 AS v"), P("other", "SELECT 43 AS v"), S())
        out_y = y.run(P(prep_name, "SELECT 42 AS v"), P("other", "SELECT 43 AS v"), S())
        if other_discard:
            z = Raw(port)
            z.run(Q("DISCARD ALL"))
            z.close()
        out_x += x.run(Q(first_cmd))
        out_x += x.run(B(prep_name), E(), S())
        out_x += x.run(B("other"), E(), S())
        out_y += y.run(B(prep_name), E(), S())
        out_y += y.run(B("other"), E(), S())
        out_x += x.run(P(prep_name, "SELECT 44 AS v"), B(prep_name), E(), S())
        out_y += y.run(B(prep_name), E(), S())
        return out_x, out_y
    finally:
        x.close()
        y.close()


CASES = [
    ("DEALLOCATE s", "DEALLOCATE s", "s", False),
    ("DEALLOCATE PREPARE s;", "DEALLOCATE PREPARE s;", "s", False),
    ("DEALLOCATE ALL", "DEALLOCATE ALL", "s", False),
    ("DISCARD ALL", "DISCARD ALL", "s", False),
    ("deallocate all (lower case, extra spaces)", "  deallocate   all ", "s", False),
    ("DEALLOCATE of a quoted mixed-case name", 'DEALLOCATE "MyStmt"', "MyStmt", False),
    ("DEALLOCATE s after another client's DISCARD ALL", "DEALLOCATE s", "s", True),
    ("DEALLOCATE ALL after another client's DISCARD ALL", "DEALLOCATE ALL", "s", True),
    ("DEALLOCATE of an unknown name", "DEALLOCATE nosuch", "s", False),
]


def broken_statement(port):
    x = Raw(port)
    try:
        out = x.run(Q("DROP TABLE IF EXISTS dealloc_gone"), Q("CREATE TABLE dealloc_gone (v int)"))
        out += x.run(P("g", "SELECT v FROM dealloc_gone"), P("h", "SELECT 1 AS w"), S())
        z = Raw(port)
        z.run(Q("DISCARD ALL"))  # through pgtide: its server forgets (direct: another session)
        z.close()
        out += x.run(Q("DROP TABLE dealloc_gone"))
        out += x.run(Q("DEALLOCATE g"))
        out += x.run(B("g"), E(), S())
        for sql in ("BEGIN", "SELECT 1/0", "DEALLOCATE h", "ROLLBACK"):  # one at a time
            out += x.run(Q(sql))
        out += x.run(Q("DEALLOCATE h"), B("h"), E(), S())
        return out
    finally:
        x.close()


def main():
    t = txn_tide(pool_size=1, name="txn_dealloc")
    want = broken_statement(None)
    try:
        got = broken_statement(t.port)
    except Exception as e:  # noqa: BLE001 - a hang is a failure
        got = [f"exception {e!r}"]
    check(got == want, f"DEALLOCATE of a statement whose table is gone: PostgreSQL's answers "
          f"({got})")
    if got != want:
        log(f"  direct: {want}")
    for name, cmd, prep, disc in CASES:
        want = two_clients(None, cmd, name, prep, disc)
        try:
            got = two_clients(t.port, cmd, name, prep, disc)
        except Exception as e:  # noqa: BLE001 - a hang or a closed socket is a failure
            got = (f"exception {e!r}", None)
        if not check(got == want, f"{name}: both clients get PostgreSQL's answers"):
            log(f"  direct X: {want[0]}")
            log(f"  pgtide X: {got[0]}")
            log(f"  direct Y: {want[1]}")
            log(f"  pgtide Y: {got[1]}")
            log("  pgtide log tail:\n" + t.log_tail(6))
        if cmd == "DEALLOCATE s":
            check("E:26000" in want[0] and "E:26000" not in want[1],
                  "(direct) the deallocating client gets 26000, the other does not")
    r = Raw(t.port)
    check(r.run(Q("SELECT 'alive'"))[-2:] == ["C:SELECT 1", "Z:I"], "pgtide still serves")
    r.close()
    t.stop()
    finish()


if __name__ == "__main__":
    main()
