/*
 * sock: one non-blocking stream socket, plain or TLS, behind a single read/write interface.
 * The relay never needs to know whether a peer speaks TLS; TLS's "want read while writing"
 * cases are reported so the caller can arm the right watcher.
 */
#pragma once

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct sock {
    SSL *ssl;        /* NULL for plain sockets */
    int fd;          /* after ssl: the struct takes 16 bytes, not 24 */
    bool want_read;  /* last TLS call needs the socket readable */
    bool want_write; /* last TLS call needs the socket writable */
};

enum { SOCK_AGAIN = -2, SOCK_ERROR = -1, SOCK_EOF = 0 };

/* Reads up to len bytes. Returns bytes read (> 0), SOCK_EOF, SOCK_AGAIN or SOCK_ERROR (errno or
   TLS error). */
ssize_t sock_read(struct sock *s, void *p, size_t len);

/* Writes up to len bytes. Returns bytes written (> 0), SOCK_AGAIN or SOCK_ERROR. */
ssize_t sock_write(struct sock *s, const void *p, size_t len);

/* Drives a TLS handshake (server side when accept is true). Returns 1 done, SOCK_AGAIN, or
   SOCK_ERROR. */
int sock_tls_handshake(struct sock *s, bool accept);

/* Starts TLS on s with a new SSL from ctx. Returns 0 or -1. */
int sock_tls_start(struct sock *s, SSL_CTX *ctx);

/* Frees TLS state and closes the descriptor (idempotent). */
void sock_close(struct sock *s);

/* Sets O_NONBLOCK, FD_CLOEXEC, and for TCP sockets TCP_NODELAY and keepalive. 0 or -1. */
int sock_setup(int fd, bool tcp);
