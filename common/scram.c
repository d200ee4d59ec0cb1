/*
 * scram: the SCRAM-SHA-256(-PLUS) exchange, server and client side, following what PostgreSQL's
 * auth-scram.c and libpq's fe-auth-scram.c accept and send. Each step copies the incoming message
 * into a bounded stack buffer (refusing NUL bytes and oversized input), parses the attributes
 * strictly in the RFC 5802 order, and keeps only what AuthMessage needs. Keys and signatures are
 * computed with the secret module's OpenSSL helpers and compared with CRYPTO_memcmp; all state is
 * wiped on clear.
 */
#include "pgtide/scram.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define MSG_BUF_MAX  1024 /* longest client-final / server-first message accepted */
#define CB_PREFIX    "p=tls-server-end-point,,"
#define MOCK_ITER    4096
#define AUTH_MSG_MAX (2 * (SCRAM_MSG_MAX + 1) + MSG_BUF_MAX)

/* Copies msg into buf as a C string; -1 when it holds a NUL byte or does not fit. */
static int copy_msg(const uint8_t *msg, size_t len, char *buf, size_t cap)
{
    if (msg == NULL || len >= cap || memchr(msg, '\0', len) != NULL)
        return -1;
    memcpy(buf, msg, len);
    buf[len] = '\0';
    return 0;
}

/* Reads "<name>=value" at *pp; the value ends at ',' or NUL. Advances *pp past the value and
   returns the value start (length in *vlen), or NULL when the attribute is not there. */
static const char *read_attr(const char **pp, char name, size_t *vlen)
{
    const char *p = *pp, *v;

    if (p[0] != name || p[1] != '=')
        return NULL;
    v = p + 2;
    *vlen = strcspn(v, ",");
    *pp = v + *vlen;
    return v;
}

/* Skips optional extension attributes ",x=value" up to the end of the string. */
static bool skip_extensions(const char *p)
{
    while (*p == ',') {
        size_t n;
        p++;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) ||
            read_attr(&p, *p, &n) == NULL)
            return false;
    }
    return *p == '\0';
}

/* RFC 5802 printable: 0x21..0x7e except ','. */
static bool nonce_ok(const char *v, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x21 || v[i] > 0x7e || v[i] == ',')
            return false;
    return true;
}

/* Appends n bytes to out at *pos, keeping a NUL after them; -1 when it does not fit. */
static int append(char *out, size_t cap, size_t *pos, const char *s, size_t n)
{
    if (*pos + n >= cap)
        return -1;
    memcpy(out + *pos, s, n);
    *pos += n;
    out[*pos] = '\0';
    return 0;
}

static int append_str(char *out, size_t cap, size_t *pos, const char *s)
{
    return append(out, cap, pos, s, strlen(s));
}

/* Fills dst with a fresh base64 nonce of SCRAM_RAW_NONCE_LEN random bytes. */
static int make_nonce(char *dst, size_t cap)
{
    uint8_t raw[SCRAM_RAW_NONCE_LEN];

    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    return secret_b64_encode(raw, sizeof(raw), dst, cap) < 0 ? -1 : 0;
}

/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof. */
static int auth_message(char *am, size_t cap, const char *bare, const char *first,
                        const char *final_np, size_t final_len, size_t *amlen)
{
    size_t pos = 0;

    am[0] = '\0';
    if (append_str(am, cap, &pos, bare) != 0 || append(am, cap, &pos, ",", 1) != 0 ||
        append_str(am, cap, &pos, first) != 0 || append(am, cap, &pos, ",", 1) != 0 ||
        append(am, cap, &pos, final_np, final_len) != 0)
        return -1;
    *amlen = pos;
    return 0;
}

/* ---- server ---- */

void scram_server_init(struct scram_server *s, const char *user, const uint8_t *mock_key,
                       size_t mock_len)
{
    static uint8_t process_key[32];
    static bool process_key_ready;
    uint8_t mac[32];

    memset(s, 0, sizeof(*s));
    if (mock_key == NULL || mock_len == 0) {
        if (!process_key_ready && RAND_bytes(process_key, sizeof(process_key)) == 1)
            process_key_ready = true;
        mock_key = process_key;
        mock_len = sizeof(process_key);
    }
    if (user == NULL)
        user = "";
    if (secret_hmac(mock_key, mock_len, user, strlen(user), mac) == 0) {
        memcpy(s->fake_salt, mac, sizeof(s->fake_salt));
        s->have_fake_salt = true;
    }
    OPENSSL_cleanse(mac, sizeof(mac));
}

