/*
 * proxy: the data plane's context and its glue. Opens the listeners (TCP v4/v6 and the unix
 * socket .s.PGSQL.PORT) and accepts clients; keeps the cancel-key table; frees closed
 * connections at the end of each loop iteration (so no callback ever touches freed memory);
 * releases held clients when the compute reports it is running; and runs the idle policy:
 * a periodic tick that measures how busy the data plane is and asks the compute to pause or
 * suspend.
 */
#include "pgtide/backup.h"
#include "pgtide/proxy.h"
#include "pgtide/replica.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "pgtide/authdb.h"
#include "pgtide/client.h"
#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/hba.h"
#include "pgtide/hub.h"
#include "pgtide/log.h"
#include "pgtide/park.h"
#include "pgtide/policy.h"
#include "pgtide/pool.h"
#include "pgtide/ryw.h"
#include "pgtide/server.h"
#include "pgtide/sock.h"
#include "pgtide/store.h"
#include "pgtide/tls.h"
#include "pgtide/txn.h"
#include "pgtide/userlist.h"

#define IDLE_TICK_S 0.1
#define BUF_TRIM_MS 10000 /* pooled relay buffers unused this long are freed */

int64_t proxy_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void proxy_touch(struct proxy *p)
{
    __atomic_store_n(&p->last_activity_ms, proxy_now_ms(), __ATOMIC_RELAXED); /* home reads it */
}

uint64_t proxy_next_client_id(struct proxy *p)
{
    return __atomic_add_fetch(&p->home->next_client_id, 1, __ATOMIC_RELAXED);
}

uint64_t proxy_next_server_id(struct proxy *p)
{
    return __atomic_add_fetch(&p->home->next_server_id, 1, __ATOMIC_RELAXED);
}

int proxy_count(const struct proxy *home)
{
    return home->hub != NULL ? hub_size(home->hub) + 1 : 1;
}

struct proxy *proxy_nth(const struct proxy *home, int i)
{
    return i == 0 ? (struct proxy *) home : hub_worker(home->hub, i);
}

void proxy_sum_stats(const struct proxy *home, struct proxy_stats *st)
{
    memset(st, 0, sizeof(*st));
    for (int k = 0; k < proxy_count(home); k++) {
        const struct proxy_stats *o = &proxy_nth(home, k)->stats;
        st->queries += o->queries;
        st->xacts += o->xacts;
        st->bytes_recv += o->bytes_recv;
        st->bytes_sent += o->bytes_sent;
        st->query_time_us += o->query_time_us;
        st->xact_time_us += o->xact_time_us;
        st->wait_time_us += o->wait_time_us;
        st->clients_total += o->clients_total;
        st->servers_total += o->servers_total;
        st->auth_failures += o->auth_failures;
    }
}

/* ---- cancel keys ------------------------------------------------------------------------- */

static unsigned bucket(uint32_t pid, uint32_t key)
{
    return (pid ^ (key * 2654435761u)) % PROXY_CANCEL_BUCKETS;
}

void proxy_cancel_add(struct proxy *p, struct client *c)
{
    unsigned b = bucket(c->cancel_pid, c->cancel_key);
    c->cancel_next = p->cancel_table[b];
    p->cancel_table[b] = c;
}

void proxy_cancel_del(struct proxy *p, struct client *c)
{
    if (c->cancel_pid == 0)
        return;
    struct client **pp = &p->cancel_table[bucket(c->cancel_pid, c->cancel_key)];
    while (*pp != NULL) {
        if (*pp == c) {
            *pp = c->cancel_next;
            break;
        }
        pp = &(*pp)->cancel_next;
    }
    c->cancel_pid = 0;
}

struct client *proxy_cancel_find(struct proxy *p, uint32_t pid, uint32_t key)
{
    for (struct client *c = p->cancel_table[bucket(pid, key)]; c != NULL; c = c->cancel_next)
        if (c->cancel_pid == pid && c->cancel_key == key)
            return c;
    return NULL;
}

