/*
 * replica: the replica set. Up to 16 slots, slot N being DATA/replicas/N and the compute
 * "replica-N" on private port 5433+N (its compute object lives as long as the set, so the ledger
 * and the proxy can key on it). A slot is built in a forked child (newest base backup, else
 * pg_basebackup from the primary's private socket, into DATA/replicas/.N.build, renamed over
 * DATA/replicas/N only when complete) watched with ev_child, then started through the compute
 * state machine. A one-second timer reconciles the slots with the wanted count (a forced count
 * from SCALE REPLICAS, else replpolicy_decide), drains and stops the surplus, restarts crashed
 * replicas and rebuilds those whose start keeps failing, and measures replay lag with pgq
 * (primary first, then every running replica) for the rotation rule.
 */
#define _GNU_SOURCE
#include "pgtide/replica.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pgtide/backup.h"
#include "pgtide/log.h"
#include "pgtide/pgq.h"
#include "pgtide/replpolicy.h"

#define REPLICA_TICK          1.0   /* s */
#define REPLICA_DRAIN_MS      30000 /* drain timeout before a stop */
#define REPLICA_PROBE_MS      900   /* bound of one lag query */
#define REPLICA_START_RETRIES 2     /* failed starts in a row before a rebuild */
#define REPLICA_BUILD_BACKOFF 5000  /* ms after a failed build */

struct replica_slot {
    struct replicaset *rs;
    int index;
    bool used;         /* part of the set (building, built or running) */
    struct compute *c; /* created at the slot's first use, freed with the set */
    bool built;        /* DATA/replicas/N holds a build of this set */
    bool need_rebuild; /* its directory is unusable */
    bool avoid_backup; /* a build from a backup failed to start: use pg_basebackup */
    pid_t build_pid;   /* build child, 0 = none */
    ev_child build_child;
    int64_t build_begin_ms, build_ms, retry_after_ms;
    bool build_from_backup;
    int start_failures; /* consecutive failed starts */
    bool retiring;      /* draining toward a stop */
    int64_t drain_since_ms;
    int sessions; /* sessions the proxy reports on it */
    /* lag */
    struct pgq *probe;
    bool lag_known, replay_paused;
    bool unreachable; /* a login failed: out of rotation until a probe or a state change */
    int lag_failures;
    int64_t lag_bytes;
    double lag_seconds;
    /* CPU (policy input) */
    int64_t cpu_prev_us, cpu_prev_ms;
    double cpu;
    /* scale decision to serving, for the log and the benchmark */
    int64_t decided_ms;
    /* read-your-writes (issue 6): last measured replay position (valid while lag_known) */
    uint64_t replay_lsn;
    int64_t replay_poll_ms; /* when a replay-only measurement last started */
};

struct replicaset {
    unsigned next_pick; /* round-robin start among equally loaded replicas */
    struct ev_loop *loop;
    struct config *cfg; /* referenced snapshot; follows the primary's */
    struct store *st;
    struct compute *primary;
    struct replica_hooks hooks;
    struct replica_slot slot[COMPUTE_MAX_REPLICAS];
    ev_timer tick;
    ev_timer kick; /* a reconcile soon, outside the callback that asked for it */
    int forced;    /* SCALE REPLICAS count, -1 = the policy decides */
    int want;      /* replicas wanted now */
    struct replpolicy policy;
    int waiting;
    int64_t longest_wait_ms;
    int64_t pcpu_prev_us, pcpu_prev_ms;
    double pcpu;
    struct pgq *pprobe; /* primary LSN query */
    uint64_t primary_lsn;
    bool freeing;
};

static int64_t replica_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool replica_up(enum compute_state s)
{
    return s == COMPUTE_RUNNING || s == COMPUTE_PAUSED;
}

static bool replica_primary_up(const struct replicaset *rs)
{
    return replica_up(compute_get_state(rs->primary));
}

/* ---- build (parent side in replica_build_start, child side below) -----------------------------
 */

static int replica_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb;
    (void) ftw;
    if ((flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
        return -1;
    return 0;
}

/* rm -rf path (a missing path is fine). 0 / -1. */
static int replica_rmtree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) < 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, replica_rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

/* Logs "pgtide-error: WHAT ARG: strerror(errno)" (or without the errno text when errno is 0)
   to the build log and exits the build child. */
static void replica_child_fail(int logfd, const char *what, const char *arg)
{
    if (errno != 0)
        dprintf(logfd, "pgtide-error: %s %s: %s\n", what, arg, strerror(errno));
    else
        dprintf(logfd, "pgtide-error: %s %s\n", what, arg);
    _exit(1);
}

