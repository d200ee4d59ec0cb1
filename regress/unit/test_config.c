/*
 * Unit tests for the config module: defaults, the parsing and bounds of every value type,
 * the duration and size grammars, INI files (sections, syntax errors and their line numbers,
 * atomic failure), the "-c name=value" form, copy + reload checks, SHOW CONFIG iteration and
 * reference counting.
 */
#include "pgtide/config.h"
#include "unit.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[512];

/* Sets key=value and asserts success. */
static void set_ok(struct config *c, const char *key, const char *value)
{
    err[0] = '\0';
    int rc = config_set(c, key, value, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s = %s refused: %s", key, value, err);
}

/* Sets key=value, asserts refusal and that the message names the key. */
static void set_bad(struct config *c, const char *key, const char *value)
{
    err[0] = '\0';
    int rc = config_set(c, key, value, err, sizeof(err));
    ck_assert_msg(rc == -1, "%s = %s accepted", key, value);
    ck_assert_msg(strncmp(err, key, strlen(key)) == 0, "message \"%s\" lacks key %s", err, key);
}

static const char *text_of(const struct config *c, const char *key)
{
    static char buf[256];
    ck_assert(config_get_text(c, key, buf, sizeof(buf)));
    return buf;
}

START_TEST(test_defaults)
{
    struct config *c = config_new_defaults();
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->refcount, 1);
    ck_assert_str_eq(c->listen_addr, "127.0.0.1");
    ck_assert_int_eq(c->listen_port, 6432);
    ck_assert_str_eq(c->unix_socket_dir, "/tmp");
    ck_assert_int_eq(c->unix_socket_mode, 0777);
    ck_assert_int_eq(c->max_client_conn, 10000);
    ck_assert(c->max_packet_size == 1073741823);
    ck_assert_int_eq(c->log_level, LOGL_INFO);
    ck_assert_str_eq(c->logfile, "");
    ck_assert_int_eq(c->auth_type, CONFIG_AUTH_SCRAM_SHA_256);
    ck_assert_str_eq(c->auth_type_name, "scram-sha-256");
    ck_assert_str_eq(c->auth_file, "");
    ck_assert_str_eq(c->hba_file, "");
    ck_assert_str_eq(c->auth_query, "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = "
                                    "$1 AND rolcanlogin");
    ck_assert_str_eq(c->auth_user, "");
    ck_assert(c->authentication_timeout == 60000);
    ck_assert_str_eq(c->admin_users, "postgres");
    ck_assert_int_eq(c->client_tls_sslmode, SSLMODE_PREFER);
    ck_assert_str_eq(c->client_tls_cert_file, "");
    ck_assert_int_eq(c->server_tls_sslmode, SSLMODE_PREFER);
    ck_assert_int_eq(c->compute_provider, PROVIDER_LOCAL);
    ck_assert_str_eq(c->static_host, "127.0.0.1");
    ck_assert_int_eq(c->static_port, 5432);
    ck_assert_str_eq(c->pg_bindir, "");
    ck_assert_str_eq(c->compute_user, "postgres");
    ck_assert(c->compute_units == 1.0);
    ck_assert(c->compute_start_timeout == 60000);
    ck_assert(c->compute_stop_timeout == 30000);
    ck_assert_int_eq(c->pool_mode, POOL_SESSION);
    ck_assert_int_eq(c->pool_size, 20);
    ck_assert_int_eq(c->min_pool_size, 0);
    ck_assert(c->server_idle_timeout == 600000);
    ck_assert(c->server_lifetime == 3600000);
    ck_assert_str_eq(c->server_reset_query, "DISCARD ALL");
    ck_assert(c->query_wait_timeout == 120000);
    ck_assert(c->server_connect_timeout == 15000);
    ck_assert(c->pause_after == 10000);
    ck_assert(c->suspend_after == 300000);
    ck_assert(c->wake_timeout == 60000);
    ck_assert_int_eq(config_validate(c, err, sizeof(err)), 0);
    config_unref(c);
}
END_TEST

