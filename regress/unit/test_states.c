/*
 * Check suite for the connection state tables and the pool lookup. client_state_legal() and
 * server_state_legal() are checked pair by pair against the transition diagrams in client.h and
 * server.h, plus the shortcuts the code takes on purpose (each one names the call site that
 * needs it): every expected edge must be allowed, every other pair refused, CLOSING reachable
 * from everywhere and left by nothing, and no state needs a self-transition. The *_state_name()
 * functions must name every state distinctly. pool_get() and pool_count_clients() are checked on
 * a hand-built struct proxy (no sockets, no event loop, no server).
 */
#include "pgtide/client.h"
#include "pgtide/config.h"
#include "pgtide/list.h"
#include "pgtide/pool.h"
#include "pgtide/proxy.h"
#include "pgtide/server.h"
#include "unit.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCLIENT (CLIENT_CLOSING + 1)
#define NSERVER (SERVER_CLOSING + 1)

struct edge {
    int from, to;
    const char *why;
};

/* ---- client: the expected table ---- */

/* The arrows of the diagram in client.h:
     TLS <-> STARTUP -> LOOKUP -> AUTH -> HELD -> WAITING -> ACTIVE -> (close)
                                    \-> ADMIN  ^        ^          |
                                     \-> IDLE -+--------+--------<-+        */
static const struct edge client_diagram[] = {
    {CLIENT_TLS, CLIENT_STARTUP, "TLS handshake done"},
    {CLIENT_STARTUP, CLIENT_TLS, "SSLRequest accepted"},
    {CLIENT_STARTUP, CLIENT_LOOKUP, "StartupMessage, secret needed"},
    {CLIENT_LOOKUP, CLIENT_AUTH, "secret found"},
    {CLIENT_AUTH, CLIENT_HELD, "authenticated, compute not running"},
    {CLIENT_AUTH, CLIENT_ADMIN, "authenticated to the console"},
    {CLIENT_HELD, CLIENT_WAITING, "compute running"},
    {CLIENT_WAITING, CLIENT_ACTIVE, "server attached"},
    {CLIENT_ACTIVE, CLIENT_IDLE, "parked before a suspend, or a transaction ended (pooling)"},
    {CLIENT_IDLE, CLIENT_WAITING, "idle session speaks, compute running"},
    {CLIENT_AUTH, CLIENT_IDLE, "transaction pooling: welcomed from the pool's parameters"},
};

/* Shortcuts the code takes that the diagram draws only implicitly. */
static const struct edge client_shortcuts[] = {
    /* begin_auth(): trust and cert need no secret, auth_ok() runs in STARTUP */
    {CLIENT_STARTUP, CLIENT_ADMIN, "trust/cert login to the console (auth_ok -> admin_welcome)"},
    {CLIENT_STARTUP, CLIENT_HELD, "trust/cert login, compute not running (request_server)"},
    {CLIENT_STARTUP, CLIENT_WAITING, "trust/cert login, compute running (request_server)"},
    /* request_server(): a running compute needs no holding */
    {CLIENT_AUTH, CLIENT_WAITING, "password login, compute running (request_server)"},
    /* on_read() in IDLE calls request_server() */
    {CLIENT_IDLE, CLIENT_HELD, "idle session speaks, compute suspended (request_server)"},
    {CLIENT_STARTUP, CLIENT_IDLE, "trust/cert login in transaction pooling"},
    /* client_reroute(): a reader whose replica login failed, primary not running */
    {CLIENT_WAITING, CLIENT_HELD, "reader rerouted from an unreachable replica to the primary"},
};

static bool in_table(const struct edge *t, size_t n, int from, int to)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].from == from && t[i].to == to)
            return true;
    return false;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static bool client_expected(int from, int to)
{
    if (to == CLIENT_CLOSING)
        return true;
    return in_table(client_diagram, N(client_diagram), from, to) ||
           in_table(client_shortcuts, N(client_shortcuts), from, to);
}

