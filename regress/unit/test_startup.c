/*
 * test_startup: sorting of startup parameters (startup_sort, startup_parse_options): reported
 * parameters and settings go to their lists, user/database/replication/_pq_.* to neither; the
 * forms of the options parameter (-c a=b, -ca=b, --a-b=c, backslash-escaped spaces, a later
 * value replacing an earlier one); pgtide.route taken out and its value read; malformed options
 * and too many parameters refused with -2.
 */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtide/client.h"
#include "pgtide/startup.h"
#include "unit.h"

/* A startup packet's parameter list from name, value, name, value, ..., NULL */
static struct pkt_startup startup(const char *first, ...)
{
    struct pkt_startup st;
    memset(&st, 0, sizeof(st));
    va_list ap;
    va_start(ap, first);
    for (const char *n = first; n != NULL; n = va_arg(ap, const char *)) {
        st.params[st.nparams].name = n;
        st.params[st.nparams].value = va_arg(ap, const char *);
        st.nparams++;
    }
    va_end(ap);
    return st;
}

static const char *value_of(const struct client_param *arr, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(arr[i].name, name) == 0)
            return arr[i].value;
    return NULL;
}

START_TEST(test_sorts_into_lists)
{
    struct pkt_startup st =
        startup("user", "app", "database", "appdb", "application_name", "psql", "TimeZone", "UTC",
                "statement_timeout", "5s", "_pq_.ext", "1", "replication", "false", NULL);
    struct startup_lists l = {0};
    ck_assert_int_eq(startup_sort(&st, &l), 0);
    ck_assert_int_eq(l.nrep, 2);
    ck_assert_str_eq(value_of(l.rep, l.nrep, "application_name"), "psql");
    ck_assert_str_eq(value_of(l.rep, l.nrep, "TimeZone"), "UTC");
    ck_assert_int_eq(l.nset, 1);
    ck_assert_str_eq(value_of(l.set, l.nset, "statement_timeout"), "5s");
    ck_assert_int_eq(l.route, STARTUP_ROUTE_PORT);
    startup_lists_free(&l);
    ck_assert_int_eq(l.nrep + l.nset, 0);
}
END_TEST

START_TEST(test_options_forms)
{
    struct pkt_startup st = startup(
        "user", "app", "options",
        "  -c search_path=a,b\t-cwork_mem=4MB --lock-timeout=1s -c my\\ x=1 -c search_path=c "
        "-c app.note=two\\ words\\\\ -c",
        NULL);
    struct startup_lists l = {0};
    ck_assert_int_eq(startup_sort(&st, &l), 0);
    ck_assert_int_eq(l.nrep, 0);
    ck_assert_int_eq(l.nset, 5);
    ck_assert_str_eq(value_of(l.set, l.nset, "search_path"), "c"); /* the later one */
    ck_assert_str_eq(value_of(l.set, l.nset, "work_mem"), "4MB");
    ck_assert_str_eq(value_of(l.set, l.nset, "lock_timeout"), "1s"); /* '-' becomes '_' */
    ck_assert_str_eq(value_of(l.set, l.nset, "my x"), "1");
    ck_assert_str_eq(value_of(l.set, l.nset, "app.note"), "two words\\");
    startup_lists_free(&l);

    st = startup("options", "   ", NULL);
    ck_assert_int_eq(startup_sort(&st, &l), 0);
    ck_assert_int_eq(l.nset, 0);
    startup_lists_free(&l);
}
END_TEST

START_TEST(test_route)
{
    struct pkt_startup st =
        startup("options", "-c search_path=s -c pgtide.route=replica -c work_mem=1MB", NULL);
    struct startup_lists l = {0};
    ck_assert_int_eq(startup_sort(&st, &l), 0);
    ck_assert_int_eq(l.route, STARTUP_ROUTE_REPLICA);
    ck_assert_int_eq(l.nset, 2); /* taken out: the server never sees it */
    ck_assert_ptr_null(value_of(l.set, l.nset, "pgtide.route"));
    ck_assert_str_eq(value_of(l.set, l.nset, "search_path"), "s");
    ck_assert_str_eq(value_of(l.set, l.nset, "work_mem"), "1MB");
    startup_lists_free(&l);

    memset(&l, 0, sizeof(l));
    st = startup("options", "--pgtide.route=primary", NULL);
    ck_assert_int_eq(startup_sort(&st, &l), 0);
    ck_assert_int_eq(l.route, STARTUP_ROUTE_PRIMARY);
    ck_assert_int_eq(l.nset, 0);
    startup_lists_free(&l);

    memset(&l, 0, sizeof(l));
    st = startup("options", "-c pgtide.route=elsewhere", NULL);
    ck_assert_int_eq(startup_sort(&st, &l), -2);
    startup_lists_free(&l);
}
END_TEST

START_TEST(test_refusals)
{
    const char *bad[] = {"-c nameonly", "-c =value", "--", "-c a=b junk"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pkt_startup st = startup("options", bad[i], NULL);
        struct startup_lists l = {0};
        ck_assert_msg(startup_sort(&st, &l) == -2, "accepted: %s", bad[i]);
        startup_lists_free(&l);
    }
    /* one item over 1 kB */
    char *big = malloc(1100);
    memcpy(big, "-c x=", 5);
    memset(big + 5, 'v', 1090);
    big[1095] = '\0';
    struct pkt_startup st = startup("options", big, NULL);
    struct startup_lists l = {0};
    ck_assert_int_eq(startup_sort(&st, &l), -2);
    startup_lists_free(&l);
    free(big);

    /* more settings than a client may have */
    char opts[4096] = "";
    for (int i = 0; i <= CLIENT_MAX_PARAMS; i++) {
        char item[32];
        snprintf(item, sizeof(item), "-c s%d=%d ", i, i);
        strcat(opts, item);
    }
    st = startup("options", opts, NULL);
    memset(&l, 0, sizeof(l));
    ck_assert_int_eq(startup_sort(&st, &l), -2);
    startup_lists_free(&l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("startup");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_sorts_into_lists);
    tcase_add_test(tc, test_options_forms);
    tcase_add_test(tc, test_route);
    tcase_add_test(tc, test_refusals);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