void scram_server_set_nonce(struct scram_server *s, const char *nonce)
{
    snprintf(s->server_nonce, sizeof(s->server_nonce), "%s", nonce);
    s->fixed_nonce = true;
}

/* Parses the gs2 header ("n,,", "y,," or "p=tls-server-end-point,,") and returns the start of
   client-first-message-bare in *bare. */
static enum scram_result parse_gs2(struct scram_server *s, const char *p, bool offered_plus,
                                   const char **bare)
{
    size_t n;
    const char *v;

    s->cbind_flag = *p;
    switch (*p) {
    case 'n':
        if (s->plus)
            return SCRAM_PROTO;
        p++;
        break;
    case 'y':
        if (s->plus)
            return SCRAM_PROTO;
        if (offered_plus)
            return SCRAM_FAIL; /* downgrade: we support channel binding on this connection */
        p++;
        break;
    case 'p':
        if (!s->plus)
            return SCRAM_PROTO;
        v = read_attr(&p, 'p', &n);
        if (v == NULL || n != strlen("tls-server-end-point") ||
            memcmp(v, "tls-server-end-point", n) != 0)
            return SCRAM_PROTO;
        break;
    default:
        return SCRAM_PROTO;
    }
    if (*p++ != ',')
        return SCRAM_PROTO;
    if (*p++ != ',') /* an authzid ("a=...") is not supported, as in PostgreSQL */
        return SCRAM_PROTO;
    *bare = p;
    return SCRAM_CONTINUE;
}

/* Parses client-first-message-bare: "n=<user>,r=<nonce>[,ext...]". */
static enum scram_result parse_bare(struct scram_server *s, const char *bare)
{
    const char *p = bare, *nonce;
    size_t n;

    if (strlen(bare) > SCRAM_MSG_MAX)
        return SCRAM_PROTO;
    if (*p == 'm' || read_attr(&p, 'n', &n) == NULL || *p++ != ',')
        return SCRAM_PROTO;
    nonce = read_attr(&p, 'r', &n);
    if (nonce == NULL || !nonce_ok(nonce, n) || !skip_extensions(p))
        return SCRAM_PROTO;
    size_t sn = strlen(s->server_nonce);
    if (n + sn > SCRAM_NONCE_MAX)
        return SCRAM_PROTO;
    memcpy(s->nonce, nonce, n);
    memcpy(s->nonce + n, s->server_nonce, sn);
    s->nonce[n + sn] = '\0';
    memcpy(s->client_first_bare, bare, strlen(bare) + 1);
    return SCRAM_CONTINUE;
}

static enum scram_result set_keys(struct scram_server *s, const struct scram_keys *keys)
{
    if (keys != NULL) {
        if (keys->salt_len < 1 || keys->salt_len > SECRET_SCRAM_SALT_MAX || keys->iterations < 1)
            return SCRAM_PROTO;
        s->keys = *keys;
        return SCRAM_CONTINUE;
    }
    if (!s->have_fake_salt)
        scram_server_init(s, "", NULL, 0);
    s->mock = true;
    s->keys.iterations = MOCK_ITER;
    memcpy(s->keys.salt, s->fake_salt, sizeof(s->fake_salt));
    s->keys.salt_len = sizeof(s->fake_salt);
    if (RAND_bytes(s->keys.stored_key, 32) != 1 || RAND_bytes(s->keys.server_key, 32) != 1)
        return SCRAM_PROTO;
    return SCRAM_CONTINUE;
}

