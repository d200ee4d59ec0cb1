/*
 * test_state: the persisted policy file (round trip, sorted durable rewrite, corrupt and
 * truncated files refused with a clear message, removal) and the validation of SET values
 * (settable keys, types, units, ranges, rules across keys) that the admin console relies on.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgtide/config.h"
#include "pgtide/state.h"
#include "pgtide/store.h"
#include "unit.h"

static char dir[256];
static char path[300];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/test_state.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/policy", dir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

static char *slurp(size_t *len)
{
    char *text = NULL;
    ck_assert_int_eq(store_read_file(path, &text, len), 0);
    return text;
}

static void spit(const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    fclose(f);
}

START_TEST(missing_file_is_empty)
{
    struct state_policy p;
    char err[256];
    ck_assert_int_eq(state_policy_load(path, &p, err, sizeof(err)), 0);
    ck_assert_int_eq(p.n, 0);
    char *full = state_policy_path("/data");
    ck_assert_str_eq(full, "/data/state/policy");
    free(full);
}
END_TEST

START_TEST(round_trip)
{
    struct state_policy p = {0};
    ck_assert_int_eq(state_policy_put(&p, "suspend_after", "10min"), 0);
    ck_assert_int_eq(state_policy_put(&p, "MAX_CU", "2"), 0);
    ck_assert_int_eq(state_policy_put(&p, "backup_schedule", "0 3 * * *"), 0);
    ck_assert_int_eq(state_policy_put(&p, "max_cu", "1.5"), 0); /* replaces */
    ck_assert_int_eq(p.n, 3);
    char err[256];
    ck_assert_int_eq(state_policy_save(path, &p, err, sizeof(err)), 0);
    state_policy_free(&p);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0600);

    struct state_policy q;
    ck_assert_int_eq(state_policy_load(path, &q, err, sizeof(err)), 0);
    ck_assert_int_eq(q.n, 3);
    ck_assert_str_eq(q.items[0].key, "backup_schedule"); /* saved sorted */
    ck_assert_str_eq(state_policy_get(&q, "backup_schedule"), "0 3 * * *");
    ck_assert_str_eq(state_policy_get(&q, "max_cu"), "1.5");
    ck_assert_str_eq(state_policy_get(&q, "Suspend_After"), "10min");
    ck_assert_ptr_null(state_policy_get(&q, "pause_after"));
    ck_assert(state_policy_remove(&q, "max_cu"));
    ck_assert(!state_policy_remove(&q, "max_cu"));
    ck_assert_int_eq(q.n, 2);
    state_policy_free(&q);

    size_t len;
    char *text = slurp(&len);
    ck_assert_ptr_nonnull(strstr(text, "max_cu = 1.5\n"));
    ck_assert_ptr_nonnull(strstr(text, "\ncrc32c = 0x"));
    free(text);
}
END_TEST

