/*
 * config: the key table and everything driven by it. Each key has a type (string, integer,
 * octal mode, size, duration, compute units, enum), a default written in the same text form
 * that config_get_text() prints, bounds, an optional string check and a reloadable flag.
 * Values are parsed into a scratch field first and stored only when valid, so a failed
 * config_set() leaves the snapshot as it was; a failed file load leaves it untouched because
 * the file is read into a copy that is swapped in only on success. INI syntax is libinih's;
 * a small line reader in front of it counts lines for messages and refuses over-long lines
 * (inih would silently cut them).
 */
#include "pgtide/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

enum key_type {
    KT_STRING,
    KT_INT,
    KT_OCTAL,
    KT_SIZE,
    KT_DURATION,
    KT_UNITS,
    KT_ENUM,
    KT_AUTH,
    KT_FRACTION /* a decimal number in min/100 .. max/100 (cpu_high, cpu_low) */
};

/* String checks return NULL when the value is acceptable, else a static explanation. */
typedef const char *(*string_check_fn)(const char *value);

struct key_def {
    const char *name;
    enum key_type type;
    size_t off;
    const char *def;
    bool reloadable;
    int64_t min, max;
    const char *const *names; /* KT_ENUM / KT_AUTH */
    string_check_fn check;    /* KT_STRING, optional */
};

static const char *const sslmode_names[] = {"disable",   "allow",       "prefer", "require",
                                            "verify-ca", "verify-full", NULL};
static const char *const pool_mode_names[] = {"session", "transaction", "statement", NULL};
static const char *const provider_names[] = {"local", "static", NULL};
static const char *const log_level_names[] = {"debug", "info", "warning", "error", NULL};
static const char *const onoff_names[] = {"off", "on", NULL}; /* read_your_writes, ... */
static const char *const auth_type_names[] = {"trust",    "reject", "md5", "scram-sha-256",
                                              "password", "cert",   NULL};

#define DAY_MS       (86400 * INT64_C(1000))
#define MAX_DURATION (3650 * DAY_MS)
/* sun_path is 108 bytes; "/.s.PGSQL.65535" and the terminating NUL must fit behind the dir. */
#define MAX_SOCKET_DIR 92

static const char *check_nonempty(const char *v)
{
    return v[0] == '\0' ? "must not be empty" : NULL;
}

static const char *check_abs_path_or_empty(const char *v)
{
    return (v[0] == '\0' || v[0] == '/') ? NULL : "must be an absolute path or empty";
}

static const char *check_socket_dir(const char *v)
{
    if (v[0] != '\0' && v[0] != '/')
        return "must be an absolute path or empty";
    return strlen(v) > MAX_SOCKET_DIR ? "is too long for a unix socket path (max 92 bytes)" : NULL;
}

/* A comma list whose items are non-empty after trimming blanks. */
static const char *check_list_items(const char *v)
{
    const char *p = v;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end == start)
            return "has an empty item in its comma list";
        if (*p == '\0')
            return NULL;
        p++;
    }
}

static const char *check_admin_users(const char *v)
{
    return v[0] == '\0' ? NULL : check_list_items(v);
}

static const char *check_listen_addr(const char *v)
{
    if (v[0] == '\0')
        return NULL;
    for (const char *p = v; *p != '\0'; p++) {
        if (!isalnum((unsigned char) *p) && strchr(".:-_%*, \t", *p) == NULL)
            return "must be a comma list of host names or addresses, \"*\" or empty";
    }
    return check_list_items(v);
}

/* database_pool_modes / user_pool_modes: "" or "name=mode[,name=mode...]". */
static const char *check_pool_mode_map(const char *v)
{
    const char *p = v;
    while (*p != '\0') {
        const char *eq = strchr(p, '=');
        const char *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        if (eq == NULL || eq > end || eq == p)
            return "expected name=mode[,name=mode...]";
        size_t ml = (size_t) (end - eq - 1);
        if (!((ml == 7 && !strncasecmp(eq + 1, "session", 7)) ||
              (ml == 11 && !strncasecmp(eq + 1, "transaction", 11)) ||
              (ml == 9 && !strncasecmp(eq + 1, "statement", 9))))
            return "mode must be session, transaction or statement";
        p = *end ? end + 1 : end;
    }
    return NULL;
}

int config_pool_mode_for(const char *map, const char *name, int fallback)
{
    size_t nl = strlen(name);
    const char *p = map;
    while (p != NULL && *p != '\0') {
        const char *eq = strchr(p, '=');
        const char *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        if (eq != NULL && eq < end && (size_t) (eq - p) == nl && !strncmp(p, name, nl)) {
            size_t ml = (size_t) (end - eq - 1);
            if (ml == 11 && !strncasecmp(eq + 1, "transaction", 11))
                return POOL_TRANSACTION;
            if (ml == 9 && !strncasecmp(eq + 1, "statement", 9))
                return POOL_STATEMENT;
            if (ml == 7 && !strncasecmp(eq + 1, "session", 7))
                return POOL_SESSION;
        }
        p = *end ? end + 1 : NULL;
    }
    return fallback;
}

