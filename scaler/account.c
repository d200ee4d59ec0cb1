/*
 * account: turns compute state changes into ledger records and live counters. Each managed
 * compute (static ones are not billed) gets an entry on its first state change; an entry whose
 * interval is open (from the start of a wake until the process exits) is heartbeaten every
 * ledger_heartbeat by one repeating timer, which runs only while some interval is open. The
 * counters (starts, start durations, suspends, CU-seconds) feed the metrics endpoint. SHOW
 * USAGE's ledger reads run on threads of their own (one per request, joined when it answers
 * through an ev_async), so a long ledger never stalls the event loop. The `pgtide usage`
 * subcommand lives here too: it reads the ledger files read-only and prints usage as CSV, JSON
 * or a table.
 */
#include "pgtide/account.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgtide/log.h"

struct entry {
    struct compute *c;
    struct account_compute_stats st;
    bool open;           /* an interval is open in the ledger */
    bool paused;         /* frozen (PAUSE written, no THAW yet) */
    int64_t start_began; /* wall ms of -> STARTING */
    int64_t accrued_ms;  /* CU-seconds counted up to here */
};

/* One SHOW USAGE read: the thread owns params/rows/n/err until it signals done_ev; the loop
   joins it before reading them. */
struct usage_job {
    struct account *a;
    pthread_t thread;
    ev_async done_ev;
    struct usage_params params;
    struct usage_row *rows;
    int n;
    char err[256];
    account_usage_done_fn done;
    void *arg;
    uint64_t token;
    struct usage_job *next;
};

struct account {
    struct ev_loop *loop;
    struct config *cfg;
    char *state_dir;
    struct ledger *ledger;
    ev_timer heartbeat;
    struct entry e[ACCOUNT_MAX_COMPUTES];
    int n;
    struct usage_job *jobs; /* SHOW USAGE reads running */
};

static void job_unlink_free(struct usage_job *j);

static const double start_bounds[ACCOUNT_START_BUCKETS] = ACCOUNT_START_BOUNDS;

static enum ledger_role role_of(enum compute_role r)
{
    return r == COMPUTE_REPLICA ? LEDGER_ROLE_REPLICA : LEDGER_ROLE_PRIMARY;
}

void account_compute_name(const struct compute *c, char *out, size_t outlen)
{
    struct compute_info info;
    compute_get_info(c, &info);
    if (strcmp(info.role, "replica") == 0)
        snprintf(out, outlen, "replica-%d", compute_port(c) - 5433);
    else
        snprintf(out, outlen, "primary");
}

static int any_open(const struct account *a)
{
    for (int i = 0; i < a->n; i++)
        if (a->e[i].open)
            return 1;
    return 0;
}

/* Adds the CU-seconds since the last accrual in the entry's current state. */
static void accrue(struct account *a, struct entry *e, int64_t now)
{
    if (e->open && now > e->accrued_ms) {
        double cus = e->st.cu * (double) (now - e->accrued_ms) / 1000.0;
        if (e->paused)
            e->st.paused_cu_seconds += cus;
        else
            e->st.running_cu_seconds += cus;
    }
    e->accrued_ms = now;
}

static void write_rec(struct account *a, struct entry *e, enum ledger_kind kind)
{
    if (ledger_record(a->ledger, kind, e->st.name, role_of(e->st.role), e->st.cu, e->paused) != 0)
        log_error("usage ledger: cannot record %s of compute %s: %s", ledger_kind_name(kind),
                  e->st.name, strerror(errno));
}

static void on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    struct account *a = w->data;
    int64_t now = ledger_now(a->ledger);
    for (int i = 0; i < a->n; i++) {
        struct entry *e = &a->e[i];
        if (!e->open)
            continue;
        accrue(a, e, now);
        write_rec(a, e, LEDGER_HEARTBEAT);
    }
    if (!any_open(a))
        ev_timer_stop(a->loop, &a->heartbeat);
}

