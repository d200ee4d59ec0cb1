/*
 * test_autoscale: the vertical-autoscaling decisions fed with load traces. A trace is the CPU
 * a workload would use each second (in vCPUs); the simulation caps it at the current size (as
 * the cgroup quota does), accumulates it into the cumulative CPU-time samples the driver would
 * read once a second, and applies every decision, recording when the size changed.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtide/autoscale.h"
#include "unit.h"

#define MAX_CHANGES 256

struct sim {
    struct autoscale a;
    struct autoscale_params p;
    double cu;
    int64_t cpu_us;
    int64_t t_ms;
    int n;
    int64_t at[MAX_CHANGES];
    double to[MAX_CHANGES];
    double lo, hi; /* smallest and largest size seen */
};

static void sim_init(struct sim *s, double cu, double min_cu, double max_cu, int window_s,
                     int cooldown_s)
{
    memset(s, 0, sizeof(*s));
    s->p = (struct autoscale_params){min_cu, max_cu, window_s * 1000, cooldown_s * 1000, 0.8, 0.3};
    s->cu = s->lo = s->hi = cu;
    s->t_ms = 1000000;
    autoscale_reset(&s->a, s->t_ms);
    autoscale_sample(&s->a, s->t_ms, 0);
}

/* One second of load `demand` (vCPUs wanted), capped at the current size. */
static void sim_second(struct sim *s, double demand)
{
    double used = demand < s->cu ? demand : s->cu;
    s->t_ms += 1000;
    s->cpu_us += (int64_t) llround(used * 1e6);
    autoscale_sample(&s->a, s->t_ms, s->cpu_us);
    char why[256];
    double to = autoscale_decide(&s->a, &s->p, s->cu, why, sizeof(why));
    if (to != s->cu) {
        ck_assert_int_lt(s->n, MAX_CHANGES);
        s->at[s->n] = s->t_ms;
        s->to[s->n++] = to;
        s->cu = to;
        s->lo = fmin(s->lo, to);
        s->hi = fmax(s->hi, to);
    }
}

static void sim_run(struct sim *s, double demand, int seconds)
{
    for (int i = 0; i < seconds; i++)
        sim_second(s, demand);
}

/* Largest number of changes inside any interval of len_ms (closed at its start). */
static int max_changes_within(const struct sim *s, int64_t len_ms)
{
    int best = 0;
    for (int i = 0; i < s->n; i++) {
        int k = 0;
        for (int j = i; j < s->n && s->at[j] - s->at[i] < len_ms; j++)
            k++;
        if (k > best)
            best = k;
    }
    return best;
}

static bool is_quarter(double cu)
{
    return fabs(cu * 4.0 - round(cu * 4.0)) < 1e-9;
}

START_TEST(quarters)
{
    ck_assert(autoscale_quarter_up(0.26) == 0.5);
    ck_assert(autoscale_quarter_up(0.5) == 0.5);
    ck_assert(autoscale_quarter_up(1.8181) == 2.0);
    ck_assert(autoscale_quarter_down(0.74) == 0.5);
    ck_assert(autoscale_quarter_down(0.75) == 0.75);
}
END_TEST

/* Usage over a window is the CPU time between the window's ends divided by its length. */
START_TEST(usage_window)
{
    struct autoscale a;
    memset(&a, 0, sizeof(a));
    autoscale_reset(&a, 0);
    double cores = -1;
    autoscale_sample(&a, 0, 0);
    ck_assert(!autoscale_usage(&a, 3000, &cores));
    autoscale_sample(&a, 1000, 500000);
    autoscale_sample(&a, 2000, 1000000);
    ck_assert(!autoscale_usage(&a, 3000, &cores)); /* spans 2 s only */
    autoscale_sample(&a, 3000, 2500000);
    ck_assert(autoscale_usage(&a, 3000, &cores));
    ck_assert_double_eq_tol(cores, 2.5 / 3.0, 1e-9);
    ck_assert(autoscale_usage(&a, 1000, &cores));
    ck_assert_double_eq_tol(cores, 1.5, 1e-9);
    /* a counter that went backwards (the compute restarted) starts a new series */
    autoscale_sample(&a, 4000, 10);
    ck_assert(!autoscale_usage(&a, 1000, &cores));
    autoscale_sample(&a, 5000, 1000010);
    ck_assert(autoscale_usage(&a, 1000, &cores));
    ck_assert_double_eq_tol(cores, 1.0, 1e-9);
}
END_TEST

/* Idle, a two-vCPU burst, idle again: up fast to max_cu, then down one step per cooldown to
   min_cu; never outside the bounds, always a multiple of 0.25. */
