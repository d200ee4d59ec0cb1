/*
 * Check suite for the relay pump (proxy/relay.c). Each test wires a struct conn around one end
 * of a non-blocking AF_UNIX socketpair (the test writes protocol messages built with the pkt
 * builder into the other end) and a destination struct sock around one end of a second pair
 * (the test reads what the pump forwarded from the other end). It checks that the forwarded
 * stream is byte-exact whatever the read boundaries (batches, every split offset, a 1 MB DataRow
 * through the 32 KB buffer), that the ops callbacks see wanted messages whole and exactly once,
 * that DROP/STOP verdicts act on exactly one message, invalid lengths, back-pressure from a full
 * destination, a closed destination or source, and buffer release when idle.
 */
#include "pgtide/buf.h"
#include "pgtide/pkt.h"
#include "pgtide/relay.h"
#include "pgtide/sock.h"
#include "unit.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LEN   (64u * 1024 * 1024)
#define MAX_CALLS 4096

/* ---- a byte vector ---- */

struct vec {
    uint8_t *p;
    size_t len, cap;
};

static void vec_add(struct vec *v, const void *p, size_t n)
{
    if (v->len + n > v->cap) {
        size_t cap = v->cap ? v->cap : 1024;
        while (cap < v->len + n)
            cap *= 2;
        v->p = realloc(v->p, cap);
        ck_assert_ptr_nonnull(v->p);
        v->cap = cap;
    }
    memcpy(v->p + v->len, p, n);
    v->len += n;
}

static void vec_free(struct vec *v)
{
    free(v->p);
    memset(v, 0, sizeof(*v));
}

/* ---- recording relay_ops ---- */

struct call {
    uint8_t type;
    uint32_t len;  /* header: length field; message: body length */
    uint8_t *body; /* message: heap copy of the body */
};

struct rec {
    bool want[256];
    enum relay_verdict verdict[256];
    int stops[256]; /* RELAY_STOP the first stops[t] offers of type t, then verdict[t] */
    struct call hdr[MAX_CALLS];
    int nhdr;
    struct call msg[MAX_CALLS];
    int nmsg;
};

static bool rec_wants(void *arg, uint8_t t)
{
    struct rec *r = arg;
    return r->want[t];
}

static void rec_header(void *arg, uint8_t t, uint32_t len)
{
    struct rec *r = arg;
    ck_assert_int_lt(r->nhdr, MAX_CALLS);
    r->hdr[r->nhdr].type = t;
    r->hdr[r->nhdr].len = len;
    r->nhdr++;
}

static enum relay_verdict rec_message(void *arg, uint8_t t, const uint8_t *body, uint32_t blen)
{
    struct rec *r = arg;
    ck_assert_msg(r->want[t], "message() called for unwanted type '%c'", t);
    ck_assert_int_lt(r->nmsg, MAX_CALLS);
    struct call *c = &r->msg[r->nmsg++];
    c->type = t;
    c->len = blen;
    c->body = malloc(blen ? blen : 1);
    ck_assert_ptr_nonnull(c->body);
    memcpy(c->body, body, blen);
    if (r->stops[t] > 0) {
        r->stops[t]--;
        return RELAY_STOP;
    }
    return r->verdict[t];
}

static const struct relay_ops rec_ops = {rec_wants, rec_header, rec_message};
static const struct relay_ops rec_ops_nohdr = {rec_wants, NULL, rec_message};

static void rec_reset(struct rec *r)
{
    for (int i = 0; i < r->nmsg; i++)
        free(r->msg[i].body);
    r->nhdr = r->nmsg = 0;
}

static struct rec *rec_new(const char *wanted)
{
    struct rec *r = calloc(1, sizeof(*r));
    ck_assert_ptr_nonnull(r);
    for (const char *w = wanted; *w; w++)
        r->want[(uint8_t) *w] = true;
    return r;
}

static void rec_free(struct rec *r)
{
    rec_reset(r);
    free(r);
}

/* ---- the fixture: source pair and destination pair ---- */

struct fix {
    int feed;        /* the test writes the source stream here */
    struct conn src; /* relay end of the source pair */
    struct sock dst; /* relay end of the destination pair */
    int sink;        /* the test reads the forwarded stream here */
    struct vec out;  /* everything read from sink */
};

static void fix_init(struct fix *f)
{
    int a[2], b[2];
    memset(f, 0, sizeof(*f));
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(sock_setup(a[i], false), 0);
        ck_assert_int_eq(sock_setup(b[i], false), 0);
    }
    f->feed = a[0];
    relay_conn_init(&f->src, a[1]);
    f->dst.fd = b[0];
    f->sink = b[1];
}

static void fix_close(struct fix *f)
{
    relay_conn_close(&f->src);
    if (f->dst.fd >= 0)
        close(f->dst.fd);
    if (f->feed >= 0)
        close(f->feed);
    if (f->sink >= 0)
        close(f->sink);
    vec_free(&f->out);
}

