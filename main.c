/*
 * main: the pgtide program. Parses the command line (subcommands run, init, version), builds
 * the configuration snapshot (defaults, DATA/pgtide.conf or -f FILE, then -c overrides), opens
 * the storage, creates the primary compute and the proxy, wires the compute's state hook to
 * the proxy, and runs the event loop with SIGHUP (reload), SIGTERM (graceful shutdown: stop
 * accepting, let clients finish, stop the compute) and SIGINT (fast shutdown).
 */
#include <errno.h>
#include <ev.h>
#include <openssl/crypto.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "pgtide/account.h"
#include "pgtide/backupctl.h"
#include "pgtide/buf.h"
#include "pgtide/authdb.h"
#include "pgtide/autoscale.h"
#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/hub.h"
#include "pgtide/list.h"
#include "pgtide/log.h"
#include "pgtide/metrics.h"
#include "pgtide/proxy.h"
#include "pgtide/replica.h"
#include "pgtide/restore.h"
#include "pgtide/secret.h"
#include "pgtide/state.h"
#include "pgtide/store.h"
#include "pgtide/wal.h"

#define MAX_OVERRIDES 128

/* What the command line said, kept for reloads. */
struct options {
    const char *data_dir;
    const char *conf_file; /* NULL: DATA/pgtide.conf when it exists */
    const char *overrides[MAX_OVERRIDES];
    int noverrides;
};

struct app {
    struct options opt;
    struct ev_loop *loop;
    struct config *cfg;
    struct store store;
    struct compute *primary;
    struct proxy *proxy;
    struct autoscale_driver *autoscale; /* vertical autoscaling of the primary (issue 5) */
    struct account *account;            /* usage ledger (issue 5) */
    struct metrics *metrics;            /* Prometheus endpoint (issue 5); NULL when off */
    struct replicaset *replicas;        /* read replicas (issue 6); NULL with the static provider */
    struct hub *hub;                    /* data-plane worker threads (issue 4); NULL: workers = 1 */
    ev_signal sighup, sigterm, sigint;
    ev_timer drain;
    bool stopping;
};

static void usage(FILE *f)
{
    fprintf(f,
            "pgtide %s: a serverless front door for PostgreSQL\n\n"
            "usage:\n"
            "  pgtide [run] -D DATA [-f FILE] [-c name=value ...]  serve (the default)\n"
            "  pgtide init -D DATA                                  create the storage\n"
            "  pgtide usage -D DATA [--since T] [--until T] [--format csv|json|table]\n"
            "               [--by hour|day] [--per compute|role]     usage from the ledger\n"
            "  pgtide restore -D DATA --into NEWDIR [--backup ID | --to TIME | --lsn LSN]\n"
            "  pgtide wal-push PATH NAME -D DATA / wal-fetch NAME PATH -D DATA  (WAL archive)\n"
            "  pgtide version\n\n"
            "An empty DATA is initialised on first run (initdb, a generated password for the\n"
            "superuser postgres in DATA/initial-password). Settings: DATA/pgtide.conf, then -c.\n",
            PACKAGE_VERSION);
}

