/*
 * config: pgtide's configuration as a read-only, reference-counted snapshot. A snapshot starts
 * from built-in defaults, then takes an INI file (keys in a [pgtide] section or before any
 * section) and "-c name=value" overrides. Every key is described once in a table (name, type,
 * default, bounds, whether a reload may change it) that drives parsing, validation, printing and
 * SHOW CONFIG. A reload builds a new snapshot with config_copy() + config_load_file(); the old
 * one stays valid for whoever still holds a reference. Durations are stored as milliseconds and
 * sizes as bytes, both in int64_t.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum config_pool_mode { POOL_SESSION, POOL_TRANSACTION, POOL_STATEMENT };
enum config_sslmode {
    SSLMODE_DISABLE,
    SSLMODE_ALLOW,
    SSLMODE_PREFER,
    SSLMODE_REQUIRE,
    SSLMODE_VERIFY_CA,
    SSLMODE_VERIFY_FULL
};
enum config_provider { PROVIDER_LOCAL, PROVIDER_STATIC };
enum config_log_level { LOGL_DEBUG, LOGL_INFO, LOGL_WARNING, LOGL_ERROR };
/* Values of auth_type as config knows them (names: trust, reject, md5, scram-sha-256, password,
   cert). The hba module maps the name (auth_type_name) onto its own method codes. */
enum config_auth_type {
    CONFIG_AUTH_TRUST,
    CONFIG_AUTH_REJECT,
    CONFIG_AUTH_MD5,
    CONFIG_AUTH_SCRAM_SHA_256,
    CONFIG_AUTH_PASSWORD,
    CONFIG_AUTH_CERT
};

/* One snapshot. Every char * member is non-NULL, owned by the snapshot and freed with it.
   Readers must treat a snapshot they did not build as immutable. */
