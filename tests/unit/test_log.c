/* SPDX-License-Identifier: Apache-2.0
 * test_log: unit tests for log.h: rem_log_escape (JSON escaping of every control byte, quotes
 * and backslashes, U+FFFD for each byte of invalid UTF-8, the cap with its truncation marker
 * cut at a character boundary) and whole lines written to stderr: the access log's worst case
 * fits REM_LOG_LINE_MAX with nothing dropped, a line with too many fields drops whole fields
 * and stays valid, and the text format never lets a newline through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define MARK_PREFIX "...[truncated from "

static char out[65536];

/* Escapes src[0..n) with room for everything, capped at max; returns out NUL-terminated. */
static const char *esc(const char *src, size_t n, size_t max)
{
    size_t w = rem_log_escape(out, sizeof(out) - 1, max, src, n, n);
    assert_true(w <= max);
    out[w] = '\0';
    return out;
}

static void test_escape_controls_quotes_backslashes(void **state)
{
    (void)state;
    assert_string_equal(esc("a\"b\\c", 5, 1024), "a\\\"b\\\\c");
    assert_string_equal(esc("\n\r\t", 3, 1024), "\\n\\r\\t");
    assert_string_equal(esc("\0\x01\x1f\x7f", 4, 1024), "\\u0000\\u0001\\u001f\\u007f");
    for (int c = 0; c < 0x20; c++) { /* every control byte becomes an escape, never raw */
        char b = (char)c;
        const char *e = esc(&b, 1, 1024);
        assert_true(e[0] == '\\');
        for (const char *p = e; *p; p++)
            assert_true((unsigned char)*p >= 0x20);
    }
    assert_string_equal(esc("", 0, 1024), "");
}

