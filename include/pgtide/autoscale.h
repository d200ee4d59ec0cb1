/*
 * autoscale: vertical autoscaling of a compute between min_cu and max_cu in steps of 0.25 CU
 * (DESIGN.md §5). The decision half is pure: it is fed cumulative CPU-time samples of the
 * compute and answers the size it should have, with no I/O and no clock of its own, so it is
 * unit-tested with load traces. Rules: CPU use is averaged over scale_window; above cpu_high
 * (a fraction of the current size) it scales up at once (to the size that would put the use
 * half-way between cpu_low and cpu_high, at least one step), once a full window has been
 * measured at the current size; below cpu_low it scales down only after the use has stayed low
 * for scale_cooldown and scale_cooldown has passed since the last change, by at most half the
 * size. A load that oscillates faster than scale_cooldown therefore never brings the size down
 * and cannot make it flap. The driver half is a one-second libev timer that samples a compute's
 * CPU time and applies the decisions with compute_resize.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#define AUTOSCALE_SAMPLES 1024 /* ring of samples: covers a 10 min window at 1 s */

struct autoscale_params {
    double min_cu, max_cu;    /* bounds, multiples of 0.25, min_cu <= max_cu */
    int64_t window_ms;        /* scale_window */
    int64_t cooldown_ms;      /* scale_cooldown */
    double cpu_high, cpu_low; /* fractions of the current size, cpu_low < cpu_high */
};

struct autoscale_sample {
    int64_t t_ms;   /* monotonic time of the sample */
    int64_t cpu_us; /* cumulative CPU time of the compute at t_ms */
};

/* Decision state of one compute. Zero it, then autoscale_reset() before the first sample. */
struct autoscale {
    struct autoscale_sample ring[AUTOSCALE_SAMPLES];
    int head;               /* index of the next sample to write */
    int count;              /* samples held */
    int64_t last_change_ms; /* last size change, or the last reset */
    int last_dir;           /* +1 up, -1 down, 0 none since the reset */
    int64_t low_since_ms;   /* since when every window has been below cpu_low; -1 = not low */
};

/* Forgets every sample (the compute restarted, was frozen, or was resized from outside) and
   counts now_ms as a change: nothing is decided until a full window has been measured. */
void autoscale_reset(struct autoscale *a, int64_t now_ms);

/* Adds a sample. Times must increase; a CPU time lower than the previous one (its counter was
   reset) makes this a reset followed by the sample. */
void autoscale_sample(struct autoscale *a, int64_t now_ms, int64_t cpu_us);

/* Average CPU use in vCPUs (cores) between the newest sample and the newest sample at least
   window_ms older than it. Returns false (and leaves *cores) when the samples do not yet span
   the window. */
bool autoscale_usage(const struct autoscale *a, int64_t window_ms, double *cores)
    __attribute__((warn_unused_result));

/* The size the compute should have now, given its current size cu, at the time of the newest
   sample. Returns cu when nothing should change (also when the samples do not span the window
   yet, or when min_cu == max_cu). When the answer differs from cu the change is recorded as
   made (last_change_ms, last_dir), so the caller must apply it (or autoscale_reset on failure).
   why (may be NULL) receives a one-line explanation of a change, or of why none was made. */
double autoscale_decide(struct autoscale *a, const struct autoscale_params *p, double cu, char *why,
                        size_t whylen) __attribute__((warn_unused_result));

/* cu rounded up (ceil) or down to a multiple of 0.25. */
double autoscale_quarter_up(double cu) __attribute__((warn_unused_result));
double autoscale_quarter_down(double cu) __attribute__((warn_unused_result));

/* ---- driver ------------------------------------------------------------------------------- */

struct compute;
struct autoscale_driver;

/* Starts a one-second timer on loop that, while compute c is RUNNING, samples its CPU time
   (compute_cpu_usage_us), reads the policy from the compute's current configuration snapshot
   (compute_get_config: min_cu, max_cu, scale_window, scale_cooldown, cpu_high, cpu_low, so SET
   and reload apply within a second) and resizes it with compute_resize. With min_cu == max_cu
   autoscaling is off and a running compute is kept at compute_units (SET compute_units resizes
   it live); otherwise a size outside min_cu..max_cu is brought inside at once. Static computes
   are left alone. c must outlive the driver. Returns NULL when out of memory. */
struct autoscale_driver *autoscale_driver_new(struct ev_loop *loop, struct compute *c)
    __attribute__((warn_unused_result));

/* Stops the timer and frees the driver. NULL is ignored. */
void autoscale_driver_free(struct autoscale_driver *d);
