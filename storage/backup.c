/*
 * backup: base backups. backup_start forks a child that does the whole copy with blocking calls
 * (pg_basebackup + pg_verifybackup as the compute owner for a running primary; for a suspended
 * one, a file copy of DATA/primary hashed with SHA-256 into pgtide's manifest, re-read to verify,
 * with pg_controldata consulted before and after to prove no compute touched the cluster
 * meanwhile) and writes a "result" file; the parent hears the exit through ev_child and reports
 * to its caller, who commits the result (meta, written last and durably) or discards it. A
 * child dies with its parent (PR_SET_PDEATHSIG), so a killed pgtide leaves only a directory
 * without meta, which the next start removes. Listing, retention and the statistics live here.
 */
#define _GNU_SOURCE
#include "pgtide/backup.h"
#include "pgtide/log.h"
#include "pgtide/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/evp.h>

#define BACKUP_COPY_BUF (1 << 20)

struct backup_job {
    struct ev_loop *loop;
    struct store *st;
    ev_child child;
    pid_t pid;
    enum backup_method method;
    char id[BACKUP_ID_MAX];
    char *dir; /* DATA/backups/ID */
    int64_t start_ms;
    backup_done_fn done;
    void *arg;
};

static struct backup_stats backup_stat;
static int backup_hot_running;

const struct backup_stats *backup_stats(void)
{
    return &backup_stat;
}

bool backup_in_progress(void)
{
    return backup_hot_running > 0;
}

const char *backup_method_name(enum backup_method m)
{
    return m == BACKUP_COLD ? "cold" : "basebackup";
}

static void backup_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void backup_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int64_t backup_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int backup_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (flag == FTW_DP || flag == FTW_D)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void backup_rmtree(const char *path)
{
    nftw(path, backup_rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

static void backup_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void) fsync(fd);
        close(fd);
    }
}

/* ---- copying with a manifest ------------------------------------------------------------- */

/* Copies one regular file, hashing it into hex. */
static int backup_copy_file(const char *src, const char *dst, mode_t mode, char hex[65],
                            int64_t *size, char *err, size_t errlen)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    int out = in < 0 ? -1 : open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777);
    char *buf = malloc(BACKUP_COPY_BUF);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = -1;
    *size = 0;
    if (in < 0 || out < 0 || buf == NULL || md == NULL ||
        EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        backup_errf(err, errlen, "could not copy %s to %s: %s", src, dst, strerror(errno));
        goto out;
    }
    for (;;) {
        ssize_t n = read(in, buf, BACKUP_COPY_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            backup_errf(err, errlen, "could not read %s: %s", src, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(md, buf, (size_t) n);
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t) (n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                backup_errf(err, errlen, "could not write %s: %s", dst, strerror(errno));
                goto out;
            }
            off += w;
        }
        *size += n;
    }
    unsigned char dig[32];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(md, dig, &dlen);
    for (unsigned int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    rc = 0;
out:
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) < 0 && rc == 0) {
        backup_errf(err, errlen, "could not write %s: %s", dst, strerror(errno));
        rc = -1;
    }
    free(buf);
    EVP_MD_CTX_free(md);
    return rc;
}

