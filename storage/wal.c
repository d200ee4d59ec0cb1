/*
 * wal: the WAL archive. wal-push runs as the compute owner from PostgreSQL's archive_command: it
 * reads the finished segment, optionally compresses it with zstd, and stores it through
 * store_write_file (temp file, fsync, rename, fsync of the directory), then checks the stored
 * size. A name that is already archived is compared byte for byte (after decompression): equal
 * content is success, as PostgreSQL requires after a crash between copy and status update;
 * different content is refused, so a second cluster can never overwrite the history of the
 * first. wal-fetch is the reverse for restore_command. Segment-name arithmetic used by
 * retention and restore lives here too.
 */
#define _GNU_SOURCE
#include "pgtide/wal.h"
#include "pgtide/store.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

static void wal_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void wal_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool wal_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F')))
            return false;
    }
    return true;
}

bool wal_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 16 && wal_hex(name, 8) && strcmp(name + 8, ".history") == 0)
        return true;
    if (len < 24 || !wal_hex(name, 24))
        return false;
    const char *rest = name + 24;
    if (*rest == '\0' || strcmp(rest, ".partial") == 0)
        return true;
    return strlen(rest) == 16 && rest[0] == '.' && wal_hex(rest + 1, 8) &&
           strcmp(rest + 9, ".backup") == 0;
}

int wal_parse_lsn(const char *s, uint64_t *lsn)
{
    unsigned int hi, lo;
    int n = 0;
    if (sscanf(s, "%X/%X%n", &hi, &lo, &n) != 2 || s[n] != '\0')
        return -1;
    *lsn = ((uint64_t) hi << 32) | lo;
    return 0;
}

int wal_name_segno(const char *name, uint64_t seg_size, uint64_t *segno, uint32_t *tli)
{
    if (strlen(name) < 24 || !wal_hex(name, 24) || seg_size == 0)
        return -1;
    char part[9] = {0};
    memcpy(part, name, 8);
    uint32_t t = (uint32_t) strtoul(part, NULL, 16);
    memcpy(part, name + 8, 8);
    uint64_t log = strtoull(part, NULL, 16);
    memcpy(part, name + 16, 8);
    uint64_t seg = strtoull(part, NULL, 16);
    *segno = log * (UINT64_C(0x100000000) / seg_size) + seg;
    if (tli != NULL)
        *tli = t;
    return 0;
}

