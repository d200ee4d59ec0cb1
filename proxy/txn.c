/*
 * txn: transaction pooling's message rewriting. The client side copies each client message into
 * the server's output, rewriting statement names and adding hidden Parse/Close messages where a
 * server lacks a statement; messages larger than the relay buffer are streamed (their head
 * rewritten if needed, the rest copied as it arrives). The server side matches every answer to
 * the expectation its request left, drops answers to hidden requests, inserts answers pgtide
 * gives itself, and releases the server when the transaction is over.
 */
#include "pgtide/txn.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pgtide/client.h"
#include "pgtide/config.h"
#include "pgtide/log.h"
#include "pgtide/pkt.h"
#include "pgtide/pool.h"
#include "pgtide/proxy.h"
#include "pgtide/ryw.h"
#include "pgtide/server.h"

/* Stop copying client messages while this much waits for the server's socket. */
#define TXN_OUT_HIGH (256 * 1024)

/* ---- statement registry: one id per distinct (query, parameter types) --------------------- */

struct txn_stmt {
    struct txn_stmt *next;
    uint64_t hash;
    uint32_t id;
    uint32_t gen; /* bumped when a server says its plan is stale: every server re-prepares */
    uint16_t nparams;
    uint32_t *oids;
    char *query;
};

struct txn_registry {
    struct txn_stmt **buckets;
    uint32_t nbuckets, count;
    struct txn_stmt **by_id; /* index id - 1 */
    uint32_t id_cap;
};

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static struct txn_registry *registry(struct proxy *p)
{
    if (p->registry == NULL) {
        struct txn_registry *r = calloc(1, sizeof(*r));
        if (r == NULL)
            return NULL;
        r->nbuckets = 1024;
        r->buckets = calloc(r->nbuckets, sizeof(*r->buckets));
        if (r->buckets == NULL) {
            free(r);
            return NULL;
        }
        p->registry = r;
    }
    return p->registry;
}

/* Finds or adds the statement; NULL when out of memory. */
static struct txn_stmt *registry_get(struct proxy *p, const char *query, uint16_t nparams,
                                     const uint8_t *oid_bytes)
{
    struct txn_registry *r = registry(p);
    if (r == NULL)
        return NULL;
    size_t qlen = strlen(query);
    uint64_t h = fnv(query, qlen, 14695981039346656037ull);
    h = fnv(oid_bytes, (size_t) nparams * 4, h);
    struct txn_stmt **slot = &r->buckets[h & (r->nbuckets - 1)];
    for (struct txn_stmt *st = *slot; st != NULL; st = st->next) {
        if (st->hash != h || st->nparams != nparams || strcmp(st->query, query) != 0)
            continue;
        bool same = true;
        for (uint16_t i = 0; i < nparams && same; i++) {
            const uint8_t *o = oid_bytes + 4 * i;
            same = st->oids[i] == (((uint32_t) o[0] << 24) | ((uint32_t) o[1] << 16) |
                                   ((uint32_t) o[2] << 8) | o[3]);
        }
        if (same)
            return st;
    }
    if (r->count + 1 > r->id_cap) {
        uint32_t cap = r->id_cap ? r->id_cap * 2 : 256;
        struct txn_stmt **ids = realloc(r->by_id, cap * sizeof(*ids));
        if (ids == NULL)
            return NULL;
        r->by_id = ids;
        r->id_cap = cap;
    }
    struct txn_stmt *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->query = strdup(query);
    st->oids = calloc(nparams ? nparams : 1, sizeof(uint32_t));
    if (st->query == NULL || st->oids == NULL) {
        free(st->query);
        free(st->oids);
        free(st);
        return NULL;
    }
    for (uint16_t i = 0; i < nparams; i++) {
        const uint8_t *o = oid_bytes + 4 * i;
        st->oids[i] =
            ((uint32_t) o[0] << 24) | ((uint32_t) o[1] << 16) | ((uint32_t) o[2] << 8) | o[3];
    }
    st->nparams = nparams;
    st->hash = h;
    st->id = ++r->count;
    r->by_id[st->id - 1] = st;
    st->next = *slot;
    *slot = st;
    return st;
}

static struct txn_stmt *registry_by_id(struct proxy *p, uint32_t id)
{
    struct txn_registry *r = p->registry;
    return r != NULL && id >= 1 && id <= r->count ? r->by_id[id - 1] : NULL;
}

void txn_registry_free(struct txn_registry *r)
{
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->count; i++) {
        free(r->by_id[i]->query);
        free(r->by_id[i]->oids);
        free(r->by_id[i]);
    }
    free(r->by_id);
    free(r->buckets);
    free(r);
}

static void server_name(uint32_t id, char out[16])
{
    snprintf(out, 16, "pgt_%u", id);
}

/* ---- a client's names ---------------------------------------------------------------------- */

struct txn_cstmt {
    struct txn_cstmt *next;
    uint32_t id;
    char name[];
};

static struct txn_cstmt **names_slot(struct txn_names *n, const char *name)
{
    uint64_t h = fnv(name, strlen(name), 14695981039346656037ull);
    return &n->buckets[h & (n->nbuckets - 1)];
}

static uint32_t names_get(struct txn_names *n, const char *name)
{
    if (n->count == 0)
        return 0;
    for (struct txn_cstmt *e = *names_slot(n, name); e != NULL; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e->id;
    return 0;
}

static int names_put(struct txn_names *n, const char *name, uint32_t id)
{
    if (n->buckets == NULL) {
        n->nbuckets = 64;
        n->buckets = calloc(n->nbuckets, sizeof(*n->buckets));
        if (n->buckets == NULL)
            return -1;
    }
    struct txn_cstmt **slot = names_slot(n, name);
    for (struct txn_cstmt *e = *slot; e != NULL; e = e->next) {
        if (strcmp(e->name, name) == 0) {
            e->id = id;
            return 0;
        }
    }
    size_t len = strlen(name);
    struct txn_cstmt *e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return -1;
    memcpy(e->name, name, len + 1);
    e->id = id;
    e->next = *slot;
    *slot = e;
    n->count++;
    return 0;
}

static void names_del(struct txn_names *n, const char *name)
{
    if (n->count == 0)
        return;
    for (struct txn_cstmt **pp = names_slot(n, name); *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            struct txn_cstmt *e = *pp;
            *pp = e->next;
            free(e);
            n->count--;
            return;
        }
    }
}

