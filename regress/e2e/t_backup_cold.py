"""t_backup_cold: backups of a suspended database (issue 7).

1. BACKUP on the console while the compute is suspended: it answers when the backup is complete,
   no compute process exists at any moment meanwhile, SHOW COMPUTES `starts` is unchanged, the
   backup is method "cold", verified, and `pgtide restore` of it serves every row.
2. kill -9 of pgtide in the middle of a (slow, large) backup: no backup is marked complete, and
   the next start removes the partial directory.
"""
import os
import signal
import threading
import time

from lib_backup import backups, connect, query_restored, restore
from lib_serverless import Tide, check, finish, log, wait_until

t = Tide({"suspend_after": "1", "pause_after": "0"}, name="bk-cold")
c = connect(t)
k = c.cursor()
k.execute("create table cold(x int)")
k.execute("insert into cold select generate_series(1, 5000)")
c.close()
check(wait_until(lambda: not t.compute_pids() and t.compute()["state"] == "suspended", 30),
      "the compute suspended")
starts = t.starts()
seen = []
stop = threading.Event()


def watch():
    while not stop.is_set():
        seen.extend(t.compute_pids())
        time.sleep(0.02)


w = threading.Thread(target=watch)
w.start()
a = connect(t, "pgtide")
ka = a.cursor()
ka.execute("BACKUP")
stop.set()
w.join()
check(not seen, "no compute process existed during the backup")
check(t.starts() == starts, "SHOW COMPUTES starts unchanged")
b = backups(t.data)
check(len(b) == 1 and b[0]["method"] == "cold" and b[0]["verified"] == "1",
      f"one verified cold backup: {b}")
ka.execute("SHOW BACKUPS")
rows = ka.fetchall()
check(len(rows) == 1 and rows[0][6] == "cold" and rows[0][8] == "complete", f"SHOW BACKUPS {rows}")
a.close()

# kill -9 in the middle of a backup: make it large enough to take a while
c = connect(t)
k = c.cursor()
k.execute("create table big as select g, repeat('y', 200) pad from generate_series(1, 2000000) g")
c.close()
check(wait_until(lambda: not t.compute_pids(), 30), "suspended again")
a = connect(t, "pgtide")


def backup_until_killed():
    try:
        a.cursor().execute("BACKUP")
    except Exception:  # noqa: BLE001 - pgtide is killed under it
        pass


threading.Thread(target=backup_until_killed, daemon=True).start()
bdir = os.path.join(t.data, "backups")
check(wait_until(lambda: len(os.listdir(bdir)) >= 2, 10, 0.005), "a second backup started")
time.sleep(0.3)
os.kill(t.pid, signal.SIGKILL)
t.proc.wait(10)
time.sleep(0.5)
partial = [d for d in os.listdir(bdir) if not os.path.exists(os.path.join(bdir, d, "meta"))]
check(len(backups(t.data)) == 1, "after kill -9 still exactly one complete backup")
log(f"partial directories left: {partial}")
t.start({"suspend_after": "1", "pause_after": "0"})
check(sorted(os.listdir(bdir)) == [b[0]["id"]], "the next start removed the partial backup")
t.stop()

into = os.path.join(t.dir, "restored")
r = restore(t.data, into, "--backup", b[0]["id"])
check(r.returncode == 0, "restore of the cold backup")
rows = query_restored(into, "select count(*) from cold")
check(rows == [(5000,)], f"the restored database serves every row: {rows}")
finish()
