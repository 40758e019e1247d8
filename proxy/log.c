/* SPDX-License-Identifier: Apache-2.0
 * log: JSON-lines logger. Lines are assembled in a stack buffer and written with a single
 * write(2) to stderr, which keeps lines whole across worker threads. Values are escaped and
 * capped field by field (log.h), so a line is always complete and valid. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Room kept at the end of every line for `,"dropped_fields":4294967295}` and the newline. */
#define LOG_TAIL_ROOM 32

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

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF) starting at s[0] with n > 0 bytes available; 0 when it is not one,
 * -1 when it is the valid start of a sequence that n bytes cut short. */
static int utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    int need;
    unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= n)
            return -1;
        if (s[k] < (k == 1 ? lo : 0x80) || s[k] > (k == 1 ? hi : 0xbf))
            return 0;
    }
    return need;
}

/* Length of "...[truncated from N bytes]" for this N, without formatting it. */
static size_t marker_len(size_t n)
{
    size_t digits = 1;
    while (n >= 10) {
        n /= 10;
        digits++;
    }
    return sizeof("...[truncated from  bytes]") - 1 + digits;
}

size_t rem_log_escape(char *dst, size_t room, size_t max, const char *src, size_t n,
                      size_t orig_len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    bool cut = orig_len > n;
    size_t total = cut ? orig_len : n;
    size_t mlen = marker_len(total);
    if (max > room)
        max = room;
    size_t lim = max; /* the output may grow to lim */
    if (cut) {
        if (max < mlen)
            return 0;
        lim = max - mlen;
    }
    size_t out = 0, keep = 0; /* keep: the last output length that leaves room for the mark */
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') { /* the common case */
            if (out + 1 > lim) {
                cut = true;
                break;
            }
            dst[out++] = (char)c;
            i++;
            if (out + mlen <= max)
                keep = out;
            continue;
        }
        const char *tok = (const char *)s + i;
        char esc[6];
        size_t tl = 1, adv = 1;
        if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : (char)c;
            tok = esc;
            tl = 2;
        } else if (c < 0x80) { /* other controls and DEL */
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            tok = esc;
            tl = 6;
        } else {
            int q = utf8_seq(s + i, n - i);
            if (q < 0 && cut) /* the caller's cut split this character: drop its start */
                break;
            if (q > 0) {
                tl = adv = (size_t)q;
            } else {
                tok = "\\ufffd";
                tl = 6;
            }
        }
        if (out + tl > lim) {
            cut = true;
            break;
        }
        memcpy(dst + out, tok, tl);
        out += tl;
        i += adv;
        if (out + mlen <= max)
            keep = out;
    }
    if (!cut)
        return out;
    if (max < mlen)
        return 0;
    char mark[48];
    snprintf(mark, sizeof(mark), "...[truncated from %zu bytes]", total);
    memcpy(dst + keep, mark, mlen);
    return keep + mlen;
}

/* Bytes left for fields, LOG_TAIL_ROOM kept back. */
static size_t room(const struct rem_logline *l)
{
    size_t cap = sizeof(l->buf) - LOG_TAIL_ROOM;
    return l->len < cap ? cap - l->len : 0;
}

