/*
 * server: pgtide's connections to a compute. A server connection is opened for a pool (one
 * database and user), logs in (trust on a compute's private socket; SCRAM with the ClientKey a
 * client proved, or md5/password from auth_file, toward a static server), and then serves one
 * client at a time: SETUP applies the client's startup parameters, ACTIVE relays, RESET runs
 * server_reset_query when the client leaves. server_set_state() is the only place the state
 * changes, and it keeps the server in the pool list that matches its state.
 */
#include "pgtide/server.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "pgtide/client.h"
#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/hub.h"
#include "pgtide/log.h"
#include "pgtide/park.h"
#include "pgtide/pkt.h"
#include "pgtide/pool.h"
#include "pgtide/proxy.h"
#include "pgtide/ryw.h"
#include "pgtide/secret.h"
#include "pgtide/txn.h"
#include "pgtide/userlist.h"

static const char *const state_names[] = {"connecting", "tls_request", "tls",   "login", "idle",
                                          "setup",      "active",      "reset", "park",  "closing"};

const char *server_state_name(enum server_state s)
{
    return s <= SERVER_CLOSING ? state_names[s] : "?";
}

#define SLOG(lvl, s, fmt, ...)                                                                     \
    log_write(lvl, "S-%llu %s/%s: " fmt, (unsigned long long) (s)->id, (s)->pool->database,        \
              (s)->pool->user, ##__VA_ARGS__)

static struct proxy *proxy_of(const struct server *s)
{
    return s->pool->proxy;
}

static void io_set(struct ev_loop *loop, ev_io *w, bool on)
{
    if (on && !ev_is_active(w))
        ev_io_start(loop, w);
    else if (!on && ev_is_active(w))
        ev_io_stop(loop, w);
}

bool server_state_legal(enum server_state from, enum server_state to)
{
    if (to == SERVER_CLOSING)
        return true;
    switch (from) {
    case SERVER_CONNECTING:
        return to == SERVER_TLS_REQ || to == SERVER_LOGIN;
    case SERVER_TLS_REQ:
        return to == SERVER_TLS || to == SERVER_LOGIN;
    case SERVER_TLS:
        return to == SERVER_LOGIN;
    case SERVER_LOGIN:
        return to == SERVER_IDLE;
    case SERVER_IDLE:
        return to == SERVER_SETUP || to == SERVER_ACTIVE;
    case SERVER_SETUP:
        return to == SERVER_ACTIVE || to == SERVER_RESET;
    case SERVER_ACTIVE:
        return to == SERVER_RESET || to == SERVER_IDLE || to == SERVER_PARK;
    case SERVER_PARK:
        return to == SERVER_ACTIVE;
    case SERVER_RESET:
        return to == SERVER_IDLE;
    default:
        return false;
    }
}

void server_set_state(struct server *s, enum server_state to)
{
    enum server_state from = s->state;
    if (from == to)
        return;
    assert(server_state_legal(from, to));
    struct pool *pool = s->pool;
    list_del(&s->node);
    switch (to) {
    case SERVER_CONNECTING:
    case SERVER_TLS_REQ:
    case SERVER_TLS:
    case SERVER_LOGIN:
        list_add_tail(&pool->opening, &s->node);
        break;
    case SERVER_IDLE:
        pool_idle_add(pool, s);
        break;
    case SERVER_SETUP:
    case SERVER_ACTIVE:
    case SERVER_RESET:
    case SERVER_PARK:
        list_add_tail(&pool->used, &s->node);
        break;
    case SERVER_CLOSING:
        break;
    }
    s->state = to;
    s->state_since_ms = proxy_now_ms();
    if (log_enabled(LOG_LVL_DEBUG))
        SLOG(LOG_LVL_DEBUG, s, "%s -> %s", server_state_name(from), server_state_name(to));
}

/* ---- output ------------------------------------------------------------------------------ */

struct pkt_builder *server_out(struct server *s)
{
    if (s->out_builder.buf == NULL)
        pkt_builder_init_dyn(&s->out_builder, 512);
    return &s->out_builder;
}

/* Writes pgtide's own bytes to the server. true when all are written. */
static bool flush_out(struct server *s)
{
    struct pkt_builder *b = &s->out_builder;
    while (b->buf != NULL && s->out_off < b->len) {
        ssize_t n = sock_write(&s->conn.sock, b->buf + s->out_off, b->len - s->out_off);
        if (n > 0) {
            s->out_off += (size_t) n;
            continue;
        }
        if (n == SOCK_AGAIN) {
            io_set(proxy_of(s)->loop, &s->conn.wio, true);
            return false;
        }
        server_close(s, "write error");
        return false;
    }
    if (b->buf != NULL) {
        /* keep a modest buffer for the next batch: no allocation per request */
        if (b->cap > 64 * 1024) {
            pkt_builder_free(b);
            memset(b, 0, sizeof(*b));
        } else {
            pkt_builder_reset(b);
        }
        s->out_off = 0;
    }
    return true;
}

void server_flush(struct server *s)
{
    struct client *c = s->client;
    if (flush_out(s)) {
        io_set(proxy_of(s)->loop, &s->conn.wio, false);
        if (c != NULL && c->state == CLIENT_ACTIVE && !c->close_pending)
            relay_read_on(proxy_of(s)->loop, &c->conn, true);
    } else if (s->state != SERVER_CLOSING && c != NULL) {
        relay_read_on(proxy_of(s)->loop, &c->conn, false); /* back-pressure */
    }
}

/* ---- parameters -------------------------------------------------------------------------- */

const char *server_param(const struct server *s, const char *name)
{
    for (int i = 0; i < s->nparams; i++)
        if (strcmp(s->params[i].name, name) == 0)
            return s->params[i].value;
    return NULL;
}

void server_set_param(struct server *s, const char *name, const char *value)
{
    for (int i = 0; i < s->nparams; i++) {
        if (strcmp(s->params[i].name, name) == 0) {
            if (strcmp(s->params[i].value, value) == 0)
                return;
            char *v = strdup(value);
            if (v != NULL) {
                s->ps_sig ^= txn_param_sig(name, s->params[i].value) ^ txn_param_sig(name, value);
                free(s->params[i].value);
                s->params[i].value = v;
            }
            return;
        }
    }
    if (s->nparams >= SERVER_MAX_PARAMS)
        return;
    char *n = strdup(name), *v = strdup(value);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return;
    }
    s->params[s->nparams].name = n;
    s->params[s->nparams].value = v;
    s->nparams++;
    s->ps_sig ^= txn_param_sig(name, value);
}

