/*
 * test_admincmd: the admin console's command parser. Tables of accepted forms (every command,
 * any case, trailing semicolons and blanks, both SET spellings, quoted values with doubled
 * quotes, KILL_CLIENT ids) check the parsed command and its arguments; tables of refused forms
 * check the SQLSTATE (42601 syntax, 42704 unknown object or key, 22023 bad id) and that the
 * message names the culprit. Also the tag and name helpers, and over-long tokens.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtide/admincmd.h"
#include "unit.h"

struct ok_case {
    const char *sql;
    enum admincmd_kind kind;
    int show;          /* enum admincmd_show for SHOW, else -1 */
    uint64_t id;       /* KILL_CLIENT */
    const char *key;   /* SET */
    const char *value; /* SET */
};

#define SHOWC(sql, what)                                                                           \
    {                                                                                              \
        sql, ADMINCMD_SHOW, ADMINCMD_SHOW_##what, 0, NULL, NULL                                    \
    }
#define BARE(sql, k)                                                                               \
    {                                                                                              \
        sql, ADMINCMD_##k, -1, 0, NULL, NULL                                                       \
    }
#define SETC(sql, k, v)                                                                            \
    {                                                                                              \
        sql, ADMINCMD_SET, -1, 0, k, v                                                             \
    }
#define KILL(sql, n)                                                                               \
    {                                                                                              \
        sql, ADMINCMD_KILL_CLIENT, -1, n, NULL, NULL                                               \
    }

static const struct ok_case ok_cases[] = {
    BARE("", EMPTY),
    BARE("   \t\n", EMPTY),
    BARE(";", EMPTY),
    BARE(" ; ;; ", EMPTY),
    SHOWC("SHOW HELP", HELP),
    SHOWC("show help", HELP),
    SHOWC("Show Help;", HELP),
    SHOWC("  SHOW\tHELP ;  ", HELP),
    SHOWC("SHOW VERSION", VERSION),
    SHOWC("SHOW config", CONFIG),
    SHOWC("SHOW CLIENTS;", CLIENTS),
    SHOWC("show servers", SERVERS),
    SHOWC("SHOW POOLS", POOLS),
    SHOWC("SHOW STATS;;", STATS),
    SHOWC("SHOW DATABASES", DATABASES),
    SHOWC("SHOW COMPUTES\n", COMPUTES),
    BARE("PAUSE", PAUSE),
    BARE("pause;", PAUSE),
    BARE("RESUME", RESUME),
    BARE("Resume ;", RESUME),
    BARE("RELOAD", RELOAD),
    BARE("SHUTDOWN;", SHUTDOWN),
    BARE("wake", WAKE),
    BARE("SUSPEND", SUSPEND),
    KILL("KILL_CLIENT 42", 42),
    KILL("kill_client 7;", 7),
    KILL("KILL_CLIENT '12'", 12),
    KILL("KILL_CLIENT C-9", 9),
    KILL("KILL_CLIENT c-18446744073709551615", UINT64_C(18446744073709551615)),
    SETC("SET pause_after = 5", "pause_after", "5"),
    SETC("set PAUSE_AFTER to 30s;", "pause_after", "30s"),
    SETC("SET suspend_after=10min", "suspend_after", "10min"),
    SETC("SET wake_timeout = '90 s'", "wake_timeout", "90 s"),
    SETC("SET query_wait_timeout TO 0", "query_wait_timeout", "0"),
    SETC("SET pool_size = 50 ;", "pool_size", "50"),
    SETC("SET \"Pool_Size\" = 3", "pool_size", "3"),
    SETC("SET pool_size = 'it''s'", "pool_size", "it's"),
    SETC("SET pool_size = ''", "pool_size", ""),
    SETC("SET pool_size = \"7\"", "pool_size", "7"),
    SETC("SET pool_size = 'a;b'", "pool_size", "a;b"),
};

#define NOK ((int) (sizeof(ok_cases) / sizeof(ok_cases[0])))

