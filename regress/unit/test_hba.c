/*
 * test_hba: Check suite for the hba module: parsing (comments, quoting, comma lists, every error
 * with its line number), matching by connection type (local, host, hostssl, hostnossl), database,
 * user, IPv4/IPv6 addresses and CIDR prefixes at their edges, first match wins, no match rejects.
 */
#include "pgtide/hba.h"
#include "unit.h"

#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct sockaddr_storage ss;

/* A sockaddr for a textual v4 or v6 address (static storage, valid until the next call). */
static const struct sockaddr *sa(const char *text)
{
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *) &ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
    } else {
        ck_assert_int_eq(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
        in6->sin6_family = AF_INET6;
    }
    return (const struct sockaddr *) &ss;
}

static struct hba *parse_ok(const char *text)
{
    char err[256] = "";
    struct hba *h = hba_parse(text, "hba.conf", err, sizeof(err));

    ck_assert_msg(h != NULL, "%s", err);
    return h;
}

static void assert_error(const char *text, const char *expect)
{
    char err[256] = "";
    struct hba *h = hba_parse(text, "hba.conf", err, sizeof(err));

    ck_assert_msg(h == NULL, "accepted: %s", text);
    ck_assert_str_eq(err, expect);
}

START_TEST(test_methods)
{
    enum hba_method m;
    const char *names[] = {"reject", "trust", "md5", "scram-sha-256", "password", "cert"};
    const enum hba_method want[] = {HBA_REJECT, HBA_TRUST,    HBA_MD5,
                                    HBA_SCRAM,  HBA_PASSWORD, HBA_CERT};
    for (int i = 0; i < 6; i++) {
        ck_assert(hba_method_parse(names[i], &m));
        ck_assert_int_eq(m, want[i]);
        ck_assert_str_eq(hba_method_name(want[i]), names[i]);
    }
    ck_assert(hba_method_parse("plain", &m));
    ck_assert_int_eq(m, HBA_PASSWORD);
    ck_assert(!hba_method_parse("scram", &m));
    ck_assert(!hba_method_parse("MD5", &m));
    ck_assert(!hba_method_parse("", &m));
}
END_TEST

START_TEST(test_parse_errors)
{
    assert_error("# ok\nlocal all all trust\nhst all all all trust\n",
                 "hba.conf:3: invalid connection type (local, host, hostssl, hostnossl)");
    assert_error("local all all\n", "hba.conf:1: expected: local DATABASE USER METHOD");
    assert_error("\n\nhost all all trust\n",
                 "hba.conf:3: expected: TYPE DATABASE USER ADDRESS METHOD");
    assert_error("host all all 10.0.0.0/33 trust", "hba.conf:1: invalid CIDR mask");
    assert_error("host all all ::1/129 trust", "hba.conf:1: invalid CIDR mask");
    assert_error("host all all 10.0.0.0/ trust", "hba.conf:1: invalid CIDR mask");
    assert_error("host all all 10.0.0.0/8x trust", "hba.conf:1: invalid CIDR mask");
    assert_error("host all all 10.0.0.256/8 trust",
                 "hba.conf:1: invalid IP address (host names, samehost and samenet are not "
                 "supported)");
    assert_error("host all all example.com trust",
                 "hba.conf:1: invalid IP address (host names, samehost and samenet are not "
                 "supported)");
    assert_error("host all +admins all md5", "hba.conf:1: group names (+group) are not supported");
    assert_error("host all bob,+admins all md5",
                 "hba.conf:1: group names (+group) are not supported");
    assert_error("local @dbs all md5", "hba.conf:1: file inclusion (@file) is not supported");
    assert_error("local replication all trust",
                 "hba.conf:1: keyword not supported (samerole, samegroup, replication)");
    assert_error("local all all gss",
                 "hba.conf:1: invalid authentication method (trust, reject, md5, scram-sha-256, "
                 "password, cert)");
    assert_error("local all all plain",
                 "hba.conf:1: invalid authentication method (trust, reject, md5, scram-sha-256, "
                 "password, cert)");
    assert_error("host all all all cert",
                 "hba.conf:1: cert authentication is only supported on hostssl connections");
    assert_error("hostssl all all all cert clientcert=verify-full",
                 "hba.conf:1: authentication options are not supported");
    assert_error("host all all 10.0.0.0 255.0.0.0 md5",
                 "hba.conf:1: extra fields (an address with a separate mask is not supported: "
                 "use CIDR)");
    assert_error("host \"all all all md5", "hba.conf:1: unterminated quoted string");
    assert_error("host a,,b all all md5", "hba.conf:1: empty name in list");
    assert_error("host \"\" all all md5", "hba.conf:1: empty name in list");
    assert_error("hostgssenc all all all md5",
                 "hba.conf:1: GSSAPI connection types are not supported");
}
END_TEST