/* metrics_listen: "" (off) or HOST:PORT ([v6]:PORT for IPv6), port 1..65535. */
static const char *check_metrics_listen(const char *v)
{
    if (v[0] == '\0')
        return NULL;
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v || colon[1] == '\0' || strlen(colon + 1) > 5 ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1) || atoi(colon + 1) < 1 ||
        atoi(colon + 1) > 65535)
        return "must be HOST:PORT (e.g. 127.0.0.1:9930, [::1]:9930) or empty (off)";
    return NULL;
}

#define F(field) offsetof(struct config, field)

static const struct key_def keys[] = {
    {"listen_addr", KT_STRING, F(listen_addr), "127.0.0.1", false, 0, 0, NULL, check_listen_addr},
    {"listen_port", KT_INT, F(listen_port), "6432", false, 0, 65535, NULL, NULL},
    {"unix_socket_dir", KT_STRING, F(unix_socket_dir), "/tmp", false, 0, 0, NULL, check_socket_dir},
    {"unix_socket_mode", KT_OCTAL, F(unix_socket_mode), "0777", true, 0, 0777, NULL, NULL},
    {"max_client_conn", KT_INT, F(max_client_conn), "10000", true, 1, 1000000, NULL, NULL},
    {"max_packet_size", KT_SIZE, F(max_packet_size), "1073741823", true, 1024, 1073741823, NULL,
     NULL},
    {"log_level", KT_ENUM, F(log_level), "info", true, 0, 0, log_level_names, NULL},
    {"logfile", KT_STRING, F(logfile), "", true, 0, 0, NULL, NULL},
    {"auth_type", KT_AUTH, F(auth_type), "scram-sha-256", true, 0, 0, auth_type_names, NULL},
    {"auth_file", KT_STRING, F(auth_file), "", true, 0, 0, NULL, NULL},
    {"hba_file", KT_STRING, F(hba_file), "", true, 0, 0, NULL, NULL},
    {"auth_query", KT_STRING, F(auth_query),
     "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1 AND rolcanlogin", true, 0, 0,
     NULL, check_nonempty},
    {"auth_user", KT_STRING, F(auth_user), "", true, 0, 0, NULL, NULL},
    {"authentication_timeout", KT_DURATION, F(authentication_timeout), "1min", true, 1,
     MAX_DURATION, NULL, NULL},
    {"admin_users", KT_STRING, F(admin_users), "postgres", true, 0, 0, NULL, check_admin_users},
    {"client_tls_sslmode", KT_ENUM, F(client_tls_sslmode), "prefer", true, 0, 0, sslmode_names,
     NULL},
    {"client_tls_cert_file", KT_STRING, F(client_tls_cert_file), "", true, 0, 0, NULL, NULL},
    {"client_tls_key_file", KT_STRING, F(client_tls_key_file), "", true, 0, 0, NULL, NULL},
    {"client_tls_ca_file", KT_STRING, F(client_tls_ca_file), "", true, 0, 0, NULL, NULL},
    {"server_tls_sslmode", KT_ENUM, F(server_tls_sslmode), "prefer", true, 0, 0, sslmode_names,
     NULL},
    {"server_tls_ca_file", KT_STRING, F(server_tls_ca_file), "", true, 0, 0, NULL, NULL},
    {"compute_provider", KT_ENUM, F(compute_provider), "local", false, 0, 0, provider_names, NULL},
    {"static_host", KT_STRING, F(static_host), "127.0.0.1", true, 0, 0, NULL, check_nonempty},
    {"static_port", KT_INT, F(static_port), "5432", true, 1, 65535, NULL, NULL},
    {"pg_bindir", KT_STRING, F(pg_bindir), "", false, 0, 0, NULL, check_abs_path_or_empty},
    {"compute_user", KT_STRING, F(compute_user), "postgres", false, 0, 0, NULL, check_nonempty},
    {"compute_units", KT_UNITS, F(compute_units), "1", true, 1, 256, NULL, NULL},
    {"compute_start_timeout", KT_DURATION, F(compute_start_timeout), "1min", true, 1, MAX_DURATION,
     NULL, NULL},
    {"compute_stop_timeout", KT_DURATION, F(compute_stop_timeout), "30s", true, 1, MAX_DURATION,
     NULL, NULL},
    {"pool_mode", KT_ENUM, F(pool_mode), "session", true, 0, 0, pool_mode_names, NULL},
    {"pool_size", KT_INT, F(pool_size), "20", true, 1, 10000, NULL, NULL},
    {"min_pool_size", KT_INT, F(min_pool_size), "0", true, 0, 10000, NULL, NULL},
    {"server_idle_timeout", KT_DURATION, F(server_idle_timeout), "10min", true, 0, MAX_DURATION,
     NULL, NULL},
    {"server_lifetime", KT_DURATION, F(server_lifetime), "1h", true, 0, MAX_DURATION, NULL, NULL},
    {"server_reset_query", KT_STRING, F(server_reset_query), "DISCARD ALL", true, 0, 0, NULL, NULL},
    {"query_wait_timeout", KT_DURATION, F(query_wait_timeout), "2min", true, 0, MAX_DURATION, NULL,
     NULL},
    {"server_connect_timeout", KT_DURATION, F(server_connect_timeout), "15s", true, 1, MAX_DURATION,
     NULL, NULL},
    {"pause_after", KT_DURATION, F(pause_after), "10s", true, 0, MAX_DURATION, NULL, NULL},
    {"suspend_after", KT_DURATION, F(suspend_after), "5min", true, 0, MAX_DURATION, NULL, NULL},
    {"wake_timeout", KT_DURATION, F(wake_timeout), "1min", true, 1, MAX_DURATION, NULL, NULL},
    /* compute units, vertical autoscaling, replica policy (issue 5: compute units) */
    {"replica_units", KT_UNITS, F(replica_units), "1", true, 1, 256, NULL, NULL},
    {"min_cu", KT_UNITS, F(min_cu), "1", true, 1, 256, NULL, NULL},
    {"max_cu", KT_UNITS, F(max_cu), "1", true, 1, 256, NULL, NULL},
    {"scale_window", KT_DURATION, F(scale_window), "30s", true, 1000, 600000, NULL, NULL},
    {"scale_cooldown", KT_DURATION, F(scale_cooldown), "5min", true, 1000, DAY_MS, NULL, NULL},
    {"cpu_high", KT_FRACTION, F(cpu_high), "0.8", true, 1, 100, NULL, NULL},
    {"cpu_low", KT_FRACTION, F(cpu_low), "0.3", true, 0, 99, NULL, NULL},
    {"min_replicas", KT_INT, F(min_replicas), "0", true, 0, 16, NULL, NULL},
    {"max_replicas", KT_INT, F(max_replicas), "0", true, 0, 16, NULL, NULL},
    {"max_replica_lag", KT_SIZE, F(max_replica_lag), "16MB", true, 0, INT64_C(1) << 40, NULL, NULL},
    /* usage accounting and metrics (issue 5: ledger, usage, metrics) */
    {"ledger_heartbeat", KT_DURATION, F(ledger_heartbeat), "5s", true, 1000, 3600000, NULL, NULL},
    {"paused_rate", KT_FRACTION, F(paused_rate), "0.1", true, 0, 100, NULL, NULL},
    {"usage_minimum_charge", KT_DURATION, F(usage_minimum_charge), "0", true, 0, DAY_MS, NULL,
     NULL},
    {"metrics_listen", KT_STRING, F(metrics_listen), "127.0.0.1:9930", false, 0, 0, NULL,
     check_metrics_listen},
    /* transaction pooling (issue 4) */
    {"max_prepared_statements", KT_INT, F(max_prepared_statements), "200", true, 0, 100000, NULL,
     NULL},
    {"database_pool_modes", KT_STRING, F(database_pool_modes), "", true, 0, 0, NULL,
     check_pool_mode_map},
    {"user_pool_modes", KT_STRING, F(user_pool_modes), "", true, 0, 0, NULL, check_pool_mode_map},
    {"server_round_robin", KT_ENUM, F(server_round_robin), "off", true, 0, 0, onoff_names, NULL},
    /* WAL archiving and backups (issue 7) */
    {"archive_timeout", KT_DURATION, F(archive_timeout), "1min", true, 0, DAY_MS, NULL, NULL},
    {"wal_compression_level", KT_INT, F(wal_compression_level), "0", true, 0, 22, NULL, NULL},
    {"backup_schedule", KT_STRING, F(backup_schedule), "", true, 0, 0, NULL, NULL},
    {"backup_timezone", KT_STRING, F(backup_timezone), "UTC", true, 0, 0, NULL, NULL},
    {"backup_keep", KT_INT, F(backup_keep), "7", true, 0, 100000, NULL, NULL},
    {"backup_max_age", KT_DURATION, F(backup_max_age), "0", true, 0, MAX_DURATION, NULL, NULL},
    /* reader endpoint (issue 6: routing) */
    {"read_port", KT_INT, F(read_port), "-1", false, -1, 65535, NULL, NULL},
    /* replica autoscaling (issue 6: replica set) */
    {"replica_scale_wait", KT_DURATION, F(replica_scale_wait), "1s", true, 0, DAY_MS, NULL, NULL},
    /* read-your-writes (issue 6: routing) */
    {"read_your_writes", KT_ENUM, F(read_your_writes), "off", true, 0, 0, onoff_names, NULL},
    /* data-plane worker threads (issue 4: multi-core, hub.h); 0 = hub_default_workers() */
    {"workers", KT_INT, F(workers), "0", false, 0, 31, NULL, NULL},
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const struct key_def *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcasecmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

static char **str_field(struct config *c, const struct key_def *k)
{
    return (char **) ((char *) c + k->off);
}

static char *const *cstr_field(const struct config *c, const struct key_def *k)
{
    return (char *const *) ((const char *) c + k->off);
}

static int *int_field(struct config *c, const struct key_def *k)
{
    return (int *) ((char *) c + k->off);
}

static const int *cint_field(const struct config *c, const struct key_def *k)
{
    return (const int *) ((const char *) c + k->off);
}

static int64_t *i64_field(struct config *c, const struct key_def *k)
{
    return (int64_t *) ((char *) c + k->off);
}

static const int64_t *ci64_field(const struct config *c, const struct key_def *k)
{
    return (const int64_t *) ((const char *) c + k->off);
}

/* ---- number parsing ---- */

/* Reads a non-negative decimal integer at s; returns the end or NULL (no digits / overflow). */
static const char *parse_uint(const char *s, int base, int64_t *out)
{
    int64_t v = 0;
    const char *p = s;
    while (*p != '\0') {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else
            break;
        if (d >= base)
            return NULL;
        if (v > (INT64_MAX - d) / base)
            return NULL;
        v = v * base + d;
        p++;
    }
    if (p == s)
        return NULL;
    *out = v;
    return p;
}

struct unit {
    const char *name;
    int64_t mult;
};

static int parse_with_units(const char *s, const struct unit *units, int64_t bare_mult, bool nocase,
                            int64_t *out)
{
    int64_t n;
    const char *p = parse_uint(s, 10, &n);
    if (p == NULL)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    int64_t mult = bare_mult;
    if (*p != '\0') {
        const struct unit *u = units;
        while (u->name != NULL && (nocase ? strcasecmp(p, u->name) != 0 : strcmp(p, u->name) != 0))
            u++;
        if (u->name == NULL)
            return -1;
        mult = u->mult;
    }
    if (n > INT64_MAX / mult)
        return -1;
    *out = n * mult;
    return 0;
}

static const struct unit duration_units[] = {{"ms", 1},      {"s", 1000},     {"min", 60000},
                                             {"h", 3600000}, {"d", 86400000}, {NULL, 0}};

static const struct unit size_units[] = {{"B", 1},
                                         {"kB", INT64_C(1) << 10},
                                         {"MB", INT64_C(1) << 20},
                                         {"GB", INT64_C(1) << 30},
                                         {"TB", INT64_C(1) << 40},
                                         {NULL, 0}};

int config_parse_duration(const char *s, int64_t *ms)
{
    if (s == NULL)
        return -1;
    return parse_with_units(s, duration_units, 1000, false, ms);
}

int config_parse_size(const char *s, int64_t *bytes)
{
    if (s == NULL)
        return -1;
    return parse_with_units(s, size_units, 1, true, bytes);
}

/* Writes v with the largest unit of the table that divides it exactly; a value whose best
   unit is the base unit is written bare when bare_base is set (sizes in bytes). */
static void format_with_units(char *out, size_t outlen, int64_t v, const struct unit *units,
                              bool bare_base)
{
    const struct unit *best = &units[0];
    for (const struct unit *u = units; u->name != NULL; u++) {
        if (v != 0 && v % u->mult == 0)
            best = u;
    }
    if (v == 0 || (best->mult == 1 && bare_base))
        snprintf(out, outlen, "%" PRId64, v);
    else
        snprintf(out, outlen, "%" PRId64 "%s", v / best->mult, best->name);
}

static int enum_lookup(const char *const *names, const char *v)
{
    for (int i = 0; names[i] != NULL; i++) {
        if (strcasecmp(names[i], v) == 0)
            return i;
    }
    return -1;
}

/* An on/off key also takes the other spellings PostgreSQL and PgBouncer accept for a boolean
   (server_round_robin = 1 is how PgBouncer's users write it). */
static int onoff_lookup(const char *v)
{
    static const char *const yes[] = {"on", "true", "yes", "1", NULL};
    static const char *const no[] = {"off", "false", "no", "0", NULL};
    if (enum_lookup(yes, v) >= 0)
        return 1;
    return enum_lookup(no, v) >= 0 ? 0 : -1;
}

static void enum_list(const char *const *names, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; names[i] != NULL && used < outlen; i++) {
        int n = snprintf(out + used, outlen - used, "%s%s", i ? ", " : "", names[i]);
        if (n < 0)
            break;
        used += (size_t) n;
    }
}

