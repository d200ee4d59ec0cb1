/*
 * test_policy: table-driven checks of the idle policy (pause and suspend thresholds, their
 * boundaries, the guards for static computes, queries in flight and unparkable sessions) and of
 * policy_idle_next_check, which arms the scaler's idle timer.
 */
#include <check.h>
#include <stdlib.h>

#include "pgtide/policy.h"
#include "unit.h"

#define S 1000 /* ms per second */

struct idle_case {
    const char *name;
    struct policy_idle_input in;
    enum policy_idle_action want;
    int64_t want_next;
};

/* now_ms is 1000 s; last_activity_ms = now - idle. */
#define IN(st, idle, pa, sa, q, unp, stat)                                                         \
    {                                                                                              \
        .state = (st), .now_ms = 1000 * S, .last_activity_ms = 1000 * S - (idle),                  \
        .pause_after = (pa), .suspend_after = (sa), .active_queries = (q),                         \
        .unparkable_sessions = (unp), .is_static = (stat)                                          \
    }

static const struct idle_case idle_cases[] = {
    {"fresh running", IN(COMPUTE_RUNNING, 0, 10 * S, 300 * S, 0, 0, false), POLICY_NONE, 10 * S},
    {"just before pause", IN(COMPUTE_RUNNING, 10 * S - 1, 10 * S, 300 * S, 0, 0, false),
     POLICY_NONE, 1},
    {"exactly pause_after", IN(COMPUTE_RUNNING, 10 * S, 10 * S, 300 * S, 0, 0, false), POLICY_PAUSE,
     290 * S},
    {"between thresholds", IN(COMPUTE_RUNNING, 100 * S, 10 * S, 300 * S, 0, 0, false), POLICY_PAUSE,
     200 * S},
    {"exactly suspend_after running", IN(COMPUTE_RUNNING, 300 * S, 10 * S, 300 * S, 0, 0, false),
     POLICY_SUSPEND, -1},
    {"paused before suspend", IN(COMPUTE_PAUSED, 299 * S, 10 * S, 300 * S, 0, 0, false),
     POLICY_NONE, 1 * S},
    {"paused at suspend", IN(COMPUTE_PAUSED, 300 * S, 10 * S, 300 * S, 0, 0, false), POLICY_SUSPEND,
     -1},
    {"query in flight", IN(COMPUTE_RUNNING, 1000 * S, 10 * S, 300 * S, 1, 0, false), POLICY_NONE,
     -1},
    {"static never", IN(COMPUTE_RUNNING, 1000 * S, 10 * S, 300 * S, 0, 0, true), POLICY_NONE, -1},
    {"unparkable blocks suspend, pause ok",
     IN(COMPUTE_RUNNING, 1000 * S, 10 * S, 300 * S, 0, 2, false), POLICY_PAUSE, -1},
    {"unparkable while paused", IN(COMPUTE_PAUSED, 1000 * S, 10 * S, 300 * S, 0, 1, false),
     POLICY_NONE, -1},
    {"suspend_after 0 = never", IN(COMPUTE_RUNNING, 100000 * S, 10 * S, 0, 0, 0, false),
     POLICY_PAUSE, -1},
    {"pause_after 0 = never", IN(COMPUTE_RUNNING, 100 * S, 0, 300 * S, 0, 0, false), POLICY_NONE,
     200 * S},
    {"pause_after >= suspend_after: no pause",
     IN(COMPUTE_RUNNING, 100 * S, 300 * S, 300 * S, 0, 0, false), POLICY_NONE, 200 * S},
    {"pause_after > suspend_after: suspend wins",
     IN(COMPUTE_RUNNING, 120 * S, 600 * S, 60 * S, 0, 0, false), POLICY_SUSPEND, -1},
    {"both 0", IN(COMPUTE_RUNNING, 100000 * S, 0, 0, 0, 0, false), POLICY_NONE, -1},
    {"suspended", IN(COMPUTE_SUSPENDED, 1000 * S, 10 * S, 300 * S, 0, 0, false), POLICY_NONE, -1},
    {"starting", IN(COMPUTE_STARTING, 1000 * S, 10 * S, 300 * S, 0, 0, false), POLICY_NONE, -1},
    {"suspending", IN(COMPUTE_SUSPENDING, 1000 * S, 10 * S, 300 * S, 0, 0, false), POLICY_NONE, -1},
    {"failed", IN(COMPUTE_FAILED, 1000 * S, 10 * S, 300 * S, 0, 0, false), POLICY_NONE, -1},
    {"clock skew: activity in future", IN(COMPUTE_RUNNING, -5 * S, 10 * S, 300 * S, 0, 0, false),
     POLICY_NONE, 15 * S},
};

#define NCASES ((int) (sizeof(idle_cases) / sizeof(idle_cases[0])))

START_TEST(test_idle_table)
{
    const struct idle_case *tc = &idle_cases[_i];
    enum policy_idle_action got = policy_idle(&tc->in);
    ck_assert_msg(got == tc->want, "%s: policy_idle = %s, want %s", tc->name,
                  policy_idle_action_name(got), policy_idle_action_name(tc->want));
    int64_t next = policy_idle_next_check(&tc->in);
    ck_assert_msg(next == tc->want_next, "%s: next_check = %lld, want %lld", tc->name,
                  (long long) next, (long long) tc->want_next);
}
END_TEST

/* Advancing the clock by next_check must change the answer (the timer is never useless). */
START_TEST(test_next_check_changes_answer)
{
    const struct idle_case *tc = &idle_cases[_i];
    int64_t next = policy_idle_next_check(&tc->in);
    if (next < 0)
        return;
    struct policy_idle_input later = tc->in;
    later.now_ms += next;
    struct policy_idle_input before = tc->in;
    before.now_ms += next - 1;
    ck_assert_msg(policy_idle(&later) != policy_idle(&tc->in), "%s: no change after %lld ms",
                  tc->name, (long long) next);
    ck_assert_msg(policy_idle(&before) == policy_idle(&tc->in), "%s: changed before %lld ms",
                  tc->name, (long long) next);
}
END_TEST

START_TEST(test_action_names)
{
    ck_assert_str_eq(policy_idle_action_name(POLICY_NONE), "none");
    ck_assert_str_eq(policy_idle_action_name(POLICY_PAUSE), "pause");
    ck_assert_str_eq(policy_idle_action_name(POLICY_SUSPEND), "suspend");
}
END_TEST

static Suite *policy_suite(void)
{
    Suite *s = suite_create("policy");
    TCase *tc = tcase_create("idle");
    tcase_add_loop_test(tc, test_idle_table, 0, NCASES);
    tcase_add_loop_test(tc, test_next_check_changes_answer, 0, NCASES);
    tcase_add_test(tc, test_action_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(policy_suite());
}
