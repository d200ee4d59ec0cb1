/*
 * metrics: Prometheus text exposition over a minimal HTTP/1.1 server on the proxy's loop. A
 * connection reads its request head into a fixed 8 kB buffer (no allocation per byte, bounded),
 * is answered once with Connection: close and freed; a timer bounds its life. The exposition is
 * rebuilt on every scrape from live state: the proxy's client list, pools and totals, and the
 * accounting's per-compute counters. Names follow Prometheus conventions: base units (seconds,
 * bytes), counters end in _total, one HELP and TYPE per family.
 */
#include "pgtide/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pgtide/account.h"
#include "pgtide/client.h"
#include "pgtide/compute.h"
#include "pgtide/list.h"
#include "pgtide/hub.h"
#include "pgtide/log.h"
#include "pgtide/pool.h"
#include "pgtide/proxy.h"
#include "pgtide/replica.h"
#include "pgtide/server.h"

#define REQ_MAX   8192
#define MAX_CONNS 64
#define CONN_TTL  10.0

struct mconn {
    struct list_node node;
    struct metrics *m;
    int fd;
    ev_io io;
    ev_timer timer;
    char req[REQ_MAX];
    size_t req_len;
    char *out; /* response, malloc'd */
    size_t out_len, out_off;
};

struct metrics {
    struct ev_loop *loop;
    struct proxy *proxy;
    struct account *account;
    int fd, port;
    ev_io accept_io;
    struct list_node conns;
    int nconns;
    uint64_t wait_hist[METRICS_WAIT_BUCKETS + 1];
    uint64_t wait_count;
    uint64_t wait_sum_us; /* worker threads add to these (atomic) */
    uint64_t scrapes;
};

static const double wait_bounds[METRICS_WAIT_BUCKETS] = METRICS_WAIT_BOUNDS;

void metrics_observe_wait(struct metrics *m, uint64_t wait_us)
{
    if (m == NULL)
        return;
    double s = (double) wait_us / 1e6;
    int b = 0;
    while (b < METRICS_WAIT_BUCKETS && s > wait_bounds[b])
        b++;
    __atomic_fetch_add(&m->wait_hist[b], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&m->wait_count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&m->wait_sum_us, wait_us, __ATOMIC_RELAXED);
}

/* ---- exposition --------------------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t) n < b->cap - b->len) {
            b->len += (size_t) n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t) n;
        char *np = realloc(b->p, ncap);
        if (np == NULL) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

static void family(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(struct sbuf *b, const char *name, const char *help, double v)
{
    family(b, name, "counter", help);
    sb_printf(b, "%s %.17g\n", name, v);
}

static void gauge(struct sbuf *b, const char *name, const char *help, double v)
{
    family(b, name, "gauge", help);
    sb_printf(b, "%s %.17g\n", name, v);
}

/* One histogram series: non-cumulative counts in, cumulative buckets out. */
static void histogram(struct sbuf *b, const char *name, const char *labels, const double *bounds,
                      int nb, const uint64_t *counts, double sum)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < nb; i++) {
        cum += counts[i];
        sb_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i],
                  (unsigned long long) cum);
    }
    cum += counts[nb];
    sb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long) cum);
    if (labels[0]) {
        sb_printf(b, "%s_sum{%s} %.17g\n", name, labels, sum);
        sb_printf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long) cum);
    } else {
        sb_printf(b, "%s_sum %.17g\n", name, sum);
        sb_printf(b, "%s_count %llu\n", name, (unsigned long long) cum);
    }
}

static void render_clients(struct sbuf *b, struct metrics *m)
{
    int counts[CLIENT_CLOSING + 1] = {0}, parked = 0;
    for (int k = 0; k < proxy_count(m->proxy); k++) {
        const struct proxy *p = proxy_nth(m->proxy, k);
        for (const struct list_node *it = p->clients.next; it != &p->clients; it = it->next) {
            const struct client *c = container_of(it, struct client, node);
            if (c->state <= CLIENT_CLOSING)
                counts[c->state]++;
            if (c->parked != NULL)
                parked++;
        }
    }
    family(b, "pgtide_clients", "gauge", "Client connections by state.");
    for (int s = 0; s <= CLIENT_CLOSING; s++)
        sb_printf(b, "pgtide_clients{state=\"%s\"} %d\n", client_state_name(s), counts[s]);
    gauge(b, "pgtide_parked_clients", "Idle sessions parked across a suspend of the compute.",
          parked);
    gauge(b, "pgtide_held_clients", "Clients held until the compute runs.", counts[CLIENT_HELD]);
}

