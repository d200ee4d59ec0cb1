/*
 * test_store: the data directory layout in a temporary directory (subdirectories, owners, modes,
 * repairs and refusals), the exclusive lock seen from a second process, durable write and read,
 * two processes writing one file at once (each write whole, no temporary file left),
 * store_path, store_has_cluster, bindir detection, the cleanup of a failed initdb, and the sweep
 * of temporary files that crashed writers left behind.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pgtide/store.h"
#include "unit.h"

static char tmpdir[256];
static char data[300];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pgtide-store-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    chmod(tmpdir, 0755);
    snprintf(data, sizeof(data), "%s/data", tmpdir);
}

static void teardown(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static void check_dir(const char *rel, mode_t mode, uid_t uid)
{
    char p[512];
    struct stat sb;
    snprintf(p, sizeof(p), "%s/%s", data, rel);
    ck_assert_msg(stat(p, &sb) == 0, "%s missing", p);
    ck_assert_msg(S_ISDIR(sb.st_mode), "%s not a dir", p);
    ck_assert_msg((sb.st_mode & 07777) == mode, "%s mode %o want %o", p, sb.st_mode & 07777, mode);
    ck_assert_msg(sb.st_uid == uid, "%s uid %u want %u", p, sb.st_uid, uid);
}

static uid_t compute_uid(void)
{
    if (geteuid() != 0)
        return geteuid();
    struct passwd *pw = getpwnam("postgres");
    ck_assert_ptr_nonnull(pw);
    return pw->pw_uid;
}

START_TEST(test_layout)
{
    struct store st;
    char err[256] = "";
    ck_assert_msg(store_open(&st, data, "postgres", err, sizeof(err)) == 0, "%s", err);
    uid_t cu = compute_uid();
    check_dir("", 0755, geteuid());
    check_dir("primary", 0700, cu);
    check_dir("wal", 0700, cu);
    check_dir("backups", 0700, cu);
    check_dir("replicas", 0700, cu);
    check_dir("run", 0700, cu);
    check_dir("log", 0750, cu);
    check_dir("state", 0700, geteuid());
    ck_assert_int_eq(st.uid, cu);
    ck_assert(st.as_root == (geteuid() == 0));
    ck_assert_int_ge(st.lock_fd, 0);
    char *lock = NULL;
    char lockpath[512];
    snprintf(lockpath, sizeof(lockpath), "%s/pgtide.lock", data);
    ck_assert_int_eq(store_read_file(lockpath, &lock, NULL), 0);
    ck_assert_int_eq(atoi(lock), getpid());
    free(lock);
    ck_assert(!store_has_cluster(&st));
    store_close(&st);
    ck_assert_int_eq(st.lock_fd, -1);
    store_close(&st); /* harmless twice */
}
END_TEST

