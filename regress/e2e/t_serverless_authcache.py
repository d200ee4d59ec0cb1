"""t_serverless_authcache: the auth cache with worker threads (workers=3, embedded compute).

At each compute start only the main thread reads pg_authid (one query, not one per worker too);
the workers get its result. A role created after the compute started is not in that cache. Its
first login (over the unix socket, dealt to one worker) is looked up with auth_query on that
worker. Checked:
 - the secret reaches the cache file (DATA/state/auth.cache), which only the main thread writes;
 - once the compute is suspended, six logins with a wrong password over the unix socket (two on
   each worker, dealt round-robin) are all refused as wrong passwords, and the compute does not
   start: every worker learnt the secret, not only the one whose auth_query found it;
 - three logins with the right password then work (the first wakes the compute);
 - the log shows one refresh from pg_authid per compute start;
 - after a restart of pgtide the role is still known while the compute is suspended (the file
   was whole).
Nothing asserts wall-clock time; every wait is bounded.
"""
import os

import psycopg2

from lib_serverless import Tide, check, finish, log, wait_until

ROLE, PW = "ac_user", "ac-secret-1"


def unix_login(t, password):
    """'ok' or the error text of a login as ROLE over the unix socket."""
    try:
        c = psycopg2.connect(host=t.sock, port=t.port, user=ROLE, password=password,
                             dbname="postgres", connect_timeout=60)
    except psycopg2.OperationalError as e:
        return str(e).strip()
    try:
        cur = c.cursor()
        cur.execute("SELECT current_user")
        return "ok" if cur.fetchone()[0] == ROLE else "wrong user"
    finally:
        c.close()


def cached(t):
    try:
        with open(os.path.join(t.data, "state", "auth.cache")) as f:
            return any(line.startswith(ROLE + "\t") for line in f)
    except OSError:
        return False


def refused_without_start(t, label):
    starts = t.starts()
    answers = [unix_login(t, "wrong-password") for _ in range(6)]
    bad = [a for a in answers if "password authentication failed" not in a]
    check(not bad, f"{label}: 6 wrong-password logins over the workers are refused as such: "
                   f"{bad[:2]}")
    state = t.compute()["state"]
    check(state == "suspended" and t.starts() == starts,
          f"{label}: the refusals came from every worker's cache: the compute stayed "
          f"suspended ({state}, starts {starts} -> {t.starts()})")


def main():
    t = Tide({"workers": 3}, name="authcache")
    check(t.psql("SELECT 1").returncode == 0, "the compute runs")
    # the start's refresh is done before the role exists
    check(wait_until(lambda: t.count_log("auth cache refreshed from pg_authid") >= 1, 60, 0.1)
          is not None, "the auth cache was refreshed from pg_authid at the start")
    r = t.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PW}'")
    check(r.returncode == 0, f"role created through pgtide ({r.stderr.strip()})")
    check(unix_login(t, PW) == "ok", "the new role logs in (auth_query on one worker)")
    check(wait_until(lambda: cached(t), 30, 0.1) is not None,
          "its secret reached the auth cache file")
    check(t.suspend_now(60), "the compute is suspended")
    refused_without_start(t, "suspended")
    answers = [unix_login(t, PW) for _ in range(3)]
    check(answers == ["ok"] * 3, f"the right password works on every worker: {answers}")
    check(t.proc.poll() is None, "pgtide is running")
    refreshes, starts = t.count_log("auth cache refreshed from pg_authid"), t.starts()
    check(refreshes == starts, f"one pg_authid query per compute start, the main thread's, not "
                               f"one per worker too ({refreshes} refreshes, {starts} starts)")
    t.stop()
    t.start(t.settings)
    check(cached(t), "the cache file still holds the role after a restart")
    check(t.suspend_now(60), "the compute is suspended after the restart")
    refused_without_start(t, "after a restart")
    t.stop()
    log("log tail:\n" + t.log_tail(5))
    finish()


if __name__ == "__main__":
    main()