START_TEST(test_parse_ok)
{
    struct hba *h = parse_ok("# comment only\n"
                             "\n"
                             "   \t\n"
                             "local all all trust # trailing comment\n"
                             "host\tapp,\"my db\" alice,\"all\" 10.1.0.0/16 scram-sha-256\r\n"
                             "hostssl all all ::/0 cert");
    ck_assert_int_eq(hba_count(h), 3);
    ck_assert_int_eq(hba_match(h, false, false, sa("10.1.2.3"), "my db", "alice"), HBA_SCRAM);
    /* quoted "all" is a user called all, not the keyword */
    ck_assert_int_eq(hba_match(h, false, false, sa("10.1.2.3"), "app", "all"), HBA_SCRAM);
    ck_assert_int_eq(hba_match(h, false, false, sa("10.1.2.3"), "app", "bob"), HBA_REJECT);
    ck_assert_int_eq(hba_match_line(h, false, false, sa("10.1.2.3"), "app", "alice"), 5);
    ck_assert_int_eq(hba_match_line(h, false, false, sa("10.1.2.3"), "app", "bob"), 0);
    hba_free(h);

    h = parse_ok("");
    ck_assert_int_eq(hba_count(h), 0);
    ck_assert_int_eq(hba_match(h, true, false, NULL, "db", "u"), HBA_REJECT);
    hba_free(h);
    hba_free(NULL);

    h = parse_ok("local \"we\"\"ird\" all md5");
    ck_assert_int_eq(hba_match(h, true, false, NULL, "we\"ird", "u"), HBA_MD5);
    hba_free(h);
}
END_TEST

START_TEST(test_match_type)
{
    struct hba *h = parse_ok("local all all trust\n"
                             "hostssl all all all scram-sha-256\n"
                             "hostnossl all all all md5\n");
    ck_assert_int_eq(hba_match(h, true, false, NULL, "db", "u"), HBA_TRUST);
    ck_assert_int_eq(hba_match(h, false, true, sa("1.2.3.4"), "db", "u"), HBA_SCRAM);
    ck_assert_int_eq(hba_match(h, false, false, sa("1.2.3.4"), "db", "u"), HBA_MD5);
    ck_assert_int_eq(hba_match(h, false, false, NULL, "db", "u"), HBA_MD5); /* address "all" */
    hba_free(h);

    h = parse_ok("host all all 127.0.0.1/32 password\n");
    ck_assert_int_eq(hba_match(h, true, false, NULL, "db", "u"), HBA_REJECT); /* not local */
    ck_assert_int_eq(hba_match(h, false, true, sa("127.0.0.1"), "db", "u"), HBA_PASSWORD);
    ck_assert_int_eq(hba_match(h, false, false, sa("127.0.0.1"), "db", "u"), HBA_PASSWORD);
    ck_assert_int_eq(hba_match(h, false, false, NULL, "db", "u"), HBA_REJECT);
    hba_free(h);
}
END_TEST

START_TEST(test_match_db_user)
{
    struct hba *h = parse_ok("local sameuser all md5\n"
                             "local app,reports alice,bob scram-sha-256\n"
                             "local all carol trust\n");
    ck_assert_int_eq(hba_match(h, true, false, NULL, "alice", "alice"), HBA_MD5);
    ck_assert_int_eq(hba_match(h, true, false, NULL, "reports", "bob"), HBA_SCRAM);
    ck_assert_int_eq(hba_match(h, true, false, NULL, "app", "alice"), HBA_SCRAM);
    ck_assert_int_eq(hba_match(h, true, false, NULL, "App", "alice"), HBA_REJECT);
    ck_assert_int_eq(hba_match(h, true, false, NULL, "other", "alice"), HBA_REJECT);
    ck_assert_int_eq(hba_match(h, true, false, NULL, "other", "carol"), HBA_TRUST);
    ck_assert_int_eq(hba_match(h, true, false, NULL, "app", "dave"), HBA_REJECT);
    hba_free(h);
}
END_TEST

START_TEST(test_match_cidr_v4)
{
    struct hba *h = parse_ok("host all all 192.168.1.128/25 trust\n"
                             "host all all 10.0.0.0/8 md5\n"
                             "host all all 172.16.5.4 password\n"
                             "host all all 0.0.0.0/0 reject\n");
    ck_assert_int_eq(hba_match(h, false, false, sa("192.168.1.128"), "d", "u"), HBA_TRUST);
    ck_assert_int_eq(hba_match(h, false, false, sa("192.168.1.255"), "d", "u"), HBA_TRUST);
    ck_assert_int_eq(hba_match(h, false, false, sa("192.168.1.127"), "d", "u"), HBA_REJECT);
    ck_assert_int_eq(hba_match_line(h, false, false, sa("192.168.1.127"), "d", "u"), 4);
    ck_assert_int_eq(hba_match(h, false, false, sa("10.255.255.255"), "d", "u"), HBA_MD5);
    ck_assert_int_eq(hba_match(h, false, false, sa("11.0.0.0"), "d", "u"), HBA_REJECT);
    ck_assert_int_eq(hba_match(h, false, false, sa("9.255.255.255"), "d", "u"), HBA_REJECT);
    ck_assert_int_eq(hba_match(h, false, false, sa("172.16.5.4"), "d", "u"), HBA_PASSWORD);
    ck_assert_int_eq(hba_match(h, false, false, sa("172.16.5.5"), "d", "u"), HBA_REJECT);
    /* IPv4-mapped IPv6 clients match IPv4 rules */
    ck_assert_int_eq(hba_match(h, false, false, sa("::ffff:10.1.2.3"), "d", "u"), HBA_MD5);
    /* but plain IPv6 does not match 0.0.0.0/0 */
    ck_assert_int_eq(hba_match_line(h, false, false, sa("2001:db8::1"), "d", "u"), 0);
    hba_free(h);

    h = parse_ok("host all all 10.0.0.1/31 trust\n");
    ck_assert_int_eq(hba_match(h, false, false, sa("10.0.0.0"), "d", "u"), HBA_TRUST);
    ck_assert_int_eq(hba_match(h, false, false, sa("10.0.0.1"), "d", "u"), HBA_TRUST);
    ck_assert_int_eq(hba_match(h, false, false, sa("10.0.0.2"), "d", "u"), HBA_REJECT);
    hba_free(h);
}
END_TEST