static void arm_heartbeat(struct account *a)
{
    if (ev_is_active(&a->heartbeat) || !any_open(a))
        return;
    double s = (double) a->cfg->ledger_heartbeat / 1000.0;
    ev_timer_set(&a->heartbeat, s, s);
    ev_timer_start(a->loop, &a->heartbeat);
}

struct account *account_new(struct ev_loop *loop, struct config *cfg, const char *state_dir,
                            ledger_clock_fn clock, void *clock_arg, char *err, size_t errlen)
{
    struct account *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->state_dir = strdup(state_dir)) == NULL) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int closed = 0;
    a->ledger = ledger_open(state_dir, clock, clock_arg, &closed, err, errlen);
    if (a->ledger == NULL) {
        free(a->state_dir);
        free(a);
        return NULL;
    }
    if (closed > 0)
        log_warn("usage ledger: closed %d interval(s) left open by a crash, at their last "
                 "heartbeat",
                 closed);
    a->loop = loop;
    a->cfg = config_ref(cfg);
    ev_timer_init(&a->heartbeat, on_heartbeat, 1.0, 1.0);
    a->heartbeat.data = a;
    return a;
}

void account_free(struct account *a)
{
    if (a == NULL)
        return;
    int64_t now = ledger_now(a->ledger);
    for (int i = 0; i < a->n; i++) {
        struct entry *e = &a->e[i];
        if (!e->open)
            continue;
        accrue(a, e, now);
        write_rec(a, e, LEDGER_STOP);
        e->open = false;
    }
    ev_timer_stop(a->loop, &a->heartbeat);
    while (a->jobs != NULL) { /* shutdown: wait for the reads, drop what they found */
        struct usage_job *j = a->jobs;
        pthread_join(j->thread, NULL);
        free(j->rows);
        job_unlink_free(j);
    }
    ledger_close(a->ledger);
    config_unref(a->cfg);
    free(a->state_dir);
    free(a);
}

void account_set_config(struct account *a, struct config *cfg)
{
    if (a == NULL)
        return;
    config_ref(cfg);
    config_unref(a->cfg);
    a->cfg = cfg;
    if (ev_is_active(&a->heartbeat)) {
        ev_timer_stop(a->loop, &a->heartbeat);
        arm_heartbeat(a);
    }
}

static struct entry *entry_for(struct account *a, struct compute *c)
{
    for (int i = 0; i < a->n; i++)
        if (a->e[i].c == c)
            return &a->e[i];
    if (a->n == ACCOUNT_MAX_COMPUTES)
        return NULL;
    struct entry *e = &a->e[a->n++];
    memset(e, 0, sizeof(*e));
    e->c = c;
    account_compute_name(c, e->st.name, sizeof(e->st.name));
    struct compute_info info;
    compute_get_info(c, &info);
    e->st.role = strcmp(info.role, "replica") == 0 ? COMPUTE_REPLICA : COMPUTE_PRIMARY;
    e->st.cu = info.cu;
    return e;
}

static void observe_start(struct entry *e, int64_t now)
{
    double s = (double) (now - e->start_began) / 1000.0;
    if (s < 0)
        s = 0;
    int b = 0;
    while (b < ACCOUNT_START_BUCKETS && s > start_bounds[b])
        b++;
    e->st.start_hist[b]++;
    e->st.start_seconds_sum += s;
}