/* ---- close ------------------------------------------------------------------------------- */

/* Out of this loop: no pending read in the drain, no watcher, no timer. */
static void off_loop(struct server *s)
{
    struct proxy *p = proxy_of(s);
    list_del(&s->conn.ready);
    ev_io_stop(p->loop, &s->conn.rio);
    ev_io_stop(p->loop, &s->conn.wio);
    ev_timer_stop(p->loop, &s->timer);
}

void server_close(struct server *s, const char *reason)
{
    if (s->state == SERVER_CLOSING)
        return;
    struct proxy *p = proxy_of(s);
    struct pool *pool = s->pool;
    SLOG(s->state == SERVER_IDLE ? LOG_LVL_DEBUG : LOG_LVL_INFO, s, "closed: %s", reason);
    bool was_login = s->state < SERVER_IDLE;
    /* a client waiting for nothing hears of it when it next speaks, as an answer it reads */
    bool idle = s->state == SERVER_ACTIVE && s->in_flight == 0 && s->q.count == 0 &&
                !relay_has_pending(&s->conn);
    if (s->state == SERVER_PARK)
        park_server_lost(p); /* its snapshot will not come: the round fails */
    server_set_state(s, SERVER_CLOSING);
    ryw_server_gone(s);
    off_loop(s);
    pool->nservers--;
    pool_room_give(pool);
    struct client *c = s->client;
    s->client = NULL;
    if (c != NULL && s->conn.skip > 0) {
        /* part of a large message went to the client: an ErrorResponse now would be read as
           the rest of it, so the connection ends without one */
        c->server = NULL;
        client_close(c, "server connection lost in the middle of a message");
    } else if (c != NULL) {
        c->server = NULL;
        client_server_lost(c, s->error_code[0] ? s->error_code : "08006",
                           s->error_msg[0] ? s->error_msg : "pgtide: server connection lost", idle);
    }
    relay_conn_close(&s->conn);
    if (s->out_builder.buf != NULL)
        pkt_builder_free(&s->out_builder);
    memset(&s->out_builder, 0, sizeof(s->out_builder));
    list_add_tail(&p->dead_servers, &s->node);
    if (was_login)
        pool_login_failed(pool, s->error_code[0] ? s->error_code : "08006",
                          s->error_msg[0] ? s->error_msg : "pgtide: could not connect to server");
    pool_server_gone(pool, s);
}

void server_free(struct server *s)
{
    for (int i = 0; i < s->nparams; i++) {
        free(s->params[i].name);
        free(s->params[i].value);
    }
    scram_client_clear(&s->scram);
    txn_server_free(s);
    free(s);
}

/* ---- login ------------------------------------------------------------------------------- */

static void send_startup(struct server *s)
{
    struct pkt_param params[3] = {
        {"user", s->pool->user},
        {"database", s->pool->database},
        {"application_name", "pgtide"},
    };
    pkt_write_startup(server_out(s), params, 3);
    server_set_state(s, SERVER_LOGIN);
    (void) flush_out(s);
}

static void login_fail(struct server *s, const char *code, const char *fmt, const char *arg)
{
    snprintf(s->error_code, sizeof(s->error_code), "%s", code);
    snprintf(s->error_msg, sizeof(s->error_msg), fmt, arg);
    server_close(s, s->error_msg);
}

/* The backend's password for the pool's user from auth_file (a static server). */
static bool backend_secret(struct server *s, struct secret *out)
{
    struct proxy *p = proxy_of(s);
    const char *text = p->auth_file ? userlist_get(p->auth_file, s->pool->user) : NULL;
    return text != NULL && secret_parse(text, out) == 0;
}

