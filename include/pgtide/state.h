/*
 * state: the persisted policy, DATA/state/policy (DESIGN.md §2, §5). Every SET on the admin
 * console is validated here (settable key, type, range, units, rules across keys), written
 * durably, and applied over the configuration at every start and reload: the configuration
 * file and -c give the defaults, the state file overrides them; RESET removes a key from it.
 * The file is rewritten whole on each change (store_write_file: temp file, fsync, rename, fsync
 * of the directory) as "key = value" lines closed by a "crc32c = 0x........" trailer over every
 * byte before it; a file whose trailer is missing or wrong is refused with a clear message,
 * never half-applied.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct config;

#define STATE_POLICY_REL "state/policy" /* relative to DATA */

struct state_item {
    char *key;   /* lower-case */
    char *value; /* as typed after SET (quotes removed) */
};

/* The keys and values of the state file, in file order (sorted by key when saved). */
struct state_policy {
    struct state_item *items;
    int n;
};

/* Returns malloc'd "DATA/state/policy" (caller frees), or NULL when out of memory. */
char *state_policy_path(const char *data_dir) __attribute__((warn_unused_result));

/* Reads path into *p (zeroed first). A missing file is an empty policy. Returns 0, or -1 with
   "PATH: ..." in err: unreadable, a line that is not "key = value", a duplicate key, no
   checksum trailer (truncated) or a checksum mismatch (corrupt). *p is empty on failure. */
int state_policy_load(const char *path, struct state_policy *p, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Writes p durably to path (mode 0600), keys sorted. Returns 0, or -1 with a message. */
int state_policy_save(const char *path, const struct state_policy *p, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The value of key (case-insensitive) or NULL. */
const char *state_policy_get(const struct state_policy *p, const char *key);

/* Adds key = value or replaces its value. Returns 0, or -1 when out of memory (p unchanged). */
int state_policy_put(struct state_policy *p, const char *key, const char *value)
    __attribute__((warn_unused_result));

/* Removes key; returns whether it was there. */
bool state_policy_remove(struct state_policy *p, const char *key);

/* Frees the items; p becomes empty. */
void state_policy_free(struct state_policy *p);

/* Applies every item to cfg with config_set (the file's values override the configuration's),
   then checks the rules across keys (config_validate). Returns 0, or -1 with "NAME: key: why"
   in err (name is the file's path, for the message); cfg may then be partly changed. */
int state_policy_apply(const struct state_policy *p, struct config *cfg, const char *name,
                       char *err, size_t errlen) __attribute__((warn_unused_result));

/* Validates SET key = value against the current snapshot cur: the key must be a policy key
   (admincmd_settable) known to the configuration, the value must have no control character,
   parse with the key's type, units and range, and keep the rules across keys. Returns a new
   snapshot (refcount 1, caller unrefs) with the change applied, or NULL with the message in err
   (e.g. "max_cu: value \"9x\" ..." or "min_cu (2) must not exceed max_cu (1)"). */
struct config *state_policy_check(const struct config *cur, const char *key, const char *value,
                                  char *err, size_t errlen) __attribute__((warn_unused_result));

/* For start-up and reload: loads DATA/state/policy (a missing file is empty) and applies it to
   cfg with state_policy_apply, logging each persisted key. *applied (may be NULL) gets the
   number of keys. Returns 0, or -1 with a message naming the file (unreadable, corrupt, a value
   the configuration refuses). */
int state_policy_load_apply(const char *data_dir, struct config *cfg, int *applied, char *err,
                            size_t errlen) __attribute__((warn_unused_result));

/* Read-modify-write of the state file at path: key = value, or key removed when value is NULL
   (key "all" with NULL removes every key). Durable when it returns 0; -1 with a message (the
   file is then unchanged). *changed (may be NULL) tells whether a removal found the key. */
int state_policy_persist(const char *path, const char *key, const char *value, bool *changed,
                         char *err, size_t errlen) __attribute__((warn_unused_result));
