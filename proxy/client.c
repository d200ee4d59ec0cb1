/*
 * client: the client side of the data plane. It reads startup-phase packets (TLS and GSS
 * encryption requests, cancel requests, the StartupMessage), authenticates the user at the
 * proxy (SCRAM-SHA-256[-PLUS], md5, password, trust, cert, reject, chosen by hba rules), then
 * holds the client until the compute runs and a server connection is free, and finally relays
 * the client's messages to that server. Errors pgtide raises itself are ErrorResponses with a
 * SQLSTATE. client_set_state() is the single place where a client's state changes.
 */
#include "pgtide/client.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/un.h>
#include <unistd.h>

#include "pgtide/admin.h"
#include "pgtide/hub.h"
#include "pgtide/authdb.h"
#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/hba.h"
#include "pgtide/log.h"
#include "pgtide/metrics.h"
#include "pgtide/park.h"
#include "pgtide/pkt.h"
#include "pgtide/pool.h"
#include "pgtide/proxy.h"
#include "pgtide/replica.h"
#include "pgtide/ryw.h"
#include "pgtide/server.h"
#include "pgtide/sqlscan.h"
#include "pgtide/startup.h"
#include "pgtide/tls.h"

static const char *const state_names[] = {"tls",     "startup", "lookup", "auth", "held",
                                          "waiting", "active",  "admin",  "idle", "closing"};

const char *client_state_name(enum client_state s)
{
    return s <= CLIENT_CLOSING ? state_names[s] : "?";
}

const char *client_addr_text(const struct client *c, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (c->is_unix) {
        snprintf(buf, len, "unix");
        return buf;
    }
    if (c->addr.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &c->addr.in.sin_addr, host, sizeof(host));
        port = ntohs(c->addr.in.sin_port);
    } else if (c->addr.sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &c->addr.in6.sin6_addr, host, sizeof(host));
        port = ntohs(c->addr.in6.sin6_port);
    }
    snprintf(buf, len, "%s:%d", host, port);
    return buf;
}

const char *client_tag(const struct client *c, char *buf, size_t len)
{
    char addr[CLIENT_ADDR_TEXT];
    snprintf(buf, len, "C-%llu %s/%s@%s", (unsigned long long) c->id,
             c->database ? c->database : "-", c->user ? c->user : "-",
             client_addr_text(c, addr, sizeof(addr)));
    return buf;
}

/* The blocker a client gets when its text cannot be copied (never freed). */
static char oom_blocker[] = "unknown (out of memory)";

void client_set_blocker(struct client *c, const char *why)
{
    if (why != NULL && why[0] == '\0')
        why = NULL;
    if (c->park_blocker == NULL && why == NULL)
        return;
    if (c->park_blocker != oom_blocker)
        free(c->park_blocker);
    c->park_blocker = why != NULL ? strndup(why, 127) : NULL;
    if (why != NULL && c->park_blocker == NULL)
        c->park_blocker = oom_blocker; /* still a blocker: parking must not lose what it is */
}

