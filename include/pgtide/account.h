/*
 * account: live usage accounting (DESIGN.md §5, issue 5). It hears every compute state change
 * (main calls account_compute_changed from the compute hook), writes the matching ledger
 * records with the wall clock, the compute's role and size (start on wake, pause, thaw, stop on
 * exit or failure, resize through account_compute_resized), a heartbeat of every compute whose
 * interval is open every ledger_heartbeat seconds, and keeps in-memory counters for the metrics
 * endpoint (starts and their durations, suspends, failures, CU-seconds since pgtide started).
 * It also hosts the `pgtide usage` subcommand, which reads the ledger without the daemon.
 */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/ledger.h"
#include "pgtide/usage.h"

struct account;

/* Upper bounds (seconds) of the start-duration histogram's buckets; +Inf is implied. */
#define ACCOUNT_START_BUCKETS 10
#define ACCOUNT_START_BOUNDS                                                                       \
    {                                                                                              \
        0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60                                                \
    }

#define ACCOUNT_MAX_COMPUTES 32

/* SHOW USAGE ledger reads running at once (each is a thread reading every ledger file). */
#define ACCOUNT_MAX_USAGE_READS 4

/* What the metrics endpoint shows of one compute. */
struct account_compute_stats {
    char name[LEDGER_NAME_MAX]; /* "primary", "replica-0", ... */
    enum compute_role role;
    enum compute_state state;
    double cu;         /* current size */
    uint64_t starts;   /* starts attempted since pgtide started */
    uint64_t failures; /* -> FAILED */
    uint64_t suspends; /* -> SUSPENDING (idle stop, admin SUSPEND, scale-in) */
    uint64_t pauses;   /* RUNNING -> PAUSED */
    uint64_t start_hist[ACCOUNT_START_BUCKETS + 1]; /* successful starts, non-cumulative;
                                                        last = above the largest bound */
    double start_seconds_sum;                       /* of successful starts */
    double running_cu_seconds;                      /* unrounded, since pgtide started */
    double paused_cu_seconds;
};

/* Opens the ledger in DATA/state (closing intervals a crash left open, logged) and arms the
   heartbeat on loop. cfg is referenced (config_ref) until account_free or the next
   account_set_config. clock may be NULL (real wall clock). Returns NULL with err set. */
struct account *account_new(struct ev_loop *loop, struct config *cfg, const char *state_dir,
                            ledger_clock_fn clock, void *clock_arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Writes a stop for every interval still open (a clean shutdown), stops the timer, closes the
   ledger, drops the config reference. NULL is ignored. */
void account_free(struct account *a);

/* New snapshot after a reload (ledger_heartbeat, paused_rate, usage_minimum_charge). */
void account_set_config(struct account *a, struct config *cfg);

/* A compute changed state (from != to). Writes START on SUSPENDED/FAILED -> STARTING, PAUSE on
   RUNNING -> PAUSED, THAW on PAUSED -> RUNNING, STOP on -> SUSPENDED or -> FAILED from an open
   interval; counts starts, start durations, suspends and failures. A compute is known from its
   first call on (up to ACCOUNT_MAX_COMPUTES). Safe with a == NULL. */
void account_compute_changed(struct account *a, struct compute *c, enum compute_state from,
                             enum compute_state to);

/* The compute's size changed live (vertical scaling): a RESIZE record at new_cu; heartbeats
   and CU-seconds follow the new size. No record when no interval is open (the next START
   carries the size). Safe with a == NULL. */
void account_compute_resized(struct account *a, struct compute *c, double new_cu);

/* Name the ledger uses for c: "primary", or "replica-N" (N = port - 5433). */
void account_compute_name(const struct compute *c, char *out, size_t outlen);

/* Snapshot of the counters: fills at most max entries, returns how many computes are known.
   CU-seconds include the open interval up to now. */
int account_get_stats(struct account *a, struct account_compute_stats *out, int max);

/* Usage from the ledger (SHOW USAGE), computed off the event loop: every ledger file is read
   (open intervals end at the call) by a thread of its own, because months of heartbeats are
   millions of records, and the loop serves clients meanwhile. Rows are grouped by compute and
   by bucket (USAGE_BY_TOTAL/HOUR/DAY) with the configured rates. When the thread is done,
   done(arg, token, rows, n, err) runs on the loop: rows is malloc'd and owned by the callee
   (free it), n >= 0 rows, or n < 0 and err says why. Returns 0, or -1 with err set (out of
   memory, no thread), and done is then not called. account_free waits for running reads and
   drops their results without calling done. At most ACCOUNT_MAX_USAGE_READS run at once:
   beyond, -1 ("try again"). */
typedef void (*account_usage_done_fn)(void *arg, uint64_t token, struct usage_row *rows, int n,
                                      const char *err);
int account_usage_start(struct account *a, enum usage_by by, account_usage_done_fn done, void *arg,
                        uint64_t token, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* `pgtide usage -D DATA [-f FILE] [-c name=value] [--since T] [--until T]
   [--format csv|json|table] [--by hour|day] [--per compute|role]`: argv[0] is "usage".
   Read-only; works while pgtide runs and after a crash (a torn tail is skipped). Times are
   "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS]" (UTC) or seconds since the epoch. Returns the process
   exit status. */
int account_usage_main(int argc, char **argv);