static void test_escape_utf8(void **state)
{
    (void)state;
    /* Well-formed 2-, 3- and 4-byte sequences pass as they are. */
    const char ok[] = "\xc3\xa9\xe2\x82\xac\xef\xbf\xbd\xf0\x9f\x90\x9f\xf4\x8f\xbf\xbf";
    assert_string_equal(esc(ok, sizeof(ok) - 1, 1024), ok);
    /* One U+FFFD per byte of anything else. */
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } bad[] = {
        {"\x80", 1, "\\ufffd"},                                  /* lone continuation */
        {"\xc3", 1, "\\ufffd"},                                  /* cut at the end */
        {"\xc3z", 2, "\\ufffdz"},                                /* cut by an ASCII byte */
        {"\xc0\xaf", 2, "\\ufffd\\ufffd"},                       /* overlong '/' */
        {"\xe0\x80\xaf", 3, "\\ufffd\\ufffd\\ufffd"},            /* overlong, 3 bytes */
        {"\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd"},            /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd"}, /* above U+10FFFF */
        {"\xf5\x80", 2, "\\ufffd\\ufffd"},                       /* never a lead byte */
        {"\xff", 1, "\\ufffd"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_string_equal(esc(bad[i].in, bad[i].n, 1024), bad[i].want);
}

/* A value over the cap: the kept prefix is whole tokens of `tok` (so the cut fell between
 * characters), then the marker with the original length; the whole fits the cap. */
static void check_cut(const char *tok, size_t tok_in, size_t tok_out, size_t copies, size_t max)
{
    char tok_esc[8];
    size_t n = tok_in * copies;
    memcpy(tok_esc, esc(tok, tok_in, 64), tok_out);
    char *src = malloc(n);
    assert_non_null(src);
    for (size_t i = 0; i < copies; i++)
        memcpy(src + i * tok_in, tok, tok_in);
    const char *e = esc(src, n, max);
    char mark[64];
    snprintf(mark, sizeof(mark), MARK_PREFIX "%zu bytes]", n);
    size_t len = strlen(e), mlen = strlen(mark);
    assert_true(len <= max);
    assert_true(len > max - mlen - tok_out - 1); /* cut as late as it could be */
    assert_string_equal(e + len - mlen, mark);
    assert_int_equal((len - mlen) % tok_out, 0);
    for (size_t i = 0; i < len - mlen; i += tok_out)
        assert_memory_equal(e + i, tok_esc, tok_out);
    free(src);
}

static void test_escape_cap_and_marker(void **state)
{
    (void)state;
    char a[5000];
    memset(a, 'a', sizeof(a));
    /* At the cap exactly: whole, no marker; one byte more: cut with the marker. */
    assert_int_equal(strlen(esc(a, 4096, 4096)), 4096);
    assert_null(strstr(out, MARK_PREFIX));
    const char *e = esc(a, 4097, 4096);
    assert_int_equal(strlen(e), 4096);
    assert_non_null(strstr(e, "...[truncated from 4097 bytes]"));
    assert_int_equal(strspn(e, "a"), 4096 - strlen("...[truncated from 4097 bytes]"));
    /* Cuts between escapes and UTF-8 characters, never inside one. */
    check_cut("\x01", 1, 6, 1000, 1024);
    check_cut("\"", 1, 2, 1000, 1024);
    check_cut("\xc3\xa9", 2, 2, 1000, 1023);
    check_cut("\xf0\x9f\x90\x9f", 4, 4, 1000, 1024);
    check_cut("\xff", 1, 6, 1000, 1024);
}

static void test_escape_caller_cut_and_small_room(void **state)
{
    (void)state;
    /* The caller cut the value (orig_len > n) inside a character: its start is dropped. */
    size_t w = rem_log_escape(out, sizeof(out), 1024, "ab\xe2\x82", 4, 10);
    out[w] = '\0';
    assert_string_equal(out, "ab...[truncated from 10 bytes]");
    /* No room even for the marker: nothing written. */
    assert_int_equal(rem_log_escape(out, 10, 1024, "0123456789abcdef", 16, 16), 0);
    assert_int_equal(rem_log_escape(out, 1024, 10, "0123456789abcdef", 16, 16), 0);
    /* A short value fits a small room whole. */
    w = rem_log_escape(out, 10, 1024, "abc", 3, 3);
    assert_int_equal(w, 3);
}

/* Runs fn with stderr sent to a temporary file; returns what it wrote (caller frees). */
static char *capture(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    fn();
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    off_t n = lseek(fileno(tmp), 0, SEEK_END);
    assert_true(n >= 0);
    char *buf = calloc((size_t)n + 1, 1);
    assert_non_null(buf);
    assert_int_equal(pread(fileno(tmp), buf, (size_t)n, 0), (ssize_t)n);
    fclose(tmp);
    return buf;
}

static char hostile[8192];

static void write_worst_access_line(void)
{
    struct rem_logline l;
    static const char *const keys[] = {"method",      "route", "upstream",   "termination",
                                       "client_san",  "error", "request_id", "client",
                                       "tls_version", "alpn"};
    static const char *const ints[] = {"status",          "bytes_in",          "bytes_out",
                                       "tunnel_bytes_up", "tunnel_bytes_down", "grpc_status"};
    rem_logline_begin(&l, REM_LOG_INFO, "access");
    rem_logline_strmax(&l, "path", hostile, (long)sizeof(hostile), REM_LOG_URI_MAX);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        rem_logline_str(&l, keys[i], hostile, (long)sizeof(hostile));
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
        rem_logline_int(&l, ints[i], INT64_MIN);
    rem_logline_double(&l, "duration_s", -1e300);
    rem_logline_end(&l);
}

static void write_too_many_fields(void)
{
    struct rem_logline l;
    rem_logline_begin(&l, REM_LOG_INFO, "many");
    for (int i = 0; i < 40; i++)
        rem_logline_str(&l, "field", hostile, (long)sizeof(hostile));
    rem_logline_int(&l, "last", 7);
    rem_logline_end(&l);
}

static void write_text_lines(void)
{
    rem_log(REM_LOG_WARN, "two\nlines \"%s\"", "and\r\x01more");
    struct rem_logline l;
    rem_logline_begin(&l, REM_LOG_INFO, "access");
    rem_logline_strmax(&l, "path", hostile, (long)sizeof(hostile), REM_LOG_URI_MAX);
    rem_logline_int(&l, "status", 200);
    rem_logline_end(&l);
}

static void write_long_msg(void)
{
    rem_log(REM_LOG_ERROR, "%s", hostile);
}

static void fill_hostile(void)
{
    for (size_t i = 0; i < sizeof(hostile); i++) /* escapes of 6 bytes: the most per byte */
        hostile[i] = (char)(i % 2 ? 0x01 : 0xff);
}

static size_t count(const char *s, const char *what)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, what)) != NULL; p += strlen(what))
        n++;
    return n;
}

