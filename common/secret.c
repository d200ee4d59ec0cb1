/*
 * secret: parsing of stored password secrets and the password checks made against them, plus the
 * SCRAM-SHA-256 building blocks (strict base64, PBKDF2 SaltedPassword,
 * ClientKey/StoredKey/ServerKey) shared with the scram module. Digests, HMAC, PBKDF2 and random
 * bytes come from OpenSSL 3; every comparison of secret material uses CRYPTO_memcmp over
 * fixed-length digests.
 */
#include "pgtide/secret.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define SCRAM_PREFIX     "SCRAM-SHA-256$"
#define SCRAM_PREFIX_LEN (sizeof(SCRAM_PREFIX) - 1)

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t secret_b64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

int secret_b64_encode(const uint8_t *in, size_t len, char *out, size_t outcap)
{
    size_t need = secret_b64_len(len);
    size_t i, o = 0;

    if (need >= outcap || need > INT_MAX)
        return -1;
    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t) in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t) in[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return (int) o;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int secret_b64_decode(const char *in, size_t len, uint8_t *out, size_t outcap)
{
    size_t pad = 0, n, o = 0;

    if (len % 4 != 0 || len > (size_t) INT_MAX)
        return -1;
    if (len > 0 && in[len - 1] == '=')
        pad = (len > 1 && in[len - 2] == '=') ? 2 : 1;
    n = len / 4 * 3 - pad;
    if (n > outcap)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        size_t groups = (i + 4 == len) ? 4 - pad : 4;
        for (size_t k = 0; k < 4; k++) {
            v[k] = k < groups ? b64_value(in[i + k]) : 0;
            if (v[k] < 0)
                return -1;
        }
        uint32_t w =
            (uint32_t) v[0] << 18 | (uint32_t) v[1] << 12 | (uint32_t) v[2] << 6 | (uint32_t) v[3];
        /* bits that padding hides must be zero (canonical encoding) */
        if ((groups == 3 && (w & 0xff) != 0) || (groups == 2 && (w & 0xffff) != 0))
            return -1;
        out[o++] = (uint8_t) (w >> 16);
        if (groups > 2)
            out[o++] = (uint8_t) (w >> 8);
        if (groups > 3)
            out[o++] = (uint8_t) w;
    }
    return (int) o;
}

int secret_hmac(const uint8_t *key, size_t key_len, const void *data, size_t len, uint8_t mac[32])
{
    unsigned int maclen = 0;

    if (key_len > INT_MAX)
        return -1;
    if (HMAC(EVP_sha256(), key, (int) key_len, data, len, mac, &maclen) == NULL || maclen != 32)
        return -1;
    return 0;
}

int secret_sha256(const void *data, size_t len, uint8_t digest[32])
{
    unsigned int dlen = 0;

    if (EVP_Digest(data, len, digest, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
        return -1;
    return 0;
}

int secret_scram_derive(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                        uint8_t client_key[32], uint8_t stored_key[32], uint8_t server_key[32])
{
    uint8_t salted[32], ck[32];
    size_t pwlen = strlen(password);
    int rc = -1;

    /* SASLprep: see the header; the password bytes are used as is. */
    if (iterations < 1 || pwlen > INT_MAX || salt_len > INT_MAX)
        return -1;
    if (PKCS5_PBKDF2_HMAC(password, (int) pwlen, salt, (int) salt_len, iterations, EVP_sha256(),
                          sizeof(salted), salted) != 1)
        goto out;
    if (secret_hmac(salted, sizeof(salted), "Client Key", 10, ck) != 0)
        goto out;
    if (client_key != NULL)
        memcpy(client_key, ck, 32);
    if (stored_key != NULL && secret_sha256(ck, sizeof(ck), stored_key) != 0)
        goto out;
    if (server_key != NULL &&
        secret_hmac(salted, sizeof(salted), "Server Key", 10, server_key) != 0)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(ck, sizeof(ck));
    return rc;
}

/* Decodes the base64 text between p and end into exactly want bytes (want 0: any length up to
   cap, returned). */
static int decode_field(const char *p, const char *end, uint8_t *out, size_t cap, size_t want)
{
    int n;

    if (end == NULL || end < p)
        return -1;
    n = secret_b64_decode(p, (size_t) (end - p), out, cap);
    if (n < 0 || (want != 0 && (size_t) n != want) || n == 0)
        return -1;
    return n;
}

static int parse_scram(const char *text, struct scram_keys *k)
{
    const char *p = text + SCRAM_PREFIX_LEN;
    const char *colon1, *dollar, *colon2;
    char *endp;
    long iter;
    int n;

    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    iter = strtol(p, &endp, 10);
    if (errno != 0 || iter < 1 || iter > INT_MAX || *endp != ':')
        return -1;
    colon1 = endp;
    dollar = strchr(colon1 + 1, '$');
    colon2 = dollar != NULL ? strchr(dollar + 1, ':') : NULL;
    if (colon2 == NULL)
        return -1;
    n = decode_field(colon1 + 1, dollar, k->salt, sizeof(k->salt), 0);
    if (n < 0)
        return -1;
    k->salt_len = (size_t) n;
    k->iterations = (int) iter;
    if (decode_field(dollar + 1, colon2, k->stored_key, 32, 32) < 0 ||
        decode_field(colon2 + 1, colon2 + 1 + strlen(colon2 + 1), k->server_key, 32, 32) < 0)
        return -1;
    return 0;
}

int secret_parse(const char *text, struct secret *out)
{
    size_t len = strlen(text);

    memset(out, 0, sizeof(*out));
    if (strncmp(text, SCRAM_PREFIX, SCRAM_PREFIX_LEN) == 0) {
        if (parse_scram(text, &out->scram) != 0) {
            secret_clear(out);
            return -1;
        }
        out->kind = SECRET_SCRAM;
        return 0;
    }
    if (len == SECRET_MD5_LEN && strncmp(text, "md5", 3) == 0) {
        memcpy(out->md5, "md5", 3);
        for (size_t i = 3; i < len; i++) {
            char c = text[i];
            if (c >= 'A' && c <= 'F')
                c = (char) (c - 'A' + 'a');
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
                secret_clear(out);
                return -1;
            }
            out->md5[i] = c;
        }
        out->md5[len] = '\0';
        out->kind = SECRET_MD5;
        return 0;
    }
    out->plain = strdup(text);
    if (out->plain == NULL)
        return -1;
    out->kind = SECRET_PLAIN;
    return 0;
}

void secret_clear(struct secret *s)
{
    if (s->plain != NULL) {
        OPENSSL_cleanse(s->plain, strlen(s->plain));
        free(s->plain);
    }
    OPENSSL_cleanse(s, sizeof(*s));
    s->plain = NULL;
    s->kind = SECRET_NONE;
}

static void hex32(const uint8_t digest[16], char out[33])
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[32] = '\0';
}

