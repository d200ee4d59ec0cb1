/*
 * scram: SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802 / RFC 7677) as PostgreSQL speaks it, both
 * sides, as pure message-in/message-out state machines with no heap and no I/O. The server side
 * authenticates clients logging in to pgtide (channel binding type tls-server-end-point); the
 * client side logs pgtide in to a backend, either from a password or from the ClientKey recovered
 * from the client's own exchange plus the verifier pgtide holds (no password needed). Toward the
 * backend the client never uses channel binding ("n,,").
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtide/secret.h"

#define SCRAM_MECH          "SCRAM-SHA-256"
#define SCRAM_MECH_PLUS     "SCRAM-SHA-256-PLUS"
#define SCRAM_NONCE_MAX     128 /* longest nonce (client part + server part) accepted */
#define SCRAM_MSG_MAX       512 /* longest client-first-bare / server-first kept for AuthMessage */
#define SCRAM_CB_MAX        64  /* longest tls-server-end-point hash (SHA-512) */
#define SCRAM_MAX_ITER      (1 << 24) /* client side: refuse servers asking for more iterations */
#define SCRAM_RAW_NONCE_LEN 18        /* random bytes in a nonce we generate (as PostgreSQL) */

enum scram_result {
    SCRAM_CONTINUE, /* step done, send out and wait for the next message */
    SCRAM_OK,       /* authenticated */
    SCRAM_FAIL,     /* wrong password, unknown user, or failed channel binding */
    SCRAM_PROTO     /* malformed message or protocol misuse */
};

struct scram_server {
    int step;  /* 0 before first, 1 waiting for final, 2 done (OK or failed) */
    bool plus; /* mechanism SCRAM-SHA-256-PLUS selected */
    bool mock; /* unknown user: run to the end, then fail */
    bool have_client_key;
    char cbind_flag; /* 'n', 'y' or 'p' from the gs2 header */
    uint8_t cb_hash[SCRAM_CB_MAX];
    size_t cb_len;
    struct scram_keys keys;
    bool have_fake_salt;   /* fake_salt set by scram_server_init */
    uint8_t fake_salt[16]; /* salt shown for an unknown user */
    bool fixed_nonce;      /* test hook used */
    char server_nonce[SCRAM_NONCE_MAX + 1];
    char nonce[SCRAM_NONCE_MAX + 1]; /* client nonce + server nonce */
    char client_first_bare[SCRAM_MSG_MAX + 1];
    char server_first[SCRAM_MSG_MAX + 1];
    uint8_t client_key[32];
};

struct scram_client {
    int step; /* 0 before first, 1 waiting for server-first, 2 waiting for server-final, 3 done */
    bool keys_mode;
    bool fixed_nonce;
    char *password;         /* password mode: heap copy, wiped and freed by scram_client_clear */
    struct scram_keys keys; /* keys mode: the verifier */
    uint8_t client_key[32];
    uint8_t server_key[32];
    char client_nonce[SCRAM_NONCE_MAX + 1];
    char client_first_bare[SCRAM_MSG_MAX + 1];
    uint8_t server_signature[32];
};

/* Optional, before scram_server_first (a zeroed struct is also a valid start): records the
   startup user name, used only to derive the fake salt (HMAC(mock_key, user), 16 bytes) shown
   when the user is unknown. mock_key (may be NULL: then a per-process random key is used) is a
   server secret that keeps fake salts stable for a given user, as PostgreSQL's mock_auth_nonce
   does. */
void scram_server_init(struct scram_server *s, const char *user, const uint8_t *mock_key,
                       size_t mock_len);

/* Test hook only: fixes the server nonce part (printable, no ',') instead of random bytes. Call
   after scram_server_init and before scram_server_first. */
void scram_server_set_nonce(struct scram_server *s, const char *nonce);

