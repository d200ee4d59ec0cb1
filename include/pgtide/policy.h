/*
 * policy: pure decision functions of the control plane. Given what the scaler observes about a
 * compute (state, idle time, queries in flight, sessions that cannot be parked), they say what to
 * do next and when to look again. No I/O, no clock reads, no state: every input is a parameter,
 * so each rule is unit-tested as a table.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "pgtide/compute.h"

enum policy_idle_action { POLICY_NONE, POLICY_PAUSE, POLICY_SUSPEND };

struct policy_idle_input {
    enum compute_state state;
    int64_t now_ms;           /* any monotonic clock, same as last_activity_ms */
    int64_t last_activity_ms; /* last query or client message seen for this compute */
    int64_t pause_after;      /* ms idle before freezing; 0 = never */
    int64_t suspend_after;    /* ms idle before stopping; 0 = never */
    int active_queries;       /* queries in flight on this compute */
    int unparkable_sessions;  /* client sessions that keep the compute awake */
    bool is_static;           /* static provider: never paused or suspended */
};

/* What to do with an idle compute. Rules: never for a static compute; nothing while a query is
   in flight; SUSPEND when RUNNING or PAUSED, suspend_after > 0, idle >= suspend_after and no
   unparkable session; else PAUSE when RUNNING, pause_after > 0, pause_after < suspend_after (or
   suspend_after == 0) and idle >= pause_after; else NONE. A negative idle time counts as 0. */
enum policy_idle_action policy_idle(const struct policy_idle_input *in)
    __attribute__((warn_unused_result));

/* Milliseconds from now_ms until policy_idle could return a different answer with no other
   input changing (for arming a timer); -1 when the passage of time alone never changes it. */
int64_t policy_idle_next_check(const struct policy_idle_input *in)
    __attribute__((warn_unused_result));

/* "none", "pause" or "suspend". */
const char *policy_idle_action_name(enum policy_idle_action a);