#define CLOG(lvl, c, fmt, ...)                                                                     \
    do {                                                                                           \
        char tag_[160];                                                                            \
        log_write(lvl, "%s " fmt, client_tag(c, tag_, sizeof(tag_)), ##__VA_ARGS__);               \
    } while (0)

static void io_set(struct ev_loop *loop, ev_io *w, bool on)
{
    if (on && !ev_is_active(w))
        ev_io_start(loop, w);
    else if (!on && ev_is_active(w))
        ev_io_stop(loop, w);
}

bool client_state_legal(enum client_state from, enum client_state to)
{
    if (to == CLIENT_CLOSING)
        return true;
    switch (from) {
    case CLIENT_TLS:
        return to == CLIENT_STARTUP;
    case CLIENT_STARTUP: /* trust and cert logins skip LOOKUP and AUTH */
    case CLIENT_AUTH:
        return (from == CLIENT_STARTUP && (to == CLIENT_TLS || to == CLIENT_LOOKUP)) ||
               to == CLIENT_ADMIN || to == CLIENT_HELD || to == CLIENT_WAITING || to == CLIENT_IDLE;
    case CLIENT_LOOKUP:
        return to == CLIENT_AUTH;
    case CLIENT_HELD:
        return to == CLIENT_WAITING;
    case CLIENT_WAITING: /* HELD: a reader whose replica was unreachable waits for the primary */
        return to == CLIENT_ACTIVE || to == CLIENT_HELD;
    case CLIENT_ACTIVE:
        return to == CLIENT_IDLE;
    case CLIENT_IDLE:
        return to == CLIENT_HELD || to == CLIENT_WAITING;
    default:
        return false;
    }
}

void client_set_state(struct client *c, enum client_state to)
{
    enum client_state from = c->state;
    if (from == to)
        return;
    assert(client_state_legal(from, to));
    struct proxy *p = c->proxy;
    if (from == CLIENT_HELD)
        list_del(&c->wait_node);
    if (from == CLIENT_WAITING && c->pool != NULL)
        pool_cancel_wait(c->pool, c);
    if (to == CLIENT_HELD)
        list_add_tail(&p->held, &c->wait_node);
    if (to == CLIENT_HELD || to == CLIENT_WAITING) {
        if (c->wait_start_ms == 0)
            c->wait_start_ms = proxy_now_ms();
    } else if (c->wait_start_ms != 0) {
        p->stats.wait_time_us += (uint64_t) (proxy_now_ms() - c->wait_start_ms) * 1000;
        metrics_observe_wait(p->metrics, (uint64_t) (proxy_now_ms() - c->wait_start_ms) * 1000);
        c->wait_start_ms = 0;
    }
    c->state = to;
    if (log_enabled(LOG_LVL_DEBUG))
        CLOG(LOG_LVL_DEBUG, c, "%s -> %s", client_state_name(from), client_state_name(to));
}

static void arm_timer(struct client *c, int64_t ms)
{
    ev_timer_stop(c->proxy->loop, &c->timer);
    if (ms > 0) {
        ev_timer_set(&c->timer, (double) ms / 1000.0, 0.0);
        ev_timer_start(c->proxy->loop, &c->timer);
    }
}

/* ---- output of pgtide's own messages ---------------------------------------------------- */

struct pkt_builder *client_out(struct client *c)
{
    static struct pkt_builder oom = {.failed = true}; /* puts into it are no-ops */
    if (c->out == NULL && (c->out = calloc(1, sizeof(*c->out))) == NULL) {
        c->close_pending = true; /* what it was to be told is lost: it goes (flush_out) */
        c->close_reason = "out of memory";
        return &oom;
    }
    if (c->out->b.buf == NULL && !c->out->b.failed)
        pkt_builder_init_dyn(&c->out->b, 1024); /* on failure b stays failed: puts are no-ops */
    return &c->out->b;
}

static struct pkt_builder *outb(struct client *c)
{
    return client_out(c);
}

/* pgtide's own messages are rare (login, errors, pooling's own answers): an idle client keeps
   no memory for them */
static void out_free(struct client *c)
{
    if (c->out == NULL)
        return;
    pkt_builder_free(&c->out->b);
    free(c->out);
    c->out = NULL;
}

int client_queue(struct client *c, const void *data, size_t len)
{
    struct pkt_builder *b = outb(c);
    pkt_put_bytes(b, data, len);
    return b->failed ? -1 : 0;
}

static void finish_close(struct client *c);

static void auth_free(struct client *c)
{
    if (c->auth == NULL)
        return;
    secret_clear(&c->auth->secret);
    scram_server_clear(&c->auth->scram);
    OPENSSL_cleanse(c->auth, sizeof(*c->auth));
    free(c->auth);
    c->auth = NULL;
}

/* Writes what is queued. Returns true when nothing is left. */
static bool flush_out(struct client *c)
{
    struct client_out *o = c->out;
    if (o != NULL && o->b.failed) { /* a message is missing: the stream must not go on */
        out_free(c);
        c->close_pending = false;
        client_close(c, "out of memory");
        return false;
    }
    while (o != NULL && o->b.buf != NULL && o->off < o->b.len) {
        ssize_t n = sock_write(&c->conn.sock, o->b.buf + o->off, o->b.len - o->off);
        if (n > 0) {
            o->off += (size_t) n;
            c->bytes_sent += (uint64_t) n;
            continue;
        }
        if (n == SOCK_AGAIN) {
            io_set(c->proxy->loop, &c->conn.wio, true);
            return false;
        }
        c->close_pending = false;
        client_close(c, "write error");
        return false;
    }
    out_free(c);
    if (c->close_pending)
        client_close(c, c->close_reason ? c->close_reason : "closed");
    return true;
}

void client_flush_out(struct client *c)
{
    if (c->state != CLIENT_CLOSING)
        (void) flush_out(c);
}

static void send_error(struct client *c, const char *severity, const char *sqlstate,
                       const char *msg, const char *detail)
{
    pkt_write_error(outb(c), severity, sqlstate, msg, detail, NULL);
}

void client_fatal(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    if (c->state == CLIENT_CLOSING || c->close_pending)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    CLOG(LOG_LVL_INFO, c, "closing: %s (%s)", msg, sqlstate);
    send_error(c, "FATAL", sqlstate, msg, NULL);
    c->close_pending = true;
    c->close_reason = "fatal error";
    ev_timer_stop(c->proxy->loop, &c->timer);
    relay_read_on(c->proxy->loop, &c->conn, false);
    (void) flush_out(c);
    /* if the socket is slow the write watcher finishes the job; bound it */
    if (c->state != CLIENT_CLOSING && c->close_pending)
        arm_timer(c, 5000);
}

/* ---- close ------------------------------------------------------------------------------ */

void client_close(struct client *c, const char *reason)
{
    if (c->state == CLIENT_CLOSING)
        return;
    struct proxy *p = c->proxy;
    CLOG(c->welcomed ? LOG_LVL_INFO : LOG_LVL_DEBUG, c, "closed: %s", reason);
    if (c->lookup != NULL) {
        authdb_cancel(p->authdb, c->lookup);
        c->lookup = NULL;
    }
    if (c->server == NULL && c->state == CLIENT_WAITING && c->pool != NULL)
        pool_forget_setup(c->pool, c); /* a server still sending its settings lets go of it */
    client_set_state(c, CLIENT_CLOSING);
    list_del(&c->conn.ready);
    ev_timer_stop(p->loop, &c->timer);
    ev_io_stop(p->loop, &c->conn.rio);
    ev_io_stop(p->loop, &c->conn.wio);
    if (c->server != NULL) {
        struct server *s = c->server;
        c->server = NULL;
        s->client = NULL;
        if (c->conn.skip > 0 || (c->copy_left > 0 && !c->copy_drop))
            s->unsynced = true; /* it got part of a message: never hand it on */
        server_release(s);
    }
    proxy_cancel_del(p, c);
    park_clear(c);
    finish_close(c);
}

static void finish_close(struct client *c)
{
    struct proxy *p = c->proxy;
    list_del(&c->node);
    p->nclients--;
    __atomic_sub_fetch(&p->home->clients_all, 1, __ATOMIC_RELAXED);
    relay_conn_close(&c->conn);
    out_free(c);
    /* freed at the end of this loop iteration: callers up the stack may still hold c */
    list_add_tail(&p->dead_clients, &c->node);
}

void client_free(struct client *c)
{
    txn_pset_put(c->proxy, c->params);
    txn_pset_put(c->proxy, c->opts);
    txn_client_free(c);
    txn_str_put(c->proxy, c->user);
    txn_str_put(c->proxy, c->database);
    auth_free(c);
    free(c->custom);
    client_set_blocker(c, NULL);
    free(c->lost);
    free(c);
}

/* ---- relay: client -> server ------------------------------------------------------------ */

static bool client_wants(void *arg, uint8_t t)
{
    (void) arg;
    return t == 'X' || t == 'Q' || t == 'P'; /* P: custom settings, see note_custom */
}

/* Every Query, Sync and FunctionCall gets exactly one ReadyForQuery back. Extended-protocol
   messages leave the server unsynced until their Sync. */
static void count_request(struct client *c, uint8_t t)
{
    if (c->server != NULL)
        server_note_sent(c->server, t);
    if ((t == 'Q' || t == 'S' || t == 'F') && c->server != NULL) {
        if (c->server->in_flight++ == 0)
            c->request_ms = proxy_now_ms();
        client_set_blocker(c, NULL); /* whatever held the session may be gone: check again */
    }
}

/* Custom settings ("SET app.tenant = ...", set_config('app.tenant', ...)) are invisible to
   pg_settings: their names are noted from the session's queries, so that parking can carry
   them. A name pgtide cannot learn (set_config($1, ...), or more than CLIENT_MAX_CUSTOM)
   makes the session unparkable: losing a setting silently would be worse than staying awake. */
static void note_custom_name(struct client *c, const char *name, size_t k)
{
    if (k == 0 || name[0] == '.' || memchr(name, '.', k) == NULL)
        return; /* not a custom (two-part) name: pg_settings shows it */
    for (int i = 0; i < c->ncustom; i++)
        if (strcmp(c->custom[i], name) == 0)
            return;
    if (c->custom == NULL && (c->custom = calloc(CLIENT_MAX_CUSTOM, sizeof(*c->custom))) == NULL) {
        c->custom_opaque = true;
        return;
    }
    if (c->ncustom < CLIENT_MAX_CUSTOM)
        memcpy(c->custom[c->ncustom++], name, k + 1);
    else
        c->custom_opaque = true;
}

static void custom_name(void *arg, const char *name, size_t len)
{
    note_custom_name(arg, name, len);
}

static void note_custom(struct client *c, const char *sql, uint32_t len)
{
    int r = sqlscan_custom(sql, len, custom_name, c);
    if (r & SQLSCAN_OPAQUE)
        c->custom_opaque = true;
    else if ((r & SQLSCAN_RESET_ALL) && c->custom_opaque)
        c->custom_opaque = false; /* every setting back to its default: nothing unnamed is left */
}

static enum relay_verdict client_message(void *arg, uint8_t t, const uint8_t *body, uint32_t blen)
{
    struct client *c = arg;
    if (t == 'X') {
        client_close(c, "client terminated");
        return RELAY_STOP;
    }
    if (t == 'Q') {
        count_request(c, t);
        if (blen > 0)
            note_custom(c, (const char *) body, blen - 1);
    } else if (t == 'P') {
        const char *stmt, *sql;
        uint16_t np;
        count_request(c, t);
        if (pkt_parse_parse(body, blen, &stmt, &sql, &np) == PKT_OK)
            note_custom(c, sql, (uint32_t) strlen(sql));
    }
    return RELAY_FORWARD;
}

static void client_header(void *arg, uint8_t t, uint32_t len)
{
    (void) len;
    count_request(arg, t);
}

static const struct relay_ops client_ops = {client_wants, client_header, client_message};

void client_pump(struct client *c)
{
    struct proxy *p = c->proxy;
    struct server *s = c->server;
    if (c->state != CLIENT_ACTIVE || s == NULL || s->state != SERVER_ACTIVE ||
        !relay_has_pending(&c->conn)) {
        if (c->state != CLIENT_CLOSING && !c->close_pending)
            io_set(p->loop, &c->conn.rio,
                   c->conn.in == NULL || buf_space(c->conn.in) > 0 || c->conn.in->rpos > 0);
        return;
    }
    if (c->pool_mode != POOL_SESSION) {
        if (p->paused && s->q.count == 0 && s->txn == 'I')
            return;
        txn_client_pump(c);
        return;
    }
    /* PAUSE on the console holds new requests of idle sessions */
    if (p->paused && s->in_flight == 0 && s->txn == 'I') {
        relay_read_on(p->loop, &c->conn, false);
        return;
    }
    enum relay_status st =
        relay_pump(&c->conn, &s->conn.sock, (uint32_t) p->cfg->max_packet_size, &client_ops, c);
    if (c->state == CLIENT_CLOSING)
        return;
    proxy_touch(p);
    switch (st) {
    case RELAY_OK:
        io_set(p->loop, &s->conn.wio, false);
        relay_read_on(p->loop, &c->conn, true);
        relay_release_idle(&c->conn);
        break;
    case RELAY_BLOCKED:
        relay_read_on(p->loop, &c->conn, false);
        io_set(p->loop, &s->conn.wio, true);
        break;
    case RELAY_STOPPED:
        break;
    case RELAY_BAD_INPUT:
        client_fatal(c, "08P01", "invalid message length from client");
        break;
    case RELAY_DST_ERROR:
        server_close(s, "write to the server failed"); /* tells the client, and frees the slot */
        break;
    }
}

/* ---- startup and authentication --------------------------------------------------------- */

static void send_welcome(struct client *c, struct server *s);

/* Keeps the user and database names and the startup parameters (shared copies: clients of a
   pool mostly send the same): reported ones in params, settings in opts. */
static int copy_startup(struct client *c, const struct pkt_startup *st)
{
    c->user = txn_str_get(c->proxy, st->user);
    c->database = txn_str_get(c->proxy, st->database ? st->database : st->user);
    if (c->user == NULL || c->database == NULL)
        return -1;
    struct startup_lists l = {0};
    int rc = startup_sort(st, &l);
    if (rc == 0 && (txn_pset_set(c->proxy, &c->params, l.rep, l.nrep) != 0 ||
                    txn_pset_set(c->proxy, &c->opts, l.set, l.nset) != 0))
        rc = -1;
    if (l.route != STARTUP_ROUTE_PORT)
        c->reader = l.route == STARTUP_ROUTE_REPLICA;
    startup_lists_free(&l);
    return rc;
}

static int pick_method(struct client *c)
{
    struct proxy *p = c->proxy;
    if (p->hba != NULL)
        return hba_match(p->hba, c->is_unix, c->is_tls,
                         c->is_unix ? NULL : (const struct sockaddr *) &c->addr, c->database,
                         c->user);
    enum hba_method m;
    if (!hba_method_parse(p->cfg->auth_type_name, &m))
        return HBA_REJECT;
    return m;
}

static void auth_ok(struct client *c);
static bool welcome_from_pool(struct client *c);
static void on_secret(void *arg, const char *secret);

static void begin_auth(struct client *c)
{
    struct proxy *p = c->proxy;
    c->auth_method = pick_method(c);
    switch (c->auth_method) {
    case HBA_TRUST:
        auth_ok(c);
        return;
    case HBA_REJECT: {
        char addr[CLIENT_ADDR_TEXT];
        client_fatal(c, "28000",
                     "pgtide: no authentication rule allows host \"%s\", user \"%s\", "
                     "database \"%s\"%s",
                     client_addr_text(c, addr, sizeof(addr)), c->user, c->database,
                     c->is_tls ? ", TLS on" : "");
        return;
    }
    case HBA_CERT: {
        char cn[256];
        if (!c->is_tls || tls_peer_cn(c->conn.sock.ssl, cn, sizeof(cn)) != 0 ||
            strcmp(cn, c->user) != 0) {
            p->stats.auth_failures++;
            client_fatal(c, "28000", "certificate authentication failed for user \"%s\"", c->user);
            return;
        }
        auth_ok(c);
        return;
    }
    case HBA_PASSWORD:
        if (!c->is_tls && !c->is_unix) {
            client_fatal(c, "28000",
                         "pgtide: password authentication is only allowed over TLS "
                         "(connect with sslmode=require)");
            return;
        }
        break;
    default:
        break;
    }
    client_set_state(c, CLIENT_LOOKUP);
    c->lookup = authdb_lookup(p->authdb, c->user, on_secret, c);
}

static void send_auth(struct client *c, uint32_t code, const void *data, size_t len)
{
    pkt_write_auth(outb(c), code, data, len);
    (void) flush_out(c);
}

static void auth_failed(struct client *c)
{
    c->proxy->stats.auth_failures++;
    client_fatal(c, "28P01", "password authentication failed for user \"%s\"", c->user);
}

static void on_secret(void *arg, const char *secret)
{
    struct client *c = arg;
    c->lookup = NULL;
    if (c->state == CLIENT_CLOSING || c->close_pending)
        return;
    client_set_state(c, CLIENT_AUTH);
    c->auth = calloc(1, sizeof(*c->auth));
    if (c->auth == NULL) {
        client_fatal(c, "53200", "out of memory");
        return;
    }
    c->auth->user_known = secret != NULL && secret_parse(secret, &c->auth->secret) == 0;
    int m = c->auth_method;
    bool scram = m == HBA_SCRAM || (m == HBA_MD5 && c->auth->secret.kind == SECRET_SCRAM);
    if (scram && c->auth->user_known && c->auth->secret.kind == SECRET_PLAIN) {
        /* a plaintext auth_file entry: derive a verifier for this exchange */
        char v[SECRET_SCRAM_MAX_TEXT];
        struct secret tmp;
        if (secret_make_scram(c->auth->secret.plain, 4096, v, sizeof(v)) < 0 ||
            secret_parse(v, &tmp) != 0) {
            client_fatal(c, "XX000", "pgtide: cannot derive a SCRAM verifier");
            return;
        }
        secret_clear(&c->auth->secret);
        c->auth->secret = tmp;
    }
    if (scram) {
        const char *mechs[2];
        int n = 0;
        if (c->is_tls)
            mechs[n++] = "SCRAM-SHA-256-PLUS";
        mechs[n++] = "SCRAM-SHA-256";
        pkt_write_auth_sasl(outb(c), mechs, n);
        c->auth_step = AUTH_SASL_INITIAL;
        (void) flush_out(c);
    } else if (m == HBA_MD5) {
        if (RAND_bytes(c->auth->md5_salt, 4) != 1) {
            client_fatal(c, "XX000", "pgtide: no random bytes");
            return;
        }
        c->auth_step = AUTH_MD5;
        send_auth(c, PKT_AUTH_MD5, c->auth->md5_salt, 4);
    } else {
        c->auth_step = AUTH_PASSWORD;
        send_auth(c, PKT_AUTH_CLEARTEXT, NULL, 0);
    }
}

static void sasl_initial(struct client *c, const uint8_t *body, uint32_t blen)
{
    const char *mech;
    const uint8_t *data;
    int32_t dlen;
    if (pkt_parse_sasl_initial(body, blen, &mech, &data, &dlen) != PKT_OK || dlen < 0) {
        client_fatal(c, "08P01", "malformed SASLInitialResponse message");
        return;
    }
    uint8_t cb[64];
    int cb_len = -1;
    if (c->is_tls)
        cb_len = tls_server_end_point(c->conn.sock.ssl, cb);
    scram_server_init(&c->auth->scram, c->user, c->proxy->mock_key, sizeof(c->proxy->mock_key));
    char out[SCRAM_MSG_MAX + 64];
    size_t olen = 0;
    const struct scram_keys *keys =
        c->auth->user_known && c->auth->secret.kind == SECRET_SCRAM ? &c->auth->secret.scram : NULL;
    enum scram_result r = scram_server_first(&c->auth->scram, mech, keys, cb_len > 0 ? cb : NULL,
                                             cb_len > 0 ? (size_t) cb_len : 0, data, (size_t) dlen,
                                             out, sizeof(out), &olen);
    if (r == SCRAM_CONTINUE) {
        c->auth_step = AUTH_SASL_FINAL;
        send_auth(c, PKT_AUTH_SASL_CONTINUE, out, olen);
    } else if (r == SCRAM_FAIL) {
        auth_failed(c);
    } else {
        client_fatal(c, "08P01", "malformed SCRAM message");
    }
}

static void sasl_final(struct client *c, const uint8_t *body, uint32_t blen)
{
    char out[256];
    size_t olen = 0;
    enum scram_result r = scram_server_final(&c->auth->scram, body, blen, out, sizeof(out), &olen);
    if (r == SCRAM_OK) {
        c->auth->has_client_key = scram_server_client_key(&c->auth->scram, c->auth->client_key);
        pkt_write_auth(outb(c), PKT_AUTH_SASL_FINAL, out, olen);
        auth_ok(c);
    } else if (r == SCRAM_FAIL) {
        auth_failed(c);
    } else {
        client_fatal(c, "08P01", "malformed SCRAM message");
    }
}

static void password_message(struct client *c, uint8_t t, const uint8_t *body, uint32_t blen)
{
    if (t != 'p') {
        client_fatal(c, "08P01", "expected password response, got message type %d", t);
        return;
    }
    const char *pw;
    switch (c->auth_step) {
    case AUTH_SASL_INITIAL:
        sasl_initial(c, body, blen);
        return;
    case AUTH_SASL_FINAL:
        sasl_final(c, body, blen);
        return;
    case AUTH_MD5:
    case AUTH_PASSWORD:
        if (pkt_parse_password(body, blen, &pw) != PKT_OK) {
            client_fatal(c, "08P01", "malformed password message");
            return;
        }
        if (c->auth->user_known &&
            (c->auth_step == AUTH_MD5
                 ? secret_check_md5(&c->auth->secret, c->user, c->auth->md5_salt, pw)
                 : secret_check_password(&c->auth->secret, c->user, pw)))
            auth_ok(c);
        else
            auth_failed(c);
        return;
    default:
        client_fatal(c, "08P01", "unexpected password message");
    }
}

static void admin_welcome(struct client *c)
{
    struct proxy *p = c->proxy;
    if (!config_is_admin(p->cfg, c->user)) {
        client_fatal(c, "42501", "pgtide: user \"%s\" is not an admin (admin_users)", c->user);
        return;
    }
    static const char *const params[][2] = {
        {"server_version", "15.0 (pgtide " PACKAGE_VERSION ")"},
        {"server_encoding", "UTF8"},
        {"client_encoding", "UTF8"},
        {"DateStyle", "ISO, MDY"},
        {"IntervalStyle", "postgres"},
        {"integer_datetimes", "on"},
        {"standard_conforming_strings", "on"},
        {"TimeZone", "UTC"},
        {"is_superuser", "off"},
        {"application_name", ""},
    };
    struct pkt_builder *b = outb(c);
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
        pkt_write_param_status(b, params[i][0], params[i][1]);
    pkt_write_backend_key(b, c->cancel_pid, c->cancel_key);
    pkt_write_ready(b, 'I');
    c->welcomed = true;
    c->admin = true;
    client_set_state(c, CLIENT_ADMIN);
    CLOG(LOG_LVL_INFO, c, "admin console login");
    (void) flush_out(c);
}

/* Outstanding requests on a compute: the replica set balances readers by it. */
static int compute_load(void *arg, struct compute *cp)
{
    int in_flight;
    int sessions = pool_sessions_on(arg, cp, &in_flight);
    return in_flight * 1024 + sessions; /* queries first, then sessions held */
}

/* Asks for a server, holding the client while the compute is not running. A reader goes to the
   least loaded replica in rotation, else to the primary. */
static void request_server(struct client *c)
{
    struct proxy *p = c->proxy;
    if (c->reader && p->replicas != NULL && !p->paused) {
        /* read_your_writes: only replicas that replayed this (database, user)'s commits */
        uint64_t need = ryw_reader_lsn(p, c->database, c->user);
        hub_lock(p); /* per reader transaction in transaction pooling: no main-loop wake-up */
        struct compute *r = replicaset_pick_at(p->replicas, need, compute_load, p);
        hub_unlock_quiet(p);
        struct pool *pool = r != NULL ? pool_get_for(p, r, c->database, c->user) : NULL;
        if (pool != NULL) {
            c->pool = pool;
            client_set_state(c, CLIENT_WAITING);
            arm_timer(c, p->cfg->query_wait_timeout);
            pool_request(c->pool, c);
            return;
        }
    }
    if (c->pool == NULL || c->pool->compute != p->primary)
        c->pool = pool_get(p, c->database, c->user);
    if (c->pool == NULL) {
        client_fatal(c, "53200", "out of memory");
        return;
    }
    if (p->paused || compute_get_state(p->primary) != COMPUTE_RUNNING) {
        client_set_state(c, CLIENT_HELD);
        arm_timer(c, p->cfg->wake_timeout);
        if (!p->paused) {
            hub_lock(p);
            compute_wake(p->primary);
            hub_unlock(p);
        }
        return;
    }
    client_set_state(c, CLIENT_WAITING);
    arm_timer(c, p->cfg->query_wait_timeout);
    pool_request(c->pool, c);
}

static void auth_ok(struct client *c)
{
    struct proxy *p = c->proxy;
    ev_timer_stop(p->loop, &c->timer);
    pkt_write_auth(outb(c), PKT_AUTH_OK, NULL, 0);
    /* cancel key issued by the proxy */
    do {
        if (RAND_bytes((uint8_t *) &c->cancel_pid, 4) != 1 ||
            RAND_bytes((uint8_t *) &c->cancel_key, 4) != 1) {
            client_fatal(c, "XX000", "pgtide: no random bytes");
            return;
        }
        c->cancel_pid &= 0x7fffffff;
    } while (c->cancel_pid == 0 || proxy_cancel_find(p, c->cancel_pid, c->cancel_key) != NULL);
    proxy_cancel_add(p, c);
    if (strcmp(c->database, "pgtide") == 0) {
        admin_welcome(c);
        return;
    }
    c->pool = pool_get(p, c->database, c->user);
    if (c->pool == NULL) {
        client_fatal(c, "53200", "out of memory");
        return;
    }
    if (c->auth != NULL && c->auth->has_client_key && c->auth->secret.kind == SECRET_SCRAM) {
        memcpy(c->pool->client_key, c->auth->client_key, 32);
        c->pool->client_keys = c->auth->secret.scram;
        c->pool->has_client_key = true;
    }
    auth_free(c);
    c->pool_mode = c->pool->pool_mode;
    CLOG(LOG_LVL_INFO, c, "login (%s%s)", hba_method_name(c->auth_method),
         c->is_tls ? ", TLS" : "");
    if (welcome_from_pool(c)) {
        (void) flush_out(c);
        return;
    }
    (void) flush_out(c);
    if (c->state != CLIENT_CLOSING)
        request_server(c);
}

static void negotiate_version(struct client *c, const struct pkt_startup *st)
{
    uint32_t minor = st->code & 0xffff;
    if (minor == 0 && st->nunknown_pq == 0)
        return;
    pkt_write_negotiate_version(outb(c), 0, st->unknown_pq, st->nunknown_pq);
}

void client_cancel(struct client *target)
{
    if (target->server != NULL) {
        CLOG(LOG_LVL_INFO, target, "cancel request forwarded");
        server_send_cancel(target->server);
    }
}

static void handle_cancel(struct client *c, const struct pkt_startup *st)
{
    struct client *target = proxy_cancel_find(c->proxy, st->cancel_pid, st->cancel_key);
    if (target != NULL) {
        client_cancel(target);
    } else if (c->proxy->hub != NULL) {
        /* issued by another worker: the one that has it forwards it */
        struct hub_msg m = {
            .kind = HUB_CANCEL, .cancel_pid = st->cancel_pid, .cancel_key = st->cancel_key};
        hub_broadcast(c->proxy->hub, c->proxy, &m);
    }
    client_close(c, "cancel request");
}

/* A worker hands an admin console login to home, which serves the console: the socket, its
   TLS session and the startup packet go over; this client closes without closing them. */
static void hand_to_home(struct client *c, const uint8_t *pkt, uint32_t len)
{
    struct hub_msg m = {.kind = HUB_ADOPT};
    struct buf *b = c->conn.in;
    uint32_t rest = b != NULL ? buf_len(b) : 0;
    m.conn.data = malloc((size_t) len + rest);
    if (m.conn.data == NULL) {
        client_fatal(c, "53200", "out of memory");
        return;
    }
    memcpy(m.conn.data, pkt, len);
    if (rest > 0)
        memcpy(m.conn.data + len, b->data + b->rpos, rest);
    m.conn.len = len + rest;
    m.conn.fd = c->conn.sock.fd;
    m.conn.ssl = c->conn.sock.ssl;
    m.conn.is_unix = c->is_unix;
    m.conn.reader = c->reader;
    m.conn.alen = sizeof(c->addr) <= sizeof(m.conn.addr) ? (socklen_t) sizeof(c->addr) : 0;
    memcpy(&m.conn.addr, &c->addr, m.conn.alen);
    c->conn.sock.fd = -1;
    c->conn.sock.ssl = NULL;
    client_close(c, "admin console login: handed to the main thread");
    hub_post(c->proxy->home, &m);
}

static void handle_startup_message(struct client *c, const struct pkt_startup *st)
{
    struct proxy *p = c->proxy;
    if ((st->code >> 16) != 3) {
        client_fatal(c, "0A000", "unsupported frontend protocol %u.%u: server supports 3.0",
                     st->code >> 16, st->code & 0xffff);
        return;
    }
    if (st->replication != NULL && strcmp(st->replication, "false") != 0 &&
        strcmp(st->replication, "off") != 0 && strcmp(st->replication, "0") != 0) {
        client_fatal(c, "08P01", "pgtide does not support replication connections");
        return;
    }
    int rc = copy_startup(c, st);
    if (rc != 0) {
        client_fatal(c, rc == -2 ? "08P01" : "53200",
                     rc == -2 ? "invalid startup parameters (too many, or a malformed options "
                                "setting: expected -c name=value)"
                              : "out of memory");
        return;
    }
    if (!c->is_tls && !c->is_unix && p->cfg->client_tls_sslmode >= SSLMODE_REQUIRE) {
        client_fatal(c, "28000", "pgtide requires TLS (client_tls_sslmode = %s)",
                     config_sslmode_name(p->cfg->client_tls_sslmode));
        return;
    }
    negotiate_version(c, st);
    begin_auth(c);
}

/* Handles one startup-phase packet p[0..len). */
static void startup_packet(struct client *c, const uint8_t *p, uint32_t len)
{
    struct pkt_startup st;
    if (pkt_parse_startup(p, len, &st) != PKT_OK) {
        uint32_t major = st.code >> 16;
        if (major != 3 && st.code != PKT_CODE_SSL && st.code != PKT_CODE_GSSENC &&
            st.code != PKT_CODE_CANCEL)
            client_fatal(c, "0A000", "unsupported frontend protocol %u.%u: server supports 3.0",
                         major, st.code & 0xffff);
        else
            client_fatal(c, "08P01", "invalid startup packet");
        return;
    }
    switch (st.code) {
    case PKT_CODE_SSL:
        if (c->proxy->tls_server != NULL && !c->is_tls && !c->is_unix) {
            if (client_queue(c, "S", 1) != 0 || !flush_out(c))
                return;
            if (sock_tls_start(&c->conn.sock, c->proxy->tls_server) != 0) {
                client_close(c, "TLS setup failed");
                return;
            }
            client_set_state(c, CLIENT_TLS);
        } else {
            (void) client_queue(c, "N", 1);
            (void) flush_out(c);
        }
        return;
    case PKT_CODE_GSSENC:
        (void) client_queue(c, "N", 1);
        (void) flush_out(c);
        return;
    case PKT_CODE_CANCEL:
        handle_cancel(c, &st);
        return;
    default:
        if (c->proxy->worker > 0 && st.database != NULL && strcmp(st.database, "pgtide") == 0) {
            hand_to_home(c, p, len);
            return;
        }
        handle_startup_message(c, &st);
    }
}

/* Consumes complete startup-phase packets from the input buffer. */
static void process_startup(struct client *c)
{
    struct buf *b = c->conn.in;
    while (c->state == CLIENT_STARTUP && !c->close_pending && b != NULL && buf_len(b) > 0) {
        uint32_t len, code;
        enum pkt_status st = pkt_read_startup_hdr(b->data + b->rpos, buf_len(b), &len, &code);
        if (st == PKT_INCOMPLETE)
            return;
        if (st != PKT_OK) {
            client_fatal(c, "08P01", "invalid length of startup packet");
            return;
        }
        if (buf_len(b) < len)
            return;
        /* the packet's strings are used in place: copy it out of the buffer first, since a
           TLS upgrade must see an empty buffer */
        uint8_t pkt[PKT_STARTUP_MAX];
        memcpy(pkt, b->data + b->rpos, len);
        b->rpos += len;
        if (c->state == CLIENT_STARTUP && (code == PKT_CODE_SSL) && buf_len(b) > 0) {
            client_fatal(c, "08P01", "received unencrypted data after SSL request");
            return;
        }
        startup_packet(c, pkt, len);
    }
}

#define AUTH_MSG_MAX (PKT_AUTH_MAX < BUF_SIZE - 1 ? PKT_AUTH_MAX : BUF_SIZE - 1)

/* Consumes typed messages while authenticating (only 'p', and 'X'). */
static void process_auth(struct client *c)
{
    struct buf *b = c->conn.in;
    while (c->state == CLIENT_AUTH && !c->close_pending && b != NULL && buf_len(b) > 0) {
        struct pkt_hdr h;
        /* a message must fit the input buffer whole: one that cannot would never complete */
        enum pkt_status st = pkt_read_hdr(b->data + b->rpos, buf_len(b), AUTH_MSG_MAX, &h);
        if (st == PKT_INCOMPLETE)
            return;
        if (st != PKT_OK) {
            client_fatal(c, "08P01", "invalid message length during authentication");
            return;
        }
        if (buf_len(b) < h.len + 1)
            return;
        const uint8_t *body = b->data + b->rpos + 5;
        b->rpos += h.len + 1;
        if (h.type == 'X') {
            client_close(c, "client terminated during authentication");
            return;
        }
        password_message(c, h.type, body, h.len - 4);
    }
}

/* ---- admin console input ----------------------------------------------------------------- */

void client_pump_admin(struct client *c)
{
    struct buf *b = c->conn.in;
    while (c->state == CLIENT_ADMIN && !c->close_pending && b != NULL && buf_len(b) > 0 &&
           !c->admin_waiting) {
        struct pkt_hdr h;
        enum pkt_status st = pkt_read_hdr(b->data + b->rpos, buf_len(b), BUF_SIZE - 1, &h);
        if (st == PKT_INCOMPLETE)
            return;
        if (st != PKT_OK) {
            client_fatal(c, "08P01",
                         "invalid message length (admin console messages are "
                         "limited to %d bytes)",
                         BUF_SIZE - 1);
            return;
        }
        if (buf_len(b) < h.len + 1)
            return;
        const uint8_t *body = b->data + b->rpos + 5;
        b->rpos += h.len + 1;
        admin_message(c, h.type, body, h.len - 4);
    }
    if (c->state != CLIENT_ADMIN)
        return;
    /* waiting for a late answer with a full buffer: stop reading (a read into a full buffer
       returns nothing and the watcher would fire again at once) until it is answered */
    b = c->conn.in;
    relay_read_on(c->proxy->loop, &c->conn,
                  !(c->admin_waiting && b != NULL && buf_space(b) == 0 && b->rpos == 0));
    (void) flush_out(c);
}

/* ---- watchers ---------------------------------------------------------------------------- */

static void tls_step(struct client *c)
{
    int r = sock_tls_handshake(&c->conn.sock, true);
    if (r == SOCK_AGAIN) {
        io_set(c->proxy->loop, &c->conn.wio, c->conn.sock.want_write);
        relay_read_on(c->proxy->loop, &c->conn, true);
        return;
    }
    if (r != 1) {
        char e[200];
        CLOG(LOG_LVL_INFO, c, "TLS handshake failed: %s", tls_error_string(e, sizeof(e)));
        client_close(c, "TLS handshake failed");
        return;
    }
    io_set(c->proxy->loop, &c->conn.wio, false);
    c->is_tls = true;
    client_set_state(c, CLIENT_STARTUP);
}

static void read_step(struct client *c);

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void) loop;
    (void) revents;
    struct client *c = container_of(w, struct client, conn.rio);
    proxy_defer_read(c->proxy, &c->conn);
}