/* Removes name only if it still maps to id (a later Parse may have re-used it). */
static void names_forget(struct txn_names *n, const char *name, uint32_t id)
{
    if (names_get(n, name) == id)
        names_del(n, name);
}

static void names_clear(struct txn_names *n)
{
    for (uint32_t i = 0; i < n->nbuckets; i++) {
        struct txn_cstmt *e = n->buckets[i];
        while (e != NULL) {
            struct txn_cstmt *next = e->next;
            free(e);
            e = next;
        }
        n->buckets[i] = NULL;
    }
    n->count = 0;
}

void txn_client_free(struct client *c)
{
    names_clear(&c->names);
    free(c->names.buckets);
    c->names.buckets = NULL;
    txn_pset_put(c->proxy, c->ps);
    c->ps = NULL;
}

/* ---- a server's prepared set (LRU) -------------------------------------------------------- */

/* 1 (and marked most recent) when the server has the statement's current version, 0 when it
   has it not, -1 when it has an older version (then forgotten: the caller closes it). */
static int prepared_touch(struct txn_prepared *sp, uint32_t id, uint32_t gen)
{
    for (uint32_t i = sp->n; i-- > 0;) {
        if ((uint32_t) sp->ids[i] != id)
            continue;
        uint64_t e = sp->ids[i];
        memmove(sp->ids + i, sp->ids + i + 1, (sp->n - i - 1) * sizeof(uint64_t));
        if ((uint32_t) (e >> 32) != gen) {
            sp->n--;
            return -1;
        }
        sp->ids[sp->n - 1] = e;
        return 1;
    }
    return 0;
}

static int prepared_add(struct txn_prepared *sp, uint32_t id, uint32_t gen)
{
    if (sp->n == sp->cap) {
        uint32_t cap = sp->cap ? sp->cap * 2 : 16;
        uint64_t *ids = realloc(sp->ids, cap * sizeof(uint64_t));
        if (ids == NULL)
            return -1;
        sp->ids = ids;
        sp->cap = cap;
    }
    sp->ids[sp->n++] = (uint64_t) gen << 32 | id;
    return 0;
}

static void prepared_remove(struct txn_prepared *sp, uint32_t id)
{
    for (uint32_t i = 0; i < sp->n; i++) {
        if ((uint32_t) sp->ids[i] == id) {
            memmove(sp->ids + i, sp->ids + i + 1, (sp->n - i - 1) * sizeof(uint64_t));
            sp->n--;
            return;
        }
    }
}

/* ---- expectations ------------------------------------------------------------------------- */

static int expect_named(struct server *s, uint8_t kind, uint8_t flags, uint32_t stmt,
                        const char *name)
{
    struct txn_queue *q = &s->q;
    if (q->count == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 32;
        struct txn_expect *e = malloc(cap * sizeof(*e));
        if (e == NULL)
            return -1;
        for (uint32_t i = 0; i < q->count; i++)
            e[i] = q->e[(q->head + i) % q->cap];
        free(q->e);
        q->e = e;
        q->head = 0;
        q->cap = cap;
    }
    char *copy = name != NULL ? strdup(name) : NULL;
    q->e[(q->head + q->count) % q->cap] = (struct txn_expect){kind, flags, stmt, copy};
    q->count++;
    if (kind == 'S' || kind == 'Q')
        s->in_flight++;
    return 0;
}

static int expect(struct server *s, uint8_t kind, uint8_t flags, uint32_t stmt)
{
    return expect_named(s, kind, flags, stmt, NULL);
}

static struct txn_expect *head(struct server *s)
{
    return s->q.count ? &s->q.e[s->q.head] : NULL;
}

static void names_forget(struct txn_names *n, const char *name, uint32_t id);

/* Removes the head expectation. ok: its request succeeded; a client's Parse that did not
   (failed, or skipped after an error) takes its name back, as PostgreSQL never made it. */