/* ---- setting one key ---- */

static int set_int_like(struct config *c, const struct key_def *k, const char *value, char *err,
                        size_t errlen)
{
    int64_t v;
    const char *what = "an integer";
    int rc;
    if (k->type == KT_INT) {
        bool neg = value[0] == '-' && k->min < 0; /* only keys that allow it: read_port -1 */
        const char *end = parse_uint(value + (neg ? 1 : 0), 10, &v);
        rc = (end != NULL && *end == '\0') ? 0 : -1;
        if (neg)
            v = -v;
    } else if (k->type == KT_OCTAL) {
        const char *end = parse_uint(value, 8, &v);
        rc = (end != NULL && *end == '\0') ? 0 : -1;
        what = "an octal mode such as 0777";
    } else if (k->type == KT_SIZE) {
        rc = config_parse_size(value, &v);
        what = "a size such as 1024, 64kB, 16MB or 1GB";
    } else {
        rc = config_parse_duration(value, &v);
        what = "a duration such as 500ms, 30s, 10min, 2h or 7d";
    }
    if (rc != 0) {
        set_err(err, errlen, "%s: invalid value \"%s\": expected %s", k->name, value, what);
        return -1;
    }
    if (v < k->min || v > k->max) {
        char lo[32], hi[32];
        if (k->type == KT_DURATION) {
            format_with_units(lo, sizeof(lo), k->min, duration_units, false);
            format_with_units(hi, sizeof(hi), k->max, duration_units, false);
        } else if (k->type == KT_OCTAL) {
            snprintf(lo, sizeof(lo), "0%" PRIo64, k->min);
            snprintf(hi, sizeof(hi), "0%" PRIo64, k->max);
        } else {
            snprintf(lo, sizeof(lo), "%" PRId64, k->min);
            snprintf(hi, sizeof(hi), "%" PRId64, k->max);
        }
        set_err(err, errlen, "%s: value \"%s\" is out of range (%s..%s)", k->name, value, lo, hi);
        return -1;
    }
    if (k->type == KT_SIZE || k->type == KT_DURATION)
        *i64_field(c, k) = v;
    else
        *int_field(c, k) = (int) v;
    return 0;
}