/* Appends the standby settings to tmp/postgresql.auto.conf and writes tmp/standby.signal. */
static void replica_child_configure(const struct replicaset *rs, const char *tmp, int index,
                                    const char *rundir, const char *self, const char *data_abs,
                                    int logfd)
{
    char path[4200], text[9000];
    snprintf(path, sizeof(path), "%s/standby.signal", tmp);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        replica_child_fail(logfd, "cannot write", path);
    close(fd);
    if (rs->st->as_root && chown(path, rs->st->uid, rs->st->gid) < 0)
        replica_child_fail(logfd, "cannot chown", path);
    const char *removals[] = {"backup_manifest", "postmaster.pid", "postmaster.opts",
                              "recovery.signal"};
    for (size_t i = 0; i < sizeof(removals) / sizeof(removals[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", tmp, removals[i]);
        unlink(path);
    }
    int n = snprintf(text, sizeof(text),
                     "\n# pgtide replica-%d (issue 6)\n"
                     "primary_conninfo = 'host=''%s'' port=5432 user=postgres "
                     "application_name=replica-%d'\n"
                     "hot_standby = on\n"
                     "recovery_target_timeline = 'latest'\n",
                     index, rundir, index);
    if (self != NULL && data_abs != NULL)
        n += snprintf(text + n, sizeof(text) - (size_t) n,
                      "restore_command = '''%s'' wal-fetch %%f %%p -D ''%s'''\n", self, data_abs);
    snprintf(path, sizeof(path), "%s/postgresql.auto.conf", tmp);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0 || write(fd, text, (size_t) n) != n || fsync(fd) < 0)
        replica_child_fail(logfd, "cannot write", path);
    close(fd);
    if (rs->st->as_root && chown(path, rs->st->uid, rs->st->gid) < 0)
        replica_child_fail(logfd, "cannot chown", path);
}

struct replica_build_args {
    const char *bindir, *tmp, *final, *rundir, *backup_data, *self, *data_abs;
    int index, logfd;
};

/* The build child: never returns. */
static void replica_child_main(const struct replicaset *rs, const struct replica_build_args *a)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setpgid(0, 0); /* a kill of the group reaches pg_basebackup too */
    int logfd = a->logfd;
    if (replica_rmtree(a->tmp) < 0)
        replica_child_fail(logfd, "cannot remove", a->tmp);
    if (a->backup_data != NULL) {
        char err[1024];
        if (backup_copy_tree(a->backup_data, a->tmp, rs->st->as_root, rs->st->uid, rs->st->gid,
                             NULL, err, sizeof(err)) < 0) {
            errno = 0;
            replica_child_fail(logfd, "copy of the backup failed:", err);
        }
    } else {
        if (mkdir(a->tmp, 0700) < 0)
            replica_child_fail(logfd, "cannot create", a->tmp);
        if (rs->st->as_root && chown(a->tmp, rs->st->uid, rs->st->gid) < 0)
            replica_child_fail(logfd, "cannot chown", a->tmp);
        char prog[4200];
        snprintf(prog, sizeof(prog), "%s/pg_basebackup", a->bindir);
        char *const argv[] = {prog,
                              "-D",
                              (char *) a->tmp,
                              "-h",
                              (char *) a->rundir,
                              "-p",
                              "5432",
                              "-U",
                              "postgres",
                              "-w",
                              "-X",
                              "stream",
                              "-c",
                              "fast",
                              "--no-manifest",
                              NULL};
        int status = backup_run_as_owner(rs->st, argv, logfd);
        if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            errno = 0;
            replica_child_fail(logfd, "pg_basebackup failed (see above) building", a->tmp);
        }
    }
    replica_child_configure(rs, a->tmp, a->index, a->rundir, a->self, a->data_abs, logfd);
    if (replica_rmtree(a->final) < 0)
        replica_child_fail(logfd, "cannot remove", a->final);
    if (rename(a->tmp, a->final) < 0)
        replica_child_fail(logfd, "cannot rename the build to", a->final);
    _exit(0);
}

static void replica_slot_event(struct replica_slot *s);

/* The last "pgtide-error:" line (or the last line) of the build log, into out. */
static void replica_build_error(const char *logpath, char *out, size_t outlen)
{
    char *text = NULL;
    snprintf(out, outlen, "see %s", logpath);
    if (store_read_file(logpath, &text, NULL) != 0)
        return;
    const char *m = NULL, *p = text;
    while ((p = strstr(p, "pgtide-error: ")) != NULL)
        m = p++;
    if (m == NULL) {
        size_t len = strlen(text);
        while (len > 0 && text[len - 1] == '\n')
            text[--len] = '\0';
        m = strrchr(text, '\n');
        m = m ? m + 1 : text;
    } else
        m += strlen("pgtide-error: ");
    snprintf(out, outlen, "%.*s (see %s)", (int) strcspn(m, "\n"), m, logpath);
    free(text);
}

