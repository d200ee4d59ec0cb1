/*
 * pgq: a single asynchronous libpq query. A small state machine (connecting, sending, reading)
 * advances on ev_io readiness of the libpq socket, re-arming the watcher for whatever libpq asks
 * next; a timer bounds the whole exchange. The result is handed to the caller as an array of
 * text values pointing into the PGresult, then everything is released.
 */
#define _GNU_SOURCE
#include "pgtide/pgq.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

enum pgq_phase { PGQ_CONNECTING, PGQ_SENDING, PGQ_READING };

struct pgq {
    struct ev_loop *loop;
    PGconn *conn;
    ev_io io;
    ev_timer timer;
    enum pgq_phase phase;
    int fd;
    int64_t timeout_ms;
    bool failed_at_start; /* report the connection failure from the loop */
    char *sql;
    int nparams;
    char **params;
    PGresult *result; /* the first result with rows or the command's status */
    char *err;        /* first error message */
    pgq_done_fn done;
    void *arg;
};

static void pgq_free(struct pgq *q)
{
    ev_io_stop(q->loop, &q->io);
    ev_timer_stop(q->loop, &q->timer);
    if (q->conn != NULL)
        PQfinish(q->conn);
    if (q->result != NULL)
        PQclear(q->result);
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->sql);
    free(q->err);
    free(q);
}

static void pgq_set_err(struct pgq *q, const char *msg)
{
    if (q->err != NULL)
        return;
    q->err = strdup(msg && msg[0] ? msg : "unknown error");
    if (q->err != NULL) {
        size_t n = strlen(q->err);
        while (n > 0 && (q->err[n - 1] == '\n' || q->err[n - 1] == ' '))
            q->err[--n] = '\0';
    }
}

/* Reports and frees. */
static void pgq_finish(struct pgq *q)
{
    ev_io_stop(q->loop, &q->io);
    ev_timer_stop(q->loop, &q->timer);
    if (q->err != NULL || q->result == NULL) {
        q->done(q->arg, 0, 0, NULL, q->err ? q->err : "no result");
        pgq_free(q);
        return;
    }
    int nt = PQntuples(q->result), nf = PQnfields(q->result);
    const char **values = NULL;
    if ((size_t) nt * (size_t) nf > 0) {
        values = calloc((size_t) nt * (size_t) nf, sizeof(*values));
        if (values == NULL) {
            q->done(q->arg, 0, 0, NULL, "out of memory");
            pgq_free(q);
            return;
        }
    }
    for (int r = 0; r < nt; r++)
        for (int f = 0; f < nf; f++)
            values[r * nf + f] = PQgetisnull(q->result, r, f) ? NULL : PQgetvalue(q->result, r, f);
    q->done(q->arg, nt, nf, values, NULL);
    free(values);
    pgq_free(q);
}

/* (Re)arms the io watcher on libpq's current socket for the given events. */
static void pgq_watch(struct pgq *q, int events)
{
    int fd = PQsocket(q->conn);
    if (fd < 0) {
        pgq_set_err(q, "connection has no socket");
        pgq_finish(q);
        return;
    }
    if (fd != q->fd || (q->io.events & (EV_READ | EV_WRITE)) != events) {
        ev_io_stop(q->loop, &q->io);
        ev_io_set(&q->io, fd, events);
        q->fd = fd;
    }
    ev_io_start(q->loop, &q->io);
}

static void pgq_flush(struct pgq *q)
{
    int r = PQflush(q->conn);
    if (r < 0) {
        pgq_set_err(q, PQerrorMessage(q->conn));
        pgq_finish(q);
    } else if (r > 0) {
        q->phase = PGQ_SENDING;
        pgq_watch(q, EV_READ | EV_WRITE);
    } else {
        q->phase = PGQ_READING;
        pgq_watch(q, EV_READ);
    }
}

static void pgq_send(struct pgq *q)
{
    if (PQsetnonblocking(q->conn, 1) != 0 ||
        !PQsendQueryParams(q->conn, q->sql, q->nparams, NULL, (const char *const *) q->params, NULL,
                           NULL, 0)) {
        pgq_set_err(q, PQerrorMessage(q->conn));
        pgq_finish(q);
        return;
    }
    pgq_flush(q);
}

