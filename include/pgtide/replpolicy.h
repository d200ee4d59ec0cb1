/*
 * replpolicy: the pure half of the replica set (DESIGN.md §5). How many read replicas there
 * should be, given what the scaler observes each second (reader clients waiting and for how
 * long, the primary's and the replicas' CPU use), and whether one replica may take new readers
 * (state, drain, replay lag). No I/O, no clock: every input is a parameter, so the rules are
 * unit-tested with traces. Rules of the count: out when reader clients have waited longer than
 * scale_wait, or when CPU (primary, or replicas on average) stays above cpu_high for a whole
 * scale_window; in by one after scale_cooldown of low load (nobody waiting, CPU below cpu_low
 * everywhere), each further step after another cooldown; always within min..max. After a
 * change, a further step out needs pressure sustained for a window since the change, and a
 * step in needs low load for a cooldown since it, so a trace that oscillates around a
 * threshold gives at most one change per cooldown. A step out is immediate when the last change
 * is at least a cooldown old.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REPLPOLICY_MAX 16 /* replicas at most (min_replicas/max_replicas bounds) */

struct replpolicy_params {
    int min_replicas, max_replicas; /* 0 <= min <= max <= REPLPOLICY_MAX */
    int64_t scale_wait_ms;          /* replica_scale_wait: a reader waiting longer is pressure */
    int64_t window_ms;              /* scale_window: CPU pressure must last this long */
    int64_t cooldown_ms;            /* scale_cooldown: low load must last this long */
    double cpu_high, cpu_low;       /* fractions of a compute's CU */
};

/* One second's observation. */
struct replpolicy_input {
    int64_t now_ms;          /* monotonic, increasing between calls */
    int current;             /* replicas wanted now (the last answer, or what exists) */
    int waiting;             /* reader clients waiting for a compute or a server */
    int64_t longest_wait_ms; /* the longest of those waits */
    double primary_cpu;      /* CPU use of the primary as a fraction of its CU; < 0 unknown */
    double replica_cpu;      /* average over running replicas (fraction of replica_units); < 0
                                unknown or none */
};

/* Memory of the decisions. Zero it, then replpolicy_reset. */
struct replpolicy {
    int64_t high_since_ms;     /* since when CPU has stayed above cpu_high; -1 = not high */
    int64_t pressure_since_ms; /* since when readers wait too long or CPU is high; -1 = not */
    int64_t low_since_ms;      /* since when load has stayed low; -1 = not low */
    int64_t last_change_ms;    /* the last change the policy made; INT64_MIN = none yet */
};

/* Forgets all memory (after the primary restarted or a forced count ended). */
void replpolicy_reset(struct replpolicy *p);

/* The number of replicas wanted now (recording a change as made). Input current outside
   min..max is brought inside at once. why (may be NULL) gets a one-line reason. */
int replpolicy_decide(struct replpolicy *p, const struct replpolicy_params *prm,
                      const struct replpolicy_input *in, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* ---- lag and rotation ---------------------------------------------------------------------- */

/* Parses a PostgreSQL LSN "X/Y" (hex) into a byte position. Returns 0, or -1 for anything
   else (NULL, empty, junk, overflow). */
int replpolicy_parse_lsn(const char *s, uint64_t *lsn) __attribute__((warn_unused_result));

/* Replay lag in bytes: primary - replay, 0 when the replica is at or ahead of what the primary
   reported (the primary is sampled first, so a replica may look ahead). */
int64_t replpolicy_lag_bytes(uint64_t primary_lsn, uint64_t replay_lsn)
    __attribute__((warn_unused_result));

/* Replay lag in seconds to report: 0 when nothing is left to replay (lag_bytes == 0, the
   primary has not written since the last replayed commit), else the age of the last replayed
   commit (replay_age_s, < 0 when unknown, then 0). */
double replpolicy_lag_seconds(int64_t lag_bytes, double replay_age_s)
    __attribute__((warn_unused_result));

struct replpolicy_replica {
    bool running;         /* compute RUNNING or PAUSED */
    bool draining;        /* leaving: no new clients */
    bool lag_known;       /* a lag measurement exists since it started */
    int64_t lag_bytes;    /* last measured */
    int64_t max_lag;      /* max_replica_lag (bytes) */
    bool replay_paused;   /* pg_is_wal_replay_paused() */
    bool primary_running; /* the primary runs (replicas never outlive it) */
};

/* Read-your-writes (issue 6): whether a replica whose last measured replay position is
   replay_lsn (known: a measurement exists) may serve a reader that must see need_lsn (0 = no
   such need; UINT64_MAX = only the primary may). */
bool replpolicy_replayed(uint64_t need_lsn, bool known, uint64_t replay_lsn)
    __attribute__((warn_unused_result));

/* Whether the replica may take new readers; *why (may be NULL) gets "" or a static reason:
   "not running", "draining", "primary not running", "lag unknown", "lagging",
   "replay paused" (only when also behind). */
bool replpolicy_in_rotation(const struct replpolicy_replica *r, const char **why)
    __attribute__((warn_unused_result));
