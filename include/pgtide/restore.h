/*
 * restore: `pgtide restore -D DATA --into NEWDIR [--backup ID | --to TIMESTAMP | --lsn LSN]`.
 * Builds NEWDIR as a pgtide data directory from a base backup of DATA plus the WAL archived in
 * DATA/wal, runs PostgreSQL's archive recovery once (as the compute owner, on NEWDIR's private
 * socket) up to the target, lets it promote, stops it cleanly, and copies the first user's
 * password and the auth cache, so that `pgtide -D NEWDIR` serves exactly the transactions
 * committed up to the target. Blocking: a command-line tool, never called from the event loop.
 */
#pragma once

#include <stdint.h>

/* Entry point of the subcommand (argv[0] = "restore"). Returns the exit code: 0 restored,
   1 refused or failed (message on stderr), 2 usage. */
int restore_main(int argc, char **argv);

/* Parses a recovery target time: "YYYY-MM-DD[ T]HH:MM[:SS[.frac]]" followed by an optional
   zone "Z", "UTC", "+HH", "+HHMM" or "+HH:MM" (also '-'); no zone means UTC. Stores
   milliseconds since the epoch. Returns 0 or -1. */
int restore_parse_time(const char *s, int64_t *ms) __attribute__((warn_unused_result));
