/*
 * park: snapshot and replay of idle sessions around a suspend. The snapshot is one query on
 * the session's own server connection; its rows are kept on the client as a list of items.
 * The replay is built as protocol messages and sent by the server connection's SETUP step.
 */
#include "pgtide/park.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtide/client.h"
#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/hub.h"
#include "pgtide/log.h"
#include "pgtide/pkt.h"
#include "pgtide/pool.h"
#include "pgtide/proxy.h"
#include "pgtide/server.h"

/* The rows are items (k, n, v, t); the outer query applies the size rule to all of them,
   including the custom settings server_snapshot adds before park_snapshot_end. */
#define PARK_TOO_LONG "pg_catalog.octet_length(v) > " PARK_ITEM_MAX
const char park_snapshot_sql[] =
    "SELECT CASE WHEN " PARK_TOO_LONG " THEN 'x' ELSE k END, CASE WHEN " PARK_TOO_LONG " THEN "
    "CASE WHEN k = 's' THEN 'a setting' ELSE 'a prepared statement' END || ' longer "
    "than " PARK_ITEM_MAX " bytes' ELSE n END, CASE WHEN " PARK_TOO_LONG
    " THEN NULL ELSE v END, t FROM ("
    "SELECT 's', name, pg_catalog.current_setting(name), NULL FROM pg_catalog.pg_settings "
    "WHERE source = 'session' "
    "UNION ALL SELECT CASE WHEN from_sql THEN 'q' ELSE 'p' END, name, statement, "
    "pg_catalog.array_to_string(parameter_types::pg_catalog.oid[], ',') "
    "FROM pg_catalog.pg_prepared_statements "
    "UNION ALL SELECT 'x', 'temporary tables', NULL, NULL WHERE EXISTS (SELECT 1 FROM "
    "pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) "
    "UNION ALL SELECT 'x', 'LISTEN', NULL, NULL WHERE EXISTS (SELECT 1 FROM "
    "pg_catalog.pg_listening_channels()) "
    "UNION ALL SELECT 'x', 'advisory locks', NULL, NULL WHERE EXISTS (SELECT 1 FROM "
    "pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) "
    "UNION ALL SELECT 'x', 'open cursors', NULL, NULL WHERE EXISTS (SELECT 1 FROM "
    "pg_catalog.pg_cursors)";
const char park_snapshot_end[] = ") AS items(k, n, v, t)";

void park_clear(struct client *c)
{
    struct park_item *it = c->parked;
    while (it != NULL) {
        struct park_item *next = it->next;
        free(it->name);
        free(it->text);
        free(it->types);
        free(it);
        it = next;
    }
    c->parked = NULL;
}

bool park_in_progress(const struct proxy *p)
{
    return p->parking > 0 || p->park_ending;
}

/* A session that can be snapshotted now: idle, attached, nothing buffered either way. */
static bool snapshot_candidate(const struct client *c)
{
    const struct server *s = c->server;
    return c->state == CLIENT_ACTIVE && !c->close_pending && s != NULL &&
           s->state == SERVER_ACTIVE && s->in_flight == 0 && s->txn == 'I' &&
           !relay_has_pending(&c->conn) && !relay_has_pending(&s->conn) && !client_out_pending(c);
}

/* Home, with the workers stopped (or none). */
static void suspend_now(struct proxy *home)
{
    for (int i = 0; i < proxy_count(home); i++)
        pool_close_idle_all(proxy_nth(home, i));
    if (compute_suspend(home->primary) != 0)
        log_warn("could not suspend the compute (state %s)",
                 compute_state_name(compute_get_state(home->primary)));
}

int park_begin(struct proxy *home)
{
    int n = 0;
    home->park_failed = false;
    home->park_reason[0] = '\0';
    for (int i = 0; i < proxy_count(home); i++) {
        struct proxy *p = proxy_nth(home, i);
        struct list_node *it, *tmp;
        list_for_each_safe(it, tmp, &p->clients)
        {
            struct client *c = container_of(it, struct client, node);
            if (!snapshot_candidate(c))
                continue;
            server_snapshot(c->server);
            if (c->server != NULL && c->server->state == SERVER_PARK) {
                n++;
                home->parking++;
            }
        }
    }
    if (n == 0)
        suspend_now(home);
    else
        log_info("parking %d idle session%s before suspending", n, n == 1 ? "" : "s");
    return n;
}

static char *dup_col(const uint8_t *p, int32_t len)
{
    if (len < 0)
        return NULL;
    char *s = malloc((size_t) len + 1);
    if (s != NULL) {
        memcpy(s, p, (size_t) len);
        s[len] = '\0';
    }
    return s;
}

void park_row(struct server *s, const uint8_t *body, uint32_t blen)
{
    struct client *c = s->client;
    if (c == NULL || blen < 2)
        return;
    uint16_t ncols = (uint16_t) ((body[0] << 8) | body[1]);
    if (ncols != 4)
        return;
    char *cols[4] = {NULL, NULL, NULL, NULL};
    uint32_t off = 2;
    for (int i = 0; i < 4; i++) {
        if (off + 4 > blen)
            goto bad;
        int32_t len = (int32_t) (((uint32_t) body[off] << 24) | ((uint32_t) body[off + 1] << 16) |
                                 ((uint32_t) body[off + 2] << 8) | body[off + 3]);
        off += 4;
        if (len > 0 && (uint32_t) len > blen - off)
            goto bad;
        cols[i] = dup_col(body + off, len);
        if (len > 0)
            off += (uint32_t) len;
    }
    if (cols[0] == NULL || cols[1] == NULL)
        goto bad;
    if (cols[0][0] == 'x') {
        client_set_blocker(c, cols[1]);
        goto bad;
    }
    struct park_item *item = calloc(1, sizeof(*item));
    if (item == NULL)
        goto bad;
    item->kind = cols[0][0];
    item->name = cols[1];
    item->text = cols[2];
    item->types = cols[3];
    free(cols[0]);
    /* keep the snapshot's order: settings first, statements after */
    struct park_item **tail = &c->parked;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = item;
    return;
bad:
    for (int i = 0; i < 4; i++)
        free(cols[i]);
}