/* ---- accept ------------------------------------------------------------------------------ */

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void) loop;
    (void) revents;
    struct listener *l = container_of(w, struct listener, io);
    struct proxy *p = l->proxy;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept(l->fd, (struct sockaddr *) &ss, &len);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                log_warn("accept: %s (raise the fd limit or lower max_client_conn)",
                         strerror(errno));
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                     errno != ECONNABORTED)
                log_warn("accept: %s", strerror(errno));
            return;
        }
        if (sock_setup(fd, !l->is_unix) != 0) {
            close(fd);
            continue;
        }
        if (p->hub != NULL && p->worker == 0) {
            /* home serves no data plane: the workers take turns */
            struct hub_msg m = {.kind = HUB_ADOPT};
            m.conn.fd = fd;
            m.conn.is_unix = l->is_unix;
            m.conn.reader = l->reader;
            if (len <= sizeof(m.conn.addr)) {
                memcpy(&m.conn.addr, &ss, len);
                m.conn.alen = len;
            }
            int n = hub_size(p->hub);
            hub_post(hub_worker(p->hub, (int) (p->next_unix_worker++ % (unsigned) n) + 1), &m);
            continue;
        }
        (void) client_accept(p, l->is_unix, l->reader, fd, (struct sockaddr *) &ss, len);
    }
}

static int add_listener(struct proxy *p, int fd, bool is_unix, const char *path, bool reader)
{
    if (p->nlisteners >= PROXY_MAX_LISTENERS) {
        close(fd);
        return -1;
    }
    struct listener *l = &p->listeners[p->nlisteners++];
    l->fd = fd;
    l->is_unix = is_unix;
    l->reader = reader;
    l->proxy = p;
    snprintf(l->path, sizeof(l->path), "%s", path ? path : "");
    ev_io_init(&l->io, on_accept, fd, EV_READ);
    ev_io_start(p->loop, &l->io);
    return 0;
}

/* True when addr cannot be bound by a socket without SO_REUSEPORT (someone listens there). */
static bool port_taken(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
    bool taken = bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

static int listen_tcp(struct proxy *p, const char *host, int port, bool reader, char *err,
                      size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res, *ai;
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    int rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, ports, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "listen_addr %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int opened = 0;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM, 0);
        if (fd < 0)
            continue;
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
        /* workers share the port; the first one makes sure no one else has it (a socket of
           another program with SO_REUSEPORT would share it silently) */
        if (p->worker > 0 && ((p->worker == 1 && port_taken(ai)) ||
                              setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)) {
            errno = EADDRINUSE;
            snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
            close(fd);
            freeaddrinfo(res);
            return -1;
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0 ||
            sock_setup(fd, false) != 0) {
            snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
            close(fd);
            freeaddrinfo(res);
            return -1;
        }
        if (add_listener(p, fd, false, NULL, reader) == 0)
            opened++;
    }
    freeaddrinfo(res);
    if (opened == 0) {
        snprintf(err, errlen, "no address to listen on for %s", host);
        return -1;
    }
    return 0;
}

static int listen_unix(struct proxy *p, const char *dir, int port, bool reader, char *err,
                       size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if ((size_t) snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", dir, port) >=
        sizeof(sun.sun_path)) {
        snprintf(err, errlen, "unix_socket_dir too long");
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* a stale socket file of a previous run: remove it only if nobody answers on it */
    if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) == 0) {
        snprintf(err, errlen, "%s is in use by another server", sun.sun_path);
        close(fd);
        return -1;
    }
    unlink(sun.sun_path);
    if (bind(fd, (struct sockaddr *) &sun, sizeof(sun)) != 0 || listen(fd, 4096) != 0 ||
        sock_setup(fd, false) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", sun.sun_path, strerror(errno));
        close(fd);
        return -1;
    }
    chmod(sun.sun_path, (mode_t) p->cfg->unix_socket_mode);
    return add_listener(p, fd, true, sun.sun_path, reader);
}

/* The reader endpoint: read_port, or listen_port + 1 by default. A default one that cannot be
   had (another pgtide on this machine) is reported and skipped; a configured one must work. */