static void login_sasl(struct server *s, uint32_t code, const uint8_t *data, size_t dlen)
{
    char out[SCRAM_MSG_MAX + 128];
    size_t olen = 0;
    if (code == PKT_AUTH_SASL) {
        struct secret sec = {0};
        int rc = -1;
        if (s->pool->has_client_key)
            rc = scram_client_init_keys(&s->scram, s->pool->client_key, &s->pool->client_keys);
        else if (backend_secret(s, &sec) && sec.kind == SECRET_PLAIN)
            rc = scram_client_init_password(&s->scram, sec.plain);
        secret_clear(&sec);
        if (rc != 0 || scram_client_first(&s->scram, out, sizeof(out), &olen) != 0) {
            login_fail(s, "28P01",
                       "pgtide: no credentials to log in to the server as \"%s\" with SCRAM "
                       "(log in with SCRAM first, or put a password in auth_file)",
                       s->pool->user);
            return;
        }
        pkt_write_sasl_initial(server_out(s), SCRAM_MECH, out, olen);
    } else if (code == PKT_AUTH_SASL_CONTINUE) {
        if (scram_client_final(&s->scram, data, dlen, out, sizeof(out), &olen) != 0) {
            login_fail(s, "28P01",
                       "pgtide: SCRAM login to the server as \"%s\" failed (the server's verifier "
                       "differs from pgtide's)",
                       s->pool->user);
            return;
        }
        pkt_write_sasl_response(server_out(s), out, olen);
    } else {
        if (scram_client_verify(&s->scram, data, dlen) != 0)
            login_fail(s, "08006", "pgtide: the server's SCRAM signature for \"%s\" is wrong",
                       s->pool->user);
        return;
    }
    (void) flush_out(s);
}

static void login_auth(struct server *s, const uint8_t *body, uint32_t blen)
{
    uint32_t code;
    const uint8_t *data;
    size_t dlen;
    if (pkt_parse_auth(body, blen, &code, &data, &dlen) != PKT_OK) {
        login_fail(s, "08P01", "pgtide: malformed authentication request from %s", "server");
        return;
    }
    if (code == PKT_AUTH_OK)
        return;
    if (code == PKT_AUTH_SASL || code == PKT_AUTH_SASL_CONTINUE || code == PKT_AUTH_SASL_FINAL) {
        login_sasl(s, code, data, dlen);
        return;
    }
    struct secret sec = {0};
    if (!backend_secret(s, &sec)) {
        login_fail(s, "28P01", "pgtide: no password in auth_file to log in to the server as \"%s\"",
                   s->pool->user);
        return;
    }
    if (code == PKT_AUTH_MD5 && dlen == 4) {
        char resp[40];
        if (secret_md5_response(&sec, s->pool->user, data, resp) == 0) {
            pkt_write_password(server_out(s), resp);
            (void) flush_out(s);
        } else {
            login_fail(s, "28P01", "pgtide: cannot answer md5 for \"%s\"", s->pool->user);
        }
    } else if (code == PKT_AUTH_CLEARTEXT && sec.kind == SECRET_PLAIN) {
        pkt_write_password(server_out(s), sec.plain);
        (void) flush_out(s);
    } else {
        login_fail(s, "28000", "pgtide: unsupported authentication method asked by server for %s",
                   s->pool->user);
    }
    secret_clear(&sec);
}

static void record_error(struct server *s, const uint8_t *body, uint32_t blen)
{
    struct pkt_error_fields f;
    if (pkt_parse_error_fields(body, blen, &f) != PKT_OK) {
        snprintf(s->error_code, sizeof(s->error_code), "08P01");
        snprintf(s->error_msg, sizeof(s->error_msg), "malformed error from server");
        return;
    }
    snprintf(s->error_code, sizeof(s->error_code), "%s", f.code ? f.code : "XX000");
    snprintf(s->error_msg, sizeof(s->error_msg), "%s", f.message ? f.message : "server error");
}

