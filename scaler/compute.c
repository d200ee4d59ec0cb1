/*
 * compute: lifecycle of one PostgreSQL compute (DESIGN.md §3). The local provider forks the
 * postmaster in its own session (so its whole tree is one process group), as the compute owner,
 * with output appended to DATA/log/postgres.log; ev_child reports its exit, a non-blocking libpq
 * probe on the private socket reports readiness, and timers bound start and stop. Pausing freezes
 * the tree (cgroup v1 freezer, cgroup v2 cgroup.freeze, else SIGSTOP of every descendant found
 * through /proc). Every state change goes through set_state, which checks the transition table,
 * logs it and calls the hook. The static provider is a fixed endpoint that is always running.
 */
#define _GNU_SOURCE
#include "pgtide/compute.h"
#include "pgtide/cgroup.h"
#include "pgtide/log.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <math.h>

#include <libpq-fe.h>

#define COMPUTE_PRIMARY_PORT 5432
#define COMPUTE_REPLICA_PORT 5433
#define COMPUTE_PROBE_RETRY  0.010 /* s between readiness probes */
#define COMPUTE_KILL_GRACE   5.0   /* s between SIGQUIT and SIGKILL */
#define COMPUTE_NSTATES      6

enum compute_freeze { FREEZE_NONE, FREEZE_CGROUP_V1, FREEZE_CGROUP_V2, FREEZE_SIGSTOP };

struct compute {
    struct ev_loop *loop;
    const struct config *cfg;
    struct store *st;
    enum compute_role role;
    struct compute_hooks hooks;
    enum compute_state state;
    bool is_static;
    bool wake_pending; /* demand arrived while stopping: start again once stopped */
    bool use_cgroup;
    pid_t pid; /* postmaster, also the process group of the tree; 0 = none */
    ev_child child;
    ev_timer start_timer; /* compute_start_timeout */
    ev_timer stop_timer;  /* escalation SIGINT -> SIGQUIT -> SIGKILL */
    ev_timer probe_timer; /* retry of the readiness probe */
    ev_io probe_io;
    PGconn *probe;
    int probe_fd;
    int stop_phase;
    char *bindir, *datadir, *rundir, *logpath, *host;
    int port;
    int index;     /* replica N: DATA/replicas/N, port 5433+N (issue 6); 0 for the primary */
    char name[24]; /* "primary" or "replica-N", for logs and the CPU quota group */
    double cu;
    int64_t state_since_mono, state_since_wall;
    int64_t start_begin_mono, ready_mono, started_at_wall;
    int starts;
    int64_t last_start_ms;
    enum compute_freeze freeze;      /* how the tree is frozen now (NONE when not paused) */
    enum compute_freeze last_freeze; /* method of the last pause, for SHOW COMPUTES */
    char cgroup[512];                /* freezer cgroup directory while frozen by cgroup */
    /* compute units (issue 5): CPU quota group, made at the first start, kept until free */
    struct cgroup_cpu cpu;
    bool cpu_tried;
    compute_resized_fn on_resized;
    void *on_resized_arg;
};

/* Legal transitions: [from][to]. */
static const bool compute_legal[COMPUTE_NSTATES][COMPUTE_NSTATES] = {
    [COMPUTE_SUSPENDED] = {[COMPUTE_STARTING] = true},
    [COMPUTE_STARTING] =
        {[COMPUTE_RUNNING] = true, [COMPUTE_FAILED] = true, [COMPUTE_SUSPENDING] = true},
    [COMPUTE_RUNNING] =
        {[COMPUTE_PAUSED] = true, [COMPUTE_SUSPENDING] = true, [COMPUTE_FAILED] = true},
    [COMPUTE_PAUSED] =
        {[COMPUTE_RUNNING] = true, [COMPUTE_SUSPENDING] = true, [COMPUTE_FAILED] = true},
    [COMPUTE_SUSPENDING] = {[COMPUTE_SUSPENDED] = true},
    [COMPUTE_FAILED] = {[COMPUTE_STARTING] = true},
};

static int64_t compute_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t compute_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *compute_state_name(enum compute_state s)
{
    switch (s) {
    case COMPUTE_SUSPENDED:
        return "suspended";
    case COMPUTE_STARTING:
        return "starting";
    case COMPUTE_RUNNING:
        return "running";
    case COMPUTE_PAUSED:
        return "paused";
    case COMPUTE_SUSPENDING:
        return "suspending";
    case COMPUTE_FAILED:
        return "failed";
    }
    return "?";
}

const char *compute_role_name(enum compute_role r)
{
    return r == COMPUTE_REPLICA ? "replica" : "primary";
}

static const char *compute_freeze_name(enum compute_freeze f)
{
    switch (f) {
    case FREEZE_CGROUP_V1:
        return "cgroup-v1-freezer";
    case FREEZE_CGROUP_V2:
        return "cgroup-v2-freeze";
    case FREEZE_SIGSTOP:
        return "sigstop";
    case FREEZE_NONE:
        break;
    }
    return "";
}

/* The one transition function. */
static void set_state(struct compute *c, enum compute_state to)
{
    enum compute_state from = c->state;
    if (from == to)
        return;
    if (!compute_legal[from][to]) {
        log_error("compute %s: illegal transition %s -> %s", compute_role_name(c->role),
                  compute_state_name(from), compute_state_name(to));
        assert(!"illegal compute state transition");
    }
    int64_t now = compute_mono_ms();
    log_info("compute %s: %s -> %s (after %lld ms)", c->name, compute_state_name(from),
             compute_state_name(to), (long long) (now - c->state_since_mono));
    __atomic_store_n(&c->state, to, __ATOMIC_RELEASE); /* worker threads read it unlocked */
    c->state_since_mono = now;
    c->state_since_wall = compute_wall_ms();
    if (c->hooks.state_changed != NULL)
        c->hooks.state_changed(c->hooks.arg, c, from, to);
}

