/*
 * Check suite of the usage ledger: CRC32C vectors, record encode/decode round trips, every
 * truncation and every flipped byte, torn tails of a file cut at every byte (read and cut on
 * open), crash-close of open intervals on reopen, rotation across a month boundary with an
 * injected clock, and rollback-free appends after a cut.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgtide/ledger.h"
#include "pgtide/log.h"
#include "unit.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/test_ledger.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    log_set_level(LOG_LVL_ERROR);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static struct ledger_record rec(enum ledger_kind k, int64_t t, const char *name, uint32_t cu)
{
    struct ledger_record r;
    memset(&r, 0, sizeof(r));
    r.kind = k;
    r.wall_ms = t;
    r.cu_milli = cu;
    r.role = strcmp(name, "primary") == 0 ? LEDGER_ROLE_PRIMARY : LEDGER_ROLE_REPLICA;
    snprintf(r.name, sizeof(r.name), "%s", name);
    return r;
}

START_TEST(crc_vectors)
{
    ck_assert_uint_eq(ledger_crc32c(0, "123456789", 9), 0xE3069283u);
    ck_assert_uint_eq(ledger_crc32c(0, "", 0), 0);
    uint8_t zeros[32] = {0};
    ck_assert_uint_eq(ledger_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    uint8_t ones[32];
    memset(ones, 0xff, sizeof(ones));
    ck_assert_uint_eq(ledger_crc32c(0, ones, 32), 0x62A8AB43u);
    /* incremental equals one-shot */
    uint32_t c = ledger_crc32c(0, "1234", 4);
    ck_assert_uint_eq(ledger_crc32c(c, "56789", 5), 0xE3069283u);
}
END_TEST

START_TEST(roundtrip)
{
    for (int k = LEDGER_START; k <= LEDGER_CRASH_CLOSE; k++) {
        struct ledger_record r = rec((enum ledger_kind) k, 1790000000123LL + k, "replica-3", 2750);
        r.paused = k == LEDGER_HEARTBEAT;
        uint8_t buf[LEDGER_REC_MAX];
        size_t n = ledger_encode(&r, buf);
        ck_assert_uint_eq(n, 8 + 16 + strlen("replica-3"));
        struct ledger_record d;
        size_t used = 0;
        ck_assert_int_eq(ledger_decode(buf, n, &d, &used), LEDGER_DEC_OK);
        ck_assert_uint_eq(used, n);
        ck_assert_int_eq(d.kind, k);
        ck_assert_int_eq(d.wall_ms, r.wall_ms);
        ck_assert_uint_eq(d.cu_milli, 2750);
        ck_assert_int_eq(d.role, LEDGER_ROLE_REPLICA);
        ck_assert_int_eq(d.paused, r.paused);
        ck_assert_str_eq(d.name, "replica-3");
    }
    ck_assert_str_eq(ledger_kind_name(LEDGER_CRASH_CLOSE), "crash-close");
    ck_assert_str_eq(ledger_kind_name((enum ledger_kind) 99), "?");
}
END_TEST

START_TEST(encode_refuses_bad)
{
    uint8_t buf[LEDGER_REC_MAX];
    struct ledger_record r = rec(LEDGER_START, 1, "primary", 1000);
    r.kind = (enum ledger_kind) 0;
    ck_assert_uint_eq(ledger_encode(&r, buf), 0);
    r = rec(LEDGER_START, 1, "", 1000);
    ck_assert_uint_eq(ledger_encode(&r, buf), 0);
    r = rec(LEDGER_START, 1, "has space", 1000);
    ck_assert_uint_eq(ledger_encode(&r, buf), 0);
    r = rec(LEDGER_START, 1, "primary", 1000);
    memset(r.name, 'x', sizeof(r.name)); /* not terminated within LEDGER_NAME_MAX */
    ck_assert_uint_eq(ledger_encode(&r, buf), 0);
}
END_TEST

START_TEST(every_truncation_and_flip)
{
    struct ledger_record r = rec(LEDGER_RESIZE, 1790000000000LL, "primary", 500), d;
    uint8_t buf[LEDGER_REC_MAX];
    size_t n = ledger_encode(&r, buf), used;
    for (size_t len = 0; len < n; len++) {
        uint8_t *copy = malloc(len + 1); /* exact size: ASan catches over-reads */
        memcpy(copy, buf, len);
        enum ledger_decode_status st = ledger_decode(copy, len, &d, &used);
        ck_assert_int_eq(st, LEDGER_DEC_INCOMPLETE);
        free(copy);
    }
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t copy[LEDGER_REC_MAX];
            memcpy(copy, buf, n);
            copy[i] ^= (uint8_t) (1u << bit);
            enum ledger_decode_status st = ledger_decode(copy, n, &d, &used);
            ck_assert_msg(st != LEDGER_DEC_OK, "flip byte %zu bit %d accepted", i, bit);
        }
    }
    /* a length that lies upward is incomplete or corrupt, never read past the buffer */
    uint8_t big[8] = {0xff, 0xff, 0, 0, 0, 0, 0, 0};
    ck_assert_int_eq(ledger_decode(big, 8, &d, &used), LEDGER_DEC_CORRUPT);
}
END_TEST

