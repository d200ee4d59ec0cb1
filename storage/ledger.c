/*
 * ledger: append-only usage records in DATA/state/ledger-YYYY-MM. Each file starts with an
 * 8-byte magic; each record is a little-endian frame (u32 body length, u32 CRC32C of the body,
 * body) appended with one write() and fsynced. A failed or short write is rolled back with
 * ftruncate so that a good record never follows a bad one within a process's life; a torn tail
 * left by a crash is cut by the next writer and skipped by readers. The CRC32C is computed with
 * a 256-entry table built on first use (Castagnoli polynomial, reflected).
 */
#include "pgtide/ledger.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pgtide/log.h"
#include "pgtide/store.h"

#define HDR_LEN   8  /* length + CRC */
#define BODY_MIN  17 /* fixed fields + at least one name byte */
#define FIXED_LEN 16
#define MAGIC_LEN 8

/* ---- CRC32C --------------------------------------------------------------------------------- */

static uint32_t crc_table[256];
static bool crc_ready;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
    crc_ready = true;
}

uint32_t ledger_crc32c(uint32_t crc, const void *data, size_t len)
{
    if (!crc_ready)
        crc_init();
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- codec ---------------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static bool kind_valid(int k)
{
    return k >= LEDGER_START && k <= LEDGER_CRASH_CLOSE;
}

static bool name_valid(const char *s, size_t n)
{
    if (n == 0 || n >= LEDGER_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char) s[i] < 0x21 || (unsigned char) s[i] > 0x7e)
            return false;
    return true;
}

size_t ledger_encode(const struct ledger_record *r, uint8_t *out)
{
    size_t n = strnlen(r->name, LEDGER_NAME_MAX);
    if (!kind_valid((int) r->kind) || !name_valid(r->name, n) ||
        (r->role != LEDGER_ROLE_PRIMARY && r->role != LEDGER_ROLE_REPLICA))
        return 0;
    uint8_t *b = out + HDR_LEN;
    b[0] = (uint8_t) r->kind;
    b[1] = (uint8_t) r->role;
    b[2] = r->paused ? 1 : 0;
    b[3] = (uint8_t) n;
    put32(b + 4, r->cu_milli);
    put64(b + 8, (uint64_t) r->wall_ms);
    memcpy(b + FIXED_LEN, r->name, n);
    size_t blen = FIXED_LEN + n;
    put32(out, (uint32_t) blen);
    put32(out + 4, ledger_crc32c(0, b, blen));
    return HDR_LEN + blen;
}

enum ledger_decode_status ledger_decode(const uint8_t *buf, size_t len, struct ledger_record *r,
                                        size_t *used)
{
    if (len < HDR_LEN)
        return LEDGER_DEC_INCOMPLETE;
    uint32_t blen = get32(buf);
    if (blen < BODY_MIN || blen > FIXED_LEN + LEDGER_NAME_MAX - 1)
        return LEDGER_DEC_CORRUPT;
    if (len < HDR_LEN + (size_t) blen)
        return LEDGER_DEC_INCOMPLETE;
    const uint8_t *b = buf + HDR_LEN;
    if (ledger_crc32c(0, b, blen) != get32(buf + 4))
        return LEDGER_DEC_CORRUPT;
    size_t n = b[3];
    if (n != blen - FIXED_LEN || !kind_valid(b[0]) || b[1] > 1 || b[2] > 1 ||
        !name_valid((const char *) b + FIXED_LEN, n))
        return LEDGER_DEC_CORRUPT;
    memset(r, 0, sizeof(*r));
    r->kind = (enum ledger_kind) b[0];
    r->role = (enum ledger_role) b[1];
    r->paused = b[2] == 1;
    r->cu_milli = get32(b + 4);
    r->wall_ms = (int64_t) get64(b + 8);
    memcpy(r->name, b + FIXED_LEN, n);
    r->name[n] = '\0';
    *used = HDR_LEN + blen;
    return LEDGER_DEC_OK;
}

const char *ledger_kind_name(enum ledger_kind k)
{
    static const char *const names[] = {"?",    "start", "resize",    "pause",
                                        "thaw", "stop",  "heartbeat", "crash-close"};
    return kind_valid((int) k) ? names[k] : "?";
}

/* ---- reading -------------------------------------------------------------------------------- */

