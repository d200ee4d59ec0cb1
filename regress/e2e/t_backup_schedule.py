"""t_backup_schedule: the backup schedule and retention (issue 7).

With backup_schedule = '* * * * *' and backup_keep = 2 (set on the console), backups appear once
a minute, and after the third the oldest is removed: two complete backups remain, the newest two,
and the archived WAL older than the oldest kept backup's start is gone.
"""
import time

from lib_backup import backups, connect
from lib_serverless import Tide, check, finish, log, wait_until

t = Tide({"suspend_after": "1", "pause_after": "0"}, name="bk-sched")
c = connect(t)
c.cursor().execute("create table s(x int); insert into s values (1)")
c.close()
a = connect(t, "pgtide")
ka = a.cursor()
ka.execute("SET backup_keep = 2")
ka.execute("SET backup_schedule = '* * * * *'")
ids = set()


def count():
    ids.update(b["id"] for b in backups(t.data))
    return len(ids)


check(wait_until(lambda: count() >= 3, 200, 1), f"three scheduled backups within 200 s: {ids}")
left = backups(t.data)
check(len(left) == 2, f"retention keeps two: {[b['id'] for b in left]}")
check([b["id"] for b in left] == sorted(ids)[-2:], "the two kept are the newest")
starts = [int(b["start_ms"]) for b in left]
check(starts[1] - starts[0] >= 50000, "they are a minute apart")
ka.execute("SHOW BACKUPS")
check(len([r for r in ka.fetchall() if r[8] == "complete"]) == 2, "SHOW BACKUPS lists two")
a.close()
t.stop()
finish()
