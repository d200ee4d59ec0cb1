/*
 * cgroup: CPU quota groups for computes (DESIGN.md §3: one CU = 1 vCPU of CPU quota). A group is
 * a directory under the cgroup cpu controller next to pgtide's own group: cgroup v1 (the cpu
 * hierarchy, plus the cpuacct hierarchy when it is mounted apart, for usage) or cgroup v2 (a
 * hierarchy whose cgroup.controllers lists cpu). The compute's postmaster joins the group in the
 * forked child before exec, so every backend it forks later inherits the quota; the quota can
 * then be changed at any time without touching the processes. Where no controller is writable the
 * group is not created and the reason is kept for SHOW COMPUTES; nothing here is fatal.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cgroup_kind { CGROUP_NONE, CGROUP_V1, CGROUP_V2 };

#define CGROUP_PATH_MAX 512

struct cgroup_cpu {
    enum cgroup_kind kind;
    char dir[CGROUP_PATH_MAX];      /* the group of the cpu controller */
    char acct_dir[CGROUP_PATH_MAX]; /* v1: cpuacct group when mounted apart, else "" */
    char why[256];                  /* CGROUP_NONE: why there is no enforcement */
    int64_t period_us;              /* quota period (v1 cfs_period_us / v2 cpu.max) */
    double limit_cu;                /* last quota written, in vCPU; 0 = none yet */
};

/* Creates (or reuses, when it exists) the group "name" next to pgtide's own cgroup, trying v1
   then v2, and checks that its quota file is writable. On success g->kind is V1 or V2 and 0 is
   returned; otherwise g->kind is NONE, g->why says why (e.g. "cgroup v1 cpu: mkdir
   /sys/fs/cgroup/cpu/x: Permission denied") and -1 is returned. Empty groups "pgtide-PID-..."
   beside it whose pgtide PID no longer exists (a killed pgtide) are removed. Blocking (a few
   small files). */
int cgroup_cpu_create(struct cgroup_cpu *g, const char *name) __attribute__((warn_unused_result));

/* Moves the calling process into the group (both hierarchies for v1 with cpuacct apart).
   Meant for the child between fork and exec: only open/write/close, no allocation. Returns 0,
   or -1 with errno set. No-op (0) for CGROUP_NONE. */
int cgroup_cpu_join_self(const struct cgroup_cpu *g);

/* Sets the quota to cu vCPU (cu * period microseconds per period, at least 1 ms). Live: the
   processes in the group are not disturbed. Returns 0, or -1 with errno set (g->limit_cu keeps
   the previous value). -1 with ENOTSUP for CGROUP_NONE. */
int cgroup_cpu_set_limit(struct cgroup_cpu *g, double cu) __attribute__((warn_unused_result));

/* Total CPU time used by the group's processes since it was created, in microseconds
   (cpuacct.usage or cpu.stat usage_usec). Returns 0, or -1 when it cannot be read. */
int cgroup_cpu_usage_us(const struct cgroup_cpu *g, int64_t *us)
    __attribute__((warn_unused_result));

/* Reads back the quota from the kernel in vCPU (0 = unlimited). Returns 0 or -1. For tests and
   SHOW COMPUTES. */
int cgroup_cpu_read_limit(const struct cgroup_cpu *g, double *cu)
    __attribute__((warn_unused_result));

/* Moves any process still in the group to the parent group and removes the directories.
   g becomes CGROUP_NONE. Safe on a NONE group. */
void cgroup_cpu_destroy(struct cgroup_cpu *g);

/* pgtide's own path in the hierarchy of controller (a v1 controller name such as "freezer", or
   NULL for v2), from /proc/self/cgroup: "/" for the root. 0, or -1 when it is not mounted. */
int cgroup_own_path(const char *controller, char *out, size_t len);

/* "cgroup-v1", "cgroup-v2" or "none". Static. */
const char *cgroup_kind_name(enum cgroup_kind k);
