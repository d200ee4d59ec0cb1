/*
 * Unit tests of sqlscan, the reading of custom setting names from query text that parking
 * relies on: leading SET [SESSION], set_config() calls with literal names (casts, nesting,
 * schema-qualified), transaction-local calls skipped, names that cannot be read flagged opaque,
 * literals and comments ignored, RESET ALL / DISCARD ALL recognised, and no read past the end
 * of a text without a NUL.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "pgtide/sqlscan.h"
#include "unit.h"

struct seen {
    char names[8][64];
    int n;
};

static void collect(void *arg, const char *name, size_t len)
{
    struct seen *s = arg;
    ck_assert_uint_eq(strlen(name), len);
    if (s->n < 8)
        memcpy(s->names[s->n++], name, len + 1);
}

/* Scans sql from an exact-size heap copy (no NUL: ASan sees any read past the end). */
static int scan(const char *sql, struct seen *s)
{
    memset(s, 0, sizeof(*s));
    size_t len = strlen(sql);
    char *copy = malloc(len > 0 ? len : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, sql, len);
    int r = sqlscan_custom(copy, len, collect, s);
    free(copy);
    return r;
}

START_TEST(test_set)
{
    struct seen s;
    ck_assert_int_eq(scan("SET app.tenant = 'acme'", &s), 0);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.names[0], "app.tenant");
    ck_assert_int_eq(scan("  set session MyApp.Tag TO 3", &s), 0);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.names[0], "myapp.tag");
    ck_assert_int_eq(scan("SET work_mem = '4MB'", &s), 0); /* reported: the caller keeps dots */
    ck_assert_int_eq(s.n, 1);
    ck_assert_int_eq(scan("SELECT 1", &s), 0);
    ck_assert_int_eq(s.n, 0);
    ck_assert_int_eq(scan("SETTINGS", &s), 0);
    ck_assert_int_eq(s.n, 0);
    /* names that cannot be read whole */
    ck_assert_int_eq(scan("SET \"app.z\" = 3", &s), SQLSCAN_OPAQUE);
    ck_assert_int_eq(scan("SET \"work_mem\" = '1MB'", &s), 0);
    ck_assert_int_eq(
        scan("SET app.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa = 1",
             &s),
        SQLSCAN_OPAQUE);
    ck_assert_int_eq(s.n, 0);
}
END_TEST

START_TEST(test_set_config_named)
{
    struct seen s;
    ck_assert_int_eq(scan("SELECT set_config('app.x', '1', false)", &s), 0);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.names[0], "app.x");
    ck_assert_int_eq(scan("SELECT pg_catalog.SET_CONFIG ( 'App.X'::text, $1, false)", &s), 0);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.names[0], "app.x");
    ck_assert_int_eq(scan("SELECT set_config('a.b', set_config('c.d', 'v', false), false)", &s), 0);
    ck_assert_int_eq(s.n, 2);
    ck_assert_str_eq(s.names[0], "a.b");
    ck_assert_str_eq(s.names[1], "c.d");
    ck_assert_int_eq(scan("SELECT set_config('it''s.x', 'v', false)", &s), 0);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.names[0], "it's.x");
    /* a DO block runs what it holds: scanned */
    ck_assert_int_eq(scan("DO $$ BEGIN PERFORM set_config('app.do', 'v', false); END $$", &s), 0);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.names[0], "app.do");
}
END_TEST

START_TEST(test_set_config_local_and_inert)
{
    struct seen s;
    /* transaction-local: nothing outlives the transaction */
    ck_assert_int_eq(scan("SELECT set_config($1, $2, true)", &s), 0);
    ck_assert_int_eq(scan("SELECT set_config('app.x', $1, TRUE )", &s), 0);
    ck_assert_int_eq(s.n, 0);
    /* in literals and comments: not a call */
    ck_assert_int_eq(scan("INSERT INTO log VALUES ('called set_config($1) here')", &s), 0);
    ck_assert_int_eq(scan("INSERT INTO log VALUES (E'it\\'s set_config($1) here')", &s), 0);
    ck_assert_int_eq(scan("-- set_config($1)\nSELECT 1", &s), 0);
    ck_assert_int_eq(scan("/* set_config($1) */ SELECT 1", &s), 0);
    ck_assert_int_eq(scan("SELECT my_set_config($1, 'v', false), set_config_x", &s), 0);
    ck_assert_int_eq(s.n, 0);
}
END_TEST

START_TEST(test_set_config_opaque)
{
    struct seen s;
    ck_assert_int_eq(scan("SELECT set_config($1, $2, false)", &s), SQLSCAN_OPAQUE);
    ck_assert_int_eq(scan("SELECT set_config('app.' || x, 'v', false)", &s), SQLSCAN_OPAQUE);
    ck_assert_int_eq(s.n, 0);
    ck_assert_int_eq(scan("SELECT set_config(name, 'v', false) FROM t", &s), SQLSCAN_OPAQUE);
    ck_assert_int_eq(scan("SELECT set_config(", &s), SQLSCAN_OPAQUE);
    ck_assert_int_eq(scan("SELECT set_config('a.b'", &s), SQLSCAN_OPAQUE);
    /* a name longer than 63 bytes cannot be kept whole */
    ck_assert_int_eq(
        scan(
            "SELECT set_config('a.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
            "bbbbbbbbbbbbbbbbbbbb', 'v', false)",
            &s),
        SQLSCAN_OPAQUE);
}
END_TEST

START_TEST(test_reset_all)
{
    struct seen s;
    ck_assert_int_eq(scan("RESET ALL", &s), SQLSCAN_RESET_ALL);
    ck_assert_int_eq(scan("  discard   ALL;", &s), SQLSCAN_RESET_ALL);
    ck_assert_int_eq(scan("RESET allx", &s), 0);
    ck_assert_int_eq(scan("RESET app.x", &s), 0);
    ck_assert_int_eq(scan("DISCARD TEMP", &s), 0);
}
END_TEST

START_TEST(test_truncated_texts)
{
    /* every prefix of tricky texts: no read past the end (ASan), no crash */
    static const char *const texts[] = {
        "SELECT set_config('a.b'::text, E'x\\'y', false) -- c\n/* d */ 'e''f'",
        "SET SESSION app.x = 1; SELECT set_config($1, 'v', true)",
        "select pg_catalog.set_config ( 'x.y' , set_config('z.w', '', false), false)",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        size_t len = strlen(texts[i]);
        for (size_t k = 0; k <= len; k++) {
            char *copy = malloc(k > 0 ? k : 1);
            ck_assert_ptr_nonnull(copy);
            memcpy(copy, texts[i], k);
            struct seen s = {.n = 0};
            (void) sqlscan_custom(copy, k, collect, &s);
            free(copy);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sqlscan");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_set);
    tcase_add_test(tc, test_set_config_named);
    tcase_add_test(tc, test_set_config_local_and_inert);
    tcase_add_test(tc, test_set_config_opaque);
    tcase_add_test(tc, test_reset_all);
    tcase_add_test(tc, test_truncated_texts);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
