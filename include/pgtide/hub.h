/*
 * hub: the data plane's worker threads (issue 4, `workers`). With workers = 1 (the default below
 * 4 CPUs) there is no hub and the main loop's proxy serves everything, as it always did. With
 * N > 1 the main thread keeps the control plane (computes, replicas, backups, the ledger), the
 * admin console and the unix socket; N worker threads each run their own libev loop and proxy, with
 * SO_REUSEPORT listeners on the TCP ports, their own clients, servers and cancel keys. Pools are
 * partitioned: each worker has its own servers, and pool_size caps their sum (hub slots); an idle
 * server another worker waits for moves to it as it is (HUB_SERVER), with its backend.
 *
 * Three ways across threads, and no others:
 *  - the control-plane lock: the main loop holds it while it runs callbacks (released around
 *    its poll); a worker takes it with hub_lock() to call into the control plane (compute_wake,
 *    the replica set). A worker never waits for the main thread while holding anything else.
 *  - messages: hub_post() queues a message for one proxy; its own thread handles it.
 *  - stop-the-world: the main thread parks every worker at its loop's edge (hub_stw_begin) to
 *    read or change their state (admin console, metrics, parking rounds, reload).
 */
#pragma once

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct proxy;
struct compute;
struct hub;
struct server;
struct hub_slot;
struct authdb_set;

#define HUB_MAX_WORKERS 31 /* worker i is bit i of a 32-bit mask */

enum hub_msg_kind {
    HUB_ADOPT,   /* a client connection moves to this proxy (admin console, unix socket) */
    HUB_CANCEL,  /* a CancelRequest whose key another proxy issued */
    HUB_COMPUTE, /* the primary changed state */
    HUB_REPLICA, /* a replica changed state */
    HUB_POOLS,   /* pool room was freed: waiting clients may get a server now */
    HUB_TRIM,    /* another worker waits at pool_size: give back idle servers */
    HUB_SERVER,  /* an idle server connection moves to this proxy's pool (hub slot .slot) */
    HUB_AUTH,    /* auth_query found a secret (.user, .secret): home keeps it, passes it on */
    HUB_AUTHSET, /* home's auth cache after its refresh (.authset, NULL: the refresh failed) */
    HUB_PARKED,  /* home: the parking round's last snapshot is in */
    HUB_STOP,    /* leave the loop (shutdown) */
};

/* A connection handed over, with what was already read from it (a startup packet). */
struct hub_conn {
    int fd;
    SSL *ssl; /* TLS already established, or NULL */
    bool is_unix, reader;
    struct sockaddr_storage addr;
    socklen_t alen;
    uint8_t *data; /* malloc'd bytes to process first (the startup packet), or NULL */
    uint32_t len;
};

struct hub_msg {
    enum hub_msg_kind kind;
    int from, to;            /* compute states (HUB_COMPUTE, HUB_REPLICA) */
    struct compute *compute; /* HUB_REPLICA */
    uint32_t cancel_pid, cancel_key;
    struct hub_conn conn;  /* HUB_ADOPT */
    struct server *server; /* HUB_SERVER: idle, off every loop and list; the receiver's now */
    struct hub_slot *slot; /* HUB_SERVER: the (compute, database, user) it serves */
    char *user, *secret;   /* HUB_AUTH: malloc'd, the receiver's; .from = the worker that asked */
    struct authdb_set *authset; /* HUB_AUTHSET: the receiver's */
};

/* A pool's share of pool_size across workers: the servers open for (compute, database, user)
   in every worker, and which workers wait for room (bit i: worker i). */
struct hub_slot {
    struct hub_slot *next;
    const struct compute *compute;
    char *database, *user;
    int open;                               /* sum of per[] (under the hub's table lock) */
    int per[HUB_MAX_WORKERS + 1];           /* servers open per worker (read without the lock) */
    uint32_t demand;                        /* workers waiting for room (atomic) */
    int64_t demand_ms[HUB_MAX_WORKERS + 1]; /* since when each has waited (atomic) */
};

/* A worker with waiters of its own keeps its servers unless it holds more than one above a
   waiting worker, or holds some while that one, holding none, has waited this long (then the
   servers take turns: at most one handover per this interval under constant contention). */