static void pgq_connect_step(struct pgq *q)
{
    switch (PQconnectPoll(q->conn)) {
    case PGRES_POLLING_READING:
        pgq_watch(q, EV_READ);
        break;
    case PGRES_POLLING_WRITING:
        pgq_watch(q, EV_WRITE);
        break;
    case PGRES_POLLING_OK:
        pgq_send(q);
        break;
    default:
        pgq_set_err(q, PQerrorMessage(q->conn));
        pgq_finish(q);
        break;
    }
}

/* Consumes input and collects every result; finishes when libpq has no more. */
static void pgq_read(struct pgq *q)
{
    if (!PQconsumeInput(q->conn)) {
        pgq_set_err(q, PQerrorMessage(q->conn));
        pgq_finish(q);
        return;
    }
    while (!PQisBusy(q->conn)) {
        PGresult *res = PQgetResult(q->conn);
        if (res == NULL) {
            pgq_finish(q);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            if (q->result == NULL) {
                q->result = res;
                continue;
            }
        } else {
            pgq_set_err(q, PQresultErrorMessage(res));
        }
        PQclear(res);
    }
}

static void pgq_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgq *q = w->data;
    switch (q->phase) {
    case PGQ_CONNECTING:
        pgq_connect_step(q);
        break;
    case PGQ_SENDING:
        if (revents & EV_READ) {
            if (!PQconsumeInput(q->conn)) {
                pgq_set_err(q, PQerrorMessage(q->conn));
                pgq_finish(q);
                return;
            }
        }
        pgq_flush(q);
        break;
    case PGQ_READING:
        pgq_read(q);
        break;
    }
}

static void pgq_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgq *q = w->data;
    if (q->failed_at_start) {
        pgq_set_err(q, PQerrorMessage(q->conn));
    } else {
        char msg[64];
        snprintf(msg, sizeof(msg), "query timed out after %lld ms", (long long) q->timeout_ms);
        pgq_set_err(q, msg);
    }
    pgq_finish(q);
}

static int pgq_copy_params(struct pgq *q, int nparams, const char *const *params)
{
    if (nparams <= 0)
        return 0;
    q->params = calloc((size_t) nparams, sizeof(char *));
    if (q->params == NULL)
        return -1;
    q->nparams = nparams;
    for (int i = 0; i < nparams; i++) {
        if (params[i] != NULL && (q->params[i] = strdup(params[i])) == NULL)
            return -1;
    }
    return 0;
}

struct pgq *pgq_start(struct ev_loop *loop, const char *conninfo, const char *sql, int nparams,
                      const char *const *params, int64_t timeout_ms, pgq_done_fn done, void *arg)
{
    struct pgq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->loop = loop;
    q->done = done;
    q->arg = arg;
    q->fd = -1;
    q->timeout_ms = timeout_ms;
    ev_io_init(&q->io, pgq_io_cb, 0, EV_READ);
    q->io.data = q;
    ev_timer_init(&q->timer, pgq_timer_cb, timeout_ms > 0 ? (double) timeout_ms / 1000.0 : 0, 0);
    q->timer.data = q;
    const char *const keys[] = {"dbname", NULL};
    const char *const vals[] = {conninfo, NULL};
    if ((q->sql = strdup(sql)) == NULL || pgq_copy_params(q, nparams, params) < 0 ||
        (q->conn = PQconnectStartParams(keys, vals, 1)) == NULL) {
        pgq_free(q);
        return NULL;
    }
    q->phase = PGQ_CONNECTING;
    if (PQstatus(q->conn) == CONNECTION_BAD || PQsocket(q->conn) < 0) {
        q->failed_at_start = true;
        ev_timer_set(&q->timer, 0, 0); /* report from the loop, not from here */
        ev_timer_start(loop, &q->timer);
        return q;
    }
    if (timeout_ms > 0)
        ev_timer_start(loop, &q->timer);
    pgq_watch(q, EV_WRITE); /* libpq: behave as if PGRES_POLLING_WRITING at first */
    return q;
}

void pgq_cancel(struct pgq *q)
{
    if (q != NULL)
        pgq_free(q);
}
