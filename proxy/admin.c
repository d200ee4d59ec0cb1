/*
 * admin: the admin console (database "pgtide"). Each simple Query is parsed by admincmd into one
 * command, which either reads the proxy's state and answers a text-only result set (SHOW ...),
 * or acts on it (PAUSE/RESUME hold and release traffic, SET swaps in a new configuration
 * snapshot, WAKE/SUSPEND drive the primary compute, KILL_CLIENT, RELOAD and SHUTDOWN call the
 * client module and main's hooks). Every answer, success or error, is written into the client's
 * output builder and ends with ReadyForQuery; the caller flushes. Extended-protocol messages get
 * one error and are then skipped up to Sync, as PostgreSQL does after an error. That "skipping"
 * flag lives in c->auth_step (unused once the client is logged in) as the out-of-range value
 * SKIPPING_EXTENDED, so the console keeps no state of its own.
 */
#include "pgtide/admin.h"

#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include "pgtide/account.h"
#include "pgtide/admincmd.h"
#include "pgtide/backup.h"
#include "pgtide/backupctl.h"
#include "pgtide/client.h"
#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/list.h"
#include "pgtide/hub.h"
#include "pgtide/log.h"
#include "pgtide/park.h"
#include "pgtide/pkt.h"
#include "pgtide/pool.h"
#include "pgtide/proxy.h"
#include "pgtide/replica.h"
#include "pgtide/server.h"
#include "pgtide/state.h"
#include "pgtide/store.h"

/* c->auth_step while extended-protocol messages are being skipped up to Sync. No login step
   uses this value, and a logged-in client never reads auth_step again. */
#define SKIPPING_EXTENDED ((enum client_auth_step) 0x5ca9)

#define MAX_COLS 24
#define CELL_LEN 64

/* ---- result rows ------------------------------------------------------------------------- */

/* One row being built: values point either at strings that outlive the row or at txt. */
struct row {
    const char *v[MAX_COLS];
    char txt[MAX_COLS][CELL_LEN];
    int n;
};

static void cell_str(struct row *r, const char *s)
{
    assert(r->n < MAX_COLS);
    r->v[r->n++] = s;
}

static void cell_fmt(struct row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cell_fmt(struct row *r, const char *fmt, ...)
{
    assert(r->n < MAX_COLS);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->txt[r->n], CELL_LEN, fmt, ap);
    va_end(ap);
    r->v[r->n] = r->txt[r->n];
    r->n++;
}

static void cell_u64(struct row *r, uint64_t v)
{
    cell_fmt(r, "%" PRIu64, v);
}

static void cell_i64(struct row *r, int64_t v)
{
    cell_fmt(r, "%" PRId64, v);
}

/* Wall-clock milliseconds as "YYYY-MM-DD HH:MM:SS" UTC; NULL when ms <= 0 (never). */
static void cell_time(struct row *r, int64_t ms)
{
    if (ms <= 0) {
        cell_str(r, NULL);
        return;
    }
    time_t t = (time_t) (ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        cell_str(r, NULL);
        return;
    }
    assert(r->n < MAX_COLS);
    strftime(r->txt[r->n], CELL_LEN, "%Y-%m-%d %H:%M:%S", &tm);
    r->v[r->n] = r->txt[r->n];
    r->n++;
}

/* A duration as two cells: whole seconds, then the rest in microseconds (PgBouncer's
   wait/wait_us pair). */
static void cell_wait(struct row *r, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    cell_i64(r, ms / 1000);
    cell_i64(r, (ms % 1000) * 1000);
}

/* ---- answers ----------------------------------------------------------------------------- */

static struct pkt_builder *outb(struct client *c)
{
    return client_out(c);
}

/* True once c is closed or closing: nothing more may be written to it. */
static bool gone(const struct client *c)
{
    return c->state == CLIENT_CLOSING || c->close_pending;
}

static void answer_error(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void answer_error(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct pkt_builder *b = outb(c);
    pkt_write_error(b, "ERROR", sqlstate, msg, NULL, NULL);
    pkt_write_ready(b, 'I');
}

static void answer_done(struct client *c, const char *tag)
{
    struct pkt_builder *b = outb(c);
    pkt_write_command_complete(b, tag);
    pkt_write_ready(b, 'I');
}

/* A result set in progress: RowDescription is written by rs_begin, rows by rs_row. */
struct rs {
    struct pkt_builder *b;
    int ncols;
};

static void rs_begin(struct rs *rs, struct client *c, int ncols, const char *const *names)
{
    assert(ncols <= MAX_COLS);
    rs->b = outb(c);
    rs->ncols = ncols;
    pkt_write_row_desc(rs->b, ncols, names);
}

static void rs_row(struct rs *rs, struct row *r)
{
    assert(r->n == rs->ncols);
    pkt_write_data_row(rs->b, r->n, r->v);
    r->n = 0;
}

static void rs_end(struct rs *rs)
{
    pkt_write_command_complete(rs->b, "SHOW");
    pkt_write_ready(rs->b, 'I');
}

#define NCOLS(a) ((int) (sizeof(a) / sizeof((a)[0])))

static void log_action(struct client *c, const char *what)
{
    char tag[160];
    log_info("%s admin console: %s", client_tag(c, tag, sizeof(tag)), what);
}

/* ---- SHOW HELP, VERSION, CONFIG ---------------------------------------------------------- */

static void show_help(struct client *c)
{
    static const char *const cols[] = {"help"};
    static const char *const lines[] = {
        "SHOW HELP|VERSION|CONFIG|CLIENTS|SERVERS|POOLS|STATS|DATABASES|COMPUTES|BACKUPS",
        "SHOW USAGE [DAY|HOUR]    CU-seconds per compute from the usage ledger",
        "BACKUP                   take a base backup now (answers when it is complete)",
        "SET key = value          change a policy key now and persist it (SHOW POLICY)",
        "RESET key | RESET ALL    drop a persisted policy key (back to the configuration)",
        "PAUSE                    hold new queries",
        "RESUME                   release held queries",
        "WAKE                     start or thaw the primary compute",
        "SUSPEND                  stop the primary compute now",
        "SCALE REPLICAS n         force n read replicas (until SET min_replicas/max_replicas)",
        "KILL_CLIENT id           close one client connection",
        "RELOAD                   reread the configuration file",
        "SHUTDOWN                 stop pgtide once clients are gone",
    };
    struct rs rs;
    struct row r = {.n = 0};
    rs_begin(&rs, c, NCOLS(cols), cols);
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        cell_str(&r, lines[i]);
        rs_row(&rs, &r);
    }
    rs_end(&rs);
}

