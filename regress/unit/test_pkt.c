/*
 * Check suite for the pkt codec: every message the codec builds is read back through the header
 * reader and its body parser (round trip), every prefix of every message is refused without
 * reading past its end (inputs are copied into exact-size heap blocks so ASan sees any overread),
 * and hand-made malformed inputs (oversized and lying lengths, missing NULs, trailing bytes,
 * startup packet edge cases) are refused. Builder tests check the sticky failure flag and that
 * fixed memory is never written past its capacity.
 */
#include "pgtide/pkt.h"
#include "unit.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

/* A heap copy of exactly n bytes, so that reading p[n] is an ASan error. */
static uint8_t *dup_exact(const void *p, size_t n)
{
    uint8_t *d = malloc(n);

    ck_assert(n == 0 || d != NULL);
    if (n)
        memcpy(d, p, n);
    return d;
}

/* Reads the single message in b, checks its type and direction, returns a heap copy of its body
   (exact size) in *body and its length in *blen. */
static void one_msg(const struct pkt_builder *b, uint8_t type, bool from_backend, uint8_t **body,
                    size_t *blen)
{
    struct pkt_hdr h;

    ck_assert(!b->failed);
    ck_assert_int_eq(pkt_read_hdr(b->buf, b->len, pkt_type_max_len(type, from_backend), &h),
                     PKT_OK);
    ck_assert_int_eq(h.type, type);
    ck_assert(pkt_type_valid(h.type, from_backend));
    ck_assert_uint_eq(h.len + 1, b->len);
    *blen = h.len - 4;
    *body = dup_exact(b->buf + 5, *blen);
}

/* Builds a raw typed message from a literal body. */
static void raw_msg(struct pkt_builder *b, uint8_t type, const void *body, size_t n)
{
    pkt_builder_reset(b);
    pkt_begin(b, type);
    pkt_put_bytes(b, body, n);
    pkt_end(b);
}

/* ---- body parser adapters for the table-driven tests ---- */

typedef enum pkt_status (*body_fn)(const uint8_t *, size_t);

static enum pkt_status bf_error(const uint8_t *p, size_t n)
{
    struct pkt_error_fields f;
    return pkt_parse_error_fields(p, n, &f);
}

static enum pkt_status bf_param_status(const uint8_t *p, size_t n)
{
    const char *a, *v;
    return pkt_parse_param_status(p, n, &a, &v);
}

static enum pkt_status bf_backend_key(const uint8_t *p, size_t n)
{
    uint32_t a, c;
    return pkt_parse_backend_key(p, n, &a, &c);
}

static enum pkt_status bf_ready(const uint8_t *p, size_t n)
{
    char s;
    return pkt_parse_ready(p, n, &s);
}

static enum pkt_status bf_auth(const uint8_t *p, size_t n)
{
    uint32_t code;
    const uint8_t *d;
    size_t dl;
    return pkt_parse_auth(p, n, &code, &d, &dl);
}

static enum pkt_status bf_sasl_initial(const uint8_t *p, size_t n)
{
    const char *m;
    const uint8_t *d;
    int32_t dl;
    return pkt_parse_sasl_initial(p, n, &m, &d, &dl);
}

static enum pkt_status bf_string(const uint8_t *p, size_t n)
{
    const char *s;
    return pkt_parse_query(p, n, &s);
}

static enum pkt_status bf_parse(const uint8_t *p, size_t n)
{
    const char *s, *q;
    uint16_t np;
    return pkt_parse_parse(p, n, &s, &q, &np);
}

static enum pkt_status bf_bind(const uint8_t *p, size_t n)
{
    const char *a, *s;
    return pkt_parse_bind_names(p, n, &a, &s);
}

static enum pkt_status bf_close_describe(const uint8_t *p, size_t n)
{
    char k;
    const char *s;
    return pkt_parse_close_describe(p, n, &k, &s);
}

static enum pkt_status bf_execute(const uint8_t *p, size_t n)
{
    const char *s;
    uint32_t m;
    return pkt_parse_execute(p, n, &s, &m);
}

static enum pkt_status bf_negotiate(const uint8_t *p, size_t n)
{
    const char *names[4];
    uint32_t minor;
    int cnt;
    return pkt_parse_negotiate_version(p, n, &minor, names, 4, &cnt);
}

/* ---- message makers ---- */

