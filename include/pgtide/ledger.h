/*
 * ledger: the durable usage ledger (DESIGN.md §5, issue 5). Append-only files
 * DATA/state/ledger-YYYY-MM (one per UTC month; old months stay readable) hold fixed-layout
 * records: start, resize, pause, thaw, stop, heartbeat and crash-close of a compute, each with
 * the wall clock, the compute's name and role and its size in milli compute units. Every record
 * is framed by its length and a CRC32C (computed here, table-driven) and fsynced before the
 * append returns. A reader walks records in order and stops at the first one that is short, has
 * an impossible length or a wrong CRC: a torn tail is detected and cut (the writer truncates it
 * on open), never parsed. On open after a crash, every interval left open is closed at its last
 * record (normally a heartbeat) with a CRASH_CLOSE record. This module knows nothing of computes
 * or the event loop; scaler/account drives it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ledger_kind {
    LEDGER_START = 1,  /* the compute's process started (wake): an interval opens */
    LEDGER_RESIZE,     /* its size changed (cu_milli is the new size) */
    LEDGER_PAUSE,      /* its process tree was frozen */
    LEDGER_THAW,       /* it was thawed */
    LEDGER_STOP,       /* its process exited (suspend, failure): the interval closes */
    LEDGER_HEARTBEAT,  /* still alive at wall_ms (state and size repeated) */
    LEDGER_CRASH_CLOSE /* written on start-up: the interval was closed at wall_ms, the time of
                          its last record before pgtide stopped without closing it */
};

enum ledger_role { LEDGER_ROLE_PRIMARY = 0, LEDGER_ROLE_REPLICA = 1 };

#define LEDGER_NAME_MAX   64          /* compute name, NUL included */
#define LEDGER_REC_MAX    128         /* largest encoded record */
#define LEDGER_FILE_MAGIC "PGTLDG1\n" /* first 8 bytes of every ledger file */

struct ledger_record {
    enum ledger_kind kind;
    int64_t wall_ms; /* wall clock, ms since the epoch (UTC) */
    enum ledger_role role;
    uint32_t cu_milli;          /* size in 1/1000 CU (1 CU = 1000) */
    bool paused;                /* HEARTBEAT: the compute is frozen at wall_ms */
    char name[LEDGER_NAME_MAX]; /* "primary", "replica-0", ... */
};

/* ---- pure codec ------------------------------------------------------------------------- */

/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78) of len bytes, continuing from crc
   (start with 0). ledger_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t ledger_crc32c(uint32_t crc, const void *data, size_t len)
    __attribute__((warn_unused_result));

/* Encodes r into out (at least LEDGER_REC_MAX bytes): u32 length of the body, u32 CRC32C of
   the body, then the body (kind, role, flags, cu_milli, wall_ms, name length, name), all
   little-endian. Returns the encoded size, or 0 when r is invalid (unknown kind, name empty or
   too long). */
size_t ledger_encode(const struct ledger_record *r, uint8_t *out)
    __attribute__((warn_unused_result));

enum ledger_decode_status { LEDGER_DEC_OK, LEDGER_DEC_INCOMPLETE, LEDGER_DEC_CORRUPT };

/* Decodes one record from the len bytes at buf. OK: *r is filled and *used holds its size.
   INCOMPLETE: fewer bytes than the record claims (a torn tail if at the end of a file).
   CORRUPT: impossible length, CRC mismatch, unknown kind or bad name. */
enum ledger_decode_status ledger_decode(const uint8_t *buf, size_t len, struct ledger_record *r,
                                        size_t *used) __attribute__((warn_unused_result));

/* ---- files ------------------------------------------------------------------------------ */

/* Wall-clock source (ms since the epoch); tests inject one to cross month boundaries. */
typedef int64_t (*ledger_clock_fn)(void *arg);

/* Writes "ledger-YYYY-MM" for the UTC month of wall_ms into out (at least 16 bytes). */
void ledger_file_name(int64_t wall_ms, char *out, size_t outlen);

/* Reads every record of every ledger-YYYY-MM file in state_dir (months in order, records in
   file order), calling fn for each; fn returns 0 to go on, non-zero to stop. A file's torn or
   corrupt tail ends that file (counted in *cut_bytes when not NULL); the next month is still
   read. Read-only: safe while pgtide appends. Returns 0, or -1 with a message in err (the
   directory cannot be read; a missing directory counts as empty). */
typedef int (*ledger_visit_fn)(void *arg, const struct ledger_record *r);
int ledger_read_all(const char *state_dir, ledger_visit_fn fn, void *arg, uint64_t *cut_bytes,
                    char *err, size_t errlen) __attribute__((warn_unused_result));

struct ledger;

/* Opens the writer on state_dir (which must exist), with clock (NULL = the real wall clock).
   Cuts a torn tail off the newest file (logged), then, for every compute whose last record
   leaves an interval open (START/RESIZE/PAUSE/THAW/HEARTBEAT not followed by STOP or
   CRASH_CLOSE), appends a CRASH_CLOSE at the time of that last record. *closed (may be NULL)
   gets the number of intervals closed that way. Returns NULL with a message in err. */
struct ledger *ledger_open(const char *state_dir, ledger_clock_fn clock, void *clock_arg,
                           int *closed, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Closes the file. NULL is ignored. Open intervals stay open (the next open closes them). */
void ledger_close(struct ledger *l);

/* Current wall clock of the ledger (its injected clock). */
int64_t ledger_now(const struct ledger *l);

/* Appends r (r->wall_ms is used as given; the file is that of the current clock's month, the
   old file is closed when the month changes), then fsyncs. Returns 0, or -1 with errno set
   (logged; the ledger stays usable and the next append retries). */
int ledger_append(struct ledger *l, const struct ledger_record *r)
    __attribute__((warn_unused_result));

/* Convenience: appends kind for compute name/role of size cu (in CU, e.g. 0.25) at the ledger's
   clock. paused is only meaningful for HEARTBEAT. Returns like ledger_append. */
int ledger_record(struct ledger *l, enum ledger_kind kind, const char *name, enum ledger_role role,
                  double cu, bool paused) __attribute__((warn_unused_result));

/* A live size change of a running compute: a RESIZE record with the new size, now. Prefer
   account_compute_resized() (account.h), which also keeps heartbeats at the new size. */
int ledger_record_resize(struct ledger *l, const char *name, enum ledger_role role, double new_cu)
    __attribute__((warn_unused_result));

/* Name of a record kind ("start", "resize", "pause", "thaw", "stop", "heartbeat",
   "crash-close"); "?" when unknown. Static. */
const char *ledger_kind_name(enum ledger_kind k);
