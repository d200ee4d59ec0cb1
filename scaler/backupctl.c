/*
 * backupctl: the backup scheduler and method chooser. A one-second timer re-reads the current
 * configuration snapshot, recomputes the next cron slot when the schedule changes, starts a
 * backup when a slot, a retry or a request is due, and watches a cold copy: if the compute leaves
 * "suspended" meanwhile, the copy is abandoned and a basebackup is taken instead. The last slot
 * that ran is kept in DATA/state/backup-schedule, so a slot missed while pgtide was down runs
 * once at the next start.
 */
#define _GNU_SOURCE
#include "pgtide/backupctl.h"
#include "pgtide/backup.h"
#include "pgtide/compute.h"
#include "pgtide/cron.h"
#include "pgtide/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKUPCTL_MAX_WAITERS 16
#define BACKUPCTL_RETRY_BASE  30000   /* ms before the first retry */
#define BACKUPCTL_RETRY_MAX   3600000 /* ms, cap of the backoff */
#define BACKUPCTL_MAX_RETRIES 6

struct backupctl_waiter {
    backupctl_done_fn done;
    void *arg;
    uint64_t token;
};

struct backupctl {
    struct ev_loop *loop;
    struct config *const *cfgp;
    struct store *st;
    struct compute *primary;
    char *bindir;
    ev_timer tick;
    struct backup_job *job;
    enum backup_method job_method; /* of job (the job is freed before it reports) */
    int cold_starts;               /* the compute's start count when a cold copy began */
    bool pending;                  /* a backup is wanted as soon as the compute allows */
    bool scheduled; /* the pending/running one comes from the schedule (retry on failure) */
    struct backupctl_waiter waiters[BACKUPCTL_MAX_WAITERS];
    int nwaiters;
    char schedule[256]; /* the schedule the slots below belong to */
    bool schedule_ok;
    struct cron cron;
    int64_t next_run_ms;
    int failures; /* consecutive */
    int64_t retry_at_ms;
    char last_error[256];
    int64_t last_failure_ms;
};

static int64_t backupctl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void backupctl_answer(struct backupctl *b, bool ok, const char *msg)
{
    int n = b->nwaiters;
    struct backupctl_waiter w[BACKUPCTL_MAX_WAITERS];
    memcpy(w, b->waiters, sizeof(w));
    b->nwaiters = 0;
    for (int i = 0; i < n; i++)
        w[i].done(w[i].arg, w[i].token, ok, msg);
}

/* ---- schedule ------------------------------------------------------------------------------ */

static void backupctl_save_slot(struct backupctl *b, int64_t slot_ms)
{
    char *path = store_path(b->st, "state/backup-schedule");
    char text[400];
    snprintf(text, sizeof(text), "%s\n%" PRId64 "\n", b->schedule, slot_ms / 1000);
    if (path == NULL || store_write_file(path, text, strlen(text), 0600) < 0)
        log_warn("could not record the last backup slot: %s", strerror(errno));
    free(path);
}

/* At start: a slot of the same schedule that fell between the recorded one and now. */
static bool backupctl_missed(struct backupctl *b, time_t now)
{
    char *path = store_path(b->st, "state/backup-schedule"), *text = NULL;
    bool missed = false;
    if (path != NULL && store_read_file(path, &text, NULL) == 0) {
        char *nl = strchr(text, '\n');
        if (nl != NULL) {
            *nl = '\0';
            time_t last = (time_t) strtoll(nl + 1, NULL, 10);
            time_t due = cron_next(&b->cron, last, (*b->cfgp)->backup_timezone);
            missed = strcmp(text, b->schedule) == 0 && due > 0 && due <= now;
        }
    }
    free(text);
    free(path);
    return missed;
}

