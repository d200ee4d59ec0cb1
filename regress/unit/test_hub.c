/*
 * Unit tests of the rule that shares pool_size between worker threads (hub_slot_yield_to): a
 * worker done with a server hands it to a waiting worker instead of idling it only when that one
 * has waited for room (HUB_IDLE_YIELD_MS), and, if it has waiters of its own, only when it holds
 * more than its share (more than one above the waiting worker, or any while the waiting one has
 * none and has waited HUB_STARVE_MS); among several waiting workers it names the one due. With
 * pool_size 1 and two busy workers the one server takes turns; with 20 the split settles at
 * 10/10 and stays.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "pgtide/hub.h"
#include "unit.h"

static struct hub_slot slot(int a, int b, uint32_t demand)
{
    struct hub_slot s;
    memset(&s, 0, sizeof(s));
    s.per[1] = a;
    s.per[2] = b;
    s.open = a + b;
    s.demand = demand;
    s.demand_ms[1] = s.demand_ms[2] = 1000; /* both since "now" (the tests' now is 1000) */
    return s;
}

START_TEST(test_no_demand_keeps)
{
    struct hub_slot s = slot(20, 0, 0);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, false, 1000), -1);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000), -1);
    s = slot(20, 0, 1u << 1); /* only its own demand */
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000), -1);
}
END_TEST

START_TEST(test_idle_server_goes_to_a_waiter)
{
    /* no waiter here, one there that has waited HUB_IDLE_YIELD_MS: give it back whatever the
       counts; one that has just asked may be served by its own servers first, unless it has
       none (it cannot move at all) */
    struct hub_slot s = slot(1, 19, 1u << 2);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, false, 1000), -1);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, false, 1000 + HUB_IDLE_YIELD_MS), 2);
    s = slot(1, 0, 1u << 2);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, false, 1000), 2);
}
END_TEST

START_TEST(test_share_with_waiters_on_both)
{
    struct hub_slot s = slot(20, 0, 1u << 2);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000), 2); /* far above the other */
    s = slot(12, 8, 1u << 2);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000), 2);
    s = slot(11, 9, 1u << 2);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000), 2);
    s = slot(10, 10, 1u << 2); /* even: stays */
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000), -1);
    s = slot(3, 2, 1u << 2); /* odd cap: one above is fair, no ping-pong */
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000), -1);
    s = slot(2, 3, 1u << 1);
    ck_assert_int_eq(hub_slot_yield_to(&s, 2, true, 1000), -1);
}
END_TEST

START_TEST(test_one_server_takes_turns)
{
    /* both busy, one server: it stays until the other has waited HUB_STARVE_MS */
    struct hub_slot s = slot(1, 0, 1u << 2);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000), -1);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000 + HUB_STARVE_MS - 1), -1);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, true, 1000 + HUB_STARVE_MS), 2);
    s = slot(0, 1, 1u << 1);
    ck_assert_int_eq(hub_slot_yield_to(&s, 2, true, 1000 + HUB_STARVE_MS), 1);
    /* an idle one goes sooner */
    ck_assert_int_eq(hub_slot_yield_to(&s, 2, false, 1000 + HUB_IDLE_YIELD_MS), 1);
}
END_TEST

START_TEST(test_picks_the_worker_that_waits)
{
    /* three workers: 1 is done with a server and has no waiters; 3 waits (2 does not) */
    struct hub_slot s = slot(2, 1, 1u << 3);
    s.per[3] = 0;
    s.demand_ms[3] = 1000;
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, false, 1000), 3);
    /* both wait: the one with none at once, the one with some once it has waited */
    s.demand = (1u << 2) | (1u << 3);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, false, 1000), 3);
    ck_assert_int_eq(hub_slot_yield_to(&s, 1, false, 1000 + HUB_IDLE_YIELD_MS), 2);
}
END_TEST

START_TEST(test_settles_at_even_split)
{
    /* both always have waiters; the one above its share yields each time it is done with a
       server, the other takes the room: from 20/0 it ends at 10/10 and stays there */
    int a = 20, b = 0;
    for (int step = 0; step < 100; step++) {
        struct hub_slot s = slot(a, b, 1u << 2);
        if (hub_slot_yield_to(&s, 1, true, 1000) == 2) {
            a--;
            b++;
        }
        s = slot(a, b, 1u << 1);
        if (hub_slot_yield_to(&s, 2, true, 1000) == 1) {
            b--;
            a++;
        }
    }
    ck_assert_int_eq(a, 10);
    ck_assert_int_eq(b, 10);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hub");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_no_demand_keeps);
    tcase_add_test(tc, test_idle_server_goes_to_a_waiter);
    tcase_add_test(tc, test_share_with_waiters_on_both);
    tcase_add_test(tc, test_one_server_takes_turns);
    tcase_add_test(tc, test_picks_the_worker_that_waits);
    tcase_add_test(tc, test_settles_at_even_split);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
