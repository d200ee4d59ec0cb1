/*
 * Check suite of the usage arithmetic: CU x running seconds per interval, rounding of each
 * interval up to whole seconds in its last state and size, the minimum charge, paused time
 * billed at paused_rate, resizes, crash-closed and open intervals, the [since, until) window,
 * grouping per compute, per role, per hour and per day, and the time parser and formatter.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtide/usage.h"
#include "unit.h"

#define T0 1790002800000LL /* 2026-09-21T15:00:00Z, an hour boundary */

static struct usage_params defaults(void)
{
    struct usage_params p;
    memset(&p, 0, sizeof(p));
    p.paused_rate = 0.1;
    return p;
}

static void feed(struct usage *u, enum ledger_kind k, int64_t t, const char *name, uint32_t cu)
{
    struct ledger_record r;
    memset(&r, 0, sizeof(r));
    r.kind = k;
    r.wall_ms = t;
    r.cu_milli = cu;
    r.role = strncmp(name, "replica", 7) == 0 ? LEDGER_ROLE_REPLICA : LEDGER_ROLE_PRIMARY;
    snprintf(r.name, sizeof(r.name), "%s", name);
    ck_assert_int_eq(usage_feed(u, &r), 0);
}

static void heartbeat(struct usage *u, int64_t t, const char *name, uint32_t cu, bool paused)
{
    struct ledger_record r;
    memset(&r, 0, sizeof(r));
    r.kind = LEDGER_HEARTBEAT;
    r.wall_ms = t;
    r.cu_milli = cu;
    r.paused = paused;
    snprintf(r.name, sizeof(r.name), "%s", name);
    ck_assert_int_eq(usage_feed(u, &r), 0);
}

#define near(a, b) ck_assert_msg(fabs((a) - (b)) < 1e-9, "%s = %.6f, expected %.6f", #a, (a), (b))

/* Runs the feed and expects exactly one row. */
static struct usage_row one_row(struct usage *u)
{
    struct usage_row *rows;
    int n = usage_finish(u, &rows);
    ck_assert_int_eq(n, 1);
    struct usage_row r = rows[0];
    free(rows);
    usage_free(u);
    return r;
}

START_TEST(rounds_up_each_interval)
{
    struct usage_params p = defaults();
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0, "primary", 1000);
    feed(u, LEDGER_STOP, T0 + 2500, "primary", 1000);
    feed(u, LEDGER_START, T0 + 10000, "primary", 1000);
    feed(u, LEDGER_STOP, T0 + 10001, "primary", 1000);
    feed(u, LEDGER_START, T0 + 20000, "primary", 1000);
    feed(u, LEDGER_STOP, T0 + 23000, "primary", 1000); /* exact: no extra */
    struct usage_row r = one_row(u);
    ck_assert_str_eq(r.name, "primary");
    ck_assert_int_eq(r.intervals, 3);
    near(r.running_seconds, 3.0 + 1.0 + 3.0);
    near(r.cu_seconds, 7.0);
    near(r.paused_seconds, 0.0);
    near(r.billed_cu_seconds, 7.0);
}
END_TEST

START_TEST(quarter_cu)
{
    struct usage_params p = defaults();
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0, "primary", 250);
    feed(u, LEDGER_STOP, T0 + 3200, "primary", 250);
    struct usage_row r = one_row(u);
    near(r.running_seconds, 4.0);
    near(r.cu_seconds, 1.0);
}
END_TEST

START_TEST(paused_billed_apart)
{
    struct usage_params p = defaults();
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0, "primary", 2000);
    feed(u, LEDGER_PAUSE, T0 + 1500, "primary", 2000);
    feed(u, LEDGER_THAW, T0 + 3500, "primary", 2000);
    feed(u, LEDGER_STOP, T0 + 4200, "primary", 2000);
    struct usage_row r = one_row(u);
    /* 4.2 s rounds to 5 s; the extra 0.8 s is running (the last state) */
    near(r.running_seconds, 3.0);
    near(r.paused_seconds, 2.0);
    near(r.cu_seconds, 6.0);
    near(r.paused_cu_seconds, 4.0);
    near(r.billed_cu_seconds, 6.4);
}
END_TEST

START_TEST(paused_at_the_end_and_rate)
{
    struct usage_params p = defaults();
    p.paused_rate = 0.5;
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0, "primary", 1000);
    feed(u, LEDGER_PAUSE, T0 + 1000, "primary", 1000);
    heartbeat(u, T0 + 2000, "primary", 1000, true);
    feed(u, LEDGER_STOP, T0 + 2500, "primary", 1000);
    struct usage_row r = one_row(u);
    near(r.running_seconds, 1.0);
    near(r.paused_seconds, 2.0); /* 1.5 s + the 0.5 s of rounding, in the last state */
    near(r.billed_cu_seconds, 1.0 + 0.5 * 2.0);
}
END_TEST