static const char *const mechs2[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"};
static const char *const cols2[] = {"name", "value"};
static const char *const vals3[] = {"a", NULL, ""};
static const char *const unsup2[] = {"_pq_.a", "_pq_.b"};
static const uint32_t oids2[] = {23, 25};

static void mk_error(struct pkt_builder *b)
{
    pkt_write_error(b, "ERROR", "08P01", "protocol violation", "some detail", "a hint");
}
static void mk_notice(struct pkt_builder *b)
{
    pkt_write_notice(b, "NOTICE", "00000", "hello", NULL, NULL);
}
static void mk_auth_md5(struct pkt_builder *b)
{
    pkt_write_auth(b, PKT_AUTH_MD5, "salt", 4);
}
static void mk_auth_sasl(struct pkt_builder *b)
{
    pkt_write_auth_sasl(b, mechs2, 2);
}
static void mk_param_status(struct pkt_builder *b)
{
    pkt_write_param_status(b, "server_version", "15.4");
}
static void mk_backend_key(struct pkt_builder *b)
{
    pkt_write_backend_key(b, 4242, 0xdeadbeef);
}
static void mk_ready(struct pkt_builder *b)
{
    pkt_write_ready(b, 'T');
}
static void mk_command_complete(struct pkt_builder *b)
{
    pkt_write_command_complete(b, "SELECT 2");
}
static void mk_negotiate(struct pkt_builder *b)
{
    pkt_write_negotiate_version(b, 0, unsup2, 2);
}
static void mk_password(struct pkt_builder *b)
{
    pkt_write_password(b, "secret");
}
static void mk_sasl_initial(struct pkt_builder *b)
{
    pkt_write_sasl_initial(b, "SCRAM-SHA-256", "n,,n=,r=abc", 11);
}
static void mk_query(struct pkt_builder *b)
{
    pkt_write_query(b, "SELECT 1");
}
static void mk_parse(struct pkt_builder *b)
{
    pkt_write_parse(b, "s1", "SELECT $1::int, $2", 2, oids2);
}
static void mk_bind(struct pkt_builder *b)
{
    pkt_write_bind(b, "p1", "s1", 3, vals3);
}
static void mk_execute(struct pkt_builder *b)
{
    pkt_write_execute(b, "p1", 100);
}
static void mk_describe(struct pkt_builder *b)
{
    pkt_write_describe(b, 'S', "s1");
}
static void mk_close(struct pkt_builder *b)
{
    pkt_write_close(b, 'P', "p1");
}
static void mk_row_desc(struct pkt_builder *b)
{
    pkt_write_row_desc(b, 2, cols2);
}
static void mk_data_row(struct pkt_builder *b)
{
    pkt_write_data_row(b, 3, vals3);
}
static void mk_sync(struct pkt_builder *b)
{
    pkt_write_sync(b);
}
static void mk_empty_query(struct pkt_builder *b)
{
    pkt_write_empty_query(b);
}

struct msg_case {
    const char *what;
    void (*make)(struct pkt_builder *b);
    uint8_t type;
    bool from_backend;
    body_fn parse; /* NULL: no body parser (empty or opaque body) */
};

static const struct msg_case cases[] = {
    {"error", mk_error, 'E', true, bf_error},
    {"notice", mk_notice, 'N', true, bf_error},
    {"auth md5", mk_auth_md5, 'R', true, bf_auth},
    {"auth sasl", mk_auth_sasl, 'R', true, bf_auth},
    {"param status", mk_param_status, 'S', true, bf_param_status},
    {"backend key", mk_backend_key, 'K', true, bf_backend_key},
    {"ready", mk_ready, 'Z', true, bf_ready},
    {"command complete", mk_command_complete, 'C', true, bf_string},
    {"negotiate", mk_negotiate, 'v', true, bf_negotiate},
    {"row desc", mk_row_desc, 'T', true, NULL},
    {"data row", mk_data_row, 'D', true, NULL},
    {"empty query", mk_empty_query, 'I', true, NULL},
    {"password", mk_password, 'p', false, bf_string},
    {"sasl initial", mk_sasl_initial, 'p', false, bf_sasl_initial},
    {"query", mk_query, 'Q', false, bf_string},
    {"parse", mk_parse, 'P', false, bf_parse},
    {"bind", mk_bind, 'B', false, bf_bind},
    {"execute", mk_execute, 'E', false, bf_execute},
    {"describe", mk_describe, 'D', false, bf_close_describe},
    {"close", mk_close, 'C', false, bf_close_describe},
    {"sync", mk_sync, 'S', false, NULL},
};
#define NCASES ((int) (sizeof cases / sizeof cases[0]))

/* Each built message reads back whole, and its body parser accepts it. */
START_TEST(test_case_whole)
{
    const struct msg_case *c = &cases[_i];
    struct pkt_builder b;
    uint8_t *body;
    size_t blen;

    pkt_builder_init_dyn(&b, 0);
    c->make(&b);
    one_msg(&b, c->type, c->from_backend, &body, &blen);
    if (c->parse)
        ck_assert_msg(c->parse(body, blen) == PKT_OK, "%s", c->what);
    free(body);
    pkt_builder_free(&b);
}
END_TEST

/* Every proper prefix is INCOMPLETE at the header or has a body the parser refuses. */
START_TEST(test_case_truncated)
{
    const struct msg_case *c = &cases[_i];
    struct pkt_builder b;

    pkt_builder_init_dyn(&b, 0);
    c->make(&b);
    ck_assert(!b.failed);
    for (size_t k = 0; k < b.len; k++) {
        uint8_t *p = dup_exact(b.buf, k);
        struct pkt_hdr h;
        enum pkt_status st = pkt_read_hdr(p, k, PKT_LARGE_MAX, &h);

        if (k < 5) {
            ck_assert_int_eq(st, PKT_INCOMPLETE);
        } else {
            ck_assert_int_eq(st, PKT_OK);
            ck_assert_uint_gt(h.len + 1, k); /* the caller would wait for more */
            if (c->parse)
                ck_assert_msg(c->parse(p + 5, k - 5) == PKT_ERROR, "%s cut at %zu", c->what, k);
        }
        free(p);
    }
    pkt_builder_free(&b);
}
END_TEST

/* A body with one extra byte is refused (message not consumed exactly). */
START_TEST(test_case_trailing)
{
    const struct msg_case *c = &cases[_i];
    struct pkt_builder b;
    uint8_t *body, *longer;
    size_t blen;

    if (c->parse == NULL)
        return;
    pkt_builder_init_dyn(&b, 0);
    c->make(&b);
    one_msg(&b, c->type, c->from_backend, &body, &blen);
    longer = malloc(blen + 1);
    ck_assert_ptr_nonnull(longer);
    memcpy(longer, body, blen);
    longer[blen] = 'x';
    ck_assert_msg(c->parse(longer, blen + 1) == PKT_ERROR, "%s", c->what);
    longer[blen] = 0;
    ck_assert_msg(c->parse(longer, blen + 1) == PKT_ERROR, "%s (NUL)", c->what);
    free(longer);
    free(body);
    pkt_builder_free(&b);
}
END_TEST

/* ---- round trips with values ---- */

START_TEST(test_error_roundtrip)
{
    struct pkt_builder b;
    struct pkt_error_fields f;
    uint8_t *body;
    size_t blen;

    pkt_builder_init_dyn(&b, 16);
    mk_error(&b);
    one_msg(&b, 'E', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_error_fields(body, blen, &f), PKT_OK);
    ck_assert_str_eq(f.severity, "ERROR");
    ck_assert_str_eq(f.severity_nl, "ERROR");
    ck_assert_str_eq(f.code, "08P01");
    ck_assert_str_eq(f.message, "protocol violation");
    ck_assert_str_eq(f.detail, "some detail");
    ck_assert_str_eq(f.hint, "a hint");
    free(body);

    pkt_builder_reset(&b);
    mk_notice(&b);
    one_msg(&b, 'N', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_error_fields(body, blen, &f), PKT_OK);
    ck_assert_str_eq(f.severity, "NOTICE");
    ck_assert_str_eq(f.message, "hello");
    ck_assert_ptr_null(f.detail);
    ck_assert_ptr_null(f.hint);
    free(body);
    pkt_builder_free(&b);
}
END_TEST

START_TEST(test_error_fields_unknown_and_bad)
{
    struct pkt_error_fields f;
    static const uint8_t with_unknown[] = "SERROR\0P12\0Mboom\0";
    static const uint8_t no_end[] = {'S', 'E', 'R', 0};
    static const uint8_t unterminated[] = {'S', 'E', 'R'};
    static const uint8_t empty_ok[] = {0};

    /* sizeof includes the literal's NUL: that is the list terminator. */
    ck_assert_int_eq(pkt_parse_error_fields(with_unknown, sizeof with_unknown, &f), PKT_OK);
    ck_assert_str_eq(f.message, "boom");
    ck_assert_ptr_null(f.code);
    ck_assert_int_eq(pkt_parse_error_fields(no_end, sizeof no_end, &f), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_error_fields(unterminated, sizeof unterminated, &f), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_error_fields(empty_ok, 1, &f), PKT_OK);
    ck_assert_int_eq(pkt_parse_error_fields(empty_ok, 0, &f), PKT_ERROR);
}
END_TEST

START_TEST(test_backend_roundtrip)
{
    struct pkt_builder b;
    uint8_t *body;
    size_t blen;
    const char *name, *value, *tag;
    uint32_t pid, key;
    char st;

    pkt_builder_init_dyn(&b, 0);
    mk_param_status(&b);
    one_msg(&b, 'S', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_param_status(body, blen, &name, &value), PKT_OK);
    ck_assert_str_eq(name, "server_version");
    ck_assert_str_eq(value, "15.4");
    free(body);

    pkt_builder_reset(&b);
    mk_backend_key(&b);
    one_msg(&b, 'K', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_backend_key(body, blen, &pid, &key), PKT_OK);
    ck_assert_uint_eq(pid, 4242);
    ck_assert_uint_eq(key, 0xdeadbeef);
    free(body);

    pkt_builder_reset(&b);
    mk_ready(&b);
    one_msg(&b, 'Z', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_ready(body, blen, &st), PKT_OK);
    ck_assert_int_eq(st, 'T');
    free(body);

    pkt_builder_reset(&b);
    mk_command_complete(&b);
    one_msg(&b, 'C', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_command_complete(body, blen, &tag), PKT_OK);
    ck_assert_str_eq(tag, "SELECT 2");
    free(body);
    pkt_builder_free(&b);
}
END_TEST

START_TEST(test_ready_status_checked)
{
    char st = 0;
    static const uint8_t ok[] = {'I', 'T', 'E'};
    static const uint8_t bad[] = {'X', 0, 'i'};

    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(pkt_parse_ready(&ok[i], 1, &st), PKT_OK);
        ck_assert_int_eq(st, ok[i]);
        ck_assert_int_eq(pkt_parse_ready(&bad[i], 1, &st), PKT_ERROR);
    }
    ck_assert_int_eq(pkt_parse_ready(ok, 2, &st), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_ready(ok, 0, &st), PKT_ERROR);
}
END_TEST