/* Tells an admin client that asked for SUSPEND how the round ended (home). */
static void answer_waiter(struct proxy *p)
{
    uint64_t id = p->suspend_waiter;
    p->suspend_waiter = 0;
    if (id == 0)
        return;
    struct list_node *it;
    for (it = p->clients.next; it != &p->clients; it = it->next) {
        struct client *a = container_of(it, struct client, node);
        if (a->id != id || a->state != CLIENT_ADMIN)
            continue;
        a->admin_waiting = false;
        struct pkt_builder *ob = client_out(a);
        if (p->park_failed) {
            pkt_write_error(ob, "ERROR", "55000", p->park_reason, NULL, NULL);
        } else {
            pkt_write_command_complete(ob, "SUSPEND");
        }
        pkt_write_ready(ob, 'I');
        client_flush_out(a);
        client_pump_admin(a);
        return;
    }
}

void park_round_end(struct proxy *home)
{
    if (home->hub != NULL && !hub_on_main()) {
        /* home ends it, on the main thread; until then no new round starts (it would be ended
           by this message, its snapshots still running) */
        hub_lock(home);
        home->park_ending = true;
        hub_unlock(home);
        struct hub_msg m = {.kind = HUB_PARKED};
        hub_post(home, &m);
        return;
    }
    home->park_ending = false;
    if (!home->park_failed) {
        hub_stw_begin(home->hub);
        suspend_now(home);
        hub_stw_end(home->hub);
    }
    answer_waiter(home);
}

void park_server_lost(struct proxy *p)
{
    struct proxy *home = p->home;
    hub_lock(p);
    bool end = home->parking > 0 && --home->parking == 0;
    home->park_failed = true;
    hub_unlock(p);
    if (end)
        park_round_end(home);
}

/* One server's snapshot is over. */
void park_done(struct server *s, const char *error)
{
    struct proxy *p = s->pool->proxy, *home = p->home;
    struct client *c = s->client;
    hub_lock(p); /* the round's state is home's */
    bool counted = home->parking > 0;
    if (counted)
        home->parking--;
    bool keep = error != NULL || c == NULL || c->park_blocker != NULL ||
                relay_has_pending(&c->conn) || c->close_pending;
    if (error != NULL && c != NULL) {
        char why[128];
        snprintf(why, sizeof(why), "snapshot failed: %.90s", error);
        client_set_blocker(c, why);
    }
    if (keep) {
        /* back to relaying; whatever the client sent meanwhile goes through now */
        if (c != NULL)
            park_clear(c);
        home->park_failed = true;
        if (c != NULL && c->park_blocker != NULL)
            snprintf(home->park_reason, sizeof(home->park_reason),
                     "cannot suspend: client C-%llu cannot be parked: %s",
                     (unsigned long long) c->id, c->park_blocker);
        else
            snprintf(home->park_reason, sizeof(home->park_reason),
                     "cannot suspend: a session became busy while it was being parked");
        server_set_state(s, SERVER_ACTIVE);
        if (c != NULL) {
            char tag[160];
            if (c->park_blocker != NULL)
                log_info("%s cannot be parked: %s; the compute stays up",
                         client_tag(c, tag, sizeof(tag)), c->park_blocker);
            client_pump(c);
            server_pump(s);
        }
    } else {
        s->client = NULL;
        c->server = NULL;
        client_park(c);
        server_set_state(s, SERVER_ACTIVE); /* its snapshot is in: not a lost one */
        server_close(s, "session parked");
    }
    bool end = counted && home->parking == 0;
    hub_unlock(p);
    if (end)
        park_round_end(home);
}

int park_replay(const struct client *c, struct pkt_builder *b)
{
    if (c->parked == NULL)
        return 0;
    /* the settings in one query, each SQL PREPARE in a query of its own: a query is one implicit
       transaction, and a statement that no longer prepares (its table was dropped) must not
       roll back the settings (search_path, a tenant for row-level security) or the others */
    struct pkt_builder q;
    pkt_builder_init_dyn(&q, 512);
    int rfq = 0;
    bool any_set = false;
    for (const struct park_item *it = c->parked; it != NULL; it = it->next) {
        if (it->kind == 's' && it->text != NULL) {
            server_append_set(&q, it->name, it->text);
            any_set = true;
        }
    }
    pkt_put_bytes(&q, "", 1);
    if (any_set && !q.failed) {
        pkt_write_query(b, (const char *) q.buf);
        rfq++;
    }
    pkt_builder_free(&q);
    for (const struct park_item *it = c->parked; it != NULL; it = it->next) {
        if (it->kind == 'q' && it->text != NULL) {
            pkt_write_query(b, it->text);
            rfq++;
        }
    }
    for (const struct park_item *it = c->parked; it != NULL; it = it->next) {
        if (it->kind != 'p' || it->text == NULL)
            continue;
        uint32_t oids[256];
        uint16_t n = 0;
        for (const char *t = it->types ? it->types : ""; *t && n < 256;) {
            oids[n++] = (uint32_t) strtoul(t, (char **) &t, 10);
            if (*t == ',')
                t++;
        }
        pkt_write_parse(b, it->name, it->text, n, oids);
        pkt_write_sync(b);
        rfq++;
    }
    return rfq;
}
