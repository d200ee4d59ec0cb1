/*
 * admincmd: parser of the admin console's commands. The query string is first cut into at most
 * a handful of tokens (bare words, '=' and quoted strings), stopping at the first ';' after
 * which only blanks and more semicolons may follow; the tokens are then matched against the
 * few fixed command shapes. Nothing here allocates or looks at proxy state: the result is a
 * plain struct that proxy/admin.c acts on, and every refusal carries the SQLSTATE to answer.
 */
#include "pgtide/admincmd.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_TOKENS 6

enum tok_kind { TOK_WORD, TOK_SQUOTE, TOK_DQUOTE, TOK_EQ };

struct token {
    enum tok_kind kind;
    char text[ADMINCMD_TOKEN_MAX];
};

struct lexer {
    struct token tok[MAX_TOKENS];
    int n;
};

/* The policy keys (DESIGN.md §8) and the autoscaling knobs (issue 5), replica_scale_wait and
   read_your_writes (issue 6); SET persists them. */
static const char *const settable_keys[] = {
    "pause_after",        "suspend_after",   "wake_timeout", "query_wait_timeout",
    "pool_mode",          "pool_size",       "min_replicas", "max_replicas",
    "compute_units",      "replica_units",   "min_cu",       "max_cu",
    "scale_window",       "scale_cooldown",  "cpu_high",     "cpu_low",
    "max_replica_lag",    "backup_schedule", "backup_keep",  "backup_max_age",
    "replica_scale_wait", "read_your_writes"};

static const struct {
    const char *name;
    enum admincmd_show show;
} show_objects[] = {
    {"HELP", ADMINCMD_SHOW_HELP},         {"VERSION", ADMINCMD_SHOW_VERSION},
    {"CONFIG", ADMINCMD_SHOW_CONFIG},     {"CLIENTS", ADMINCMD_SHOW_CLIENTS},
    {"SERVERS", ADMINCMD_SHOW_SERVERS},   {"POOLS", ADMINCMD_SHOW_POOLS},
    {"STATS", ADMINCMD_SHOW_STATS},       {"DATABASES", ADMINCMD_SHOW_DATABASES},
    {"COMPUTES", ADMINCMD_SHOW_COMPUTES}, {"POLICY", ADMINCMD_SHOW_POLICY},
    {"BACKUPS", ADMINCMD_SHOW_BACKUPS}, /* issue 7 */
    {"USAGE", ADMINCMD_SHOW_USAGE},     /* issue 5: usage ledger */
};

/* Commands made of one word. */
static const struct {
    const char *name;
    enum admincmd_kind kind;
} bare_commands[] = {
    {"PAUSE", ADMINCMD_PAUSE},       {"RESUME", ADMINCMD_RESUME}, {"RELOAD", ADMINCMD_RELOAD},
    {"SHUTDOWN", ADMINCMD_SHUTDOWN}, {"WAKE", ADMINCMD_WAKE},     {"SUSPEND", ADMINCMD_SUSPEND},
    {"BACKUP", ADMINCMD_BACKUP}, /* issue 7 */
};

static int fail(struct admincmd *out, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct admincmd *out, const char *sqlstate, const char *fmt, ...)
{
    snprintf(out->sqlstate, sizeof(out->sqlstate), "%s", sqlstate);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof(out->message), fmt, ap);
    va_end(ap);
    return -1;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* A quoted token starting at *s (the quote character); doubled quotes stand for one. Advances
 *s past the closing quote. */
static int lex_quoted(const char **s, struct token *t, struct admincmd *out)
{
    char q = **s;
    const char *p = *s + 1;
    size_t len = 0;
    for (;;) {
        if (*p == '\0')
            return fail(out, "42601", "unterminated quoted string");
        if (*p == q) {
            if (p[1] != q)
                break;
            p++; /* doubled quote */
        }
        if (len + 1 >= sizeof(t->text))
            return fail(out, "42601", "quoted string too long (at most %d bytes)",
                        ADMINCMD_TOKEN_MAX - 1);
        t->text[len++] = *p++;
    }
    t->text[len] = '\0';
    t->kind = q == '\'' ? TOK_SQUOTE : TOK_DQUOTE;
    *s = p + 1;
    return 0;
}

/* A bare word: everything up to a blank, ';', '=' or quote. */
static int lex_word(const char **s, struct token *t, struct admincmd *out)
{
    const char *p = *s;
    size_t len = 0;
    while (*p != '\0' && !is_blank(*p) && *p != ';' && *p != '=' && *p != '\'' && *p != '"') {
        if (len + 1 >= sizeof(t->text))
            return fail(out, "42601", "word too long (at most %d bytes)", ADMINCMD_TOKEN_MAX - 1);
        t->text[len++] = *p++;
    }
    t->text[len] = '\0';
    t->kind = TOK_WORD;
    *s = p;
    return 0;
}