START_TEST(test_ok)
{
    const struct ok_case *tc = &ok_cases[_i];
    struct admincmd cmd;
    int r = admincmd_parse(tc->sql, &cmd);
    ck_assert_msg(r == 0, "\"%s\": refused with %s %s", tc->sql, cmd.sqlstate, cmd.message);
    ck_assert_msg(cmd.kind == tc->kind, "\"%s\": kind %d, want %d", tc->sql, (int) cmd.kind,
                  (int) tc->kind);
    if (tc->show >= 0)
        ck_assert_int_eq(cmd.show, tc->show);
    if (tc->kind == ADMINCMD_KILL_CLIENT)
        ck_assert_uint_eq(cmd.client_id, tc->id);
    if (tc->kind == ADMINCMD_SET) {
        ck_assert_str_eq(cmd.key, tc->key);
        ck_assert_str_eq(cmd.value, tc->value);
    }
    ck_assert_str_eq(cmd.sqlstate, "");
}
END_TEST

struct bad_case {
    const char *sql;
    const char *sqlstate;
    const char *in_message; /* must appear in the message */
};

static const struct bad_case bad_cases[] = {
    {"SELECT 1", "42601", "\"SELECT\""},
    {"'SHOW' HELP", "42601", "SHOW"},
    {"SHOW", "42601", "SHOW needs an object"},
    {"SHOW;", "42601", "SHOW needs an object"},
    {"SHOW FOO", "42704", "\"FOO\""},
    {"SHOW 'clients'", "42704", "\"clients\""},
    {"SHOW POLICIES", "42704", "\"POLICIES\""},
    {"SHOW HELP please", "42601", "\"please\""},
    {"SHOW HELP; SHOW VERSION", "42601", "one command per query"},
    {"PAUSE; x", "42601", "one command per query"},
    {"PAUSE db1", "42601", "PAUSE takes no argument"},
    {"RESUME now", "42601", "RESUME takes no argument"},
    {"RELOAD =", "42601", "RELOAD takes no argument"},
    {"SHUTDOWN fast", "42601", "SHUTDOWN takes no argument"},
    {"WAKE up", "42601", "WAKE"},
    {"SUSPEND 1", "42601", "SUSPEND"},
    {"KILL_CLIENT", "42601", "KILL_CLIENT id"},
    {"KILL_CLIENT 1 2", "42601", "KILL_CLIENT id"},
    {"KILL_CLIENT =", "42601", "KILL_CLIENT id"},
    {"KILL_CLIENT abc", "22023", "\"abc\""},
    {"KILL_CLIENT 0", "22023", "\"0\""},
    {"KILL_CLIENT -3", "22023", "\"-3\""},
    {"KILL_CLIENT 12x", "22023", "\"12x\""},
    {"KILL_CLIENT C-", "22023", "\"C-\""},
    {"KILL_CLIENT 18446744073709551616", "22023", "18446744073709551616"},
    {"SET", "42601", "SET key = value"},
    {"SET pause_after", "42601", "SET key = value"},
    {"SET pause_after =", "42601", "SET key = value"},
    {"SET pause_after 5", "42601", "SET key = value"},
    {"SET pause_after = = 5", "42601", "value after '='"},
    {"SET pause_after = 10 min", "42601", "\"min\""},
    {"SET 'pause_after' = 5", "42601", "must be a name"},
    {"SET = = 5", "42601", "must be a name"},
    {"SET listen_port = 7000", "42704", "\"listen_port\""},
    {"SET nonsense TO 1", "42704", "\"nonsense\""},
    {"SET pause_after = 'oops", "42601", "unterminated"},
    {"SHOW \"HELP", "42601", "unterminated"},
    {"SET pause_after = 'x'';", "42601", "unterminated"},
    {"SHOW a b c d e f g", "42601", "too many words"},
};

#define NBAD ((int) (sizeof(bad_cases) / sizeof(bad_cases[0])))

START_TEST(test_bad)
{
    const struct bad_case *tc = &bad_cases[_i];
    struct admincmd cmd;
    int r = admincmd_parse(tc->sql, &cmd);
    ck_assert_msg(r == -1, "\"%s\": accepted (kind %d)", tc->sql, (int) cmd.kind);
    ck_assert_msg(strcmp(cmd.sqlstate, tc->sqlstate) == 0, "\"%s\": sqlstate %s, want %s", tc->sql,
                  cmd.sqlstate, tc->sqlstate);
    ck_assert_msg(strstr(cmd.message, tc->in_message) != NULL,
                  "\"%s\": message \"%s\" lacks \"%s\"", tc->sql, cmd.message, tc->in_message);
}
END_TEST

