/*
 * store: the data directory layout (DESIGN.md §2). store_open creates or checks DATA and its
 * subdirectories with the owners and modes the computes need, and holds an fcntl lock on
 * DATA/pgtide.lock so that only one pgtide uses a DATA at a time. store_init_cluster runs initdb
 * as the compute owner and writes the first superuser's password. Every durable write in pgtide
 * goes through store_write_file (temp file, fsync, rename, fsync of the directory).
 */
#define _GNU_SOURCE
#include "pgtide/store.h"
#include "pgtide/log.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <locale.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#define STORE_PASSWORD_LEN 24
#define STORE_TAIL_BYTES   600
/* A write's temporary file is written, fsynced and renamed within seconds; one untouched for an
   hour was left by a writer that died (a crash mid-write). */
#define STORE_ORPHAN_AGE_S 3600

/* What a subdirectory of DATA must look like. */
struct store_subdir {
    const char *name;
    mode_t mode;
    bool compute_owned;
};

static const struct store_subdir store_subdirs[] = {
    {"primary", 0700, true}, {"wal", 0700, true}, {"backups", 0700, true}, {"replicas", 0700, true},
    {"state", 0700, false},  {"run", 0700, true}, {"log", 0750, true},
};

static void store_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void store_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

char *store_path(const struct store *st, const char *rel)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", st->dir, rel) < 0)
        return NULL;
    return p;
}

/* Makes path a directory with exactly the given owner and mode: creates it, or checks an
   existing one and fixes it when allowed. 0 / -1 + err. */
static int store_ensure_dir(const char *path, mode_t mode, uid_t uid, gid_t gid, bool as_root,
                            char *err, size_t errlen)
{
    struct stat sb;
    if (mkdir(path, mode) == 0) {
        if (chmod(path, mode) < 0 || (as_root && chown(path, uid, gid) < 0)) {
            store_errf(err, errlen, "could not set up directory %s: %s", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    if (errno != EEXIST) {
        store_errf(err, errlen, "could not create directory %s: %s", path, strerror(errno));
        return -1;
    }
    if (stat(path, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
        store_errf(err, errlen, "%s exists and is not a directory", path);
        return -1;
    }
    if (sb.st_uid != uid) {
        if (!as_root || chown(path, uid, gid) < 0) {
            store_errf(err, errlen, "directory %s is owned by uid %u, expected uid %u", path,
                       (unsigned) sb.st_uid, (unsigned) uid);
            return -1;
        }
    }
    if ((sb.st_mode & 07777) != mode && chmod(path, mode) < 0) {
        store_errf(err, errlen,
                   "directory %s has mode %04o, expected %04o, and cannot be fixed: %s", path,
                   (unsigned) (sb.st_mode & 07777), (unsigned) mode, strerror(errno));
        return -1;
    }
    return 0;
}

/* Takes the exclusive lock on DATA/pgtide.lock and writes our pid into it. */
static int store_lock(struct store *st, char *err, size_t errlen)
{
    char *path = store_path(st, "pgtide.lock");
    if (path == NULL) {
        store_errf(err, errlen, "out of memory");
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        store_errf(err, errlen, "could not open %s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    free(path);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_SETLK, &fl) < 0) {
        int e = errno;
        struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        if ((e == EAGAIN || e == EACCES) && fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK)
            store_errf(err, errlen, "data directory %s is in use by pgtide pid %ld", st->dir,
                       (long) who.l_pid);
        else
            store_errf(err, errlen, "could not lock data directory %s: %s", st->dir, strerror(e));
        close(fd);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%ld\n", (long) getpid());
    /* the pid is informational; the lock is what counts */
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t) n, 0) != n)
        log_debug("could not record our pid in the lock file: %s", strerror(errno));
    st->lock_fd = fd;
    return 0;
}

/* Resolves the owner of compute files. */
static int store_resolve_owner(struct store *st, const char *compute_user, char *err, size_t errlen)
{
    st->as_root = geteuid() == 0;
    if (!st->as_root) {
        st->uid = geteuid();
        st->gid = getegid();
        return 0;
    }
    const char *name = (compute_user && compute_user[0]) ? compute_user : "postgres";
    struct passwd *pw = getpwnam(name);
    if (pw == NULL) {
        store_errf(err, errlen,
                   "compute_user \"%s\" does not exist (PostgreSQL cannot run as root)", name);
        return -1;
    }
    if (pw->pw_uid == 0) {
        store_errf(err, errlen, "compute_user \"%s\" is root; PostgreSQL refuses to run as root",
                   name);
        return -1;
    }
    st->uid = pw->pw_uid;
    st->gid = pw->pw_gid;
    return 0;
}

/* True for the names store_write_owned gives its temporary files: ".NAME.XXXXXX.tmp". */
static bool store_is_tmp_name(const char *name)
{
    size_t n = strlen(name);
    /* '.' + at least one character of NAME + ".XXXXXX" + ".tmp" */
    return n >= 1 + 1 + 7 + 4 && name[0] == '.' && strcmp(name + n - 4, ".tmp") == 0 &&
           name[n - 11] == '.';
}

/* Removes the orphaned temporary files directly in dir; counts them into *swept. */
static void store_sweep_dir(const char *dir, time_t cutoff, unsigned *swept)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat sb;
        if (!store_is_tmp_name(de->d_name) ||
            fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode) ||
            sb.st_mtime > cutoff)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            (*swept)++;
        else
            log_warn("could not remove the orphaned temporary file %s/%s: %s", dir, de->d_name,
                     strerror(errno));
    }
    closedir(d);
}

