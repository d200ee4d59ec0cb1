/*
 * pkt: the pure PostgreSQL protocol 3.0 codec. Readers walk a bounded cursor over the caller's
 * bytes (every access is checked against the remaining length first) and hand back pointers
 * into those bytes; body parsers insist that a message is consumed exactly. Writers append to a
 * packet builder whose failure flag is sticky and whose length field is patched by pkt_end.
 * No sockets, no globals; the only allocation is the growable builder's buffer.
 */
#include "pgtide/pkt.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- bounded reader ---- */

struct rd {
    const uint8_t *p;
    size_t n, off;
};

static struct rd rd_make(const uint8_t *p, size_t n)
{
    struct rd r = {p, n, 0};
    return r;
}

static size_t rd_left(const struct rd *r)
{
    return r->n - r->off;
}

static bool rd_done(const struct rd *r)
{
    return r->off == r->n;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | p[3];
}

static bool rd_u8(struct rd *r, uint8_t *v)
{
    if (rd_left(r) < 1)
        return false;
    *v = r->p[r->off++];
    return true;
}

static bool rd_u16(struct rd *r, uint16_t *v)
{
    if (rd_left(r) < 2)
        return false;
    *v = (uint16_t) ((r->p[r->off] << 8) | r->p[r->off + 1]);
    r->off += 2;
    return true;
}

static bool rd_u32(struct rd *r, uint32_t *v)
{
    if (rd_left(r) < 4)
        return false;
    *v = be32(r->p + r->off);
    r->off += 4;
    return true;
}

static bool rd_skip(struct rd *r, size_t k)
{
    if (rd_left(r) < k)
        return false;
    r->off += k;
    return true;
}

/* A NUL-terminated string lying wholly inside the remaining bytes. */
static bool rd_str(struct rd *r, const char **s)
{
    const uint8_t *start = r->p + r->off;
    const uint8_t *nul = rd_left(r) ? memchr(start, 0, rd_left(r)) : NULL;

    if (nul == NULL)
        return false;
    *s = (const char *) start;
    r->off += (size_t) (nul - start) + 1;
    return true;
}

/* ---- headers ---- */

enum pkt_status pkt_read_hdr(const uint8_t *p, size_t n, uint32_t max_len, struct pkt_hdr *h)
{
    uint32_t len;

    if (n < 5)
        return PKT_INCOMPLETE;
    len = be32(p + 1);
    if (len < 4 || len > max_len)
        return PKT_ERROR;
    h->type = p[0];
    h->len = len;
    return PKT_OK;
}

enum pkt_status pkt_read_startup_hdr(const uint8_t *p, size_t n, uint32_t *len, uint32_t *code)
{
    uint32_t l;

    if (n < 4)
        return PKT_INCOMPLETE;
    l = be32(p);
    if (l < 8 || l > PKT_STARTUP_MAX)
        return PKT_ERROR;
    if (n < 8)
        return PKT_INCOMPLETE;
    *len = l;
    *code = be32(p + 4);
    return PKT_OK;
}

/* ---- startup packet ---- */

static void startup_classify(struct pkt_startup *out, const char *name, const char *value)
{
    if (strcmp(name, "user") == 0)
        out->user = value;
    else if (strcmp(name, "database") == 0)
        out->database = value;
    else if (strcmp(name, "options") == 0)
        out->options = value;
    else if (strcmp(name, "application_name") == 0)
        out->application_name = value;
    else if (strcmp(name, "replication") == 0)
        out->replication = value;
    else if (strncmp(name, "_pq_.", 5) == 0)
        out->unknown_pq[out->nunknown_pq++] = name;
}

static enum pkt_status startup_params(const uint8_t *body, size_t blen, struct pkt_startup *out)
{
    struct rd r = rd_make(body, blen);