static int64_t fake_now;
static int64_t fake_clock(void *arg)
{
    (void) arg;
    return fake_now;
}

struct collected {
    struct ledger_record r[64];
    int n;
};

static int collect(void *arg, const struct ledger_record *r)
{
    struct collected *c = arg;
    if (c->n < 64)
        c->r[c->n++] = *r;
    return 0;
}

static void path_of(const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* Writes three records through the writer; returns the file's name. */
static void write_three(char *name, size_t len)
{
    fake_now = 1790000000000LL; /* 2026-09-21 */
    char err[256];
    int closed = -1;
    struct ledger *l = ledger_open(dir, fake_clock, NULL, &closed, err, sizeof(err));
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(closed, 0);
    ck_assert_int_eq(ledger_record(l, LEDGER_START, "primary", LEDGER_ROLE_PRIMARY, 1, false), 0);
    fake_now += 5000;
    ck_assert_int_eq(ledger_record(l, LEDGER_HEARTBEAT, "primary", LEDGER_ROLE_PRIMARY, 1, false),
                     0);
    fake_now += 2000;
    ck_assert_int_eq(ledger_record(l, LEDGER_STOP, "primary", LEDGER_ROLE_PRIMARY, 1, false), 0);
    ledger_close(l);
    ledger_file_name(fake_now, name, len);
    ck_assert_str_eq(name, "ledger-2026-09");
}

START_TEST(torn_tail_every_byte)
{
    char name[32], path[512], err[256];
    write_three(name, sizeof(name));
    path_of(name, path, sizeof(path));
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    size_t full = (size_t) sb.st_size;
    size_t rec_len = 8 + 16 + 7;
    ck_assert_uint_eq(full, 8 + 3 * rec_len);
    FILE *f = fopen(path, "rb");
    uint8_t data[512];
    ck_assert_uint_eq(fread(data, 1, full, f), full);
    fclose(f);
    for (size_t cut = 0; cut <= full; cut++) {
        int fd = open(path, O_WRONLY | O_TRUNC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, data, cut), (ssize_t) cut);
        close(fd);
        struct collected c = {.n = 0};
        uint64_t cutb = 99;
        ck_assert_int_eq(ledger_read_all(dir, collect, &c, &cutb, err, sizeof(err)), 0);
        int expect = cut < 8 ? 0 : (int) ((cut - 8) / rec_len);
        ck_assert_int_eq(c.n, expect);
        size_t good = cut < 8 ? 0 : 8 + (size_t) expect * rec_len;
        ck_assert_uint_eq(cutb, cut - good);
        for (int i = 0; i < c.n; i++)
            ck_assert_int_eq(c.r[i].kind, i == 0   ? LEDGER_START
                                          : i == 1 ? LEDGER_HEARTBEAT
                                                   : LEDGER_STOP);
        /* the writer cuts the tail and appends after the good prefix; an open interval left by
           the cut is closed at its last record */
        int closed = -1;
        fake_now = 1790000100000LL;
        struct ledger *l = ledger_open(dir, fake_clock, NULL, &closed, err, sizeof(err));
        ck_assert_ptr_nonnull(l);
        ck_assert_int_eq(closed, expect == 1 || expect == 2 ? 1 : 0);
        ck_assert_int_eq(
            ledger_record(l, LEDGER_START, "replica-0", LEDGER_ROLE_REPLICA, 0.25, false), 0);
        ledger_close(l);
        c.n = 0;
        ck_assert_int_eq(ledger_read_all(dir, collect, &c, &cutb, err, sizeof(err)), 0);
        ck_assert_uint_eq(cutb, 0);
        ck_assert_int_eq(c.n, expect + (closed ? 1 : 0) + 1);
        if (closed) {
            ck_assert_int_eq(c.r[expect].kind, LEDGER_CRASH_CLOSE);
            ck_assert_int_eq(c.r[expect].wall_ms, c.r[expect - 1].wall_ms);
        }
        ck_assert_str_eq(c.r[c.n - 1].name, "replica-0");
        ck_assert_uint_eq(c.r[c.n - 1].cu_milli, 250);
    }
}
END_TEST

START_TEST(crc_error_mid_file)
{
    char name[32], path[512], err[256];
    write_three(name, sizeof(name));
    path_of(name, path, sizeof(path));
    int fd = open(path, O_RDWR);
    uint8_t b;
    size_t off = 8 + 31 + 20; /* inside the second record's body */
    ck_assert_int_eq(pread(fd, &b, 1, (off_t) off), 1);
    b ^= 0x10;
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t) off), 1);
    close(fd);
    struct collected c = {.n = 0};
    uint64_t cutb;
    ck_assert_int_eq(ledger_read_all(dir, collect, &c, &cutb, err, sizeof(err)), 0);
    ck_assert_int_eq(c.n, 1); /* nothing after a bad record is trusted */
    ck_assert_uint_eq(cutb, 62);
}
END_TEST