/* Writes all n bytes to the source (they must fit in the socket buffer). */
static void feed(struct fix *f, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t w = write(f->feed, q, n);
        ck_assert_msg(w > 0, "feed: %s", strerror(errno));
        q += w;
        n -= (size_t) w;
    }
}

/* Reads everything that is available at the destination into f->out. */
static size_t drain(struct fix *f)
{
    uint8_t tmp[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(f->sink, tmp, sizeof(tmp));
        if (n > 0) {
            vec_add(&f->out, tmp, (size_t) n);
            total += (size_t) n;
            continue;
        }
        ck_assert(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        return total;
    }
}

/* Reads from the source until it has nothing more (or the buffer is full); returns the total. */
static ssize_t read_all(struct fix *f)
{
    ssize_t total = 0;
    for (;;) {
        ssize_t n = relay_read(&f->src);
        if (n > 0) {
            total += n;
            continue;
        }
        ck_assert_msg(n == 0 || n == SOCK_AGAIN, "relay_read returned %zd", n);
        return total;
    }
}

/* Streams in[0..len) through the relay, writing at most chunk bytes to the source per round,
   and checks that the destination gets exactly the same bytes. */
static void stream_through(struct fix *f, const uint8_t *in, size_t len, size_t chunk,
                           const struct relay_ops *ops, void *arg)
{
    size_t off = 0;
    for (int rounds = 0;; rounds++) {
        ck_assert_int_lt(rounds, 1000000);
        if (off < len) {
            size_t n = len - off < chunk ? len - off : chunk;
            ssize_t w = write(f->feed, in + off, n);
            if (w > 0)
                off += (size_t) w;
            else
                ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
        }
        ssize_t got = read_all(f);
        enum relay_status st = relay_pump(&f->src, &f->dst, MAX_LEN, ops, arg);
        ck_assert_msg(st == RELAY_OK || st == RELAY_BLOCKED, "pump status %d", st);
        drain(f);
        if (off == len && got == 0 && st == RELAY_OK && !relay_has_pending(&f->src))
            break;
    }
    ck_assert_uint_eq(f->out.len, len);
    ck_assert(memcmp(f->out.p, in, len) == 0);
}

/* ---- message builders ---- */

static void put_msg(struct pkt_builder *b, uint8_t type, const char *text)
{
    pkt_begin(b, type);
    pkt_put_str(b, text);
    pkt_end(b);
}

/* A DataRow with one column of n patterned bytes (n + 11 bytes in all). */
static void put_big_row(struct pkt_builder *b, size_t n)
{
    pkt_begin(b, 'D');
    pkt_put_u16(b, 1);
    pkt_put_u32(b, (uint32_t) n);
    uint8_t chunk[4096];
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof(chunk) ? n - done : sizeof(chunk);
        for (size_t i = 0; i < k; i++)
            chunk[i] = (uint8_t) ((done + i) * 131 + ((done + i) >> 12));
        pkt_put_bytes(b, chunk, k);
        done += k;
    }
    pkt_end(b);
}

/* Checks that the header calls recorded in r are exactly the streamed messages of s[0..n)
   (those not seen whole: not wanted, or larger than the buffer), in order. */
static void check_headers(const struct rec *r, const uint8_t *s, size_t n)
{
    int i = 0;
    size_t off = 0;
    while (off < n) {
        struct pkt_hdr h;
        ck_assert_int_eq(pkt_read_hdr(s + off, n - off, MAX_LEN, &h), PKT_OK);
        if (r->want[h.type] && (size_t) h.len + 1 <= BUF_SIZE) {
            off += 1 + (size_t) h.len;
            continue;
        }
        ck_assert_int_lt(i, r->nhdr);
        ck_assert_int_eq(r->hdr[i].type, h.type);
        ck_assert_uint_eq(r->hdr[i].len, h.len);
        i++;
        off += 1 + (size_t) h.len;
    }
    ck_assert_int_eq(r->nhdr, i);
}

/* Checks that message() saw exactly the wanted messages of s[0..n), whole, in order. */
static void check_messages(const struct rec *r, const uint8_t *s, size_t n)
{
    int i = 0;
    size_t off = 0;
    while (off < n) {
        struct pkt_hdr h;
        ck_assert_int_eq(pkt_read_hdr(s + off, n - off, MAX_LEN, &h), PKT_OK);
        if (r->want[h.type]) {
            ck_assert_int_lt(i, r->nmsg);
            ck_assert_int_eq(r->msg[i].type, h.type);
            ck_assert_uint_eq(r->msg[i].len, h.len - 4);
            ck_assert(memcmp(r->msg[i].body, s + off + 5, h.len - 4) == 0);
            i++;
        }
        off += 1 + (size_t) h.len;
    }
    ck_assert_int_eq(r->nmsg, i);
}

