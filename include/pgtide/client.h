/*
 * client: one client connection, from accept to close. Its life is an explicit state machine
 * (client_set_state is the only place the state changes; it keeps list membership in step):
 *
 *   TLS <-> STARTUP -> LOOKUP -> AUTH -> HELD -> WAITING -> ACTIVE -> (close)
 *              \_____ trust/cert ____/  \-> ADMIN  ^        ^          |
 *                                         \-> IDLE -+--------+--------<-+
 *
 * STARTUP reads startup-phase packets (SSLRequest, GSSENCRequest, CancelRequest,
 * StartupMessage); LOOKUP waits for the user's secret; AUTH runs the password exchange; HELD
 * waits for the compute to run; WAITING waits for a server connection from the pool; ACTIVE
 * relays to and from its server; ADMIN is a console session; IDLE is a session without a server
 * connection and nothing in flight: between transactions in transaction pooling, or parked before
 * a suspend (its state then kept as a snapshot, see park.h). It gets a server on its next message.
 */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "pgtide/list.h"
#include "pgtide/pkt.h"
#include "pgtide/relay.h"
#include "pgtide/scram.h"
#include "pgtide/secret.h"
#include "pgtide/txn.h"

struct proxy;
struct pool;
struct server;
struct listener;
struct authdb_req;
struct park_item;

enum client_state {
    CLIENT_TLS,
    CLIENT_STARTUP,
    CLIENT_LOOKUP,
    CLIENT_AUTH,
    CLIENT_HELD,
    CLIENT_WAITING,
    CLIENT_ACTIVE,
    CLIENT_ADMIN,
    CLIENT_IDLE,
    CLIENT_CLOSING
};

enum client_auth_step { AUTH_NONE, AUTH_SASL_INITIAL, AUTH_SASL_FINAL, AUTH_MD5, AUTH_PASSWORD };

/* What a password exchange needs; allocated for it and freed when it ends. */
struct client_auth {
    bool user_known;
    struct secret secret;
    struct scram_server scram;
    uint8_t md5_salt[4];
    uint8_t client_key[32];
    bool has_client_key;
};

#define CLIENT_MAX_PARAMS 32
#define CLIENT_MAX_CUSTOM 16

struct client {
    struct list_node node;      /* proxy->clients */
    struct list_node wait_node; /* proxy->held or pool->waiting */
    struct proxy *proxy;
    uint64_t id;
    enum client_state state;
    struct conn conn;
    ev_timer timer;                 /* authentication_timeout, wake_timeout, query_wait_timeout */
    struct pkt_builder out_builder; /* pgtide's own messages, written before relayed bytes */
    size_t out_off;                 /* bytes of out_builder already written */
    bool close_pending;             /* close once out_builder is written (after a FATAL) */
    struct authdb_req *lookup;      /* pending secret lookup (LOOKUP) */

    bool is_unix, is_tls;
    struct sockaddr_storage addr;
    char addr_text[64];

    char *user, *database;
    struct client_param *params; /* startup parameters (options split out) */
    int nparams, params_cap;
    struct client_param *opts; /* startup settings not reported by servers:
                                                    options=-c x=y and non-reported names */
    int nopts, opts_cap;
    struct client_param *ps; /* reported parameters as the client saw them */
    int nps, ps_cap;
    uint64_t ps_sig;        /* txn_param_sig over ps, XORed: equal to a server's = nothing to SET */
    uint64_t opts_sig;      /* the same over opts */
    int pool_mode;          /* enum config_pool_mode of its pool */
    struct txn_names names; /* transaction pooling: its prepared statement names */
    uint32_t copy_left;     /* transaction pooling: bytes of a large message still to copy */
    bool copy_drop;         /* ... and they are dropped, not copied */
    bool skip_sync;         /* a request failed in pgtide: drop messages up to the Sync */

    enum client_auth_step auth_step;
    int auth_method;          /* enum hba_method */
    struct client_auth *auth; /* only while authenticating: an idle client holds none */

    struct pool *pool;
    struct server *server;
    bool welcomed; /* AuthenticationOk .. ReadyForQuery sent */
    bool admin;
    bool reader; /* reader endpoint or options=-c pgtide.route=replica: served by replicas */
    char txn;    /* last ReadyForQuery status seen by the client: 'I', 'T', 'E' */
    bool busy;   /* a request was forwarded and its ReadyForQuery has not come back */

    struct park_item *parked; /* snapshot of a parked session (IDLE, and during replay) */
    char park_blocker[128];   /* why the last snapshot could not park it; "" = parkable */
    char (*custom)[64];       /* custom settings it SET (not in pg_settings); NULL until one is */
    int ncustom;
    char lost_code[6]; /* its server was lost while it waited for nothing: the error */
    char *lost_msg;    /* it gets at its next message */

    uint32_t cancel_pid, cancel_key;
    struct client *cancel_next;

    int64_t connect_ms, state_since_ms, request_ms, wait_start_ms;
    uint64_t queries, bytes_recv, bytes_sent;
    const char *close_reason;
};

/* Takes an accepted descriptor. Returns NULL (descriptor closed) when out of memory. */
struct client *client_accept(struct proxy *p, struct listener *l, int fd,
                             const struct sockaddr *addr, socklen_t alen);

/* The transition table: true when from -> to is allowed (CLOSING is reachable from every
   state; nothing leaves CLOSING). */
bool client_state_legal(enum client_state from, enum client_state to);

/* The one state transition function. */
void client_set_state(struct client *c, enum client_state to);
const char *client_state_name(enum client_state s);

/* Sends an ErrorResponse (FATAL) with sqlstate and message, then closes the connection once it
   is written (or at once if the socket is broken). */
void client_fatal(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Closes now. */
void client_close(struct client *c, const char *reason);

/* The compute is running: HELD -> WAITING (asks the pool). */
void client_compute_ready(struct client *c);

/* A reader WAITING on a replica's pool whose login failed: asks again (another replica in
   rotation, else the primary) and returns true. Other clients are left alone (false). */
bool client_reroute(struct client *c);

/* The session's server connection was given up after a snapshot: ACTIVE -> IDLE. */
void client_park(struct client *c);

/* The pool gives a server (already logged in and set up for this client): -> ACTIVE. */
void client_attach_server(struct client *c, struct server *s);

/* The server under an ACTIVE client is gone (crash, kill): error to the client, close. */
/* idle: nothing was in flight (the error is then given when the client next speaks). */
void client_server_lost(struct client *c, const char *sqlstate, const char *msg, bool idle);

/* Relay: forwards what the client sent to its server (on client readable, server writable). */
void client_pump(struct client *c);
/* Admin console: handles the complete messages buffered (stops while a SUSPEND it asked for
   is pending). */
void client_pump_admin(struct client *c);

/* Bytes wait for the client's socket: arm its write watcher. */
void client_want_write(struct client *c);

/* Frees a closed client (called by the proxy after the loop iteration that closed it). */
void client_free(struct client *c);

/* Log prefix "C-<id> db/user@addr". */
const char *client_tag(const struct client *c, char *buf, size_t len);

/* Queues an ErrorResponse or NoticeResponse (not fatal) built by the caller into c->out. */
int client_queue(struct client *c, const void *data, size_t len);
void client_flush_out(struct client *c);