/* Sweeps DATA, its subdirectories and each backup's directory: the places durable writes go. */
static void store_sweep(struct store *st)
{
    time_t cutoff = time(NULL) - STORE_ORPHAN_AGE_S;
    store_sweep_dir(st->dir, cutoff, &st->swept);
    for (size_t i = 0; i < sizeof(store_subdirs) / sizeof(store_subdirs[0]); i++) {
        char *p = store_path(st, store_subdirs[i].name);
        if (p != NULL)
            store_sweep_dir(p, cutoff, &st->swept);
        free(p);
    }
    char *backups = store_path(st, "backups");
    DIR *d = backups != NULL ? opendir(backups) : NULL;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        char sub[4200];
        struct stat sb;
        if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISDIR(sb.st_mode))
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", backups, de->d_name);
        store_sweep_dir(sub, cutoff, &st->swept);
    }
    if (d != NULL)
        closedir(d);
    free(backups);
}

int store_open(struct store *st, const char *dir, const char *compute_user, char *err,
               size_t errlen)
{
    memset(st, 0, sizeof(*st));
    st->lock_fd = -1;
    if (dir == NULL || dir[0] == '\0') {
        store_errf(err, errlen, "no data directory given");
        return -1;
    }
    if (store_resolve_owner(st, compute_user, err, errlen) < 0)
        return -1;
    st->dir = strdup(dir);
    if (st->dir == NULL) {
        store_errf(err, errlen, "out of memory");
        return -1;
    }
    /* DATA itself belongs to pgtide; 0755 so the compute owner can reach its subdirectories. */
    if (store_ensure_dir(dir, 0755, geteuid(), getegid(), st->as_root, err, errlen) < 0 ||
        store_lock(st, err, errlen) < 0)
        goto fail;
    for (size_t i = 0; i < sizeof(store_subdirs) / sizeof(store_subdirs[0]); i++) {
        const struct store_subdir *sd = &store_subdirs[i];
        char *p = store_path(st, sd->name);
        if (p == NULL) {
            store_errf(err, errlen, "out of memory");
            goto fail;
        }
        uid_t uid = sd->compute_owned ? st->uid : geteuid();
        gid_t gid = sd->compute_owned ? st->gid : getegid();
        int rc = store_ensure_dir(p, sd->mode, uid, gid, st->as_root, err, errlen);
        free(p);
        if (rc < 0)
            goto fail;
    }
    store_sweep(st); /* under the lock: no other pgtide writes here */
    return 0;
fail:
    store_close(st);
    return -1;
}

void store_close(struct store *st)
{
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    st->lock_fd = -1;
    free(st->dir);
    st->dir = NULL;
}

bool store_has_cluster(const struct store *st)
{
    char *p = store_path(st, "primary/PG_VERSION");
    if (p == NULL)
        return false;
    struct stat sb;
    bool ok = stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
    free(p);
    return ok;
}

static int store_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

static int store_fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return -1;
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash == copy)
        dir = "/";
    else if (slash != NULL) {
        *slash = '\0';
        dir = copy;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = -1;
    if (fd >= 0) {
        rc = fsync(fd);
        int e = errno;
        close(fd);
        errno = e;
    }
    int e = errno;
    free(copy);
    errno = e;
    return rc;
}

/* Durable write with an optional owner (uid (uid_t)-1 = keep ours). */
static int store_write_owned(const char *path, const void *data, size_t len, mode_t mode, uid_t uid,
                             gid_t gid)
{
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int) (slash - path + 1) : 0;
    char *tmp = NULL;
    /* a name of its own per write (.NAME.XXXXXX.tmp): two writers of one file, in threads or
       processes, each rename a whole file of their own and the last rename wins */
    if (asprintf(&tmp, "%.*s.%s.XXXXXX.tmp", dirlen, path, slash ? slash + 1 : path) < 0) {
        errno = ENOMEM;
        return -1;
    }
    int fd = mkostemps(tmp, 4, O_CLOEXEC);
    if (fd < 0)
        goto fail_nofd;
    if (fchmod(fd, mode) < 0 || (uid != (uid_t) -1 && fchown(fd, uid, gid) < 0) ||
        store_write_all(fd, data, len) < 0 || fsync(fd) < 0)
        goto fail;
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0 || store_fsync_dir_of(path) < 0)
        goto fail;
    free(tmp);
    return 0;
