"""t_txn_params: parameter sync in transaction pooling (pool_size=1: every client shares the one
server connection).

Two clients with different TimeZone and DateStyle (set with SET after login) and search_path (set
at startup with options=-c search_path=...) interleave 200 rounds; each must see only its own
settings (current_setting, how a timestamptz is rendered, which schema's table an unqualified name
finds). A client with options=-c statement_timeout=100 gets 57014 on pg_sleep(1) while another
without it, on the same server connection right after, does not.
"""
import psycopg2
import psycopg2.errors

from t_txn_common import check, direct_exec, finish, log, tide_dsn, txn_tide


def setup():
    direct_exec("DROP SCHEMA IF EXISTS txn_sa CASCADE; DROP SCHEMA IF EXISTS txn_sb CASCADE; "
                "CREATE SCHEMA txn_sa; CREATE SCHEMA txn_sb; "
                "CREATE TABLE txn_sa.which (v text); INSERT INTO txn_sa.which VALUES ('a'); "
                "CREATE TABLE txn_sb.which (v text); INSERT INTO txn_sb.which VALUES ('b')")


PROBE = ("SELECT current_setting('TimeZone'), current_setting('DateStyle'), "
         "current_setting('search_path'), (SELECT v FROM which), "
         "'2020-01-02 03:04:05+00'::timestamptz::text, current_setting('application_name')")


def main():
    setup()
    t = txn_tide(pool_size=1, name="txn_params")
    a = psycopg2.connect(tide_dsn(t, options="-c search_path=txn_sa", application_name="cli_a"))
    b = psycopg2.connect(tide_dsn(t, options="-c search_path=txn_sb,public",
                                  application_name="cli_b"))
    for c in (a, b):
        c.autocommit = True
    a.cursor().execute("SET TimeZone = 'America/New_York'")
    a.cursor().execute("SET DateStyle = 'German, DMY'")
    b.cursor().execute("SET TimeZone = 'Asia/Tokyo'")
    b.cursor().execute("SET DateStyle = 'ISO, YMD'")
    want = {
        "a": ("America/New_York", "German, DMY", "txn_sa", "a", "01.01.2020 22:04:05 EST",
              "cli_a"),
        "b": ("Asia/Tokyo", "ISO, YMD", "txn_sb,public", "b", "2020-01-02 12:04:05+09",
              "cli_b"),
    }
    bad = {}
    for i in range(200):
        for label, c in (("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a)):
            cur = c.cursor()
            cur.execute(PROBE)
            row = cur.fetchone()
            if row != want[label]:
                bad.setdefault(label, (i, row))
            # a transaction in between: the settings hold inside it too
            if i % 10 == 0:
                cur.execute("BEGIN")
                cur.execute("SELECT current_setting('TimeZone')")
                tz = cur.fetchone()[0]
                cur.execute("COMMIT")
                if tz != want[label][0]:
                    bad.setdefault(label + " in txn", (i, tz))
    for label in ("a", "b"):
        if not check(label not in bad and label + " in txn" not in bad,
                     f"client {label} sees only its own TimeZone/DateStyle/search_path/"
                     f"application_name over 200 interleaved rounds"):
            log(f"  first difference: {bad.get(label) or bad.get(label + ' in txn')}; "
                f"want {want[label]}")
    # statement_timeout from the startup options, then a client without it on the same server
    st = psycopg2.connect(tide_dsn(t, options="-c statement_timeout=100"))
    st.autocommit = True
    for i in range(3):
        try:
            st.cursor().execute("SELECT pg_sleep(1)")
            got = "no error"
        except psycopg2.Error as e:
            got = e.pgcode
        check(got == "57014", f"round {i}: statement_timeout=100 client gets 57014 ({got})")
        try:
            cur = b.cursor()
            cur.execute("SELECT pg_sleep(0.3), current_setting('statement_timeout')")
            got = cur.fetchone()[1]
        except psycopg2.Error as e:
            got = f"error {e.pgcode}"
        check(got == "0", f"round {i}: the other client runs pg_sleep(0.3) with "
                          f"statement_timeout 0 ({got})")
    cur = a.cursor()
    cur.execute(PROBE)
    check(cur.fetchone() == want["a"], "client a's settings survive the statement_timeout rounds")
    for c in (a, b, st):
        c.close()
    t.stop()
    finish()


if __name__ == "__main__":
    main()