static void replica_build_done_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void) revents;
    struct replica_slot *s = w->data;
    struct replicaset *rs = s->rs;
    ev_child_stop(loop, w);
    s->build_pid = 0;
    int64_t now = replica_mono_ms();
    s->build_ms = now - s->build_begin_ms;
    char logrel[64];
    snprintf(logrel, sizeof(logrel), "log/replica-%d.build.log", s->index);
    char *logpath = store_path(rs->st, logrel);
    if (WIFEXITED(w->rstatus) && WEXITSTATUS(w->rstatus) == 0) {
        s->built = true;
        s->need_rebuild = false;
        s->start_failures = 0;
        log_info("replica-%d: built from %s in %lld ms", s->index,
                 s->build_from_backup ? "the newest base backup" : "pg_basebackup of the primary",
                 (long long) s->build_ms);
    } else {
        char why[600];
        replica_build_error(logpath ? logpath : "the build log", why, sizeof(why));
        log_error("replica-%d: build failed after %lld ms: %s", s->index, (long long) s->build_ms,
                  why);
        s->retry_after_ms = now + REPLICA_BUILD_BACKOFF;
        if (s->build_from_backup)
            s->avoid_backup = true;
    }
    free(logpath);
    replica_slot_event(s);
}

/* The newest complete backup's data directory (malloc'd), or NULL. */
static char *replica_newest_backup(const struct replicaset *rs)
{
    struct backup_info *b = NULL;
    int n = backup_list(rs->st->dir, &b);
    char *path = NULL;
    if (n > 0 && asprintf(&path, "%s/backups/%s/data", rs->st->dir, b[n - 1].id) < 0)
        path = NULL;
    free(b);
    return path;
}

/* Starts the build child of slot s. Returns 0, or -1 (logged; retried later). */
static int replica_build_start(struct replica_slot *s)
{
    struct replicaset *rs = s->rs;
    char tmprel[48], finrel[48], logrel[64], self[1024], data_abs[4096];
    snprintf(tmprel, sizeof(tmprel), "replicas/.%d.build", s->index);
    snprintf(finrel, sizeof(finrel), "replicas/%d", s->index);
    snprintf(logrel, sizeof(logrel), "log/replica-%d.build.log", s->index);
    char err[512];
    char *bindir = store_find_bindir(rs->cfg->pg_bindir, err, sizeof(err));
    char *tmp = store_path(rs->st, tmprel), *fin = store_path(rs->st, finrel);
    char *rundir = store_path(rs->st, "run"), *logpath = store_path(rs->st, logrel);
    char *walpath = store_path(rs->st, "wal");
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    bool archive = walpath != NULL && access(walpath, F_OK) == 0 && sl > 0 &&
                   realpath(rs->st->dir, data_abs) != NULL;
    if (sl > 0)
        self[sl] = '\0';
    char *backup = s->avoid_backup || !archive ? NULL : replica_newest_backup(rs);
    int rc = -1, logfd = -1;
    if (bindir == NULL || tmp == NULL || fin == NULL || rundir == NULL || logpath == NULL) {
        log_error("replica-%d: cannot build: %s", s->index, bindir ? "out of memory" : err);
        goto out;
    }
    logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (logfd >= 0 && rs->st->as_root && fchown(logfd, rs->st->uid, rs->st->gid) < 0)
        log_debug("replica-%d: cannot chown %s", s->index, logpath);
    struct replica_build_args a = {
        bindir,   tmp,  fin, rundir, backup, archive ? self : NULL, archive ? data_abs : NULL,
        s->index, logfd};
    if (logfd >= 0)
        dprintf(logfd, "---- build of replica-%d from %s\n", s->index,
                backup ? backup : "pg_basebackup");
    s->build_begin_ms = replica_mono_ms();
    pid_t pid = fork();
    if (pid < 0) {
        log_error("replica-%d: fork: %s", s->index, strerror(errno));
        goto out;
    }
    if (pid == 0)
        replica_child_main(rs, &a);
    s->build_pid = pid;
    s->build_from_backup = backup != NULL;
    ev_child_set(&s->build_child, pid, 0);
    ev_child_start(rs->loop, &s->build_child);
    log_info("replica-%d: building %s from %s", s->index, fin,
             backup ? backup : "pg_basebackup of the primary");
    rc = 0;
out:
    if (logfd >= 0)
        close(logfd);
    free(bindir);
    free(tmp);
    free(fin);
    free(rundir);
    free(logpath);
    free(walpath);
    free(backup);
    if (rc < 0)
        s->retry_after_ms = replica_mono_ms() + REPLICA_BUILD_BACKOFF;
    return rc;
}

