"""t_serverless_keepawake: sessions that cannot be parked keep the compute awake (issue 3, part 5).

For each of: a session with a temp table, one that LISTENs, one inside BEGIN, one that set a
custom setting through set_config() with a computed name, one with a prepared statement and one
with a setting over 28,000 bytes (each alone, next to an ordinary idle
session that can be parked), with suspend_after=2 and pause_after=1:
- after 3 x suspend_after the compute's processes are still there and SHOW COMPUTES says
  running or paused, never suspending/suspended (a freeze keeps the session's state);
- SHOW CLIENTS shows that session (found by its application_name) as parkable "no: ..." and the
  ordinary one as "yes";
- admin SUSPEND is refused with SQLSTATE 55000, and the message names the reason;
- after DISCARD TEMP / UNLISTEN * / COMMIT / RESET ALL the compute suspends (no process within 30 s), and
  both sessions' next queries succeed afterwards (they were parked).
"""
import time

import psycopg2

from lib_serverless import Tide, check, finish, log

SUSPEND_AFTER = 2

CASES = [
    # name, statements that make the session unparkable, statement that releases it, reason word
    ("temp", ["CREATE TEMP TABLE keep_me (x int)", "INSERT INTO keep_me VALUES (1)"],
     "DISCARD TEMP", "temp"),
    ("listen", ["LISTEN wakeup_channel"], "UNLISTEN *", "listen"),
    ("begin", ["BEGIN", "SELECT 1"], "COMMIT", "transaction"),
    # a custom setting whose name pgtide cannot read from the query (PostgreSQL hides custom
    # settings from pg_settings): parking would lose it silently
    ("set_config", ["SELECT set_config('myapp.' || 'dyn', 'v', false)"], "RESET ALL",
     "custom setting"),
    # a prepared statement or a setting too long for one snapshot row (they used to end the
    # session with "invalid message from server" at every suspend attempt)
    ("long_statement", ["PREPARE big AS SELECT '" + "x" * 40000 + "'::text"], "DEALLOCATE big",
     "longer than"),
    ("long_setting", ["SELECT set_config('myapp.big', repeat('y', 40000), false)"],
     "RESET myapp.big", "longer than"),
]


def connect(t, app):
    c = psycopg2.connect(t.dsn(application_name=app))
    c.autocommit = True
    return c


def run_case(t, name, setup, release, reason):
    if not check(t.suspend_now(30), f"{name}: starts from a suspended compute"):
        return
    keeper = connect(t, f"keeper_{name}")
    plain = connect(t, f"plain_{name}")
    cur = keeper.cursor()
    for sql in setup:
        cur.execute(sql)
    plain.cursor().execute("SET statement_timeout = '7s'")
    time.sleep(3 * SUSPEND_AFTER + 0.5)
    check(bool(t.compute_pids()),
          f"{name}: compute processes still there after 3 x suspend_after")
    state = t.compute()["state"]
    # Not stopped. Paused is accepted: freezing keeps temp tables and LISTEN registrations (the
    # issue's wording applies the same idleness rule to pausing; pgtide pauses such sessions).
    check(state in ("running", "paused"),
          f"{name}: SHOW COMPUTES state is running or paused (got {state})")
    if state == "paused":
        log(f"note: {name}: the compute was paused (not kept running) by this session")

    rows = {r.get("application_name"): r for r in t.clients()}
    kp = rows.get(f"keeper_{name}", {}).get("parkable", "<no row>")
    pp = rows.get(f"plain_{name}", {}).get("parkable", "<no row>")
    check(kp.startswith("no:") and reason in kp.lower(),
          f"{name}: SHOW CLIENTS parkable for the keeper is 'no: ...{reason}...' (got {kp!r})")
    check(pp == "yes", f"{name}: SHOW CLIENTS parkable for the plain session is yes (got {pp!r})")

    r = t.admin("SUSPEND", verbose=True)
    err = r.stderr.strip()
    check(r.returncode != 0 and "55000" in err,
          f"{name}: admin SUSPEND refused with 55000 ({err or r.stdout.strip()})")
    check(reason in err.lower(), f"{name}: the refusal names the reason '{reason}'")
    time.sleep(0.5)
    check(bool(t.compute_pids()), f"{name}: compute still up after the refused SUSPEND")

    cur.execute(release)
    gone = t.wait_no_compute(30)
    check(gone, f"{name}: compute suspends after {release}")
    if not gone:
        log(t.log_tail(20))
    for who, c, q, want in ((f"keeper_{name}", keeper, "SELECT 5", 5),
                            (f"plain_{name}", plain, "SHOW statement_timeout", "7s")):
        try:
            k = c.cursor()
            k.execute(q)
            got = k.fetchone()[0]
        except psycopg2.Error as e:
            got = f"{type(e).__name__}: {e}".strip()
        check(got == want, f"{name}: {who} answers after the suspend ({got!r})")
    keeper.close()
    plain.close()


def main():
    t = Tide({"suspend_after": str(SUSPEND_AFTER), "pause_after": "1"}, name="awake")
    try:
        for case in CASES:
            run_case(t, *case)
    finally:
        log("pgtide log tail:\n" + t.log_tail(12))
    finish()


if __name__ == "__main__":
    main()