/* ---- process tree ---------------------------------------------------------------------- */

/* Parent pid of pid from /proc/pid/stat, or -1. */
static pid_t compute_ppid_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); /* comm may contain spaces and parentheses */
    char state;
    int ppid;
    if (rp == NULL || sscanf(rp + 1, " %c %d", &state, &ppid) != 2)
        return -1;
    return (pid_t) ppid;
}

/* The postmaster and all its descendants, root first (malloc'd into *out). Returns the count,
   0 when root is gone. */
static int compute_tree(pid_t root, pid_t **out)
{
    size_t n = 0, cap = 64;
    pid_t *all = malloc(cap * sizeof(pid_t)), *par = malloc(cap * sizeof(pid_t));
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (all && par && d && (de = readdir(d)) != NULL) {
        char *end;
        long p = strtol(de->d_name, &end, 10);
        if (*end != '\0' || p <= 0)
            continue;
        if (n == cap) {
            cap *= 2;
            pid_t *na = realloc(all, cap * sizeof(pid_t)), *np = realloc(par, cap * sizeof(pid_t));
            all = na ? na : all;
            par = np ? np : par;
            if (!na || !np)
                break;
        }
        all[n] = (pid_t) p;
        par[n++] = compute_ppid_of((pid_t) p);
    }
    if (d)
        closedir(d);
    pid_t *tree = malloc((n + 1) * sizeof(pid_t));
    int count = 0;
    if (tree && all && par && kill(root, 0) == 0) {
        tree[count++] = root;
        for (int i = 0; i < count; i++) /* breadth first over the growing list */
            for (size_t j = 0; j < n; j++)
                if (par[j] == tree[i] && all[j] != root)
                    tree[count++] = all[j];
    }
    free(all);
    free(par);
    *out = tree;
    return count;
}

/* Signals the process group the postmaster leads (PostgreSQL's children each start their own
   session, so this reaches the postmaster and anything that did not). */
static void compute_kill_group(pid_t pgid, int sig)
{
    if (pgid > 0 && kill(-pgid, sig) < 0 && errno != ESRCH)
        log_warn("could not signal compute process group %d: %s", (int) pgid, strerror(errno));
}

/* Signals the postmaster and every descendant (found through /proc), postmaster first. */
static void compute_kill_tree(pid_t root, int sig)
{
    pid_t *pids = NULL;
    int n = compute_tree(root, &pids);
    for (int i = 0; i < n; i++)
        kill(pids[i], sig);
    free(pids);
    compute_kill_group(root, sig);
}

/* ---- cgroup freezer ---------------------------------------------------------------------- */

static int compute_write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, s, strlen(s));
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t) strlen(s) ? 0 : -1;
}

/* Our own cgroup path for a v1 controller ("freezer") or v2 (controller NULL), "" for the
   root (so that mount + path + "/name" has no double slash). 0 / -1. */
static int compute_own_cgroup(const char *controller, char *out, size_t outlen)
{
    if (cgroup_own_path(controller, out, outlen) != 0)
        return -1;
    if (strcmp(out, "/") == 0)
        out[0] = '\0';
    return 0;
}

/* The directory for this compute's freezer cgroup, or -1 when that cgroup version is absent. */
static int compute_cgroup_dir(const struct compute *c, enum compute_freeze kind, char *out,
                              size_t outlen)
{
    char own[512];
    const char *mnt;
    struct stat sb;
    if (kind == FREEZE_CGROUP_V1) {
        mnt = "/sys/fs/cgroup/freezer";
        if (stat("/sys/fs/cgroup/freezer/freezer.state", &sb) < 0 &&
            stat("/sys/fs/cgroup/freezer/tasks", &sb) < 0)
            return -1;
        if (compute_own_cgroup("freezer", own, sizeof(own)) < 0)
            return -1;
    } else {
        mnt = stat("/sys/fs/cgroup/cgroup.controllers", &sb) == 0 ? "/sys/fs/cgroup"
                                                                  : "/sys/fs/cgroup/unified";
        if (stat(mnt, &sb) < 0 || compute_own_cgroup(NULL, own, sizeof(own)) < 0)
            return -1;
    }
    int n = snprintf(out, outlen, "%s%s/pgtide-%d", mnt, own, (int) c->pid);
    return n > 0 && (size_t) n < outlen ? 0 : -1;
}

/* Moves every process of the cgroup dir back to its parent and removes dir. */
static void compute_cgroup_release(const char *dir)
{
    char path[600], parent[600];
    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    snprintf(parent, sizeof(parent), "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash != NULL)
        snprintf(slash, sizeof(parent) - (size_t) (slash - parent), "/cgroup.procs");
    FILE *f = fopen(path, "re");
    char line[32];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (compute_write_str(parent, line) < 0 && errno != ESRCH)
            log_debug("could not move pid %s out of %s: %s", line, dir, strerror(errno));
    }
    if (f != NULL)
        fclose(f);
    if (rmdir(dir) < 0 && errno != ENOENT)
        log_debug("could not remove cgroup %s: %s", dir, strerror(errno));
}