START_TEST(test_client_diagram_edges)
{
    for (size_t i = 0; i < N(client_diagram); i++) {
        const struct edge *e = &client_diagram[i];
        ck_assert_msg(client_state_legal(e->from, e->to), "client %s -> %s (%s) is refused",
                      client_state_name(e->from), client_state_name(e->to), e->why);
    }
}
END_TEST

START_TEST(test_client_shortcuts)
{
    char missing[1024] = "";
    for (size_t i = 0; i < N(client_shortcuts); i++) {
        const struct edge *e = &client_shortcuts[i];
        if (!client_state_legal(e->from, e->to)) {
            size_t l = strlen(missing);
            snprintf(missing + l, sizeof(missing) - l, " [%s -> %s: %s]",
                     client_state_name(e->from), client_state_name(e->to), e->why);
        }
    }
    ck_assert_msg(missing[0] == '\0', "client transitions the code takes are refused:%s", missing);
}
END_TEST

START_TEST(test_client_nothing_else)
{
    char extra[1024] = "";
    for (int from = 0; from < NCLIENT; from++)
        for (int to = 0; to < NCLIENT; to++) {
            if (from == to || client_expected(from, to))
                continue;
            if (client_state_legal(from, to)) {
                size_t l = strlen(extra);
                snprintf(extra + l, sizeof(extra) - l, " [%s -> %s]", client_state_name(from),
                         client_state_name(to));
            }
        }
    ck_assert_msg(extra[0] == '\0', "client transitions allowed but neither drawn nor used:%s",
                  extra);
}
END_TEST

START_TEST(test_client_closing)
{
    for (int s = 0; s < NCLIENT; s++) {
        ck_assert_msg(client_state_legal(s, CLIENT_CLOSING), "%s -> closing refused",
                      client_state_name(s));
        if (s != CLIENT_CLOSING)
            ck_assert_msg(!client_state_legal(CLIENT_CLOSING, s), "closing -> %s allowed",
                          client_state_name(s));
    }
}
END_TEST

START_TEST(test_client_no_self_transitions)
{
    /* client_set_state() returns early when from == to: the table needs no self edge */
    for (int s = 0; s < CLIENT_CLOSING; s++)
        ck_assert_msg(!client_state_legal(s, s), "%s -> itself allowed", client_state_name(s));
}
END_TEST

START_TEST(test_client_every_state_reachable)
{
    /* from TLS or STARTUP (where client_accept starts) every state can be reached */
    bool seen[NCLIENT] = {false};
    seen[CLIENT_STARTUP] = seen[CLIENT_TLS] = true;
    for (int round = 0; round < NCLIENT; round++)
        for (int from = 0; from < NCLIENT; from++)
            for (int to = 0; to < NCLIENT; to++)
                if (seen[from] && client_state_legal(from, to))
                    seen[to] = true;
    for (int s = 0; s < NCLIENT; s++)
        ck_assert_msg(seen[s], "client state %s unreachable", client_state_name(s));
}
END_TEST

START_TEST(test_client_names)
{
    for (int a = 0; a < NCLIENT; a++) {
        const char *na = client_state_name(a);
        ck_assert_ptr_nonnull(na);
        ck_assert_str_ne(na, "?");
        ck_assert_uint_gt(strlen(na), 0);
        for (int b = a + 1; b < NCLIENT; b++)
            ck_assert_str_ne(na, client_state_name(b));
    }
    ck_assert_str_eq(client_state_name(CLIENT_CLOSING), "closing");
    ck_assert_str_eq(client_state_name((enum client_state) NCLIENT), "?");
    ck_assert(!client_state_legal((enum client_state) NCLIENT, CLIENT_STARTUP));
}
END_TEST

/* ---- server: the expected table ---- */

/* The arrows of the diagram in server.h:
     CONNECTING -> TLS_REQ -> TLS -> LOGIN -> IDLE <-> SETUP -> ACTIVE -> RESET -> IDLE
                                                                 ACTIVE <-> PARK      */
