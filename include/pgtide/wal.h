/*
 * wal: the WAL archive in DATA/wal (DESIGN.md §2). `pgtide wal-push %p %f` (PostgreSQL's
 * archive_command) copies one file into the archive durably and never replaces a different file
 * of the same name; `pgtide wal-fetch %f %p` (restore_command) copies one back out. Files may be
 * stored zstd-compressed (NAME.zst); fetch decompresses transparently. The helpers that name and
 * order segments are pure and shared with retention and restore.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Entry points of the subcommands; argv[0] is the subcommand name.
   wal-push SRC NAME -D DATA [-z LEVEL]: exit 0 when DATA/wal/NAME holds SRC's bytes (copied now
   or already there), 1 on any failure (message on stderr, nothing half-made left behind).
   wal-fetch NAME DST -D DATA: exit 0 when copied, 1 when NAME is not archived (quiet), 2 on
   other failures. */
int wal_push_main(int argc, char **argv);
int wal_fetch_main(int argc, char **argv);

/* Archives src as wal_dir/name (or name.zst when level > 0, zstd level 1..22): temp file, fsync,
   rename, fsync of the directory, then the stored size is checked. An existing file of that
   name (either form) with identical content is success; a different one is refused.
   Returns 0, or -1 with a message in err. */
int wal_push(const char *src, const char *name, const char *wal_dir, int level, char *err,
             size_t errlen) __attribute__((warn_unused_result));

/* Copies wal_dir/name (or name.zst, decompressed) to dst through dst's temp file and a rename.
   Returns 0, 1 when the archive has no such file, or -1 with a message in err. */
int wal_fetch(const char *name, const char *dst, const char *wal_dir, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* True for names PostgreSQL archives: 24-hex segments (optionally ".partial"), "TTTTTTTT.history"
   and "<segment>.XXXXXXXX.backup". No slashes, no dots elsewhere. */
bool wal_name_valid(const char *name) __attribute__((warn_unused_result));

/* Parses "X/Y" into *lsn. Returns 0 or -1. */
int wal_parse_lsn(const char *s, uint64_t *lsn) __attribute__((warn_unused_result));

/* Segment number (counted from 0 across log ids) of a segment-style name (24 hex digits
   first; suffixes allowed), for segments of seg_size bytes; the timeline goes to *tli when not
   NULL. Returns 0, or -1 for other names (.history). */
int wal_name_segno(const char *name, uint64_t seg_size, uint64_t *segno, uint32_t *tli)
    __attribute__((warn_unused_result));

/* Removes from wal_dir every segment, .partial and .backup file whose segment number is below
   the one holding keep_lsn (any timeline); .history files are kept. Returns the number of files
   removed, or -1 when the directory cannot be read. */
int wal_remove_before(const char *wal_dir, uint64_t keep_lsn, uint64_t seg_size);