/* Waits briefly for the freeze to take effect (it is asynchronous in the kernel). */
static void compute_cgroup_settle(const char *file, const char *want)
{
    for (int i = 0; i < 100; i++) {
        char *txt = NULL, buf[256] = "";
        FILE *f = fopen(file, "re");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = '\0';
        txt = strstr(buf, want);
        if (txt != NULL)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    log_debug("freeze via %s not settled after 100 ms", file);
}

/* Freezes the tree in a new cgroup of the given kind. 0, or -1 with nothing left behind. */
static int compute_freeze_cgroup(struct compute *c, enum compute_freeze kind, const pid_t *pids,
                                 int n)
{
    char dir[512], file[600];
    if (kind == FREEZE_CGROUP_V2 && c->cpu.kind == CGROUP_V2) {
        /* the tree already sits in its own v2 cpu group: freeze that group in place, since
           moving the processes out would lift their CPU quota */
        snprintf(file, sizeof(file), "%s/cgroup.freeze", c->cpu.dir);
        if (compute_write_str(file, "1") < 0)
            return -1;
        snprintf(file, sizeof(file), "%s/cgroup.events", c->cpu.dir);
        compute_cgroup_settle(file, "frozen 1");
        snprintf(c->cgroup, sizeof(c->cgroup), "%s", c->cpu.dir);
        return 0;
    }
    if (compute_cgroup_dir(c, kind, dir, sizeof(dir)) < 0)
        return -1;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -1;
    const char *ctl = kind == FREEZE_CGROUP_V1 ? "freezer.state" : "cgroup.freeze";
    snprintf(file, sizeof(file), "%s/%s", dir, ctl);
    if (access(file, W_OK) < 0)
        goto undo;
    snprintf(file, sizeof(file), "%s/cgroup.procs", dir);
    for (int i = 0; i < n; i++) {
        char pid[24];
        snprintf(pid, sizeof(pid), "%d", (int) pids[i]);
        if (compute_write_str(file, pid) < 0 && (i == 0 || errno != ESRCH))
            goto undo;
    }
    snprintf(file, sizeof(file), "%s/%s", dir, ctl);
    if (compute_write_str(file, kind == FREEZE_CGROUP_V1 ? "FROZEN" : "1") < 0)
        goto undo;
    if (kind == FREEZE_CGROUP_V1)
        compute_cgroup_settle(file, "FROZEN");
    else {
        snprintf(file, sizeof(file), "%s/cgroup.events", dir);
        compute_cgroup_settle(file, "frozen 1");
    }
    snprintf(c->cgroup, sizeof(c->cgroup), "%s", dir);
    return 0;
undo:
    log_debug("cgroup freezer %s not usable: %s", dir, strerror(errno));
    compute_cgroup_release(dir);
    return -1;
}

static void compute_thaw_cgroup(struct compute *c)
{
    char file[600];
    bool v1 = c->freeze == FREEZE_CGROUP_V1;
    snprintf(file, sizeof(file), "%s/%s", c->cgroup, v1 ? "freezer.state" : "cgroup.freeze");
    if (compute_write_str(file, v1 ? "THAWED" : "0") < 0)
        log_error("could not thaw %s: %s", file, strerror(errno));
    if (v1 || strcmp(c->cgroup, c->cpu.dir) != 0) /* the v2 cpu group itself stays */
        compute_cgroup_release(c->cgroup);
    c->cgroup[0] = '\0';
}

/* ---- pause / thaw ------------------------------------------------------------------------ */

static void compute_freeze(struct compute *c)
{
    pid_t *pids = NULL;
    int n = compute_tree(c->pid, &pids);
    c->freeze = FREEZE_SIGSTOP;
    if (c->use_cgroup && n > 0 && compute_freeze_cgroup(c, FREEZE_CGROUP_V1, pids, n) == 0)
        c->freeze = FREEZE_CGROUP_V1;
    else if (c->use_cgroup && n > 0 && compute_freeze_cgroup(c, FREEZE_CGROUP_V2, pids, n) == 0)
        c->freeze = FREEZE_CGROUP_V2;
    else {
        /* postmaster first so it forks no more, then the (now stable) set of descendants */
        kill(c->pid, SIGSTOP);
        compute_kill_tree(c->pid, SIGSTOP);
    }
    c->last_freeze = c->freeze;
    log_info("compute %s: froze %d processes with %s", compute_role_name(c->role), n,
             compute_freeze_name(c->freeze));
    free(pids);
}

static void compute_thaw(struct compute *c)
{
    if (c->freeze == FREEZE_CGROUP_V1 || c->freeze == FREEZE_CGROUP_V2)
        compute_thaw_cgroup(c);
    else if (c->freeze == FREEZE_SIGSTOP && c->pid > 0) {
        compute_kill_tree(c->pid, SIGCONT);
    }
    c->freeze = FREEZE_NONE;
}

/* ---- logs ------------------------------------------------------------------------------- */

/* Logs the last lines of DATA/log/postgres.log (why a start failed). */
static void compute_log_tail(const struct compute *c)
{
    int fd = open(c->logpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[2048];
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > (off_t) sizeof(buf) - 1 ? end - (off_t) sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *p = buf;
    if (from > 0 && (p = strchr(buf, '\n')) != NULL)
        p++; /* skip a partial first line */
    for (char *line = strtok(p ? p : buf, "\n"); line != NULL; line = strtok(NULL, "\n"))
        log_error("  %s: %s", c->logpath, line);
}

static void compute_describe_exit(int status, char *out, size_t outlen)
{
    if (WIFEXITED(status))
        snprintf(out, outlen, "exited with code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, outlen, "was terminated by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, outlen, "ended with status 0x%x", (unsigned) status);
}

/* ---- readiness probe ------------------------------------------------------------------ */

static void compute_probe_stop(struct compute *c)
{
    ev_io_stop(c->loop, &c->probe_io);
    ev_timer_stop(c->loop, &c->probe_timer);
    if (c->probe != NULL)
        PQfinish(c->probe);
    c->probe = NULL;
    c->probe_fd = -1;
}

static void compute_probe_retry(struct compute *c)
{
    compute_probe_stop(c);
    ev_timer_set(&c->probe_timer, COMPUTE_PROBE_RETRY, 0);
    ev_timer_start(c->loop, &c->probe_timer);
}

static void compute_probe_watch(struct compute *c, int events)
{
    int fd = PQsocket(c->probe);
    if (fd < 0) {
        compute_probe_retry(c);
        return;
    }
    if (fd != c->probe_fd || (c->probe_io.events & (EV_READ | EV_WRITE)) != events) {
        ev_io_stop(c->loop, &c->probe_io);
        ev_io_set(&c->probe_io, fd, events);
        c->probe_fd = fd;
    }
    ev_io_start(c->loop, &c->probe_io);
}

static void compute_ready(struct compute *c)
{
    compute_probe_stop(c);
    ev_timer_stop(c->loop, &c->start_timer);
    int64_t now = compute_mono_ms();
    c->last_start_ms = now - c->start_begin_mono;
    c->ready_mono = now;
    c->started_at_wall = compute_wall_ms();
    log_info("compute %s ready in %lld ms", compute_role_name(c->role),
             (long long) c->last_start_ms);
    set_state(c, COMPUTE_RUNNING);
}

static void compute_probe_step(struct compute *c)
{
    switch (PQconnectPoll(c->probe)) {
    case PGRES_POLLING_READING:
        compute_probe_watch(c, EV_READ);
        break;
    case PGRES_POLLING_WRITING:
        compute_probe_watch(c, EV_WRITE);
        break;
    case PGRES_POLLING_OK:
        compute_ready(c);
        break;
    default:
        log_debug("compute %s not ready yet: %s", compute_role_name(c->role),
                  PQerrorMessage(c->probe));
        compute_probe_retry(c);
        break;
    }
}

static void compute_probe_begin(struct compute *c)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", c->port);
    const char *const keys[] = {"host", "port", "dbname", "user", "application_name", NULL};
    const char *const vals[] = {c->rundir, port, "postgres", "postgres", "pgtide-probe", NULL};
    c->probe = PQconnectStartParams(keys, vals, 0);
    if (c->probe == NULL || PQstatus(c->probe) == CONNECTION_BAD) {
        compute_probe_retry(c);
        return;
    }
    compute_probe_watch(c, EV_WRITE);
}

static void compute_probe_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    compute_probe_step(w->data);
}