void account_compute_changed(struct account *a, struct compute *c, enum compute_state from,
                             enum compute_state to)
{
    if (a == NULL || c == NULL || compute_is_static(c))
        return;
    struct entry *e = entry_for(a, c);
    if (e == NULL)
        return;
    int64_t now = ledger_now(a->ledger);
    accrue(a, e, now);
    e->st.state = to;
    if (to == COMPUTE_STARTING) {
        struct compute_info info;
        compute_get_info(c, &info);
        e->st.cu = info.cu;
        e->st.starts++;
        e->start_began = now;
        if (!e->open) {
            e->open = true;
            e->paused = false;
            write_rec(a, e, LEDGER_START);
        }
    } else if (from == COMPUTE_STARTING && to == COMPUTE_RUNNING) {
        observe_start(e, now);
    } else if (to == COMPUTE_PAUSED && e->open) {
        e->st.pauses++;
        e->paused = true;
        write_rec(a, e, LEDGER_PAUSE);
    } else if (from == COMPUTE_PAUSED && e->open && e->paused) {
        e->paused = false; /* thawed, also to shut down (-> SUSPENDING) */
        write_rec(a, e, LEDGER_THAW);
    }
    if (to == COMPUTE_SUSPENDING)
        e->st.suspends++;
    if (to == COMPUTE_FAILED)
        e->st.failures++;
    if ((to == COMPUTE_SUSPENDED || to == COMPUTE_FAILED) && e->open) {
        write_rec(a, e, LEDGER_STOP);
        e->open = false;
        e->paused = false;
    }
    arm_heartbeat(a);
}

void account_compute_resized(struct account *a, struct compute *c, double new_cu)
{
    if (a == NULL || c == NULL || compute_is_static(c))
        return;
    struct entry *e = entry_for(a, c);
    if (e == NULL || e->st.cu == new_cu)
        return;
    accrue(a, e, ledger_now(a->ledger));
    e->st.cu = new_cu;
    if (e->open)
        write_rec(a, e, LEDGER_RESIZE);
}

int account_get_stats(struct account *a, struct account_compute_stats *out, int max)
{
    int64_t now = ledger_now(a->ledger);
    for (int i = 0; i < a->n; i++) {
        accrue(a, &a->e[i], now);
        if (i < max)
            out[i] = a->e[i].st;
    }
    return a->n;
}

/* ---- reading usage ------------------------------------------------------------------------ */

static int feed_usage(void *arg, const struct ledger_record *r)
{
    return usage_feed(arg, r) == 0 ? 0 : 1;
}

/* Runs the usage calculation over every ledger file of state_dir. */
static int compute_usage(const char *state_dir, const struct usage_params *p,
                         struct usage_row **rows, uint64_t *cut, char *err, size_t errlen)
{
    struct usage *u = usage_new(p);
    if (u == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ledger_read_all(state_dir, feed_usage, u, cut, err, errlen) != 0) {
        usage_free(u);
        return -1;
    }
    int n = usage_finish(u, rows);
    usage_free(u);
    if (n < 0)
        snprintf(err, errlen, "out of memory");
    return n;
}

static void params_from(const struct config *cfg, struct usage_params *p)
{
    memset(p, 0, sizeof(*p));
    p->paused_rate = cfg->paused_rate;
    p->minimum_charge_ms = cfg->usage_minimum_charge;
}

static void *usage_thread(void *arg)
{
    struct usage_job *j = arg;
    j->n = compute_usage(j->a->state_dir, &j->params, &j->rows, NULL, j->err, sizeof(j->err));
    ev_async_send(j->a->loop, &j->done_ev);
    return NULL;
}

static void job_unlink_free(struct usage_job *j)
{
    struct account *a = j->a;
    for (struct usage_job **pp = &a->jobs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    }
    ev_async_stop(a->loop, &j->done_ev);
    free(j);
}

/* On the loop: the read is over; join its thread (which makes its writes visible), answer. */
static void on_usage_done(struct ev_loop *loop, ev_async *w, int revents)
{
    (void) loop;
    (void) revents;
    struct usage_job *j = w->data;
    pthread_join(j->thread, NULL);
    account_usage_done_fn done = j->done;
    void *arg = j->arg;
    uint64_t token = j->token;
    struct usage_row *rows = j->rows;
    int n = j->n;
    char err[sizeof(j->err)];
    memcpy(err, j->err, sizeof(err));
    job_unlink_free(j);
    done(arg, token, rows, n, err);
}

