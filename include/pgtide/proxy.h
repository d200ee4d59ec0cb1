/*
 * proxy: the data plane's context. It owns the listeners, every client and server connection,
 * the pools, the cancel-key table, the held-client list (clients waiting for a compute) and the
 * statistics, and it is the one place where the data plane meets the control plane: it asks the
 * primary compute to wake, hears back through the compute's state hook, and tells the idle
 * policy how busy it is. Nothing here blocks.
 */
#pragma once

#include <ev.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "pgtide/list.h"

struct config;
struct store;
struct compute;
struct client;
struct hba;
struct userlist;
struct authdb;
struct account;
struct metrics;
struct backupctl;
struct txn_registry;
struct txn_intern;
struct replicaset;
struct conn;
struct ryw;
struct hub;
struct hub_msg;

#define PROXY_MAX_LISTENERS  16
#define PROXY_CANCEL_BUCKETS 4096

struct listener {
    ev_io io;
    int fd;
    bool is_unix;
    bool reader;    /* the reader endpoint (read_port): clients go to replicas */
    char path[108]; /* unix socket path, removed at exit */
    struct proxy *proxy;
};

/* Totals for SHOW STATS (since start). */
struct proxy_stats {
    uint64_t queries, xacts;         /* ReadyForQuery count; ReadyForQuery 'I' count */
    uint64_t bytes_recv, bytes_sent; /* from clients; to clients */
    uint64_t query_time_us, xact_time_us;
    uint64_t wait_time_us; /* time clients waited for a compute or a server */
    uint64_t clients_total, servers_total, auth_failures;
};

struct proxy {
    struct ev_loop *loop;
    struct config *cfg; /* current snapshot; a reference is held */
    struct store *store;
    struct compute *primary;
    SSL_CTX *tls_server; /* toward clients; NULL when client_tls_sslmode = disable */
    SSL_CTX *tls_client; /* toward TCP backends; NULL when server_tls_sslmode = disable */
    struct hba *hba;     /* NULL: auth_type applies to everyone */
    struct userlist *auth_file;
    struct authdb *authdb;

    struct listener listeners[PROXY_MAX_LISTENERS];
    int nlisteners;

    struct list_node clients; /* every client connection */
    struct list_node held;    /* clients waiting for the compute to run */
    struct list_node pools;
    int nclients;
    uint64_t next_client_id, next_server_id;
    struct client *cancel_table[PROXY_CANCEL_BUCKETS];
    struct list_node dead_clients, dead_servers; /* closed this iteration, freed by reaper */
    struct list_node handing; /* servers handed to other workers, posted at the iteration's end */
    ev_check reaper;
    struct list_node ready;        /* connections readable this iteration, in readiness order */
    ev_check drain;                /* reads them after every other callback of the iteration */
    uint8_t mock_key[32];          /* keeps SCRAM fake salts of unknown users stable */
    struct txn_registry *registry; /* prepared statement texts (transaction pooling) */
    struct txn_intern *interned;   /* parameter names and values, kept once */
    struct replicaset *replicas;   /* read replicas (issue 6), set by main; NULL when none */
    int read_port;                 /* the reader endpoint's port as opened, 0 = none */

    struct proxy_stats stats;
    int64_t last_activity_ms; /* wall-clock ms of the last client message or result */
    bool paused;              /* admin PAUSE: hold new queries */
    int parking;              /* session snapshots outstanding in a parking round */
    bool park_failed;         /* a session of this round could not be parked */
    bool park_ending;         /* its last snapshot is in; home has yet to end it (HUB_PARKED) */
    uint64_t suspend_waiter;  /* admin client waiting for the round's outcome (0: none) */
    char park_reason[192];    /* why the last round failed */
    bool shutting_down;
    int64_t started_ms;
    ev_timer idle_timer; /* drives the idle policy */
    /* main's hooks for the admin console's SHUTDOWN and RELOAD (and SIGTERM/SIGHUP) */
    void (*on_shutdown)(struct proxy *p, bool fast);
    int (*on_reload)(struct proxy *p, char *err, size_t errlen);
    void *on_shutdown_arg; /* main's context for the hooks */
    /* usage accounting and metrics (issue 5), set by main; NULL when absent or off */
    struct account *account;   /* SHOW USAGE */
    struct metrics *metrics;   /* wait-time histogram, Prometheus endpoint */
    struct backupctl *backups; /* backups (issue 7), set by main; NULL when off (static) */
    struct ryw *ryw;           /* read-your-writes (issue 6): created at its first use */

