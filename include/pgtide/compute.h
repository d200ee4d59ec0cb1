/*
 * compute: one PostgreSQL server process tree and its lifecycle (DESIGN.md §3). The local provider
 * forks `postgres` over a data directory of the store, as the compute owner, listening only on the
 * private socket directory DATA/run; it probes readiness with non-blocking libpq, watches the
 * postmaster with ev_child, freezes the tree for "paused" (cgroup freezer, else SIGSTOP) and stops
 * it with a fast shutdown for "suspended". The static provider fronts a server pgtide does not
 * manage and is always running. State changes are reported through a hook.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "pgtide/config.h"
#include "pgtide/store.h"

enum compute_state {
    COMPUTE_SUSPENDED,
    COMPUTE_STARTING,
    COMPUTE_RUNNING,
    COMPUTE_PAUSED,
    COMPUTE_SUSPENDING,
    COMPUTE_FAILED
};

enum compute_role { COMPUTE_PRIMARY, COMPUTE_REPLICA };

struct compute;

struct compute_hooks {
    /* Called after every transition (from != to), from inside the compute call or loop callback
       that caused it (compute_wake on a paused compute reports RUNNING before it returns). The
       proxy: RUNNING -> release held clients; FAILED -> error out clients with queries in
       flight. The hook must not free the compute. May be NULL. */
    void (*state_changed)(void *arg, struct compute *c, enum compute_state from,
                          enum compute_state to);
    void *arg;
};

/* Creates a compute in state SUSPENDED (local provider) or RUNNING (static provider, when
   cfg->compute_provider == PROVIDER_STATIC). loop must be the default loop (ev_child needs it).
   cfg and st (NULL for static) must outlive the compute; hooks is copied (may be NULL). The
   local primary runs DATA/primary on port 5432; a replica runs DATA/replicas/0 on port 5433
   (building that directory is not this module's job). Finds the bindir (cfg->pg_bindir, else
   pg_config), which may block briefly. Returns NULL (logged) on failure. */
struct compute *compute_new(struct ev_loop *loop, const struct config *cfg, struct store *st,
                            enum compute_role role, const struct compute_hooks *hooks)
    __attribute__((warn_unused_result));

/* ---- read replicas (issue 6) --------------------------------------------------------------- */

#define COMPUTE_MAX_REPLICAS 16

/* Like compute_new for replica N (0 <= index < COMPUTE_MAX_REPLICAS): DATA/replicas/N on private
   port 5433+N, logging to DATA/log/replica-N.log (building the directory is replica.c's job).
   Returns NULL for a bad index or on failure. */
struct compute *compute_new_replica(struct ev_loop *loop, const struct config *cfg,
                                    struct store *st, int index, const struct compute_hooks *hooks)
    __attribute__((warn_unused_result));

/* The replica index N (0 for the primary). */
int compute_index(const struct compute *c) __attribute__((warn_unused_result));

/* Frees the compute. It should be SUSPENDED, FAILED or static; otherwise it is first stopped
   with compute_stop_blocking (and a warning logged). NULL is ignored. */
void compute_free(struct compute *c);

/* Replaces the configuration snapshot after a reload (the caller keeps cfg alive). New timeouts
   and compute_units apply from the next start or stop (a running compute is resized live by
   the autoscale driver). A start runs at compute_units (replica_units for a replica), kept
   within min_cu..max_cu when min_cu < max_cu; where the cgroup cpu controller is writable the
   postmaster joins a CPU quota group of that size before exec (see cgroup.h). */
void compute_set_config(struct compute *c, const struct config *cfg);

/* Demand. SUSPENDED/FAILED -> STARTING (asynchronous start, then RUNNING or FAILED from the
   loop); PAUSED -> RUNNING synchronously (thaw); SUSPENDING -> remembered, the compute starts
   again once the stop completes; STARTING/RUNNING/static: no-op. Many calls cause one start. */
void compute_wake(struct compute *c);

/* RUNNING/PAUSED -> SUSPENDING: fast shutdown (SIGINT to the postmaster), SIGQUIT after
   compute_stop_timeout, SIGKILL to the whole tree a little later; SUSPENDED when the postmaster
   has exited. Returns 0, or -1 when the compute cannot suspend now (other states, static). */
int compute_suspend(struct compute *c) __attribute__((warn_unused_result));

