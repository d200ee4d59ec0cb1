/*
 * pkt: the pure PostgreSQL wire-protocol 3.0 codec. Readers take a pointer and a remaining
 * length and return PKT_OK / PKT_INCOMPLETE / PKT_ERROR; they never read past the length they
 * were given, never allocate and never copy: every string they return points into the caller's
 * buffer (NUL-terminated there), so the buffer must outlive the result. Writers append whole
 * messages to a packet builder (fixed memory or a growable heap buffer) whose failure flag is
 * sticky, so a sequence of writes is checked once at the end. All integers are big-endian.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PKT_WUR __attribute__((warn_unused_result))

enum pkt_status { PKT_OK = 0, PKT_INCOMPLETE = 1, PKT_ERROR = 2 };

#define PKT_STARTUP_MAX 10000 /* max startup packet length, as PostgreSQL */
#define PKT_PROTO_V3    0x00030000u
#define PKT_CODE_CANCEL 80877102u
#define PKT_CODE_SSL    80877103u
#define PKT_CODE_GSSENC 80877104u

/* Length-field limits PostgreSQL 15 applies to frontend messages (see pkt_type_max_len). */
#define PKT_SMALL_MAX 10000u      /* Sync, Close, Describe, Execute, Flush, ... */
#define PKT_LARGE_MAX 0x3ffffffeu /* Query, Parse, Bind, CopyData, FunctionCall */
#define PKT_AUTH_MAX  65535u      /* 'p' messages (PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH) */
/* libpq treats a backend message longer than this as corrupt unless its type may be long. */
#define PKT_BACKEND_SHORT_MAX 30000u

/* Authentication request codes ('R' messages). */
#define PKT_AUTH_OK            0u
#define PKT_AUTH_KERBEROS_V5   2u
#define PKT_AUTH_CLEARTEXT     3u
#define PKT_AUTH_MD5           5u
#define PKT_AUTH_SCM_CREDS     6u
#define PKT_AUTH_GSS           7u
#define PKT_AUTH_GSS_CONTINUE  8u
#define PKT_AUTH_SSPI          9u
#define PKT_AUTH_SASL          10u
#define PKT_AUTH_SASL_CONTINUE 11u
#define PKT_AUTH_SASL_FINAL    12u

/* ---- readers: headers ---- */

/* Typed message header. len = value of the length field (>= 4). */
struct pkt_hdr {
    uint8_t type;
    uint32_t len;
};

/* Reads a typed header (type byte + int32 length) from p[0..n). Returns PKT_INCOMPLETE if
   n < 5, PKT_ERROR if the length field is < 4 or > max_len, else PKT_OK with *h filled. The
   body need not be present: the message occupies 1 + h->len bytes. */
enum pkt_status pkt_read_hdr(const uint8_t *p, size_t n, uint32_t max_len,
                             struct pkt_hdr *h) PKT_WUR;

/* Reads a startup-phase header (int32 length + int32 code) from p[0..n). The length is checked
   as soon as its 4 bytes are present: PKT_ERROR if it is < 8 or > PKT_STARTUP_MAX, even when
   n < 8. Otherwise PKT_INCOMPLETE if n < 8, else PKT_OK with *len and *code set. */
enum pkt_status pkt_read_startup_hdr(const uint8_t *p, size_t n, uint32_t *len,
                                     uint32_t *code) PKT_WUR;

/* ---- readers: the startup-phase packet ---- */

#define PKT_MAX_PARAMS 64

struct pkt_param {
    const char *name;
    const char *value;
}; /* point into the packet */

struct pkt_startup {
    uint32_t code;                   /* protocol version (major<<16|minor) or one of PKT_CODE_* */
    uint32_t cancel_pid, cancel_key; /* CancelRequest only */
    const char *user, *database, *options, *application_name, *replication; /* NULL if absent */
    int nparams;
    struct pkt_param params[PKT_MAX_PARAMS]; /* every name/value pair, in order, incl. above */
    int nunknown_pq;
    const char *unknown_pq[PKT_MAX_PARAMS]; /* names starting with "_pq_." */
};