START_TEST(test_backend_key_lengths)
{
    static const uint8_t k[9] = {0, 0, 1, 0, 0, 0, 0, 7, 9};
    uint32_t pid, key;

    ck_assert_int_eq(pkt_parse_backend_key(k, 8, &pid, &key), PKT_OK);
    ck_assert_uint_eq(pid, 256);
    ck_assert_uint_eq(key, 7);
    ck_assert_int_eq(pkt_parse_backend_key(k, 7, &pid, &key), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_backend_key(k, 9, &pid, &key), PKT_ERROR);
}
END_TEST

START_TEST(test_auth_roundtrip)
{
    struct pkt_builder b;
    uint8_t *body;
    size_t blen, dlen;
    uint32_t code;
    const uint8_t *data;
    const char *mechs[4];
    int n;

    pkt_builder_init_dyn(&b, 0);
    mk_auth_md5(&b);
    one_msg(&b, 'R', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_auth(body, blen, &code, &data, &dlen), PKT_OK);
    ck_assert_uint_eq(code, PKT_AUTH_MD5);
    ck_assert_uint_eq(dlen, 4);
    ck_assert_int_eq(memcmp(data, "salt", 4), 0);
    free(body);

    pkt_builder_reset(&b);
    mk_auth_sasl(&b);
    one_msg(&b, 'R', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_auth(body, blen, &code, &data, &dlen), PKT_OK);
    ck_assert_uint_eq(code, PKT_AUTH_SASL);
    ck_assert_int_eq(pkt_parse_sasl_mechs(data, dlen, mechs, 4, &n), PKT_OK);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(mechs[0], "SCRAM-SHA-256-PLUS");
    ck_assert_str_eq(mechs[1], "SCRAM-SHA-256");
    ck_assert_int_eq(pkt_parse_sasl_mechs(data, dlen, mechs, 1, &n), PKT_ERROR);
    free(body);

    pkt_builder_reset(&b);
    pkt_write_auth(&b, PKT_AUTH_SASL_CONTINUE, "r=abc,s=xyz,i=4096", 18);
    one_msg(&b, 'R', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_auth(body, blen, &code, &data, &dlen), PKT_OK);
    ck_assert_uint_eq(code, PKT_AUTH_SASL_CONTINUE);
    ck_assert_uint_eq(dlen, 18);
    ck_assert_int_eq(memcmp(data, "r=abc,s=xyz,i=4096", 18), 0);
    free(body);

    pkt_builder_reset(&b);
    pkt_write_auth(&b, PKT_AUTH_OK, NULL, 0);
    one_msg(&b, 'R', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_auth(body, blen, &code, &data, &dlen), PKT_OK);
    ck_assert_uint_eq(code, PKT_AUTH_OK);
    ck_assert_uint_eq(dlen, 0);
    free(body);
    pkt_builder_free(&b);
}
END_TEST

START_TEST(test_auth_bad)
{
    static const uint8_t ok_extra[] = {0, 0, 0, 0, 1};
    static const uint8_t md5_short[] = {0, 0, 0, 5, 1, 2, 3};
    static const uint8_t unknown[] = {0, 0, 0, 99};
    static const uint8_t sasl_empty[] = {0, 0, 0, 10, 0};
    static const uint8_t sasl_noend[] = {0, 0, 0, 10, 'X', 0};
    uint32_t code;
    const uint8_t *data;
    size_t dlen;

    ck_assert_int_eq(pkt_parse_auth(ok_extra, 5, &code, &data, &dlen), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_auth(ok_extra, 4, &code, &data, &dlen), PKT_OK);
    ck_assert_int_eq(pkt_parse_auth(ok_extra, 3, &code, &data, &dlen), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_auth(md5_short, sizeof md5_short, &code, &data, &dlen), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_auth(unknown, sizeof unknown, &code, &data, &dlen), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_auth(sasl_empty, sizeof sasl_empty, &code, &data, &dlen), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_auth(sasl_noend, sizeof sasl_noend, &code, &data, &dlen), PKT_ERROR);
}
END_TEST

