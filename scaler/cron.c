/*
 * cron: parser and next-run calculator of backup_schedule. Each field becomes a bit set; the
 * search for the next run walks forward by month, day, hour and minute, skipping whole units
 * that cannot match, and normalises every step with mktime in the schedule's time zone so that
 * month lengths and daylight-saving jumps come out right.
 */
#define _GNU_SOURCE
#include "pgtide/cron.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *const cron_months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const cron_wdays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

struct cron_field {
    const char *name;
    int lo, hi;
    const char *const *names; /* names[i] stands for lo + i, or NULL */
    int nnames;
};

static const struct cron_field cron_fields[5] = {
    {"minute", 0, 59, NULL, 0},           {"hour", 0, 23, NULL, 0},
    {"day of month", 1, 31, NULL, 0},     {"month", 1, 12, cron_months, 12},
    {"day of week", 0, 7, cron_wdays, 7},
};

static void cron_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cron_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A number or a name at *s; advances *s. 0 / -1. */
static int cron_value(const struct cron_field *f, const char **s, int *v)
{
    const char *p = *s;
    if (isdigit((unsigned char) *p)) {
        long n = 0;
        while (isdigit((unsigned char) *p) && n < 1000)
            n = n * 10 + (*p++ - '0');
        *v = (int) n;
        *s = p;
        return 0;
    }
    for (int i = 0; i < f->nnames; i++) {
        if (strncasecmp(p, f->names[i], 3) == 0 && !isalpha((unsigned char) p[3])) {
            *v = f->lo + i;
            *s = p + 3;
            return 0;
        }
    }
    return -1;
}

/* One comma-separated item: "*", "*\/n", "a", "a-b", "a-b/n", "a/n". Sets bits. */
static int cron_item(const struct cron_field *f, const char *item, uint64_t *bits, char *err,
                     size_t errlen)
{
    const char *p = item;
    int lo = f->lo, hi = f->hi, step = 1;
    bool single = false;
    if (*p == '*') {
        p++;
    } else {
        if (cron_value(f, &p, &lo) < 0)
            goto bad;
        hi = lo;
        single = true;
        if (*p == '-') {
            p++;
            if (cron_value(f, &p, &hi) < 0)
                goto bad;
            single = false;
        }
    }
    if (*p == '/') {
        p++;
        if (!isdigit((unsigned char) *p))
            goto bad;
        step = atoi(p);
        while (isdigit((unsigned char) *p))
            p++;
        if (step <= 0 || step > f->hi)
            goto bad;
        if (single)
            hi = f->hi; /* "a/n" = from a to the end in steps of n */
    }
    if (*p != '\0')
        goto bad;
    if (lo < f->lo || hi > f->hi || lo > hi) {
        cron_errf(err, errlen, "%s: \"%s\" is out of range %d-%d", f->name, item, f->lo, f->hi);
        return -1;
    }
    for (int v = lo; v <= hi; v += step)
        *bits |= UINT64_C(1) << v;
    return 0;
bad:
    cron_errf(err, errlen, "%s: cannot parse \"%s\"", f->name, item);
    return -1;
}

static int cron_field_parse(int idx, const char *text, uint64_t *bits, char *err, size_t errlen)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", text);
    *bits = 0;
    char *save = NULL;
    if (buf[0] == ',' || buf[strlen(buf) - 1] == ',' || strstr(buf, ",,") != NULL) {
        cron_errf(err, errlen, "%s: empty list item in \"%s\"", cron_fields[idx].name, text);
        return -1;
    }
    for (char *it = strtok_r(buf, ",", &save); it != NULL; it = strtok_r(NULL, ",", &save)) {
        if (cron_item(&cron_fields[idx], it, bits, err, errlen) < 0)
            return -1;
    }
    return 0;
}

static const char *cron_macro(const char *expr)
{
    static const struct {
        const char *name, *expansion;
    } macros[] = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    };
    for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++) {
        if (strcasecmp(expr, macros[i].name) == 0)
            return macros[i].expansion;
    }
    return NULL;
}

