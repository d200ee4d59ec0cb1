/*
 * libFuzzer target for the pkt codec. The input is read three ways: as a client's stream
 * (startup-phase packets, then typed frontend messages), as a typed frontend stream and as a
 * typed backend stream. Every complete message is copied into its own exact-size heap block so
 * that ASan reports any read past its end, and handed to the body parser for its type. Messages
 * that parse are re-encoded with the builder and must come out byte for byte identical (or,
 * for startup packets and error fields, parse back to the same values): a parser that accepts
 * what the writer would not produce, or the reverse, aborts.
 * Build: clang -fsanitize=fuzzer,address,undefined -Iinclude common/pkt.c regress/fuzz/fuzz_pkt.c
 */
#include "pgtide/pkt.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static uint8_t *copy_exact(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);

    CHECK(d != NULL);
    if (n)
        memcpy(d, p, n);
    return d;
}

/* The builder's output must equal the original message msg[0..n). */
static void check_same(struct pkt_builder *b, const uint8_t *msg, size_t n)
{
    CHECK(!b->failed);
    CHECK(b->len == n);
    CHECK(memcmp(b->buf, msg, n) == 0);
    pkt_builder_reset(b);
}

static void fuzz_startup_packet(const uint8_t *p, size_t len)
{
    struct pkt_startup st, again;
    struct pkt_builder b;
    uint8_t mem[PKT_STARTUP_MAX];

    if (pkt_parse_startup(p, len, &st) != PKT_OK)
        return;
    CHECK(st.code == PKT_CODE_SSL || st.code == PKT_CODE_GSSENC || st.code == PKT_CODE_CANCEL ||
          (st.code >> 16) == 3);
    if (st.code == PKT_CODE_CANCEL) {
        pkt_builder_init(&b, mem, sizeof mem);
        pkt_write_cancel_request(&b, st.cancel_pid, st.cancel_key);
        check_same(&b, p, len);
        return;
    }
    if (st.code == PKT_CODE_SSL || st.code == PKT_CODE_GSSENC)
        return;
    CHECK(st.user != NULL && st.user[0] != '\0' && st.database != NULL);
    CHECK(st.nparams >= 1 && st.nparams <= PKT_MAX_PARAMS);
    pkt_builder_init(&b, mem, sizeof mem);
    pkt_write_startup(&b, st.params, st.nparams);
    CHECK(!b.failed && b.len == len); /* same size: only the minor version may differ */
    CHECK(memcmp(b.buf + 8, p + 8, len - 8) == 0);
    CHECK(pkt_parse_startup(b.buf, b.len, &again) == PKT_OK);
    CHECK(again.nparams == st.nparams && again.nunknown_pq == st.nunknown_pq);
    CHECK(strcmp(again.user, st.user) == 0 && strcmp(again.database, st.database) == 0);
}

/* Backend message bodies. msg = whole message (type + length + body). */
static void fuzz_backend_body(uint8_t type, const uint8_t *msg, const uint8_t *body, size_t blen)
{
    struct pkt_builder b;
    struct pkt_error_fields f, g;
    const char *s1, *s2, *names[PKT_MAX_PARAMS];
    const uint8_t *data;
    size_t dlen;
    uint32_t u1, u2;
    char c;
    int n;

    pkt_builder_init_dyn(&b, 0);
    switch (type) {
    case 'R':
        if (pkt_parse_auth(body, blen, &u1, &data, &dlen) == PKT_OK) {
            if (u1 != PKT_AUTH_SASL) {
                pkt_write_auth(&b, u1, data, dlen);
                check_same(&b, msg, blen + 5);
            } else if (pkt_parse_sasl_mechs(data, dlen, names, PKT_MAX_PARAMS, &n) == PKT_OK) {
                CHECK(n > 0);
                pkt_write_auth_sasl(&b, names, n);
                check_same(&b, msg, blen + 5);
            }
        }
        break;
    case 'S':
        if (pkt_parse_param_status(body, blen, &s1, &s2) == PKT_OK) {
            pkt_write_param_status(&b, s1, s2);
            check_same(&b, msg, blen + 5);
        }
        break;
    case 'K':
        if (pkt_parse_backend_key(body, blen, &u1, &u2) == PKT_OK) {
            pkt_write_backend_key(&b, u1, u2);
            check_same(&b, msg, blen + 5);
        }
        break;
    case 'Z':
        if (pkt_parse_ready(body, blen, &c) == PKT_OK) {
            pkt_write_ready(&b, c);
            check_same(&b, msg, blen + 5);
        }
        break;
    case 'C':
        if (pkt_parse_command_complete(body, blen, &s1) == PKT_OK) {
            pkt_write_command_complete(&b, s1);
            check_same(&b, msg, blen + 5);
        }
        break;
    case 'E':
    case 'N':
        if (pkt_parse_error_fields(body, blen, &f) == PKT_OK && f.severity && f.code && f.message) {
            pkt_write_error(&b, f.severity, f.code, f.message, f.detail, f.hint);
            CHECK(!b.failed);
            CHECK(pkt_parse_error_fields(b.buf + 5, b.len - 5, &g) == PKT_OK);
            CHECK(strcmp(g.code, f.code) == 0 && strcmp(g.message, f.message) == 0);
            CHECK((g.detail == NULL) == (f.detail == NULL));
        }
        break;
    case 'v':
        if (pkt_parse_negotiate_version(body, blen, &u1, names, PKT_MAX_PARAMS, &n) == PKT_OK) {
            pkt_write_negotiate_version(&b, u1, names, n);
            check_same(&b, msg, blen + 5);
        }
        break;
    default:
        break;
    }
    pkt_builder_free(&b);
}