START_TEST(test_negotiate_roundtrip)
{
    struct pkt_builder b;
    uint8_t *body;
    size_t blen;
    uint32_t minor;
    const char *names[2];
    int n;

    pkt_builder_init_dyn(&b, 0);
    mk_negotiate(&b);
    one_msg(&b, 'v', true, &body, &blen);
    ck_assert_int_eq(pkt_parse_negotiate_version(body, blen, &minor, names, 2, &n), PKT_OK);
    ck_assert_uint_eq(minor, 0);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(names[0], "_pq_.a");
    ck_assert_str_eq(names[1], "_pq_.b");
    ck_assert_int_eq(pkt_parse_negotiate_version(body, blen, &minor, names, 1, &n), PKT_ERROR);
    /* lying count: claims 3 names, holds 2 */
    body[7] = 3;
    ck_assert_int_eq(pkt_parse_negotiate_version(body, blen, &minor, names, 2, &n), PKT_ERROR);
    free(body);
    pkt_builder_free(&b);
}
END_TEST

START_TEST(test_frontend_roundtrip)
{
    struct pkt_builder b;
    uint8_t *body;
    size_t blen;
    const char *s1, *s2;
    uint16_t np;
    uint32_t rows;
    char kind;

    pkt_builder_init_dyn(&b, 0);
    mk_query(&b);
    one_msg(&b, 'Q', false, &body, &blen);
    ck_assert_int_eq(pkt_parse_query(body, blen, &s1), PKT_OK);
    ck_assert_str_eq(s1, "SELECT 1");
    free(body);

    pkt_builder_reset(&b);
    mk_password(&b);
    one_msg(&b, 'p', false, &body, &blen);
    ck_assert_int_eq(pkt_parse_password(body, blen, &s1), PKT_OK);
    ck_assert_str_eq(s1, "secret");
    free(body);

    pkt_builder_reset(&b);
    mk_parse(&b);
    one_msg(&b, 'P', false, &body, &blen);
    ck_assert_int_eq(pkt_parse_parse(body, blen, &s1, &s2, &np), PKT_OK);
    ck_assert_str_eq(s1, "s1");
    ck_assert_str_eq(s2, "SELECT $1::int, $2");
    ck_assert_uint_eq(np, 2);
    free(body);

    pkt_builder_reset(&b);
    mk_bind(&b);
    one_msg(&b, 'B', false, &body, &blen);
    ck_assert_int_eq(pkt_parse_bind_names(body, blen, &s1, &s2), PKT_OK);
    ck_assert_str_eq(s1, "p1");
    ck_assert_str_eq(s2, "s1");
    free(body);

    pkt_builder_reset(&b);
    mk_execute(&b);
    one_msg(&b, 'E', false, &body, &blen);
    ck_assert_int_eq(pkt_parse_execute(body, blen, &s1, &rows), PKT_OK);
    ck_assert_str_eq(s1, "p1");
    ck_assert_uint_eq(rows, 100);
    free(body);

    pkt_builder_reset(&b);
    mk_describe(&b);
    one_msg(&b, 'D', false, &body, &blen);
    ck_assert_int_eq(pkt_parse_close_describe(body, blen, &kind, &s1), PKT_OK);
    ck_assert_int_eq(kind, 'S');
    ck_assert_str_eq(s1, "s1");
    free(body);

    pkt_builder_reset(&b);
    mk_close(&b);
    one_msg(&b, 'C', false, &body, &blen);
    ck_assert_int_eq(pkt_parse_close_describe(body, blen, &kind, &s1), PKT_OK);
    ck_assert_int_eq(kind, 'P');
    ck_assert_str_eq(s1, "p1");
    body[0] = 'X';
    ck_assert_int_eq(pkt_parse_close_describe(body, blen, &kind, &s1), PKT_ERROR);
    free(body);
    pkt_builder_free(&b);
}
END_TEST

START_TEST(test_sasl_initial_roundtrip)
{
    struct pkt_builder b;
    uint8_t *body;
    size_t blen;
    const char *mech;
    const uint8_t *data;
    int32_t dlen;

    pkt_builder_init_dyn(&b, 0);
    mk_sasl_initial(&b);
    one_msg(&b, 'p', false, &body, &blen);
    ck_assert_int_eq(pkt_parse_sasl_initial(body, blen, &mech, &data, &dlen), PKT_OK);
    ck_assert_str_eq(mech, "SCRAM-SHA-256");
    ck_assert_int_eq(dlen, 11);
    ck_assert_int_eq(memcmp(data, "n,,n=,r=abc", 11), 0);
    free(body);

    pkt_builder_reset(&b);
    pkt_write_sasl_initial(&b, "SCRAM-SHA-256", NULL, 0);
    one_msg(&b, 'p', false, &body, &blen);
    ck_assert_int_eq(pkt_parse_sasl_initial(body, blen, &mech, &data, &dlen), PKT_OK);
    ck_assert_int_eq(dlen, -1);
    ck_assert_ptr_null(data);
    free(body);

    pkt_builder_reset(&b);
    pkt_write_sasl_response(&b, "c=biws,r=abc,p=xyz", 18);
    one_msg(&b, 'p', false, &body, &blen);
    ck_assert_uint_eq(blen, 18);
    ck_assert_int_eq(memcmp(body, "c=biws,r=abc,p=xyz", 18), 0);
    free(body);
    pkt_builder_free(&b);
}
END_TEST

/* Inner length fields that claim more (or less) than the body holds. */
START_TEST(test_lying_inner_lengths)
{
    static const uint8_t sasl_long[] = "M\0\0\0\0\5abc";               /* says 5, has 3 (+NUL) */
    static const uint8_t sasl_neg[] = "M\0\xff\xff\xff\xfe";           /* -2 */
    static const uint8_t parse_oids[] = "s\0q\0\0\3\0\0\0\x17";        /* 3 oids, 1 present */
    static const uint8_t bind_len[] = "p\0s\0\0\0\0\1\0\0\0\x10x\0\0"; /* value len 16 */
    static const uint8_t bind_neg[] = "p\0s\0\0\0\0\1\xff\xff\xff\xfe\0\0";  /* len -2 */
    static const uint8_t bind_null[] = "p\0s\0\0\0\0\1\xff\xff\xff\xff\0\0"; /* NULL: ok */
    static const uint8_t bind_fmts[] = "p\0s\0\0\2\0\0\0\0\0\1\xff\xff\xff\xff\0\0";
    const char *a, *s;
    const uint8_t *d;
    int32_t dl;
    uint16_t np;

    /* sizeof - 1: drop the literal's own trailing NUL */
    ck_assert_int_eq(pkt_parse_sasl_initial(sasl_long, sizeof sasl_long - 1, &a, &d, &dl),
                     PKT_ERROR);
    ck_assert_int_eq(pkt_parse_sasl_initial(sasl_neg, sizeof sasl_neg - 1, &a, &d, &dl), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_parse(parse_oids, sizeof parse_oids - 1, &a, &s, &np), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_bind_names(bind_len, sizeof bind_len - 1, &a, &s), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_bind_names(bind_neg, sizeof bind_neg - 1, &a, &s), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_bind_names(bind_null, sizeof bind_null - 1, &a, &s), PKT_OK);
    ck_assert_str_eq(a, "p");
    ck_assert_str_eq(s, "s");
    /* 2 format codes for 1 parameter */
    ck_assert_int_eq(pkt_parse_bind_names(bind_fmts, sizeof bind_fmts - 1, &a, &s), PKT_ERROR);
}
END_TEST

