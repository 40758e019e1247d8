/* SPDX-License-Identifier: Apache-2.0
 * log: JSON-lines logger. Lines are assembled in a stack buffer and written with a single
 * write(2) to stderr, which keeps lines whole across worker threads. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static enum rem_log_level log_level = REM_LOG_INFO;
static enum rem_log_format log_format = REM_LOG_FORMAT_JSON;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void rem_log_setup(enum rem_log_level level, enum rem_log_format format)
{
    const char *env = getenv("REMORA_LOG");
    if (env) {
        for (int i = 0; i < 4; i++)
            if (strcasecmp(env, level_names[i]) == 0)
                level = (enum rem_log_level)i;
    }
    __atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
    __atomic_store_n(&log_format, format, __ATOMIC_RELAXED);
}

bool rem_log_enabled(enum rem_log_level level)
{
    return level >= __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

static void put(struct rem_logline *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - 2 - l->len; /* keep room for "}\n" */
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_escaped(struct rem_logline *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(l, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            put(l, esc, 6);
        } else {
            put(l, (const char *)&s[i], 1);
        }
    }
}

static void put_key(struct rem_logline *l, const char *key)
{
    if (l->text) {
        put(l, " ", 1);
        put(l, key, strlen(key));
        put(l, "=", 1);
        return;
    }
    if (!l->first)
        put(l, ",", 1);
    l->first = false;
    put(l, "\"", 1);
    put(l, key, strlen(key));
    put(l, "\":", 2);
}

void rem_logline_begin(struct rem_logline *l, enum rem_log_level level, const char *msg)
{
    struct timespec ts;
    struct tm tm;
    char tbuf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof(tbuf) - n, ".%03ldZ", ts.tv_nsec / 1000000);

    l->len = 0;
    l->first = true;
    l->text = __atomic_load_n(&log_format, __ATOMIC_RELAXED) == REM_LOG_FORMAT_TEXT;
    if (l->text) {
        put(l, tbuf, strlen(tbuf));
        put(l, " ", 1);
        put(l, level_names[level], strlen(level_names[level]));
        put(l, " ", 1);
        put(l, msg, strlen(msg));
        return;
    }
    put(l, "{", 1);
    rem_logline_str(l, "ts", tbuf, -1);
    rem_logline_str(l, "level", level_names[level], -1);
    rem_logline_str(l, "msg", msg, -1);
}

void rem_logline_str(struct rem_logline *l, const char *key, const char *val, long len)
{
    put_key(l, key);
    if (!val) {
        put(l, "null", 4);
        return;
    }
    size_t n = len < 0 ? strlen(val) : (size_t)len;
    put(l, "\"", 1);
    put_escaped(l, val, n);
    put(l, "\"", 1);
}

void rem_logline_int(struct rem_logline *l, const char *key, int64_t val)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%lld", (long long)val);
    put_key(l, key);
    put(l, b, (size_t)n);
}

void rem_logline_double(struct rem_logline *l, const char *key, double val)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%.6f", val);
    put_key(l, key);
    put(l, b, (size_t)n);
}

void rem_logline_end(struct rem_logline *l)
{
    if (!l->text)
        l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    size_t off = 0;
    while (off < l->len) {
        ssize_t w = write(STDERR_FILENO, l->buf + off, l->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

void rem_log(enum rem_log_level level, const char *fmt, ...)
{
    if (!rem_log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct rem_logline l;
    rem_logline_begin(&l, level, msg);
    rem_logline_end(&l);
}