static int parse_args(int argc, char **argv, struct options *opt)
{
    int ch;
    optind = 1;
    while ((ch = getopt(argc, argv, "D:f:c:h")) != -1) {
        switch (ch) {
        case 'D':
            opt->data_dir = optarg;
            break;
        case 'f':
            opt->conf_file = optarg;
            break;
        case 'c':
            if (opt->noverrides >= MAX_OVERRIDES) {
                fprintf(stderr, "pgtide: too many -c options\n");
                return -1;
            }
            opt->overrides[opt->noverrides++] = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pgtide: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (opt->data_dir == NULL) {
        fprintf(stderr, "pgtide: no data directory: use -D DATA\n");
        return -1;
    }
    return 0;
}

/* Builds a snapshot from defaults, the config file and the -c overrides. */
static struct config *build_config(const struct options *opt, char *err, size_t errlen)
{
    struct config *cfg = config_new_defaults();
    if (cfg == NULL || config_set_data_dir(cfg, opt->data_dir) != 0) {
        snprintf(err, errlen, "out of memory");
        config_unref(cfg);
        return NULL;
    }
    char path[4096];
    const char *file = opt->conf_file;
    if (file == NULL) {
        snprintf(path, sizeof(path), "%s/pgtide.conf", opt->data_dir);
        if (access(path, F_OK) == 0)
            file = path;
    }
    if (file != NULL && config_load_file(cfg, file, err, errlen) != 0) {
        config_unref(cfg);
        return NULL;
    }
    for (int i = 0; i < opt->noverrides; i++) {
        if (config_set_arg(cfg, opt->overrides[i], err, errlen) != 0) {
            config_unref(cfg);
            return NULL;
        }
    }
    /* persisted policy (issue 5): SETs of the admin console, DATA/state/policy, override the
       file and -c (also on every reload) */
    if (state_policy_load_apply(opt->data_dir, cfg, NULL, err, errlen) != 0) {
        config_unref(cfg);
        return NULL;
    }
    if (config_validate(cfg, err, errlen) != 0) {
        config_unref(cfg);
        return NULL;
    }
    return cfg;
}

static void apply_logging(const struct config *cfg)
{
    static const enum log_level map[] = {LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARNING,
                                         LOG_LVL_ERROR};
    log_set_level(map[cfg->log_level]);
    if (log_set_file(cfg->logfile) != 0)
        log_error("cannot open logfile %s: %s", cfg->logfile, strerror(errno));
}

/* Raises the descriptor limit toward what max_client_conn and the pools may need. */
static void raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t) cfg->max_client_conn + (rlim_t) cfg->pool_size * 4 + 256;
    if (rl.rlim_cur >= want)
        return;
    rlim_t target = want;
    if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max)
        target = rl.rlim_max;
    rl.rlim_cur = target;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || target < want) {
        /* try once more with the hard limit raised too (works as root) */
        struct rlimit hard = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &hard) == 0)
            return;
        log_warn("the file descriptor limit is %llu, below the %llu that max_client_conn = %d "
                 "may need; raise it (ulimit -n) or lower max_client_conn",
                 (unsigned long long) rl.rlim_cur, (unsigned long long) want, cfg->max_client_conn);
    }
}

/* ---- storage ------------------------------------------------------------------------------ */

/* Opens DATA and initialises the primary cluster when there is none. *created tells whether it
   was made now. */
static int open_storage(struct app *a, bool *created, char *err, size_t errlen)
{
    *created = false;
    if (store_open(&a->store, a->opt.data_dir, a->cfg->compute_user, err, errlen) != 0)
        return -1;
    if (a->store.swept > 0)
        log_info("removed %u temporary file(s) left by writes that did not finish (a crash)",
                 a->store.swept);
    if (a->cfg->compute_provider != PROVIDER_LOCAL || store_has_cluster(&a->store))
        return 0;
    char *bindir = store_find_bindir(a->cfg->pg_bindir, err, errlen);
    if (bindir == NULL)
        return -1;
    log_info("initialising the storage in %s (initdb from %s)", a->opt.data_dir, bindir);
    int rc = store_init_cluster(&a->store, bindir, err, errlen);
    free(bindir);
    if (rc == 0)
        *created = true;
    return rc;
}

/* Reads DATA/initial-password (without the newline); NULL when absent. */
static char *initial_password(const struct app *a)
{
    char *path = store_path(&a->store, "initial-password");
    char *text = NULL;
    size_t len = 0;
    if (path == NULL || store_read_file(path, &text, &len) != 0) {
        free(path);
        return NULL;
    }
    free(path);
    text[strcspn(text, "\r\n")] = '\0';
    return text;
}

/* Puts the first user's verifier in the auth cache, so that even the very first login is
   checked without starting the compute. */
static void seed_auth_cache(struct app *a)
{
    char *pw = initial_password(a);
    if (pw == NULL)
        return;
    char verifier[SECRET_SCRAM_MAX_TEXT];
    if (secret_make_scram(pw, 4096, verifier, sizeof(verifier)) > 0)
        for (int i = 0; i < proxy_count(a->proxy); i++)
            (void) authdb_seed(proxy_nth(a->proxy, i)->authdb, "postgres", verifier);
    OPENSSL_cleanse(pw, strlen(pw));
    free(pw);
}