int account_usage_start(struct account *a, enum usage_by by, account_usage_done_fn done, void *arg,
                        uint64_t token, char *err, size_t errlen)
{
    int running = 0;
    for (struct usage_job *k = a->jobs; k != NULL; k = k->next)
        running++;
    if (running >= ACCOUNT_MAX_USAGE_READS) {
        snprintf(err, errlen, "%d SHOW USAGE reads are running already, try again", running);
        return -1;
    }
    struct usage_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    j->a = a;
    params_from(a->cfg, &j->params);
    j->params.by = by;
    j->params.open_until_ms = ledger_now(a->ledger);
    j->done = done;
    j->arg = arg;
    j->token = token;
    if (ledger_crc32c(0, "", 0) != 0) /* the CRC table is built lazily: build it on this thread */
        log_warn("usage ledger: CRC32C of nothing is not 0");
    ev_async_init(&j->done_ev, on_usage_done);
    j->done_ev.data = j;
    ev_async_start(a->loop, &j->done_ev);
    j->next = a->jobs;
    a->jobs = j;
    /* the thread takes no signals: they are the loop's */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&j->thread, NULL, usage_thread, j);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start a thread to read the ledger: %s", strerror(rc));
        job_unlink_free(j);
        return -1;
    }
    return 0;
}

/* ---- pgtide usage ------------------------------------------------------------------------- */

#define USAGE_MAX_OVERRIDES 32

struct usage_opts {
    const char *data_dir, *conf_file, *format;
    const char *overrides[USAGE_MAX_OVERRIDES]; /* -c name=value (paused_rate, ...) */
    int noverrides;
    struct usage_params p;
};

static void usage_help(FILE *f)
{
    fprintf(f,
            "usage: pgtide usage -D DATA [-f FILE] [-c name=value] [--since T] [--until T]\n"
            "                    [--format csv|json|table] [--by hour|day] [--per compute|role]\n"
            "T: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (UTC) or seconds since the epoch.\n"
            "Prints compute-unit-seconds per compute from DATA/state/ledger-*; paused time is\n"
            "billed at paused_rate, each interval rounded up to whole seconds (paused_rate and\n"
            "usage_minimum_charge from DATA/pgtide.conf or -f, then -c).\n");
}

static int parse_usage_args(int argc, char **argv, struct usage_opts *o)
{
    static const struct option longopts[] = {{"since", required_argument, NULL, 's'},
                                             {"until", required_argument, NULL, 'u'},
                                             {"format", required_argument, NULL, 'F'},
                                             {"by", required_argument, NULL, 'b'},
                                             {"per", required_argument, NULL, 'p'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "D:f:c:h", longopts, NULL)) != -1) {
        const char *bad = NULL;
        switch (ch) {
        case 'D':
            o->data_dir = optarg;
            break;
        case 'f':
            o->conf_file = optarg;
            break;
        case 'c':
            if (o->noverrides == USAGE_MAX_OVERRIDES)
                bad = "fewer -c options";
            else
                o->overrides[o->noverrides++] = optarg;
            break;
        case 's':
        case 'u':
            if (usage_parse_time(optarg, ch == 's' ? &o->p.since_ms : &o->p.until_ms) != 0)
                bad = "a time (YYYY-MM-DD[THH:MM[:SS]] UTC, or epoch seconds)";
            break;
        case 'F':
            o->format = optarg;
            if (strcmp(optarg, "csv") && strcmp(optarg, "json") && strcmp(optarg, "table"))
                bad = "csv, json or table";
            break;
        case 'b':
            o->p.by = strcmp(optarg, "hour") == 0 ? USAGE_BY_HOUR : USAGE_BY_DAY;
            if (strcmp(optarg, "hour") && strcmp(optarg, "day"))
                bad = "hour or day";
            break;
        case 'p':
            o->p.per = strcmp(optarg, "role") == 0 ? USAGE_PER_ROLE : USAGE_PER_COMPUTE;
            if (strcmp(optarg, "role") && strcmp(optarg, "compute"))
                bad = "compute or role";
            break;
        case 'h':
            usage_help(stdout);
            exit(0);
        default:
            usage_help(stderr);
            return -1;
        }
        if (bad != NULL) {
            fprintf(stderr, "pgtide usage: \"%s\": expected %s\n", optarg, bad);
            return -1;
        }
    }
    if (optind < argc || o->data_dir == NULL) {
        fprintf(stderr,
                optind < argc ? "pgtide usage: unexpected argument \"%s\"\n"
                              : "pgtide usage: no data directory: use -D DATA%s\n",
                optind < argc ? argv[optind] : "");
        return -1;
    }
    return 0;
}

