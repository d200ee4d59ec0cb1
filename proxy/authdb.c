/*
 * authdb: finds a user's stored secret for proxy-side authentication. auth_file entries win;
 * then the auth cache (DATA/state/auth.cache, one "user<TAB>secret" line per role, rewritten
 * atomically), which is refreshed from pg_authid every time the primary starts; then
 * auth_query on the compute through non-blocking libpq. A lookup that needs the compute while
 * it is down waits for it (and wakes it); users the compute does not know are remembered as
 * absent until the next refresh, so a stream of bad user names wakes nothing twice. With worker
 * threads each worker has its own copy (same lookups, no locks); home's alone refreshes it from
 * pg_authid, sends the result to the workers (HUB_AUTHSET) and writes the file, and what a
 * worker's auth_query finds reaches home and the other workers as HUB_AUTH messages.
 */
#include "pgtide/authdb.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/list.h"
#include "pgtide/hub.h"
#include "pgtide/log.h"
#include "pgtide/pgq.h"
#include "pgtide/proxy.h"
#include "pgtide/secret.h"
#include "pgtide/store.h"
#include "pgtide/userlist.h"

#define AUTHDB_QUERY_TIMEOUT_MS 10000

struct entry {
    char *user, *secret; /* secret NULL = known absent */
};

struct authdb_req {
    struct list_node node;
    struct authdb *db;
    char *user;
    authdb_done_fn done;
    void *arg;
    struct pgq *q;
};

struct authdb {
    struct proxy *p;
    struct entry *entries;
    int n, cap;
    struct list_node waiting;  /* requests waiting for the compute */
    struct list_node querying; /* requests with an auth_query running */
    struct pgq *refresh;
    char *path;
    bool awaiting_home; /* a worker after a compute start: home's refresh is on its way */
};

/* A copy of home's cache after its refresh from pg_authid, for a worker (HUB_AUTHSET). */
struct authdb_set {
    struct entry *entries;
    int n;
};

static struct entry *find(struct authdb *a, const char *user)
{
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->entries[i].user, user) == 0)
            return &a->entries[i];
    return NULL;
}

void authdb_secret_free(char *user, char *secret)
{
    free(user);
    if (secret != NULL) {
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
    }
}

static void free_entries(struct entry *e, int n)
{
    for (int i = 0; i < n; i++)
        authdb_secret_free(e[i].user, e[i].secret);
}

static void clear_entries(struct authdb *a)
{
    free_entries(a->entries, a->n);
    a->n = 0;
}

/* Sets (or adds) user's secret; NULL marks it absent. 0 or -1 (out of memory). */
static int put(struct authdb *a, const char *user, const char *secret)
{
    struct entry *e = find(a, user);
    char *s = secret ? strdup(secret) : NULL;
    if (secret != NULL && s == NULL)
        return -1;
    if (e != NULL) {
        free(e->secret);
        e->secret = s;
        return 0;
    }
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        struct entry *ne = realloc(a->entries, (size_t) cap * sizeof(*ne));
        if (ne == NULL) {
            free(s);
            return -1;
        }
        a->entries = ne;
        a->cap = cap;
    }
    char *u = strdup(user);
    if (u == NULL) {
        free(s);
        return -1;
    }
    a->entries[a->n].user = u;
    a->entries[a->n].secret = s;
    a->n++;
    return 0;
}

static bool storable(const char *s)
{
    return strpbrk(s, "\t\n\r") == NULL;
}

/* Writes every known secret to the cache file, atomically. */
static void save(struct authdb *a)
{
    if (a->path == NULL)
        return;
    size_t len = 0;
    for (int i = 0; i < a->n; i++)
        if (a->entries[i].secret != NULL)
            len += strlen(a->entries[i].user) + strlen(a->entries[i].secret) + 2;
    char *text = malloc(len + 1);
    if (text == NULL)
        return;
    size_t off = 0;
    for (int i = 0; i < a->n; i++) {
        const struct entry *e = &a->entries[i];
        if (e->secret == NULL || !storable(e->user) || !storable(e->secret))
            continue;
        off += (size_t) sprintf(text + off, "%s\t%s\n", e->user, e->secret);
    }
    if (store_write_file(a->path, text, off, 0600) != 0)
        log_warn("cannot write the auth cache %s", a->path);
    OPENSSL_cleanse(text, off);
    free(text);
}