/* Recursive step of backup_copy_tree; rel is the path below the root ("" at the top). */
static int backup_copy_dir(const char *src, const char *dst, const char *rel, bool chown_files,
                           uid_t uid, gid_t gid, FILE *manifest, char *err, size_t errlen)
{
    DIR *d = opendir(src);
    if (d == NULL) {
        backup_errf(err, errlen, "could not open directory %s: %s", src, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char s[4096], t[4096], r[4096];
        snprintf(s, sizeof(s), "%s/%s", src, de->d_name);
        snprintf(t, sizeof(t), "%s/%s", dst, de->d_name);
        snprintf(r, sizeof(r), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
        struct stat sb;
        if (lstat(s, &sb) < 0) {
            if (errno == ENOENT)
                continue; /* vanished (a temp file) */
            backup_errf(err, errlen, "could not stat %s: %s", s, strerror(errno));
            rc = -1;
        } else if (S_ISDIR(sb.st_mode)) {
            if (mkdir(t, sb.st_mode & 07777) < 0 && errno != EEXIST) {
                backup_errf(err, errlen, "could not create %s: %s", t, strerror(errno));
                rc = -1;
            } else {
                if (chown_files && lchown(t, uid, gid) < 0)
                    log_debug("chown %s: %s", t, strerror(errno));
                rc = backup_copy_dir(s, t, r, chown_files, uid, gid, manifest, err, errlen);
            }
        } else if (S_ISLNK(sb.st_mode)) {
            char target[4096];
            ssize_t n = readlink(s, target, sizeof(target) - 1);
            if (n < 0 || (target[n] = '\0', symlink(target, t) < 0)) {
                backup_errf(err, errlen, "could not copy link %s: %s", s, strerror(errno));
                rc = -1;
            }
        } else if (S_ISREG(sb.st_mode)) {
            char hex[65];
            int64_t size;
            rc = backup_copy_file(s, t, sb.st_mode, hex, &size, err, errlen);
            if (rc == 0 && chown_files && chown(t, uid, gid) < 0)
                log_debug("chown %s: %s", t, strerror(errno));
            if (rc == 0 && manifest != NULL)
                fprintf(manifest, "%s %" PRId64 " %s\n", hex, size, r);
        }
    }
    closedir(d);
    return rc;
}

int backup_copy_tree(const char *src, const char *dst, bool chown_files, uid_t uid, gid_t gid,
                     FILE *manifest, char *err, size_t errlen)
{
    struct stat sb;
    if (stat(src, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
        backup_errf(err, errlen, "%s is not a directory", src);
        return -1;
    }
    if (mkdir(dst, sb.st_mode & 07777) < 0 && errno != EEXIST) {
        backup_errf(err, errlen, "could not create %s: %s", dst, strerror(errno));
        return -1;
    }
    if (chown_files && chown(dst, uid, gid) < 0)
        log_debug("chown %s: %s", dst, strerror(errno));
    if (manifest != NULL)
        fprintf(manifest, "pgtide-manifest 1\n");
    if (backup_copy_dir(src, dst, "", chown_files, uid, gid, manifest, err, errlen) < 0)
        return -1;
    int fd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) < 0) {
        backup_errf(err, errlen, "could not sync %s: %s", dst, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* ---- verification -------------------------------------------------------------------------- */

static int backup_hash_file(const char *path, char hex[65], int64_t *size)
{
    char err[64];
    return backup_copy_file(path, "/dev/null", 0600, hex, size, err, sizeof(err));
}

static int backup_count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        struct stat sb;
        if (lstat(p, &sb) < 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            int k = backup_count_files(p);
            n = k < 0 ? -1 : n + k;
        } else if (S_ISREG(sb.st_mode))
            n++;
        if (n < 0)
            break;
    }
    closedir(d);
    return n;
}

int backup_verify_manifest(const char *data_dir, const char *manifest_path, char *err,
                           size_t errlen)
{
    FILE *f = fopen(manifest_path, "re");
    if (f == NULL) {
        backup_errf(err, errlen, "could not open manifest %s: %s", manifest_path, strerror(errno));
        return -1;
    }
    char line[4300];
    int rc = 0, files = 0;
    if (fgets(line, sizeof(line), f) == NULL || strcmp(line, "pgtide-manifest 1\n") != 0) {
        backup_errf(err, errlen, "%s is not a pgtide manifest", manifest_path);
        rc = -1;
    }
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        char want[65], got[65], rel[4096];
        int64_t size, real;
        line[strcspn(line, "\n")] = '\0';
        if (sscanf(line, "%64s %" SCNd64 " %4095[^\n]", want, &size, rel) != 3) {
            backup_errf(err, errlen, "bad manifest line: %.80s", line);
            rc = -1;
            break;
        }
        char p[8200];
        snprintf(p, sizeof(p), "%s/%s", data_dir, rel);
        files++;
        if (backup_hash_file(p, got, &real) < 0) {
            backup_errf(err, errlen, "%s: missing or unreadable", rel);
            rc = -1;
        } else if (real != size) {
            backup_errf(err, errlen, "%s: size %" PRId64 ", manifest says %" PRId64, rel, real,
                        size);
            rc = -1;
        } else if (strcmp(got, want) != 0) {
            backup_errf(err, errlen, "%s: checksum mismatch", rel);
            rc = -1;
        }
    }
    fclose(f);
    if (rc == 0 && backup_count_files(data_dir) != files) {
        backup_errf(err, errlen, "%s holds files the manifest does not list", data_dir);
        rc = -1;
    }
    return rc;
}

/* ---- running tools as the compute owner ---------------------------------------------------- */

/* In a forked child: become the compute owner, die with the parent. */
static void backup_become_owner(const struct store *st)
{
    if (st->as_root && (setgroups(0, NULL) < 0 || setgid(st->gid) < 0 || setuid(st->uid) < 0)) {
        dprintf(STDERR_FILENO, "pgtide: cannot switch to uid %u: %s\n", (unsigned) st->uid,
                strerror(errno));
        _exit(126);
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* after setuid, which clears it */
}

static int backup_wait(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return status;
}

int backup_run_as_owner(const struct store *st, char *const argv[], int logfd)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        int out = logfd >= 0 ? logfd : devnull;
        dup2(devnull, STDIN_FILENO);
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
        backup_become_owner(st);
        if (st->dir != NULL && chdir(st->dir) < 0)
            _exit(126);
        execv(argv[0], argv);
        dprintf(STDERR_FILENO, "pgtide: could not run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return backup_wait(pid);
}

int backup_controldata(const struct store *st, const char *bindir, const char *pgdata,
                       const char *field, char *out, size_t outlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    char prog[4096];
    snprintf(prog, sizeof(prog), "%s/pg_controldata", bindir);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        setenv("LC_ALL", "C", 1);
        setenv("TZ", "UTC", 1);
        backup_become_owner(st);
        execl(prog, prog, "-D", pgdata, (char *) NULL);
        _exit(127);
    }
    close(pfd[1]);
    FILE *f = fdopen(pfd[0], "r");
    char line[512];
    int rc = -1;
    size_t flen = strlen(field);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (rc < 0 && strncmp(line, field, flen) == 0 && line[flen] == ':') {
            const char *v = line + flen + 1;
            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%s", v);
            out[strcspn(out, "\n")] = '\0';
            rc = 0;
        }
    }
    if (f != NULL)
        fclose(f);
    else
        close(pfd[0]);
    int status = backup_wait(pid);
    return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? rc : -1;
}