static const struct edge server_diagram[] = {
    {SERVER_CONNECTING, SERVER_TLS_REQ, "connected over TCP with TLS on"},
    {SERVER_TLS_REQ, SERVER_TLS, "server answered 'S'"},
    {SERVER_TLS, SERVER_LOGIN, "TLS handshake done"},
    {SERVER_LOGIN, SERVER_IDLE, "logged in"},
    {SERVER_IDLE, SERVER_SETUP, "assigned, parameters to apply"},
    {SERVER_SETUP, SERVER_ACTIVE, "SET done"},
    {SERVER_ACTIVE, SERVER_RESET, "client left"},
    {SERVER_RESET, SERVER_IDLE, "reset done"},
    {SERVER_ACTIVE, SERVER_PARK, "snapshot before a suspend"},
    {SERVER_PARK, SERVER_ACTIVE, "snapshot refused, keep relaying"},
    {SERVER_ACTIVE, SERVER_IDLE, "transaction pooling: the transaction ended"},
};

static const struct edge server_shortcuts[] = {
    {SERVER_CONNECTING, SERVER_LOGIN, "unix socket or TLS off (send_startup)"},
    {SERVER_TLS_REQ, SERVER_LOGIN, "server answered 'N' (tls_answer -> send_startup)"},
    {SERVER_IDLE, SERVER_ACTIVE, "assigned, nothing to apply (server_assign)"},
    {SERVER_SETUP, SERVER_RESET, "SET failed, back to the pool through RESET (internal_message)"},
};

/* Drawn as IDLE <-> SETUP, but the code goes SETUP -> RESET -> IDLE instead; either is fine. */
static const struct edge server_optional[] = {};

static bool server_expected(int from, int to)
{
    if (to == SERVER_CLOSING)
        return true;
    return in_table(server_diagram, N(server_diagram), from, to) ||
           in_table(server_shortcuts, N(server_shortcuts), from, to);
}

START_TEST(test_server_diagram_edges)
{
    for (size_t i = 0; i < N(server_diagram); i++) {
        const struct edge *e = &server_diagram[i];
        if (in_table(server_optional, N(server_optional), e->from, e->to))
            continue;
        ck_assert_msg(server_state_legal(e->from, e->to), "server %s -> %s (%s) is refused",
                      server_state_name(e->from), server_state_name(e->to), e->why);
    }
}
END_TEST

START_TEST(test_server_shortcuts)
{
    for (size_t i = 0; i < N(server_shortcuts); i++) {
        const struct edge *e = &server_shortcuts[i];
        ck_assert_msg(server_state_legal(e->from, e->to), "server %s -> %s (%s) is refused",
                      server_state_name(e->from), server_state_name(e->to), e->why);
    }
}
END_TEST

START_TEST(test_server_nothing_else)
{
    char extra[1024] = "";
    for (int from = 0; from < NSERVER; from++)
        for (int to = 0; to < NSERVER; to++) {
            if (from == to || server_expected(from, to))
                continue;
            if (server_state_legal(from, to)) {
                size_t l = strlen(extra);
                snprintf(extra + l, sizeof(extra) - l, " [%s -> %s]", server_state_name(from),
                         server_state_name(to));
            }
        }
    ck_assert_msg(extra[0] == '\0', "server transitions allowed but neither drawn nor used:%s",
                  extra);
}
END_TEST

START_TEST(test_server_closing)
{
    for (int s = 0; s < NSERVER; s++) {
        ck_assert_msg(server_state_legal(s, SERVER_CLOSING), "%s -> closing refused",
                      server_state_name(s));
        if (s != SERVER_CLOSING)
            ck_assert_msg(!server_state_legal(SERVER_CLOSING, s), "closing -> %s allowed",
                          server_state_name(s));
    }
}
END_TEST

START_TEST(test_server_no_self_transitions)
{
    for (int s = 0; s < SERVER_CLOSING; s++)
        ck_assert_msg(!server_state_legal(s, s), "%s -> itself allowed", server_state_name(s));
}
END_TEST