static void compute_probe_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct compute *c = w->data;
    if (c->state == COMPUTE_STARTING)
        compute_probe_begin(c);
}

/* ---- start ------------------------------------------------------------------------------- */

/* Child after fork: own session, compute owner, log file, exec. Never returns. */
static void compute_exec_child(const struct compute *c, char *const argv[])
{
    setsid(); /* the tree becomes one process group; terminal signals do not reach it */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    if (cgroup_cpu_join_self(&c->cpu) < 0) /* before exec: every backend inherits the quota */
        dprintf(STDERR_FILENO, "pgtide: cannot join cgroup %s: %s\n", c->cpu.dir, strerror(errno));
    if (c->st->as_root &&
        (setgroups(0, NULL) < 0 || setgid(c->st->gid) < 0 || setuid(c->st->uid) < 0)) {
        dprintf(STDERR_FILENO, "pgtide: cannot switch to uid %u: %s\n", (unsigned) c->st->uid,
                strerror(errno));
        _exit(126);
    }
    int in = open("/dev/null", O_RDONLY);
    int out = open(c->logpath, O_WRONLY | O_CREAT | O_APPEND, 0640);
    if (in >= 0)
        dup2(in, STDIN_FILENO);
    if (out >= 0) {
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
    }
    close_range(3, ~0U, 0);
    if (chdir(c->datadir) < 0)
        dprintf(STDERR_FILENO, "pgtide: cannot enter %s: %s\n", c->datadir, strerror(errno));
    execv(argv[0], argv);
    dprintf(STDERR_FILENO, "pgtide: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* WAL archiving (issue 7): archive_mode=on, archive_command and restore_command running
   `pgtide wal-push` / `wal-fetch` (this binary) over DATA/wal, and archive_timeout. Fills
   bufs[0..2], appends 8 argv entries and returns the new count (unchanged when the paths do
   not fit: archiving is then off, with a warning). */
static int compute_archive_args(const struct compute *c, char *argv[], int a, char (*bufs)[640])
{
    char self[512], data[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0 || c->st == NULL || realpath(c->st->dir, data) == NULL) {
        log_warn("compute %s: WAL archiving off (cannot resolve pgtide's path or DATA)",
                 compute_role_name(c->role));
        return a;
    }
    self[n] = '\0';
    char level[16] = "";
    if (c->cfg->wal_compression_level > 0)
        snprintf(level, sizeof(level), " -z %d", c->cfg->wal_compression_level);
    int k1 = snprintf(bufs[0], 640, "archive_command='%s' wal-push %%p %%f -D '%s'%s", self, data,
                      level);
    int k2 = snprintf(bufs[1], 640, "restore_command='%s' wal-fetch %%f %%p -D '%s'", self, data);
    if (k1 >= 640 || k2 >= 640) {
        log_warn("compute %s: WAL archiving off (paths too long)", compute_role_name(c->role));
        return a;
    }
    snprintf(bufs[2], 640, "archive_timeout=%llds",
             (long long) ((c->cfg->archive_timeout + 999) / 1000));
    char *set[] = {"archive_mode=on", bufs[0], bufs[1], bufs[2]};
    for (int i = 0; i < 4; i++) {
        argv[a++] = "-c";
        argv[a++] = set[i];
    }
    return a;
}

/* The postmaster's command line (strings in bufs, 9 -c settings). */
static void compute_build_argv(const struct compute *c, char *argv[32], char bufs[8][640],
                               char *postgres)
{
    double cu = c->cu > 0 ? c->cu : 1.0;
    long shared_mb = (long) (cu * 256.0);
    /* a hot standby refuses to start with fewer connections than its primary: a replica takes
       the largest the primary can start with (issue 6) */
    double conn_cu = c->role != COMPUTE_REPLICA               ? cu
                     : c->cfg->max_cu > c->cfg->compute_units ? c->cfg->max_cu
                                                              : c->cfg->compute_units;
    long maxconn = (long) ((conn_cu > cu ? conn_cu : cu) * 100.0);
    /* a quarter of the memory budget for sorts, assuming a quarter of the connections sort at
       once; never below PostgreSQL's default */
    long work_kb = (long) (cu * 1048576.0 / 4.0 / ((maxconn < 100 ? 100 : maxconn) / 4.0));
    bool quote = strpbrk(c->rundir, " ,\"") != NULL;
    snprintf(postgres, 4096, "%s/postgres", c->bindir);
    snprintf(bufs[0], 640, "unix_socket_directories=%s%s%s", quote ? "\"" : "", c->rundir,
             quote ? "\"" : "");
    snprintf(bufs[1], 640, "port=%d", c->port);
    snprintf(bufs[2], 640, "shared_buffers=%ldMB", shared_mb < 16 ? 16 : shared_mb);
    snprintf(bufs[3], 640, "max_connections=%ld", maxconn < 100 ? 100 : maxconn);
    snprintf(bufs[4], 640, "work_mem=%ldkB", work_kb < 4096 ? 4096 : work_kb);
    const char *fixed[] = {"listen_addresses=", "unix_socket_permissions=0700",
                           "logging_collector=off"};
    int a = 0;
    argv[a++] = postgres;
    argv[a++] = "-D";
    argv[a++] = c->datadir;
    for (int i = 0; i < 5; i++) {
        argv[a++] = "-c";
        argv[a++] = bufs[i];
    }
    for (int i = 0; i < 3; i++) {
        argv[a++] = "-c";
        argv[a++] = (char *) fixed[i];
    }
    a = compute_archive_args(c, argv, a, bufs + 5); /* WAL archiving (issue 7) */
    argv[a] = NULL;
}

/* Size a start begins with: compute_units (replica_units for a replica), kept between min_cu
   and max_cu when vertical autoscaling is on (min_cu < max_cu). */
static double compute_start_cu(const struct compute *c)
{
    const struct config *cfg = c->cfg;
    double cu = c->role == COMPUTE_REPLICA ? cfg->replica_units : cfg->compute_units;
    if (cu <= 0)
        cu = 1.0;
    if (c->role == COMPUTE_PRIMARY && cfg->min_cu < cfg->max_cu)
        cu = cu < cfg->min_cu ? cfg->min_cu : cu > cfg->max_cu ? cfg->max_cu : cu;
    return cu;
}

/* Makes the CPU quota group at the first start (kept until compute_free) and sets its quota to
   the start size. Reported, never fatal, where cgroups are not writable. */
static void compute_cpu_setup(struct compute *c)
{
    const char *role = compute_role_name(c->role);
    if (!c->cpu_tried) {
        c->cpu_tried = true;
        char name[64];
        snprintf(name, sizeof(name), "pgtide-%d-%s", (int) getpid(), c->name);
        if (cgroup_cpu_create(&c->cpu, name) == 0)
            log_info("compute %s: CPU quota enforced with %s in %s", role,
                     cgroup_kind_name(c->cpu.kind), c->cpu.dir);
        else
            log_warn("compute %s: CPU quota not enforced (%s); sizes are recorded only", role,
                     c->cpu.why);
    }
    if (c->cpu.kind != CGROUP_NONE && cgroup_cpu_set_limit(&c->cpu, c->cu) < 0)
        log_warn("compute %s: cannot set the CPU quota in %s: %s", role, c->cpu.dir,
                 strerror(errno));
}

static void compute_start(struct compute *c)
{
    set_state(c, COMPUTE_STARTING);
    c->starts++;
    c->start_begin_mono = compute_mono_ms();
    c->cu = compute_start_cu(c);
    compute_cpu_setup(c);
    char version[4200];
    snprintf(version, sizeof(version), "%s/PG_VERSION", c->datadir);
    if (access(version, F_OK) < 0) {
        log_error("compute %s: no cluster in %s", compute_role_name(c->role), c->datadir);
        set_state(c, COMPUTE_FAILED);
        return;
    }
    char *argv[32], bufs[8][640], postgres[4096];
    compute_build_argv(c, argv, bufs, postgres);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("compute %s: fork failed: %s", compute_role_name(c->role), strerror(errno));
        set_state(c, COMPUTE_FAILED);
        return;
    }
    if (pid == 0)
        compute_exec_child(c, argv);
    c->pid = pid;
    log_info("compute %s: started postmaster pid %d (%.2f CU, %s)", compute_role_name(c->role),
             (int) pid, c->cu, bufs[2]);
    ev_child_set(&c->child, pid, 0);
    ev_child_start(c->loop, &c->child);
    double limit = c->cfg->compute_start_timeout > 0 ? c->cfg->compute_start_timeout : 60000;
    ev_timer_set(&c->start_timer, limit / 1000.0, 0);
    ev_timer_start(c->loop, &c->start_timer);
    compute_probe_begin(c);
}

static void compute_start_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct compute *c = w->data;
    if (c->state != COMPUTE_STARTING)
        return;
    log_error("compute %s did not become ready within %lld ms; killing it",
              compute_role_name(c->role), (long long) c->cfg->compute_start_timeout);
    compute_log_tail(c);
    compute_probe_stop(c);
    compute_kill_tree(c->pid, SIGKILL);
    set_state(c, COMPUTE_FAILED); /* the pid is reaped by compute_child_cb */
}