/* Messages while logging in, setting up or resetting: all consumed here. */
static void internal_message(struct server *s, uint8_t t, const uint8_t *body, uint32_t blen)
{
    const char *name, *value;
    char st;
    switch (t) {
    case 'R':
        if (s->state == SERVER_LOGIN)
            login_auth(s, body, blen);
        return;
    case 'S':
        if (pkt_parse_param_status(body, blen, &name, &value) == PKT_OK)
            server_set_param(s, name, value);
        return;
    case 'K':
        if (pkt_parse_backend_key(body, blen, &s->pid, &s->key) != PKT_OK)
            login_fail(s, "08P01", "pgtide: malformed %s from server", "BackendKeyData");
        return;
    case 'E':
        record_error(s, body, blen);
        if (s->state == SERVER_LOGIN)
            server_close(s, s->error_msg);
        return;
    case 'Z':
        if (pkt_parse_ready(body, blen, &st) != PKT_OK) {
            server_close(s, "malformed ReadyForQuery");
            return;
        }
        s->txn = st;
        if (s->in_flight > 0)
            s->in_flight--;
        if (s->in_flight > 0)
            return;
        if (s->state == SERVER_LOGIN) {
            ev_timer_stop(proxy_of(s)->loop, &s->timer);
            SLOG(LOG_LVL_DEBUG, s, "logged in (backend pid %u)", s->pid);
            s->error_code[0] = s->error_msg[0] = '\0';
            pool_learn_params(s->pool, s);
            server_set_state(s, SERVER_IDLE);
            pool_server_idle(s->pool, s);
        } else if (s->state == SERVER_PARK) {
            char msg[256];
            bool failed = s->error_code[0] != '\0';
            memcpy(msg, s->error_msg, sizeof(msg));
            s->error_code[0] = s->error_msg[0] = '\0';
            park_done(s, failed ? msg : NULL);
        } else if (s->state == SERVER_SETUP) {
            struct client *c = s->client;
            if (s->error_code[0] != '\0' && c != NULL && c->welcomed) {
                /* replaying a parked session: a statement that no longer prepares (its table
                   was dropped) must not cost the client its connection */
                SLOG(LOG_LVL_WARNING, s, "replay of a parked session: %s", s->error_msg);
                s->error_code[0] = s->error_msg[0] = '\0';
            }
            if (c != NULL)
                park_clear(c);
            if (s->error_code[0] != '\0' && c != NULL) {
                char code[6], msg[256];
                memcpy(code, s->error_code, sizeof(code));
                memcpy(msg, s->error_msg, sizeof(msg));
                s->error_code[0] = s->error_msg[0] = '\0';
                s->client = NULL;
                c->server = NULL;
                server_set_state(s, SERVER_RESET);
                server_set_state(s, SERVER_IDLE);
                pool_server_idle(s->pool, s);
                client_fatal(c, code, "%s", msg);
                return;
            }
            if (c != NULL)
                txn_settings_applied(s, c);
            server_set_state(s, SERVER_ACTIVE);
            if (c != NULL)
                client_attach_server(c, s);
            else
                server_release(s);
        } else if (s->state == SERVER_RESET) {
            if (s->error_code[0] != '\0' || s->txn != 'I') {
                server_close(s, "the reset query failed");
                return;
            }
            txn_server_forget(s); /* the reset query dropped statements and settings */
            s->error_code[0] = s->error_msg[0] = '\0';
            s->last_used_ms = proxy_now_ms();
            server_set_state(s, SERVER_IDLE);
            pool_server_idle(s->pool, s);
        }
        return;
    case 'D':
        if (s->state == SERVER_PARK)
            park_row(s, body, blen);
        return;
    case 'N':
    case 'C':
    case 'I':
    case 'v':
    case 'T':
    case '1':
    case 't':
    case 'n':
        return;
    default:
        if (s->state == SERVER_IDLE) {
            server_close(s, "unexpected message while idle");
            return;
        }
        return;
    }
}

/* Consumes whole messages from the input while the server is not relaying. */
static void process_internal(struct server *s)
{
    struct buf *b = s->conn.in;
    while (b != NULL && buf_len(b) >= 5 && s->state != SERVER_CLOSING &&
           s->state != SERVER_ACTIVE) {
        struct pkt_hdr h;
        enum pkt_status st = pkt_read_hdr(b->data + b->rpos, buf_len(b), BUF_SIZE - 1, &h);
        if (st == PKT_INCOMPLETE)
            break;
        if (st != PKT_OK) {
            server_close(s, "invalid message from server");
            return;
        }
        if (buf_len(b) < h.len + 1)
            break;
        const uint8_t *body = b->data + b->rpos + 5;
        b->rpos += h.len + 1;
        s->conn.scan = b->rpos;
        internal_message(s, h.type, body, h.len - 4);
        b = s->conn.in;
    }
    if (s->state == SERVER_ACTIVE)
        server_pump(s);
    else if (s->state != SERVER_CLOSING)
        relay_release_idle(&s->conn);
}

/* ---- relay: server -> client ------------------------------------------------------------- */

static bool server_wants(void *arg, uint8_t t)
{
    const struct server *s = arg;
    /* read_your_writes: command tags tell whether a transaction may have written */
    return t == 'Z' || t == 'S' ||
           ((t == 'C' || t == 'V') && s->pool->proxy->cfg->read_your_writes);
}

static void ready_for_query(struct server *s, char st)
{
    struct proxy *p = proxy_of(s);
    struct client *c = s->client;
    s->txn = st;
    if (s->in_flight > 0)
        s->in_flight--;
    p->stats.queries++;
    s->pool->queries++;
    int64_t now = proxy_now_ms();
    if (c != NULL) {
        c->queries++;
        c->txn = st;
        if (c->request_ms > 0)
            p->stats.query_time_us += (uint64_t) (now - c->request_ms) * 1000;
    }
    if (st == 'I') {
        p->stats.xacts++;
        s->pool->xacts++;
    }
    s->last_used_ms = now;
    proxy_touch(p);
}