static void put(struct rem_logline *l, const char *s, size_t n)
{
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

/* Writes the key and what precedes the value when `value_len` more bytes fit after it;
 * otherwise writes nothing, counts the field as dropped and returns false. */
static bool put_key(struct rem_logline *l, const char *key, size_t value_len)
{
    size_t klen = strlen(key);
    size_t need = l->text ? klen + 2 : klen + 3 + (l->first ? 0 : 1);
    if (need + value_len > room(l)) {
        l->dropped++;
        return false;
    }
    if (l->text) {
        put(l, " ", 1);
        put(l, key, klen);
        put(l, "=", 1);
        return true;
    }
    if (!l->first)
        put(l, ",", 1);
    l->first = false;
    put(l, "\"", 1);
    put(l, key, klen);
    put(l, "\":", 2);
    return true;
}

static void put_str(struct rem_logline *l, const char *key, const char *val, size_t n,
                    size_t orig_len, size_t max)
{
    if (!val) {
        if (put_key(l, key, 4))
            put(l, "null", 4);
        return;
    }
    size_t len0 = l->len;
    bool first0 = l->first;
    if (!put_key(l, key, 2))
        return;
    size_t avail = room(l) - 2;
    size_t w = rem_log_escape(l->buf + l->len + 1, avail, max, val, n, orig_len);
    if (w == 0 && n > 0) { /* not even the marker fits: leave the field out */
        l->len = len0;
        l->first = first0;
        l->dropped++;
        return;
    }
    l->buf[l->len] = '"';
    l->len += 1 + w;
    put(l, "\"", 1);
}

static void line_begin(struct rem_logline *l, enum rem_log_level level, const char *msg, size_t n,
                       size_t orig_len)
{
    struct timespec ts;
    struct tm tm;
    char tbuf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t tn = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + tn, sizeof(tbuf) - tn, ".%03ldZ", ts.tv_nsec / 1000000);

    l->len = 0;
    l->dropped = 0;
    l->first = true;
    l->text = __atomic_load_n(&log_format, __ATOMIC_RELAXED) == REM_LOG_FORMAT_TEXT;
    if (l->text) { /* "ts level msg": msg escaped like a value, without quotes */
        put(l, tbuf, strlen(tbuf));
        put(l, " ", 1);
        put(l, level_names[level], strlen(level_names[level]));
        put(l, " ", 1);
        l->len += rem_log_escape(l->buf + l->len, room(l), REM_LOG_MSG_MAX, msg, n, orig_len);
        return;
    }
    put(l, "{", 1);
    rem_logline_str(l, "ts", tbuf, -1);
    rem_logline_str(l, "level", level_names[level], -1);
    put_str(l, "msg", msg, n, orig_len, REM_LOG_MSG_MAX);
}

void rem_logline_begin(struct rem_logline *l, enum rem_log_level level, const char *msg)
{
    size_t n = strlen(msg);
    line_begin(l, level, msg, n, n);
}

void rem_logline_strmax(struct rem_logline *l, const char *key, const char *val, long len,
                        size_t max)
{
    size_t n = val && len < 0 ? strlen(val) : (size_t)(len < 0 ? 0 : len);
    put_str(l, key, val, n, n, max);
}

void rem_logline_str(struct rem_logline *l, const char *key, const char *val, long len)
{
    rem_logline_strmax(l, key, val, len, REM_LOG_FIELD_MAX);
}

void rem_logline_int(struct rem_logline *l, const char *key, int64_t val)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%lld", (long long)val);
    if (put_key(l, key, (size_t)n))
        put(l, b, (size_t)n);
}

void rem_logline_double(struct rem_logline *l, const char *key, double val)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%.6f", val);
    if (n < 0 || (size_t)n >= sizeof(b)) /* only a huge value: a number all the same */
        n = snprintf(b, sizeof(b), "%.6e", val);
    if (put_key(l, key, (size_t)n))
        put(l, b, (size_t)n);
}

void rem_logline_end(struct rem_logline *l)
{
    if (l->dropped) { /* fits: LOG_TAIL_ROOM was kept for it */
        char b[40];
        int n = snprintf(b, sizeof(b), "%s%u",
                         l->text ? " dropped_fields=" : ",\"dropped_fields\":", l->dropped);
        put(l, b, (size_t)n);
    }
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
    char msg[REM_LOG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r < 0)
        r = 0;
    size_t n = strlen(msg); /* < r when vsnprintf cut it */
    struct rem_logline l;
    line_begin(&l, level, msg, n, (size_t)r > n ? (size_t)r : n);
    rem_logline_end(&l);
}