/* A whole, finite decimal number (no leading blanks, nothing after it). 0 / -1. */
static int parse_decimal(const char *value, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(value, &end);
    if (value[0] == '\0' || isspace((unsigned char) value[0]) || *end != '\0' || errno != 0 ||
        !isfinite(*out))
        return -1;
    return 0;
}

/* compute_units: a decimal number, a multiple of 0.25 between min/4 and max/4. */
static int set_units(struct config *c, const struct key_def *k, const char *value, char *err,
                     size_t errlen)
{
    double v;
    if (parse_decimal(value, &v) != 0) {
        set_err(err, errlen, "%s: invalid value \"%s\": expected a number such as 0.5 or 2",
                k->name, value);
        return -1;
    }
    double quarters = v * 4.0;
    if (quarters < (double) k->min || quarters > (double) k->max) {
        set_err(err, errlen, "%s: value \"%s\" is out of range (%g..%g)", k->name, value,
                (double) k->min / 4.0, (double) k->max / 4.0);
        return -1;
    }
    if (quarters != floor(quarters)) {
        set_err(err, errlen, "%s: value \"%s\" is not a multiple of 0.25", k->name, value);
        return -1;
    }
    *(double *) ((char *) c + k->off) = v;
    return 0;
}

/* cpu_high, cpu_low: a decimal number between min/100 and max/100. */
static int set_fraction(struct config *c, const struct key_def *k, const char *value, char *err,
                        size_t errlen)
{
    double v;
    if (parse_decimal(value, &v) != 0) {
        set_err(err, errlen, "%s: invalid value \"%s\": expected a fraction such as 0.8", k->name,
                value);
        return -1;
    }
    if (v < (double) k->min / 100.0 || v > (double) k->max / 100.0) {
        set_err(err, errlen, "%s: value \"%s\" is out of range (%g..%g)", k->name, value,
                (double) k->min / 100.0, (double) k->max / 100.0);
        return -1;
    }
    *(double *) ((char *) c + k->off) = v;
    return 0;
}