START_TEST(test_missing_nuls)
{
    static const uint8_t q[] = {'S', 'E', 'L'};
    static const uint8_t ps[] = {'a', 0, 'b'};
    static const uint8_t ps_one[] = {'a', 0};
    const char *s, *v;

    ck_assert_int_eq(pkt_parse_query(q, sizeof q, &s), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_query(q, 0, &s), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_password(q, sizeof q, &s), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_command_complete(q, sizeof q, &s), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_param_status(ps, sizeof ps, &s, &v), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_param_status(ps_one, sizeof ps_one, &s, &v), PKT_ERROR);

    /* the same through a framed message: header fine, body refused */
    struct pkt_builder b;
    uint8_t *body;
    size_t blen;

    pkt_builder_init_dyn(&b, 0);
    raw_msg(&b, 'Q', q, sizeof q);
    one_msg(&b, 'Q', false, &body, &blen);
    ck_assert_uint_eq(blen, sizeof q);
    ck_assert_int_eq(pkt_parse_query(body, blen, &s), PKT_ERROR);
    free(body);
    pkt_builder_free(&b);
}
END_TEST

/* ---- headers ---- */

START_TEST(test_read_hdr_limits)
{
    uint8_t m[5] = {'Q', 0, 0, 0, 4};
    struct pkt_hdr h;

    ck_assert_int_eq(pkt_read_hdr(m, 5, 100, &h), PKT_OK);
    ck_assert_uint_eq(h.len, 4);
    ck_assert_int_eq(h.type, 'Q');
    for (size_t n = 0; n < 5; n++)
        ck_assert_int_eq(pkt_read_hdr(m, n, 100, &h), PKT_INCOMPLETE);
    m[4] = 3; /* below the minimum */
    ck_assert_int_eq(pkt_read_hdr(m, 5, 100, &h), PKT_ERROR);
    m[4] = 0;
    ck_assert_int_eq(pkt_read_hdr(m, 5, 100, &h), PKT_ERROR);
    m[3] = 1; /* 256 > 100 */
    ck_assert_int_eq(pkt_read_hdr(m, 5, 100, &h), PKT_ERROR);
    ck_assert_int_eq(pkt_read_hdr(m, 5, 256, &h), PKT_OK);
    memset(m + 1, 0xff, 4); /* 4 GiB - 1 */
    ck_assert_int_eq(pkt_read_hdr(m, 5, PKT_LARGE_MAX, &h), PKT_ERROR);
    ck_assert_int_eq(pkt_read_hdr(m, 5, UINT32_MAX, &h), PKT_OK);
}
END_TEST

START_TEST(test_type_table)
{
    ck_assert(pkt_type_valid('Q', false));
    ck_assert(!pkt_type_valid('Q', true));
    ck_assert(pkt_type_valid('Z', true));
    ck_assert(!pkt_type_valid('Z', false));
    ck_assert(!pkt_type_valid(0, true));
    ck_assert(!pkt_type_valid('x', false));
    ck_assert_str_eq(pkt_type_name('Q', false), "Query");
    ck_assert_str_eq(pkt_type_name('S', false), "Sync");
    ck_assert_str_eq(pkt_type_name('S', true), "ParameterStatus");
    ck_assert_str_eq(pkt_type_name('Q', true), "unknown");
    ck_assert_uint_eq(pkt_type_max_len('S', false), PKT_SMALL_MAX);
    ck_assert_uint_eq(pkt_type_max_len('Q', false), PKT_LARGE_MAX);
    ck_assert_uint_eq(pkt_type_max_len('p', false), PKT_AUTH_MAX);
    ck_assert_uint_eq(pkt_type_max_len('D', true), INT32_MAX);
    ck_assert_uint_eq(pkt_type_max_len('Z', true), PKT_BACKEND_SHORT_MAX);
    ck_assert_uint_eq(pkt_type_max_len('x', true), 0);
    /* all 14 frontend and 24 backend types of protocol 3.0 */
    int nf = 0, nb = 0;
    for (int t = 0; t < 256; t++) {
        nf += pkt_type_valid((uint8_t) t, false);
        nb += pkt_type_valid((uint8_t) t, true);
        if (pkt_type_valid((uint8_t) t, true))
            ck_assert_str_ne(pkt_type_name((uint8_t) t, true), "unknown");
    }
    ck_assert_int_eq(nf, 14);
    ck_assert_int_eq(nb, 24);
}
END_TEST

/* A batch of messages in one buffer walks message by message. */
START_TEST(test_stream_walk)
{
    struct pkt_builder b;
    static const uint8_t want[] = {'R', 'S', 'K', 'Z', 'T', 'D', 'D', 'C', 'Z'};
    size_t off = 0;
    int i = 0;

    pkt_builder_init_dyn(&b, 8);
    pkt_write_auth(&b, PKT_AUTH_OK, NULL, 0);
    mk_param_status(&b);
    mk_backend_key(&b);
    pkt_write_ready(&b, 'I');
    mk_row_desc(&b);
    mk_data_row(&b);
    mk_data_row(&b);
    mk_command_complete(&b);
    pkt_write_ready(&b, 'I');
    ck_assert(!b.failed);
    while (off < b.len) {
        struct pkt_hdr h;

        ck_assert_int_eq(pkt_read_hdr(b.buf + off, b.len - off, INT32_MAX, &h), PKT_OK);
        ck_assert_int_lt(i, (int) sizeof want);
        ck_assert_int_eq(h.type, want[i]);
        ck_assert(pkt_type_valid(h.type, true));
        ck_assert_uint_le(h.len + 1, b.len - off);
        off += h.len + 1;
        i++;
    }
    ck_assert_int_eq(i, (int) sizeof want);
    ck_assert_uint_eq(off, b.len);
    pkt_builder_free(&b);
}
END_TEST

