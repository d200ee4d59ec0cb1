/*
 * Unit tests of replpolicy: replica count decisions driven by second-by-second traces (reader
 * waits, primary and replica CPU), bounds, the no-flap guarantee on oscillating traces, LSN
 * parsing, lag arithmetic and the rotation rules.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgtide/replpolicy.h"
#include "unit.h"

static struct replpolicy_params params(int min, int max)
{
    struct replpolicy_params p = {.min_replicas = min,
                                  .max_replicas = max,
                                  .scale_wait_ms = 1000,
                                  .window_ms = 30000,
                                  .cooldown_ms = 300000,
                                  .cpu_high = 0.8,
                                  .cpu_low = 0.3};
    return p;
}

/* Feeds one observation per second from t0 for n seconds; returns the final count and counts
   the changes in *changes. */
struct trace_point {
    int waiting;
    int64_t wait_ms;
    double pcpu, rcpu;
};

static int run_trace(struct replpolicy *s, const struct replpolicy_params *p, int cur, int64_t *t,
                     int n, struct trace_point (*gen)(int i), int *changes, int64_t *change_at,
                     int maxat)
{
    for (int i = 0; i < n; i++) {
        struct trace_point tp = gen(i);
        struct replpolicy_input in = {*t, cur, tp.waiting, tp.wait_ms, tp.pcpu, tp.rcpu};
        char why[200];
        int to = replpolicy_decide(s, p, &in, why, sizeof(why));
        ck_assert_int_ge(to, p->min_replicas);
        ck_assert_int_le(to, p->max_replicas);
        ck_assert_int_le(abs(to - cur), 1);
        if (to != cur) {
            if (change_at != NULL && *changes < maxat)
                change_at[*changes] = *t;
            (*changes)++;
        }
        cur = to;
        *t += 1000;
    }
    return cur;
}

static struct trace_point idle(int i)
{
    (void) i;
    return (struct trace_point){0, 0, 0.05, -1};
}

static struct trace_point readers_wait(int i)
{
    (void) i;
    return (struct trace_point){5, 2500, 0.5, -1};
}

static struct trace_point cpu_busy(int i)
{
    (void) i;
    return (struct trace_point){0, 0, 0.95, -1};
}

/* Waits oscillate around the threshold (0.9 s, 1.1 s) every other second. */
static struct trace_point wait_oscillates(int i)
{
    return (struct trace_point){i % 2 ? 2 : 1, i % 2 ? 1100 : 900, 0.5, 0.5};
}

/* CPU oscillates around cpu_high and cpu_low every 10 s. */
static struct trace_point cpu_oscillates(int i)
{
    return (struct trace_point){0, 0, (i / 10) % 2 ? 0.85 : 0.25, (i / 10) % 2 ? 0.85 : 0.25};
}

START_TEST(test_idle_stays_at_min)
{
    struct replpolicy s;
    replpolicy_reset(&s);
    struct replpolicy_params p = params(0, 3);
    int64_t t = 1000000;
    int changes = 0;
    ck_assert_int_eq(run_trace(&s, &p, 0, &t, 600, idle, &changes, NULL, 0), 0);
    ck_assert_int_eq(changes, 0);
    p = params(1, 3); /* min raised: brought up at once */
    changes = 0;
    ck_assert_int_eq(run_trace(&s, &p, 0, &t, 1, idle, &changes, NULL, 0), 1);
    ck_assert_int_eq(changes, 1);
}
END_TEST

START_TEST(test_wait_scales_out_then_in)
{
    struct replpolicy s;
    replpolicy_reset(&s);
    struct replpolicy_params p = params(0, 2);
    int64_t t = 1000000, at[8];
    int changes = 0;
    /* waiting readers: one replica at once, a second after the pressure lasted a window */
    int n = run_trace(&s, &p, 0, &t, 120, readers_wait, &changes, at, 8);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(changes, 2);
    ck_assert_int_eq(at[0], 1000000);
    ck_assert_int_ge(at[1] - at[0], p.window_ms);
    ck_assert_int_le(at[1] - at[0], p.window_ms + 2000);
    /* load gone: one step in after a cooldown, the next after another one */
    changes = 0;
    int64_t idle_from = t;
    n = run_trace(&s, &p, n, &t, 700, idle, &changes, at, 8);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(changes, 2);
    ck_assert_int_ge(at[0] - idle_from, p.cooldown_ms);
    ck_assert_int_ge(at[1] - at[0], p.cooldown_ms);
}
END_TEST