static int listen_readers(struct proxy *p, char *err, size_t errlen)
{
    const struct config *cfg = p->cfg;
    bool derived = cfg->read_port < 0;
    int port = derived ? cfg->listen_port + 1 : cfg->read_port;
    if (p->hub != NULL && p->worker != 1) {
        /* worker 1 went first: the others (and home's unix socket) follow its outcome */
        port = hub_worker(p->hub, 1)->read_port;
        derived = false;
    }
    if (port <= 0 || port > 65535)
        return 0;
    bool tcp = p->hub == NULL || p->worker > 0, unix_sock = p->hub == NULL || p->worker == 0;
    int first = p->nlisteners;
    char *addrs = strdup(cfg->listen_addr);
    if (addrs == NULL)
        return -1;
    char *save = NULL;
    int rc = 0;
    for (char *a = strtok_r(addrs, ", ", &save); a != NULL && rc == 0 && tcp;
         a = strtok_r(NULL, ", ", &save))
        rc = listen_tcp(p, a, port, true, err, errlen);
    free(addrs);
    if (rc == 0 && unix_sock && cfg->unix_socket_dir[0] != '\0')
        rc = listen_unix(p, cfg->unix_socket_dir, port, true, err, errlen);
    if (rc == 0) {
        p->read_port = port;
        return 0;
    }
    if (!derived)
        return -1;
    log_error("reader endpoint: %s; serving without it (set read_port)", err);
    for (int i = first; i < p->nlisteners; i++) {
        ev_io_stop(p->loop, &p->listeners[i].io);
        close(p->listeners[i].fd);
        if (p->listeners[i].path[0] != '\0')
            unlink(p->listeners[i].path);
    }
    p->nlisteners = first;
    return 0;
}

int proxy_listen(struct proxy *p, char *err, size_t errlen)
{
    const struct config *cfg = p->cfg;
    bool tcp = p->hub == NULL || p->worker > 0, unix_sock = p->hub == NULL || p->worker == 0;
    char *addrs = strdup(cfg->listen_addr);
    if (addrs == NULL)
        return -1;
    char *save = NULL;
    for (char *a = strtok_r(addrs, ", ", &save); a != NULL && tcp;
         a = strtok_r(NULL, ", ", &save)) {
        if (listen_tcp(p, a, cfg->listen_port, false, err, errlen) != 0) {
            free(addrs);
            return -1;
        }
    }
    free(addrs);
    if (unix_sock && cfg->unix_socket_dir[0] != '\0' &&
        listen_unix(p, cfg->unix_socket_dir, cfg->listen_port, false, err, errlen) != 0)
        return -1;
    if (listen_readers(p, err, errlen) != 0)
        return -1;
    if (p->hub != NULL && p->worker != 1)
        return 0; /* worker 1 says it for all */
    log_info("listening on %s port %d (reader endpoint: %d)%s%s", cfg->listen_addr,
             cfg->listen_port, p->read_port, cfg->unix_socket_dir[0] ? ", unix sockets in " : "",
             cfg->unix_socket_dir);
    return 0;
}

static void stop_accepting(struct proxy *p)
{
    for (int i = 0; i < p->nlisteners; i++) {
        struct listener *l = &p->listeners[i];
        if (l->fd < 0)
            continue;
        ev_io_stop(p->loop, &l->io);
        close(l->fd);
        l->fd = -1;
        if (l->path[0] != '\0')
            unlink(l->path);
    }
}

void proxy_stop_accepting(struct proxy *p)
{
    hub_stw_begin(p->hub);
    for (int i = 0; i < proxy_count(p); i++) {
        proxy_nth(p, i)->shutting_down = p->shutting_down;
        stop_accepting(proxy_nth(p, i));
    }
    hub_stw_end(p->hub);
}

void proxy_close_all(struct proxy *p, const char *reason)
{
    hub_stw_begin(p->hub);
    for (int i = 0; i < proxy_count(p); i++) {
        struct proxy *q = proxy_nth(p, i);
        struct list_node *it, *tmp;
        list_for_each_safe(it, tmp, &q->clients)
        {
            struct client *c = container_of(it, struct client, node);
            client_fatal(c, "57P01", "%s", reason);
        }
    }
    hub_stw_end(p->hub);
}

bool proxy_idle(const struct proxy *p)
{
    int n = 0;
    hub_stw_begin(p->hub);
    for (int i = 0; i < proxy_count(p); i++)
        n += proxy_nth(p, i)->nclients;
    hub_stw_end(p->hub);
    return n == 0;
}

/* ---- reaper: frees what was closed during this loop iteration ----------------------------- */

