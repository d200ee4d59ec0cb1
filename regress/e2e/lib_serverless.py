"""lib_serverless: helpers for the serverless end-to-end tests (t_serverless_*.py) and the resume
benchmark. Each test starts its OWN embedded pgtide (fresh DATA under a 0755 temp dir, free port,
special settings) with Tide(...), and stops it by pid at exit.
The checks, waits and the process side (stop, compute processes, log) come from lib_check. All
waits are bounded; nothing asserts wall-clock time.
"""
import os
import socket
import subprocess
import time

from lib_check import (BINDIR, PGTIDE_BIN, PSQL, TOP, TideProcess, check, failures,  # noqa: F401
                       finish, free_port, log, scratch_dir, wait_until)


def proc_stat(pid):
    """(state letter, utime+stime ticks, ppid) of pid from /proc/pid/stat, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[11]) + int(rest[12]), int(rest[1])


class Tide(TideProcess):
    """One embedded pgtide on its own fresh data directory.

    settings: dict of -c key=value. Attributes: dir, data, sock, port, pid, logpath, password.
    """

    def __init__(self, settings=None, name="tide", data=None):
        self.dir = scratch_dir(name)
        self.data = data or os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        os.makedirs(self.sock, exist_ok=True)
        self.logpath = os.path.join(self.dir, "pgtide.log")
        self.proc = None
        self.password = None
        self.track()
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