/* Cuts sql into tokens. Only blanks and semicolons may follow the first ';'. */
static int lex(const char *sql, struct lexer *lx, struct admincmd *out)
{
    const char *s = sql;
    lx->n = 0;
    for (;;) {
        while (is_blank(*s))
            s++;
        if (*s == '\0')
            return 0;
        if (*s == ';')
            break;
        if (lx->n == MAX_TOKENS)
            return fail(out, "42601", "syntax error: too many words in the command");
        struct token *t = &lx->tok[lx->n];
        int r = 0;
        if (*s == '=') {
            t->kind = TOK_EQ;
            strcpy(t->text, "=");
            s++;
        } else if (*s == '\'' || *s == '"') {
            r = lex_quoted(&s, t, out);
        } else {
            r = lex_word(&s, t, out);
        }
        if (r != 0)
            return r;
        lx->n++;
    }
    for (; *s != '\0'; s++) {
        if (*s != ';' && !is_blank(*s))
            return fail(out, "42601",
                        "the admin console runs one command per query (text after ';')");
    }
    return 0;
}

static bool word_is(const struct token *t, const char *w)
{
    return t->kind == TOK_WORD && strcasecmp(t->text, w) == 0;
}

bool admincmd_settable(const char *key)
{
    for (size_t i = 0; i < sizeof(settable_keys) / sizeof(settable_keys[0]); i++) {
        if (strcasecmp(key, settable_keys[i]) == 0)
            return true;
    }
    return false;
}

const char *admincmd_settable_list(void)
{
    return "pause_after, suspend_after, wake_timeout, query_wait_timeout, pool_mode, pool_size, "
           "min_replicas, max_replicas, compute_units, replica_units, min_cu, max_cu, "
           "scale_window, scale_cooldown, cpu_high, cpu_low, max_replica_lag, backup_schedule, "
           "backup_keep, backup_max_age, replica_scale_wait, read_your_writes";
}

/* SHOW USAGE [DAY|HOUR] (issue 5: usage ledger). */
static int parse_show_usage(const struct lexer *lx, struct admincmd *out)
{
    out->kind = ADMINCMD_SHOW;
    out->show = ADMINCMD_SHOW_USAGE;
    if (lx->n == 2)
        return 0;
    if (lx->n == 3 && word_is(&lx->tok[2], "HOUR"))
        out->usage_by = 1;
    else if (lx->n == 3 && word_is(&lx->tok[2], "DAY"))
        out->usage_by = 2;
    else
        return fail(out, "42601", "syntax error at \"%s\": SHOW USAGE takes DAY or HOUR",
                    lx->tok[2].text);
    return 0;
}

static int parse_show(const struct lexer *lx, struct admincmd *out)
{
    if (lx->n >= 2 && word_is(&lx->tok[1], "USAGE"))
        return parse_show_usage(lx, out);
    if (lx->n < 2)
        return fail(out, "42601", "SHOW needs an object, e.g. SHOW HELP");
    if (lx->n > 2)
        return fail(out, "42601", "syntax error at \"%s\": SHOW takes one word", lx->tok[2].text);
    const struct token *t = &lx->tok[1];
    if (t->kind == TOK_WORD) {
        for (size_t i = 0; i < sizeof(show_objects) / sizeof(show_objects[0]); i++) {
            if (strcasecmp(t->text, show_objects[i].name) == 0) {
                out->kind = ADMINCMD_SHOW;
                out->show = show_objects[i].show;
                return 0;
            }
        }
    }
    return fail(out, "42704", "unknown SHOW object \"%s\"; SHOW HELP lists them", t->text);
}

static int parse_set(const struct lexer *lx, struct admincmd *out)
{
    if (lx->n < 4 || (lx->tok[2].kind != TOK_EQ && !word_is(&lx->tok[2], "TO")))
        return fail(out, "42601", "syntax error: expected SET key = value (or SET key TO value)");
    const struct token *k = &lx->tok[1], *v = &lx->tok[3];
    if (k->kind != TOK_WORD && k->kind != TOK_DQUOTE)
        return fail(out, "42601", "syntax error: the key of SET must be a name");
    if (v->kind == TOK_EQ)
        return fail(out, "42601", "syntax error: expected a value after '='");
    if (lx->n > 4)
        return fail(out, "42601", "syntax error at \"%s\": quote a value that has blanks",
                    lx->tok[4].text);
    if (!admincmd_settable(k->text))
        return fail(out, "42704", "SET cannot change \"%s\" (settable: %s)", k->text,
                    admincmd_settable_list());
    size_t i;
    for (i = 0; k->text[i] != '\0'; i++)
        out->key[i] = (char) tolower((unsigned char) k->text[i]);
    out->key[i] = '\0';
    memcpy(out->value, v->text, sizeof(out->value));
    out->kind = ADMINCMD_SET;
    return 0;
}