static enum relay_verdict server_message(void *arg, uint8_t t, const uint8_t *body, uint32_t blen)
{
    struct server *s = arg;
    if (t == 'Z') {
        char st;
        if (ryw_hold(s, body, blen))
            return RELAY_STOP; /* until the primary's WAL position is known (ryw.h) */
        if (pkt_parse_ready(body, blen, &st) == PKT_OK)
            ready_for_query(s, st);
    } else if (t == 'C' || t == 'V') {
        ryw_note_command(s, t, body, blen);
    } else if (t == 'S') {
        const char *name, *value;
        if (pkt_parse_param_status(body, blen, &name, &value) == PKT_OK)
            server_set_param(s, name, value);
    }
    return RELAY_FORWARD;
}

static const struct relay_ops server_ops = {server_wants, NULL, server_message};

void server_pump(struct server *s)
{
    struct proxy *p = proxy_of(s);
    struct client *c = s->client;
    if (s->state != SERVER_ACTIVE || c == NULL)
        return;
    bool txn = c->pool_mode != POOL_SESSION;
    enum relay_status st;
    for (;;) {
        if (client_out_pending(c)) {
            /* pgtide's own bytes to the client go first */
            relay_read_on(p->loop, &s->conn, false);
            client_want_write(c);
            return;
        }
        st = relay_pump(&s->conn, &c->conn.sock, UINT32_MAX - 1,
                        txn ? &txn_server_ops : &server_ops, s);
        if (s->state == SERVER_CLOSING || s->client != c)
            return;
        if (st == RELAY_STOPPED && ryw_holding(s)) {
            relay_read_on(p->loop, &s->conn, false); /* ryw pumps it again */
            return;
        }
        if (st != RELAY_STOPPED || !txn)
            break;
        /* answers pgtide gives itself are due before this message */
        if (txn_after_server_pump(s) || s->client != c || c->close_pending)
            return;
    }
    switch (st) {
    case RELAY_OK:
    case RELAY_STOPPED:
        relay_read_on(p->loop, &s->conn, true);
        relay_release_idle(&s->conn);
        if (txn)
            (void) txn_after_server_pump(s);
        break;
    case RELAY_BLOCKED:
        relay_read_on(p->loop, &s->conn, false);
        client_want_write(c);
        break;
    case RELAY_BAD_INPUT:
        server_close(s, "invalid message length from server");
        break;
    case RELAY_DST_ERROR:
        client_close(c, "write error");
        break;
    }
}

/* ---- watchers ---------------------------------------------------------------------------- */

static void connected(struct server *s)
{
    struct proxy *p = proxy_of(s);
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->conn.sock.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        snprintf(s->error_code, sizeof(s->error_code), "08006");
        snprintf(s->error_msg, sizeof(s->error_msg), "pgtide: could not connect to server: %s",
                 strerror(err ? err : errno));
        server_close(s, s->error_msg);
        return;
    }
    io_set(p->loop, &s->conn.wio, false);
    relay_read_on(p->loop, &s->conn, true);
    if (!s->is_unix && p->tls_client != NULL) {
        pkt_write_ssl_request(server_out(s));
        server_set_state(s, SERVER_TLS_REQ);
        (void) flush_out(s);
        return;
    }
    send_startup(s);
}

static void tls_answer(struct server *s)
{
    struct proxy *p = proxy_of(s);
    uint8_t ch;
    ssize_t n = sock_read(&s->conn.sock, &ch, 1);
    if (n == SOCK_AGAIN)
        return;
    if (n != 1 || (ch != 'S' && ch != 'N')) {
        login_fail(s, "08P01", "pgtide: bad answer to SSLRequest from %s", "server");
        return;
    }
    if (ch == 'N') {
        if (p->cfg->server_tls_sslmode >= SSLMODE_REQUIRE) {
            login_fail(s, "08006", "pgtide: the server does not support TLS (%s)",
                       "server_tls_sslmode");
            return;
        }
        send_startup(s);
        return;
    }
    if (sock_tls_start(&s->conn.sock, p->tls_client) != 0) {
        login_fail(s, "08006", "pgtide: %s", "TLS setup failed");
        return;
    }
    server_set_state(s, SERVER_TLS);
}

static void tls_step(struct server *s)
{
    struct proxy *p = proxy_of(s);
    int r = sock_tls_handshake(&s->conn.sock, false);
    if (r == SOCK_AGAIN) {
        io_set(p->loop, &s->conn.wio, s->conn.sock.want_write);
        return;
    }
    if (r != 1) {
        login_fail(s, "08006", "pgtide: TLS handshake with the server failed%s", "");
        return;
    }
    io_set(p->loop, &s->conn.wio, false);
    send_startup(s);
}

static void read_step(struct server *s);

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void) loop;
    (void) revents;
    struct server *s = container_of(w, struct server, conn.rio);
    proxy_defer_read(proxy_of(s), &s->conn);
}

void server_read_ready(struct server *s)
{
    if (s->state == SERVER_CLOSING)
        return;
    read_step(s);
    /* TLS may hold decrypted bytes the socket will not signal again */
    if (s->state != SERVER_CLOSING && ev_is_active(&s->conn.rio))
        relay_read_on(proxy_of(s)->loop, &s->conn, true);
}