static void show_version(struct client *c)
{
    static const char *const cols[] = {"version"};
    struct rs rs;
    struct row r = {.n = 0};
    rs_begin(&rs, c, NCOLS(cols), cols);
    cell_str(&r, "pgtide " PACKAGE_VERSION);
    rs_row(&rs, &r);
    rs_end(&rs);
}

struct config_walk {
    struct rs *rs;
    struct row *r;
};

static void config_row(void *arg, const char *key, const char *value, const char *default_value,
                       bool reloadable)
{
    struct config_walk *w = arg;
    cell_str(w->r, key);
    cell_str(w->r, value);
    cell_str(w->r, default_value);
    cell_str(w->r, reloadable ? "yes" : "no");
    rs_row(w->rs, w->r);
}

static void show_config(struct client *c)
{
    static const char *const cols[] = {"key", "value", "default", "changeable"};
    struct rs rs;
    struct row r = {.n = 0};
    struct config_walk w = {&rs, &r};
    rs_begin(&rs, c, NCOLS(cols), cols);
    config_foreach(c->proxy->cfg, config_row, &w);
    rs_end(&rs);
}

/* ---- SHOW CLIENTS, SERVERS --------------------------------------------------------------- */

static const char *client_param_value(const struct client *cl, const char *name)
{
    const struct client_param *e = txn_pset_items(cl->params);
    for (int i = 0; i < txn_pset_len(cl->params); i++) {
        if (strcmp(e[i].name, name) == 0)
            return e[i].value;
    }
    return NULL;
}

/* addr and port cells of a client's peer address. */
static void cell_peer(struct row *r, const struct client *cl)
{
    const union client_addr *ss = &cl->addr;
    if (cl->is_unix || ss->sa.sa_family == AF_UNIX) {
        cell_str(r, "unix");
        cell_str(r, NULL);
        return;
    }
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (ss->sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &ss->in.sin_addr, host, sizeof(host));
        port = ntohs(ss->in.sin_port);
    } else if (ss->sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &ss->in6.sin6_addr, host, sizeof(host));
        port = ntohs(ss->in6.sin6_port);
    } else {
        cell_str(r, NULL);
        cell_str(r, NULL);
        return;
    }
    cell_fmt(r, "%s", host);
    cell_fmt(r, "%d", port);
}

static void client_row(struct row *r, const struct client *cl, int64_t now)
{
    bool waiting = cl->state == CLIENT_HELD || cl->state == CLIENT_WAITING;
    cell_str(r, "C");
    cell_str(r, cl->user);
    cell_str(r, cl->database);
    cell_str(r, client_state_name(cl->state));
    cell_peer(r, cl);
    cell_str(r, NULL); /* local_addr */
    cell_time(r, cl->connect_ms);
    cell_time(r, cl->request_ms);
    cell_wait(r, waiting && cl->wait_start_ms > 0 ? now - cl->wait_start_ms : 0);
    cell_str(r, "0"); /* close_needed */
    cell_u64(r, cl->id);
    if (cl->server != NULL)
        cell_u64(r, cl->server->id);
    else
        cell_str(r, NULL);
    cell_str(r, "0"); /* remote_pid */
    cell_str(r, cl->conn.sock.ssl != NULL ? SSL_get_version(cl->conn.sock.ssl) : "");
    cell_str(r, client_param_value(cl, "application_name"));
    cell_u64(r, cl->id);
    cell_u64(r, cl->queries);
    cell_u64(r, cl->conn.bytes_in);
    cell_u64(r, cl->bytes_sent);
    if (cl->txn != 0)
        cell_fmt(r, "%c", cl->txn);
    else
        cell_str(r, NULL);
    if (cl->park_blocker != NULL)
        cell_fmt(r, "no: %s", cl->park_blocker);
    else if (cl->server != NULL && cl->server->txn != 'I')
        cell_str(r, "no: inside a transaction");
    else if (cl->server != NULL && cl->server->in_flight > 0)
        cell_str(r, "no: running a query");
    else
        cell_str(r, "yes");
}

static void show_clients(struct client *c)
{
    static const char *const cols[] = {"type",
                                       "user",
                                       "database",
                                       "state",
                                       "addr",
                                       "port",
                                       "local_addr",
                                       "connect_time",
                                       "request_time",
                                       "wait",
                                       "wait_us",
                                       "close_needed",
                                       "ptr",
                                       "link",
                                       "remote_pid",
                                       "tls",
                                       "application_name",
                                       "id",
                                       "queries",
                                       "bytes_recv",
                                       "bytes_sent",
                                       "txn",
                                       "parkable",
                                       "worker"};
    struct proxy *p = c->proxy;
    int64_t now = proxy_now_ms();
    struct rs rs;
    struct row r = {.n = 0};
    rs_begin(&rs, c, NCOLS(cols), cols);
    for (int k = 0; k < proxy_count(p); k++) {
        const struct proxy *w = proxy_nth(p, k);
        for (struct list_node *it = w->clients.next; it != &w->clients; it = it->next) {
            const struct client *cl = container_of(it, struct client, node);
            if (cl->state == CLIENT_CLOSING)
                continue;
            client_row(&r, cl, now);
            cell_fmt(&r, "%d", w->worker);
            rs_row(&rs, &r);
        }
    }
    rs_end(&rs);
}