static void test_line_worst_access_fits(void **state)
{
    (void)state;
    fill_hostile();
    rem_log_setup(REM_LOG_INFO, REM_LOG_FORMAT_JSON);
    char *s = capture(write_worst_access_line);
    size_t len = strlen(s);
    assert_true(len > 4096 + 10 * 1000 && len <= REM_LOG_LINE_MAX);
    assert_int_equal(count(s, "\n"), 1);
    assert_true(s[0] == '{' && strcmp(s + len - 2, "}\n") == 0);
    assert_null(strstr(s, "dropped_fields"));
    assert_int_equal(count(s, MARK_PREFIX "8192 bytes]\""), 11);
    assert_non_null(strstr(s, "\"status\":-9223372036854775808"));
    assert_non_null(strstr(s, "\"duration_s\":-1.000000e+300}"));
    free(s);
}

static void test_line_too_many_fields_drops_whole_fields(void **state)
{
    (void)state;
    fill_hostile();
    rem_log_setup(REM_LOG_INFO, REM_LOG_FORMAT_JSON);
    char *s = capture(write_too_many_fields);
    size_t len = strlen(s);
    assert_true(len <= REM_LOG_LINE_MAX);
    assert_int_equal(count(s, "\n"), 1);
    size_t kept = count(s, "\"field\":\"");
    assert_int_equal(count(s, MARK_PREFIX "8192 bytes]\""), kept); /* each kept one whole */
    char want[64];
    size_t dropped = (strstr(s, "\"last\":7") ? 40 : 41) - kept;
    snprintf(want, sizeof(want), ",\"dropped_fields\":%zu}\n", dropped);
    assert_true(kept >= 14 && kept < 40);
    assert_string_equal(s + len - strlen(want), want);
    free(s);
}

static void test_text_format_one_line(void **state)
{
    (void)state;
    fill_hostile();
    rem_log_setup(REM_LOG_INFO, REM_LOG_FORMAT_TEXT);
    char *s = capture(write_text_lines);
    rem_log_setup(REM_LOG_INFO, REM_LOG_FORMAT_JSON);
    assert_int_equal(count(s, "\n"), 2);
    assert_non_null(strstr(s, " warn two\\nlines \\\"and\\r\\u0001more\\\"\n"));
    assert_non_null(strstr(s, MARK_PREFIX "8192 bytes]\" status=200\n"));
    for (const char *p = s; *p; p++)
        assert_true((unsigned char)*p >= 0x20 || *p == '\n');
    free(s);
}

static void test_long_msg_marked(void **state)
{
    (void)state;
    fill_hostile();
    hostile[sizeof(hostile) - 1] = '\0'; /* a %s argument */
    rem_log_setup(REM_LOG_INFO, REM_LOG_FORMAT_JSON);
    char *s = capture(write_long_msg);
    assert_int_equal(count(s, "\n"), 1);
    /* vsnprintf kept 2047 bytes of 8191; the escapes fill REM_LOG_MSG_MAX first. */
    assert_non_null(strstr(s, MARK_PREFIX "8191 bytes]\"}\n"));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_controls_quotes_backslashes),
        cmocka_unit_test(test_escape_utf8),
        cmocka_unit_test(test_escape_cap_and_marker),
        cmocka_unit_test(test_escape_caller_cut_and_small_room),
        cmocka_unit_test(test_line_worst_access_fits),
        cmocka_unit_test(test_line_too_many_fields_drops_whole_fields),
        cmocka_unit_test(test_text_format_one_line),
        cmocka_unit_test(test_long_msg_marked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