/* ---- the child process ---------------------------------------------------------------------- */

struct backup_child_ctx {
    const struct store *st;
    const char *bindir, *host, *dir, *id;
    int port;
    int logfd;
    struct backup_info info;
};

static void backup_child_fail(struct backup_child_ctx *cx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* Writes the reason as the log's last line and exits 1. */
static void backup_child_fail(struct backup_child_ctx *cx, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dprintf(cx->logfd, "\npgtide-error: %s\n", msg);
    _exit(1);
}

/* Total bytes of regular files under dir. */
static int64_t backup_du(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        struct stat sb;
        if (lstat(p, &sb) < 0)
            continue;
        total += S_ISDIR(sb.st_mode) ? backup_du(p) : S_ISREG(sb.st_mode) ? sb.st_size : 0;
    }
    closedir(d);
    return total;
}

/* The meta text of info (also the child's result file). */
static int backup_format_meta(const struct backup_info *b, char *out, size_t len)
{
    return snprintf(out, len,
                    "id=%s\nmethod=%s\nstart_ms=%" PRId64 "\nend_ms=%" PRId64
                    "\nconsistent_ms=%" PRId64 "\nlsn_start=%s\nlsn_end=%s\ntimeline=%u\n"
                    "wal_segment_size=%" PRIu64 "\nsize=%" PRId64 "\nverified=%d\n",
                    b->id, backup_method_name(b->method), b->start_ms, b->end_ms, b->consistent_ms,
                    b->lsn_start, b->lsn_end, b->timeline, b->wal_segment_size, b->size,
                    b->verified ? 1 : 0);
}

static void backup_child_finish(struct backup_child_ctx *cx, const char *pgdata)
{
    char v[128];
    if (backup_controldata(cx->st, cx->bindir, pgdata, "Bytes per WAL segment", v, sizeof(v)) < 0)
        backup_child_fail(cx, "pg_controldata could not read the copy in %s", pgdata);
    cx->info.wal_segment_size = strtoull(v, NULL, 10);
    cx->info.size = backup_du(pgdata);
    cx->info.end_ms = backup_now_ms();
    if (cx->info.method == BACKUP_BASEBACKUP)
        cx->info.consistent_ms = cx->info.end_ms;
    cx->info.verified = true;
    char text[1024], path[4200];
    backup_format_meta(&cx->info, text, sizeof(text));
    snprintf(path, sizeof(path), "%s/result", cx->dir);
    if (store_write_file(path, text, strlen(text), 0600) < 0)
        backup_child_fail(cx, "could not write %s: %s", path, strerror(errno));
    _exit(0);
}