static void server_row(struct row *r, const struct proxy *p, const struct server *s)
{
    cell_str(r, "S");
    cell_str(r, s->pool->user);
    cell_str(r, s->pool->database);
    cell_str(r, server_state_name(s->state));
    if (p->primary != NULL) {
        cell_str(r, compute_host(p->primary));
        cell_fmt(r, "%d", compute_port(p->primary));
    } else {
        cell_str(r, NULL);
        cell_str(r, NULL);
    }
    cell_time(r, s->connect_ms);
    cell_time(r, s->last_used_ms);
    cell_u64(r, s->id);
    if (s->client != NULL)
        cell_u64(r, s->client->id);
    else
        cell_str(r, NULL);
    cell_u64(r, s->pid);
    if (s->txn != 0)
        cell_fmt(r, "%c", s->txn);
    else
        cell_str(r, NULL);
    cell_fmt(r, "%d", s->in_flight);
}

static void show_servers(struct client *c)
{
    static const char *const cols[] = {
        "type",         "user", "database", "state",      "addr", "port",      "connect_time",
        "request_time", "ptr",  "link",     "remote_pid", "txn",  "in_flight", "worker"};
    struct proxy *p = c->proxy;
    struct rs rs;
    struct row r = {.n = 0};
    rs_begin(&rs, c, NCOLS(cols), cols);
    struct pool_walk w;
    pool_walk_begin(&w, p);
    for (const struct pool *pool; (pool = pool_walk_next(&w)) != NULL;) {
        const struct list_node *lists[] = {&pool->opening, &pool->idle, &pool->used};
        for (size_t i = 0; i < 3; i++) {
            for (const struct list_node *it = lists[i]->next; it != lists[i]; it = it->next) {
                server_row(&r, p, container_of(it, struct server, node));
                cell_fmt(&r, "%d", w.proxy->worker);
                rs_row(&rs, &r);
            }
        }
    }
    rs_end(&rs);
}

/* ---- SHOW POOLS, STATS, DATABASES, COMPUTES ---------------------------------------------- */

static void pool_row(struct row *r, const struct proxy *p, const struct pool *pool, int64_t now)
{
    struct pool_sum sum;
    pool_sum(p, pool, &sum); /* over every worker */
    cell_str(r, pool->database);
    cell_str(r, pool->user);
    cell_fmt(r, "%d", sum.cl_active);
    cell_fmt(r, "%d", sum.cl_waiting);
    cell_fmt(r, "%d", sum.used);
    cell_fmt(r, "%d", sum.idle);
    cell_fmt(r, "%d", sum.opening);
    cell_wait(r, sum.oldest_wait_ms > 0 ? now - sum.oldest_wait_ms : 0);
    cell_str(r, config_pool_mode_name(p->cfg->pool_mode));
}

static void show_pools(struct client *c)
{
    static const char *const cols[] = {"database",   "user",     "cl_active", "cl_waiting",
                                       "sv_active",  "sv_idle",  "sv_login",  "maxwait",
                                       "maxwait_us", "pool_mode"};
    struct proxy *p = c->proxy;
    int64_t now = proxy_now_ms();
    struct rs rs;
    struct row r = {.n = 0};
    rs_begin(&rs, c, NCOLS(cols), cols);
    struct pool_walk w;
    pool_walk_begin(&w, p);
    for (const struct pool *pool; (pool = pool_walk_next(&w)) != NULL;) {
        if (pool_seen_before(p, pool))
            continue;
        pool_row(&r, p, pool, now);
        rs_row(&rs, &r);
    }
    rs_end(&rs);
}

/* True when a pool met before `pool` (over every worker, in order) has the same database. */
static bool database_seen(const struct proxy *p, const struct pool *pool)
{
    struct pool_walk w;
    pool_walk_begin(&w, p);
    for (const struct pool *o; (o = pool_walk_next(&w)) != NULL && o != pool;)
        if (strcmp(o->database, pool->database) == 0)
            return true;
    return false;
}

/* One database's pools summed over every worker. */
static void database_sum(const struct proxy *p, const char *database, uint64_t v[5])
{
    memset(v, 0, 5 * sizeof(v[0]));
    struct pool_walk w;
    pool_walk_begin(&w, p);
    for (const struct pool *o; (o = pool_walk_next(&w)) != NULL;) {
        if (strcmp(o->database, database) != 0)
            continue;
        v[0] += o->xacts;
        v[1] += o->queries;
        v[2] += o->bytes_recv;
        v[3] += o->bytes_sent;
        v[4] += o->wait_us;
    }
}

/* One row per database (its pools summed); the pools keep no transaction or query times, so
   those are NULL there and only the "*" totals row has them. */
