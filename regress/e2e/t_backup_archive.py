"""t_backup_archive: continuous WAL archiving (issue 7).

1. After a burst of writes and pg_switch_wal(), every finished segment is in DATA/wal and
   byte-identical to the one in pg_wal (as long as pg_wal still has it).
2. `pgtide wal-push` of the same segment again succeeds; a different file under an archived
   name is refused (exit 1, the archive unchanged).
3. DATA/wal unwritable for the compute user: wal-push fails with a clear message in the compute
   log, the database keeps serving, and once writable again the segment is archived.
"""
import filecmp
import os
import shutil
import subprocess
import time

from lib_backup import connect
from lib_serverless import PGTIDE_BIN, Tide, check, finish, log, wait_until

t = Tide({"suspend_after": "0", "pause_after": "0"}, name="bk-archive")
c = connect(t)
k = c.cursor()
k.execute("create table burst(x int, pad text)")
for _ in range(5):
    k.execute("insert into burst select g, repeat('x', 500) from generate_series(1, 20000) g")
k.execute("select pg_walfile_name(pg_current_wal_lsn())")
current = k.fetchone()[0]
k.execute("select pg_switch_wal()")
wal = os.path.join(t.data, "wal")
pgwal = os.path.join(t.data, "primary", "pg_wal")
check(wait_until(lambda: os.path.exists(os.path.join(wal, current)), 60),
      f"the switched segment {current} is archived")
segs = sorted(f for f in os.listdir(wal) if len(f) == 24)
check(len(segs) >= 3 and segs[-1] == current, f"{len(segs)} segments archived, up to {current}")
same = [s for s in segs if os.path.exists(os.path.join(pgwal, s))]
check(all(filecmp.cmp(os.path.join(wal, s), os.path.join(pgwal, s), shallow=False) for s in same),
      f"{len(same)} archived segments still in pg_wal are identical to it")

# push twice, and a different file under the same name
src = os.path.join(t.dir, "copy")
shutil.copy(os.path.join(wal, current), src)
r = subprocess.run([PGTIDE_BIN, "wal-push", src, current, "-D", t.data], capture_output=True,
                   text=True)
check(r.returncode == 0, "pushing an identical segment again succeeds")
with open(src, "r+b") as f:
    f.seek(1000)
    f.write(b"\xff\xfe")
r = subprocess.run([PGTIDE_BIN, "wal-push", src, current, "-D", t.data], capture_output=True,
                   text=True)
check(r.returncode == 1 and "different content" in r.stderr,
      f"a different file with an archived name is refused: {r.stderr.strip()}")
check(filecmp.cmp(os.path.join(wal, current), os.path.join(pgwal, current), shallow=False)
      if os.path.exists(os.path.join(pgwal, current)) else True, "the archived segment is unchanged")

# unwritable archive: PostgreSQL keeps retrying, the database keeps running
os.chmod(wal, 0o500)
k.execute("insert into burst values (1, 'during')")
k.execute("select pg_walfile_name(pg_current_wal_lsn())")
blocked = k.fetchone()[0]
k.execute("select pg_switch_wal()")
pglog = os.path.join(t.data, "log", "postgres.log")
check(wait_until(lambda: "pgtide wal-push: could not archive" in open(pglog).read(), 30),
      "wal-push reports why it failed in the compute log")
k.execute("select count(*) from burst")
check(k.fetchone()[0] == 100001, "the database keeps serving while archiving fails")
check(not os.path.exists(os.path.join(wal, blocked)), "nothing half-made in the archive")
check(not [f for f in os.listdir(wal) if f.endswith(".tmp")], "no temp file left behind")
os.chmod(wal, 0o700)
check(wait_until(lambda: os.path.exists(os.path.join(wal, blocked)), 120),
      "once writable again, the segment is archived (PostgreSQL retried)")
c.close()
t.stop()
finish()