/* Processes the client-first-message (the SASLInitialResponse data) for mechanism mech
   ("SCRAM-SHA-256" or "SCRAM-SHA-256-PLUS"). cb_hash/cb_len: the tls-server-end-point hash of
   pgtide's certificate, NULL when the connection has no TLS (then PLUS is refused). keys: the
   user's verifier (copied), NULL for an unknown user: the exchange runs with a fake salt and
   ends in SCRAM_FAIL. Rules as PostgreSQL: flag 'p' needs PLUS (and so TLS) with type
   tls-server-end-point; 'y' while the server offers PLUS (cb_hash != NULL) is a downgrade ->
   SCRAM_FAIL; 'n' or 'y' with PLUS -> SCRAM_PROTO; authzid and the 'm' extension are refused.
   On SCRAM_CONTINUE the server-first-message is written to out (not NUL-terminated counted in
   *outlen; a NUL is added when it fits). Returns SCRAM_CONTINUE, SCRAM_FAIL or SCRAM_PROTO. */
enum scram_result scram_server_first(struct scram_server *s, const char *mech,
                                     const struct scram_keys *keys, const uint8_t *cb_hash,
                                     size_t cb_len, const uint8_t *msg, size_t len, char *out,
                                     size_t outcap, size_t *outlen)
    __attribute__((warn_unused_result));

/* Processes the client-final-message: channel binding (must repeat the gs2 header and, with PLUS,
   the certificate hash: mismatch -> SCRAM_FAIL), nonce (mismatch -> SCRAM_PROTO), proof (wrong
   -> SCRAM_FAIL). On SCRAM_OK writes the server-final-message "v=<ServerSignature>" to out and
   keeps the recovered ClientKey (scram_server_client_key). Returns SCRAM_OK, SCRAM_FAIL or
   SCRAM_PROTO; also SCRAM_PROTO when called out of order. */
enum scram_result scram_server_final(struct scram_server *s, const uint8_t *msg, size_t len,
                                     char *out, size_t outcap, size_t *outlen)
    __attribute__((warn_unused_result));

/* After SCRAM_OK: copies the ClientKey proved by the client into client_key and returns true;
   false (nothing copied) otherwise. */
bool scram_server_client_key(const struct scram_server *s, uint8_t client_key[32])
    __attribute__((warn_unused_result));

/* Wipes all state (OPENSSL_cleanse); the struct may be reused after scram_server_init. */
void scram_server_clear(struct scram_server *s);

/* Client, password mode: zeroes *c and keeps a copy of password. Returns 0, -1 on out of memory.
   Always pair with scram_client_clear. */
int scram_client_init_password(struct scram_client *c, const char *password)
    __attribute__((warn_unused_result));

/* Client, keys mode: zeroes *c and keeps ClientKey and the verifier (salt, iterations, StoredKey,
   ServerKey). H(client_key) must equal keys->stored_key, else -1. The backend must hold the same
   verifier: scram_client_final checks that its salt and iterations match. Returns 0 or -1. */
int scram_client_init_keys(struct scram_client *c, const uint8_t client_key[32],
                           const struct scram_keys *keys) __attribute__((warn_unused_result));

/* Test hook only: fixes the client nonce (printable, no ',') instead of random bytes. */
void scram_client_set_nonce(struct scram_client *c, const char *nonce);

/* Writes the client-first-message "n,,n=,r=<nonce>" (no channel binding toward the backend; the
   user name comes from the startup packet, as libpq does). Returns 0 or -1 (order, space, RNG). */
int scram_client_first(struct scram_client *c, char *out, size_t outcap, size_t *outlen)
    __attribute__((warn_unused_result));

/* Processes the server-first-message and writes the client-final-message. Returns 0, or -1 on
   malformed input, a nonce that does not extend ours, iterations outside 1..SCRAM_MAX_ITER, or
   (keys mode) a salt/iteration count different from the verifier's. */
int scram_client_final(struct scram_client *c, const uint8_t *msg, size_t len, char *out,
                       size_t outcap, size_t *outlen) __attribute__((warn_unused_result));

/* Verifies the server-final-message "v=<ServerSignature>": 0 if it proves the server knows
   ServerKey, -1 otherwise (including "e=..." errors and malformed input). */
int scram_client_verify(struct scram_client *c, const uint8_t *msg, size_t len)
    __attribute__((warn_unused_result));

/* Wipes all state and frees the password copy. Safe on a zeroed struct. */
void scram_client_clear(struct scram_client *c);
