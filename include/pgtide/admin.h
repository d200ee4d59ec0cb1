/*
 * admin: the admin console, reached as database "pgtide" by users listed in admin_users. It
 * speaks the simple query protocol only and answers PgBouncer-style commands (SHOW ..., PAUSE,
 * RESUME, RELOAD, KILL_CLIENT, SHUTDOWN, and pgtide's own SHOW COMPUTES, WAKE, SUSPEND) with
 * text-only result sets built into the client's output buffer.
 */
#pragma once

#include <stdint.h>

struct client;

/* Handles one complete message from an admin client (type, body of blen bytes). Writes the
   answer (RowDescription/DataRow/CommandComplete or ErrorResponse, then ReadyForQuery) into the
   client's output; the caller flushes it. 'X' closes the client. Extended-protocol messages get
   one error, then are skipped up to Sync, which answers ReadyForQuery. */
void admin_message(struct client *c, uint8_t type, const uint8_t *body, uint32_t blen);