/* A mixed stream: wanted Z and S between unwanted T, D, C. */
static void build_mixed(struct pkt_builder *b)
{
    const char *cols[] = {"a", "bb"};
    const char *vals[] = {"1", NULL};
    pkt_write_param_status(b, "application_name", "x");
    pkt_write_row_desc(b, 2, cols);
    pkt_write_data_row(b, 2, vals);
    pkt_write_command_complete(b, "SELECT 1");
    pkt_write_ready(b, 'I');
    put_msg(b, 'N', "");
    pkt_write_ready(b, 'T');
    ck_assert(!b->failed);
}

/* ---- tests ---- */

START_TEST(test_batch_of_small_messages)
{
    struct fix f;
    struct rec *r = rec_new("Z");
    struct pkt_builder b;
    pkt_builder_init_dyn(&b, 0);
    char text[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(text, sizeof(text), "SELECT %d", i);
        if (i % 10 == 9)
            pkt_write_ready(&b, 'I');
        else
            pkt_write_command_complete(&b, text);
    }
    ck_assert(!b.failed);
    ck_assert_uint_lt(b.len, BUF_SIZE);
    fix_init(&f);
    feed(&f, b.buf, b.len);
    /* one read takes the whole batch, one pump forwards it all */
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
    ck_assert(!relay_has_pending(&f.src));
    ck_assert_uint_eq(drain(&f), b.len);
    ck_assert(memcmp(f.out.p, b.buf, b.len) == 0);
    ck_assert_int_eq(r->nhdr, 900); /* the 100 wanted ones are seen whole instead */
    ck_assert_int_eq(r->nmsg, 100);
    check_headers(r, b.buf, b.len);
    check_messages(r, b.buf, b.len);
    ck_assert_uint_eq(f.src.bytes_in, b.len);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* The mixed stream split into two reads at every byte offset. */
START_TEST(test_split_at_every_offset)
{
    struct pkt_builder b;
    pkt_builder_init_dyn(&b, 0);
    build_mixed(&b);
    for (size_t k = 1; k < b.len; k++) {
        struct fix f;
        struct rec *r = rec_new("ZS");
        fix_init(&f);
        feed(&f, b.buf, k);
        ck_assert_int_eq(relay_read(&f.src), (ssize_t) k);
        ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
        drain(&f);
        /* only whole wanted messages were offered, and nothing past the cut was forwarded */
        ck_assert_uint_le(f.out.len, k);
        ck_assert(f.out.len == 0 || memcmp(f.out.p, b.buf, f.out.len) == 0);
        for (int i = 0; i < r->nmsg; i++)
            ck_assert(r->msg[i].type == 'Z' || r->msg[i].type == 'S');
        feed(&f, b.buf + k, b.len - k);
        ck_assert_int_eq(relay_read(&f.src), (ssize_t) (b.len - k));
        ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
        drain(&f);
        ck_assert_msg(f.out.len == b.len && memcmp(f.out.p, b.buf, b.len) == 0,
                      "stream changed when split at %zu", k);
        check_headers(r, b.buf, b.len);
        check_messages(r, b.buf, b.len);
        ck_assert(!relay_has_pending(&f.src));
        fix_close(&f);
        rec_free(r);
    }
    pkt_builder_free(&b);
}
END_TEST

/* The mixed stream fed one byte per read. */
START_TEST(test_byte_by_byte)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("ZS");
    pkt_builder_init_dyn(&b, 0);
    build_mixed(&b);
    fix_init(&f);
    for (size_t i = 0; i < b.len; i++) {
        feed(&f, b.buf + i, 1);
        ck_assert_int_eq(relay_read(&f.src), 1);
        ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
        drain(&f);
    }
    ck_assert_uint_eq(f.out.len, b.len);
    ck_assert(memcmp(f.out.p, b.buf, b.len) == 0);
    check_headers(r, b.buf, b.len);
    check_messages(r, b.buf, b.len);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* A 1 MB DataRow between small messages streams through the 32 KB buffer unchanged; the
   small wanted messages around it are still seen whole. */
START_TEST(test_large_message_streams)
{
    static const size_t chunks[] = {1, 7, 4096, 65536, 1u << 20};
    struct pkt_builder b;
    pkt_builder_init_dyn(&b, 0);
    pkt_write_ready(&b, 'I');
    put_big_row(&b, 1u << 20);
    pkt_write_command_complete(&b, "SELECT 1");
    pkt_write_ready(&b, 'T');
    ck_assert(!b.failed);
    ck_assert_uint_gt(b.len, 32 * BUF_SIZE);
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        if (chunks[i] == 1)
            continue; /* 1 MB one byte at a time is too slow; 7 covers odd boundaries */
        struct fix f;
        struct rec *r = rec_new("Z");
        fix_init(&f);
        stream_through(&f, b.buf, b.len, chunks[i], &rec_ops, r);
        check_headers(r, b.buf, b.len);
        ck_assert_int_eq(r->nhdr, 2); /* the DataRow and the CommandComplete */
        ck_assert_int_eq(r->hdr[0].type, 'D');
        ck_assert_uint_eq(r->hdr[0].len, (1u << 20) + 10);
        check_messages(r, b.buf, b.len);
        ck_assert_int_eq(r->nmsg, 2);
        fix_close(&f);
        rec_free(r);
    }
    pkt_builder_free(&b);
}
END_TEST

