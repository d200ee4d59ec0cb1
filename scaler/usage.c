/*
 * usage: turns ledger records into billed usage. Each compute name has at most one open
 * interval; every record first accounts the time since the compute's previous record in the
 * state and size that were in force (split over hour/day buckets and clipped to the window),
 * then applies its own change. Closing an interval rounds its in-window length up to whole
 * seconds (and to the minimum charge) in the state and size of its last moment. Amounts are
 * kept as integers (milliseconds and milli-CU x milliseconds) until rows are produced.
 */
#include "pgtide/usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HOUR_MS 3600000LL
#define DAY_MS  86400000LL

/* Accumulated amounts of one (bucket, key). */
struct cell {
    int64_t bucket_ms;
    char name[LEDGER_NAME_MAX];
    enum ledger_role role;
    int64_t intervals;
    int64_t run_ms, pause_ms;   /* time */
    int64_t run_cms, pause_cms; /* milli-CU x ms */
};

/* One compute's open interval. */
struct track {
    char name[LEDGER_NAME_MAX];
    enum ledger_role role;
    bool open, paused;
    uint32_t cu_milli;
    int64_t last_ms;    /* time accounted up to */
    int64_t counted_ms; /* in-window time of the open interval */
    int64_t last_bucket;
};

struct usage {
    struct usage_params p;
    struct track *tracks;
    int ntracks, cap_tracks;
    struct cell *cells;
    int ncells, cap_cells;
    bool failed;
};

struct usage *usage_new(const struct usage_params *params)
{
    struct usage *u = calloc(1, sizeof(*u));
    if (u != NULL)
        u->p = *params;
    return u;
}

void usage_free(struct usage *u)
{
    if (u == NULL)
        return;
    free(u->tracks);
    free(u->cells);
    free(u);
}

static void *grow(void *arr, int *cap, size_t size)
{
    int ncap = *cap == 0 ? 16 : *cap * 2;
    void *n = realloc(arr, (size_t) ncap * size);
    if (n != NULL)
        *cap = ncap;
    return n;
}

static int64_t bucket_of(const struct usage *u, int64_t t)
{
    int64_t len = u->p.by == USAGE_BY_HOUR ? HOUR_MS : u->p.by == USAGE_BY_DAY ? DAY_MS : 0;
    if (len == 0)
        return 0;
    int64_t q = t / len;
    if (t < 0 && q * len != t)
        q--;
    return q * len;
}

static int64_t bucket_end(const struct usage *u, int64_t b)
{
    return b + (u->p.by == USAGE_BY_HOUR ? HOUR_MS : DAY_MS);
}

static struct cell *cell_for(struct usage *u, int64_t bucket, const struct track *t)
{
    const char *key = u->p.per == USAGE_PER_ROLE
                          ? (t->role == LEDGER_ROLE_PRIMARY ? "primary" : "replica")
                          : t->name;
    for (int i = u->ncells - 1; i >= 0; i--)
        if (u->cells[i].bucket_ms == bucket && strcmp(u->cells[i].name, key) == 0)
            return &u->cells[i];
    if (u->ncells == u->cap_cells) {
        struct cell *n = grow(u->cells, &u->cap_cells, sizeof(*n));
        if (n == NULL) {
            u->failed = true;
            return NULL;
        }
        u->cells = n;
    }
    struct cell *c = &u->cells[u->ncells++];
    memset(c, 0, sizeof(*c));
    c->bucket_ms = bucket;
    c->role = t->role;
    snprintf(c->name, sizeof(c->name), "%s", key);
    return c;
}

static void add(struct usage *u, struct track *t, int64_t bucket, int64_t ms)
{
    struct cell *c = cell_for(u, bucket, t);
    if (c == NULL || ms <= 0)
        return;
    if (t->paused) {
        c->pause_ms += ms;
        c->pause_cms += ms * (int64_t) t->cu_milli;
    } else {
        c->run_ms += ms;
        c->run_cms += ms * (int64_t) t->cu_milli;
    }
}

/* Accounts [t->last_ms, to) in t's current state, clipped to the window, split by bucket. */
static void account_span(struct usage *u, struct track *t, int64_t to)
{
    int64_t from = t->last_ms;
    if (to > from)
        t->last_ms = to;
    if (!t->open)
        return;
    if (u->p.since_ms > 0 && from < u->p.since_ms)
        from = u->p.since_ms;
    if (u->p.until_ms > 0 && to > u->p.until_ms)
        to = u->p.until_ms;
    while (from < to) {
        int64_t b = bucket_of(u, from);
        int64_t end = u->p.by == USAGE_BY_TOTAL ? to : bucket_end(u, b);
        if (end > to)
            end = to;
        add(u, t, b, end - from);
        t->counted_ms += end - from;
        t->last_bucket = b;
        from = end;
    }
}

/* Ends t's interval at its last_ms: rounding and minimum charge, interval count. */
static void close_interval(struct usage *u, struct track *t)
{
    if (!t->open)
        return;
    if (t->counted_ms > 0) {
        int64_t billed = (t->counted_ms + 999) / 1000 * 1000;
        if (billed < u->p.minimum_charge_ms)
            billed = u->p.minimum_charge_ms;
        add(u, t, t->last_bucket, billed - t->counted_ms);
        struct cell *c = cell_for(u, t->last_bucket, t);
        if (c != NULL)
            c->intervals++;
    }
    t->open = false;
    t->paused = false;
    t->counted_ms = 0;
}