static void show_stats(struct client *c)
{
    static const char *const cols[] = {"database",         "total_xact_count", "total_query_count",
                                       "total_received",   "total_sent",       "total_xact_time",
                                       "total_query_time", "total_wait_time",  "auth_failures"};
    struct proxy *p = c->proxy;
    struct rs rs;
    struct row r = {.n = 0};
    rs_begin(&rs, c, NCOLS(cols), cols);
    struct pool_walk w;
    pool_walk_begin(&w, p);
    for (const struct pool *pool; (pool = pool_walk_next(&w)) != NULL;) {
        if (database_seen(p, pool))
            continue;
        uint64_t v[5];
        database_sum(p, pool->database, v);
        cell_str(&r, pool->database);
        for (int i = 0; i < 4; i++)
            cell_u64(&r, v[i]);
        cell_str(&r, NULL);
        cell_str(&r, NULL);
        cell_u64(&r, v[4]);
        cell_str(&r, NULL);
        rs_row(&rs, &r);
    }
    struct proxy_stats sum;
    proxy_sum_stats(p, &sum);
    const struct proxy_stats *st = &sum;
    cell_str(&r, "*");
    cell_u64(&r, st->xacts);
    cell_u64(&r, st->queries);
    cell_u64(&r, st->bytes_recv);
    cell_u64(&r, st->bytes_sent);
    cell_u64(&r, st->xact_time_us);
    cell_u64(&r, st->query_time_us);
    cell_u64(&r, st->wait_time_us);
    cell_u64(&r, st->auth_failures);
    rs_row(&rs, &r);
    rs_end(&rs);
}

static void show_databases(struct client *c)
{
    static const char *const cols[] = {
        "name",      "host",          "port",      "database",        "force_user",
        "pool_size", "min_pool_size", "pool_mode", "max_connections", "current_connections"};
    struct proxy *p = c->proxy;
    const struct config *cfg = p->cfg;
    struct rs rs;
    struct row r = {.n = 0};
    rs_begin(&rs, c, NCOLS(cols), cols);
    struct pool_walk w;
    pool_walk_begin(&w, p);
    for (const struct pool *pool; (pool = pool_walk_next(&w)) != NULL;) {
        if (pool_seen_before(p, pool))
            continue;
        struct pool_sum sum;
        pool_sum(p, pool, &sum);
        cell_str(&r, pool->database);
        if (p->primary != NULL) {
            cell_str(&r, compute_host(p->primary));
            cell_fmt(&r, "%d", compute_port(p->primary));
        } else {
            cell_str(&r, NULL);
            cell_str(&r, NULL);
        }
        cell_str(&r, pool->database);
        cell_str(&r, NULL); /* force_user */
        cell_fmt(&r, "%d", cfg->pool_size);
        cell_fmt(&r, "%d", cfg->min_pool_size);
        cell_str(&r, config_pool_mode_name(cfg->pool_mode));
        cell_str(&r, "0"); /* no per-database limit (PgBouncer: 0 = unlimited) */
        cell_fmt(&r, "%d", sum.nservers);
        rs_row(&rs, &r);
    }
    /* the console itself, as PgBouncer lists its "pgbouncer" database */
    const char *admin_row[] = {"pgtide", NULL, NULL,        "pgtide", NULL,
                               "0",      "0",  "statement", "0",      "0"};
    for (int i = 0; i < NCOLS(admin_row); i++)
        cell_str(&r, admin_row[i]);
    rs_row(&rs, &r);
    rs_end(&rs);
}

static size_t server_count(const struct proxy *home)
{
    size_t n = 0;
    struct pool_walk w;
    pool_walk_begin(&w, home);
    for (const struct pool *pool; (pool = pool_walk_next(&w)) != NULL;)
        n += list_count(&pool->opening) + list_count(&pool->idle) + list_count(&pool->used);
    return n;
}

/* The newest client activity on any worker. */
static int64_t last_activity(const struct proxy *home)
{
    int64_t last = 0;
    for (int k = 0; k < proxy_count(home); k++)
        if (proxy_nth(home, k)->last_activity_ms > last)
            last = proxy_nth(home, k)->last_activity_ms;
    return last;
}

/* One row of SHOW COMPUTES: the primary (ri NULL) or a replica (issue 6). */
static void compute_row(struct rs *rs, struct row *r, struct client *c, struct compute *cp,
                        const struct replica_info *ri)
{
    struct proxy *p = c->proxy;
    struct compute_info info;
    compute_get_info(cp, &info);
    cell_str(r, info.role);
    cell_str(r, info.state);
    cell_fmt(r, "%d", info.pid);
    cell_fmt(r, "%.2f", info.cu);
    cell_time(r, info.started_at_ms);
    cell_i64(r, info.uptime_ms / 1000);
    if (ri == NULL)
        cell_u64(r, server_count(p));
    else
        cell_str(r, NULL);
    cell_time(r, last_activity(p));
    cell_fmt(r, "%d", info.starts);
    cell_i64(r, info.last_start_ms);
    cell_str(r,
             info.pause_method != NULL && info.pause_method[0] != '\0' ? info.pause_method : NULL);
    /* compute units (issue 5): how the size is enforced */
    cell_str(r, info.cpu_enforcement);
    if (info.cpu_limit > 0)
        cell_fmt(r, "%.2f", info.cpu_limit);
    else
        cell_str(r, NULL);
    cell_str(r, info.cpu_why != NULL && info.cpu_why[0] != '\0' ? info.cpu_why : NULL);
    /* replicas (issue 6): name, port, replay lag, rotation */
    if (ri == NULL)
        cell_str(r, "primary");
    else
        cell_fmt(r, "replica-%d", ri->index);
    cell_fmt(r, "%d", compute_port(cp));
    if (ri != NULL && ri->lag_bytes >= 0) {
        cell_i64(r, ri->lag_bytes);
        cell_fmt(r, "%.3f", ri->lag_seconds);
    } else {
        cell_str(r, NULL);
        cell_str(r, NULL);
    }
    cell_str(r, ri == NULL ? NULL : ri->in_rotation ? "yes" : "no");
    cell_str(r, ri == NULL || ri->why_not[0] == '\0' ? NULL : ri->why_not);
    if (ri != NULL && ri->build_ms > 0)
        cell_i64(r, ri->build_ms);
    else
        cell_str(r, NULL);
    rs_row(rs, r);
}

