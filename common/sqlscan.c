/*
 * sqlscan: what the text of a query says about custom settings (DESIGN.md section 4, parking).
 * PostgreSQL hides custom ("placeholder") settings such as app.tenant from pg_settings, so a
 * session snapshot can only carry them by name; the names come from here: "SET [SESSION] a.b"
 * at the start of a query, and every set_config('a.b', ..., <not true>) call outside quoted
 * literals and comments. Pure: pointer + length in (no NUL needed), callbacks out; no state.
 */
#include "pgtide/sqlscan.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && isspace((unsigned char) *p))
        p++;
    return p;
}

/* "SET [SESSION] a.b ..." at the start of a query. */
/* "SET [SESSION] name ..." at the start of a query; true when the name cannot be read whole
   (quoted, or longer than 63 bytes). */
static bool scan_set(const char *sql, size_t len, sqlscan_name_fn fn, void *arg)
{
    const char *p = skip_space(sql, sql + len), *end = sql + len;
    if (end - p < 5 || strncasecmp(p, "set", 3) != 0 || !isspace((unsigned char) p[3]))
        return false;
    p = skip_space(p + 4, end);
    if (end - p > 8 && strncasecmp(p, "session", 7) == 0 && isspace((unsigned char) p[7]))
        p = skip_space(p + 8, end);
    if (p < end && *p == '"')
        return memchr(p, '.', (size_t) (end - p)) != NULL; /* "app.x": a dotted quoted name */
    char name[64];
    size_t k = 0;
    while (p < end && (isalnum((unsigned char) *p) || *p == '_' || *p == '.')) {
        if (k + 1 >= sizeof(name))
            return true;
        name[k++] = (char) tolower((unsigned char) *p++);
    }
    name[k] = '\0';
    if (k > 0)
        fn(arg, name, k);
    return false;
}

/* Past a quoted literal that starts at p ('...' with '' inside; E'...' also with backslash
   escapes), or a comment (-- to the end of the line, slash-star to star-slash); p itself when
   none starts there. Dollar-quoted bodies are not skipped: a DO block runs what it holds. */
static const char *skip_inert(const char *sql, const char *p, const char *end)
{
    if (*p == '\'') {
        bool esc = p > sql && (p[-1] == 'E' || p[-1] == 'e');
        for (p++; p < end; p++) {
            if (esc && *p == '\\' && p + 1 < end)
                p++;
            else if (*p == '\'' && !(p + 1 < end && p[1] == '\''))
                return p + 1;
            else if (*p == '\'')
                p++;
        }
        return end;
    }
    if (*p == '-' && p + 1 < end && p[1] == '-') {
        const char *nl = memchr(p, '\n', (size_t) (end - p));
        return nl != NULL ? nl + 1 : end;
    }
    if (*p == '/' && p + 1 < end && p[1] == '*') {
        for (p += 2; p + 1 < end; p++)
            if (*p == '*' && p[1] == '/')
                return p + 2;
        return end;
    }
    return p;
}

/* From just after a call's "(": true when its last argument is the word true (is_local: the
   setting ends with the transaction, nothing outlives it). *close: past the call's ")". */
static bool call_is_local(const char *sql, const char *p, const char *end, const char **close)
{
    int depth = 0;
    const char *last = p;
    while (p < end) {
        const char *q = skip_inert(sql, p, end);
        if (q != p) {
            p = q;
            continue;
        }
        if (*p == '(')
            depth++;
        else if (*p == ')' && depth-- == 0)
            break;
        else if (*p == ',' && depth == 0)
            last = p + 1;
        p++;
    }
    *close = p < end ? p + 1 : end;
    last = skip_space(last, p);
    const char *e = p;
    while (e > last && isspace((unsigned char) e[-1]))
        e--;
    return e - last == 4 && strncasecmp(last, "true", 4) == 0;
}

/* Every set_config(...) call in a query, outside literals and comments: a quoted first argument
   is a name to note; anything else ($1, an expression) cannot be named. Transaction-local calls
   (third argument true) leave nothing behind and are skipped. */
static bool scan_set_config(const char *sql, size_t len, sqlscan_name_fn fn, void *arg)
{
    static const char word[] = "set_config";
    const size_t wl = sizeof(word) - 1;
    const char *end = sql + len;
    bool opaque = false;
    for (const char *p = sql; p < end;) {
        const char *q = skip_inert(sql, p, end);
        if (q != p) {
            p = q;
            continue;
        }
        if ((size_t) (end - p) <= wl || strncasecmp(p, word, wl) != 0 ||
            (p > sql && (isalnum((unsigned char) p[-1]) || p[-1] == '_'))) {
            p++;
            continue;
        }
        q = skip_space(p + wl, end);
        if (q >= end || *q != '(') {
            p += wl; /* a column named so, not a call */
            continue;
        }
        const char *args = q + 1, *after;
        if (call_is_local(sql, args, end, &after)) {
            p = after;
            continue;
        }
        q = skip_space(args, end);
        char name[64];
        size_t k = 0;
        bool named = q < end && *q == '\'';
        for (q += named; named && q < end; q++) {
            if (*q == '\'' && !(q + 1 < end && q[1] == '\''))
                break;
            if (*q == '\'')
                q++; /* '' inside the literal */
            if (k + 1 >= sizeof(name) || *q == '\0')
                named = false; /* too long, or not a name PostgreSQL could hold */
            else
                name[k++] = (char) tolower((unsigned char) *q);
        }
        /* the literal must be the whole argument ('app.' || x is not a name); a cast is fine */
        if (named && q < end && (q = skip_space(q + 1, end)) + 1 < end && q[0] == ':' &&
            q[1] == ':')
            for (q += 2; q < end && (isalnum((unsigned char) *q) || *q == '_');)
                q++;
        named = named && (q = skip_space(q, end)) < end && *q == ',';
        name[k] = '\0';
        if (!named)
            opaque = true;
        else if (k > 0) /* set_config('', ...) fails in PostgreSQL: nothing is set */
            fn(arg, name, k);
        p = args; /* the arguments may hold calls too */
    }
    return opaque;
}

/* True when the query starts with the two words a b (any case, any spacing). */
static bool starts_with_words(const char *sql, size_t len, const char *a, const char *b)
{
    const char *p = skip_space(sql, sql + len), *end = sql + len;
    size_t la = strlen(a), lb = strlen(b);
    if ((size_t) (end - p) <= la || strncasecmp(p, a, la) != 0 || !isspace((unsigned char) p[la]))
        return false;
    p = skip_space(p + la, end);
    return (size_t) (end - p) >= lb && strncasecmp(p, b, lb) == 0 &&
           (p + lb == end || !isalnum((unsigned char) p[lb]));
}

int sqlscan_custom(const char *sql, size_t len, sqlscan_name_fn fn, void *arg)
{
    int r = 0;
    if (scan_set(sql, len, fn, arg))
        r |= SQLSCAN_OPAQUE;
    if (scan_set_config(sql, len, fn, arg))
        r |= SQLSCAN_OPAQUE;
    if (starts_with_words(sql, len, "reset", "all") ||
        starts_with_words(sql, len, "discard", "all"))
        r |= SQLSCAN_RESET_ALL;
    return r;
}