/* Reads the cluster's checkpoint facts; fails unless it is cleanly shut down. */
static void backup_cold_state(struct backup_child_ctx *cx, const char *pgdata, char *ckpt,
                              size_t ckptlen)
{
    char state[128], pidfile[4200], tli[32], when[128];
    snprintf(pidfile, sizeof(pidfile), "%s/postmaster.pid", pgdata);
    if (backup_controldata(cx->st, cx->bindir, pgdata, "Database cluster state", state,
                           sizeof(state)) < 0)
        backup_child_fail(cx, "pg_controldata failed on %s", pgdata);
    if (strcmp(state, "shut down") != 0 || access(pidfile, F_OK) == 0)
        backup_child_fail(cx,
                          "the cluster is not cleanly shut down (state: %s); a cold backup "
                          "needs a suspended compute",
                          state);
    if (backup_controldata(cx->st, cx->bindir, pgdata, "Latest checkpoint location", ckpt,
                           ckptlen) < 0 ||
        backup_controldata(cx->st, cx->bindir, pgdata, "Latest checkpoint's TimeLineID", tli,
                           sizeof(tli)) < 0 ||
        backup_controldata(cx->st, cx->bindir, pgdata, "Time of latest checkpoint", when,
                           sizeof(when)) < 0)
        backup_child_fail(cx, "pg_controldata did not report the latest checkpoint");
    cx->info.timeline = (uint32_t) strtoul(tli, NULL, 10);
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (strptime(when, "%a %b %d %H:%M:%S %Y", &tm) != NULL)
        cx->info.consistent_ms = (int64_t) timegm(&tm) * 1000;
}

static void backup_child_cold(struct backup_child_ctx *cx)
{
    char pgdata[4200], data[4200], mtmp[4200], mpath[4200], before[64], after[64], err[1024];
    snprintf(pgdata, sizeof(pgdata), "%s/primary", cx->st->dir);
    snprintf(data, sizeof(data), "%s/data", cx->dir);
    snprintf(mtmp, sizeof(mtmp), "%s/manifest.tmp", cx->dir);
    snprintf(mpath, sizeof(mpath), "%s/manifest", cx->dir);
    backup_cold_state(cx, pgdata, before, sizeof(before));
    FILE *m = fopen(mtmp, "we");
    if (m == NULL)
        backup_child_fail(cx, "could not create %s: %s", mtmp, strerror(errno));
    if (backup_copy_tree(pgdata, data, cx->st->as_root, cx->st->uid, cx->st->gid, m, err,
                         sizeof(err)) < 0)
        backup_child_fail(cx, "%s", err);
    if (fflush(m) != 0 || fsync(fileno(m)) < 0 || fclose(m) != 0 || rename(mtmp, mpath) < 0)
        backup_child_fail(cx, "could not write %s: %s", mpath, strerror(errno));
    backup_fsync_path(cx->dir);
    backup_cold_state(cx, pgdata, after, sizeof(after));
    if (strcmp(before, after) != 0)
        backup_child_fail(cx, "the compute ran during the copy (checkpoint %s -> %s)", before,
                          after);
    if (backup_verify_manifest(data, mpath, err, sizeof(err)) < 0)
        backup_child_fail(cx, "verification failed: %s", err);
    snprintf(cx->info.lsn_start, sizeof(cx->info.lsn_start), "%.23s", before);
    snprintf(cx->info.lsn_end, sizeof(cx->info.lsn_end), "%.23s", before);
    backup_child_finish(cx, data);
}

/* Makes sure pg_hba.conf admits replication connections on the private socket (clusters made
   before that line existed), and reloads the running primary when it had to add it. */