static void show_computes(struct client *c)
{
    static const char *const cols[] = {
        "role",         "state",           "pid",           "cu",          "started",
        "uptime",       "connections",     "last_activity", "starts",      "last_start_ms",
        "pause_method", "cpu_enforcement", "cpu_quota",     "cpu_note",    "name",
        "port",         "lag_bytes",       "lag_seconds",   "in_rotation", "rotation_note",
        "build_ms"};
    struct proxy *p = c->proxy;
    struct rs rs;
    struct row r = {.n = 0};
    rs_begin(&rs, c, NCOLS(cols), cols);
    if (p->primary != NULL)
        compute_row(&rs, &r, c, p->primary, NULL);
    for (int i = 0; p->replicas != NULL && i < replicaset_count(p->replicas); i++) {
        struct replica_info ri;
        if (replicaset_info(p->replicas, i, &ri) && ri.compute != NULL)
            compute_row(&rs, &r, c, ri.compute, &ri);
    }
    rs_end(&rs);
}

/* ---- persisted policy (issue 5): SHOW POLICY, SET, RESET ------------------------------- */

/* DATA/state/policy (malloc'd), or NULL when out of memory. */
static char *policy_path(const struct proxy *p)
{
    return state_policy_path(p->store != NULL ? p->store->dir : p->cfg->data_dir);
}

struct policy_walk {
    struct rs *rs;
    struct row *r;
    const struct state_policy *st;
};

static void policy_row(void *arg, const char *key, const char *value, const char *default_value,
                       bool reloadable)
{
    struct policy_walk *w = arg;
    if (!admincmd_settable(key))
        return;
    cell_str(w->r, key);
    cell_str(w->r, value);
    cell_str(w->r, state_policy_get(w->st, key) != NULL ? "state"
                   : strcmp(value, default_value) == 0  ? "default"
                                                        : "file");
    cell_str(w->r, default_value);
    rs_row(w->rs, w->r);
}

/* SHOW POLICY: every policy key with its value, where the value comes from (the built-in
   default, the configuration file or -c, or the persisted state) and the default. */
static void show_policy(struct client *c)
{
    static const char *const cols[] = {"key", "value", "source", "default"};
    char err[512];
    struct state_policy st;
    char *path = policy_path(c->proxy);
    if (path == NULL || state_policy_load(path, &st, err, sizeof(err)) != 0) {
        answer_error(c, "58030", "%s", path != NULL ? err : "out of memory");
        free(path);
        return;
    }
    free(path);
    struct rs rs;
    struct row r = {.n = 0};
    struct policy_walk w = {&rs, &r, &st};
    rs_begin(&rs, c, NCOLS(cols), cols);
    config_foreach(c->proxy->cfg, policy_row, &w);
    rs_end(&rs);
    state_policy_free(&st);
}

/* ---- backups (issue 7): SHOW BACKUPS, BACKUP --------------------------------------------- */

static void backup_row(struct row *r, const struct backup_info *b)
{
    cell_str(r, b->id);
    cell_time(r, b->start_ms);
    cell_time(r, b->end_ms);
    cell_str(r, b->lsn_start);
    cell_str(r, b->lsn_end);
    cell_i64(r, b->size);
    cell_str(r, backup_method_name(b->method));
    cell_str(r, b->verified ? "yes" : "no");
    cell_str(r, "complete");
}

/* Complete backups oldest first, then the running one, then the last failure if it is newer
   than the last success (with its retry time). */
static void show_backups(struct client *c)
{
    static const char *const cols[] = {"id",   "start",  "end",      "lsn_start", "lsn_end",
                                       "size", "method", "verified", "status"};
    struct proxy *p = c->proxy;
    struct rs rs;
    struct row r = {.n = 0};
    struct backup_info *list = NULL;
    int n = backup_list(p->store->dir, &list);
    rs_begin(&rs, c, NCOLS(cols), cols);
    for (int i = 0; i < n; i++) {
        backup_row(&r, &list[i]);
        rs_row(&rs, &r);
    }
    free(list);
    if (p->backups == NULL) {
        rs_end(&rs);
        return;
    }
    struct backupctl_status bs;
    backupctl_get_status(p->backups, &bs);
    const char *nulls4[] = {NULL, NULL, NULL, NULL};
    if (bs.running) {
        cell_str(&r, bs.id);
        cell_time(&r, bs.started_ms);
        for (int i = 0; i < 4; i++)
            cell_str(&r, nulls4[i]);
        cell_str(&r, bs.method);
        cell_str(&r, "no");
        cell_str(&r, "running");
        rs_row(&rs, &r);
    }
    if (bs.last_error[0] != '\0') {
        char status[400];
        snprintf(status, sizeof(status), "failed (%d in a row): %s", bs.consecutive_failures,
                 bs.last_error);
        cell_str(&r, NULL);
        cell_time(&r, bs.last_failure_ms);
        cell_time(&r, bs.next_retry_ms); /* "end" of a failure: when it is retried */
        for (int i = 0; i < 3; i++)
            cell_str(&r, nulls4[i]);
        cell_str(&r, NULL);
        cell_str(&r, "no");
        cell_str(&r, status);
        rs_row(&rs, &r);
    }
    rs_end(&rs);
}

/* ---- answers that come later (BACKUP, SHOW USAGE) -------------------------------------------
   The asking client waits (admin_waiting: its next messages stay buffered, so answers keep
   their order); the outcome finds it again by id. */

/* The admin client with this id, if it is still there. */
static struct client *admin_waiter(struct proxy *p, uint64_t id)
{
    for (struct list_node *it = p->clients.next; it != &p->clients; it = it->next) {
        struct client *a = container_of(it, struct client, node);
        if (a->id == id && a->state == CLIENT_ADMIN && !gone(a))
            return a;
    }
    return NULL;
}

