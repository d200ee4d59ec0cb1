/*
 * test_scram: Check suite for the scram module: the RFC 7677 test vector on the server side, a
 * client vector computed independently (Python hashlib/hmac) for PostgreSQL's empty user name,
 * full in-process exchanges with verifiers made by PostgreSQL 15 (password mode, then keys mode
 * with the ClientKey recovered from the first exchange), channel binding (PLUS, downgrade,
 * mismatch, 'p' without TLS), wrong passwords, unknown users, and malformed messages.
 */
#include "pgtide/scram.h"
#include "unit.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

/* RFC 7677 section 3 */
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE        RFC_CLIENT_NONCE RFC_SERVER_NONCE
#define RFC_SALT         "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_FIRST        "n,,n=user,r=" RFC_CLIENT_NONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=" RFC_SALT ",i=4096"
#define RFC_FINAL        "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* Verifiers made by PostgreSQL 15 (CREATE ROLE s1 PASSWORD 'x', s2 'correct horse battery
   staple'). */
#define PG_S1                                                                                      \
    "SCRAM-SHA-256$4096:DL126aY+IINEgniUngAzAw==$/GOqhTWzBs+poPqy8pXEqXgtPg97xyWdtkWnZgq2oT4=:"    \
    "27QhW6rqKvcGdmJomuxJsddkliVA2nX56on+VqwhB98="
#define PG_S2                                                                                      \
    "SCRAM-SHA-256$4096:+vK1DYjw+aAYvJQhDCDF2A==$+rnfbmTgQVZKqNWMnvHs2c8zey23sGj3YcBAVHRkQ8o=:"    \
    "MNYVYNRzUwrBA49n7Nel+lx1MR2sozb++LnPW3jnwRc="

static struct scram_keys keys_of(const char *text)
{
    struct secret s;
    struct scram_keys k;

    ck_assert_int_eq(secret_parse(text, &s), 0);
    ck_assert_int_eq(s.kind, SECRET_SCRAM);
    k = s.scram;
    secret_clear(&s);
    return k;
}

static struct scram_keys rfc_keys(void)
{
    struct scram_keys k;
    uint8_t salt[16];

    memset(&k, 0, sizeof(k));
    ck_assert_int_eq(secret_b64_decode(RFC_SALT, strlen(RFC_SALT), salt, sizeof(salt)), 16);
    memcpy(k.salt, salt, 16);
    k.salt_len = 16;
    k.iterations = 4096;
    ck_assert_int_eq(
        secret_scram_derive("pencil", salt, 16, 4096, NULL, k.stored_key, k.server_key), 0);
    return k;
}

static enum scram_result first(struct scram_server *s, const char *mech, const struct scram_keys *k,
                               const uint8_t *cb, size_t cblen, const char *msg, char *out,
                               size_t cap)
{
    size_t n = 0;
    enum scram_result r =
        scram_server_first(s, mech, k, cb, cblen, (const uint8_t *) msg, strlen(msg), out, cap, &n);
    if (r == SCRAM_CONTINUE)
        ck_assert_uint_eq(n, strlen(out));
    return r;
}

static enum scram_result final(struct scram_server *s, const char *msg, char *out, size_t cap)
{
    size_t n = 0;
    enum scram_result r = scram_server_final(s, (const uint8_t *) msg, strlen(msg), out, cap, &n);
    if (r == SCRAM_OK)
        ck_assert_uint_eq(n, strlen(out));
    else
        ck_assert_uint_eq(n, 0);
    return r;
}

START_TEST(test_rfc7677_server)
{
    struct scram_server s;
    struct scram_keys k = rfc_keys();
    char out[512];
    uint8_t ck[32], expect_ck[32];

    scram_server_init(&s, "user", NULL, 0);
    scram_server_set_nonce(&s, RFC_SERVER_NONCE);
    ck_assert_int_eq(first(&s, SCRAM_MECH, &k, NULL, 0, RFC_FIRST, out, sizeof(out)),
                     SCRAM_CONTINUE);
    ck_assert_str_eq(out, RFC_SERVER_FIRST);
    ck_assert(!scram_server_client_key(&s, ck));
    ck_assert_int_eq(final(&s, RFC_FINAL, out, sizeof(out)), SCRAM_OK);
    ck_assert_str_eq(out, RFC_SERVER_FINAL);
    ck_assert(scram_server_client_key(&s, ck));
    ck_assert_int_eq(secret_scram_derive("pencil", k.salt, 16, 4096, expect_ck, NULL, NULL), 0);
    ck_assert(memcmp(ck, expect_ck, 32) == 0);
    /* a second final is out of order */
    ck_assert_int_eq(final(&s, RFC_FINAL, out, sizeof(out)), SCRAM_PROTO);
    scram_server_clear(&s);
}
END_TEST

