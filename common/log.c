/*
 * log: formats and writes log lines. Each line is built in a stack buffer and written with a
 * single write(2), so lines from the daemon and its children never interleave mid-line.
 */
#define _GNU_SOURCE /* dup3 */
#include "pgtide/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_threshold = LOG_LVL_INFO;
static int log_fd = STDERR_FILENO;
static char log_path[4096];

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR", "FATAL"};

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

/* Points log_fd at fd. A descriptor number in use is never freed: worker threads may be writing
   to it, and a freed number could be handed to a client's socket before their write lands. */
static void log_use(int fd)
{
    int cur = __atomic_load_n(&log_fd, __ATOMIC_RELAXED);
    if (cur != STDERR_FILENO && fd != cur && dup3(fd, cur, O_CLOEXEC) >= 0) {
        if (fd != STDERR_FILENO)
            close(fd);
        return;
    }
    __atomic_store_n(&log_fd, fd, __ATOMIC_RELAXED);
}

int log_set_file(const char *path)
{
    if (path == NULL || path[0] == '\0') {
        log_use(STDERR_FILENO);
        log_path[0] = '\0';
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    log_use(fd);
    snprintf(log_path, sizeof(log_path), "%s", path);
    return 0;
}

void log_reopen(void)
{
    if (log_path[0] != '\0') {
        char copy[sizeof(log_path)];
        memcpy(copy, log_path, sizeof(copy));
        (void) log_set_file(copy);
    }
}

int log_enabled(enum log_level level)
{
    return level >= log_threshold;
}

void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
    if (level < log_threshold)
        return;
    int saved_errno = errno;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
    int k = snprintf(line + n, sizeof(line) - n, ".%03d UTC [%d] %s ", (int) (tv.tv_usec / 1000),
                     (int) getpid(), level_names[level]);
    if (k > 0)
        n += (size_t) k;
    k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (k > 0)
        n += (size_t) k < sizeof(line) - n - 1 ? (size_t) k : sizeof(line) - n - 2;
    line[n++] = '\n';
    ssize_t w = write(__atomic_load_n(&log_fd, __ATOMIC_RELAXED), line, n);
    (void) w;
    errno = saved_errno;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}
