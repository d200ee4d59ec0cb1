"""t_serverless_pause: the paused (frozen) middle state (issue 3, part 6).

pause_after=1, suspend_after=120. Two idle clients stay connected (psycopg2 and psycopg 3 with a
protocol-level prepared statement). After pause_after:
- every process of the compute (found by its working directory DATA/primary in /proc) is in
  state T (SIGSTOP) or D (cgroup freezer), and the log says "running -> paused";
- their utime+stime do not grow over a 2 s interval (read from /proc/PID/stat, no admin query in
  between: the console might thaw it);
- the next query on each held connection succeeds, on the same server backend as before
  (pg_backend_pid() unchanged: the server connections survived), the compute runs again, and
  its postmaster is the same process (no restart: SHOW COMPUTES starts unchanged);
- it pauses again after the next idle period (repeatable), then the same checks pass once more.
"""
import time

import psycopg
import psycopg2

from lib_serverless import Tide, check, finish, log, proc_stat, wait_until


def frozen_snapshot(t):
    """{pid: (state, cpu ticks)} when every compute process is in T or D, else None."""
    pids = t.compute_pids()
    if not pids:
        return None
    snap = {}
    for pid in pids:
        st = proc_stat(pid)
        if st is None or st[0] not in ("T", "D"):
            return None
        snap[pid] = (st[0], st[1])
    return snap


def one_round(t, pg2, pg3, pids_before, postmaster, starts, rnd, paused_lines):
    snap = wait_until(lambda: frozen_snapshot(t), 30, 0.1)
    if not check(snap is not None, f"round {rnd}: every compute process is in state T or D"):
        log("states: " + str({p: proc_stat(p) for p in t.compute_pids()}))
        return False
    states = sorted({s for s, _ in snap.values()})
    log(f"round {rnd}: {len(snap)} processes frozen, states {states}")
    check(postmaster in snap, f"round {rnd}: the postmaster {postmaster} is among them")
    time.sleep(2.0)
    later = {pid: proc_stat(pid) for pid in snap}
    grew = {pid: (snap[pid][1], later[pid][1]) for pid in snap
            if later[pid] is None or later[pid][1] != snap[pid][1]}
    check(not grew, f"round {rnd}: no CPU time used over 2 s while paused ({grew})")
    still = all(later[pid] is not None and later[pid][0] in ("T", "D") for pid in snap)
    check(still, f"round {rnd}: still frozen after the interval")
    check(t.count_log("running -> paused") >= paused_lines + 1,
          f"round {rnd}: the log has a new running -> paused line")

    cur = pg2.cursor()
    cur.execute("SELECT pg_backend_pid(), 6 * 7")
    bpid, answer = cur.fetchone()
    check(answer == 42, f"round {rnd}: the held psycopg2 connection's query succeeds")
    check(bpid == pids_before["pg2"],
          f"round {rnd}: psycopg2 kept its server connection ({pids_before['pg2']} -> {bpid})")
    bpid3, v = pg3.execute("SELECT pg_backend_pid(), %s::int + 1", (rnd,)).fetchone()
    check(v == rnd + 1, f"round {rnd}: psycopg 3 runs its prepared statement after the thaw")
    check(bpid3 == pids_before["pg3"],
          f"round {rnd}: psycopg 3 kept its server connection ({pids_before['pg3']} -> {bpid3})")
    st = proc_stat(postmaster)
    check(st is not None and st[0] not in ("T", "D"),
          f"round {rnd}: the postmaster runs again after the query (state {st and st[0]})")
    row = t.compute()
    check(row["state"] == "running" and int(row["starts"]) == starts,
          f"round {rnd}: SHOW COMPUTES running, starts unchanged ({row['state']}, {row['starts']})")
    return True


def main():
    t = Tide({"pause_after": "1", "suspend_after": "120"}, name="pause")
    try:
        pg2 = psycopg2.connect(t.dsn())
        pg2.autocommit = True
        pg3 = psycopg.connect(t.dsn(), autocommit=True, prepare_threshold=0)
        cur = pg2.cursor()
        cur.execute("SELECT pg_backend_pid()")
        pids_before = {"pg2": cur.fetchone()[0]}
        pids_before["pg3"] = pg3.execute("SELECT pg_backend_pid(), %s::int + 1",
                                         (-1,)).fetchone()[0]
        postmaster = t.postmaster_pid()
        starts = t.starts()
        log(f"backends {pids_before}, postmaster {postmaster}, starts {starts}")
        for rnd in range(2):
            if not one_round(t, pg2, pg3, pids_before, postmaster, starts, rnd, rnd):
                break
        method = t.compute()["pause_method"]
        log(f"pause_method: {method}")
        check(method != "", f"SHOW COMPUTES names the pause method ({method!r})")
        pg2.close()
        pg3.close()
    finally:
        log("pgtide log tail:\n" + t.log_tail(10))
    finish()


if __name__ == "__main__":
    main()
