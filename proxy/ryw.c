/*
 * ryw: read-your-writes. The relay tells it about every CommandComplete of a primary's server
 * (ryw_note_command) and every ReadyForQuery (ryw_hold). A ReadyForQuery that ends a transaction
 * which may have written is held: the server joins a queue and stops being read, and one LSN
 * read on pgtide's own libpq connection to the primary (kept open while in use, closed after a
 * few idle seconds) settles every queued transaction that ended before it started. Its result
 * raises the causal LSN of each settled transaction's (database, user), kept in the primary's
 * pool; then each settled server is pumped again and its ReadyForQuery reaches the client. A
 * read that fails (after one retry on a fresh connection when a reused one broke) releases the
 * queue with RYW_LSN_UNKNOWN for those pools (primary only), and a read a second later settles
 * them. All completions arrive from loop callbacks, never from inside a relay handler.
 */
#include "pgtide/ryw.h"
#include "pgtide/hub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <libpq-fe.h>

#include "pgtide/client.h"
#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/list.h"
#include "pgtide/log.h"
#include "pgtide/pkt.h"
#include "pgtide/pool.h"
#include "pgtide/proxy.h"
#include "pgtide/replpolicy.h"
#include "pgtide/server.h"

#define RYW_TIMEOUT_S 2.0 /* bound of one LSN read, connection included */
#define RYW_IDLE_S    5.0 /* an unused connection is closed after this */
#define RYW_RETRY_S   1.0 /* after a failure: the next read that settles unknown pools */
/* the insert position is at or past the end of every record inserted, the commit's included,
   even with synchronous_commit = off (the write position could still be before it) */
#define RYW_SQL "SELECT pg_catalog.pg_current_wal_insert_lsn()::text"

/* ---- pure rules ------------------------------------------------------------------------------ */

/* Commands that cannot write, whichever endpoint: transaction control, settings, cursors and
   statements by name, LISTEN. Matched against the whole tag. */
static const char *const never_write[] = {"BEGIN",
                                          "START TRANSACTION",
                                          "COMMIT",
                                          "ROLLBACK",
                                          "SAVEPOINT",
                                          "RELEASE",
                                          "SET",
                                          "RESET",
                                          "SHOW",
                                          "SET CONSTRAINTS",
                                          "DEALLOCATE",
                                          "DEALLOCATE ALL",
                                          "DISCARD ALL",
                                          "DISCARD PLANS",
                                          "DISCARD TEMP",
                                          "DISCARD SEQUENCES",
                                          "PREPARE",
                                          "CLOSE CURSOR",
                                          "CLOSE CURSOR ALL",
                                          "DECLARE CURSOR",
                                          "LISTEN",
                                          "UNLISTEN"};

/* Taken as reads on the reader endpoint: the first word of the tag ("SELECT 3"). */
static const char *const reader_reads[] = {"SELECT", "FETCH", "MOVE", "SHOW"};

bool ryw_command_may_write(const char *tag, bool reader)
{
    if (tag == NULL)
        return true;
    for (size_t i = 0; i < sizeof(never_write) / sizeof(never_write[0]); i++)
        if (strcmp(tag, never_write[i]) == 0)
            return false;
    if (!reader)
        return true;
    size_t word = strcspn(tag, " ");
    for (size_t i = 0; i < sizeof(reader_reads) / sizeof(reader_reads[0]); i++)
        if (strlen(reader_reads[i]) == word && strncmp(tag, reader_reads[i], word) == 0)
            return false;
    return true;
}

uint64_t ryw_seq_need(const struct ryw_seq *q, bool *start_now)
{
    *start_now = !q->inflight;
    return q->started + 1;
}

void ryw_seq_start(struct ryw_seq *q)
{
    q->started++;
    q->inflight = true;
}

void ryw_seq_end(struct ryw_seq *q)
{
    q->done = q->started;
    q->inflight = false;
}

/* ---- the LSN reader ------------------------------------------------------------------------ */

enum ryw_phase { RYW_DOWN, RYW_CONNECTING, RYW_READY, RYW_SENDING, RYW_READING };

struct ryw {
    struct proxy *p;
    struct list_node held; /* servers (ryw_node) whose ReadyForQuery waits */
    struct ryw_seq seq;
    PGconn *conn;
    enum ryw_phase phase;
    bool fresh;   /* the connection was opened for the running read */
    bool unknown; /* some pool holds RYW_LSN_UNKNOWN */
    bool failed;  /* the running read failed (reported from the timer) */
    bool got;     /* the running read has its value */
    uint64_t lsn;
    ev_io io;
    ev_timer timer; /* a read's bound, a deferred failure, the idle close, the retry */
    char err[200];
    uint64_t reads, holds; /* for the log */
};