/* A wanted type larger than the buffer cannot be offered whole: it must still pass unchanged
   (streamed), with its header reported once, and message() must never see a partial body. */
START_TEST(test_wanted_larger_than_buffer_streams)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("DZ");
    pkt_builder_init_dyn(&b, 0);
    put_big_row(&b, 3 * BUF_SIZE);
    pkt_write_ready(&b, 'I');
    ck_assert(!b.failed);
    fix_init(&f);
    stream_through(&f, b.buf, b.len, 5000, &rec_ops, r);
    check_headers(r, b.buf, b.len);
    for (int i = 0; i < r->nmsg; i++)
        if (r->msg[i].type == 'D')
            ck_assert_uint_eq(r->msg[i].len, 3 * BUF_SIZE + 6);
    ck_assert_int_eq(r->msg[r->nmsg - 1].type, 'Z');
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* Wanted messages just under the buffer size, behind bytes still in the buffer, are offered
   whole once the buffer is compacted. */
START_TEST(test_wanted_near_buffer_size)
{
    struct pkt_builder b;
    pkt_builder_init_dyn(&b, 0);
    char *big = malloc(BUF_SIZE - 64);
    ck_assert_ptr_nonnull(big);
    memset(big, 'q', BUF_SIZE - 65);
    big[BUF_SIZE - 65] = '\0';
    for (int i = 0; i < 5; i++) {
        pkt_write_command_complete(&b, "INSERT 0 1");
        put_msg(&b, 'S', big);
    }
    ck_assert(!b.failed);
    free(big);
    for (size_t chunk = 1000; chunk <= 21000; chunk += 5000) {
        struct fix f;
        struct rec *r = rec_new("S");
        fix_init(&f);
        stream_through(&f, b.buf, b.len, chunk, &rec_ops, r);
        check_headers(r, b.buf, b.len);
        check_messages(r, b.buf, b.len);
        ck_assert_int_eq(r->nmsg, 5);
        fix_close(&f);
        rec_free(r);
    }
    pkt_builder_free(&b);
}
END_TEST

START_TEST(test_unwanted_never_offered)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("");
    pkt_builder_init_dyn(&b, 0);
    build_mixed(&b);
    fix_init(&f);
    feed(&f, b.buf, b.len);
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
    drain(&f);
    ck_assert_int_eq(r->nmsg, 0);
    check_headers(r, b.buf, b.len);
    ck_assert_uint_eq(f.out.len, b.len);
    ck_assert(memcmp(f.out.p, b.buf, b.len) == 0);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* The header callback is optional. */
START_TEST(test_no_header_callback)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("Z");
    pkt_builder_init_dyn(&b, 0);
    build_mixed(&b);
    fix_init(&f);
    stream_through(&f, b.buf, b.len, 3, &rec_ops_nohdr, r);
    ck_assert_int_eq(r->nhdr, 0);
    check_messages(r, b.buf, b.len);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* RELAY_DROP removes exactly the dropped message, wherever it sits in the buffer. */
START_TEST(test_drop)
{
    struct pkt_builder all, want;
    pkt_builder_init_dyn(&all, 0);
    pkt_builder_init_dyn(&want, 0);
    pkt_write_command_complete(&all, "A");
    pkt_write_command_complete(&want, "A");
    put_msg(&all, 'N', "drop me");
    pkt_write_ready(&all, 'I');
    pkt_write_ready(&want, 'I');
    put_msg(&all, 'N', "and me");
    put_msg(&all, 'N', "and me too");
    pkt_write_command_complete(&all, "B");
    pkt_write_command_complete(&want, "B");
    put_msg(&all, 'N', "last");
    ck_assert(!all.failed && !want.failed);
    /* in one read, and split at every offset */
    for (size_t k = 0; k < all.len; k++) {
        struct fix f;
        struct rec *r = rec_new("NZ");
        r->verdict['N'] = RELAY_DROP;
        fix_init(&f);
        if (k > 0) {
            feed(&f, all.buf, k);
            ck_assert_int_eq(relay_read(&f.src), (ssize_t) k);
            ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
        }
        feed(&f, all.buf + k, all.len - k);
        ck_assert_int_eq(relay_read(&f.src), (ssize_t) (all.len - k));
        ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
        drain(&f);
        ck_assert_msg(f.out.len == want.len && memcmp(f.out.p, want.buf, want.len) == 0,
                      "drop with a read split at %zu", k);
        ck_assert(!relay_has_pending(&f.src));
        /* dropped messages count as passed for header() */
        check_headers(r, all.buf, all.len);
        check_messages(r, all.buf, all.len);
        fix_close(&f);
        rec_free(r);
    }
    pkt_builder_free(&all);
    pkt_builder_free(&want);
}
END_TEST

