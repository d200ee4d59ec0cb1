"""lib_replica: helpers shared by the replica scenarios (t_replica_*.py), on a Tide from
lib_serverless: the replica rows of SHOW COMPUTES, whether replicas are in rotation, a replica's
postmaster pid from its data directory, and SQL run straight on a compute's private socket."""
import os
import subprocess

from lib_serverless import PSQL, log


def replicas(t):
    """name -> SHOW COMPUTES row of every replica (empty when there is none)."""
    return {r["name"]: r for r in t.admin_rows("SHOW COMPUTES") if r.get("role") == "replica"}


def in_rotation(t, *names):
    """True when every named replica is listed and in rotation."""
    rows = replicas(t)
    return all(n in rows and rows[n].get("in_rotation") == "yes" for n in names)


def postmaster_of(t, index):
    """pid in DATA/replicas/index/postmaster.pid, or None."""
    try:
        with open(os.path.join(t.data, "replicas", str(index), "postmaster.pid")) as f:
            return int(f.readline())
    except (OSError, ValueError):
        return None


def direct(t, port, sql, timeout=30):
    """Runs sql on a compute's private socket as postgres; returns stdout stripped or None."""
    run = os.path.join(t.data, "run")
    r = subprocess.run([PSQL, "-X", "-At", f"host={run} port={port} user=postgres dbname=postgres",
                        "-c", sql], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        log(f"direct {port} {sql!r}: {r.stderr.strip()}")
        return None
    return r.stdout.strip()