static void on_reap(struct ev_loop *loop, ev_check *w, int revents)
{
    (void) loop;
    (void) revents;
    struct proxy *p = container_of(w, struct proxy, reaper);
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &p->dead_clients)
    {
        list_del(it);
        client_free(container_of(it, struct client, node));
    }
    list_for_each_safe(it, tmp, &p->dead_servers)
    {
        list_del(it);
        server_free(container_of(it, struct server, node));
    }
}

/* ---- reads in readiness order ------------------------------------------------------------- */

void proxy_defer_read(struct proxy *p, struct conn *c)
{
    if (list_unlinked(&c->ready))
        list_add_tail(&p->ready, &c->ready);
}

/* After every other callback of the iteration (lowest priority). libev invoked the read
   callbacks newest-ready first, each appended here: the oldest is at the tail. A read that
   fed itself again (TLS bytes already decrypted) is done again at once, not left pending at a
   priority this pass has already left. */
static void on_drain(struct ev_loop *loop, ev_check *w, int revents)
{
    (void) revents;
    struct proxy *p = container_of(w, struct proxy, drain);
    while (!list_empty(&p->ready)) {
        struct list_node *n = p->ready.prev;
        list_del(n);
        struct conn *c = container_of(n, struct conn, ready);
        if (c->is_server)
            server_read_ready(container_of(c, struct server, conn));
        else
            client_read_ready(container_of(c, struct client, conn));
        if (list_unlinked(n) && ev_is_pending(&c->rio) && ev_clear_pending(loop, &c->rio) != 0)
            list_add_tail(&p->ready, n);
    }
    server_post_handovers(p); /* nothing of this iteration can touch them any more */
}

/* ---- compute and idle policy -------------------------------------------------------------- */

static void close_compute_servers(struct proxy *p, struct compute *c, int to)
{
    pool_close_compute(p, c, to == COMPUTE_FAILED ? "08006" : "57P01",
                       to == COMPUTE_FAILED ? "pgtide: the compute stopped unexpectedly; your "
                                              "session was lost, reconnect (committed work is kept)"
                                            : "pgtide: the compute was stopped",
                       to == COMPUTE_FAILED ? "compute failed" : "compute stopped");
}

static void replica_changed(struct proxy *p, struct compute *c, int to)
{
    if (to == COMPUTE_FAILED || to == COMPUTE_SUSPENDED || to == COMPUTE_SUSPENDING)
        close_compute_servers(p, c, to == COMPUTE_FAILED ? COMPUTE_FAILED : COMPUTE_SUSPENDED);
}

void proxy_replica_changed(struct proxy *p, struct compute *c, int from, int to)
{
    replica_changed(p, c, to);
    if (p->hub != NULL) { /* each worker closes its own servers of it */
        struct hub_msg m = {.kind = HUB_REPLICA, .compute = c, .from = from, .to = to};
        hub_broadcast(p->hub, NULL, &m);
    }
}

static void compute_changed(struct proxy *p, int from, int to)
{
    struct list_node *it, *tmp;
    if (to == COMPUTE_RUNNING) {
        /* a start is demand: the idle clock starts now, not at the last query hours ago (else
           the compute would freeze under pgtide's own first queries) */
        if (from == COMPUTE_STARTING)
            proxy_touch(p);
        if (p->authdb != NULL)
            authdb_compute_ready(p->authdb, from == COMPUTE_STARTING);
        /* a worker hears of it a little later: only if it still holds */
        if (!p->paused && compute_get_state(p->primary) == COMPUTE_RUNNING) {
            list_for_each_safe(it, tmp, &p->held)
            {
                client_compute_ready(container_of(it, struct client, wait_node));
            }
        }
    } else if (to == COMPUTE_FAILED || to == COMPUTE_SUSPENDED) {
        /* servers of a compute that is gone are useless */
        close_compute_servers(p, p->primary, to);
        if (to == COMPUTE_FAILED && p->authdb != NULL)
            authdb_compute_failed(p->authdb);
        /* demand is still there: start again */
        if (!list_empty(&p->held) && !p->shutting_down) {
            hub_lock(p);
            compute_wake(p->primary);
            hub_unlock(p);
        }
    }
}

/* Home's hook (main.c); a worker hears it as a message, on its own thread. Posted first: what
   home's own handling sends the workers (its auth cache) must reach them after it. */