START_TEST(test_row_desc_layout)
{
    struct pkt_builder b;
    uint8_t mem[128];
    static const uint8_t want[] = {'T', 0, 0, 0, 26, 0,    1,    'a',  0,    0,    0,    0, 0, 0,
                                   0,   0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0};
    static const uint8_t want_row[] = {'D',  0,    0,    0, 15, 0, 2, 0xff,
                                       0xff, 0xff, 0xff, 0, 0,  0, 1, 'x'};
    const char *names[] = {"a"};
    const char *vals[] = {NULL, "x"};

    pkt_builder_init(&b, mem, sizeof mem);
    pkt_write_row_desc(&b, 1, names);
    ck_assert(!b.failed);
    ck_assert_uint_eq(b.len, sizeof want);
    ck_assert_int_eq(memcmp(mem, want, sizeof want), 0);
    pkt_builder_reset(&b);
    pkt_write_data_row(&b, 2, vals);
    ck_assert_uint_eq(b.len, sizeof want_row);
    ck_assert_int_eq(memcmp(mem, want_row, sizeof want_row), 0);
}
END_TEST

/* ---- startup ---- */

static size_t build_startup(uint8_t *mem, size_t cap, const struct pkt_param *ps, int n)
{
    struct pkt_builder b;

    pkt_builder_init(&b, mem, cap);
    pkt_write_startup(&b, ps, n);
    ck_assert(!b.failed);
    return b.len;
}

START_TEST(test_startup_roundtrip)
{
    static const struct pkt_param ps[] = {
        {"user", "alice"},         {"database", "shop"},  {"options", "-c x=1"},
        {"application_name", "a"}, {"replication", "on"}, {"_pq_.compress", "zstd"},
        {"DateStyle", "ISO"},
    };
    uint8_t mem[512];
    struct pkt_startup st;
    uint32_t len, code;
    size_t n = build_startup(mem, sizeof mem, ps, 7);

    ck_assert_int_eq(pkt_read_startup_hdr(mem, n, &len, &code), PKT_OK);
    ck_assert_uint_eq(len, n);
    ck_assert_uint_eq(code, PKT_PROTO_V3);
    ck_assert_int_eq(pkt_parse_startup(mem, n, &st), PKT_OK);
    ck_assert_uint_eq(st.code, PKT_PROTO_V3);
    ck_assert_str_eq(st.user, "alice");
    ck_assert_str_eq(st.database, "shop");
    ck_assert_str_eq(st.options, "-c x=1");
    ck_assert_str_eq(st.application_name, "a");
    ck_assert_str_eq(st.replication, "on");
    ck_assert_int_eq(st.nparams, 7);
    ck_assert_str_eq(st.params[6].name, "DateStyle");
    ck_assert_str_eq(st.params[6].value, "ISO");
    ck_assert_int_eq(st.nunknown_pq, 1);
    ck_assert_str_eq(st.unknown_pq[0], "_pq_.compress");
}
END_TEST

START_TEST(test_startup_defaults_and_user)
{
    static const struct pkt_param only_user[] = {{"user", "bob"}};
    static const struct pkt_param no_user[] = {{"database", "x"}};
    static const struct pkt_param empty_user[] = {{"user", ""}, {"database", "x"}};
    static const struct pkt_param empty_db[] = {{"user", "bob"}, {"database", ""}};
    uint8_t mem[256];
    struct pkt_startup st;
    size_t n;

    n = build_startup(mem, sizeof mem, only_user, 1);
    ck_assert_int_eq(pkt_parse_startup(mem, n, &st), PKT_OK);
    ck_assert_str_eq(st.database, "bob");
    ck_assert_ptr_null(st.options);
    ck_assert_ptr_null(st.application_name);
    ck_assert_ptr_null(st.replication);
    n = build_startup(mem, sizeof mem, empty_db, 2);
    ck_assert_int_eq(pkt_parse_startup(mem, n, &st), PKT_OK);
    ck_assert_str_eq(st.database, "bob");
    n = build_startup(mem, sizeof mem, no_user, 1);
    ck_assert_int_eq(pkt_parse_startup(mem, n, &st), PKT_ERROR);
    n = build_startup(mem, sizeof mem, empty_user, 2);
    ck_assert_int_eq(pkt_parse_startup(mem, n, &st), PKT_ERROR);
    n = build_startup(mem, sizeof mem, NULL, 0);
    ck_assert_int_eq(pkt_parse_startup(mem, n, &st), PKT_ERROR);
}
END_TEST

/* Startup packet from a raw body (after length + code). */
/* Parses a startup packet made of a header and a raw body (after length + code), in an
   exact-size heap block; the block is handed back in *keep (caller frees) for the strings. */
static enum pkt_status startup_raw_keep(uint32_t code, const void *body, size_t blen,
                                        struct pkt_startup *st, uint8_t **keep)
{
    uint8_t *p = malloc(8 + blen);
    uint32_t len = (uint32_t) (8 + blen);

    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t) (len >> (24 - 8 * i));
        p[4 + i] = (uint8_t) (code >> (24 - 8 * i));
    }
    if (blen)
        memcpy(p + 8, body, blen);
    *keep = p;
    return pkt_parse_startup(p, 8 + blen, st);
}

static enum pkt_status startup_raw(uint32_t code, const void *body, size_t blen,
                                   struct pkt_startup *st)
{
    uint8_t *p;
    enum pkt_status r = startup_raw_keep(code, body, blen, st, &p);

    free(p);
    return r;
}

START_TEST(test_startup_layout_errors)
{
    struct pkt_startup st;

    /* good, for reference (sizeof - 1 drops the literal's NUL) */
    ck_assert_int_eq(startup_raw(PKT_PROTO_V3, "user\0bob\0\0", 10, &st), PKT_OK);
    /* missing final terminator */
    ck_assert_int_eq(startup_raw(PKT_PROTO_V3, "user\0bob\0", 9, &st), PKT_ERROR);
    /* odd: a name without value */
    ck_assert_int_eq(startup_raw(PKT_PROTO_V3, "user\0bob\0extra\0", 15, &st), PKT_ERROR);
    ck_assert_int_eq(startup_raw(PKT_PROTO_V3, "user\0bob\0extra\0\0", 16, &st), PKT_ERROR);
    /* unterminated value */
    ck_assert_int_eq(startup_raw(PKT_PROTO_V3, "user\0bob", 8, &st), PKT_ERROR);
    /* bytes after the terminator */
    ck_assert_int_eq(startup_raw(PKT_PROTO_V3, "user\0bob\0\0x", 11, &st), PKT_ERROR);
    ck_assert_int_eq(startup_raw(PKT_PROTO_V3, "user\0bob\0\0\0", 11, &st), PKT_ERROR);
    /* empty body */
    ck_assert_int_eq(startup_raw(PKT_PROTO_V3, "", 0, &st), PKT_ERROR);
}
END_TEST