static void read_step(struct server *s)
{
    if (s->state == SERVER_TLS_REQ) {
        tls_answer(s);
        if (s->state != SERVER_TLS)
            return;
    }
    if (s->state == SERVER_TLS) {
        tls_step(s);
        return;
    }
    ssize_t n = relay_read(&s->conn);
    if (n == RELAY_READ_EOF || n == SOCK_ERROR || n == RELAY_READ_NOMEM) {
        server_close(s, n == RELAY_READ_EOF ? "server closed the connection" : "read error");
        return;
    }
    if (n > 0 && s->client != NULL) {
        s->client->bytes_sent += (uint64_t) n;
        proxy_of(s)->stats.bytes_sent += (uint64_t) n;
        s->pool->bytes_sent += (uint64_t) n;
    }
    if (s->state == SERVER_ACTIVE)
        server_pump(s);
    else
        process_internal(s);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void) loop;
    (void) revents;
    struct server *s = container_of(w, struct server, conn.wio);
    switch (s->state) {
    case SERVER_CONNECTING:
        connected(s);
        return;
    case SERVER_TLS:
        tls_step(s);
        return;
    default:
        break;
    }
    if (!flush_out(s))
        return;
    io_set(proxy_of(s)->loop, &s->conn.wio, false);
    if (s->state == SERVER_ACTIVE && s->client != NULL)
        client_pump(s->client);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    struct server *s = container_of(w, struct server, timer);
    if (s->state < SERVER_IDLE)
        login_fail(s, "08006", "pgtide: could not connect to server: %s",
                   "timeout (server_connect_timeout)");
}

/* ---- connect ----------------------------------------------------------------------------- */

/* Opens a non-blocking connection to the compute's endpoint. Returns the fd or -1. */
static int open_endpoint(struct compute *cp, bool *is_unix, char *err, size_t errlen)
{
    const char *host = compute_host(cp);
    int port = compute_port(cp);
    *is_unix = compute_is_unix(cp);
    if (*is_unix) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if ((size_t) snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", host, port) >=
            sizeof(sun.sun_path)) {
            snprintf(err, errlen, "socket path too long");
            return -1;
        }
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || sock_setup(fd, false) != 0) {
            snprintf(err, errlen, "socket: %s", strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) != 0 && errno != EINPROGRESS &&
            errno != EAGAIN) {
            snprintf(err, errlen, "connect %s: %s", sun.sun_path, strerror(errno));
            close(fd);
            return -1;
        }
        return fd;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai = NULL;
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    const char *h = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    int rc = getaddrinfo(h, ports, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "static_host must be a numeric address: %s", gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || sock_setup(fd, true) != 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect %s:%d: %s", host, port, strerror(errno));
        freeaddrinfo(ai);
        close(fd);
        return -1;
    }
    freeaddrinfo(ai);
    return fd;
}

struct server *server_new(struct pool *pool)
{
    struct proxy *p = pool->proxy;
    char err[256];
    bool is_unix;
    int fd = open_endpoint(pool->compute, &is_unix, err, sizeof(err));
    if (fd < 0) {
        log_warn("pool %s/%s: cannot open a server connection: %s", pool->database, pool->user,
                 err);
        return NULL;
    }
    struct server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(fd);
        return NULL;
    }
    s->pool = pool;
    s->id = proxy_next_server_id(p);
    s->state = SERVER_CONNECTING;
    s->is_unix = is_unix;
    s->txn = 'I';
    relay_conn_init(&s->conn, fd);
    list_init(&s->node);
    list_add_tail(&pool->opening, &s->node);
    pool->nservers++;
    p->stats.servers_total++;
    s->connect_ms = s->state_since_ms = s->last_used_ms = proxy_now_ms();
    ev_io_init(&s->conn.rio, on_read, fd, EV_READ);
    s->conn.is_server = true;
    ev_io_init(&s->conn.wio, on_write, fd, EV_WRITE);
    ev_timer_init(&s->timer, on_timer, (double) p->cfg->server_connect_timeout / 1000.0, 0.0);
    ev_timer_start(p->loop, &s->timer);
    ev_io_start(p->loop, &s->conn.wio);
    return s;
}

/* ---- assign / release -------------------------------------------------------------------- */

/* Appends s as an E'' literal (the same whatever standard_conforming_strings is). */
static void put_literal(struct pkt_builder *b, const char *s)
{
    pkt_put_bytes(b, "E'", 2);
    for (const char *q = s; *q; q++) {
        if (*q == '\'' || *q == '\\')
            pkt_put_bytes(b, q, 1);
        pkt_put_bytes(b, q, 1);
    }
    pkt_put_bytes(b, "'", 1);
}

void server_append_set(struct pkt_builder *b, const char *name, const char *value)
{
    /* set_config parses value exactly as the setting's own syntax (a list such as search_path
       "a, b" stays a list), where SET x TO 'a, b' would make it one quoted element */
    pkt_put_bytes(b, "SELECT pg_catalog.set_config(", 29);
    put_literal(b, name);
    pkt_put_bytes(b, ", ", 2);
    put_literal(b, value);
    pkt_put_bytes(b, ", false); ", 10);
}