static void ryw_read_start(struct ryw *r);
static void ryw_read_end(struct ryw *r);

static void ryw_watch(struct ryw *r, int events)
{
    struct ev_loop *loop = r->p->loop;
    ev_io_stop(loop, &r->io);
    int fd = PQsocket(r->conn);
    if (fd < 0)
        return;
    ev_io_set(&r->io, fd, events);
    ev_io_start(loop, &r->io);
}

static void ryw_disconnect(struct ryw *r)
{
    ev_io_stop(r->p->loop, &r->io);
    if (r->conn != NULL)
        PQfinish(r->conn);
    r->conn = NULL;
    r->phase = RYW_DOWN;
}

/* The running read failed with msg: once more on a fresh connection when a reused one broke
   (the primary may have restarted), else reported from the loop through the timer. */
static void ryw_fail(struct ryw *r, const char *msg)
{
    bool retry = !r->fresh;
    ryw_disconnect(r);
    if (retry) {
        r->fresh = true;
        r->seq.started--; /* the same read, again */
        ryw_read_start(r);
        return;
    }
    snprintf(r->err, sizeof(r->err), "%s", msg != NULL && msg[0] ? msg : "unknown error");
    r->err[strcspn(r->err, "\n")] = '\0';
    r->failed = true;
    ev_timer_stop(r->p->loop, &r->timer);
    ev_timer_set(&r->timer, 0, 0);
    ev_timer_start(r->p->loop, &r->timer);
}

static void ryw_send(struct ryw *r)
{
    r->got = false;
    if (!PQsendQuery(r->conn, RYW_SQL)) {
        ryw_fail(r, PQerrorMessage(r->conn));
        return;
    }
    int f = PQflush(r->conn);
    if (f < 0) {
        ryw_fail(r, PQerrorMessage(r->conn));
        return;
    }
    r->phase = f == 0 ? RYW_READING : RYW_SENDING;
    ryw_watch(r, f == 0 ? EV_READ : EV_READ | EV_WRITE);
}

static void ryw_connect_step(struct ryw *r)
{
    switch (PQconnectPoll(r->conn)) {
    case PGRES_POLLING_OK:
        r->phase = RYW_READY;
        ryw_send(r);
        return;
    case PGRES_POLLING_READING:
        ryw_watch(r, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        ryw_watch(r, EV_WRITE);
        return;
    default:
        ryw_fail(r, PQerrorMessage(r->conn));
    }
}

static void ryw_quiet(void *arg, const char *msg)
{
    (void) arg;
    (void) msg;
}

static void ryw_connect(struct ryw *r)
{
    struct compute *pc = r->p->primary;
    char ci[2600], host[2048];
    size_t j = 0;
    const char *h = compute_host(pc);
    for (size_t i = 0; h[i] != '\0' && j + 2 < sizeof(host); i++) {
        if (h[i] == '\'' || h[i] == '\\')
            host[j++] = '\\';
        host[j++] = h[i];
    }
    host[j] = '\0';
    snprintf(ci, sizeof(ci),
             "host='%s' port=%d dbname=postgres user=postgres application_name=pgtide-ryw "
             "connect_timeout=2",
             host, compute_port(pc));
    r->conn = PQconnectStart(ci);
    if (r->conn == NULL || PQstatus(r->conn) == CONNECTION_BAD) {
        ryw_fail(r, r->conn ? PQerrorMessage(r->conn) : "out of memory");
        return;
    }
    PQsetNoticeProcessor(r->conn, ryw_quiet, NULL);
    r->phase = RYW_CONNECTING;
    ryw_watch(r, EV_WRITE); /* as if PQconnectPoll had said PGRES_POLLING_WRITING */
}

/* Collects what the server sent; ends the read when the query's results are all in. */
static void ryw_collect(struct ryw *r)
{
    if (!PQconsumeInput(r->conn)) {
        ryw_fail(r, PQerrorMessage(r->conn));
        return;
    }
    while (!PQisBusy(r->conn)) {
        PGresult *res = PQgetResult(r->conn);
        if (res == NULL) {
            if (r->got) {
                r->phase = RYW_READY;
                ev_io_stop(r->p->loop, &r->io);
                ryw_read_end(r);
            } else {
                /* a server error: retried once on a fresh connection when this one was reused
                   (its backend may have gone with a restart of the primary) */
                ryw_fail(r, r->err[0] ? r->err : "no LSN in the answer");
            }
            return;
        }
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 1 &&
            replpolicy_parse_lsn(PQgetvalue(res, 0, 0), &r->lsn) == 0)
            r->got = true;
        else
            snprintf(r->err, sizeof(r->err), "%s", PQresultErrorMessage(res));
        PQclear(res);
    }
}

