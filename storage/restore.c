/*
 * restore: point-in-time restore into a new data directory. The backup is chosen from the
 * target (the newest whose consistent point is not after it), the target is checked against the
 * oldest backup and the newest archived WAL, the backup's files are copied into NEWDIR/primary,
 * recovery.signal is written, and postgres is started once with restore_command pointing at
 * `pgtide wal-fetch` over DATA/wal and the recovery target on its command line only (nothing
 * about the recovery stays in NEWDIR's configuration). When DATA/primary is cleanly shut down,
 * its pg_wal (the tail not yet archived) is offered to the recovery too, so "latest" really is
 * the last commit. Then the server is stopped with a fast shutdown, which writes a checkpoint.
 */
#define _GNU_SOURCE
#include "pgtide/restore.h"
#include "pgtide/backup.h"
#include "pgtide/config.h"
#include "pgtide/store.h"
#include "pgtide/wal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

struct restore_opts {
    const char *data, *into, *backup_id, *to, *lsn;
};

/* What the archive (and a shut-down primary's pg_wal) can replay up to. */
struct restore_wal_end {
    int64_t time_ms;  /* newest archived file's mtime, or the primary's shutdown checkpoint */
    uint64_t end_lsn; /* end of the newest archived segment, or the shutdown checkpoint */
    bool primary_clean;
};

int restore_parse_time(const char *s, int64_t *ms)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int y, mo, d, h, mi, n = 0;
    double sec = 0;
    if (sscanf(s, "%4d-%2d-%2d%*1[ T]%2d:%2d%n", &y, &mo, &d, &h, &mi, &n) != 5)
        return -1;
    const char *p = s + n;
    if (*p == ':') {
        char *end;
        sec = strtod(p + 1, &end);
        if (end == p + 1 || sec < 0 || sec >= 61)
            return -1;
        p = end;
    }
    while (*p == ' ')
        p++;
    int off = 0;
    if (*p == 'Z' || *p == 'z')
        p++;
    else if (strncasecmp(p, "UTC", 3) == 0)
        p += 3;
    else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh = 0, om = 0, k = 0;
        p++;
        if (sscanf(p, "%2d%n", &oh, &k) != 1 || k != 2)
            return -1;
        p += 2;
        if (*p == ':')
            p++;
        if (isdigit((unsigned char) *p)) {
            if (sscanf(p, "%2d%n", &om, &k) != 1 || k != 2)
                return -1;
            p += 2;
        }
        off = sign * (oh * 3600 + om * 60);
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    time_t t = timegm(&tm);
    *ms = ((int64_t) t - off) * 1000 + (int64_t) (sec * 1000.0 + 0.5);
    return 0;
}

static void restore_fmt_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t) (ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, len, "%s.%03d+00", base, (int) (ms % 1000));
}

static int restore_usage(void)
{
    fprintf(stderr, "usage: pgtide restore -D DATA --into NEWDIR [--backup ID | --to "
                    "'TIMESTAMP' | --lsn LSN]\n");
    return 2;
}

static int restore_args(int argc, char **argv, struct restore_opts *o)
{
    static const struct option longopts[] = {{"into", required_argument, NULL, 'i'},
                                             {"backup", required_argument, NULL, 'b'},
                                             {"to", required_argument, NULL, 't'},
                                             {"lsn", required_argument, NULL, 'l'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "D:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'D':
            o->data = optarg;
            break;
        case 'i':
            o->into = optarg;
            break;
        case 'b':
            o->backup_id = optarg;
            break;
        case 't':
            o->to = optarg;
            break;
        case 'l':
            o->lsn = optarg;
            break;
        default:
            return -1;
        }
    }
    int targets = (o->backup_id != NULL) + (o->to != NULL) + (o->lsn != NULL);
    if (optind != argc || o->data == NULL || o->into == NULL || targets > 1)
        return -1;
    return 0;
}