/* ---- exit and stop ------------------------------------------------------------------------- */

/* After the postmaster has been reaped: clear everything tied to that process. */
static void compute_reaped(struct compute *c, pid_t pid)
{
    ev_child_stop(c->loop, &c->child);
    ev_timer_stop(c->loop, &c->start_timer);
    ev_timer_stop(c->loop, &c->stop_timer);
    compute_probe_stop(c);
    compute_thaw(c);
    /* Children of a crashed postmaster notice its death and exit on their own (PostgreSQL
       arranges that); anything still in the postmaster's own process group is killed. */
    compute_kill_group(pid, SIGKILL);
    c->pid = 0;
}

static void compute_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    struct compute *c = w->data;
    pid_t pid = c->pid;
    char how[128];
    compute_describe_exit(w->rstatus, how, sizeof(how));
    compute_reaped(c, pid);
    const char *role = compute_role_name(c->role);
    /* taken before the transition: its hook may wake the compute itself, and a second start
       would race the first for the data directory */
    bool restart = c->wake_pending;
    c->wake_pending = false;
    switch (c->state) {
    case COMPUTE_SUSPENDING:
        log_info("compute %s: postmaster %d %s", role, (int) pid, how);
        set_state(c, COMPUTE_SUSPENDED);
        break;
    case COMPUTE_STARTING:
    case COMPUTE_RUNNING:
    case COMPUTE_PAUSED:
        log_error("compute %s: postmaster %d %s unexpectedly while %s", role, (int) pid, how,
                  compute_state_name(c->state));
        if (c->state == COMPUTE_STARTING)
            compute_log_tail(c);
        set_state(c, COMPUTE_FAILED);
        return; /* the next compute_wake restarts it (crash recovery) */
    default:
        log_info("compute %s: postmaster %d %s", role, (int) pid, how);
        break;
    }
    if (restart && c->state == COMPUTE_SUSPENDED)
        compute_start(c);
}

