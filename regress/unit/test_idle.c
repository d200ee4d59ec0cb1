/*
 * Check suite for what an idle client costs (issue 4, part 6: 10,000 held connections). The
 * client struct stays within one 512-byte allocation class; parameter lists and user/database
 * names are shared between clients (txn_pset: equal lists are one object, counted, freed with
 * their last reference, with the signatures the pooling fast path compares); a client's view of
 * the ParameterStatus values moves between shared lists as it changes; the park blocker and the
 * peer address text are made on demand; relay buffers a burst left pooled are freed by the
 * periodic trim. Runs on a hand-built struct proxy (no sockets, no loop).
 */
#include "pgtide/buf.h"
#include "pgtide/client.h"
#include "pgtide/list.h"
#include "pgtide/proxy.h"
#include "pgtide/txn.h"
#include "unit.h"

#include <arpa/inet.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct proxy *fake_proxy(void)
{
    struct proxy *p = calloc(1, sizeof(*p));
    ck_assert_ptr_nonnull(p);
    p->home = p; /* the whole data plane (no worker threads) */
    list_init(&p->clients);
    return p;
}

static struct client *fake_client(struct proxy *p)
{
    struct client *c = calloc(1, sizeof(*c));
    ck_assert_ptr_nonnull(c);
    c->proxy = p;
    return c;
}

static void fake_client_free(struct client *c)
{
    txn_pset_put(c->proxy, c->params);
    txn_pset_put(c->proxy, c->opts);
    txn_client_free(c);
    free(c->park_blocker);
    free(c);
}

static void fake_proxy_free(struct proxy *p)
{
    ck_assert_uint_eq(txn_intern_count(p), 0); /* every reference was given back */
    txn_intern_free(p->interned);
    free(p);
}

static uint32_t refs(const struct txn_pset *ps)
{
    return ps->refs;
}

START_TEST(test_client_size)
{
    /* 10,000 idle clients: the struct is most of what each one costs (jemalloc rounds a 513-byte
       object up to 640). What only authentication, parking or a message in flight needs is
       allocated for that time. */
    ck_assert_uint_le(sizeof(struct client), 512);
    ck_assert_uint_le(sizeof(union client_addr), 28);
}
END_TEST

START_TEST(test_pset_shared)
{
    struct proxy *p = fake_proxy();
    struct client_param a[] = {{"TimeZone", "UTC"}, {"application_name", "app"}};
    char tz[] = "TimeZone", utc[] = "UTC"; /* equal text, other memory */
    struct client_param b[] = {{tz, utc}, {"application_name", "app"}};
    const struct txn_pset *x = NULL, *y = NULL, *z = NULL;
    ck_assert_int_eq(txn_pset_set(p, &x, a, 2), 0);
    ck_assert_int_eq(txn_pset_set(p, &y, b, 2), 0);
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_eq(x, y); /* one copy */
    ck_assert_uint_eq(refs(x), 2);
    ck_assert_int_eq(txn_pset_len(x), 2);
    ck_assert_str_eq(txn_pset_items(x)[0].name, "TimeZone");
    ck_assert_str_eq(txn_pset_items(x)[1].value, "app");
    ck_assert_ptr_ne(txn_pset_items(x)[0].name, tz); /* its own copy of the strings */
    ck_assert_uint_eq(txn_intern_count(p), 1);
    /* another value, another list; the first keeps its other holder */
    struct client_param c[] = {{"TimeZone", "UTC"}, {"application_name", "other"}};
    ck_assert_int_eq(txn_pset_set(p, &y, c, 2), 0);
    ck_assert_ptr_ne(x, y);
    ck_assert_uint_eq(refs(x), 1);
    ck_assert_uint_eq(txn_intern_count(p), 2);
    /* the empty list is NULL and holds nothing */
    ck_assert_int_eq(txn_pset_set(p, &z, NULL, 0), 0);
    ck_assert_ptr_null(z);
    ck_assert_int_eq(txn_pset_len(z), 0);
    ck_assert_ptr_null(txn_pset_items(z));
    ck_assert_uint_eq(txn_pset_sig(z, false), 0);
    ck_assert_int_eq(txn_pset_set(p, &y, NULL, 0), 0);
    ck_assert_ptr_null(y);
    ck_assert_uint_eq(txn_intern_count(p), 1); /* freed with its last reference */
    /* order is part of the list */
    struct client_param d[] = {{"application_name", "app"}, {"TimeZone", "UTC"}};
    ck_assert_int_eq(txn_pset_set(p, &z, d, 2), 0);
    ck_assert_ptr_ne(x, z);
    txn_pset_put(p, z);
    txn_pset_put(p, x);
    txn_pset_put(p, NULL);
    fake_proxy_free(p);
}
END_TEST