START_TEST(test_rfc7677_client)
{
    /* Same salt, nonces and password as RFC 7677 but with PostgreSQL's empty user name "n=";
       expected messages computed with Python's hashlib/hmac. */
    struct scram_client c;
    char out[512];
    size_t n;
    const char *sf = RFC_SERVER_FIRST;
    const char *sfin = "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=";

    ck_assert_int_eq(scram_client_init_password(&c, "pencil"), 0);
    scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
    ck_assert_int_eq(scram_client_first(&c, out, sizeof(out), &n), 0);
    ck_assert_str_eq(out, "n,,n=,r=" RFC_CLIENT_NONCE);
    ck_assert_uint_eq(n, strlen(out));
    ck_assert_int_eq(scram_client_final(&c, (const uint8_t *) sf, strlen(sf), out, sizeof(out), &n),
                     0);
    ck_assert_str_eq(out, "c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=");
    ck_assert_int_eq(scram_client_verify(&c, (const uint8_t *) sfin, strlen(sfin)), 0);
    scram_client_clear(&c);
    ck_assert_ptr_null(c.password);

    /* same exchange, a forged server signature is refused */
    ck_assert_int_eq(scram_client_init_password(&c, "pencil"), 0);
    scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
    ck_assert_int_eq(scram_client_first(&c, out, sizeof(out), &n), 0);
    ck_assert_int_eq(scram_client_final(&c, (const uint8_t *) sf, strlen(sf), out, sizeof(out), &n),
                     0);
    const char *forged = "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOh=";
    ck_assert_int_eq(scram_client_verify(&c, (const uint8_t *) forged, strlen(forged)), -1);
    scram_client_clear(&c);
}
END_TEST

/* Runs a whole exchange between c and a server holding k; returns the server's final result
   and fills client_key on success. */
static enum scram_result exchange(struct scram_client *c, const struct scram_keys *k,
                                  const char *mech, const uint8_t *cb, size_t cblen,
                                  uint8_t client_key[32])
{
    struct scram_server s;
    char m1[512], m2[512], m3[512], m4[512];
    size_t n1, n2, n3, n4;
    enum scram_result r;

    scram_server_init(&s, "s1", NULL, 0);
    ck_assert_int_eq(scram_client_first(c, m1, sizeof(m1), &n1), 0);
    r = scram_server_first(&s, mech, k, cb, cblen, (uint8_t *) m1, n1, m2, sizeof(m2), &n2);
    if (r != SCRAM_CONTINUE)
        goto out;
    if (scram_client_final(c, (uint8_t *) m2, n2, m3, sizeof(m3), &n3) != 0) {
        r = SCRAM_PROTO;
        goto out;
    }
    r = scram_server_final(&s, (uint8_t *) m3, n3, m4, sizeof(m4), &n4);
    if (r == SCRAM_OK) {
        ck_assert_int_eq(scram_client_verify(c, (uint8_t *) m4, n4), 0);
        ck_assert(scram_server_client_key(&s, client_key));
    }
out:
    scram_server_clear(&s);
    return r;
}

START_TEST(test_exchange_password_then_keys)
{
    struct scram_keys k = keys_of(PG_S1);
    struct scram_client c;
    uint8_t ck[32], ck2[32];

    ck_assert_int_eq(scram_client_init_password(&c, "x"), 0);
    ck_assert_int_eq(exchange(&c, &k, SCRAM_MECH, NULL, 0, ck), SCRAM_OK);
    scram_client_clear(&c);

    /* pgtide logs in to a backend holding the same verifier, with the recovered ClientKey */
    ck_assert_int_eq(scram_client_init_keys(&c, ck, &k), 0);
    ck_assert_int_eq(exchange(&c, &k, SCRAM_MECH, NULL, 0, ck2), SCRAM_OK);
    ck_assert(memcmp(ck, ck2, 32) == 0);
    scram_client_clear(&c);

    /* a ClientKey does not fit another user's verifier */
    struct scram_keys k2 = keys_of(PG_S2);
    ck_assert_int_eq(scram_client_init_keys(&c, ck, &k2), -1);
    scram_client_clear(&c);

    /* backend with another salt / iteration count than pgtide's verifier: clear failure */
    struct scram_keys other = k;
    other.salt[0] ^= 1;
    ck_assert_int_eq(scram_client_init_keys(&c, ck, &k), 0);
    ck_assert_int_eq(exchange(&c, &other, SCRAM_MECH, NULL, 0, ck2), SCRAM_PROTO);
    scram_client_clear(&c);
    other = k;
    other.iterations = 4097;
    ck_assert_int_eq(scram_client_init_keys(&c, ck, &k), 0);
    ck_assert_int_eq(exchange(&c, &other, SCRAM_MECH, NULL, 0, ck2), SCRAM_PROTO);
    scram_client_clear(&c);
}
END_TEST