/* Kills a running build (its whole process group) and reaps it. */
static void replica_build_abort(struct replica_slot *s)
{
    if (s->build_pid <= 0)
        return;
    kill(-s->build_pid, SIGKILL);
    kill(s->build_pid, SIGKILL);
    ev_child_stop(s->rs->loop, &s->build_child);
    int st;
    while (waitpid(s->build_pid, &st, 0) < 0 && errno == EINTR)
        ;
    log_info("replica-%d: build abandoned", s->index);
    s->build_pid = 0;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void replica_probe_cancel(struct replica_slot *s)
{
    pgq_cancel(s->probe);
    s->probe = NULL;
}

static void replica_forget_lag(struct replica_slot *s)
{
    s->lag_known = false;
    s->lag_failures = 0;
    s->lag_bytes = -1;
    s->lag_seconds = 0;
    s->replay_paused = false;
    s->unreachable = false;
}

static void replica_probe_all(struct replicaset *rs);

/* Hook of every replica compute: bookkeeping, then the owner's hook. */
static void replica_state_changed(void *arg, struct compute *c, enum compute_state from,
                                  enum compute_state to)
{
    struct replica_slot *s = arg;
    struct replicaset *rs = s->rs;
    if (to != COMPUTE_RUNNING && to != COMPUTE_PAUSED) {
        replica_probe_cancel(s);
        replica_forget_lag(s);
    }
    if (from == COMPUTE_STARTING && to == COMPUTE_FAILED)
        s->start_failures++;
    if (to == COMPUTE_RUNNING && from == COMPUTE_STARTING)
        s->start_failures = 0;
    if (rs->hooks.state_changed != NULL)
        rs->hooks.state_changed(rs->hooks.arg, c, from, to);
    if (!rs->freeing && to == COMPUTE_RUNNING && from == COMPUTE_STARTING)
        replica_probe_all(rs); /* into rotation without waiting for the tick */
    if (!rs->freeing && (to == COMPUTE_SUSPENDED || to == COMPUTE_FAILED))
        replica_slot_event(s);
}

/* The slot's compute, created at its first use. */
static struct compute *replica_compute(struct replica_slot *s)
{
    if (s->c == NULL) {
        struct compute_hooks h = {replica_state_changed, s};
        s->c = compute_new_replica(s->rs->loop, s->rs->cfg, s->rs->st, s->index, &h);
    }
    return s->c;
}

static int replica_pid(const struct compute *c)
{
    struct compute_info info;
    compute_get_info(c, &info);
    return info.pid;
}

static bool replica_dir_ok(const struct replica_slot *s)
{
    char rel[64];
    snprintf(rel, sizeof(rel), "replicas/%d/standby.signal", s->index);
    char *p = store_path(s->rs->st, rel);
    bool ok = p != NULL && access(p, F_OK) == 0;
    free(p);
    return ok;
}

/* A slot that should serve: build, start, restart or rebuild as needed. */
static void replica_slot_up(struct replica_slot *s, int64_t now)
{
    struct replicaset *rs = s->rs;
    s->retiring = false;
    if (s->build_pid > 0) {
        if (compute_get_state(rs->primary) == COMPUTE_PAUSED)
            compute_wake(rs->primary); /* pg_basebackup streams from it: keep it thawed */
        return;
    }
    if (!s->used) {
        s->used = true;
        s->decided_ms = now;
        s->built = replica_dir_ok(s) && s->c != NULL; /* a directory of this set, stopped */
    }
    struct compute *c = replica_compute(s);
    if (c == NULL)
        return;
    enum compute_state st = compute_get_state(c);
    if (st == COMPUTE_FAILED && s->start_failures >= REPLICA_START_RETRIES && !s->need_rebuild) {
        log_warn("replica-%d: %d starts failed in a row; rebuilding its data directory", s->index,
                 s->start_failures);
        s->need_rebuild = true;
        if (s->build_from_backup)
            s->avoid_backup = true;
    }
    if (!s->built || s->need_rebuild) {
        if ((st == COMPUTE_SUSPENDED || st == COMPUTE_FAILED) && now >= s->retry_after_ms &&
            replica_pid(c) == 0 && replica_primary_up(rs)) {
            if (compute_get_state(rs->primary) == COMPUTE_PAUSED)
                compute_wake(rs->primary);
            (void) replica_build_start(s);
        }
        return;
    }
    if (st == COMPUTE_SUSPENDED || st == COMPUTE_FAILED) {
        if (!replica_dir_ok(s)) {
            log_warn("replica-%d: %s/replicas/%d is unusable; rebuilding", s->index, rs->st->dir,
                     s->index);
            s->need_rebuild = true;
            return;
        }
        compute_wake(c);
    } else if (st == COMPUTE_PAUSED)
        compute_wake(c);
}

/* A slot beyond the wanted count: stop a build at once, drain a running replica, then stop it;
   a stopped one leaves the set. */
static void replica_slot_down(struct replica_slot *s, int64_t now, bool drain)
{
    if (!s->used)
        return;
    if (s->build_pid > 0)
        replica_build_abort(s);
    enum compute_state st = s->c ? compute_get_state(s->c) : COMPUTE_SUSPENDED;
    if (replica_up(st)) {
        if (!s->retiring) {
            s->retiring = true;
            s->drain_since_ms = now;
            log_info("replica-%d: draining (%d sessions)", s->index, s->sessions);
        }
        bool drained = !drain || s->sessions <= 0 || now - s->drain_since_ms >= REPLICA_DRAIN_MS;
        if (drained) {
            if (drain && s->sessions > 0)
                log_warn("replica-%d: drain timeout with %d sessions left; stopping", s->index,
                         s->sessions);
            if (compute_suspend(s->c) != 0)
                log_warn("replica-%d: cannot stop now", s->index);
        }
        return;
    }
    if (st == COMPUTE_STARTING || st == COMPUTE_SUSPENDING)
        return; /* comes back through the hook / the next tick */
    s->used = false;
    s->retiring = false;
    s->sessions = 0;
    log_info("replica-%d: left the set", s->index);
}

/* Brings the slots in line with rs->want (and with the primary's state). */
static void replica_reconcile(struct replicaset *rs)
{
    int64_t now = replica_mono_ms();
    bool primary_up = replica_primary_up(rs);
    enum compute_state pst = compute_get_state(rs->primary);
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++) {
        struct replica_slot *s = &rs->slot[i];
        if (i < rs->want && primary_up)
            replica_slot_up(s, now);
        else if (i < rs->want && s->used) {
            /* the primary does not run: replicas do not outlive it (kept for its return) */
            if (s->build_pid > 0 && pst != COMPUTE_STARTING)
                replica_build_abort(s);
            if (s->c != NULL && replica_up(compute_get_state(s->c)) && compute_suspend(s->c) != 0)
                log_warn("replica-%d: cannot stop now", s->index);
        } else if (i >= rs->want)
            replica_slot_down(s, now, primary_up);
    }
}