START_TEST(test_pset_sigs)
{
    struct proxy *p = fake_proxy();
    struct client_param a[] = {{"TimeZone", "UTC"},
                               {"DateStyle", "ISO, MDY"},
                               {"server_version", "15.0"}, /* reported, not settable */
                               {"search_path", "app"}};    /* not reported */
    const struct txn_pset *x = NULL, *y = NULL;
    ck_assert_int_eq(txn_pset_set(p, &x, a, 4), 0);
    uint64_t want = 0;
    for (int i = 0; i < 4; i++)
        want ^= txn_param_sig(a[i].name, a[i].value);
    ck_assert_uint_eq(txn_pset_sig(x, false), want);
    ck_assert_uint_eq(txn_param_sig("server_version", "15.0"), 0);
    ck_assert_uint_eq(txn_param_sig("search_path", "app"), 0);
    ck_assert_uint_ne(txn_pset_sig(x, true), 0);
    /* XORed: the same entries in another order sign the same, another value does not */
    struct client_param b[] = {a[3], a[2], a[1], a[0]};
    ck_assert_int_eq(txn_pset_set(p, &y, b, 4), 0);
    ck_assert_ptr_ne(x, y);
    ck_assert_uint_eq(txn_pset_sig(y, false), txn_pset_sig(x, false));
    ck_assert_uint_eq(txn_pset_sig(y, true), txn_pset_sig(x, true));
    b[0].value = "public";
    ck_assert_int_eq(txn_pset_set(p, &y, b, 4), 0);
    ck_assert_uint_eq(txn_pset_sig(y, false), txn_pset_sig(x, false)); /* not reported */
    ck_assert_uint_ne(txn_pset_sig(y, true), txn_pset_sig(x, true));
    txn_pset_put(p, x);
    txn_pset_put(p, y);
    fake_proxy_free(p);
}
END_TEST

START_TEST(test_strings)
{
    struct proxy *p = fake_proxy();
    char name[] = "appdb";
    const char *a = txn_str_get(p, "appdb");
    const char *b = txn_str_get(p, name);
    const char *u = txn_str_get(p, "app");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_eq(a, b);
    ck_assert_ptr_ne(a, name);
    ck_assert_str_eq(a, "appdb");
    ck_assert_str_eq(u, "app");
    ck_assert_ptr_ne(a, u);
    /* a string and a one-entry list never meet */
    const struct txn_pset *x = NULL;
    struct client_param e[] = {{"appdb", ""}};
    ck_assert_int_eq(txn_pset_set(p, &x, e, 1), 0);
    ck_assert_ptr_ne(txn_pset_items(x)[0].name, a);
    ck_assert_uint_eq(txn_intern_count(p), 3);
    txn_str_put(p, a);
    ck_assert_uint_eq(txn_intern_count(p), 3);
    txn_str_put(p, b);
    ck_assert_uint_eq(txn_intern_count(p), 2);
    txn_str_put(p, u);
    txn_str_put(p, NULL);
    txn_pset_put(p, x);
    fake_proxy_free(p);
}
END_TEST

