/*
 * park: keeping idle sessions across a suspend (DESIGN.md §4 step 7). Before the primary is
 * suspended, each idle session's state is snapshotted on its server connection -- session-level
 * settings (pg_settings where source = 'session'), prepared statements (pg_prepared_statements,
 * SQL and protocol level) -- together with anything that cannot be carried over (temp tables,
 * LISTEN, advisory locks, open cursors). A parkable session gives its server connection up and
 * keeps only the snapshot; when the client next speaks it gets a fresh server connection on
 * which the snapshot is replayed before its message is forwarded. One unparkable session keeps
 * the compute awake, and SHOW CLIENTS says why.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct proxy;
struct client;
struct server;
struct pkt_builder;

/* One piece of a parked session: a setting ('s': name = value), an SQL-level prepared
   statement ('q': text is the PREPARE statement) or a protocol-level one ('p': name, text,
   parameter type oids as a comma list). */
struct park_item {
    struct park_item *next;
    char kind;
    char *name, *text, *types;
};

/* The snapshot query run on a server connection (one result set of k, a, b, c text columns;
   k 'x' rows name what cannot be parked). Each row must fit a relay buffer (32 kB) to be read:
   a setting or statement longer than PARK_ITEM_MAX bytes comes as an 'x' row, which keeps the
   session awake instead (a row too large would have ended the session; 256 parameter type oids
   take at most 2,816 bytes more). */
#define PARK_ITEM_MAX "28000"
extern const char park_snapshot_sql[];
/* What closes it, after any UNION ALL parts a caller adds ('s', name, value, NULL rows). */
extern const char park_snapshot_end[];

/* Starts a parking round: every idle session with a server connection is snapshotted. When all
   are parked the primary is suspended; if one cannot be, the round ends and the compute stays
   up. Returns the number of sessions being snapshotted (0: nothing to park, suspend now). */
int park_begin(struct proxy *p);

/* True while snapshots of a round are outstanding. */
bool park_in_progress(const struct proxy *p);

/* A DataRow of the snapshot query arrived on s (body of blen bytes). */
void park_row(struct server *s, const uint8_t *body, uint32_t blen);

/* The snapshot on s ended (its ReadyForQuery); error is the server's message if it failed. */
void park_done(struct server *s, const char *error);

/* A server closed while its snapshot ran: the round fails (and ends if it was the last). */
void park_server_lost(struct proxy *p);

/* The round is over (home): suspend if every session parked, and answer SUSPEND's waiter. From
   a worker thread it is posted to home (HUB_PARKED). */
void park_round_end(struct proxy *home);

/* Appends the replay of c's parked session to b: one simple Query with the settings and SQL
   PREPAREs, then Parse+Sync per protocol-level statement. Returns the number of
   ReadyForQuery messages the server will send back for it (0 when nothing to replay). */
int park_replay(const struct client *c, struct pkt_builder *b);

/* Frees c's snapshot. */
void park_clear(struct client *c);