/* Parses a whole startup-phase packet p[0..len), length field included (len as returned by
   pkt_read_startup_hdr; the length field must equal len). Strings are pointed to, not copied:
   p must outlive *out. *out is zeroed first, then filled; out->code is set whenever the header
   was readable, even on PKT_ERROR, so the caller can tell an unsupported protocol version
   (major != 3, PKT_ERROR) from a malformed packet.
   CancelRequest (length 16): cancel_pid/cancel_key. SSLRequest/GSSENCRequest (length 8).
   StartupMessage v3.x (any minor): name/value pairs ending with an empty name; a later
   duplicate overrides an earlier one for the named fields; database defaults to user when
   absent or empty (as PostgreSQL). PKT_ERROR on: wrong length for the code, a string without
   its NUL, a name without value, bytes after the terminator, a missing terminator, no or empty
   "user", more than PKT_MAX_PARAMS pairs, major version other than 3. Never PKT_INCOMPLETE. */
enum pkt_status pkt_parse_startup(const uint8_t *p, size_t len, struct pkt_startup *out) PKT_WUR;

/* ---- readers: message bodies ----
   body = the bytes after the 5-byte header, blen = h.len - 4. Every parser checks that the body
   is consumed exactly (strings NUL-terminated inside it, no trailing bytes) and returns PKT_OK
   or PKT_ERROR (never PKT_INCOMPLETE). Returned strings and data point into body. On PKT_ERROR
   the outputs are unspecified. */

/* ErrorResponse 'E' / NoticeResponse 'N' fields; absent fields are NULL. */
struct pkt_error_fields {
    const char *severity;    /* 'S' (localized) */
    const char *severity_nl; /* 'V' (never localized) */
    const char *code;        /* 'C' SQLSTATE */
    const char *message;     /* 'M' */
    const char *detail;      /* 'D' */
    const char *hint;        /* 'H' */
};

/* Parses (field type byte, string)* terminated by a 0 byte. Unknown field types are skipped;
   no field is mandatory. */
enum pkt_status pkt_parse_error_fields(const uint8_t *body, size_t blen,
                                       struct pkt_error_fields *f) PKT_WUR;

/* ParameterStatus 'S' (backend): name, value. */
enum pkt_status pkt_parse_param_status(const uint8_t *body, size_t blen, const char **name,
                                       const char **value) PKT_WUR;

/* BackendKeyData 'K': exactly 8 bytes. */
enum pkt_status pkt_parse_backend_key(const uint8_t *body, size_t blen, uint32_t *pid,
                                      uint32_t *key) PKT_WUR;

/* ReadyForQuery 'Z': one byte, 'I', 'T' or 'E'. */
enum pkt_status pkt_parse_ready(const uint8_t *body, size_t blen, char *status) PKT_WUR;

/* Authentication* 'R': int32 code, then code-specific data (*data = body + 4, *dlen = blen - 4).
   Known codes are length-checked: OK, Kerberos, cleartext, SCM, GSS, SSPI take no data; MD5
   takes a 4-byte salt; SASL takes a valid mechanism list (pkt_parse_sasl_mechs); GSS/SASL
   continue and SASL final take any data. Unknown codes are PKT_ERROR. */
enum pkt_status pkt_parse_auth(const uint8_t *body, size_t blen, uint32_t *code,
                               const uint8_t **data, size_t *dlen) PKT_WUR;

/* The mechanism list of AuthenticationSASL (the data after the code): NUL-terminated names
   ended by an empty name. Fills mechs[0..*n) (pointers into data). PKT_ERROR if the list is
   malformed, empty, or has more than max names. */
enum pkt_status pkt_parse_sasl_mechs(const uint8_t *data, size_t dlen, const char **mechs, int max,
                                     int *n) PKT_WUR;

/* SASLInitialResponse 'p': mechanism name, int32 length (-1 = no data), data. *dlen = -1 and
 *data = NULL when there is no data. */
enum pkt_status pkt_parse_sasl_initial(const uint8_t *body, size_t blen, const char **mech,
                                       const uint8_t **data, int32_t *dlen) PKT_WUR;

/* PasswordMessage 'p': one NUL-terminated string. */
enum pkt_status pkt_parse_password(const uint8_t *body, size_t blen, const char **pw) PKT_WUR;