void proxy_compute_changed(struct proxy *p, int from, int to)
{
    if (p->hub != NULL) {
        struct hub_msg m = {.kind = HUB_COMPUTE, .from = from, .to = to};
        hub_broadcast(p->hub, NULL, &m);
    }
    compute_changed(p, from, to);
}

void proxy_handle_msg(struct proxy *p, struct hub_msg *m)
{
    switch (m->kind) {
    case HUB_ADOPT:
        (void) client_adopt(p, &m->conn);
        break;
    case HUB_CANCEL: {
        struct client *target = proxy_cancel_find(p, m->cancel_pid, m->cancel_key);
        if (target != NULL)
            client_cancel(target);
        break;
    }
    case HUB_COMPUTE:
        compute_changed(p, m->from, m->to);
        break;
    case HUB_REPLICA:
        replica_changed(p, m->compute, m->to);
        break;
    case HUB_POOLS:
        pool_kick_all(p);
        break;
    case HUB_TRIM:
        pool_trim_for_others(p);
        break;
    case HUB_SERVER:
        server_adopt(p, m->server, m->slot);
        break;
    case HUB_AUTH:
        authdb_learnt(p->authdb, m->user, m->secret, m->from);
        break;
    case HUB_AUTHSET:
        authdb_take_set(p->authdb, m->authset);
        break;
    case HUB_PARKED:
        park_round_end(p);
        break;
    case HUB_STOP:
        stop_accepting(p);
        ev_break(p->loop, EVBREAK_ALL);
        break;
    }
}

/* Counts what keeps the compute awake. */
static void measure(struct proxy *p, int *active, int *unparkable)
{
    /* a worker's own pg_authid refresh or auth_query (home's is counted by the policy) */
    *active = p->worker > 0 && p->authdb != NULL && authdb_busy(p->authdb);
    *unparkable = 0;
    struct list_node *it;
    for (it = p->clients.next; it != &p->clients; it = it->next) {
        struct client *c = container_of(it, struct client, node);
        /* waiting for a server, or for its secret (an auth_query may be running) */
        if (c->state == CLIENT_WAITING || c->state == CLIENT_LOOKUP)
            (*active)++;
        if (c->server == NULL)
            continue;
        const struct server *s = c->server;
        if (s->in_flight > 0 || s->txn != 'I' ||
            (s->state != SERVER_ACTIVE && s->state != SERVER_PARK))
            (*active)++;
        else if (c->park_blocker != NULL)
            (*unparkable)++; /* known since its last request: not parkable */
    }
}

/* Tells the replica set how many sessions each replica still serves (draining) and how long
   reader clients wait (scale-out demand). Home, with the workers stopped. */
static void report_readers(struct proxy *home, int64_t now)
{
    int n = replicaset_count(home->replicas);
    for (int i = 0; i < n; i++) {
        struct replica_info info;
        if (!replicaset_info(home->replicas, i, &info) || info.compute == NULL)
            continue;
        int sessions = 0;
        for (int k = 0; k < proxy_count(home); k++) {
            int in_flight;
            sessions += pool_sessions_on(proxy_nth(home, k), info.compute, &in_flight);
        }
        replicaset_note_sessions(home->replicas, info.compute, sessions);
    }
    int waiting = 0;
    int64_t longest = 0;
    for (int k = 0; k < proxy_count(home); k++) {
        struct proxy *p = proxy_nth(home, k);
        for (struct list_node *it = p->clients.next; it != &p->clients; it = it->next) {
            const struct client *c = container_of(it, struct client, node);
            if (!c->reader || (c->state != CLIENT_WAITING && c->state != CLIENT_HELD) ||
                c->wait_start_ms == 0)
                continue;
            waiting++;
            if (now - c->wait_start_ms > longest)
                longest = now - c->wait_start_ms;
        }
    }
    replicaset_note_demand(home->replicas, waiting, longest);
}

/* What keeps the compute awake, over every proxy. exact: measured now with the workers
   stopped; otherwise the workers' last published tick (at most IDLE_TICK_S old). */