/* Newest archived file time and segment end. */
static void restore_scan_archive(const char *data, uint64_t seg_size, struct restore_wal_end *we)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/wal", data);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        char name[256], path[4500];
        snprintf(name, sizeof(name), "%s", de->d_name);
        size_t len = strlen(name);
        if (len > 4 && strcmp(name + len - 4, ".zst") == 0)
            name[len - 4] = '\0';
        if (!wal_name_valid(name))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct stat sb;
        if (stat(path, &sb) == 0 && (int64_t) sb.st_mtime * 1000 > we->time_ms)
            we->time_ms = (int64_t) sb.st_mtime * 1000 + sb.st_mtim.tv_nsec / 1000000;
        uint64_t segno;
        if (strlen(name) == 24 && wal_name_segno(name, seg_size, &segno, NULL) == 0 &&
            (segno + 1) * seg_size > we->end_lsn)
            we->end_lsn = (segno + 1) * seg_size;
    }
    if (d != NULL)
        closedir(d);
}

/* When DATA/primary is cleanly shut down, its last checkpoint bounds the WAL too. */
static void restore_scan_primary(const struct store *st, const char *bindir, const char *data,
                                 struct restore_wal_end *we)
{
    char pgdata[4200], pidfile[4300], state[64], ckpt[64], when[128];
    snprintf(pgdata, sizeof(pgdata), "%s/primary", data);
    snprintf(pidfile, sizeof(pidfile), "%s/postmaster.pid", pgdata);
    if (access(pidfile, F_OK) == 0 ||
        backup_controldata(st, bindir, pgdata, "Database cluster state", state, sizeof(state)) <
            0 ||
        strcmp(state, "shut down") != 0)
        return;
    uint64_t lsn;
    if (backup_controldata(st, bindir, pgdata, "Latest checkpoint location", ckpt, sizeof(ckpt)) <
            0 ||
        wal_parse_lsn(ckpt, &lsn) < 0)
        return;
    we->primary_clean = true;
    if (lsn > we->end_lsn)
        we->end_lsn = lsn;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (backup_controldata(st, bindir, pgdata, "Time of latest checkpoint", when, sizeof(when)) ==
            0 &&
        strptime(when, "%a %b %d %H:%M:%S %Y", &tm) != NULL &&
        (int64_t) timegm(&tm) * 1000 > we->time_ms)
        we->time_ms = (int64_t) timegm(&tm) * 1000 + 999;
}

/* Picks the backup for the target; prints the refusal. Returns the index or -1. */
static int restore_choose(const struct restore_opts *o, const struct backup_info *b, int n,
                          int64_t target_ms, uint64_t target_lsn)
{
    char when[64];
    if (o->backup_id != NULL) {
        for (int i = 0; i < n; i++)
            if (strcmp(b[i].id, o->backup_id) == 0)
                return i;
        fprintf(stderr, "pgtide restore: no complete backup \"%s\" in %s/backups\n", o->backup_id,
                o->data);
        return -1;
    }
    int pick = -1;
    for (int i = 0; i < n; i++) {
        uint64_t end = 0;
        if (o->to != NULL && b[i].consistent_ms <= target_ms)
            pick = i;
        else if (o->lsn != NULL && wal_parse_lsn(b[i].lsn_end, &end) == 0 && end <= target_lsn)
            pick = i;
        else if (o->to == NULL && o->lsn == NULL)
            pick = i;
    }
    if (pick < 0) {
        restore_fmt_time(b[0].consistent_ms, when, sizeof(when));
        fprintf(stderr,
                "pgtide restore: the target %s is before the oldest backup (%s, consistent from "
                "%s, LSN %s); choose a later target\n",
                o->to ? o->to : o->lsn, b[0].id, when, b[0].lsn_end);
    }
    return pick;
}

/* Refuses a target after the newest replayable WAL. 0 or -1. */
static int restore_check_end(const struct restore_opts *o, const struct restore_wal_end *we,
                             int64_t target_ms, uint64_t target_lsn)
{
    char when[64];
    restore_fmt_time(we->time_ms, when, sizeof(when));
    if (o->to != NULL && target_ms > we->time_ms) {
        fprintf(stderr,
                "pgtide restore: the target %s is after the last archived WAL (%s); nothing "
                "after that can be restored\n",
                o->to, when);
        return -1;
    }
    if (o->lsn != NULL && target_lsn > we->end_lsn) {
        fprintf(stderr,
                "pgtide restore: the target LSN %s is after the last archived WAL (ends at "
                "%X/%X)\n",
                o->lsn, (unsigned) (we->end_lsn >> 32), (unsigned) we->end_lsn);
        return -1;
    }
    return 0;
}