/* The late answer is written: the client's buffered messages go on. */
static void admin_resume(struct client *c)
{
    c->admin_waiting = false;
    client_flush_out(c);
    client_pump_admin(c);
}

/* The outcome of a BACKUP, for the admin client that asked (if it is still there). */
static void backup_answered(void *arg, uint64_t token, bool ok, const char *msg)
{
    struct client *a = admin_waiter(arg, token);
    if (a == NULL)
        return;
    if (ok) {
        char note[160];
        snprintf(note, sizeof(note), "backup %s is complete", msg);
        pkt_write_notice(outb(a), "NOTICE", "00000", note, NULL, NULL);
        answer_done(a, "BACKUP");
    } else {
        answer_error(a, "58000", "backup failed: %s", msg);
    }
    admin_resume(a);
}

static void do_backup(struct client *c)
{
    struct proxy *p = c->proxy;
    char err[256];
    if (p->backups == NULL) {
        answer_error(c, "0A000", "backups need the local compute provider");
        return;
    }
    log_action(c, "BACKUP");
    c->admin_waiting = true; /* before: a backup that cannot start answers at once */
    if (backupctl_request(p->backups, backup_answered, p, c->id, err, sizeof(err)) != 0) {
        c->admin_waiting = false;
        answer_error(c, "53400", "%s", err);
    }
}

/* ---- SHOW USAGE (issue 5: usage ledger) --------------------------------------------------- */

/* The ledger read of a SHOW USAGE is over (account.c's thread): the rows per compute, then a
   total row, to the admin client that asked (if it is still there). by rides in the token's low
   bits: 0 total, 1 hour, 2 day. */
static void usage_answered(void *arg, uint64_t token, struct usage_row *rows, int n,
                           const char *err)
{
    static const char *const cols[] = {"period_start", "compute",           "role",
                                       "intervals",    "running_seconds",   "paused_seconds",
                                       "cu_seconds",   "paused_cu_seconds", "billed_cu_seconds"};
    struct client *c = admin_waiter(arg, token >> 2);
    int by = (int) (token & 3);
    if (c == NULL) {
        free(rows);
        return;
    }
    if (n < 0) {
        answer_error(c, "58030", "cannot read the usage ledger: %s", err);
        admin_resume(c);
        return;
    }
    struct rs rs;
    struct row r = {.n = 0};
    rs_begin(&rs, c, NCOLS(cols), cols);
    for (int i = 0; i <= n; i++) {
        struct usage_row tot;
        const struct usage_row *u = &rows[i];
        if (i == n) {
            usage_total(rows, n, &tot);
            u = &tot;
        }
        if (i < n && by != 0)
            cell_time(&r, u->bucket_ms);
        else
            cell_str(&r, NULL);
        cell_str(&r, u->name);
        cell_str(&r, i == n ? NULL : u->role == LEDGER_ROLE_REPLICA ? "replica" : "primary");
        cell_i64(&r, u->intervals);
        cell_fmt(&r, "%.3f", u->running_seconds);
        cell_fmt(&r, "%.3f", u->paused_seconds);
        cell_fmt(&r, "%.3f", u->cu_seconds);
        cell_fmt(&r, "%.3f", u->paused_cu_seconds);
        cell_fmt(&r, "%.3f", u->billed_cu_seconds);
        rs_row(&rs, &r);
    }
    rs_end(&rs);
    free(rows);
    admin_resume(c);
}

/* Usage from the ledger per compute (by = 0 total, 1 hour, 2 day): read off the loop, the
   client waits (its next messages too) until usage_answered. */
static void show_usage(struct client *c, int by)
{
    struct proxy *p = c->proxy;
    if (p->account == NULL) {
        answer_error(c, "55000", "usage accounting is not running");
        return;
    }
    char err[256];
    enum usage_by ub = by == 1 ? USAGE_BY_HOUR : by == 2 ? USAGE_BY_DAY : USAGE_BY_TOTAL;
    if (account_usage_start(p->account, ub, usage_answered, p, c->id << 2 | (uint64_t) (by & 3),
                            err, sizeof(err)) != 0) {
        answer_error(c, "58030", "cannot read the usage ledger: %s", err);
        return;
    }
    c->admin_waiting = true;
}

static void do_show(struct client *c, enum admincmd_show what)
{
    switch (what) {
    case ADMINCMD_SHOW_HELP:
        show_help(c);
        break;
    case ADMINCMD_SHOW_VERSION:
        show_version(c);
        break;
    case ADMINCMD_SHOW_CONFIG:
        show_config(c);
        break;
    case ADMINCMD_SHOW_CLIENTS:
        show_clients(c);
        break;
    case ADMINCMD_SHOW_SERVERS:
        show_servers(c);
        break;
    case ADMINCMD_SHOW_POOLS:
        show_pools(c);
        break;
    case ADMINCMD_SHOW_STATS:
        show_stats(c);
        break;
    case ADMINCMD_SHOW_DATABASES:
        show_databases(c);
        break;
    case ADMINCMD_SHOW_COMPUTES:
        show_computes(c);
        break;
    case ADMINCMD_SHOW_POLICY:
        show_policy(c);
        break;
    case ADMINCMD_SHOW_BACKUPS:
        show_backups(c);
        break;
    case ADMINCMD_SHOW_USAGE: /* issue 5: reached with its argument from run() */
        show_usage(c, 0);
        break;
    }
}

/* ---- commands that act ------------------------------------------------------------------- */