/* A word or quoted value of exactly ADMINCMD_TOKEN_MAX - 1 bytes fits; one more does not. */
START_TEST(test_long_tokens)
{
    char sql[ADMINCMD_TOKEN_MAX + 64];
    char val[ADMINCMD_TOKEN_MAX + 1];
    struct admincmd cmd;

    memset(val, '9', ADMINCMD_TOKEN_MAX - 1);
    val[ADMINCMD_TOKEN_MAX - 1] = '\0';
    snprintf(sql, sizeof(sql), "SET pool_size = '%s'", val);
    ck_assert_int_eq(admincmd_parse(sql, &cmd), 0);
    ck_assert_uint_eq(strlen(cmd.value), ADMINCMD_TOKEN_MAX - 1);
    snprintf(sql, sizeof(sql), "SET pool_size = %s", val);
    ck_assert_int_eq(admincmd_parse(sql, &cmd), 0);
    ck_assert_str_eq(cmd.value, val);

    memset(val, '9', ADMINCMD_TOKEN_MAX);
    val[ADMINCMD_TOKEN_MAX] = '\0';
    snprintf(sql, sizeof(sql), "SET pool_size = '%s'", val);
    ck_assert_int_eq(admincmd_parse(sql, &cmd), -1);
    ck_assert_str_eq(cmd.sqlstate, "42601");
    snprintf(sql, sizeof(sql), "KILL_CLIENT %s", val);
    ck_assert_int_eq(admincmd_parse(sql, &cmd), -1);
    ck_assert_str_eq(cmd.sqlstate, "42601");
    ck_assert_ptr_nonnull(strstr(cmd.message, "too long"));
}
END_TEST

/* A failed parse after a successful one leaves no stale arguments behind. */
START_TEST(test_reset_between_calls)
{
    struct admincmd cmd;
    ck_assert_int_eq(admincmd_parse("SET pool_size = 9", &cmd), 0);
    ck_assert_int_eq(admincmd_parse("PAUSE", &cmd), 0);
    ck_assert_int_eq(cmd.kind, ADMINCMD_PAUSE);
    ck_assert_str_eq(cmd.key, "");
    ck_assert_str_eq(cmd.value, "");
    ck_assert_int_eq(admincmd_parse("bogus", &cmd), -1);
    ck_assert_int_eq(admincmd_parse("SHOW HELP", &cmd), 0);
    ck_assert_str_eq(cmd.sqlstate, "");
    ck_assert_str_eq(cmd.message, "");
}
END_TEST

START_TEST(test_settable)
{
    static const char *const yes[] = {"pause_after",        "suspend_after", "wake_timeout",
                                      "query_wait_timeout", "pool_size",     "POOL_SIZE"};
    static const char *const no[] = {"listen_port", "compute_user", "", "pool_size ", "pause"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        ck_assert_msg(admincmd_settable(yes[i]), "%s", yes[i]);
        if (i < 5)
            ck_assert_ptr_nonnull(strstr(admincmd_settable_list(), yes[i]));
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        ck_assert_msg(!admincmd_settable(no[i]), "%s", no[i]);
}
END_TEST

START_TEST(test_names)
{
    ck_assert_str_eq(admincmd_tag(ADMINCMD_SHOW), "SHOW");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_SET), "SET");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_PAUSE), "PAUSE");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_RESUME), "RESUME");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_RELOAD), "RELOAD");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_SHUTDOWN), "SHUTDOWN");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_WAKE), "WAKE");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_SUSPEND), "SUSPEND");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_KILL_CLIENT), "KILL_CLIENT");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_EMPTY), "");
    ck_assert_str_eq(admincmd_show_name(ADMINCMD_SHOW_CLIENTS), "CLIENTS");
    ck_assert_str_eq(admincmd_show_name(ADMINCMD_SHOW_COMPUTES), "COMPUTES");
    ck_assert_str_eq(admincmd_show_name((enum admincmd_show) 99), "?");
    /* every name round-trips through the parser */
    for (int s = ADMINCMD_SHOW_HELP; s <= ADMINCMD_SHOW_COMPUTES; s++) {
        char sql[64];
        struct admincmd cmd;
        snprintf(sql, sizeof(sql), "SHOW %s", admincmd_show_name((enum admincmd_show) s));
        ck_assert_int_eq(admincmd_parse(sql, &cmd), 0);
        ck_assert_int_eq(cmd.show, s);
    }
}
END_TEST