struct config {
    int refcount;
    char *data_dir; /* set by the program from -D (config_set_data_dir), not a key */
    /* listeners */
    char *listen_addr;       /* "127.0.0.1"; comma list; "*" = all v4+v6; "" = no TCP */
    int listen_port;         /* 6432; 0 = a port chosen by the kernel (tests) */
    char *unix_socket_dir;   /* "/tmp"; "" = none; absolute, at most 92 bytes */
    int unix_socket_mode;    /* 0777, written in octal in the file */
    int max_client_conn;     /* 10000 */
    int64_t max_packet_size; /* bytes, 1073741823; accepts 1024, 64kB, 16MB, 1GB */
    /* logging */
    int log_level; /* enum config_log_level; default info */
    char *logfile; /* "" = stderr */
    /* authentication */
    int auth_type;                  /* enum config_auth_type, mirrors auth_type_name */
    char *auth_type_name;           /* "scram-sha-256" (canonical lower-case name) */
    char *auth_file;                /* "" */
    char *hba_file;                 /* "" */
    char *auth_query;               /* SELECT rolname, rolpassword FROM pg_authid ... */
    char *auth_user;                /* "" = the compute's superuser */
    int64_t authentication_timeout; /* ms, 60s */
    char *admin_users;              /* "postgres"; comma list */
    /* TLS toward clients */
    int client_tls_sslmode; /* enum config_sslmode, prefer */
    char *client_tls_cert_file, *client_tls_key_file, *client_tls_ca_file; /* "" = self-signed */
    /* TLS toward a TCP backend */
    int server_tls_sslmode; /* prefer */
    char *server_tls_ca_file;
    /* computes */
    int compute_provider;          /* enum config_provider, local */
    char *static_host;             /* "127.0.0.1" (a path starting with '/' = unix socket dir) */
    int static_port;               /* 5432 */
    char *pg_bindir;               /* "" = detect */
    char *compute_user;            /* "postgres" (used when pgtide runs as root) */
    double compute_units;          /* 1.0, 0.25..64 in steps of 0.25 */
    int64_t compute_start_timeout; /* ms, 60s */
    int64_t compute_stop_timeout;  /* ms, 30s */
    /* pools */
    int pool_mode;                  /* enum config_pool_mode, session */
    int pool_size;                  /* 20, 1..10000 */
    int min_pool_size;              /* 0, 0..10000 (and <= pool_size, see config_validate) */
    int64_t server_idle_timeout;    /* ms, 600s; 0 = never */
    int64_t server_lifetime;        /* ms, 3600s; 0 = unlimited */
    char *server_reset_query;       /* "DISCARD ALL"; "" = none */
    int64_t query_wait_timeout;     /* ms, 120s; 0 = wait forever */
    int64_t server_connect_timeout; /* ms, 15s */
    /* serverless */
    int64_t pause_after;   /* ms, 10s; 0 = never */
    int64_t suspend_after; /* ms, 300s; 0 = never */
    int64_t wake_timeout;  /* ms, 60s */
    /* compute units, vertical autoscaling, replica policy (issue 5: compute units) */
    double replica_units;    /* 1, CU of each replica, 0.25..64 in steps of 0.25 */
    double min_cu;           /* 1, smallest size the autoscaler may choose */
    double max_cu;           /* 1, largest; autoscaling is on when min_cu < max_cu */
    int64_t scale_window;    /* ms, 30s: CPU use is averaged over this window (1s..10min) */
    int64_t scale_cooldown;  /* ms, 5min: low use must last this long before scaling down */
    double cpu_high;         /* 0.8: scale up above this fraction of the current CU */
    double cpu_low;          /* 0.3: scale down below this fraction (must be < cpu_high) */
    int min_replicas;        /* 0 (accepted and persisted; replicas come with a later issue) */
    int max_replicas;        /* 0 */
    int64_t max_replica_lag; /* bytes of WAL, 16MB */
    /* usage accounting and metrics (issue 5: ledger, usage, metrics) */
    int64_t ledger_heartbeat;     /* ms, 5s (1s..1h): ledger heartbeat while a compute runs */
    double paused_rate;           /* 0.1: a paused CU-second costs this much of a running one */
    int64_t usage_minimum_charge; /* ms, 0: shortest billed compute interval (whole seconds) */
    char *metrics_listen;         /* "127.0.0.1:9930"; "" = no metrics endpoint; restart only */
    /* transaction pooling (issue 4) */
    int max_prepared_statements; /* 200: per server connection (LRU); 0 = unbounded */
    char *database_pool_modes;   /* "" or "db=mode,db2=mode": pool_mode per database */
    char *user_pool_modes;       /* "" or "user=mode,...": per user (wins over database) */
    int server_round_robin;      /* 0 = off (default): idle servers reused most recently used first;
                                    1 = on: idle longest first, every server in turn */
    /* WAL archiving and backups (issue 7) */
    int64_t archive_timeout;   /* ms, 60s: a running compute switches WAL at least this often */
    int wal_compression_level; /* 0 (off) .. 22: zstd level of archived WAL */
    char *backup_schedule;     /* "" = none; cron (5 fields or @daily ...) */
    char *backup_timezone;     /* "UTC": zone backup_schedule is read in */
    int backup_keep;           /* 7: complete backups kept; 0 = no count limit */
    int64_t backup_max_age;    /* ms, 0 = no age limit */
    /* reader endpoint (issue 6: routing) */
    int read_port; /* -1 = listen_port + 1 (6433 by default), 0 = none: clients on it are
                      served by replicas (restart only) */
    /* replica autoscaling (issue 6: replica set) */
    int64_t replica_scale_wait; /* ms, 1s: readers waiting longer than this add a replica */
    /* read-your-writes (issue 6: routing, ryw.h) */
    int read_your_writes; /* 0 = off (default), 1 = on: readers see their (database, user)'s
                             commits (replicas that replayed them, else the primary) */
    /* data-plane worker threads (issue 4: multi-core, hub.h) */
    int workers; /* 0 = half the CPUs, one loop below 4 (default); 1 = the main loop alone (no
                    threads); N = N threads */
};

/* Returns a new snapshot holding every default, refcount 1, or NULL when out of memory. */
struct config *config_new_defaults(void) __attribute__((warn_unused_result));

/* Returns a deep copy of c (data_dir included) with refcount 1, or NULL when out of memory.
   This is how a reload starts: copy the current snapshot, load into the copy. */
struct config *config_copy(const struct config *c) __attribute__((warn_unused_result));

/* Takes one more reference on c and returns c. */
struct config *config_ref(struct config *c);

/* Drops one reference; the snapshot and all its strings are freed when the last one goes.
   NULL is accepted and ignored. */
void config_unref(struct config *c);

/* Replaces data_dir with a copy of dir. Returns 0, or -1 when out of memory (c unchanged). */
int config_set_data_dir(struct config *c, const char *dir) __attribute__((warn_unused_result));