struct dur_case {
    const char *text;
    int rc;
    int64_t ms;
};

START_TEST(test_durations)
{
    static const struct dur_case cases[] = {
        {"500ms", 0, 500},
        {"30s", 0, 30000},
        {"10min", 0, 600000},
        {"2h", 0, 7200000},
        {"7d", 0, 604800000},
        {"10", 0, 10000},
        {"0", 0, 0},
        {"15 s", 0, 15000},
        {"", -1, 0},
        {"abc", -1, 0},
        {"10x", -1, 0},
        {"10m", -1, 0}, /* ambiguous: minutes are "min" */
        {"5S", -1, 0},
        {"1.5h", -1, 0},
        {"-5", -1, 0},
        {"-5s", -1, 0},
        {"+5s", -1, 0},
        {" 5s", -1, 0},
        {"s", -1, 0},
        {"9223372036854775807ms", 0, INT64_MAX},
        {"9223372036854775808ms", -1, 0},
        {"9223372036854775807", -1, 0}, /* seconds: * 1000 overflows */
        {"106751991167301d", -1, 0},
        {"99999999999999999999999", -1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -42;
        int rc = config_parse_duration(cases[i].text, &ms);
        ck_assert_msg(rc == cases[i].rc, "\"%s\": rc %d", cases[i].text, rc);
        if (rc == 0)
            ck_assert_msg(ms == cases[i].ms, "\"%s\": %lld", cases[i].text, (long long) ms);
        else
            ck_assert_msg(ms == -42, "\"%s\" changed the output on failure", cases[i].text);
    }
}
END_TEST

START_TEST(test_sizes)
{
    int64_t b = 0;
    ck_assert_int_eq(config_parse_size("1024", &b), 0);
    ck_assert(b == 1024);
    ck_assert_int_eq(config_parse_size("64kB", &b), 0);
    ck_assert(b == 65536);
    ck_assert_int_eq(config_parse_size("16MB", &b), 0);
    ck_assert(b == 16 * 1048576);
    ck_assert_int_eq(config_parse_size("1GB", &b), 0);
    ck_assert(b == 1073741824);
    ck_assert_int_eq(config_parse_size("2kb", &b), 0);
    ck_assert(b == 2048);
    ck_assert_int_eq(config_parse_size("100B", &b), 0);
    ck_assert(b == 100);
    b = 7;
    ck_assert_int_eq(config_parse_size("", &b), -1);
    ck_assert_int_eq(config_parse_size("1XB", &b), -1);
    ck_assert_int_eq(config_parse_size("-1", &b), -1);
    ck_assert_int_eq(config_parse_size("1.5MB", &b), -1);
    ck_assert_int_eq(config_parse_size("9999999999TB", &b), -1);
    ck_assert(b == 7);

    struct config *c = config_new_defaults();
    set_ok(c, "max_packet_size", "64kB");
    ck_assert(c->max_packet_size == 65536);
    ck_assert_str_eq(text_of(c, "max_packet_size"), "64kB");
    set_ok(c, "max_packet_size", "1024");
    ck_assert_str_eq(text_of(c, "max_packet_size"), "1kB");
    set_ok(c, "max_packet_size", "1500");
    ck_assert_str_eq(text_of(c, "max_packet_size"), "1500");
    set_bad(c, "max_packet_size", "1023");
    set_bad(c, "max_packet_size", "1GB"); /* one more than the maximum */
    set_bad(c, "max_packet_size", "big");
    ck_assert(c->max_packet_size == 1500);
    config_unref(c);
}
END_TEST

START_TEST(test_integers_and_ports)
{
    struct config *c = config_new_defaults();
    set_ok(c, "listen_port", "0");
    ck_assert_int_eq(c->listen_port, 0);
    set_ok(c, "listen_port", "65535");
    ck_assert_int_eq(c->listen_port, 65535);
    set_bad(c, "listen_port", "65536");
    set_bad(c, "listen_port", "-1");
    set_bad(c, "listen_port", "12ab");
    set_bad(c, "listen_port", "");
    ck_assert_int_eq(c->listen_port, 65535);
    set_bad(c, "static_port", "0");
    set_ok(c, "static_port", "1");
    ck_assert_int_eq(c->static_port, 1);
    set_bad(c, "pool_size", "0");
    set_bad(c, "pool_size", "10001");
    set_ok(c, "pool_size", "10000");
    ck_assert_int_eq(c->pool_size, 10000);
    set_ok(c, "min_pool_size", "0");
    set_bad(c, "max_client_conn", "0");
    set_bad(c, "max_client_conn", "99999999999999999999");
    set_ok(c, "MAX_CLIENT_CONN", "500"); /* key names are case-insensitive */
    ck_assert_int_eq(c->max_client_conn, 500);
    ck_assert_str_eq(text_of(c, "max_client_conn"), "500");
    config_unref(c);
}
END_TEST

START_TEST(test_octal_mode)
{
    struct config *c = config_new_defaults();
    set_ok(c, "unix_socket_mode", "0700");
    ck_assert_int_eq(c->unix_socket_mode, 0700);
    ck_assert_str_eq(text_of(c, "unix_socket_mode"), "0700");
    set_ok(c, "unix_socket_mode", "660");
    ck_assert_int_eq(c->unix_socket_mode, 0660);
    set_bad(c, "unix_socket_mode", "0778");
    set_bad(c, "unix_socket_mode", "01777");
    set_bad(c, "unix_socket_mode", "rw");
    ck_assert_int_eq(c->unix_socket_mode, 0660);
    config_unref(c);
}
END_TEST

START_TEST(test_duration_keys)
{
    struct config *c = config_new_defaults();
    set_ok(c, "pause_after", "0");
    ck_assert(c->pause_after == 0);
    ck_assert_str_eq(text_of(c, "pause_after"), "0");
    set_ok(c, "suspend_after", "90");
    ck_assert(c->suspend_after == 90000);
    ck_assert_str_eq(text_of(c, "suspend_after"), "90s");
    set_ok(c, "wake_timeout", "500ms");
    ck_assert_str_eq(text_of(c, "wake_timeout"), "500ms");
    set_ok(c, "wake_timeout", "120min");
    ck_assert_str_eq(text_of(c, "wake_timeout"), "2h");
    set_bad(c, "wake_timeout", "0"); /* a wait of zero makes no sense */
    set_bad(c, "wake_timeout", "-1s");
    set_bad(c, "server_lifetime", "3651d");
    set_bad(c, "authentication_timeout", "soon");
    ck_assert(c->wake_timeout == 7200000);
    config_unref(c);
}
END_TEST

START_TEST(test_enums)
{
    struct config *c = config_new_defaults();
    set_ok(c, "pool_mode", "Transaction");
    ck_assert_int_eq(c->pool_mode, POOL_TRANSACTION);
    ck_assert_str_eq(text_of(c, "pool_mode"), "transaction");
    set_bad(c, "pool_mode", "sessions");
    ck_assert_int_eq(c->pool_mode, POOL_TRANSACTION);
    ck_assert_ptr_nonnull(strstr(err, "session, transaction, statement"));

    set_ok(c, "client_tls_sslmode", "VERIFY-FULL");
    ck_assert_int_eq(c->client_tls_sslmode, SSLMODE_VERIFY_FULL);
    set_ok(c, "server_tls_sslmode", "disable");
    ck_assert_int_eq(c->server_tls_sslmode, SSLMODE_DISABLE);
    set_bad(c, "server_tls_sslmode", "verify_ca");

    set_ok(c, "compute_provider", "static");
    ck_assert_int_eq(c->compute_provider, PROVIDER_STATIC);
    set_bad(c, "compute_provider", "exec");

    set_ok(c, "log_level", "DEBUG");
    ck_assert_int_eq(c->log_level, LOGL_DEBUG);
    set_bad(c, "log_level", "verbose");

    set_ok(c, "auth_type", "MD5");
    ck_assert_int_eq(c->auth_type, CONFIG_AUTH_MD5);
    ck_assert_str_eq(c->auth_type_name, "md5");
    set_ok(c, "auth_type", "cert");
    ck_assert_int_eq(c->auth_type, CONFIG_AUTH_CERT);
    ck_assert_str_eq(c->auth_type_name, "cert");
    set_bad(c, "auth_type", "gss");
    ck_assert_str_eq(c->auth_type_name, "cert");

    ck_assert_int_eq(c->server_round_robin, 0); /* LIFO unless asked */
    set_ok(c, "server_round_robin", "on");
    ck_assert_int_eq(c->server_round_robin, 1);
    set_ok(c, "server_round_robin", "OFF");
    ck_assert_int_eq(c->server_round_robin, 0);
    /* PgBouncer's and PostgreSQL's spellings of a boolean */
    set_ok(c, "server_round_robin", "1");
    ck_assert_int_eq(c->server_round_robin, 1);
    set_ok(c, "server_round_robin", "false");
    ck_assert_int_eq(c->server_round_robin, 0);
    set_ok(c, "server_round_robin", "Yes");
    ck_assert_int_eq(c->server_round_robin, 1);
    set_ok(c, "server_round_robin", "0");
    ck_assert_int_eq(c->server_round_robin, 0);
    set_bad(c, "server_round_robin", "2");
    set_bad(c, "server_round_robin", "onn");
    set_bad(c, "server_round_robin", "");
    char got[16];
    set_ok(c, "read_your_writes", "true");
    ck_assert(config_get_text(c, "read_your_writes", got, sizeof(got)));
    ck_assert_str_eq(got, "on"); /* shown in the one spelling */

    ck_assert_str_eq(config_sslmode_name(SSLMODE_VERIFY_CA), "verify-ca");
    ck_assert_str_eq(config_sslmode_name(99), "unknown");
    ck_assert_str_eq(config_pool_mode_name(POOL_STATEMENT), "statement");
    ck_assert_str_eq(config_provider_name(PROVIDER_LOCAL), "local");
    ck_assert_str_eq(config_log_level_name(LOGL_WARNING), "warning");
    ck_assert_str_eq(config_auth_type_name(CONFIG_AUTH_SCRAM_SHA_256), "scram-sha-256");
    ck_assert_str_eq(config_auth_type_name(-1), "unknown");
    config_unref(c);
}
END_TEST

START_TEST(test_compute_units)
{
    struct config *c = config_new_defaults();
    set_ok(c, "compute_units", "0.25");
    ck_assert(c->compute_units == 0.25);
    set_ok(c, "compute_units", "64");
    ck_assert(c->compute_units == 64.0);
    set_ok(c, "compute_units", "2.5");
    ck_assert_str_eq(text_of(c, "compute_units"), "2.5");
    set_bad(c, "compute_units", "0.3");
    set_bad(c, "compute_units", "0");
    set_bad(c, "compute_units", "64.25");
    set_bad(c, "compute_units", "nan");
    set_bad(c, "compute_units", "inf");
    set_bad(c, "compute_units", "1cu");
    set_bad(c, "compute_units", "");
    ck_assert(c->compute_units == 2.5);
    config_unref(c);
}
END_TEST

START_TEST(test_strings)
{
    struct config *c = config_new_defaults();
    set_ok(c, "listen_addr", "*");
    set_ok(c, "listen_addr", "127.0.0.1, ::1");
    ck_assert_str_eq(c->listen_addr, "127.0.0.1, ::1");
    set_ok(c, "listen_addr", "");
    set_bad(c, "listen_addr", "a,,b");
    set_bad(c, "listen_addr", "host;rm");
    set_ok(c, "unix_socket_dir", "");
    set_ok(c, "unix_socket_dir", "/var/run/pgtide");
    set_bad(c, "unix_socket_dir", "relative/dir");
    char longdir[120];
    memset(longdir, 'a', sizeof(longdir) - 1);
    longdir[0] = '/';
    longdir[sizeof(longdir) - 1] = '\0';
    set_bad(c, "unix_socket_dir", longdir);
    ck_assert_str_eq(c->unix_socket_dir, "/var/run/pgtide");
    set_bad(c, "pg_bindir", "bin");
    set_ok(c, "pg_bindir", "/usr/lib/postgresql/15/bin");
    set_bad(c, "compute_user", "");
    set_bad(c, "auth_query", "");
    set_bad(c, "admin_users", "alice,");
    set_ok(c, "admin_users", "");
    set_ok(c, "server_reset_query", "");
    ck_assert_str_eq(c->server_reset_query, "");
    set_bad(c, "no_such_key", "1");
    ck_assert_str_eq(err, "no_such_key: unknown configuration key");
    ck_assert_int_eq(config_set(c, "pool_size", NULL, err, sizeof(err)), -1);
    config_unref(c);
}
END_TEST

START_TEST(test_is_admin)
{
    struct config *c = config_new_defaults();
    ck_assert(config_is_admin(c, "postgres"));
    ck_assert(!config_is_admin(c, "postgre"));
    ck_assert(!config_is_admin(c, "postgresx"));
    ck_assert(!config_is_admin(c, ""));
    set_ok(c, "admin_users", "alice , bob,carol");
    ck_assert(config_is_admin(c, "alice"));
    ck_assert(config_is_admin(c, "bob"));
    ck_assert(config_is_admin(c, "carol"));
    ck_assert(!config_is_admin(c, "Bob"));
    ck_assert(!config_is_admin(c, "postgres"));
    ck_assert(!config_is_admin(c, "alice , bob"));
    config_unref(c);
}
END_TEST

START_TEST(test_set_arg)
{
    struct config *c = config_new_defaults();
    ck_assert_int_eq(config_set_arg(c, "pool_size=5", err, sizeof(err)), 0);
    ck_assert_int_eq(c->pool_size, 5);
    ck_assert_int_eq(config_set_arg(c, " pool_mode = transaction ", err, sizeof(err)), 0);
    ck_assert_int_eq(c->pool_mode, POOL_TRANSACTION);
    ck_assert_int_eq(config_set_arg(c, "server_reset_query=SELECT 1=1", err, sizeof(err)), 0);
    ck_assert_str_eq(c->server_reset_query, "SELECT 1=1");
    ck_assert_int_eq(config_set_arg(c, "logfile=", err, sizeof(err)), 0);
    ck_assert_str_eq(c->logfile, "");

    ck_assert_int_eq(config_set_arg(c, "pool_size=0", err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "-c pool_size: ", 14) == 0, "%s", err);
    ck_assert_int_eq(c->pool_size, 5);
    ck_assert_int_eq(config_set_arg(c, "bogus=1", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "-c bogus: unknown configuration key");
    ck_assert_int_eq(config_set_arg(c, "pool_size", err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "-c pool_size: ", 14) == 0, "%s", err);
    ck_assert_int_eq(config_set_arg(c, "=5", err, sizeof(err)), -1);
    ck_assert_int_eq(config_set_arg(c, "", err, sizeof(err)), -1);
    config_unref(c);
}
END_TEST

/* Writes text to a fresh temp file and returns its path (static buffer). */
static const char *temp_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/pgtide-test-config-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    size_t len = strlen(text);
    ck_assert_int_eq(write(fd, text, len), (ssize_t) len);
    close(fd);
    return path;
}

/* Loads text from a temp file into c; returns rc, err holds the message. */
static int load_text(struct config *c, const char *text)
{
    const char *path = temp_file(text);
    int rc = config_load_file(c, path, err, sizeof(err));
    unlink(path);
    return rc;
}

/* Asserts that loading text fails with "path:line: " + a message containing needle. */
static void load_fails_at(const char *text, int line, const char *needle)
{
    struct config *c = config_new_defaults();
    const char *path = temp_file(text);
    ck_assert_int_eq(config_load_file(c, path, err, sizeof(err)), -1);
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "got \"%s\", want prefix \"%s\"", err,
                  prefix);
    ck_assert_msg(strstr(err, needle) != NULL, "got \"%s\", want \"%s\"", err, needle);
    unlink(path);
    /* A failed load changes nothing. */
    ck_assert_int_eq(c->pool_size, 20);
    ck_assert_int_eq(c->listen_port, 6432);
    config_unref(c);
}