/* Offers the segments of a cleanly shut-down DATA/primary/pg_wal to the recovery. */
static void restore_copy_tail(const struct store *nst, const char *data)
{
    char src[4200], dst[4200];
    snprintf(src, sizeof(src), "%s/primary/pg_wal", data);
    snprintf(dst, sizeof(dst), "%s/primary/pg_wal", nst->dir);
    DIR *d = opendir(src);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 24 || !wal_name_valid(de->d_name))
            continue;
        char s[4500], t[4500], *buf = NULL;
        size_t len = 0;
        snprintf(s, sizeof(s), "%s/%s", src, de->d_name);
        snprintf(t, sizeof(t), "%s/%s", dst, de->d_name);
        if (store_read_file(s, &buf, &len) == 0 && store_write_file(t, buf, len, 0600) == 0 &&
            nst->as_root && chown(t, nst->uid, nst->gid) < 0)
            fprintf(stderr, "pgtide restore: chown %s: %s\n", t, strerror(errno));
        free(buf);
    }
    if (d != NULL)
        closedir(d);
}

/* Child: postgres over NEWDIR/primary in recovery. Never returns. */
static void restore_exec_postgres(const struct store *nst, char *const argv[])
{
    setsid();
    char log[4200];
    snprintf(log, sizeof(log), "%s/log/restore.log", nst->dir);
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0640);
    int in = open("/dev/null", O_RDONLY);
    if (out >= 0 && nst->as_root && fchown(out, nst->uid, nst->gid) < 0)
        _exit(126);
    dup2(in, STDIN_FILENO);
    dup2(out, STDOUT_FILENO);
    dup2(out, STDERR_FILENO);
    if (nst->as_root && (setgroups(0, NULL) < 0 || setgid(nst->gid) < 0 || setuid(nst->uid) < 0))
        _exit(126);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (chdir(nst->dir) < 0)
        _exit(126);
    execv(argv[0], argv);
    _exit(127);
}

/* True once the server accepts connections and is out of recovery. */
static bool restore_promoted(const char *rundir)
{
    const char *const keys[] = {"host", "port", "user", "dbname", "connect_timeout", NULL};
    const char *const vals[] = {rundir, "5432", "postgres", "postgres", "5", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    bool done = false;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "SELECT pg_is_in_recovery()");
        done = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
               strcmp(PQgetvalue(r, 0, 0), "f") == 0;
        PQclear(r);
    }
    PQfinish(c);
    return done;
}

static void restore_print_log_tail(const struct store *nst)
{
    char path[4200], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/log/restore.log", nst->dir);
    if (store_read_file(path, &text, &len) < 0)
        return;
    size_t start = len > 1500 ? len - 1500 : 0;
    fprintf(stderr, "--- last lines of %s ---\n%s\n", path, text + start);
    free(text);
}

/* Runs the recovery to its target and stops the server cleanly. 0 or -1. */
static int restore_recover(const struct store *nst, const char *bindir, const char *data_abs,
                           const char *target_setting)
{
    char self[4096], postgres[4200], pgdata[4200], rundir[4200], sock[4400], restore_cmd[9000];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    snprintf(postgres, sizeof(postgres), "%s/postgres", bindir);
    snprintf(pgdata, sizeof(pgdata), "%s/primary", nst->dir);
    snprintf(rundir, sizeof(rundir), "%s/run", nst->dir);
    snprintf(sock, sizeof(sock), "unix_socket_directories=%s", rundir);
    snprintf(restore_cmd, sizeof(restore_cmd), "restore_command='%s' wal-fetch %%f %%p -D '%s'",
             self, data_abs);
    char *argv[32];
    int a = 0;
    argv[a++] = postgres;
    argv[a++] = "-D";
    argv[a++] = pgdata;
    const char *settings[] = {sock,
                              "port=5432",
                              "listen_addresses=",
                              "archive_mode=off",
                              "hot_standby=off",
                              "recovery_target_action=promote",
                              "unix_socket_permissions=0700",
                              restore_cmd,
                              target_setting};
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        if (settings[i] == NULL)
            continue;
        argv[a++] = "-c";
        argv[a++] = (char *) settings[i];
    }
    argv[a] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0)
        restore_exec_postgres(nst, argv);
    int status = 0;
    for (;;) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "pgtide restore: the recovery ended without promoting (the target "
                            "may lie beyond the last commit in the archived WAL)\n");
            restore_print_log_tail(nst);
            return -1;
        }
        if (restore_promoted(rundir))
            break;
        usleep(200 * 1000);
    }
    kill(pid, SIGINT);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "pgtide restore: the restored server did not shut down cleanly\n");
        restore_print_log_tail(nst);
        return -1;
    }
    return 0;
}