    /* worker threads (issue 4, hub.h); hub NULL: this proxy is the whole data plane */
    struct hub *hub;
    int worker;           /* 0: the main thread's proxy (home); 1..n: a worker */
    struct proxy *home;   /* the main thread's proxy (itself for home) */
    ev_async inbox_async; /* hub_post() wakes this proxy's loop */
    ev_async stw_async;   /* hub_stw_begin() parks this worker */
    int pub_active, pub_unparkable, pub_held; /* last idle tick's measure, read by home */
    int64_t last_maintain_ms, last_trim_ms;
    unsigned next_unix_worker; /* home: the worker that gets the next unix-socket client */
    int clients_all;           /* home: clients of every proxy, for max_client_conn (atomic) */
};

/* Builds the context: TLS contexts (a self-signed certificate in DATA when none is configured),
   hba and auth_file. The proxy takes a reference on cfg. NULL + err on failure. */
struct proxy *proxy_new(struct ev_loop *loop, struct config *cfg, struct store *store,
                        struct compute *primary, char *err, size_t errlen);

/* A worker's proxy (hub.c): shares home's configuration, storage, computes, TLS contexts and
   control-plane objects; has its own loop, listeners, clients, pools, cancel keys and auth
   cache. NULL + err on failure. */
struct proxy *proxy_new_worker(struct proxy *home, struct ev_loop *loop, int worker, char *err,
                               size_t errlen);

/* Handles a hub message on this proxy's own thread. */
void proxy_handle_msg(struct proxy *p, struct hub_msg *m);

/* Every proxy of the data plane, home first: proxy_count(home) is 1 without a hub. On the
   main thread, workers may be read or changed only inside hub_stw_begin/end. */
int proxy_count(const struct proxy *home);
struct proxy *proxy_nth(const struct proxy *home, int i);

/* SHOW STATS totals of every proxy (workers stopped). */
void proxy_sum_stats(const struct proxy *home, struct proxy_stats *st);

/* Client and server ids, unique across workers. */
uint64_t proxy_next_client_id(struct proxy *p);
uint64_t proxy_next_server_id(struct proxy *p);

/* Opens the listeners and starts accepting: without a hub TCP and unix sockets; home with a
   hub only the unix sockets (their clients are handed to the workers); a worker the TCP
   ports with SO_REUSEPORT. 0 or -1 + err. */
int proxy_listen(struct proxy *p, char *err, size_t errlen);

/* Swaps in a new configuration snapshot (already validated; not-reloadable keys already kept).
   Reloads hba and auth_file; keeps the old ones if the new ones do not parse. On home, every
   worker too. */
void proxy_reload(struct proxy *p, struct config *cfg);

/* Stops accepting. fast: closes every client now with 57P01. Otherwise clients are told nothing
   and the caller waits for proxy_idle(). On home these cover every worker. */
void proxy_stop_accepting(struct proxy *p);
void proxy_close_all(struct proxy *p, const char *reason);

/* True when no client is connected (on home: to any worker). */
bool proxy_idle(const struct proxy *p);

/* Frees everything (clients must be gone). */
void proxy_free(struct proxy *p);

/* Called by the compute's state hook (wired in main). */
void proxy_compute_changed(struct proxy *p, int from, int to);

/* A replica's state changed (wired in main): its servers go when it fails or stops. */
void proxy_replica_changed(struct proxy *p, struct compute *c, int from, int to);

/* Cancel keys: register/unregister a client's proxy-issued key; look one up. */
void proxy_cancel_add(struct proxy *p, struct client *c);
void proxy_cancel_del(struct proxy *p, struct client *c);
struct client *proxy_cancel_find(struct proxy *p, uint32_t pid, uint32_t key);

/* A client or server connection is readable: its read is done at the end of this loop
   iteration, in the order the kernel reported readiness (libev calls back in reverse order,
   which served the connection that waited longest last). */
void proxy_defer_read(struct proxy *p, struct conn *c);

/* Wall-clock milliseconds. */
int64_t proxy_now_ms(void);

/* Notes client activity (for the idle policy). */
void proxy_touch(struct proxy *p);

/* Re-arms the idle-policy timer (after activity ends, or a setting changes). */
void proxy_idle_check(struct proxy *p);
