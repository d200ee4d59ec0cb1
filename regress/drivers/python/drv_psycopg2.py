"""drv_psycopg2: the psycopg2 leg of pgtide's driver matrix (see drvcommon for the target).

DDL, DML, parameters, a prepared statement (SQL PREPARE/EXECUTE), a rolled-back transaction,
COPY in and out (copy_expert), a 100,000-row result, LISTEN/NOTIFY, cancel of pg_sleep (57014),
a syntax error (42601) then recovery, and a wrong password refused.
"""
import hashlib
import io
import select
import threading
import time

import psycopg2
import psycopg2.errors

from drvcommon import check, copy_text_rows, dsn, ok

conn = psycopg2.connect(dsn())
check(conn.info.ssl_in_use, "TLS in use")
conn.autocommit = True
cur = conn.cursor()
cur.execute("SET client_min_messages = warning")
cur.execute("DROP TABLE IF EXISTS drv_pg2_items")
cur.execute("CREATE TABLE drv_pg2_items (id int PRIMARY KEY, name text, price numeric)")
cur.execute("INSERT INTO drv_pg2_items VALUES (%s, %s, %s), (%s, %s, %s)",
            (1, "one", 1.5, 2, "it's \"two\"", 2.5))
cur.execute("UPDATE drv_pg2_items SET price = price * 2 WHERE id = %s", (2,))
check(cur.rowcount == 1, "update rowcount")
cur.execute("SELECT name, price FROM drv_pg2_items WHERE id = %(id)s", {"id": 2})
row = cur.fetchone()
check(row[0] == "it's \"two\"" and float(row[1]) == 5.0, f"param round trip {row}")
ok("ddl/dml/parameters")

cur.execute("PREPARE get_pg2(int) AS SELECT name FROM drv_pg2_items WHERE id = $1")
for _ in range(3):
    cur.execute("EXECUTE get_pg2(%s)", (1,))
    check(cur.fetchone()[0] == "one", "prepared execute")
cur.execute("DEALLOCATE get_pg2")
ok("prepared statement")

conn.autocommit = False
cur.execute("INSERT INTO drv_pg2_items VALUES (99, 'gone', 0)")
conn.rollback()
conn.autocommit = True
cur.execute("SELECT count(*) FROM drv_pg2_items WHERE id = 99")
check(cur.fetchone()[0] == 0, "rollback")
ok("rollback")

cur.execute("CREATE TEMP TABLE drv_pg2_copy (id int, t text)")
payload = copy_text_rows(30000)
cur.copy_expert("COPY drv_pg2_copy FROM STDIN", io.StringIO(payload))
out = io.StringIO()
cur.copy_expert("COPY (SELECT * FROM drv_pg2_copy ORDER BY id) TO STDOUT", out)
check(out.getvalue() == payload, "copy out == copy in")
ok("copy in/out")

cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
rows = cur.fetchall()
check(len(rows) == 100000, "100k rows")
check(all(r[0] == i + 1 for i, r in enumerate(rows)), "100k row order")
check(all(r[1] == hashlib.md5(str(r[0]).encode()).hexdigest() for r in rows), "100k row md5")
ok("100000-row result")

cur.execute("LISTEN drv_pg2_chan")
other = psycopg2.connect(dsn())
other.autocommit = True
other.cursor().execute("NOTIFY drv_pg2_chan, 'hello psycopg2'")
other.close()
deadline = time.time() + 15
while not conn.notifies and time.time() < deadline:
    select.select([conn], [], [], 1)
    conn.poll()
check(conn.notifies and conn.notifies[0].channel == "drv_pg2_chan"
      and conn.notifies[0].payload == "hello psycopg2", f"notify {conn.notifies}")
cur.execute("UNLISTEN *")
ok("listen/notify")

timer = threading.Timer(1.0, conn.cancel)
timer.start()
start = time.time()
try:
    cur.execute("SELECT pg_sleep(60)")
    check(False, "pg_sleep was not cancelled")
except psycopg2.errors.QueryCanceled as e:
    check(e.pgcode == "57014", f"cancel sqlstate {e.pgcode}")
check(time.time() - start < 20, "cancel took too long")
cur.execute("SELECT 1")
check(cur.fetchone()[0] == 1, "alive after cancel")
ok("cancel 57014")

try:
    cur.execute("SELEC 1")
    check(False, "syntax error accepted")
except psycopg2.errors.SyntaxError as e:
    check(e.pgcode == "42601", f"syntax sqlstate {e.pgcode}")
cur.execute("SELECT 2")
check(cur.fetchone()[0] == 2, "recovery after syntax error")
ok("syntax error 42601 then recovery")

cur.execute("DROP TABLE drv_pg2_items")
conn.close()

try:
    psycopg2.connect(dsn("wrong-password"))
    check(False, "wrong password accepted")
except psycopg2.OperationalError as e:
    # libpq reports connection errors without a SQLSTATE; the text is PostgreSQL's for 28P01
    check("password authentication failed" in str(e), f"wrong password: {e}")
ok("wrong password refused")
print("all ok")
