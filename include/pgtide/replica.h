/*
 * replica: the set of read replicas of the primary (DESIGN.md §5). Each replica is a compute of
 * role COMPUTE_REPLICA with index N over DATA/replicas/N on private port 5433+N, built from
 * storage (newest base backup plus archived WAL, else pg_basebackup from the primary's private
 * socket) in a child process watched with ev_child, streaming from the primary. The set measures
 * replay lag every second with non-blocking libpq, takes lagging replicas out of rotation, drains
 * replicas before it stops them, suspends them with the primary, rebuilds unusable ones, and
 * applies the pure replica autoscaling policy (replpolicy.h) or a forced count (SCALE REPLICAS).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/store.h"

struct replicaset;

struct replica_hooks {
    /* Each replica's transitions (from != to), so the proxy can drop its servers and the ledger
       can bill it. Called from loop callbacks or replicaset calls; must not free the compute. */
    void (*state_changed)(void *arg, struct compute *c, enum compute_state from,
                          enum compute_state to);
    void *arg;
};

/* Creates an empty replica set for the primary. loop must be the default loop (ev_child).
   cfg, st and primary must outlive the set; hooks is copied (may be NULL). Starts a 1 s timer
   (lag probes, drains, policy). With a static provider the set stays empty. Returns NULL
   (logged) on failure. */
struct replicaset *replicaset_new(struct ev_loop *loop, const struct config *cfg, struct store *st,
                                  struct compute *primary, const struct replica_hooks *hooks)
    __attribute__((warn_unused_result));

/* Stops every replica (blocking, at exit), kills a build in progress and frees everything.
   NULL is ignored. */
void replicaset_free(struct replicaset *rs);

/* Replaces the configuration snapshot after a reload or SET (the caller keeps cfg alive). A
   change of min_replicas or max_replicas ends a forced count set by replicaset_scale. */
void replicaset_set_config(struct replicaset *rs, const struct config *cfg);

/* Routing: a RUNNING (thawed if paused) replica, accepting clients, whose lag is under
   max_replica_lag, the one with the least load as load(arg, compute) reports (load may be NULL:
   all equal); NULL when none is ready (route to the primary). */
struct compute *replicaset_pick(struct replicaset *rs, int (*load)(void *arg, struct compute *c),
                                void *arg) __attribute__((warn_unused_result));

/* Read-your-writes (issue 6): as replicaset_pick, among replicas whose last measured replay
   position is at least need_lsn (0: any; UINT64_MAX: none). When replicas in rotation are all
   behind it, their replay positions are measured again at once (at most every 20 ms per
   replica) so that the next readers find them caught up. NULL: use the primary. */
struct compute *replicaset_pick_at(struct replicaset *rs, uint64_t need_lsn,
                                   int (*load)(void *arg, struct compute *c), void *arg)
    __attribute__((warn_unused_result));

/* The proxy reports reader demand each second: clients waiting for a reader and the longest
   wait (ms). Feeds the autoscaling policy. */
void replicaset_note_demand(struct replicaset *rs, int waiting, int64_t longest_wait_ms);

/* SCALE REPLICAS n: sets a forced count (0..16) until the next change of min_replicas or
   max_replicas or the next SCALE REPLICAS; builds/starts or drains/stops replicas to reach it
   (asynchronously). Returns 0, or -1 with a message in err (n out of range, static provider). */
int replicaset_scale(struct replicaset *rs, int n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The primary's state changed (called from main's compute hook): replicas never outlive it —
   they are suspended with it and come back (when the policy wants them) after it runs again. */
void replicaset_primary_changed(struct replicaset *rs, enum compute_state from,
                                enum compute_state to);

/* Draining: whether replica c still takes new clients (false while draining or unknown). */
bool replicaset_accepts(const struct replicaset *rs, const struct compute *c)
    __attribute__((warn_unused_result));

/* The proxy tells how many sessions still use replica c; while draining, 0 lets it stop. */
void replicaset_note_sessions(struct replicaset *rs, struct compute *c, int sessions);

/* The proxy could not log in to replica c (its postmaster may be gone before its exit is
   reaped): c leaves rotation until its next successful lag probe or state change. */
void replicaset_note_unreachable(struct replicaset *rs, struct compute *c);

/* For SHOW COMPUTES: number of replica slots (built, building or running). */
int replicaset_count(const struct replicaset *rs) __attribute__((warn_unused_result));

struct replica_info {
    struct compute *compute; /* NULL while the first build of that slot runs */
    int index;               /* N of DATA/replicas/N, port 5433+N */
    int64_t lag_bytes;       /* last measured replay lag in bytes, -1 = unknown */
    double lag_seconds;      /* replay lag in seconds (0 when the primary wrote nothing since) */
    bool in_rotation;        /* replicaset_pick may choose it */
    const char *why_not;     /* static string: "" when in rotation, else e.g. "lagging" */
    int64_t build_ms;        /* duration of its last build, 0 = none yet */
};

/* Fills out for replica slot i (0 <= i < replicaset_count). Returns false when i is out of
   range. */
bool replicaset_info(const struct replicaset *rs, int i, struct replica_info *out)
    __attribute__((warn_unused_result));