    for (;;) {
        const char *name, *value;

        if (!rd_str(&r, &name))
            return PKT_ERROR; /* missing terminator or unterminated name */
        if (name[0] == '\0')
            break;
        if (!rd_str(&r, &value))
            return PKT_ERROR; /* name without value */
        if (out->nparams == PKT_MAX_PARAMS)
            return PKT_ERROR;
        out->params[out->nparams].name = name;
        out->params[out->nparams].value = value;
        out->nparams++;
        startup_classify(out, name, value);
    }
    if (!rd_done(&r))
        return PKT_ERROR; /* bytes after the terminator */
    if (out->user == NULL || out->user[0] == '\0')
        return PKT_ERROR;
    if (out->database == NULL || out->database[0] == '\0')
        out->database = out->user;
    return PKT_OK;
}

enum pkt_status pkt_parse_startup(const uint8_t *p, size_t len, struct pkt_startup *out)
{
    uint32_t hlen, code;

    memset(out, 0, sizeof *out);
    if (pkt_read_startup_hdr(p, len, &hlen, &code) != PKT_OK)
        return PKT_ERROR;
    out->code = code;
    if (hlen != len)
        return PKT_ERROR;
    switch (code) {
    case PKT_CODE_CANCEL:
        if (len != 16)
            return PKT_ERROR;
        out->cancel_pid = be32(p + 8);
        out->cancel_key = be32(p + 12);
        return PKT_OK;
    case PKT_CODE_SSL:
    case PKT_CODE_GSSENC:
        return len == 8 ? PKT_OK : PKT_ERROR;
    default:
        break;
    }
    if ((code >> 16) != 3)
        return PKT_ERROR;
    return startup_params(p + 8, len - 8, out);
}

/* ---- bodies ---- */

static enum pkt_status done_status(const struct rd *r)
{
    return rd_done(r) ? PKT_OK : PKT_ERROR;
}

/* Bodies made of one NUL-terminated string and nothing else. */
static enum pkt_status one_string(const uint8_t *body, size_t blen, const char **s)
{
    struct rd r = rd_make(body, blen);

    if (!rd_str(&r, s))
        return PKT_ERROR;
    return done_status(&r);
}

enum pkt_status pkt_parse_error_fields(const uint8_t *body, size_t blen, struct pkt_error_fields *f)
{
    struct rd r = rd_make(body, blen);

    memset(f, 0, sizeof *f);
    for (;;) {
        uint8_t t;
        const char *v;

        if (!rd_u8(&r, &t))
            return PKT_ERROR;
        if (t == 0)
            break;
        if (!rd_str(&r, &v))
            return PKT_ERROR;
        switch (t) {
        case 'S':
            f->severity = v;
            break;
        case 'V':
            f->severity_nl = v;
            break;
        case 'C':
            f->code = v;
            break;
        case 'M':
            f->message = v;
            break;
        case 'D':
            f->detail = v;
            break;
        case 'H':
            f->hint = v;
            break;
        default:
            break; /* other fields (position, where, schema, ...) are skipped */
        }
    }
    return done_status(&r);
}

enum pkt_status pkt_parse_param_status(const uint8_t *body, size_t blen, const char **name,
                                       const char **value)
{
    struct rd r = rd_make(body, blen);

    if (!rd_str(&r, name) || !rd_str(&r, value))
        return PKT_ERROR;
    return done_status(&r);
}

enum pkt_status pkt_parse_backend_key(const uint8_t *body, size_t blen, uint32_t *pid,
                                      uint32_t *key)
{
    if (blen != 8)
        return PKT_ERROR;
    *pid = be32(body);
    *key = be32(body + 4);
    return PKT_OK;
}

enum pkt_status pkt_parse_ready(const uint8_t *body, size_t blen, char *status)
{
    if (blen != 1)
        return PKT_ERROR;
    if (body[0] != 'I' && body[0] != 'T' && body[0] != 'E')
        return PKT_ERROR;
    *status = (char) body[0];
    return PKT_OK;
}