static int set_enum(struct config *c, const struct key_def *k, const char *value, char *err,
                    size_t errlen)
{
    int v = k->names == onoff_names ? onoff_lookup(value) : enum_lookup(k->names, value);
    if (v < 0) {
        char list[160];
        enum_list(k->names, list, sizeof(list));
        set_err(err, errlen, "%s: invalid value \"%s\": expected one of %s", k->name, value, list);
        return -1;
    }
    if (k->type == KT_AUTH) {
        char *name = strdup(k->names[v]);
        if (name == NULL) {
            set_err(err, errlen, "%s: out of memory", k->name);
            return -1;
        }
        free(c->auth_type_name);
        c->auth_type_name = name;
    }
    *int_field(c, k) = v;
    return 0;
}

static int set_string(struct config *c, const struct key_def *k, const char *value, char *err,
                      size_t errlen)
{
    const char *why = k->check != NULL ? k->check(value) : NULL;
    if (why != NULL) {
        set_err(err, errlen, "%s: invalid value \"%s\": %s", k->name, value, why);
        return -1;
    }
    char *copy = strdup(value);
    if (copy == NULL) {
        set_err(err, errlen, "%s: out of memory", k->name);
        return -1;
    }
    char **field = str_field(c, k);
    free(*field);
    *field = copy;
    return 0;
}