START_TEST(burst_up_fast_down_slow)
{
    struct sim s;
    sim_init(&s, 0.25, 0.25, 2.0, 5, 60);
    sim_run(&s, 0.0, 10);
    ck_assert_int_eq(s.n, 0);
    sim_run(&s, 2.0, 60);
    ck_assert_double_eq(s.cu, 2.0);
    ck_assert_int_ge(s.n, 2);
    for (int i = 0; i < s.n; i++) {
        ck_assert(s.to[i] > (i ? s.to[i - 1] : 0.25)); /* only ups during the burst */
        ck_assert(is_quarter(s.to[i]));
    }
    /* up fast: max_cu reached within four windows of the burst's start */
    ck_assert_int_le(s.at[s.n - 1] - 1000000 - 10000, 4 * 5000);
    int ups = s.n;
    sim_run(&s, 0.02, 600);
    ck_assert_double_eq(s.cu, 0.25);
    ck_assert_double_eq(s.lo, 0.25);
    ck_assert_double_eq(s.hi, 2.0);
    ck_assert_int_gt(s.n, ups);
    for (int i = ups; i < s.n; i++) {
        ck_assert(s.to[i] < s.to[i - 1]);
        ck_assert(s.to[i] >= s.to[i - 1] / 2.0); /* at most halved */
        ck_assert_int_ge(s.at[i] - s.at[i - 1], 60000);
    }
    /* the first step down waits for a full cooldown of low use after the burst */
    ck_assert_int_ge(s.at[ups] - (1000000 + 70000), 60000);
}
END_TEST

/* A load flapping faster than the cooldown (10 s busy at 1.5 vCPU, 10 s idle, for 20 min):
   at most one change per cooldown, and no reversal at all. */
START_TEST(flapping_trace)
{
    struct sim s;
    sim_init(&s, 1.0, 0.25, 2.0, 5, 60);
    for (int k = 0; k < 60; k++) {
        sim_run(&s, 1.5, 10);
        sim_run(&s, 0.0, 10);
    }
    ck_assert_int_le(max_changes_within(&s, 60000), 1);
    ck_assert_int_le(s.n, 1);
    for (int i = 1; i < s.n; i++)
        ck_assert((s.to[i] > s.to[i - 1]) == (s.to[0] > 1.0)); /* same direction */
}
END_TEST

/* A slow square wave (3 min busy, 3 min idle) with a 1 min cooldown: every down is at least a
   cooldown after the change before it, and the size follows the load. */
START_TEST(slow_wave_follows_load)
{
    struct sim s;
    sim_init(&s, 0.25, 0.25, 4.0, 10, 60);
    for (int k = 0; k < 4; k++) {
        sim_run(&s, 1.0, 180);
        ck_assert(s.cu >= 1.25); /* use of 1 vCPU fits under cpu_high */
        sim_run(&s, 0.0, 180);
        ck_assert(s.cu < 1.0);
    }
    for (int i = 1; i < s.n; i++) {
        if (s.to[i] < s.to[i - 1])
            ck_assert_int_ge(s.at[i] - s.at[i - 1], 60000);
    }
}
END_TEST

/* Steady use between the thresholds changes nothing; min_cu == max_cu disables scaling. */
START_TEST(steady_and_disabled)
{
    struct sim s;
    sim_init(&s, 1.0, 0.25, 4.0, 5, 30);
    sim_run(&s, 0.5, 600); /* 50 % of 1 CU */
    ck_assert_int_eq(s.n, 0);
    sim_init(&s, 1.0, 1.0, 1.0, 5, 30);
    sim_run(&s, 4.0, 120);
    sim_run(&s, 0.0, 300);
    ck_assert_int_eq(s.n, 0);
}
END_TEST

/* max_cu caps a saturating load; a single step is the least an up moves. */
START_TEST(capped_and_min_step)
{
    struct sim s;
    sim_init(&s, 0.5, 0.5, 0.75, 3, 10);
    sim_run(&s, 8.0, 60);
    ck_assert_double_eq(s.cu, 0.75);
    ck_assert_int_eq(s.n, 1);
    ck_assert_double_eq(s.to[0], 0.75);
}
END_TEST

/* The decision explains itself. */
START_TEST(why_text)
{
    struct sim s;
    sim_init(&s, 0.25, 0.25, 2.0, 2, 10);
    char why[256];
    double to = autoscale_decide(&s.a, &s.p, s.cu, why, sizeof(why));
    ck_assert(to == 0.25);
    ck_assert_str_eq(why, "no full window yet");
    sim_run(&s, 1.0, 2);
    ck_assert_int_eq(s.n, 1);
    sim_second(&s, 1.0);
    to = autoscale_decide(&s.a, &s.p, s.cu, why, sizeof(why));
    ck_assert_str_eq(why, "no full window yet"); /* the new size has not been measured */
}
END_TEST

static Suite *autoscale_suite(void)
{
    Suite *s = suite_create("autoscale");
    TCase *tc = tcase_create("decisions");
    tcase_add_test(tc, quarters);
    tcase_add_test(tc, usage_window);
    tcase_add_test(tc, burst_up_fast_down_slow);
    tcase_add_test(tc, flapping_trace);
    tcase_add_test(tc, slow_wave_follows_load);
    tcase_add_test(tc, steady_and_disabled);
    tcase_add_test(tc, capped_and_min_step);
    tcase_add_test(tc, why_text);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(autoscale_suite());
}