/* A slot changed (build ended, compute stopped or failed): reconcile from the loop, not from
   inside the compute's transition. */
static void replica_slot_event(struct replica_slot *s)
{
    struct replicaset *rs = s->rs;
    if (!rs->freeing && !ev_is_active(&rs->kick)) {
        ev_timer_set(&rs->kick, 0.001, 0);
        ev_timer_start(rs->loop, &rs->kick);
    }
}

static void replica_kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    replica_reconcile(w->data);
}

/* ---- lag ------------------------------------------------------------------------------------ */

/* "host='DATA/run' port=N ..." for a private socket (quotes and backslashes escaped). */
static void replica_conninfo(const struct replicaset *rs, int port, char *out, size_t outlen)
{
    char host[2048];
    size_t j = 0;
    const char *dir = compute_host(rs->primary);
    for (size_t i = 0; dir[i] != '\0' && j + 2 < sizeof(host); i++) {
        if (dir[i] == '\'' || dir[i] == '\\')
            host[j++] = '\\';
        host[j++] = dir[i];
    }
    host[j] = '\0';
    snprintf(out, outlen,
             "host='%s' port=%d dbname=postgres user=postgres application_name=pgtide-lag "
             "connect_timeout=2",
             host, port);
}

static void replica_lag_done(void *arg, int ntuples, int nfields, const char *const *v,
                             const char *err)
{
    struct replica_slot *s = arg;
    struct replicaset *rs = s->rs;
    s->probe = NULL;
    uint64_t replay;
    if (err != NULL || ntuples != 1 || nfields != 3 || replpolicy_parse_lsn(v[0], &replay) != 0) {
        if (++s->lag_failures >= 3 && s->lag_known) {
            log_warn("replica-%d: lag unknown (%s)", s->index, err ? err : "no replay position");
            s->lag_known = false;
        }
        return;
    }
    bool was_in = false;
    struct replica_info before;
    if (replicaset_info(rs, s->index, &before))
        was_in = before.in_rotation;
    s->lag_failures = 0;
    s->lag_known = true;
    s->unreachable = false; /* it answered */
    s->lag_bytes = replpolicy_lag_bytes(rs->primary_lsn, replay);
    s->replay_lsn = replay;
    s->lag_seconds = replpolicy_lag_seconds(s->lag_bytes, v[1] ? strtod(v[1], NULL) : -1);
    s->replay_paused = v[2] != NULL && v[2][0] == 't';
    struct replica_info now;
    if (replicaset_info(rs, s->index, &now) && now.in_rotation != was_in) {
        if (now.in_rotation && s->decided_ms > 0) {
            log_info("replica-%d: in rotation %lld ms after the scale decision (build %lld ms)",
                     s->index, (long long) (replica_mono_ms() - s->decided_ms),
                     (long long) s->build_ms);
            s->decided_ms = 0;
        } else
            log_info("replica-%d: %s rotation%s%s (lag %lld bytes)", s->index,
                     now.in_rotation ? "back in" : "out of", now.in_rotation ? "" : ": ",
                     now.why_not, (long long) s->lag_bytes);
    }
}

