/*
 * store: the on-disk layout of a pgtide data directory (DESIGN.md §2) and the durable-write
 * discipline every other module uses. It creates and checks DATA and its subdirectories, holds the
 * exclusive lock that keeps a second pgtide off the same DATA, initialises the primary cluster
 * with initdb, and offers whole-file durable write and read helpers.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct store {
    char *dir;      /* DATA, as given (malloc'd) */
    int lock_fd;    /* DATA/pgtide.lock, holds the fcntl write lock; -1 when closed */
    uid_t uid;      /* owner of compute files: compute_user when root, else our own uid */
    gid_t gid;      /* that owner's primary group */
    bool as_root;   /* pgtide runs as root and drops to uid/gid for computes */
    unsigned swept; /* orphaned temporary files store_open removed */
};

/* Creates DATA (0755) if missing and its subdirectories: primary, wal, backups, replicas, run
   (0700, compute owner), log (0750, compute owner) and state (0700, pgtide's own). Existing ones
   are checked: wrong modes or owners are fixed when we may, otherwise refused with a clear
   message. Takes an exclusive fcntl lock on DATA/pgtide.lock, kept while the store is open; a
   second pgtide on the same DATA fails with "data directory DATA is in use by pgtide pid N".
   compute_user (NULL or "" = "postgres") is only looked up when running as root.
   Once locked, it removes the temporary files of durable writes that died mid-write
   (".NAME.XXXXXX.tmp" untouched for an hour) in DATA, its subdirectories and each backup's
   directory, and counts them in st->swept.
   Returns 0, or -1 with a message in err (st is then left closed; store_close is harmless). */
int store_open(struct store *st, const char *dir, const char *compute_user, char *err,
               size_t errlen) __attribute__((warn_unused_result));

/* Releases the lock and frees st's memory. Safe on a closed or failed store. */
void store_close(struct store *st);

/* Returns a malloc'd "DATA/rel" (caller frees), or NULL when out of memory. */
char *store_path(const struct store *st, const char *rel) __attribute__((warn_unused_result));

/* True when DATA/primary/PG_VERSION exists (a cluster was initialised). */
bool store_has_cluster(const struct store *st) __attribute__((warn_unused_result));

/* Blocking; only for start-up, before the event loop. Generates a random 24-character url-safe
   password, runs BINDIR/initdb as the compute owner (-D DATA/primary -U postgres
   --auth-local=trust --auth-host=reject --data-checksums -E UTF8 --locale=C.UTF-8 or C, the
   password through a temporary 0600 --pwfile), rewrites DATA/primary/pg_hba.conf to the single
   line "local all all trust", and writes the password durably to DATA/initial-password (0600).
   On failure the half-made contents of DATA/primary are removed and err holds initdb's exit
   status and the tail of its output. Returns 0 or -1. */
int store_init_cluster(struct store *st, const char *bindir, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Durable whole-file write: writes DIR/.NAME.XXXXXX.tmp (a name of its own, so concurrent
   writers of one path never share a temporary file), fsyncs it, renames it over path and fsyncs
   the directory. The file gets exactly mode. Returns 0, or -1 with errno set (the temporary
   file is removed). */
int store_write_file(const char *path, const void *data, size_t len, mode_t mode)
    __attribute__((warn_unused_result));

/* Reads a whole file into a malloc'd buffer (caller frees *data) with an extra NUL byte after
   the *len bytes read; len may be NULL. Returns 0, or -1 with errno set (*data untouched). */
int store_read_file(const char *path, char **data, size_t *len) __attribute__((warn_unused_result));

/* Finds the PostgreSQL bin directory: configured when non-empty (it must hold an executable
   `postgres`), else `pg_config --bindir` if that directory holds `postgres`, else
   /usr/lib/postgresql/15/bin. Blocking (runs pg_config). Returns a malloc'd path (caller frees),
   or NULL with a message in err. */
char *store_find_bindir(const char *configured, char *err, size_t errlen)
    __attribute__((warn_unused_result));
