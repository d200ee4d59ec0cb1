/*
 * hub: worker threads of the data plane, and the three ways between them and the main thread
 * (see hub.h): the control-plane lock, per-proxy message queues, and stop-the-world. Also the
 * two small tables the workers share: pool room (hub slots) and read-your-writes positions.
 */
#define _GNU_SOURCE /* sched_getaffinity */
#include "pgtide/hub.h"

#include <assert.h>
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgtide/authdb.h"
#include "pgtide/buf.h"
#include "pgtide/list.h"
#include "pgtide/log.h"
#include "pgtide/proxy.h"
#include "pgtide/ryw.h"
#include "pgtide/server.h"

/* One proxy's incoming messages. */
struct hub_inbox {
    pthread_mutex_t mu;
    struct hub_msg *q;
    int n, cap;
};

struct hub_ryw {
    struct hub_ryw *next;
    char *database, *user;
    uint64_t lsn[HUB_MAX_WORKERS + 1];
};

struct hub_worker {
    struct proxy *proxy;
    struct ev_loop *loop;
    pthread_t thread;
    bool started;
    struct hub_inbox inbox;
};

struct hub {
    pthread_mutex_t lock; /* the control-plane lock */
    pthread_cond_t arrive, release;
    bool stw;
    int stw_depth, arrived;
    unsigned gen;
    int n;                                    /* workers */
    struct hub_worker w[HUB_MAX_WORKERS + 1]; /* [0]: home (main thread) */
    ev_async kick;                            /* wakes the main loop after a worker touched it */
    pthread_mutex_t tables;                   /* slots and ryw */
    struct hub_slot *slots;
    struct hub_ryw *ryw;
    bool stopping; /* the workers are gone: messages to them are dropped */
    bool running;  /* hub_run took the control-plane lock (and started workers) */
};

static __thread bool on_main;
static __thread int lock_depth; /* hub_lock nesting on a worker thread */

void hub_main_thread(void)
{
    on_main = true;
}

bool hub_on_main(void)
{
    return on_main;
}

int hub_default_workers(void)
{
    cpu_set_t set;
    long n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    /* the computes and the clients' own processes want the other half: on 2 cores, 2 workers
       gave +5-10% on read-only pgbench, -4% on TPC-B-like, and a higher p99 than one loop
       (contrib/bench, every proxy in its own session, median of 5 runs) */
    return n >= 4 ? (int) (n / 2) : 1;
}

/* ---- the control-plane lock --------------------------------------------------------------- */

void hub_lock(const struct proxy *p)
{
    if (p->hub == NULL || on_main)
        return;
    if (lock_depth++ == 0)
        pthread_mutex_lock(&p->hub->lock);
}

static void unlock(const struct proxy *p, bool kick)
{
    if (p->hub == NULL || on_main)
        return;
    if (--lock_depth == 0) {
        /* whatever was done may have started watchers on the main loop: let it poll again */
        if (kick)
            ev_async_send(p->hub->w[0].loop, &p->hub->kick);
        pthread_mutex_unlock(&p->hub->lock);
    }
}

void hub_unlock(const struct proxy *p)
{
    unlock(p, true);
}

void hub_unlock_quiet(const struct proxy *p)
{
    unlock(p, false);
}

/* The main loop holds the lock except while it polls. */
static void main_release(struct ev_loop *loop)
{
    struct hub *h = ev_userdata(loop);
    pthread_mutex_unlock(&h->lock);
}

static void main_acquire(struct ev_loop *loop)
{
    struct hub *h = ev_userdata(loop);
    pthread_mutex_lock(&h->lock);
}

static void on_kick(struct ev_loop *loop, ev_async *w, int revents)
{
    (void) loop;
    (void) w;
    (void) revents; /* the wake-up was the point */
}

/* ---- stop-the-world ----------------------------------------------------------------------- */

void hub_stw_begin(struct hub *h)
{
    if (h == NULL)
        return;
    assert(on_main); /* a worker would wait for itself */
    if (h->stw_depth++ > 0)
        return;
    h->stw = true;
    h->arrived = 0;
    for (int i = 1; i <= h->n; i++)
        ev_async_send(h->w[i].loop, &h->w[i].proxy->stw_async);
    /* waiting releases the lock: a worker inside hub_lock finishes its call and comes round */
    while (h->arrived < h->n)
        pthread_cond_wait(&h->arrive, &h->lock);
}