START_TEST(test_many_grow_and_shrink)
{
    /* distinct application_names (one per client) come and go: nothing stays behind */
    struct proxy *p = fake_proxy();
    enum { N = 3000 };
    const struct txn_pset **sets = calloc(N, sizeof(*sets));
    ck_assert_ptr_nonnull(sets);
    for (int i = 0; i < N; i++) {
        char v[32];
        snprintf(v, sizeof(v), "worker-%d", i % 1000);
        struct client_param e[] = {{"application_name", v}};
        ck_assert_int_eq(txn_pset_set(p, &sets[i], e, 1), 0);
        ck_assert_str_eq(txn_pset_items(sets[i])[0].value, v);
    }
    ck_assert_uint_eq(txn_intern_count(p), 1000);
    for (int i = 0; i < 1000; i++)
        ck_assert_ptr_eq(sets[i], sets[i + 1000]);
    for (int i = 0; i < N; i++)
        txn_pset_put(p, sets[i]);
    free(sets);
    fake_proxy_free(p);
}
END_TEST

START_TEST(test_saw_params)
{
    struct proxy *p = fake_proxy();
    struct client *a = fake_client(p), *b = fake_client(p);
    struct client_param welcome[] = {
        {"client_encoding", "UTF8"}, {"TimeZone", "UTC"}, {"application_name", ""}};
    txn_client_saw_params(a, welcome, 3);
    txn_client_saw_params(b, welcome, 3);
    ck_assert_ptr_nonnull(a->ps);
    ck_assert_ptr_eq(a->ps, b->ps);
    ck_assert_int_eq(txn_pset_len(a->ps), 3);
    /* a SET in one session: that client's view moves, the other's stays */
    const struct txn_pset *before = a->ps;
    txn_client_saw_param(a, "TimeZone", "Europe/Paris");
    ck_assert_ptr_ne(a->ps, before);
    ck_assert_ptr_eq(b->ps, before);
    ck_assert_int_eq(txn_pset_len(a->ps), 3);
    ck_assert_str_eq(txn_pset_items(a->ps)[1].name, "TimeZone"); /* in place */
    ck_assert_str_eq(txn_pset_items(a->ps)[1].value, "Europe/Paris");
    ck_assert_uint_ne(txn_pset_sig(a->ps, false), txn_pset_sig(b->ps, false));
    /* the same value again changes nothing */
    const struct txn_pset *now = a->ps;
    txn_client_saw_param(a, "TimeZone", "Europe/Paris");
    ck_assert_ptr_eq(a->ps, now);
    /* a new name is appended */
    txn_client_saw_param(b, "IntervalStyle", "iso_8601");
    ck_assert_int_eq(txn_pset_len(b->ps), 4);
    ck_assert_str_eq(txn_pset_items(b->ps)[3].name, "IntervalStyle");
    /* back to equal views: shared again, and the lists in between are gone */
    txn_client_saw_param(a, "TimeZone", "UTC");
    txn_client_saw_param(a, "IntervalStyle", "iso_8601");
    ck_assert_ptr_eq(a->ps, b->ps);
    ck_assert_uint_eq(txn_intern_count(p), 1);
    fake_client_free(a);
    fake_client_free(b);
    fake_proxy_free(p);
}
END_TEST

START_TEST(test_saw_params_cap)
{
    struct proxy *p = fake_proxy();
    struct client *a = fake_client(p);
    char names[CLIENT_MAX_PARAMS + 5][16];
    struct client_param e[CLIENT_MAX_PARAMS + 5];
    for (int i = 0; i < CLIENT_MAX_PARAMS + 5; i++) {
        snprintf(names[i], sizeof(names[i]), "p%d", i);
        e[i] = (struct client_param){names[i], "v"};
    }
    txn_client_saw_params(a, e, CLIENT_MAX_PARAMS + 5);
    ck_assert_int_eq(txn_pset_len(a->ps), CLIENT_MAX_PARAMS); /* the rest are not kept */
    fake_client_free(a);
    fake_proxy_free(p);
}
END_TEST

START_TEST(test_blocker)
{
    struct proxy *p = fake_proxy();
    struct client *c = fake_client(p);
    ck_assert_ptr_null(c->park_blocker); /* parkable until a snapshot says otherwise */
    client_set_blocker(c, "open transaction");
    ck_assert_str_eq(c->park_blocker, "open transaction");
    char long_why[300];
    memset(long_why, 'x', sizeof(long_why) - 1);
    long_why[sizeof(long_why) - 1] = '\0';
    client_set_blocker(c, long_why);
    ck_assert_uint_eq(strlen(c->park_blocker), 127);
    client_set_blocker(c, NULL);
    ck_assert_ptr_null(c->park_blocker);
    client_set_blocker(c, NULL);
    client_set_blocker(c, "x");
    client_set_blocker(c, ""); /* nothing said: parkable */
    ck_assert_ptr_null(c->park_blocker);
    fake_client_free(c);
    fake_proxy_free(p);
}
END_TEST