static int parse_kill(const struct lexer *lx, struct admincmd *out)
{
    if (lx->n != 2)
        return fail(out, "42601", "syntax error: expected KILL_CLIENT id");
    const struct token *t = &lx->tok[1];
    if (t->kind == TOK_EQ)
        return fail(out, "42601", "syntax error: expected KILL_CLIENT id");
    const char *s = t->text;
    if ((s[0] == 'C' || s[0] == 'c') && s[1] == '-')
        s += 2;
    if (*s < '0' || *s > '9')
        return fail(out, "22023", "invalid client id \"%s\" (see the id column of SHOW CLIENTS)",
                    t->text);
    errno = 0;
    char *end;
    unsigned long long id = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || id == 0)
        return fail(out, "22023", "invalid client id \"%s\" (see the id column of SHOW CLIENTS)",
                    t->text);
    out->client_id = (uint64_t) id;
    out->kind = ADMINCMD_KILL_CLIENT;
    return 0;
}

/* RESET key | RESET ALL (persisted policy, issue 5). */
static int parse_reset(const struct lexer *lx, struct admincmd *out)
{
    if (lx->n != 2 || (lx->tok[1].kind != TOK_WORD && lx->tok[1].kind != TOK_DQUOTE))
        return fail(out, "42601", "syntax error: expected RESET key (or RESET ALL)");
    const char *k = lx->tok[1].text;
    if (strcasecmp(k, "all") != 0 && !admincmd_settable(k))
        return fail(out, "42704", "RESET cannot change \"%s\" (settable: %s)", k,
                    admincmd_settable_list());
    size_t i;
    for (i = 0; k[i] != '\0'; i++)
        out->key[i] = (char) tolower((unsigned char) k[i]);
    out->key[i] = '\0';
    out->kind = ADMINCMD_RESET;
    return 0;
}

/* SCALE REPLICAS n (replicas, issue 6). */
static int parse_scale(const struct lexer *lx, struct admincmd *out)
{
    if (lx->n != 3 || !word_is(&lx->tok[1], "REPLICAS") || lx->tok[2].kind != TOK_WORD)
        return fail(out, "42601", "syntax error: expected SCALE REPLICAS n");
    const char *s = lx->tok[2].text;
    char *end;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 || n > ADMINCMD_MAX_REPLICAS)
        return fail(out, "22023", "invalid replica count \"%s\" (0 to %d)", s,
                    ADMINCMD_MAX_REPLICAS);
    out->replicas = (int) n;
    out->kind = ADMINCMD_SCALE_REPLICAS;
    return 0;
}

int admincmd_parse(const char *sql, struct admincmd *out)
{
    memset(out, 0, sizeof(*out));
    struct lexer lx;
    if (lex(sql, &lx, out) != 0)
        return -1;
    if (lx.n == 0) {
        out->kind = ADMINCMD_EMPTY;
        return 0;
    }
    const struct token *cmd = &lx.tok[0];
    if (word_is(cmd, "SHOW"))
        return parse_show(&lx, out);
    if (word_is(cmd, "SET"))
        return parse_set(&lx, out);
    if (word_is(cmd, "KILL_CLIENT"))
        return parse_kill(&lx, out);
    if (word_is(cmd, "RESET"))
        return parse_reset(&lx, out);
    if (word_is(cmd, "SCALE"))
        return parse_scale(&lx, out);
    for (size_t i = 0; i < sizeof(bare_commands) / sizeof(bare_commands[0]); i++) {
        if (!word_is(cmd, bare_commands[i].name))
            continue;
        if (lx.n > 1)
            return fail(out, "42601", "syntax error at \"%s\": %s takes no argument",
                        lx.tok[1].text, bare_commands[i].name);
        out->kind = bare_commands[i].kind;
        return 0;
    }
    return fail(out, "42601", "unknown admin command \"%s\"; SHOW HELP lists the commands",
                cmd->text);
}

const char *admincmd_tag(enum admincmd_kind kind)
{
    switch (kind) {
    case ADMINCMD_EMPTY:
        return "";
    case ADMINCMD_SHOW:
        return "SHOW";
    case ADMINCMD_SET:
        return "SET";
    case ADMINCMD_PAUSE:
        return "PAUSE";
    case ADMINCMD_RESUME:
        return "RESUME";
    case ADMINCMD_RELOAD:
        return "RELOAD";
    case ADMINCMD_SHUTDOWN:
        return "SHUTDOWN";
    case ADMINCMD_WAKE:
        return "WAKE";
    case ADMINCMD_SUSPEND:
        return "SUSPEND";
    case ADMINCMD_KILL_CLIENT:
        return "KILL_CLIENT";
    case ADMINCMD_RESET:
        return "RESET";
    case ADMINCMD_BACKUP:
        return "BACKUP";
    case ADMINCMD_SCALE_REPLICAS:
        return "SCALE";
    }
    return "";
}

const char *admincmd_show_name(enum admincmd_show show)
{
    for (size_t i = 0; i < sizeof(show_objects) / sizeof(show_objects[0]); i++) {
        if (show_objects[i].show == show)
            return show_objects[i].name;
    }
    return "?";
}
