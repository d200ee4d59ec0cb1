/*
 * driver: the libpq leg of pgtide's driver matrix. Given a conninfo (argv[1], TLS required, the
 * password in PGPASSWORD) it runs DDL, DML, parameterised and prepared statements, a rolled-back
 * transaction, COPY in and out, a 100,000-row result checked row by row, LISTEN/NOTIFY between
 * two connections, a cancelled pg_sleep (57014), a syntax error (42601) followed by recovery, and
 * a wrong password (28P01). It prints one "ok:" line per step and exits non-zero at the first
 * failure, with the server's message.
 */
#include <libpq-fe.h>

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void die(PGconn *conn, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("FAIL: ", stdout);
    vprintf(fmt, ap);
    va_end(ap);
    if (conn != NULL)
        printf(" (%s)", PQerrorMessage(conn));
    putchar('\n');
    exit(1);
}

static PGconn *connect_or_die(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);

    if (PQstatus(conn) != CONNECTION_OK)
        die(conn, "connect");
    if (!PQsslInUse(conn))
        die(NULL, "connection is not TLS");
    return conn;
}

/* Runs sql, requires status want, returns the result (caller clears). */
static PGresult *exec_want(PGconn *conn, const char *sql, ExecStatusType want)
{
    PGresult *res = PQexec(conn, sql);

    if (PQresultStatus(res) != want)
        die(conn, "%s: status %s", sql, PQresStatus(PQresultStatus(res)));
    return res;
}

static void exec_ok(PGconn *conn, const char *sql)
{
    PQclear(exec_want(conn, sql, PGRES_COMMAND_OK));
}

/* Runs a one-value query and compares its text with want. */
static void expect_value(PGconn *conn, const char *sql, const char *want)
{
    PGresult *res = exec_want(conn, sql, PGRES_TUPLES_OK);

    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), want) != 0)
        die(NULL, "%s: got '%s', want '%s'", sql, PQntuples(res) ? PQgetvalue(res, 0, 0) : "",
            want);
    PQclear(res);
}

static void step_ddl_dml(PGconn *conn)
{
    exec_ok(conn, "SET client_min_messages = warning");
    exec_ok(conn, "DROP TABLE IF EXISTS drv_libpq_items");
    exec_ok(conn, "CREATE TABLE drv_libpq_items (id int PRIMARY KEY, name text, n bigint)");
    exec_ok(conn, "INSERT INTO drv_libpq_items VALUES (1, 'one', 10), (2, 'two', 20)");
    exec_ok(conn, "UPDATE drv_libpq_items SET n = n + 1 WHERE id = 2");
    exec_ok(conn, "DELETE FROM drv_libpq_items WHERE id = 1");
    expect_value(conn, "SELECT n FROM drv_libpq_items", "21");
    printf("ok: ddl/dml\n");
}

