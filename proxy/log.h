/* SPDX-License-Identifier: Apache-2.0
 * log: JSON lines (or plain text) on stderr, one write(2) per line so lines from several
 * workers never interleave. Owns the global level and format; nothing else. */
#ifndef REM_LOG_H
#define REM_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Sets level and format; REMORA_LOG (debug|info|warn|error) overrides level when set.
 * Called by main before workers start and on reload. */
void rem_log_setup(enum rem_log_level level, enum rem_log_format format);
bool rem_log_enabled(enum rem_log_level level);

/* A log line under construction: fixed size, truncated (never overflowing) when full. */
struct rem_logline {
    char buf[2048];
    size_t len;
    bool first;
    bool text;
};

/* Starts a line with ts, level and msg. */
void rem_logline_begin(struct rem_logline *l, enum rem_log_level level, const char *msg);
/* Adds a field; the string value is escaped and may be NULL (written as null); len < 0 means
 * strlen. */
void rem_logline_str(struct rem_logline *l, const char *key, const char *val, long len);
void rem_logline_int(struct rem_logline *l, const char *key, int64_t val);
void rem_logline_double(struct rem_logline *l, const char *key, double val);
/* Terminates the line and writes it. */
void rem_logline_end(struct rem_logline *l);

/* printf-style message line: {"ts":..,"level":..,"msg":"..."} */
void rem_log(enum rem_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define rem_log_debug(...)                                                                         \
    (rem_log_enabled(REM_LOG_DEBUG) ? rem_log(REM_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define rem_log_info(...) rem_log(REM_LOG_INFO, __VA_ARGS__)
#define rem_log_warn(...) rem_log(REM_LOG_WARN, __VA_ARGS__)
#define rem_log_error(...) rem_log(REM_LOG_ERROR, __VA_ARGS__)

#endif