void client_read_ready(struct client *c)
{
    if (c->state == CLIENT_CLOSING)
        return;
    read_step(c);
    /* nothing buffered: the relay buffer goes back to the pool (idle clients hold none) */
    if (c->state != CLIENT_CLOSING)
        relay_release_idle(&c->conn);
    /* TLS may hold decrypted bytes the socket will not signal again */
    if (c->state != CLIENT_CLOSING && ev_is_active(&c->conn.rio))
        relay_read_on(c->proxy->loop, &c->conn, true);
}

static void read_step(struct client *c)
{
    if (c->state == CLIENT_TLS) {
        tls_step(c);
        if (c->state != CLIENT_STARTUP)
            return;
    }
    ssize_t n = relay_read(&c->conn);
    if (n == RELAY_READ_EOF || n == SOCK_ERROR) {
        client_close(c, n == RELAY_READ_EOF ? "client disconnected" : "read error");
        return;
    }
    if (n == RELAY_READ_NOMEM) {
        client_fatal(c, "53200", "out of memory");
        return;
    }
    if (n > 0) {
        c->proxy->stats.bytes_recv += (uint64_t) n;
        if (c->pool != NULL)
            c->pool->bytes_recv += (uint64_t) n;
    }
    switch (c->state) {
    case CLIENT_STARTUP:
        process_startup(c);
        break;
    case CLIENT_AUTH:
        process_auth(c);
        break;
    case CLIENT_ADMIN:
        client_pump_admin(c);
        break;
    case CLIENT_ACTIVE:
        if (compute_get_state(c->proxy->primary) == COMPUTE_PAUSED) {
            hub_lock(c->proxy);
            compute_wake(c->proxy->primary); /* thaws synchronously */
            hub_unlock(c->proxy);
        }
        client_pump(c);
        break;
    case CLIENT_IDLE:
        /* an idle session that only says goodbye must not wake the compute */
        if (c->conn.in != NULL && buf_len(c->conn.in) >= 1 &&
            c->conn.in->data[c->conn.in->rpos] == 'X') {
            client_close(c, "client terminated");
            break;
        }
        if (c->lost != NULL) {
            client_fatal(c, c->lost, "%s", c->lost + strlen(c->lost) + 1);
            break;
        }
        /* it speaks: a server (with a parked session's snapshot replayed), then its message */
        if (n > 0)
            request_server(c);
        break;
    default:
        /* LOOKUP, HELD, WAITING: keep what arrives; stop reading when the buffer is full */
        if (c->conn.in != NULL && buf_space(c->conn.in) == 0 && c->conn.in->rpos == 0)
            relay_read_on(c->proxy->loop, &c->conn, false);
        break;
    }
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void) loop;
    (void) revents;
    struct client *c = container_of(w, struct client, conn.wio);
    if (c->state == CLIENT_TLS) {
        tls_step(c);
        return;
    }
    if (!flush_out(c))
        return;
    io_set(c->proxy->loop, &c->conn.wio, false);
    if (c->state == CLIENT_ACTIVE && c->server != NULL)
        server_pump(c->server);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    struct client *c = container_of(w, struct client, timer);
    struct proxy *p = c->proxy;
    if (c->close_pending) {
        client_close(c, "could not deliver the final error in time");
        return;
    }
    switch (c->state) {
    case CLIENT_TLS:
    case CLIENT_STARTUP:
    case CLIENT_LOOKUP:
    case CLIENT_AUTH:
        client_fatal(c, "08P01",
                     "pgtide: authentication timeout (authentication_timeout = %lld ms)",
                     (long long) p->cfg->authentication_timeout);
        break;
    case CLIENT_HELD:
        if (p->paused) {
            /* PAUSE holds without a deadline, as PgBouncer does */
            arm_timer(c, p->cfg->wake_timeout);
            break;
        }
        client_fatal(c, "57P03",
                     "the database system is starting up: pgtide's compute did not become ready "
                     "within wake_timeout (%lld ms); try again",
                     (long long) p->cfg->wake_timeout);
        break;
    case CLIENT_WAITING:
        client_fatal(c, "53300",
                     "pgtide: no server connection became free within query_wait_timeout "
                     "(%lld ms)",
                     (long long) p->cfg->query_wait_timeout);
        break;
    default:
        break;
    }
}

