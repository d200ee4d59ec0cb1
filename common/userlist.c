/*
 * userlist: parser and lookup table for PgBouncer-format auth files. Each line is tokenised by hand
 * (quoted fields with "" escapes), each secret is validated with secret_parse, and the entries are
 * kept in an array indexed by an open-addressing hash table (FNV-1a, linear probing, load factor
 * at most one half) keyed by user name.
 */
#include "pgtide/userlist.h"

#include "pgtide/secret.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define MAX_FILE_SIZE (64u << 20)

struct ul_entry {
    char *user;
    char *secret;
};

struct userlist {
    struct ul_entry *entries;
    int count, cap;
    int *slots;    /* index into entries, -1 = empty */
    size_t nslots; /* power of two */
};

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s; s++) {
        h ^= (uint8_t) *s;
        h *= 1099511628211ull;
    }
    return h;
}

static size_t find_slot(const struct userlist *ul, const char *user)
{
    size_t mask = ul->nslots - 1, i = (size_t) hash_name(user) & mask;

    while (ul->slots[i] >= 0 && strcmp(ul->entries[ul->slots[i]].user, user) != 0)
        i = (i + 1) & mask;
    return i;
}

static int grow_slots(struct userlist *ul)
{
    size_t n = ul->nslots ? ul->nslots * 2 : 64;
    int *slots = malloc(n * sizeof(*slots));
    int *old = ul->slots;

    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        slots[i] = -1;
    ul->slots = slots;
    ul->nslots = n;
    for (int e = 0; e < ul->count; e++)
        ul->slots[find_slot(ul, ul->entries[e].user)] = e;
    free(old);
    return 0;
}

/* Adds or replaces; takes ownership of user and secret on success. */
static int add_entry(struct userlist *ul, char *user, char *secret)
{
    size_t slot;

    if (((size_t) ul->count + 1) * 2 > ul->nslots && grow_slots(ul) != 0)
        return -1;
    slot = find_slot(ul, user);
    if (ul->slots[slot] >= 0) {
        struct ul_entry *e = &ul->entries[ul->slots[slot]];
        OPENSSL_cleanse(e->secret, strlen(e->secret));
        free(e->secret);
        free(user);
        e->secret = secret;
        return 0;
    }
    if (ul->count == ul->cap) {
        int ncap = ul->cap ? ul->cap * 2 : 32;
        struct ul_entry *n = realloc(ul->entries, (size_t) ncap * sizeof(*n));
        if (n == NULL)
            return -1;
        ul->entries = n;
        ul->cap = ncap;
    }
    ul->entries[ul->count].user = user;
    ul->entries[ul->count].secret = secret;
    ul->slots[slot] = ul->count++;
    return 0;
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

/* Reads a quoted field at *pp (which points at '"'); returns a heap copy with "" unescaped, or
   NULL with *reason set. Advances *pp past the closing quote. */
static char *read_quoted(const char **pp, const char **reason)
{
    const char *p = *pp + 1;
    size_t n = 0;
    char *out;

    for (const char *q = p;; q++) {
        if (*q == '\0' || *q == '\n') {
            *reason = "unterminated quoted field";
            return NULL;
        }
        if (*q == '"') {
            if (q[1] != '"')
                break;
            q++;
        }
        n++;
    }
    out = malloc(n + 1);
    if (out == NULL) {
        *reason = "out of memory";
        return NULL;
    }
    n = 0;
    for (;; p++) {
        if (*p == '"') {
            if (p[1] != '"')
                break;
            p++;
        }
        out[n++] = *p;
    }
    out[n] = '\0';
    *pp = p + 1;
    return out;
}

static void free_secret_text(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* Parses one non-comment line starting at p. Returns NULL on success, else the reason. */
static const char *parse_line(struct userlist *ul, const char *p)
{
    const char *reason = NULL;
    char *user, *secret;
    struct secret check;

    if (*p != '"')
        return "expected a quoted user name";
    if ((user = read_quoted(&p, &reason)) == NULL)
        return reason;
    if (*user == '\0') {
        free(user);
        return "empty user name";
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '"') {
        free(user);
        return "expected a quoted secret after the user name";
    }
    if ((secret = read_quoted(&p, &reason)) == NULL) {
        free(user);
        return reason;
    }
    if (secret_parse(secret, &check) != 0) {
        free(user);
        free_secret_text(secret);
        return "malformed SCRAM verifier or md5 hash";
    }
    secret_clear(&check);
    if (add_entry(ul, user, secret) != 0) {
        free(user);
        free_secret_text(secret);
        return "out of memory";
    }
    return NULL;
}

struct userlist *userlist_parse(const char *text, const char *name_for_errors, char *err,
                                size_t errlen)
{
    struct userlist *ul = calloc(1, sizeof(*ul));
    const char *line = text;
    int lineno = 0;

    if (ul == NULL || grow_slots(ul) != 0) {
        set_err(err, errlen, "%s: out of memory", name_for_errors);
        userlist_free(ul);
        return NULL;
    }
    while (*line != '\0') {
        const char *p = line, *next = strchr(line, '\n');
        const char *reason;

        lineno++;
        next = next ? next + 1 : line + strlen(line);
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (*p != '\n' && *p != '\0' && *p != ';' && *p != '#' &&
            (reason = parse_line(ul, p)) != NULL) {
            set_err(err, errlen, "%s:%d: %s", name_for_errors, lineno, reason);
            userlist_free(ul);
            return NULL;
        }
        line = next;
    }
    return ul;
}

struct userlist *userlist_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0, cap = 0;
    struct userlist *ul = NULL;

    if (f == NULL) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (cap - len < 4096) {
            char *n = cap + 65536 > MAX_FILE_SIZE ? NULL : realloc(text, cap + 65536);
            if (n == NULL) {
                set_err(err, errlen, "%s: file too large or out of memory", path);
                goto out;
            }
            text = n;
            cap += 65536;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        set_err(err, errlen, "%s: read error", path);
        goto out;
    }
    text[len] = '\0';
    if (memchr(text, '\0', len) != NULL) {
        set_err(err, errlen, "%s: file contains a NUL byte", path);
        goto out;
    }
    ul = userlist_parse(text, path, err, errlen);
out:
    if (text != NULL) {
        OPENSSL_cleanse(text, cap);
        free(text);
    }
    fclose(f);
    return ul;
}

const char *userlist_get(const struct userlist *ul, const char *user)
{
    int idx;

    if (ul == NULL || user == NULL)
        return NULL;
    idx = ul->slots[find_slot(ul, user)];
    return idx >= 0 ? ul->entries[idx].secret : NULL;
}

int userlist_count(const struct userlist *ul)
{
    return ul != NULL ? ul->count : 0;
}

void userlist_free(struct userlist *ul)
{
    if (ul == NULL)
        return;
    for (int i = 0; i < ul->count; i++) {
        free(ul->entries[i].user);
        free_secret_text(ul->entries[i].secret);
    }
    free(ul->entries);
    free(ul->slots);
    free(ul);
}