START_TEST(test_file_ok)
{
    struct config *c = config_new_defaults();
    int rc = load_text(c, "# comment\n"
                          "listen_port = 7000\n"
                          "; another comment\n"
                          "\n"
                          "[pgtide]\n"
                          "  pool_size = 7   ; trailing comment\n"
                          "server_reset_query = \"  RESET ALL  \"\n"
                          "admin_users = 'alice,bob'\n"
                          "suspend_after = 30min\n"
                          "[PGTIDE]\n"
                          "pool_mode=transaction\n"
                          "pool_size = 8\n");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(c->listen_port, 7000);
    ck_assert_int_eq(c->pool_size, 8); /* the last assignment wins */
    ck_assert_str_eq(c->server_reset_query, "  RESET ALL  ");
    ck_assert_str_eq(c->admin_users, "alice,bob");
    ck_assert(c->suspend_after == 1800000);
    ck_assert_int_eq(c->pool_mode, POOL_TRANSACTION);
    ck_assert_int_eq(c->refcount, 1);

    /* The in-memory form names its source as given. */
    ck_assert_int_eq(config_load_string(c, "pool_size = 9\nbad = 1\n", "inline", err, sizeof(err)),
                     -1);
    ck_assert_str_eq(err, "inline:2: bad: unknown configuration key");
    ck_assert_int_eq(c->pool_size, 8);
    ck_assert_int_eq(config_load_string(c, "pool_size = 9", "inline", err, sizeof(err)), 0);
    ck_assert_int_eq(c->pool_size, 9);
    config_unref(c);
}
END_TEST

