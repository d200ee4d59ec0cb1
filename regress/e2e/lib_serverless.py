"""lib_serverless: helpers for the serverless end-to-end tests (t_serverless_*.py) and the resume
benchmark. Each test starts its OWN embedded pgtide (fresh DATA under a 0755 temp dir, free port,
special settings) with Tide(...), and stops it by pid at exit.

Compute processes are found through /proc, never by pattern-matching command lines: a process
belongs to the compute when its command name is "postgres" and its working directory is
DATA/primary (the postmaster enters its data directory and every child inherits that). This
cannot match the test's own process. All waits are bounded; nothing asserts wall-clock time.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOP = os.environ.get("PGTIDE_TOP") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BINDIR = os.environ.get("PGTIDE_BINDIR") or "/usr/lib/postgresql/15/bin"
PGTIDE_BIN = os.environ.get("PGTIDE_BIN") or os.path.join(TOP, "pgtide")
PSQL = os.path.join(BINDIR, "psql")

failures = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(cond, what):
    """Records a failure (and logs it) when cond is false; returns cond."""
    if cond:
        log(f"ok: {what}")
    else:
        failures.append(what)
        log(f"FAIL: {what}")
    return bool(cond)


def finish():
    """Exit status for the test: 0 when no check failed."""
    if failures:
        log(f"{len(failures)} check(s) failed:")
        for f in failures:
            log(f"  - {f}")
        sys.exit(1)
    log("all checks passed")
    sys.exit(0)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout=30.0, step=0.05):
    """Polls pred() until it returns a true value (returned) or timeout seconds pass (None)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            return None
        time.sleep(step)


