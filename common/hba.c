/*
 * hba: parser and matcher for pgtide's pg_hba-like rule file. Each line is split into
 * whitespace-separated tokens (double quotes protect spaces, commas and keywords; "" is a literal
 * quote), database and user fields into comma lists, and addresses into a family, network bytes
 * and a prefix length. Matching walks the rules in file order and returns the first hit.
 */
#include "pgtide/hba.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS    8
#define MAX_FILE_SIZE (16u << 20)

enum conn_type { CT_LOCAL, CT_HOST, CT_HOSTSSL, CT_HOSTNOSSL };
enum item_kind { IT_NAME, IT_ALL, IT_SAMEUSER };

struct hba_item {
    enum item_kind kind;
    char *name;
};

struct hba_list {
    struct hba_item *items;
    int n;
};

struct hba_rule {
    int line;
    enum conn_type type;
    struct hba_list dbs, users;
    bool addr_all;
    int family; /* AF_INET or AF_INET6 */
    uint8_t net[16];
    int prefix;
    enum hba_method method;
};

struct hba {
    struct hba_rule *rules;
    int n, cap;
};

static const char *const method_names[] = {
    [HBA_REJECT] = "reject",       [HBA_TRUST] = "trust",       [HBA_MD5] = "md5",
    [HBA_SCRAM] = "scram-sha-256", [HBA_PASSWORD] = "password", [HBA_CERT] = "cert",
};

const char *hba_method_name(enum hba_method m)
{
    if ((unsigned) m < sizeof(method_names) / sizeof(method_names[0]))
        return method_names[m];
    return "unknown";
}

bool hba_method_parse(const char *name, enum hba_method *out)
{
    for (size_t i = 0; i < sizeof(method_names) / sizeof(method_names[0]); i++) {
        if (strcmp(name, method_names[i]) == 0) {
            *out = (enum hba_method) i;
            return true;
        }
    }
    if (strcmp(name, "plain") == 0) {
        *out = HBA_PASSWORD;
        return true;
    }
    return false;
}

static void list_free(struct hba_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->items[i].name);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void hba_free(struct hba *h)
{
    if (h == NULL)
        return;
    for (int i = 0; i < h->n; i++) {
        list_free(&h->rules[i].dbs);
        list_free(&h->rules[i].users);
    }
    free(h->rules);
    free(h);
}

int hba_count(const struct hba *h)
{
    return h != NULL ? h->n : 0;
}

/* Splits line (modified in place) into up to MAX_TOKENS tokens; stops at an unquoted '#'.
   Returns the token count, or -1 (*reason set). */
static int tokenize(char *line, char **tok, const char **reason)
{
    int n = 0;
    char *p = line;

    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (*p == '\0' || *p == '#')
            return n;
        if (n == MAX_TOKENS) {
            *reason = "too many fields";
            return -1;
        }
        tok[n++] = p;
        bool quoted = false;
        for (; *p != '\0'; p++) {
            if (*p == '"')
                quoted = !quoted;
            else if (!quoted && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '#'))
                break;
        }
        if (quoted) {
            *reason = "unterminated quoted string";
            return -1;
        }
        if (*p == '#') {
            *p = '\0';
            return n;
        }
        if (*p != '\0')
            *p++ = '\0';
    }
}

/* Parses one comma-list item between s and e. */
static const char *parse_item(const char *s, const char *e, bool is_db, struct hba_item *it)
{
    size_t len = (size_t) (e - s);

    it->kind = IT_NAME;
    if (len == 0)
        return "empty name in list";
    if (*s == '+')
        return "group names (+group) are not supported";
    if (*s == '@')
        return "file inclusion (@file) is not supported";
    if (*s != '"') {
        if (len == 3 && memcmp(s, "all", 3) == 0) {
            it->kind = IT_ALL;
            return NULL;
        }
        if (is_db && len == 8 && memcmp(s, "sameuser", 8) == 0) {
            it->kind = IT_SAMEUSER;
            return NULL;
        }
        if ((len == 8 && memcmp(s, "samerole", 8) == 0) ||
            (len == 9 && memcmp(s, "samegroup", 9) == 0) ||
            (len == 11 && memcmp(s, "replication", 11) == 0))
            return "keyword not supported (samerole, samegroup, replication)";
    }
    if ((it->name = malloc(len + 1)) == NULL)
        return "out of memory";
    size_t o = 0;
    bool q = false;
    for (const char *p = s; p < e; p++) {
        if (*p == '"') {
            if (q && p + 1 < e && p[1] == '"')
                it->name[o++] = *++p; /* "" inside quotes is a literal quote */
            else
                q = !q;
            continue;
        }
        it->name[o++] = *p;
    }
    it->name[o] = '\0';
    if (o == 0)
        return "empty name in list";
    return NULL;
}