START_TEST(test_startup_versions_and_pq)
{
    struct pkt_startup st;
    static const char body[] = "user\0bob\0_pq_.a\0x\0_pq_.b\0y\0\0";

    uint8_t *keep;

    ck_assert_int_eq(startup_raw_keep(0x00030002u, body, sizeof body - 1, &st, &keep), PKT_OK);
    ck_assert_uint_eq(st.code, 0x00030002u);
    ck_assert_int_eq(st.nunknown_pq, 2);
    ck_assert_str_eq(st.unknown_pq[0], "_pq_.a");
    ck_assert_str_eq(st.unknown_pq[1], "_pq_.b");
    ck_assert_int_eq(st.nparams, 3);
    free(keep);
    /* protocol 2.0 and 4.0 are refused, but the code is reported */
    ck_assert_int_eq(startup_raw(0x00020000u, body, sizeof body - 1, &st), PKT_ERROR);
    ck_assert_uint_eq(st.code, 0x00020000u);
    ck_assert_int_eq(startup_raw(0x00040000u, body, sizeof body - 1, &st), PKT_ERROR);
}
END_TEST

START_TEST(test_startup_special_codes)
{
    struct pkt_builder b;
    uint8_t mem[32];
    struct pkt_startup st;
    static const uint8_t extra[16] = {0};

    pkt_builder_init(&b, mem, sizeof mem);
    pkt_write_cancel_request(&b, 77, 0x01020304);
    ck_assert_uint_eq(b.len, 16);
    ck_assert_int_eq(pkt_parse_startup(mem, b.len, &st), PKT_OK);
    ck_assert_uint_eq(st.code, PKT_CODE_CANCEL);
    ck_assert_uint_eq(st.cancel_pid, 77);
    ck_assert_uint_eq(st.cancel_key, 0x01020304);
    ck_assert_int_eq(startup_raw(PKT_CODE_CANCEL, extra, 4, &st), PKT_ERROR);
    ck_assert_int_eq(startup_raw(PKT_CODE_CANCEL, extra, 12, &st), PKT_ERROR);

    pkt_builder_reset(&b);
    pkt_write_ssl_request(&b);
    ck_assert_uint_eq(b.len, 8);
    ck_assert_int_eq(pkt_parse_startup(mem, b.len, &st), PKT_OK);
    ck_assert_uint_eq(st.code, PKT_CODE_SSL);
    ck_assert_int_eq(startup_raw(PKT_CODE_SSL, extra, 4, &st), PKT_ERROR);

    pkt_builder_reset(&b);
    pkt_write_gssenc_request(&b);
    ck_assert_int_eq(pkt_parse_startup(mem, b.len, &st), PKT_OK);
    ck_assert_uint_eq(st.code, PKT_CODE_GSSENC);
    ck_assert_int_eq(startup_raw(PKT_CODE_GSSENC, extra, 1, &st), PKT_ERROR);

    /* the length field must match the length given */
    pkt_builder_reset(&b);
    pkt_write_ssl_request(&b);
    ck_assert_int_eq(pkt_parse_startup(mem, 9, &st), PKT_ERROR);
    ck_assert_int_eq(pkt_parse_startup(mem, 7, &st), PKT_ERROR);
}
END_TEST

START_TEST(test_startup_hdr_limits)
{
    uint8_t p[8] = {0, 0, 0, 8, 0, 3, 0, 0};
    uint32_t len, code;

    for (size_t n = 0; n < 4; n++)
        ck_assert_int_eq(pkt_read_startup_hdr(p, n, &len, &code), PKT_INCOMPLETE);
    for (size_t n = 4; n < 8; n++)
        ck_assert_int_eq(pkt_read_startup_hdr(p, n, &len, &code), PKT_INCOMPLETE);
    ck_assert_int_eq(pkt_read_startup_hdr(p, 8, &len, &code), PKT_OK);
    ck_assert_uint_eq(code, PKT_PROTO_V3);
    p[3] = 7; /* too short: refused as soon as the length is readable */
    ck_assert_int_eq(pkt_read_startup_hdr(p, 4, &len, &code), PKT_ERROR);
    p[2] = (PKT_STARTUP_MAX + 1) >> 8;
    p[3] = (PKT_STARTUP_MAX + 1) & 0xff;
    ck_assert_int_eq(pkt_read_startup_hdr(p, 4, &len, &code), PKT_ERROR);
    p[2] = PKT_STARTUP_MAX >> 8;
    p[3] = PKT_STARTUP_MAX & 0xff;
    ck_assert_int_eq(pkt_read_startup_hdr(p, 8, &len, &code), PKT_OK);
    ck_assert_uint_eq(len, PKT_STARTUP_MAX);
    p[0] = 0x80; /* would be negative as int32 */
    ck_assert_int_eq(pkt_read_startup_hdr(p, 8, &len, &code), PKT_ERROR);
}
END_TEST

START_TEST(test_startup_too_many_params)
{
    struct pkt_param ps[PKT_MAX_PARAMS + 1];
    char names[PKT_MAX_PARAMS + 1][8];
    uint8_t mem[PKT_STARTUP_MAX];
    struct pkt_startup st;
    size_t n;

    ps[0].name = "user";
    ps[0].value = "u";
    for (int i = 1; i <= PKT_MAX_PARAMS; i++) {
        snprintf(names[i], sizeof names[i], "p%d", i);
        ps[i].name = names[i];
        ps[i].value = "v";
    }
    n = build_startup(mem, sizeof mem, ps, PKT_MAX_PARAMS);
    ck_assert_int_eq(pkt_parse_startup(mem, n, &st), PKT_OK);
    ck_assert_int_eq(st.nparams, PKT_MAX_PARAMS);
    n = build_startup(mem, sizeof mem, ps, PKT_MAX_PARAMS + 1);
    ck_assert_int_eq(pkt_parse_startup(mem, n, &st), PKT_ERROR);
}
END_TEST

/* Every prefix of a startup packet: wrong length -> ERROR; with the length field rewritten to
   the prefix length (a lying client), never a read past the end, and never OK without user. */
START_TEST(test_startup_truncated)
{
    static const struct pkt_param ps[] = {{"user", "alice"}, {"database", "db"}};
    uint8_t mem[128];
    size_t n = build_startup(mem, sizeof mem, ps, 2);
    int oks = 0;

    for (size_t k = 0; k < n; k++) {
        uint8_t *p = dup_exact(mem, k);
        struct pkt_startup st;

        ck_assert_int_eq(pkt_parse_startup(p, k, &st), PKT_ERROR);
        if (k >= 4) {
            p[0] = 0;
            p[1] = 0;
            p[2] = (uint8_t) (k >> 8);
            p[3] = (uint8_t) k;
            if (pkt_parse_startup(p, k, &st) == PKT_OK) {
                ck_assert_ptr_nonnull(st.user);
                oks++;
            }
        }
        free(p);
    }
    ck_assert_int_eq(oks, 0); /* no proper prefix ends with the terminator after "db" */
}
END_TEST

