/*
 * autoscale: vertical autoscaling. The decision functions keep a ring of cumulative CPU-time
 * samples and a little memory (time of the last change and its direction, since when the use
 * has been low) and turn the window's average use into a size; they read no clock and do no
 * I/O. The driver is a one-second ev_timer per compute that feeds them samples from
 * compute_cpu_usage_us while the compute runs and applies their answers with compute_resize;
 * it also keeps the size inside min_cu..max_cu (or at compute_units when autoscaling is off)
 * when the policy changes.
 */
#include "pgtide/autoscale.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/log.h"

#define AUTOSCALE_TICK 1.0 /* s between samples */

/* ---- decisions ---------------------------------------------------------------------------- */

double autoscale_quarter_up(double cu)
{
    return ceil(cu * 4.0 - 1e-9) / 4.0;
}

double autoscale_quarter_down(double cu)
{
    return floor(cu * 4.0 + 1e-9) / 4.0;
}

void autoscale_reset(struct autoscale *a, int64_t now_ms)
{
    a->head = 0;
    a->count = 0;
    a->last_change_ms = now_ms;
    a->last_dir = 0;
    a->low_since_ms = -1;
}

static const struct autoscale_sample *autoscale_nth_newest(const struct autoscale *a, int i)
{
    int idx = (a->head - 1 - i + 2 * AUTOSCALE_SAMPLES) % AUTOSCALE_SAMPLES;
    return &a->ring[idx];
}

void autoscale_sample(struct autoscale *a, int64_t now_ms, int64_t cpu_us)
{
    if (a->count > 0) {
        const struct autoscale_sample *last = autoscale_nth_newest(a, 0);
        if (cpu_us < last->cpu_us || now_ms <= last->t_ms) {
            int64_t since = a->last_change_ms;
            int dir = a->last_dir;
            autoscale_reset(a, now_ms);
            a->last_change_ms = since > now_ms ? now_ms : since; /* keep the cooldown */
            a->last_dir = dir;
        }
    }
    a->ring[a->head] = (struct autoscale_sample){now_ms, cpu_us};
    a->head = (a->head + 1) % AUTOSCALE_SAMPLES;
    if (a->count < AUTOSCALE_SAMPLES)
        a->count++;
}

/* The window's base sample: the newest one at least window_ms before the newest sample, not
   older than since_ms (a measurement must not mix sizes). NULL when there is none. */
static const struct autoscale_sample *autoscale_base(const struct autoscale *a, int64_t window_ms,
                                                     int64_t since_ms)
{
    if (a->count < 2)
        return NULL;
    const struct autoscale_sample *newest = autoscale_nth_newest(a, 0);
    for (int i = 1; i < a->count; i++) {
        const struct autoscale_sample *s = autoscale_nth_newest(a, i);
        if (s->t_ms < since_ms)
            return NULL;
        if (newest->t_ms - s->t_ms >= window_ms)
            return s;
    }
    return NULL;
}

static bool autoscale_usage_since(const struct autoscale *a, int64_t window_ms, int64_t since_ms,
                                  double *cores)
{
    const struct autoscale_sample *base = autoscale_base(a, window_ms, since_ms);
    if (base == NULL)
        return false;
    const struct autoscale_sample *newest = autoscale_nth_newest(a, 0);
    int64_t dt = newest->t_ms - base->t_ms;
    *cores = dt > 0 ? (double) (newest->cpu_us - base->cpu_us) / ((double) dt * 1000.0) : 0.0;
    return true;
}

bool autoscale_usage(const struct autoscale *a, int64_t window_ms, double *cores)
{
    return autoscale_usage_since(a, window_ms, INT64_MIN, cores);
}