START_TEST(test_file_errors)
{
    load_fails_at("pool_size = 5\nlisten_port = 6432\nfoo = 1\n", 3,
                  "foo: unknown configuration key");
    load_fails_at("pool_size = 5\n\n\npool_size = 0\n", 4,
                  "pool_size: value \"0\" is out of range");
    load_fails_at("[pgtide]\npool_size = 5\n[other]\npool_size = 6\n", 4,
                  "unknown section [other]");
    load_fails_at("pool_size = 5\nthis line has no equals sign\nfoo = 1\n", 2, "syntax error");
    load_fails_at("a = 1\n", 1, "a: unknown");
    load_fails_at("pool_size = 5\nfoo = 1\nalso no equals\n", 2, "foo: unknown");
    load_fails_at("  pool_size = 5\n  continued\n", 2, "syntax error");
    load_fails_at("wake_timeout = 10 fortnights\n", 1, "expected a duration");

    char big[400];
    snprintf(big, sizeof(big), "pool_size = 5\nauth_query = %0250d\n", 1);
    load_fails_at(big, 2, "line too long");

    struct config *c = config_new_defaults();
    ck_assert_int_eq(config_load_file(c, "/nonexistent/pgtide.conf", err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "/nonexistent/pgtide.conf: ") == err, "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "No such file"));
    config_unref(c);
}
END_TEST

START_TEST(test_validate)
{
    struct config *c = config_new_defaults();
    set_ok(c, "min_pool_size", "30");
    ck_assert_int_eq(config_validate(c, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "min_pool_size"));
    set_ok(c, "pool_size", "30");
    ck_assert_int_eq(config_validate(c, err, sizeof(err)), 0);
    config_unref(c);
}
END_TEST

START_TEST(test_copy_and_refcount)
{
    struct config *c = config_new_defaults();
    ck_assert_int_eq(config_set_data_dir(c, "/srv/data"), 0);
    set_ok(c, "hba_file", "/etc/hba.conf");
    struct config *d = config_copy(c);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(d->refcount, 1);
    ck_assert_str_eq(d->data_dir, "/srv/data");
    ck_assert_str_eq(d->hba_file, "/etc/hba.conf");
    ck_assert_ptr_ne(d->hba_file, c->hba_file); /* deep copy */
    ck_assert_ptr_ne(d->auth_type_name, c->auth_type_name);
    set_ok(d, "hba_file", "/other");
    ck_assert_str_eq(c->hba_file, "/etc/hba.conf");

    ck_assert_ptr_eq(config_ref(c), c);
    ck_assert_int_eq(c->refcount, 2);
    config_unref(c);
    ck_assert_int_eq(c->refcount, 1);
    ck_assert_str_eq(c->hba_file, "/etc/hba.conf"); /* still alive */
    config_unref(c);
    config_unref(d);
    config_unref(NULL);
}
END_TEST

START_TEST(test_reload_check)
{
    struct config *old = config_new_defaults();
    struct config *new = config_copy(old);
    char msg[256];
    ck_assert_int_eq(config_check_reload(old, new, msg, sizeof(msg)), 0);
    ck_assert_str_eq(msg, "");

    ck_assert_int_eq(config_load_string(new,
                                        "listen_port = 7777\n"
                                        "compute_provider = static\n"
                                        "pg_bindir = /opt/pg/bin\n"
                                        "pool_size = 50\n"
                                        "suspend_after = 1min\n",
                                        "reload", err, sizeof(err)),
                     0);
    ck_assert_int_eq(config_check_reload(old, new, msg, sizeof(msg)), 3);
    ck_assert_str_eq(msg, "kept: listen_port, compute_provider, pg_bindir (restart required)");
    ck_assert_int_eq(new->listen_port, 6432);
    ck_assert_int_eq(new->compute_provider, PROVIDER_LOCAL);
    ck_assert_str_eq(new->pg_bindir, "");
    ck_assert_int_eq(new->pool_size, 50); /* reloadable keys take the new value */
    ck_assert(new->suspend_after == 60000);
    ck_assert_int_eq(config_check_reload(old, new, msg, sizeof(msg)), 0);

    ck_assert(!config_key_reloadable("listen_addr"));
    ck_assert(!config_key_reloadable("compute_user"));
    ck_assert(!config_key_reloadable("unix_socket_dir"));
    ck_assert(config_key_reloadable("pool_size"));
    ck_assert(!config_key_reloadable("nonexistent"));
    config_unref(old);
    config_unref(new);
}
END_TEST

struct seen {
    size_t count;
    size_t changed;
    size_t fixed;
    bool saw_pool_size, saw_wake_timeout, saw_auth_type;
    char keys[96][40];
};

static void collect(void *arg, const char *key, const char *value, const char *def, bool reloadable)
{
    struct seen *s = arg;
    ck_assert_uint_lt(s->count, 96);
    for (size_t i = 0; i < s->count; i++)
        ck_assert_msg(strcmp(s->keys[i], key) != 0, "key %s listed twice", key);
    snprintf(s->keys[s->count], sizeof(s->keys[0]), "%s", key);
    s->count++;
    if (strcmp(value, def) != 0)
        s->changed++;
    if (!reloadable)
        s->fixed++;
    if (strcmp(key, "pool_size") == 0) {
        s->saw_pool_size = true;
        ck_assert_str_eq(value, "33");
        ck_assert_str_eq(def, "20");
    }
    if (strcmp(key, "wake_timeout") == 0) {
        s->saw_wake_timeout = true;
        ck_assert_str_eq(value, "1min");
    }
    if (strcmp(key, "auth_type") == 0) {
        s->saw_auth_type = true;
        ck_assert_str_eq(value, "scram-sha-256");
    }
}

START_TEST(test_foreach)
{
    static const char *const expected[] = {
        "listen_addr",
        "listen_port",
        "unix_socket_dir",
        "unix_socket_mode",
        "max_client_conn",
        "max_packet_size",
        "log_level",
        "logfile",
        "auth_type",
        "auth_file",
        "hba_file",
        "auth_query",
        "auth_user",
        "authentication_timeout",
        "admin_users",
        "client_tls_sslmode",
        "client_tls_cert_file",
        "client_tls_key_file",
        "client_tls_ca_file",
        "server_tls_sslmode",
        "server_tls_ca_file",
        "compute_provider",
        "static_host",
        "static_port",
        "pg_bindir",
        "compute_user",
        "compute_units",
        "compute_start_timeout",
        "compute_stop_timeout",
        "pool_mode",
        "pool_size",
        "min_pool_size",
        "server_idle_timeout",
        "server_lifetime",
        "server_reset_query",
        "query_wait_timeout",
        "server_connect_timeout",
        "pause_after",
        "suspend_after",
        "wake_timeout",
        /* compute units, vertical autoscaling, replica policy (issue 5: compute units) */
        "replica_units",
        "min_cu",
        "max_cu",
        "scale_window",
        "scale_cooldown",
        "cpu_high",
        "cpu_low",
        "min_replicas",
        "max_replicas",
        "max_replica_lag",
        "ledger_heartbeat",
        "paused_rate",
        "usage_minimum_charge",
        "metrics_listen",
        "max_prepared_statements",
        "database_pool_modes",
        "user_pool_modes",
        "server_round_robin",
        "archive_timeout",
        "wal_compression_level",
        "backup_schedule",
        "backup_timezone",
        "backup_keep",
        "backup_max_age",
        "read_port",
        "replica_scale_wait",
        "read_your_writes",
        "workers",
    };
    size_t n = sizeof(expected) / sizeof(expected[0]);
    struct config *c = config_new_defaults();
    set_ok(c, "pool_size", "33");
    struct seen s = {0};
    config_foreach(c, collect, &s);
    ck_assert_uint_eq(s.count, n);
    ck_assert_uint_eq(config_key_count(), n);
    for (size_t i = 0; i < n; i++)
        ck_assert_str_eq(s.keys[i], expected[i]);
    ck_assert_uint_eq(s.changed, 1); /* only pool_size differs from its default */
    ck_assert_uint_eq(s.fixed, 9);
    ck_assert(s.saw_pool_size && s.saw_wake_timeout && s.saw_auth_type);

    /* Every key's printed value parses back to the same value. */
    struct config *d = config_new_defaults();
    for (size_t i = 0; i < n; i++) {
        char buf[256];
        ck_assert(config_get_text(c, expected[i], buf, sizeof(buf)));
        set_ok(d, expected[i], buf);
        char back[256];
        ck_assert(config_get_text(d, expected[i], back, sizeof(back)));
        ck_assert_str_eq(buf, back);
    }
    ck_assert_int_eq(d->pool_size, 33);

    char tiny[4];
    ck_assert(!config_get_text(c, "auth_query", tiny, sizeof(tiny)));
    ck_assert_str_eq(tiny, "");
    ck_assert(!config_get_text(c, "nope", tiny, sizeof(tiny)));
    config_unref(c);
    config_unref(d);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_durations);
    tcase_add_test(tc, test_sizes);
    tcase_add_test(tc, test_integers_and_ports);
    tcase_add_test(tc, test_octal_mode);
    tcase_add_test(tc, test_duration_keys);
    tcase_add_test(tc, test_enums);
    tcase_add_test(tc, test_compute_units);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_is_admin);
    tcase_add_test(tc, test_set_arg);
    tcase_add_test(tc, test_file_ok);
    tcase_add_test(tc, test_file_errors);
    tcase_add_test(tc, test_validate);
    tcase_add_test(tc, test_copy_and_refcount);
    tcase_add_test(tc, test_reload_check);
    tcase_add_test(tc, test_foreach);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(config_suite());
}
