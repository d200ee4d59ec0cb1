/*
 * userlist: the auth_file in PgBouncer's format, one user per line: "user" "secret" (double
 * quotes, a doubled "" inside is a literal quote, fields after the second ignored, blank lines and
 * lines starting with ';' or '#' ignored). The secret is a SCRAM verifier, an md5 hash or a
 * plaintext password, validated with secret_parse at load. Lookups go through a hash table, so
 * files with many thousands of users stay fast. A later line for the same user replaces an earlier
 * one, as in PgBouncer.
 */
#pragma once

#include <stddef.h>

struct userlist;

/* Reads and parses the file at path. Returns a new list (free with userlist_free), or NULL with
   "path:line: reason" (or "path: reason" for I/O errors) in err. */
struct userlist *userlist_load(const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Parses text (NUL-terminated); name_for_errors prefixes error messages ("name:line: reason").
   Returns a new list, or NULL with the reason in err. */
struct userlist *userlist_parse(const char *text, const char *name_for_errors, char *err,
                                size_t errlen) __attribute__((warn_unused_result));

/* The secret text stored for user (owned by the list, valid until userlist_free), or NULL. */
const char *userlist_get(const struct userlist *ul, const char *user)
    __attribute__((warn_unused_result));

/* Number of distinct users. */
int userlist_count(const struct userlist *ul);

/* Wipes the secrets and frees the list. NULL is accepted. */
void userlist_free(struct userlist *ul);