/* A SASL mechanism list; names are stored in mechs when it is not NULL. */
static enum pkt_status sasl_list(const uint8_t *data, size_t dlen, const char **mechs, int max,
                                 int *n)
{
    struct rd r = rd_make(data, dlen);

    *n = 0;
    for (;;) {
        const char *m;

        if (!rd_str(&r, &m))
            return PKT_ERROR;
        if (m[0] == '\0')
            break;
        if (*n >= max)
            return PKT_ERROR;
        if (mechs)
            mechs[*n] = m;
        (*n)++;
    }
    if (*n == 0)
        return PKT_ERROR;
    return done_status(&r);
}

enum pkt_status pkt_parse_auth(const uint8_t *body, size_t blen, uint32_t *code,
                               const uint8_t **data, size_t *dlen)
{
    int n;

    if (blen < 4)
        return PKT_ERROR;
    *code = be32(body);
    *data = body + 4;
    *dlen = blen - 4;
    switch (*code) {
    case PKT_AUTH_OK:
    case PKT_AUTH_KERBEROS_V5:
    case PKT_AUTH_CLEARTEXT:
    case PKT_AUTH_SCM_CREDS:
    case PKT_AUTH_GSS:
    case PKT_AUTH_SSPI:
        return *dlen == 0 ? PKT_OK : PKT_ERROR;
    case PKT_AUTH_MD5:
        return *dlen == 4 ? PKT_OK : PKT_ERROR;
    case PKT_AUTH_SASL:
        return sasl_list(*data, *dlen, NULL, INT_MAX, &n);
    case PKT_AUTH_GSS_CONTINUE:
    case PKT_AUTH_SASL_CONTINUE:
    case PKT_AUTH_SASL_FINAL:
        return PKT_OK;
    default:
        return PKT_ERROR;
    }
}

enum pkt_status pkt_parse_sasl_mechs(const uint8_t *data, size_t dlen, const char **mechs, int max,
                                     int *n)
{
    return sasl_list(data, dlen, mechs, max, n);
}

enum pkt_status pkt_parse_sasl_initial(const uint8_t *body, size_t blen, const char **mech,
                                       const uint8_t **data, int32_t *dlen)
{
    struct rd r = rd_make(body, blen);
    uint32_t l;

    if (!rd_str(&r, mech) || !rd_u32(&r, &l))
        return PKT_ERROR;
    if (l == UINT32_MAX) {
        *data = NULL;
        *dlen = -1;
        return done_status(&r);
    }
    if (l > INT32_MAX || l != rd_left(&r))
        return PKT_ERROR;
    *data = r.p + r.off;
    *dlen = (int32_t) l;
    return PKT_OK;
}

enum pkt_status pkt_parse_password(const uint8_t *body, size_t blen, const char **pw)
{
    return one_string(body, blen, pw);
}

enum pkt_status pkt_parse_query(const uint8_t *body, size_t blen, const char **sql)
{
    return one_string(body, blen, sql);
}

enum pkt_status pkt_parse_command_complete(const uint8_t *body, size_t blen, const char **tag)
{
    return one_string(body, blen, tag);
}

enum pkt_status pkt_parse_parse(const uint8_t *body, size_t blen, const char **stmt,
                                const char **sql, uint16_t *nparams)
{
    struct rd r = rd_make(body, blen);

    if (!rd_str(&r, stmt) || !rd_str(&r, sql) || !rd_u16(&r, nparams))
        return PKT_ERROR;
    if (!rd_skip(&r, (size_t) *nparams * 4))
        return PKT_ERROR;
    return done_status(&r);
}

/* A count of int16 format codes followed by the codes. */
static bool bind_formats(struct rd *r, uint16_t *count)
{
    return rd_u16(r, count) && rd_skip(r, (size_t) *count * 2);
}

