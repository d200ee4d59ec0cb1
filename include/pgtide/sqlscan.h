/*
 * sqlscan: custom setting names read from a query's text (PostgreSQL does not list custom
 * settings in pg_settings; parking needs their names to carry them across a suspend).
 */
#pragma once

#include <stddef.h>

/* Called with a lower-cased name (NUL-terminated, len bytes, at most 63) the query sets. */
typedef void (*sqlscan_name_fn)(void *arg, const char *name, size_t len);

#define SQLSCAN_OPAQUE                                                                             \
    1                       /* a name that cannot be read: set_config($1, ...), 'a.' || x, a       \
                               quoted or over-long SET name */
#define SQLSCAN_RESET_ALL 2 /* the query starts with RESET ALL or DISCARD ALL */

/* Scans sql (len bytes, no NUL needed): fn for the name of a leading "SET [SESSION] name" and
   for each set_config('name'[::cast], value, is_local) call outside quoted literals and
   comments whose is_local is not the literal true (a transaction-local setting ends with the
   transaction). Names are reported whatever their form (the caller keeps the dotted ones).
   Dollar-quoted bodies are scanned (a DO block runs what it holds). Returns SQLSCAN_* flags. */
int sqlscan_custom(const char *sql, size_t len, sqlscan_name_fn fn, void *arg);
