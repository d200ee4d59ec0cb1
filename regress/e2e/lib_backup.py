"""lib_backup: helpers shared by the backup end-to-end tests (t_backup_*.py): the complete backups
of a data directory (from their meta files), a restore into a fresh directory and a count of rows
served by a pgtide over the restored directory."""
import os
import subprocess

import psycopg2

from lib_serverless import PGTIDE_BIN, Tide, log


def backups(data):
    """Complete backups (those with meta), as dicts, oldest first."""
    out = []
    bdir = os.path.join(data, "backups")
    for name in sorted(os.listdir(bdir)):
        meta = os.path.join(bdir, name, "meta")
        if os.path.exists(meta):
            with open(meta) as f:
                out.append(dict(ln.strip().split("=", 1) for ln in f if "=" in ln))
    return sorted(out, key=lambda b: int(b["start_ms"]))


def restore(data, into, *args):
    r = subprocess.run([PGTIDE_BIN, "restore", "-D", data, "--into", into, *args],
                       capture_output=True, text=True, timeout=600)
    log(f"restore {' '.join(args) or '(latest)'}: rc {r.returncode}: "
        f"{(r.stdout + r.stderr).strip().splitlines()[-1:]}")
    return r


def query_restored(into, sql):
    """Starts a pgtide over the restored directory, runs sql, stops it; returns the rows."""
    t = Tide({"suspend_after": "0"}, name="restored", data=into)
    try:
        c = psycopg2.connect(t.dsn())
        k = c.cursor()
        k.execute(sql)
        rows = k.fetchall()
        c.close()
        return rows
    finally:
        t.stop()


def connect(t, dbname="postgres"):
    c = psycopg2.connect(t.dsn(dbname=dbname))
    c.autocommit = True
    return c