START_TEST(test_server_every_state_reachable)
{
    bool seen[NSERVER] = {false};
    seen[SERVER_CONNECTING] = true;
    for (int round = 0; round < NSERVER; round++)
        for (int from = 0; from < NSERVER; from++)
            for (int to = 0; to < NSERVER; to++)
                if (seen[from] && server_state_legal(from, to))
                    seen[to] = true;
    for (int s = 0; s < NSERVER; s++)
        ck_assert_msg(seen[s], "server state %s unreachable", server_state_name(s));
    /* and an IDLE server can always get back to IDLE after serving (no dead end but CLOSING) */
    for (int s = SERVER_IDLE; s < SERVER_CLOSING; s++) {
        bool back[NSERVER] = {false};
        back[s] = true;
        for (int round = 0; round < NSERVER; round++)
            for (int from = 0; from < NSERVER; from++)
                for (int to = 0; to < NSERVER; to++)
                    if (back[from] && server_state_legal(from, to))
                        back[to] = true;
        ck_assert_msg(back[SERVER_IDLE], "server state %s cannot return to idle",
                      server_state_name(s));
    }
}
END_TEST

START_TEST(test_server_names)
{
    for (int a = 0; a < NSERVER; a++) {
        const char *na = server_state_name(a);
        ck_assert_ptr_nonnull(na);
        ck_assert_str_ne(na, "?");
        ck_assert_uint_gt(strlen(na), 0);
        for (int b = a + 1; b < NSERVER; b++)
            ck_assert_str_ne(na, server_state_name(b));
    }
    ck_assert_str_eq(server_state_name(SERVER_CLOSING), "closing");
    ck_assert_str_eq(server_state_name((enum server_state) NSERVER), "?");
    ck_assert(!server_state_legal((enum server_state) NSERVER, SERVER_IDLE));
}
END_TEST

/* ---- pool ---- */

static struct proxy *fake_proxy(void)
{
    struct proxy *p = calloc(1, sizeof(*p));
    ck_assert_ptr_nonnull(p);
    p->home = p; /* the whole data plane (no worker threads) */
    list_init(&p->clients);
    list_init(&p->held);
    list_init(&p->pools);
    p->cfg = config_new_defaults();
    ck_assert_ptr_nonnull(p->cfg);
    return p;
}

static void fake_proxy_free(struct proxy *p)
{
    struct list_node *it, *tmp;
    list_for_each_safe(it, tmp, &p->pools)
    {
        struct pool *pool = container_of(it, struct pool, node);
        list_del(&pool->node);
        free(pool->database);
        free(pool->user);
        free(pool);
    }
    list_for_each_safe(it, tmp, &p->clients)
    {
        struct client *c = container_of(it, struct client, node);
        list_del(&c->node);
        free(c);
    }
    config_unref(p->cfg);
    free(p);
}

static struct client *fake_client(struct proxy *p, struct pool *pool, enum client_state st)
{
    struct client *c = calloc(1, sizeof(*c));
    ck_assert_ptr_nonnull(c);
    c->proxy = p;
    c->pool = pool;
    c->state = st;
    list_add_tail(&p->clients, &c->node);
    return c;
}

