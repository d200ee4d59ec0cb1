/*
 * state: the persisted policy file DATA/state/policy. The whole file is rebuilt on each change
 * (a short header comment, "key = value" lines sorted by key, a "crc32c = 0x%08x" trailer over
 * every byte before the trailer line) and written with store_write_file. Loading checks the
 * trailer before parsing anything, so a torn or edited file is refused as a whole. Validation
 * of a SET goes through the configuration's own table (config_set, config_validate) on a copy
 * of the running snapshot, so the console accepts exactly what the configuration file accepts.
 */
#include "pgtide/state.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pgtide/admincmd.h"
#include "pgtide/config.h"
#include "pgtide/log.h"
#include "pgtide/store.h"

#define STATE_HEADER                                                                               \
    "# pgtide policy: changes made with SET on the admin console (RESET removes them).\n"          \
    "# Written by pgtide, checked by the crc32c line: do not edit; remove the file to drop it.\n"
#define STATE_TRAILER "crc32c = 0x"

/* CRC32C (Castagnoli, reflected 0x82F63B78), bitwise: the file is a few hundred bytes. */
static uint32_t state_crc32c(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

static void state_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void state_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

char *state_policy_path(const char *data_dir)
{
    size_t n = strlen(data_dir) + sizeof(STATE_POLICY_REL) + 2;
    char *path = malloc(n);
    if (path != NULL)
        snprintf(path, n, "%s/%s", data_dir, STATE_POLICY_REL);
    return path;
}

void state_policy_free(struct state_policy *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->items[i].key);
        free(p->items[i].value);
    }
    free(p->items);
    p->items = NULL;
    p->n = 0;
}

static int state_find(const struct state_policy *p, const char *key)
{
    for (int i = 0; i < p->n; i++) {
        if (strcasecmp(p->items[i].key, key) == 0)
            return i;
    }
    return -1;
}

const char *state_policy_get(const struct state_policy *p, const char *key)
{
    int i = state_find(p, key);
    return i >= 0 ? p->items[i].value : NULL;
}