static int set_key(struct config *c, const struct key_def *k, const char *value, char *err,
                   size_t errlen)
{
    switch (k->type) {
    case KT_STRING:
        return set_string(c, k, value, err, errlen);
    case KT_INT:
    case KT_OCTAL:
    case KT_SIZE:
    case KT_DURATION:
        return set_int_like(c, k, value, err, errlen);
    case KT_UNITS:
        return set_units(c, k, value, err, errlen);
    case KT_FRACTION:
        return set_fraction(c, k, value, err, errlen);
    case KT_ENUM:
    case KT_AUTH:
        return set_enum(c, k, value, err, errlen);
    }
    set_err(err, errlen, "%s: internal error: bad key type", k->name);
    return -1;
}

int config_set(struct config *c, const char *name, const char *value, char *err, size_t errlen)
{
    const struct key_def *k = find_key(name);
    if (k == NULL) {
        set_err(err, errlen, "%s: unknown configuration key", name);
        return -1;
    }
    if (value == NULL) {
        set_err(err, errlen, "%s: missing value", k->name);
        return -1;
    }
    return set_key(c, k, value, err, errlen);
}

static void trim_span(const char **start, const char **end)
{
    while (*start < *end && isspace((unsigned char) **start))
        (*start)++;
    while (*end > *start && isspace((unsigned char) (*end)[-1]))
        (*end)--;
}

int config_set_arg(struct config *c, const char *name_eq_value, char *err, size_t errlen)
{
    const char *eq = strchr(name_eq_value, '=');
    const char *ns = name_eq_value, *ne = eq != NULL ? eq : name_eq_value + strlen(name_eq_value);
    trim_span(&ns, &ne);
    char name[128];
    if ((size_t) (ne - ns) >= sizeof(name) || ne == ns) {
        set_err(err, errlen, "-c %s: expected name=value", name_eq_value);
        return -1;
    }
    memcpy(name, ns, (size_t) (ne - ns));
    name[ne - ns] = '\0';
    if (eq == NULL) {
        set_err(err, errlen, "-c %s: expected name=value", name);
        return -1;
    }
    const char *vs = eq + 1, *ve = eq + strlen(eq);
    trim_span(&vs, &ve);
    char *value = strndup(vs, (size_t) (ve - vs));
    if (value == NULL) {
        set_err(err, errlen, "-c %s: out of memory", name);
        return -1;
    }
    char msg[512];
    int rc = config_set(c, name, value, msg, sizeof(msg));
    free(value);
    if (rc != 0)
        set_err(err, errlen, "-c %s", msg);
    return rc;
}

/* ---- lifecycle ---- */

static void free_strings(struct config *c)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].type == KT_STRING) {
            char **f = str_field(c, &keys[i]);
            free(*f);
            *f = NULL;
        }
    }
    free(c->auth_type_name);
    c->auth_type_name = NULL;
    free(c->data_dir);
    c->data_dir = NULL;
}

struct config *config_new_defaults(void)
{
    struct config *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->refcount = 1;
    c->data_dir = strdup("");
    if (c->data_dir == NULL) {
        free(c);
        return NULL;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        if (set_key(c, &keys[i], keys[i].def, NULL, 0) != 0) {
            free_strings(c);
            free(c);
            return NULL;
        }
    }
    return c;
}

struct config *config_copy(const struct config *c)
{
    struct config *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    *n = *c;
    n->refcount = 1;
    /* Clear the borrowed pointers first so a failure below frees only our own copies. */
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].type == KT_STRING)
            *str_field(n, &keys[i]) = NULL;
    }
    n->auth_type_name = NULL;
    n->data_dir = NULL;
    bool ok = true;
    for (size_t i = 0; i < NKEYS && ok; i++) {
        if (keys[i].type == KT_STRING) {
            char **f = str_field(n, &keys[i]);
            *f = strdup(*cstr_field(c, &keys[i]));
            ok = *f != NULL;
        }
    }
    if (ok) {
        n->auth_type_name = strdup(c->auth_type_name);
        n->data_dir = strdup(c->data_dir);
        ok = n->auth_type_name != NULL && n->data_dir != NULL;
    }
    if (!ok) {
        free_strings(n);
        free(n);
        return NULL;
    }
    return n;
}

struct config *config_ref(struct config *c)
{
    __atomic_add_fetch(&c->refcount, 1, __ATOMIC_RELAXED); /* worker threads hold snapshots */
    return c;
}