static void load(struct authdb *a)
{
    char *text = NULL;
    size_t len = 0;
    if (a->path == NULL || store_read_file(a->path, &text, &len) != 0)
        return;
    char *save_ptr = NULL;
    for (char *line = strtok_r(text, "\n", &save_ptr); line != NULL;
         line = strtok_r(NULL, "\n", &save_ptr)) {
        char *tab = strchr(line, '\t');
        if (tab == NULL)
            continue;
        *tab = '\0';
        (void) put(a, line, tab + 1);
    }
    OPENSSL_cleanse(text, len);
    free(text);
    log_info("auth cache: %d users", a->n);
}

struct authdb *authdb_new(struct proxy *p)
{
    struct authdb *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->p = p;
    list_init(&a->waiting);
    list_init(&a->querying);
    if (p->store != NULL)
        a->path = store_path(p->store, "state/auth.cache");
    load(a);
    if (p->worker > 0) { /* home's file: read, never written from here */
        free(a->path);
        a->path = NULL;
    }
    return a;
}

static void finish(struct authdb_req *r, const char *secret)
{
    list_del(&r->node);
    authdb_done_fn done = r->done;
    void *arg = r->arg;
    free(r->user);
    free(r);
    done(arg, secret);
}

void authdb_free(struct authdb *a)
{
    if (a == NULL)
        return;
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &a->querying)
    {
        struct authdb_req *r = container_of(it, struct authdb_req, node);
        pgq_cancel(r->q);
        list_del(it);
        free(r->user);
        free(r);
    }
    list_for_each_safe(it, tmp, &a->waiting)
    {
        struct authdb_req *r = container_of(it, struct authdb_req, node);
        list_del(it);
        free(r->user);
        free(r);
    }
    if (a->refresh != NULL)
        pgq_cancel(a->refresh);
    clear_entries(a);
    free(a->entries);
    free(a->path);
    free(a);
}

/* libpq connection string for control-plane queries on the primary. */
static int conninfo(struct authdb *a, char *out, size_t len)
{
    struct proxy *p = a->p;
    const struct config *cfg = p->cfg;
    const char *user = cfg->auth_user[0] ? cfg->auth_user : "postgres";
    if (!compute_is_static(p->primary))
        return snprintf(out, len, "host='%s' port=%d dbname=postgres user='%s'",
                        compute_host(p->primary), compute_port(p->primary), user) < (int) len
                   ? 0
                   : -1;
    /* a static server: auth_user's password must be in auth_file, in plain text */
    struct secret sec = {0};
    const char *text = p->auth_file ? userlist_get(p->auth_file, user) : NULL;
    const char *pw = "";
    if (text != NULL && secret_parse(text, &sec) == 0 && sec.kind == SECRET_PLAIN)
        pw = sec.plain;
    int n = snprintf(out, len, "host='%s' port=%d dbname=postgres user='%s' password='%s'",
                     compute_host(p->primary), compute_port(p->primary), user, pw);
    secret_clear(&sec);
    return n < (int) len ? 0 : -1;
}

/* Posts a copy of user's secret to proxy `to` (HUB_AUTH; `from`: the worker that found it). */
static void post_secret(struct proxy *to, const char *user, const char *secret, int from)
{
    struct hub_msg m = {.kind = HUB_AUTH, .from = from};
    m.user = strdup(user);
    m.secret = strdup(secret);
    if (m.user == NULL || m.secret == NULL) {
        free(m.user);
        free(m.secret);
        return;
    }
    hub_post(to, &m);
}