static void replica_primary_lsn_done(void *arg, int ntuples, int nfields, const char *const *v,
                                     const char *err)
{
    struct replicaset *rs = arg;
    rs->pprobe = NULL;
    uint64_t lsn;
    if (err != NULL || ntuples != 1 || nfields != 1 || replpolicy_parse_lsn(v[0], &lsn) != 0) {
        log_debug("replicas: primary LSN not read: %s", err ? err : "bad answer");
        return;
    }
    rs->primary_lsn = lsn;
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++) {
        struct replica_slot *s = &rs->slot[i];
        if (!s->used || s->c == NULL || compute_get_state(s->c) != COMPUTE_RUNNING ||
            s->probe != NULL)
            continue;
        char ci[2600];
        replica_conninfo(rs, compute_port(s->c), ci, sizeof(ci));
        s->probe = pgq_start(rs->loop, ci,
                             "SELECT pg_last_wal_replay_lsn()::text, COALESCE(EXTRACT(epoch FROM "
                             "now() - pg_last_xact_replay_timestamp())::float8, -1)::text, "
                             "pg_is_wal_replay_paused()",
                             0, NULL, REPLICA_PROBE_MS, replica_lag_done, s);
    }
}

/* Read-your-writes: a replay-only measurement (the lag keeps its last primary-relative value). */
static void replica_replay_done(void *arg, int ntuples, int nfields, const char *const *v,
                                const char *err)
{
    struct replica_slot *s = arg;
    s->probe = NULL;
    uint64_t replay;
    if (err == NULL && ntuples == 1 && nfields == 1 && s->lag_known &&
        replpolicy_parse_lsn(v[0], &replay) == 0 && replay > s->replay_lsn)
        s->replay_lsn = replay;
}

/* Measures again at once the replay position of replicas in rotation that are behind need
   (one measurement in flight per replica, at most one start per 50 ms: each is a new backend
   on the replica). Unreachable and retiring replicas are left to the lag probe. */
static void replica_poll_replay(struct replicaset *rs, uint64_t need)
{
    int64_t now = replica_mono_ms();
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++) {
        struct replica_slot *s = &rs->slot[i];
        if (!s->used || s->c == NULL || compute_get_state(s->c) != COMPUTE_RUNNING ||
            s->probe != NULL || !s->lag_known || s->unreachable || s->retiring ||
            s->replay_lsn >= need || now - s->replay_poll_ms < 50)
            continue;
        s->replay_poll_ms = now;
        char ci[2600];
        replica_conninfo(rs, compute_port(s->c), ci, sizeof(ci));
        s->probe = pgq_start(rs->loop, ci, "SELECT pg_last_wal_replay_lsn()::text", 0, NULL,
                             REPLICA_PROBE_MS, replica_replay_done, s);
    }
}

/* Primary LSN first (only while it runs unfrozen), then every running replica's replay. */
static void replica_probe_all(struct replicaset *rs)
{
    if (rs->pprobe != NULL || compute_get_state(rs->primary) != COMPUTE_RUNNING)
        return;
    bool any = false;
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++)
        any |= rs->slot[i].used && rs->slot[i].c != NULL &&
               compute_get_state(rs->slot[i].c) == COMPUTE_RUNNING;
    if (!any)
        return;
    char ci[2600];
    replica_conninfo(rs, compute_port(rs->primary), ci, sizeof(ci));
    rs->pprobe = pgq_start(rs->loop, ci, "SELECT pg_current_wal_lsn()::text", 0, NULL,
                           REPLICA_PROBE_MS, replica_primary_lsn_done, rs);
}

/* ---- policy driver ------------------------------------------------------------------------ */

/* CPU use over the last tick as a fraction of cu; -1 when unknown. */
static double replica_cpu_fraction(struct compute *c, int64_t *prev_us, int64_t *prev_ms,
                                   int64_t now)
{
    int64_t us;
    struct compute_info info;
    compute_get_info(c, &info);
    if (compute_get_state(c) != COMPUTE_RUNNING || compute_cpu_usage_us(c, &us) != 0) {
        *prev_ms = 0;
        return -1;
    }
    double f = -1;
    if (*prev_ms > 0 && now > *prev_ms && us >= *prev_us && info.cu > 0)
        f = (double) (us - *prev_us) / ((double) (now - *prev_ms) * 1000.0) / info.cu;
    *prev_us = us;
    *prev_ms = now;
    return f;
}

/* Follows the primary's configuration snapshot (SET and reloads reach the primary first). */
static void replica_sync_config(struct replicaset *rs)
{
    const struct config *cur = compute_get_config(rs->primary);
    if (cur != NULL && cur != rs->cfg)
        replicaset_set_config(rs, cur);
}

