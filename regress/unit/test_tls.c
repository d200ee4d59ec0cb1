/*
 * Unit tests for the tls module: the self-signed certificate (files, modes, names, validity,
 * no overwrite), server and client contexts driven through real in-memory handshakes over a
 * non-blocking socketpair (protocol floor, TLS 1.1 refusal, host name checks, client
 * certificates and their verified CN), channel binding data, and error reporting.
 */
#include "pgtide/tls.h"

#include "pgtide/config.h"
#include "unit.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static char dir[64];
static char cert_path[128], key_path[128];   /* server pair */
static char ccert_path[128], ckey_path[128]; /* client pair (another self-signed) */
static char err[1024];

static void make_pairs(void)
{
    snprintf(dir, sizeof(dir), "/tmp/pgtide-test-tls-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cert_path, sizeof(cert_path), "%s/server.crt", dir);
    snprintf(key_path, sizeof(key_path), "%s/server.key", dir);
    snprintf(ccert_path, sizeof(ccert_path), "%s/client.crt", dir);
    snprintf(ckey_path, sizeof(ckey_path), "%s/client.key", dir);
    ck_assert_msg(tls_make_self_signed(cert_path, key_path, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(tls_make_self_signed(ccert_path, ckey_path, err, sizeof(err)) == 0, "%s", err);
}

static void remove_pairs(void)
{
    unlink(cert_path);
    unlink(key_path);
    unlink(ccert_path);
    unlink(ckey_path);
    rmdir(dir);
}

/* Result of driving both ends of a handshake. */
struct hs {
    SSL *srv, *cli;
    int srv_ok, cli_ok;             /* 1 done, -1 failed, 0 unfinished */
    unsigned long srv_err, cli_err; /* first OpenSSL error of a failed side */
};

static int step(SSL *ssl, int *state, unsigned long *e)
{
    if (*state != 0)
        return 0;
    int r = SSL_do_handshake(ssl);
    if (r == 1) {
        *state = 1;
        return 1;
    }
    int why = SSL_get_error(ssl, r);
    if (why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE)
        return 0;
    *state = -1;
    *e = ERR_peek_error();
    ERR_clear_error();
    return 1;
}

/* Runs a handshake between fresh SSLs of the two contexts; host (may be NULL) is set on the
   client with the given sslmode. The caller frees h->srv and h->cli. */
static void handshake(SSL_CTX *sctx, SSL_CTX *cctx, const char *host, int sslmode, struct hs *h)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(fcntl(sv[i], F_SETFL, O_NONBLOCK), 0);
    memset(h, 0, sizeof(*h));
    h->srv = SSL_new(sctx);
    h->cli = SSL_new(cctx);
    ck_assert(h->srv != NULL && h->cli != NULL);
    ck_assert_int_eq(SSL_set_fd(h->srv, sv[0]), 1);
    ck_assert_int_eq(SSL_set_fd(h->cli, sv[1]), 1);
    SSL_set_accept_state(h->srv);
    SSL_set_connect_state(h->cli);
    if (host != NULL)
        ck_assert_int_eq(tls_client_set_host(h->cli, host, sslmode), 0);
    ERR_clear_error();
    int idle = 0;
    for (int i = 0; i < 10000 && idle < 50; i++) {
        int progressed = step(h->cli, &h->cli_ok, &h->cli_err);
        progressed |= step(h->srv, &h->srv_ok, &h->srv_err);
        if (h->cli_ok != 0 && h->srv_ok != 0)
            break;
        idle = progressed ? 0 : idle + 1;
    }
    /* Closing the sockets wakes a side still waiting after the other gave up. */
    if (h->cli_ok == 1 && h->srv_ok == 0) {
        char b;
        (void) SSL_read(h->srv, &b, 1);
    }
}

static void hs_free(struct hs *h)
{
    int fs = SSL_get_fd(h->srv), fc = SSL_get_fd(h->cli);
    SSL_free(h->srv);
    SSL_free(h->cli);
    close(fs);
    close(fc);
}

static SSL_CTX *server_ctx(const char *ca, int mode)
{
    SSL_CTX *ctx = tls_server_ctx_new(cert_path, key_path, ca, mode, err, sizeof(err));
    ck_assert_msg(ctx != NULL, "%s", err);
    return ctx;
}

static SSL_CTX *client_ctx(const char *ca, int mode)
{
    SSL_CTX *ctx = tls_client_ctx_new(ca, mode, err, sizeof(err));
    ck_assert_msg(ctx != NULL, "%s", err);
    return ctx;
}

START_TEST(test_self_signed_files)
{
    make_pairs();
    struct stat st;
    ck_assert_int_eq(stat(key_path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    ck_assert_int_eq(stat(cert_path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0077, 0044); /* readable certificate */

    FILE *fp = fopen(cert_path, "r");
    ck_assert_ptr_nonnull(fp);
    X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    ck_assert_ptr_nonnull(x);
    char cn[64];
    ck_assert_int_gt(
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)), 0);
    ck_assert_str_eq(cn, "pgtide");
    ck_assert_int_eq(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    ck_assert_int_eq(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    ck_assert_int_eq(X509_check_host(x, "example.com", 0, 0, NULL), 0);
    int days = 0, secs = 0;
    ck_assert_int_eq(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)), 1);
    ck_assert_int_ge(days, 3649);
    ck_assert_int_le(days, 3651);
    ck_assert_int_eq(X509_cmp_current_time(X509_get0_notBefore(x)), -1);
    ck_assert_int_eq(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
    X509_free(x);

    /* A second call keeps the existing files. */
    unsigned char before[4096], after[4096];
    fp = fopen(cert_path, "r");
    size_t n1 = fread(before, 1, sizeof(before), fp);
    fclose(fp);
    ck_assert_int_eq(tls_make_self_signed(cert_path, key_path, err, sizeof(err)), 0);
    fp = fopen(cert_path, "r");
    size_t n2 = fread(after, 1, sizeof(after), fp);
    fclose(fp);
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(before, after, n1) == 0);

    /* A lone certificate is not silently replaced. */
    ck_assert_int_eq(unlink(ckey_path), 0);
    ck_assert_int_eq(tls_make_self_signed(ccert_path, ckey_path, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "refusing to overwrite"));
    ck_assert_int_eq(access(ckey_path, F_OK), -1);

    /* No leftover temp files. */
    char tmp[200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", key_path, (long) getpid());
    ck_assert_int_eq(access(tmp, F_OK), -1);
    remove_pairs();
}
END_TEST

START_TEST(test_handshake_and_binding)
{
    make_pairs();
    SSL_CTX *sctx = server_ctx(NULL, SSLMODE_PREFER);
    SSL_CTX *cctx = client_ctx(cert_path, SSLMODE_VERIFY_FULL);
    struct hs h;
    handshake(sctx, cctx, "localhost", SSLMODE_VERIFY_FULL, &h);
    ck_assert_msg(h.cli_ok == 1 && h.srv_ok == 1, "client %d server %d: %s", h.cli_ok, h.srv_ok,
                  ERR_error_string(h.cli_err ? h.cli_err : h.srv_err, NULL));
    ck_assert_int_ge(SSL_version(h.srv), TLS1_2_VERSION);
    ck_assert_int_ge(SSL_version(h.cli), TLS1_2_VERSION);
    ck_assert_int_eq(SSL_get_verify_result(h.cli), X509_V_OK);

    /* The server's binding data equals SHA-256 over the certificate the client received. */
    uint8_t srv_cb[64], cli_cb[EVP_MAX_MD_SIZE];
    unsigned int cli_len = 0;
    int srv_len = tls_server_end_point(h.srv, srv_cb);
    ck_assert_int_eq(srv_len, 32);
    X509 *peer = SSL_get0_peer_certificate(h.cli);
    ck_assert_ptr_nonnull(peer);
    ck_assert_int_eq(X509_digest(peer, EVP_sha256(), cli_cb, &cli_len), 1);
    ck_assert_uint_eq(cli_len, 32);
    ck_assert(memcmp(srv_cb, cli_cb, 32) == 0);

    /* No client certificate was asked for, so there is no CN to read. */
    char cn[64];
    ck_assert_int_eq(tls_peer_cn(h.srv, cn, sizeof(cn)), -1);
    /* The client side has no certificate of its own. */
    ck_assert_int_eq(tls_server_end_point(h.cli, srv_cb), -1);
    hs_free(&h);

    /* An IP address is checked against the IP SAN. */
    handshake(sctx, cctx, "127.0.0.1", SSLMODE_VERIFY_FULL, &h);
    ck_assert_int_eq(h.cli_ok, 1);
    hs_free(&h);

    /* verify-full refuses a name the certificate does not carry ... */
    handshake(sctx, cctx, "db.example.com", SSLMODE_VERIFY_FULL, &h);
    ck_assert_int_eq(h.cli_ok, -1);
    ck_assert_int_eq(SSL_get_verify_result(h.cli), X509_V_ERR_HOSTNAME_MISMATCH);
    hs_free(&h);

    /* ... and verify-ca refuses a certificate from another CA. */
    SSL_CTX *other = client_ctx(ccert_path, SSLMODE_VERIFY_CA);
    handshake(sctx, other, "localhost", SSLMODE_VERIFY_CA, &h);
    ck_assert_int_eq(h.cli_ok, -1);
    ck_assert_int_ne(SSL_get_verify_result(h.cli), X509_V_OK);
    hs_free(&h);
    SSL_CTX_free(other);

    /* require does not verify at all. */
    SSL_CTX *req = client_ctx(NULL, SSLMODE_REQUIRE);
    handshake(sctx, req, "db.example.com", SSLMODE_REQUIRE, &h);
    ck_assert_int_eq(h.cli_ok, 1);
    hs_free(&h);
    SSL_CTX_free(req);

    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    remove_pairs();
}
END_TEST

/* A client context that would happily speak old protocols, capped at max_version. */
static SSL_CTX *legacy_client(int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(ctx);
    SSL_CTX_set_security_level(ctx, 0);
    ck_assert_int_eq(SSL_CTX_set_cipher_list(ctx, "ALL:@SECLEVEL=0"), 1);
    ck_assert_int_eq(SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION), 1);
    ck_assert_int_eq(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return ctx;
}

START_TEST(test_old_protocols_refused)
{
    make_pairs();
    SSL_CTX *sctx = server_ctx(NULL, SSLMODE_PREFER);
    struct hs h;

    SSL_CTX *old = legacy_client(TLS1_1_VERSION);
    handshake(sctx, old, NULL, SSLMODE_PREFER, &h);
    ck_assert_int_eq(h.srv_ok, -1);
    ck_assert_int_ne(h.cli_ok, 1);
    ck_assert_int_eq(ERR_GET_REASON(h.srv_err), SSL_R_UNSUPPORTED_PROTOCOL);
    hs_free(&h);
    SSL_CTX_free(old);

    /* The same client capped at TLS 1.2 gets in: the refusal above was about the version. */
    SSL_CTX *v12 = legacy_client(TLS1_2_VERSION);
    handshake(sctx, v12, NULL, SSLMODE_PREFER, &h);
    ck_assert_int_eq(h.srv_ok, 1);
    ck_assert_int_eq(h.cli_ok, 1);
    ck_assert_int_eq(SSL_version(h.srv), TLS1_2_VERSION);
    /* TLS 1.2 + ECDSA-SHA256 certificate: binding data is still SHA-256 sized. */
    uint8_t cb[64];
    ck_assert_int_eq(tls_server_end_point(h.srv, cb), 32);
    hs_free(&h);
    SSL_CTX_free(v12);
    SSL_CTX_free(sctx);
    remove_pairs();
}
END_TEST

/* A client context presenting the given certificate. */
static SSL_CTX *client_with_cert(const char *crt, const char *key)
{
    SSL_CTX *ctx = client_ctx(NULL, SSLMODE_REQUIRE);
    ck_assert_int_eq(SSL_CTX_use_certificate_file(ctx, crt, SSL_FILETYPE_PEM), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
    return ctx;
}

START_TEST(test_client_certificates)
{
    make_pairs();
    /* The server trusts the client pair's certificate as its CA. */
    SSL_CTX *lenient = server_ctx(ccert_path, SSLMODE_PREFER);
    SSL_CTX *strict = server_ctx(ccert_path, SSLMODE_VERIFY_CA);
    SSL_CTX *good = client_with_cert(ccert_path, ckey_path);
    SSL_CTX *wrong = client_with_cert(cert_path, key_path); /* not issued by that CA */
    SSL_CTX *none = client_ctx(NULL, SSLMODE_REQUIRE);
    struct hs h;
    char cn[64];

    handshake(lenient, good, NULL, SSLMODE_REQUIRE, &h);
    ck_assert(h.srv_ok == 1 && h.cli_ok == 1);
    ck_assert_int_eq(tls_peer_cn(h.srv, cn, sizeof(cn)), 0);
    ck_assert_str_eq(cn, "pgtide");
    ck_assert_int_eq(tls_peer_cn(h.srv, cn, 6), -1); /* "pgtide" needs 7 bytes */
    hs_free(&h);

    /* Lenient mode: an untrusted certificate does not break the handshake, but no CN. */
    handshake(lenient, wrong, NULL, SSLMODE_REQUIRE, &h);
    ck_assert(h.srv_ok == 1 && h.cli_ok == 1);
    ck_assert_ptr_nonnull(SSL_get0_peer_certificate(h.srv));
    ck_assert_int_ne(SSL_get_verify_result(h.srv), X509_V_OK);
    ck_assert_int_eq(tls_peer_cn(h.srv, cn, sizeof(cn)), -1);
    hs_free(&h);

    handshake(lenient, none, NULL, SSLMODE_REQUIRE, &h);
    ck_assert(h.srv_ok == 1 && h.cli_ok == 1);
    ck_assert_int_eq(tls_peer_cn(h.srv, cn, sizeof(cn)), -1);
    hs_free(&h);

    /* verify-ca: a valid certificate is required by the handshake itself. */
    handshake(strict, good, NULL, SSLMODE_REQUIRE, &h);
    ck_assert(h.srv_ok == 1 && h.cli_ok == 1);
    ck_assert_int_eq(tls_peer_cn(h.srv, cn, sizeof(cn)), 0);
    hs_free(&h);
    handshake(strict, wrong, NULL, SSLMODE_REQUIRE, &h);
    ck_assert_int_eq(h.srv_ok, -1);
    hs_free(&h);
    handshake(strict, none, NULL, SSLMODE_REQUIRE, &h);
    ck_assert_int_eq(h.srv_ok, -1);
    hs_free(&h);

    SSL_CTX_free(lenient);
    SSL_CTX_free(strict);
    SSL_CTX_free(good);
    SSL_CTX_free(wrong);
    SSL_CTX_free(none);
    remove_pairs();
}
END_TEST

START_TEST(test_context_errors)
{
    make_pairs();
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/nope.crt", dir);
    ck_assert_ptr_null(
        tls_server_ctx_new(missing, key_path, NULL, SSLMODE_PREFER, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, missing));
    ck_assert_ptr_null(
        tls_server_ctx_new(cert_path, ckey_path, NULL, SSLMODE_PREFER, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "does not match"));
    ck_assert_ptr_null(
        tls_server_ctx_new(cert_path, key_path, missing, SSLMODE_VERIFY_CA, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "CA file"));
    ck_assert_ptr_null(tls_client_ctx_new(missing, SSLMODE_VERIFY_CA, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, missing));
    /* The failures left nothing behind on the error queue. */
    ck_assert_uint_eq(ERR_peek_error(), 0);

    char buf[256];
    ck_assert_str_eq(tls_error_string(buf, sizeof(buf)), "no OpenSSL error");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_int_eq(SSL_CTX_use_certificate_file(ctx, missing, SSL_FILETYPE_PEM), 0);
    ck_assert_ptr_eq(tls_error_string(buf, sizeof(buf)), buf);
    ck_assert_str_ne(buf, "no OpenSSL error");
    ck_assert_ptr_nonnull(strstr(buf, "error:"));
    ck_assert_uint_eq(ERR_peek_error(), 0);
    SSL_CTX_free(ctx);

    SSL *ssl = SSL_new(server_ctx(NULL, SSLMODE_PREFER));
    ck_assert_int_eq(tls_client_set_host(ssl, "", SSLMODE_VERIFY_FULL), -1);
    SSL_CTX_free(SSL_get_SSL_CTX(ssl));
    SSL_free(ssl);
    remove_pairs();
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_self_signed_files);
    tcase_add_test(tc, test_handshake_and_binding);
    tcase_add_test(tc, test_old_protocols_refused);
    tcase_add_test(tc, test_client_certificates);
    tcase_add_test(tc, test_context_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(tls_suite());
}