/* workers > 1 (or 0 = half the CPUs, from 4 on): the data plane moves to worker threads with
   their own listeners; the main loop keeps the control plane (hub.h). */
static int start_workers(struct app *a, char *err, size_t errlen)
{
    int n = a->cfg->workers > 0 ? a->cfg->workers : hub_default_workers();
    if (n > HUB_MAX_WORKERS)
        n = HUB_MAX_WORKERS;
    if (n <= 1)
        return 0;
    a->hub = hub_new(a->proxy, n, err, errlen);
    if (a->hub == NULL)
        return -1;
    for (int i = 1; i <= n; i++)
        if (proxy_listen(hub_worker(a->hub, i), err, errlen) != 0)
            return -1;
    return 0;
}

static void print_connect_info(struct app *a)
{
    const struct config *cfg = a->cfg;
    char *pw = initial_password(a);
    const char *host = strcmp(cfg->listen_addr, "*") == 0 || cfg->listen_addr[0] == '\0'
                           ? "127.0.0.1"
                           : cfg->listen_addr;
    char h[256];
    snprintf(h, sizeof(h), "%s", host);
    h[strcspn(h, ", ")] = '\0';
    printf("pgtide %s is ready.\n", PACKAGE_VERSION);
    if (pw != NULL)
        printf("  connect:  psql \"postgresql://postgres:%s@%s:%d/postgres?sslmode=%s\"\n", pw, h,
               cfg->listen_port,
               cfg->client_tls_sslmode == SSLMODE_DISABLE ? "disable" : "require");
    else
        printf("  connect:  psql -h %s -p %d -U <user> <database>\n", h, cfg->listen_port);
    printf("  console:  psql -h %s -p %d -U postgres pgtide\n", h, cfg->listen_port);
    if (pw != NULL)
        printf("  password: in %s/initial-password\n", a->opt.data_dir);
    fflush(stdout);
    if (pw != NULL) {
        OPENSSL_cleanse(pw, strlen(pw));
        free(pw);
    }
}

/* ---- signals and shutdown ----------------------------------------------------------------- */

static void finish(struct app *a)
{
    if (a->primary != NULL && compute_get_state(a->primary) != COMPUTE_SUSPENDED)
        compute_stop_blocking(a->primary);
    ev_break(a->loop, EVBREAK_ALL);
}

static void on_drain(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    struct app *a = container_of(w, struct app, drain);
    if (proxy_idle(a->proxy)) {
        log_info("all clients gone; stopping");
        ev_timer_stop(a->loop, &a->drain);
        finish(a);
    }
}

static void shutdown_app(struct proxy *p, bool fast)
{
    struct app *a = p->on_shutdown_arg;
    if (a->stopping && !fast)
        return;
    a->stopping = true;
    p->shutting_down = true;
    proxy_stop_accepting(p);
    if (fast) {
        log_info("fast shutdown: closing every client");
        proxy_close_all(p, "terminating connection due to administrator command (pgtide is "
                           "shutting down)");
        finish(a);
        return;
    }
    log_info("graceful shutdown: no new connections; waiting for clients to finish");
    ev_timer_init(&a->drain, on_drain, 0.1, 0.1);
    ev_timer_start(a->loop, &a->drain);
}

static int reload_app(struct proxy *p, char *err, size_t errlen)
{
    struct app *a = p->on_shutdown_arg;
    struct config *cfg = build_config(&a->opt, err, errlen);
    if (cfg == NULL)
        return -1;
    char msg[512];
    if (config_check_reload(a->cfg, cfg, msg, sizeof(msg)) > 0)
        log_warn("reload: %s", msg);
    apply_logging(cfg);
    proxy_reload(p, cfg);
    compute_set_config(a->primary, cfg);
    account_set_config(a->account, cfg);
    config_unref(a->cfg);
    a->cfg = cfg;
    return 0;
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void) loop;
    (void) revents;
    struct app *a = w->data;
    char err[512];
    switch (w->signum) {
    case SIGHUP:
        log_info("SIGHUP: reloading the configuration");
        log_reopen();
        if (reload_app(a->proxy, err, sizeof(err)) != 0)
            log_error("reload failed, keeping the running configuration: %s", err);
        break;
    case SIGTERM:
        shutdown_app(a->proxy, false);
        break;
    default:
        shutdown_app(a->proxy, true);
        break;
    }
}

