"""t_backup_pitr: hot backups and point-in-time restore (issue 7).

1. BACKUP while the compute runs under a write load: method basebackup, verified by
   pg_verifybackup, the writers see no error.
2. Two commits with a known gap: restore --to a time between them has the first row and not the
   second; --lsn at the first commit's LSN the same.
3. restore to the latest has every committed row (the tail not yet archived included).
4. A target before the oldest backup or after the last archived WAL is refused clearly.
"""
import os
import threading
import time

import psycopg2

from lib_backup import backups, connect, query_restored, restore
from lib_serverless import Tide, check, finish, log

t = Tide({"suspend_after": "0", "pause_after": "0"}, name="bk-pitr")
c = connect(t)
k = c.cursor()
k.execute("create table load(x int)")
k.execute("create table marks(name text, at timestamptz default clock_timestamp())")
errors, written = [], [0]
stop = threading.Event()


def writer():
    w = psycopg2.connect(t.dsn())
    w.autocommit = True
    wk = w.cursor()
    while not stop.is_set():
        try:
            wk.execute("insert into load select generate_series(1, 100)")
            written[0] += 100
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))
            break
    w.close()


ws = [threading.Thread(target=writer) for _ in range(4)]
for th in ws:
    th.start()
time.sleep(1)
a = connect(t, "pgtide")
a.cursor().execute("BACKUP")
time.sleep(0.5)
stop.set()
for th in ws:
    th.join()
check(not errors, f"writers saw no error during the hot backup ({written[0]} rows)")
b = backups(t.data)
check(len(b) == 1 and b[0]["method"] == "basebackup" and b[0]["verified"] == "1",
      f"one verified basebackup: {b}")

k.execute("insert into marks(name) values ('first') returning at, pg_current_wal_insert_lsn()")
first_at, first_lsn = k.fetchone()
time.sleep(2)
k.execute("insert into marks(name) values ('second') returning at")
second_at = k.fetchone()[0]
k.execute("insert into load values (-1)")  # one more commit after
k.execute("select count(*) from load")
total = k.fetchone()[0]
k.execute("select pg_switch_wal()")
time.sleep(1)
c.close()
a.close()
t.stop()

mid = first_at + (second_at - first_at) / 2
into = os.path.join(t.dir, "pitr")
r = restore(t.data, into, "--to", mid.isoformat(sep=" "))
check(r.returncode == 0, f"restore --to {mid}")
rows = query_restored(into, "select name from marks order by at")
check(rows == [("first",)], f"PITR between the commits has the first and not the second: {rows}")

into = os.path.join(t.dir, "pitr-lsn")
r = restore(t.data, into, "--lsn", first_lsn)
check(r.returncode == 0, f"restore --lsn {first_lsn}")
rows = query_restored(into, "select name from marks order by at")
check(rows == [("first",)], f"restore to the first commit's LSN: {rows}")

into = os.path.join(t.dir, "latest")
r = restore(t.data, into)
check(r.returncode == 0, "restore to the latest")
rows = query_restored(into, "select (select count(*) from load), (select count(*) from marks)")
check(rows == [(total, 2)], f"latest has every committed row: {rows} (want {total}, 2)")

r = restore(t.data, os.path.join(t.dir, "early"), "--to", "2001-01-01 00:00:00+00")
check(r.returncode == 1 and "before the oldest backup" in r.stderr, "a target before the oldest "
      "backup is refused")
r = restore(t.data, os.path.join(t.dir, "late"), "--to", "2999-01-01 00:00:00+00")
check(r.returncode == 1 and "after the last archived WAL" in r.stderr, "a target after the last "
      "archived WAL is refused")
check(not os.path.exists(os.path.join(t.dir, "late", "primary")), "nothing left of a refused restore")
finish()