START_TEST(test_addr_text)
{
    struct proxy *p = fake_proxy();
    struct client *c = fake_client(p);
    char buf[CLIENT_ADDR_TEXT];
    c->addr.in.sin_family = AF_INET;
    c->addr.in.sin_port = htons(5432);
    ck_assert_int_eq(inet_pton(AF_INET, "192.168.10.200", &c->addr.in.sin_addr), 1);
    ck_assert_str_eq(client_addr_text(c, buf, sizeof(buf)), "192.168.10.200:5432");
    memset(&c->addr, 0, sizeof(c->addr));
    c->addr.in6.sin6_family = AF_INET6;
    c->addr.in6.sin6_port = htons(65535);
    ck_assert_int_eq(
        inet_pton(AF_INET6, "fe80:1234:5678:9abc:def0:1234:5678:9abc", &c->addr.in6.sin6_addr), 1);
    ck_assert_str_eq(client_addr_text(c, buf, sizeof(buf)),
                     "fe80:1234:5678:9abc:def0:1234:5678:9abc:65535");
    c->is_unix = true;
    ck_assert_str_eq(client_addr_text(c, buf, sizeof(buf)), "unix");
    c->is_unix = false;
    c->id = 7;
    c->user = "app";
    c->database = "appdb";
    char tag[160];
    ck_assert_str_eq(client_tag(c, tag, sizeof(tag)),
                     "C-7 appdb/app@fe80:1234:5678:9abc:def0:1234:5678:9abc:65535");
    c->user = c->database = NULL;
    fake_client_free(c);
    fake_proxy_free(p);
}
END_TEST

START_TEST(test_buf_trim)
{
    /* a burst takes 10 buffers and gives them back: they are pooled, then freed by the trims
       after which no one needed them */
    struct buf *b[10];
    size_t base = buf_allocated();
    for (int i = 0; i < 10; i++)
        ck_assert_ptr_nonnull(b[i] = buf_get());
    for (int i = 0; i < 10; i++)
        buf_put(b[i]);
    ck_assert_uint_eq(buf_pooled(), 10);
    ck_assert_uint_eq(buf_allocated(), base + 10);
    buf_trim(); /* the burst itself was in the last interval: nothing is known unused yet */
    ck_assert_uint_eq(buf_pooled(), 10);
    for (int i = 0; i < 3; i++)
        b[i] = buf_get(); /* steady traffic uses 3 at a time */
    for (int i = 0; i < 3; i++)
        buf_put(b[i]);
    buf_trim();
    ck_assert_uint_eq(buf_pooled(), 3);
    ck_assert_uint_eq(buf_allocated(), base + 3);
    buf_trim(); /* then nothing at all */
    ck_assert_uint_eq(buf_pooled(), 0);
    ck_assert_uint_eq(buf_allocated(), base);
    struct buf *again = buf_get(); /* and the next one is allocated again */
    ck_assert_ptr_nonnull(again);
    ck_assert_uint_eq(buf_len(again), 0);
    buf_put(again);
}
END_TEST

static Suite *idle_suite(void)
{
    Suite *s = suite_create("idle");
    TCase *tc = tcase_create("client");
    tcase_add_test(tc, test_client_size);
    tcase_add_test(tc, test_blocker);
    tcase_add_test(tc, test_addr_text);
    tcase_add_test(tc, test_buf_trim);
    suite_add_tcase(s, tc);
    tc = tcase_create("shared");
    tcase_add_test(tc, test_pset_shared);
    tcase_add_test(tc, test_pset_sigs);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_many_grow_and_shrink);
    tcase_add_test(tc, test_saw_params);
    tcase_add_test(tc, test_saw_params_cap);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(idle_suite());
}