static void on_compute(void *arg, struct compute *c, enum compute_state from, enum compute_state to)
{
    struct app *a = arg;
    if (c != a->primary) { /* read replicas (issue 6): their servers go, the ledger bills them */
        if (a->proxy != NULL)
            proxy_replica_changed(a->proxy, c, (int) from, (int) to);
        account_compute_changed(a->account, c, from, to);
        return;
    }
    if (a->proxy != NULL)
        proxy_compute_changed(a->proxy, (int) from, (int) to);
    account_compute_changed(a->account, c, from, to);
    if (a->replicas != NULL) /* replicas never outlive the primary (issue 6) */
        replicaset_primary_changed(a->replicas, from, to);
}

/* compute units (issue 5): every live resize of the primary is a RESIZE record in the ledger */
static void on_resized(void *arg, struct compute *c, double from_cu, double to_cu)
{
    (void) from_cu;
    struct app *a = arg;
    if (a->account != NULL)
        account_compute_resized(a->account, c, to_cu);
}

/* ---- subcommands -------------------------------------------------------------------------- */

/* Frees what cmd_run built, in reverse (whatever part of it a refused start got to). */
static void teardown(struct app *a)
{
    hub_stop(a->hub); /* the workers' clients are gone (drained or closed) */
    a->hub = NULL;
    if (a->proxy != NULL) {
        a->proxy->replicas = NULL; /* issue 6: replicas stop before the primary */
        backupctl_free(a->proxy->backups);
        a->proxy->backups = NULL;
    }
    replicaset_free(a->replicas);
    a->replicas = NULL;
    metrics_free(a->metrics);
    account_free(a->account);
    autoscale_driver_free(a->autoscale);
    proxy_free(a->proxy);
    compute_free(a->primary);
    store_close(&a->store);
    config_unref(a->cfg);
    buf_free_pooled(); /* the main thread's relay buffers (the workers freed theirs) */
}

/* A start refused after the event loop exists: logged, everything built so far freed. */
static int refuse(struct app *a, const char *what, const char *err)
{
    log_fatal("%s%s", what, err);
    teardown(a);
    return 1;
}