static void step_params_prepared(PGconn *conn)
{
    const char *vals[3] = {"3", "it's \"three\"", "30"};
    PGresult *res = PQexecParams(conn, "INSERT INTO drv_libpq_items VALUES ($1, $2, $3)", 3, NULL,
                                 vals, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        die(conn, "execParams");
    PQclear(res);
    res = PQprepare(conn, "drv_get", "SELECT name FROM drv_libpq_items WHERE id = $1", 1, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        die(conn, "prepare");
    PQclear(res);
    for (int i = 0; i < 3; i++) {
        const char *id = "3";
        res = PQexecPrepared(conn, "drv_get", 1, &id, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
            strcmp(PQgetvalue(res, 0, 0), vals[1]) != 0)
            die(conn, "execPrepared #%d", i);
        PQclear(res);
    }
    res = PQdescribePrepared(conn, "drv_get");
    if (PQresultStatus(res) != PGRES_COMMAND_OK || PQnparams(res) != 1 || PQnfields(res) != 1)
        die(conn, "describePrepared");
    PQclear(res);
    printf("ok: parameters and prepared statements\n");
}

static void step_rollback(PGconn *conn)
{
    exec_ok(conn, "BEGIN");
    exec_ok(conn, "INSERT INTO drv_libpq_items VALUES (99, 'gone', 0)");
    if (PQtransactionStatus(conn) != PQTRANS_INTRANS)
        die(NULL, "not in a transaction after BEGIN");
    exec_ok(conn, "ROLLBACK");
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        die(NULL, "not idle after ROLLBACK");
    expect_value(conn, "SELECT count(*) FROM drv_libpq_items WHERE id = 99", "0");
    printf("ok: rollback\n");
}

/* Waits for the final result of the current command and requires status want. */
static void finish_want(PGconn *conn, ExecStatusType want, const char *what)
{
    PGresult *res = PQgetResult(conn);

    if (PQresultStatus(res) != want)
        die(conn, "%s: status %s", what, PQresStatus(PQresultStatus(res)));
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
}

static void step_copy(PGconn *conn)
{
    char line[128];
    long sum = 0, rows = 0;
    char *buf;
    int n;

    exec_ok(conn, "CREATE TEMP TABLE drv_libpq_copy (id int, t text)");
    PQclear(exec_want(conn, "COPY drv_libpq_copy FROM STDIN", PGRES_COPY_IN));
    for (int i = 1; i <= 50000; i++) {
        n = snprintf(line, sizeof(line), "%d\tline\\t%d\n", i, i);
        if (PQputCopyData(conn, line, n) != 1)
            die(conn, "putCopyData");
    }
    if (PQputCopyEnd(conn, NULL) != 1)
        die(conn, "putCopyEnd");
    finish_want(conn, PGRES_COMMAND_OK, "copy in");
    expect_value(conn, "SELECT count(*) || ' ' || sum(id) FROM drv_libpq_copy", "50000 1250025000");
    PQclear(exec_want(conn, "COPY (SELECT id, t FROM drv_libpq_copy ORDER BY id) TO STDOUT",
                      PGRES_COPY_OUT));
    while ((n = PQgetCopyData(conn, &buf, 0)) > 0) {
        long id;
        char want[128];

        rows++;
        id = strtol(buf, NULL, 10);
        snprintf(want, sizeof(want), "%ld\tline\\t%ld\n", id, id);
        if (id != rows || strncmp(buf, want, (size_t) n) != 0 || (size_t) n != strlen(want))
            die(NULL, "copy out row %ld: '%.*s'", rows, n, buf);
        sum += id;
        PQfreemem(buf);
    }
    if (n != -1)
        die(conn, "getCopyData");
    finish_want(conn, PGRES_COMMAND_OK, "copy out");
    if (rows != 50000 || sum != 1250025000L)
        die(NULL, "copy out: %ld rows, sum %ld", rows, sum);
    printf("ok: copy in/out\n");
}

static void step_big_result(PGconn *conn)
{
    PGresult *res = exec_want(
        conn, "SELECT g, repeat('x', g % 50) FROM generate_series(1, 100000) g", PGRES_TUPLES_OK);

    if (PQntuples(res) != 100000 || PQnfields(res) != 2)
        die(NULL, "big result: %d rows", PQntuples(res));
    for (int i = 0; i < 100000; i++) {
        long g = strtol(PQgetvalue(res, i, 0), NULL, 10);
        if (g != i + 1 || PQgetlength(res, i, 1) != (int) (g % 50))
            die(NULL, "big result row %d", i);
    }
    PQclear(res);
    printf("ok: 100000-row result\n");
}

static void step_notify(PGconn *conn, const char *conninfo)
{
    PGconn *other = connect_or_die(conninfo);
    PGnotify *note = NULL;
    time_t deadline = time(NULL) + 15;

    exec_ok(conn, "LISTEN drv_libpq_chan");
    exec_ok(other, "NOTIFY drv_libpq_chan, 'hello libpq'");
    PQfinish(other);
    while (note == NULL && time(NULL) < deadline) {
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
        if (poll(&pfd, 1, 1000) < 0)
            die(NULL, "poll");
        if (!PQconsumeInput(conn))
            die(conn, "consumeInput");
        note = PQnotifies(conn);
    }
    if (note == NULL)
        die(NULL, "no notification within 15 s");
    if (strcmp(note->relname, "drv_libpq_chan") != 0 || strcmp(note->extra, "hello libpq") != 0)
        die(NULL, "notification %s/%s", note->relname, note->extra);
    PQfreemem(note);
    exec_ok(conn, "UNLISTEN *");
    printf("ok: listen/notify\n");
}

static void step_cancel(PGconn *conn)
{
    char err[256];
    PGcancel *cancel;
    PGresult *res;
    const char *state;
    time_t start = time(NULL);

    if (!PQsendQuery(conn, "SELECT pg_sleep(60)"))
        die(conn, "sendQuery");
    sleep(1);
    cancel = PQgetCancel(conn);
    if (cancel == NULL || !PQcancel(cancel, err, sizeof(err)))
        die(NULL, "PQcancel: %s", err);
    PQfreeCancel(cancel);
    res = PQgetResult(conn);
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (PQresultStatus(res) != PGRES_FATAL_ERROR || state == NULL || strcmp(state, "57014") != 0)
        die(conn, "cancel: status %s sqlstate %s", PQresStatus(PQresultStatus(res)),
            state ? state : "-");
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    if (time(NULL) - start > 20)
        die(NULL, "cancel took too long");
    expect_value(conn, "SELECT 'alive after cancel'", "alive after cancel");
    printf("ok: cancel 57014\n");
}

static void step_syntax_error(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELEC 1");
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (PQresultStatus(res) != PGRES_FATAL_ERROR || state == NULL || strcmp(state, "42601") != 0)
        die(conn, "syntax error: sqlstate %s", state ? state : "-");
    PQclear(res);
    expect_value(conn, "SELECT 2", "2");
    printf("ok: syntax error 42601 then recovery\n");
}

static void step_wrong_password(const char *conninfo)
{
    char buf[2048];
    PGconn *conn;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;

    snprintf(buf, sizeof(buf), "%s password=wrong-password", conninfo);
    conn = PQconnectStart(buf);
    if (conn == NULL)
        die(NULL, "connectStart");
    PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd pfd = {.fd = PQsocket(conn),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (poll(&pfd, 1, 15000) <= 0)
            die(NULL, "wrong password: no answer within 15 s");
        st = PQconnectPoll(conn);
    }
    if (st == PGRES_POLLING_OK)
        die(NULL, "wrong password accepted");
    if (strstr(PQerrorMessage(conn), "28P01") == NULL)
        die(conn, "wrong password: no 28P01");
    PQfinish(conn);
    printf("ok: wrong password 28P01\n");
}

int main(int argc, char **argv)
{
    PGconn *conn;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CONNINFO (password in PGPASSWORD)\n", argv[0]);
        return 2;
    }
    conn = connect_or_die(argv[1]);
    step_ddl_dml(conn);
    step_params_prepared(conn);
    step_rollback(conn);
    step_copy(conn);
    step_big_result(conn);
    step_notify(conn, argv[1]);
    step_cancel(conn);
    step_syntax_error(conn);
    exec_ok(conn, "DROP TABLE drv_libpq_items");
    PQfinish(conn);
    step_wrong_password(argv[1]);
    printf("all ok\n");
    return 0;
}
