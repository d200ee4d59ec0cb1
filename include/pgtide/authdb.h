/*
 * authdb: where the proxy finds a user's secret. In order: auth_file (PgBouncer userlist), the
 * auth cache (verifiers read from pg_authid while the primary runs, kept durably in
 * DATA/state/auth.cache so that logins can be checked -- and wrong passwords refused -- while
 * the compute is suspended), then auth_query run on the compute with non-blocking libpq (which
 * needs the compute running: an unknown user wakes it once). Users that the compute does not
 * know are remembered as absent until the cache is next refreshed.
 */
#pragma once

#include <ev.h>
#include <stdbool.h>

struct proxy;

struct authdb;

/* Called once with the secret text (NULL: no such user) */
typedef void (*authdb_done_fn)(void *arg, const char *secret);

struct authdb *authdb_new(struct proxy *p);
void authdb_free(struct authdb *a);

/* Looks up user. Calls done at once when the answer is known without a query; otherwise later.
   Returns a handle for authdb_cancel (NULL when done was already called). */
struct authdb_req *authdb_lookup(struct authdb *a, const char *user, authdb_done_fn done,
                                 void *arg);
void authdb_cancel(struct authdb *a, struct authdb_req *r);

/* The primary is running: run waiting lookups; after a start (fresh_start) also refresh the
   cache from pg_authid (a thaw from paused changes nothing there). */
void authdb_compute_ready(struct authdb *a, bool fresh_start);

/* The primary failed or timed out: waiting lookups are answered "unknown". */
void authdb_compute_failed(struct authdb *a);

/* Seeds the cache with one entry (at init, before the compute ever ran) and saves it. */
int authdb_seed(struct authdb *a, const char *user, const char *secret);

/* Worker threads: after a compute start only home refreshes from pg_authid; each worker
   waits for the result (HUB_AUTHSET: a copy of home's secrets, or NULL when the refresh failed)
   and then answers its waiting lookups. authdb_take_set takes set. */
struct authdb_set;
void authdb_take_set(struct authdb *a, struct authdb_set *set);
void authdb_set_free(struct authdb_set *set);

/* Worker threads: home's cache learnt user's secret from a worker's auth_query (HUB_AUTH, `from`
   the worker): kept, written to the cache file, and passed on to the other workers; on a
   worker: kept. Takes user and secret (malloc'd). Only home writes the file: workers hold
   copies in memory, so no two threads ever write it. */
void authdb_learnt(struct authdb *a, char *user, char *secret, int from);

/* Frees a user name and its secret, the secret wiped first (either may be NULL). */
void authdb_secret_free(char *user, char *secret);

/* True while a query of its own runs on the compute (cache refresh, auth_query). */
bool authdb_busy(const struct authdb *a);

/* Number of cached users. */
int authdb_cached(const struct authdb *a);