static int cmd_run(struct app *a)
{
    char err[1024];
    a->cfg = build_config(&a->opt, err, sizeof(err));
    if (a->cfg == NULL) {
        fprintf(stderr, "pgtide: %s\n", err);
        return 1;
    }
    apply_logging(a->cfg);
    raise_fd_limit(a->cfg);
    bool created;
    if (open_storage(a, &created, err, sizeof(err)) != 0) {
        log_fatal("%s", err);
        store_close(&a->store);
        config_unref(a->cfg);
        return 1;
    }
    hub_main_thread();
    a->loop = ev_default_loop(EVFLAG_AUTO);
    struct compute_hooks hooks = {on_compute, a};
    a->primary = compute_new(a->loop, a->cfg, &a->store, COMPUTE_PRIMARY, &hooks);
    if (a->primary == NULL)
        return refuse(a, "cannot set up the compute", "");
    a->proxy = proxy_new(a->loop, a->cfg, &a->store, a->primary, err, sizeof(err));
    if (a->proxy == NULL)
        return refuse(a, "", err);
    a->proxy->on_shutdown = shutdown_app;
    a->proxy->on_reload = reload_app;
    a->proxy->on_shutdown_arg = a;
    /* usage accounting and metrics (issue 5) */
    char *state_dir = store_path(&a->store, "state");
    a->account = state_dir != NULL
                     ? account_new(a->loop, a->cfg, state_dir, NULL, NULL, err, sizeof(err))
                     : NULL;
    free(state_dir);
    if (a->account == NULL)
        return refuse(a, "usage ledger: ", err);
    a->proxy->account = a->account;
    if (a->cfg->metrics_listen[0] != '\0') {
        a->metrics =
            metrics_new(a->loop, a->proxy, a->account, a->cfg->metrics_listen, err, sizeof(err));
        /* metrics are not worth refusing clients over: a second pgtide on this machine with the
           default metrics_listen still serves, without its own endpoint */
        if (a->metrics == NULL)
            log_error("%s; serving without a metrics endpoint (set metrics_listen)", err);
        else
            a->proxy->metrics = a->metrics;
    }
    /* backups (issue 7): schedule, BACKUP, SHOW BACKUPS; NULL with the static provider */
    a->proxy->backups = backupctl_new(a->loop, &a->proxy->cfg, &a->store, a->primary);
    /* compute units (issue 5): CPU-driven vertical autoscaling of the primary (a 1 s sampler);
       its resizes go to the usage ledger */
    compute_set_resize_hook(a->primary, on_resized, a);
    a->autoscale = autoscale_driver_new(a->loop, a->primary);
    /* read replicas (issue 6): built from storage, streaming from the primary, scaled by policy
       or SCALE REPLICAS; their state changes reach on_compute (proxy + ledger) */
    if (a->cfg->compute_provider == PROVIDER_LOCAL) {
        struct replica_hooks rhooks = {on_compute, a};
        a->replicas = replicaset_new(a->loop, a->cfg, &a->store, a->primary, &rhooks);
        a->proxy->replicas = a->replicas;
    }
    if (start_workers(a, err, sizeof(err)) != 0)
        return refuse(a, "", err);
    if (created)
        seed_auth_cache(a);
    if (proxy_listen(a->proxy, err, sizeof(err)) != 0 ||
        (a->hub != NULL && hub_run(a->hub, err, sizeof(err)) != 0))
        return refuse(a, "", err);
    signal(SIGPIPE, SIG_IGN);
    int sigs[] = {SIGHUP, SIGTERM, SIGINT};
    ev_signal *ws[] = {&a->sighup, &a->sigterm, &a->sigint};
    for (int i = 0; i < 3; i++) {
        ev_signal_init(ws[i], on_signal, sigs[i]);
        ws[i]->data = a;
        ev_signal_start(a->loop, ws[i]);
    }
    print_connect_info(a);
    ev_run(a->loop, 0);
    teardown(a);
    log_info("pgtide stopped");
    return 0;
}

static int cmd_init(struct app *a)
{
    char err[1024];
    a->cfg = build_config(&a->opt, err, sizeof(err));
    if (a->cfg == NULL) {
        fprintf(stderr, "pgtide: %s\n", err);
        return 1;
    }
    bool created;
    if (open_storage(a, &created, err, sizeof(err)) != 0) {
        fprintf(stderr, "pgtide: %s\n", err);
        return 1;
    }
    printf(created ? "pgtide: storage initialised in %s; the password of user postgres is in "
                     "%s/initial-password\n"
                   : "pgtide: %s is already initialised%s\n",
           a->opt.data_dir, created ? a->opt.data_dir : "");
    store_close(&a->store);
    config_unref(a->cfg);
    return 0;
}

int main(int argc, char **argv)
{
    struct app a;
    memset(&a, 0, sizeof(a));
    const char *cmd = "run";
    if (argc > 1 && argv[1][0] != '-') {
        cmd = argv[1];
        argv++;
        argc--;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("pgtide %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "usage") == 0)
        return account_usage_main(argc, argv);
    if (strcmp(cmd, "wal-push") == 0)
        return wal_push_main(argc, argv);
    if (strcmp(cmd, "wal-fetch") == 0)
        return wal_fetch_main(argc, argv);
    if (strcmp(cmd, "restore") == 0)
        return restore_main(argc, argv);
    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "init") != 0) {
        fprintf(stderr, "pgtide: unknown command \"%s\"\n", cmd);
        usage(stderr);
        return 2;
    }
    if (parse_args(argc, argv, &a.opt) != 0)
        return 2;
    return strcmp(cmd, "init") == 0 ? cmd_init(&a) : cmd_run(&a);
}