int cron_parse(const char *expr, struct cron *out, char *err, size_t errlen)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", expr ? expr : "");
    char *s = buf;
    while (isspace((unsigned char) *s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char) s[n - 1]))
        s[--n] = '\0';
    if (*s == '@') {
        const char *m = cron_macro(s);
        if (m == NULL) {
            cron_errf(err, errlen,
                      "unknown schedule \"%s\" (@yearly, @monthly, @weekly, @daily, "
                      "@hourly)",
                      s);
            return -1;
        }
        snprintf(buf, sizeof(buf), "%s", m);
        s = buf;
    }
    char *fields[6], *save = NULL;
    int nf = 0;
    for (char *t = strtok_r(s, " \t", &save); t != NULL && nf < 6; t = strtok_r(NULL, " \t", &save))
        fields[nf++] = t;
    if (nf != 5) {
        cron_errf(err, errlen, "a schedule has 5 fields (minute hour day month weekday), got %d",
                  nf);
        return -1;
    }
    uint64_t bits[5];
    for (int i = 0; i < 5; i++) {
        if (cron_field_parse(i, fields[i], &bits[i], err, errlen) < 0)
            return -1;
    }
    memset(out, 0, sizeof(*out));
    out->minutes = bits[0];
    out->hours = (uint32_t) bits[1];
    out->mdays = (uint32_t) bits[2];
    out->months = (uint16_t) bits[3];
    out->wdays = (uint8_t) ((bits[4] | (bits[4] >> 7)) & 0x7f); /* 7 is Sunday too */
    out->mday_star = fields[2][0] == '*';
    out->wday_star = fields[4][0] == '*';
    return 0;
}

static bool cron_day_ok(const struct cron *c, const struct tm *tm)
{
    bool md = (c->mdays >> tm->tm_mday) & 1, wd = (c->wdays >> tm->tm_wday) & 1;
    if (c->mday_star || c->wday_star)
        return md && wd; /* an unrestricted field matches every day */
    return md || wd;
}

/* The search itself, in the current TZ. */
static time_t cron_search(const struct cron *c, time_t after)
{
    time_t t = after - (after % 60) + 60;
    struct tm tm;
    localtime_r(&t, &tm);
    tm.tm_sec = 0;
    int year_limit = tm.tm_year + 8;
    while (tm.tm_year <= year_limit) {
        if (!((c->months >> (tm.tm_mon + 1)) & 1)) {
            tm.tm_mon++, tm.tm_mday = 1, tm.tm_hour = 0, tm.tm_min = 0;
        } else if (!cron_day_ok(c, &tm)) {
            tm.tm_mday++, tm.tm_hour = 0, tm.tm_min = 0;
        } else if (!((c->hours >> tm.tm_hour) & 1)) {
            tm.tm_hour++, tm.tm_min = 0;
        } else if (!((c->minutes >> tm.tm_min) & 1)) {
            tm.tm_min++;
        } else {
            time_t r = mktime(&tm);
            if (r > after)
                return r;
            tm.tm_min++; /* a repeated hour (DST end) mapped back before `after` */
        }
        tm.tm_isdst = -1;
        time_t norm = mktime(&tm);
        if (norm == (time_t) -1)
            return -1;
        localtime_r(&norm, &tm);
    }
    return -1;
}

time_t cron_next(const struct cron *c, time_t after, const char *tz)
{
    bool utc = tz == NULL || tz[0] == '\0' || strcasecmp(tz, "UTC") == 0;
    const char *old = getenv("TZ");
    char *saved = old ? strdup(old) : NULL;
    setenv("TZ", utc ? "UTC" : tz, 1);
    tzset();
    time_t r = cron_search(c, after);
    if (saved != NULL) {
        setenv("TZ", saved, 1);
        free(saved);
    } else {
        unsetenv("TZ");
    }
    tzset();
    return r;
}

bool cron_tz_valid(const char *tz)
{
    if (tz == NULL || tz[0] == '\0' || strcasecmp(tz, "UTC") == 0)
        return true;
    if (tz[0] == '/' || strstr(tz, "..") != NULL)
        return false;
    char path[512];
    snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", tz);
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}