/* Query 'Q': one NUL-terminated string. */
enum pkt_status pkt_parse_query(const uint8_t *body, size_t blen, const char **sql) PKT_WUR;

/* Parse 'P': statement name, query, int16 parameter count, that many int32 type OIDs. */
enum pkt_status pkt_parse_parse(const uint8_t *body, size_t blen, const char **stmt,
                                const char **sql, uint16_t *nparams) PKT_WUR;

/* Bind 'B': validates the whole layout (portal, statement, format codes, parameter values with
   int32 lengths, -1 = NULL, result format codes) and returns the two names. The number of
   parameter format codes must be 0, 1 or the number of parameters (as PostgreSQL). */
enum pkt_status pkt_parse_bind_names(const uint8_t *body, size_t blen, const char **portal,
                                     const char **stmt) PKT_WUR;

/* Close 'C' / Describe 'D' (frontend): kind 'S' (statement) or 'P' (portal), then a name. */
enum pkt_status pkt_parse_close_describe(const uint8_t *body, size_t blen, char *kind,
                                         const char **name) PKT_WUR;

/* Execute 'E' (frontend): portal name, int32 row limit (0 = no limit). */
enum pkt_status pkt_parse_execute(const uint8_t *body, size_t blen, const char **portal,
                                  uint32_t *max_rows) PKT_WUR;

/* CommandComplete 'C' (backend): one NUL-terminated tag. */
enum pkt_status pkt_parse_command_complete(const uint8_t *body, size_t blen,
                                           const char **tag) PKT_WUR;

/* NegotiateProtocolVersion 'v': int32 newest minor, int32 count, that many option names.
   Fills names[0..*n) up to max; PKT_ERROR when count > max or the layout is wrong. */
enum pkt_status pkt_parse_negotiate_version(const uint8_t *body, size_t blen,
                                            uint32_t *newest_minor, const char **names, int max,
                                            int *n) PKT_WUR;

/* ---- message type table ---- */

/* True if type is a message type of protocol 3.0 sent in that direction. */
bool pkt_type_valid(uint8_t type, bool from_backend);

/* A static name for logs ("Query", "ReadyForQuery", ...); "unknown" for invalid types. */
const char *pkt_type_name(uint8_t type, bool from_backend);

/* Largest length-field value accepted for a message of this type in that direction (for
   pkt_read_hdr's max_len): PostgreSQL 15's own limits for frontend messages; for backend
   messages INT32_MAX for the types that may be long (RowDescription, DataRow, CopyData,
   FunctionCallResponse, Error/Notice, Notification, ParameterDescription: a relay streams
   them) and PKT_BACKEND_SHORT_MAX for the others; 0 for unknown types. */
uint32_t pkt_type_max_len(uint8_t type, bool from_backend);

/* ---- builder ---- */

/* buf[0..len) holds finished and in-progress messages; msg_start is the offset of the length
   field of the message begun last. failed is sticky: once set (out of space, allocation
   failure, NULL string, oversize message) every put is a no-op until pkt_builder_reset. */
struct pkt_builder {
    uint8_t *buf;
    size_t cap, len, msg_start;
    bool failed, dynamic;
};

/* Uses caller memory mem[0..cap) (mem may be NULL when cap is 0); never writes past cap. */
void pkt_builder_init(struct pkt_builder *b, uint8_t *mem, size_t cap);

/* Uses a heap buffer of initial bytes (a default if 0) that grows by realloc up to 2 GiB.
   An allocation failure sets failed. Release with pkt_builder_free. */
void pkt_builder_init_dyn(struct pkt_builder *b, size_t initial);

/* Frees the heap buffer of a dynamic builder (no-op for fixed memory); leaves it empty. */
void pkt_builder_free(struct pkt_builder *b);

/* Empties the builder (len = 0, failed = false), keeping its memory. */
void pkt_builder_reset(struct pkt_builder *b);

/* Starts a message: type byte (none when type is 0: a startup-phase packet), then a length
   placeholder that pkt_end patches. */