/* Frontend message bodies. */
static void fuzz_frontend_body(uint8_t type, const uint8_t *msg, const uint8_t *body, size_t blen)
{
    struct pkt_builder b;
    const char *s1, *s2;
    const uint8_t *data;
    int32_t dl;
    uint16_t np;
    uint32_t u1;
    char c;

    pkt_builder_init_dyn(&b, 0);
    switch (type) {
    case 'Q':
    case 'p':
    case 'f':
        if (pkt_parse_query(body, blen, &s1) == PKT_OK) {
            pkt_write_query(&b, s1);
            CHECK(!b.failed && b.len == blen + 5);
            CHECK(memcmp(b.buf + 1, msg + 1, blen + 4) == 0);
            CHECK(pkt_parse_password(body, blen, &s2) == PKT_OK && s2 == s1);
        }
        if (type == 'p' && pkt_parse_sasl_initial(body, blen, &s1, &data, &dl) == PKT_OK) {
            pkt_builder_reset(&b);
            pkt_write_sasl_initial(&b, s1, data, dl < 0 ? 0 : (size_t) dl);
            check_same(&b, msg, blen + 5);
        }
        break;
    case 'P':
        (void) !pkt_parse_parse(body, blen, &s1, &s2, &np);
        break;
    case 'B':
        (void) !pkt_parse_bind_names(body, blen, &s1, &s2);
        break;
    case 'E':
        if (pkt_parse_execute(body, blen, &s1, &u1) == PKT_OK) {
            pkt_write_execute(&b, s1, u1);
            check_same(&b, msg, blen + 5);
        }
        break;
    case 'C':
    case 'D':
        if (pkt_parse_close_describe(body, blen, &c, &s1) == PKT_OK) {
            if (type == 'C')
                pkt_write_close(&b, c, s1);
            else
                pkt_write_describe(&b, c, s1);
            check_same(&b, msg, blen + 5);
        }
        break;
    default:
        break;
    }
    pkt_builder_free(&b);
}

/* Walks typed messages from data[0..size); returns the number of bytes consumed. */
static size_t fuzz_typed(const uint8_t *data, size_t size, bool from_backend)
{
    size_t off = 0;

    while (off < size) {
        struct pkt_hdr h;
        uint32_t max = pkt_type_max_len(data[off], from_backend);
        uint8_t *msg;

        if (pkt_read_hdr(data + off, size - off, max, &h) != PKT_OK)
            break;
        CHECK(h.len >= 4 && h.len <= max && pkt_type_valid(h.type, from_backend));
        CHECK(pkt_type_name(h.type, from_backend) != NULL);
        if (h.len > size - off - 1)
            break; /* incomplete body: a relay would wait */
        msg = copy_exact(data + off, (size_t) h.len + 1);
        if (from_backend)
            fuzz_backend_body(h.type, msg, msg + 5, h.len - 4);
        else
            fuzz_frontend_body(h.type, msg, msg + 5, h.len - 4);
        free(msg);
        off += (size_t) h.len + 1;
    }
    return off;
}

/* A client's stream: SSL/GSSENC requests, then one startup or cancel packet, then messages. */
static void fuzz_client_stream(const uint8_t *data, size_t size)
{
    size_t off = 0;

    for (;;) {
        uint32_t len, code;
        uint8_t *pkt;

        if (pkt_read_startup_hdr(data + off, size - off, &len, &code) != PKT_OK)
            return;
        CHECK(len >= 8 && len <= PKT_STARTUP_MAX);
        if (len > size - off)
            return;
        pkt = copy_exact(data + off, len);
        fuzz_startup_packet(pkt, len);
        free(pkt);
        off += len;
        if (code != PKT_CODE_SSL && code != PKT_CODE_GSSENC)
            break;
    }
    (void) fuzz_typed(data + off, size - off, false);
}

/* Fills a small fixed builder from the input to exercise the overflow path: the capacity comes
   from the first byte, the strings from the rest; nothing may be written past the capacity. */
static void fuzz_builder(const uint8_t *data, size_t size)
{
    uint8_t mem[64 + 16];
    struct pkt_builder b;
    size_t cap = size ? data[0] % 65 : 0;
    char *s = malloc(size + 1);
    struct pkt_hdr h;
    const char *q;
    size_t qlen;

    CHECK(s != NULL);
    if (size > 1)
        memcpy(s, data + 1, size - 1);
    s[size ? size - 1 : 0] = '\0';
    memset(mem, 0x5a, sizeof mem);
    pkt_builder_init(&b, mem, cap);
    pkt_write_query(&b, s);
    pkt_write_error(&b, "ERROR", "XX000", s, NULL, s);
    CHECK(b.len <= cap);
    qlen = 6 + strlen(s); /* type, length, string, NUL */
    if (qlen > cap) {
        CHECK(b.failed);
    } else {
        CHECK(pkt_read_hdr(mem, cap, PKT_LARGE_MAX, &h) == PKT_OK && h.len + 1 == qlen);
        CHECK(pkt_parse_query(mem + 5, h.len - 4, &q) == PKT_OK && strcmp(q, s) == 0);
    }
    for (size_t i = cap; i < sizeof mem; i++)
        CHECK(mem[i] == 0x5a);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *whole = copy_exact(data, size);
    struct pkt_startup st;

    (void) !pkt_parse_startup(whole, size, &st);
    free(whole);
    fuzz_client_stream(data, size);
    (void) fuzz_typed(data, size, false);
    (void) fuzz_typed(data, size, true);
    fuzz_builder(data, size);
    return 0;
}