/* ---- builder ---- */

START_TEST(test_builder_fixed_overflow)
{
    struct pkt_builder b;
    uint8_t big[256];
    size_t need;

    pkt_builder_init(&b, big, sizeof big);
    mk_error(&b);
    ck_assert(!b.failed);
    need = b.len;

    for (size_t cap = 0; cap <= need + 1; cap++) {
        struct {
            uint8_t mem[64];
            uint8_t guard[256];
        } area;

        ck_assert_uint_le(need, sizeof area.mem + sizeof area.guard);
        memset(&area, 0xAA, sizeof area);
        pkt_builder_init(&b, (uint8_t *) &area, cap);
        mk_error(&b);
        ck_assert_uint_le(b.len, cap);
        ck_assert(b.failed == (cap < need));
        for (size_t i = cap; i < sizeof area; i++)
            ck_assert_int_eq(((uint8_t *) &area)[i], 0xAA);
        if (!b.failed)
            ck_assert_int_eq(memcmp(&area, big, need), 0);
    }
}
END_TEST

START_TEST(test_builder_sticky_and_reset)
{
    struct pkt_builder b;
    uint8_t mem[8];
    size_t len;

    pkt_builder_init(&b, mem, sizeof mem);
    pkt_write_query(&b, "SELECT 1"); /* 14 bytes: does not fit */
    ck_assert(b.failed);
    len = b.len;
    pkt_write_sync(&b); /* would fit, but the flag is sticky */
    ck_assert(b.failed);
    ck_assert_uint_eq(b.len, len);
    pkt_builder_reset(&b);
    ck_assert(!b.failed);
    ck_assert_uint_eq(b.len, 0);
    pkt_write_sync(&b);
    ck_assert(!b.failed);
    ck_assert_uint_eq(b.len, 5);
    ck_assert_int_eq(memcmp(mem, "S\0\0\0\4", 5), 0);

    pkt_builder_init(&b, NULL, 100); /* no memory: capacity 0 */
    pkt_put_u8(&b, 1);
    ck_assert(b.failed);
    ck_assert_uint_eq(b.len, 0);
}
END_TEST

START_TEST(test_builder_bad_arguments)
{
    struct pkt_builder b;
    uint8_t mem[64];

    pkt_builder_init(&b, mem, sizeof mem);
    pkt_write_query(&b, NULL);
    ck_assert(b.failed);
    pkt_builder_reset(&b);
    pkt_end(&b); /* no message begun */
    ck_assert(b.failed);
    pkt_builder_reset(&b);
    pkt_write_row_desc(&b, -1, NULL);
    ck_assert(b.failed);
    pkt_builder_reset(&b);
    pkt_write_describe(&b, 'X', "n");
    ck_assert(b.failed);
    pkt_builder_reset(&b);
    pkt_write_parse(&b, "", "SELECT 1", 1, NULL);
    ck_assert(b.failed);
    pkt_builder_reset(&b);
    pkt_write_error(&b, "ERROR", NULL, "m", NULL, NULL);
    ck_assert(b.failed);
}
END_TEST

START_TEST(test_builder_dynamic_growth)
{
    struct pkt_builder b;
    size_t off = 0;
    int count = 0;

    pkt_builder_init_dyn(&b, 1);
    ck_assert(b.dynamic);
    for (int i = 0; i < 1000; i++)
        pkt_write_command_complete(&b, "INSERT 0 1");
    ck_assert(!b.failed);
    ck_assert_uint_eq(b.len, 1000 * 16);
    ck_assert_uint_ge(b.cap, b.len);
    while (off < b.len) {
        struct pkt_hdr h;
        const char *tag;

        ck_assert_int_eq(pkt_read_hdr(b.buf + off, b.len - off, 100, &h), PKT_OK);
        ck_assert_int_eq(pkt_parse_command_complete(b.buf + off + 5, h.len - 4, &tag), PKT_OK);
        ck_assert_str_eq(tag, "INSERT 0 1");
        off += h.len + 1;
        count++;
    }
    ck_assert_int_eq(count, 1000);
    pkt_builder_free(&b);
    ck_assert_ptr_null(b.buf);
    ck_assert_uint_eq(b.len, 0);
}
END_TEST

static Suite *pkt_suite(void)
{
    Suite *s = suite_create("pkt");
    TCase *tc = tcase_create("messages");

    tcase_add_loop_test(tc, test_case_whole, 0, NCASES);
    tcase_add_loop_test(tc, test_case_truncated, 0, NCASES);
    tcase_add_loop_test(tc, test_case_trailing, 0, NCASES);
    tcase_add_test(tc, test_error_roundtrip);
    tcase_add_test(tc, test_error_fields_unknown_and_bad);
    tcase_add_test(tc, test_backend_roundtrip);
    tcase_add_test(tc, test_ready_status_checked);
    tcase_add_test(tc, test_backend_key_lengths);
    tcase_add_test(tc, test_auth_roundtrip);
    tcase_add_test(tc, test_auth_bad);
    tcase_add_test(tc, test_negotiate_roundtrip);
    tcase_add_test(tc, test_frontend_roundtrip);
    tcase_add_test(tc, test_sasl_initial_roundtrip);
    tcase_add_test(tc, test_lying_inner_lengths);
    tcase_add_test(tc, test_missing_nuls);
    tcase_add_test(tc, test_read_hdr_limits);
    tcase_add_test(tc, test_type_table);
    tcase_add_test(tc, test_stream_walk);
    tcase_add_test(tc, test_row_desc_layout);
    suite_add_tcase(s, tc);

    tc = tcase_create("startup");
    tcase_add_test(tc, test_startup_roundtrip);
    tcase_add_test(tc, test_startup_defaults_and_user);
    tcase_add_test(tc, test_startup_layout_errors);
    tcase_add_test(tc, test_startup_versions_and_pq);
    tcase_add_test(tc, test_startup_special_codes);
    tcase_add_test(tc, test_startup_hdr_limits);
    tcase_add_test(tc, test_startup_too_many_params);
    tcase_add_test(tc, test_startup_truncated);
    suite_add_tcase(s, tc);

    tc = tcase_create("builder");
    tcase_add_test(tc, test_builder_fixed_overflow);
    tcase_add_test(tc, test_builder_sticky_and_reset);
    tcase_add_test(tc, test_builder_bad_arguments);
    tcase_add_test(tc, test_builder_dynamic_growth);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(pkt_suite());
}