int wal_remove_before(const char *wal_dir, uint64_t keep_lsn, uint64_t seg_size)
{
    if (seg_size == 0)
        return -1;
    uint64_t keep = keep_lsn / seg_size;
    DIR *d = opendir(wal_dir);
    if (d == NULL)
        return -1;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char name[256];
        snprintf(name, sizeof(name), "%s", de->d_name);
        size_t len = strlen(name);
        if (len > 4 && strcmp(name + len - 4, ".zst") == 0)
            name[len - 4] = '\0';
        uint64_t segno;
        if (!wal_name_valid(name) || wal_name_segno(name, seg_size, &segno, NULL) < 0 ||
            segno >= keep)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", wal_dir, de->d_name);
        if (unlink(path) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

/* Reads an archived file, decompressing when zst. 0, 1 (absent) or -1. */
static int wal_load(const char *path, bool zst, char **data, size_t *len, char *err, size_t errlen)
{
    char *raw = NULL;
    size_t rawlen = 0;
    if (store_read_file(path, &raw, &rawlen) < 0) {
        if (errno == ENOENT)
            return 1;
        wal_errf(err, errlen, "could not read %s: %s", path, strerror(errno));
        return -1;
    }
    if (!zst) {
        *data = raw;
        *len = rawlen;
        return 0;
    }
    unsigned long long n = ZSTD_getFrameContentSize(raw, rawlen);
    if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n > (1ULL << 34)) {
        wal_errf(err, errlen, "%s is not a valid zstd file", path);
        free(raw);
        return -1;
    }
    char *out = malloc(n + 1);
    size_t got = out ? ZSTD_decompress(out, n, raw, rawlen) : 0;
    free(raw);
    if (out == NULL || ZSTD_isError(got) || got != n) {
        wal_errf(err, errlen, "could not decompress %s: %s", path,
                 out ? ZSTD_getErrorName(got) : "out of memory");
        free(out);
        return -1;
    }
    *data = out;
    *len = got;
    return 0;
}

/* Looks for name or name.zst in wal_dir; loads the one found. 0, 1 (none) or -1. */
static int wal_load_archived(const char *wal_dir, const char *name, char **data, size_t *len,
                             char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", wal_dir, name);
    int rc = wal_load(path, false, data, len, err, errlen);
    if (rc != 1)
        return rc;
    snprintf(path, sizeof(path), "%s/%s.zst", wal_dir, name);
    return wal_load(path, true, data, len, err, errlen);
}

/* Compresses data at level; returns a malloc'd buffer or NULL. */
static char *wal_compress(const char *data, size_t len, int level, size_t *outlen)
{
    size_t cap = ZSTD_compressBound(len);
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    size_t n = ZSTD_compress(out, cap, data, len, level);
    if (ZSTD_isError(n)) {
        free(out);
        return NULL;
    }
    *outlen = n;
    return out;
}

/* Writes bytes durably to wal_dir/file and checks the stored size. */
static int wal_store(const char *wal_dir, const char *file, const char *bytes, size_t n, char *err,
                     size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", wal_dir, file);
    if (store_write_file(path, bytes, n, 0600) < 0) {
        wal_errf(err, errlen, "could not archive %s into %s: %s", file, wal_dir, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (stat(path, &sb) < 0 || (size_t) sb.st_size != n) {
        wal_errf(err, errlen, "archived %s has %lld bytes, expected %zu; removed it", path,
                 (long long) sb.st_size, n);
        unlink(path);
        return -1;
    }
    return 0;
}

int wal_push(const char *src, const char *name, const char *wal_dir, int level, char *err,
             size_t errlen)
{
    if (!wal_name_valid(name)) {
        wal_errf(err, errlen, "\"%s\" is not a WAL file name", name);
        return -1;
    }
    char *data = NULL, *old = NULL;
    size_t len = 0, oldlen = 0;
    if (store_read_file(src, &data, &len) < 0) {
        wal_errf(err, errlen, "could not read %s: %s", src, strerror(errno));
        return -1;
    }
    int rc = wal_load_archived(wal_dir, name, &old, &oldlen, err, errlen);
    if (rc == 0) {
        bool same = oldlen == len && memcmp(old, data, len) == 0;
        free(old);
        free(data);
        if (same)
            return 0;
        wal_errf(err, errlen,
                 "%s/%s already exists with different content (%zu bytes, new %zu): refusing "
                 "to overwrite it (is another cluster archiving into this directory?)",
                 wal_dir, name, oldlen, len);
        return -1;
    }
    if (rc < 0) {
        free(data);
        return -1;
    }
    if (level > 0) {
        size_t zlen = 0;
        char *z = wal_compress(data, len, level, &zlen);
        if (z == NULL) {
            wal_errf(err, errlen, "could not compress %s", src);
            free(data);
            return -1;
        }
        char file[300];
        snprintf(file, sizeof(file), "%s.zst", name);
        rc = wal_store(wal_dir, file, z, zlen, err, errlen);
        free(z);
    } else {
        rc = wal_store(wal_dir, name, data, len, err, errlen);
    }
    free(data);
    return rc;
}

int wal_fetch(const char *name, const char *dst, const char *wal_dir, char *err, size_t errlen)
{
    if (!wal_name_valid(name)) {
        wal_errf(err, errlen, "\"%s\" is not a WAL file name", name);
        return -1;
    }
    char *data = NULL;
    size_t len = 0;
    int rc = wal_load_archived(wal_dir, name, &data, &len, err, errlen);
    if (rc != 0)
        return rc;
    rc = 0;
    if (store_write_file(dst, data, len, 0600) < 0) {
        wal_errf(err, errlen, "could not write %s: %s", dst, strerror(errno));
        rc = -1;
    }
    free(data);
    return rc;
}

/* Common argument parsing: two positional arguments, -D DATA, optional -z LEVEL. */
static int wal_args(int argc, char **argv, const char **a, const char **b, char *wal_dir,
                    size_t wlen, int *level)
{
    const char *data = NULL;
    int ch;
    optind = 1;
    *level = 0;
    while ((ch = getopt(argc, argv, "D:z:")) != -1) {
        if (ch == 'D')
            data = optarg;
        else if (ch == 'z')
            *level = atoi(optarg);
        else
            return -1;
    }
    if (argc - optind != 2 || data == NULL)
        return -1;
    *a = argv[optind];
    *b = argv[optind + 1];
    if (*level < 0 || *level > ZSTD_maxCLevel())
        *level = ZSTD_maxCLevel();
    snprintf(wal_dir, wlen, "%s/wal", data);
    return 0;
}

int wal_push_main(int argc, char **argv)
{
    const char *src, *name;
    char wal_dir[4096], err[1024];
    int level;
    if (wal_args(argc, argv, &src, &name, wal_dir, sizeof(wal_dir), &level) < 0) {
        fprintf(stderr, "usage: pgtide wal-push PATH NAME -D DATA [-z LEVEL]\n");
        return 1;
    }
    if (wal_push(src, name, wal_dir, level, err, sizeof(err)) < 0) {
        fprintf(stderr, "pgtide wal-push: %s\n", err);
        return 1;
    }
    return 0;
}

int wal_fetch_main(int argc, char **argv)
{
    const char *name, *dst;
    char wal_dir[4096], err[1024];
    int level;
    if (wal_args(argc, argv, &name, &dst, wal_dir, sizeof(wal_dir), &level) < 0) {
        fprintf(stderr, "usage: pgtide wal-fetch NAME PATH -D DATA\n");
        return 2;
    }
    int rc = wal_fetch(name, dst, wal_dir, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "pgtide wal-fetch: %s\n", err);
        return 2;
    }
    return rc; /* 1: not archived; PostgreSQL then looks in pg_wal or ends recovery */
}