START_TEST(test_short_wait_is_no_pressure)
{
    struct replpolicy s;
    replpolicy_reset(&s);
    struct replpolicy_params p = params(0, 2);
    struct replpolicy_input in = {5000, 0, 3, 1000, 0.5, -1}; /* = scale_wait: not longer */
    ck_assert_int_eq(replpolicy_decide(&s, &p, &in, NULL, 0), 0);
    in.longest_wait_ms = 1001;
    in.now_ms += 1000;
    char why[200];
    ck_assert_int_eq(replpolicy_decide(&s, &p, &in, why, sizeof(why)), 1);
    ck_assert_ptr_nonnull(strstr(why, "waiting"));
}
END_TEST

START_TEST(test_cpu_needs_a_full_window)
{
    struct replpolicy s;
    replpolicy_reset(&s);
    struct replpolicy_params p = params(0, 4);
    int64_t t = 0, at[8];
    int changes = 0;
    int n = run_trace(&s, &p, 0, &t, 30, cpu_busy, &changes, at, 8);
    ck_assert_int_eq(n, 0); /* 29 s of high CPU: not yet */
    n = run_trace(&s, &p, n, &t, 1, cpu_busy, &changes, at, 8);
    ck_assert_int_eq(n, 1); /* 30 s */
    /* sustained: one more step per window, up to max */
    n = run_trace(&s, &p, n, &t, 200, cpu_busy, &changes, at, 8);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(changes, 4);
    for (int i = 1; i < 4; i++)
        ck_assert_int_ge(at[i] - at[i - 1], p.window_ms);
}
END_TEST

START_TEST(test_oscillation_never_flaps)
{
    const struct {
        struct trace_point (*gen)(int);
    } cases[] = {{wait_oscillates}, {cpu_oscillates}};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct replpolicy s;
        replpolicy_reset(&s);
        struct replpolicy_params p = params(0, 16);
        int64_t t = 0, at[64];
        int changes = 0;
        int n = run_trace(&s, &p, 1, &t, 3600, cases[k].gen, &changes, at, 64);
        /* an hour of oscillation: at most one change per cooldown, never a step in */
        ck_assert_int_le(changes, 3600000 / p.cooldown_ms + 1);
        for (int i = 1; i < changes && i < 64; i++)
            ck_assert_int_ge(at[i] - at[i - 1], p.cooldown_ms);
        ck_assert_int_ge(n, 1);
    }
}
END_TEST

START_TEST(test_bounds)
{
    struct replpolicy s;
    replpolicy_reset(&s);
    struct replpolicy_params p = params(0, 1);
    int64_t t = 0;
    int changes = 0;
    ck_assert_int_eq(run_trace(&s, &p, 0, &t, 600, readers_wait, &changes, NULL, 0), 1);
    ck_assert_int_eq(changes, 1);
    p = params(0, 0); /* max lowered below the count: down at once */
    struct replpolicy_input in = {t, 1, 5, 5000, 0.9, 0.9};
    ck_assert_int_eq(replpolicy_decide(&s, &p, &in, NULL, 0), 0);
    p = params(2, 2);
    in.now_ms += 1000;
    in.current = 0;
    ck_assert_int_eq(replpolicy_decide(&s, &p, &in, NULL, 0), 2);
    p = params(0, 40); /* beyond REPLPOLICY_MAX */
    in.current = 30;
    ck_assert_int_eq(replpolicy_decide(&s, &p, &in, NULL, 0), REPLPOLICY_MAX);
}
END_TEST

START_TEST(test_busy_replicas_keep_them)
{
    struct replpolicy s;
    replpolicy_reset(&s);
    struct replpolicy_params p = params(0, 3);
    /* primary idle but replicas busy between the thresholds: no scale-in, ever */
    for (int i = 0; i < 1000; i++) {
        struct replpolicy_input in = {(int64_t) i * 1000, 2, 0, 0, 0.05, 0.5};
        ck_assert_int_eq(replpolicy_decide(&s, &p, &in, NULL, 0), 2);
    }
}
END_TEST