void server_assign(struct server *s, struct client *c)
{
    s->client = c;
    s->served = true;
    s->in_flight = 0;
    if (c->parked == NULL && !s->stale_statements && txn_params_in_step(c, s)) {
        /* the usual case, without allocating anything */
        server_set_state(s, SERVER_ACTIVE);
        client_attach_server(c, s);
        return;
    }
    struct pkt_builder q;
    pkt_builder_init_dyn(&q, 256);
    int n = txn_param_sync(c, s, &q);
    if (n == 0 && c->parked == NULL && !s->stale_statements) {
        pkt_builder_free(&q);
        server_set_state(s, SERVER_ACTIVE);
        client_attach_server(c, s);
        return;
    }
    pkt_put_bytes(&q, "", 1);
    server_set_state(s, SERVER_SETUP);
    s->in_flight = 0;
    if (s->stale_statements) {
        pkt_write_query(server_out(s), "DEALLOCATE ALL");
        s->in_flight++;
        s->stale_statements = false;
    }
    if (n > 0 && !q.failed) {
        pkt_write_query(server_out(s), (const char *) q.buf);
        s->in_flight++;
    }
    pkt_builder_free(&q);
    s->in_flight += park_replay(c, server_out(s));
    if (s->in_flight == 0) {
        server_set_state(s, SERVER_ACTIVE);
        client_attach_server(c, s);
        return;
    }
    (void) flush_out(s);
}

void server_release(struct server *s)
{
    struct proxy *p = proxy_of(s);
    s->client = NULL;
    if (s->state == SERVER_SETUP)
        return; /* finishes its SET, then comes back here through internal_message */
    if (s->state == SERVER_PARK) {
        server_close(s, "client left during a session snapshot");
        return;
    }
    if (s->state != SERVER_ACTIVE) {
        server_close(s, "released in an unexpected state");
        return;
    }
    if (s->in_flight > 0 || s->q.count > 0 || s->txn != 'I' || s->unsynced ||
        relay_has_pending(&s->conn) || s->out_off < s->out_builder.len) {
        /* the client left mid-request, inside a transaction, or before the Sync of its
           extended-protocol messages (a reset query then would commit them): never hand this
           on */
        if (s->in_flight > 0 || s->q.count > 0 || s->unsynced)
            server_send_cancel(s);
        server_close(s, s->txn != 'I' ? "client left inside a transaction"
                        : s->unsynced ? "client left before the Sync of its extended-protocol "
                                        "messages"
                                      : "client left with a request in flight");
        return;
    }
    if (s->pool->pool_mode != POOL_SESSION) {
        /* transaction pooling: the next client gets it as is (settings are synced per client) */
        s->last_used_ms = proxy_now_ms();
        server_set_state(s, SERVER_IDLE);
        pool_server_idle(s->pool, s);
        return;
    }
    const char *reset = p->cfg->server_reset_query;
    server_set_state(s, SERVER_RESET);
    if (reset[0] == '\0') {
        server_set_state(s, SERVER_IDLE);
        pool_server_idle(s->pool, s);
        return;
    }
    s->error_code[0] = s->error_msg[0] = '\0'; /* so that the reset query's own error shows */
    pkt_write_query(server_out(s), reset);
    s->in_flight = 1;
    relay_read_on(p->loop, &s->conn, true);
    (void) flush_out(s);
}

void server_snapshot(struct server *s)
{
    if (s->state != SERVER_ACTIVE || s->client == NULL)
        return;
    client_set_blocker(s->client, NULL);
    park_clear(s->client);
    server_set_state(s, SERVER_PARK);
    struct pkt_builder *o = server_out(s);
    pkt_begin(o, 'Q');
    pkt_put_bytes(o, park_snapshot_sql, strlen(park_snapshot_sql));
    const struct client *c = s->client;
    if (c->ncustom > 0) {
        /* custom settings the session SET: current_setting finds them by name */
        static const char head[] = " UNION ALL SELECT 's', n, pg_catalog.current_setting(n, true), "
                                   "NULL FROM (VALUES ";
        pkt_put_bytes(o, head, sizeof(head) - 1);
        for (int i = 0; i < c->ncustom; i++) {
            if (i > 0)
                pkt_put_bytes(o, ", ", 2);
            pkt_put_bytes(o, "(", 1);
            put_literal(o, c->custom[i]);
            pkt_put_bytes(o, ")", 1);
        }
        static const char tail[] = ") v(n) WHERE pg_catalog.current_setting(n, true) IS NOT NULL";
        pkt_put_bytes(o, tail, sizeof(tail) - 1);
    }
    if (c->custom_opaque) {
        static const char opaque[] = " UNION ALL SELECT 'x', 'a custom setting pgtide cannot name "
                                     "(set_config with a non-literal name)', NULL, NULL";
        pkt_put_bytes(o, opaque, sizeof(opaque) - 1);
    }
    pkt_put_bytes(o, park_snapshot_end, strlen(park_snapshot_end));
    pkt_put_u8(o, 0);
    pkt_end(o);
    s->in_flight = 1;
    relay_read_on(proxy_of(s)->loop, &s->conn, true);
    (void) flush_out(s);
}