/* Parses a comma list of names/keywords into l. */
static const char *parse_list(const char *tok, bool is_db, struct hba_list *l)
{
    const char *s = tok;

    for (;;) {
        const char *e = s;
        bool quoted = false;
        for (; *e != '\0' && (quoted || *e != ','); e++)
            if (*e == '"')
                quoted = !quoted;
        struct hba_item *n = realloc(l->items, (size_t) (l->n + 1) * sizeof(*n));
        if (n == NULL)
            return "out of memory";
        l->items = n;
        memset(&l->items[l->n], 0, sizeof(l->items[0]));
        const char *r = parse_item(s, e, is_db, &l->items[l->n]);
        l->n++;
        if (r != NULL)
            return r;
        if (*e == '\0')
            return NULL;
        s = e + 1;
    }
}

static const char *parse_addr(const char *tok, struct hba_rule *r)
{
    char buf[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(tok, '/');
    size_t alen = slash ? (size_t) (slash - tok) : strlen(tok);
    int max;

    if (strcmp(tok, "all") == 0) {
        r->addr_all = true;
        return NULL;
    }
    if (alen >= sizeof(buf))
        return "invalid IP address";
    memcpy(buf, tok, alen);
    buf[alen] = '\0';
    if (inet_pton(AF_INET, buf, r->net) == 1) {
        r->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, r->net) == 1) {
        r->family = AF_INET6;
        max = 128;
    } else {
        return "invalid IP address (host names, samehost and samenet are not supported)";
    }
    r->prefix = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        int v = 0;
        if (*p == '\0' || strlen(p) > 3)
            return "invalid CIDR mask";
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return "invalid CIDR mask";
            v = v * 10 + (*p - '0');
        }
        if (v > max)
            return "invalid CIDR mask";
        r->prefix = v;
    }
    return NULL;
}

static const char *parse_type(const char *t, enum conn_type *out)
{
    static const char *const names[] = {"local", "host", "hostssl", "hostnossl"};

    for (int i = 0; i < 4; i++) {
        if (strcmp(t, names[i]) == 0) {
            *out = (enum conn_type) i;
            return NULL;
        }
    }
    if (strcmp(t, "hostgssenc") == 0 || strcmp(t, "hostnogssenc") == 0)
        return "GSSAPI connection types are not supported";
    return "invalid connection type (local, host, hostssl, hostnossl)";
}