static void ryw_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void) loop;
    struct ryw *r = w->data;
    switch (r->phase) {
    case RYW_CONNECTING:
        ryw_connect_step(r);
        return;
    case RYW_SENDING:
        if (revents & EV_WRITE) {
            int f = PQflush(r->conn);
            if (f < 0) {
                ryw_fail(r, PQerrorMessage(r->conn));
                return;
            }
            if (f == 0) {
                r->phase = RYW_READING;
                ryw_watch(r, EV_READ);
            }
        }
        if (revents & EV_READ)
            ryw_collect(r);
        return;
    case RYW_READING:
        ryw_collect(r);
        return;
    default:
        ev_io_stop(r->p->loop, w);
        return;
    }
}

static void ryw_read_start(struct ryw *r)
{
    struct ev_loop *loop = r->p->loop;
    ryw_seq_start(&r->seq);
    r->failed = false;
    r->err[0] = '\0';
    r->reads++;
    ev_timer_stop(loop, &r->timer);
    ev_timer_set(&r->timer, RYW_TIMEOUT_S, 0);
    ev_timer_start(loop, &r->timer);
    if (r->phase == RYW_READY && PQstatus(r->conn) == CONNECTION_OK) {
        r->fresh = false;
        ryw_send(r);
        return;
    }
    ryw_disconnect(r);
    r->fresh = true;
    ryw_connect(r);
}

/* Stores lsn (or RYW_LSN_UNKNOWN) as the causal LSN of pool: the higher wins, unknown wins
   until a known value comes. */
/* With worker threads, readers on any worker see it (hub.h). */
static void ryw_publish(const struct pool *pool)
{
    const struct proxy *p = pool->proxy;
    if (p->hub != NULL)
        hub_ryw_note(p->hub, p->worker, pool->database, pool->user, pool->ryw_lsn);
}

static void ryw_store(struct pool *pool, bool ok, uint64_t lsn)
{
    if (!ok)
        pool->ryw_lsn = RYW_LSN_UNKNOWN;
    else if (pool->ryw_lsn == RYW_LSN_UNKNOWN || pool->ryw_lsn < lsn)
        pool->ryw_lsn = lsn;
    ryw_publish(pool);
}

/* The running read ended (r->failed or r->lsn): settles and releases what it covers. */
static void ryw_read_end(struct ryw *r)
{
    struct ev_loop *loop = r->p->loop;
    bool ok = !r->failed;
    ryw_seq_end(&r->seq);
    ev_timer_stop(loop, &r->timer);
    if (!ok)
        log_warn("read_your_writes: the primary's WAL position was not read (%s): readers of "
                 "the writing users go to the primary until it is",
                 r->err);
    if (ok && r->unknown) {
        struct list_node *it, *tmp;
        list_for_each_safe(it, tmp, &r->p->pools)
        {
            struct pool *pool = container_of(it, struct pool, node);
            if (pool->ryw_lsn == RYW_LSN_UNKNOWN) {
                pool->ryw_lsn = r->lsn; /* this read started after their failure */
                ryw_publish(pool);
            }
        }
        r->unknown = false;
    }
    r->unknown |= !ok;
    struct list_node ready;
    list_init(&ready);
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &r->held)
    {
        struct server *s = container_of(it, struct server, ryw_node);
        if (s->ryw_need > r->seq.done)
            continue;
        ryw_store(s->pool, ok, r->lsn);
        list_del(&s->ryw_node);
        list_add_tail(&ready, &s->ryw_node);
    }
    /* pumping may close other servers of the list (they unlink themselves) */
    while (!list_empty(&ready)) {
        struct server *s = container_of(list_first(&ready), struct server, ryw_node);
        list_del(&s->ryw_node);
        s->ryw_held = false;
        s->ryw_pass = true;
        server_pump(s);
    }
    /* a released server held its next (pipelined) transaction and started the next read
       itself: that read owns the connection and the timer now */
    if (r->seq.inflight)
        return;
    if (!list_empty(&r->held))
        ryw_read_start(r);
    else {
        ev_timer_set(&r->timer, r->unknown ? RYW_RETRY_S : RYW_IDLE_S, 0);
        ev_timer_start(loop, &r->timer);
    }
}