/* A message dropped behind bytes that could not be written yet (scan ahead of rpos). */
START_TEST(test_drop_behind_blocked_bytes)
{
    struct pkt_builder b, want;
    struct fix f;
    struct rec *r = rec_new("N");
    r->verdict['N'] = RELAY_DROP;
    pkt_builder_init_dyn(&b, 0);
    pkt_builder_init_dyn(&want, 0);
    put_big_row(&b, 20000);
    put_big_row(&want, 20000);
    put_msg(&b, 'N', "gone");
    pkt_write_ready(&b, 'I');
    pkt_write_ready(&want, 'I');
    ck_assert(!b.failed && !want.failed);
    fix_init(&f);
    int sz = 1;
    ck_assert_int_eq(setsockopt(f.dst.fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
    feed(&f, b.buf, b.len);
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_BLOCKED);
    for (int i = 0; i < 10000 && relay_has_pending(&f.src); i++) {
        drain(&f);
        enum relay_status st = relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r);
        ck_assert(st == RELAY_OK || st == RELAY_BLOCKED);
    }
    drain(&f);
    ck_assert_uint_eq(f.out.len, want.len);
    ck_assert(memcmp(f.out.p, want.buf, want.len) == 0);
    ck_assert_int_eq(r->nmsg, 1);
    fix_close(&f);
    pkt_builder_free(&b);
    pkt_builder_free(&want);
    rec_free(r);
}
END_TEST

/* RELAY_STOP: what precedes is forwarded, the message stays, and is offered again (once per
   pump) until it is let through; header() sees it only once, when it passes. */
START_TEST(test_stop)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("X");
    r->stops['X'] = 2;
    pkt_builder_init_dyn(&b, 0);
    pkt_write_query(&b, "SELECT 1");
    pkt_write_sync(&b);
    size_t before = b.len;
    pkt_write_terminate(&b);
    pkt_write_query(&b, "SELECT 2");
    ck_assert(!b.failed);
    fix_init(&f);
    feed(&f, b.buf, b.len);
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);

    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_STOPPED);
    drain(&f);
    ck_assert_uint_eq(f.out.len, before);
    ck_assert(memcmp(f.out.p, b.buf, before) == 0);
    ck_assert_int_eq(r->nmsg, 1);
    ck_assert_int_eq(r->nhdr, 2); /* Q and S, not the stopped X */
    ck_assert(relay_has_pending(&f.src));

    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_STOPPED);
    ck_assert_uint_eq(drain(&f), 0);
    ck_assert_int_eq(r->nmsg, 2);
    ck_assert_int_eq(r->msg[1].type, 'X');
    ck_assert_uint_eq(r->msg[1].len, 0);
    ck_assert_int_eq(r->nhdr, 2);

    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
    drain(&f);
    ck_assert_uint_eq(f.out.len, b.len);
    ck_assert(memcmp(f.out.p, b.buf, b.len) == 0);
    ck_assert_int_eq(r->nmsg, 3);
    check_headers(r, b.buf, b.len);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* After a STOP the owner may remove the message with relay_consume(). */
START_TEST(test_stop_then_consume)
{
    struct pkt_builder b, want;
    struct fix f;
    struct rec *r = rec_new("X");
    r->stops['X'] = 1;
    pkt_builder_init_dyn(&b, 0);
    pkt_builder_init_dyn(&want, 0);
    pkt_write_query(&b, "SELECT 1");
    pkt_write_query(&want, "SELECT 1");
    put_msg(&b, 'X', "junk");
    pkt_write_sync(&b);
    pkt_write_sync(&want);
    ck_assert(!b.failed && !want.failed);
    fix_init(&f);
    feed(&f, b.buf, b.len);
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_STOPPED);
    relay_consume(&f.src);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
    drain(&f);
    ck_assert_uint_eq(f.out.len, want.len);
    ck_assert(memcmp(f.out.p, want.buf, want.len) == 0);
    ck_assert_int_eq(r->nmsg, 1);
    ck_assert(!relay_has_pending(&f.src));
    fix_close(&f);
    pkt_builder_free(&b);
    pkt_builder_free(&want);
    rec_free(r);
}
END_TEST