/* True when a pgtide holds the lock on DATA (its open intervals run until now). */
static bool daemon_running(const char *data_dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/pgtide.lock", data_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    bool held = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    close(fd);
    return held;
}

/* Reads DATA/pgtide.conf (or -f), then -c, for paused_rate and usage_minimum_charge. */
static int load_rates(struct usage_opts *o)
{
    struct config *cfg = config_new_defaults();
    if (cfg == NULL)
        return -1;
    char path[4096], err[512];
    const char *file = o->conf_file;
    if (file == NULL) {
        snprintf(path, sizeof(path), "%s/pgtide.conf", o->data_dir);
        if (access(path, F_OK) == 0)
            file = path;
    }
    if (file != NULL && config_load_file(cfg, file, err, sizeof(err)) != 0) {
        fprintf(stderr, "pgtide usage: %s\n", err);
        config_unref(cfg);
        return -1;
    }
    for (int i = 0; i < o->noverrides; i++) {
        if (config_set_arg(cfg, o->overrides[i], err, sizeof(err)) != 0) {
            fprintf(stderr, "pgtide usage: %s\n", err);
            config_unref(cfg);
            return -1;
        }
    }
    o->p.paused_rate = cfg->paused_rate;
    o->p.minimum_charge_ms = cfg->usage_minimum_charge;
    config_unref(cfg);
    return 0;
}

static void row_period(const struct usage_opts *o, const struct usage_row *r, char *out, size_t len)
{
    if (o->p.by == USAGE_BY_TOTAL)
        out[0] = '\0';
    else
        usage_format_time(r->bucket_ms, out, len);
}

static const char *role_name(const struct usage_opts *o, const struct usage_row *r)
{
    return r->role == LEDGER_ROLE_REPLICA ? "replica" : "primary";
}

static void print_csv(const struct usage_opts *o, const struct usage_row *rows, int n)
{
    printf("period_start,compute,role,intervals,running_seconds,paused_seconds,cu_seconds,"
           "paused_cu_seconds,billed_cu_seconds\n");
    for (int i = 0; i < n; i++) {
        const struct usage_row *r = &rows[i];
        char period[32];
        row_period(o, r, period, sizeof(period));
        printf("%s,%s,%s,%lld,%.3f,%.3f,%.3f,%.3f,%.3f\n", period, r->name, role_name(o, r),
               (long long) r->intervals, r->running_seconds, r->paused_seconds, r->cu_seconds,
               r->paused_cu_seconds, r->billed_cu_seconds);
    }
}

static void print_json_row(const struct usage_row *r, const char *period, const char *role)
{
    printf("{\"period_start\": %s%s%s, \"compute\": \"%s\", \"role\": \"%s\", "
           "\"intervals\": %lld, \"running_seconds\": %.3f, \"paused_seconds\": %.3f, "
           "\"cu_seconds\": %.3f, \"paused_cu_seconds\": %.3f, \"billed_cu_seconds\": %.3f}",
           period[0] ? "\"" : "", period[0] ? period : "null", period[0] ? "\"" : "", r->name, role,
           (long long) r->intervals, r->running_seconds, r->paused_seconds, r->cu_seconds,
           r->paused_cu_seconds, r->billed_cu_seconds);
}