/* Reads the INI file at path into c. Keys may appear before any section or in [pgtide]; any
   other section, an unknown key, a bad value or a syntax error fails the whole load and leaves
   c untouched. Values may be wrapped in '...' or "..." (to keep outer blanks); " ;" starts a
   comment. Lines are limited to 198 bytes (libinih's line buffer); longer ones are refused. Returns
   0, or -1 with "path:line: key: message" (or "path: message" when the file cannot be read) in err.
 */
int config_load_file(struct config *c, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Same as config_load_file() for INI text held in memory; name is used in messages in place
   of the path. */
int config_load_string(struct config *c, const char *text, const char *name, char *err,
                       size_t errlen) __attribute__((warn_unused_result));

/* Sets one key (name matched case-insensitively) from its text form. Returns 0, or -1 with
   "name: message" in err (unknown key, bad value, out of range, out of memory); c is unchanged
   on failure. */
int config_set(struct config *c, const char *name, const char *value, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The "-c name=value" form: splits at the first '=', trims blanks around both halves, then
   config_set(). Returns 0, or -1 with "-c name: message" in err. */
int config_set_arg(struct config *c, const char *name_eq_value, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Checks rules that involve several keys (min_pool_size <= pool_size, min_cu <= max_cu,
   cpu_low < cpu_high, min_replicas <= max_replicas). Call once after
   the file and every -c override have been applied. Returns 0, or -1 with a message. */
int config_validate(const struct config *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Parses a duration: a bare non-negative integer is seconds; units ms, s, min, h, d may follow,
   optionally after blanks ("500ms", "30s", "10min", "2h", "7d"). Returns 0 and stores
   milliseconds in *ms, or -1 (garbage, negative, overflow) leaving *ms unchanged. */
int config_parse_duration(const char *s, int64_t *ms) __attribute__((warn_unused_result));

/* Parses a size: a bare non-negative integer is bytes; units B, kB, MB, GB, TB (powers of 1024,
   case-insensitive) may follow. Returns 0 and stores bytes, or -1 leaving *bytes unchanged. */
int config_parse_size(const char *s, int64_t *bytes) __attribute__((warn_unused_result));

/* Called by config_foreach for each key in table order: the current value as text, the default
   as text (same formatting, so value and default compare equal with strcmp when unchanged) and
   whether a reload can change it. The strings are valid only during the call. */
typedef void (*config_show_fn)(void *arg, const char *key, const char *value,
                               const char *default_value, bool reloadable);

/* Calls fn for every key, in table order. */
void config_foreach(const struct config *c, config_show_fn fn, void *arg);

/* Number of keys in the table (what config_foreach visits). */
size_t config_key_count(void);

/* Writes the value of key (case-insensitive) as text into out (durations and sizes with the
   largest exact unit, octal modes as 0NNN, enums by name). Returns false when the key is
   unknown or out is too small (out is then the empty string). */
bool config_get_text(const struct config *c, const char *key, char *out, size_t outlen)
    __attribute__((warn_unused_result));

/* True when key exists and a reload may change it. */
bool config_key_reloadable(const char *key);

/* Names of enum values ("prefer", "session", ...); "unknown" for values out of range. The
   returned strings are static. */
const char *config_sslmode_name(int mode);
const char *config_pool_mode_name(int mode);
const char *config_provider_name(int provider);
const char *config_log_level_name(int level);
const char *config_auth_type_name(int type);

/* True when user is one of the comma-separated names in admin_users (exact, case-sensitive,
   blanks around names ignored). */
bool config_is_admin(const struct config *c, const char *user);

/* The pool mode that a "name=mode,..." map (database_pool_modes, user_pool_modes) gives name,
   or fallback when it names it not. */
int config_pool_mode_for(const char *map, const char *name, int fallback);

/* For a reload: every key that cannot change without a restart (listen_addr, listen_port,
   unix_socket_dir, compute_provider, pg_bindir, compute_user) and differs between old and
   new gets the old value copied back into new. msg receives "kept: key1, key2 (restart
   required)" or "" when nothing was kept. Returns the number of keys kept, or -1 when out of
   memory (new is then partly restored; discard it). */
int config_check_reload(const struct config *old, struct config *new, char *msg, size_t len)
    __attribute__((warn_unused_result));