/* persisted policy (issue 5): SHOW POLICY, RESET, the policy keys SET accepts */
START_TEST(test_policy_commands)
{
    struct admincmd cmd;
    ck_assert_int_eq(admincmd_parse("SHOW POLICY;", &cmd), 0);
    ck_assert_int_eq(cmd.kind, ADMINCMD_SHOW);
    ck_assert_int_eq(cmd.show, ADMINCMD_SHOW_POLICY);
    ck_assert_str_eq(admincmd_show_name(ADMINCMD_SHOW_POLICY), "POLICY");
    ck_assert_int_eq(admincmd_parse("reset Max_CU;", &cmd), 0);
    ck_assert_int_eq(cmd.kind, ADMINCMD_RESET);
    ck_assert_str_eq(cmd.key, "max_cu");
    ck_assert_str_eq(admincmd_tag(ADMINCMD_RESET), "RESET");
    ck_assert_int_eq(admincmd_parse("RESET ALL", &cmd), 0);
    ck_assert_str_eq(cmd.key, "all");
    ck_assert_int_eq(admincmd_parse("RESET", &cmd), -1);
    ck_assert_str_eq(cmd.sqlstate, "42601");
    ck_assert_int_eq(admincmd_parse("RESET a b", &cmd), -1);
    ck_assert_str_eq(cmd.sqlstate, "42601");
    ck_assert_int_eq(admincmd_parse("RESET listen_port", &cmd), -1);
    ck_assert_str_eq(cmd.sqlstate, "42704");
    ck_assert_ptr_nonnull(strstr(cmd.message, "\"listen_port\""));
    static const char *const keys[] = {
        "pause_after",     "suspend_after",   "wake_timeout",   "pool_mode",     "pool_size",
        "min_replicas",    "max_replicas",    "compute_units",  "replica_units", "min_cu",
        "max_cu",          "scale_window",    "scale_cooldown", "cpu_high",      "cpu_low",
        "max_replica_lag", "backup_schedule", "backup_keep",    "backup_max_age"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "SET %s = '1'", keys[i]);
        ck_assert_msg(admincmd_parse(sql, &cmd) == 0, "%s: %s", sql, cmd.message);
        ck_assert_str_eq(cmd.key, keys[i]);
        ck_assert_ptr_nonnull(strstr(admincmd_settable_list(), keys[i]));
    }
}
END_TEST

/* SHOW USAGE [DAY|HOUR] (issue 5: usage ledger) */
/* backups (issue 7): BACKUP, SHOW BACKUPS, SET of the backup keys */
START_TEST(test_backup_commands)
{
    struct admincmd cmd;
    ck_assert_int_eq(admincmd_parse("backup;", &cmd), 0);
    ck_assert_int_eq(cmd.kind, ADMINCMD_BACKUP);
    ck_assert_str_eq(admincmd_tag(ADMINCMD_BACKUP), "BACKUP");
    ck_assert_int_eq(admincmd_parse("BACKUP now", &cmd), -1);
    ck_assert_str_eq(cmd.sqlstate, "42601");
    ck_assert_int_eq(admincmd_parse("SHOW backups", &cmd), 0);
    ck_assert_int_eq(cmd.kind, ADMINCMD_SHOW);
    ck_assert_int_eq(cmd.show, ADMINCMD_SHOW_BACKUPS);
    ck_assert_str_eq(admincmd_show_name(ADMINCMD_SHOW_BACKUPS), "BACKUPS");
    ck_assert_int_eq(admincmd_parse("SET backup_schedule = '0 3 * * *'", &cmd), 0);
    ck_assert_str_eq(cmd.value, "0 3 * * *");
    ck_assert(admincmd_settable("backup_keep") && admincmd_settable("backup_max_age"));
}
END_TEST