static void render_servers(struct sbuf *b, struct metrics *m)
{
    int counts[SERVER_CLOSING + 1] = {0};
    int npools = 0;
    struct pool_walk w;
    pool_walk_begin(&w, m->proxy);
    for (const struct pool *pool; (pool = pool_walk_next(&w)) != NULL;) {
        const struct list_node *lists[] = {&pool->opening, &pool->idle, &pool->used};
        if (!pool_seen_before(m->proxy, pool)) /* workers repeat pools: once each */
            npools++;
        for (size_t i = 0; i < 3; i++)
            for (const struct list_node *it = lists[i]->next; it != lists[i]; it = it->next) {
                const struct server *s = container_of(it, struct server, node);
                if (s->state <= SERVER_CLOSING)
                    counts[s->state]++;
            }
    }
    family(b, "pgtide_servers", "gauge", "Server connections to computes by state.");
    for (int s = 0; s <= SERVER_CLOSING; s++)
        sb_printf(b, "pgtide_servers{state=\"%s\"} %d\n", server_state_name(s), counts[s]);
    gauge(b, "pgtide_pools", "Connection pools (database, user).", npools);
}

static void render_totals(struct sbuf *b, struct metrics *m)
{
    struct proxy_stats sum;
    proxy_sum_stats(m->proxy, &sum);
    const struct proxy_stats *st = &sum;
    counter(b, "pgtide_queries_total", "Queries completed (ReadyForQuery relayed).",
            (double) st->queries);
    counter(b, "pgtide_transactions_total", "Transactions completed (ReadyForQuery idle).",
            (double) st->xacts);
    counter(b, "pgtide_received_bytes_total", "Bytes received from clients.",
            (double) st->bytes_recv);
    counter(b, "pgtide_sent_bytes_total", "Bytes sent to clients.", (double) st->bytes_sent);
    counter(b, "pgtide_query_duration_seconds_total", "Time spent in queries.",
            (double) st->query_time_us / 1e6);
    counter(b, "pgtide_transaction_duration_seconds_total", "Time spent in transactions.",
            (double) st->xact_time_us / 1e6);
    counter(b, "pgtide_client_connections_total", "Client connections accepted.",
            (double) st->clients_total);
    counter(b, "pgtide_server_connections_total", "Server connections opened.",
            (double) st->servers_total);
    counter(b, "pgtide_auth_failures_total", "Failed client authentications.",
            (double) st->auth_failures);
    family(b, "pgtide_client_wait_seconds", "histogram",
           "Time clients waited for a compute or a server connection.");
    histogram(b, "pgtide_client_wait_seconds", "", wait_bounds, METRICS_WAIT_BUCKETS, m->wait_hist,
              (double) m->wait_sum_us / 1e6);
    gauge(b, "pgtide_paused", "1 while the admin console PAUSE holds new queries.",
          m->proxy->paused ? 1 : 0);
    gauge(b, "pgtide_start_time_seconds", "Wall clock when pgtide started (Unix time).",
          (double) m->proxy->started_ms / 1000.0);
    counter(b, "pgtide_metrics_scrapes_total", "Scrapes of this endpoint.", (double) m->scrapes);
}

static const enum compute_state all_states[] = {COMPUTE_SUSPENDED,  COMPUTE_STARTING,
                                                COMPUTE_RUNNING,    COMPUTE_PAUSED,
                                                COMPUTE_SUSPENDING, COMPUTE_FAILED};

/* The computes to show: the accounting's (managed ones), else the primary from the proxy. */
static int collect_computes(struct metrics *m, struct account_compute_stats *st, int max)
{
    int n = m->account != NULL ? account_get_stats(m->account, st, max) : 0;
    if (n > max)
        n = max;
    bool have_primary = false;
    for (int i = 0; i < n; i++)
        have_primary |= strcmp(st[i].name, "primary") == 0;
    if (!have_primary && m->proxy->primary != NULL && n < max) {
        struct compute_info info;
        compute_get_info(m->proxy->primary, &info);
        memset(&st[n], 0, sizeof(st[n]));
        snprintf(st[n].name, sizeof(st[n].name), "primary");
        st[n].role = COMPUTE_PRIMARY;
        st[n].state = compute_get_state(m->proxy->primary);
        st[n].cu = info.cu;
        n++;
    }
    return n;
}