/* With dst NULL the pump only scans: nothing is consumed, the handlers still run. */
START_TEST(test_scan_only)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("Z");
    pkt_builder_init_dyn(&b, 0);
    build_mixed(&b);
    fix_init(&f);
    feed(&f, b.buf, b.len);
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
    ck_assert_int_eq(relay_pump(&f.src, NULL, MAX_LEN, &rec_ops, r), RELAY_OK);
    ck_assert(relay_has_pending(&f.src));
    ck_assert_uint_eq(buf_len(f.src.in), b.len);
    check_headers(r, b.buf, b.len);
    check_messages(r, b.buf, b.len);
    ck_assert_uint_eq(drain(&f), 0);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* Length fields < 4 or > max_len are refused; what precedes them still goes through. */
START_TEST(test_bad_length)
{
    static const uint32_t bad[] = {0, 1, 3, 1001, 0x80000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pkt_builder b;
        struct fix f;
        struct rec *r = rec_new("Z");
        pkt_builder_init_dyn(&b, 0);
        pkt_write_ready(&b, 'I');
        size_t good = b.len;
        uint8_t h[9] = {'C',
                        (uint8_t) (bad[i] >> 24),
                        (uint8_t) (bad[i] >> 16),
                        (uint8_t) (bad[i] >> 8),
                        (uint8_t) bad[i],
                        'x',
                        'y',
                        'z',
                        0};
        pkt_put_bytes(&b, h, sizeof(h));
        ck_assert(!b.failed);
        fix_init(&f);
        feed(&f, b.buf, b.len);
        ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
        ck_assert_int_eq(relay_pump(&f.src, &f.dst, 1000, &rec_ops, r), RELAY_BAD_INPUT);
        drain(&f);
        ck_assert_uint_eq(f.out.len, good);
        ck_assert_int_eq(r->nmsg, 1);
        ck_assert_int_eq(r->nhdr, 0); /* the ReadyForQuery is wanted: seen whole */
        /* it stays refused */
        ck_assert_int_eq(relay_pump(&f.src, &f.dst, 1000, &rec_ops, r), RELAY_BAD_INPUT);
        fix_close(&f);
        pkt_builder_free(&b);
        rec_free(r);
    }
}
END_TEST

/* A length field equal to max_len is accepted, one more is refused. */
START_TEST(test_max_len_boundary)
{
    uint32_t max = 4 + 100;
    struct pkt_builder b;
    pkt_builder_init_dyn(&b, 0);
    pkt_begin(&b, 'd');
    for (int i = 0; i < 100; i++)
        pkt_put_u8(&b, (uint8_t) i);
    pkt_end(&b);
    ck_assert(!b.failed);
    for (int extra = 0; extra < 2; extra++) {
        struct fix f;
        struct rec *r = rec_new("");
        fix_init(&f);
        feed(&f, b.buf, b.len);
        ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
        enum relay_status st = relay_pump(&f.src, &f.dst, max - (uint32_t) extra, &rec_ops, r);
        ck_assert_int_eq(st, extra ? RELAY_BAD_INPUT : RELAY_OK);
        ck_assert_uint_eq(drain(&f), extra ? 0 : b.len);
        fix_close(&f);
        rec_free(r);
    }
    pkt_builder_free(&b);
}
END_TEST

/* A destination that does not read: the pump reports RELAY_BLOCKED, keeps what it could not
   write, the source stops being read once the buffer is full; after the destination drains,
   further pumps finish the stream byte-exact. */
START_TEST(test_back_pressure)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("Z");
    pkt_builder_init_dyn(&b, 0);
    pkt_write_ready(&b, 'I');
    put_big_row(&b, 1u << 20);
    pkt_write_ready(&b, 'I');
    ck_assert(!b.failed);
    fix_init(&f);
    int sz = 4096;
    ck_assert_int_eq(setsockopt(f.dst.fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);

    /* phase 1: never read the destination */
    size_t off = 0;
    enum relay_status st = RELAY_OK;
    int blocked = 0;
    for (int i = 0; i < 100000 && blocked < 3; i++) {
        ssize_t w = write(f.feed, b.buf + off, b.len - off < 8192 ? b.len - off : 8192);
        if (w > 0)
            off += (size_t) w;
        (void) read_all(&f);
        st = relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r);
        ck_assert(st == RELAY_OK || st == RELAY_BLOCKED);
        if (st == RELAY_BLOCKED && buf_space(f.src.in) == 0 && f.src.in->rpos == 0)
            blocked++;
    }
    ck_assert_int_eq(st, RELAY_BLOCKED);
    ck_assert(relay_has_pending(&f.src));
    /* the buffer is full and nothing of it can be forwarded: reading stops */
    ck_assert_uint_eq(buf_space(f.src.in), 0);
    ck_assert_int_eq(relay_read(&f.src), 0);
    uint64_t in_before = f.src.bytes_in;
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_BLOCKED);
    ck_assert_int_eq(relay_read(&f.src), 0);
    ck_assert_uint_eq(f.src.bytes_in, in_before);
    ck_assert_uint_lt(in_before, b.len); /* the relay did not swallow the whole stream */

    /* phase 2: drain and finish */
    for (int i = 0; i < 1000000; i++) {
        if (off < b.len) {
            ssize_t w = write(f.feed, b.buf + off, b.len - off);
            if (w > 0)
                off += (size_t) w;
        }
        drain(&f);
        ssize_t got = read_all(&f);
        st = relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r);
        ck_assert(st == RELAY_OK || st == RELAY_BLOCKED);
        if (off == b.len && got == 0 && st == RELAY_OK && !relay_has_pending(&f.src))
            break;
    }
    drain(&f);
    ck_assert_uint_eq(f.out.len, b.len);
    ck_assert(memcmp(f.out.p, b.buf, b.len) == 0);
    check_headers(r, b.buf, b.len);
    check_messages(r, b.buf, b.len);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* A blocked destination wins over a STOP; the stop is seen again on the next pump. */