void hub_stw_end(struct hub *h)
{
    if (h == NULL || --h->stw_depth > 0)
        return;
    h->stw = false;
    h->gen++;
    pthread_cond_broadcast(&h->release);
}

/* A worker's side: parked here, between callbacks, until the main thread is done. */
static void on_stw(struct ev_loop *loop, ev_async *w, int revents)
{
    (void) loop;
    (void) revents;
    struct proxy *p = w->data;
    struct hub *h = p->hub;
    pthread_mutex_lock(&h->lock);
    if (h->stw) {
        unsigned gen = h->gen;
        h->arrived++;
        pthread_cond_signal(&h->arrive);
        while (h->gen == gen)
            pthread_cond_wait(&h->release, &h->lock);
    }
    pthread_mutex_unlock(&h->lock);
}

/* ---- messages ----------------------------------------------------------------------------- */

static struct hub_worker *worker_of(const struct proxy *p)
{
    return &p->hub->w[p->worker];
}

/* A message nobody will handle: the connection in it is closed. */
static void drop(const struct hub_msg *m)
{
    if (m->kind == HUB_ADOPT) {
        SSL_free(m->conn.ssl);
        close(m->conn.fd);
        free(m->conn.data);
    } else if (m->kind == HUB_SERVER) {
        server_discard(m->server);
    } else if (m->kind == HUB_AUTHSET) {
        authdb_set_free(m->authset);
    } else if (m->kind == HUB_AUTH) {
        authdb_secret_free(m->user, m->secret);
    }
}

void hub_post(struct proxy *to, const struct hub_msg *m)
{
    if (to->hub->stopping) {
        drop(m);
        return;
    }
    struct hub_worker *w = worker_of(to);
    struct hub_inbox *in = &w->inbox;
    pthread_mutex_lock(&in->mu);
    if (in->n == in->cap) {
        int cap = in->cap ? in->cap * 2 : 16;
        struct hub_msg *q = realloc(in->q, (size_t) cap * sizeof(*q));
        if (q == NULL) {
            pthread_mutex_unlock(&in->mu);
            log_error("hub: out of memory; a message to worker %d is lost", to->worker);
            if (m->kind == HUB_SERVER)
                hub_slot_give(to->hub, m->slot, to->worker); /* it was counted there */
            drop(m);
            return;
        }
        in->q = q;
        in->cap = cap;
    }
    in->q[in->n++] = *m;
    pthread_mutex_unlock(&in->mu);
    ev_async_send(w->loop, &to->inbox_async);
}

void hub_broadcast(struct hub *h, const struct proxy *except, const struct hub_msg *m)
{
    for (int i = 1; i <= h->n; i++)
        if (h->w[i].proxy != except)
            hub_post(h->w[i].proxy, m);
}

static void on_inbox(struct ev_loop *loop, ev_async *w, int revents)
{
    (void) loop;
    (void) revents;
    struct proxy *p = w->data;
    struct hub_inbox *in = &worker_of(p)->inbox;
    for (;;) {
        pthread_mutex_lock(&in->mu);
        struct hub_msg *q = in->q;
        int n = in->n;
        in->q = NULL;
        in->n = in->cap = 0;
        pthread_mutex_unlock(&in->mu);
        if (n == 0) {
            free(q);
            return;
        }
        for (int i = 0; i < n; i++)
            proxy_handle_msg(p, &q[i]);
        free(q);
    }
}

/* ---- threads ------------------------------------------------------------------------------ */

static void *worker_main(void *arg)
{
    struct hub_worker *w = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the main loop's */
    ev_run(w->loop, 0);
    buf_free_pooled(); /* this thread's free list dies with it */
    return NULL;
}

static void inbox_init(struct hub_inbox *in)
{
    pthread_mutex_init(&in->mu, NULL);
    in->q = NULL;
    in->n = in->cap = 0;
}