void ledger_file_name(int64_t wall_ms, char *out, size_t outlen)
{
    time_t t = (time_t) (wall_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, outlen, "ledger-%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1);
}

static int ledger_file_filter(const struct dirent *d)
{
    const char *n = d->d_name;
    if (strlen(n) != 14 || strncmp(n, "ledger-", 7) != 0 || n[11] != '-')
        return 0;
    for (int i = 7; i < 14; i++)
        if (i != 11 && (n[i] < '0' || n[i] > '9'))
            return 0;
    return 1;
}

/* Walks the records of one file's bytes; returns the length of the valid prefix (magic
   included; 0 when even the magic is torn or wrong). fn may be NULL. *stopped is set when fn
   asked to stop. */
static size_t walk(const uint8_t *buf, size_t len, ledger_visit_fn fn, void *arg, bool *stopped)
{
    if (len < MAGIC_LEN || memcmp(buf, LEDGER_FILE_MAGIC, MAGIC_LEN) != 0)
        return 0;
    size_t off = MAGIC_LEN;
    while (off < len) {
        struct ledger_record r;
        size_t used;
        if (ledger_decode(buf + off, len - off, &r, &used) != LEDGER_DEC_OK)
            break;
        off += used;
        if (fn != NULL && fn(arg, &r) != 0) {
            *stopped = true;
            break;
        }
    }
    return off;
}

/* Lists the ledger files of dir, sorted; returns the count (0 for a missing dir) or -1. */
static int list_files(const char *dir, struct dirent ***names)
{
    int n = scandir(dir, names, ledger_file_filter, alphasort);
    if (n < 0 && errno == ENOENT) {
        *names = NULL;
        return 0;
    }
    return n;
}

static void free_list(struct dirent **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int ledger_read_all(const char *state_dir, ledger_visit_fn fn, void *arg, uint64_t *cut_bytes,
                    char *err, size_t errlen)
{
    struct dirent **names;
    int n = list_files(state_dir, &names);
    if (n < 0) {
        snprintf(err, errlen, "cannot read %s: %s", state_dir, strerror(errno));
        return -1;
    }
    if (cut_bytes != NULL)
        *cut_bytes = 0;
    bool stopped = false;
    int rc = 0;
    for (int i = 0; i < n && !stopped; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", state_dir, names[i]->d_name);
        char *data;
        size_t len;
        if (store_read_file(path, &data, &len) != 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        size_t good = walk((const uint8_t *) data, len, fn, arg, &stopped);
        if (!stopped && cut_bytes != NULL)
            *cut_bytes += len - good;
        free(data);
    }
    free_list(names, n);
    return rc;
}

/* ---- writing -------------------------------------------------------------------------------- */

struct ledger {
    char *dir;
    ledger_clock_fn clock;
    void *clock_arg;
    int fd;
    char cur[32]; /* name of the open file */
    off_t size;   /* its length (all valid) */
};

static int64_t real_clock(void *arg)
{
    (void) arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ledger_now(const struct ledger *l)
{
    return l->clock(l->clock_arg);
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t) w;
    }
    return 0;
}

/* Opens (creating with the magic) the file name; trims a torn tail. */
static int open_file(struct ledger *l, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", l->dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    char *data = NULL;
    size_t len = 0;
    if (store_read_file(path, &data, &len) != 0) {
        close(fd);
        return -1;
    }
    bool stopped = false;
    size_t good = walk((const uint8_t *) data, len, NULL, NULL, &stopped);
    free(data);
    if (good < len)
        log_warn("ledger %s: cut a torn or corrupt tail of %zu bytes at offset %zu", path,
                 len - good, good);
    int rc = 0;
    if (good < len && ftruncate(fd, (off_t) good) != 0)
        rc = -1;
    if (rc == 0 && good == 0)
        rc = write_all(fd, LEDGER_FILE_MAGIC, MAGIC_LEN) == 0 ? 0 : -1;
    if (rc == 0 && (good < len || good == 0))
        rc = fsync(fd) == 0 && fsync_dir(l->dir) == 0 ? 0 : -1;
    if (rc == 0 && lseek(fd, 0, SEEK_END) < 0)
        rc = -1;
    if (rc != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (l->fd >= 0)
        close(l->fd);
    l->fd = fd;
    l->size = (off_t) (good == 0 ? MAGIC_LEN : good);
    snprintf(l->cur, sizeof(l->cur), "%s", name);
    return 0;
}

/* Last record of every compute name, for crash recovery. */
struct last_seen {
    struct ledger_record rec[256];
    int n;
};

static int remember_last(void *arg, const struct ledger_record *r)
{
    struct last_seen *ls = arg;
    for (int i = 0; i < ls->n; i++)
        if (strcmp(ls->rec[i].name, r->name) == 0) {
            ls->rec[i] = *r;
            return 0;
        }
    if (ls->n < (int) (sizeof(ls->rec) / sizeof(ls->rec[0])))
        ls->rec[ls->n++] = *r;
    return 0;
}

static int close_crashed(struct ledger *l, int *closed, char *err, size_t errlen)
{
    struct last_seen *ls = calloc(1, sizeof(*ls));
    if (ls == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ledger_read_all(l->dir, remember_last, ls, NULL, err, errlen) != 0) {
        free(ls);
        return -1;
    }
    for (int i = 0; i < ls->n; i++) {
        struct ledger_record r = ls->rec[i];
        if (r.kind == LEDGER_STOP || r.kind == LEDGER_CRASH_CLOSE)
            continue;
        r.kind = LEDGER_CRASH_CLOSE;
        r.paused = false;
        if (ledger_append(l, &r) != 0) {
            snprintf(err, errlen, "cannot append to the ledger: %s", strerror(errno));
            free(ls);
            return -1;
        }
        char when[64];
        time_t t = (time_t) (r.wall_ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
        log_warn("ledger: compute %s was still accounted as running when pgtide stopped; its "
                 "usage was closed at its last heartbeat (%s)",
                 r.name, when);
        (*closed)++;
    }
    free(ls);
    return 0;
}

struct ledger *ledger_open(const char *state_dir, ledger_clock_fn clock, void *clock_arg,
                           int *closed, char *err, size_t errlen)
{
    int nclosed = 0;
    struct ledger *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->dir = strdup(state_dir)) == NULL) {
        free(l);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->fd = -1;
    l->clock = clock != NULL ? clock : real_clock;
    l->clock_arg = clock_arg;
    struct dirent **names;
    int n = list_files(state_dir, &names);
    if (n < 0) {
        snprintf(err, errlen, "cannot read %s: %s", state_dir, strerror(errno));
        ledger_close(l);
        return NULL;
    }
    char name[256];
    if (n > 0)
        snprintf(name, sizeof(name), "%s", names[n - 1]->d_name); /* newest: cut its tail */
    else
        ledger_file_name(ledger_now(l), name, sizeof(name));
    free_list(names, n);
    if (open_file(l, name) != 0) {
        snprintf(err, errlen, "cannot open the ledger %s/%s: %s", state_dir, name, strerror(errno));
        ledger_close(l);
        return NULL;
    }
    if (close_crashed(l, &nclosed, err, errlen) != 0) {
        ledger_close(l);
        return NULL;
    }
    if (closed != NULL)
        *closed = nclosed;
    return l;
}

void ledger_close(struct ledger *l)
{
    if (l == NULL)
        return;
    if (l->fd >= 0)
        close(l->fd);
    free(l->dir);
    free(l);
}

int ledger_append(struct ledger *l, const struct ledger_record *r)
{
    uint8_t buf[LEDGER_REC_MAX];
    size_t n = ledger_encode(r, buf);
    if (n == 0) {
        errno = EINVAL;
        return -1;
    }
    char name[32];
    ledger_file_name(ledger_now(l), name, sizeof(name));
    if ((l->fd < 0 || strcmp(name, l->cur) != 0) && open_file(l, name) != 0) {
        log_error("ledger: cannot open %s/%s: %s", l->dir, name, strerror(errno));
        return -1;
    }
    if (write_all(l->fd, buf, n) != 0 || fsync(l->fd) != 0) {
        int e = errno;
        log_error("ledger: cannot append to %s/%s: %s", l->dir, l->cur, strerror(e));
        if (ftruncate(l->fd, l->size) != 0 || lseek(l->fd, 0, SEEK_END) < 0) {
            close(l->fd); /* reopened (and its tail cut) on the next append */
            l->fd = -1;
        }
        errno = e;
        return -1;
    }
    l->size += (off_t) n;
    return 0;
}

int ledger_record(struct ledger *l, enum ledger_kind kind, const char *name, enum ledger_role role,
                  double cu, bool paused)
{
    struct ledger_record r;
    memset(&r, 0, sizeof(r));
    r.kind = kind;
    r.wall_ms = ledger_now(l);
    r.role = role;
    r.cu_milli = cu <= 0 ? 0 : (uint32_t) (cu * 1000.0 + 0.5);
    r.paused = paused;
    snprintf(r.name, sizeof(r.name), "%s", name);
    return ledger_append(l, &r);
}

int ledger_record_resize(struct ledger *l, const char *name, enum ledger_role role, double new_cu)
{
    return ledger_record(l, LEDGER_RESIZE, name, role, new_cu, false);
}
