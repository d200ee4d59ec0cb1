/*
 * test_userlist: Check suite for the userlist module: PgBouncer auth_file syntax (quotes, doubled
 * quotes, comments, trailing fields, CRLF), secret validation, error messages with line numbers,
 * duplicates, loading from a file, and lookups over many thousands of users.
 */
#include "pgtide/userlist.h"
#include "unit.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#define PG_S1                                                                                      \
    "SCRAM-SHA-256$4096:DL126aY+IINEgniUngAzAw==$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oT4=:"    \
    "27QhW6rqKvcGdmJomuxJsddkliVA2nX56on+VqwhB98="

START_TEST(test_parse_basic)
{
    char err[256] = "";
    const char *text = "; PgBouncer style comment\n"
                       "# another comment\n"
                       "\n"
                       "\"alice\" \"" PG_S1 "\"\n"
                       "   \"bob\"\t\"md599d7714169587ba382241135a9f425e7\" \"ignored\" extra\r\n"
                       "\"o\"\"brien\" \"pa\"\"ss word\"\n"
                       "\"carol\" \"\"";
    struct userlist *ul = userlist_parse(text, "users.txt", err, sizeof(err));

    ck_assert_msg(ul != NULL, "%s", err);
    ck_assert_int_eq(userlist_count(ul), 4);
    ck_assert_str_eq(userlist_get(ul, "alice"), PG_S1);
    ck_assert_str_eq(userlist_get(ul, "bob"), "md599d7714169587ba382241135a9f425e7");
    ck_assert_str_eq(userlist_get(ul, "o\"brien"), "pa\"ss word");
    ck_assert_str_eq(userlist_get(ul, "carol"), "");
    ck_assert_ptr_null(userlist_get(ul, "dave"));
    ck_assert_ptr_null(userlist_get(ul, "Alice")); /* names are case-sensitive */
    ck_assert_ptr_null(userlist_get(ul, NULL));
    userlist_free(ul);
}
END_TEST

START_TEST(test_duplicate_last_wins)
{
    char err[256];
    struct userlist *ul =
        userlist_parse("\"a\" \"one\"\n\"b\" \"x\"\n\"a\" \"two\"\n", "f", err, sizeof(err));

    ck_assert_ptr_nonnull(ul);
    ck_assert_int_eq(userlist_count(ul), 2);
    ck_assert_str_eq(userlist_get(ul, "a"), "two");
    userlist_free(ul);
}
END_TEST

static void assert_error(const char *text, const char *expect)
{
    char err[256] = "";
    struct userlist *ul = userlist_parse(text, "auth.txt", err, sizeof(err));

    ck_assert_msg(ul == NULL, "accepted: %s", text);
    ck_assert_str_eq(err, expect);
}

START_TEST(test_errors)
{
    assert_error("alice \"x\"\n", "auth.txt:1: expected a quoted user name");
    assert_error("\n\n\"alice\" x\n", "auth.txt:3: expected a quoted secret after the user name");
    assert_error("\"alice\"\n", "auth.txt:1: expected a quoted secret after the user name");
    assert_error("# c\n\"alice \"x\"\n",
                 "auth.txt:2: expected a quoted secret after the user name");
    assert_error("\"alice\" \"x\n\"bob\" \"y\"\n", "auth.txt:1: unterminated quoted field");
    assert_error("\"alice", "auth.txt:1: unterminated quoted field");
    assert_error("\"\" \"x\"", "auth.txt:1: empty user name");
    assert_error("\"a\" \"x\"\n\"b\" \"md5zzd7714169587ba382241135a9f425e7\"\n",
                 "auth.txt:2: malformed SCRAM verifier or md5 hash");
    assert_error("\"a\" \"SCRAM-SHA-256$4096:bad\"",
                 "auth.txt:1: malformed SCRAM verifier or md5 hash");
    /* a tiny error buffer is truncated, not overrun */
    char small[8];
    ck_assert_ptr_null(userlist_parse("oops", "auth.txt", small, sizeof(small)));
    ck_assert_str_eq(small, "auth.tx");
}
END_TEST

START_TEST(test_empty)
{
    char err[64];
    struct userlist *ul = userlist_parse("", "f", err, sizeof(err));

    ck_assert_ptr_nonnull(ul);
    ck_assert_int_eq(userlist_count(ul), 0);
    ck_assert_ptr_null(userlist_get(ul, "x"));
    userlist_free(ul);
    userlist_free(NULL);
    ck_assert_int_eq(userlist_count(NULL), 0);
}
END_TEST

START_TEST(test_many_users)
{
    const int n = 20000;
    size_t cap = (size_t) n * 40;
    char *text = malloc(cap), err[128];
    size_t len = 0;

    ck_assert_ptr_nonnull(text);
    for (int i = 0; i < n; i++)
        len += (size_t) snprintf(text + len, cap - len, "\"user%d\" \"pw%d\"\n", i, i * 7);
    struct userlist *ul = userlist_parse(text, "big", err, sizeof(err));
    ck_assert_ptr_nonnull(ul);
    ck_assert_int_eq(userlist_count(ul), n);
    for (int i = 0; i < n; i++) {
        char user[32], pw[32];
        snprintf(user, sizeof(user), "user%d", i);
        snprintf(pw, sizeof(pw), "pw%d", i * 7);
        ck_assert_str_eq(userlist_get(ul, user), pw);
    }
    ck_assert_ptr_null(userlist_get(ul, "user20000"));
    userlist_free(ul);
    free(text);
}
END_TEST

START_TEST(test_load_file)
{
    char path[] = "/tmp/test_userlist_XXXXXX", err[256];
    int fd = mkstemp(path);
    const char *text = "\"alice\" \"" PG_S1 "\"\n\"bob\" \"secret\"\n";

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t) strlen(text));
    close(fd);
    struct userlist *ul = userlist_load(path, err, sizeof(err));
    ck_assert_msg(ul != NULL, "%s", err);
    ck_assert_int_eq(userlist_count(ul), 2);
    ck_assert_str_eq(userlist_get(ul, "bob"), "secret");
    userlist_free(ul);

    /* errors name the file */
    fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "\"a\" \"b\"\nbad\n", 12), 12);
    close(fd);
    ck_assert_ptr_null(userlist_load(path, err, sizeof(err)));
    char expect[300];
    snprintf(expect, sizeof(expect), "%s:2: expected a quoted user name", path);
    ck_assert_str_eq(err, expect);

    /* NUL bytes are refused */
    fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_int_eq(write(fd, "\"a\" \"b\0\"\n", 9), 9);
    close(fd);
    ck_assert_ptr_null(userlist_load(path, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "NUL"));
    unlink(path);

    ck_assert_ptr_null(userlist_load("/nonexistent/auth.txt", err, sizeof(err)));
    ck_assert_str_eq(err, "/nonexistent/auth.txt: No such file or directory");
}
END_TEST

static Suite *userlist_suite(void)
{
    Suite *s = suite_create("userlist");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_parse_basic);
    tcase_add_test(tc, test_duplicate_last_wins);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_many_users);
    tcase_add_test(tc, test_load_file);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(userlist_suite());
}
