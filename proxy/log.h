/* SPDX-License-Identifier: Apache-2.0
 * log: JSON lines (or plain text) on stderr, one write(2) per line so lines from several
 * workers never interleave. Owns the global level and format; nothing else.
 *
 * Every line is whole and valid: a string value is JSON-escaped (quotes, backslashes, control
 * bytes; invalid UTF-8 becomes U+FFFD, as Go's encoding/json does) and capped; a value over its
 * cap is cut inside the string at a character boundary and ends with the marker
 * `...[truncated from N bytes]`, N being the value's length in bytes as received. The line is
 * never cut: with the caps below the longest line remora builds (the access log's, every
 * field at its cap) fits REM_LOG_LINE_MAX, and should a line ever hold more fields than that,
 * the fields that no longer fit are left out and counted in `"dropped_fields":N`. */
#ifndef REM_LOG_H
#define REM_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Caps on a string value as written (escaped, marker included), in bytes.
 * URI: the request target with its query; 4 KiB keeps what a person reading a log needs (the
 * path and the start of the query) while a 100 KiB query cannot flood the log.
 * FIELD: every other string (header-derived values such as request_id, names, peer
 * addresses, SANs); 1 KiB is above any sane header value of that kind.
 * MSG: the msg of a printf-style line. */
#define REM_LOG_URI_MAX 4096
#define REM_LOG_FIELD_MAX 1024
#define REM_LOG_MSG_MAX 2048
/* A whole line, newline included: the access log's worst case is ts, level, msg "access",
 * one URI-capped string (path), ten FIELD-capped strings and eight numbers, under 15 KiB with
 * keys, so 16 KiB always holds it (tests/unit/test_log.c builds that line). Lives on the
 * caller's stack: no allocation per line. */
#define REM_LOG_LINE_MAX 16384

/* Sets level and format; REMORA_LOG (debug|info|warn|error) overrides level when set.
 * Called by main before workers start and on reload. */
void rem_log_setup(enum rem_log_level level, enum rem_log_format format);
bool rem_log_enabled(enum rem_log_level level);

/* A log line under construction: fixed size; a field that does not fit is dropped whole and
 * counted (see above), the line stays valid. */
struct rem_logline {
    char buf[REM_LOG_LINE_MAX];
    size_t len;
    unsigned dropped; /* fields left out for want of room */
    bool first;
    bool text;
};

/* Writes into dst (room bytes) the escaped form of src[0..n) as JSON string content (no
 * quotes), at most max bytes of it (and of room): cut at a character boundary and followed by
 * the truncation marker when it does not fit, or when orig_len > n (the caller already cut
 * it; orig_len is then the length the marker reports). Returns the bytes written; writes
 * nothing and returns 0 when max or room is too small for the marker of a value that must be
 * cut. Pure: no locale, no allocation. */
size_t rem_log_escape(char *dst, size_t room, size_t max, const char *src, size_t n,
                      size_t orig_len);

/* Starts a line with ts, level and msg (msg escaped and capped at REM_LOG_MSG_MAX). */
void rem_logline_begin(struct rem_logline *l, enum rem_log_level level, const char *msg);
/* Adds a field; the string value is escaped and may be NULL (written as null); len < 0 means
 * strlen. rem_logline_str caps it at REM_LOG_FIELD_MAX, rem_logline_strmax at max (>= 64). */
void rem_logline_str(struct rem_logline *l, const char *key, const char *val, long len);
void rem_logline_strmax(struct rem_logline *l, const char *key, const char *val, long len,
                        size_t max);
void rem_logline_int(struct rem_logline *l, const char *key, int64_t val);
void rem_logline_double(struct rem_logline *l, const char *key, double val);
/* Terminates the line (adding dropped_fields when some were left out) and writes it. */
void rem_logline_end(struct rem_logline *l);

/* printf-style message line: {"ts":..,"level":..,"msg":"..."}; msg capped at REM_LOG_MSG_MAX. */
void rem_log(enum rem_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define rem_log_debug(...)                                                                         \
    (rem_log_enabled(REM_LOG_DEBUG) ? rem_log(REM_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define rem_log_info(...) rem_log(REM_LOG_INFO, __VA_ARGS__)
#define rem_log_warn(...) rem_log(REM_LOG_WARN, __VA_ARGS__)
#define rem_log_error(...) rem_log(REM_LOG_ERROR, __VA_ARGS__)

#endif
