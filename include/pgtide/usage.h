/*
 * usage: the pure arithmetic of billing (issue 5). Ledger records go in, in file order; rows
 * of usage come out, per compute (or per role) and per bucket (total, UTC hour or UTC day).
 * An interval runs from a compute's START to its STOP (or CRASH_CLOSE; an interval still open
 * ends at open_until_ms, or at its last record when that is 0). Within it, time is running or
 * paused, at the size in force (RESIZE, HEARTBEAT). Each interval's length is rounded up to the
 * next whole second, and raised to minimum_charge_ms when shorter; the extra time is billed in
 * the state and size of the interval's last moment and falls in the bucket of its end. Running
 * time costs its CU-seconds, paused (frozen) time paused_rate of a CU-second. Only time within
 * [since_ms, until_ms) counts. No I/O, no clock: unit-tested in regress/unit/test_usage.c.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtide/ledger.h"

enum usage_by { USAGE_BY_TOTAL, USAGE_BY_HOUR, USAGE_BY_DAY };
enum usage_per { USAGE_PER_COMPUTE, USAGE_PER_ROLE };

struct usage_params {
    int64_t since_ms, until_ms; /* window [since, until); 0 = unbounded on that side */
    int64_t open_until_ms;      /* end of intervals left open; 0 = their last record */
    double paused_rate;         /* price of a paused CU-second in running CU-seconds (0.1) */
    int64_t minimum_charge_ms;  /* shortest billed interval (0) */
    enum usage_by by;
    enum usage_per per;
};

struct usage_row {
    int64_t bucket_ms;          /* start of the hour/day (UTC); 0 for USAGE_BY_TOTAL */
    char name[LEDGER_NAME_MAX]; /* compute name, or the role name when per role */
    enum ledger_role role;
    int64_t intervals;      /* intervals that ended (or are open) in this bucket */
    double running_seconds; /* rounded (see above) */
    double paused_seconds;
    double cu_seconds;        /* running CU-seconds */
    double paused_cu_seconds; /* paused CU-seconds, before paused_rate */
    double billed_cu_seconds; /* cu_seconds + paused_rate * paused_cu_seconds */
};

struct usage;

/* A calculator with a copy of params. NULL when out of memory. */
struct usage *usage_new(const struct usage_params *params) __attribute__((warn_unused_result));
void usage_free(struct usage *u);

/* Feeds one record (records must come in ledger order; a timestamp earlier than the compute's
   previous one is treated as equal). Returns 0, or -1 when out of memory. */
int usage_feed(struct usage *u, const struct ledger_record *r) __attribute__((warn_unused_result));

/* Closes open intervals (see open_until_ms) and returns the rows sorted by bucket, then name,
   in a malloc'd array (caller frees; NULL with 0 rows). Call once. Returns the row count, or -1
   when out of memory. */
int usage_finish(struct usage *u, struct usage_row **rows) __attribute__((warn_unused_result));

/* Sums rows into one (name "total"). */
void usage_total(const struct usage_row *rows, int n, struct usage_row *out);

/* Formats a wall-clock time as "YYYY-MM-DDTHH:MM:SSZ" (UTC). */
void usage_format_time(int64_t wall_ms, char *out, size_t outlen);

/* Parses "YYYY-MM-DD", "YYYY-MM-DDTHH:MM", "YYYY-MM-DDTHH:MM:SS" (optionally with a trailing
   'Z', or a blank in place of 'T'; UTC), or a bare number of seconds since the epoch. Returns
   0 and *ms, or -1. */
int usage_parse_time(const char *s, int64_t *ms) __attribute__((warn_unused_result));
