/*
 * ryw: read-your-writes for the reader endpoint (issue 6, read_your_writes = on). After a
 * transaction that may have written ends on the primary, its ReadyForQuery is held back from
 * the client until pgtide has read the primary's WAL insert position
 * (pg_current_wal_insert_lsn(), on pgtide's own libpq connection to the primary, started after
 * the commit was seen, so the position is at or past the commit record). That position becomes
 * the causal LSN of the transaction's (database, user), kept in the primary's pool. A reader of
 * that (database, user) is then given only a replica whose last polled replay position is at or
 * past the causal LSN (replicaset_pick_at), else the primary; such a miss asks the replica set
 * for a replay poll at once, so replicas requalify within milliseconds instead of a second.
 *
 * Because the client learns of the commit only after the LSN is stored, any reader it then
 * informs (another connection, another process) sees the write. The client's protocol stream
 * is untouched: pgtide's query never runs on the client's server connection, the held
 * ReadyForQuery is forwarded as it came.
 *
 * Cost, when on: one extra round trip on the primary per transaction that may have written,
 * added to that transaction's commit latency (about 0.1-0.3 ms on the private socket). Reads
 * of LSNs are batched: every transaction that ends while a read is in flight shares the next
 * read, so under many concurrent writers the primary sees at most one such query per round
 * trip. "May have written" is judged from the CommandComplete tags (ryw_command_may_write):
 * on the primary endpoint anything but transaction control, SET/RESET/SHOW and the like counts
 * (a SELECT may call a function that writes); on the reader endpoint (a reader that fell back to
 * the primary) SELECT, FETCH and SHOW count as reads. Nothing is held when the option is off or
 * there is no replica set. Readers in session pooling are routed once, when the session gets
 * its server; transaction pooling routes each transaction.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct proxy;
struct server;

/* The causal LSN of a (database, user) whose last read failed: only the primary qualifies
   until a later read succeeds. */
#define RYW_LSN_UNKNOWN UINT64_MAX

/* ---- pure rules (unit-tested) ---------------------------------------------------------------- */

/* Whether a command with CommandComplete tag may have written (tag NULL: a FunctionCall, which
   may). reader: the client came through the reader endpoint, whose SELECT/FETCH/SHOW are taken
   as reads; on the primary endpoint only commands that cannot write are reads. */
bool ryw_command_may_write(const char *tag, bool reader) __attribute__((warn_unused_result));

/* Batching of LSN reads: reads are numbered 1, 2, ...; a transaction held now needs a read that
   starts after it ended, i.e. number started + 1. */
struct ryw_seq {
    uint64_t started; /* reads started */
    uint64_t done;    /* the highest read that completed (successfully or not) */
    bool inflight;    /* read number started is running */
};

/* The read number a transaction held now waits for; *start_now: no read runs, start it (the
   caller then calls ryw_seq_start). */
uint64_t ryw_seq_need(const struct ryw_seq *q, bool *start_now) __attribute__((warn_unused_result));

/* A read starts. */
void ryw_seq_start(struct ryw_seq *q);

/* The running read ended; transactions with need <= q->done are settled by it. */
void ryw_seq_end(struct ryw_seq *q);

/* ---- the data plane's side -------------------------------------------------------------- */

/* Relay hook for every CommandComplete ('C', tag in body) or FunctionCallResponse ('V') that
   server s sends while read_your_writes is on: notes whether its transaction may have written. */
void ryw_note_command(struct server *s, uint8_t type, const uint8_t *body, uint32_t blen);

/* Relay hook for a ReadyForQuery of server s (body: its status byte). Returns true when it must
   be held (the caller returns RELAY_STOP and stops reading the server): s is then queued until
   an LSN read that started after this moment ends, the causal LSN of its (database, user) is
   stored, and the server is pumped again; on that call this returns false (the message passes
   on). Returns false at once for a transaction that wrote nothing, off, a replica's server, or
   a failure to start the read (the (database, user) then goes to the primary only until a later
   read succeeds). */
bool ryw_hold(struct server *s, const uint8_t *body, uint32_t blen)
    __attribute__((warn_unused_result));

/* True while server s waits for an LSN read (its ReadyForQuery stays unconsumed). */
bool ryw_holding(const struct server *s) __attribute__((warn_unused_result));

/* Server s closes: it leaves the queue (its client hears of the close). */
void ryw_server_gone(struct server *s);

/* The replay position a replica must have reached to serve a reader of (database, user): 0 when
   read_your_writes is off or nothing was written, RYW_LSN_UNKNOWN when only the primary may. */
uint64_t ryw_reader_lsn(struct proxy *p, const char *database, const char *user)
    __attribute__((warn_unused_result));

/* Frees the module's state (its connection to the primary); NULL is ignored. */
struct ryw;
void ryw_free(struct ryw *r);
