/*
 * startup: sorts a client's startup parameters into those servers report and the settings they
 * do not, and takes pgtide's own routing option out (see pgtide/startup.h).
 */
#include "pgtide/startup.h"

#include <stdlib.h>
#include <string.h>

int startup_parse_options(struct startup_lists *l, const char *opts)
{
    char item[1024];
    const char *q = opts;
    while (*q != '\0') {
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q == '\0')
            break;
        size_t k = 0;
        while (*q != '\0' && *q != ' ' && *q != '\t') {
            if (*q == '\\' && q[1] != '\0')
                q++;
            if (k + 1 >= sizeof(item))
                return -2;
            item[k++] = *q++;
        }
        item[k] = '\0';
        if (strcmp(item, "-c") == 0)
            continue;
        char *kv = item;
        if (strncmp(kv, "--", 2) == 0 || strncmp(kv, "-c", 2) == 0)
            kv += 2;
        char *eq = strchr(kv, '=');
        if (eq == NULL || eq == kv)
            return -2;
        *eq = '\0';
        for (char *d = kv; *d != '\0'; d++)
            if (*d == '-')
                *d = '_';
        int rc = txn_param_put(&l->set, &l->nset, &l->set_cap, kv, eq + 1);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* options=-c pgtide.route=replica|primary is pgtide's, not the server's: take it out. */
static int take_route(struct startup_lists *l)
{
    for (int i = 0; i < l->nset; i++) {
        if (strcmp(l->set[i].name, "pgtide.route") != 0)
            continue;
        if (strcmp(l->set[i].value, "replica") == 0)
            l->route = STARTUP_ROUTE_REPLICA;
        else if (strcmp(l->set[i].value, "primary") == 0)
            l->route = STARTUP_ROUTE_PRIMARY;
        else
            return -2;
        free(l->set[i].name);
        free(l->set[i].value);
        l->set[i] = l->set[--l->nset];
        return 0;
    }
    return 0;
}

int startup_sort(const struct pkt_startup *st, struct startup_lists *l)
{
    for (int i = 0; i < st->nparams; i++) {
        const char *n = st->params[i].name, *v = st->params[i].value;
        int rc = 0;
        if (!strcmp(n, "user") || !strcmp(n, "database") || !strcmp(n, "replication") ||
            !strncmp(n, "_pq_.", 5))
            continue;
        if (!strcmp(n, "options")) {
            rc = startup_parse_options(l, v);
            if (rc == 0)
                rc = take_route(l);
        } else if (txn_param_is_reported(n))
            rc = txn_param_put(&l->rep, &l->nrep, &l->rep_cap, n, v);
        else
            rc = txn_param_put(&l->set, &l->nset, &l->set_cap, n, v);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void startup_lists_free(struct startup_lists *l)
{
    txn_param_free(&l->rep, &l->nrep, &l->rep_cap);
    txn_param_free(&l->set, &l->nset, &l->set_cap);
}
