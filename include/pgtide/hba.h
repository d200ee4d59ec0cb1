/*
 * hba: pg_hba-like rules that choose how a client authenticates at the proxy. File lines are
 * "TYPE DATABASE USER [ADDRESS] METHOD" with TYPE local|host|hostssl|hostnossl (no ADDRESS for
 * local), DATABASE and USER "all", a name or a comma list (a quoted name is literal, so "all" in
 * quotes is a user called all; DATABASE may also be "sameuser"), ADDRESS "all" or an IPv4/IPv6
 * address with an optional /prefix (none = the single host), METHOD
 * trust|reject|md5|scram-sha-256|password|cert ("cert" only on hostssl). '#' starts a comment.
 * "+group", "@file", "samerole", "replication", "addr mask" pairs and options after the method
 * are refused with an error. First match wins; no match means reject. An IPv4-mapped IPv6 client
 * address (::ffff:a.b.c.d) also matches IPv4 rules.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

enum hba_method { HBA_REJECT, HBA_TRUST, HBA_MD5, HBA_SCRAM, HBA_PASSWORD, HBA_CERT };

struct hba;

/* Reads and parses the file at path. Returns the rules (free with hba_free), or NULL with
   "path:line: reason" (or "path: reason" for I/O errors) in err. */
struct hba *hba_load(const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Parses text (NUL-terminated); name prefixes error messages ("name:line: reason"). Returns the
   rules, or NULL with the reason in err. An empty text gives an empty set (everything rejected). */
struct hba *hba_parse(const char *text, const char *name, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The method of the first rule matching the connection: is_unix for unix-socket clients (addr is
   then ignored and may be NULL), is_tls when TCP with TLS, addr the client's AF_INET/AF_INET6
   address (NULL: only rules with address "all" can match). HBA_REJECT when nothing matches. */
enum hba_method hba_match(const struct hba *h, bool is_unix, bool is_tls,
                          const struct sockaddr *addr, const char *database, const char *user)
    __attribute__((warn_unused_result));

/* Line number (1-based) of the rule that hba_match would pick, or 0 when none matches (logs). */
int hba_match_line(const struct hba *h, bool is_unix, bool is_tls, const struct sockaddr *addr,
                   const char *database, const char *user) __attribute__((warn_unused_result));

/* Stable name of a method as written in the file ("scram-sha-256", ...). */
const char *hba_method_name(enum hba_method m);

/* Parses a method name (the file's spellings, plus "plain" for password as PgBouncer's
   auth_type). Returns true and sets *out, or false for an unknown name. */
bool hba_method_parse(const char *name, enum hba_method *out) __attribute__((warn_unused_result));

/* Number of rules. */
int hba_count(const struct hba *h);

/* Frees the rules. NULL is accepted. */
void hba_free(struct hba *h);