START_TEST(test_exchange_wrong_password)
{
    struct scram_keys k = keys_of(PG_S2);
    struct scram_client c;
    uint8_t ck[32];

    ck_assert_int_eq(scram_client_init_password(&c, "correct horse battery stapler"), 0);
    ck_assert_int_eq(exchange(&c, &k, SCRAM_MECH, NULL, 0, ck), SCRAM_FAIL);
    scram_client_clear(&c);
    ck_assert_int_eq(scram_client_init_password(&c, "correct horse battery staple"), 0);
    ck_assert_int_eq(exchange(&c, &k, SCRAM_MECH, NULL, 0, ck), SCRAM_OK);
    scram_client_clear(&c);
}
END_TEST

START_TEST(test_unknown_user)
{
    struct scram_server s1, s2, s3;
    char out1[512], out2[512], out3[512];
    const char *cf = "n,,n=,r=abcdefghijklmnop";
    const uint8_t mk[4] = {1, 2, 3, 4};

    /* fake salt is stable per user for a given mock key, different between users */
    scram_server_init(&s1, "ghost", mk, sizeof(mk));
    scram_server_init(&s2, "ghost", mk, sizeof(mk));
    scram_server_init(&s3, "phantom", mk, sizeof(mk));
    ck_assert_int_eq(first(&s1, SCRAM_MECH, NULL, NULL, 0, cf, out1, sizeof(out1)), SCRAM_CONTINUE);
    ck_assert_int_eq(first(&s2, SCRAM_MECH, NULL, NULL, 0, cf, out2, sizeof(out2)), SCRAM_CONTINUE);
    ck_assert_int_eq(first(&s3, SCRAM_MECH, NULL, NULL, 0, cf, out3, sizeof(out3)), SCRAM_CONTINUE);
    ck_assert_str_eq(strstr(out1, ",s="), strstr(out2, ",s="));
    ck_assert_str_ne(strstr(out1, ",s="), strstr(out3, ",s="));
    ck_assert_ptr_nonnull(strstr(out1, ",i=4096"));
    scram_server_clear(&s2);
    scram_server_clear(&s3);

    /* the client runs to the end and gets an ordinary failure */
    struct scram_client c;
    char m1[512], m3[512], m4[512];
    size_t n1, n2, n3, n4;
    ck_assert_int_eq(scram_client_init_password(&c, "whatever"), 0);
    ck_assert_int_eq(scram_client_first(&c, m1, sizeof(m1), &n1), 0);
    scram_server_init(&s1, "ghost", mk, sizeof(mk));
    ck_assert_int_eq(scram_server_first(&s1, SCRAM_MECH, NULL, NULL, 0, (uint8_t *) m1, n1, out1,
                                        sizeof(out1), &n2),
                     SCRAM_CONTINUE);
    ck_assert_int_eq(scram_client_final(&c, (uint8_t *) out1, n2, m3, sizeof(m3), &n3), 0);
    ck_assert_int_eq(scram_server_final(&s1, (uint8_t *) m3, n3, m4, sizeof(m4), &n4), SCRAM_FAIL);
    uint8_t ck[32];
    ck_assert(!scram_server_client_key(&s1, ck));
    scram_server_clear(&s1);
    scram_client_clear(&c);
}
END_TEST

static const uint8_t cert_hash[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                      12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                      23, 24, 25, 26, 27, 28, 29, 30, 31};