static void measure_all(struct proxy *home, bool exact, struct policy_idle_input *in)
{
    in->active_queries = in->unparkable_sessions = 0;
    int held = 0;
    for (int k = 0; k < proxy_count(home); k++) {
        struct proxy *p = proxy_nth(home, k);
        int a, u;
        if (exact || p == home) {
            measure(p, &a, &u);
            held += !list_empty(&p->held);
        } else {
            a = __atomic_load_n(&p->pub_active, __ATOMIC_RELAXED);
            u = __atomic_load_n(&p->pub_unparkable, __ATOMIC_RELAXED);
            held += __atomic_load_n(&p->pub_held, __ATOMIC_RELAXED);
        }
        in->active_queries += a;
        in->unparkable_sessions += u;
        int64_t last = __atomic_load_n(&p->last_activity_ms, __ATOMIC_RELAXED);
        if (last > in->last_activity_ms)
            in->last_activity_ms = last;
    }
    if (held > 0)
        in->active_queries++;
}

/* Pauses or suspends the primary as the policy says (home; the workers stopped, if any). */
static void idle_act(struct proxy *p, enum policy_idle_action act, int state)
{
    switch (act) {
    case POLICY_PAUSE:
        if (compute_pause(p->primary) != 0)
            log_warn("could not pause the compute");
        break;
    case POLICY_SUSPEND:
        if (park_in_progress(p))
            break;
        if (state == COMPUTE_PAUSED)
            compute_wake(p->primary); /* the snapshots run on the sessions' servers */
        (void) park_begin(p);
        break;
    case POLICY_NONE:
        break;
    }
}

/* The idle policy, on home: pause or suspend the primary when nothing needs it. */
static void idle_policy(struct proxy *p, int64_t now)
{
    struct policy_idle_input in = {
        .state = compute_get_state(p->primary),
        .now_ms = now,
        .last_activity_ms = p->last_activity_ms,
        .pause_after = p->cfg->pause_after,
        .suspend_after = p->cfg->suspend_after,
        .is_static = false,
    };
    /* pg_authid refresh or auth_query in flight; a basebackup (issue 7) */
    int cp_busy = (p->authdb != NULL && authdb_busy(p->authdb)) + (backup_in_progress() ? 1 : 0);
    measure_all(p, false, &in);
    in.active_queries += cp_busy;
    enum policy_idle_action act = policy_idle(&in);
    if (act == POLICY_NONE)
        return;
    if (p->hub == NULL) {
        idle_act(p, act, in.state);
        return;
    }
    /* the workers' figures may be a tick old: decide again on exact ones, and act (a parking
       round snapshots sessions on every worker) before they run again */
    hub_stw_begin(p->hub);
    in.state = compute_get_state(p->primary); /* a worker may have thawed it meanwhile */
    measure_all(p, true, &in);
    in.active_queries += cp_busy;
    idle_act(p, policy_idle(&in), in.state);
    hub_stw_end(p->hub);
}

static void on_idle_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    struct proxy *p = container_of(w, struct proxy, idle_timer);
    int64_t now = proxy_now_ms();
    if (now - p->last_maintain_ms >= 1000) {
        p->last_maintain_ms = now;
        struct list_node *it, *tmp;
        list_for_each_safe(it, tmp, &p->pools)
        {
            pool_maintain(container_of(it, struct pool, node), now);
        }
        /* the workers are stopped for it only where replicas can exist */
        if (p->replicas != NULL && p->worker == 0 &&
            (p->cfg->max_replicas > 0 || replicaset_count(p->replicas) > 0)) {
            hub_stw_begin(p->hub);
            report_readers(p, now);
            hub_stw_end(p->hub);
        }
        if (now - p->last_trim_ms >= BUF_TRIM_MS) {
            p->last_trim_ms = now;
            buf_trim(); /* relay buffers a burst left pooled and no one needed since */
        }
    }
    if (p->worker > 0) {
        pool_trim_for_others(p); /* idle servers another worker has waited for */
        /* publish for home's policy */
        int a, u;
        measure(p, &a, &u);
        __atomic_store_n(&p->pub_active, a, __ATOMIC_RELAXED);
        __atomic_store_n(&p->pub_unparkable, u, __ATOMIC_RELAXED);
        __atomic_store_n(&p->pub_held, !list_empty(&p->held), __ATOMIC_RELAXED);
        return;
    }
    if (p->primary == NULL || compute_is_static(p->primary) || p->shutting_down)
        return;
    idle_policy(p, now);
}