fail:;
    int e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    errno = e;
fail_nofd:
    e = errno;
    free(tmp);
    errno = e;
    return -1;
}

int store_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    return store_write_owned(path, data, len, mode, (uid_t) -1, (gid_t) -1);
}

int store_read_file(const char *path, char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t cap = 4096, used = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (cap - used < 2) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + used, cap - used - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0) {
            close(fd);
            buf[used] = '\0';
            *data = buf;
            if (len)
                *len = used;
            return 0;
        }
        used += (size_t) n;
    }
    free(buf);
    close(fd);
    errno = ENOMEM;
    return -1;
}

static bool store_has_postgres(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/postgres", dir);
    return access(p, X_OK) == 0;
}

char *store_find_bindir(const char *configured, char *err, size_t errlen)
{
    if (configured != NULL && configured[0] != '\0') {
        if (!store_has_postgres(configured)) {
            store_errf(err, errlen, "pg_bindir %s holds no executable \"postgres\"", configured);
            return NULL;
        }
        return strdup(configured);
    }
    FILE *f = popen("pg_config --bindir 2>/dev/null", "r");
    if (f != NULL) {
        char line[4096] = "";
        bool got = fgets(line, sizeof(line), f) != NULL;
        pclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        if (got && line[0] != '\0' && store_has_postgres(line))
            return strdup(line);
    }
    const char *fallback = "/usr/lib/postgresql/15/bin";
    if (store_has_postgres(fallback))
        return strdup(fallback);
    store_errf(err, errlen,
               "PostgreSQL binaries not found (set pg_bindir; pg_config --bindir and %s have no "
               "postgres)",
               fallback);
    return NULL;
}

/* 24 random characters from the url-safe base64 alphabet (OpenSSL's CSPRNG). */
static int store_gen_password(char out[STORE_PASSWORD_LEN + 1])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[STORE_PASSWORD_LEN];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    for (int i = 0; i < STORE_PASSWORD_LEN; i++)
        out[i] = alphabet[raw[i] & 63]; /* 256 is a multiple of 64: uniform */
    out[STORE_PASSWORD_LEN] = '\0';
    return 0;
}

static int store_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (ftw->level == 0)
        return 0; /* keep DATA/primary itself */
    if (flag == FTW_DP || flag == FTW_D)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

/* Empties a directory tree but keeps the directory. */
static void store_empty_dir(const char *dir)
{
    if (nftw(dir, store_rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
        log_warn("could not empty %s: %s", dir, strerror(errno));
}

/* Keeps the last STORE_TAIL_BYTES of out, starting at a line boundary, newlines as " | ". */
static void store_tail(const char *out, size_t len, char *dst, size_t dstlen)
{
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' '))
        len--;
    size_t start = len > STORE_TAIL_BYTES ? len - STORE_TAIL_BYTES : 0;
    if (start > 0) {
        const char *nl = memchr(out + start, '\n', len - start);
        if (nl != NULL)
            start = (size_t) (nl - out) + 1;
    }
    size_t j = 0;
    for (size_t i = start; i < len && j + 4 < dstlen; i++) {
        if (out[i] == '\n') {
            memcpy(dst + j, " | ", 3);
            j += 3;
        } else
            dst[j++] = out[i];
    }
    if (dstlen > 0)
        dst[j < dstlen ? j : dstlen - 1] = '\0';
}

