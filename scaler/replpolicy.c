/*
 * replpolicy: pure decisions of the replica set. replpolicy_decide keeps three times (since when
 * CPU has been high, since when load has been low, the last change) and turns one second's
 * observation into the number of replicas wanted; the lag helpers parse LSNs and compute the
 * replay lag; replpolicy_in_rotation says whether a replica may take new readers. Nothing here
 * reads a clock or does I/O.
 */
#include "pgtide/replpolicy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void replpolicy_reset(struct replpolicy *p)
{
    p->high_since_ms = -1;
    p->pressure_since_ms = -1;
    p->low_since_ms = -1;
    p->last_change_ms = INT64_MIN;
}

static void replpolicy_why(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void replpolicy_why(char *why, size_t len, const char *fmt, ...)
{
    if (why == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
}

static int replpolicy_clamp(const struct replpolicy_params *prm, int n)
{
    int lo = prm->min_replicas < 0 ? 0 : prm->min_replicas;
    int hi = prm->max_replicas > REPLPOLICY_MAX ? REPLPOLICY_MAX : prm->max_replicas;
    if (hi < lo)
        hi = lo;
    return n < lo ? lo : n > hi ? hi : n;
}

/* True when some measured CPU is above cpu_high (the primary, or the replicas on average). */
static bool replpolicy_cpu_high(const struct replpolicy_params *prm,
                                const struct replpolicy_input *in)
{
    return in->primary_cpu > prm->cpu_high ||
           (in->replica_cpu >= 0 && in->replica_cpu > prm->cpu_high);
}

/* True when the load is low everywhere: nobody waits, every measured CPU is below cpu_low. */
static bool replpolicy_low(const struct replpolicy_params *prm, const struct replpolicy_input *in)
{
    return in->waiting == 0 && in->primary_cpu < prm->cpu_low &&
           (in->replica_cpu < 0 || in->replica_cpu < prm->cpu_low);
}

static int replpolicy_change(struct replpolicy *p, const struct replpolicy_input *in, int to)
{
    p->last_change_ms = in->now_ms;
    p->high_since_ms = -1;
    p->pressure_since_ms = -1;
    p->low_since_ms = -1;
    return to;
}

int replpolicy_decide(struct replpolicy *p, const struct replpolicy_params *prm,
                      const struct replpolicy_input *in, char *why, size_t whylen)
{
    int64_t now = in->now_ms;
    int cur = in->current;
    int bounded = replpolicy_clamp(prm, cur);
    if (bounded != cur) {
        replpolicy_why(why, whylen, "%d replicas is outside min_replicas..max_replicas (%d..%d)",
                       cur, prm->min_replicas, prm->max_replicas);
        return replpolicy_change(p, in, bounded);
    }
    bool waited = in->waiting > 0 && in->longest_wait_ms > prm->scale_wait_ms;
    bool high = replpolicy_cpu_high(prm, in);
    bool low = replpolicy_low(prm, in);
    if (!high)
        p->high_since_ms = -1;
    else if (p->high_since_ms < 0)
        p->high_since_ms = now;
    if (!waited && !high)
        p->pressure_since_ms = -1;
    else if (p->pressure_since_ms < 0)
        p->pressure_since_ms = now;
    if (!low)
        p->low_since_ms = -1;
    else if (p->low_since_ms < 0)
        p->low_since_ms = now;
    int64_t since_change = p->last_change_ms == INT64_MIN ? INT64_MAX : now - p->last_change_ms;
    bool cpu_long = high && now - p->high_since_ms >= prm->window_ms;
    /* out: at once when the last change is a cooldown old (or there was none); sooner only
       when the pressure has lasted a whole window and the last change is a window old */
    bool settled = since_change >= prm->cooldown_ms ||
                   (since_change >= prm->window_ms && now - p->pressure_since_ms >= prm->window_ms);
    if ((waited || cpu_long) && cur < prm->max_replicas && settled) {
        if (waited)
            replpolicy_why(why, whylen, "%d reader clients waiting, longest %lld ms > %lld ms",
                           in->waiting, (long long) in->longest_wait_ms,
                           (long long) prm->scale_wait_ms);
        else
            replpolicy_why(why, whylen, "CPU above cpu_high %.0f%% for %lld s",
                           prm->cpu_high * 100.0, (long long) ((now - p->high_since_ms) / 1000));
        return replpolicy_change(p, in, cur + 1);
    }
    if (low && cur > prm->min_replicas && now - p->low_since_ms >= prm->cooldown_ms &&
        since_change >= prm->cooldown_ms) {
        replpolicy_why(why, whylen, "load low for %lld s (scale_cooldown %lld s)",
                       (long long) ((now - p->low_since_ms) / 1000),
                       (long long) (prm->cooldown_ms / 1000));
        return replpolicy_change(p, in, cur - 1);
    }
    replpolicy_why(why, whylen, "%s", low ? "load low, cooling down" : "no change");
    return cur;
}

/* ---- lag and rotation ---------------------------------------------------------------------- */

int replpolicy_parse_lsn(const char *s, uint64_t *lsn)
{
    if (s == NULL || *s == '\0')
        return -1;
    char *end;
    const char *slash = strchr(s, '/');
    if (slash == NULL || slash == s || slash[1] == '\0')
        return -1;
    for (const char *q = s; *q; q++)
        if (q != slash &&
            !((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F')))
            return -1;
    if (slash - s > 8 || strlen(slash + 1) > 8)
        return -1;
    unsigned long long hi = strtoull(s, &end, 16);
    if (end != slash)
        return -1;
    unsigned long long lo = strtoull(slash + 1, &end, 16);
    if (*end != '\0')
        return -1;
    *lsn = ((uint64_t) hi << 32) | (uint64_t) lo;
    return 0;
}

int64_t replpolicy_lag_bytes(uint64_t primary_lsn, uint64_t replay_lsn)
{
    if (replay_lsn >= primary_lsn)
        return 0;
    uint64_t d = primary_lsn - replay_lsn;
    return d > (uint64_t) INT64_MAX ? INT64_MAX : (int64_t) d;
}

double replpolicy_lag_seconds(int64_t lag_bytes, double replay_age_s)
{
    if (lag_bytes <= 0 || replay_age_s < 0)
        return 0.0;
    return replay_age_s;
}

bool replpolicy_in_rotation(const struct replpolicy_replica *r, const char **why)
{
    const char *w = "";
    if (!r->running)
        w = "not running";
    else if (!r->primary_running)
        w = "primary not running";
    else if (r->draining)
        w = "draining";
    else if (!r->lag_known)
        w = "lag unknown";
    else if (r->lag_bytes > r->max_lag)
        w = "lagging";
    else if (r->replay_paused && r->lag_bytes > 0)
        w = "replay paused";
    if (why != NULL)
        *why = w;
    return w[0] == '\0';
}

bool replpolicy_replayed(uint64_t need_lsn, bool known, uint64_t replay_lsn)
{
    if (need_lsn == 0)
        return true;
    return need_lsn != UINT64_MAX && known && replay_lsn >= need_lsn;
}