/* ---- public ----------------------------------------------------------------------------- */

static struct client *accept_conn(struct proxy *p, bool is_unix, bool reader, int fd, SSL *ssl,
                                  const struct sockaddr *addr, socklen_t alen);

struct client *client_accept(struct proxy *p, bool is_unix, bool reader, int fd,
                             const struct sockaddr *addr, socklen_t alen)
{
    return accept_conn(p, is_unix, reader, fd, NULL, addr, alen);
}

static struct client *accept_conn(struct proxy *p, bool is_unix, bool reader, int fd, SSL *ssl,
                                  const struct sockaddr *addr, socklen_t alen)
{
    struct client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        static const uint8_t oom[] = "EFATAL"; /* best effort is not worth it: just close */
        (void) oom;
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    c->proxy = p;
    c->id = proxy_next_client_id(p);
    c->state = CLIENT_STARTUP;
    c->is_unix = is_unix;
    c->reader = reader;
    c->txn = 'I';
    if (alen > 0 && (size_t) alen <= sizeof(c->addr))
        memcpy(&c->addr, addr, (size_t) alen);
    relay_conn_init(&c->conn, fd);
    c->conn.sock.ssl = ssl;
    c->is_tls = ssl != NULL;
    list_init(&c->wait_node);
    list_add_tail(&p->clients, &c->node);
    p->nclients++;
    int all = __atomic_add_fetch(&p->home->clients_all, 1, __ATOMIC_RELAXED); /* every worker's */
    p->stats.clients_total++;
    c->connect_ms = proxy_now_ms();
    ev_io_init(&c->conn.rio, on_read, fd, EV_READ);
    ev_io_init(&c->conn.wio, on_write, fd, EV_WRITE);
    ev_timer_init(&c->timer, on_timer, 0.0, 0.0);
    ev_io_start(p->loop, &c->conn.rio);
    if (all > p->cfg->max_client_conn) {
        client_fatal(c, "53300", "sorry, too many clients already (max_client_conn = %d)",
                     p->cfg->max_client_conn);
        return c;
    }
    arm_timer(c, p->cfg->authentication_timeout);
    return c;
}

