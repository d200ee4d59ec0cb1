"""t_serverless_cold: wake on connect (issue 3), on pgtide's own embedded instance.

1. Cold connect with psql, psycopg2, psycopg 3 and JDBC: before each, the compute is suspended and
   no process of it exists (/proc); the client's first query succeeds, with no error and no retry.
2. Wrong password while suspended: refused with SQLSTATE 28P01 (asyncpg reports it; psql's
   message is checked too), no compute process appears and SHOW COMPUTES `starts` is unchanged.
3. 200 clients (threads released by one barrier) connect at the same instant to a suspended
   compute: every one gets its answer, and there is exactly one start (SHOW COMPUTES `starts`
   grows by one, and the log has one more "suspended -> starting" line).
"""
import asyncio
import os
import subprocess
import threading
import time

import asyncpg
import psycopg
import psycopg2

from lib_serverless import PSQL, Tide, check, finish, log

JAR = "/usr/share/java/postgresql.jar"
JAVA_SRC = r"""
import java.sql.*;
import java.util.Properties;
public class ColdConnect {
    public static void main(String[] a) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", "postgres");
        p.setProperty("password", a[1]);
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/postgres?sslmode=require"
            + "&sslfactory=org.postgresql.ssl.NonValidatingFactory&connectTimeout=60";
        try (Connection c = DriverManager.getConnection(url, p);
             Statement s = c.createStatement();
             ResultSet r = s.executeQuery("SELECT 40 + 2")) {
            r.next();
            System.out.println("ANSWER " + r.getInt(1));
        }
    }
}
"""


def ensure_suspended(t, who):
    ok = t.suspend_now(30)
    check(ok, f"{who}: no compute process before the cold connect")
    if ok:
        check(t.compute()["state"] == "suspended", f"{who}: SHOW COMPUTES says suspended")
    return ok


def cold_psql(t):
    env = dict(os.environ, PGPASSWORD=t.password)
    r = subprocess.run([PSQL, "-X", "-At", t.dsn(sslmode="require"), "-c", "SELECT 40 + 2"],
                       env=env, capture_output=True, text=True, timeout=90)
    return r.stdout.strip() if r.returncode == 0 else f"error: {r.stderr.strip()}"


def cold_psycopg2(t):
    c = psycopg2.connect(t.dsn())
    try:
        cur = c.cursor()
        cur.execute("SELECT 40 + 2")
        return str(cur.fetchone()[0])
    finally:
        c.close()


def cold_psycopg3(t):
    with psycopg.connect(t.dsn(), autocommit=True) as c:
        return str(c.execute("SELECT 40 + 2").fetchone()[0])


def cold_jdbc(t):
    scratch = os.path.join(t.dir, "jdbc")
    os.makedirs(scratch, exist_ok=True)
    with open(os.path.join(scratch, "ColdConnect.java"), "w") as f:
        f.write(JAVA_SRC)
    subprocess.run(["javac", "-d", scratch, "-cp", JAR, os.path.join(scratch, "ColdConnect.java")],
                   check=True, timeout=180)
    return scratch


def run_jdbc(t, scratch):
    r = subprocess.run(["java", "-cp", f"{scratch}:{JAR}", "ColdConnect", str(t.port), t.password],
                       capture_output=True, text=True, timeout=120)
    for line in r.stdout.splitlines():
        if line.startswith("ANSWER "):
            return line.split()[1]
    return f"error: rc={r.returncode} {r.stdout.strip()} {r.stderr.strip()[-500:]}"


def test_cold_connects(t):
    jdbc_dir = None
    if os.path.exists(JAR):
        try:
            jdbc_dir = cold_jdbc(t)  # compile first, outside the measured step
        except Exception as e:
            check(False, f"JDBC: could not compile the cold-connect client: {e}")
    else:
        log(f"note: {JAR} missing, JDBC leg skipped")
    legs = [("psql", cold_psql), ("psycopg2", cold_psycopg2), ("psycopg3", cold_psycopg3)]
    if jdbc_dir:
        legs.append(("jdbc", lambda tt: run_jdbc(tt, jdbc_dir)))
    for who, fn in legs:
        if not ensure_suspended(t, who):
            continue
        before = t.starts()
        try:
            got = fn(t)
        except Exception as e:
            got = f"error: {type(e).__name__}: {e}"
        check(got == "42", f"{who}: first query on a suspended compute answers 42 (got {got!r})")
        check(t.starts() == before + 1, f"{who}: the connect started the compute once")


async def wrong_password_asyncpg(t):
    try:
        c = await asyncpg.connect(host="127.0.0.1", port=t.port, user="postgres",
                                  password="not-the-password", database="postgres", ssl=False,
                                  timeout=60)
    except asyncpg.PostgresError as e:
        return e.sqlstate, str(e)
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
    await c.close()
    return "accepted", ""


def test_wrong_password(t):
    if not ensure_suspended(t, "wrong password"):
        return
    before = t.starts()
    state, msg = asyncio.run(wrong_password_asyncpg(t))
    check(state == "28P01", f"wrong password (asyncpg) refused with 28P01 (got {state}: {msg})")
    env = dict(os.environ, PGPASSWORD="not-the-password")
    r = subprocess.run([PSQL, "-X", "-At", t.dsn(password="not-the-password"), "-c", "SELECT 1"],
                       env=env, capture_output=True, text=True, timeout=60)
    check(r.returncode != 0 and "password authentication failed" in r.stderr,
          f"wrong password (psql) refused: {r.stderr.strip()}")
    time.sleep(1.0)  # a wake, if one were (wrongly) triggered, would have forked by now
    check(not t.compute_pids(), "no compute process after the wrong passwords")
    check(t.starts() == before and t.compute()["state"] == "suspended",
          "the compute stayed suspended (starts unchanged)")


def test_herd(t, n=200):
    if not ensure_suspended(t, "herd"):
        return
    starts_before = t.starts()
    lines_before = t.count_log("suspended -> starting")
    barrier = threading.Barrier(n)
    answers = [None] * n

    def worker(i):
        try:
            barrier.wait(60)
            c = psycopg2.connect(t.dsn(sslmode="disable"))
            try:
                cur = c.cursor()
                cur.execute("SELECT %s::int * 3", (i,))
                answers[i] = cur.fetchone()[0]
            finally:
                c.close()
        except Exception as e:
            answers[i] = f"{type(e).__name__}: {e}".strip()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(180)
    good = sum(1 for i in range(n) if answers[i] == i * 3)
    bad = [a for i, a in enumerate(answers) if a != i * 3]
    check(good == n, f"herd: {good}/{n} clients got their answer"
          + (f" (first problem: {bad[0]!r})" if bad else ""))
    starts = t.starts() - starts_before
    lines = t.count_log("suspended -> starting") - lines_before
    check(starts == 1, f"herd: exactly one start in SHOW COMPUTES (got {starts})")
    check(lines == 1, f"herd: exactly one 'suspended -> starting' log line (got {lines})")


def main():
    # pool_size above the herd's concurrency would exceed the compute's max_connections (100);
    # clients of the herd disconnect after their answer, so the others queue for a server.
    t = Tide({"suspend_after": "2", "pause_after": "0", "pool_size": "50"}, name="cold")
    check(not t.compute_pids(), "no compute process before the first client")
    try:
        test_cold_connects(t)
        test_wrong_password(t)
        test_herd(t)
    finally:
        log("pgtide log tail:\n" + t.log_tail(15))
    finish()


if __name__ == "__main__":
    main()
