/*
 * secret: stored password secrets (SCRAM-SHA-256 verifiers, md5 hashes, plaintext) as PostgreSQL
 * writes them in pg_authid.rolpassword and PgBouncer in its auth_file, the checks made against
 * them for the "password" and "md5" methods, and the shared SCRAM primitives (strict base64,
 * SaltedPassword and key derivation) used by the scram module. Pure functions, no I/O; crypto
 * goes through OpenSSL 3 and every comparison of secret material is timing-safe.
 *
 * SASLprep: as PostgreSQL, a password that is pure ASCII or not valid UTF-8 is used as is. For
 * valid non-ASCII UTF-8 pgtide also uses the bytes as is, skipping RFC 4013's mapping, NFKC
 * normalisation and prohibited/bidi checks; this equals PostgreSQL's result whenever the password
 * is already NFKC-normal and holds no mapped or prohibited code points (e.g. precomposed accents).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SECRET_SCRAM_KEY_LEN  32 /* SHA-256 output */
#define SECRET_SCRAM_SALT_MAX 64
#define SECRET_MD5_LEN        35  /* "md5" + 32 hex digits */
#define SECRET_SCRAM_MAX_TEXT 256 /* room for any verifier string secret_make_scram writes */

enum secret_kind { SECRET_NONE, SECRET_SCRAM, SECRET_MD5, SECRET_PLAIN };

/* A parsed SCRAM-SHA-256 verifier. */
struct scram_keys {
    int iterations;
    uint8_t salt[SECRET_SCRAM_SALT_MAX];
    size_t salt_len;
    uint8_t stored_key[SECRET_SCRAM_KEY_LEN], server_key[SECRET_SCRAM_KEY_LEN];
};

struct secret {
    enum secret_kind kind;
    struct scram_keys scram;      /* kind SECRET_SCRAM */
    char md5[SECRET_MD5_LEN + 1]; /* kind SECRET_MD5: "md5" + 32 lowercase hex, NUL-terminated */
    char *plain;                  /* kind SECRET_PLAIN: heap copy, owned, freed by secret_clear */
};

/* Parses a stored secret into *out (which is overwritten; clear it with secret_clear).
   "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>" -> SECRET_SCRAM (iter > 0,
   salt 1..64 bytes, keys 32 bytes, strict base64); a string of exactly 35 characters starting with
   "md5" -> SECRET_MD5 (hex digits required, upper case folded to lower); anything else ->
   SECRET_PLAIN (copied). Returns 0, or -1 when a string with the SCRAM prefix or the md5 shape is
   malformed or on out of memory (then out->kind is SECRET_NONE and nothing is owned). */
int secret_parse(const char *text, struct secret *out) __attribute__((warn_unused_result));

/* Frees the plaintext copy, wipes the whole struct (OPENSSL_cleanse), sets kind SECRET_NONE.
   Safe on a zeroed or already cleared struct. */
void secret_clear(struct secret *s);

/* Checks a cleartext password (auth method "password") against any kind of secret: SCRAM by
   deriving the keys from the verifier's salt and iterations, md5 by hashing password+user,
   plaintext by a timing-safe comparison. true if it matches; false for SECRET_NONE. */
bool secret_check_password(const struct secret *s, const char *user, const char *password);

/* Checks the client's answer to an md5 challenge: response must equal
   "md5" + md5hex(md5hex(password + user) + salt). Works for SECRET_MD5 and SECRET_PLAIN; a SCRAM
   verifier cannot answer md5 and yields false. */
bool secret_check_md5(const struct secret *s, const char *user, const uint8_t salt[4],
                      const char *response);

/* Writes the md5 response a client sends for this user and salt (35 chars + NUL) into out, from a
   SECRET_PLAIN or SECRET_MD5 secret. Returns 0, or -1 for other kinds. */
int secret_md5_response(const struct secret *s, const char *user, const uint8_t salt[4],
                        char out[36]) __attribute__((warn_unused_result));

/* Writes a SCRAM-SHA-256 verifier string for password (random 16-byte salt from RAND_bytes, the
   given iterations, >= 1) into out. Returns the string length, or -1 (bad arguments, outlen too
   small: SECRET_SCRAM_MAX_TEXT is always enough, RNG failure). */
int secret_make_scram(const char *password, int iterations, char *out, size_t outlen)
    __attribute__((warn_unused_result));

/* As secret_make_scram with a caller-chosen salt (1..64 bytes): deterministic, for tests and for
   reproducing a known verifier. */
int secret_make_scram_salt(const char *password, int iterations, const uint8_t *salt,
                           size_t salt_len, char *out, size_t outlen)
    __attribute__((warn_unused_result));

/* Derives SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations) after SASLprep (see the
   top of this header), then ClientKey, StoredKey = H(ClientKey) and ServerKey. Any of the output
   pointers may be NULL. Returns 0 or -1 (iterations < 1, crypto failure). */
int secret_scram_derive(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                        uint8_t client_key[32], uint8_t stored_key[32], uint8_t server_key[32])
    __attribute__((warn_unused_result));

/* HMAC-SHA-256(key, data) into mac. Returns 0 or -1. */
int secret_hmac(const uint8_t *key, size_t key_len, const void *data, size_t len, uint8_t mac[32])
    __attribute__((warn_unused_result));

/* SHA-256(data) into digest. Returns 0 or -1. */
int secret_sha256(const void *data, size_t len, uint8_t digest[32])
    __attribute__((warn_unused_result));

/* Length of the base64 text for n bytes (with padding, without NUL). */
size_t secret_b64_len(size_t n);

/* Encodes len bytes as standard base64 with padding and a terminating NUL. Returns the text length,
   or -1 if outcap < secret_b64_len(len) + 1. */
int secret_b64_encode(const uint8_t *in, size_t len, char *out, size_t outcap)
    __attribute__((warn_unused_result));

/* Decodes strict standard base64: length a multiple of 4, only the 64 alphabet characters, '='
   padding only at the end, no whitespace, unused bits zero. Returns the number of bytes, or -1 if
   malformed or longer than outcap. */
int secret_b64_decode(const char *in, size_t len, uint8_t *out, size_t outcap)
    __attribute__((warn_unused_result));
