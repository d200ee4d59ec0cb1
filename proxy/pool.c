/*
 * pool: server connections per (database, user) and the FIFO of clients waiting for one.
 * A waiting client gets the first idle server; when none is idle and the pool is below
 * pool_size a new connection is opened for it. A server that finishes its reset serves the
 * next waiter before it is parked idle.
 */
#include "pgtide/pool.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "pgtide/client.h"
#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/hub.h"
#include "pgtide/log.h"
#include "pgtide/proxy.h"
#include "pgtide/replica.h"
#include "pgtide/server.h"

struct pool *pool_get(struct proxy *p, const char *database, const char *user)
{
    return pool_get_for(p, p->primary, database, user);
}

struct pool *pool_get_for(struct proxy *p, struct compute *compute, const char *database,
                          const char *user)
{
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &p->pools)
    {
        struct pool *pool = container_of(it, struct pool, node);
        if (pool->compute == compute && strcmp(pool->database, database) == 0 &&
            strcmp(pool->user, user) == 0)
            return pool;
    }
    struct pool *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return NULL;
    pool->database = strdup(database);
    pool->user = strdup(user);
    if (pool->database == NULL || pool->user == NULL) {
        free(pool->database);
        free(pool->user);
        free(pool);
        return NULL;
    }
    pool->proxy = p;
    pool->compute = compute;
    pool->pool_mode = config_pool_mode_for(
        p->cfg->user_pool_modes, user,
        config_pool_mode_for(p->cfg->database_pool_modes, database, p->cfg->pool_mode));
    list_init(&pool->opening);
    list_init(&pool->idle);
    list_init(&pool->used);
    list_init(&pool->waiting);
    if (p->hub != NULL && (pool->slot = hub_slot_get(p->hub, compute, database, user)) == NULL) {
        free(pool->database);
        free(pool->user);
        free(pool);
        return NULL;
    }
    list_add_tail(&p->pools, &pool->node);
    return pool;
}

/* Room for one more server: below pool_size here, or, with workers, in their sum. */
static bool room_take(struct pool *pool)
{
    const struct proxy *p = pool->proxy;
    if (pool->slot == NULL)
        return pool->nservers < p->cfg->pool_size;
    return hub_slot_take(p->hub, pool->slot, p->worker, p->cfg->pool_size);
}

/* Room for one more server below `limit` without waiting for it (min_pool_size: nobody waits). */
static bool room_try(struct pool *pool, int limit)
{
    const struct proxy *p = pool->proxy;
    if (pool->slot == NULL)
        return pool->nservers < limit;
    return hub_slot_try(p->hub, pool->slot, p->worker, limit);
}

/* Servers open for this pool: here, or, with workers, in all of them together (min_pool_size
   counts them all, as pool_size does: it is per (database, user), not per worker). */
static int open_total(const struct pool *pool)
{
    return pool->slot == NULL ? pool->nservers : hub_slot_open(pool->slot);
}

void pool_room_give(struct pool *pool)
{
    if (pool->slot != NULL)
        hub_slot_give(pool->proxy->hub, pool->slot, pool->proxy->worker);
}

/* Opens servers while clients wait and there is room; each opening server serves one waiter. */
static void grow(struct pool *pool)
{
    struct proxy *p = pool->proxy;
    size_t want = list_count(&pool->waiting);
    size_t opening = list_count(&pool->opening);
    if (pool->yielding)
        return; /* the room just given back is another worker's */
    while (opening < want && room_take(pool)) {
        if (server_new(pool) == NULL) {
            pool_room_give(pool);
            pool_login_failed(pool, "08006", "pgtide: could not connect to the server");
            return;
        }
        opening++;
    }
    (void) p;
    if (pool->slot != NULL && opening >= want)
        hub_slot_satisfied(pool->slot, pool->proxy->worker);
}

void pool_learn_params(struct pool *pool, const struct server *s)
{
    if (pool->nparams > 0)
        return;
    for (int i = 0;
         i < s->nparams && pool->nparams < (int) (sizeof(pool->params) / sizeof(pool->params[0]));
         i++) {
        char *n = strdup(s->params[i].name), *v = strdup(s->params[i].value);
        if (n == NULL || v == NULL) {
            free(n);
            free(v);
            return;
        }
        pool->params[pool->nparams].name = n;
        pool->params[pool->nparams].value = v;
        pool->nparams++;
    }
}

