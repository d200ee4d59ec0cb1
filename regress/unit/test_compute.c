/*
 * test_compute: the compute lifecycle for real. As root it initialises a cluster in a temporary
 * DATA and runs the local provider: wake -> running, queries through the private socket with
 * pgq (results, errors, timeouts, cancel), pause by cgroup and by SIGSTOP (the tree is frozen and
 * a query cannot complete), thaw, suspend with no process left, demand while suspending, a
 * kill -9 of the postmaster -> failed and crash recovery on the next wake, a start timeout, a
 * missing cluster, and the static provider. Without root only the static cases run.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgtide/compute.h"
#include "pgtide/config.h"
#include "pgtide/log.h"
#include "pgtide/pgq.h"
#include "pgtide/store.h"
#include "unit.h"

static char tmpdir[256];
static char data[300];
static struct ev_loop *loop;

struct transitions {
    int n;
    enum compute_state from[64], to[64];
};

static void on_state(void *arg, struct compute *c, enum compute_state from, enum compute_state to)
{
    struct transitions *t = arg;
    if (t->n < 64) {
        t->from[t->n] = from;
        t->to[t->n] = to;
    }
    t->n++;
    ck_assert_int_eq(compute_get_state(c), to); /* the hook sees the new state */
}

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
}

/* Runs the loop until the compute is in want, or fails the test after ms. */
static void run_until(struct compute *c, enum compute_state want, int ms)
{
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.02, 0.02);
    ev_timer_start(loop, &tick);
    ev_tstamp deadline = ev_time() + ms / 1000.0;
    while (compute_get_state(c) != want && ev_time() < deadline)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    ck_assert_msg(compute_get_state(c) == want, "state %s, want %s",
                  compute_state_name(compute_get_state(c)), compute_state_name(want));
}

struct qres {
    bool done;
    int ntuples, nfields;
    char first[128];
    char err[512];
};

static void on_query(void *arg, int ntuples, int nfields, const char *const *values,
                     const char *err)
{
    struct qres *r = arg;
    ck_assert(!r->done); /* called once */
    r->done = true;
    r->ntuples = ntuples;
    r->nfields = nfields;
    snprintf(r->err, sizeof(r->err), "%s", err ? err : "");
    if (ntuples > 0 && nfields > 0)
        snprintf(r->first, sizeof(r->first), "%s", values[0] ? values[0] : "(null)");
}

static void query(const char *sql, int nparams, const char *const *params, int64_t timeout_ms,
                  struct qres *r)
{
    char conninfo[512];
    snprintf(conninfo, sizeof(conninfo), "host=%s/run port=5432 dbname=postgres user=postgres",
             data);
    memset(r, 0, sizeof(*r));
    struct pgq *q = pgq_start(loop, conninfo, sql, nparams, params, timeout_ms, on_query, r);
    ck_assert_ptr_nonnull(q);
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.02, 0.02);
    ev_timer_start(loop, &tick);
    ev_tstamp deadline = ev_time() + 20;
    while (!r->done && ev_time() < deadline)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    ck_assert_msg(r->done, "query %s never completed", sql);
}

/* State letter and parent of pid from /proc, or '?' when gone. */
static char proc_state(pid_t pid, pid_t *pgrp, pid_t *parent)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return '?';
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    char st = '?';
    int ppid = 0, pg = 0;
    if (rp == NULL || sscanf(rp + 1, " %c %d %d", &st, &ppid, &pg) != 3)
        return '?';
    if (pgrp)
        *pgrp = pg;
    if (parent)
        *parent = ppid;
    return st;
}

/* The postmaster root and its descendants (by ppid); returns the count. */
static int tree_members(pid_t root, pid_t *out, int max)
{
    pid_t all[4096], par[4096];
    int n = 0, k = 0;
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL && n < 4096) {
        pid_t p = (pid_t) atoi(de->d_name), pp = 0;
        if (p > 0 && proc_state(p, NULL, &pp) != '?') {
            all[n] = p;
            par[n++] = pp;
        }
    }
    if (d)
        closedir(d);
    if (kill(root, 0) < 0)
        return 0;
    out[k++] = root;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < n && k < max; j++)
            if (par[j] == out[i])
                out[k++] = all[j];
    return k;
}

