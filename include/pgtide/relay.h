/*
 * relay: the byte pump between a client and its server connection. Messages are streamed, not
 * collected: only the 5-byte headers are read, and only the few message types the caller asks
 * for are looked at whole (they are small). Bodies of other messages (a 1 GB DataRow, COPY data)
 * are forwarded as they arrive through a fixed-size buffer. When the receiver's socket is full
 * the pump reports RELAY_BLOCKED and the caller stops reading from the sender (back-pressure).
 */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "pgtide/buf.h"
#include "pgtide/list.h"
#include "pgtide/sock.h"

/* One end of a relay: a socket, its watchers, its input buffer and the scan state of the
   message stream read from it. Embedded in struct client and struct server. */
struct conn {
    struct sock sock;
    ev_io rio, wio;
    struct buf *in;         /* bytes read from this socket, not yet consumed; NULL while idle */
    uint32_t scan;          /* offset in in->data of the next byte not yet scanned (>= in->rpos) */
    uint32_t skip;          /* body bytes of a pass-through message still to be scanned */
    uint64_t bytes_in;      /* bytes read from this socket */
    bool tls_more;          /* TLS holds bytes beyond the last read: read again without a poll */
    bool is_server;         /* embedded in a struct server (else a struct client) */
    struct list_node ready; /* on proxy->ready: readable, its read waits for its turn */
};

enum relay_verdict {
    RELAY_FORWARD, /* pass the message on */
    RELAY_DROP,    /* remove it from the stream */
    RELAY_STOP     /* stop pumping now, leaving this message unconsumed: what precedes it is
                      still forwarded, and the handler is called again for it on the next pump */
};

struct relay_ops {
    /* Whether message type t must be seen whole before it is forwarded. */
    bool (*wants)(void *arg, uint8_t t);
    /* Optional: called once for every message that is streamed rather than seen whole (not
       wanted, or larger than the buffer), with its type and length field, in stream order. */
    void (*header)(void *arg, uint8_t t, uint32_t len);
    /* Called once per wanted message, in stream order. body points into the buffer. */
    enum relay_verdict (*message)(void *arg, uint8_t t, const uint8_t *body, uint32_t blen);
};

enum relay_status {
    RELAY_OK,        /* everything scanned was forwarded; read more when readable */
    RELAY_BLOCKED,   /* the destination is full: wait until it is writable */
    RELAY_STOPPED,   /* a handler returned RELAY_STOP */
    RELAY_BAD_INPUT, /* a length field was invalid or over max_len */
    RELAY_DST_ERROR  /* writing to the destination failed */
};

/* Scans src->in and writes what may be forwarded to dst. dst may be NULL to only scan (then
   nothing is written and everything scanned stays in the buffer). When the destination blocks,
   RELAY_BLOCKED wins over RELAY_STOPPED (the stop is seen again on the next pump). */
enum relay_status relay_pump(struct conn *src, struct sock *dst, uint32_t max_len,
                             const struct relay_ops *ops, void *arg);

/* Reads once from c into its buffer (taking one from the pool if it has none). Returns bytes
   read, 0 when the buffer is full, RELAY_READ_EOF, RELAY_READ_NOMEM, SOCK_AGAIN or SOCK_ERROR. */
#define RELAY_READ_EOF   (-3)
#define RELAY_READ_NOMEM (-4)
ssize_t relay_read(struct conn *c);

/* Starts or stops reading from c. While TLS holds decrypted bytes that the socket no longer
   signals (a record larger than the buffer's room, or read-ahead), a read event is fed so that
   they are not left waiting for the next packet. */
void relay_read_on(struct ev_loop *loop, struct conn *c, bool on);

/* True when c holds bytes that were read but not yet forwarded. */
bool relay_has_pending(const struct conn *c);

/* Drops the message at c->scan (whole in the buffer, as a handler saw it). */
void relay_consume(struct conn *c);

/* Gives c's buffer back to the pool if it holds nothing. */
void relay_release_idle(struct conn *c);

/* Initialises c around a connected descriptor (watchers are set up by the owner). */
void relay_conn_init(struct conn *c, int fd);

/* Frees the buffer and closes the socket; stops nothing (the owner stops its watchers). */
void relay_conn_close(struct conn *c);