/* Idle servers go to the waiters, in order. Each turn takes one server off the idle list: it
   serves the first waiter, or is yielded to another worker (pool_server_idle), after which the
   next one is offered, so no waiter is left beside an idle server. */
static void serve_waiters(struct pool *pool)
{
    struct list_node *first;
    while (!list_empty(&pool->waiting) && (first = list_first(&pool->idle)) != NULL)
        pool_server_idle(pool, container_of(first, struct server, node));
}

void pool_request(struct pool *pool, struct client *c)
{
    list_add_tail(&pool->waiting, &c->wait_node);
    serve_waiters(pool);
    if (!list_empty(&pool->waiting))
        grow(pool);
}

void pool_cancel_wait(struct pool *pool, struct client *c)
{
    (void) pool;
    list_del(&c->wait_node);
}

void pool_forget_setup(struct pool *pool, struct client *c)
{
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &pool->used)
    {
        struct server *s = container_of(it, struct server, node);
        if (s->client == c && s->state == SERVER_SETUP)
            s->client = NULL; /* its SET finishes, then it goes back (server_release) */
    }
}

/* Gives s to worker `to`, waiting at pool_size: handed over as it is when it can move, else
   closed so that worker gets its room. This pool does not take the room back itself (its own
   waiters are noted as demand, served when the others yield). */
static void yield(struct pool *pool, struct server *s, int to)
{
    struct proxy *p = pool->proxy;
    if (server_movable(s)) {
        server_hand_over(s, hub_worker(p->hub, to));
    } else {
        pool->yielding = true;
        server_close(s, "pool room given to another worker");
        pool->yielding = false;
    }
    if (!list_empty(&pool->waiting))
        hub_slot_want(p->hub, pool->slot, p->worker);
}

void pool_server_idle(struct pool *pool, struct server *s)
{
    struct list_node *first = list_first(&pool->waiting);
    /* with waiters here, a server serves at least one of them before it may go */
    int to = -1;
    if (pool->slot != NULL && (first == NULL || s->served))
        to = hub_slot_yield_to(pool->slot, pool->proxy->worker, first != NULL, proxy_now_ms());
    if (to >= 0) {
        yield(pool, s, to);
        return;
    }
    if (first == NULL) {
        s->last_used_ms = proxy_now_ms();
        return;
    }
    struct client *c = container_of(first, struct client, wait_node);
    list_del(&c->wait_node);
    pool->wait_us += (uint64_t) (proxy_now_ms() - c->wait_start_ms) * 1000;
    server_assign(s, c);
}

/* Most recently used first by default (LIFO, as PgBouncer): at low load the busy few backends
   stay warm and the rest age out under server_idle_timeout, so the compute keeps fewer
   backends. server_round_robin: every server in turn. Measured (alternating runs, pgbench,
   pool 20, transaction pooling): round-robin 1.03x on -S -c 16 and -M prepared in one series,
   the same on TPC-B-like and -S -c 256; an earlier series had LIFO 1.08x on TPC-B-like and
   1.15x on -S -c 256. */
void pool_idle_add(struct pool *pool, struct server *s)
{
    if (pool->proxy->cfg->server_round_robin)
        list_add_tail(&pool->idle, &s->node);
    else
        list_add_head(&pool->idle, &s->node);
}

struct server *pool_idle_coldest(struct pool *pool)
{
    struct list_node *n =
        pool->proxy->cfg->server_round_robin ? list_first(&pool->idle) : list_last(&pool->idle);
    return n != NULL ? container_of(n, struct server, node) : NULL;
}

void pool_server_adopted(struct pool *pool, struct server *s)
{
    pool->nservers++;
    pool_idle_add(pool, s);
    pool_server_idle(pool, s);
    if (!list_empty(&pool->waiting))
        grow(pool); /* more wait: room, or ask the others again */
}

void pool_server_gone(struct pool *pool, struct server *s)
{
    (void) s;
    if (!list_empty(&pool->waiting) && !pool->proxy->shutting_down)
        grow(pool);
}