enum pkt_status pkt_parse_bind_names(const uint8_t *body, size_t blen, const char **portal,
                                     const char **stmt)
{
    struct rd r = rd_make(body, blen);
    uint16_t nfmt, nparams, nres;

    if (!rd_str(&r, portal) || !rd_str(&r, stmt) || !bind_formats(&r, &nfmt))
        return PKT_ERROR;
    if (!rd_u16(&r, &nparams))
        return PKT_ERROR;
    if (nfmt > 1 && nfmt != nparams)
        return PKT_ERROR;
    for (uint16_t i = 0; i < nparams; i++) {
        uint32_t l;

        if (!rd_u32(&r, &l))
            return PKT_ERROR;
        if (l == UINT32_MAX)
            continue; /* NULL */
        if (l > INT32_MAX || !rd_skip(&r, l))
            return PKT_ERROR;
    }
    if (!bind_formats(&r, &nres))
        return PKT_ERROR;
    return done_status(&r);
}

enum pkt_status pkt_parse_close_describe(const uint8_t *body, size_t blen, char *kind,
                                         const char **name)
{
    struct rd r = rd_make(body, blen);
    uint8_t k;

    if (!rd_u8(&r, &k) || (k != 'S' && k != 'P'))
        return PKT_ERROR;
    if (!rd_str(&r, name))
        return PKT_ERROR;
    *kind = (char) k;
    return done_status(&r);
}

enum pkt_status pkt_parse_execute(const uint8_t *body, size_t blen, const char **portal,
                                  uint32_t *max_rows)
{
    struct rd r = rd_make(body, blen);

    if (!rd_str(&r, portal) || !rd_u32(&r, max_rows))
        return PKT_ERROR;
    return done_status(&r);
}

enum pkt_status pkt_parse_negotiate_version(const uint8_t *body, size_t blen,
                                            uint32_t *newest_minor, const char **names, int max,
                                            int *n)
{
    struct rd r = rd_make(body, blen);
    uint32_t count;

    *n = 0;
    if (!rd_u32(&r, newest_minor) || !rd_u32(&r, &count))
        return PKT_ERROR;
    if (max < 0 || count > (uint32_t) max)
        return PKT_ERROR;
    for (uint32_t i = 0; i < count; i++) {
        if (!rd_str(&r, &names[i]))
            return PKT_ERROR;
    }
    *n = (int) count;
    return done_status(&r);
}

/* ---- type table ---- */

struct type_info {
    uint8_t type;
    const char *name;
    uint32_t max_len;
};

static const struct type_info frontend_types[] = {
    {'B', "Bind", PKT_LARGE_MAX},           {'C', "Close", PKT_SMALL_MAX},
    {'d', "CopyData", PKT_LARGE_MAX},       {'c', "CopyDone", PKT_SMALL_MAX},
    {'f', "CopyFail", PKT_SMALL_MAX},       {'D', "Describe", PKT_SMALL_MAX},
    {'E', "Execute", PKT_SMALL_MAX},        {'H', "Flush", PKT_SMALL_MAX},
    {'F', "FunctionCall", PKT_LARGE_MAX},   {'P', "Parse", PKT_LARGE_MAX},
    {'p', "PasswordMessage", PKT_AUTH_MAX}, {'Q', "Query", PKT_LARGE_MAX},
    {'S', "Sync", PKT_SMALL_MAX},           {'X', "Terminate", PKT_SMALL_MAX},
};

#define BE_LONG  ((uint32_t) INT32_MAX)
#define BE_SHORT PKT_BACKEND_SHORT_MAX

