/*
 * pgq: one query to a compute without blocking, for the control plane (readiness checks, the
 * auth cache's pg_authid read, replica lag probes, session snapshots). It connects with libpq,
 * sends one statement with text parameters, collects the result, closes the connection and
 * reports through a callback, all driven by libev watchers.
 */
#pragma once

#include <stdint.h>

#include <ev.h>

struct pgq;

/* Result callback, called exactly once per started query unless pgq_cancel came first.
   On success err is NULL and values holds ntuples x nfields text values, row-major (NULL for an
   SQL NULL; 0 x 0 for a command without rows). On failure err is the message (connection, server
   error or timeout) and ntuples = nfields = 0. values and err are only valid during the call.
   The pgq handle is freed when the callback returns: do not cancel it from inside. */
typedef void (*pgq_done_fn)(void *arg, int ntuples, int nfields, const char *const *values,
                            const char *err);

/* Starts the query: conninfo is a libpq connection string (or URI), sql one statement with
   $1..$n placeholders, params nparams text values (NULL = SQL NULL; copied). timeout_ms > 0
   bounds the whole exchange (then err = "query timed out after N ms"); <= 0 means no bound.
   Never blocks; every later failure, even a malformed conninfo, is reported through done from
   the loop, never from inside pgq_start. Returns the handle, or NULL when out of memory (done
   will then never be called). */
struct pgq *pgq_start(struct ev_loop *loop, const char *conninfo, const char *sql, int nparams,
                      const char *const *params, int64_t timeout_ms, pgq_done_fn done, void *arg)
    __attribute__((warn_unused_result));

/* Abandons a query that has not completed: closes its connection and frees it; done is not
   called. q must be a live handle (not one whose done has run). NULL is ignored. */
void pgq_cancel(struct pgq *q);
