/*
 * tls: OpenSSL setup for both directions. Server contexts terminate client TLS (TLS 1.2 and
 * up, forward-secret AEAD ciphers, optional client certificates checked against a CA); client
 * contexts are for pgtide's own TCP connections to a backend. The module also creates the
 * self-signed certificate used when no certificate is configured, computes the
 * tls-server-end-point channel binding data for SCRAM-SHA-256-PLUS, and reads the verified
 * common name of a client certificate for cert authentication. sslmode values are those of
 * enum config_sslmode (SSLMODE_DISABLE .. SSLMODE_VERIFY_FULL) in pgtide/config.h.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

/* Server context for client connections: TLS 1.2 minimum, compression and renegotiation off,
   certificate chain from cert_file and private key from key_file (PEM, must match). When
   ca_file is non-empty, clients are asked for a certificate and it is verified against that
   CA: with sslmode verify-ca or verify-full a client without a valid certificate fails the
   handshake; with any other sslmode the handshake goes on and the result is only recorded
   (tls_peer_cn() then refuses an unverified certificate). ca_file may be NULL or "".
   Returns a context owned by the caller (SSL_CTX_free), or NULL with a message in err. */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, const char *ca_file,
                            int sslmode, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Client context for pgtide -> backend over TCP: TLS 1.2 minimum. For verify-ca and
   verify-full the server certificate must chain to ca_file (or, when ca_file is NULL or "",
   to the system's default trust store) or the handshake fails; other modes do not verify.
   Host name checking for verify-full is per connection: see tls_client_set_host().
   Returns a context owned by the caller, or NULL with a message in err. */
SSL_CTX *tls_client_ctx_new(const char *ca_file, int sslmode, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Prepares a client SSL for the server host it connects to: sends SNI when host is a name
   (not an IP address) and, when sslmode is verify-full, makes the handshake fail unless the
   certificate matches host (DNS name or IP address in subjectAltName, else CN). Returns 0, or
   -1 on failure (out of memory or an empty host). */
int tls_client_set_host(SSL *ssl, const char *host, int sslmode)
    __attribute__((warn_unused_result));

/* Creates a self-signed P-256 certificate (CN=pgtide, subjectAltName DNS:localhost,
   IP:127.0.0.1, IP:::1, valid 10 years, signed with SHA-256) and its key when neither file
   exists yet. Each file is written to a temp file beside it, fsync'ed, renamed into place and
   the directory fsync'ed; the key is mode 0600 and is written first. Returns 0 when both files
   exist afterwards (created now or already there), -1 with a message in err otherwise,
   including when exactly one of the two exists (nothing is overwritten). */
int tls_make_self_signed(const char *cert_file, const char *key_file, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* tls-server-end-point channel binding data (RFC 5929) for a server-side SSL after the
   handshake: the hash of our own certificate with the hash of its signature algorithm,
   SHA-256 when that is MD5 or SHA-1. Returns the length written to out (at most 64), or -1
   when there is no certificate or its signature has no usable hash (e.g. Ed25519). */
int tls_server_end_point(SSL *ssl, uint8_t out[64]) __attribute__((warn_unused_result));

/* Copies the common name of the peer's certificate into out (NUL-terminated). Returns 0, or
   -1 when there is no peer certificate, it did not verify, it has no CN, the CN holds a NUL
   byte, or it does not fit in outlen bytes. */
int tls_peer_cn(SSL *ssl, char *out, size_t outlen) __attribute__((warn_unused_result));

/* Writes a human-readable description of the OpenSSL error queue (earliest error first) into
   buf, then clears the queue. Writes "no OpenSSL error" when the queue is empty. Returns buf. */
const char *tls_error_string(char *buf, size_t len);
