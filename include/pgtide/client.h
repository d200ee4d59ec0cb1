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
#include <netinet/in.h>
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

/* pgtide's own messages to a client (login, errors, the console's results), written before
   relayed bytes: allocated when one is queued, freed once all is written. */
struct client_out {
    struct pkt_builder b;
    size_t off; /* bytes already written */
};

/* A TCP peer's address (a unix-socket peer has none). */
union client_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

/* What every connected client holds, idle or not: fields needed only while authenticating live
   in client_auth, buffers are taken only while bytes are in flight, and parameter lists and
   names are shared with other clients (txn_pset). Keep it within 512 bytes (a jemalloc size
   class; 10,000 idle clients cost 5 MB): regress/unit/test_idle.c checks the size. */
struct client {
    struct list_node node;      /* proxy->clients */
    struct list_node wait_node; /* proxy->held or pool->waiting */
    struct proxy *proxy;
    uint64_t id;
    struct conn conn;          /* conn.bytes_in: bytes received */
    ev_timer timer;            /* authentication_timeout, wake_timeout, query_wait_timeout */
    struct client_out *out;    /* pgtide's own messages to it; NULL when none wait */
    struct authdb_req *lookup; /* pending secret lookup (LOOKUP) */
    enum client_state state;
    union client_addr addr; /* its text is made when a log line or SHOW CLIENTS needs it */

    const char *user, *database;   /* shared copies (txn_str_get) */
    const struct txn_pset *params; /* startup parameters servers report (application_name, ...) */
    const struct txn_pset *opts;   /* startup settings not reported by servers:
                                      options=-c x=y and non-reported names */
    const struct txn_pset *ps;     /* reported parameters as the client saw them */
    struct txn_names names;        /* transaction pooling: its prepared statement names */
    uint32_t copy_left;            /* transaction pooling: bytes of a large message still to copy */
    enum client_auth_step auth_step;
    struct client_auth *auth; /* only while authenticating: an idle client holds none */

    struct pool *pool;
    struct server *server;
    struct park_item *parked; /* snapshot of a parked session (IDLE, and during replay) */
    char *park_blocker;       /* why the last snapshot could not park it; NULL = parkable */
    char (*custom)[64];       /* custom settings it SET (not in pg_settings); NULL until one is */
    char *lost;               /* its server was lost while it waited for nothing: the error it
                                 gets at its next message, "SQLSTATE\0message" */

    uint32_t cancel_pid, cancel_key;
    struct client *cancel_next;

    int64_t connect_ms, request_ms, wait_start_ms;
    uint64_t queries, bytes_sent;
    const char *close_reason;

    int ncustom;
    uint8_t auth_method; /* enum hba_method */
    uint8_t pool_mode;   /* enum config_pool_mode of its pool */
    bool close_pending;  /* close once out is written (after a FATAL) */
    bool is_unix, is_tls;
    bool copy_drop; /* transaction pooling: the rest of a large message is dropped, not copied */
    bool skip_sync; /* a request failed in pgtide: drop messages up to the Sync */
    bool welcomed;  /* AuthenticationOk .. ReadyForQuery sent */
    bool admin;
    bool admin_waiting; /* admin console: a late answer (SUSPEND, BACKUP, SHOW USAGE) is due */
    bool custom_opaque; /* it set a custom setting pgtide could not name: not parkable */
    bool reader;        /* reader endpoint or options=-c pgtide.route=replica: served by replicas */
    char txn;           /* last ReadyForQuery status seen by the client: 'I', 'T', 'E' */
    bool busy;          /* a request was forwarded and its ReadyForQuery has not come back */
};

/* Takes an accepted descriptor. Returns NULL (descriptor closed) when out of memory. */
struct client *client_accept(struct proxy *p, bool is_unix, bool reader, int fd,
                             const struct sockaddr *addr, socklen_t alen);

/* A connection handed over by another proxy (hub.h): accepted here, its TLS session kept, the
   bytes already read processed first. */
struct hub_conn;
struct client *client_adopt(struct proxy *p, struct hub_conn *hc);

/* Forwards a CancelRequest for this client to the server running its query, if any. */
void client_cancel(struct client *target);

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

/* The client's socket was readable (called in readiness order by the proxy's drain). */
void client_read_ready(struct client *c);

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

/* The peer as "host:port" ("unix" for a unix-socket client) in buf. */
#define CLIENT_ADDR_TEXT 64
const char *client_addr_text(const struct client *c, char *buf, size_t len);

/* Records why the last snapshot could not park the session (copied, at most 127 bytes), or
   that nothing is known to hold it (why NULL or ""). */
void client_set_blocker(struct client *c, const char *why);

/* The builder of pgtide's own messages to c, made on first use (when out of memory, one marked
   failed: what is put there is dropped). client_flush_out writes it. */
struct pkt_builder *client_out(struct client *c);

/* True while pgtide's own messages to c wait to be written. */
static inline bool client_out_pending(const struct client *c)
{
    return c->out != NULL && c->out->off < c->out->b.len;
}

/* Queues an ErrorResponse or NoticeResponse (not fatal) built by the caller into c->out. */
int client_queue(struct client *c, const void *data, size_t len);
void client_flush_out(struct client *c);