int state_policy_put(struct state_policy *p, const char *key, const char *value)
{
    char *v = strdup(value);
    if (v == NULL)
        return -1;
    int i = state_find(p, key);
    if (i >= 0) {
        free(p->items[i].value);
        p->items[i].value = v;
        return 0;
    }
    char *k = strdup(key);
    struct state_item *grown = k ? realloc(p->items, (size_t) (p->n + 1) * sizeof(*grown)) : NULL;
    if (grown == NULL) {
        free(k);
        free(v);
        return -1;
    }
    for (char *c = k; *c != '\0'; c++)
        *c = (char) (*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    p->items = grown;
    p->items[p->n].key = k;
    p->items[p->n].value = v;
    p->n++;
    return 0;
}

bool state_policy_remove(struct state_policy *p, const char *key)
{
    int i = state_find(p, key);
    if (i < 0)
        return false;
    free(p->items[i].key);
    free(p->items[i].value);
    memmove(&p->items[i], &p->items[i + 1], (size_t) (p->n - i - 1) * sizeof(p->items[0]));
    p->n--;
    return true;
}

static bool state_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* Parses one "key = value" line (without its newline) into p. */
static int state_parse_line(struct state_policy *p, char *line, const char *path, int lineno,
                            char *err, size_t errlen)
{
    char *eq = strstr(line, " = ");
    bool ok = eq != NULL && eq > line;
    for (char *c = line; ok && c < eq; c++)
        ok = state_key_char(*c);
    if (!ok) {
        state_err(err, errlen, "%s:%d: expected \"key = value\"", path, lineno);
        return -1;
    }
    *eq = '\0';
    if (state_find(p, line) >= 0) {
        state_err(err, errlen, "%s:%d: %s appears twice", path, lineno, line);
        return -1;
    }
    if (state_policy_put(p, line, eq + 3) != 0) {
        state_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    return 0;
}

/* Checks the trailer of text (len bytes); returns the length of the body before it, or -1. */
static long state_check_trailer(const char *text, size_t len, const char *path, char *err,
                                size_t errlen)
{
    const char *last = len > 0 ? text + len - 1 : text;
    if (len == 0 || *last != '\n') {
        state_err(err, errlen,
                  "%s: the file is truncated (no final checksum line); pgtide will not start "
                  "with it: restore it, or remove it to drop the persisted policy",
                  path);
        return -1;
    }
    const char *start = last;
    while (start > text && start[-1] != '\n')
        start--;
    unsigned int want;
    char tail;
    if (strncmp(start, STATE_TRAILER, strlen(STATE_TRAILER)) != 0 ||
        sscanf(start + strlen(STATE_TRAILER), "%8x%c", &want, &tail) != 2 || tail != '\n') {
        state_err(err, errlen,
                  "%s: the file has no checksum line (truncated or edited); pgtide will not "
                  "start with it: restore it, or remove it to drop the persisted policy",
                  path);
        return -1;
    }
    uint32_t got = state_crc32c(text, (size_t) (start - text));
    if (got != (uint32_t) want) {
        state_err(err, errlen,
                  "%s: checksum mismatch (the file says 0x%08x, its contents give 0x%08x): the "
                  "file is corrupt; pgtide will not start with it: restore it, or remove it to "
                  "drop the persisted policy",
                  path, want, (unsigned) got);
        return -1;
    }
    return (long) (start - text);
}

int state_policy_load(const char *path, struct state_policy *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    char *text = NULL;
    size_t len = 0;
    if (store_read_file(path, &text, &len) != 0) {
        if (errno == ENOENT)
            return 0;
        state_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    long body = state_check_trailer(text, len, path, err, errlen);
    int rc = body < 0 ? -1 : 0;
    int lineno = 0;
    for (char *line = text; rc == 0 && line < text + body;) {
        char *nl = strchr(line, '\n');
        *nl = '\0';
        lineno++;
        if (line[0] != '#' && line[0] != '\0')
            rc = state_parse_line(p, line, path, lineno, err, errlen);
        line = nl + 1;
    }
    free(text);
    if (rc != 0)
        state_policy_free(p);
    return rc;
}

static int state_cmp(const void *a, const void *b)
{
    return strcmp(((const struct state_item *) a)->key, ((const struct state_item *) b)->key);
}

int state_policy_save(const char *path, const struct state_policy *p, char *err, size_t errlen)
{
    size_t cap = sizeof(STATE_HEADER) + 32;
    for (int i = 0; i < p->n; i++)
        cap += strlen(p->items[i].key) + strlen(p->items[i].value) + 4;
    char *buf = malloc(cap);
    struct state_item *sorted = malloc((size_t) (p->n > 0 ? p->n : 1) * sizeof(*sorted));
    if (buf == NULL || sorted == NULL) {
        free(buf);
        free(sorted);
        state_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    if (p->n > 0)
        memcpy(sorted, p->items, (size_t) p->n * sizeof(*sorted));
    qsort(sorted, (size_t) p->n, sizeof(*sorted), state_cmp);
    size_t used = (size_t) snprintf(buf, cap, "%s", STATE_HEADER);
    for (int i = 0; i < p->n; i++)
        used +=
            (size_t) snprintf(buf + used, cap - used, "%s = %s\n", sorted[i].key, sorted[i].value);
    used += (size_t) snprintf(buf + used, cap - used, STATE_TRAILER "%08x\n",
                              (unsigned) state_crc32c(buf, used));
    free(sorted);
    int rc = store_write_file(path, buf, used, 0600);
    if (rc != 0)
        state_err(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    free(buf);
    return rc;
}

int state_policy_apply(const struct state_policy *p, struct config *cfg, const char *name,
                       char *err, size_t errlen)
{
    char msg[512];
    for (int i = 0; i < p->n; i++) {
        if (config_set(cfg, p->items[i].key, p->items[i].value, msg, sizeof(msg)) != 0) {
            state_err(err, errlen, "%s: %s (RESET it, or remove the line with the file)", name,
                      msg);
            return -1;
        }
    }
    if (config_validate(cfg, msg, sizeof(msg)) != 0) {
        state_err(err, errlen, "%s: with the persisted policy applied: %s", name, msg);
        return -1;
    }
    return 0;
}

struct config *state_policy_check(const struct config *cur, const char *key, const char *value,
                                  char *err, size_t errlen)
{
    if (!admincmd_settable(key)) {
        state_err(err, errlen, "%s: not a policy key (settable: %s)", key,
                  admincmd_settable_list());
        return NULL;
    }
    if (!config_key_reloadable(key)) {
        state_err(err, errlen, "%s: not known to this version's configuration", key);
        return NULL;
    }
    for (const char *c = value; *c != '\0'; c++) {
        if ((unsigned char) *c < 0x20 || *c == 0x7f) {
            state_err(err, errlen, "%s: the value must not contain control characters", key);
            return NULL;
        }
    }
    struct config *cfg = config_copy(cur);
    if (cfg == NULL) {
        state_err(err, errlen, "out of memory");
        return NULL;
    }
    if (config_set(cfg, key, value, err, errlen) != 0 || config_validate(cfg, err, errlen) != 0) {
        config_unref(cfg);
        return NULL;
    }
    return cfg;
}

int state_policy_load_apply(const char *data_dir, struct config *cfg, int *applied, char *err,
                            size_t errlen)
{
    char *path = state_policy_path(data_dir);
    struct state_policy p;
    if (path == NULL) {
        state_err(err, errlen, "out of memory");
        return -1;
    }
    int rc = state_policy_load(path, &p, err, errlen);
    if (rc == 0)
        rc = state_policy_apply(&p, cfg, path, err, errlen);
    for (int i = 0; rc == 0 && i < p.n; i++)
        log_info("policy from %s: %s = %s", path, p.items[i].key, p.items[i].value);
    if (applied != NULL)
        *applied = rc == 0 ? p.n : 0;
    state_policy_free(&p);
    free(path);
    return rc;
}

int state_policy_persist(const char *path, const char *key, const char *value, bool *changed,
                         char *err, size_t errlen)
{
    struct state_policy p;
    if (state_policy_load(path, &p, err, errlen) != 0)
        return -1;
    bool found = true;
    int rc = 0;
    if (value != NULL)
        rc = state_policy_put(&p, key, value);
    else if (strcasecmp(key, "all") == 0) {
        found = p.n > 0;
        state_policy_free(&p);
    } else
        found = state_policy_remove(&p, key);
    if (rc != 0)
        state_err(err, errlen, "%s: out of memory", path);
    else
        rc = state_policy_save(path, &p, err, errlen);
    state_policy_free(&p);
    if (changed != NULL)
        *changed = found;
    return rc;
}