static void compute_stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct compute *c = w->data;
    if (c->pid <= 0)
        return;
    if (c->stop_phase == 0) {
        log_warn("compute %s did not stop within %lld ms; immediate shutdown",
                 compute_role_name(c->role), (long long) c->cfg->compute_stop_timeout);
        kill(c->pid, SIGQUIT);
        c->stop_phase = 1;
        ev_timer_set(&c->stop_timer, COMPUTE_KILL_GRACE, 0);
        ev_timer_start(loop, &c->stop_timer);
    } else {
        log_warn("compute %s still alive; killing its processes", compute_role_name(c->role));
        compute_kill_tree(c->pid, SIGKILL);
        c->stop_phase = 2;
    }
}

int compute_suspend(struct compute *c)
{
    if (c->is_static || (c->state != COMPUTE_RUNNING && c->state != COMPUTE_PAUSED))
        return -1;
    compute_thaw(c);
    c->stop_phase = 0;
    if (kill(c->pid, SIGINT) < 0)
        log_warn("compute %s: SIGINT: %s", compute_role_name(c->role), strerror(errno));
    double limit = c->cfg->compute_stop_timeout > 0 ? c->cfg->compute_stop_timeout : 30000;
    ev_timer_set(&c->stop_timer, limit / 1000.0, 0);
    ev_timer_start(c->loop, &c->stop_timer);
    set_state(c, COMPUTE_SUSPENDING);
    return 0;
}

int compute_pause(struct compute *c)
{
    if (c->is_static || c->state != COMPUTE_RUNNING || c->pid <= 0)
        return -1;
    compute_freeze(c);
    set_state(c, COMPUTE_PAUSED);
    return 0;
}

void compute_wake(struct compute *c)
{
    if (c->is_static)
        return;
    switch (c->state) {
    case COMPUTE_SUSPENDED:
        compute_start(c);
        break;
    case COMPUTE_FAILED:
        if (c->pid > 0)
            c->wake_pending = true; /* killed, not yet reaped */
        else
            compute_start(c);
        break;
    case COMPUTE_PAUSED:
        compute_thaw(c);
        set_state(c, COMPUTE_RUNNING);
        break;
    case COMPUTE_SUSPENDING:
        c->wake_pending = true;
        break;
    case COMPUTE_STARTING:
    case COMPUTE_RUNNING:
        break;
    }
}