enum scram_result scram_server_first(struct scram_server *s, const char *mech,
                                     const struct scram_keys *keys, const uint8_t *cb_hash,
                                     size_t cb_len, const uint8_t *msg, size_t len, char *out,
                                     size_t outcap, size_t *outlen)
{
    char buf[MSG_BUF_MAX], salt64[100];
    const char *bare = NULL;
    enum scram_result r;
    size_t pos = 0;

    *outlen = 0;
    if (s->step != 0)
        return SCRAM_PROTO;
    s->step = 2;
    if (mech != NULL && strcmp(mech, SCRAM_MECH_PLUS) == 0)
        s->plus = true;
    else if (mech == NULL || strcmp(mech, SCRAM_MECH) != 0)
        return SCRAM_PROTO;
    if ((s->plus && cb_hash == NULL) || (cb_hash != NULL && (cb_len == 0 || cb_len > SCRAM_CB_MAX)))
        return SCRAM_PROTO;
    if (cb_hash != NULL)
        memcpy(s->cb_hash, cb_hash, cb_len);
    s->cb_len = cb_len;
    if (copy_msg(msg, len, buf, sizeof(buf)) != 0)
        return SCRAM_PROTO;
    r = parse_gs2(s, buf, cb_hash != NULL, &bare);
    if (r != SCRAM_CONTINUE)
        return r;
    if (!s->fixed_nonce && make_nonce(s->server_nonce, sizeof(s->server_nonce)) != 0)
        return SCRAM_PROTO;
    if ((r = parse_bare(s, bare)) != SCRAM_CONTINUE || (r = set_keys(s, keys)) != SCRAM_CONTINUE)
        return r;
    if (secret_b64_encode(s->keys.salt, s->keys.salt_len, salt64, sizeof(salt64)) < 0)
        return SCRAM_PROTO;
    int n = snprintf(s->server_first, sizeof(s->server_first), "r=%s,s=%s,i=%d", s->nonce, salt64,
                     s->keys.iterations);
    if (n < 0 || (size_t) n >= sizeof(s->server_first) ||
        append(out, outcap, &pos, s->server_first, (size_t) n) != 0)
        return SCRAM_PROTO;
    *outlen = pos;
    s->step = 1;
    return SCRAM_CONTINUE;
}

/* Checks the c= attribute (base64 of the gs2 header, plus the certificate hash with PLUS). */
static enum scram_result check_cbind(const struct scram_server *s, const char *v, size_t n)
{
    uint8_t got[128], want[sizeof(CB_PREFIX) + SCRAM_CB_MAX];
    size_t wlen;
    int glen = secret_b64_decode(v, n, got, sizeof(got));

    if (glen < 0)
        return SCRAM_PROTO;
    if (s->plus) {
        wlen = strlen(CB_PREFIX);
        memcpy(want, CB_PREFIX, wlen);
        memcpy(want + wlen, s->cb_hash, s->cb_len);
        wlen += s->cb_len;
        if ((size_t) glen != wlen || CRYPTO_memcmp(got, want, wlen) != 0)
            return SCRAM_FAIL;
        return SCRAM_CONTINUE;
    }
    want[0] = (uint8_t) s->cbind_flag;
    want[1] = want[2] = ',';
    if (glen != 3 || memcmp(got, want, 3) != 0)
        return SCRAM_PROTO;
    return SCRAM_CONTINUE;
}

/* Parses "c=...,r=...[,ext...],p=..." into its parts; *proof_at points at ",p=". */
static enum scram_result parse_final(const struct scram_server *s, const char *buf,
                                     uint8_t proof[32], const char **proof_at)
{
    const char *p = buf, *v;
    size_t n;
    enum scram_result r;

    if ((v = read_attr(&p, 'c', &n)) == NULL)
        return SCRAM_PROTO;
    if ((r = check_cbind(s, v, n)) != SCRAM_CONTINUE)
        return r;
    if (*p++ != ',' || (v = read_attr(&p, 'r', &n)) == NULL)
        return SCRAM_PROTO;
    if (n != strlen(s->nonce) || memcmp(v, s->nonce, n) != 0)
        return SCRAM_PROTO;
    for (;;) {
        if (*p != ',')
            return SCRAM_PROTO;
        *proof_at = p++;
        if (*p == 'p')
            break;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) ||
            read_attr(&p, *p, &n) == NULL)
            return SCRAM_PROTO;
    }
    v = read_attr(&p, 'p', &n);
    if (v == NULL || *p != '\0' || secret_b64_decode(v, n, proof, 32) != 32)
        return SCRAM_PROTO;
    return SCRAM_CONTINUE;
}

/* Recovers ClientKey from the proof and checks H(ClientKey) == StoredKey. */
static bool verify_proof(struct scram_server *s, const uint8_t proof[32], const char *am,
                         size_t amlen)
{
    uint8_t sig[32], stored[32];
    bool ok;

    if (secret_hmac(s->keys.stored_key, 32, am, amlen, sig) != 0)
        return false;
    for (int i = 0; i < 32; i++)
        s->client_key[i] = proof[i] ^ sig[i];
    ok = secret_sha256(s->client_key, 32, stored) == 0 &&
         CRYPTO_memcmp(stored, s->keys.stored_key, 32) == 0 && !s->mock;
    OPENSSL_cleanse(sig, sizeof(sig));
    if (!ok)
        OPENSSL_cleanse(s->client_key, sizeof(s->client_key));
    return ok;
}