void pool_login_failed(struct pool *pool, const char *sqlstate, const char *msg)
{
    struct proxy *p = pool->proxy;
    /* a replica that cannot be reached (its postmaster may be dead but not yet reaped, or
       shutting down) leaves rotation, and its readers ask again: another replica or the
       primary. A refusal of this login (no such database, no privilege: 3D000, 28000, 42501)
       says nothing about the replica and goes to the waiters. */
    bool unreachable = sqlstate == NULL || strncmp(sqlstate, "08", 2) == 0 ||
                       strncmp(sqlstate, "57P", 3) == 0 || strcmp(sqlstate, "53300") == 0;
    bool replica = p->replicas != NULL && pool->compute != p->primary && unreachable;
    if (replica) {
        hub_lock(p);
        replicaset_note_unreachable(p->replicas, pool->compute);
        hub_unlock(p);
    }
    /* every waiter beyond what the remaining opening servers can serve gets the error */
    size_t opening = list_count(&pool->opening);
    size_t waiting = list_count(&pool->waiting);
    while (waiting > opening) {
        struct list_node *last = pool->waiting.prev;
        struct client *c = container_of(last, struct client, wait_node);
        if (!replica || !client_reroute(c)) {
            list_del(&c->wait_node);
            client_fatal(c, sqlstate, "%s", msg);
        }
        waiting--;
    }
}

void pool_maintain(struct pool *pool, int64_t now_ms)
{
    const struct config *cfg = pool->proxy->cfg;
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &pool->idle)
    {
        struct server *s = container_of(it, struct server, node);
        if (cfg->server_idle_timeout > 0 && now_ms - s->last_used_ms >= cfg->server_idle_timeout &&
            open_total(pool) > cfg->min_pool_size)
            server_close(s, "server_idle_timeout");
        else if (cfg->server_lifetime > 0 && now_ms - s->connect_ms >= cfg->server_lifetime)
            server_close(s, "server_lifetime");
    }
    serve_waiters(pool); /* a safety net: nothing should have left them side by side */
    /* min_pool_size: keep that many open while the compute runs (never wakes it); with workers,
       whichever looks first opens them, and a waiting worker gets them handed over */
    int floor = cfg->min_pool_size < cfg->pool_size ? cfg->min_pool_size : cfg->pool_size;
    while (compute_get_state(pool->compute) == COMPUTE_RUNNING && !pool->proxy->shutting_down &&
           room_try(pool, floor)) {
        if (server_new(pool) == NULL) {
            pool_room_give(pool);
            break;
        }
    }
    if (pool->slot != NULL && list_empty(&pool->waiting))
        hub_slot_satisfied(pool->slot, pool->proxy->worker);
}

void pool_kick_all(struct proxy *p)
{
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &p->pools)
    {
        struct pool *pool = container_of(it, struct pool, node);
        if (!list_empty(&pool->waiting) && !p->shutting_down)
            grow(pool);
        else if (pool->slot != NULL)
            hub_slot_satisfied(pool->slot, p->worker);
    }
}

void pool_trim_for_others(struct proxy *p)
{
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &p->pools)
    {
        struct pool *pool = container_of(it, struct pool, node);
        struct server *coldest = pool_idle_coldest(pool);
        if (pool->slot == NULL || coldest == NULL)
            continue;
        int to =
            hub_slot_yield_to(pool->slot, p->worker, !list_empty(&pool->waiting), proxy_now_ms());
        if (to >= 0)
            yield(pool, coldest, to);
    }
}

void pool_close_idle_all(struct proxy *p)
{
    struct list_node *it, *tmp, *jt, *jtmp;
    list_for_each_safe(it, tmp, &p->pools)
    {
        struct pool *pool = container_of(it, struct pool, node);
        list_for_each_safe(jt, jtmp, &pool->idle)
        {
            server_close(container_of(jt, struct server, node), "closing idle servers");
        }
    }
}