static void render_computes(struct sbuf *b, struct metrics *m)
{
    struct account_compute_stats st[ACCOUNT_MAX_COMPUTES];
    int n = collect_computes(m, st, ACCOUNT_MAX_COMPUTES);
    char lab[ACCOUNT_MAX_COMPUTES][LEDGER_NAME_MAX + 40];
    for (int i = 0; i < n; i++)
        snprintf(lab[i], sizeof(lab[i]), "compute=\"%.*s\",role=\"%s\"", LEDGER_NAME_MAX - 1,
                 st[i].name, compute_role_name(st[i].role));
    family(b, "pgtide_compute_state", "gauge", "1 for the state the compute is in, else 0.");
    for (int i = 0; i < n; i++)
        for (size_t s = 0; s < sizeof(all_states) / sizeof(all_states[0]); s++)
            sb_printf(b, "pgtide_compute_state{%s,state=\"%s\"} %d\n", lab[i],
                      compute_state_name(all_states[s]), st[i].state == all_states[s]);
    family(b, "pgtide_compute_units", "gauge", "Size of the compute in compute units (CU).");
    for (int i = 0; i < n; i++)
        sb_printf(b, "pgtide_compute_units{%s} %g\n", lab[i], st[i].cu);
    static const struct {
        const char *name, *help;
        size_t off;
    } cnt[] = {
        {"pgtide_compute_starts_total", "Compute starts attempted.",
         offsetof(struct account_compute_stats, starts)},
        {"pgtide_compute_suspends_total", "Compute suspends (scale to zero).",
         offsetof(struct account_compute_stats, suspends)},
        {"pgtide_compute_pauses_total", "Compute pauses (process tree frozen).",
         offsetof(struct account_compute_stats, pauses)},
        {"pgtide_compute_failures_total", "Compute crashes and failed starts.",
         offsetof(struct account_compute_stats, failures)},
    };
    for (size_t k = 0; k < sizeof(cnt) / sizeof(cnt[0]); k++) {
        family(b, cnt[k].name, "counter", cnt[k].help);
        for (int i = 0; i < n; i++)
            sb_printf(
                b, "%s{%s} %llu\n", cnt[k].name, lab[i],
                (unsigned long long) *(const uint64_t *) ((const char *) &st[i] + cnt[k].off));
    }
    family(b, "pgtide_compute_cu_seconds_total", "counter",
           "Compute-unit-seconds used while running, since pgtide started (unrounded).");
    for (int i = 0; i < n; i++)
        sb_printf(b, "pgtide_compute_cu_seconds_total{%s} %.17g\n", lab[i],
                  st[i].running_cu_seconds);
    family(b, "pgtide_compute_paused_cu_seconds_total", "counter",
           "Compute-unit-seconds spent paused (frozen), since pgtide started (unrounded).");
    for (int i = 0; i < n; i++)
        sb_printf(b, "pgtide_compute_paused_cu_seconds_total{%s} %.17g\n", lab[i],
                  st[i].paused_cu_seconds);
    static const double start_bounds[ACCOUNT_START_BUCKETS] = ACCOUNT_START_BOUNDS;
    family(b, "pgtide_compute_start_duration_seconds", "histogram",
           "Time from a compute's start to its readiness.");
    for (int i = 0; i < n; i++)
        histogram(b, "pgtide_compute_start_duration_seconds", lab[i], start_bounds,
                  ACCOUNT_START_BUCKETS, st[i].start_hist, st[i].start_seconds_sum);
}

