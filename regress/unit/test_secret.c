/*
 * test_secret: Check suite for the secret module: strict base64, parsing of stored secrets
 * (verifiers and md5 hashes made by PostgreSQL 15 itself, copied below with their passwords),
 * password and md5 checks against them, md5 responses as PostgreSQL computes them
 * (SELECT md5(md5(password || user) || salt)), and SCRAM verifier generation.
 */
#include "pgtide/secret.h"
#include "unit.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* Made by PostgreSQL 15: SET password_encryption = 'scram-sha-256'; CREATE ROLE ... PASSWORD. */
#define PG_S1_PASSWORD "x"
#define PG_S1                                                                                      \
    "SCRAM-SHA-256$4096:DL126aY+IINEgniUngAzAw==$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oT4=:"    \
    "27QhW6rqKvcGdmJomuxJsddkliVA2nX56on+VqwhB98="
#define PG_S2_PASSWORD "correct horse battery staple"
#define PG_S2                                                                                      \
    "SCRAM-SHA-256$4096:+vK1DYjw+aAYvJQhDCDF2A==$+rnfbmTgQVZKqNWMnvHs2c8zey23sGj3YcBAVHRkQ8o=:"    \
    "MNYVYNRzUwrBA49n7Nel+lx1MR2sozb++LnPW3jnwRc="
#define PG_S3_PASSWORD "p\xc3\xa4$$w\xc3\xb6rd" /* "pä$$wörd" in UTF-8 */
#define PG_S3                                                                                      \
    "SCRAM-SHA-256$4096:SghW6LJN9RXpQARE1hPWZg==$x2VuE+ere4ZdCDAUElI1BRA4LdVG6f8x9IFoDkaF+IU=:"    \
    "qlIurn9mfTsmXa1ZKQjBXO8fx6agMsazVs/g+BiOgao="
/* password_encryption = 'md5': role md5u password 'x', role m2 password 'secret pass'. */
#define PG_MD5U "md599d7714169587ba382241135a9f425e7"
#define PG_M2   "md5d532287d6c6e513233e5146c40913db4"