START_TEST(test_blocked_wins_over_stop)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("X");
    r->stops['X'] = 1000000;
    pkt_builder_init_dyn(&b, 0);
    put_big_row(&b, 30000);
    size_t before = b.len;
    pkt_write_terminate(&b);
    ck_assert(!b.failed);
    fix_init(&f);
    int sz = 1;
    ck_assert_int_eq(setsockopt(f.dst.fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
    feed(&f, b.buf, b.len);
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_BLOCKED);
    enum relay_status st = RELAY_BLOCKED;
    for (int i = 0; i < 10000 && st == RELAY_BLOCKED; i++) {
        drain(&f);
        st = relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r);
    }
    ck_assert_int_eq(st, RELAY_STOPPED);
    drain(&f);
    ck_assert_uint_eq(f.out.len, before);
    ck_assert(memcmp(f.out.p, b.buf, before) == 0);
    ck_assert(relay_has_pending(&f.src));
    ck_assert_uint_eq(buf_len(f.src.in), b.len - before);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

START_TEST(test_dst_closed)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("");
    pkt_builder_init_dyn(&b, 0);
    build_mixed(&b);
    fix_init(&f);
    close(f.sink);
    f.sink = -1;
    feed(&f, b.buf, b.len);
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_DST_ERROR);
    ck_assert(relay_has_pending(&f.src));
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

START_TEST(test_src_eof)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("Z");
    pkt_builder_init_dyn(&b, 0);
    pkt_write_ready(&b, 'I');
    fix_init(&f);
    ck_assert_int_eq(relay_read(&f.src), SOCK_AGAIN);
    feed(&f, b.buf, b.len);
    close(f.feed);
    f.feed = -1;
    /* what was sent before the close is still read and forwarded, then EOF */
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) b.len);
    ck_assert_int_eq(relay_read(&f.src), RELAY_READ_EOF);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
    ck_assert_uint_eq(drain(&f), b.len);
    ck_assert_int_eq(relay_read(&f.src), RELAY_READ_EOF);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

START_TEST(test_release_idle)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("Z");
    pkt_builder_init_dyn(&b, 0);
    pkt_write_command_complete(&b, "SELECT 1");
    size_t first = b.len;
    pkt_write_ready(&b, 'I');
    fix_init(&f);
    /* no buffer before the first read, and releasing none is harmless */
    ck_assert_ptr_null(f.src.in);
    ck_assert(!relay_has_pending(&f.src));
    relay_release_idle(&f.src);
    ck_assert_ptr_null(f.src.in);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);

    /* a partial message keeps the buffer */
    feed(&f, b.buf, first + 3);
    ck_assert_int_eq(relay_read(&f.src), (ssize_t) (first + 3));
    ck_assert_ptr_nonnull(f.src.in);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
    ck_assert(relay_has_pending(&f.src));
    relay_release_idle(&f.src);
    ck_assert_ptr_nonnull(f.src.in);

    /* complete and forwarded: the buffer goes back */
    feed(&f, b.buf + first + 3, b.len - first - 3);
    ck_assert_int_gt(relay_read(&f.src), 0);
    ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
    ck_assert(!relay_has_pending(&f.src));
    relay_release_idle(&f.src);
    ck_assert_ptr_null(f.src.in);
    drain(&f);
    ck_assert_uint_eq(f.out.len, b.len);
    ck_assert(memcmp(f.out.p, b.buf, b.len) == 0);
    check_messages(r, b.buf, b.len);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* Releasing the buffer between the pieces of a large pass-through message keeps the stream
   intact (the body still to skip survives the release). */