static void backup_ensure_replication_hba(struct backup_child_ctx *cx)
{
    char path[4200], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/primary/pg_hba.conf", cx->st->dir);
    if (store_read_file(path, &text, &len) < 0)
        backup_child_fail(cx, "could not read %s: %s", path, strerror(errno));
    bool has = strstr(text, "local replication") != NULL;
    if (!has) {
        static const char line[] = "local replication all trust\n";
        char *nt = malloc(len + sizeof(line) + 1);
        if (nt == NULL)
            backup_child_fail(cx, "out of memory");
        memcpy(nt, text, len);
        size_t n = len;
        if (n > 0 && nt[n - 1] != '\n')
            nt[n++] = '\n';
        memcpy(nt + n, line, sizeof(line) - 1);
        n += sizeof(line) - 1;
        if (store_write_file(path, nt, n, 0600) < 0 ||
            (cx->st->as_root && chown(path, cx->st->uid, cx->st->gid) < 0))
            backup_child_fail(cx, "could not update %s: %s", path, strerror(errno));
        free(nt);
        char port[16];
        snprintf(port, sizeof(port), "%d", cx->port);
        const char *const keys[] = {"host", "port", "user", "dbname", NULL};
        const char *const vals[] = {cx->host, port, "postgres", "postgres", NULL};
        PGconn *conn = PQconnectdbParams(keys, vals, 0);
        PGresult *r = PQexec(conn, "SELECT pg_reload_conf()");
        PQclear(r);
        PQfinish(conn);
        usleep(300 * 1000); /* the postmaster rereads pg_hba.conf on SIGHUP, asynchronously */
    }
    free(text);
}

/* Start/end LSN and timeline from the backup_manifest's WAL-Ranges. */
static void backup_parse_pg_manifest(struct backup_child_ctx *cx, const char *data)
{
    char path[4400], *text = NULL;
    snprintf(path, sizeof(path), "%s/backup_manifest", data);
    if (store_read_file(path, &text, NULL) < 0)
        backup_child_fail(cx, "no backup_manifest in %s", data);
    const char *s = strstr(text, "\"Start-LSN\": \""), *e = strstr(text, "\"End-LSN\": \"");
    const char *t = strstr(text, "\"Timeline\": ");
    if (s == NULL || e == NULL || t == NULL)
        backup_child_fail(cx, "backup_manifest has no WAL-Ranges");
    sscanf(s + 14, "%23[0-9A-F/]", cx->info.lsn_start);
    sscanf(e + 12, "%23[0-9A-F/]", cx->info.lsn_end);
    cx->info.timeline = (uint32_t) strtoul(t + 12, NULL, 10);
    free(text);
}

static void backup_child_hot(struct backup_child_ctx *cx)
{
    char data[4200], prog[4200], verify[4200], port[16], label[64];
    snprintf(data, sizeof(data), "%s/data", cx->dir);
    snprintf(prog, sizeof(prog), "%s/pg_basebackup", cx->bindir);
    snprintf(verify, sizeof(verify), "%s/pg_verifybackup", cx->bindir);
    snprintf(port, sizeof(port), "%d", cx->port);
    snprintf(label, sizeof(label), "pgtide %s", cx->id);
    backup_ensure_replication_hba(cx);
    char *const argv[] = {prog,
                          "-D",
                          data,
                          "-h",
                          (char *) cx->host,
                          "-p",
                          port,
                          "-U",
                          "postgres",
                          "-w",
                          "-X",
                          "stream",
                          "-c",
                          "fast",
                          "-l",
                          label,
                          "--manifest-checksums=SHA256",
                          NULL};
    int status = backup_run_as_owner(cx->st, argv, cx->logfd);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        backup_child_fail(cx, "pg_basebackup failed (see %s/log)", cx->dir);
    char *const vargv[] = {verify, "-q", data, NULL};
    status = backup_run_as_owner(cx->st, vargv, cx->logfd);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        backup_child_fail(cx, "pg_verifybackup failed (see %s/log)", cx->dir);
    backup_parse_pg_manifest(cx, data);
    backup_child_finish(cx, data);
}

static void backup_child_main(struct backup_child_ctx *cx)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(1);
    char logpath[4200];
    snprintf(logpath, sizeof(logpath), "%s/log", cx->dir);
    cx->logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (cx->logfd < 0)
        _exit(2);
    if (cx->info.method == BACKUP_COLD)
        backup_child_cold(cx);
    else
        backup_child_hot(cx);
    _exit(1);
}

/* ---- the parent side ------------------------------------------------------------------------ */