START_TEST(test_lsn_and_lag)
{
    uint64_t l;
    ck_assert_int_eq(replpolicy_parse_lsn("0/0", &l), 0);
    ck_assert_uint_eq(l, 0);
    ck_assert_int_eq(replpolicy_parse_lsn("16/B374D848", &l), 0);
    ck_assert_uint_eq(l, (UINT64_C(0x16) << 32) | 0xB374D848);
    ck_assert_int_eq(replpolicy_parse_lsn("FFFFFFFF/FFFFFFFF", &l), 0);
    ck_assert_uint_eq(l, UINT64_MAX);
    const char *bad[] = {"", "0", "/1", "1/", "1/2/3", "G/1", "1 /2", "-1/2", "123456789/0", NULL};
    for (int i = 0; bad[i]; i++)
        ck_assert_int_eq(replpolicy_parse_lsn(bad[i], &l), -1);
    ck_assert_int_eq(replpolicy_parse_lsn(NULL, &l), -1);
    uint64_t a, b;
    ck_assert_int_eq(replpolicy_parse_lsn("0/3000060", &a), 0);
    ck_assert_int_eq(replpolicy_parse_lsn("0/2FFFFF0", &b), 0);
    ck_assert_int_eq(replpolicy_lag_bytes(a, b), 0x70);
    ck_assert_int_eq(replpolicy_lag_bytes(b, a), 0); /* replica sampled later: ahead */
    ck_assert_int_eq(replpolicy_parse_lsn("1/0", &a), 0);
    ck_assert_int_eq(replpolicy_parse_lsn("0/FFFFFFFF", &b), 0);
    ck_assert_int_eq(replpolicy_lag_bytes(a, b), 1); /* across the 4 GB boundary */
    ck_assert_double_eq(replpolicy_lag_seconds(0, 120.0), 0.0);
    ck_assert_double_eq(replpolicy_lag_seconds(100, 2.5), 2.5);
    ck_assert_double_eq(replpolicy_lag_seconds(100, -1), 0.0);
}
END_TEST

START_TEST(test_rotation)
{
    struct replpolicy_replica r = {.running = true,
                                   .draining = false,
                                   .lag_known = true,
                                   .lag_bytes = 100,
                                   .max_lag = 16 << 20,
                                   .replay_paused = false,
                                   .primary_running = true};
    const char *why = "x";
    ck_assert(replpolicy_in_rotation(&r, &why));
    ck_assert_str_eq(why, "");
    r.lag_bytes = (16 << 20) + 1;
    ck_assert(!replpolicy_in_rotation(&r, &why));
    ck_assert_str_eq(why, "lagging");
    r.lag_bytes = 16 << 20; /* at the limit: still in */
    ck_assert(replpolicy_in_rotation(&r, NULL));
    r.lag_bytes = 10;
    r.replay_paused = true;
    ck_assert(!replpolicy_in_rotation(&r, &why));
    ck_assert_str_eq(why, "replay paused");
    r.lag_bytes = 0; /* paused but caught up: serves */
    ck_assert(replpolicy_in_rotation(&r, &why));
    r.lag_known = false;
    ck_assert(!replpolicy_in_rotation(&r, &why));
    ck_assert_str_eq(why, "lag unknown");
    r.lag_known = true;
    r.draining = true;
    ck_assert(!replpolicy_in_rotation(&r, &why));
    ck_assert_str_eq(why, "draining");
    r.primary_running = false;
    ck_assert(!replpolicy_in_rotation(&r, &why));
    ck_assert_str_eq(why, "primary not running");
    r.running = false;
    ck_assert(!replpolicy_in_rotation(&r, &why));
    ck_assert_str_eq(why, "not running");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("replpolicy");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_idle_stays_at_min);
    tcase_add_test(tc, test_wait_scales_out_then_in);
    tcase_add_test(tc, test_short_wait_is_no_pressure);
    tcase_add_test(tc, test_cpu_needs_a_full_window);
    tcase_add_test(tc, test_oscillation_never_flaps);
    tcase_add_test(tc, test_bounds);
    tcase_add_test(tc, test_busy_replicas_keep_them);
    tcase_add_test(tc, test_lsn_and_lag);
    tcase_add_test(tc, test_rotation);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