/* Builds a channel-bound client-final for the RFC password by hand, binding to hash. */
static void plus_final(const char *server_first, const uint8_t *hash, size_t hlen, char *out,
                       size_t cap)
{
    struct scram_keys k = rfc_keys();
    uint8_t cbin[128], ck[32], sig[32], proof[32];
    char cb64[200], proof64[64], np[400], am[1024];
    size_t cblen = strlen("p=tls-server-end-point,,");
    const char *nonce = server_first + 2;
    size_t nlen = strcspn(nonce, ",");

    memcpy(cbin, "p=tls-server-end-point,,", cblen);
    memcpy(cbin + cblen, hash, hlen);
    ck_assert_int_ge(secret_b64_encode(cbin, cblen + hlen, cb64, sizeof(cb64)), 0);
    snprintf(np, sizeof(np), "c=%s,r=%.*s", cb64, (int) nlen, nonce);
    snprintf(am, sizeof(am), "n=,r=plusnonce,%s,%s", server_first, np);
    ck_assert_int_eq(secret_scram_derive("pencil", k.salt, 16, 4096, ck, NULL, NULL), 0);
    ck_assert_int_eq(secret_hmac(k.stored_key, 32, am, strlen(am), sig), 0);
    for (int i = 0; i < 32; i++)
        proof[i] = ck[i] ^ sig[i];
    ck_assert_int_ge(secret_b64_encode(proof, 32, proof64, sizeof(proof64)), 0);
    snprintf(out, cap, "%s,p=%s", np, proof64);
}

START_TEST(test_channel_binding)
{
    struct scram_keys k = rfc_keys();
    struct scram_server s;
    char out[512], fin[512];
    const char *pfirst = "p=tls-server-end-point,,n=,r=plusnonce";
    uint8_t other_hash[32];

    /* correct binding */
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH_PLUS, &k, cert_hash, 32, pfirst, out, sizeof(out)),
                     SCRAM_CONTINUE);
    plus_final(out, cert_hash, 32, fin, sizeof(fin));
    ck_assert_int_eq(final(&s, fin, out, sizeof(out)), SCRAM_OK);
    scram_server_clear(&s);

    /* binding to another certificate fails */
    memcpy(other_hash, cert_hash, 32);
    other_hash[31] = 99;
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH_PLUS, &k, cert_hash, 32, pfirst, out, sizeof(out)),
                     SCRAM_CONTINUE);
    plus_final(out, other_hash, 32, fin, sizeof(fin));
    ck_assert_int_eq(final(&s, fin, out, sizeof(out)), SCRAM_FAIL);
    scram_server_clear(&s);

    /* PLUS without TLS, 'p' with the plain mechanism, unknown cb type */
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH_PLUS, &k, NULL, 0, pfirst, out, sizeof(out)),
                     SCRAM_PROTO);
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH, &k, NULL, 0, pfirst, out, sizeof(out)), SCRAM_PROTO);
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH_PLUS, &k, cert_hash, 32, "p=tls-unique,,n=,r=plusnonce",
                           out, sizeof(out)),
                     SCRAM_PROTO);
    /* PLUS selected but the client says n or y */
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH_PLUS, &k, cert_hash, 32, "n,,n=,r=abc", out, sizeof(out)),
                     SCRAM_PROTO);
    /* 'y' while we offer PLUS: downgrade */
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH, &k, cert_hash, 32, "y,,n=,r=abc", out, sizeof(out)),
                     SCRAM_FAIL);
    /* 'n' over TLS with the plain mechanism is allowed */
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH, &k, cert_hash, 32, "n,,n=,r=abc", out, sizeof(out)),
                     SCRAM_CONTINUE);
    /* ... but its final must repeat "n,," (biws), not "y,," (eSws) */
    char bad[256];
    snprintf(bad, sizeof(bad), "c=eSws,r=%.*s,p=%s", (int) strcspn(out + 2, ","), out + 2,
             "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    ck_assert_int_eq(final(&s, bad, out, sizeof(out)), SCRAM_PROTO);
    scram_server_clear(&s);
}
END_TEST