void pool_close_compute(struct proxy *p, struct compute *compute, const char *sqlstate,
                        const char *msg, const char *reason)
{
    struct list_node *pt, *ptmp, *it, *tmp;
    list_for_each_safe(pt, ptmp, &p->pools)
    {
        struct pool *pool = container_of(pt, struct pool, node);
        if (pool->compute != compute)
            continue;
        struct list_node *lists[] = {&pool->idle, &pool->opening, &pool->used};
        for (size_t i = 0; i < 3; i++) {
            list_for_each_safe(it, tmp, lists[i])
            {
                struct server *s = container_of(it, struct server, node);
                snprintf(s->error_code, sizeof(s->error_code), "%s", sqlstate);
                snprintf(s->error_msg, sizeof(s->error_msg), "%s", msg);
                server_close(s, reason);
            }
        }
    }
}

int pool_sessions_on(const struct proxy *p, const struct compute *compute, int *in_flight)
{
    int n = 0;
    *in_flight = 0;
    for (const struct list_node *pt = p->pools.next; pt != &p->pools; pt = pt->next) {
        const struct pool *pool = container_of(pt, struct pool, node);
        if (pool->compute != compute)
            continue;
        for (const struct list_node *it = pool->used.next; it != &pool->used; it = it->next) {
            const struct server *s = container_of(it, struct server, node);
            n++;
            if (s->in_flight > 0 || s->q.count > 0)
                (*in_flight)++;
        }
    }
    return n;
}

int pool_count_clients(const struct pool *pool, int state)
{
    int n = 0;
    struct list_node *it;
    for (it = pool->proxy->clients.next; it != &pool->proxy->clients; it = it->next) {
        struct client *c = container_of(it, struct client, node);
        if (c->pool == pool && (int) c->state == state)
            n++;
    }
    return n;
}

static bool same_key(const struct pool *a, const struct pool *b)
{
    return a->compute == b->compute && strcmp(a->database, b->database) == 0 &&
           strcmp(a->user, b->user) == 0;
}

void pool_walk_begin(struct pool_walk *w, const struct proxy *home)
{
    w->home = w->proxy = home;
    w->k = 0;
    w->it = home->pools.next;
}

struct pool *pool_walk_next(struct pool_walk *w)
{
    while (w->it == &w->proxy->pools) {
        if (w->k + 1 >= proxy_count(w->home))
            return NULL;
        w->proxy = proxy_nth(w->home, ++w->k);
        w->it = w->proxy->pools.next;
    }
    struct pool *pool = container_of(w->it, struct pool, node);
    w->it = w->it->next;
    return pool;
}

bool pool_seen_before(const struct proxy *home, const struct pool *pool)
{
    struct pool_walk w;
    pool_walk_begin(&w, home);
    for (const struct pool *o; (o = pool_walk_next(&w)) != NULL && o != pool;)
        if (same_key(o, pool))
            return true;
    return false;
}

void pool_sum(const struct proxy *home, const struct pool *pool, struct pool_sum *out)
{
    memset(out, 0, sizeof(*out));
    struct pool_walk w;
    pool_walk_begin(&w, home);
    for (const struct pool *o; (o = pool_walk_next(&w)) != NULL;) {
        if (!same_key(o, pool))
            continue;
        out->nservers += o->nservers;
        out->used += (int) list_count(&o->used);
        out->idle += (int) list_count(&o->idle);
        out->opening += (int) list_count(&o->opening);
        out->queries += o->queries;
        out->xacts += o->xacts;
        out->wait_us += o->wait_us;
        out->bytes_recv += o->bytes_recv;
        out->bytes_sent += o->bytes_sent;
        const struct list_node *cs = &w.proxy->clients;
        for (const struct list_node *c = cs->next; c != cs; c = c->next) {
            const struct client *cl = container_of(c, struct client, node);
            if (cl->pool != o)
                continue;
            if (cl->state == CLIENT_ACTIVE) {
                out->cl_active++;
            } else if (cl->state == CLIENT_HELD || cl->state == CLIENT_WAITING) {
                out->cl_waiting++;
                if (cl->wait_start_ms > 0 &&
                    (out->oldest_wait_ms == 0 || cl->wait_start_ms < out->oldest_wait_ms))
                    out->oldest_wait_ms = cl->wait_start_ms;
            }
        }
    }
}