START_TEST(test_release_idle_mid_message)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("Z");
    pkt_builder_init_dyn(&b, 0);
    put_big_row(&b, 100000);
    pkt_write_ready(&b, 'I');
    ck_assert(!b.failed);
    fix_init(&f);
    size_t off = 0;
    while (off < b.len) {
        size_t n = b.len - off < 777 ? b.len - off : 777;
        feed(&f, b.buf + off, n);
        off += n;
        ck_assert_int_eq(relay_read(&f.src), (ssize_t) n);
        ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
        drain(&f);
        relay_release_idle(&f.src);
    }
    ck_assert_uint_eq(f.out.len, b.len);
    ck_assert(memcmp(f.out.p, b.buf, b.len) == 0);
    check_headers(r, b.buf, b.len);
    check_messages(r, b.buf, b.len);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* The owner may consume bytes itself (startup, authentication) by advancing in->rpos past the
   scan position; a later read that has to compact the full buffer must keep the scan position
   inside the buffer, and the next pump must forward exactly the bytes the owner left. */
START_TEST(test_owner_consumed_then_compact)
{
    struct pkt_builder b;
    struct fix f;
    struct rec *r = rec_new("Z");
    pkt_builder_init_dyn(&b, 0);
    /* 100 bytes the owner handles itself, then relayed messages that overfill the buffer */
    uint8_t startup[100];
    memset(startup, 0, sizeof(startup));
    pkt_put_bytes(&b, startup, sizeof(startup));
    size_t owned = b.len;
    while (b.len < BUF_SIZE + 4000)
        pkt_write_command_complete(&b, "INSERT 0 1");
    ck_assert(!b.failed);
    fix_init(&f);
    feed(&f, b.buf, b.len);
    ck_assert_int_eq(read_all(&f), BUF_SIZE);
    ck_assert_uint_eq(f.src.scan, 0);
    f.src.in->rpos += (uint32_t) owned; /* consumed by the owner, as client.c does */
    ssize_t n = relay_read(&f.src);     /* full: compacts, then reads into the freed room */
    ck_assert_int_eq(n, (ssize_t) owned);
    ck_assert_msg(f.src.scan <= f.src.in->wpos,
                  "scan position %u outside the buffer (wpos %u) after compaction", f.src.scan,
                  f.src.in->wpos);
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(relay_pump(&f.src, &f.dst, MAX_LEN, &rec_ops, r), RELAY_OK);
        drain(&f);
        if (read_all(&f) == 0 && !relay_has_pending(&f.src))
            break;
    }
    ck_assert_uint_eq(f.out.len, b.len - owned);
    ck_assert(memcmp(f.out.p, b.buf + owned, b.len - owned) == 0);
    check_headers(r, b.buf + owned, b.len - owned);
    fix_close(&f);
    pkt_builder_free(&b);
    rec_free(r);
}
END_TEST

/* relay_conn_close frees the buffer and closes the socket; init zeroes the scan state. */
START_TEST(test_conn_init_close)
{
    struct fix f;
    fix_init(&f);
    ck_assert_ptr_null(f.src.in);
    ck_assert_uint_eq(f.src.scan, 0);
    ck_assert_uint_eq(f.src.skip, 0);
    ck_assert_uint_eq(f.src.bytes_in, 0);
    ck_assert_ptr_null(f.src.sock.ssl);
    feed(&f, "Z\0\0\0\5I", 6);
    ck_assert_int_eq(relay_read(&f.src), 6);
    ck_assert_ptr_nonnull(f.src.in);
    relay_conn_close(&f.src);
    ck_assert_ptr_null(f.src.in);
    /* the peer sees the close */
    char c;
    ck_assert_int_eq(read(f.feed, &c, 1), 0);
    fix_close(&f); /* closing twice is harmless */
}
END_TEST

static Suite *relay_suite(void)
{
    Suite *s = suite_create("relay");
    TCase *tc = tcase_create("pump");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_batch_of_small_messages);
    tcase_add_test(tc, test_split_at_every_offset);
    tcase_add_test(tc, test_byte_by_byte);
    tcase_add_test(tc, test_large_message_streams);
    tcase_add_test(tc, test_wanted_larger_than_buffer_streams);
    tcase_add_test(tc, test_wanted_near_buffer_size);
    tcase_add_test(tc, test_unwanted_never_offered);
    tcase_add_test(tc, test_no_header_callback);
    tcase_add_test(tc, test_drop);
    tcase_add_test(tc, test_drop_behind_blocked_bytes);
    tcase_add_test(tc, test_stop);
    tcase_add_test(tc, test_stop_then_consume);
    tcase_add_test(tc, test_scan_only);
    tcase_add_test(tc, test_bad_length);
    tcase_add_test(tc, test_max_len_boundary);
    tcase_add_test(tc, test_back_pressure);
    tcase_add_test(tc, test_blocked_wins_over_stop);
    tcase_add_test(tc, test_dst_closed);
    tcase_add_test(tc, test_src_eof);
    tcase_add_test(tc, test_release_idle);
    tcase_add_test(tc, test_release_idle_mid_message);
    tcase_add_test(tc, test_owner_consumed_then_compact);
    tcase_add_test(tc, test_conn_init_close);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(relay_suite());
}