/* Read replicas (issue 6): lag, rotation, build time, per slot; nothing without a replica set. */
static void render_replicas(struct sbuf *b, struct metrics *m)
{
    const struct replicaset *rs = m->proxy->replicas;
    int n = rs != NULL ? replicaset_count(rs) : 0;
    struct replica_info info[COMPUTE_MAX_REPLICAS];
    int k = 0;
    for (int i = 0; i < n && k < COMPUTE_MAX_REPLICAS; i++)
        if (replicaset_info(rs, i, &info[k]))
            k++;
    family(b, "pgtide_replicas", "gauge",
           "Read replicas in the set (built, building or retiring).");
    sb_printf(b, "pgtide_replicas %d\n", k);
    family(b, "pgtide_replica_in_rotation", "gauge",
           "1 when the replica may be given new readers, else 0.");
    for (int i = 0; i < k; i++)
        sb_printf(b, "pgtide_replica_in_rotation{compute=\"replica-%d\"} %d\n", info[i].index,
                  info[i].in_rotation);
    family(b, "pgtide_replica_lag_bytes", "gauge",
           "Replay lag behind the primary in bytes of WAL (absent while unknown).");
    for (int i = 0; i < k; i++)
        if (info[i].lag_bytes >= 0)
            sb_printf(b, "pgtide_replica_lag_bytes{compute=\"replica-%d\"} %lld\n", info[i].index,
                      (long long) info[i].lag_bytes);
    family(b, "pgtide_replica_lag_seconds", "gauge",
           "Replay lag in seconds (absent while unknown).");
    for (int i = 0; i < k; i++)
        if (info[i].lag_bytes >= 0)
            sb_printf(b, "pgtide_replica_lag_seconds{compute=\"replica-%d\"} %.3f\n", info[i].index,
                      info[i].lag_seconds);
    family(b, "pgtide_replica_build_seconds", "gauge", "Duration of the replica's last build.");
    for (int i = 0; i < k; i++)
        if (info[i].build_ms > 0)
            sb_printf(b, "pgtide_replica_build_seconds{compute=\"replica-%d\"} %.3f\n",
                      info[i].index, (double) info[i].build_ms / 1000.0);
}

char *metrics_render(struct metrics *m, size_t *len)
{
    struct sbuf b = {.p = malloc(16384), .cap = 16384};
    if (b.p == NULL)
        return NULL;
    b.p[0] = '\0';
    hub_stw_begin(m->proxy->hub); /* the workers' clients and servers */
    render_clients(&b, m);
    render_servers(&b, m);
    render_totals(&b, m);
    hub_stw_end(m->proxy->hub);
    render_computes(&b, m);
    render_replicas(&b, m);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

static void conn_free(struct mconn *c)
{
    struct metrics *m = c->m;
    ev_io_stop(m->loop, &c->io);
    ev_timer_stop(m->loop, &c->timer);
    close(c->fd);
    list_del(&c->node);
    m->nconns--;
    free(c->out);
    free(c);
}

/* Writes what is left of the response; frees the connection when done or broken. */
static void conn_flush(struct mconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w > 0) {
            c->out_off += (size_t) w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            ev_io_stop(c->m->loop, &c->io);
            ev_io_set(&c->io, c->fd, EV_WRITE);
            ev_io_start(c->m->loop, &c->io);
            return;
        }
        break;
    }
    shutdown(c->fd, SHUT_WR);
    conn_free(c);
}

static void respond(struct mconn *c, const char *status, const char *ctype, const char *body,
                    size_t blen, bool head_only)
{
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      status, ctype, blen);
    size_t total = (size_t) hl + (head_only ? 0 : blen);
    c->out = malloc(total);
    if (c->out == NULL) {
        conn_free(c);
        return;
    }
    memcpy(c->out, head, (size_t) hl);
    if (!head_only)
        memcpy(c->out + hl, body, blen);
    c->out_len = total;
    c->out_off = 0;
    conn_flush(c);
}

static void respond_text(struct mconn *c, const char *status, const char *text)
{
    respond(c, status, "text/plain; charset=utf-8", text, strlen(text), false);
}

