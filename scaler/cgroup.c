/*
 * cgroup: CPU quota groups for computes. The mount points come from /proc/self/mountinfo (a v1
 * hierarchy whose super options name the cpu or cpuacct controller, or a cgroup2 hierarchy whose
 * cgroup.controllers lists cpu), pgtide's own position in each hierarchy from /proc/self/cgroup
 * (minus the mount's root, for containers); the compute's group is made beside it. v1 writes
 * cpu.cfs_quota_us against cpu.cfs_period_us and reads usage from cpuacct.usage; v2 writes
 * cpu.max (after enabling +cpu in the parent's cgroup.subtree_control) and reads usage_usec from
 * cpu.stat. Errors are reported to the caller, never fatal.
 */
#define _GNU_SOURCE
#include "pgtide/cgroup.h"
#include "pgtide/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CGROUP_DEFAULT_PERIOD 100000 /* us */
#define CGROUP_MIN_QUOTA      1000   /* us, the kernel's lower bound */

const char *cgroup_kind_name(enum cgroup_kind k)
{
    switch (k) {
    case CGROUP_V1:
        return "cgroup-v1";
    case CGROUP_V2:
        return "cgroup-v2";
    case CGROUP_NONE:
        break;
    }
    return "none";
}

/* Appends one reason to g->why ("; " between reasons). */
static void cgroup_why(struct cgroup_cpu *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void cgroup_why(struct cgroup_cpu *g, const char *fmt, ...)
{
    size_t used = strlen(g->why);
    if (used > 0 && used + 2 < sizeof(g->why)) {
        memcpy(g->why + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->why + used, sizeof(g->why) - used, fmt, ap);
    va_end(ap);
}

/* True when the comma list has the item exactly. */
static bool cgroup_list_has(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p != NULL && *p != '\0';) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t) (e - p) : strlen(p);
        if (len == n && memcmp(p, item, n) == 0)
            return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

/* Mount point and root of the v1 hierarchy holding controller (or of cgroup2 when controller is
   NULL) from /proc/self/mountinfo. 0 / -1. */
static int cgroup_find_mount(const char *controller, char *mnt, char *root, size_t len)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        return -1;
    char line[2048];
    int rc = -1;
    while (rc < 0 && fgets(line, sizeof(line), f) != NULL) {
        char r[1024], m[1024], fstype[64], super[1024];
        char *dash = strstr(line, " - ");
        if (dash == NULL || sscanf(line, "%*s %*s %*s %1023s %1023s", r, m) != 2 ||
            sscanf(dash + 3, "%63s %*s %1023s", fstype, super) != 2)
            continue;
        bool match = controller == NULL
                         ? strcmp(fstype, "cgroup2") == 0
                         : strcmp(fstype, "cgroup") == 0 && cgroup_list_has(super, controller);
        if (match && strlen(m) < len && strlen(r) < len) {
            snprintf(mnt, len, "%s", m);
            snprintf(root, len, "%s", r);
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

int cgroup_own_path(const char *controller, char *out, size_t len)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL)
        return -1;
    char line[1024];
    int rc = -1;
    while (rc < 0 && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        bool match = controller ? cgroup_list_has(c1 + 1, controller) : c1[1] == '\0';
        if (match && strlen(c2 + 1) < len) {
            snprintf(out, len, "%s", c2 + 1);
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

/* MOUNT + (own path minus the mount's root) + "/" + name. */
static int cgroup_dir_for(const char *controller, const char *name, char *out, size_t len)
{
    char mnt[1024], root[1024], own[1024];
    if (cgroup_find_mount(controller, mnt, root, sizeof(mnt)) < 0 ||
        cgroup_own_path(controller, own, sizeof(own)) < 0)
        return -1;
    const char *rel = own;
    size_t rl = strlen(root);
    if (strcmp(root, "/") != 0 && strncmp(own, root, rl) == 0)
        rel = own + rl;
    if (strcmp(rel, "/") == 0)
        rel = "";
    int n = snprintf(out, len, "%s%s/%s", mnt, rel, name);
    return n > 0 && (size_t) n < len ? 0 : -1;
}

static int cgroup_write(const char *dir, const char *file, const char *text)
{
    char path[CGROUP_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int e = errno;
    close(fd);
    errno = e;
    return w == (ssize_t) n ? 0 : -1;
}

static int cgroup_read(const char *dir, const char *file, char *buf, size_t len)
{
    char path[CGROUP_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return 0;
}

static int cgroup_mkdir(const char *dir)
{
    return mkdir(dir, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

static int cgroup_create_v1(struct cgroup_cpu *g, const char *name)
{
    if (cgroup_dir_for("cpu", name, g->dir, sizeof(g->dir)) < 0) {
        cgroup_why(g, "cgroup v1 cpu controller not mounted");
        return -1;
    }
    char buf[64];
    if (cgroup_mkdir(g->dir) < 0 ||
        cgroup_read(g->dir, "cpu.cfs_period_us", buf, sizeof(buf)) < 0 ||
        access(g->dir, W_OK) < 0) {
        cgroup_why(g, "cgroup v1 cpu: %s: %s", g->dir, strerror(errno));
        rmdir(g->dir);
        return -1;
    }
    char quota[CGROUP_PATH_MAX + 32];
    snprintf(quota, sizeof(quota), "%s/cpu.cfs_quota_us", g->dir);
    if (access(quota, W_OK) < 0) {
        cgroup_why(g, "cgroup v1 cpu: %s: %s", quota, strerror(errno));
        rmdir(g->dir);
        return -1;
    }
    long period = strtol(buf, NULL, 10);
    g->period_us = period > 0 ? period : CGROUP_DEFAULT_PERIOD;
    /* usage: cpuacct co-mounted with cpu (cpuacct.usage in the same directory), else its own */
    char probe[CGROUP_PATH_MAX + 32];
    snprintf(probe, sizeof(probe), "%s/cpuacct.usage", g->dir);
    g->acct_dir[0] = '\0';
    if (access(probe, R_OK) < 0 &&
        (cgroup_dir_for("cpuacct", name, g->acct_dir, sizeof(g->acct_dir)) < 0 ||
         cgroup_mkdir(g->acct_dir) < 0)) {
        log_debug("cgroup: no cpuacct group for %s (%s); CPU use will come from /proc", name,
                  strerror(errno));
        g->acct_dir[0] = '\0';
    }
    g->kind = CGROUP_V1;
    return 0;
}

static int cgroup_create_v2(struct cgroup_cpu *g, const char *name)
{
    char ctrls[256];
    if (cgroup_dir_for(NULL, name, g->dir, sizeof(g->dir)) < 0) {
        cgroup_why(g, "no cgroup v2 hierarchy");
        return -1;
    }
    char parent[CGROUP_PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", g->dir);
    *strrchr(parent, '/') = '\0';
    if (cgroup_read(parent, "cgroup.controllers", ctrls, sizeof(ctrls)) < 0 ||
        strstr(ctrls, "cpu") == NULL) {
        cgroup_why(g, "cgroup v2 has no cpu controller at %s", parent);
        return -1;
    }
    (void) cgroup_write(parent, "cgroup.subtree_control", "+cpu"); /* may already be on */
    char path[CGROUP_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/cpu.max", g->dir);
    if (cgroup_mkdir(g->dir) < 0 || access(path, W_OK) < 0) {
        cgroup_why(g, "cgroup v2: %s: %s", path, strerror(errno));
        rmdir(g->dir);
        return -1;
    }
    g->period_us = CGROUP_DEFAULT_PERIOD;
    g->acct_dir[0] = '\0';
    g->kind = CGROUP_V2;
    return 0;
}

/* Removes empty groups "pgtide-PID-..." beside dir whose pgtide PID is gone (left behind by a
   pgtide that was killed). rmdir fails, harmlessly, on a group that still has processes. */
static void cgroup_sweep_stale(const char *dir)
{
    char parent[CGROUP_PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        return;
    *slash = '\0';
    DIR *d = opendir(parent);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        char *end;
        if (strncmp(de->d_name, "pgtide-", 7) != 0)
            continue;
        long pid = strtol(de->d_name + 7, &end, 10);
        if (pid <= 0 || *end != '-' || pid == (long) getpid() || kill((pid_t) pid, 0) == 0 ||
            errno != ESRCH)
            continue;
        char stale[CGROUP_PATH_MAX + 300];
        snprintf(stale, sizeof(stale), "%s/%s", parent, de->d_name);
        if (rmdir(stale) == 0)
            log_debug("cgroup: removed %s, left by pgtide pid %ld", stale, pid);
    }
    if (d != NULL)
        closedir(d);
}

int cgroup_cpu_create(struct cgroup_cpu *g, const char *name)
{
    memset(g, 0, sizeof(*g));
    if (cgroup_create_v1(g, name) == 0 || cgroup_create_v2(g, name) == 0) {
        cgroup_sweep_stale(g->dir);
        if (g->acct_dir[0] != '\0')
            cgroup_sweep_stale(g->acct_dir);
        return 0;
    }
    g->kind = CGROUP_NONE;
    g->dir[0] = g->acct_dir[0] = '\0';
    return -1;
}

static int cgroup_join_dir(const char *dir)
{
    char path[CGROUP_PATH_MAX + 32], pid[24];
    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    snprintf(pid, sizeof(pid), "%d", (int) getpid());
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, pid, strlen(pid));
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t) strlen(pid) ? 0 : -1;
}

int cgroup_cpu_join_self(const struct cgroup_cpu *g)
{
    if (g->kind == CGROUP_NONE)
        return 0;
    if (cgroup_join_dir(g->dir) < 0)
        return -1;
    if (g->acct_dir[0] != '\0' && cgroup_join_dir(g->acct_dir) < 0)
        return -1;
    return 0;
}

int cgroup_cpu_set_limit(struct cgroup_cpu *g, double cu)
{
    if (g->kind == CGROUP_NONE) {
        errno = ENOTSUP;
        return -1;
    }
    int64_t quota = (int64_t) llround(cu * (double) g->period_us);
    if (quota < CGROUP_MIN_QUOTA)
        quota = CGROUP_MIN_QUOTA;
    char text[64];
    int rc;
    if (g->kind == CGROUP_V1) {
        snprintf(text, sizeof(text), "%" PRId64, quota);
        rc = cgroup_write(g->dir, "cpu.cfs_quota_us", text);
    } else {
        snprintf(text, sizeof(text), "%" PRId64 " %" PRId64, quota, g->period_us);
        rc = cgroup_write(g->dir, "cpu.max", text);
    }
    if (rc == 0)
        g->limit_cu = cu;
    return rc;
}

int cgroup_cpu_read_limit(const struct cgroup_cpu *g, double *cu)
{
    char buf[128];
    if (g->kind == CGROUP_V1) {
        if (cgroup_read(g->dir, "cpu.cfs_quota_us", buf, sizeof(buf)) < 0)
            return -1;
        long q = strtol(buf, NULL, 10);
        *cu = q < 0 ? 0 : (double) q / (double) g->period_us;
        return 0;
    }
    if (g->kind == CGROUP_V2) {
        if (cgroup_read(g->dir, "cpu.max", buf, sizeof(buf)) < 0)
            return -1;
        long q, p;
        if (strncmp(buf, "max", 3) == 0) {
            *cu = 0;
            return 0;
        }
        if (sscanf(buf, "%ld %ld", &q, &p) != 2 || p <= 0)
            return -1;
        *cu = (double) q / (double) p;
        return 0;
    }
    return -1;
}

int cgroup_cpu_usage_us(const struct cgroup_cpu *g, int64_t *us)
{
    char buf[1024];
    if (g->kind == CGROUP_V1) {
        const char *dir = g->acct_dir[0] != '\0' ? g->acct_dir : g->dir;
        if (cgroup_read(dir, "cpuacct.usage", buf, sizeof(buf)) < 0)
            return -1;
        *us = strtoll(buf, NULL, 10) / 1000;
        return 0;
    }
    if (g->kind == CGROUP_V2) {
        if (cgroup_read(g->dir, "cpu.stat", buf, sizeof(buf)) < 0)
            return -1;
        const char *u = strstr(buf, "usage_usec ");
        if (u == NULL)
            return -1;
        *us = strtoll(u + 11, NULL, 10);
        return 0;
    }
    return -1;
}

/* Moves every process of dir to its parent, then removes dir. */
static void cgroup_release_dir(const char *dir)
{
    char parent[CGROUP_PATH_MAX], procs[CGROUP_PATH_MAX + 32];
    snprintf(parent, sizeof(parent), "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        return;
    *slash = '\0';
    snprintf(procs, sizeof(procs), "%s/cgroup.procs", dir);
    FILE *f = fopen(procs, "re");
    char line[32];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (cgroup_write(parent, "cgroup.procs", line) < 0 && errno != ESRCH)
            log_debug("cgroup: could not move pid %s out of %s: %s", line, dir, strerror(errno));
    }
    if (f != NULL)
        fclose(f);
    if (rmdir(dir) < 0 && errno != ENOENT)
        log_debug("cgroup: could not remove %s: %s", dir, strerror(errno));
}

void cgroup_cpu_destroy(struct cgroup_cpu *g)
{
    if (g->kind != CGROUP_NONE) {
        cgroup_release_dir(g->dir);
        if (g->acct_dir[0] != '\0')
            cgroup_release_dir(g->acct_dir);
    }
    g->kind = CGROUP_NONE;
    g->dir[0] = g->acct_dir[0] = '\0';
    g->limit_cu = 0;
}
