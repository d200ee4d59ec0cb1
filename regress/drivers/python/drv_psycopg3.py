"""drv_psycopg3: the psycopg 3 leg of pgtide's driver matrix (see drvcommon for the target).

psycopg 3 binds parameters on the server (extended protocol); statements are prepared with
prepare=True (named server-side prepared statements) and results are also fetched in binary.
Covers DDL, DML, parameters, prepared statements, a rolled-back transaction, COPY in and out,
a 100,000-row result, LISTEN/NOTIFY, cancel of pg_sleep (57014), a syntax error (42601) then
recovery, and a wrong password refused.
"""
import hashlib
import signal
import threading
import time

import psycopg
import psycopg.errors

from drvcommon import check, copy_text_rows, dsn, ok

conn = psycopg.connect(dsn(), autocommit=True)
check(conn.pgconn.ssl_in_use, "TLS in use")
conn.execute("SET client_min_messages = warning")
conn.execute("DROP TABLE IF EXISTS drv_pg3_items")
conn.execute("CREATE TABLE drv_pg3_items (id int PRIMARY KEY, name text, data bytea)")
with conn.cursor() as cur:
    cur.executemany("INSERT INTO drv_pg3_items VALUES (%s, %s, %s)",
                    [(i, f"name {i}", bytes([i % 256]) * i) for i in range(1, 101)])
    cur.execute("UPDATE drv_pg3_items SET name = %s WHERE id = %s", ("it's \"x\"", 7))
    check(cur.rowcount == 1, "update rowcount")
    cur.execute("DELETE FROM drv_pg3_items WHERE id > %s", (50,))
    check(cur.rowcount == 50, "delete rowcount")
    row = cur.execute("SELECT name, data FROM drv_pg3_items WHERE id = %s", (7,)).fetchone()
    check(row == ("it's \"x\"", b"\x07" * 7), f"param round trip {row}")
ok("ddl/dml/parameters (server-side binding)")

with conn.cursor() as cur:
    for i in range(1, 8):
        r = cur.execute("SELECT name FROM drv_pg3_items WHERE id = %s", (i,),
                        prepare=True).fetchone()
        check(r is not None, "prepared execute")
    n = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    check(n >= 1, f"server-side prepared statements: {n}")
    r = cur.execute("SELECT id, data FROM drv_pg3_items WHERE id = %s", (3,), binary=True,
                    prepare=True).fetchone()
    check(r == (3, b"\x03" * 3), f"binary result {r}")
ok("prepared statements (named, binary)")

try:
    with conn.transaction():
        conn.execute("INSERT INTO drv_pg3_items VALUES (999, 'gone', NULL)")
        raise RuntimeError("roll back")
except RuntimeError:
    pass
check(conn.execute("SELECT count(*) FROM drv_pg3_items WHERE id = 999").fetchone()[0] == 0,
      "rollback")
ok("rollback")

conn.execute("CREATE TEMP TABLE drv_pg3_copy (id int, t text)")
payload = copy_text_rows(30000)
with conn.cursor() as cur:
    with cur.copy("COPY drv_pg3_copy FROM STDIN") as cp:
        for i in range(0, len(payload), 65536):
            cp.write(payload[i:i + 65536])
    out = bytearray()
    with cur.copy("COPY (SELECT * FROM drv_pg3_copy ORDER BY id) TO STDOUT") as cp:
        for chunk in cp:
            out += chunk
check(out.decode() == payload, "copy out == copy in")
ok("copy in/out")

rows = conn.execute("SELECT g, md5(g::text) FROM generate_series(1, 100000) g").fetchall()
check(len(rows) == 100000, "100k rows")
check(all(r[0] == i + 1 and r[1] == hashlib.md5(str(i + 1).encode()).hexdigest()
          for i, r in enumerate(rows)), "100k row contents")
ok("100000-row result")

conn.execute("LISTEN drv_pg3_chan")
with psycopg.connect(dsn(), autocommit=True) as other:
    other.execute("NOTIFY drv_pg3_chan, 'hello psycopg3'")


def _timeout(signum, frame):
    raise TimeoutError("no notification within 15 s")


signal.signal(signal.SIGALRM, _timeout)
signal.alarm(15)
note = next(conn.notifies())
signal.alarm(0)
check(note.channel == "drv_pg3_chan" and note.payload == "hello psycopg3", f"notify {note}")
conn.execute("UNLISTEN *")
ok("listen/notify")

timer = threading.Timer(1.0, conn.cancel)
timer.start()
start = time.time()
try:
    conn.execute("SELECT pg_sleep(60)")
    check(False, "pg_sleep was not cancelled")
except psycopg.errors.QueryCanceled as e:
    check(e.sqlstate == "57014", f"cancel sqlstate {e.sqlstate}")
check(time.time() - start < 20, "cancel took too long")
check(conn.execute("SELECT 1").fetchone()[0] == 1, "alive after cancel")
ok("cancel 57014")

try:
    conn.execute("SELEC 1")
    check(False, "syntax error accepted")
except psycopg.errors.SyntaxError as e:
    check(e.sqlstate == "42601", f"syntax sqlstate {e.sqlstate}")
check(conn.execute("SELECT %s::int", (2,)).fetchone()[0] == 2, "recovery after syntax error")
ok("syntax error 42601 then recovery")

conn.execute("DROP TABLE drv_pg3_items")
conn.close()

try:
    psycopg.connect(dsn("wrong-password"))
    check(False, "wrong password accepted")
except psycopg.OperationalError as e:
    check("password authentication failed" in str(e), f"wrong password: {e}")
ok("wrong password refused")
print("all ok")