START_TEST(crash_close_at_last_heartbeat)
{
    char err[256];
    fake_now = 1790000000000LL;
    struct ledger *l = ledger_open(dir, fake_clock, NULL, NULL, err, sizeof(err));
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(ledger_record(l, LEDGER_START, "primary", LEDGER_ROLE_PRIMARY, 2, false), 0);
    ck_assert_int_eq(ledger_record(l, LEDGER_START, "replica-0", LEDGER_ROLE_REPLICA, 1, false), 0);
    fake_now += 5000;
    ck_assert_int_eq(ledger_record(l, LEDGER_HEARTBEAT, "primary", LEDGER_ROLE_PRIMARY, 2, true),
                     0);
    ck_assert_int_eq(ledger_record(l, LEDGER_STOP, "replica-0", LEDGER_ROLE_REPLICA, 1, false), 0);
    ledger_close(l); /* "crash": primary left open */
    fake_now += 60000;
    int closed = -1;
    l = ledger_open(dir, fake_clock, NULL, &closed, err, sizeof(err));
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(closed, 1);
    ledger_close(l);
    l = ledger_open(dir, fake_clock, NULL, &closed, err, sizeof(err));
    ck_assert_int_eq(closed, 0); /* idempotent */
    ledger_close(l);
    struct collected c = {.n = 0};
    ck_assert_int_eq(ledger_read_all(dir, collect, &c, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(c.n, 5);
    ck_assert_int_eq(c.r[4].kind, LEDGER_CRASH_CLOSE);
    ck_assert_str_eq(c.r[4].name, "primary");
    ck_assert_int_eq(c.r[4].wall_ms, 1790000005000LL);
    ck_assert_uint_eq(c.r[4].cu_milli, 2000);
}
END_TEST

START_TEST(rotation_month_boundary)
{
    char err[256];
    fake_now = 1793491199000LL; /* 2026-10-31T23:59:59Z */
    struct ledger *l = ledger_open(dir, fake_clock, NULL, NULL, err, sizeof(err));
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(ledger_record(l, LEDGER_START, "primary", LEDGER_ROLE_PRIMARY, 1, false), 0);
    fake_now += 2000; /* 2026-11-01T00:00:01Z */
    ck_assert_int_eq(ledger_record(l, LEDGER_HEARTBEAT, "primary", LEDGER_ROLE_PRIMARY, 1, false),
                     0);
    ck_assert_int_eq(ledger_record(l, LEDGER_STOP, "primary", LEDGER_ROLE_PRIMARY, 1, false), 0);
    ledger_close(l);
    char p1[512], p2[512];
    path_of("ledger-2026-10", p1, sizeof(p1));
    path_of("ledger-2026-11", p2, sizeof(p2));
    struct stat sb;
    ck_assert_int_eq(stat(p1, &sb), 0);
    ck_assert_int_eq(sb.st_size, 8 + 31);
    ck_assert_int_eq(stat(p2, &sb), 0);
    ck_assert_int_eq(sb.st_size, 8 + 2 * 31);
    ck_assert_int_eq(sb.st_mode & 0777, 0600);
    /* the old month stays readable, in order, and a torn tail in it does not hide the next */
    int fd = open(p1, O_WRONLY | O_APPEND);
    ck_assert_int_eq(write(fd, "\x20\x00\x00", 3), 3);
    close(fd);
    struct collected c = {.n = 0};
    uint64_t cutb;
    ck_assert_int_eq(ledger_read_all(dir, collect, &c, &cutb, err, sizeof(err)), 0);
    ck_assert_int_eq(c.n, 3);
    ck_assert_uint_eq(cutb, 3);
    ck_assert_int_eq(c.r[0].kind, LEDGER_START);
    ck_assert_int_eq(c.r[2].kind, LEDGER_STOP);
    char name[32];
    ledger_file_name(1798761600000LL, name, sizeof(name)); /* 2027-01-01T00:00:00Z */
    ck_assert_str_eq(name, "ledger-2027-01");
    ledger_file_name(1798761599999LL, name, sizeof(name));
    ck_assert_str_eq(name, "ledger-2026-12");
}
END_TEST

START_TEST(missing_dir_is_empty)
{
    char err[256], sub[300];
    snprintf(sub, sizeof(sub), "%s/nope", dir);
    struct collected c = {.n = 0};
    ck_assert_int_eq(ledger_read_all(sub, collect, &c, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(c.n, 0);
    ck_assert_ptr_null(ledger_open(sub, fake_clock, NULL, NULL, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "nope"));
}
END_TEST

static Suite *ledger_suite(void)
{
    Suite *s = suite_create("ledger");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, crc_vectors);
    tcase_add_test(tc, roundtrip);
    tcase_add_test(tc, encode_refuses_bad);
    tcase_add_test(tc, every_truncation_and_flip);
    suite_add_tcase(s, tc);
    tc = tcase_create("files");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, torn_tail_every_byte);
    tcase_add_test(tc, crc_error_mid_file);
    tcase_add_test(tc, crash_close_at_last_heartbeat);
    tcase_add_test(tc, rotation_month_boundary);
    tcase_add_test(tc, missing_dir_is_empty);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(ledger_suite());
}