/* A fresh id from the wall clock, unique under DATA/backups; creates the directory. */
static int backup_make_dir(struct backup_job *j, char *err, size_t errlen)
{
    time_t now = (time_t) (j->start_ms / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    char base[24];
    strftime(base, sizeof(base), "%Y%m%dT%H%M%SZ", &tm);
    for (int n = 1; n < 100; n++) {
        if (n == 1)
            snprintf(j->id, sizeof(j->id), "%s", base);
        else
            snprintf(j->id, sizeof(j->id), "%s-%d", base, n);
        free(j->dir);
        j->dir = NULL;
        if (asprintf(&j->dir, "%s/backups/%s", j->st->dir, j->id) < 0) {
            j->dir = NULL;
            break;
        }
        if (mkdir(j->dir, 0700) == 0) {
            if (j->st->as_root && chown(j->dir, j->st->uid, j->st->gid) < 0)
                log_warn("could not chown %s: %s", j->dir, strerror(errno));
            return 0;
        }
        if (errno != EEXIST) {
            backup_errf(err, errlen, "could not create %s: %s", j->dir, strerror(errno));
            return -1;
        }
    }
    backup_errf(err, errlen, "could not find a free backup id");
    return -1;
}

static void backup_job_free(struct backup_job *j)
{
    if (j->method == BACKUP_BASEBACKUP)
        backup_hot_running--;
    ev_child_stop(j->loop, &j->child);
    free(j->dir);
    free(j);
}

/* The reason a child gave: the last "pgtide-error:" line of its log. */
static void backup_child_error(const struct backup_job *j, int status, char *err, size_t errlen)
{
    char path[4200], *text = NULL;
    snprintf(path, sizeof(path), "%s/log", j->dir);
    if (WIFSIGNALED(status))
        backup_errf(err, errlen, "backup process killed by signal %d", WTERMSIG(status));
    else
        backup_errf(err, errlen, "backup process failed with exit code %d", WEXITSTATUS(status));
    if (store_read_file(path, &text, NULL) == 0) {
        const char *m = NULL;
        for (const char *p = strstr(text, "pgtide-error: "); p; p = strstr(p + 1, "pgtide-error: "))
            m = p + 14;
        if (m != NULL)
            backup_errf(err, errlen, "%.*s", (int) strcspn(m, "\n"), m);
        free(text);
    }
}

static void backup_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    struct backup_job *j = w->data;
    int status = w->rstatus;
    ev_child_stop(loop, w);
    struct backup_info info;
    char err[1024] = "", path[4200], *text = NULL;
    bool ok = false;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        snprintf(path, sizeof(path), "%s/result", j->dir);
        if (store_read_file(path, &text, NULL) == 0 && backup_parse_meta(text, &info) == 0)
            ok = true;
        else
            backup_errf(err, sizeof(err), "the backup process left no readable result");
        free(text);
    } else {
        backup_child_error(j, status, err, sizeof(err));
    }
    if (!ok) {
        log_error("backup %s (%s) failed: %s", j->id, backup_method_name(j->method), err);
        backup_rmtree(j->dir);
        backup_note_failure(err);
    }
    backup_done_fn done = j->done;
    void *arg = j->arg;
    backup_job_free(j);
    done(arg, ok, ok ? &info : NULL, ok ? NULL : err);
}

struct backup_job *backup_start(struct ev_loop *loop, struct store *st, const char *bindir,
                                enum backup_method method, const char *host, int port,
                                backup_done_fn done, void *arg, char *err, size_t errlen)
{
    struct backup_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        backup_errf(err, errlen, "out of memory");
        return NULL;
    }
    j->loop = loop;
    j->st = st;
    j->method = method;
    j->done = done;
    j->arg = arg;
    j->start_ms = backup_now_ms();
    if (backup_make_dir(j, err, errlen) < 0) {
        free(j->dir);
        free(j);
        return NULL;
    }
    struct backup_child_ctx cx = {.st = st,
                                  .bindir = bindir,
                                  .host = host,
                                  .port = port,
                                  .dir = j->dir,
                                  .id = j->id,
                                  .logfd = -1};
    snprintf(cx.info.id, sizeof(cx.info.id), "%s", j->id);
    cx.info.method = method;
    cx.info.start_ms = j->start_ms;
    pid_t pid = fork();
    if (pid < 0) {
        backup_errf(err, errlen, "fork: %s", strerror(errno));
        backup_rmtree(j->dir);
        free(j->dir);
        free(j);
        return NULL;
    }
    if (pid == 0)
        backup_child_main(&cx);
    j->pid = pid;
    if (method == BACKUP_BASEBACKUP)
        backup_hot_running++;
    ev_child_init(&j->child, backup_child_cb, pid, 0);
    j->child.data = j;
    ev_child_start(loop, &j->child);
    log_info("backup %s (%s) started, process %d", j->id, backup_method_name(method), (int) pid);
    return j;
}