START_TEST(persist_and_reset)
{
    char err[256];
    bool changed;
    ck_assert_int_eq(state_policy_persist(path, "pause_after", "2s", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(state_policy_persist(path, "min_cu", "0.25", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(state_policy_persist(path, "pause_after", NULL, &changed, err, sizeof(err)),
                     0);
    ck_assert(changed);
    ck_assert_int_eq(state_policy_persist(path, "pause_after", NULL, &changed, err, sizeof(err)),
                     0);
    ck_assert(!changed);
    struct state_policy p;
    ck_assert_int_eq(state_policy_load(path, &p, err, sizeof(err)), 0);
    ck_assert_int_eq(p.n, 1);
    ck_assert_str_eq(state_policy_get(&p, "min_cu"), "0.25");
    state_policy_free(&p);
    ck_assert_int_eq(state_policy_persist(path, "all", NULL, &changed, err, sizeof(err)), 0);
    ck_assert(changed);
    ck_assert_int_eq(state_policy_load(path, &p, err, sizeof(err)), 0);
    ck_assert_int_eq(p.n, 0);
}
END_TEST

/* One flipped byte anywhere in the body, a cut file, a missing trailer: all refused whole. */
START_TEST(corrupt_refused)
{
    char err[512];
    ck_assert_int_eq(state_policy_persist(path, "max_cu", "2", NULL, err, sizeof(err)), 0);
    size_t len;
    char *good = slurp(&len);
    char *bad = malloc(len);
    memcpy(bad, good, len);
    char *v = strstr(bad, "max_cu = 2");
    v[9] = '4';
    spit(bad, len);
    struct state_policy p;
    ck_assert_int_eq(state_policy_load(path, &p, err, sizeof(err)), -1);
    ck_assert_int_eq(p.n, 0);
    ck_assert_ptr_nonnull(strstr(err, "checksum mismatch"));
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "will not start"));

    spit(good, len - 5); /* torn tail */
    ck_assert_int_eq(state_policy_load(path, &p, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "truncated"));

    char *cut = strstr(good, "\ncrc32c = ") + 1;
    spit(good, (size_t) (cut - good)); /* trailer gone entirely */
    ck_assert_int_eq(state_policy_load(path, &p, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "no checksum line"));

    /* a persist on top of a corrupt file does not overwrite it */
    spit(bad, len);
    ck_assert_int_eq(state_policy_persist(path, "min_cu", "1", NULL, err, sizeof(err)), -1);
    size_t now_len;
    char *now = slurp(&now_len);
    ck_assert_uint_eq(now_len, len);
    ck_assert_mem_eq(now, bad, len);
    free(now);
    free(good);
    free(bad);
}
END_TEST

/* The state file overrides the configuration; a bad persisted value is refused by name. */
START_TEST(apply_over_config)
{
    struct config *cfg = config_new_defaults();
    char err[512];
    ck_assert_int_eq(config_set(cfg, "suspend_after", "1h", err, sizeof(err)), 0);
    struct state_policy p = {0};
    ck_assert_int_eq(state_policy_put(&p, "suspend_after", "10min"), 0);
    ck_assert_int_eq(state_policy_put(&p, "max_cu", "2"), 0);
    ck_assert_int_eq(state_policy_put(&p, "min_cu", "0.25"), 0);
    ck_assert_int_eq(state_policy_apply(&p, cfg, "DATA/state/policy", err, sizeof(err)), 0);
    ck_assert_int_eq(cfg->suspend_after, 600000);
    ck_assert(cfg->max_cu == 2.0 && cfg->min_cu == 0.25);
    ck_assert_int_eq(state_policy_put(&p, "min_cu", "4"), 0); /* now min_cu > max_cu */
    ck_assert_int_eq(state_policy_apply(&p, cfg, "DATA/state/policy", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "min_cu (4) must not exceed max_cu (2)"));
    ck_assert_int_eq(state_policy_put(&p, "min_cu", "zero"), 0);
    ck_assert_int_eq(state_policy_apply(&p, cfg, "DATA/state/policy", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "DATA/state/policy: min_cu: invalid value \"zero\""));
    state_policy_free(&p);
    config_unref(cfg);
}
END_TEST

struct set_case {
    const char *key, *value;
    const char *error; /* NULL: accepted; else a substring of the message */
};

static const struct set_case set_cases[] = {
    {"suspend_after", "10min", NULL},
    {"suspend_after", "2s", NULL},
    {"suspend_after", "0", NULL},
    {"suspend_after", "10 minutes", "expected a duration"},
    {"suspend_after", "-1", "expected a duration"},
    {"pause_after", "500ms", NULL},
    {"wake_timeout", "0", "out of range"},
    {"max_cu", "2", NULL},
    {"max_cu", "0.3", "not a multiple of 0.25"},
    {"max_cu", "65", "out of range (0.25..64)"},
    {"max_cu", "two", "expected a number"},
    {"min_cu", "2", "min_cu (2) must not exceed max_cu (1)"},
    {"compute_units", "0.25", NULL},
    {"replica_units", "0.75", NULL},
    {"cpu_high", "0.9", NULL},
    {"cpu_high", "0.2", "cpu_low (0.3) must be below cpu_high (0.2)"},
    {"cpu_high", "1.5", "out of range"},
    {"cpu_low", "0.1", NULL},
    {"scale_window", "3s", NULL},
    {"scale_window", "1h", "out of range"},
    {"scale_cooldown", "5s", NULL},
    {"pool_mode", "transaction", NULL},
    {"pool_mode", "sometimes", "expected one of session, transaction, statement"},
    {"pool_size", "0", "out of range"},
    {"min_replicas", "1", "min_replicas (1) must not exceed max_replicas (0)"},
    {"max_replicas", "3", NULL},
    {"max_replica_lag", "64MB", NULL},
    {"listen_port", "7000", "not a policy key"},
    {"pause_after", "1\n0s", "control characters"},
};

START_TEST(set_validation)
{
    const struct set_case *t = &set_cases[_i];
    struct config *cur = config_new_defaults();
    char err[512] = "";
    struct config *next = state_policy_check(cur, t->key, t->value, err, sizeof(err));
    if (t->error == NULL) {
        ck_assert_msg(next != NULL, "%s = %s refused: %s", t->key, t->value, err);
        char a[128], b[128];
        ck_assert(config_get_text(next, t->key, a, sizeof(a)));
        ck_assert(config_get_text(cur, t->key, b, sizeof(b)));
        ck_assert_msg(strcmp(a, b) != 0 || strcmp(t->value, b) == 0, "%s unchanged", t->key);
        config_unref(next);
    } else {
        ck_assert_msg(next == NULL, "%s = %s accepted", t->key, t->value);
        ck_assert_msg(strstr(err, t->error) != NULL, "%s = %s: \"%s\" lacks \"%s\"", t->key,
                      t->value, err, t->error);
    }
    ck_assert_int_eq(cur->refcount, 1); /* the running snapshot is never touched */
    config_unref(cur);
}
END_TEST

static Suite *state_suite(void)
{
    Suite *s = suite_create("state");
    TCase *tc = tcase_create("policy");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, missing_file_is_empty);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, persist_and_reset);
    tcase_add_test(tc, corrupt_refused);
    tcase_add_test(tc, apply_over_config);
    tcase_add_loop_test(tc, set_validation, 0, (int) (sizeof(set_cases) / sizeof(set_cases[0])));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(state_suite());
}