START_TEST(test_y_flag_without_tls)
{
    /* gs2 flag 'y' without TLS is accepted; the final must then carry "eSws" ("y,,"). */
    struct scram_server s;
    struct scram_keys k = rfc_keys();
    char out[512];

    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH, &k, NULL, 0, "y,,n=,r=abc", out, sizeof(out)),
                     SCRAM_CONTINUE);
    char fin[256];
    snprintf(fin, sizeof(fin), "c=biws,r=%.*s,p=%s", (int) strcspn(out + 2, ","), out + 2,
             "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    ck_assert_int_eq(final(&s, fin, out, sizeof(out)), SCRAM_PROTO);
    scram_server_clear(&s);
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH, &k, NULL, 0, "y,,n=,r=abc", out, sizeof(out)),
                     SCRAM_CONTINUE);
    snprintf(fin, sizeof(fin), "c=eSws,r=%.*s,p=%s", (int) strcspn(out + 2, ","), out + 2,
             "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    ck_assert_int_eq(final(&s, fin, out, sizeof(out)), SCRAM_FAIL); /* binding ok, proof wrong */
    scram_server_clear(&s);
}
END_TEST

START_TEST(test_malformed_first)
{
    struct scram_keys k = rfc_keys();
    struct scram_server s;
    char out[512];
    const char *bad[] = {
        "",
        "x,,n=,r=abc",
        "n,a=admin,n=,r=abc", /* authzid */
        "n,,m=ext,n=,r=abc",  /* mandatory extension */
        "n,,r=abc",           /* missing n= */
        "n,,n=",              /* missing r= */
        "n,,n=,r=",           /* empty nonce */
        "n,,n=,r=ab c",       /* unprintable nonce */
        "n,,n=,r=abc,",       /* dangling comma */
        "n,,n=,r=abc,1=x",    /* bad extension name */
        "n,n=,r=abc",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        scram_server_init(&s, "user", NULL, 0);
        ck_assert_msg(first(&s, SCRAM_MECH, &k, NULL, 0, bad[i], out, sizeof(out)) == SCRAM_PROTO,
                      "accepted %s", bad[i]);
        scram_server_clear(&s);
    }
    /* embedded NUL */
    size_t n;
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(scram_server_first(&s, SCRAM_MECH, &k, NULL, 0,
                                        (const uint8_t *) "n,,n=\0,r=abc", 12, out, sizeof(out),
                                        &n),
                     SCRAM_PROTO);
    /* unknown mechanism */
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, "SCRAM-SHA-1", &k, NULL, 0, "n,,n=,r=abc", out, sizeof(out)),
                     SCRAM_PROTO);
    /* extensions after the nonce are ignored */
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH, &k, NULL, 0, "n,,n=,r=abc,x=1", out, sizeof(out)),
                     SCRAM_CONTINUE);
    /* output buffer too small */
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(first(&s, SCRAM_MECH, &k, NULL, 0, "n,,n=,r=abc", out, 10), SCRAM_PROTO);
    scram_server_clear(&s);
}
END_TEST

START_TEST(test_malformed_final)
{
    struct scram_keys k = rfc_keys();
    struct scram_server s;
    char out[512];
    const char *bad[] = {
        "",
        "r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",        /* missing c= */
        "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",                 /* missing r= */
        "c=biws,r=" RFC_NONCE,                                                   /* missing p= */
        "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",  /* bad b64 */
        "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndA==", /* 31 bytes */
        "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1", /* trailing */
        "c=biws,r=" RFC_CLIENT_NONCE "X,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", /* nonce */
        "c=biws,r=" RFC_CLIENT_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",  /* nonce */
        "c=bi#s,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",         /* b64 */
        "c=cCws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",         /* "p,," */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        scram_server_init(&s, "user", NULL, 0);
        scram_server_set_nonce(&s, RFC_SERVER_NONCE);
        ck_assert_int_eq(first(&s, SCRAM_MECH, &k, NULL, 0, RFC_FIRST, out, sizeof(out)),
                         SCRAM_CONTINUE);
        ck_assert_msg(final(&s, bad[i], out, sizeof(out)) == SCRAM_PROTO, "accepted %s", bad[i]);
        scram_server_clear(&s);
    }
    /* an extension before the proof is allowed but changes AuthMessage: proof now wrong */
    scram_server_init(&s, "user", NULL, 0);
    scram_server_set_nonce(&s, RFC_SERVER_NONCE);
    ck_assert_int_eq(first(&s, SCRAM_MECH, &k, NULL, 0, RFC_FIRST, out, sizeof(out)),
                     SCRAM_CONTINUE);
    ck_assert_int_eq(
        final(&s, "c=biws,r=" RFC_NONCE ",x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", out,
              sizeof(out)),
        SCRAM_FAIL);
    scram_server_clear(&s);
    /* final before first */
    scram_server_init(&s, "user", NULL, 0);
    ck_assert_int_eq(final(&s, RFC_FINAL, out, sizeof(out)), SCRAM_PROTO);
    scram_server_clear(&s);
}
END_TEST