struct client *client_adopt(struct proxy *p, struct hub_conn *hc)
{
    struct client *c = accept_conn(p, hc->is_unix, hc->reader, hc->fd, hc->ssl,
                                   (struct sockaddr *) &hc->addr, hc->alen);
    if (c == NULL) { /* the socket is closed */
        free(hc->data);
        return NULL;
    }
    if (hc->data != NULL && c->state == CLIENT_STARTUP) {
        c->conn.in = buf_get();
        if (c->conn.in == NULL || buf_append(c->conn.in, hc->data, hc->len) != 0)
            client_fatal(c, "53200", "out of memory");
        else
            process_startup(c);
    }
    free(hc->data);
    return c;
}

void client_park(struct client *c)
{
    client_set_state(c, CLIENT_IDLE);
    relay_release_idle(&c->conn);
    relay_read_on(c->proxy->loop, &c->conn, true);
    if (log_enabled(LOG_LVL_DEBUG))
        CLOG(LOG_LVL_DEBUG, c, "parked");
}

void client_compute_ready(struct client *c)
{
    if (c->state != CLIENT_HELD || c->close_pending)
        return;
    struct proxy *p = c->proxy;
    if (c->server != NULL) {
        /* a session whose server went away while it was idle (issue: parking) */
        return;
    }
    client_set_state(c, CLIENT_WAITING);
    arm_timer(c, p->cfg->query_wait_timeout);
    pool_request(c->pool, c);
}