static void ryw_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) revents;
    struct ryw *r = w->data;
    if (r->seq.inflight) {
        if (!r->failed) { /* the bound passed */
            r->fresh = true;
            snprintf(r->err, sizeof(r->err), "no answer within %.0f s", RYW_TIMEOUT_S);
            r->failed = true;
        }
        ryw_disconnect(r);
        ryw_read_end(r);
        return;
    }
    if (r->unknown) {
        if (compute_get_state(r->p->primary) == COMPUTE_RUNNING) {
            ryw_read_start(r); /* settles the pools left unknown */
            return;
        }
        ev_timer_set(&r->timer, RYW_RETRY_S, 0);
        ev_timer_start(loop, &r->timer);
        return;
    }
    if (r->conn != NULL) {
        log_debug("read_your_writes: closing the idle LSN connection (%llu reads for %llu "
                  "transactions so far)",
                  (unsigned long long) r->reads, (unsigned long long) r->holds);
        ryw_disconnect(r);
    }
}

static struct ryw *ryw_get(struct proxy *p)
{
    if (p->ryw != NULL)
        return p->ryw;
    struct ryw *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->p = p;
    list_init(&r->held);
    ev_io_init(&r->io, ryw_io_cb, -1, 0);
    r->io.data = r;
    ev_timer_init(&r->timer, ryw_timer_cb, 0, 0);
    r->timer.data = r;
    p->ryw = r;
    return r;
}

void ryw_free(struct ryw *r)
{
    if (r == NULL)
        return;
    ev_timer_stop(r->p->loop, &r->timer);
    ryw_disconnect(r);
    while (!list_empty(&r->held)) {
        struct server *s = container_of(list_first(&r->held), struct server, ryw_node);
        list_del(&s->ryw_node);
        s->ryw_held = false;
    }
    free(r);
}

/* ---- relay hooks ----------------------------------------------------------------------------- */

/* read_your_writes applies to server s: on, a replica set exists, s is the primary's. */
static bool ryw_applies(const struct server *s)
{
    const struct proxy *p = s->pool->proxy;
    return p->cfg->read_your_writes && p->replicas != NULL && s->pool->compute == p->primary;
}

void ryw_note_command(struct server *s, uint8_t type, const uint8_t *body, uint32_t blen)
{
    if (s->ryw_wrote || !ryw_applies(s))
        return;
    bool reader = s->client != NULL && s->client->reader;
    if (type != 'C') {
        s->ryw_wrote = true; /* a FunctionCall's answer */
        return;
    }
    if (blen == 0 || body[blen - 1] != '\0') {
        s->ryw_wrote = true;
        return;
    }
    s->ryw_wrote = ryw_command_may_write((const char *) body, reader);
}

bool ryw_hold(struct server *s, const uint8_t *body, uint32_t blen)
{
    if (s->ryw_pass) {
        s->ryw_pass = false;
        return false;
    }
    if (s->ryw_held)
        return true;
    char st;
    if (!s->ryw_wrote || pkt_parse_ready(body, blen, &st) != PKT_OK || st != 'I')
        return false;
    s->ryw_wrote = false;
    if (!ryw_applies(s))
        return false;
    struct ryw *r = ryw_get(s->pool->proxy);
    if (r == NULL) {
        s->pool->ryw_lsn = RYW_LSN_UNKNOWN; /* out of memory: primary only, never stale */
        ryw_publish(s->pool);
        return false;
    }
    bool start;
    s->ryw_need = ryw_seq_need(&r->seq, &start);
    s->ryw_held = true;
    list_add_tail(&r->held, &s->ryw_node);
    r->holds++;
    if (start)
        ryw_read_start(r);
    return true;
}

bool ryw_holding(const struct server *s)
{
    return s->ryw_held;
}

void ryw_server_gone(struct server *s)
{
    if (s->ryw_held) {
        list_del(&s->ryw_node);
        s->ryw_held = false;
    }
    s->ryw_pass = false;
    s->ryw_wrote = false;
}

uint64_t ryw_reader_lsn(struct proxy *p, const char *database, const char *user)
{
    if (!p->cfg->read_your_writes)
        return 0;
    if (p->hub != NULL)
        return hub_ryw_get(p->hub, database, user);
    struct pool *pool = pool_get(p, database, user);
    return pool != NULL ? pool->ryw_lsn : RYW_LSN_UNKNOWN;
}