START_TEST(resize_mid_interval)
{
    struct usage_params p = defaults();
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0, "primary", 1000);
    feed(u, LEDGER_RESIZE, T0 + 2000, "primary", 2000);
    feed(u, LEDGER_RESIZE, T0 + 3000, "primary", 500);
    feed(u, LEDGER_STOP, T0 + 3100, "primary", 500);
    struct usage_row r = one_row(u);
    near(r.running_seconds, 4.0);
    near(r.cu_seconds, 2.0 + 2.0 + 0.5 * 1.0); /* rounding at the last size, 0.5 CU */
}
END_TEST

START_TEST(minimum_charge)
{
    struct usage_params p = defaults();
    p.minimum_charge_ms = 60000;
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0, "primary", 1000);
    feed(u, LEDGER_STOP, T0 + 2500, "primary", 1000);
    feed(u, LEDGER_START, T0 + 100000, "primary", 1000);
    feed(u, LEDGER_STOP, T0 + 190000, "primary", 1000); /* longer than the minimum */
    struct usage_row r = one_row(u);
    near(r.running_seconds, 60.0 + 90.0);
    ck_assert_int_eq(r.intervals, 2);
}
END_TEST

START_TEST(crash_close_and_open)
{
    struct usage_params p = defaults();
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0, "primary", 1000);
    heartbeat(u, T0 + 5000, "primary", 1000, false);
    feed(u, LEDGER_CRASH_CLOSE, T0 + 5000, "primary", 1000);
    feed(u, LEDGER_START, T0 + 60000, "primary", 1000);
    heartbeat(u, T0 + 65000, "primary", 1000, false);
    struct usage_row r = one_row(u); /* open: ends at its last record */
    near(r.running_seconds, 10.0);
    ck_assert_int_eq(r.intervals, 2);

    p.open_until_ms = T0 + 67500;
    u = usage_new(&p);
    feed(u, LEDGER_START, T0 + 60000, "primary", 1000);
    heartbeat(u, T0 + 65000, "primary", 1000, false);
    r = one_row(u);
    near(r.running_seconds, 8.0);
}
END_TEST

START_TEST(start_over_open_interval)
{
    struct usage_params p = defaults();
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0, "primary", 1000);
    heartbeat(u, T0 + 2000, "primary", 1000, false);
    feed(u, LEDGER_START, T0 + 9000, "primary", 1000); /* the old one ended unseen */
    feed(u, LEDGER_STOP, T0 + 10000, "primary", 1000);
    struct usage_row r = one_row(u);
    /* like a crash-close: the first interval ends at its last record (2 s), the gap is free */
    near(r.running_seconds, 2.0 + 1.0);
    ck_assert_int_eq(r.intervals, 2);
    /* records after a stop (no interval open) count nothing */
    u = usage_new(&p);
    feed(u, LEDGER_STOP, T0, "primary", 1000);
    heartbeat(u, T0 + 5000, "primary", 1000, false);
    struct usage_row *rows;
    ck_assert_int_le(usage_finish(u, &rows), 1);
    free(rows);
    usage_free(u);
}
END_TEST

START_TEST(by_hour_split)
{
    struct usage_params p = defaults();
    p.by = USAGE_BY_HOUR;
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0 - 30000, "primary", 1000); /* 14:59:30 */
    feed(u, LEDGER_STOP, T0 + 45200, "primary", 1000);  /* 15:00:45.2 */
    struct usage_row *rows;
    int n = usage_finish(u, &rows);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(rows[0].bucket_ms, T0 - 3600000);
    near(rows[0].running_seconds, 30.0);
    ck_assert_int_eq(rows[0].intervals, 0);
    ck_assert_int_eq(rows[1].bucket_ms, T0);
    near(rows[1].running_seconds, 46.0);
    ck_assert_int_eq(rows[1].intervals, 1);
    free(rows);
    usage_free(u);
}
END_TEST