/* Child side of initdb: drop to the compute owner, output to the pipe, exec. Never returns. */
static void store_initdb_child(const struct store *st, int outfd, char *const argv[])
{
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
    dup2(outfd, STDOUT_FILENO);
    dup2(outfd, STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (st->as_root && (setgroups(0, NULL) < 0 || setgid(st->gid) < 0 || setuid(st->uid) < 0)) {
        dprintf(STDERR_FILENO, "could not switch to uid %u: %s\n", (unsigned) st->uid,
                strerror(errno));
        _exit(126);
    }
    if (chdir(st->dir) < 0)
        _exit(126);
    execv(argv[0], argv);
    dprintf(STDERR_FILENO, "could not run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Runs argv as the compute owner, collecting stdout+stderr into *out. Returns the wait status
   or -1 (errno). */
static int store_run_as_owner(const struct store *st, char *const argv[], char **out,
                              size_t *outlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0)
        store_initdb_child(st, pfd[1], argv);
    close(pfd[1]);
    size_t cap = 8192, used = 0;
    char *buf = malloc(cap);
    char chunk[4096];
    for (;;) {
        ssize_t n = read(pfd[0], chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (buf != NULL && used + (size_t) n + 1 > cap) {
            char *nb = realloc(buf, cap * 2 + (size_t) n);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
            } else {
                buf = nb;
                cap = cap * 2 + (size_t) n;
            }
        }
        if (buf != NULL) {
            memcpy(buf + used, chunk, (size_t) n);
            used += (size_t) n;
        }
    }
    close(pfd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            status = -1;
            break;
        }
    }
    if (buf != NULL)
        buf[used] = '\0';
    *out = buf;
    *outlen = buf ? used : 0;
    return status;
}

static const char *store_pick_locale(void)
{
    locale_t l = newlocale(LC_ALL_MASK, "C.UTF-8", (locale_t) 0);
    if (l == (locale_t) 0)
        return "C";
    freelocale(l);
    return "C.UTF-8";
}

/* Writes the password file initdb reads (owned by the compute user, 0600) into DATA/run. */
static char *store_write_pwfile(const struct store *st, const char *password)
{
    char *path = store_path(st, "run/.initdb-pwfile");
    if (path == NULL)
        return NULL;
    char line[STORE_PASSWORD_LEN + 2];
    snprintf(line, sizeof(line), "%s\n", password);
    uid_t uid = st->as_root ? st->uid : (uid_t) -1;
    if (store_write_owned(path, line, strlen(line), 0600, uid, st->gid) < 0) {
        free(path);
        return NULL;
    }
    return path;
}

/* After a successful initdb: the private-socket-only pg_hba.conf and DATA/initial-password. */
static int store_finish_cluster(struct store *st, const char *password, char *err, size_t errlen)
{
    static const char hba[] = "# pgtide: only pgtide reaches the compute, over DATA/run.\n"
                              "local all all trust\n"
                              "local replication all trust\n"; /* pg_basebackup (issue 7) */
    char *hba_path = store_path(st, "primary/pg_hba.conf");
    char *pw_path = store_path(st, "initial-password");
    uid_t uid = st->as_root ? st->uid : (uid_t) -1;
    char line[STORE_PASSWORD_LEN + 2];
    snprintf(line, sizeof(line), "%s\n", password);
    int rc = -1;
    if (hba_path == NULL || pw_path == NULL)
        store_errf(err, errlen, "out of memory");
    else if (store_write_owned(hba_path, hba, sizeof(hba) - 1, 0600, uid, st->gid) < 0)
        store_errf(err, errlen, "could not write %s: %s", hba_path, strerror(errno));
    else if (store_write_file(pw_path, line, strlen(line), 0600) < 0)
        store_errf(err, errlen, "could not write %s: %s", pw_path, strerror(errno));
    else
        rc = 0;
    free(hba_path);
    free(pw_path);
    return rc;
}

int store_init_cluster(struct store *st, const char *bindir, char *err, size_t errlen)
{
    char password[STORE_PASSWORD_LEN + 1];
    if (store_gen_password(password) < 0) {
        store_errf(err, errlen, "could not generate a random password");
        return -1;
    }
    char *pwfile = store_write_pwfile(st, password);
    char *primary = store_path(st, "primary");
    char *initdb = NULL, *pwarg = NULL, *locarg = NULL;
    int rc = -1;
    if (pwfile == NULL || primary == NULL || asprintf(&initdb, "%s/initdb", bindir) < 0 ||
        asprintf(&pwarg, "--pwfile=%s", pwfile) < 0 ||
        asprintf(&locarg, "--locale=%s", store_pick_locale()) < 0) {
        store_errf(err, errlen, "could not prepare initdb: %s", strerror(errno));
        goto out;
    }
    char *const argv[] = {initdb,
                          "-D",
                          primary,
                          "-U",
                          "postgres",
                          "--auth-local=trust",
                          "--auth-host=reject",
                          "--data-checksums",
                          "-E",
                          "UTF8",
                          locarg,
                          pwarg,
                          NULL};
    char *output = NULL;
    size_t outlen = 0;
    int status = store_run_as_owner(st, argv, &output, &outlen);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char tail[STORE_TAIL_BYTES + 64];
        store_tail(output ? output : "", outlen, tail, sizeof(tail));
        if (status < 0)
            store_errf(err, errlen, "could not run initdb: %s", strerror(errno));
        else
            store_errf(err, errlen, "initdb failed (%s %d): %s",
                       WIFEXITED(status) ? "exit code" : "signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), tail);
        store_empty_dir(primary);
    } else if (store_finish_cluster(st, password, err, errlen) == 0) {
        rc = 0;
    } else {
        store_empty_dir(primary);
    }
    free(output);
out:
    if (pwfile != NULL)
        unlink(pwfile);
    OPENSSL_cleanse(password, sizeof(password));
    free(pwfile);
    free(primary);
    free(initdb);
    free(pwarg);
    free(locarg);
    return rc;
}