static const struct type_info backend_types[] = {
    {'R', "Authentication", BE_SHORT},
    {'K', "BackendKeyData", BE_SHORT},
    {'2', "BindComplete", BE_SHORT},
    {'3', "CloseComplete", BE_SHORT},
    {'C', "CommandComplete", BE_SHORT},
    {'d', "CopyData", BE_LONG},
    {'c', "CopyDone", BE_SHORT},
    {'G', "CopyInResponse", BE_SHORT},
    {'H', "CopyOutResponse", BE_SHORT},
    {'W', "CopyBothResponse", BE_SHORT},
    {'D', "DataRow", BE_LONG},
    {'I', "EmptyQueryResponse", BE_SHORT},
    {'E', "ErrorResponse", BE_LONG},
    {'V', "FunctionCallResponse", BE_LONG},
    {'v', "NegotiateProtocolVersion", BE_SHORT},
    {'n', "NoData", BE_SHORT},
    {'N', "NoticeResponse", BE_LONG},
    {'A', "NotificationResponse", BE_LONG},
    {'t', "ParameterDescription", BE_LONG},
    {'S', "ParameterStatus", BE_SHORT},
    {'1', "ParseComplete", BE_SHORT},
    {'s', "PortalSuspended", BE_SHORT},
    {'Z', "ReadyForQuery", BE_SHORT},
    {'T', "RowDescription", BE_LONG},
};

static const struct type_info *type_lookup(uint8_t type, bool from_backend)
{
    const struct type_info *t = from_backend ? backend_types : frontend_types;
    size_t n = from_backend ? sizeof backend_types / sizeof backend_types[0]
                            : sizeof frontend_types / sizeof frontend_types[0];

    for (size_t i = 0; i < n; i++) {
        if (t[i].type == type)
            return &t[i];
    }
    return NULL;
}

bool pkt_type_valid(uint8_t type, bool from_backend)
{
    return type_lookup(type, from_backend) != NULL;
}

const char *pkt_type_name(uint8_t type, bool from_backend)
{
    const struct type_info *t = type_lookup(type, from_backend);

    return t ? t->name : "unknown";
}

uint32_t pkt_type_max_len(uint8_t type, bool from_backend)
{
    const struct type_info *t = type_lookup(type, from_backend);

    return t ? t->max_len : 0;
}

/* ---- builder ---- */

#define BUILDER_MAX     ((size_t) 1 << 31)
#define BUILDER_DEFAULT 256

void pkt_builder_init(struct pkt_builder *b, uint8_t *mem, size_t cap)
{
    b->buf = mem;
    b->cap = mem ? cap : 0;
    b->len = 0;
    b->msg_start = 0;
    b->failed = false;
    b->dynamic = false;
}

void pkt_builder_init_dyn(struct pkt_builder *b, size_t initial)
{
    if (initial == 0)
        initial = BUILDER_DEFAULT;
    if (initial > BUILDER_MAX)
        initial = BUILDER_MAX;
    pkt_builder_init(b, NULL, 0);
    b->dynamic = true;
    b->buf = malloc(initial);
    if (b->buf == NULL)
        b->failed = true;
    else
        b->cap = initial;
}

void pkt_builder_free(struct pkt_builder *b)
{
    if (b->dynamic)
        free(b->buf);
    b->buf = NULL;
    b->cap = 0;
    b->len = 0;
    b->msg_start = 0;
}

void pkt_builder_reset(struct pkt_builder *b)
{
    b->len = 0;
    b->msg_start = 0;
    b->failed = false;
}

/* Makes room for n more bytes; on failure marks the builder failed and writes nothing. */
static bool reserve(struct pkt_builder *b, size_t n)
{
    size_t need, ncap;
    uint8_t *nbuf;

    if (b->failed)
        return false;
    if (n <= b->cap - b->len)
        return true;
    if (!b->dynamic || n > BUILDER_MAX - b->len) {
        b->failed = true;
        return false;
    }
    need = b->len + n;
    ncap = b->cap ? b->cap : BUILDER_DEFAULT;
    while (ncap < need)
        ncap = ncap > BUILDER_MAX / 2 ? BUILDER_MAX : ncap * 2;
    nbuf = realloc(b->buf, ncap);
    if (nbuf == NULL) {
        b->failed = true;
        return false;
    }
    b->buf = nbuf;
    b->cap = ncap;
    return true;
}

static void put_be32_at(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;
}