static void pop_ok(struct server *s, bool ok)
{
    struct txn_queue *q = &s->q;
    struct txn_expect *e = &q->e[q->head];
    if ((e->kind == 'S' || e->kind == 'Q') && s->in_flight > 0)
        s->in_flight--;
    if (e->name != NULL) {
        if (!ok && s->client != NULL && !(e->flags & TXN_FAKE_ERROR))
            names_forget(&s->client->names, e->name, e->stmt);
        free(e->name);
        e->name = NULL;
    }
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

static void pop(struct server *s)
{
    pop_ok(s, true);
}

void txn_server_forget(struct server *s)
{
    s->prepared.n = 0;
    s->applied_sig = 0;
    for (int i = 0; i < s->napplied; i++) {
        free(s->applied[i].name);
        free(s->applied[i].value);
    }
    s->napplied = 0;
}

void txn_param_free(struct client_param **arr, int *n, int *cap)
{
    for (int i = 0; i < *n; i++) {
        free((*arr)[i].name);
        free((*arr)[i].value);
    }
    free(*arr);
    *arr = NULL;
    *n = *cap = 0;
}

void txn_server_free(struct server *s)
{
    txn_server_forget(s);
    txn_param_free(&s->applied, &s->napplied, &s->applied_cap);
    for (uint32_t i = 0; i < s->q.count; i++)
        free(s->q.e[(s->q.head + i) % s->q.cap].name);
    free(s->prepared.ids);
    free(s->q.e);
    if (s->fakes.buf != NULL)
        pkt_builder_free(&s->fakes);
}

/* ---- client -> server ----------------------------------------------------------------------- */

/* Makes room for one more statement on s: a hidden Close of st's own name first (a stale
   version, or one the server kept where pgtide lost track, as when an error made the server
   skip a Close; closing a name that does not exist is no error), and of the least recently
   used statement when the set is full. */
static void make_room(struct server *s, const struct txn_stmt *st, struct pkt_builder *o)
{
    char name[16];
    server_name(st->id, name);
    pkt_write_close(o, 'S', name);
    (void) expect(s, 'C', TXN_HIDDEN, 0);
    uint32_t max = (uint32_t) s->pool->proxy->cfg->max_prepared_statements;
    if (max > 0 && s->prepared.n >= max) {
        uint32_t old = (uint32_t) s->prepared.ids[0];
        server_name(old, name);
        pkt_write_close(o, 'S', name);
        (void) expect(s, 'C', TXN_HIDDEN, 0);
        prepared_remove(&s->prepared, old);
    }
}

static void ensure_prepared(struct server *s, const struct txn_stmt *st, struct pkt_builder *o)
{
    int touched = prepared_touch(&s->prepared, st->id, st->gen);
    if (touched > 0)
        return;
    make_room(s, st, o);
    char name[16];
    server_name(st->id, name);
    pkt_write_parse(o, name, st->query, st->nparams, st->oids);
    (void) expect(s, 'P', TXN_HIDDEN, st->id);
    (void) prepared_add(&s->prepared, st->id, st->gen);
}

static bool query_drops_all(const char *sql);
static void forget_all(struct client *c, struct server *s, const char *sql);

static void on_parse(struct client *c, struct server *s, const uint8_t *msg, uint32_t total,
                     struct pkt_builder *o)
{
    const char *name, *sql;
    uint16_t np;
    enum pkt_status ps = pkt_parse_parse(msg + 5, total - 5, &name, &sql, &np);
    if (ps == PKT_OK && query_drops_all(sql))
        forget_all(c, s, sql); /* through the extended protocol (JDBC sends everything so) */
    if (ps != PKT_OK || name[0] == '\0') {
        pkt_put_bytes(o, msg, total); /* unnamed (or malformed: the server answers) */
        (void) expect(s, 'P', 0, 0);
        return;
    }
    if (names_get(&c->names, name) != 0) {
        /* PostgreSQL refuses a name in use (42P05) and skips to Sync: so does pgtide */
        (void) expect_named(s, 'P', TXN_FAKE_ERROR, 0, name);
        c->skip_sync = true;
        return;
    }
    const uint8_t *oids = (const uint8_t *) sql + strlen(sql) + 1 + 2;
    struct txn_stmt *st = registry_get(c->proxy, sql, np, oids);
    if (st == NULL || names_put(&c->names, name, st->id) != 0) {
        pkt_put_bytes(o, msg, total);
        (void) expect(s, 'P', 0, 0);
        return;
    }
    int touched = prepared_touch(&s->prepared, st->id, st->gen);
    if (touched > 0) {
        (void) expect_named(s, 'P', TXN_FAKE, st->id, name);
        return;
    }
    make_room(s, st, o);
    char sname[16];
    server_name(st->id, sname);
    pkt_write_parse(o, sname, st->query, st->nparams, st->oids);
    (void) expect_named(s, 'P', 0, st->id, name);
    (void) prepared_add(&s->prepared, st->id, st->gen);
}

/* Bind and Describe 'S' name the statement; returns its registry entry if it is the client's. */
static const struct txn_stmt *mapped(struct client *c, const char *name)
{
    if (name[0] == '\0')
        return NULL;
    uint32_t id = names_get(&c->names, name);
    return id ? registry_by_id(c->proxy, id) : NULL;
}

/* Writes a Bind whose statement name is replaced; rest = the bytes after the old name. */
static void write_bind_head(struct pkt_builder *o, const char *portal, const char *stmt,
                            uint32_t rest_len)
{
    size_t pl = strlen(portal) + 1, sl = strlen(stmt) + 1;
    uint32_t len = (uint32_t) (4 + pl + sl + rest_len);
    uint8_t h[5] = {'B', (uint8_t) (len >> 24), (uint8_t) (len >> 16), (uint8_t) (len >> 8),
                    (uint8_t) len};
    pkt_put_bytes(o, h, 5);
    pkt_put_bytes(o, portal, pl);
    pkt_put_bytes(o, stmt, sl);
}

/* Finds the portal and statement names at the start of a Bind body (avail bytes of it).
   Returns the offset after both, or 0 if they are not complete yet. */
static uint32_t bind_names(const uint8_t *body, uint32_t avail, const char **portal,
                           const char **stmt)
{
    const uint8_t *z1 = memchr(body, 0, avail);
    if (z1 == NULL)
        return 0;
    const uint8_t *z2 = memchr(z1 + 1, 0, avail - (uint32_t) (z1 + 1 - body));
    if (z2 == NULL)
        return 0;
    *portal = (const char *) body;
    *stmt = (const char *) z1 + 1;
    return (uint32_t) (z2 + 1 - body);
}

static void on_describe_close(struct client *c, struct server *s, uint8_t t, const uint8_t *msg,
                              uint32_t total, struct pkt_builder *o)
{
    char kind;
    const char *name;
    if (pkt_parse_close_describe(msg + 5, total - 5, &kind, &name) != PKT_OK || kind != 'S' ||
        name[0] == '\0') {
        pkt_put_bytes(o, msg, total);
        (void) expect(s, t, 0, 0);
        return;
    }
    if (t == 'C') {
        /* the server statement may serve others: forget the client's name, answer ourselves */
        names_del(&c->names, name);
        (void) expect(s, 'C', TXN_FAKE, 0);
        return;
    }
    const struct txn_stmt *st = mapped(c, name);
    if (st == NULL) {
        pkt_put_bytes(o, msg, total);
        (void) expect(s, 'D', 0, 0);
        return;
    }
    ensure_prepared(s, st, o);
    char sname[16];
    server_name(st->id, sname);
    pkt_write_describe(o, 'S', sname);
    (void) expect(s, 'D', 0, st->id);
}

/* DEALLOCATE [PREPARE] name|ALL and DISCARD ALL in a simple query touch the mapping. */
static void query_space(const char **pp)
{
    const char *p = *pp;
    for (;;) {
        while (isspace((unsigned char) *p))
            p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p != '\0' && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/"); /* not nested: enough for a leading comment */
            p = end != NULL ? end + 2 : p + strlen(p);
        } else {
            break;
        }
    }
    *pp = p;
}