void backup_abort(struct backup_job *j)
{
    if (j == NULL)
        return;
    kill(j->pid, SIGKILL); /* its own children die with it (PR_SET_PDEATHSIG) */
    int status;
    while (waitpid(j->pid, &status, 0) < 0 && errno == EINTR)
        ;
    backup_rmtree(j->dir);
    log_info("backup %s (%s) abandoned", j->id, backup_method_name(j->method));
    backup_job_free(j);
}

const char *backup_job_id(const struct backup_job *j)
{
    return j->id;
}

enum backup_method backup_job_method(const struct backup_job *j)
{
    return j->method;
}

int64_t backup_job_started_ms(const struct backup_job *j)
{
    return j->start_ms;
}

int backup_commit(struct store *st, const struct backup_info *info)
{
    char text[1024], path[4200];
    backup_format_meta(info, text, sizeof(text));
    snprintf(path, sizeof(path), "%s/backups/%s/meta", st->dir, info->id);
    if (store_write_file(path, text, strlen(text), 0600) < 0) {
        char err[256];
        backup_errf(err, sizeof(err), "could not write %s: %s", path, strerror(errno));
        log_error("%s", err);
        backup_note_failure(err);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/backups/%s/result", st->dir, info->id);
    unlink(path);
    backup_stat.last_success_ms = info->end_ms;
    backup_stat.last_duration_ms = info->end_ms - info->start_ms;
    backup_stat.last_size = info->size;
    backup_stat.successes++;
    log_info("backup %s complete: %s, %" PRId64 " bytes in %" PRId64 " ms, LSN %s..%s", info->id,
             backup_method_name(info->method), info->size, info->end_ms - info->start_ms,
             info->lsn_start, info->lsn_end);
    return 0;
}

void backup_discard(struct store *st, const char *id)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/backups/%s", st->dir, id);
    backup_rmtree(path);
}

void backup_note_failure(const char *err)
{
    backup_stat.failures++;
    backup_stat.last_failure_ms = backup_now_ms();
    snprintf(backup_stat.last_error, sizeof(backup_stat.last_error), "%s", err ? err : "");
}

/* ---- listing and retention ------------------------------------------------------------------ */

int backup_parse_meta(const char *text, struct backup_info *b)
{
    memset(b, 0, sizeof(*b));
    int seen = 0;
    const char *p = text;
    while (*p != '\0') {
        size_t n = strcspn(p, "\n");
        char line[256];
        snprintf(line, sizeof(line), "%.*s", (int) (n < 255 ? n : 255), p);
        p += n + (p[n] == '\n');
        char *eq = strchr(line, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        const char *k = line, *v = eq + 1;
        if (strcmp(k, "id") == 0 && strlen(v) < sizeof(b->id))
            seen |= 1, snprintf(b->id, sizeof(b->id), "%s", v);
        else if (strcmp(k, "method") == 0)
            seen |= 2, b->method = strcmp(v, "cold") == 0 ? BACKUP_COLD : BACKUP_BASEBACKUP;
        else if (strcmp(k, "start_ms") == 0)
            seen |= 4, b->start_ms = strtoll(v, NULL, 10);
        else if (strcmp(k, "end_ms") == 0)
            seen |= 8, b->end_ms = strtoll(v, NULL, 10);
        else if (strcmp(k, "consistent_ms") == 0)
            b->consistent_ms = strtoll(v, NULL, 10);
        else if (strcmp(k, "lsn_start") == 0)
            seen |= 16, snprintf(b->lsn_start, sizeof(b->lsn_start), "%s", v);
        else if (strcmp(k, "lsn_end") == 0)
            seen |= 32, snprintf(b->lsn_end, sizeof(b->lsn_end), "%s", v);
        else if (strcmp(k, "timeline") == 0)
            b->timeline = (uint32_t) strtoul(v, NULL, 10);
        else if (strcmp(k, "wal_segment_size") == 0)
            b->wal_segment_size = strtoull(v, NULL, 10);
        else if (strcmp(k, "size") == 0)
            b->size = strtoll(v, NULL, 10);
        else if (strcmp(k, "verified") == 0)
            b->verified = strcmp(v, "1") == 0;
    }
    if (b->consistent_ms == 0)
        b->consistent_ms = b->end_ms;
    return seen == 63 ? 0 : -1;
}

static int backup_cmp(const void *a, const void *b)
{
    const struct backup_info *x = a, *y = b;
    if (x->start_ms != y->start_ms)
        return x->start_ms < y->start_ms ? -1 : 1;
    return strcmp(x->id, y->id);
}

int backup_list(const char *data_dir, struct backup_info **out)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/backups", data_dir);
    *out = NULL;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    size_t n = 0, cap = 0;
    struct backup_info *arr = NULL;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[4500], *text = NULL;
        snprintf(path, sizeof(path), "%s/%s/meta", dir, de->d_name);
        if (store_read_file(path, &text, NULL) < 0)
            continue;
        struct backup_info b;
        int rc = backup_parse_meta(text, &b);
        free(text);
        if (rc < 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            struct backup_info *na = realloc(arr, cap * sizeof(*arr));
            if (na == NULL)
                break;
            arr = na;
        }
        arr[n++] = b;
    }
    closedir(d);
    if (n > 0)
        qsort(arr, n, sizeof(*arr), backup_cmp);
    *out = arr;
    return (int) n;
}