void pkt_put_u8(struct pkt_builder *b, uint8_t v)
{
    if (reserve(b, 1))
        b->buf[b->len++] = v;
}

void pkt_put_u16(struct pkt_builder *b, uint16_t v)
{
    if (!reserve(b, 2))
        return;
    b->buf[b->len] = (uint8_t) (v >> 8);
    b->buf[b->len + 1] = (uint8_t) v;
    b->len += 2;
}

void pkt_put_u32(struct pkt_builder *b, uint32_t v)
{
    if (!reserve(b, 4))
        return;
    put_be32_at(b->buf + b->len, v);
    b->len += 4;
}

void pkt_put_bytes(struct pkt_builder *b, const void *data, size_t n)
{
    if (n == 0)
        return;
    if (data == NULL) {
        b->failed = true;
        return;
    }
    if (!reserve(b, n))
        return;
    memcpy(b->buf + b->len, data, n);
    b->len += n;
}

void pkt_put_str(struct pkt_builder *b, const char *s)
{
    if (s == NULL) {
        b->failed = true;
        return;
    }
    pkt_put_bytes(b, s, strlen(s) + 1);
}

void pkt_begin(struct pkt_builder *b, uint8_t type)
{
    if (type != 0)
        pkt_put_u8(b, type);
    if (b->failed)
        return;
    b->msg_start = b->len;
    pkt_put_u32(b, 0);
}

void pkt_end(struct pkt_builder *b)
{
    size_t l;

    if (b->failed)
        return;
    if (b->msg_start > b->len || b->len - b->msg_start < 4) {
        b->failed = true; /* no message begun since the last reset */
        return;
    }
    l = b->len - b->msg_start;
    if (l > INT32_MAX) {
        b->failed = true;
        return;
    }
    put_be32_at(b->buf + b->msg_start, (uint32_t) l);
}

/* ---- whole-message writers: backend side ---- */

static void write_fields(struct pkt_builder *b, uint8_t type, const char *severity,
                         const char *sqlstate, const char *message, const char *detail,
                         const char *hint)
{
    pkt_begin(b, type);
    pkt_put_u8(b, 'S');
    pkt_put_str(b, severity);
    pkt_put_u8(b, 'V');
    pkt_put_str(b, severity);
    pkt_put_u8(b, 'C');
    pkt_put_str(b, sqlstate);
    pkt_put_u8(b, 'M');
    pkt_put_str(b, message);
    if (detail) {
        pkt_put_u8(b, 'D');
        pkt_put_str(b, detail);
    }
    if (hint) {
        pkt_put_u8(b, 'H');
        pkt_put_str(b, hint);
    }
    pkt_put_u8(b, 0);
    pkt_end(b);
}

void pkt_write_error(struct pkt_builder *b, const char *severity, const char *sqlstate,
                     const char *message, const char *detail, const char *hint)
{
    write_fields(b, 'E', severity, sqlstate, message, detail, hint);
}

void pkt_write_notice(struct pkt_builder *b, const char *severity, const char *sqlstate,
                      const char *message, const char *detail, const char *hint)
{
    write_fields(b, 'N', severity, sqlstate, message, detail, hint);
}

void pkt_write_auth(struct pkt_builder *b, uint32_t code, const void *data, size_t len)
{
    pkt_begin(b, 'R');
    pkt_put_u32(b, code);
    pkt_put_bytes(b, data, len);
    pkt_end(b);
}

void pkt_write_auth_sasl(struct pkt_builder *b, const char *const *mechs, int n)
{
    pkt_begin(b, 'R');
    pkt_put_u32(b, PKT_AUTH_SASL);
    for (int i = 0; i < n; i++)
        pkt_put_str(b, mechs[i]);
    pkt_put_u8(b, 0);
    pkt_end(b);
}

void pkt_write_param_status(struct pkt_builder *b, const char *name, const char *value)
{
    pkt_begin(b, 'S');
    pkt_put_str(b, name);
    pkt_put_str(b, value);
    pkt_end(b);
}