static bool query_word(const char **p, const char *word)
{
    size_t n = strlen(word);
    query_space(p);
    if (strncasecmp(*p, word, n) != 0 || isalnum((unsigned char) (*p)[n]) || (*p)[n] == '_')
        return false;
    *p += n;
    return true;
}

static bool query_end(const char *p)
{
    for (query_space(&p); *p == ';'; query_space(&p))
        p++;
    return *p == '\0';
}

/* DISCARD ALL or DEALLOCATE [PREPARE] ALL: every prepared statement of the session goes. */
static bool query_drops_all(const char *sql)
{
    const char *p = sql;
    if (query_word(&p, "discard"))
        return query_word(&p, "all") && query_end(p);
    p = sql;
    if (!query_word(&p, "deallocate"))
        return false;
    (void) query_word(&p, "prepare");
    return query_word(&p, "all") && query_end(p);
}

/* Reads an SQL name: "quoted" (exact, "" for a quote) or bare (folded to lower case). */
static size_t query_name(const char **pp, char *name, size_t cap)
{
    const char *p = *pp;
    size_t k = 0;
    while (isspace((unsigned char) *p))
        p++;
    if (*p == '"') {
        for (p++; *p != '\0' && k + 1 < cap; p++) {
            if (*p == '"') {
                if (p[1] != '"')
                    break;
                p++;
            }
            name[k++] = *p;
        }
        if (*p != '"')
            return 0;
        p++;
    } else {
        while ((isalnum((unsigned char) *p) || *p == '_') && k + 1 < cap)
            name[k++] = (char) tolower((unsigned char) *p++);
    }
    name[k] = '\0';
    *pp = p;
    return k;
}

/* After DISCARD ALL or DEALLOCATE ALL (sql): the client's names and the server's statements
   (and, for DISCARD, its settings) are forgotten at once, whether or not the server runs it: a
   statement pgtide thinks gone is closed before it is prepared again (make_room). */
static void forget_all(struct client *c, struct server *s, const char *sql)
{
    names_clear(&c->names);
    s->prepared.n = 0;
    if (query_word(&sql, "discard"))
        txn_server_forget(s);
}

static void on_query(struct client *c, struct server *s, const uint8_t *msg, uint32_t total,
                     struct pkt_builder *o)
{
    const char *sql = (const char *) msg + 5;
    const char *p = sql;
    if (msg[total - 1] != '\0') {
        /* malformed: the server answers it */
    } else if (query_drops_all(sql)) {
        forget_all(c, s, sql);
    } else if ((p = sql, query_word(&p, "deallocate"))) {
        (void) query_word(&p, "prepare");
        char name[64];
        if (query_name(&p, name, sizeof(name)) > 0 && query_end(p)) {
            uint32_t id = names_get(&c->names, name);
            const struct txn_stmt *st = id ? registry_by_id(c->proxy, id) : NULL;
            if (s->txn == 'E' && s->in_flight == 0)
                st = NULL; /* an aborted transaction refuses it (25P02): nothing is forgotten */
            if (st != NULL) {
                /* the shared statement goes from this server and from the client; the answer
                   is PostgreSQL's own DEALLOCATE (25P02 in an aborted transaction). A server
                   that lacks it gets a stand-in of that name first, in the same query: the
                   statement's own text may no longer prepare, and a failing hidden Parse would
                   make the server ignore the query up to a Sync that never comes */
                char sname[16], q[96];
                server_name(id, sname);
                bool here = prepared_touch(&s->prepared, id, st->gen) != 0; /* or older */
                if (here)
                    snprintf(q, sizeof(q), "DEALLOCATE %s", sname);
                else
                    snprintf(q, sizeof(q), "PREPARE %s AS SELECT 1; DEALLOCATE %s", sname, sname);
                names_del(&c->names, name);
                prepared_remove(&s->prepared, id);
                if (!here)
                    (void) expect(s, 'c', TXN_HIDDEN, 0);
                (void) expect(s, 'Q', 0, 0);
                pkt_write_query(o, q);
                return;
            }
        }
    }
    (void) expect(s, 'Q', 0, 0);
    pkt_put_bytes(o, msg, total);
}

/* Handles one whole client message. Returns false when the client is gone. */
static bool client_message(struct client *c, struct server *s, const uint8_t *msg, uint32_t total,
                           struct pkt_builder *o)
{
    uint8_t t = msg[0];
    server_note_sent(s, t);
    switch (t) {
    case 'P':
        on_parse(c, s, msg, total, o);
        break;
    case 'B': {
        const char *portal, *stmt;
        uint32_t off = bind_names(msg + 5, total - 5, &portal, &stmt);
        const struct txn_stmt *st = off ? mapped(c, stmt) : NULL;
        if (st == NULL) {
            pkt_put_bytes(o, msg, total);
        } else {
            char sname[16];
            ensure_prepared(s, st, o);
            server_name(st->id, sname);
            write_bind_head(o, portal, sname, total - 5 - off);
            pkt_put_bytes(o, msg + 5 + off, total - 5 - off);
        }
        (void) expect(s, 'B', 0, st != NULL ? st->id : 0);
        break;
    }
    case 'D':
    case 'C':
        on_describe_close(c, s, t, msg, total, o);
        break;
    case 'Q':
        on_query(c, s, msg, total, o);
        break;
    case 'F':
        pkt_put_bytes(o, msg, total);
        (void) expect(s, 'Q', 0, 0);
        break;
    case 'E':
    case 'S':
        pkt_put_bytes(o, msg, total);
        (void) expect(s, t, 0, 0);
        break;
    case 'X':
        client_close(c, "client terminated");
        return false;
    default: /* Flush, CopyData/Done/Fail */
        pkt_put_bytes(o, msg, total);
        break;
    }
    return true;
}