START_TEST(test_b64_roundtrip)
{
    const char *cases[][2] = {{"", ""},
                              {"f", "Zg=="},
                              {"fo", "Zm8="},
                              {"foo", "Zm9v"},
                              {"foob", "Zm9vYg=="},
                              {"fooba", "Zm9vYmE="},
                              {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char enc[32];
        uint8_t dec[32];
        size_t n = strlen(cases[i][0]);
        ck_assert_int_eq(secret_b64_encode((const uint8_t *) cases[i][0], n, enc, sizeof(enc)),
                         (int) strlen(cases[i][1]));
        ck_assert_str_eq(enc, cases[i][1]);
        ck_assert_uint_eq(secret_b64_len(n), strlen(cases[i][1]));
        ck_assert_int_eq(secret_b64_decode(enc, strlen(enc), dec, sizeof(dec)), (int) n);
        ck_assert(memcmp(dec, cases[i][0], n) == 0);
    }
}
END_TEST

START_TEST(test_b64_strict)
{
    uint8_t out[16];
    const char *bad[] = {"Zg=",  "Zg",   "Z===", "Zm9v\n", "Zm 9",       "Zh==",
                         "Zm9=", "=Zm9", "Zg=a", "Zm-_",   "Zm9vYg=Zm9v"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(secret_b64_decode(bad[i], strlen(bad[i]), out, sizeof(out)) == -1,
                      "accepted %s", bad[i]);
    /* output capacity is enforced */
    ck_assert_int_eq(secret_b64_decode("Zm9vYmFy", 8, out, 5), -1);
    ck_assert_int_eq(secret_b64_decode("Zm9vYmFy", 8, out, 6), 6);
    char small[4];
    ck_assert_int_eq(secret_b64_encode((const uint8_t *) "foo", 3, small, sizeof(small)), -1);
}
END_TEST

START_TEST(test_parse_scram)
{
    struct secret s;
    uint8_t salt[16];

    ck_assert_int_eq(secret_parse(PG_S1, &s), 0);
    ck_assert_int_eq(s.kind, SECRET_SCRAM);
    ck_assert_int_eq(s.scram.iterations, 4096);
    ck_assert_uint_eq(s.scram.salt_len, 16);
    ck_assert_int_eq(secret_b64_decode("DL126aY+IINEgniUngAzAw==", 24, salt, sizeof(salt)), 16);
    ck_assert(memcmp(s.scram.salt, salt, 16) == 0);
    ck_assert_ptr_null(s.plain);
    secret_clear(&s);
    ck_assert_int_eq(s.kind, SECRET_NONE);
}
END_TEST

START_TEST(test_parse_malformed)
{
    struct secret s;
    const char *bad[] = {
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$0:DL126aY+IINEgniUngAzAw==$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oT4=:"
        "27QhW6rqKvcGdmJomuxJsddkliVA2nX56on+VqwhB98=",
        "SCRAM-SHA-256$-1:DL126aY+IINEgniUngAzAw==$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oT4=:"
        "27QhW6rqKvcGdmJomuxJsddkliVA2nX56on+VqwhB98=",
        "SCRAM-SHA-256$4096:DL126aY+IINEgniUngAzAw==$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oT4=",
        /* bad base64 in the salt */
        "SCRAM-SHA-256$4096:DL126aY+IINEgniUngAzAw=$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oT4=:"
        "27QhW6rqKvcGdmJomuxJsddkliVA2nX56on+VqwhB98=",
        /* StoredKey of 31 bytes */
        "SCRAM-SHA-256$4096:DL126aY+IINEgniUngAzAw==$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oQ==:"
        "27QhW6rqKvcGdmJomuxJsddkliVA2nX56on+VqwhB98=",
        /* trailing garbage after ServerKey */
        "SCRAM-SHA-256$4096:DL126aY+IINEgniUngAzAw==$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oT4=:"
        "27QhW6rqKvcGdmJomuxJsddkliVA2nX56on+VqwhB98=x",
        "SCRAM-SHA-256$4096x:DL126aY+IINEgniUngAzAw==$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oT4=:"
        "27QhW6rqKvcGdmJomuxJsddkliVA2nX56on+VqwhB98=",
        "md599d7714169587ba382241135a9f425eZ",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(secret_parse(bad[i], &s) == -1, "accepted %s", bad[i]);
        ck_assert_int_eq(s.kind, SECRET_NONE);
        ck_assert_ptr_null(s.plain);
    }
}
END_TEST

START_TEST(test_parse_md5_plain)
{
    struct secret s;

    ck_assert_int_eq(secret_parse("MD599D7714169587BA382241135A9F425E7", &s), 0);
    ck_assert_int_eq(s.kind, SECRET_PLAIN); /* prefix is case-sensitive, as in PostgreSQL */
    secret_clear(&s);
    ck_assert_int_eq(secret_parse("md599D7714169587BA382241135A9F425E7", &s), 0);
    ck_assert_int_eq(s.kind, SECRET_MD5);
    ck_assert_str_eq(s.md5, PG_MD5U); /* hex folded to lower case */
    secret_clear(&s);
    ck_assert_int_eq(secret_parse("md5short", &s), 0);
    ck_assert_int_eq(s.kind, SECRET_PLAIN);
    ck_assert_str_eq(s.plain, "md5short");
    secret_clear(&s);
    ck_assert_ptr_null(s.plain);
    ck_assert_int_eq(secret_parse("", &s), 0);
    ck_assert_int_eq(s.kind, SECRET_PLAIN);
    secret_clear(&s);
}
END_TEST

static void assert_password(const char *stored, const char *user, const char *good)
{
    struct secret s;

    ck_assert_int_eq(secret_parse(stored, &s), 0);
    ck_assert_msg(secret_check_password(&s, user, good), "%s rejected its password", stored);
    ck_assert(!secret_check_password(&s, user, "wrong"));
    ck_assert(!secret_check_password(&s, user, ""));
    ck_assert(!secret_check_password(&s, user, NULL));
    secret_clear(&s);
}

START_TEST(test_check_password_pg_verifiers)
{
    assert_password(PG_S1, "s1", PG_S1_PASSWORD);
    assert_password(PG_S2, "s2", PG_S2_PASSWORD);
    assert_password(PG_S3, "s3", PG_S3_PASSWORD);
    assert_password(PG_MD5U, "md5u", "x");
    assert_password(PG_M2, "m2", "secret pass");
    assert_password("plain secret", "u", "plain secret");

    struct secret s;
    ck_assert_int_eq(secret_parse(PG_MD5U, &s), 0);
    ck_assert(!secret_check_password(&s, "other_user", "x")); /* md5 is salted by user name */
    secret_clear(&s);
    ck_assert_int_eq(secret_parse("abc", &s), 0);
    ck_assert(!secret_check_password(&s, "u", "abcd"));
    ck_assert(!secret_check_password(&s, "u", "ab"));
    secret_clear(&s);
    memset(&s, 0, sizeof(s));
    ck_assert(!secret_check_password(&s, "u", ""));
}
END_TEST

START_TEST(test_md5_response_vectors)
{
    /* Expected values computed by PostgreSQL:
       SELECT md5(convert_to(md5('x'||'md5u'),'UTF8') || '\x01020304'::bytea) and
       SELECT md5(convert_to(md5('secret pass'||'m2'),'UTF8') || '\xdeadbeef'::bytea). */
    const uint8_t salt1[4] = {1, 2, 3, 4}, salt2[4] = {0xde, 0xad, 0xbe, 0xef};
    struct secret md5u, m2, plain;
    char out[36];

    ck_assert_int_eq(secret_parse(PG_MD5U, &md5u), 0);
    ck_assert_int_eq(secret_parse(PG_M2, &m2), 0);
    ck_assert_int_eq(secret_parse("x", &plain), 0);
    ck_assert_int_eq(secret_md5_response(&md5u, "md5u", salt1, out), 0);
    ck_assert_str_eq(out, "md5a072eac5ce279ad5c4065c4da3840f9a");
    ck_assert_int_eq(secret_md5_response(&plain, "md5u", salt1, out), 0);
    ck_assert_str_eq(out, "md5a072eac5ce279ad5c4065c4da3840f9a");
    ck_assert_int_eq(secret_md5_response(&m2, "m2", salt2, out), 0);
    ck_assert_str_eq(out, "md55c5842146153d6b8d773b2e53e8e0958");

    ck_assert(secret_check_md5(&md5u, "md5u", salt1, "md5a072eac5ce279ad5c4065c4da3840f9a"));
    ck_assert(secret_check_md5(&plain, "md5u", salt1, "md5a072eac5ce279ad5c4065c4da3840f9a"));
    ck_assert(!secret_check_md5(&md5u, "md5u", salt2, "md5a072eac5ce279ad5c4065c4da3840f9a"));
    ck_assert(!secret_check_md5(&plain, "m2", salt1, "md5a072eac5ce279ad5c4065c4da3840f9a"));
    ck_assert(!secret_check_md5(&md5u, "md5u", salt1, "md5a072eac5ce279ad5c4065c4da3840f9b"));
    ck_assert(!secret_check_md5(&md5u, "md5u", salt1, "md5a072eac5ce279ad5c4065c4da3840f9"));
    ck_assert(!secret_check_md5(&md5u, "md5u", salt1, ""));
    ck_assert(!secret_check_md5(&md5u, "md5u", salt1, NULL));
    secret_clear(&md5u);
    secret_clear(&m2);
    secret_clear(&plain);
}
END_TEST

START_TEST(test_md5_from_scram_impossible)
{
    const uint8_t salt[4] = {1, 2, 3, 4};
    struct secret s;
    char out[36];

    ck_assert_int_eq(secret_parse(PG_S1, &s), 0);
    ck_assert_int_eq(secret_md5_response(&s, "s1", salt, out), -1);
    ck_assert(!secret_check_md5(&s, "s1", salt, "md5a072eac5ce279ad5c4065c4da3840f9a"));
    secret_clear(&s);
}
END_TEST

START_TEST(test_make_scram_reproduces_pg)
{
    uint8_t salt[16];
    char out[SECRET_SCRAM_MAX_TEXT];

    ck_assert_int_eq(secret_b64_decode("DL126aY+IINEgniUngAzAw==", 24, salt, sizeof(salt)), 16);
    ck_assert_int_eq(secret_make_scram_salt("x", 4096, salt, 16, out, sizeof(out)),
                     (int) strlen(PG_S1));
    ck_assert_str_eq(out, PG_S1);
    ck_assert_int_eq(secret_b64_decode("SghW6LJN9RXpQARE1hPWZg==", 24, salt, sizeof(salt)), 16);
    ck_assert_int_eq(secret_make_scram_salt(PG_S3_PASSWORD, 4096, salt, 16, out, sizeof(out)),
                     (int) strlen(PG_S3));
    ck_assert_str_eq(out, PG_S3);
    ck_assert_int_eq(secret_make_scram_salt("x", 4096, salt, 16, out, 50), -1);
    ck_assert_int_eq(secret_make_scram_salt("x", 0, salt, 16, out, sizeof(out)), -1);
    ck_assert_int_eq(secret_make_scram_salt("x", 1, salt, 0, out, sizeof(out)), -1);
}
END_TEST

START_TEST(test_make_scram_random)
{
    char a[SECRET_SCRAM_MAX_TEXT], b[SECRET_SCRAM_MAX_TEXT];
    struct secret s;

    ck_assert_int_gt(secret_make_scram("hunter2", 4096, a, sizeof(a)), 0);
    ck_assert_int_gt(secret_make_scram("hunter2", 4096, b, sizeof(b)), 0);
    ck_assert_str_ne(a, b); /* fresh salt each time */
    ck_assert_int_eq(strncmp(a, "SCRAM-SHA-256$4096:", 19), 0);
    ck_assert_int_eq(secret_parse(a, &s), 0);
    ck_assert_int_eq(s.kind, SECRET_SCRAM);
    ck_assert_uint_eq(s.scram.salt_len, 16);
    ck_assert(secret_check_password(&s, "anyone", "hunter2"));
    ck_assert(!secret_check_password(&s, "anyone", "hunter3"));
    secret_clear(&s);
}
END_TEST

static Suite *secret_suite(void)
{
    Suite *s = suite_create("secret");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_b64_roundtrip);
    tcase_add_test(tc, test_b64_strict);
    tcase_add_test(tc, test_parse_scram);
    tcase_add_test(tc, test_parse_malformed);
    tcase_add_test(tc, test_parse_md5_plain);
    tcase_add_test(tc, test_check_password_pg_verifiers);
    tcase_add_test(tc, test_md5_response_vectors);
    tcase_add_test(tc, test_md5_from_scram_impossible);
    tcase_add_test(tc, test_make_scram_reproduces_pg);
    tcase_add_test(tc, test_make_scram_random);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(secret_suite());
}