#define HUB_STARVE_MS 100
/* An idle server goes at once to a waiting worker that has none, and to one that has some once
   it has waited this long (a server its own clients would take again at once is not handed round
   for nothing); the workers' idle tick looks again every 100 ms. */
#define HUB_IDLE_YIELD_MS 20

/* Marks the calling thread as the main thread (once, before any hub exists). */
void hub_main_thread(void);
bool hub_on_main(void);

/* Creates n worker proxies beside home (the main loop's proxy), each with its own loop and
   listeners (proxy_new_worker), not yet running. NULL + err on failure. */
struct hub *hub_new(struct proxy *home, int n, char *err, size_t errlen);

/* Starts the worker threads. From here on the main thread holds the control-plane lock,
   except while its loop polls. 0 or -1 + err. */
int hub_run(struct hub *h, char *err, size_t errlen);

/* Stops every worker (their clients must be gone or are closed), joins and frees them. */
void hub_stop(struct hub *h);

/* Workers (1..n); hub_worker(h, 0) is home. */
int hub_size(const struct hub *h);
struct proxy *hub_worker(const struct hub *h, int i);

/* The control-plane lock, for a worker about to call into the main thread's objects. No-op on
   the main thread and without a hub. Nests. */
void hub_lock(const struct proxy *p);
void hub_unlock(const struct proxy *p);

/* The same without waking the main loop: for a frequent call that seldom starts anything there
   (a watcher it did start is seen at the main loop's next wake-up, at most its 100 ms tick). */
void hub_unlock_quiet(const struct proxy *p);

/* Main thread only: every worker waits at a safe point until hub_stw_end. Nests. */
void hub_stw_begin(struct hub *h);
void hub_stw_end(struct hub *h);

/* Queues m for proxy `to` (its thread handles it at its next loop iteration). The message's
   connection, if any, belongs to the receiver from here on. */
void hub_post(struct proxy *to, const struct hub_msg *m);

/* Posts m to every worker except `except` (NULL: all). */
void hub_broadcast(struct hub *h, const struct proxy *except, const struct hub_msg *m);

/* Pool room shared by the workers (see struct hub_slot). take: true when the worker may open
   one more server; else its demand is noted and the others are asked to trim (HUB_TRIM). give:
   one of its servers closed; the waiting workers are told (HUB_POOLS). satisfied: it waits no
   more. yield_to: the waiting worker that a server this one is done with should go to rather
   than idle here (this one has no waiters, or holds more than its share: HUB_STARVE_MS), or -1.
   move: one server of `from` now counts as `to`'s (handed over with HUB_SERVER); `to` waits
   no more until it says so again. try: take, but without waiting or asking anyone to trim (for
   servers nobody waits for: min_pool_size). open: the servers open in all workers together. */
struct hub_slot *hub_slot_get(struct hub *h, const struct compute *c, const char *database,
                              const char *user);
bool hub_slot_take(struct hub *h, struct hub_slot *s, int worker, int limit);
bool hub_slot_try(struct hub *h, struct hub_slot *s, int worker, int limit);
int hub_slot_open(const struct hub_slot *s);
void hub_slot_give(struct hub *h, struct hub_slot *s, int worker);
void hub_slot_satisfied(struct hub_slot *s, int worker);
void hub_slot_want(struct hub *h, struct hub_slot *s, int worker);
int hub_slot_yield_to(const struct hub_slot *s, int worker, bool local_waiters, int64_t now_ms);
void hub_slot_move(struct hub *h, struct hub_slot *s, int from, int to);

/* read-your-writes across workers: each worker mirrors its primary pool's causal LSN of
   (database, user) here; a reader needs the newest of them (RYW_LSN_UNKNOWN if any is). */
void hub_ryw_note(struct hub *h, int worker, const char *database, const char *user, uint64_t lsn);
uint64_t hub_ryw_get(struct hub *h, const char *database, const char *user);

/* Default worker count: half the CPUs this process may run on, and one loop (no threads) below
   4 CPUs. */
int hub_default_workers(void);