static int count_in_state(pid_t pgid, char state)
{
    pid_t pids[256];
    int n = tree_members(pgid, pids, 256), k = 0;
    for (int i = 0; i < n; i++)
        if (proc_state(pids[i], NULL, NULL) == state)
            k++;
    return k;
}

static void rm_tmp(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void make_tmp(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pgtide-compute-%d-XXXXXX", (int) getppid());
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    chmod(tmpdir, 0755);
    snprintf(data, sizeof(data), "%s/data", tmpdir);
    loop = ev_default_loop(0);
}

static void local_cfg(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->data_dir = data;
    cfg->pg_bindir = "";
    cfg->compute_user = "postgres";
    cfg->compute_units = 0.25;
    cfg->compute_start_timeout = 30000;
    cfg->compute_stop_timeout = 10000;
    cfg->compute_provider = PROVIDER_LOCAL;
}

static void check_pgq(void)
{
    struct qres r;
    const char *p[] = {"41"};
    query("select $1::int + 1, null::text", 1, p, 5000, &r);
    ck_assert_msg(r.err[0] == '\0', "%s", r.err);
    ck_assert_int_eq(r.ntuples, 1);
    ck_assert_int_eq(r.nfields, 2);
    ck_assert_str_eq(r.first, "42");

    query("select * from no_such_table", 0, NULL, 5000, &r);
    ck_assert_msg(strstr(r.err, "no_such_table") != NULL, "%s", r.err);
    ck_assert_int_eq(r.ntuples, 0);

    query("select pg_sleep(5)", 0, NULL, 200, &r);
    ck_assert_msg(strstr(r.err, "timed out after 200 ms") != NULL, "%s", r.err);

    /* cancel: done is never called */
    char conninfo[512];
    snprintf(conninfo, sizeof(conninfo), "host=%s/run port=5432 dbname=postgres", data);
    struct qres never = {0};
    struct pgq *q = pgq_start(loop, conninfo, "select 1", 0, NULL, 1000, on_query, &never);
    ck_assert_ptr_nonnull(q);
    ev_run(loop, EVRUN_NOWAIT);
    pgq_cancel(q);
    for (int i = 0; i < 10; i++)
        ev_run(loop, EVRUN_NOWAIT);
    ck_assert(!never.done);
}

/* Pause with the compute's default method, then with SIGSTOP forced. */
static void check_pause(struct compute *c)
{
    struct compute_info info;
    struct qres r;
    for (int round = 0; round < 2; round++) {
        compute_set_use_cgroup(c, round == 0);
        compute_get_info(c, &info);
        pid_t pm = info.pid;
        ck_assert_int_eq(compute_pause(c), 0);
        ck_assert_int_eq(compute_get_state(c), COMPUTE_PAUSED);
        ck_assert_int_eq(compute_pause(c), -1);
        compute_get_info(c, &info);
        if (round == 1)
            ck_assert_str_eq(info.pause_method, "sigstop");
        if (strcmp(info.pause_method, "sigstop") == 0) {
            pid_t pids[256];
            /* every live member stopped (a backend that was exiting may linger as a zombie) */
            int n = tree_members(pm, pids, 256);
            /* SIGSTOP lands asynchronously: give every member a moment to show 'T' */
            for (int w = 0; w < 200 && count_in_state(pm, 'T') + count_in_state(pm, 'Z') < n; w++)
                usleep(10 * 1000);
            ck_assert_int_ge(count_in_state(pm, 'T'), 3); /* postmaster, checkpointer, ... */
            ck_assert_int_eq(count_in_state(pm, 'T') + count_in_state(pm, 'Z'), n);
        }
        /* frozen whatever the method: a connection cannot complete */
        query("select 1", 0, NULL, 300, &r);
        ck_assert_msg(strstr(r.err, "timed out") != NULL, "%s", r.err);
        compute_wake(c);
        ck_assert_int_eq(compute_get_state(c), COMPUTE_RUNNING); /* synchronous thaw */
        ck_assert_int_eq(count_in_state(pm, 'T'), 0);
        query("select 7", 0, NULL, 5000, &r);
        ck_assert_msg(r.err[0] == '\0', "%s", r.err);
        ck_assert_str_eq(r.first, "7");
    }
    compute_set_use_cgroup(c, true);
}

/* Every process of a tree snapshot has exited (within a few seconds). */
static void check_gone(const pid_t *pids, int n)
{
    ck_assert_int_gt(n, 0);
    ev_tstamp deadline = ev_time() + 5;
    for (int i = 0; i < n; i++) {
        while (kill(pids[i], 0) == 0 && proc_state(pids[i], NULL, NULL) != 'Z' &&
               ev_time() < deadline)
            usleep(10000);
        ck_assert_msg(kill(pids[i], 0) < 0 || proc_state(pids[i], NULL, NULL) == 'Z',
                      "pid %d of the compute still alive", (int) pids[i]);
    }
}

/* initdb through the store, and the first superuser's password file. */
static void init_cluster(struct store *st)
{
    char err[1024] = "";
    char *bindir = store_find_bindir("", err, sizeof(err));
    ck_assert_msg(bindir != NULL, "%s", err);
    ck_assert_msg(store_init_cluster(st, bindir, err, sizeof(err)) == 0, "%s", err);
    free(bindir);
    ck_assert(store_has_cluster(st));
    char *pwpath = store_path(st, "initial-password"), *pw = NULL;
    size_t pwlen = 0;
    ck_assert_int_eq(store_read_file(pwpath, &pw, &pwlen), 0);
    ck_assert_uint_eq(pwlen, 25);
    ck_assert_uint_eq(
        strspn(pw, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 24);
    struct stat sb;
    ck_assert_int_eq(stat(pwpath, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 07777, 0600);
    free(pw);
    free(pwpath);
}

START_TEST(test_local_lifecycle)
{
    if (geteuid() != 0)
        return;
    make_tmp();
    struct store st;
    char err[1024] = "";
    ck_assert_msg(store_open(&st, data, "postgres", err, sizeof(err)) == 0, "%s", err);
    init_cluster(&st);

    struct config cfg;
    local_cfg(&cfg);
    struct transitions t = {0};
    struct compute_hooks hooks = {on_state, &t};
    struct compute *c = compute_new(loop, &cfg, &st, COMPUTE_PRIMARY, &hooks);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(compute_get_state(c), COMPUTE_SUSPENDED);
    ck_assert(compute_is_unix(c));
    ck_assert(!compute_is_static(c));
    ck_assert_int_eq(compute_port(c), 5432);
    ck_assert_int_eq(compute_suspend(c), -1);
    ck_assert_int_eq(compute_pause(c), -1);

    compute_wake(c);
    compute_wake(c); /* many calls, one start */
    ck_assert_int_eq(compute_get_state(c), COMPUTE_STARTING);
    run_until(c, COMPUTE_RUNNING, 30000);
    ck_assert_int_eq(t.n, 2);
    ck_assert(t.from[0] == COMPUTE_SUSPENDED && t.to[0] == COMPUTE_STARTING);
    ck_assert(t.from[1] == COMPUTE_STARTING && t.to[1] == COMPUTE_RUNNING);
    struct compute_info info;
    compute_get_info(c, &info);
    ck_assert_int_eq(info.starts, 1);
    ck_assert_int_gt(info.pid, 0);
    ck_assert_str_eq(info.state, "running");
    ck_assert_str_eq(info.role, "primary");
    ck_assert_int_gt(info.started_at_ms, 0);

    check_pgq();
    struct qres r;
    query("select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'postgres'", 0,
          NULL, 5000, &r);
    ck_assert_msg(r.err[0] == '\0', "%s", r.err);
    ck_assert_str_eq(r.first, "t"); /* initdb stored a SCRAM verifier of the initial password */
    query("select count(*) from pg_hba_file_rules where type <> 'local' or auth_method <> 'trust'",
          0, NULL, 5000, &r);
    ck_assert_str_eq(r.first, "0"); /* only the private socket, trusted */
    check_pause(c);

    /* suspend from paused: thaw, fast shutdown, nothing left */
    compute_get_info(c, &info);
    pid_t tree[256];
    int ntree = tree_members(info.pid, tree, 256);
    ck_assert_int_eq(compute_pause(c), 0);
    ck_assert_int_eq(compute_suspend(c), 0);
    ck_assert_int_eq(compute_get_state(c), COMPUTE_SUSPENDING);
    run_until(c, COMPUTE_SUSPENDED, 15000);
    check_gone(tree, ntree);
    compute_get_info(c, &info);
    ck_assert_int_eq(info.pid, 0);

    /* demand while suspending starts it again after the stop */
    compute_wake(c);
    run_until(c, COMPUTE_RUNNING, 30000);
    ck_assert_int_eq(compute_suspend(c), 0);
    compute_wake(c);
    ck_assert_int_eq(compute_get_state(c), COMPUTE_SUSPENDING);
    run_until(c, COMPUTE_RUNNING, 30000);
    compute_get_info(c, &info);
    ck_assert_int_eq(info.starts, 3);

    /* crash: kill -9 of the postmaster -> failed at once; next wake recovers */
    ntree = tree_members(info.pid, tree, 256);
    ck_assert_int_eq(kill(info.pid, SIGKILL), 0);
    run_until(c, COMPUTE_FAILED, 10000);
    ck_assert_int_eq(t.to[t.n - 1], COMPUTE_FAILED);
    check_gone(tree, ntree);
    compute_wake(c);
    run_until(c, COMPUTE_RUNNING, 30000);
    query("select count(*) from pg_class", 0, NULL, 5000, &r);
    ck_assert_msg(r.err[0] == '\0', "%s", r.err);

    compute_get_info(c, &info);
    ntree = tree_members(info.pid, tree, 256);
    compute_stop_blocking(c);
    ck_assert_int_eq(compute_get_state(c), COMPUTE_SUSPENDED);
    check_gone(tree, ntree);
    compute_free(c);
    store_close(&st);
    rm_tmp();
}
END_TEST

START_TEST(test_start_failures)
{
    if (geteuid() != 0)
        return;
    make_tmp();
    struct store st;
    char err[1024] = "";
    ck_assert_msg(store_open(&st, data, "postgres", err, sizeof(err)) == 0, "%s", err);
    struct config cfg;
    local_cfg(&cfg);
    struct transitions t = {0};
    struct compute_hooks hooks = {on_state, &t};

    /* no cluster: fails at once */
    struct compute *c = compute_new(loop, &cfg, &st, COMPUTE_PRIMARY, &hooks);
    ck_assert_ptr_nonnull(c);
    compute_wake(c);
    ck_assert_int_eq(compute_get_state(c), COMPUTE_FAILED);
    ck_assert_int_eq(t.n, 2);
    compute_free(c);

    /* a "postgres" that never becomes ready: start timeout kills it */
    char bin[512], pg[600], ver[600];
    snprintf(bin, sizeof(bin), "%s/fakebin", tmpdir);
    ck_assert_int_eq(mkdir(bin, 0755), 0);
    snprintf(pg, sizeof(pg), "%s/postgres", bin);
    ck_assert_int_eq(store_write_file(pg, "#!/bin/sh\nexec sleep 60\n", 24, 0755), 0);
    snprintf(ver, sizeof(ver), "%s/primary/PG_VERSION", data);
    ck_assert_int_eq(store_write_file(ver, "15\n", 3, 0644), 0);
    cfg.pg_bindir = bin;
    cfg.compute_start_timeout = 300;
    t.n = 0;
    c = compute_new(loop, &cfg, &st, COMPUTE_PRIMARY, &hooks);
    ck_assert_ptr_nonnull(c);
    compute_wake(c);
    struct compute_info info;
    compute_get_info(c, &info);
    pid_t pm = info.pid;
    ck_assert_int_gt(pm, 0);
    run_until(c, COMPUTE_FAILED, 5000);
    ev_tstamp deadline = ev_time() + 5;
    while (kill(pm, 0) == 0 && ev_time() < deadline)
        ev_run(loop, EVRUN_NOWAIT); /* reaped by the ev_child watcher */
    ck_assert_int_eq(kill(pm, 0), -1);
    compute_free(c);
    store_close(&st);
    rm_tmp();
}
END_TEST

START_TEST(test_static)
{
    loop = ev_default_loop(0);
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.compute_provider = PROVIDER_STATIC;
    cfg.static_host = "/var/run/postgresql";
    cfg.static_port = 5555;
    struct transitions t = {0};
    struct compute_hooks hooks = {on_state, &t};
    struct compute *c = compute_new(loop, &cfg, NULL, COMPUTE_PRIMARY, &hooks);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(compute_get_state(c), COMPUTE_RUNNING);
    ck_assert(compute_is_static(c));
    ck_assert(compute_is_unix(c));
    ck_assert_str_eq(compute_host(c), "/var/run/postgresql");
    ck_assert_int_eq(compute_port(c), 5555);
    compute_wake(c);
    ck_assert_int_eq(compute_suspend(c), -1);
    ck_assert_int_eq(compute_pause(c), -1);
    compute_stop_blocking(c);
    ck_assert_int_eq(compute_get_state(c), COMPUTE_RUNNING);
    ck_assert_int_eq(t.n, 0);
    compute_free(c);

    cfg.static_host = "127.0.0.1";
    c = compute_new(loop, &cfg, NULL, COMPUTE_PRIMARY, NULL);
    ck_assert(!compute_is_unix(c));
    compute_free(c);
    ck_assert_str_eq(compute_state_name(COMPUTE_SUSPENDING), "suspending");
    ck_assert_str_eq(compute_state_name(COMPUTE_PAUSED), "paused");
}
END_TEST

static Suite *compute_suite(void)
{
    Suite *s = suite_create("compute");
    TCase *tc = tcase_create("compute");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_static);
    tcase_add_test(tc, test_start_failures);
    tcase_add_test(tc, test_local_lifecycle);
    suite_add_tcase(s, tc);
    return s;
}

/* After the suite (in the runner, not the forked test): a test that failed half-way may have
   left a compute behind, perhaps frozen. Thaw and kill every process whose command line names
   this run's temporary directories, then remove them. */
static void kill_leftovers(void)
{
    char tag[64], cmd[128];
    snprintf(tag, sizeof(tag), "/tmp/pgtide-compute-%d-", (int) getpid());
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        int pid = atoi(de->d_name);
        char path[64], line[4096];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
        FILE *f = pid > 0 ? fopen(path, "r") : NULL;
        size_t n = f ? fread(line, 1, sizeof(line) - 1, f) : 0;
        if (f)
            fclose(f);
        for (size_t i = 0; i < n; i++)
            line[i] = line[i] ? line[i] : ' ';
        line[n] = '\0';
        if (n == 0 || strstr(line, tag) == NULL)
            continue;
        fprintf(stderr, "killing leftover compute process %d\n", pid);
        snprintf(path, sizeof(path), "/sys/fs/cgroup/freezer/pgtide-%d/freezer.state", pid);
        f = fopen(path, "w");
        if (f) {
            fputs("THAWED", f);
            fclose(f);
        }
        kill(pid, SIGKILL);
        kill(pid, SIGCONT);
    }
    if (d)
        closedir(d);
    snprintf(cmd, sizeof(cmd), "rm -rf %s*", tag);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s*\n", tag);
}

int main(void)
{
    int rc = unit_run(compute_suite());
    kill_leftovers();
    return rc;
}