/* Waits up to ms for pid to exit. True when it was reaped (or is already gone). */
static bool compute_wait_exit(pid_t pid, int64_t ms, int *status)
{
    int64_t deadline = compute_mono_ms() + ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD))
            return true;
        if (compute_mono_ms() >= deadline)
            return false;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}

void compute_stop_blocking(struct compute *c)
{
    if (c->is_static)
        return;
    c->wake_pending = false;
    compute_thaw(c);
    if (c->pid <= 0)
        return;
    if (c->state == COMPUTE_STARTING || c->state == COMPUTE_RUNNING || c->state == COMPUTE_PAUSED) {
        compute_probe_stop(c);
        kill(c->pid, SIGINT);
        set_state(c, COMPUTE_SUSPENDING);
    }
    int status = 0;
    int64_t limit = c->cfg->compute_stop_timeout > 0 ? c->cfg->compute_stop_timeout : 30000;
    if (!compute_wait_exit(c->pid, limit, &status)) {
        log_warn("compute %s did not stop within %lld ms; immediate shutdown",
                 compute_role_name(c->role), (long long) limit);
        kill(c->pid, SIGQUIT);
        if (!compute_wait_exit(c->pid, (int64_t) (COMPUTE_KILL_GRACE * 1000), &status)) {
            compute_kill_tree(c->pid, SIGKILL);
            compute_wait_exit(c->pid, 60000, &status);
        }
    }
    pid_t pid = c->pid;
    char how[128];
    compute_describe_exit(status, how, sizeof(how));
    compute_reaped(c, pid);
    log_info("compute %s: postmaster %d %s", compute_role_name(c->role), (int) pid, how);
    if (c->state == COMPUTE_SUSPENDING)
        set_state(c, COMPUTE_SUSPENDED);
}

/* ---- construction and queries ---------------------------------------------------------- */

static int compute_init_local(struct compute *c)
{
    char err[512];
    char rel[32], logrel[48]; /* replica N (issue 6): its own directory, port and log */
    snprintf(rel, sizeof(rel), c->role == COMPUTE_REPLICA ? "replicas/%d" : "primary", c->index);
    snprintf(logrel, sizeof(logrel),
             c->role == COMPUTE_REPLICA ? "log/replica-%d.log" : "log/postgres.log", c->index);
    c->bindir = store_find_bindir(c->cfg->pg_bindir, err, sizeof(err));
    if (c->bindir == NULL) {
        log_error("compute %s: %s", compute_role_name(c->role), err);
        return -1;
    }
    c->datadir = store_path(c->st, rel);
    c->rundir = store_path(c->st, "run");
    c->logpath = store_path(c->st, logrel);
    c->host = c->rundir ? strdup(c->rundir) : NULL;
    c->port = c->role == COMPUTE_REPLICA ? COMPUTE_REPLICA_PORT + c->index : COMPUTE_PRIMARY_PORT;
    c->state = COMPUTE_SUSPENDED;
    if (!c->datadir || !c->rundir || !c->logpath || !c->host)
        return -1;
    ev_child_init(&c->child, compute_child_cb, 0, 0);
    c->child.data = c;
    return 0;
}

static struct compute *compute_create(struct ev_loop *loop, const struct config *cfg,
                                      struct store *st, enum compute_role role, int index,
                                      const struct compute_hooks *hooks)
{
    struct compute *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->cfg = cfg;
    c->st = st;
    c->role = role;
    c->index = index;
    snprintf(c->name, sizeof(c->name), role == COMPUTE_REPLICA ? "replica-%d" : "primary", index);
    c->use_cgroup = true;
    c->probe_fd = -1;
    c->cu = cfg->compute_units > 0 ? cfg->compute_units : 1.0;
    if (hooks != NULL)
        c->hooks = *hooks;
    c->state_since_mono = compute_mono_ms();
    c->state_since_wall = compute_wall_ms();
    ev_timer_init(&c->start_timer, compute_start_timer_cb, 0, 0);
    ev_timer_init(&c->stop_timer, compute_stop_timer_cb, 0, 0);
    ev_timer_init(&c->probe_timer, compute_probe_timer_cb, 0, 0);
    ev_io_init(&c->probe_io, compute_probe_io_cb, 0, EV_READ);
    c->start_timer.data = c->stop_timer.data = c->probe_timer.data = c->probe_io.data = c;
    if (cfg->compute_provider == PROVIDER_STATIC) {
        c->is_static = true;
        c->state = COMPUTE_RUNNING;
        c->host = strdup(cfg->static_host ? cfg->static_host : "");
        c->port = cfg->static_port;
        c->started_at_wall = c->state_since_wall;
        c->ready_mono = c->state_since_mono;
        if (c->host == NULL) {
            free(c);
            return NULL;
        }
        return c;
    }
    if (st == NULL || !ev_is_default_loop(loop)) {
        log_error("compute %s: the local provider needs a store and the default event loop",
                  compute_role_name(role));
        free(c);
        return NULL;
    }
    if (compute_init_local(c) < 0) {
        compute_free(c);
        return NULL;
    }
    return c;
}

struct compute *compute_new(struct ev_loop *loop, const struct config *cfg, struct store *st,
                            enum compute_role role, const struct compute_hooks *hooks)
{
    return compute_create(loop, cfg, st, role, 0, hooks);
}