/* The head of a message too large for the buffer: rewritten where needed, the rest streamed.
   Returns bytes consumed from p (0: wait for more). */
static uint32_t large_message(struct client *c, struct server *s, const uint8_t *p, uint32_t avail,
                              uint32_t len, struct pkt_builder *o)
{
    uint8_t t = p[0];
    uint32_t consumed = 5;
    server_note_sent(s, t);
    if (t == 'B') {
        const char *portal, *stmt;
        uint32_t off = bind_names(p + 5, avail - 5, &portal, &stmt);
        if (off == 0)
            return avail >= 5 + 2 * 64 + 2 ? 5 : 0; /* absurd names: stream unchanged */
        const struct txn_stmt *st = mapped(c, stmt);
        if (st != NULL) {
            char sname[16];
            ensure_prepared(s, st, o);
            server_name(st->id, sname);
            write_bind_head(o, portal, sname, len - 4 - off);
            consumed = 5 + off;
        } else {
            pkt_put_bytes(o, p, 5);
        }
        (void) expect(s, 'B', 0, st != NULL ? st->id : 0);
    } else {
        pkt_put_bytes(o, p, 5);
        if (t == 'Q' || t == 'F')
            (void) expect(s, 'Q', 0, 0);
        else if (t == 'P') /* a named statement this long stays the server's own */
            (void) expect(s, 'P', 0, 0);
    }
    c->copy_left = len + 1 - consumed;
    return consumed;
}

void txn_client_pump(struct client *c)
{
    struct server *s = c->server;
    struct buf *b = c->conn.in;
    struct pkt_builder *o = server_out(s);
    uint32_t max = (uint32_t) c->proxy->cfg->max_packet_size;
    while (b != NULL && buf_len(b) > 0 && o->len - s->out_off < TXN_OUT_HIGH) {
        const uint8_t *p = b->data + b->rpos;
        uint32_t avail = buf_len(b);
        if (c->copy_left > 0) {
            uint32_t n = avail < c->copy_left ? avail : c->copy_left;
            if (!c->copy_drop)
                pkt_put_bytes(o, p, n);
            b->rpos += n;
            c->copy_left -= n;
            continue;
        }
        struct pkt_hdr h;
        enum pkt_status st = pkt_read_hdr(p, avail, max, &h);
        if (st == PKT_INCOMPLETE)
            break;
        if (st != PKT_OK) {
            client_fatal(c, "08P01", "invalid message length from client");
            return;
        }
        uint32_t total = h.len + 1;
        if (c->skip_sync && h.type != 'S' && h.type != 'X') {
            /* a request pgtide refused: PostgreSQL would ignore everything up to Sync */
            uint32_t n = avail < total ? avail : total;
            b->rpos += n;
            c->copy_left = total - n;
            c->copy_drop = true;
            continue;
        }
        c->skip_sync = false;
        c->copy_drop = false;
        if (total > BUF_SIZE) {
            uint32_t used = large_message(c, s, p, avail, h.len, o);
            if (used == 0)
                break;
            b->rpos += used;
            continue;
        }
        if (avail < total)
            break;
        b->rpos += total;
        if (!client_message(c, s, p, total, o))
            return;
    }
    if (o->failed) {
        client_fatal(c, "53200", "out of memory");
        return;
    }
    if (b != NULL && b->rpos == b->wpos)
        b->rpos = b->wpos = 0;
    proxy_touch(c->proxy);
    server_flush(s);
}

/* ---- server -> client ----------------------------------------------------------------------- */

static bool server_wants(void *arg, uint8_t t)
{
    (void) arg;
    (void) t;
    return true;
}

/* Pops up to the next Sync: PostgreSQL skips those requests after an error. Their Parses
   made nothing: the server's optimistic marks and the clients' names are taken back. When the
   client has not sent that Sync yet, what it sends until then is dropped by pgtide (the server
   would ignore it), so that no expectation is queued for requests that get no answer. */
static void skip_to_sync(struct server *s)
{
    struct txn_expect *e;
    s->q.error_mode = true;
    while ((e = head(s)) != NULL && e->kind != 'S') {
        if (e->kind == 'P' && e->stmt != 0 && !(e->flags & TXN_FAKE))
            prepared_remove(&s->prepared, e->stmt);
        pop_ok(s, false);
    }
    if (e == NULL && s->client != NULL)
        s->client->skip_sync = true;
}

/* Queues pgtide's own answers that are due now (fakes at the head of the queue). */
static bool take_fakes(struct server *s)
{
    struct txn_expect *e;
    bool any = false;
    while ((e = head(s)) != NULL && (e->flags & (TXN_FAKE | TXN_FAKE_ERROR))) {
        if (s->q.error_mode) {
            pop_ok(s, false);
            continue;
        }
        if (s->fakes.buf == NULL)
            pkt_builder_init_dyn(&s->fakes, 64);
        any = true;
        if (e->flags & TXN_FAKE_ERROR) {
            char msg[128];
            snprintf(msg, sizeof(msg), "prepared statement \"%.60s\" already exists", e->name);
            pkt_write_error(&s->fakes, "ERROR", "42P05", msg, NULL, NULL);
            skip_to_sync(s);
            continue;
        }
        pkt_write_empty(&s->fakes, e->kind == 'P' ? '1' : '3');
        pop(s);
    }
    return any;
}

/* An error answers the head request; an extended-protocol error skips to the next Sync.
   "cached plan must not change result type" makes the statement stale everywhere: each
   server re-prepares it before its next use. */