bool client_reroute(struct client *c)
{
    if (c->state != CLIENT_WAITING || c->close_pending || !c->reader)
        return false;
    pool_cancel_wait(c->pool, c);
    request_server(c);
    return true;
}

static void send_welcome(struct client *c, struct server *s)
{
    struct pkt_builder *b = outb(c);
    struct client_param seen[SERVER_MAX_PARAMS];
    for (int i = 0; i < s->nparams; i++) {
        pkt_write_param_status(b, s->params[i].name, s->params[i].value);
        seen[i] = (struct client_param){s->params[i].name, s->params[i].value};
    }
    txn_client_saw_params(c, seen, s->nparams);
    pkt_write_backend_key(b, c->cancel_pid, c->cancel_key);
    pkt_write_ready(b, 'I');
    c->welcomed = true;
}

/* Transaction pooling: a client whose startup asks for nothing but application_name (beyond
   what its pool's servers report already) is welcomed from the pool's parameters, with no
   server at all. */
static bool welcome_from_pool(struct client *c)
{
    struct pool *pool = c->pool;
    if (pool->pool_mode == POOL_SESSION || pool->nparams == 0)
        return false;
    const struct client_param *cp = txn_pset_items(c->params);
    for (int i = 0; i < txn_pset_len(c->params); i++) {
        const char *n = cp[i].name, *v = cp[i].value;
        if (!strcmp(n, "application_name"))
            continue;
        bool same = false;
        for (int k = 0; k < pool->nparams && !same; k++)
            same = !strcmp(pool->params[k].name, n) && !strcmp(pool->params[k].value, v);
        if (!same && !(strcmp(n, "client_encoding") == 0 && strcasecmp(v, "auto") == 0))
            return false;
    }
    struct pkt_builder *b = outb(c);
    const char *app = "";
    for (int i = 0; i < txn_pset_len(c->params); i++)
        if (!strcmp(cp[i].name, "application_name"))
            app = cp[i].value;
    struct client_param seen[sizeof(pool->params) / sizeof(pool->params[0])];
    for (int k = 0; k < pool->nparams; k++) {
        char *n = pool->params[k].name;
        const char *v = strcmp(n, "application_name") == 0 ? app : pool->params[k].value;
        pkt_write_param_status(b, n, v);
        seen[k] = (struct client_param){n, (char *) v};
    }
    txn_client_saw_params(c, seen, pool->nparams);
    pkt_write_backend_key(b, c->cancel_pid, c->cancel_key);
    pkt_write_ready(b, 'I');
    c->welcomed = true;
    client_set_state(c, CLIENT_IDLE);
    return true;
}