enum scram_result scram_server_final(struct scram_server *s, const uint8_t *msg, size_t len,
                                     char *out, size_t outcap, size_t *outlen)
{
    char buf[MSG_BUF_MAX], am[AUTH_MSG_MAX], sig64[48];
    uint8_t proof[32], sig[32];
    const char *proof_at = NULL;
    enum scram_result r;
    size_t amlen, pos = 0;

    *outlen = 0;
    if (s->step != 1)
        return SCRAM_PROTO;
    s->step = 2;
    if (copy_msg(msg, len, buf, sizeof(buf)) != 0)
        return SCRAM_PROTO;
    if ((r = parse_final(s, buf, proof, &proof_at)) != SCRAM_CONTINUE)
        return r;
    if (auth_message(am, sizeof(am), s->client_first_bare, s->server_first, buf,
                     (size_t) (proof_at - buf), &amlen) != 0)
        return SCRAM_PROTO;
    if (!verify_proof(s, proof, am, amlen))
        return SCRAM_FAIL;
    if (secret_hmac(s->keys.server_key, 32, am, amlen, sig) != 0 ||
        secret_b64_encode(sig, 32, sig64, sizeof(sig64)) < 0 ||
        append(out, outcap, &pos, "v=", 2) != 0 || append_str(out, outcap, &pos, sig64) != 0) {
        OPENSSL_cleanse(s->client_key, sizeof(s->client_key));
        return SCRAM_PROTO;
    }
    *outlen = pos;
    s->have_client_key = true;
    return SCRAM_OK;
}

bool scram_server_client_key(const struct scram_server *s, uint8_t client_key[32])
{
    if (!s->have_client_key)
        return false;
    memcpy(client_key, s->client_key, 32);
    return true;
}

void scram_server_clear(struct scram_server *s)
{
    OPENSSL_cleanse(s, sizeof(*s));
}

/* ---- client ---- */

int scram_client_init_password(struct scram_client *c, const char *password)
{
    memset(c, 0, sizeof(*c));
    c->password = strdup(password);
    return c->password == NULL ? -1 : 0;
}

int scram_client_init_keys(struct scram_client *c, const uint8_t client_key[32],
                           const struct scram_keys *keys)
{
    uint8_t stored[32];

    memset(c, 0, sizeof(*c));
    if (keys->salt_len < 1 || keys->salt_len > SECRET_SCRAM_SALT_MAX || keys->iterations < 1 ||
        secret_sha256(client_key, 32, stored) != 0 ||
        CRYPTO_memcmp(stored, keys->stored_key, 32) != 0)
        return -1;
    c->keys_mode = true;
    c->keys = *keys;
    memcpy(c->client_key, client_key, 32);
    memcpy(c->server_key, keys->server_key, 32);
    return 0;
}

void scram_client_set_nonce(struct scram_client *c, const char *nonce)
{
    snprintf(c->client_nonce, sizeof(c->client_nonce), "%s", nonce);
    c->fixed_nonce = true;
}

int scram_client_first(struct scram_client *c, char *out, size_t outcap, size_t *outlen)
{
    size_t pos = 0;

    *outlen = 0;
    if (c->step != 0 || (!c->keys_mode && c->password == NULL))
        return -1;
    if (!c->fixed_nonce && make_nonce(c->client_nonce, sizeof(c->client_nonce)) != 0)
        return -1;
    if (!nonce_ok(c->client_nonce, strlen(c->client_nonce)))
        return -1;
    snprintf(c->client_first_bare, sizeof(c->client_first_bare), "n=,r=%s", c->client_nonce);
    if (append(out, outcap, &pos, "n,,", 3) != 0 ||
        append_str(out, outcap, &pos, c->client_first_bare) != 0)
        return -1;
    *outlen = pos;
    c->step = 1;
    return 0;
}