static void on_error(struct server *s, const uint8_t *body, uint32_t blen)
{
    struct txn_expect *e = head(s);
    if (e != NULL && e->kind == 'c') {
        pop(s); /* the stand-in failed (an aborted transaction): the query stops there */
        return;
    }
    if (e == NULL || e->kind == 'Q' || e->kind == 'S')
        return;
    struct pkt_error_fields f;
    if (body != NULL && e->stmt != 0 && (e->kind == 'B' || e->kind == 'D') &&
        pkt_parse_error_fields(body, blen, &f) == PKT_OK && f.code != NULL) {
        struct txn_stmt *st = registry_by_id(s->pool->proxy, e->stmt);
        if (strcmp(f.code, "0A000") == 0 && st != NULL)
            st->gen++;
        else if (strcmp(f.code, "26000") == 0)
            s->prepared.n = 0; /* the server lost statements behind pgtide's back (a DISCARD
                                  ALL it could not see): each is prepared again on next use */
    }
    skip_to_sync(s);
}

static bool terminal(uint8_t kind, uint8_t t)
{
    switch (kind) {
    case 'P':
        return t == '1';
    case 'B':
        return t == '2';
    case 'C':
        return t == '3';
    case 'D':
        return t == 'T' || t == 'n';
    case 'c':
        return t == 'C';
    case 'E':
        return t == 'C' || t == 'I' || t == 's';
    default: /* 'S', 'Q' */
        return t == 'Z';
    }
}

static void ready(struct server *s, const uint8_t *body, uint32_t blen)
{
    char st;
    if (pkt_parse_ready(body, blen, &st) != PKT_OK)
        return;
    s->txn = st;
    s->q.error_mode = false;
    struct proxy *p = s->pool->proxy;
    struct client *c = s->client;
    p->stats.queries++;
    s->pool->queries++;
    int64_t now = proxy_now_ms();
    if (c != NULL) {
        c->queries++;
        c->txn = st;
        if (c->request_ms > 0)
            p->stats.query_time_us += (uint64_t) (now - c->request_ms) * 1000;
        c->request_ms = 0;
    }
    if (st == 'I') {
        p->stats.xacts++;
        s->pool->xacts++;
    }
    s->last_used_ms = now;
}

static enum relay_verdict server_message(void *arg, uint8_t t, const uint8_t *body, uint32_t blen)
{
    struct server *s = arg;
    /* the caller sends them, then this message comes again (also when writing what came
       before them was blocked: they were taken then, and are still to go) */
    if (take_fakes(s) || (s->fakes.buf != NULL && s->fakes.len > 0))
        return RELAY_STOP;
    struct txn_expect *e = head(s);
    switch (t) {
    case 'S': {
        const char *name, *value;
        if (pkt_parse_param_status(body, blen, &name, &value) == PKT_OK) {
            server_set_param(s, name, value);
            if (s->client != NULL)
                txn_client_saw_param(s->client, name, value);
        }
        return RELAY_FORWARD;
    }
    case 'N':
    case 'A':
        return RELAY_FORWARD;
    case 'E':
        on_error(s, body, blen);
        return RELAY_FORWARD;
    case 'Z':
        if (ryw_hold(s, body, blen))
            return RELAY_STOP; /* until the primary's WAL position is known (ryw.h) */
        if (e != NULL && (e->kind == 'S' || e->kind == 'Q'))
            pop(s);
        ready(s, body, blen);
        if (s->client != NULL && s->client->pool_mode == POOL_STATEMENT && s->txn != 'I') {
            s->stmt_violation = true;
            return RELAY_STOP;
        }
        return RELAY_FORWARD;
    case 'C':
    case 'V':
        if (s->pool->proxy->cfg->read_your_writes)
            ryw_note_command(s, t, body, blen);
        break;
    default:
        break;
    }
    if (e != NULL && terminal(e->kind, t)) {
        bool hidden = (e->flags & TXN_HIDDEN) != 0;
        pop(s);
        return hidden ? RELAY_DROP : RELAY_FORWARD;
    }
    return RELAY_FORWARD;
}

static void server_header(void *arg, uint8_t t, uint32_t len)
{
    /* messages too large to be seen whole (big rows, big descriptions) end requests too */
    struct server *s = arg;
    (void) len;
    if (t == 'E') {
        on_error(s, NULL, 0); /* an error too large to be seen whole still skips to Sync */
        return;
    }
    struct txn_expect *e = head(s);
    if (e != NULL && !(e->flags & (TXN_FAKE | TXN_HIDDEN)) && e->kind != 'S' && e->kind != 'Q' &&
        terminal(e->kind, t))
        pop(s);
}

const struct relay_ops txn_server_ops = {server_wants, server_header, server_message};

bool txn_after_server_pump(struct server *s)
{
    struct client *c = s->client;
    if (c == NULL)
        return false;
    if (s->stmt_violation) {
        s->stmt_violation = false;
        client_fatal(c, "0A000",
                     "pgtide: transaction blocks are not allowed in statement pooling mode");
        return true;
    }
    /* fakes due with nothing before them from the server */
    if (!relay_has_pending(&s->conn))
        (void) take_fakes(s);
    if (s->fakes.buf != NULL && s->fakes.len > 0) {
        (void) client_queue(c, s->fakes.buf, s->fakes.len);
        pkt_builder_reset(&s->fakes);
        client_flush_out(c);
        return false;
    }
    if (s->q.count == 0 && s->txn == 'I' && !s->unsynced && !relay_has_pending(&s->conn) &&
        !relay_has_pending(&c->conn) && c->copy_left == 0 && s->out_off >= s->out_builder.len &&
        !client_out_pending(c) && c->state == CLIENT_ACTIVE) {
        server_detach(s);
        return true;
    }
    return false;
}

/* ---- parameters ----------------------------------------------------------------------------- */

static const char *const reported[] = {
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "integer_datetimes",
    "server_version",
    "server_encoding",
    "is_superuser",
    "session_authorization",
    "in_hot_standby",
    "default_transaction_read_only",
    "scram_iterations",
};

/* reported, but fixed per server or set by the server alone: never SET by pgtide */
static bool not_settable(const char *name)
{
    return !strcmp(name, "server_version") || !strcmp(name, "server_encoding") ||
           !strcmp(name, "integer_datetimes") || !strcmp(name, "is_superuser") ||
           !strcmp(name, "session_authorization") || !strcmp(name, "in_hot_standby") ||
           !strcmp(name, "default_transaction_read_only") || !strcmp(name, "scram_iterations");
}