void client_attach_server(struct client *c, struct server *s)
{
    struct proxy *p = c->proxy;
    ev_timer_stop(p->loop, &c->timer);
    c->server = s;
    s->client = c;
    client_set_state(c, CLIENT_ACTIVE);
    if (!c->welcomed)
        send_welcome(c, s);
    if (!flush_out(c))
        return;
    if (c->state != CLIENT_ACTIVE)
        return;
    client_pump(c);
    if (c->state == CLIENT_ACTIVE && c->server != NULL)
        server_pump(c->server);
}

void client_server_lost(struct client *c, const char *sqlstate, const char *msg, bool idle)
{
    if (c->server != NULL) {
        c->server->client = NULL;
        c->server = NULL;
    }
    if (idle && c->state == CLIENT_ACTIVE && !c->close_pending && !relay_has_pending(&c->conn)) {
        /* an error sent now would be lost: an idle libpq reads nothing, and its next write
           meets a closed socket. Keep the connection and answer its next message with it. */
        size_t lc = strlen(sqlstate) + 1, lm = strlen(msg) + 1;
        char *lost = malloc(lc + lm);
        if (lost == NULL) {
            client_fatal(c, sqlstate, "%s", msg); /* out of memory: told now, or never */
            return;
        }
        memcpy(lost, sqlstate, lc);
        memcpy(lost + lc, msg, lm);
        free(c->lost);
        c->lost = lost;
        client_set_state(c, CLIENT_IDLE);
        relay_read_on(c->proxy->loop, &c->conn, true);
        CLOG(LOG_LVL_INFO, c, "server lost while idle: %s (told at its next message)", msg);
        return;
    }
    client_fatal(c, sqlstate, "%s", msg);
}

void client_want_write(struct client *c)
{
    io_set(c->proxy->loop, &c->conn.wio, true);
}