/* read replicas (issue 6) */
struct compute *compute_new_replica(struct ev_loop *loop, const struct config *cfg,
                                    struct store *st, int index, const struct compute_hooks *hooks)
{
    if (index < 0 || index >= COMPUTE_MAX_REPLICAS)
        return NULL;
    return compute_create(loop, cfg, st, COMPUTE_REPLICA, index, hooks);
}

int compute_index(const struct compute *c)
{
    return c->index;
}

void compute_free(struct compute *c)
{
    if (c == NULL)
        return;
    if (!c->is_static &&
        (c->pid > 0 || (c->state != COMPUTE_SUSPENDED && c->state != COMPUTE_FAILED))) {
        log_warn("compute %s freed while %s; stopping it", compute_role_name(c->role),
                 compute_state_name(c->state));
        compute_stop_blocking(c);
    }
    if (!c->is_static) {
        ev_child_stop(c->loop, &c->child);
        compute_probe_stop(c);
    }
    ev_timer_stop(c->loop, &c->start_timer);
    ev_timer_stop(c->loop, &c->stop_timer);
    cgroup_cpu_destroy(&c->cpu);
    free(c->bindir);
    free(c->datadir);
    free(c->rundir);
    free(c->logpath);
    free(c->host);
    free(c);
}

void compute_set_config(struct compute *c, const struct config *cfg)
{
    c->cfg = cfg;
}

void compute_set_use_cgroup(struct compute *c, bool use_cgroup)
{
    c->use_cgroup = use_cgroup;
}

enum compute_state compute_get_state(const struct compute *c)
{
    return __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
}

const char *compute_host(const struct compute *c)
{
    return c->host;
}

int compute_port(const struct compute *c)
{
    return c->port;
}

bool compute_is_unix(const struct compute *c)
{
    return c->host != NULL && c->host[0] == '/';
}

bool compute_is_static(const struct compute *c)
{
    return c->is_static;
}

void compute_get_info(const struct compute *c, struct compute_info *out)
{
    bool up = c->state == COMPUTE_RUNNING || c->state == COMPUTE_PAUSED;
    out->role = compute_role_name(c->role);
    out->state = compute_state_name(c->state);
    out->pid = (int) c->pid;
    out->cu = c->cu;
    out->started_at_ms = c->started_at_wall;
    out->uptime_ms = up ? compute_mono_ms() - c->ready_mono : 0;
    out->starts = c->starts;
    out->last_start_ms = c->last_start_ms;
    out->state_since_ms = c->state_since_wall;
    out->pause_method = compute_freeze_name(c->last_freeze);
    out->cpu_enforcement = c->is_static ? "" : cgroup_kind_name(c->cpu.kind);
    out->cpu_limit = c->cpu.limit_cu;
    out->cpu_why = c->cpu.kind == CGROUP_NONE ? c->cpu.why : "";
}

/* ---- compute units (issue 5) -------------------------------------------------------------- */

const struct config *compute_get_config(const struct compute *c)
{
    return c->cfg;
}

void compute_set_resize_hook(struct compute *c, compute_resized_fn fn, void *arg)
{
    c->on_resized = fn;
    c->on_resized_arg = arg;
}

int compute_resize(struct compute *c, double cu)
{
    double q = cu * 4.0;
    if (c->is_static || !(cu >= 0.25 && cu <= 64.0) || fabs(q - round(q)) > 1e-9 ||
        (c->state != COMPUTE_STARTING && c->state != COMPUTE_RUNNING && c->state != COMPUTE_PAUSED))
        return -1;
    double from = c->cu;
    if (cu == from)
        return 0;
    c->cu = cu;
    const char *role = compute_role_name(c->role);
    if (c->cpu.kind == CGROUP_NONE)
        log_info("compute %s: resized %.2f -> %.2f CU (not enforced: %s)", role, from, cu,
                 c->cpu.why);
    else if (cgroup_cpu_set_limit(&c->cpu, cu) < 0)
        log_warn("compute %s: resized %.2f -> %.2f CU, but the quota in %s could not be set: %s",
                 role, from, cu, c->cpu.dir, strerror(errno));
    else
        log_info("compute %s: resized %.2f -> %.2f CU (%s quota %.2f vCPU)", role, from, cu,
                 cgroup_kind_name(c->cpu.kind), cu);
    if (c->on_resized != NULL)
        c->on_resized(c->on_resized_arg, c, from, cu);
    return 0;
}

/* utime+stime (plus cutime+cstime when children) of pid in clock ticks, or -1. */
static int64_t compute_proc_ticks(pid_t pid, bool children)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    long long ut, st, cut, cst;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
       stime cutime cstime */
    if (rp == NULL ||
        sscanf(rp + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld %lld %lld", &ut, &st,
               &cut, &cst) != 4)
        return -1;
    return ut + st + (children ? cut + cst : 0);
}

int compute_cpu_usage_us(const struct compute *c, int64_t *us)
{
    if (c->is_static || c->pid <= 0)
        return -1;
    if (c->cpu.kind != CGROUP_NONE && cgroup_cpu_usage_us(&c->cpu, us) == 0)
        return 0;
    /* /proc: the live tree, plus what the postmaster's reaped children used */
    pid_t *pids = NULL;
    int n = compute_tree(c->pid, &pids);
    int64_t ticks = 0;
    for (int i = 0; i < n; i++) {
        int64_t t = compute_proc_ticks(pids[i], i == 0);
        ticks += t > 0 ? t : 0;
    }
    free(pids);
    if (n == 0)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    *us = ticks * (1000000 / (hz > 0 ? hz : 100));
    return 0;
}
