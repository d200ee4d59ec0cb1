/*
 * txn: transaction (and statement) pooling. A client holds a server connection only while a
 * transaction runs; between transactions it is IDLE and its next message gets whichever server
 * connection is free. What must survive the switch is carried by pgtide:
 *
 *  - protocol-level prepared statements: a client's statement names map to server-side names
 *    ("pgt_<id>", one id per distinct query text and parameter types, shared by all clients);
 *    each server connection remembers which it has prepared (an LRU of max_prepared_statements)
 *    and a statement is prepared on demand, with a hidden Parse, on whichever server a client
 *    gets. Parse of a statement the server already has, and Close of a client's name, are
 *    answered by pgtide itself at the right point of the response stream;
 *  - the reported parameters (TimeZone, DateStyle, application_name, ...) a client has seen and
 *    the settings it gave at startup (options=-c ...): set on a server before it is handed over
 *    when its values differ.
 *
 * Every request sent to a server leaves an expectation in the server's queue (what answer ends
 * it, whether the answer is the client's, pgtide's to hide, or pgtide's to fake), so that answers
 * are matched to requests exactly, pipelines included, and an error skips to the next Sync as
 * PostgreSQL does.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "pgtide/relay.h"

/* A (name, value) setting, both malloc'd. */
struct client_param {
    char *name, *value;
};

/* Sets name to value in a growable list (both copied; a later value replaces the earlier).
   Returns 0, -1 out of memory, -2 when the list would exceed CLIENT_MAX_PARAMS entries. */
int txn_param_put(struct client_param **arr, int *n, int *cap, const char *name, const char *value);

/* Frees a list's strings and the list. */
void txn_param_free(struct client_param **arr, int *n, int *cap);

/* A list of parameters kept once per proxy and shared: most clients of a pool send the same
   startup parameters and see the same ParameterStatus values, so a client holds a counted
   reference to the one immutable copy. NULL is the empty list. */
struct txn_pset {
    struct txn_pset *next; /* the proxy's table (txn_intern) */
    uint64_t hash;
    uint64_t sig;     /* txn_param_sig of the entries, XORed: equal to a server's ps_sig = the
                         reported parameters need no SET */
    uint64_t sig_all; /* the same over every entry, reported or not (compared to a server's
                         applied_sig for startup settings) */
    uint32_t refs;
    int n;                   /* entries; -1: an interned string (txn_str_get) */
    struct client_param e[]; /* then the strings */
};

static inline int txn_pset_len(const struct txn_pset *ps)
{
    return ps != NULL ? ps->n : 0;
}

static inline const struct client_param *txn_pset_items(const struct txn_pset *ps)
{
    return ps != NULL ? ps->e : NULL;
}

static inline uint64_t txn_pset_sig(const struct txn_pset *ps, bool all)
{
    return ps == NULL ? 0 : all ? ps->sig_all : ps->sig;
}

struct proxy;
/* Makes *slot the shared copy of e[0..n) (NULL when n is 0), releasing what *slot held.
   Returns 0, or -1 when out of memory (*slot unchanged). */
int txn_pset_set(struct proxy *p, const struct txn_pset **slot, const struct client_param *e,
                 int n);

/* Releases a reference (NULL is ignored); the last one frees the list. */
void txn_pset_put(struct proxy *p, const struct txn_pset *ps);

/* The shared, counted copy of s (user and database names); NULL when out of memory. Release
   with txn_str_put. */
const char *txn_str_get(struct proxy *p, const char *s);
void txn_str_put(struct proxy *p, const char *s);

/* How many shared lists and strings the proxy keeps (each one has a reference). */
uint32_t txn_intern_count(const struct proxy *p);

struct client;
struct server;
struct pkt_builder;

/* One expected answer. kind: the request ('P' Parse, 'B' Bind, 'D' Describe, 'E' Execute,
   'C' Close, 'S' Sync, 'Q' Query or FunctionCall, 'c' a statement pgtide put in front of a
   client's Query: its CommandComplete is not forwarded). */
struct txn_expect {
    uint8_t kind;
    uint8_t flags; /* TXN_FAKE, TXN_HIDDEN, TXN_FAKE_ERROR */
    uint32_t stmt; /* statement id (Parse, Bind, Describe of a mapped statement), 0 otherwise */
    char *name;    /* a client's Parse: its statement name, forgotten if the Parse fails or is
                      skipped after an error (owned) */
};
#define TXN_FAKE       1 /* answered by pgtide: ParseComplete/CloseComplete sent in its turn */
#define TXN_HIDDEN     2 /* sent by pgtide: its answer is not forwarded */
#define TXN_FAKE_ERROR 4 /* a Parse of a name the client already has: 42P05 in its turn */

struct txn_queue {
    struct txn_expect *e;
    uint32_t head, count, cap;
    bool error_mode; /* an error came: requests up to the next Sync get no answer */
};

/* The server side's set of prepared statement ids, most recently used last. */
struct txn_prepared {
    uint64_t *ids; /* generation << 32 | statement id */
    uint32_t n, cap;
};

struct txn_cstmt;
/* A client's statement names -> statement ids. */
struct txn_names {
    struct txn_cstmt **buckets;
    uint32_t nbuckets, count;
};

struct txn_registry;

/* Frees the proxy-wide statement registry. */
void txn_registry_free(struct txn_registry *r);

struct txn_intern;
/* Frees the proxy-wide table of shared parameter lists and strings (all released by then). */
void txn_intern_free(struct txn_intern *t);

/* Client side: moves the client's messages to its server, rewriting statement names,
   preparing on demand and answering what pgtide answers itself. Called when the client is
   readable or the server writable, in transaction and statement pooling. */
void txn_client_pump(struct client *c);

/* Server side: the relay callbacks for a server in transaction or statement pooling. */
extern const struct relay_ops txn_server_ops;

/* After a pump of the server's answers: sends due fake answers, and hands the server back to
   the pool when the client's transaction is over. Returns true when the server was released. */
bool txn_after_server_pump(struct server *s);

/* Appends the SET/RESET statements that make server s match client c (reported parameters the
   client has seen, settings it gave at startup) to q. Returns how many were added. */
int txn_param_sync(const struct client *c, const struct server *s, struct pkt_builder *q);

/* True when server s already has every setting client c expects (no SET needed). */
bool txn_params_in_step(const struct client *c, const struct server *s);

/* The server now carries c's startup settings (after a successful sync). */
void txn_settings_applied(struct server *s, const struct client *c);

/* Clears a server's record of prepared statements and applied settings (DISCARD ALL, reset). */
void txn_server_forget(struct server *s);

/* Frees per-connection state. */
void txn_client_free(struct client *c);
void txn_server_free(struct server *s);

/* Notes a reported parameter the client has now seen. */
void txn_client_saw_param(struct client *c, const char *name, const char *value);

/* The same for n parameters at once (a welcome): one new shared list, not n. */
void txn_client_saw_params(struct client *c, const struct client_param *e, int n);

/* A hash of name=value for a parameter pgtide keeps in step between client and server, 0 for
   any other; XORed over a set, equal sets give equal sums (the fast path of txn_param_sync). */
uint64_t txn_param_sig(const char *name, const char *value);

/* True for parameters a server reports (ParameterStatus) that pgtide keeps in step. */
bool txn_param_is_reported(const char *name);