static void replica_decide(struct replicaset *rs, int64_t now)
{
    const struct config *cfg = rs->cfg;
    double pc = replica_cpu_fraction(rs->primary, &rs->pcpu_prev_us, &rs->pcpu_prev_ms, now);
    double sum = 0;
    int n = 0;
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++) {
        struct replica_slot *s = &rs->slot[i];
        if (!s->used || s->c == NULL)
            continue;
        s->cpu = replica_cpu_fraction(s->c, &s->cpu_prev_us, &s->cpu_prev_ms, now);
        if (s->cpu >= 0) {
            sum += s->cpu;
            n++;
        }
    }
    if (rs->forced >= 0) {
        rs->want = rs->forced;
        return;
    }
    if (!replica_primary_up(rs)) {
        rs->want = cfg->min_replicas; /* come back as the policy wants after the primary */
        replpolicy_reset(&rs->policy);
        return;
    }
    struct replpolicy_params prm = {cfg->min_replicas, cfg->max_replicas,   cfg->replica_scale_wait,
                                    cfg->scale_window, cfg->scale_cooldown, cfg->cpu_high,
                                    cfg->cpu_low};
    struct replpolicy_input in = {
        now, rs->want, rs->waiting, rs->longest_wait_ms, pc < 0 ? 0 : pc, n > 0 ? sum / n : -1};
    char why[256];
    int to = replpolicy_decide(&rs->policy, &prm, &in, why, sizeof(why));
    if (to != rs->want) {
        log_info("replicas: %d -> %d: %s", rs->want, to, why);
        rs->want = to;
    }
}

static void replica_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    struct replicaset *rs = w->data;
    replica_sync_config(rs);
    replica_decide(rs, replica_mono_ms());
    replica_reconcile(rs);
    replica_probe_all(rs);
}

/* ---- public -----------------------------------------------------------------------------------
 */

struct replicaset *replicaset_new(struct ev_loop *loop, const struct config *cfg, struct store *st,
                                  struct compute *primary, const struct replica_hooks *hooks)
{
    if (primary == NULL || st == NULL || compute_is_static(primary)) {
        log_info("replicas: off (they need the local compute provider)");
    }
    struct replicaset *rs = calloc(1, sizeof(*rs));
    if (rs == NULL)
        return NULL;
    rs->loop = loop;
    rs->cfg = config_ref((struct config *) cfg);
    rs->st = st;
    rs->primary = primary;
    if (hooks != NULL)
        rs->hooks = *hooks;
    rs->forced = -1;
    rs->want = 0;
    replpolicy_reset(&rs->policy);
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++) {
        struct replica_slot *s = &rs->slot[i];
        s->rs = rs;
        s->index = i;
        s->lag_bytes = -1;
        ev_child_init(&s->build_child, replica_build_done_cb, 0, 0);
        s->build_child.data = s;
    }
    ev_timer_init(&rs->tick, replica_tick_cb, REPLICA_TICK, REPLICA_TICK);
    rs->tick.data = rs;
    ev_timer_init(&rs->kick, replica_kick_cb, 0, 0);
    rs->kick.data = rs;
    if (primary != NULL && st != NULL && !compute_is_static(primary)) {
        ev_timer_start(loop, &rs->tick);
        ev_unref(loop); /* the set alone must not keep the loop running */
    }
    return rs;
}

void replicaset_free(struct replicaset *rs)
{
    if (rs == NULL)
        return;
    rs->freeing = true;
    if (ev_is_active(&rs->tick)) {
        ev_ref(rs->loop);
        ev_timer_stop(rs->loop, &rs->tick);
    }
    ev_timer_stop(rs->loop, &rs->kick);
    pgq_cancel(rs->pprobe);
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++) {
        struct replica_slot *s = &rs->slot[i];
        replica_probe_cancel(s);
        replica_build_abort(s);
        if (s->c != NULL) {
            compute_stop_blocking(s->c);
            compute_free(s->c);
        }
    }
    config_unref(rs->cfg);
    free(rs);
}

void replicaset_set_config(struct replicaset *rs, const struct config *cfg)
{
    if (cfg == rs->cfg)
        return;
    if (rs->forced >= 0 && (cfg->min_replicas != rs->cfg->min_replicas ||
                            cfg->max_replicas != rs->cfg->max_replicas)) {
        log_info("replicas: SCALE REPLICAS %d ends (min_replicas/max_replicas changed)",
                 rs->forced);
        rs->forced = -1;
        replpolicy_reset(&rs->policy);
    }
    struct config *old = rs->cfg;
    rs->cfg = config_ref((struct config *) cfg);
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++)
        if (rs->slot[i].c != NULL)
            compute_set_config(rs->slot[i].c, rs->cfg);
    config_unref(old);
}

bool replicaset_info(const struct replicaset *rs, int i, struct replica_info *out)
{
    int k = -1;
    for (int j = 0; j < COMPUTE_MAX_REPLICAS; j++) {
        if (rs->slot[j].used && ++k == i) {
            const struct replica_slot *s = &rs->slot[j];
            struct replpolicy_replica r = {.running =
                                               s->c != NULL && replica_up(compute_get_state(s->c)),
                                           .draining = s->retiring,
                                           .lag_known = s->lag_known,
                                           .lag_bytes = s->lag_bytes,
                                           .max_lag = rs->cfg->max_replica_lag,
                                           .replay_paused = s->replay_paused,
                                           .primary_running = replica_primary_up(rs)};
            out->compute = s->c;
            out->index = s->index;
            out->lag_bytes = s->lag_known ? s->lag_bytes : -1;
            out->lag_seconds = s->lag_seconds;
            out->in_rotation = replpolicy_in_rotation(&r, &out->why_not);
            if (out->in_rotation && s->unreachable) {
                out->in_rotation = false;
                out->why_not = "unreachable";
            }
            if (s->build_pid > 0)
                out->why_not = "building";
            else if (!out->in_rotation && !r.running && s->c != NULL &&
                     compute_get_state(s->c) == COMPUTE_STARTING)
                out->why_not = "starting";
            out->build_ms = s->build_ms;
            return true;
        }
    }
    return false;
}