START_TEST(by_day_per_compute_and_role)
{
    struct usage_params p = defaults();
    p.by = USAGE_BY_DAY;
    struct usage *u = usage_new(&p);
    int64_t day = T0 - 15 * 3600000LL; /* 2026-09-21T00:00:00Z */
    feed(u, LEDGER_START, day + 1000, "primary", 1000);
    feed(u, LEDGER_START, day + 1000, "replica-0", 500);
    feed(u, LEDGER_START, day + 1000, "replica-1", 500);
    feed(u, LEDGER_STOP, day + 11000, "replica-0", 500);
    feed(u, LEDGER_STOP, day + 21000, "replica-1", 500);
    feed(u, LEDGER_STOP, day + 86400000 + 1000, "primary", 1000); /* next day */
    struct usage_row *rows;
    int n = usage_finish(u, &rows);
    ck_assert_int_eq(n, 4);
    ck_assert_str_eq(rows[0].name, "primary");
    ck_assert_int_eq(rows[0].bucket_ms, day);
    near(rows[0].running_seconds, 86399.0);
    ck_assert_str_eq(rows[1].name, "replica-0");
    near(rows[1].cu_seconds, 5.0);
    ck_assert_int_eq(rows[1].role, LEDGER_ROLE_REPLICA);
    ck_assert_str_eq(rows[2].name, "replica-1");
    ck_assert_str_eq(rows[3].name, "primary");
    ck_assert_int_eq(rows[3].bucket_ms, day + 86400000);
    near(rows[3].running_seconds, 1.0);
    struct usage_row tot;
    usage_total(rows, n, &tot);
    ck_assert_str_eq(tot.name, "total");
    near(tot.cu_seconds, 86400.0 + 5.0 + 10.0);
    ck_assert_int_eq(tot.intervals, 3);
    free(rows);
    usage_free(u);

    p.by = USAGE_BY_TOTAL;
    p.per = USAGE_PER_ROLE;
    u = usage_new(&p);
    feed(u, LEDGER_START, day + 1000, "replica-0", 500);
    feed(u, LEDGER_START, day + 1000, "replica-1", 1000);
    feed(u, LEDGER_START, day + 1000, "primary", 1000);
    feed(u, LEDGER_STOP, day + 11000, "replica-0", 500);
    feed(u, LEDGER_STOP, day + 21000, "replica-1", 1000);
    feed(u, LEDGER_STOP, day + 2000, "primary", 1000);
    n = usage_finish(u, &rows);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(rows[0].name, "primary");
    near(rows[0].cu_seconds, 1.0);
    ck_assert_str_eq(rows[1].name, "replica");
    near(rows[1].cu_seconds, 5.0 + 20.0);
    near(rows[1].running_seconds, 30.0);
    ck_assert_int_eq(rows[1].intervals, 2);
    free(rows);
    usage_free(u);
}
END_TEST

START_TEST(window_clips)
{
    struct usage_params p = defaults();
    p.since_ms = T0 + 4000;
    p.until_ms = T0 + 7500;
    struct usage *u = usage_new(&p);
    feed(u, LEDGER_START, T0, "primary", 1000);
    feed(u, LEDGER_STOP, T0 + 10000, "primary", 1000);
    feed(u, LEDGER_START, T0 + 20000, "primary", 1000); /* wholly after the window */
    feed(u, LEDGER_STOP, T0 + 30000, "primary", 1000);
    struct usage_row r = one_row(u);
    near(r.running_seconds, 4.0); /* 3.5 s in the window, rounded */
    ck_assert_int_eq(r.intervals, 1);

    u = usage_new(&p);
    feed(u, LEDGER_START, T0 + 20000, "primary", 1000);
    feed(u, LEDGER_STOP, T0 + 30000, "primary", 1000);
    struct usage_row *rows;
    ck_assert_int_eq(usage_finish(u, &rows), 0);
    ck_assert_ptr_null(rows);
    usage_free(u);
}
END_TEST

START_TEST(times)
{
    int64_t ms;
    ck_assert_int_eq(usage_parse_time("2026-11-01", &ms), 0);
    ck_assert_int_eq(ms, 1793491200000LL);
    ck_assert_int_eq(usage_parse_time("2026-11-01T00:00:01Z", &ms), 0);
    ck_assert_int_eq(ms, 1793491201000LL);
    ck_assert_int_eq(usage_parse_time("2026-11-01 01:02", &ms), 0);
    ck_assert_int_eq(ms, 1793491200000LL + 3720000);
    ck_assert_int_eq(usage_parse_time("1793491200", &ms), 0);
    ck_assert_int_eq(ms, 1793491200000LL);
    ck_assert_int_eq(usage_parse_time("2026-13-01", &ms), -1);
    ck_assert_int_eq(usage_parse_time("2026-11-01T25:00", &ms), -1);
    ck_assert_int_eq(usage_parse_time("2026-11-01x", &ms), -1);
    ck_assert_int_eq(usage_parse_time("yesterday", &ms), -1);
    ck_assert_int_eq(usage_parse_time("", &ms), -1);
    char out[32];
    usage_format_time(1793491201000LL, out, sizeof(out));
    ck_assert_str_eq(out, "2026-11-01T00:00:01Z");
}
END_TEST

static Suite *usage_suite(void)
{
    Suite *s = suite_create("usage");
    TCase *tc = tcase_create("math");
    tcase_add_test(tc, rounds_up_each_interval);
    tcase_add_test(tc, quarter_cu);
    tcase_add_test(tc, paused_billed_apart);
    tcase_add_test(tc, paused_at_the_end_and_rate);
    tcase_add_test(tc, resize_mid_interval);
    tcase_add_test(tc, minimum_charge);
    tcase_add_test(tc, crash_close_and_open);
    tcase_add_test(tc, start_over_open_interval);
    tcase_add_test(tc, by_hour_split);
    tcase_add_test(tc, by_day_per_compute_and_role);
    tcase_add_test(tc, window_clips);
    tcase_add_test(tc, times);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(usage_suite());
}
