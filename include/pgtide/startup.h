/*
 * startup: sorting a client's startup parameters. The StartupMessage's parameters other than
 * user, database and protocol extensions become two lists: the ones servers report back with
 * ParameterStatus (application_name, TimeZone, DateStyle, ...) and the settings servers do not
 * report (each `-c name=value` or `--name=value` of the options parameter, and any other name).
 * options=-c pgtide.route=replica|primary is pgtide's own and is taken out. Pure: no I/O, no
 * proxy state; the client keeps the lists as shared copies (txn_pset).
 */
#pragma once

#include "pgtide/pkt.h"
#include "pgtide/txn.h"

/* Where the client asked to be routed with options=-c pgtide.route=... */
enum startup_route { STARTUP_ROUTE_PORT, STARTUP_ROUTE_REPLICA, STARTUP_ROUTE_PRIMARY };

struct startup_lists {
    struct client_param *rep, *set; /* reported by servers; settings servers do not report */
    int nrep, rep_cap, nset, set_cap;
    enum startup_route route; /* STARTUP_ROUTE_PORT: as the port says */
};

/* Sorts st's parameters into l (zeroed by the caller). Returns 0, -1 out of memory, or -2 when
   they are invalid: a malformed options setting (an item without '=', one over 1 kB, a route
   other than replica or primary) or more than CLIENT_MAX_PARAMS in one list. On failure l may
   hold part of the lists: free it either way. */
int startup_sort(const struct pkt_startup *st, struct startup_lists *l);

/* Splits an options value ("-c a=b --c-d=e", backslash escapes a space) into l->set, with
   '-' in names turned into '_' as PostgreSQL does. Returns as startup_sort. */
int startup_parse_options(struct startup_lists *l, const char *opts);

void startup_lists_free(struct startup_lists *l);