static void autoscale_why(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void autoscale_why(char *why, size_t len, const char *fmt, ...)
{
    if (why == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
}

static double autoscale_clamp(const struct autoscale_params *p, double cu)
{
    return cu < p->min_cu ? p->min_cu : cu > p->max_cu ? p->max_cu : cu;
}

/* Scale-down target: the size that puts the use half-way between the thresholds, at least
   half the current size (down slowly), within the bounds. */
static double autoscale_down_target(const struct autoscale_params *p, double cu, double cores)
{
    double mid = (p->cpu_high + p->cpu_low) / 2.0;
    double t = autoscale_quarter_up(cores / mid);
    double half = autoscale_quarter_up(cu / 2.0);
    if (t < half)
        t = half;
    return autoscale_clamp(p, t);
}

double autoscale_decide(struct autoscale *a, const struct autoscale_params *p, double cu, char *why,
                        size_t whylen)
{
    autoscale_why(why, whylen, "no full window yet");
    if (a->count == 0 || p->min_cu >= p->max_cu)
        return cu;
    int64_t now = autoscale_nth_newest(a, 0)->t_ms;
    double cores;
    if (!autoscale_usage_since(a, p->window_ms, a->last_change_ms, &cores))
        return cu;
    double use = cores / cu;
    if (use > p->cpu_high) {
        a->low_since_ms = -1;
        double mid = (p->cpu_high + p->cpu_low) / 2.0;
        double t = autoscale_quarter_up(cores / mid);
        if (t < cu + 0.25)
            t = cu + 0.25;
        t = autoscale_clamp(p, t);
        autoscale_why(why, whylen, "CPU %.2f of %.2f vCPU (%.0f%%) over %llds > cpu_high %.0f%%",
                      cores, cu, use * 100.0, (long long) (p->window_ms / 1000), p->cpu_high * 100);
        if (t > cu) {
            a->last_change_ms = now;
            a->last_dir = 1;
        }
        return t > cu ? t : cu;
    }
    if (use >= p->cpu_low) {
        a->low_since_ms = -1;
        autoscale_why(why, whylen, "CPU %.0f%% of %.2f CU is between the thresholds", use * 100.0,
                      cu);
        return cu;
    }
    if (a->low_since_ms < 0)
        a->low_since_ms = now;
    autoscale_why(why, whylen,
                  "CPU %.0f%% of %.2f CU below cpu_low %.0f%% for %llds (cooldown %llds)",
                  use * 100.0, cu, p->cpu_low * 100.0, (long long) ((now - a->low_since_ms) / 1000),
                  (long long) (p->cooldown_ms / 1000));
    if (now - a->low_since_ms < p->cooldown_ms || now - a->last_change_ms < p->cooldown_ms)
        return cu;
    double t = autoscale_down_target(p, cu, cores);
    if (t >= cu)
        return cu;
    a->last_change_ms = now;
    a->last_dir = -1;
    a->low_since_ms = now; /* the next step down needs another full cooldown of low use */
    return t;
}

/* ---- driver ------------------------------------------------------------------------------- */

struct autoscale_driver {
    struct ev_loop *loop;
    struct compute *c;
    ev_timer tick;
    struct autoscale st;
    bool fresh; /* the next sample starts a new series (after a stop, pause or outside resize) */
};

static int64_t autoscale_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void autoscale_apply(struct autoscale_driver *d, double to, const char *why)
{
    struct compute_info info;
    compute_get_info(d->c, &info);
    log_info("autoscale: compute %s %.2f -> %.2f CU: %s", info.role, info.cu, to, why);
    if (compute_resize(d->c, to) != 0) {
        log_warn("autoscale: compute %s could not be resized to %.2f CU", info.role, to);
        d->fresh = true;
    }
}

/* Bounds first: a size outside the policy (changed by SET or a reload) is corrected at once.
   Returns true when it acted. */
static bool autoscale_enforce_bounds(struct autoscale_driver *d, const struct config *cfg,
                                     double cu)
{
    double want = cu;
    if (cfg->min_cu >= cfg->max_cu)
        want = cfg->compute_units;
    else if (cu < cfg->min_cu)
        want = cfg->min_cu;
    else if (cu > cfg->max_cu)
        want = cfg->max_cu;
    if (want == cu)
        return false;
    autoscale_apply(d, want,
                    cfg->min_cu >= cfg->max_cu ? "autoscaling off: size set to compute_units"
                                               : "size brought within min_cu..max_cu");
    d->fresh = true;
    return true;
}

static void autoscale_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct autoscale_driver *d = w->data;
    if (compute_is_static(d->c) || compute_get_state(d->c) != COMPUTE_RUNNING) {
        d->fresh = true;
        return;
    }
    const struct config *cfg = compute_get_config(d->c);
    struct compute_info info;
    compute_get_info(d->c, &info);
    if (autoscale_enforce_bounds(d, cfg, info.cu))
        return;
    int64_t now = autoscale_mono_ms(), cpu_us;
    if (compute_cpu_usage_us(d->c, &cpu_us) != 0)
        return;
    if (d->fresh) {
        autoscale_reset(&d->st, now);
        d->fresh = false;
    }
    autoscale_sample(&d->st, now, cpu_us);
    struct autoscale_params p = {cfg->min_cu,         cfg->max_cu,   cfg->scale_window,
                                 cfg->scale_cooldown, cfg->cpu_high, cfg->cpu_low};
    char why[256];
    double to = autoscale_decide(&d->st, &p, info.cu, why, sizeof(why));
    if (to != info.cu)
        autoscale_apply(d, to, why);
}

struct autoscale_driver *autoscale_driver_new(struct ev_loop *loop, struct compute *c)
{
    struct autoscale_driver *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->loop = loop;
    d->c = c;
    d->fresh = true;
    ev_timer_init(&d->tick, autoscale_tick_cb, AUTOSCALE_TICK, AUTOSCALE_TICK);
    d->tick.data = d;
    ev_timer_start(loop, &d->tick);
    ev_unref(loop); /* the sampler alone must not keep the loop running */
    return d;
}

void autoscale_driver_free(struct autoscale_driver *d)
{
    if (d == NULL)
        return;
    ev_ref(d->loop);
    ev_timer_stop(d->loop, &d->tick);
    free(d);
}