/* A secret auth_query found on a worker goes to home (which writes the file). */
static void share(struct authdb *a, const char *user, const char *secret)
{
    struct proxy *p = a->p;
    if (p->hub != NULL && p->worker > 0)
        post_secret(p->home, user, secret, p->worker);
}

static void query_done(void *arg, int ntuples, int nfields, const char *const *values,
                       const char *err)
{
    struct authdb_req *r = arg;
    struct authdb *a = r->db;
    r->q = NULL;
    const char *secret = NULL;
    if (err != NULL) {
        log_warn("auth_query for user \"%s\" failed: %s", r->user, err);
    } else if (ntuples > 0 && nfields >= 2 && values[1] != NULL) {
        secret = values[1];
        (void) put(a, r->user, secret);
        save(a);
        share(a, r->user, secret);
    } else {
        (void) put(a, r->user, NULL);
    }
    finish(r, secret);
}

void authdb_learnt(struct authdb *a, char *user, char *secret, int from)
{
    struct proxy *p = a->p;
    (void) put(a, user, secret);
    if (p->worker == 0 && p->hub != NULL) {
        save(a);
        for (int i = 1; i <= hub_size(p->hub); i++)
            if (i != from)
                post_secret(hub_worker(p->hub, i), user, secret, from);
    }
    authdb_secret_free(user, secret);
}

static void run_query(struct authdb *a, struct authdb_req *r)
{
    char ci[1024];
    if (conninfo(a, ci, sizeof(ci)) != 0) {
        finish(r, NULL);
        return;
    }
    const char *params[1] = {r->user};
    list_add_tail(&a->querying, &r->node);
    r->q = pgq_start(a->p->loop, ci, a->p->cfg->auth_query, 1, params, AUTHDB_QUERY_TIMEOUT_MS,
                     query_done, r);
    if (r->q == NULL)
        finish(r, NULL);
}

struct authdb_req *authdb_lookup(struct authdb *a, const char *user, authdb_done_fn done, void *arg)
{
    struct proxy *p = a->p;
    const char *text = p->auth_file ? userlist_get(p->auth_file, user) : NULL;
    if (text != NULL) {
        done(arg, text);
        return NULL;
    }
    struct entry *e = find(a, user);
    if (e != NULL) {
        done(arg, e->secret);
        return NULL;
    }
    if (p->cfg->auth_query[0] == '\0') {
        done(arg, NULL);
        return NULL;
    }
    struct authdb_req *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->user = strdup(user)) == NULL) {
        free(r);
        done(arg, NULL);
        return NULL;
    }
    r->db = a;
    r->done = done;
    r->arg = arg;
    list_init(&r->node);
    if (compute_get_state(p->primary) == COMPUTE_RUNNING && a->refresh == NULL &&
        !a->awaiting_home) {
        run_query(a, r);
        return list_unlinked(&r->node) ? NULL : r;
    }
    /* an unknown user wakes the compute once to be looked up */
    list_add_tail(&a->waiting, &r->node);
    hub_lock(p);
    compute_wake(p->primary);
    hub_unlock(p);
    return r;
}

void authdb_cancel(struct authdb *a, struct authdb_req *r)
{
    (void) a;
    if (r == NULL)
        return;
    if (r->q != NULL)
        pgq_cancel(r->q);
    list_del(&r->node);
    free(r->user);
    free(r);
}

/* Answers the waiting lookups from the cache, or with auth_query for users it lacks. */
static void serve_waiting(struct authdb *a)
{
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &a->waiting)
    {
        struct authdb_req *r = container_of(it, struct authdb_req, node);
        struct entry *e = find(a, r->user);
        if (e != NULL) {
            finish(r, e->secret);
        } else {
            list_del(&r->node);
            run_query(a, r);
        }
    }
}

void authdb_set_free(struct authdb_set *set)
{
    if (set == NULL)
        return;
    free_entries(set->entries, set->n);
    free(set->entries);
    free(set);
}