/* RESUME: release the clients PAUSE held, and restart reading from sessions it stopped. */
static void resume_one(struct proxy *p)
{
    struct list_node *it, *tmp;
    p->paused = false;
    if (!list_empty(&p->held) && p->primary != NULL) {
        if (compute_get_state(p->primary) != COMPUTE_RUNNING)
            compute_wake(p->primary); /* a thaw reports RUNNING at once, releasing them */
        if (compute_get_state(p->primary) == COMPUTE_RUNNING) {
            list_for_each_safe(it, tmp, &p->held)
            {
                client_compute_ready(container_of(it, struct client, wait_node));
            }
        }
    }
    list_for_each_safe(it, tmp, &p->clients)
    {
        struct client *cl = container_of(it, struct client, node);
        if (cl->state == CLIENT_ACTIVE && cl->server != NULL && !cl->close_pending)
            client_pump(cl);
    }
}

static void do_resume(struct client *c)
{
    log_action(c, "RESUME");
    for (int k = 0; k < proxy_count(c->proxy); k++)
        resume_one(proxy_nth(c->proxy, k));
    if (!gone(c))
        answer_done(c, "RESUME");
}

static void do_kill(struct client *c, uint64_t id)
{
    struct client *target = NULL;
    for (int k = 0; k < proxy_count(c->proxy) && target == NULL; k++) {
        struct proxy *p = proxy_nth(c->proxy, k);
        for (struct list_node *it = p->clients.next; it != &p->clients; it = it->next) {
            struct client *cl = container_of(it, struct client, node);
            if (cl->id == id && !gone(cl)) {
                target = cl;
                break;
            }
        }
    }
    if (target == NULL) {
        answer_error(c, "42704", "no client with id %" PRIu64 " (see SHOW CLIENTS)", id);
        return;
    }
    char what[64];
    snprintf(what, sizeof(what), "KILL_CLIENT %" PRIu64, id);
    log_action(c, what);
    client_fatal(target, "57P01", "terminated by the admin console");
    if (!gone(c))
        answer_done(c, "KILL_CLIENT");
}

/* SUSPEND: refused while a session is busy; otherwise idle sessions are parked (their snapshot
   taken) and the answer comes when the parking round ends: the suspend, or the reason a session
   could not be parked. */
static void do_suspend(struct client *c)
{
    struct proxy *p = c->proxy;
    if (backup_in_progress()) { /* issue 7: a basebackup streams from the compute */
        answer_error(c, "55000", "cannot suspend: a backup is being taken from the compute");
        return;
    }
    for (int k = 0; k < proxy_count(p); k++) {
        const struct proxy *w = proxy_nth(p, k);
        for (struct list_node *it = w->clients.next; it != &w->clients; it = it->next) {
            const struct client *cl = container_of(it, struct client, node);
            const struct server *s = cl->server;
            if (s != NULL && cl->state != CLIENT_CLOSING && (s->txn != 'I' || s->in_flight > 0)) {
                answer_error(c, "55000", "cannot suspend: client C-%" PRIu64 " is %s", cl->id,
                             s->txn != 'I' ? "inside a transaction" : "running a query");
                return;
            }
        }
    }
    if (park_in_progress(p)) {
        answer_error(c, "55000", "cannot suspend: a suspend is already in progress");
        return;
    }
    if (p->primary == NULL) {
        answer_error(c, "55000", "compute is not running");
        return;
    }
    enum compute_state st = compute_get_state(p->primary);
    if (st != COMPUTE_RUNNING && st != COMPUTE_PAUSED) {
        answer_error(c, "55000", "compute is not running (state: %s)", compute_state_name(st));
        return;
    }
    if (st == COMPUTE_PAUSED)
        compute_wake(p->primary); /* snapshots need it thawed */
    log_action(c, "SUSPEND");
    p->suspend_waiter = c->id;
    c->admin_waiting = true; /* before: a round may end at once */
    if (park_begin(p) == 0) {
        p->suspend_waiter = 0;
        c->admin_waiting = false;
        if (compute_get_state(p->primary) != COMPUTE_SUSPENDING &&
            compute_get_state(p->primary) != COMPUTE_SUSPENDED) {
            answer_error(c, "55000", "compute is not running (state: %s)",
                         compute_state_name(compute_get_state(p->primary)));
            return;
        }
        answer_done(c, "SUSPEND");
    }
}

/* SET key = value: validated on a new snapshot with one key changed, written durably to
   DATA/state/policy, then swapped in as a reload would (persisted policy, issue 5). */
static void do_set(struct client *c, const char *key, const char *value)
{
    struct proxy *p = c->proxy;
    char err[512];
    struct config *cfg = state_policy_check(p->cfg, key, value, err, sizeof(err));
    if (cfg == NULL) {
        answer_error(c, "22023", "%s", err);
        return;
    }
    char *path = policy_path(p);
    if (path == NULL || state_policy_persist(path, key, value, NULL, err, sizeof(err)) != 0) {
        answer_error(c, "58030", "SET %s was not applied: %s", key,
                     path != NULL ? err : "out of memory");
        free(path);
        config_unref(cfg);
        return;
    }
    free(path);
    proxy_reload(p, cfg);
    config_unref(cfg); /* proxy_reload took its own reference */
    if (p->primary != NULL)
        compute_set_config(p->primary, p->cfg);
    proxy_idle_check(p);
    char what[ADMINCMD_TOKEN_MAX * 2 + 16];
    snprintf(what, sizeof(what), "SET %s = '%s'", key, value);
    log_action(c, what);
    answer_done(c, "SET");
}

/* RESET key | RESET ALL: removes the key from DATA/state/policy, then reloads so that the
   configuration's value (file, -c, else the default) applies again. */