void pkt_write_backend_key(struct pkt_builder *b, uint32_t pid, uint32_t key)
{
    pkt_begin(b, 'K');
    pkt_put_u32(b, pid);
    pkt_put_u32(b, key);
    pkt_end(b);
}

void pkt_write_ready(struct pkt_builder *b, char status)
{
    pkt_begin(b, 'Z');
    pkt_put_u8(b, (uint8_t) status);
    pkt_end(b);
}

/* Column and parameter counts travel as int16. */
static bool count_ok(struct pkt_builder *b, int n)
{
    if (n < 0 || n > UINT16_MAX) {
        b->failed = true;
        return false;
    }
    return true;
}

void pkt_write_row_desc(struct pkt_builder *b, int ncols, const char *const *names)
{
    if (!count_ok(b, ncols))
        return;
    pkt_begin(b, 'T');
    pkt_put_u16(b, (uint16_t) ncols);
    for (int i = 0; i < ncols; i++) {
        pkt_put_str(b, names[i]);
        pkt_put_u32(b, 0);          /* table oid */
        pkt_put_u16(b, 0);          /* column number */
        pkt_put_u32(b, 25);         /* type oid: text */
        pkt_put_u16(b, 0xffff);     /* typlen -1 */
        pkt_put_u32(b, UINT32_MAX); /* typmod -1 */
        pkt_put_u16(b, 0);          /* text format */
    }
    pkt_end(b);
}

/* An int32 length (-1 for NULL) followed by the bytes of a text value. */
static void put_value(struct pkt_builder *b, const char *v)
{
    size_t l;

    if (v == NULL) {
        pkt_put_u32(b, UINT32_MAX);
        return;
    }
    l = strlen(v);
    if (l > INT32_MAX) {
        b->failed = true;
        return;
    }
    pkt_put_u32(b, (uint32_t) l);
    pkt_put_bytes(b, v, l);
}

void pkt_write_data_row(struct pkt_builder *b, int ncols, const char *const *values)
{
    if (!count_ok(b, ncols))
        return;
    pkt_begin(b, 'D');
    pkt_put_u16(b, (uint16_t) ncols);
    for (int i = 0; i < ncols; i++)
        put_value(b, values[i]);
    pkt_end(b);
}

void pkt_write_command_complete(struct pkt_builder *b, const char *tag)
{
    pkt_begin(b, 'C');
    pkt_put_str(b, tag);
    pkt_end(b);
}

void pkt_write_empty(struct pkt_builder *b, uint8_t type)
{
    pkt_begin(b, type);
    pkt_end(b);
}

void pkt_write_empty_query(struct pkt_builder *b)
{
    pkt_write_empty(b, 'I');
}

void pkt_write_negotiate_version(struct pkt_builder *b, uint32_t newest_minor,
                                 const char *const *unsupported, int n)
{
    if (n < 0) {
        b->failed = true;
        return;
    }
    pkt_begin(b, 'v');
    pkt_put_u32(b, newest_minor);
    pkt_put_u32(b, (uint32_t) n);
    for (int i = 0; i < n; i++)
        pkt_put_str(b, unsupported[i]);
    pkt_end(b);
}

/* ---- whole-message writers: frontend side ---- */

void pkt_write_startup(struct pkt_builder *b, const struct pkt_param *params, int n)
{
    pkt_begin(b, 0);
    pkt_put_u32(b, PKT_PROTO_V3);
    for (int i = 0; i < n; i++) {
        pkt_put_str(b, params[i].name);
        pkt_put_str(b, params[i].value);
    }
    pkt_put_u8(b, 0);
    pkt_end(b);
}

void pkt_write_cancel_request(struct pkt_builder *b, uint32_t pid, uint32_t key)
{
    pkt_begin(b, 0);
    pkt_put_u32(b, PKT_CODE_CANCEL);
    pkt_put_u32(b, pid);
    pkt_put_u32(b, key);
    pkt_end(b);
}

