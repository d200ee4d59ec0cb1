"""t_txn_statement: statement pooling (pool_mode=statement, pool_size=2).

Autocommit statements work from several clients (simple and extended protocol, psycopg 3 with
prepare_threshold=0); BEGIN gives a clear 0A000 error to that client, and the other clients keep
working on server connections that are not left inside a transaction (their statements commit at
once, visible from PostgreSQL directly).
"""
import psycopg
import psycopg2

from t_txn_common import (Q, Raw, check, direct_connect, direct_exec, error_fields, finish, log,
                          read_msg, tide_dsn, txn_tide)


def main():
    direct_exec("DROP TABLE IF EXISTS txn_stmt; CREATE TABLE txn_stmt (id int, who text)")
    t = txn_tide(mode="statement", pool_size=2, name="txn_statement")
    p3 = [psycopg.connect(tide_dsn(t), autocommit=True, prepare_threshold=0) for _ in range(4)]
    for i in range(5):
        for j, c in enumerate(p3):
            c.execute("INSERT INTO txn_stmt VALUES (%s, %s)", (i, f"p3_{j}"))
    for j, c in enumerate(p3):
        n = c.execute("SELECT count(*) FROM txn_stmt WHERE who = %s", (f"p3_{j}",)).fetchone()[0]
        check(n == 5, f"psycopg 3 client {j} (prepared, autocommit) reads back its 5 rows ({n})")
    r = Raw(t.port)
    r.send(Q("BEGIN"))
    seen = []
    try:
        while True:
            typ, body = read_msg(r.sock)
            seen.append(f"E:{error_fields(body).get('C')}" if typ == b"E" else typ.decode())
            if typ == b"Z":
                break
    except (EOFError, OSError) as e:
        seen.append(f"closed ({e})")
    r.sock.close()
    log(f"raw BEGIN in statement mode: {seen}")
    check("E:0A000" in seen, f"raw protocol: BEGIN is answered with an 0A000 error ({seen})")
    bad = psycopg2.connect(tide_dsn(t))
    bad.autocommit = True
    try:
        bad.cursor().execute("BEGIN")
        got = "no error"
    except psycopg2.Error as e:
        got = f"{e.pgcode} {e.pgerror.strip() if e.pgerror else e}"
    # libpq reports the FATAL that follows BEGIN's CommandComplete as a lost connection (psql
    # prints the 0A000 message; psycopg2 keeps only "server closed the connection"): only the
    # raw check above asserts the SQLSTATE
    log(f"psycopg2 BEGIN in statement mode: {got}")
    check(got != "no error", "psycopg2: BEGIN raises an error")
    # psycopg2 without autocommit starts a transaction block implicitly
    bad2 = psycopg2.connect(tide_dsn(t))
    try:
        cur = bad2.cursor()
        cur.execute("INSERT INTO txn_stmt VALUES (99, 'implicit')")
        cur.execute("SELECT 1")
        bad2.commit()
        got = "no error"
    except psycopg2.Error as e:
        got = f"{e.pgcode}"
    check(got != "no error", f"an implicit transaction block (psycopg2 default) raises ({got})")
    simple = [psycopg2.connect(tide_dsn(t)) for _ in range(3)]
    for c in simple:
        c.autocommit = True
    for round_ in range(3):
        for j, c in enumerate(p3):
            try:
                c.execute("INSERT INTO txn_stmt VALUES (%s, %s)", (100 + round_, f"after_{j}"))
                got = "ok"
            except psycopg.Error as e:
                got = f"error {e.sqlstate}"
            check(got == "ok", f"round {round_}: psycopg 3 client {j} still works ({got})")
        for j, c in enumerate(simple):
            try:
                cur = c.cursor()
                cur.execute("SELECT now() = statement_timestamp(), "
                            "pg_current_xact_id_if_assigned() IS NULL")
                got = cur.fetchone()
            except psycopg2.Error as e:
                got = f"error {e.pgcode}"
            check(got == (True, True), f"round {round_}: simple-protocol client {j} runs outside "
                                       f"any transaction ({got})")
    d = direct_connect()
    cur = d.cursor()
    cur.execute("SELECT count(*) FROM txn_stmt WHERE who LIKE 'after_%'")
    n = cur.fetchone()[0]
    check(n == 12, f"the other clients' rows are committed, seen directly ({n} of 12)")
    cur.execute("SELECT count(*) FROM txn_stmt WHERE who = 'implicit'")
    n = cur.fetchone()[0]
    log(f"rows of the refused implicit transaction visible directly: {n}")
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'appdb' "
                "AND usename = 'app' AND state LIKE 'idle in transaction%'")
    check(cur.fetchone()[0] == 0, "no server connection of pgtide is left idle in transaction")
    d.close()
    for c in p3 + simple:
        c.close()
    for c in (bad, bad2):
        try:
            c.close()
        except psycopg2.Error:
            pass
    t.stop()
    finish()


if __name__ == "__main__":
    main()