def proc_stat(pid):
    """(state letter, utime+stime ticks, ppid) of pid from /proc/pid/stat, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[11]) + int(rest[12]), int(rest[1])


_tides = []


class Tide:
    """One embedded pgtide on its own fresh data directory.

    settings: dict of -c key=value. Attributes: dir, data, sock, port, pid, logpath, password.
    """

    def __init__(self, settings=None, name="tide", data=None):
        base = os.environ.get("PGTIDE_SCRATCH") or tempfile.gettempdir()
        self.dir = tempfile.mkdtemp(prefix=f"{name}.", dir=base)
        os.chmod(self.dir, 0o755)
        self.data = data or os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        os.makedirs(self.sock, exist_ok=True)
        self.logpath = os.path.join(self.dir, "pgtide.log")
        self.proc = None
        self.password = None
        _tides.append(self)
        self.start(settings or {})

    # ---- lifecycle

    def start(self, settings):
        """Starts pgtide (again) with settings, waits for the password and a first login."""
        self.port = free_port()
        # no metrics endpoint unless asked: its default port is shared by every instance
        self.settings = {"metrics_listen": ""}
        if os.environ.get("PGT_WORKERS"):  # the runner's worker threads (regress/e2e/run)
            self.settings["workers"] = os.environ["PGT_WORKERS"]
        self.settings.update(settings)
        args = [PGTIDE_BIN, "-D", self.data, "-c", f"listen_port={self.port}",
                "-c", f"unix_socket_dir={self.sock}"]
        for k, v in self.settings.items():
            args += ["-c", f"{k}={v}"]
        logf = open(self.logpath, "a")
        self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        self.pid = self.proc.pid
        pwfile = os.path.join(self.data, "initial-password")
        ok = wait_until(lambda: (os.path.exists(pwfile) and os.path.getsize(pwfile) > 0)
                        or self.proc.poll() is not None, 120, 0.1)
        if not ok or self.proc.poll() is not None:
            raise RuntimeError(f"pgtide did not start; log:\n{self.log_tail()}")
        with open(pwfile) as f:
            self.password = f.readline().strip()
        if not wait_until(self._listening, 60, 0.1):
            raise RuntimeError(f"pgtide does not listen on {self.port}; log:\n{self.log_tail()}")
        log(f"pgtide pid {self.pid} port {self.port} data {self.data} settings {self.settings}")

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            return True
        except OSError:
            return False

    def stop(self):
        """Stops pgtide by pid (SIGTERM, then SIGKILL), then anything left of its compute."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self.kill_compute_leftovers()

    def kill_compute_leftovers(self):
        pids = self.compute_pids()
        for pid in pids:
            self.thaw_cgroup(pid)
            for sig in (signal.SIGCONT, signal.SIGQUIT):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        if pids and not wait_until(lambda: not self.compute_pids(), 10):
            for pid in self.compute_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    @staticmethod
    def thaw_cgroup(pid):
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines:
            _, ctrls, path = line.split(":", 2)
            if "freezer" in ctrls.split(","):
                state = f"/sys/fs/cgroup/freezer{path}/freezer.state"
                try:
                    with open(state, "w") as f:
                        f.write("THAWED")
                except OSError:
                    pass

    # ---- connection strings

    def dsn(self, user="postgres", password=None, dbname="postgres", **extra):
        pw = self.password if password is None else password
        parts = {"host": "127.0.0.1", "port": self.port, "user": user, "password": pw,
                 "dbname": dbname, "sslmode": "prefer", "connect_timeout": 60}
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def url(self, user="postgres", password=None, dbname="postgres"):
        pw = self.password if password is None else password
        return f"postgresql://{user}:{pw}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql, dbname="postgres", user="postgres", password=None, timeout=60,
             verbose=False):
        """Runs psql -c sql; returns CompletedProcess (stdout/stderr text)."""
        env = dict(os.environ, PGPASSWORD=self.password if password is None else password,
                   PGCONNECT_TIMEOUT="60")
        cmd = [PSQL, "-X", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1"]
        if verbose:
            cmd += ["-v", "VERBOSITY=verbose"]
        cmd += [f"host=127.0.0.1 port={self.port} user={user} dbname={dbname} sslmode=prefer",
                "-c", sql]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)

    # ---- admin console

    def admin(self, sql, verbose=False):
        return self.psql(sql, dbname="pgtide", verbose=verbose)

    def admin_rows(self, sql):
        """Rows of an admin SHOW as dicts (psql -A with a header)."""
        env = dict(os.environ, PGPASSWORD=self.password)
        r = subprocess.run([PSQL, "-X", "-A", "-F", "\t", "--pset=footer=off",
                            f"host=127.0.0.1 port={self.port} user=postgres dbname=pgtide "
                            "sslmode=prefer", "-c", sql],
                           env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"admin {sql!r} failed: {r.stderr}")
        lines = r.stdout.splitlines()
        head = lines[0].split("\t")
        return [dict(zip(head, ln.split("\t"))) for ln in lines[1:]]

    def compute(self):
        """The SHOW COMPUTES row of the primary."""
        for row in self.admin_rows("SHOW COMPUTES"):
            if row.get("role") == "primary":
                return row
        raise RuntimeError("SHOW COMPUTES has no primary row")

    def starts(self):
        return int(self.compute()["starts"])

    def clients(self):
        return self.admin_rows("SHOW CLIENTS")

    # ---- processes and log

    def compute_pids(self):
        """Pids of every process of the compute (see the module comment)."""
        want = os.path.realpath(os.path.join(self.data, "primary"))
        me = os.getpid()
        pids = []
        for ent in os.listdir("/proc"):
            if not ent.isdigit() or int(ent) == me:
                continue
            try:
                with open(f"/proc/{ent}/comm") as f:
                    if f.read().strip() != "postgres":
                        continue
                if os.readlink(f"/proc/{ent}/cwd") != want:
                    continue
            except OSError:
                continue
            pids.append(int(ent))
        return sorted(pids)

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "primary", "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        return pid if pid in self.compute_pids() else None

    def wait_no_compute(self, timeout=30):
        """True when no compute process remains within timeout seconds."""
        return wait_until(lambda: not self.compute_pids(), timeout) is not None

    def wait_state(self, state, timeout=30):
        return wait_until(lambda: self.compute()["state"] == state, timeout, 0.2) is not None

    def suspend_now(self, timeout=30):
        """Brings the compute to `suspended` with no process left: admin SUSPEND whenever it is
        running or paused, then waits. True on success within timeout seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            state = self.compute()["state"]
            if state == "suspended" and not self.compute_pids():
                return True
            if state in ("running", "paused"):
                r = self.admin("SUSPEND", verbose=True)
                if r.returncode != 0:
                    log(f"SUSPEND answered: {r.stderr.strip()}")
            time.sleep(0.2)
        return False

    def log_text(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def count_log(self, needle):
        return self.log_text().count(needle)

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])


def _cleanup():
    for t in _tides:
        try:
            t.stop()
        except Exception as e:  # cleanup must go on for the other instances
            print(f"cleanup of {t.dir}: {e}", file=sys.stderr)
        if os.environ.get("PGT_KEEP") != "1" and not os.environ.get("PGTIDE_SCRATCH"):
            shutil.rmtree(t.dir, ignore_errors=True)


atexit.register(_cleanup)