static struct track *track_for(struct usage *u, const struct ledger_record *r)
{
    for (int i = 0; i < u->ntracks; i++)
        if (strcmp(u->tracks[i].name, r->name) == 0)
            return &u->tracks[i];
    if (u->ntracks == u->cap_tracks) {
        struct track *n = grow(u->tracks, &u->cap_tracks, sizeof(*n));
        if (n == NULL)
            return NULL;
        u->tracks = n;
    }
    struct track *t = &u->tracks[u->ntracks++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", r->name);
    t->last_ms = r->wall_ms;
    return t;
}

int usage_feed(struct usage *u, const struct ledger_record *r)
{
    struct track *t = track_for(u, r);
    if (t == NULL)
        return -1;
    int64_t at = r->wall_ms > t->last_ms ? r->wall_ms : t->last_ms;
    if (r->kind == LEDGER_START)
        close_interval(u, t); /* over an open interval: it ended unseen, at its last record */
    account_span(u, t, at);
    t->role = t->open ? t->role : r->role;
    switch (r->kind) {
    case LEDGER_START:
        t->open = true;
        t->paused = false;
        t->role = r->role;
        t->cu_milli = r->cu_milli;
        t->last_bucket = bucket_of(u, at);
        break;
    case LEDGER_RESIZE:
        t->cu_milli = r->cu_milli;
        break;
    case LEDGER_PAUSE:
        t->paused = true;
        break;
    case LEDGER_THAW:
        t->paused = false;
        break;
    case LEDGER_HEARTBEAT:
        if (t->open) {
            t->paused = r->paused;
            t->cu_milli = r->cu_milli;
        }
        break;
    case LEDGER_STOP:
    case LEDGER_CRASH_CLOSE:
        close_interval(u, t);
        break;
    }
    return u->failed ? -1 : 0;
}

static int cmp_cells(const void *a, const void *b)
{
    const struct cell *x = a, *y = b;
    if (x->bucket_ms != y->bucket_ms)
        return x->bucket_ms < y->bucket_ms ? -1 : 1;
    return strcmp(x->name, y->name);
}

int usage_finish(struct usage *u, struct usage_row **rows)
{
    *rows = NULL;
    for (int i = 0; i < u->ntracks; i++) {
        struct track *t = &u->tracks[i];
        if (t->open && u->p.open_until_ms > t->last_ms)
            account_span(u, t, u->p.open_until_ms);
        close_interval(u, t);
    }
    if (u->failed)
        return -1;
    if (u->ncells == 0)
        return 0;
    qsort(u->cells, (size_t) u->ncells, sizeof(struct cell), cmp_cells);
    struct usage_row *out = calloc((size_t) u->ncells, sizeof(*out));
    if (out == NULL)
        return -1;
    for (int i = 0; i < u->ncells; i++) {
        const struct cell *c = &u->cells[i];
        struct usage_row *r = &out[i];
        r->bucket_ms = c->bucket_ms;
        snprintf(r->name, sizeof(r->name), "%s", c->name);
        r->role = c->role;
        r->intervals = c->intervals;
        r->running_seconds = (double) c->run_ms / 1000.0;
        r->paused_seconds = (double) c->pause_ms / 1000.0;
        r->cu_seconds = (double) c->run_cms / 1e6;
        r->paused_cu_seconds = (double) c->pause_cms / 1e6;
        r->billed_cu_seconds = r->cu_seconds + u->p.paused_rate * r->paused_cu_seconds;
    }
    *rows = out;
    return u->ncells;
}

void usage_total(const struct usage_row *rows, int n, struct usage_row *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "total");
    for (int i = 0; i < n; i++) {
        out->intervals += rows[i].intervals;
        out->running_seconds += rows[i].running_seconds;
        out->paused_seconds += rows[i].paused_seconds;
        out->cu_seconds += rows[i].cu_seconds;
        out->paused_cu_seconds += rows[i].paused_cu_seconds;
        out->billed_cu_seconds += rows[i].billed_cu_seconds;
    }
}

void usage_format_time(int64_t wall_ms, char *out, size_t outlen)
{
    time_t t = (time_t) (wall_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int usage_parse_time(const char *s, int64_t *ms)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, used = 0;
    char sep;
    size_t len = strlen(s);
    if (len > 0 && strspn(s, "0123456789") == len) {
        long long v = atoll(s);
        if (len > 12)
            return -1;
        *ms = (int64_t) v * 1000;
        return 0;
    }
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10)
        return -1;
    const char *rest = s + 10;
    if (*rest != '\0') {
        int n2 = 0;
        if (sscanf(rest, "%c%2d:%2d%n", &sep, &h, &mi, &n2) != 3 || (sep != 'T' && sep != ' '))
            return -1;
        rest += n2;
        if (*rest == ':' && sscanf(rest, ":%2d%n", &sec, &n2) == 1)
            rest += n2;
        if (*rest == 'Z')
            rest++;
        if (*rest != '\0')
            return -1;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || h < 0 || mi < 0 ||
        sec < 0)
        return -1;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    *ms = (int64_t) t * 1000;
    return 0;
}
