/*
 * backupctl: when and how backups are taken (DESIGN.md §5). It follows backup_schedule (cron,
 * in backup_timezone), runs a missed slot once at start, retries a failed scheduled backup with
 * backoff, takes one now on request (the console's BACKUP), chooses the method from the
 * primary's state (suspended: a cold copy, without starting it; running: pg_basebackup, a paused
 * compute being thawed first), and applies retention after each success.
 *
 * Decision on suspends: a running basebackup holds the compute awake (backup_in_progress(),
 * checked by the proxy's idle policy and by SUSPEND), so the backup is never cut off; a cold
 * backup holds nothing: clients that arrive during it wake the compute as usual, and the copy,
 * no longer of a shut-down cluster, is abandoned and retaken with pg_basebackup at once.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "pgtide/config.h"
#include "pgtide/store.h"

struct backupctl;
struct compute;

/* Answer to a request: ok, and a message (the backup id, or why it failed). */
typedef void (*backupctl_done_fn)(void *arg, uint64_t token, bool ok, const char *msg);

/* Creates the controller. cfgp points at the caller's current-snapshot pointer (read at every
   tick, so SET and reloads apply without a call); st and primary must outlive it; loop is the
   default loop. Removes partial backups left by a crash. Returns NULL (logged) on failure. */
struct backupctl *backupctl_new(struct ev_loop *loop, struct config *const *cfgp, struct store *st,
                                struct compute *primary) __attribute__((warn_unused_result));

/* Aborts a running backup (its directory is removed) and frees. NULL is ignored. */
void backupctl_free(struct backupctl *b);

/* Takes a backup as soon as possible (or joins the one running); done(arg, token, ...) is called
   when it is complete or has failed, unless backupctl_forget(arg, token) came first. Returns 0,
   or -1 with err (too many waiters, static provider). */
int backupctl_request(struct backupctl *b, backupctl_done_fn done, void *arg, uint64_t token,
                      char *err, size_t errlen) __attribute__((warn_unused_result));

/* What SHOW BACKUPS adds to the list of complete backups. */
struct backupctl_status {
    bool running;
    char id[32];
    const char *method;       /* of the running backup */
    int64_t started_ms;       /* of the running backup */
    int consecutive_failures; /* since the last success */
    int64_t next_retry_ms;    /* 0 = none */
    int64_t next_run_ms;      /* next scheduled slot, 0 = no schedule */
    char last_error[256];     /* "" = none */
    int64_t last_failure_ms;
};
void backupctl_get_status(const struct backupctl *b, struct backupctl_status *out);