START_TEST(test_client_malformed_server_first)
{
    struct scram_client c;
    char out[512];
    size_t n;
    const char *bad[] = {
        "",
        "r=" RFC_CLIENT_NONCE ",s=" RFC_SALT ",i=4096",     /* nonce not extended */
        "r=XX" RFC_SERVER_NONCE ",s=" RFC_SALT ",i=4096",   /* nonce not ours */
        "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096", /* bad base64 */
        "r=" RFC_NONCE ",s=,i=4096",                        /* empty salt */
        "r=" RFC_NONCE ",s=" RFC_SALT ",i=0",               /* zero iterations */
        "r=" RFC_NONCE ",s=" RFC_SALT ",i=99999999",        /* too many iterations */
        "r=" RFC_NONCE ",s=" RFC_SALT ",i=40x6",            /* not a number */
        "r=" RFC_NONCE ",s=" RFC_SALT,                      /* missing i= */
        "r=" RFC_NONCE ",i=4096",                           /* missing s= */
        "r=" RFC_NONCE ",s=" RFC_SALT ",i=4096,junk",       /* trailing */
        "m=x,r=" RFC_NONCE ",s=" RFC_SALT ",i=4096",        /* mandatory extension */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(scram_client_init_password(&c, "pencil"), 0);
        scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
        ck_assert_int_eq(scram_client_first(&c, out, sizeof(out), &n), 0);
        ck_assert_msg(scram_client_final(&c, (const uint8_t *) bad[i], strlen(bad[i]), out,
                                         sizeof(out), &n) == -1,
                      "accepted %s", bad[i]);
        /* once failed, the exchange cannot go on */
        ck_assert_int_eq(
            scram_client_verify(&c, (const uint8_t *) RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)),
            -1);
        scram_client_clear(&c);
    }
    /* out of order */
    ck_assert_int_eq(scram_client_init_password(&c, "pencil"), 0);
    ck_assert_int_eq(scram_client_final(&c, (const uint8_t *) RFC_SERVER_FIRST,
                                        strlen(RFC_SERVER_FIRST), out, sizeof(out), &n),
                     -1);
    scram_client_clear(&c);
    /* server error message instead of a signature */
    ck_assert_int_eq(scram_client_init_password(&c, "pencil"), 0);
    scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
    ck_assert_int_eq(scram_client_first(&c, out, sizeof(out), &n), 0);
    ck_assert_int_eq(scram_client_final(&c, (const uint8_t *) RFC_SERVER_FIRST,
                                        strlen(RFC_SERVER_FIRST), out, sizeof(out), &n),
                     0);
    ck_assert_int_eq(scram_client_verify(&c, (const uint8_t *) "e=invalid-proof", 15), -1);
    scram_client_clear(&c);
}
END_TEST

START_TEST(test_random_nonces)
{
    struct scram_client c1, c2;
    char a[128], b[128];
    size_t n;

    ck_assert_int_eq(scram_client_init_password(&c1, "p"), 0);
    ck_assert_int_eq(scram_client_init_password(&c2, "p"), 0);
    ck_assert_int_eq(scram_client_first(&c1, a, sizeof(a), &n), 0);
    ck_assert_int_eq(scram_client_first(&c2, b, sizeof(b), &n), 0);
    ck_assert_str_ne(a, b);
    ck_assert_uint_eq(strlen(a), strlen("n,,n=,r=") + 24);
    ck_assert_int_eq(scram_client_first(&c1, a, sizeof(a), &n), -1); /* only once */
    scram_client_clear(&c1);
    scram_client_clear(&c2);
}
END_TEST

static Suite *scram_suite(void)
{
    Suite *s = suite_create("scram");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_rfc7677_server);
    tcase_add_test(tc, test_rfc7677_client);
    tcase_add_test(tc, test_exchange_password_then_keys);
    tcase_add_test(tc, test_exchange_wrong_password);
    tcase_add_test(tc, test_unknown_user);
    tcase_add_test(tc, test_channel_binding);
    tcase_add_test(tc, test_y_flag_without_tls);
    tcase_add_test(tc, test_malformed_first);
    tcase_add_test(tc, test_malformed_final);
    tcase_add_test(tc, test_client_malformed_server_first);
    tcase_add_test(tc, test_random_nonces);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(scram_suite());
}