/* Re-reads backup_schedule; on a change recomputes the next slot. */
static void backupctl_follow_schedule(struct backupctl *b, bool at_start)
{
    const struct config *cfg = *b->cfgp;
    if (!at_start && strcmp(cfg->backup_schedule, b->schedule) == 0)
        return;
    snprintf(b->schedule, sizeof(b->schedule), "%s", cfg->backup_schedule);
    b->next_run_ms = 0;
    b->schedule_ok = false;
    if (b->schedule[0] == '\0')
        return;
    char err[256];
    if (cron_parse(b->schedule, &b->cron, err, sizeof(err)) < 0) {
        log_error("backup_schedule \"%s\": %s; no scheduled backups", b->schedule, err);
        return;
    }
    b->schedule_ok = true;
    time_t now = time(NULL);
    if (at_start && backupctl_missed(b, now)) {
        log_info("a scheduled backup was missed while pgtide was down; taking it now");
        b->pending = b->scheduled = true;
    }
    time_t next = cron_next(&b->cron, now, cfg->backup_timezone);
    b->next_run_ms = next > 0 ? (int64_t) next * 1000 : 0;
    if (!at_start)
        backupctl_save_slot(b, (int64_t) now * 1000);
}

/* ---- running ------------------------------------------------------------------------------- */

static void backupctl_start(struct backupctl *b);

static void backupctl_failed(struct backupctl *b, const char *err)
{
    snprintf(b->last_error, sizeof(b->last_error), "%s", err);
    b->last_failure_ms = backupctl_now_ms();
    b->failures++;
    if (b->scheduled && b->failures <= BACKUPCTL_MAX_RETRIES) {
        int64_t delay = BACKUPCTL_RETRY_BASE << (b->failures - 1);
        if (delay > BACKUPCTL_RETRY_MAX)
            delay = BACKUPCTL_RETRY_MAX;
        b->retry_at_ms = b->last_failure_ms + delay;
        log_warn("backup failed (%d in a row); retrying in %" PRId64 " s", b->failures,
                 delay / 1000);
    } else {
        b->retry_at_ms = 0;
        b->scheduled = false;
    }
    backupctl_answer(b, false, err);
}

static void backupctl_job_done(void *arg, bool ok, const struct backup_info *info, const char *err)
{
    struct backupctl *b = arg;
    bool cold = b->job_method == BACKUP_COLD;
    b->job = NULL;
    if (!ok) {
        backupctl_failed(b, err);
        return;
    }
    if (cold) {
        struct compute_info ci;
        compute_get_info(b->primary, &ci);
        if (ci.starts != b->cold_starts || compute_get_state(b->primary) != COMPUTE_SUSPENDED) {
            log_info("the compute started during cold backup %s; taking a basebackup instead",
                     info->id);
            backup_discard(b->st, info->id);
            b->pending = true;
            return;
        }
    }
    if (backup_commit(b->st, info) < 0) {
        backup_discard(b->st, info->id);
        backupctl_failed(b, "could not write the backup's meta file");
        return;
    }
    b->failures = 0;
    b->retry_at_ms = 0;
    b->scheduled = false;
    b->last_error[0] = '\0';
    const struct config *cfg = *b->cfgp;
    int removed = backup_apply_retention(b->st->dir, cfg->backup_keep, cfg->backup_max_age,
                                         backupctl_now_ms());
    if (removed > 0)
        log_info("retention removed %d backup(s)", removed);
    backupctl_answer(b, true, info->id);
}

static void backupctl_start(struct backupctl *b)
{
    enum compute_state s = compute_get_state(b->primary);
    enum backup_method m;
    if (s == COMPUTE_PAUSED)
        compute_wake(b->primary); /* thaw: a frozen primary cannot stream a backup */
    s = compute_get_state(b->primary);
    if (s == COMPUTE_SUSPENDED || s == COMPUTE_FAILED)
        m = BACKUP_COLD;
    else if (s == COMPUTE_RUNNING)
        m = BACKUP_BASEBACKUP;
    else
        return; /* starting or suspending: the next tick decides */
    char err[512];
    b->pending = false;
    if (m == BACKUP_COLD) {
        struct compute_info ci;
        compute_get_info(b->primary, &ci);
        b->cold_starts = ci.starts;
    }
    b->job_method = m;
    b->job = backup_start(b->loop, b->st, b->bindir, m, compute_host(b->primary),
                          compute_port(b->primary), backupctl_job_done, b, err, sizeof(err));
    if (b->job == NULL) {
        backup_note_failure(err);
        backupctl_failed(b, err);
    }
}