static void do_reset(struct client *c, const char *key)
{
    struct proxy *p = c->proxy;
    char err[512] = "";
    char *path = policy_path(p);
    if (path == NULL || state_policy_persist(path, key, NULL, NULL, err, sizeof(err)) != 0) {
        answer_error(c, "58030", "RESET %s was not applied: %s", key,
                     path != NULL ? err : "out of memory");
        free(path);
        return;
    }
    free(path);
    char what[ADMINCMD_TOKEN_MAX + 16];
    snprintf(what, sizeof(what), "RESET %s", key);
    log_action(c, what);
    if (p->on_reload == NULL) {
        answer_error(c, "55000", "RESET %s was saved; it applies at the next start", key);
        return;
    }
    if (p->on_reload(p, err, sizeof(err)) != 0) {
        if (!gone(c))
            answer_error(c, "22023",
                         "RESET %s was saved, but the configuration could not be "
                         "reloaded: %s",
                         key, err);
        return;
    }
    proxy_idle_check(p);
    if (!gone(c))
        answer_done(c, "RESET");
}

static void do_reload(struct client *c)
{
    struct proxy *p = c->proxy;
    char err[512] = "";
    if (p->on_reload == NULL) {
        answer_error(c, "55000", "RELOAD is not available in this process");
        return;
    }
    log_action(c, "RELOAD");
    if (p->on_reload(p, err, sizeof(err)) != 0) {
        if (!gone(c))
            answer_error(c, "22023", "%s", err[0] != '\0' ? err : "reload failed");
        return;
    }
    if (!gone(c))
        answer_done(c, "RELOAD");
}

/* SHUTDOWN: the answer is sent before main is told, since the shutdown may close c. */
static void do_shutdown(struct client *c)
{
    struct proxy *p = c->proxy;
    if (p->on_shutdown == NULL) {
        answer_error(c, "55000", "SHUTDOWN is not available in this process");
        return;
    }
    log_action(c, "SHUTDOWN");
    answer_done(c, "SHUTDOWN");
    client_flush_out(c);
    p->on_shutdown(p, false);
}

/* SCALE REPLICAS n (replicas, issue 6): a forced count until the next SET of min_replicas or
   max_replicas; the replicas are built or drained in the background (see SHOW COMPUTES). */
static void do_scale_replicas(struct client *c, int n)
{
    struct proxy *p = c->proxy;
    char err[256];
    if (p->replicas == NULL) {
        answer_error(c, "55000", "replicas are not available (static compute provider)");
        return;
    }
    if (replicaset_scale(p->replicas, n, err, sizeof(err)) != 0) {
        answer_error(c, "22023", "%s", err);
        return;
    }
    char what[48];
    snprintf(what, sizeof(what), "SCALE REPLICAS %d", n);
    log_action(c, what);
    answer_done(c, "SCALE");
}

static void run(struct client *c, const struct admincmd *cmd)
{
    struct proxy *p = c->proxy;
    switch (cmd->kind) {
    case ADMINCMD_EMPTY:
        pkt_write_empty_query(outb(c));
        pkt_write_ready(outb(c), 'I');
        break;
    case ADMINCMD_SHOW:
        if (cmd->show == ADMINCMD_SHOW_USAGE)
            show_usage(c, cmd->usage_by); /* issue 5: usage ledger */
        else
            do_show(c, cmd->show);
        break;
    case ADMINCMD_SET:
        do_set(c, cmd->key, cmd->value);
        break;
    case ADMINCMD_PAUSE:
        for (int k = 0; k < proxy_count(p); k++)
            proxy_nth(p, k)->paused = true;
        log_action(c, "PAUSE");
        answer_done(c, "PAUSE");
        break;
    case ADMINCMD_RESUME:
        do_resume(c);
        break;
    case ADMINCMD_RELOAD:
        do_reload(c);
        break;
    case ADMINCMD_SHUTDOWN:
        do_shutdown(c);
        break;
    case ADMINCMD_WAKE:
        if (p->primary != NULL)
            compute_wake(p->primary);
        log_action(c, "WAKE");
        if (!gone(c))
            answer_done(c, "WAKE");
        break;
    case ADMINCMD_SUSPEND:
        do_suspend(c);
        break;
    case ADMINCMD_KILL_CLIENT:
        do_kill(c, cmd->client_id);
        break;
    case ADMINCMD_RESET:
        do_reset(c, cmd->key);
        break;
    case ADMINCMD_BACKUP:
        do_backup(c);
        break;
    case ADMINCMD_SCALE_REPLICAS:
        do_scale_replicas(c, cmd->replicas);
        break;
    }
}

/* ---- messages ---------------------------------------------------------------------------- */

static void query(struct client *c, const uint8_t *body, uint32_t blen)
{
    const char *sql;
    if (pkt_parse_query(body, blen, &sql) != PKT_OK) {
        client_fatal(c, "08P01", "invalid Query message");
        return;
    }
    struct admincmd cmd;
    if (admincmd_parse(sql, &cmd) != 0) {
        answer_error(c, cmd.sqlstate, "%s", cmd.message);
        return;
    }
    /* commands read and change the workers' clients, pools and servers: they wait meanwhile */
    struct hub *h = c->proxy->hub;
    hub_stw_begin(h);
    run(c, &cmd);
    hub_stw_end(h);
}

void admin_message(struct client *c, uint8_t type, const uint8_t *body, uint32_t blen)
{
    if (gone(c))
        return;
    bool skipping = c->auth_step == SKIPPING_EXTENDED;
    switch (type) {
    case 'Q':
        if (!skipping)
            query(c, body, blen);
        break;
    case 'X':
        client_close(c, "client terminated");
        break;
    case 'S':
        c->auth_step = AUTH_NONE;
        pkt_write_ready(outb(c), 'I');
        break;
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
    case 'H':
    case 'F':
        if (!skipping) {
            c->auth_step = SKIPPING_EXTENDED;
            pkt_write_error(outb(c), "ERROR", "0A000",
                            "the pgtide admin console supports only the simple query protocol",
                            NULL, NULL);
        }
        break;
    default:
        client_fatal(c, "08P01", "unexpected message type 0x%02x on the admin console", type);
        break;
    }
}