/* out = md5hex(a || b), 32 hex + NUL. */
static int md5_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[33])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t digest[16];
    unsigned int dlen = 0;
    int ok;

    if (ctx == NULL)
        return -1;
    ok = EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
         EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 &&
         dlen == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    hex32(digest, out);
    return 0;
}

/* The stored form "md5" + md5hex(password + user) for this secret (MD5 or PLAIN). */
static int md5_stored(const struct secret *s, const char *user, char out[36])
{
    if (s->kind == SECRET_MD5) {
        memcpy(out, s->md5, 36);
        return 0;
    }
    if (s->kind != SECRET_PLAIN || s->plain == NULL)
        return -1;
    memcpy(out, "md5", 3);
    return md5_hex2(s->plain, strlen(s->plain), user, strlen(user), out + 3);
}

int secret_md5_response(const struct secret *s, const char *user, const uint8_t salt[4],
                        char out[36])
{
    char stored[36];
    int rc;

    if (md5_stored(s, user, stored) != 0)
        return -1;
    memcpy(out, "md5", 3);
    rc = md5_hex2(stored + 3, 32, salt, 4, out + 3);
    OPENSSL_cleanse(stored, sizeof(stored));
    return rc;
}

/* Timing-safe equality of two strings of any length: compares their SHA-256 digests. */
static bool str_equal_ct(const char *a, const char *b)
{
    uint8_t da[32], db[32];

    if (secret_sha256(a, strlen(a), da) != 0 || secret_sha256(b, strlen(b), db) != 0)
        return false;
    return CRYPTO_memcmp(da, db, 32) == 0;
}

bool secret_check_md5(const struct secret *s, const char *user, const uint8_t salt[4],
                      const char *response)
{
    char expect[36];
    bool ok;

    if (response == NULL || strlen(response) != SECRET_MD5_LEN)
        return false;
    if (secret_md5_response(s, user, salt, expect) != 0)
        return false;
    ok = CRYPTO_memcmp(expect, response, SECRET_MD5_LEN) == 0;
    OPENSSL_cleanse(expect, sizeof(expect));
    return ok;
}

static bool check_scram_password(const struct scram_keys *k, const char *password)
{
    uint8_t stored[32], server[32];
    bool ok;

    if (secret_scram_derive(password, k->salt, k->salt_len, k->iterations, NULL, stored, server) !=
        0)
        return false;
    ok = (CRYPTO_memcmp(stored, k->stored_key, 32) | CRYPTO_memcmp(server, k->server_key, 32)) == 0;
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(server, sizeof(server));
    return ok;
}

bool secret_check_password(const struct secret *s, const char *user, const char *password)
{
    char computed[36];
    bool ok;

    if (password == NULL)
        return false;
    switch (s->kind) {
    case SECRET_SCRAM:
        return check_scram_password(&s->scram, password);
    case SECRET_MD5:
        memcpy(computed, "md5", 3);
        if (md5_hex2(password, strlen(password), user, strlen(user), computed + 3) != 0)
            return false;
        ok = CRYPTO_memcmp(computed, s->md5, SECRET_MD5_LEN) == 0;
        OPENSSL_cleanse(computed, sizeof(computed));
        return ok;
    case SECRET_PLAIN:
        return s->plain != NULL && str_equal_ct(s->plain, password);
    case SECRET_NONE:
        break;
    }
    return false;
}

int secret_make_scram_salt(const char *password, int iterations, const uint8_t *salt,
                           size_t salt_len, char *out, size_t outlen)
{
    uint8_t stored[32], server[32];
    char salt64[100], stored64[48], server64[48];
    int n;

    if (salt_len < 1 || salt_len > SECRET_SCRAM_SALT_MAX || iterations < 1)
        return -1;
    if (secret_scram_derive(password, salt, salt_len, iterations, NULL, stored, server) != 0)
        return -1;
    n = -1;
    if (secret_b64_encode(salt, salt_len, salt64, sizeof(salt64)) >= 0 &&
        secret_b64_encode(stored, 32, stored64, sizeof(stored64)) >= 0 &&
        secret_b64_encode(server, 32, server64, sizeof(server64)) >= 0) {
        n = snprintf(out, outlen, "%s%d:%s$%s:%s", SCRAM_PREFIX, iterations, salt64, stored64,
                     server64);
        if (n < 0 || (size_t) n >= outlen)
            n = -1;
    }
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(server, sizeof(server));
    return n;
}

int secret_make_scram(const char *password, int iterations, char *out, size_t outlen)
{
    uint8_t salt[16];

    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return -1;
    return secret_make_scram_salt(password, iterations, salt, sizeof(salt), out, outlen);
}
