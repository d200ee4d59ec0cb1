/*
 * policy: the idle rules of DESIGN.md §5 as pure functions. policy_idle maps an observation of a
 * compute to an action (none, pause, suspend); policy_idle_next_check says how long until that
 * answer could change by time alone, so the scaler arms one timer instead of polling.
 */
#include "pgtide/policy.h"

static int64_t policy_idle_ms(const struct policy_idle_input *in)
{
    int64_t idle = in->now_ms - in->last_activity_ms;
    return idle < 0 ? 0 : idle;
}

/* Could the compute be suspended once it has been idle long enough? */
static bool policy_can_suspend(const struct policy_idle_input *in)
{
    return (in->state == COMPUTE_RUNNING || in->state == COMPUTE_PAUSED) && in->suspend_after > 0 &&
           in->unparkable_sessions == 0;
}

/* Could the compute be paused once it has been idle long enough? */
static bool policy_can_pause(const struct policy_idle_input *in)
{
    return in->state == COMPUTE_RUNNING && in->pause_after > 0 &&
           (in->suspend_after == 0 || in->pause_after < in->suspend_after);
}

enum policy_idle_action policy_idle(const struct policy_idle_input *in)
{
    if (in->is_static || in->active_queries > 0)
        return POLICY_NONE;
    int64_t idle = policy_idle_ms(in);
    if (policy_can_suspend(in) && idle >= in->suspend_after)
        return POLICY_SUSPEND;
    if (policy_can_pause(in) && idle >= in->pause_after)
        return POLICY_PAUSE;
    return POLICY_NONE;
}

int64_t policy_idle_next_check(const struct policy_idle_input *in)
{
    if (in->is_static || in->active_queries > 0)
        return -1;
    int64_t idle = in->now_ms - in->last_activity_ms; /* unclamped: exact time to the threshold */
    int64_t next = -1;
    if (policy_can_suspend(in)) {
        if (idle >= in->suspend_after)
            return -1; /* already SUSPEND: time will not change that */
        next = in->suspend_after - idle;
    }
    if (policy_can_pause(in) && idle < in->pause_after) {
        int64_t p = in->pause_after - idle;
        if (next < 0 || p < next)
            next = p;
    }
    return next;
}

const char *policy_idle_action_name(enum policy_idle_action a)
{
    switch (a) {
    case POLICY_NONE:
        return "none";
    case POLICY_PAUSE:
        return "pause";
    case POLICY_SUSPEND:
        return "suspend";
    }
    return "?";
}