void server_detach(struct server *s)
{
    struct client *c = s->client;
    s->client = NULL;
    c->server = NULL;
    client_set_state(c, CLIENT_IDLE);
    relay_release_idle(&c->conn);
    relay_release_idle(&s->conn);
    s->last_used_ms = proxy_now_ms();
    server_set_state(s, SERVER_IDLE);
    pool_server_idle(s->pool, s);
}

/* ---- moving between workers --------------------------------------------------------------- */

bool server_movable(const struct server *s)
{
    return s->state == SERVER_IDLE && s->client == NULL && s->in_flight == 0 && s->q.count == 0 &&
           s->txn == 'I' && !relay_has_pending(&s->conn) && s->out_off >= s->out_builder.len &&
           (s->conn.in == NULL || buf_len(s->conn.in) == 0) && !s->conn.sock.want_write &&
           !s->conn.tls_more && !s->ryw_held;
}

void server_hand_over(struct server *s, struct proxy *to)
{
    struct proxy *p = proxy_of(s);
    struct pool *pool = s->pool;
    list_del(&s->node);
    off_loop(s);
    relay_release_idle(&s->conn); /* buffers stay on this thread's free list */
    pool->nservers--;
    hub_slot_move(p->hub, pool->slot, p->worker, to->worker);
    SLOG(LOG_LVL_DEBUG, s, "handed over to worker %d", to->worker);
    s->hand_to = to->worker;
    list_add_tail(&p->handing, &s->node);
}

void server_post_handovers(struct proxy *p)
{
    while (!list_empty(&p->handing)) {
        struct server *s = container_of(list_first(&p->handing), struct server, node);
        list_del(&s->node);
        struct hub_msg m = {.kind = HUB_SERVER, .server = s, .slot = s->pool->slot};
        s->pool = NULL; /* this worker's pool is not the receiver's to touch */
        hub_post(hub_worker(p->hub, s->hand_to), &m);
    }
}

void server_adopt(struct proxy *p, struct server *s, struct hub_slot *slot)
{
    struct pool *pool = NULL;
    if (!p->shutting_down)
        pool = pool_get_for(p, (struct compute *) slot->compute, slot->database, slot->user);
    if (pool == NULL) {
        hub_slot_give(p->hub, slot, p->worker); /* it was counted here */
        server_discard(s);
        return;
    }
    s->pool = pool;
    s->served = false;
    if (s->prepared.n > 0) {
        s->prepared.n = 0;
        s->stale_statements = true;
    }
    relay_read_on(p->loop, &s->conn, true); /* an idle server's EOF or stray message */
    pool_server_adopted(pool, s);
}

void server_discard(struct server *s)
{
    relay_conn_close(&s->conn);
    if (s->out_builder.buf != NULL)
        pkt_builder_free(&s->out_builder);
    server_free(s);
}

/* ---- cancel ------------------------------------------------------------------------------ */

struct cancel_conn {
    ev_io io;
    ev_timer timer;
    struct ev_loop *loop;
    int fd;
    uint8_t msg[16];
};

static void cancel_done(struct cancel_conn *cc)
{
    ev_io_stop(cc->loop, &cc->io);
    ev_timer_stop(cc->loop, &cc->timer);
    close(cc->fd);
    free(cc);
}

static void cancel_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void) loop;
    (void) revents;
    struct cancel_conn *cc = container_of(w, struct cancel_conn, io);
    ssize_t n = send(cc->fd, cc->msg, sizeof(cc->msg), MSG_NOSIGNAL);
    if (n != (ssize_t) sizeof(cc->msg))
        log_warn("could not send a cancel request to the server: %s",
                 n < 0 ? strerror(errno) : "short write");
    cancel_done(cc);
}

static void cancel_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    struct cancel_conn *cc = container_of(w, struct cancel_conn, timer);
    log_warn("cancel request to the server timed out");
    cancel_done(cc);
}

void server_send_cancel(struct server *s)
{
    struct proxy *p = proxy_of(s);
    char err[256];
    bool is_unix;
    int fd = open_endpoint(s->pool->compute, &is_unix, err, sizeof(err));
    if (fd < 0) {
        log_warn("cannot send a cancel request: %s", err);
        return;
    }
    struct cancel_conn *cc = calloc(1, sizeof(*cc));
    if (cc == NULL) {
        close(fd);
        return;
    }
    cc->loop = p->loop;
    cc->fd = fd;
    struct pkt_builder b;
    pkt_builder_init(&b, cc->msg, sizeof(cc->msg));
    pkt_write_cancel_request(&b, s->pid, s->key);
    ev_io_init(&cc->io, cancel_write, fd, EV_WRITE);
    ev_timer_init(&cc->timer, cancel_timeout, 10.0, 0.0);
    ev_io_start(p->loop, &cc->io);
    ev_timer_start(p->loop, &cc->timer);
}