START_TEST(test_match_cidr_v6)
{
    struct hba *h = parse_ok("host all all 2001:db8::/32 scram-sha-256\n"
                             "host all all ::1/128 trust\n"
                             "host all all fe80::/10 md5\n"
                             "host all all 2001:db9::/127 password\n"
                             "host all all ::/0 reject\n");
    ck_assert_int_eq(hba_match(h, false, false, sa("2001:db8:ffff::1"), "d", "u"), HBA_SCRAM);
    ck_assert_int_eq(hba_match(h, false, false, sa("2001:db9::5"), "d", "u"), HBA_REJECT);
    ck_assert_int_eq(hba_match(h, false, false, sa("::1"), "d", "u"), HBA_TRUST);
    ck_assert_int_eq(hba_match(h, false, false, sa("::2"), "d", "u"), HBA_REJECT);
    ck_assert_int_eq(hba_match(h, false, false, sa("febf:ffff::1"), "d", "u"), HBA_MD5);
    ck_assert_int_eq(hba_match(h, false, false, sa("fec0::1"), "d", "u"), HBA_REJECT);
    ck_assert_int_eq(hba_match(h, false, false, sa("2001:db9::1"), "d", "u"), HBA_PASSWORD);
    ck_assert_int_eq(hba_match(h, false, false, sa("2001:db9::2"), "d", "u"), HBA_REJECT);
    /* IPv4 client does not match IPv6 rules */
    ck_assert_int_eq(hba_match_line(h, false, false, sa("127.0.0.1"), "d", "u"), 0);
    hba_free(h);
}
END_TEST

START_TEST(test_first_match_wins)
{
    struct hba *h = parse_ok("host all alice all reject\n"
                             "host all all 127.0.0.0/8 trust\n"
                             "host all all all md5\n");
    ck_assert_int_eq(hba_match(h, false, false, sa("127.0.0.1"), "d", "alice"), HBA_REJECT);
    ck_assert_int_eq(hba_match(h, false, false, sa("127.0.0.1"), "d", "bob"), HBA_TRUST);
    ck_assert_int_eq(hba_match(h, false, false, sa("8.8.8.8"), "d", "bob"), HBA_MD5);
    ck_assert_int_eq(hba_match(h, true, false, NULL, "d", "bob"), HBA_REJECT); /* no local rule */
    hba_free(h);
}
END_TEST

START_TEST(test_load)
{
    char path[] = "/tmp/test_hba_XXXXXX", err[256], expect[300];
    int fd = mkstemp(path);
    const char *good = "local all all trust\nhost all all all md5\n";

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, good, strlen(good)), (ssize_t) strlen(good));
    close(fd);
    struct hba *h = hba_load(path, err, sizeof(err));
    ck_assert_msg(h != NULL, "%s", err);
    ck_assert_int_eq(hba_count(h), 2);
    hba_free(h);
    fd = open(path, O_WRONLY | O_APPEND);
    ck_assert_int_eq(write(fd, "local all all nope\n", 19), 19);
    close(fd);
    ck_assert_ptr_null(hba_load(path, err, sizeof(err)));
    snprintf(expect, sizeof(expect),
             "%s:3: invalid authentication method (trust, reject, md5, scram-sha-256, "
             "password, cert)",
             path);
    ck_assert_str_eq(err, expect);
    unlink(path);
    ck_assert_ptr_null(hba_load("/nonexistent/hba.conf", err, sizeof(err)));
    ck_assert_str_eq(err, "/nonexistent/hba.conf: No such file or directory");
}
END_TEST

static Suite *hba_suite(void)
{
    Suite *s = suite_create("hba");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_methods);
    tcase_add_test(tc, test_parse_errors);
    tcase_add_test(tc, test_parse_ok);
    tcase_add_test(tc, test_match_type);
    tcase_add_test(tc, test_match_db_user);
    tcase_add_test(tc, test_match_cidr_v4);
    tcase_add_test(tc, test_match_cidr_v6);
    tcase_add_test(tc, test_first_match_wins);
    tcase_add_test(tc, test_load);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(hba_suite());
}