/* Parses "r=<nonce>,s=<salt>,i=<iter>" into its parts. */
static int parse_server_first(const struct scram_client *c, const char *buf, const char **nonce,
                              size_t *nonce_len, uint8_t *salt, size_t *salt_len, int *iter)
{
    const char *p = buf, *v;
    size_t n, cn = strlen(c->client_nonce);
    long it = 0;
    int sl;

    if (*p == 'm' || (v = read_attr(&p, 'r', &n)) == NULL || n <= cn || !nonce_ok(v, n) ||
        memcmp(v, c->client_nonce, cn) != 0)
        return -1;
    *nonce = v;
    *nonce_len = n;
    if (*p++ != ',' || (v = read_attr(&p, 's', &n)) == NULL)
        return -1;
    sl = secret_b64_decode(v, n, salt, SECRET_SCRAM_SALT_MAX);
    if (sl < 1 || *p++ != ',' || (v = read_attr(&p, 'i', &n)) == NULL || n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        it = it * 10 + (v[i] - '0');
    }
    if (*p != '\0' || it < 1 || it > SCRAM_MAX_ITER)
        return -1;
    *salt_len = (size_t) sl;
    *iter = (int) it;
    return 0;
}

/* Finds ClientKey/StoredKey/ServerKey for this salt and iteration count. */
static int client_keys(struct scram_client *c, const uint8_t *salt, size_t salt_len, int iter,
                       uint8_t stored[32])
{
    if (c->keys_mode) {
        if (salt_len != c->keys.salt_len || memcmp(salt, c->keys.salt, salt_len) != 0 ||
            iter != c->keys.iterations)
            return -1; /* backend holds another verifier than pgtide */
        memcpy(stored, c->keys.stored_key, 32);
        return 0;
    }
    return secret_scram_derive(c->password, salt, salt_len, iter, c->client_key, stored,
                               c->server_key);
}

int scram_client_final(struct scram_client *c, const uint8_t *msg, size_t len, char *out,
                       size_t outcap, size_t *outlen)
{
    char buf[MSG_BUF_MAX], am[AUTH_MSG_MAX], np[SCRAM_NONCE_MAX + 16], proof64[48];
    uint8_t salt[SECRET_SCRAM_SALT_MAX], stored[32], sig[32], proof[32];
    const char *nonce;
    size_t nonce_len, salt_len, amlen, pos = 0;
    int iter, rc = -1;

    *outlen = 0;
    if (c->step != 1)
        return -1;
    c->step = 3;
    if (copy_msg(msg, len, buf, sizeof(buf)) != 0 || strlen(buf) > SCRAM_MSG_MAX ||
        parse_server_first(c, buf, &nonce, &nonce_len, salt, &salt_len, &iter) != 0 ||
        nonce_len > SCRAM_NONCE_MAX || client_keys(c, salt, salt_len, iter, stored) != 0)
        return -1;
    snprintf(np, sizeof(np), "c=biws,r=%.*s", (int) nonce_len, nonce);
    if (auth_message(am, sizeof(am), c->client_first_bare, buf, np, strlen(np), &amlen) != 0 ||
        secret_hmac(stored, 32, am, amlen, sig) != 0)
        goto out;
    for (int i = 0; i < 32; i++)
        proof[i] = c->client_key[i] ^ sig[i];
    if (secret_hmac(c->server_key, 32, am, amlen, c->server_signature) != 0 ||
        secret_b64_encode(proof, 32, proof64, sizeof(proof64)) < 0)
        goto out;
    if (append_str(out, outcap, &pos, np) != 0 || append(out, outcap, &pos, ",p=", 3) != 0 ||
        append_str(out, outcap, &pos, proof64) != 0)
        goto out;
    *outlen = pos;
    c->step = 2;
    rc = 0;
out:
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(proof, sizeof(proof));
    return rc;
}

int scram_client_verify(struct scram_client *c, const uint8_t *msg, size_t len)
{
    char buf[MSG_BUF_MAX];
    const char *p = buf, *v;
    uint8_t sig[32];
    size_t n;

    if (c->step != 2)
        return -1;
    c->step = 3;
    if (copy_msg(msg, len, buf, sizeof(buf)) != 0 || (v = read_attr(&p, 'v', &n)) == NULL ||
        *p != '\0' || secret_b64_decode(v, n, sig, sizeof(sig)) != 32)
        return -1;
    return CRYPTO_memcmp(sig, c->server_signature, 32) == 0 ? 0 : -1;
}

void scram_client_clear(struct scram_client *c)
{
    if (c->password != NULL) {
        OPENSSL_cleanse(c->password, strlen(c->password));
        free(c->password);
    }
    OPENSSL_cleanse(c, sizeof(*c));
    c->password = NULL;
}
