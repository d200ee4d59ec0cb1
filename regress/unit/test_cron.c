/* Check suite for the cron parser and next-run calculator (scaler/cron.c). */
#define _GNU_SOURCE
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtide/cron.h"
#include "unit.h"

/* seconds since the epoch of a UTC date */
static time_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
    return timegm(&tm);
}

static time_t next_of(const char *expr, time_t after, const char *tz)
{
    struct cron c;
    char err[256];
    ck_assert_msg(cron_parse(expr, &c, err, sizeof(err)) == 0, "%s: %s", expr, err);
    return cron_next(&c, after, tz);
}

START_TEST(every_minute)
{
    ck_assert_int_eq(next_of("* * * * *", utc(2026, 3, 1, 10, 0) + 5, NULL),
                     utc(2026, 3, 1, 10, 1));
    /* strictly after: exactly on a slot gives the next one */
    ck_assert_int_eq(next_of("* * * * *", utc(2026, 3, 1, 10, 0), NULL), utc(2026, 3, 1, 10, 1));
}
END_TEST

START_TEST(daily_and_macros)
{
    time_t t = utc(2026, 12, 31, 23, 59);
    ck_assert_int_eq(next_of("0 3 * * *", t, "UTC"), utc(2027, 1, 1, 3, 0));
    ck_assert_int_eq(next_of("@daily", t, NULL), utc(2027, 1, 1, 0, 0));
    ck_assert_int_eq(next_of("@midnight", t, NULL), utc(2027, 1, 1, 0, 0));
    ck_assert_int_eq(next_of("@hourly", utc(2026, 5, 5, 5, 30), NULL), utc(2026, 5, 5, 6, 0));
    ck_assert_int_eq(next_of("@monthly", utc(2026, 2, 10, 0, 0), NULL), utc(2026, 3, 1, 0, 0));
    ck_assert_int_eq(next_of("@yearly", utc(2026, 2, 10, 0, 0), NULL), utc(2027, 1, 1, 0, 0));
    ck_assert_int_eq(next_of("@annually", utc(2026, 2, 10, 0, 0), NULL), utc(2027, 1, 1, 0, 0));
    /* 2026-03-04 is a Wednesday; @weekly = Sunday 00:00 */
    ck_assert_int_eq(next_of("@weekly", utc(2026, 3, 4, 12, 0), NULL), utc(2026, 3, 8, 0, 0));
}
END_TEST

START_TEST(ranges_lists_steps)
{
    ck_assert_int_eq(next_of("*/15 * * * *", utc(2026, 1, 1, 0, 16), NULL), utc(2026, 1, 1, 0, 30));
    ck_assert_int_eq(next_of("5,35 * * * *", utc(2026, 1, 1, 0, 6), NULL), utc(2026, 1, 1, 0, 35));
    ck_assert_int_eq(next_of("0 9-17/4 * * *", utc(2026, 1, 1, 10, 0), NULL),
                     utc(2026, 1, 1, 13, 0));
    ck_assert_int_eq(next_of("0 9-17/4 * * *", utc(2026, 1, 1, 17, 1), NULL),
                     utc(2026, 1, 2, 9, 0));
    ck_assert_int_eq(next_of("10/20 * * * *", utc(2026, 1, 1, 0, 31), NULL),
                     utc(2026, 1, 1, 0, 50));
    /* weekday names and ranges: Monday to Friday at 01:00; 2026-01-03 is a Saturday */
    ck_assert_int_eq(next_of("0 1 * * mon-fri", utc(2026, 1, 3, 0, 0), NULL),
                     utc(2026, 1, 5, 1, 0));
    ck_assert_int_eq(next_of("0 0 1 jan,jul *", utc(2026, 2, 1, 0, 0), NULL),
                     utc(2026, 7, 1, 0, 0));
    /* 7 is Sunday too */
    ck_assert_int_eq(next_of("0 0 * * 7", utc(2026, 1, 3, 0, 0), NULL), utc(2026, 1, 4, 0, 0));
}
END_TEST

START_TEST(day_fields_or)
{
    /* both restricted: the 13th OR a Friday; 2026-02-06 is a Friday, before the 13th */
    ck_assert_int_eq(next_of("0 0 13 * 5", utc(2026, 2, 1, 0, 0), NULL), utc(2026, 2, 6, 0, 0));
    /* only day of month restricted */
    ck_assert_int_eq(next_of("0 0 13 * *", utc(2026, 2, 1, 0, 0), NULL), utc(2026, 2, 13, 0, 0));
}
END_TEST

START_TEST(month_ends_and_leap)
{
    ck_assert_int_eq(next_of("0 0 31 * *", utc(2026, 4, 1, 0, 0), NULL), utc(2026, 5, 31, 0, 0));
    ck_assert_int_eq(next_of("0 0 29 2 *", utc(2026, 3, 1, 0, 0), NULL), utc(2028, 2, 29, 0, 0));
    struct cron c;
    char err[128];
    ck_assert_int_eq(cron_parse("0 0 30 2 *", &c, err, sizeof(err)), 0);
    ck_assert_int_eq(cron_next(&c, utc(2026, 1, 1, 0, 0), NULL), -1); /* never */
}
END_TEST

START_TEST(time_zone)
{
    /* 03:00 in Paris is 02:00 UTC in winter and 01:00 UTC in summer */
    ck_assert_int_eq(next_of("0 3 * * *", utc(2026, 1, 10, 0, 0), "Europe/Paris"),
                     utc(2026, 1, 10, 2, 0));
    ck_assert_int_eq(next_of("0 3 * * *", utc(2026, 7, 10, 0, 0), "Europe/Paris"),
                     utc(2026, 7, 10, 1, 0));
    /* the process's TZ is restored */
    ck_assert_ptr_null(getenv("TZ"));
    ck_assert(cron_tz_valid("UTC"));
    ck_assert(cron_tz_valid(""));
    ck_assert(cron_tz_valid("Europe/Paris"));
    ck_assert(!cron_tz_valid("Mars/Olympus"));
    ck_assert(!cron_tz_valid("../etc/passwd"));
}
END_TEST

START_TEST(errors)
{
    static const char *const bad[] = {
        "",           "* * * *",     "* * * * * *", "60 * * * *",  "* 24 * * *", "* * 0 * *",
        "* * * 13 *", "* * * * 8",   "*/0 * * * *", "5-1 * * * *", "a * * * *",  "1,,2 * * * *",
        "@often",     "* * * foo *", "1- * * * *",  "*/ * * * *"};
    struct cron c;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        ck_assert_msg(cron_parse(bad[i], &c, err, sizeof(err)) == -1, "accepted \"%s\"", bad[i]);
        ck_assert_msg(err[0] != '\0', "no message for \"%s\"", bad[i]);
    }
    char err[256];
    ck_assert_int_eq(cron_parse("  0   3 * * *  ", &c, err, sizeof(err)), 0);
    ck_assert_int_eq(cron_parse("* 24 * * *", &c, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "hour"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cron");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, every_minute);
    tcase_add_test(tc, daily_and_macros);
    tcase_add_test(tc, ranges_lists_steps);
    tcase_add_test(tc, day_fields_or);
    tcase_add_test(tc, month_ends_and_leap);
    tcase_add_test(tc, time_zone);
    tcase_add_test(tc, errors);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