static void watch(struct proxy *p)
{
    ev_async_init(&p->inbox_async, on_inbox);
    p->inbox_async.data = p;
    ev_set_priority(&p->inbox_async, EV_MAXPRI);
    ev_async_start(p->loop, &p->inbox_async);
    ev_async_init(&p->stw_async, on_stw);
    p->stw_async.data = p;
    ev_set_priority(&p->stw_async, EV_MAXPRI);
    ev_async_start(p->loop, &p->stw_async);
}

static void free_tables(struct hub *h)
{
    while (h->slots != NULL) {
        struct hub_slot *s = h->slots;
        h->slots = s->next;
        free(s->database);
        free(s->user);
        free(s);
    }
    while (h->ryw != NULL) {
        struct hub_ryw *r = h->ryw;
        h->ryw = r->next;
        free(r->database);
        free(r->user);
        free(r);
    }
}

/* Frees workers 1..n that were created (their threads not running). */
static void free_workers(struct hub *h)
{
    for (int i = 1; i <= h->n; i++) {
        struct hub_worker *w = &h->w[i];
        if (w->proxy != NULL) {
            ev_async_stop(w->loop, &w->proxy->inbox_async);
            ev_async_stop(w->loop, &w->proxy->stw_async);
            proxy_free(w->proxy);
        }
        if (w->loop != NULL)
            ev_loop_destroy(w->loop);
        free(w->inbox.q);
        pthread_mutex_destroy(&w->inbox.mu);
    }
}

struct hub *hub_new(struct proxy *home, int n, char *err, size_t errlen)
{
    if (n < 2 || n > HUB_MAX_WORKERS) {
        snprintf(err, errlen, "workers must be 1 to %d", HUB_MAX_WORKERS);
        return NULL;
    }
    struct hub *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->tables, NULL);
    pthread_cond_init(&h->arrive, NULL);
    pthread_cond_init(&h->release, NULL);
    h->w[0].proxy = home;
    h->w[0].loop = home->loop;
    inbox_init(&h->w[0].inbox);
    home->hub = h;
    home->worker = 0;
    watch(home);
    for (int i = 1; i <= n; i++) {
        struct hub_worker *w = &h->w[i];
        h->n = i;
        inbox_init(&w->inbox);
        w->loop = ev_loop_new(EVFLAG_AUTO);
        if (w->loop == NULL) {
            snprintf(err, errlen, "cannot create the event loop of worker %d", i);
            goto fail;
        }
        w->proxy = proxy_new_worker(home, w->loop, i, err, errlen);
        if (w->proxy == NULL)
            goto fail;
        w->proxy->hub = h;
        watch(w->proxy);
    }
    return h;
fail:
    free_workers(h);
    ev_async_stop(home->loop, &home->inbox_async);
    ev_async_stop(home->loop, &home->stw_async);
    home->hub = NULL;
    free(h->w[0].inbox.q);
    free(h);
    return NULL;
}

int hub_run(struct hub *h, char *err, size_t errlen)
{
    struct ev_loop *main_loop = h->w[0].loop;
    ev_async_init(&h->kick, on_kick);
    ev_async_start(main_loop, &h->kick);
    ev_set_userdata(main_loop, h);
    pthread_mutex_lock(&h->lock); /* held by the main thread from now on, but while polling */
    h->running = true;
    ev_set_loop_release_cb(main_loop, main_release, main_acquire);
    for (int i = 1; i <= h->n; i++) {
        int rc = pthread_create(&h->w[i].thread, NULL, worker_main, &h->w[i]);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start worker %d: %s", i, strerror(rc));
            return -1;
        }
        h->w[i].started = true;
    }
    log_info("data plane: %d worker threads", h->n);
    return 0;
}