static void print_json(const struct usage_opts *o, const struct usage_row *rows, int n,
                       uint64_t cut)
{
    char since[32] = "", until[32] = "";
    if (o->p.since_ms)
        usage_format_time(o->p.since_ms, since, sizeof(since));
    if (o->p.until_ms)
        usage_format_time(o->p.until_ms, until, sizeof(until));
    static const char *const by[] = {"total", "hour", "day"};
    printf("{\"since\": %s%s%s, \"until\": %s%s%s, \"by\": \"%s\", \"paused_rate\": %g, "
           "\"minimum_charge_seconds\": %lld, \"torn_bytes_skipped\": %llu,\n \"rows\": [",
           since[0] ? "\"" : "", since[0] ? since : "null", since[0] ? "\"" : "",
           until[0] ? "\"" : "", until[0] ? until : "null", until[0] ? "\"" : "", by[o->p.by],
           o->p.paused_rate, (long long) (o->p.minimum_charge_ms / 1000), (unsigned long long) cut);
    for (int i = 0; i < n; i++) {
        char period[32];
        row_period(o, &rows[i], period, sizeof(period));
        printf("%s\n  ", i ? "," : "");
        print_json_row(&rows[i], period, role_name(o, &rows[i]));
    }
    struct usage_row tot;
    usage_total(rows, n, &tot);
    printf("],\n \"total\": ");
    print_json_row(&tot, "", "all");
    printf("}\n");
}

static void print_table(const struct usage_opts *o, const struct usage_row *rows, int n)
{
    printf("%-20s  %-12s  %-7s  %9s  %12s  %12s  %12s  %12s  %12s\n", "period_start", "compute",
           "role", "intervals", "running_s", "paused_s", "cu_seconds", "paused_cu_s",
           "billed_cu_s");
    for (int i = 0; i <= n; i++) {
        struct usage_row tot;
        const struct usage_row *r = &rows[i];
        char period[32];
        if (i == n) {
            usage_total(rows, n, &tot);
            r = &tot;
            period[0] = '\0';
        } else {
            row_period(o, r, period, sizeof(period));
        }
        printf("%-20s  %-12s  %-7s  %9lld  %12.3f  %12.3f  %12.3f  %12.3f  %12.3f\n",
               period[0] ? period : (o->p.by == USAGE_BY_TOTAL || i == n ? "-" : ""), r->name,
               i == n ? "all" : role_name(o, r), (long long) r->intervals, r->running_seconds,
               r->paused_seconds, r->cu_seconds, r->paused_cu_seconds, r->billed_cu_seconds);
    }
}

int account_usage_main(int argc, char **argv)
{
    struct usage_opts o;
    memset(&o, 0, sizeof(o));
    o.format = "table";
    if (parse_usage_args(argc, argv, &o) != 0)
        return 2;
    if (load_rates(&o) != 0)
        return 1;
    if (o.p.since_ms && o.p.until_ms && o.p.until_ms <= o.p.since_ms) {
        fprintf(stderr, "pgtide usage: --until must be after --since\n");
        return 2;
    }
    if (daemon_running(o.data_dir)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o.p.open_until_ms = (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    char state[4096], err[512];
    snprintf(state, sizeof(state), "%s/state", o.data_dir);
    struct usage_row *rows = NULL;
    uint64_t cut = 0;
    int n = compute_usage(state, &o.p, &rows, &cut, err, sizeof(err));
    if (n < 0) {
        fprintf(stderr, "pgtide usage: %s\n", err);
        return 1;
    }
    if (strcmp(o.format, "csv") == 0)
        print_csv(&o, rows, n);
    else if (strcmp(o.format, "json") == 0)
        print_json(&o, rows, n, cut);
    else
        print_table(&o, rows, n);
    if (cut > 0)
        fprintf(stderr, "pgtide usage: skipped %llu bytes of a torn or corrupt ledger tail\n",
                (unsigned long long) cut);
    free(rows);
    return 0;
}
