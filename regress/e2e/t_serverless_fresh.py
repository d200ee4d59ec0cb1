"""t_serverless_fresh: on a freshly initialised data directory, logins are checked before any
compute runs: the first user's verifier is in the auth cache from initdb on. A wrong password is
refused (28P01) and starts nothing; the right one then succeeds (and starts the compute once).
Also: the compute that a login starts is not frozen under pgtide's own first queries (the idle
clock starts with the compute), with pause_after far shorter than the time pgtide was idle.
"""
import os
import shutil
import subprocess
import tempfile
import time

import psycopg2

from lib_serverless import PGTIDE_BIN, check, finish, free_port, log, wait_until

base = os.environ.get("PGTIDE_SCRATCH") or tempfile.gettempdir()
d = tempfile.mkdtemp(prefix="fresh.", dir=base)
os.chmod(d, 0o755)
data = os.path.join(d, "data")
port = free_port()
logpath = os.path.join(d, "pgtide.log")
with open(logpath, "w") as logf:
    proc = subprocess.Popen([PGTIDE_BIN, "-D", data, "-c", f"listen_port={port}",
                             "-c", "unix_socket_dir=", "-c", "metrics_listen=",
                             "-c", "pause_after=1", "-c", "suspend_after=0"],
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
try:
    pw_file = os.path.join(data, "initial-password")
    check(wait_until(lambda: os.path.exists(pw_file) and os.path.getsize(pw_file) > 0, 120, 0.1),
          "initial-password written")
    pw = open(pw_file).read().strip()

    def log_text():
        with open(logpath) as f:
            return f.read()

    check(wait_until(lambda: "is ready" in log_text(), 60, 0.1), "pgtide ready")
    time.sleep(3)  # idle far longer than pause_after before anyone connects
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require connect_timeout=30"
    try:
        psycopg2.connect(dsn + " password=wrong")
        check(False, "a wrong password is refused")
    except psycopg2.OperationalError as e:
        check("password authentication failed" in str(e), f"a wrong password is refused ({e})")
    check("suspended -> starting" not in log_text(),
          "the refusal came from the auth cache: no compute started")
    c = psycopg2.connect(dsn + f" password={pw}")
    k = c.cursor()
    k.execute("select 1")
    check(k.fetchone()[0] == 1, "the right password logs in and the first query answers")
    c.close()
    check(log_text().count("suspended -> starting") == 1, "exactly one compute start")
    check("auth cache refresh failed" not in log_text() and "timed out" not in log_text(),
          "pgtide's own queries were not frozen by the pause")
finally:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log("log tail:\n" + "".join(open(logpath).readlines()[-8:]))
    shutil.rmtree(d, ignore_errors=True)
finish()