/* The known secrets of a (home's), copied; NULL when out of memory. */
static struct authdb_set *snapshot(const struct authdb *a)
{
    struct authdb_set *set = calloc(1, sizeof(*set));
    if (set == NULL)
        return NULL;
    if (a->n > 0 && (set->entries = calloc((size_t) a->n, sizeof(*set->entries))) == NULL) {
        free(set);
        return NULL;
    }
    for (int i = 0; i < a->n; i++) {
        const struct entry *e = &a->entries[i];
        if (e->secret == NULL)
            continue;
        struct entry *d = &set->entries[set->n];
        d->user = strdup(e->user);
        d->secret = strdup(e->secret);
        if (d->user == NULL || d->secret == NULL) {
            free(d->user);
            free(d->secret);
            authdb_set_free(set);
            return NULL;
        }
        set->n++;
    }
    return set;
}

/* Home, after a compute start: every worker gets the refreshed cache (or, when the refresh
   failed, only word to go on: its waiting lookups then use auth_query). */
static void push_to_workers(struct authdb *a, bool refreshed)
{
    struct proxy *p = a->p;
    if (p->hub == NULL || p->worker > 0)
        return;
    for (int i = 1; i <= hub_size(p->hub); i++) {
        struct hub_msg m = {.kind = HUB_AUTHSET, .authset = refreshed ? snapshot(a) : NULL};
        hub_post(hub_worker(p->hub, i), &m);
    }
}

void authdb_take_set(struct authdb *a, struct authdb_set *set)
{
    if (set != NULL) {
        clear_entries(a);
        for (int i = 0; i < set->n; i++)
            (void) put(a, set->entries[i].user, set->entries[i].secret);
        authdb_set_free(set);
    }
    a->awaiting_home = false;
    serve_waiting(a);
}

static void refresh_done(void *arg, int ntuples, int nfields, const char *const *values,
                         const char *err)
{
    struct authdb *a = arg;
    a->refresh = NULL;
    bool ok = false;
    if (err != NULL) {
        log_warn("auth cache refresh failed: %s", err);
    } else if (nfields >= 2) {
        clear_entries(a);
        for (int i = 0; i < ntuples; i++)
            if (values[i * nfields + 1] != NULL)
                (void) put(a, values[i * nfields], values[i * nfields + 1]);
        save(a);
        ok = true;
        log_info("auth cache refreshed from pg_authid: %d users", a->n);
    }
    push_to_workers(a, ok);
    serve_waiting(a);
}

void authdb_compute_ready(struct authdb *a, bool fresh_start)
{
    struct proxy *p = a->p;
    bool refreshes = fresh_start && !compute_is_static(p->primary);
    if (refreshes && p->hub != NULL && p->worker > 0) {
        a->awaiting_home = true; /* one query for all: home's refresh comes as HUB_AUTHSET */
        return;
    }
    if (!refreshes || a->refresh != NULL) { /* a running refresh pushes when done */
        serve_waiting(a);
        return;
    }
    char ci[1024];
    if (conninfo(a, ci, sizeof(ci)) == 0)
        a->refresh = pgq_start(p->loop, ci,
                               "SELECT rolname, rolpassword FROM pg_catalog.pg_authid "
                               "WHERE rolcanlogin AND rolpassword IS NOT NULL",
                               0, NULL, AUTHDB_QUERY_TIMEOUT_MS, refresh_done, a);
    if (a->refresh == NULL) {
        push_to_workers(a, false);
        serve_waiting(a);
    }
}

void authdb_compute_failed(struct authdb *a)
{
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &a->waiting)
    {
        finish(container_of(it, struct authdb_req, node), NULL);
    }
}

int authdb_seed(struct authdb *a, const char *user, const char *secret)
{
    if (put(a, user, secret) != 0)
        return -1;
    save(a);
    return 0;
}

bool authdb_busy(const struct authdb *a)
{
    return a->refresh != NULL || !list_empty(&a->querying);
}

int authdb_cached(const struct authdb *a)
{
    int n = 0;
    for (int i = 0; i < a->n; i++)
        if (a->entries[i].secret != NULL)
            n++;
    return n;
}