int replicaset_count(const struct replicaset *rs)
{
    int n = 0;
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++)
        n += rs->slot[i].used;
    return n;
}

struct compute *replicaset_pick(struct replicaset *rs, int (*load)(void *arg, struct compute *c),
                                void *arg)
{
    return replicaset_pick_at(rs, 0, load, arg);
}

struct compute *replicaset_pick_at(struct replicaset *rs, uint64_t need_lsn,
                                   int (*load)(void *arg, struct compute *c), void *arg)
{
    struct compute *best = NULL;
    int best_load = 0;
    bool behind = false;
    int n = replicaset_count(rs);
    /* ties go round-robin, so that equal replicas share the new sessions */
    unsigned start = rs->next_pick++;
    for (int k = 0; k < n; k++) {
        int i = (int) ((start + (unsigned) k) % (unsigned) n);
        struct replica_info info;
        if (!replicaset_info(rs, i, &info) || !info.in_rotation)
            continue;
        const struct replica_slot *s = &rs->slot[info.index];
        if (!replpolicy_replayed(need_lsn, s->lag_known, s->replay_lsn)) {
            behind = true; /* read-your-writes: it has not replayed the reader's writes yet */
            continue;
        }
        int l = load != NULL ? load(arg, info.compute) : 0;
        if (best == NULL || l < best_load) {
            best = info.compute;
            best_load = l;
        }
    }
    if (best == NULL && behind && need_lsn != UINT64_MAX)
        replica_poll_replay(rs, need_lsn);
    if (best != NULL && compute_get_state(best) == COMPUTE_PAUSED)
        compute_wake(best); /* thaw: RUNNING before this returns */
    return best;
}

void replicaset_note_demand(struct replicaset *rs, int waiting, int64_t longest_wait_ms)
{
    rs->waiting = waiting;
    rs->longest_wait_ms = longest_wait_ms;
}

int replicaset_scale(struct replicaset *rs, int n, char *err, size_t errlen)
{
    if (n < 0 || n > COMPUTE_MAX_REPLICAS) {
        snprintf(err, errlen, "SCALE REPLICAS takes a count from 0 to %d", COMPUTE_MAX_REPLICAS);
        return -1;
    }
    if (!ev_is_active(&rs->tick)) {
        snprintf(err, errlen, "replicas need the local compute provider");
        return -1;
    }
    log_info("replicas: SCALE REPLICAS %d (was %d%s)", n, rs->want,
             rs->forced >= 0 ? ", forced" : "");
    rs->forced = n;
    rs->want = n;
    replica_reconcile(rs);
    return 0;
}

void replicaset_primary_changed(struct replicaset *rs, enum compute_state from,
                                enum compute_state to)
{
    (void) from;
    if (rs == NULL || rs->freeing)
        return;
    if (to == COMPUTE_SUSPENDING || to == COMPUTE_SUSPENDED || to == COMPUTE_FAILED) {
        log_info("replicas: the primary is %s; stopping its replicas", compute_state_name(to));
        if (rs->forced < 0) {
            rs->want = rs->cfg->min_replicas;
            replpolicy_reset(&rs->policy);
        }
        rs->pcpu_prev_ms = 0;
        replica_reconcile(rs);
    } else if (to == COMPUTE_RUNNING && from == COMPUTE_STARTING)
        replica_reconcile(rs);
}

bool replicaset_accepts(const struct replicaset *rs, const struct compute *c)
{
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++)
        if (rs->slot[i].c == c)
            return rs->slot[i].used && !rs->slot[i].retiring;
    return false;
}

void replicaset_note_sessions(struct replicaset *rs, struct compute *c, int sessions)
{
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++) {
        struct replica_slot *s = &rs->slot[i];
        if (s->c != c)
            continue;
        s->sessions = sessions;
        if (s->retiring && sessions <= 0)
            replica_slot_event(s); /* drained: stop now */
        return;
    }
}

void replicaset_note_unreachable(struct replicaset *rs, struct compute *c)
{
    for (int i = 0; i < COMPUTE_MAX_REPLICAS; i++) {
        struct replica_slot *s = &rs->slot[i];
        if (s->c != c || !s->used)
            continue;
        if (!s->unreachable)
            log_warn("replica-%d: a login failed; out of rotation until it answers again",
                     s->index);
        s->unreachable = true;
        return;
    }
}
