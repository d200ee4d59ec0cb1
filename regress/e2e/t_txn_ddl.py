"""t_txn_ddl: DDL that changes a prepared statement's result type, in transaction pooling.

A client prepares `SELECT * FROM t`, another session adds a column, the client executes again:
PostgreSQL answers 0A000 "cached plan must not change result type"; pgtide (pool_mode=transaction,
pool_size=1) must give the same answers, and recovery must work as it does on PostgreSQL: closing
the statement and preparing it again under the same name (or a new name) with the same text
returns the new columns. Compared with PostgreSQL directly over raw protocol scripts, then with
asyncpg, which re-prepares by itself after that error.
"""
import asyncio

import asyncpg

from t_txn_common import (B, C, D, E, P, Q, S, Raw, check, direct_exec, finish, log, txn_tide,
                          PG_PORT, PG_SOCK)


def reset_table(name):
    direct_exec(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (a int); "
                f"INSERT INTO {name} VALUES (1)")


def scripts():
    def close_and_reprepare(r, tbl):
        out = r.run(P("s", f"SELECT * FROM {tbl}"), B("s"), E(), S())
        direct_exec(f"ALTER TABLE {tbl} ADD COLUMN b int DEFAULT 7")
        out += r.run(B("s"), E(), S())
        out += r.run(C("S", "s"), P("s", f"SELECT * FROM {tbl}"), D("S", "s"), B("s"), E(), S())
        out += r.run(B("s"), E(), S())
        return out

    def new_name(r, tbl):
        out = r.run(P("s1", f"SELECT * FROM {tbl}"), B("s1"), E(), S())
        direct_exec(f"ALTER TABLE {tbl} ADD COLUMN b int DEFAULT 7")
        out += r.run(B("s1"), E(), S())
        out += r.run(P("s2", f"SELECT * FROM {tbl}"), B("s2"), E(), S())
        return out

    def unnamed(r, tbl):
        out = r.run(P("", f"SELECT * FROM {tbl}"), B(""), E(), S())
        direct_exec(f"ALTER TABLE {tbl} ADD COLUMN b int DEFAULT 7")
        out += r.run(P("", f"SELECT * FROM {tbl}"), B(""), E(), S())
        return out

    def deallocate_then_prepare(r, tbl):
        out = r.run(P("s", f"SELECT * FROM {tbl}"), B("s"), E(), S())
        direct_exec(f"ALTER TABLE {tbl} ADD COLUMN b int DEFAULT 7")
        out += r.run(B("s"), E(), S())
        out += r.run(Q("DEALLOCATE s"))
        out += r.run(P("s", f"SELECT * FROM {tbl}"), B("s"), E(), S())
        return out

    def drop_table(r, tbl):
        out = r.run(P("s", f"SELECT * FROM {tbl}"), B("s"), E(), S())
        direct_exec(f"DROP TABLE {tbl}")
        out += r.run(B("s"), E(), S())
        direct_exec(f"CREATE TABLE {tbl} (a int, c text DEFAULT 'x'); INSERT INTO {tbl} VALUES (5)")
        out += r.run(B("s"), E(), S())
        return out

    return [("Close + Parse again under the same name", close_and_reprepare),
            ("Parse the same text under a new name", new_name),
            ("unnamed statement prepared again", unnamed),
            ("DEALLOCATE then Parse again", deallocate_then_prepare),
            ("table dropped and created again", drop_table)]


async def asyncpg_case(tbl, **conn_kw):
    conn = await asyncpg.connect(**conn_kw)
    try:
        out = [list(map(tuple, await conn.fetch(f"SELECT * FROM {tbl}")))]
        direct_exec(f"ALTER TABLE {tbl} ADD COLUMN b int DEFAULT 7")
        try:
            out.append(list(map(tuple, await conn.fetch(f"SELECT * FROM {tbl}"))))
        except asyncpg.PostgresError as e:
            out.append(f"error {e.sqlstate}")
        try:
            out.append(list(map(tuple, await conn.fetch(f"SELECT * FROM {tbl}"))))
        except asyncpg.PostgresError as e:
            out.append(f"error {e.sqlstate}")
        return out
    finally:
        await conn.close()


def main():
    t = txn_tide(pool_size=1, name="txn_ddl")
    for i, (name, script) in enumerate(scripts()):
        tbl = f"txn_ddl_{i}"
        reset_table(tbl)
        d = Raw()
        try:
            want = script(d, tbl)
        finally:
            d.close()
        reset_table(tbl)
        r = Raw(t.port)
        try:
            got = script(r, tbl)
        except Exception as e:  # noqa: BLE001 - a hang or a closed socket is a failure
            got = [f"exception {e!r}"]
        finally:
            r.close()
        if not check(got == want, f"{name}: same answers as PostgreSQL"):
            log(f"  direct: {want}")
            log(f"  pgtide: {got}")
            log("  pgtide log tail:\n" + t.log_tail(6))
        if i == 0:
            check("E:0A000" in want, "PostgreSQL answers 0A000 for the changed result type")
    reset_table("txn_ddl_apg")
    want = asyncio.run(asyncpg_case("txn_ddl_apg", host=PG_SOCK, port=int(PG_PORT), user="app",
                                    database="appdb"))
    reset_table("txn_ddl_apg")
    got = asyncio.run(asyncpg_case("txn_ddl_apg", host="127.0.0.1", port=t.port, user="app",
                                   password="secret", database="appdb", ssl=False))
    log(f"asyncpg direct: {want}")
    check(got == want, f"asyncpg re-prepares after the result type changed, as directly ({got})")
    r = Raw(t.port)
    check(r.run(Q("SELECT 'alive'"))[-2:] == ["C:SELECT 1", "Z:I"], "pgtide still serves")
    r.close()
    t.stop()
    finish()


if __name__ == "__main__":
    main()