void pkt_write_ssl_request(struct pkt_builder *b)
{
    pkt_begin(b, 0);
    pkt_put_u32(b, PKT_CODE_SSL);
    pkt_end(b);
}

void pkt_write_gssenc_request(struct pkt_builder *b)
{
    pkt_begin(b, 0);
    pkt_put_u32(b, PKT_CODE_GSSENC);
    pkt_end(b);
}

void pkt_write_password(struct pkt_builder *b, const char *s)
{
    pkt_begin(b, 'p');
    pkt_put_str(b, s);
    pkt_end(b);
}

void pkt_write_sasl_initial(struct pkt_builder *b, const char *mech, const void *data, size_t len)
{
    if (data != NULL && len > INT32_MAX) {
        b->failed = true;
        return;
    }
    pkt_begin(b, 'p');
    pkt_put_str(b, mech);
    pkt_put_u32(b, data ? (uint32_t) len : UINT32_MAX);
    if (data)
        pkt_put_bytes(b, data, len);
    pkt_end(b);
}

void pkt_write_sasl_response(struct pkt_builder *b, const void *data, size_t len)
{
    pkt_begin(b, 'p');
    pkt_put_bytes(b, data, len);
    pkt_end(b);
}

void pkt_write_query(struct pkt_builder *b, const char *sql)
{
    pkt_begin(b, 'Q');
    pkt_put_str(b, sql);
    pkt_end(b);
}

void pkt_write_terminate(struct pkt_builder *b)
{
    pkt_write_empty(b, 'X');
}

void pkt_write_sync(struct pkt_builder *b)
{
    pkt_write_empty(b, 'S');
}

void pkt_write_flush(struct pkt_builder *b)
{
    pkt_write_empty(b, 'H');
}

void pkt_write_parse(struct pkt_builder *b, const char *stmt, const char *sql, uint16_t nparams,
                     const uint32_t *oids)
{
    if (nparams > 0 && oids == NULL) {
        b->failed = true;
        return;
    }
    pkt_begin(b, 'P');
    pkt_put_str(b, stmt);
    pkt_put_str(b, sql);
    pkt_put_u16(b, nparams);
    for (uint16_t i = 0; i < nparams; i++)
        pkt_put_u32(b, oids[i]);
    pkt_end(b);
}

void pkt_write_bind(struct pkt_builder *b, const char *portal, const char *stmt, uint16_t nparams,
                    const char *const *values)
{
    if (nparams > 0 && values == NULL) {
        b->failed = true;
        return;
    }
    pkt_begin(b, 'B');
    pkt_put_str(b, portal);
    pkt_put_str(b, stmt);
    pkt_put_u16(b, 0); /* no parameter format codes: all text */
    pkt_put_u16(b, nparams);
    for (uint16_t i = 0; i < nparams; i++)
        put_value(b, values[i]);
    pkt_put_u16(b, 0); /* no result format codes: all text */
    pkt_end(b);
}

void pkt_write_execute(struct pkt_builder *b, const char *portal, uint32_t max_rows)
{
    pkt_begin(b, 'E');
    pkt_put_str(b, portal);
    pkt_put_u32(b, max_rows);
    pkt_end(b);
}

static void write_kind_name(struct pkt_builder *b, uint8_t type, char kind, const char *name)
{
    if (kind != 'S' && kind != 'P') {
        b->failed = true;
        return;
    }
    pkt_begin(b, type);
    pkt_put_u8(b, (uint8_t) kind);
    pkt_put_str(b, name);
    pkt_end(b);
}

void pkt_write_describe(struct pkt_builder *b, char kind, const char *name)
{
    write_kind_name(b, 'D', kind, name);
}

void pkt_write_close(struct pkt_builder *b, char kind, const char *name)
{
    write_kind_name(b, 'C', kind, name);
}
