/*
 * admincmd: the pure parser of admin console commands (SHOW ..., SET key = value, PAUSE, RESUME,
 * RELOAD, SHUTDOWN, WAKE, SUSPEND, KILL_CLIENT id). It turns one simple-query string into a
 * struct admincmd, or into the SQLSTATE and message of the error the console should answer,
 * without touching sockets or proxy state, so every accepted and refused form is unit-tested.
 * Command words are case-insensitive; a trailing ';' (or several) and blanks are ignored; values
 * may be written bare or quoted ('it''s', "key").
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

enum admincmd_kind {
    ADMINCMD_EMPTY, /* nothing but blanks and semicolons: EmptyQueryResponse */
    ADMINCMD_SHOW,
    ADMINCMD_SET,
    ADMINCMD_PAUSE,
    ADMINCMD_RESUME,
    ADMINCMD_RELOAD,
    ADMINCMD_SHUTDOWN,
    ADMINCMD_WAKE,
    ADMINCMD_SUSPEND,
    ADMINCMD_KILL_CLIENT,
    ADMINCMD_RESET,  /* persisted policy (issue 5): RESET key | RESET ALL; key in admincmd.key */
    ADMINCMD_BACKUP, /* backups (issue 7): take a base backup now, answer when it ends */
    ADMINCMD_SCALE_REPLICAS /* replicas (issue 6): SCALE REPLICAS n, n in admincmd.replicas */
};

enum admincmd_show {
    ADMINCMD_SHOW_HELP,
    ADMINCMD_SHOW_VERSION,
    ADMINCMD_SHOW_CONFIG,
    ADMINCMD_SHOW_CLIENTS,
    ADMINCMD_SHOW_SERVERS,
    ADMINCMD_SHOW_POOLS,
    ADMINCMD_SHOW_STATS,
    ADMINCMD_SHOW_DATABASES,
    ADMINCMD_SHOW_COMPUTES,
    ADMINCMD_SHOW_POLICY,  /* persisted policy (issue 5) */
    ADMINCMD_SHOW_BACKUPS, /* backups (issue 7) */
    ADMINCMD_SHOW_USAGE    /* usage ledger (issue 5): SHOW USAGE [DAY|HOUR], see usage_by */
};

#define ADMINCMD_TOKEN_MAX 256 /* longest word or quoted value, NUL included */

struct admincmd {
    enum admincmd_kind kind;
    enum admincmd_show show;              /* ADMINCMD_SHOW */
    uint64_t client_id;                   /* ADMINCMD_KILL_CLIENT: > 0 */
    char key[ADMINCMD_TOKEN_MAX];         /* ADMINCMD_SET: lower-case, one of the settable keys */
    char value[ADMINCMD_TOKEN_MAX];       /* ADMINCMD_SET: quotes removed, doubled quotes undone */
    char sqlstate[6];                     /* on failure: "42601", "42704" or "22023" */
    char message[ADMINCMD_TOKEN_MAX * 2]; /* on failure: what to tell the admin */
    int usage_by; /* ADMINCMD_SHOW_USAGE: 0 = total, 1 = per hour, 2 = per day (usage.h order) */
    int replicas; /* ADMINCMD_SCALE_REPLICAS: 0..16 (ADMINCMD_MAX_REPLICAS) */
};

#define ADMINCMD_MAX_REPLICAS 16

/* Parses one command from sql (NUL-terminated, not NULL). *out is zeroed first. Returns 0 with
   kind and its arguments set, or -1 with out->sqlstate and out->message set:
   42601 syntax error (unknown command, missing or extra words, bad quoting, more than one
   command, token longer than ADMINCMD_TOKEN_MAX - 1 bytes); 42704 unknown SHOW object or a key
   SET cannot change; 22023 a KILL_CLIENT id that is not a positive integer (optionally written
   "C-<n>" as in the logs). The value of SET is not checked here (config_set does that). */
int admincmd_parse(const char *sql, struct admincmd *out) __attribute__((warn_unused_result));

/* True when SET (and RESET) may change key on a running proxy: the policy keys of DESIGN.md §8
   plus query_wait_timeout, scale_window, scale_cooldown, cpu_high and cpu_low (see
   admincmd_settable_list). key is matched case-insensitively. */
bool admincmd_settable(const char *key);

/* The keys SET accepts, as one comma-separated static string (for messages and SHOW HELP). */
const char *admincmd_settable_list(void);

/* The CommandComplete tag of a command that is not SHOW ("SET", "PAUSE", "RESUME", "RELOAD",
   "SHUTDOWN", "WAKE", "SUSPEND", "KILL_CLIENT"); "SHOW" for SHOW; "" for EMPTY. Static. */
const char *admincmd_tag(enum admincmd_kind kind);

/* Upper-case name of a SHOW object ("CLIENTS", ...); "?" when out of range. Static. */
const char *admincmd_show_name(enum admincmd_show show);