static void backupctl_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct backupctl *b = w->data;
    int64_t now = backupctl_now_ms();
    backupctl_follow_schedule(b, false);
    if (b->job != NULL && backup_job_method(b->job) == BACKUP_COLD &&
        compute_get_state(b->primary) != COMPUTE_SUSPENDED) {
        log_info("the compute is starting; abandoning cold backup %s for a basebackup",
                 backup_job_id(b->job));
        backup_abort(b->job);
        b->job = NULL;
        b->pending = true;
    }
    if (b->schedule_ok && b->next_run_ms > 0 && now >= b->next_run_ms) {
        b->pending = b->scheduled = true;
        b->failures = 0;
        backupctl_save_slot(b, b->next_run_ms);
        time_t next = cron_next(&b->cron, (time_t) (now / 1000), (*b->cfgp)->backup_timezone);
        b->next_run_ms = next > 0 ? (int64_t) next * 1000 : 0;
    }
    if (b->retry_at_ms > 0 && now >= b->retry_at_ms) {
        b->retry_at_ms = 0;
        b->pending = true;
    }
    if (b->pending && b->job == NULL)
        backupctl_start(b);
}

/* ---- public -------------------------------------------------------------------------------- */

struct backupctl *backupctl_new(struct ev_loop *loop, struct config *const *cfgp, struct store *st,
                                struct compute *primary)
{
    if (compute_is_static(primary))
        return NULL; /* nothing to back up: the server is not pgtide's */
    struct backupctl *b = calloc(1, sizeof(*b));
    char err[512];
    if (b == NULL)
        return NULL;
    b->bindir = store_find_bindir((*cfgp)->pg_bindir, err, sizeof(err));
    if (b->bindir == NULL) {
        log_error("backups disabled: %s", err);
        free(b);
        return NULL;
    }
    b->loop = loop;
    b->cfgp = cfgp;
    b->st = st;
    b->primary = primary;
    int n = backup_cleanup_partial(st->dir);
    if (n > 0)
        log_warn("removed %d partial backup(s) left by an interrupted run", n);
    backupctl_follow_schedule(b, true);
    ev_timer_init(&b->tick, backupctl_tick, 1.0, 1.0);
    b->tick.data = b;
    ev_timer_start(loop, &b->tick);
    return b;
}

void backupctl_free(struct backupctl *b)
{
    if (b == NULL)
        return;
    ev_timer_stop(b->loop, &b->tick);
    if (b->job != NULL)
        backup_abort(b->job);
    b->job = NULL;
    backupctl_answer(b, false, "pgtide is shutting down");
    free(b->bindir);
    free(b);
}

int backupctl_request(struct backupctl *b, backupctl_done_fn done, void *arg, uint64_t token,
                      char *err, size_t errlen)
{
    if (b->nwaiters >= BACKUPCTL_MAX_WAITERS) {
        snprintf(err, errlen, "too many BACKUP requests are waiting");
        return -1;
    }
    b->waiters[b->nwaiters++] = (struct backupctl_waiter){done, arg, token};
    if (b->job == NULL) {
        b->pending = true;
        backupctl_start(b);
    }
    return 0;
}

void backupctl_get_status(const struct backupctl *b, struct backupctl_status *out)
{
    memset(out, 0, sizeof(*out));
    if (b->job != NULL) {
        out->running = true;
        snprintf(out->id, sizeof(out->id), "%s", backup_job_id(b->job));
        out->method = backup_method_name(backup_job_method(b->job));
        out->started_ms = backup_job_started_ms(b->job);
    }
    out->consecutive_failures = b->failures;
    out->next_retry_ms = b->retry_at_ms;
    out->next_run_ms = b->next_run_ms;
    out->last_failure_ms = b->last_failure_ms;
    snprintf(out->last_error, sizeof(out->last_error), "%s", b->last_error);
}