START_TEST(test_repairs_modes_and_refuses_files)
{
    char p[512];
    ck_assert_int_eq(mkdir(data, 0777), 0);
    chmod(data, 0777);
    snprintf(p, sizeof(p), "%s/run", data);
    ck_assert_int_eq(mkdir(p, 0777), 0);
    chmod(p, 0777);
    struct store st;
    char err[256] = "";
    ck_assert_msg(store_open(&st, data, "postgres", err, sizeof(err)) == 0, "%s", err);
    check_dir("", 0755, geteuid());
    check_dir("run", 0700, compute_uid());
    store_close(&st);

    snprintf(p, sizeof(p), "%s/log", data);
    ck_assert_int_eq(rmdir(p), 0);
    int fd = open(p, O_CREAT | O_WRONLY, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(store_open(&st, data, "postgres", err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "not a directory") != NULL, "%s", err);
    ck_assert_ptr_null(st.dir);
}
END_TEST

START_TEST(test_unknown_compute_user)
{
    if (geteuid() != 0)
        return; /* only looked up as root */
    struct store st;
    char err[256] = "";
    ck_assert_int_eq(store_open(&st, data, "no-such-user-pgtide", err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "no-such-user-pgtide") != NULL, "%s", err);
}
END_TEST

/* Child: try to open the same DATA; exit 0 when refused with the expected message, 1 when
   opened, 2 when refused with another message. */
static int try_open_in_child(pid_t holder)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store st;
        char err[256] = "", want[400];
        if (store_open(&st, data, "postgres", err, sizeof(err)) == 0)
            _exit(1);
        snprintf(want, sizeof(want), "data directory %s is in use by pgtide pid %d", data,
                 (int) holder);
        _exit(strcmp(err, want) == 0 ? 0 : 2);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

START_TEST(test_lock)
{
    struct store st;
    char err[256] = "";
    ck_assert_msg(store_open(&st, data, "postgres", err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(try_open_in_child(getpid()), 0);
    ck_assert_int_eq(try_open_in_child(getpid()), 0); /* still refused the second time */
    store_close(&st);
    ck_assert_int_eq(try_open_in_child(getpid()), 1); /* free again once closed */
}
END_TEST

/* Entries of dir other than . and .. */
static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* True when buf holds len bytes of c and nothing else */
static bool all_of(const char *buf, size_t len, char c)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != c)
            return false;
    return true;
}

START_TEST(test_durable_write_read)
{
    char p[512];
    ck_assert_int_eq(mkdir(data, 0755), 0);
    snprintf(p, sizeof(p), "%s/file", data);
    const char blob[] = "abc\0def\nghi";
    ck_assert_int_eq(store_write_file(p, blob, sizeof(blob), 0640), 0);
    struct stat sb;
    ck_assert_int_eq(stat(p, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 07777, 0640);
    ck_assert_int_eq(sb.st_size, sizeof(blob));
    ck_assert_int_eq(dir_entries(data), 1); /* the file, no temporary one */
    char *got = NULL;
    size_t len = 0;
    ck_assert_int_eq(store_read_file(p, &got, &len), 0);
    ck_assert_uint_eq(len, sizeof(blob));
    ck_assert_int_eq(memcmp(got, blob, len), 0);
    ck_assert_int_eq(got[len], '\0');
    free(got);

    ck_assert_int_eq(store_write_file(p, "x", 1, 0600), 0); /* replace, shorter, new mode */
    ck_assert_int_eq(store_read_file(p, &got, &len), 0);
    ck_assert_uint_eq(len, 1);
    ck_assert_str_eq(got, "x");
    free(got);
    ck_assert_int_eq(stat(p, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 07777, 0600);

    /* a large file crosses the read buffer's growth */
    size_t big = 100000;
    char *buf = malloc(big);
    for (size_t i = 0; i < big; i++)
        buf[i] = (char) ('a' + i % 26);
    ck_assert_int_eq(store_write_file(p, buf, big, 0600), 0);
    ck_assert_int_eq(store_read_file(p, &got, &len), 0);
    ck_assert_uint_eq(len, big);
    ck_assert_int_eq(memcmp(got, buf, big), 0);
    free(got);
    free(buf);

    got = NULL;
    snprintf(p, sizeof(p), "%s/missing", data);
    errno = 0;
    ck_assert_int_eq(store_read_file(p, &got, &len), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_ptr_null(got);
    snprintf(p, sizeof(p), "%s/nodir/file", data);
    ck_assert_int_eq(store_write_file(p, "x", 1, 0600), -1);
    ck_assert_int_eq(errno, ENOENT);
}
END_TEST

START_TEST(test_concurrent_writers)
{
    /* a child process and this one replace the same file 300 times each, with 64 kB of 'a' and
       of 'b': every write succeeds, every read between them finds one whole version */
    enum { LEN = 65536, ROUNDS = 300 };
    char p[512];
    ck_assert_int_eq(mkdir(data, 0755), 0);
    snprintf(p, sizeof(p), "%s/shared", data);
    char *mine = malloc(LEN), *theirs = malloc(LEN);
    memset(mine, 'a', LEN);
    memset(theirs, 'b', LEN);
    ck_assert_int_eq(store_write_file(p, mine, LEN, 0600), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int failed = 0;
        for (int i = 0; i < ROUNDS; i++)
            failed += store_write_file(p, theirs, LEN, 0600) != 0;
        _exit(failed == 0 ? 0 : 1);
    }
    int failed = 0, torn = 0;
    for (int i = 0; i < ROUNDS; i++) {
        failed += store_write_file(p, mine, LEN, 0600) != 0;
        char *got = NULL;
        size_t len = 0;
        if (store_read_file(p, &got, &len) != 0 || len != LEN ||
            !(all_of(got, len, 'a') || all_of(got, len, 'b')))
            torn++;
        free(got);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's writes failed");
    ck_assert_int_eq(failed, 0);
    ck_assert_int_eq(torn, 0);
    ck_assert_int_eq(dir_entries(data), 1); /* no temporary file left by either */
    free(mine);
    free(theirs);
}
END_TEST

/* Creates DATA/rel with one byte, its mtime age_s seconds ago. */
static void make_aged(const char *rel, int age_s)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", data, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_msg(fd >= 0, "%s: %s", p, strerror(errno));
    ck_assert_int_eq(write(fd, "x", 1), 1);
    close(fd);
    struct timespec ts[2] = {{time(NULL) - age_s, 0}, {time(NULL) - age_s, 0}};
    ck_assert_int_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static bool exists(const char *rel)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", data, rel);
    return access(p, F_OK) == 0;
}

START_TEST(test_sweeps_orphaned_tmp)
{
    struct store st;
    char err[256] = "";
    ck_assert_msg(store_open(&st, data, "postgres", err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(st.swept, 0);
    store_close(&st);
    char p[512];
    snprintf(p, sizeof(p), "%s/backups/20261130T050000", data);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/state/.dir.abcdef.tmp", data);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    utimensat(AT_FDCWD, p, (struct timespec[2]){{1, 0}, {1, 0}}, 0);

    make_aged(".initial-password.Ab12Cd.tmp", 7200);             /* orphans: removed */
    make_aged("state/.usage.x1y2z3.tmp", 7200);                  /* "" */
    make_aged("wal/.000000010000000000000001.QWERTY.tmp", 4000); /* "" */
    make_aged("backups/20261130T050000/.info.zzzzzz.tmp", 7200); /* "" */
    make_aged("state/.usage.a1b2c3.tmp", 60);  /* a writer may still be at it: kept */
    make_aged("state/.keep.tmp", 7200);        /* not our name: kept */
    make_aged("state/usage.abcdef.tmp", 7200); /* "" (no leading dot) */
    make_aged("state/.usage.abcdef.tmpx", 7200);
    make_aged("state/usage", 7200);

    ck_assert_msg(store_open(&st, data, "postgres", err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(st.swept, 4);
    ck_assert(!exists(".initial-password.Ab12Cd.tmp"));
    ck_assert(!exists("state/.usage.x1y2z3.tmp"));
    ck_assert(!exists("wal/.000000010000000000000001.QWERTY.tmp"));
    ck_assert(!exists("backups/20261130T050000/.info.zzzzzz.tmp"));
    ck_assert(exists("state/.usage.a1b2c3.tmp"));
    ck_assert(exists("state/.keep.tmp"));
    ck_assert(exists("state/usage.abcdef.tmp"));
    ck_assert(exists("state/.usage.abcdef.tmpx"));
    ck_assert(exists("state/usage"));
    ck_assert(exists("state/.dir.abcdef.tmp")); /* a directory, whatever its name */
    store_close(&st);
}
END_TEST

START_TEST(test_path_and_cluster)
{
    struct store st;
    char err[256] = "";
    ck_assert_msg(store_open(&st, data, "postgres", err, sizeof(err)) == 0, "%s", err);
    char *p = store_path(&st, "primary/PG_VERSION");
    char want[512];
    snprintf(want, sizeof(want), "%s/primary/PG_VERSION", data);
    ck_assert_str_eq(p, want);
    ck_assert(!store_has_cluster(&st));
    ck_assert_int_eq(store_write_file(p, "15\n", 3, 0600), 0);
    ck_assert(store_has_cluster(&st));
    free(p);
    store_close(&st);
}
END_TEST

START_TEST(test_find_bindir)
{
    char err[256] = "";
    char *b = store_find_bindir("/nonexistent/bin", err, sizeof(err));
    ck_assert_ptr_null(b);
    ck_assert_msg(strstr(err, "/nonexistent/bin") != NULL, "%s", err);
    b = store_find_bindir("/usr/lib/postgresql/15/bin", err, sizeof(err));
    ck_assert_str_eq(b, "/usr/lib/postgresql/15/bin");
    free(b);
    b = store_find_bindir("", err, sizeof(err));
    ck_assert_msg(b != NULL, "%s", err);
    char pg[600];
    snprintf(pg, sizeof(pg), "%s/postgres", b);
    ck_assert_int_eq(access(pg, X_OK), 0);
    free(b);
}
END_TEST

START_TEST(test_init_cluster_failure_cleans_up)
{
    struct store st;
    char err[512] = "";
    ck_assert_msg(store_open(&st, data, "postgres", err, sizeof(err)) == 0, "%s", err);
    char p[512];
    snprintf(p, sizeof(p), "%s/primary/junk", data);
    ck_assert_int_eq(store_write_file(p, "x", 1, 0600), 0);
    ck_assert_int_eq(store_init_cluster(&st, "/nonexistent/bin", err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "initdb failed") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "/nonexistent/bin/initdb") != NULL, "%s", err);
    ck_assert_int_eq(access(p, F_OK), -1); /* half-made contents removed */
    snprintf(p, sizeof(p), "%s/initial-password", data);
    ck_assert_int_eq(access(p, F_OK), -1);
    snprintf(p, sizeof(p), "%s/run/.initdb-pwfile", data);
    ck_assert_int_eq(access(p, F_OK), -1); /* the password file never outlives initdb */
    check_dir("primary", 0700, compute_uid());
    store_close(&st);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_layout);
    tcase_add_test(tc, test_repairs_modes_and_refuses_files);
    tcase_add_test(tc, test_unknown_compute_user);
    tcase_add_test(tc, test_lock);
    tcase_add_test(tc, test_durable_write_read);
    tcase_add_test(tc, test_concurrent_writers);
    tcase_add_test(tc, test_sweeps_orphaned_tmp);
    tcase_add_test(tc, test_path_and_cluster);
    tcase_add_test(tc, test_find_bindir);
    tcase_add_test(tc, test_init_cluster_failure_cleans_up);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(store_suite());
}