void proxy_idle_check(struct proxy *p)
{
    (void) p;
}

/* ---- life cycle --------------------------------------------------------------------------- */

static int load_auth(struct proxy *p, const struct config *cfg, struct hba **hba,
                     struct userlist **ul, char *err, size_t errlen)
{
    *hba = NULL;
    *ul = NULL;
    if (cfg->hba_file[0] != '\0') {
        *hba = hba_load(cfg->hba_file, err, errlen);
        if (*hba == NULL)
            return -1;
    }
    if (cfg->auth_file[0] != '\0') {
        *ul = userlist_load(cfg->auth_file, err, errlen);
        if (*ul == NULL) {
            if (*hba != NULL)
                hba_free(*hba);
            *hba = NULL;
            return -1;
        }
    }
    (void) p;
    return 0;
}

static int setup_tls(struct proxy *p, const struct config *cfg, char *err, size_t errlen)
{
    if (cfg->client_tls_sslmode != SSLMODE_DISABLE) {
        char *cert = NULL, *key = NULL;
        const char *certf = cfg->client_tls_cert_file, *keyf = cfg->client_tls_key_file;
        if (certf[0] == '\0') {
            cert = store_path(p->store, "state/server.crt");
            key = store_path(p->store, "state/server.key");
            if (cert == NULL || key == NULL || tls_make_self_signed(cert, key, err, errlen) != 0) {
                free(cert);
                free(key);
                return -1;
            }
            certf = cert;
            keyf = key;
        }
        p->tls_server = tls_server_ctx_new(certf, keyf, cfg->client_tls_ca_file,
                                           cfg->client_tls_sslmode, err, errlen);
        free(cert);
        free(key);
        if (p->tls_server == NULL)
            return -1;
    }
    if (cfg->server_tls_sslmode != SSLMODE_DISABLE) {
        p->tls_client =
            tls_client_ctx_new(cfg->server_tls_ca_file, cfg->server_tls_sslmode, err, errlen);
        if (p->tls_client == NULL)
            return -1;
    }
    return 0;
}

/* What every proxy sets up the same way: lists, reaper, drain, idle tick. */
static void init_common(struct proxy *p, struct ev_loop *loop)
{
    p->loop = loop;
    list_init(&p->clients);
    list_init(&p->held);
    list_init(&p->pools);
    list_init(&p->dead_clients);
    list_init(&p->dead_servers);
    list_init(&p->handing);
    list_init(&p->ready);
    p->started_ms = p->last_activity_ms = proxy_now_ms();
    ev_check_init(&p->reaper, on_reap);
    ev_check_start(loop, &p->reaper);
    ev_check_init(&p->drain, on_drain);
    ev_set_priority(&p->drain, EV_MINPRI);
    ev_check_start(loop, &p->drain);
    ev_timer_init(&p->idle_timer, on_idle_tick, IDLE_TICK_S, IDLE_TICK_S);
    ev_timer_start(loop, &p->idle_timer);
}

/* The last step of building a proxy: its auth cache. p, or NULL + err (p freed). */
static struct proxy *with_authdb(struct proxy *p, char *err, size_t errlen)
{
    p->authdb = authdb_new(p);
    if (p->authdb == NULL) {
        snprintf(err, errlen, "cannot open the auth cache");
        proxy_free(p);
        return NULL;
    }
    return p;
}

struct proxy *proxy_new(struct ev_loop *loop, struct config *cfg, struct store *store,
                        struct compute *primary, char *err, size_t errlen)
{
    struct proxy *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->home = p;
    p->cfg = config_ref(cfg);
    p->store = store;
    p->primary = primary;
    init_common(p, loop);
    if (RAND_bytes(p->mock_key, sizeof(p->mock_key)) != 1 || setup_tls(p, cfg, err, errlen) != 0 ||
        load_auth(p, cfg, &p->hba, &p->auth_file, err, errlen) != 0) {
        proxy_free(p);
        return NULL;
    }
    return with_authdb(p, err, errlen);
}

