"""t_replica_ryw: read-your-writes on the reader endpoint (issue 6, read_your_writes = on).

On pgtide's own embedded instance with two replicas, once in session pooling (a fresh reader
connection per try) and once in transaction pooling (one long-lived reader whose every
transaction is routed anew):
1. SET read_your_writes = on on the console; SHOW POLICY lists it.
2. A writer on the main port inserts a row; a reader of the same user on the reader endpoint
   reads it at once: it sees it on every one of 50 tries.
3. Readers are not pinned to the primary: once the replicas have replayed the write, a reader
   is served by a replica again (pg_is_in_recovery()).
4. Replay paused on one replica (pg_wal_replay_pause() on its private socket): 50 more tries
   all see the row, and none of them ran on the paused replica (told apart by
   current_setting('port'): the primary is 5432, replica-N 5433+N).
5. SET read_your_writes = off: now a read right after a write can land on the paused replica
   and miss the row (the test is able to fail): the replica is put back in rotation, paused
   again, a row written and read at once, until such a stale read is seen (a few rounds).
"""
import psycopg2

from lib_replica import direct, in_rotation
from lib_serverless import Tide, check, finish, free_port, wait_until

TRIES = 50


class Reader:
    """Reads through the reader endpoint: a fresh connection each time (session pooling) or
    one connection whose transactions are routed one by one (transaction pooling)."""

    def __init__(self, dsn, long_lived):
        self.dsn = dsn
        self.conn = None
        if long_lived:
            self.conn = psycopg2.connect(dsn)
            self.conn.autocommit = True

    def read(self, rid):
        """(rows with id rid, in recovery, port) of one read."""
        conn = self.conn or psycopg2.connect(self.dsn)
        conn.autocommit = True
        k = conn.cursor()
        k.execute("SELECT (SELECT count(*) FROM ryw WHERE id = %s), pg_is_in_recovery(), "
                  "current_setting('port')::int", (rid,))
        row = k.fetchone()
        if self.conn is None:
            conn.close()
        return row

    def close(self):
        if self.conn is not None:
            self.conn.close()


def scenario(mode):
    rport = free_port()
    t = Tide({"suspend_after": "0", "pause_after": "0", "read_port": str(rport),
              "pool_mode": mode}, name=f"ryw-{mode}")
    primary = t.dsn()
    reader_dsn = primary.replace(f"port={t.port}", f"port={rport}")

    # 1. the switch is a policy key
    r = t.admin("SET read_your_writes = on")
    check(r.returncode == 0, f"{mode}: SET read_your_writes = on ({r.stderr.strip()})")
    pol = {x["key"]: x for x in t.admin_rows("SHOW POLICY")}
    check(pol.get("read_your_writes", {}).get("value") == "on",
          f"{mode}: SHOW POLICY shows read_your_writes = on")

    w = psycopg2.connect(primary)
    w.autocommit = True
    wk = w.cursor()
    wk.execute("CREATE TABLE ryw (id int PRIMARY KEY, v text)")
    r = t.admin("SCALE REPLICAS 2")
    check(r.returncode == 0, f"{mode}: SCALE REPLICAS 2")
    check(wait_until(lambda: in_rotation(t, "replica-0", "replica-1"), 120, 0.3),
          f"{mode}: two replicas in rotation")
    reader = Reader(reader_dsn, long_lived=(mode == "transaction"))
    next_id = [1]

    def write_then_read():
        rid = next_id[0]
        next_id[0] += 1
        wk.execute("INSERT INTO ryw VALUES (%s, 'x')", (rid,))
        return reader.read(rid)

    # 2. every read sees the write just made
    seen, where = 0, {}
    for _ in range(TRIES):
        n, rec, port = write_then_read()
        seen += n == 1
        where[port] = where.get(port, 0) + 1
    check(seen == TRIES, f"{mode}: the row just written is read on {seen}/{TRIES} tries "
          f"(served by port: {where})")

    # 3. once replayed, replicas serve readers again
    rid = next_id[0] - 1
    ok = wait_until(lambda: reader.read(rid)[1] is True, 20, 0.05)
    check(ok, f"{mode}: after the replicas replayed the write, a reader is served by a replica")

    # 4. replay paused on one replica: the reads go elsewhere and still see the rows
    paused = None
    for _ in range(40):
        _, rec, port = reader.read(rid)
        if rec:
            paused = port
            break
    check(paused in (5433, 5434), f"{mode}: a replica to pause was found (port {paused})")
    check(direct(t, paused, "SELECT pg_wal_replay_pause()") is not None,
          f"{mode}: replay paused on port {paused}")
    seen, on_paused, where = 0, 0, {}
    for _ in range(TRIES):
        n, rec, port = write_then_read()
        seen += n == 1
        on_paused += port == paused
        where[port] = where.get(port, 0) + 1
    check(seen == TRIES, f"{mode}: with replay paused on {paused}, the row is read on "
          f"{seen}/{TRIES} tries (served by port: {where})")
    check(on_paused == 0, f"{mode}: no read went to the paused replica ({on_paused})")
    check(set(where) <= {5432, 5433, 5434} - {paused},
          f"{mode}: reads went to the primary or the other replica ({sorted(where)})")

    # 5. off: the same test can fail
    r = t.admin("SET read_your_writes = off")
    check(r.returncode == 0, f"{mode}: SET read_your_writes = off")
    name = f"replica-{paused - 5433}"
    stale = 0
    for rnd in range(10):
        direct(t, paused, "SELECT pg_wal_replay_resume()")
        lsn = direct(t, 5432, "SELECT pg_current_wal_insert_lsn()")
        wait_until(lambda: direct(t, paused, "SELECT pg_last_wal_replay_lsn() >= "
                                  f"'{lsn}'::pg_lsn") == "t", 30, 0.05)
        check(wait_until(lambda: in_rotation(t, name), 30, 0.05),
              f"{mode}: round {rnd}: {name} back in rotation")
        direct(t, paused, "SELECT pg_wal_replay_pause()")
        wk.execute("INSERT INTO ryw VALUES (%s, 'x')", (next_id[0],))
        for _ in range(4):
            n, rec, port = reader.read(next_id[0])
            if port == paused and n == 0:
                stale += 1
        next_id[0] += 1
        if stale > 0:
            break
    check(stale > 0, f"{mode}: with read_your_writes off, a read right after the write went to "
          f"the paused replica and missed the row ({stale} stale reads)")
    direct(t, paused, "SELECT pg_wal_replay_resume()")
    reader.close()
    w.close()
    t.stop()


def main():
    scenario("session")
    scenario("transaction")
    finish()


main()