void hub_stop(struct hub *h)
{
    if (h == NULL)
        return;
    struct hub_msg m = {.kind = HUB_STOP};
    hub_broadcast(h, NULL, &m);
    if (h->running)                     /* refused at startup: never taken */
        pthread_mutex_unlock(&h->lock); /* the workers may need it while they stop */
    for (int i = 1; i <= h->n; i++)
        if (h->w[i].started)
            pthread_join(h->w[i].thread, NULL);
    struct ev_loop *main_loop = h->w[0].loop;
    ev_set_loop_release_cb(main_loop, NULL, NULL);
    ev_async_stop(main_loop, &h->kick);
    struct proxy *home = h->w[0].proxy;
    ev_async_stop(main_loop, &home->inbox_async);
    ev_async_stop(main_loop, &home->stw_async);
    h->stopping = true;
    /* messages nobody will read: connections in them are closed */
    for (int i = 0; i <= h->n; i++) {
        struct hub_inbox *in = &h->w[i].inbox;
        for (int k = 0; k < in->n; k++)
            drop(&in->q[k]);
        in->n = 0;
    }
    free_workers(h);
    free(h->w[0].inbox.q);
    pthread_mutex_destroy(&h->w[0].inbox.mu);
    home->hub = NULL;
    free_tables(h);
    pthread_mutex_destroy(&h->tables);
    pthread_cond_destroy(&h->arrive);
    pthread_cond_destroy(&h->release);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

int hub_size(const struct hub *h)
{
    return h->n;
}

struct proxy *hub_worker(const struct hub *h, int i)
{
    return h->w[i].proxy;
}

/* ---- pool room ---------------------------------------------------------------------------- */

struct hub_slot *hub_slot_get(struct hub *h, const struct compute *c, const char *database,
                              const char *user)
{
    pthread_mutex_lock(&h->tables);
    struct hub_slot *s;
    for (s = h->slots; s != NULL; s = s->next)
        if (s->compute == c && strcmp(s->database, database) == 0 && strcmp(s->user, user) == 0)
            break;
    if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL) {
        s->compute = c;
        s->database = strdup(database);
        s->user = strdup(user);
        if (s->database == NULL || s->user == NULL) {
            free(s->database);
            free(s->user);
            free(s);
            s = NULL;
        } else {
            s->next = h->slots;
            h->slots = s;
        }
    }
    pthread_mutex_unlock(&h->tables);
    return s;
}

static bool take_locked(struct hub *h, struct hub_slot *s, int worker, int limit)
{
    bool ok = false;
    if (__atomic_load_n(&s->open, __ATOMIC_SEQ_CST) < limit) {
        pthread_mutex_lock(&h->tables);
        if (s->open < limit) {
            __atomic_store_n(&s->open, s->open + 1, __ATOMIC_SEQ_CST);
            __atomic_store_n(&s->per[worker], s->per[worker] + 1, __ATOMIC_RELAXED);
            ok = true;
        }
        pthread_mutex_unlock(&h->tables);
    }
    return ok;
}

bool hub_slot_try(struct hub *h, struct hub_slot *s, int worker, int limit)
{
    return take_locked(h, s, worker, limit);
}

int hub_slot_open(const struct hub_slot *s)
{
    return __atomic_load_n(&s->open, __ATOMIC_SEQ_CST);
}

bool hub_slot_take(struct hub *h, struct hub_slot *s, int worker, int limit)
{
    if (take_locked(h, s, worker, limit))
        return true;
    /* waiting from here on; a give that ran before the bit was set saw no one to tell, so look
       at the room once more (a give after it sees the bit and posts HUB_POOLS) */
    hub_slot_want(h, s, worker);
    return take_locked(h, s, worker, limit);
}

void hub_slot_want(struct hub *h, struct hub_slot *s, int worker)
{
    uint32_t bit = 1u << worker;
    if ((__atomic_load_n(&s->demand, __ATOMIC_RELAXED) & bit) != 0)
        return;
    __atomic_store_n(&s->demand_ms[worker], proxy_now_ms(), __ATOMIC_RELAXED);
    if ((__atomic_fetch_or(&s->demand, bit, __ATOMIC_SEQ_CST) & bit) == 0) {
        struct hub_msg m = {.kind = HUB_TRIM}; /* only when newly waiting: no storm */
        hub_broadcast(h, h->w[worker].proxy, &m);
    }
}