/* RUNNING -> PAUSED: freezes the whole process tree with the cgroup v1 freezer or cgroup v2
   cgroup.freeze where writable, else SIGSTOP to the postmaster and every descendant. The method
   is logged and reported by compute_get_info. Returns 0, or -1 when not RUNNING or static. */
int compute_pause(struct compute *c) __attribute__((warn_unused_result));

/* When use_cgroup is false, compute_pause always uses SIGSTOP/SIGCONT (default true: cgroups are
   tried first). For hosts whose freezer misbehaves, and for tests of the signal path. */
void compute_set_use_cgroup(struct compute *c, bool use_cgroup);

/* Synchronous stop for pgtide's shutdown: thaws a paused tree, fast shutdown, escalation to
   SIGQUIT then SIGKILL, bounded by about compute_stop_timeout + 5 s. Afterwards the compute is
   SUSPENDED (or stays FAILED) and no process of it is left. No-op for static computes. */
void compute_stop_blocking(struct compute *c);

enum compute_state compute_get_state(const struct compute *c) __attribute__((warn_unused_result));

/* "suspended", "starting", "running", "paused", "suspending", "failed". */
const char *compute_state_name(enum compute_state s);

/* "primary" or "replica". */
const char *compute_role_name(enum compute_role r);

/* Endpoint of data-plane connections to this compute: for the local provider the private
   socket directory DATA/run and the compute's port; for static, static_host and static_port.
   The string lives as long as the compute. */
const char *compute_host(const struct compute *c);
int compute_port(const struct compute *c);
/* True when compute_host is a unix socket directory (starts with '/'). */
bool compute_is_unix(const struct compute *c);
bool compute_is_static(const struct compute *c);

/* For SHOW COMPUTES. Strings are static or owned by the compute. */
struct compute_info {
    const char *role;
    const char *state;
    int pid;                  /* postmaster pid, 0 when none */
    double cu;                /* size in compute units (of the running or next start) */
    int64_t started_at_ms;    /* wall clock (ms since the epoch) it last became ready, 0 = never */
    int64_t uptime_ms;        /* since it last became ready, while RUNNING or PAUSED; else 0 */
    int starts;               /* starts attempted since pgtide started */
    int64_t last_start_ms;    /* how long the last successful start took */
    int64_t state_since_ms;   /* wall clock (ms since the epoch) the current state began */
    const char *pause_method; /* "cgroup-v1-freezer", "cgroup-v2-freeze", "sigstop", "" */
    /* compute units (issue 5) */
    const char *cpu_enforcement; /* "cgroup-v1", "cgroup-v2", "none" ("" for static) */
    double cpu_limit;            /* CPU quota last written, in vCPU; 0 = none */
    const char *cpu_why;         /* "none": why the quota is not enforced ("" = not tried yet) */
};
void compute_get_info(const struct compute *c, struct compute_info *out);

/* ---- compute units and vertical scaling (issue 5) ---------------------------------------- */

/* The configuration snapshot the compute uses now (last compute_set_config). */
const struct config *compute_get_config(const struct compute *c)
    __attribute__((warn_unused_result));

/* Called by compute_resize after a size change (from != to), e.g. to record it in the usage
   ledger. The hook must not free the compute. */
typedef void (*compute_resized_fn)(void *arg, struct compute *c, double from_cu, double to_cu);

/* Installs (or clears, with NULL) the resize hook. */
void compute_set_resize_hook(struct compute *c, compute_resized_fn fn, void *arg);

/* Live vertical scaling: sets the size of a STARTING, RUNNING or PAUSED local compute to cu
   (0.25..64, a multiple of 0.25) and, where the CPU quota is enforced, writes the new quota to
   its cgroup at once. No restart, no dropped connection: the processes keep running (memory
   settings such as shared_buffers stay those of the start size). Logged; calls the resize hook
   when the size changed. Returns 0 (also when cu is already the size), or -1 when cu is invalid
   or the compute is static, suspended, suspending or failed (its next start takes its size from
   the configuration). A quota that cannot be written is logged, not an error. */
int compute_resize(struct compute *c, double cu) __attribute__((warn_unused_result));

/* Total CPU time used by the compute in microseconds: from its cgroup (cpuacct.usage, cpu.stat)
   when it has one, else the sum of utime+stime over its process tree in /proc plus what the
   postmaster's exited children used. Monotonic while the compute runs (a restart may reset it).
   Returns 0, or -1 when no process runs or nothing can be read. */
int compute_cpu_usage_us(const struct compute *c, int64_t *us) __attribute__((warn_unused_result));