void pkt_begin(struct pkt_builder *b, uint8_t type);
void pkt_put_u8(struct pkt_builder *b, uint8_t v);
void pkt_put_u16(struct pkt_builder *b, uint16_t v);
void pkt_put_u32(struct pkt_builder *b, uint32_t v);
void pkt_put_bytes(struct pkt_builder *b, const void *data, size_t n); /* data may be NULL if n=0 */
void pkt_put_str(struct pkt_builder *b, const char *s); /* with NUL; NULL s sets failed */
/* Patches the length field of the message begun last (sets failed if it exceeds INT32_MAX). */
void pkt_end(struct pkt_builder *b);

/* ---- whole-message writers (each is begin..end; check b->failed afterwards) ---- */

/* ErrorResponse: 'S' and 'V' severity, 'C' sqlstate, 'M' message, then 'D'/'H' if not NULL. */
void pkt_write_error(struct pkt_builder *b, const char *severity, const char *sqlstate,
                     const char *message, const char *detail, const char *hint);
/* NoticeResponse: same fields as pkt_write_error. */
void pkt_write_notice(struct pkt_builder *b, const char *severity, const char *sqlstate,
                      const char *message, const char *detail, const char *hint);
void pkt_write_auth(struct pkt_builder *b, uint32_t code, const void *data, size_t len);
/* AuthenticationSASL with mechs[0..n). */
void pkt_write_auth_sasl(struct pkt_builder *b, const char *const *mechs, int n);
void pkt_write_param_status(struct pkt_builder *b, const char *name, const char *value);
void pkt_write_backend_key(struct pkt_builder *b, uint32_t pid, uint32_t key);
void pkt_write_ready(struct pkt_builder *b, char status);
/* RowDescription of ncols text columns (type 25, typlen -1, typmod -1, text format). */
void pkt_write_row_desc(struct pkt_builder *b, int ncols, const char *const *names);
/* DataRow of ncols text values; a NULL value is SQL NULL. */
void pkt_write_data_row(struct pkt_builder *b, int ncols, const char *const *values);
void pkt_write_command_complete(struct pkt_builder *b, const char *tag);
void pkt_write_empty_query(struct pkt_builder *b);
void pkt_write_negotiate_version(struct pkt_builder *b, uint32_t newest_minor,
                                 const char *const *unsupported, int n);
/* A message with an empty body (Sync 'S', Flush 'H', Terminate 'X', ParseComplete '1', ...). */
void pkt_write_empty(struct pkt_builder *b, uint8_t type);

/* Frontend side. */
/* StartupMessage, protocol 3.0, with params[0..n) and the final terminator. */
void pkt_write_startup(struct pkt_builder *b, const struct pkt_param *params, int n);
void pkt_write_cancel_request(struct pkt_builder *b, uint32_t pid, uint32_t key);
void pkt_write_ssl_request(struct pkt_builder *b);
void pkt_write_gssenc_request(struct pkt_builder *b);
void pkt_write_password(struct pkt_builder *b, const char *s);
/* SASLInitialResponse; data NULL writes length -1 (no initial response). */
void pkt_write_sasl_initial(struct pkt_builder *b, const char *mech, const void *data, size_t len);
void pkt_write_sasl_response(struct pkt_builder *b, const void *data, size_t len);
void pkt_write_query(struct pkt_builder *b, const char *sql);
void pkt_write_terminate(struct pkt_builder *b);
void pkt_write_sync(struct pkt_builder *b);
void pkt_write_flush(struct pkt_builder *b);
/* Parse with nparams type OIDs (oids may be NULL when nparams is 0). */
void pkt_write_parse(struct pkt_builder *b, const char *stmt, const char *sql, uint16_t nparams,
                     const uint32_t *oids);
/* Bind with nparams text values (NULL = SQL NULL), all parameters and results in text format. */
void pkt_write_bind(struct pkt_builder *b, const char *portal, const char *stmt, uint16_t nparams,
                    const char *const *values);
void pkt_write_execute(struct pkt_builder *b, const char *portal, uint32_t max_rows);
/* Describe / Close: kind 'S' or 'P'. */
void pkt_write_describe(struct pkt_builder *b, char kind, const char *name);
void pkt_write_close(struct pkt_builder *b, char kind, const char *name);
