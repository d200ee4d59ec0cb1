/*
 * pool: server connections for one (database, user), and the clients waiting for one.
 * Servers sit in one list per situation (opening, idle, in use); a client asks for a server,
 * gets an idle one at once, or waits in FIFO order while a new one is opened (up to pool_size)
 * or one is returned. query_wait_timeout bounds the wait.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "pgtide/list.h"
#include "pgtide/secret.h"

struct proxy;
struct client;
struct server;
struct compute;

struct pool {
    struct list_node node; /* proxy->pools */
    struct proxy *proxy;
    struct compute *compute; /* where its servers connect: the primary or a replica */
    char *database, *user;
    struct list_node opening; /* CONNECTING .. LOGIN */
    struct list_node idle;    /* IDLE */
    struct list_node used;    /* SETUP, ACTIVE, RESET */
    struct list_node waiting; /* clients (wait_node) */
    int nservers;
    int pool_mode; /* enum config_pool_mode for this database/user */
    /* reported parameters of its first server: welcome clients without a server (pooling) */
    struct {
        char *name, *value;
    } params[48];
    int nparams;
    /* Credentials for logging in to a static server as this user, learnt from a client's
       SCRAM exchange (ClientKey) and the verifier that checked it. */
    bool has_client_key;
    uint8_t client_key[32];
    struct scram_keys client_keys;
    /* SHOW POOLS / STATS counters */
    uint64_t queries, xacts, wait_us, bytes_recv, bytes_sent;
    int64_t max_wait_start_ms;
    /* read-your-writes (issue 6, ryw.h), in the primary's pool of (database, user): the WAL
       position its readers' replicas must have replayed; 0 = none, RYW_LSN_UNKNOWN = primary */
    uint64_t ryw_lsn;
    struct hub_slot *slot; /* with worker threads: pool_size is shared with theirs (hub.h) */
    bool yielding;         /* closing a server for another worker: do not take its room back */
};

struct hub_slot;

/* Finds or creates the primary's pool for (database, user). NULL when out of memory. */
struct pool *pool_get(struct proxy *p, const char *database, const char *user);

/* The same for any compute (a replica's pools for the reader endpoint). */
struct pool *pool_get_for(struct proxy *p, struct compute *compute, const char *database,
                          const char *user);

/* Closes every server of every pool of compute (it failed or stopped), with sqlstate/msg as
   what their clients are told. */
void pool_close_compute(struct proxy *p, struct compute *compute, const char *sqlstate,
                        const char *msg, const char *reason);

/* Sessions (clients holding a server) on compute's pools, and requests in flight there. */
int pool_sessions_on(const struct proxy *p, const struct compute *compute, int *in_flight);

/* Keeps the reported parameters of the pool's first server (to welcome clients without one). */
void pool_learn_params(struct pool *pool, const struct server *s);

/* A client wants a server: attached at once, or queued. */
void pool_request(struct pool *pool, struct client *c);

/* A client stops waiting (left, timed out). */
void pool_cancel_wait(struct pool *pool, struct client *c);

/* A waiting client is closing: a server of the pool still sending its settings (SETUP, assigned
   but not attached yet) forgets it, finishes its SET and goes back to the pool. */
void pool_forget_setup(struct pool *pool, struct client *c);

/* Puts an idle server in the idle list: at the head (reused next) by default, at the tail with
   server_round_robin. The coldest idle server is the one idle longest (NULL: none idle). */
void pool_idle_add(struct pool *pool, struct server *s);
struct server *pool_idle_coldest(struct pool *pool);

/* A server became IDLE (login done, reset done): serve the first waiter or park it idle. */
void pool_server_idle(struct pool *pool, struct server *s);

/* A server closed: forget it; open a replacement if clients wait. */
void pool_server_gone(struct pool *pool, struct server *s);

/* An idle server handed over by another worker joins this pool (its room already counted here)
   and serves the first waiter. */
void pool_server_adopted(struct pool *pool, struct server *s);

/* A server failed to log in: clients waiting on this pool get the server's error. */
void pool_login_failed(struct pool *pool, const char *sqlstate, const char *msg);

/* Closes idle servers past server_idle_timeout or server_lifetime. Called periodically. */
void pool_maintain(struct pool *pool, int64_t now_ms);

/* Closes every idle server of every pool (before a suspend). */
void pool_close_idle_all(struct proxy *p);

/* Counts for SHOW POOLS. */
int pool_count_clients(const struct pool *pool, int state);

/* A pool over every worker (SHOW POOLS, STATS, DATABASES): each worker keeps its own pool of
   the same (compute, database, user). Home, with the workers stopped. */
struct pool_sum {
    int nservers, used, idle, opening, cl_active, cl_waiting;
    int64_t oldest_wait_ms;
    uint64_t queries, xacts, wait_us, bytes_recv, bytes_sent;
};
void pool_sum(const struct proxy *home, const struct pool *pool, struct pool_sum *out);

/* A walk over every pool of every proxy, home first (home, with the workers stopped).
   pool_walk_next gives NULL at the end; w->proxy is the proxy of the pool it gave. */
struct pool_walk {
    const struct proxy *home, *proxy;
    int k;
    const struct list_node *it;
};
void pool_walk_begin(struct pool_walk *w, const struct proxy *home);
struct pool *pool_walk_next(struct pool_walk *w);

/* True when the walk meets a pool of pool's key before pool itself (it was reported already). */
bool pool_seen_before(const struct proxy *home, const struct pool *pool);

/* A server of the pool closed: its room goes back to the workers' shared count. */
void pool_room_give(struct pool *pool);

/* Hub messages (a worker's own thread): room was freed elsewhere, so waiting clients may get a
   server (HUB_POOLS); another worker waits at pool_size, so idle servers beyond this worker's
   share close (HUB_TRIM). */
void pool_kick_all(struct proxy *p);
void pool_trim_for_others(struct proxy *p);