/* The request head is complete: answer it. */
static void handle_request(struct mconn *c)
{
    char method[16], target[1024], version[16];
    char *eol = strstr(c->req, "\r\n");
    if (eol == NULL)
        eol = strchr(c->req, '\n');
    if (eol != NULL)
        *eol = '\0';
    if (sscanf(c->req, "%15s %1023s %15s", method, target, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0) {
        respond_text(c, "400 Bad Request", "bad request\n");
        return;
    }
    bool head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0) {
        respond_text(c, "405 Method Not Allowed", "only GET /metrics\n");
        return;
    }
    target[strcspn(target, "?#")] = '\0';
    if (strcmp(target, "/metrics") != 0) {
        respond_text(c, "404 Not Found", "not found: try /metrics\n");
        return;
    }
    c->m->scrapes++;
    size_t len;
    char *body = metrics_render(c->m, &len);
    if (body == NULL) {
        respond_text(c, "503 Service Unavailable", "out of memory\n");
        return;
    }
    respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len, head);
    free(body);
}

static void on_conn_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void) loop;
    struct mconn *c = container_of(w, struct mconn, io);
    if (revents & EV_WRITE) {
        conn_flush(c);
        return;
    }
    for (;;) {
        if (c->req_len >= REQ_MAX - 1) {
            respond_text(c, "431 Request Header Fields Too Large", "request too large\n");
            return;
        }
        ssize_t r = recv(c->fd, c->req + c->req_len, REQ_MAX - 1 - c->req_len, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (r <= 0) {
            conn_free(c);
            return;
        }
        c->req_len += (size_t) r;
        c->req[c->req_len] = '\0';
        if (strstr(c->req, "\r\n\r\n") != NULL || strstr(c->req, "\n\n") != NULL) {
            ev_io_stop(c->m->loop, &c->io);
            handle_request(c);
            return;
        }
    }
}

static void on_conn_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    conn_free(container_of(w, struct mconn, timer));
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void) revents;
    struct metrics *m = w->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept(m->fd, NULL, NULL);
        if (fd >= 0 &&
            (fcntl(fd, F_SETFL, O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)) {
            close(fd);
            continue;
        }
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warn("metrics: accept: %s", strerror(errno));
            return;
        }
        struct mconn *c = m->nconns < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
        if (c == NULL) {
            close(fd); /* too many scrapers at once, or out of memory */
            continue;
        }
        c->m = m;
        c->fd = fd;
        list_add_tail(&m->conns, &c->node);
        m->nconns++;
        ev_io_init(&c->io, on_conn_io, fd, EV_READ);
        ev_io_start(loop, &c->io);
        ev_timer_init(&c->timer, on_conn_timeout, CONN_TTL, 0);
        ev_timer_start(loop, &c->timer);
    }
}

/* Splits "HOST:PORT" / "[V6]:PORT" into host and port strings. */
static int split_listen(const char *listen, char *host, size_t hlen, char *port, size_t plen)
{
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || colon[1] == '\0')
        return -1;
    size_t n = (size_t) (colon - listen);
    const char *h = listen;
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= hlen)
        return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    snprintf(port, plen, "%s", colon + 1);
    return 0;
}

static int open_listener(const char *addr, int *bound_port, char *err, size_t errlen)
{
    char host[256], port[16];
    if (split_listen(addr, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(err, errlen, "metrics_listen \"%s\": expected HOST:PORT", addr);
        return -1;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "metrics_listen \"%s\": %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        snprintf(err, errlen, "metrics_listen \"%s\": %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    *bound_port = 0;
    if (getsockname(fd, (struct sockaddr *) &ss, &sl) == 0)
        *bound_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *) &ss)->sin6_port)
                                               : ntohs(((struct sockaddr_in *) &ss)->sin_port);
    return fd;
}

struct metrics *metrics_new(struct ev_loop *loop, struct proxy *proxy, struct account *account,
                            const char *listen, char *err, size_t errlen)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->fd = open_listener(listen, &m->port, err, errlen);
    if (m->fd < 0) {
        free(m);
        return NULL;
    }
    m->loop = loop;
    m->proxy = proxy;
    m->account = account;
    list_init(&m->conns);
    ev_io_init(&m->accept_io, on_accept, m->fd, EV_READ);
    m->accept_io.data = m;
    ev_io_start(loop, &m->accept_io);
    log_info("metrics: serving Prometheus metrics on http://%s/metrics", listen);
    return m;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &m->conns) conn_free(container_of(it, struct mconn, node));
    ev_io_stop(m->loop, &m->accept_io);
    close(m->fd);
    free(m);
}

int metrics_port(const struct metrics *m)
{
    return m->port;
}