/* Parses the tokens of one rule into r. Returns NULL or the reason. */
static const char *parse_rule(char **tok, int n, struct hba_rule *r)
{
    const char *e;
    int need;

    if ((e = parse_type(tok[0], &r->type)) != NULL)
        return e;
    need = r->type == CT_LOCAL ? 4 : 5;
    if (n < need)
        return r->type == CT_LOCAL ? "expected: local DATABASE USER METHOD"
                                   : "expected: TYPE DATABASE USER ADDRESS METHOD";
    if (n > need) {
        if (strchr(tok[need], '=') != NULL || strchr(tok[need - 1], '=') != NULL)
            return "authentication options are not supported";
        return "extra fields (an address with a separate mask is not supported: use CIDR)";
    }
    if ((e = parse_list(tok[1], true, &r->dbs)) != NULL ||
        (e = parse_list(tok[2], false, &r->users)) != NULL)
        return e;
    if (r->type != CT_LOCAL && (e = parse_addr(tok[3], r)) != NULL)
        return e;
    if (!hba_method_parse(tok[need - 1], &r->method) || strcmp(tok[need - 1], "plain") == 0)
        return "invalid authentication method (trust, reject, md5, scram-sha-256, password, cert)";
    if (r->method == HBA_CERT && r->type != CT_HOSTSSL)
        return "cert authentication is only supported on hostssl connections";
    return NULL;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parses one line; on success appends a rule when the line is not blank. */
static const char *parse_line(struct hba *h, char *line, int lineno)
{
    char *tok[MAX_TOKENS];
    const char *reason = NULL;
    int n = tokenize(line, tok, &reason);

    if (n <= 0)
        return reason;
    if (h->n == h->cap) {
        int ncap = h->cap ? h->cap * 2 : 16;
        struct hba_rule *nr = realloc(h->rules, (size_t) ncap * sizeof(*nr));
        if (nr == NULL)
            return "out of memory";
        h->rules = nr;
        h->cap = ncap;
    }
    struct hba_rule *r = &h->rules[h->n];
    memset(r, 0, sizeof(*r));
    r->line = lineno;
    reason = parse_rule(tok, n, r);
    if (reason != NULL) {
        list_free(&r->dbs);
        list_free(&r->users);
        return reason;
    }
    h->n++;
    return NULL;
}

struct hba *hba_parse(const char *text, const char *name, char *err, size_t errlen)
{
    struct hba *h = calloc(1, sizeof(*h));
    char *copy = strdup(text), *line;
    int lineno = 0;

    if (h == NULL || copy == NULL) {
        set_err(err, errlen, "%s: out of memory", name);
        goto fail;
    }
    line = copy;
    while (*line != '\0') {
        char *nl = strchr(line, '\n');
        const char *reason;
        if (nl != NULL)
            *nl = '\0';
        lineno++;
        if ((reason = parse_line(h, line, lineno)) != NULL) {
            set_err(err, errlen, "%s:%d: %s", name, lineno, reason);
            goto fail;
        }
        if (nl == NULL)
            break;
        line = nl + 1;
    }
    free(copy);
    return h;
fail:
    free(copy);
    hba_free(h);
    return NULL;
}

struct hba *hba_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *text;
    size_t len;
    struct hba *h = NULL;

    if (f == NULL) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    text = malloc(MAX_FILE_SIZE + 1);
    if (text == NULL) {
        set_err(err, errlen, "%s: out of memory", path);
        fclose(f);
        return NULL;
    }
    len = fread(text, 1, MAX_FILE_SIZE + 1, f);
    if (ferror(f))
        set_err(err, errlen, "%s: read error", path);
    else if (len > MAX_FILE_SIZE)
        set_err(err, errlen, "%s: file too large", path);
    else if (memchr(text, '\0', len) != NULL)
        set_err(err, errlen, "%s: file contains a NUL byte", path);
    else {
        text[len] = '\0';
        h = hba_parse(text, path, err, errlen);
    }
    free(text);
    fclose(f);
    return h;
}

static bool list_match(const struct hba_list *l, const char *name, const char *user)
{
    for (int i = 0; i < l->n; i++) {
        const struct hba_item *it = &l->items[i];
        if (it->kind == IT_ALL || (it->kind == IT_SAMEUSER && strcmp(name, user) == 0) ||
            (it->kind == IT_NAME && strcmp(it->name, name) == 0))
            return true;
    }
    return false;
}

static bool prefix_match(const uint8_t *a, const uint8_t *net, int prefix)
{
    int full = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, (size_t) full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t) (0xff << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

static bool addr_match(const struct hba_rule *r, const struct sockaddr *sa)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (r->addr_all)
        return true;
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *) (const void *) sa;
        return r->family == AF_INET &&
               prefix_match((const uint8_t *) &in->sin_addr, r->net, r->prefix);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) (const void *) sa;
        const uint8_t *b = in6->sin6_addr.s6_addr;
        if (r->family == AF_INET6)
            return prefix_match(b, r->net, r->prefix);
        return memcmp(b, v4mapped, 12) == 0 && prefix_match(b + 12, r->net, r->prefix);
    }
    return false;
}

static const struct hba_rule *find(const struct hba *h, bool is_unix, bool is_tls,
                                   const struct sockaddr *addr, const char *database,
                                   const char *user)
{
    if (h == NULL || database == NULL || user == NULL)
        return NULL;
    for (int i = 0; i < h->n; i++) {
        const struct hba_rule *r = &h->rules[i];
        if (is_unix != (r->type == CT_LOCAL))
            continue;
        if ((r->type == CT_HOSTSSL && !is_tls) || (r->type == CT_HOSTNOSSL && is_tls))
            continue;
        if (!is_unix && !addr_match(r, addr))
            continue;
        if (list_match(&r->dbs, database, user) && list_match(&r->users, user, user))
            return r;
    }
    return NULL;
}

enum hba_method hba_match(const struct hba *h, bool is_unix, bool is_tls,
                          const struct sockaddr *addr, const char *database, const char *user)
{
    const struct hba_rule *r = find(h, is_unix, is_tls, addr, database, user);

    return r != NULL ? r->method : HBA_REJECT;
}

int hba_match_line(const struct hba *h, bool is_unix, bool is_tls, const struct sockaddr *addr,
                   const char *database, const char *user)
{
    const struct hba_rule *r = find(h, is_unix, is_tls, addr, database, user);

    return r != NULL ? r->line : 0;
}
