/*
 * cron: the backup schedule's cron expressions. Five fields (minute hour day-of-month month
 * day-of-week) with '*', numbers, ranges "a-b", lists "a,b", steps "*\/n" and "a-b/n", month and
 * weekday names (jan..dec, sun..sat; 0 and 7 are Sunday), and the shorthands @yearly
 * (@annually), @monthly, @weekly, @daily (@midnight) and @hourly. As in Vixie cron, when both
 * day fields are restricted a day matches if either does. cron_next finds the next matching
 * minute in a given time zone (UTC by default). Pure apart from the time-zone switch.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct cron {
    uint64_t minutes; /* bit m for minute 0..59 */
    uint32_t hours;   /* bit h for 0..23 */
    uint32_t mdays;   /* bit d for 1..31 */
    uint16_t months;  /* bit m for 1..12 */
    uint8_t wdays;    /* bit w for 0..6 (Sunday = 0) */
    bool mday_star;   /* day-of-month field was '*' (unrestricted) */
    bool wday_star;   /* day-of-week field was '*' */
};

/* Parses expr into *out. Returns 0, or -1 with a message naming the bad field in err. An empty
   expression is an error (the caller treats "" as "no schedule"). */
int cron_parse(const char *expr, struct cron *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The first minute strictly after `after` (seconds since the epoch) that matches c, read in time
   zone tz (an Olson name such as "Europe/Paris"; NULL, "" or "UTC" = UTC). Returns that time,
   or -1 when nothing matches within eight years (e.g. "0 0 30 2 *"). Switches the process's TZ
   briefly (pgtide's loop is single-threaded) and restores it. */
time_t cron_next(const struct cron *c, time_t after, const char *tz)
    __attribute__((warn_unused_result));

/* True when tz names a zone this host knows ("", "UTC" always). */
bool cron_tz_valid(const char *tz) __attribute__((warn_unused_result));
