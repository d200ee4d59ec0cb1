"""drvcommon: shared bits of the Python legs of pgtide's driver matrix.

Reads the target from the PGTIDE_* environment (set by regress/e2e/run), builds connection
parameters with sslmode=require, and offers check()/ok() so each driver script prints one
"ok:" line per step and stops with a clear message at the first failure.
"""
import os
import sys

HOST = os.environ.get("PGTIDE_HOST", "127.0.0.1")
PORT = int(os.environ.get("PGTIDE_PORT", "6432"))
USER = os.environ.get("PGTIDE_USER", "app")
PASSWORD = os.environ.get("PGTIDE_PASSWORD", "secret")
DB = os.environ.get("PGTIDE_DB", "appdb")


def dsn(password=None):
    """libpq conninfo for the target, TLS required."""
    pw = PASSWORD if password is None else password
    return (f"host={HOST} port={PORT} user={USER} dbname={DB} sslmode=require "
            f"password={pw} connect_timeout=10")


def check(cond, what):
    """Stop the test with a message unless cond holds."""
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)


def ok(what):
    print(f"ok: {what}", flush=True)


def copy_text_rows(n):
    """COPY text-format payload of n rows (id, text with a tab escape and quotes)."""
    return "".join(f"{i}\trow \\t \"{i}\"\n" for i in range(1, n + 1))