void config_unref(struct config *c)
{
    if (c == NULL)
        return;
    if (__atomic_sub_fetch(&c->refcount, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    free_strings(c);
    free(c);
}

int config_set_data_dir(struct config *c, const char *dir)
{
    char *copy = strdup(dir);
    if (copy == NULL)
        return -1;
    free(c->data_dir);
    c->data_dir = copy;
    return 0;
}

int config_validate(const struct config *c, char *err, size_t errlen)
{
    if (c->min_pool_size > c->pool_size) {
        set_err(err, errlen, "min_pool_size (%d) must not exceed pool_size (%d)", c->min_pool_size,
                c->pool_size);
        return -1;
    }
    /* compute units, vertical autoscaling, replica policy (issue 5: compute units) */
    if (c->min_cu > c->max_cu) {
        set_err(err, errlen, "min_cu (%g) must not exceed max_cu (%g)", c->min_cu, c->max_cu);
        return -1;
    }
    if (c->cpu_low >= c->cpu_high) {
        set_err(err, errlen, "cpu_low (%g) must be below cpu_high (%g)", c->cpu_low, c->cpu_high);
        return -1;
    }
    if (c->min_replicas > c->max_replicas) {
        set_err(err, errlen, "min_replicas (%d) must not exceed max_replicas (%d)", c->min_replicas,
                c->max_replicas);
        return -1;
    }
    return 0;
}

/* ---- INI loading ---- */

struct load_state {
    struct config *c;
    const char *name;
    const char *text; /* string source, or NULL */
    FILE *fp;         /* file source, or NULL */
    int lineno;
    int err_line; /* first error seen by us (0 = none) */
    char msg[512];
    char *line;
    size_t line_cap;
};

/* Reads one physical line from the source into st->line; returns its length or -1 at EOF. */
static ssize_t next_physical_line(struct load_state *st)
{
    if (st->fp != NULL)
        return getline(&st->line, &st->line_cap, st->fp);
    if (st->text == NULL || *st->text == '\0')
        return -1;
    const char *nl = strchr(st->text, '\n');
    size_t len = nl != NULL ? (size_t) (nl - st->text) + 1 : strlen(st->text);
    if (len + 1 > st->line_cap) {
        char *grown = realloc(st->line, len + 1);
        if (grown == NULL)
            return -1;
        st->line = grown;
        st->line_cap = len + 1;
    }
    memcpy(st->line, st->text, len);
    st->line[len] = '\0';
    st->text += len;
    return (ssize_t) len;
}

static void record_error(struct load_state *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void record_error(struct load_state *st, const char *fmt, ...)
{
    if (st->err_line != 0)
        return;
    st->err_line = st->lineno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
    va_end(ap);
}

/* fgets-style reader handed to inih: one physical line per call, leading blanks removed (so
   an indented line is never taken as an inih continuation line), long lines refused. */
static char *ini_reader_fn(char *str, int num, void *stream)
{
    struct load_state *st = stream;
    ssize_t len = next_physical_line(st);
    if (len < 0)
        return NULL;
    st->lineno++;
    const char *p = st->line;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t rest = (size_t) len - (size_t) (p - st->line);
    if (rest + 1 > (size_t) num) {
        record_error(st, "line too long (at most %d bytes)", num - 2);
        snprintf(str, (size_t) num, "\n");
        return str;
    }
    memcpy(str, p, rest);
    str[rest] = '\0';
    return str;
}

/* Removes one pair of matching quotes around a value. */
static const char *unquote(const char *v, char *buf, size_t buflen)
{
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0] && n - 1 <= buflen) {
        memcpy(buf, v + 1, n - 2);
        buf[n - 2] = '\0';
        return buf;
    }
    return v;
}

static int ini_handler_fn(void *user, const char *section, const char *name, const char *value)
{
    struct load_state *st = user;
    if (st->err_line != 0)
        return 1; /* only the first error is reported */
    if (section[0] != '\0' && strcasecmp(section, "pgtide") != 0) {
        record_error(st, "unknown section [%s]", section);
        return 0;
    }
    char buf[512];
    char msg[sizeof(st->msg)];
    if (config_set(st->c, name, unquote(value, buf, sizeof(buf)), msg, sizeof(msg)) != 0) {
        record_error(st, "%s", msg);
        return 0;
    }
    return 1;
}

/* Parses into a copy of c and swaps it in on success. */
static int load_common(struct config *c, struct load_state *st, char *err, size_t errlen)
{
    struct config *tmp = config_copy(c);
    if (tmp == NULL) {
        set_err(err, errlen, "%s: out of memory", st->name);
        return -1;
    }
    st->c = tmp;
    int rc = ini_parse_stream(ini_reader_fn, st, ini_handler_fn, st);
    free(st->line);
    st->line = NULL;
    if (rc == -2 || (rc == 0 && st->err_line == 0 && st->fp != NULL && ferror(st->fp))) {
        set_err(err, errlen, "%s: %s", st->name, rc == -2 ? "out of memory" : "read error");
        config_unref(tmp);
        return -1;
    }
    if (rc > 0 && (st->err_line == 0 || rc < st->err_line)) {
        set_err(err, errlen, "%s:%d: syntax error (expected name = value or [section])", st->name,
                rc);
        config_unref(tmp);
        return -1;
    }
    if (st->err_line != 0) {
        set_err(err, errlen, "%s:%d: %s", st->name, st->err_line, st->msg);
        config_unref(tmp);
        return -1;
    }
    struct config saved = *c;
    *c = *tmp;
    c->refcount = saved.refcount;
    *tmp = saved;
    tmp->refcount = 1;
    config_unref(tmp);
    return 0;
}

int config_load_file(struct config *c, const char *path, char *err, size_t errlen)
{
    struct load_state st = {.name = path};
    st.fp = fopen(path, "re");
    if (st.fp == NULL) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = load_common(c, &st, err, errlen);
    fclose(st.fp);
    return rc;
}

int config_load_string(struct config *c, const char *text, const char *name, char *err,
                       size_t errlen)
{
    struct load_state st = {.name = name, .text = text};
    return load_common(c, &st, err, errlen);
}

/* ---- printing ---- */

static void format_key(const struct config *c, const struct key_def *k, char *out, size_t outlen)
{
    switch (k->type) {
    case KT_STRING:
        snprintf(out, outlen, "%s", *cstr_field(c, k));
        break;
    case KT_INT:
        snprintf(out, outlen, "%d", *cint_field(c, k));
        break;
    case KT_OCTAL:
        snprintf(out, outlen, "%04o", (unsigned) *cint_field(c, k));
        break;
    case KT_SIZE:
        format_with_units(out, outlen, *ci64_field(c, k), size_units, true);
        break;
    case KT_DURATION:
        format_with_units(out, outlen, *ci64_field(c, k), duration_units, false);
        break;
    case KT_UNITS:
    case KT_FRACTION:
        snprintf(out, outlen, "%g", *(const double *) ((const char *) c + k->off));
        break;
    case KT_ENUM:
    case KT_AUTH: {
        int v = *cint_field(c, k);
        int n = 0;
        while (k->names[n] != NULL)
            n++;
        snprintf(out, outlen, "%s", v >= 0 && v < n ? k->names[v] : "unknown");
        break;
    }
    }
}

bool config_get_text(const struct config *c, const char *key, char *out, size_t outlen)
{
    if (outlen == 0)
        return false;
    out[0] = '\0';
    const struct key_def *k = find_key(key);
    if (k == NULL)
        return false;
    char small[64];
    const char *text = small;
    if (k->type == KT_STRING)
        text = *cstr_field(c, k);
    else
        format_key(c, k, small, sizeof(small));
    size_t n = strlen(text);
    if (n >= outlen)
        return false;
    memcpy(out, text, n + 1);
    return true;
}

void config_foreach(const struct config *c, config_show_fn fn, void *arg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key_def *k = &keys[i];
        if (k->type == KT_STRING) {
            fn(arg, k->name, *cstr_field(c, k), k->def, k->reloadable);
            continue;
        }
        char value[64];
        format_key(c, k, value, sizeof(value));
        fn(arg, k->name, value, k->def, k->reloadable);
    }
}