int backup_cleanup_partial(const char *data_dir)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/backups", data_dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char path[4500], meta[4600];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        snprintf(meta, sizeof(meta), "%s/meta", path);
        struct stat sb;
        if (lstat(path, &sb) < 0 || !S_ISDIR(sb.st_mode) || access(meta, F_OK) == 0)
            continue;
        log_warn("removing the partial backup %s (no meta: it never completed)", path);
        backup_rmtree(path);
        removed++;
    }
    closedir(d);
    return removed;
}

size_t backup_retention_choose(const struct backup_info *b, size_t n, int keep, int64_t max_age_ms,
                               int64_t now_ms, bool *del)
{
    size_t marked = 0;
    for (size_t i = 0; i < n; i++) {
        size_t newer = n - 1 - i; /* backups newer than b[i] */
        bool too_many = keep > 0 && newer >= (size_t) keep;
        bool too_old = max_age_ms > 0 && now_ms - b[i].end_ms > max_age_ms;
        del[i] = i + 1 < n && (too_many || too_old);
        marked += del[i];
    }
    return marked;
}

int backup_apply_retention(const char *data_dir, int keep, int64_t max_age_ms, int64_t now_ms)
{
    struct backup_info *b = NULL;
    int n = backup_list(data_dir, &b);
    if (n <= 0) {
        free(b);
        return n;
    }
    bool *del = calloc((size_t) n, sizeof(bool));
    if (del == NULL) {
        free(b);
        return -1;
    }
    backup_retention_choose(b, (size_t) n, keep, max_age_ms, now_ms, del);
    int removed = 0, oldest = -1;
    for (int i = 0; i < n; i++) {
        char path[4200], meta[4300];
        if (!del[i]) {
            if (oldest < 0)
                oldest = i;
            continue;
        }
        snprintf(path, sizeof(path), "%s/backups/%s", data_dir, b[i].id);
        snprintf(meta, sizeof(meta), "%s/meta", path);
        if (unlink(meta) < 0) {
            log_warn("retention: could not remove %s: %s", meta, strerror(errno));
            continue;
        }
        backup_fsync_path(path);
        backup_rmtree(path);
        log_info("retention: removed backup %s", b[i].id);
        removed++;
    }
    uint64_t lsn;
    if (oldest >= 0 && wal_parse_lsn(b[oldest].lsn_start, &lsn) == 0 &&
        b[oldest].wal_segment_size > 0) {
        char wal[4200];
        snprintf(wal, sizeof(wal), "%s/wal", data_dir);
        int w = wal_remove_before(wal, lsn, b[oldest].wal_segment_size);
        if (w > 0) {
            backup_fsync_path(wal);
            log_info("retention: removed %d archived WAL files older than backup %s", w,
                     b[oldest].id);
        }
    }
    free(del);
    free(b);
    return removed;
}