START_TEST(test_pool_get)
{
    struct proxy *p = fake_proxy();
    char db[] = "app", user[] = "alice";
    struct pool *a = pool_get(p, db, user);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_eq(a->proxy, p);
    ck_assert_str_eq(a->database, "app");
    ck_assert_str_eq(a->user, "alice");
    /* the names are copies: the caller's strings may go away */
    ck_assert_ptr_ne(a->database, db);
    ck_assert_ptr_ne(a->user, user);
    db[0] = 'X';
    user[0] = 'X';
    ck_assert_str_eq(a->database, "app");
    ck_assert(list_empty(&a->opening) && list_empty(&a->idle) && list_empty(&a->used) &&
              list_empty(&a->waiting));
    ck_assert_int_eq(a->nservers, 0);

    ck_assert_ptr_eq(pool_get(p, "app", "alice"), a);
    struct pool *b = pool_get(p, "app", "bob");
    struct pool *c = pool_get(p, "other", "alice");
    struct pool *d = pool_get(p, "appa", "lice"); /* same concatenation, different pair */
    struct pool *e = pool_get(p, "App", "alice"); /* names are case-sensitive */
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(e);
    struct pool *all[] = {a, b, c, d, e};
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            ck_assert_ptr_ne(all[i], all[j]);
    ck_assert_uint_eq(list_count(&p->pools), 5);
    ck_assert_ptr_eq(pool_get(p, "other", "alice"), c);
    ck_assert_ptr_eq(pool_get(p, "app", "bob"), b);
    ck_assert_ptr_eq(pool_get(p, "appa", "lice"), d);
    ck_assert_uint_eq(list_count(&p->pools), 5);
    fake_proxy_free(p);
}
END_TEST

START_TEST(test_pool_count_clients)
{
    struct proxy *p = fake_proxy();
    struct pool *a = pool_get(p, "app", "alice");
    struct pool *b = pool_get(p, "app", "bob");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    for (int s = 0; s < NCLIENT; s++)
        ck_assert_int_eq(pool_count_clients(a, s), 0);
    fake_client(p, a, CLIENT_ACTIVE);
    fake_client(p, a, CLIENT_ACTIVE);
    fake_client(p, a, CLIENT_WAITING);
    fake_client(p, b, CLIENT_ACTIVE);
    fake_client(p, b, CLIENT_HELD);
    fake_client(p, NULL, CLIENT_ACTIVE); /* not (yet) in a pool */
    fake_client(p, NULL, CLIENT_STARTUP);
    ck_assert_int_eq(pool_count_clients(a, CLIENT_ACTIVE), 2);
    ck_assert_int_eq(pool_count_clients(a, CLIENT_WAITING), 1);
    ck_assert_int_eq(pool_count_clients(a, CLIENT_HELD), 0);
    ck_assert_int_eq(pool_count_clients(b, CLIENT_ACTIVE), 1);
    ck_assert_int_eq(pool_count_clients(b, CLIENT_HELD), 1);
    ck_assert_int_eq(pool_count_clients(b, CLIENT_WAITING), 0);
    ck_assert_int_eq(pool_count_clients(a, CLIENT_STARTUP), 0);
    int total = 0;
    for (int s = 0; s < NCLIENT; s++)
        total += pool_count_clients(a, s) + pool_count_clients(b, s);
    ck_assert_int_eq(total, 5);
    fake_proxy_free(p);
}
END_TEST

static Suite *states_suite(void)
{
    Suite *s = suite_create("states");
    TCase *tc = tcase_create("client");
    tcase_add_test(tc, test_client_diagram_edges);
    tcase_add_test(tc, test_client_shortcuts);
    tcase_add_test(tc, test_client_nothing_else);
    tcase_add_test(tc, test_client_closing);
    tcase_add_test(tc, test_client_no_self_transitions);
    tcase_add_test(tc, test_client_every_state_reachable);
    tcase_add_test(tc, test_client_names);
    suite_add_tcase(s, tc);
    tc = tcase_create("server");
    tcase_add_test(tc, test_server_diagram_edges);
    tcase_add_test(tc, test_server_shortcuts);
    tcase_add_test(tc, test_server_nothing_else);
    tcase_add_test(tc, test_server_closing);
    tcase_add_test(tc, test_server_no_self_transitions);
    tcase_add_test(tc, test_server_every_state_reachable);
    tcase_add_test(tc, test_server_names);
    suite_add_tcase(s, tc);
    tc = tcase_create("pool");
    tcase_add_test(tc, test_pool_get);
    tcase_add_test(tc, test_pool_count_clients);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(states_suite());
}
