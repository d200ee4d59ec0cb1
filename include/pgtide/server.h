/*
 * server: one connection from pgtide to a compute, as a state machine:
 *
 *   CONNECTING -> TLS_REQ -> TLS -> LOGIN -> IDLE -> SETUP -> ACTIVE -> RESET -> IDLE
 *                                             \---------------^  |  ^     ^
 *                                                                |  PARK  | (a failed SETUP)
 *                                    (transaction pooling) IDLE <-+        SETUP
 *
 * LOGIN logs in as the pool's user (trust on a compute's private socket; SCRAM, md5 or password
 * toward a static server). SETUP applies a client's startup parameters with one SET query;
 * RESET runs server_reset_query after a client leaves; PARK runs the session snapshot before
 * a suspend (park.h). SETUP also replays a parked session's snapshot. ACTIVE relays for its client.
 * server_set_state is the only place the state changes.
 */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "pgtide/list.h"
#include "pgtide/pkt.h"
#include "pgtide/relay.h"
#include "pgtide/scram.h"
#include "pgtide/txn.h"

struct pool;
struct client;
struct compute;
struct proxy;
struct hub_slot;

enum server_state {
    SERVER_CONNECTING,
    SERVER_TLS_REQ,
    SERVER_TLS,
    SERVER_LOGIN,
    SERVER_IDLE,
    SERVER_SETUP,
    SERVER_ACTIVE,
    SERVER_RESET,
    SERVER_PARK,
    SERVER_CLOSING
};

#define SERVER_MAX_PARAMS 48

struct server_param {
    char *name, *value;
};

struct server {
    struct list_node node; /* one of the pool's lists, by state */
    struct pool *pool;
    uint64_t id;
    enum server_state state;
    struct conn conn;
    ev_timer timer;                 /* connect timeout, idle timeout */
    struct pkt_builder out_builder; /* pgtide's own messages to the server */
    size_t out_off;
    struct client *client;

    struct server_param params[SERVER_MAX_PARAMS]; /* ParameterStatus as reported */
    int nparams;
    uint32_t pid, key; /* the backend's cancel key */
    char txn;          /* last ReadyForQuery status */
    int in_flight;     /* requests (Query, Sync, FunctionCall) whose ReadyForQuery is due */
    bool unsynced;     /* extended-protocol messages (or part of one) sent since the last Sync:
                          the backend may hold an implicit transaction or a suspended portal */
    bool is_unix;
    bool served; /* a client has had it (worker threads: a new one serves before it yields) */
    bool stale_statements; /* came from another worker: its statements are named by that one's
                              registry, so DEALLOCATE ALL before the next client uses it */
    int hand_to;           /* the worker it goes to, while in its proxy's handing list */
    struct scram_client scram;
    /* transaction pooling (txn.h) */
    struct txn_queue q;           /* expected answers, in order */
    struct txn_prepared prepared; /* statements this connection has prepared */
    struct client_param *applied; /* startup settings of a client, as SET here */
    int napplied, applied_cap;
    uint64_t ps_sig;          /* txn_param_sig of its settable reported parameters, XORed */
    uint64_t applied_sig;     /* the same over applied */
    struct pkt_builder fakes; /* answers pgtide gives itself, due at the next turn */
    bool stmt_violation;      /* statement pooling saw a transaction begin */
    int64_t connect_ms, state_since_ms, last_used_ms;
    char error_code[6];
    char error_msg[256];
    /* read-your-writes (issue 6, ryw.h) */
    struct list_node ryw_node; /* in ryw's queue while its ReadyForQuery waits for an LSN read */
    uint64_t ryw_need;         /* the LSN read it waits for */
    bool ryw_wrote;            /* its transaction may have written */
    bool ryw_held, ryw_pass;   /* waiting; released (the next ReadyForQuery passes) */
};

/* Opens a new connection for pool (async). NULL when it cannot even start (error logged). */
struct server *server_new(struct pool *pool);

/* The transition table: true when from -> to is allowed. */
bool server_state_legal(enum server_state from, enum server_state to);

void server_set_state(struct server *s, enum server_state to);
const char *server_state_name(enum server_state s);

/* Hands an IDLE server to client c: SETUP when c's startup parameters need applying, then
   client_attach_server(); otherwise attaches at once. */
void server_assign(struct server *s, struct client *c);

/* A client message of type t goes to s: Parse/Bind/Describe/Close/Execute leave it unsynced
   until a Sync (server_release closes an unsynced server instead of handing it on). Inline:
   it runs for every message relayed. */
static inline void server_note_sent(struct server *s, uint8_t t)
{
    if (t == 'P' || t == 'B' || t == 'D' || t == 'C' || t == 'E')
        s->unsynced = true;
    else if (t == 'S')
        s->unsynced = false;
}

/* The client left. An idle-in-no-transaction server is reset and returned to the pool;
   otherwise its query is cancelled and the connection closed. */
void server_release(struct server *s);

/* Closes at once (pool membership dropped). */
void server_close(struct server *s, const char *reason);

/* Relay: forwards what the server sent to its client (on server readable, client writable). */
void server_pump(struct server *s);

/* The server's socket was readable (called in readiness order by the proxy's drain). */
void server_read_ready(struct server *s);

/* Worker threads: true when s, idle, may move to another worker's loop as it is (nothing
   buffered or due either way). */
bool server_movable(const struct server *s);

/* Takes a movable server off its loop and pool (its room counted as worker `to`'s now) and
   queues it for that worker: server_post_handovers sends it at the end of the loop iteration,
   when no caller up the stack can touch it any more (HUB_SERVER). */
void server_hand_over(struct server *s, struct proxy *to);
void server_post_handovers(struct proxy *p);

/* The receiving end: s joins this proxy's pool for the slot's (compute, database, user) and
   its loop; closed instead while this proxy shuts down. */
void server_adopt(struct proxy *p, struct server *s, struct hub_slot *slot);

/* A handed-over server that no loop will adopt (the workers stop): closed and freed. */
void server_discard(struct server *s);

/* Frees a closed server (called by the proxy after the loop iteration that closed it). */
void server_free(struct server *s);

/* Sends a CancelRequest for this server's backend over a new connection (async, fire and
   forget). */
void server_send_cancel(struct server *s);

/* ACTIVE -> PARK: runs park_snapshot_sql on the session (results go to park_row/park_done). */
void server_snapshot(struct server *s);

/* Appends a statement setting name to value for the session (set_config, both quoted). */
void server_append_set(struct pkt_builder *b, const char *name, const char *value);

/* The output builder for pgtide's own messages (created on first use). */
struct pkt_builder *server_out(struct server *s);

/* Writes what server_out holds; stops the client's reads while the server's socket is full. */
void server_flush(struct server *s);

/* Records a reported parameter value. */
void server_set_param(struct server *s, const char *name, const char *value);

/* Transaction pooling: the client's transaction is over: the client goes IDLE and the server
   back to the pool, as is. */
void server_detach(struct server *s);

/* Value of a reported parameter, or NULL. */
const char *server_param(const struct server *s, const char *name);