/* Copies one small file from DATA to NEWDIR when it exists. */
static void restore_copy_small(const char *data, const char *into, const char *rel)
{
    char s[4200], t[4200], *buf = NULL;
    size_t len = 0;
    snprintf(s, sizeof(s), "%s/%s", data, rel);
    snprintf(t, sizeof(t), "%s/%s", into, rel);
    if (store_read_file(s, &buf, &len) == 0 && store_write_file(t, buf, len, 0600) < 0)
        fprintf(stderr, "pgtide restore: could not copy %s: %s\n", rel, strerror(errno));
    free(buf);
}

/* Fills the opened NEWDIR from backup b and recovers it. 0 or -1. */
static int restore_build(struct store *nst, const char *bindir, const char *data_abs,
                         const struct backup_info *b, const struct restore_wal_end *we,
                         const char *target_setting)
{
    char src[4200], dst[4200], path[4400], err[1024];
    snprintf(src, sizeof(src), "%s/backups/%s/data", data_abs, b->id);
    snprintf(dst, sizeof(dst), "%s/primary", nst->dir);
    if (backup_copy_tree(src, dst, nst->as_root, nst->uid, nst->gid, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "pgtide restore: %s\n", err);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/backup_manifest", dst);
    unlink(path);
    snprintf(path, sizeof(path), "%s/postmaster.pid", dst);
    unlink(path);
    if (we->primary_clean)
        restore_copy_tail(nst, data_abs);
    snprintf(path, sizeof(path), "%s/recovery.signal", dst);
    if (store_write_file(path, "", 0, 0600) < 0 ||
        (nst->as_root && chown(path, nst->uid, nst->gid) < 0)) {
        fprintf(stderr, "pgtide restore: could not write %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (restore_recover(nst, bindir, data_abs, target_setting) < 0)
        return -1;
    restore_copy_small(data_abs, nst->dir, "initial-password");
    restore_copy_small(data_abs, nst->dir, "state/auth.cache");
    return 0;
}

static int restore_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (flag == FTW_DP || flag == FTW_D)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static bool restore_dir_empty(const char *dir, bool *exists)
{
    DIR *d = opendir(dir);
    *exists = d != NULL || errno != ENOENT;
    if (d == NULL)
        return errno == ENOENT;
    struct dirent *de;
    bool empty = true;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            empty = false;
    closedir(d);
    return empty;
}

/* Settings from DATA/pgtide.conf that matter here (compute_user, pg_bindir). */
static struct config *restore_config(const char *data)
{
    struct config *cfg = config_new_defaults();
    char path[4200], err[512];
    snprintf(path, sizeof(path), "%s/pgtide.conf", data);
    if (cfg != NULL && access(path, F_OK) == 0 && config_load_file(cfg, path, err, sizeof(err)))
        fprintf(stderr, "pgtide restore: %s (using defaults)\n", err);
    return cfg;
}

/* Works out the target, picks the backup, checks the WAL bounds. Returns the index or -1. */
static int restore_plan(const struct restore_opts *o, const struct store *st, const char *bindir,
                        const char *data_abs, const struct backup_info *b, int n,
                        struct restore_wal_end *we, char *target, size_t tlen)
{
    int64_t target_ms = 0;
    uint64_t target_lsn = 0;
    target[0] = '\0';
    if (o->to != NULL) {
        if (restore_parse_time(o->to, &target_ms) < 0) {
            fprintf(stderr,
                    "pgtide restore: cannot read the time \"%s\" (use 'YYYY-MM-DD "
                    "HH:MM:SS[.fff][+HH:MM]', UTC when no zone is given)\n",
                    o->to);
            return -1;
        }
        char when[64];
        restore_fmt_time(target_ms, when, sizeof(when));
        snprintf(target, tlen, "recovery_target_time=%s", when);
    } else if (o->lsn != NULL) {
        if (wal_parse_lsn(o->lsn, &target_lsn) < 0) {
            fprintf(stderr, "pgtide restore: \"%s\" is not an LSN (X/Y)\n", o->lsn);
            return -1;
        }
        snprintf(target, tlen, "recovery_target_lsn=%s", o->lsn);
    }
    int pick = restore_choose(o, b, n, target_ms, target_lsn);
    if (pick < 0)
        return -1;
    uint64_t seg = b[pick].wal_segment_size ? b[pick].wal_segment_size : 16u << 20;
    restore_scan_archive(data_abs, seg, we);
    restore_scan_primary(st, bindir, data_abs, we);
    return restore_check_end(o, we, target_ms, target_lsn) < 0 ? -1 : pick;
}

static int restore_run(const struct restore_opts *o, struct config *cfg, const char *data_abs)
{
    char err[1024], target[128];
    struct store nst;
    struct backup_info *b = NULL;
    char *bindir = store_find_bindir(cfg->pg_bindir, err, sizeof(err));
    int n = backup_list(data_abs, &b);
    if (bindir == NULL || n <= 0) {
        fprintf(stderr, "pgtide restore: %s\n",
                bindir == NULL ? err : "no complete backup in DATA/backups");
        free(bindir);
        free(b);
        return 1;
    }
    /* a store handle over DATA only for its compute owner (no lock taken) */
    struct store src = {.dir = (char *) data_abs, .lock_fd = -1};
    int rc = 1;
    struct restore_wal_end we = {0};
    if (store_open(&nst, o->into, cfg->compute_user, err, sizeof(err)) < 0) {
        fprintf(stderr, "pgtide restore: %s\n", err);
        goto out;
    }
    src.uid = nst.uid, src.gid = nst.gid, src.as_root = nst.as_root;
    int pick = restore_plan(o, &src, bindir, data_abs, b, n, &we, target, sizeof(target));
    if (pick >= 0 &&
        restore_build(&nst, bindir, data_abs, &b[pick], &we, target[0] ? target : NULL) == 0) {
        printf("pgtide restore: restored backup %s (%s)%s%s into %s; serve it with: pgtide -D "
               "%s\n",
               b[pick].id, backup_method_name(b[pick].method),
               target[0] ? " to "
                         : " to the latest"
                           " archived commit",
               target[0] ? strchr(target, '=') + 1 : "", o->into, o->into);
        rc = 0;
    }
    store_close(&nst);
out:
    if (rc != 0) /* NEWDIR was empty or absent: leave nothing half-made */
        nftw(o->into, restore_rm_entry, 32, FTW_DEPTH | FTW_PHYS);
    free(bindir);
    free(b);
    return rc;
}

int restore_main(int argc, char **argv)
{
    struct restore_opts o = {0};
    if (restore_args(argc, argv, &o) < 0)
        return restore_usage();
    bool exists;
    if (!restore_dir_empty(o.into, &exists)) {
        fprintf(stderr, "pgtide restore: %s exists and is not empty\n", o.into);
        return 1;
    }
    char data_abs[4096];
    if (realpath(o.data, data_abs) == NULL) {
        fprintf(stderr, "pgtide restore: %s: %s\n", o.data, strerror(errno));
        return 1;
    }
    struct config *cfg = restore_config(data_abs);
    if (cfg == NULL)
        return 1;
    int rc = restore_run(&o, cfg, data_abs);
    config_unref(cfg);
    return rc;
}
