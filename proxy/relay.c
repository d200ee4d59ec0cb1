/*
 * relay: scan-and-forward over a connection's input buffer. The buffer holds three regions:
 * [rpos, scan) scanned and ready to forward, [scan, wpos) read but not yet scanned. A wanted
 * message is scanned only when it is whole in the buffer; anything else advances by its header
 * and then streams its body (skip) without being looked at.
 */
#include "pgtide/relay.h"

#include <string.h>

#include "pgtide/pkt.h"

void relay_conn_init(struct conn *c, int fd)
{
    memset(c, 0, sizeof(*c));
    c->sock.fd = fd;
    list_init(&c->ready);
}

void relay_conn_close(struct conn *c)
{
    buf_put(c->in);
    c->in = NULL;
    c->scan = c->skip = 0;
    sock_close(&c->sock);
}

void relay_read_on(struct ev_loop *loop, struct conn *c, bool on)
{
    if (!on) {
        if (ev_is_active(&c->rio))
            ev_io_stop(loop, &c->rio);
        return;
    }
    if (!ev_is_active(&c->rio))
        ev_io_start(loop, &c->rio);
    if (c->tls_more)
        ev_feed_event(loop, &c->rio, EV_READ);
}

bool relay_has_pending(const struct conn *c)
{
    return c->in != NULL && buf_len(c->in) > 0;
}

void relay_release_idle(struct conn *c)
{
    if (c->in != NULL && buf_len(c->in) == 0) {
        buf_put(c->in);
        c->in = NULL;
        c->scan = 0;
    }
}

ssize_t relay_read(struct conn *c)
{
    if (c->in == NULL) {
        c->in = buf_get();
        if (c->in == NULL)
            return RELAY_READ_NOMEM;
        c->scan = 0;
    }
    struct buf *b = c->in;
    if (c->scan < b->rpos)
        c->scan = b->rpos; /* bytes the owner consumed directly (startup, authentication) */
    if (buf_space(b) == 0 && b->rpos > 0) {
        uint32_t shift = b->rpos;
        buf_compact(b);
        c->scan -= shift;
    }
    if (buf_space(b) == 0)
        return 0;
    ssize_t n = sock_read(&c->sock, b->data + b->wpos, buf_space(b));
    /* TLS may have more than it handed over (read-ahead, or a record larger than the room):
       worth another read only after one that made progress, never after a WANT_READ */
    c->tls_more = n > 0 && c->sock.ssl != NULL && SSL_has_pending(c->sock.ssl);
    if (n > 0) {
        b->wpos += (uint32_t) n;
        c->bytes_in += (uint64_t) n;
        return n;
    }
    return n == SOCK_EOF ? RELAY_READ_EOF : n;
}

/* Removes the message at [c->scan, c->scan + total) from the buffer. */
static void cut_message(struct conn *c, uint32_t total)
{
    struct buf *b = c->in;
    if (c->scan == b->rpos) {
        b->rpos += total;
        c->scan += total;
        return;
    }
    memmove(b->data + c->scan, b->data + c->scan + total, b->wpos - c->scan - total);
    b->wpos -= total;
}

void relay_consume(struct conn *c)
{
    const uint8_t *p = c->in->data + c->scan;
    uint32_t len =
        ((uint32_t) p[1] << 24) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 8) | p[4];
    cut_message(c, len + 1);
}

/* Scans as far as possible. Returns RELAY_OK, RELAY_STOPPED or RELAY_BAD_INPUT. */
static enum relay_status scan(struct conn *c, uint32_t max_len, const struct relay_ops *ops,
                              void *arg)
{
    struct buf *b = c->in;
    while (c->scan < b->wpos) {
        if (c->skip > 0) {
            uint32_t n = b->wpos - c->scan;
            if (n > c->skip)
                n = c->skip;
            c->scan += n;
            c->skip -= n;
            continue;
        }
        struct pkt_hdr h;
        enum pkt_status st = pkt_read_hdr(b->data + c->scan, b->wpos - c->scan, max_len, &h);
        if (st == PKT_INCOMPLETE)
            break;
        if (st != PKT_OK)
            return RELAY_BAD_INPUT;
        uint32_t total = h.len + 1;
        bool whole = ops->wants(arg, h.type) && total <= BUF_SIZE;
        if (!whole) {
            if (ops->header != NULL)
                ops->header(arg, h.type, h.len);
            c->scan += 5;
            c->skip = h.len - 4;
            continue;
        }
        if (b->wpos - c->scan < total)
            break;
        enum relay_verdict v = ops->message(arg, h.type, b->data + c->scan + 5, h.len - 4);
        if (v == RELAY_STOP)
            return RELAY_STOPPED; /* the message stays at scan, unconsumed */
        if (v == RELAY_DROP)
            cut_message(c, total);
        else
            c->scan += total;
    }
    return RELAY_OK;
}

enum relay_status relay_pump(struct conn *src, struct sock *dst, uint32_t max_len,
                             const struct relay_ops *ops, void *arg)
{
    struct buf *b = src->in;
    if (b == NULL)
        return RELAY_OK;
    if (src->scan < b->rpos)
        src->scan = b->rpos; /* bytes consumed directly by the owner (startup, auth) */
    enum relay_status st = scan(src, max_len, ops, arg);
    if (dst != NULL) {
        while (b->rpos < src->scan) {
            ssize_t n = sock_write(dst, b->data + b->rpos, src->scan - b->rpos);
            if (n > 0) {
                b->rpos += (uint32_t) n;
                continue;
            }
            if (n == SOCK_AGAIN)
                return RELAY_BLOCKED;
            return RELAY_DST_ERROR;
        }
        if (b->rpos == b->wpos) {
            b->rpos = b->wpos = 0;
            src->scan = 0;
        }
    }
    return st;
}
