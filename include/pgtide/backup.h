/*
 * backup: base backups in DATA/backups/ID/ (DESIGN.md §2, §5). Two methods: "basebackup"
 * (pg_basebackup over the private socket of the running primary, with PostgreSQL's manifest,
 * checked by pg_verifybackup) and "cold" (a file copy of the cleanly shut-down cluster in
 * DATA/primary with pgtide's own manifest of sizes and SHA-256, checked by backup_verify_manifest)
 * that needs no compute at all. A backup runs in a forked child watched by ev_child, so the
 * event loop never blocks. A backup directory holds data/, manifest (cold) or
 * data/backup_manifest (basebackup), log, and meta; meta is written last and durably, and only a
 * directory with meta is a backup: anything else is partial and is removed by
 * backup_cleanup_partial. Also: listing, retention (a pure choice plus its application, which
 * trims the WAL archive too), and the statistics the metrics export.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <ev.h>

#include "pgtide/store.h"

enum backup_method { BACKUP_COLD, BACKUP_BASEBACKUP };

#define BACKUP_ID_MAX 32

/* One complete backup, as its meta file records it. */
struct backup_info {
    char id[BACKUP_ID_MAX]; /* "20260101T030000Z" (+ "-N" when taken in the same second) */
    enum backup_method method;
    int64_t start_ms, end_ms;        /* wall clock around the copy */
    int64_t consistent_ms;           /* the earliest time a restore from it can stop at: end_ms for
                                        basebackup, the shutdown checkpoint's time for cold */
    char lsn_start[24], lsn_end[24]; /* "X/Y" */
    uint32_t timeline;
    uint64_t wal_segment_size;
    int64_t size; /* bytes of data/ */
    bool verified;
};

/* Last outcomes, for metrics and SHOW BACKUPS (process-wide; pgtide runs one backup at a time). */
struct backup_stats {
    int64_t last_success_ms;  /* wall clock of the last complete backup's end, 0 = none yet */
    int64_t last_duration_ms; /* of that backup */
    int64_t last_size;        /* bytes of that backup */
    uint64_t successes;       /* since pgtide started */
    uint64_t failures;        /* since pgtide started */
    int64_t last_failure_ms;  /* 0 = none */
    char last_error[256];     /* "" = none */
};

/* The statistics (never NULL; valid for the life of the process). */
const struct backup_stats *backup_stats(void);

/* True while a basebackup-method backup runs: the primary must neither pause nor suspend (the
   proxy's idle tick and SUSPEND check this). Cold backups hold nothing. */
bool backup_in_progress(void);

/* The method's name: "cold" or "basebackup". */
const char *backup_method_name(enum backup_method m);

struct backup_job;

/* Called once when a job ends (unless backup_abort came first). ok: the copy is made and
   verified; info describes it but it is NOT yet a backup: call backup_commit (writes meta) or
   backup_discard. !ok: err says why and the directory is already removed. info and err are valid
   during the call only; the job is freed after it returns. */
typedef void (*backup_done_fn)(void *arg, bool ok, const struct backup_info *info, const char *err);

/* Starts a backup in a child process. For BACKUP_BASEBACKUP, host (the private socket
   directory) and port reach the running primary. bindir holds pg_basebackup, pg_verifybackup
   and pg_controldata. loop must be the default loop. Returns the job, or NULL with err set. */
struct backup_job *backup_start(struct ev_loop *loop, struct store *st, const char *bindir,
                                enum backup_method method, const char *host, int port,
                                backup_done_fn done, void *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Kills the job's child (and what it runs), removes its directory; done is not called. */
void backup_abort(struct backup_job *job);

/* The id of a running job. */
const char *backup_job_id(const struct backup_job *job);
enum backup_method backup_job_method(const struct backup_job *job);
int64_t backup_job_started_ms(const struct backup_job *job);

/* Makes info a backup: writes DATA/backups/ID/meta durably, updates the statistics. 0 or -1. */
int backup_commit(struct store *st, const struct backup_info *info)
    __attribute__((warn_unused_result));

/* Removes DATA/backups/ID (a job whose result is not wanted). */
void backup_discard(struct store *st, const char *id);

/* Counts a failure in the statistics (err is copied). */
void backup_note_failure(const char *err);

/* Complete backups of the data directory data_dir, oldest first, in a malloc'd array (caller
   frees *out). Returns the count (0 when none), or -1 when the directory cannot be read. */
int backup_list(const char *data_dir, struct backup_info **out) __attribute__((warn_unused_result));

/* Reads one meta file's text into *info. 0, or -1 when a required field is missing. */
int backup_parse_meta(const char *text, struct backup_info *info)
    __attribute__((warn_unused_result));

/* Removes every directory under DATA/backups without meta (left by a crash or a kill). Returns
   how many were removed. */
int backup_cleanup_partial(const char *data_dir);

/* Checks data_dir against a pgtide manifest (lines "SHA256-HEX SIZE PATH", PATH relative to
   data_dir, after a first line "pgtide-manifest 1"): every file has its size and hash and no
   regular file is missing from the manifest. Returns 0, or -1 with the first mismatch in err. */
int backup_verify_manifest(const char *data_dir, const char *manifest_path, char *err,
                           size_t errlen) __attribute__((warn_unused_result));

/* Retention as a pure function: b[0..n) sorted oldest first. Sets del[i] for backups to remove:
   beyond the newest `keep` (keep <= 0: no count limit) or whose end is older than max_age_ms
   before now_ms (max_age_ms <= 0: no age limit). The newest backup is never removed. Returns the
   number marked. */
size_t backup_retention_choose(const struct backup_info *b, size_t n, int keep, int64_t max_age_ms,
                               int64_t now_ms, bool *del);

/* Applies retention to data_dir: removes the chosen backups (meta first, so a crash leaves a
   partial directory, never a complete-looking one), then the WAL in DATA/wal older than the
   oldest remaining backup's start. Returns the number of backups removed, or -1. */
int backup_apply_retention(const char *data_dir, int keep, int64_t max_age_ms, int64_t now_ms);

/* Copies the tree src into dst (created), files and directories keeping their modes, owned by
   uid/gid when chown is true; regular files only, symlinks recreated. When manifest is not
   NULL, appends "SHA256 SIZE PATH" lines for every file. Blocking (child processes and the
   restore command only). Returns 0, or -1 with err set. */
int backup_copy_tree(const char *src, const char *dst, bool chown_files, uid_t uid, gid_t gid,
                     FILE *manifest, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Runs argv (argv[0] an absolute path) as the store's compute owner, stdout and stderr appended
   to logfd (-1: /dev/null), with the child killed if the caller dies; waits for it. Blocking.
   Returns the wait status, or -1. */
int backup_run_as_owner(const struct store *st, char *const argv[], int logfd);

/* Runs BINDIR/pg_controldata on pgdata and returns the value of field (e.g. "Database cluster
   state") in out. Blocking. 0 or -1. */
int backup_controldata(const struct store *st, const char *bindir, const char *pgdata,
                       const char *field, char *out, size_t outlen)
    __attribute__((warn_unused_result));
