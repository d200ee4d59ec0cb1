"""t_proxy_ops: operating a private pgtide with signals and configuration files.

Cases: SIGHUP rereads DATA/pgtide.conf (SHOW CONFIG shows the new value) while an open client's
session (same backend) keeps working; a second pgtide on the same data directory refuses to start
("in use") and the first keeps serving; a configuration file with an unknown key, or a bad value,
makes pgtide exit non-zero naming file:line; SIGTERM: new connections are refused while an open
session finishes its running query, then pgtide exits (embedded: no compute process remains);
SIGINT: a connected client receives FATAL 57P01 and pgtide exits (embedded: no compute left).
"""
import os
import signal
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import psycopg2  # noqa: E402

from t_proxy_harness import (EMBEDDED, PGTIDE_BIN, Tide, check, error_fields,  # noqa: E402
                             finish, free_port, log, raw_query, read_msg, wait_until)


def config_value(t, key):
    for r in t.admin_rows("SHOW CONFIG"):
        if r["key"] == key:
            return r["value"]
    return None


def test_sighup(t):
    c = t.connect(sslmode="require")
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    before = config_value(t, "server_idle_timeout")
    t.write_conf("# t_proxy_ops\nserver_idle_timeout = 333s\n")
    os.kill(t.pid, signal.SIGHUP)
    got = wait_until(lambda: config_value(t, "server_idle_timeout") == "333s", 20, 0.2)
    check(got, f"SIGHUP reread pgtide.conf: server_idle_timeout {before} -> "
          f"{config_value(t, 'server_idle_timeout')}")
    try:
        cur.execute("SELECT pg_backend_pid(), 1 + 1")
        row = cur.fetchone()
        check(row == (pid, 2), f"the open client keeps its session across SIGHUP: {row} "
              f"(backend was {pid})")
    except psycopg2.Error as e:
        check(False, f"open client after SIGHUP: {e}")
    c.close()
    check(t.alive(), "pgtide alive after SIGHUP")


def test_second_instance(t):
    args = [PGTIDE_BIN, "-D", t.data, "-c", f"listen_port={free_port()}",
            "-c", f"unix_socket_dir={t.dir}"]
    for k, v in t.settings.items():
        args += ["-c", f"{k}={v}"]
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        out = r.stdout + r.stderr
        line = next((ln for ln in out.splitlines() if "in use" in ln), out.strip()[-300:])
        check(r.returncode != 0 and "in use" in out,
              f"second pgtide on the same DATA refused (rc {r.returncode}): {line}")
        if "LeakSanitizer" in out:
            log("note: the refused second pgtide reported leaks (ASan build):\n" +
                "\n".join(out.splitlines()[:12]))
    except subprocess.TimeoutExpired:
        check(False, "second pgtide on the same DATA still running after 60s")
    c = t.connect()
    c.cursor().execute("SELECT 1")
    c.close()
    check(t.alive(), "the first pgtide keeps serving")


def test_bad_config(d):
    cases = [("unknown key", "log_level = info\n\nno_such_setting = 1\n", 3),
             ("bad value", "# c\npool_size = lots\n", 2)]
    for what, text, line in cases:
        conf = os.path.join(d, f"bad-{line}.conf")
        with open(conf, "w") as f:
            f.write(text)
        data = os.path.join(d, f"baddata-{line}")
        os.makedirs(data, exist_ok=True)
        args = [PGTIDE_BIN, "-D", data, "-f", conf, "-c", f"listen_port={free_port()}",
                "-c", f"unix_socket_dir={d}"]
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            check(False, f"pgtide with a config file with an {what} exits")
            continue
        out = (r.stdout + r.stderr).strip()
        check(r.returncode != 0 and f"{conf}:{line}" in out,
              f"config file with a {what}: rc {r.returncode}, message names {conf}:{line}: "
              f"{out[-300:]}")


def test_sigterm():
    t = Tide({}, name="sigterm", reuse="ops")
    c = t.connect(sslmode="require")
    c.autocommit = True
    result = {}

    def slow():
        try:
            cur = c.cursor()
            cur.execute("SELECT 'finished' FROM pg_sleep(4)")
            result["q"] = cur.fetchone()[0]
        except psycopg2.Error as e:
            result["q"] = f"error {e.pgcode}: {e}"

    th = threading.Thread(target=slow, daemon=True)
    th.start()

    def running():
        try:
            return any(r["user"] == "app" and r["in_flight"] not in ("0", None)
                       for r in t.admin_rows("SHOW SERVERS"))
        except psycopg2.Error:
            return False
    check(wait_until(running, 20, 0.05), "the slow query is running before SIGTERM")
    os.kill(t.pid, signal.SIGTERM)

    def refused():
        try:
            t.connect(connect_timeout=5).close()
            return False
        except psycopg2.Error:
            return True
    check(wait_until(refused, 20, 0.1), "after SIGTERM new connections are refused")
    th.join(60)
    check(result.get("q") == "finished",
          f"the open session's running query finishes after SIGTERM: {result.get('q')}")
    c.close()
    rc = t.wait_exit(60)
    check(rc is not None, f"pgtide exits after SIGTERM once its client left (rc {rc})")
    check(rc == 0, f"SIGTERM exit status 0 (rc {rc})")
    if EMBEDDED:
        check(wait_until(lambda: not t.compute_pids(), 30, 0.2),
              f"no compute process left after SIGTERM: {t.compute_pids()}")
    if rc is None:
        log(t.log_tail())
    t.stop()


def test_sigint():
    t = Tide({}, name="sigint", reuse="ops")
    st, s = t.raw_login(tls=True)
    if not check(st == "ok", "client connected before SIGINT"):
        t.stop()
        return
    raw_query(s, "SELECT 1")
    os.kill(t.pid, signal.SIGINT)
    try:
        typ, body = read_msg(s)
        got = (typ, error_fields(body) if typ == b"E" else body)
    except (EOFError, OSError) as e:
        got = ("closed", str(e))
    check(got[0] == b"E" and got[1].get("C") == "57P01",
          f"SIGINT: the connected client receives 57P01: {got}")
    s.close()
    rc = t.wait_exit(60)
    check(rc is not None, f"pgtide exits after SIGINT (rc {rc})")
    if EMBEDDED:
        check(wait_until(lambda: not t.compute_pids(), 30, 0.2),
              f"no compute process left after SIGINT: {t.compute_pids()}")
    t.stop()


def main():
    t = Tide({}, name="ops", reuse="ops")
    for fn in (test_sighup, test_second_instance):
        log(f"--- {fn.__name__}")
        try:
            fn(t)
        except Exception as e:  # noqa: BLE001 - one broken case is a failure; go on
            check(False, f"{fn.__name__} raised {type(e).__name__}: {e}")
    t.write_conf("")
    t.stop()
    for name, fn in (("test_bad_config", lambda: test_bad_config(t.dir)),
                     ("test_sigterm", test_sigterm), ("test_sigint", test_sigint)):
        log(f"--- {name}")
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            check(False, f"{name} raised {type(e).__name__}: {e}")
    finish()


if __name__ == "__main__":
    main()