struct proxy *proxy_new_worker(struct proxy *home, struct ev_loop *loop, int worker, char *err,
                               size_t errlen)
{
    struct proxy *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->home = home;
    p->worker = worker;
    p->cfg = config_ref(home->cfg);
    p->store = home->store;
    p->primary = home->primary;
    init_common(p, loop);
    /* the same fake SCRAM salts on every worker, or a probe could tell the users apart */
    memcpy(p->mock_key, home->mock_key, sizeof(p->mock_key));
    if (home->tls_server != NULL && SSL_CTX_up_ref(home->tls_server) == 1)
        p->tls_server = home->tls_server;
    if (home->tls_client != NULL && SSL_CTX_up_ref(home->tls_client) == 1)
        p->tls_client = home->tls_client;
    p->on_shutdown = home->on_shutdown;
    p->on_reload = home->on_reload;
    p->on_shutdown_arg = home->on_shutdown_arg;
    p->account = home->account;
    p->metrics = home->metrics;
    p->backups = home->backups;
    p->replicas = home->replicas;
    if ((home->tls_server != NULL) != (p->tls_server != NULL) ||
        (home->tls_client != NULL) != (p->tls_client != NULL)) {
        snprintf(err, errlen, "worker %d: cannot share the TLS contexts", worker);
        proxy_free(p);
        return NULL;
    }
    if (load_auth(p, p->cfg, &p->hba, &p->auth_file, err, errlen) != 0) {
        proxy_free(p);
        return NULL;
    }
    return with_authdb(p, err, errlen);
}

static void reload_one(struct proxy *p, struct config *cfg)
{
    char err[512];
    struct hba *hba;
    struct userlist *ul;
    if (load_auth(p, cfg, &hba, &ul, err, sizeof(err)) != 0) {
        if (p->worker == 0)
            log_error("reload: %s; keeping the previous hba_file and auth_file", err);
    } else {
        if (p->hba != NULL)
            hba_free(p->hba);
        if (p->auth_file != NULL)
            userlist_free(p->auth_file);
        p->hba = hba;
        p->auth_file = ul;
    }
    config_unref(p->cfg);
    p->cfg = config_ref(cfg);
}

void proxy_reload(struct proxy *p, struct config *cfg)
{
    hub_stw_begin(p->hub);
    for (int i = 0; i < proxy_count(p); i++)
        reload_one(proxy_nth(p, i), cfg);
    hub_stw_end(p->hub);
    log_info("configuration reloaded");
}

void proxy_free(struct proxy *p)
{
    if (p == NULL)
        return;
    stop_accepting(p);
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &p->clients)
    {
        client_close(container_of(it, struct client, node), "shutdown");
    }
    list_for_each_safe(it, tmp, &p->pools)
    {
        struct pool *pool = container_of(it, struct pool, node);
        struct list_node *lists[] = {&pool->idle, &pool->opening, &pool->used};
        struct list_node *st, *stmp;
        for (size_t i = 0; i < 3; i++)
            list_for_each_safe(st, stmp, lists[i])
            {
                server_close(container_of(st, struct server, node), "shutdown");
            }
    }
    server_post_handovers(p); /* the hub is stopping: dropped and closed there */
    if (p->loop != NULL) {
        on_reap(p->loop, &p->reaper, 0);
        ev_check_stop(p->loop, &p->reaper);
        ev_check_stop(p->loop, &p->drain);
        ev_timer_stop(p->loop, &p->idle_timer);
    }
    ryw_free(p->ryw); /* its queue emptied as the servers closed */
    list_for_each_safe(it, tmp, &p->pools)
    {
        struct pool *pool = container_of(it, struct pool, node);
        list_del(it);
        for (int i = 0; i < pool->nparams; i++) {
            free(pool->params[i].name);
            free(pool->params[i].value);
        }
        free(pool->database);
        free(pool->user);
        free(pool);
    }
    if (p->authdb != NULL)
        authdb_free(p->authdb);
    txn_registry_free(p->registry);
    txn_intern_free(p->interned);
    if (p->hba != NULL)
        hba_free(p->hba);
    if (p->auth_file != NULL)
        userlist_free(p->auth_file);
    if (p->tls_server != NULL)
        SSL_CTX_free(p->tls_server);
    if (p->tls_client != NULL)
        SSL_CTX_free(p->tls_client);
    config_unref(p->cfg);
    free(p);
}