size_t config_key_count(void)
{
    return NKEYS;
}

bool config_key_reloadable(const char *key)
{
    const struct key_def *k = find_key(key);
    return k != NULL && k->reloadable;
}

static const char *name_of(const char *const *names, int v)
{
    for (int i = 0; names[i] != NULL; i++) {
        if (i == v)
            return names[i];
    }
    return "unknown";
}

const char *config_sslmode_name(int mode)
{
    return name_of(sslmode_names, mode);
}

const char *config_pool_mode_name(int mode)
{
    return name_of(pool_mode_names, mode);
}

const char *config_provider_name(int provider)
{
    return name_of(provider_names, provider);
}

const char *config_log_level_name(int level)
{
    return name_of(log_level_names, level);
}

const char *config_auth_type_name(int type)
{
    return name_of(auth_type_names, type);
}

bool config_is_admin(const struct config *c, const char *user)
{
    size_t ulen = strlen(user);
    if (ulen == 0)
        return false;
    const char *p = c->admin_users;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        const char *s = p, *e = end;
        trim_span(&s, &e);
        if ((size_t) (e - s) == ulen && memcmp(s, user, ulen) == 0)
            return true;
        p = *end == ',' ? end + 1 : end;
    }
    return false;
}

int config_check_reload(const struct config *old, struct config *new, char *msg, size_t len)
{
    int kept = 0;
    size_t used = 0;
    if (len > 0)
        msg[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key_def *k = &keys[i];
        if (k->reloadable)
            continue;
        char a[256], b[256];
        if (k->type == KT_STRING) {
            if (strcmp(*cstr_field(old, k), *cstr_field(new, k)) == 0)
                continue;
        } else {
            format_key(old, k, a, sizeof(a));
            format_key(new, k, b, sizeof(b));
            if (strcmp(a, b) == 0)
                continue;
        }
        if (k->type == KT_STRING) {
            char *copy = strdup(*cstr_field(old, k));
            if (copy == NULL)
                return -1;
            free(*str_field(new, k));
            *str_field(new, k) = copy;
        } else {
            *int_field(new, k) = *cint_field(old, k); /* all fixed keys of this kind are int */
        }
        if (len > 0 && used < len) {
            int n = snprintf(msg + used, len - used, "%s%s", kept ? ", " : "kept: ", k->name);
            if (n > 0)
                used += (size_t) n;
        }
        kept++;
    }
    if (kept > 0 && len > 0 && used < len)
        snprintf(msg + used, len - used, " (restart required)");
    return kept;
}