bool txn_param_is_reported(const char *name)
{
    for (size_t i = 0; i < sizeof(reported) / sizeof(reported[0]); i++)
        if (strcasecmp(reported[i], name) == 0)
            return true;
    return false;
}

int txn_param_put(struct client_param **parr, int *n, int *cap, const char *name, const char *value)
{
    struct client_param *arr = *parr;
    for (int i = 0; i < *n; i++) {
        if (strcmp(arr[i].name, name) == 0) {
            if (strcmp(arr[i].value, value) == 0)
                return 0;
            char *v = strdup(value);
            if (v == NULL)
                return -1;
            free(arr[i].value);
            arr[i].value = v;
            return 0;
        }
    }
    if (*n >= CLIENT_MAX_PARAMS)
        return -2;
    if (*n == *cap) {
        int ncap = *cap ? *cap * 2 : 4;
        struct client_param *na = realloc(arr, (size_t) ncap * sizeof(*na));
        if (na == NULL)
            return -1;
        *parr = arr = na;
        *cap = ncap;
    }
    char *nm = strdup(name), *v = strdup(value);
    if (nm == NULL || v == NULL) {
        free(nm);
        free(v);
        return -1;
    }
    arr[*n].name = nm;
    arr[*n].value = v;
    (*n)++;
    return 0;
}

uint64_t txn_param_sig(const char *name, const char *value)
{
    if (!txn_param_is_reported(name) || not_settable(name))
        return 0;
    uint64_t h = fnv(name, strlen(name), 14695981039346656037ull);
    h = fnv("=", 1, h);
    h = fnv(value, strlen(value), h);
    return h | 1; /* never 0 */
}

static uint64_t opts_sig(const struct client_param *arr, int n)
{
    uint64_t sig = 0;
    for (int i = 0; i < n; i++) {
        uint64_t h = fnv(arr[i].name, strlen(arr[i].name), 14695981039346656037ull);
        h = fnv("=", 1, h);
        sig ^= fnv(arr[i].value, strlen(arr[i].value), h);
    }
    return sig;
}

/* Parameter lists and user/database names are few and shared by most clients: each distinct one
   is kept once (a txn_pset, counted by reference) in a hash table, and freed with its last
   reference, so that values a client chose (application_name) do not pile up. */
struct txn_intern {
    struct txn_pset **buckets;
    uint32_t nbuckets, count;
};

/* What a lookup compares: a list (n >= 0) or a string s (n == -1). */
struct intern_key {
    const struct client_param *e;
    int n;
    const char *s;
};

static uint64_t key_hash(const struct intern_key *k)
{
    uint64_t h = fnv(&k->n, sizeof(k->n), 14695981039346656037ull);
    if (k->n < 0)
        return fnv(k->s, strlen(k->s), h);
    for (int i = 0; i < k->n; i++) {
        h = fnv(k->e[i].name, strlen(k->e[i].name) + 1, h);
        h = fnv(k->e[i].value, strlen(k->e[i].value) + 1, h);
    }
    return h;
}

static bool key_equal(const struct txn_pset *ps, uint64_t h, const struct intern_key *k)
{
    if (ps->hash != h || ps->n != k->n)
        return false;
    if (k->n < 0)
        return strcmp((const char *) ps->e, k->s) == 0;
    for (int i = 0; i < k->n; i++)
        if (strcmp(ps->e[i].name, k->e[i].name) != 0 || strcmp(ps->e[i].value, k->e[i].value) != 0)
            return false;
    return true;
}

/* A new entry holding a copy of k (refs 0). */
static struct txn_pset *key_copy(const struct intern_key *k, uint64_t h)
{
    size_t bytes = 0;
    if (k->n < 0)
        bytes = strlen(k->s) + 1;
    for (int i = 0; i < k->n; i++)
        bytes += strlen(k->e[i].name) + strlen(k->e[i].value) + 2;
    size_t head = sizeof(struct txn_pset) + (k->n > 0 ? (size_t) k->n : 0) * sizeof(k->e[0]);
    struct txn_pset *ps = malloc(head + bytes);
    if (ps == NULL)
        return NULL;
    ps->next = NULL;
    ps->hash = h;
    ps->refs = 0;
    ps->n = k->n;
    ps->sig = ps->sig_all = 0;
    for (int i = 0; i < k->n; i++)
        ps->sig ^= txn_param_sig(k->e[i].name, k->e[i].value);
    if (k->n > 0)
        ps->sig_all = opts_sig(k->e, k->n);
    char *d = (char *) ps + head;
    if (k->n < 0)
        memcpy(d, k->s, bytes);
    for (int i = 0; i < k->n; i++) {
        size_t ln = strlen(k->e[i].name) + 1, lv = strlen(k->e[i].value) + 1;
        ps->e[i].name = memcpy(d, k->e[i].name, ln);
        ps->e[i].value = memcpy(d + ln, k->e[i].value, lv);
        d += ln + lv;
    }
    return ps;
}