void hub_slot_give(struct hub *h, struct hub_slot *s, int worker)
{
    pthread_mutex_lock(&h->tables);
    if (s->open > 0)
        __atomic_store_n(&s->open, s->open - 1, __ATOMIC_SEQ_CST);
    if (s->per[worker] > 0)
        __atomic_store_n(&s->per[worker], s->per[worker] - 1, __ATOMIC_RELAXED);
    /* the others that wait are told; the giver's own wish stays (it gave the room away: it must
       not be woken to take it straight back) */
    uint32_t mine = 1u << worker;
    uint32_t want = __atomic_fetch_and(&s->demand, mine, __ATOMIC_SEQ_CST) & ~mine;
    pthread_mutex_unlock(&h->tables);
    if (want == 0 || h->stopping)
        return;
    struct hub_msg m = {.kind = HUB_POOLS};
    for (int i = 1; i <= h->n; i++)
        if (want & (1u << i))
            hub_post(h->w[i].proxy, &m);
}

void hub_slot_satisfied(struct hub_slot *s, int worker)
{
    if (__atomic_load_n(&s->demand, __ATOMIC_RELAXED) & (1u << worker))
        __atomic_and_fetch(&s->demand, ~(1u << worker), __ATOMIC_RELAXED);
}

int hub_slot_yield_to(const struct hub_slot *s, int worker, bool local_waiters, int64_t now_ms)
{
    uint32_t want = __atomic_load_n(&s->demand, __ATOMIC_RELAXED) & ~(1u << worker);
    if (want == 0)
        return -1;
    int mine = __atomic_load_n(&s->per[worker], __ATOMIC_RELAXED);
    for (int j = 0; j <= HUB_MAX_WORKERS; j++) {
        if (!(want & (1u << j)))
            continue;
        int theirs = __atomic_load_n(&s->per[j], __ATOMIC_RELAXED);
        int64_t waited = now_ms - __atomic_load_n(&s->demand_ms[j], __ATOMIC_RELAXED);
        /* idle here: at once to a worker that has none, else once it has waited a little */
        if (!local_waiters
                ? theirs == 0 || waited >= HUB_IDLE_YIELD_MS
                : mine > theirs + 1 || (theirs == 0 && mine > 0 && waited >= HUB_STARVE_MS))
            return j;
    }
    return -1;
}

void hub_slot_move(struct hub *h, struct hub_slot *s, int from, int to)
{
    pthread_mutex_lock(&h->tables);
    if (s->per[from] > 0)
        __atomic_store_n(&s->per[from], s->per[from] - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&s->per[to], s->per[to] + 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&h->tables);
    /* served: it asks again (hub_slot_want) if clients still wait there */
    __atomic_and_fetch(&s->demand, ~(1u << to), __ATOMIC_SEQ_CST);
}

/* ---- read-your-writes --------------------------------------------------------------------- */

static struct hub_ryw *ryw_find(struct hub *h, const char *database, const char *user)
{
    for (struct hub_ryw *r = h->ryw; r != NULL; r = r->next)
        if (strcmp(r->database, database) == 0 && strcmp(r->user, user) == 0)
            return r;
    return NULL;
}

void hub_ryw_note(struct hub *h, int worker, const char *database, const char *user, uint64_t lsn)
{
    pthread_mutex_lock(&h->tables);
    struct hub_ryw *r = ryw_find(h, database, user);
    if (r == NULL && (r = calloc(1, sizeof(*r))) != NULL) {
        r->database = strdup(database);
        r->user = strdup(user);
        if (r->database == NULL || r->user == NULL) {
            free(r->database);
            free(r->user);
            free(r);
            r = NULL;
        } else {
            r->next = h->ryw;
            h->ryw = r;
        }
    }
    if (r != NULL)
        r->lsn[worker] = lsn;
    pthread_mutex_unlock(&h->tables);
}

uint64_t hub_ryw_get(struct hub *h, const char *database, const char *user)
{
    uint64_t need = 0;
    pthread_mutex_lock(&h->tables);
    struct hub_ryw *r = ryw_find(h, database, user);
    for (int i = 0; r != NULL && i <= h->n; i++) {
        if (r->lsn[i] == RYW_LSN_UNKNOWN) {
            need = RYW_LSN_UNKNOWN;
            break;
        }
        if (r->lsn[i] > need)
            need = r->lsn[i];
    }
    pthread_mutex_unlock(&h->tables);
    return need;
}