/* replicas (issue 6): SCALE REPLICAS n, SET replica_scale_wait */
START_TEST(test_scale_replicas)
{
    struct admincmd cmd;
    ck_assert_int_eq(admincmd_parse("scale replicas 2;", &cmd), 0);
    ck_assert_int_eq(cmd.kind, ADMINCMD_SCALE_REPLICAS);
    ck_assert_int_eq(cmd.replicas, 2);
    ck_assert_str_eq(admincmd_tag(ADMINCMD_SCALE_REPLICAS), "SCALE");
    ck_assert_int_eq(admincmd_parse("SCALE REPLICAS 0", &cmd), 0);
    ck_assert_int_eq(cmd.replicas, 0);
    ck_assert_int_eq(admincmd_parse("SCALE REPLICAS 16", &cmd), 0);
    ck_assert_int_eq(cmd.replicas, 16);
    const char *range[] = {"SCALE REPLICAS 17", "SCALE REPLICAS -1", "SCALE REPLICAS two",
                           "SCALE REPLICAS 1.5", "SCALE REPLICAS 99999999999999999999"};
    for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++) {
        ck_assert_int_eq(admincmd_parse(range[i], &cmd), -1);
        ck_assert_str_eq(cmd.sqlstate, "22023");
    }
    const char *syntax[] = {"SCALE", "SCALE REPLICAS", "SCALE PRIMARY 2", "SCALE REPLICAS 1 2",
                            "SCALE REPLICAS = 2"};
    for (size_t i = 0; i < sizeof(syntax) / sizeof(syntax[0]); i++) {
        ck_assert_int_eq(admincmd_parse(syntax[i], &cmd), -1);
        ck_assert_str_eq(cmd.sqlstate, "42601");
    }
    ck_assert_int_eq(admincmd_parse("SET replica_scale_wait = '500ms'", &cmd), 0);
    ck_assert_str_eq(cmd.key, "replica_scale_wait");
}
END_TEST

START_TEST(test_show_usage)
{
    struct admincmd cmd;
    ck_assert_int_eq(admincmd_parse("show usage;", &cmd), 0);
    ck_assert_int_eq(cmd.kind, ADMINCMD_SHOW);
    ck_assert_int_eq(cmd.show, ADMINCMD_SHOW_USAGE);
    ck_assert_int_eq(cmd.usage_by, 0);
    ck_assert_int_eq(admincmd_parse("SHOW USAGE hour", &cmd), 0);
    ck_assert_int_eq(cmd.usage_by, 1);
    ck_assert_int_eq(admincmd_parse("SHOW Usage DAY ;", &cmd), 0);
    ck_assert_int_eq(cmd.usage_by, 2);
    ck_assert_int_eq(admincmd_parse("SHOW USAGE week", &cmd), -1);
    ck_assert_str_eq(cmd.sqlstate, "42601");
    ck_assert_ptr_nonnull(strstr(cmd.message, "week"));
    ck_assert_int_eq(admincmd_parse("SHOW USAGE DAY HOUR", &cmd), -1);
    ck_assert_int_eq(admincmd_parse("SHOW CLIENTS DAY", &cmd), -1); /* only USAGE takes one */
    ck_assert_str_eq(admincmd_show_name(ADMINCMD_SHOW_USAGE), "USAGE");
}
END_TEST

static Suite *admincmd_suite(void)
{
    Suite *s = suite_create("admincmd");
    TCase *tc = tcase_create("parse");
    tcase_add_loop_test(tc, test_ok, 0, NOK);
    tcase_add_loop_test(tc, test_bad, 0, NBAD);
    tcase_add_test(tc, test_long_tokens);
    tcase_add_test(tc, test_reset_between_calls);
    tcase_add_test(tc, test_settable);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_policy_commands);
    tcase_add_test(tc, test_show_usage);
    tcase_add_test(tc, test_backup_commands);
    tcase_add_test(tc, test_scale_replicas);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(admincmd_suite());
}