static bool intern_grow(struct txn_intern *t)
{
    uint32_t nb = t->nbuckets ? t->nbuckets * 2 : 64;
    struct txn_pset **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return t->nbuckets > 0; /* a full table still works, only slower */
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        for (struct txn_pset *ps = t->buckets[i], *next; ps != NULL; ps = next) {
            next = ps->next;
            ps->next = b[ps->hash & (nb - 1)];
            b[ps->hash & (nb - 1)] = ps;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
    return true;
}

/* The shared entry equal to k, with one more reference; NULL when out of memory. */
static struct txn_pset *intern_ref(struct proxy *p, const struct intern_key *k)
{
    struct txn_intern *t = p->interned;
    if (t == NULL) {
        if ((t = calloc(1, sizeof(*t))) == NULL)
            return NULL;
        p->interned = t;
    }
    if ((t->count >= t->nbuckets && !intern_grow(t)))
        return NULL;
    uint64_t h = key_hash(k);
    struct txn_pset **slot = &t->buckets[h & (t->nbuckets - 1)];
    for (struct txn_pset *ps = *slot; ps != NULL; ps = ps->next) {
        if (key_equal(ps, h, k)) {
            ps->refs++;
            return ps;
        }
    }
    struct txn_pset *ps = key_copy(k, h);
    if (ps == NULL)
        return NULL;
    ps->refs = 1;
    ps->next = *slot;
    *slot = ps;
    t->count++;
    return ps;
}

static void intern_unref(struct proxy *p, struct txn_pset *ps)
{
    if (ps == NULL || --ps->refs > 0)
        return;
    struct txn_intern *t = p->interned;
    for (struct txn_pset **pp = &t->buckets[ps->hash & (t->nbuckets - 1)]; *pp != NULL;
         pp = &(*pp)->next) {
        if (*pp == ps) {
            *pp = ps->next;
            break;
        }
    }
    t->count--;
    free(ps);
}

int txn_pset_set(struct proxy *p, const struct txn_pset **slot, const struct client_param *e, int n)
{
    struct txn_pset *ps = NULL;
    if (n > 0) {
        struct intern_key k = {e, n, NULL};
        if ((ps = intern_ref(p, &k)) == NULL)
            return -1;
    }
    txn_pset_put(p, *slot);
    *slot = ps;
    return 0;
}

void txn_pset_put(struct proxy *p, const struct txn_pset *ps)
{
    intern_unref(p, (struct txn_pset *) ps);
}

const char *txn_str_get(struct proxy *p, const char *s)
{
    struct intern_key k = {NULL, -1, s};
    struct txn_pset *ps = intern_ref(p, &k);
    return ps != NULL ? (const char *) ps->e : NULL;
}

void txn_str_put(struct proxy *p, const char *s)
{
    if (s != NULL)
        intern_unref(p, container_of(s, struct txn_pset, e));
}

uint32_t txn_intern_count(const struct proxy *p)
{
    return p->interned != NULL ? p->interned->count : 0;
}

void txn_intern_free(struct txn_intern *t)
{
    if (t == NULL)
        return;
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        for (struct txn_pset *ps = t->buckets[i], *next; ps != NULL; ps = next) {
            next = ps->next;
            free(ps);
        }
    }
    free(t->buckets);
    free(t);
}

void txn_client_saw_params(struct client *c, const struct client_param *in, int nin)
{
    struct client_param e[CLIENT_MAX_PARAMS];
    int n = txn_pset_len(c->ps);
    if (n > 0)
        memcpy(e, c->ps->e, (size_t) n * sizeof(e[0]));
    bool changed = false;
    for (int k = 0; k < nin; k++) {
        const char *name = in[k].name, *value = in[k].value;
        int i = 0;
        while (i < n && strcmp(e[i].name, name) != 0)
            i++;
        if (i < n && strcmp(e[i].value, value) == 0)
            continue;
        if (i == n && n >= CLIENT_MAX_PARAMS)
            continue;
        e[i].name = (char *) name;
        e[i].value = (char *) value;
        n += i == n;
        changed = true;
    }
    /* out of memory: the client's view stays as it was, as with any lost update */
    if (changed)
        (void) txn_pset_set(c->proxy, &c->ps, e, n);
}

void txn_client_saw_param(struct client *c, const char *name, const char *value)
{
    struct client_param e = {(char *) name, (char *) value};
    txn_client_saw_params(c, &e, 1);
}

static const char *find(const struct client_param *arr, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcasecmp(arr[i].name, name) == 0)
            return arr[i].value;
    return NULL;
}

bool txn_params_in_step(const struct client *c, const struct server *s)
{
    return c->welcomed && txn_pset_sig(c->ps, false) == s->ps_sig &&
           txn_pset_sig(c->opts, true) == s->applied_sig;
}

int txn_param_sync(const struct client *c, const struct server *s, struct pkt_builder *q)
{
    int n = 0;
    if (txn_params_in_step(c, s))
        return 0; /* the usual case: the server already looks as this client expects */
    /* reported parameters: what the client has seen (or asked for at startup) */
    const struct txn_pset *from = c->welcomed ? c->ps : c->params;
    const struct client_param *src = txn_pset_items(from), *opts = txn_pset_items(c->opts);
    int nsrc = txn_pset_len(from), nopts = txn_pset_len(c->opts);
    for (int i = 0; i < nsrc; i++) {
        const char *name = src[i].name, *value = src[i].value;
        if (!txn_param_is_reported(name) || not_settable(name))
            continue;
        if (!strcmp(name, "client_encoding") && !strcasecmp(value, "auto"))
            continue;
        const char *cur = server_param(s, name);
        if (cur != NULL && strcmp(cur, value) == 0)
            continue;
        server_append_set(q, name, value);
        n++;
    }
    /* startup settings: reset what another client left, set this client's */
    for (int i = 0; i < s->napplied; i++) {
        if (find(opts, nopts, s->applied[i].name) == NULL) {
            pkt_put_bytes(q, "RESET \"", 7);
            pkt_put_bytes(q, s->applied[i].name, strlen(s->applied[i].name));
            pkt_put_bytes(q, "\"; ", 3);
            n++;
        }
    }
    for (int i = 0; i < nopts; i++) {
        const char *cur = find(s->applied, s->napplied, opts[i].name);
        if (cur != NULL && strcmp(cur, opts[i].value) == 0)
            continue;
        server_append_set(q, opts[i].name, opts[i].value);
        n++;
    }
    return n;
}

void txn_settings_applied(struct server *s, const struct client *c)
{
    for (int i = 0; i < s->napplied; i++) {
        free(s->applied[i].name);
        free(s->applied[i].value);
    }
    s->napplied = 0;
    const struct client_param *opts = txn_pset_items(c->opts);
    for (int i = 0; i < txn_pset_len(c->opts); i++)
        (void) txn_param_put(&s->applied, &s->napplied, &s->applied_cap, opts[i].name,
                             opts[i].value);
    s->applied_sig = opts_sig(s->applied, s->napplied);
}
