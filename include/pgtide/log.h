/*
 * log: one line per event on stderr (or a log file), with a level and a timestamp.
 * Connection events carry a "C-<id> db/user@addr" prefix, built by the caller. The level
 * threshold and the output file are process-wide runtime state (set at start and on reload),
 * not configuration read by other modules.
 */
#pragma once

#include <stdarg.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARNING, LOG_LVL_ERROR, LOG_LVL_FATAL };

/* Sets the lowest level written. */
void log_set_level(enum log_level level);

/* Redirects output to path (appending), or back to stderr when path is NULL or "".
   Returns 0, or -1 with errno set (output unchanged). */
int log_set_file(const char *path);

/* Reopens the current log file (after rotation, on SIGHUP). */
void log_reopen(void);

/* True when a message of this level would be written (to skip building costly arguments). */
int log_enabled(enum log_level level);

/* Writes one line: "2026-11-29 15:20:32.123 UTC [pid] LEVEL message". */
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vwrite(enum log_level level, const char *fmt, va_list ap);

#define log_debug(...) log_write(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LVL_WARNING, __VA_ARGS__)
#define log_error(...) log_write(LOG_LVL_ERROR, __VA_ARGS__)
#define log_fatal(...) log_write(LOG_LVL_FATAL, __VA_ARGS__)
