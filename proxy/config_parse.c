/* SPDX-License-Identifier: Apache-2.0
 * config_parse: builds a configuration generation from YAML text (libyaml's document API),
 * expanding ${VAR} references and reporting every error as "FILE:LINE:COL: message". Owns the
 * libyaml parser and document only for the duration of a load; the generation it returns
 * belongs to the caller. Defaults and the value parsers live in config.c. */
#include "config.h"
#include "error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yaml.h>

/* A config file larger than this is a mistake (a log or a binary given by accident). */
#define MAX_FILE_BYTES (4u * 1024 * 1024)
/* Beyond this many errors, more messages only bury the first ones. */
#define MAX_ERRORS 100
/* Node visits allowed per load. Aliases let a small file name the same large node many times;
 * this bounds the work to a linear multiple of what an alias-free file could ask for. */
#define MAX_STEPS (1u << 20)
#define MAX_WORKERS 1024
/* Ceiling of every admission limit (connections, requests in flight, queue slots): far beyond
 * what a sidecar's descriptors and memory allow, so a larger value is a typo, and small enough
 * that sums of these counts stay well inside 32 bits. */
#define MAX_ADMISSION (1u << 24)
/* listeners[].http2 ceilings. A window cannot exceed 2^31-1 (RFC 9113 section 6.9.1); the others
 * are far beyond what one connection needs, so a larger value is a typo. The header list floor
 * leaves room for a minimal request's pseudo-headers. */
#define H2_MAX_STREAMS 1000000u
#define H2_MAX_WINDOW 2147483647u
#define H2_MIN_HEADER_LIST 1024u
#define H2_MAX_HEADER_LIST (16u * 1024 * 1024)
#define H2_MAX_RESETS 1000000u
#define H2_MAX_CONTROL_FRAMES 10000000u
/* dns: c-ares tries servers in order, so a long list only delays the answer after failures. */
#define DNS_MAX_RESOLVERS 8
#define DNS_DEFAULT_PORT 53
/* RFC 2181 section 8: a TTL is at most 2^31 - 1 seconds; a TTL bound beyond that is a typo. */
#define DNS_MAX_TTL_MS (2147483647ull * 1000)
/* One query attempt; c-ares takes it as an int of milliseconds, and a server that has not
 * answered in a minute will not. */
#define DNS_MAX_TIMEOUT_MS (60ull * 1000)
#define DNS_MAX_ATTEMPTS 10
#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."

struct ctx {
    yaml_document_t *doc;
    const char *name;             /* FILE in messages; borrowed */
    struct rem_config_diag *diag; /* borrowed; may be NULL */
    size_t diag_base;             /* diag->msgs[diag_base..] are this load's */
    uint64_t *diag_pos;           /* their positions, line << 32 | column, for sorting */
    size_t n_errors;
    size_t steps;
    bool listeners_bad; /* section unusable: skip the cross-checks that read it */
    bool upstreams_bad;
    const yaml_node_t *admin_addr; /* value nodes kept for the cross-checks; borrowed */
    const yaml_node_t **listener_addr;
    const yaml_node_t **route_upstream;
};

/* A mapping key this parser knows, and where it was found. */
struct field {
    const char *key;
    yaml_node_t *key_node;
    yaml_node_t *val;
};

/* A name or an address with the node it came from, for sorting out duplicates. */
struct entry {
    const char *name;
    const struct rem_sockaddr *addr;
    const yaml_node_t *node;
    size_t idx;
};

/* Message-sized, quoted and escaped copy of a value. */
struct quoted {
    char s[96];
};

static char *xstrndup(const char *s, size_t len)
{
    char *p = rem_xcalloc(len + 1, 1);

    memcpy(p, s, len);
    return p;
}

/* Growable byte string; aborts on OOM like the rest of the loader. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL) {
            fputs("remora: out of memory loading the configuration\n", stderr);
            abort();
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static char *sb_take(struct sbuf *b)
{
    char *p = b->p ? b->p : rem_xcalloc(1, 1);

    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

static const char *quote(struct quoted *q, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, lim = sizeof(q->s) - 6; /* room for an escape, "...", quote and NUL */

    q->s[o++] = '"';
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (o >= lim - 4) {
            memcpy(q->s + o, "...", 3);
            o += 3;
            break;
        }
        if (ch == '"' || ch == '\\') {
            q->s[o++] = '\\';
            q->s[o++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            q->s[o++] = '\\';
            q->s[o++] = 'x';
            q->s[o++] = hex[ch >> 4];
            q->s[o++] = hex[ch & 15];
        } else {
            q->s[o++] = (char)ch;
        }
    }
    q->s[o++] = '"';
    q->s[o] = '\0';
    return q->s;
}

/* pos orders messages: line << 32 | column, UINT64_MAX for those without a position. */
static void diag_push(struct ctx *c, char *msg, uint64_t pos)
{
    struct rem_config_diag *d = c->diag;
    char **msgs;
    uint64_t *p;

    if (d == NULL) {
        free(msg);
        return;
    }
    msgs = realloc(d->msgs, (d->n + 1) * sizeof(*msgs));
    p = msgs != NULL ? realloc(c->diag_pos, (d->n - c->diag_base + 1) * sizeof(*p)) : NULL;
    if (p == NULL) {
        fputs("remora: out of memory loading the configuration\n", stderr);
        abort();
    }
    d->msgs = msgs;
    c->diag_pos = p;
    c->diag_pos[d->n - c->diag_base] = pos;
    d->msgs[d->n++] = msg;
}

/* Puts this load's messages in file order, as a compiler would list them; walk order groups
 * them by section instead. Insertion sort: stable, and there are at most MAX_ERRORS + 1. */
static void diag_sort(struct ctx *c)
{
    char **m;
    size_t n;

    if (c->diag == NULL || c->diag_pos == NULL)
        return;
    m = c->diag->msgs + c->diag_base;
    n = c->diag->n - c->diag_base;
    for (size_t i = 1; i < n; i++) {
        uint64_t pos = c->diag_pos[i];
        size_t j = i;
        char *msg = m[i];

        for (; j > 0 && c->diag_pos[j - 1] > pos; j--) {
            c->diag_pos[j] = c->diag_pos[j - 1];
            m[j] = m[j - 1];
        }
        c->diag_pos[j] = pos;
        m[j] = msg;
    }
}

/* Records one error with its text already formatted, at mark (0-based in libyaml, 1-based in
 * the message), or with no position when mark is NULL. */
static void push_error(struct ctx *c, const yaml_mark_t *mark, const char *text)
{
    char more[64], *msg;
    size_t len;

    c->n_errors++;
    if (c->n_errors > MAX_ERRORS + 1)
        return;
    if (c->n_errors == MAX_ERRORS + 1) {
        snprintf(more, sizeof(more), "too many errors, giving up after %d", MAX_ERRORS);
        mark = NULL;
        text = more;
    }
    len = strlen(c->name) + strlen(text) + 64;
    msg = rem_xcalloc(len, 1);
    if (mark != NULL)
        snprintf(msg, len, "%s:%zu:%zu: %s", c->name, mark->line + 1, mark->column + 1, text);
    else
        snprintf(msg, len, "%s: %s", c->name, text);
    diag_push(c, msg,
              mark != NULL ? (uint64_t)mark->line << 32 | (uint64_t)(mark->column & 0xffffffffu)
                           : UINT64_MAX);
}

__attribute__((format(printf, 3, 4))) static void errorf_at(struct ctx *c, const yaml_mark_t *mark,
                                                            const char *fmt, ...)
{
    char text[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    push_error(c, mark, text);
}

/* An error about node: the position of its first character, or none when node is NULL (a
 * default, which has no place in the file). */
__attribute__((format(printf, 3, 4))) static void errorf(struct ctx *c, const yaml_node_t *node,
                                                         const char *fmt, ...)
{
    char text[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    push_error(c, node != NULL ? &node->start_mark : NULL, text);
}

static bool budget(struct ctx *c, const yaml_node_t *node)
{
    if (++c->steps <= MAX_STEPS)
        return true;
    if (c->steps == MAX_STEPS + 1)
        errorf(c, node, "document too large (too many nodes after alias expansion)");
    return false;
}

static yaml_node_t *node_at(struct ctx *c, int idx)
{
    return yaml_document_get_node(c->doc, idx);
}

static const char *kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    default:
        return "a scalar";
    }
}

/* A plain empty, "~" or "null" scalar: YAML's null, as left by "key:" with no value. */
static bool is_null(const yaml_node_t *n)
{
    const char *v;

    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    v = (const char *)n->data.scalar.value;
    return n->data.scalar.length == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* Matches the keys of a mapping against fields[]: sets each field's nodes, reports unknown
 * and duplicate keys (at the key) and non-scalar keys. A null node is an empty mapping.
 * Returns false, with an error reported, when node is not a mapping. */
static bool map_fields(struct ctx *c, yaml_node_t *node, const char *subject, const char *where,
                       struct field *fields, size_t n_fields)
{
    struct quoted q;

    for (size_t i = 0; i < n_fields; i++)
        fields[i].key_node = fields[i].val = NULL;
    if (node == NULL || is_null(node))
        return true;
    if (node->type != YAML_MAPPING_NODE) {
        errorf(c, node, "expected a mapping for %s, got %s", subject, kind(node));
        return false;
    }
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        const char *key;
        size_t i;

        if (k == NULL || v == NULL || !budget(c, k))
            return false;
        if (k->type != YAML_SCALAR_NODE) {
            errorf(c, k, "expected a scalar key %s, got %s", where, kind(k));
            continue;
        }
        key = (const char *)k->data.scalar.value;
        for (i = 0; i < n_fields; i++) {
            if (strlen(key) == k->data.scalar.length && strcmp(key, fields[i].key) == 0)
                break;
        }
        if (i == n_fields) {
            errorf(c, k, "unknown key %s %s", quote(&q, key), where);
        } else if (fields[i].key_node != NULL) {
            errorf(c, k, "duplicate key %s %s (first at %zu:%zu)", quote(&q, key), where,
                   fields[i].key_node->start_mark.line + 1,
                   fields[i].key_node->start_mark.column + 1);
        } else {
            fields[i].key_node = k;
            fields[i].val = v;
        }
    }
    return true;
}

/* The items of a sequence (a null node has none). Returns false, with an error reported, when
 * node is not a sequence. */
static bool seq_items(struct ctx *c, yaml_node_t *node, const char *subject,
                      yaml_node_item_t **items, size_t *n)
{
    *items = NULL;
    *n = 0;
    if (is_null(node))
        return true;
    if (node->type != YAML_SEQUENCE_NODE) {
        errorf(c, node, "expected a sequence for %s, got %s", subject, kind(node));
        return false;
    }
    *items = node->data.sequence.items.start;
    *n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    return true;
}

static bool is_name_char(char ch, bool first)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_' ||
           (!first && ch >= '0' && ch <= '9');
}

/* Expands ${VAR}, ${VAR:-default} (default when VAR is unset or empty, as in sh) and "$$".
 * A '$' followed by anything else is kept. Returns a malloc'd string, or NULL with an error
 * reported at node. */
static char *expand(struct ctx *c, const yaml_node_t *node, const char *in, size_t len)
{
    struct sbuf out = {0};
    struct quoted q;
    char *var = NULL;
    size_t i = 0;

    while (i < len) {
        const char *close, *dflt = NULL, *val;
        size_t start, j;

        if (in[i] != '$' || i + 1 >= len || (in[i + 1] != '$' && in[i + 1] != '{')) {
            sb_add(&out, in + i, 1);
            i++;
            continue;
        }
        if (in[i + 1] == '$') {
            sb_add(&out, "$", 1);
            i += 2;
            continue;
        }
        close = memchr(in + i + 2, '}', len - i - 2);
        if (close == NULL) {
            errorf(c, node, "unterminated \"${\" in %s", quote(&q, in));
            goto fail;
        }
        start = j = i + 2;
        while (in + j < close && is_name_char(in[j], j == start))
            j++;
        if (j > start && in + j + 2 <= close && in[j] == ':' && in[j + 1] == '-')
            dflt = in + j + 2;
        else if (j == start || in + j != close) {
            free(var);
            var = xstrndup(in + i, (size_t)(close - in - i) + 1);
            errorf(c, node, "bad variable reference %s (expected ${NAME} or ${NAME:-default})",
                   quote(&q, var));
            goto fail;
        }
        free(var);
        var = xstrndup(in + start, j - start);
        val = getenv(var);
        if (dflt != NULL && (val == NULL || val[0] == '\0')) {
            sb_add(&out, dflt, (size_t)(close - dflt));
        } else if (val == NULL) {
            errorf(c, node, "environment variable %s is not set", var);
            goto fail;
        } else {
            sb_add(&out, val, strlen(val));
        }
        i = (size_t)(close - in) + 1;
    }
    free(var);
    return sb_take(&out);

fail:
    free(var);
    free(out.p);
    return NULL;
}

/* The expanded text of a scalar value. Returns a malloc'd string, or NULL with an error
 * reported when node is not a scalar, is null, holds a NUL byte or names an unset variable. */
static char *scalar(struct ctx *c, yaml_node_t *node, const char *subject)
{
    const char *v;
    size_t len;

    if (node->type != YAML_SCALAR_NODE) {
        errorf(c, node, "expected a scalar for %s, got %s", subject, kind(node));
        return NULL;
    }
    if (is_null(node)) {
        errorf(c, node, "missing value for %s", subject);
        return NULL;
    }
    v = (const char *)node->data.scalar.value;
    len = node->data.scalar.length;
    if (memchr(v, '\0', len) != NULL) {
        errorf(c, node, "NUL character in the value of %s", subject);
        return NULL;
    }
    return expand(c, node, v, len);
}

/* The typed getters below return 0, or -1 with an error reported at node. key is the YAML
 * key, used in messages. */

static int get_string(struct ctx *c, yaml_node_t *node, const char *key, char **out)
{
    char subject[64];
    char *s;

    snprintf(subject, sizeof(subject), "\"%s\"", key);
    s = scalar(c, node, subject);
    if (s == NULL)
        return -1;
    free(*out);
    *out = s;
    return 0;
}

static int get_uint(struct ctx *c, yaml_node_t *node, const char *key, uint64_t min, uint64_t max,
                    uint64_t *out)
{
    struct quoted q;
    char *s = NULL;
    char *end;
    unsigned long long v;
    int rc = -1;

    if (get_string(c, node, key, &s) != 0)
        goto fail;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0') {
        errorf(c, node, "expected an integer for \"%s\", got %s", key, quote(&q, s));
        goto fail;
    }
    if (errno == ERANGE || v < min || v > max) {
        errorf(c, node, "\"%s\" must be between %llu and %llu, got %s", key,
               (unsigned long long)min, (unsigned long long)max, quote(&q, s));
        goto fail;
    }
    *out = v;
    rc = 0;
fail:
    free(s);
    return rc;
}

/* The duration a scalar holds; *text gets its expanded text (malloc'd) for the caller's
 * messages, and is NULL on error. */
static int duration_value(struct ctx *c, yaml_node_t *node, const char *key, char **text,
                          uint64_t *out)
{
    struct quoted q;
    char *s = NULL;

    *text = NULL;
    if (get_string(c, node, key, &s) != 0)
        goto fail;
    if (rem_parse_duration_ms(s, out) != 0) {
        errorf(c, node, "bad duration %s for \"%s\" (expected an integer with ms, s, m or h, or 0)",
               quote(&q, s), key);
        goto fail;
    }
    *text = s;
    return 0;
fail:
    free(s);
    return -1;
}

/* A duration as a person would write it: the largest unit that divides it, else ms. */
static const char *duration_str(char *buf, size_t len, uint64_t ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"h", 60 * 60 * 1000}, {"m", 60 * 1000}, {"s", 1000}};

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(ms / units[i].ms), units[i].unit);
            return buf;
        }
    }
    snprintf(buf, len, ms == 0 ? "0s" : "%llums", (unsigned long long)ms);
    return buf;
}

/* A duration within [min, max], bounds included. A min of 1 reads as "must not be 0". */
static int get_duration_range(struct ctx *c, yaml_node_t *node, const char *key, uint64_t min,
                              uint64_t max, uint64_t *out)
{
    struct quoted q;
    char *s = NULL, lo[32], hi[32];
    uint64_t v;
    int rc = -1;

    if (duration_value(c, node, key, &s, &v) != 0)
        goto fail;
    if (v == 0 && min == 1) {
        errorf(c, node, "\"%s\" must not be 0", key);
        goto fail;
    }
    if (v < min || v > max) {
        errorf(c, node, "\"%s\" must be between %s and %s, got %s", key,
               duration_str(lo, sizeof(lo), min), duration_str(hi, sizeof(hi), max), quote(&q, s));
        goto fail;
    }
    *out = v;
    rc = 0;
fail:
    free(s);
    return rc;
}

/* nonzero: 0 is refused (a period or a timeout that must be able to elapse). */
static int get_duration(struct ctx *c, yaml_node_t *node, const char *key, bool nonzero,
                        uint64_t *out)
{
    return get_duration_range(c, node, key, nonzero ? 1 : 0, UINT64_MAX, out);
}

/* The size a scalar holds; *text gets its expanded text (malloc'd) for the caller's messages,
 * and is NULL on error. */
static int size_value(struct ctx *c, yaml_node_t *node, const char *key, char **text, uint64_t *out)
{
    struct quoted q;
    char *s = NULL;

    *text = NULL;
    if (get_string(c, node, key, &s) != 0)
        goto fail;
    if (rem_parse_size_bytes(s, out) != 0) {
        errorf(c, node,
               "bad size %s for \"%s\" (expected bytes, or an integer with B, KiB, "
               "MiB, GiB, KB, MB or GB)",
               quote(&q, s), key);
        goto fail;
    }
    *text = s;
    return 0;
fail:
    free(s);
    return -1;
}

/* nonzero: 0 is refused (a size that must hold something). */
static int get_size(struct ctx *c, yaml_node_t *node, const char *key, bool nonzero, uint64_t *out)
{
    char *s = NULL;
    uint64_t v;
    int rc = -1;

    if (size_value(c, node, key, &s, &v) != 0)
        goto fail;
    if (nonzero && v == 0) {
        errorf(c, node, "\"%s\" must not be 0", key);
        goto fail;
    }
    *out = v;
    rc = 0;
fail:
    free(s);
    return rc;
}

/* A bound as a size is written: the largest binary unit that divides it, else bytes. */
static const char *size_str(char *buf, size_t len, uint64_t v)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"GiB", 1024 * 1024 * 1024}, {"MiB", 1024 * 1024}, {"KiB", 1024}};

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (v != 0 && v % units[i].mult == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(v / units[i].mult), units[i].unit);
            return buf;
        }
    }
    snprintf(buf, len, "%llu", (unsigned long long)v);
    return buf;
}

/* A size within [min, max], bounds included. */
static int get_size_range(struct ctx *c, yaml_node_t *node, const char *key, uint64_t min,
                          uint64_t max, uint64_t *out)
{
    struct quoted q;
    char *s = NULL, lo[32], hi[32];
    uint64_t v;
    int rc = -1;

    if (size_value(c, node, key, &s, &v) != 0)
        goto fail;
    if (v < min || v > max) {
        errorf(c, node, "\"%s\" must be between %s and %s, got %s", key,
               size_str(lo, sizeof(lo), min), size_str(hi, sizeof(hi), max), quote(&q, s));
        goto fail;
    }
    *out = v;
    rc = 0;
fail:
    free(s);
    return rc;
}

static int get_bool(struct ctx *c, yaml_node_t *node, const char *key, bool *out)
{
    struct quoted q;
    char *s = NULL;
    int rc = -1;

    if (get_string(c, node, key, &s) != 0)
        goto fail;
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        *out = true;
    } else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        *out = false;
    } else {
        errorf(c, node, "expected a boolean (true or false) for \"%s\", got %s", key, quote(&q, s));
        goto fail;
    }
    rc = 0;
fail:
    free(s);
    return rc;
}

/* names[] is NULL-terminated; *out gets the index of the match. */
static int get_enum(struct ctx *c, yaml_node_t *node, const char *key, const char *const *names,
                    const char *expected, int *out)
{
    struct quoted q;
    char *s = NULL;
    int i;

    if (get_string(c, node, key, &s) != 0)
        return -1;
    for (i = 0; names[i] != NULL && strcmp(s, names[i]) != 0; i++)
        ;
    if (names[i] == NULL)
        errorf(c, node, "bad value %s for \"%s\" (expected %s)", quote(&q, s), key, expected);
    else
        *out = i;
    free(s);
    return names[i] == NULL ? -1 : 0;
}

/* Names appear in logs and metric labels: keep them to a safe alphabet. */
static int get_name(struct ctx *c, yaml_node_t *node, char **out)
{
    struct quoted q;
    char *s = NULL;

    if (get_string(c, node, "name", &s) != 0)
        return -1;
    if (s[0] == '\0' || strspn(s, NAME_CHARS) != strlen(s)) {
        errorf(c, node, "bad name %s (expected letters, digits, '-', '_' or '.')", quote(&q, s));
        free(s);
        return -1;
    }
    free(*out);
    *out = s;
    return 0;
}

static void missing(struct ctx *c, const yaml_node_t *map, const char *key, const char *where)
{
    errorf(c, map, "missing key \"%s\" %s", key, where);
}

static int cmp_entry_name(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int r = strcmp(x->name, y->name);

    if (r != 0)
        return r;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Orders by address bytes (rem_parse_sockaddr zero-fills, so equal addresses compare equal),
 * then by position in the file. */
static int cmp_addr(const struct rem_sockaddr *x, const struct rem_sockaddr *y)
{
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(&x->ss, &y->ss, x->len);
}

static int cmp_entry_addr(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int r = cmp_addr(x->addr, y->addr);

    if (r != 0)
        return r;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static uint16_t addr_port(const struct rem_sockaddr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ((const struct sockaddr_in *)&a->ss)->sin_port;
    if (a->ss.ss_family == AF_INET6)
        return ((const struct sockaddr_in6 *)&a->ss)->sin6_port;
    return 0;
}

/* Reports each entry whose name an earlier one already has (n log n, whatever the count). */
static void check_dup_names(struct ctx *c, struct entry *e, size_t n, const char *what)
{
    struct quoted q;
    size_t first = 0;

    qsort(e, n, sizeof(*e), cmp_entry_name);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(e[i].name, e[first].name) != 0) {
            first = i;
            continue;
        }
        errorf(c, e[i].node, "duplicate %s name %s (first at %zu:%zu)", what, quote(&q, e[i].name),
               e[first].node->start_mark.line + 1, e[first].node->start_mark.column + 1);
    }
}

static void parse_workers(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    struct quoted q;
    char *s = NULL;
    char *end;
    unsigned long long v;

    if (get_string(c, node, "workers", &s) != 0)
        return;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (strcmp(s, "auto") == 0)
        cfg->workers = 0;
    else if (s[0] >= '0' && s[0] <= '9' && *end == '\0' && errno == 0 && v >= 1 && v <= MAX_WORKERS)
        cfg->workers = (unsigned)v;
    else
        errorf(c, node, "bad value %s for \"workers\" (expected auto or an integer from 1 to %d)",
               quote(&q, s), MAX_WORKERS);
    free(s);
}

static void parse_address(struct ctx *c, yaml_node_t *node, struct rem_cfg_listener *l)
{
    struct quoted q;

    if (get_string(c, node, "address", &l->address) != 0)
        return;
    if (rem_parse_sockaddr(l->address, &l->addr) != 0)
        errorf(c, node, "bad address %s (expected a numeric host:port, [v6]:port or *:port; %s)",
               quote(&q, l->address), "port 0-65535");
}

/* listeners[].http2. A key left out stays 0 and rem_config_fill_defaults gives it its default
 * once the whole file is read: max_header_list_size follows limits, which may come later. */
static void parse_http2(struct ctx *c, yaml_node_t *node, struct rem_cfg_http2 *h2)
{
    enum { F_STREAMS, F_WINDOW, F_HDR_LIST, F_RESETS, F_RESET_INTERVAL, F_CONTROL, F_N };
    struct field f[F_N] = {
        [F_STREAMS] = {.key = "max_concurrent_streams"},
        [F_WINDOW] = {.key = "initial_window"},
        [F_HDR_LIST] = {.key = "max_header_list_size"},
        [F_RESETS] = {.key = "max_resets"},
        [F_RESET_INTERVAL] = {.key = "reset_interval"},
        [F_CONTROL] = {.key = "max_control_frames"},
    };
    uint64_t v;

    if (!map_fields(c, node, "\"http2\"", "in http2", f, F_N))
        return;
    if (f[F_STREAMS].val != NULL &&
        get_uint(c, f[F_STREAMS].val, "max_concurrent_streams", 1, H2_MAX_STREAMS, &v) == 0)
        h2->max_concurrent_streams = (uint32_t)v;
    if (f[F_WINDOW].val != NULL &&
        get_size_range(c, f[F_WINDOW].val, "initial_window", 1, H2_MAX_WINDOW, &v) == 0)
        h2->initial_window_bytes = (uint32_t)v;
    if (f[F_HDR_LIST].val != NULL &&
        get_size_range(c, f[F_HDR_LIST].val, "max_header_list_size", H2_MIN_HEADER_LIST,
                       H2_MAX_HEADER_LIST, &v) == 0)
        h2->max_header_list_bytes = (uint32_t)v;
    if (f[F_RESETS].val != NULL &&
        get_uint(c, f[F_RESETS].val, "max_resets", 1, H2_MAX_RESETS, &v) == 0)
        h2->max_resets = (uint32_t)v;
    if (f[F_RESET_INTERVAL].val != NULL)
        (void)get_duration(c, f[F_RESET_INTERVAL].val, "reset_interval", true,
                           &h2->reset_interval_ms);
    if (f[F_CONTROL].val != NULL &&
        get_uint(c, f[F_CONTROL].val, "max_control_frames", 1, H2_MAX_CONTROL_FRAMES, &v) == 0)
        h2->max_control_frames = (uint32_t)v;
}

static void parse_listeners(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    enum { F_NAME, F_ADDRESS, F_MAXCONN, F_HTTP2, F_N };
    yaml_node_item_t *items;
    struct entry *names = NULL;
    size_t n, n_names = 0;

    if (!seq_items(c, node, "\"listeners\"", &items, &n)) {
        c->listeners_bad = true;
        return;
    }
    if (n == 0) {
        errorf(c, node, "\"listeners\" must not be empty");
        c->listeners_bad = true;
        return;
    }
    cfg->listeners = rem_xcalloc(n, sizeof(*cfg->listeners));
    c->listener_addr = rem_xcalloc(n, sizeof(*c->listener_addr));
    names = rem_xcalloc(n, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        struct field f[F_N] = {
            [F_NAME] = {.key = "name"},
            [F_ADDRESS] = {.key = "address"},
            [F_MAXCONN] = {.key = "max_connections"},
            [F_HTTP2] = {.key = "http2"},
        };
        struct rem_cfg_listener *l = &cfg->listeners[cfg->n_listeners++];
        yaml_node_t *item = node_at(c, items[i]);
        uint64_t v;

        if (item == NULL || !budget(c, item))
            break;
        if (!map_fields(c, item, "a listener", "in listener", f, F_N))
            continue;
        if (f[F_NAME].val == NULL)
            missing(c, item, "name", "in listener");
        else if (get_name(c, f[F_NAME].val, &l->name) == 0)
            names[n_names++] = (struct entry){.name = l->name, .node = f[F_NAME].val, .idx = i};
        if (f[F_ADDRESS].val == NULL) {
            missing(c, item, "address", "in listener");
        } else {
            parse_address(c, f[F_ADDRESS].val, l);
            c->listener_addr[i] = f[F_ADDRESS].val;
        }
        /* Left out, it stays 0: main derives it from RLIMIT_NOFILE and the memory limit. */
        if (f[F_MAXCONN].val != NULL &&
            get_uint(c, f[F_MAXCONN].val, "max_connections", 1, MAX_ADMISSION, &v) == 0)
            l->max_connections = (uint32_t)v;
        if (f[F_HTTP2].val != NULL)
            parse_http2(c, f[F_HTTP2].val, &l->http2);
    }
    check_dup_names(c, names, n_names, "listener");
    free(names);
}

static void parse_admin(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    struct field f[] = {{.key = "address"}};

    /* Without an address, rem_config_fill_defaults gives admin its default. */
    if (!map_fields(c, node, "\"admin\"", "in admin", f, 1) || f[0].val == NULL)
        return;
    cfg->admin.name = rem_xstrdup("admin");
    parse_address(c, f[0].val, &cfg->admin);
    c->admin_addr = f[0].val;
}

/* node is the value of "endpoints", NULL when the key is absent; map is the upstream. */
static void parse_endpoints(struct ctx *c, yaml_node_t *map, yaml_node_t *node,
                            struct rem_cfg_upstream *u)
{
    yaml_node_item_t *items = NULL;
    struct quoted q;
    size_t n = 0;

    if (node != NULL && !seq_items(c, node, "\"endpoints\"", &items, &n))
        return;
    if (n == 0) {
        errorf(c, node != NULL ? node : map, "upstream %s has no endpoints",
               quote(&q, u->name != NULL ? u->name : ""));
        return;
    }
    u->endpoints = rem_xcalloc(n, sizeof(*u->endpoints));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node_at(c, items[i]);
        const char *why;
        char *s;

        if (item == NULL || !budget(c, item))
            break;
        s = scalar(c, item, "an endpoint");
        if (s == NULL)
            continue;
        if (rem_parse_endpoint(s, &u->endpoints[u->n_endpoints], &why) != 0)
            errorf(c, item, "bad endpoint %s (%s)", quote(&q, s), why);
        else
            u->n_endpoints++;
        free(s);
    }
}

/* The request target a health check sends as is: origin-form (RFC 9112 section 3.2.1), so a
 * query is allowed, unlike in a route; no fragment, and nothing a request line cannot carry. */
static void parse_check_path(struct ctx *c, yaml_node_t *node, char **out)
{
    struct quoted q;
    char *s = NULL;
    bool ok;

    if (get_string(c, node, "path", &s) != 0)
        return;
    ok = s[0] == '/';
    for (const unsigned char *p = (const unsigned char *)s; ok && *p != '\0'; p++)
        ok = *p > 0x20 && *p < 0x7f && *p != '#';
    if (!ok) {
        errorf(c, node,
               "bad path %s for \"path\" (expected a path starting with \"/\", query allowed; "
               "visible ASCII, no \"#\")",
               quote(&q, s));
        free(s);
        return;
    }
    free(*out);
    *out = s;
}

/* node is the value of "health_check"; its numeric defaults are already in *hc. Present, it
 * must name a path: a mapping of timings alone would turn nothing on. */
static void parse_health_check(struct ctx *c, yaml_node_t *node, struct rem_cfg_health_check *hc)
{
    enum { F_PATH, F_INTERVAL, F_TIMEOUT, F_RISE, F_FALL, F_N };
    struct field f[F_N] = {
        [F_PATH] = {.key = "path"},       [F_INTERVAL] = {.key = "interval"},
        [F_TIMEOUT] = {.key = "timeout"}, [F_RISE] = {.key = "rise"},
        [F_FALL] = {.key = "fall"},
    };
    uint64_t v;

    if (!map_fields(c, node, "\"health_check\"", "in health_check", f, F_N))
        return;
    if (f[F_PATH].val == NULL)
        missing(c, node, "path", "in health_check");
    else
        parse_check_path(c, f[F_PATH].val, &hc->path);
    if (f[F_INTERVAL].val != NULL)
        (void)get_duration(c, f[F_INTERVAL].val, "interval", true, &hc->interval_ms);
    /* A probe should not outlive the interval unless asked to. */
    if (f[F_TIMEOUT].val != NULL)
        (void)get_duration(c, f[F_TIMEOUT].val, "timeout", true, &hc->timeout_ms);
    else if (hc->interval_ms < REM_DEF_HC_TIMEOUT_MS)
        hc->timeout_ms = hc->interval_ms;
    if (f[F_RISE].val != NULL && get_uint(c, f[F_RISE].val, "rise", 1, 1000, &v) == 0)
        hc->rise = (uint32_t)v;
    if (f[F_FALL].val != NULL && get_uint(c, f[F_FALL].val, "fall", 1, 1000, &v) == 0)
        hc->fall = (uint32_t)v;
}

static void parse_upstreams(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    enum {
        F_NAME,
        F_ENDPOINTS,
        F_PROTOCOL,
        F_CONNECT,
        F_IDLE,
        F_MAXCONN,
        F_MAXREQ,
        F_MAXPEND,
        F_QUEUE_TIMEOUT,
        F_ADAPTIVE,
        F_LB,
        F_HEALTH,
        F_N
    };
    static const char *const protocols[] = {"http1", "h2c", "h2", NULL};
    static const char *const lbs[] = {"round_robin", "least_request", NULL};
    yaml_node_item_t *items;
    struct entry *names = NULL;
    size_t n, n_names = 0;

    if (!seq_items(c, node, "\"upstreams\"", &items, &n)) {
        c->upstreams_bad = true;
        return;
    }
    if (n == 0) {
        errorf(c, node, "\"upstreams\" must not be empty");
        c->upstreams_bad = true;
        return;
    }
    cfg->upstreams = rem_xcalloc(n, sizeof(*cfg->upstreams));
    names = rem_xcalloc(n, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        struct field f[F_N] = {
            [F_NAME] = {.key = "name"},
            [F_ENDPOINTS] = {.key = "endpoints"},
            [F_PROTOCOL] = {.key = "protocol"},
            [F_CONNECT] = {.key = "connect_timeout"},
            [F_IDLE] = {.key = "idle_timeout"},
            [F_MAXCONN] = {.key = "max_connections"},
            [F_MAXREQ] = {.key = "max_requests"},
            [F_MAXPEND] = {.key = "max_pending"},
            [F_QUEUE_TIMEOUT] = {.key = "queue_timeout"},
            [F_ADAPTIVE] = {.key = "adaptive"},
            [F_LB] = {.key = "lb"},
            [F_HEALTH] = {.key = "health_check"},
        };
        struct rem_cfg_upstream *u = &cfg->upstreams[cfg->n_upstreams++];
        yaml_node_t *item = node_at(c, items[i]);
        uint64_t v;
        int proto, lb;

        rem_cfg_upstream_defaults(u);
        if (item == NULL || !budget(c, item))
            break;
        if (!map_fields(c, item, "an upstream", "in upstream", f, F_N))
            continue;
        if (f[F_NAME].val == NULL)
            missing(c, item, "name", "in upstream");
        else if (get_name(c, f[F_NAME].val, &u->name) == 0)
            names[n_names++] = (struct entry){.name = u->name, .node = f[F_NAME].val, .idx = i};
        parse_endpoints(c, item, f[F_ENDPOINTS].val, u);
        /* "h2" is known only to be refused with its own message: upstream TLS is not built
         * yet, and taking it would send cleartext to a TLS port. */
        if (f[F_PROTOCOL].val != NULL &&
            get_enum(c, f[F_PROTOCOL].val, "protocol", protocols, "http1 or h2c", &proto) == 0) {
            if (proto == REM_PROTO_H2)
                errorf(c, f[F_PROTOCOL].val,
                       "protocol \"h2\" (HTTP/2 over TLS) is not supported yet; use \"h2c\" "
                       "(cleartext HTTP/2 with prior knowledge)");
            else
                u->protocol = (enum rem_proto)proto;
        }
        if (f[F_CONNECT].val != NULL)
            (void)get_duration(c, f[F_CONNECT].val, "connect_timeout", false,
                               &u->connect_timeout_ms);
        if (f[F_IDLE].val != NULL)
            (void)get_duration(c, f[F_IDLE].val, "idle_timeout", false, &u->idle_timeout_ms);
        if (f[F_MAXCONN].val != NULL &&
            get_uint(c, f[F_MAXCONN].val, "max_connections", 1, UINT32_MAX, &v) == 0)
            u->max_connections = (uint32_t)v;
        if (f[F_MAXREQ].val != NULL &&
            get_uint(c, f[F_MAXREQ].val, "max_requests", 1, MAX_ADMISSION, &v) == 0)
            u->max_requests = (uint32_t)v;
        if (f[F_MAXPEND].val != NULL &&
            get_uint(c, f[F_MAXPEND].val, "max_pending", 0, MAX_ADMISSION, &v) == 0)
            u->max_pending = (uint32_t)v;
        /* A queued request waits for a slot much as a connect waits for the endpoint, so it
         * may by default wait as long. connect_timeout 0 means no connect timeout, but a queue
         * wait must always end: the built-in connect timeout then stands in. */
        if (f[F_QUEUE_TIMEOUT].val != NULL)
            (void)get_duration(c, f[F_QUEUE_TIMEOUT].val, "queue_timeout", true,
                               &u->queue_timeout_ms);
        else if (u->connect_timeout_ms != 0)
            u->queue_timeout_ms = u->connect_timeout_ms;
        if (f[F_ADAPTIVE].val != NULL)
            (void)get_bool(c, f[F_ADAPTIVE].val, "adaptive", &u->adaptive);
        if (f[F_LB].val != NULL &&
            get_enum(c, f[F_LB].val, "lb", lbs, "round_robin or least_request", &lb) == 0)
            u->lb = (enum rem_lb)lb;
        if (f[F_HEALTH].val != NULL)
            parse_health_check(c, f[F_HEALTH].val, &u->health_check);
    }
    check_dup_names(c, names, n_names, "upstream");
    free(names);
}

static void lower(char *s)
{
    for (; *s != '\0'; s++) {
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
    }
}

static bool host_chars(const char *s)
{
    if (*s == '\0' || *s == '.' || strstr(s, "..") != NULL)
        return false;
    for (; *s != '\0'; s++) {
        char ch = *s;

        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
              ch == '.'))
            return false;
    }
    return true;
}

/* match.host: an exact name, or "*.suffix" kept as ".suffix"; both lower-cased since host
 * names compare case-insensitively (RFC 9110 section 4.2.3). */
static void parse_host(struct ctx *c, yaml_node_t *node, struct rem_cfg_route *r)
{
    struct quoted q;
    char *s = NULL;

    if (get_string(c, node, "host", &s) != 0)
        return;
    lower(s);
    /* "example.com." is the same name as "example.com"; the router strips the dot of the
     * request's Host too. */
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == '.' && s[n - 2] != '.')
        s[n - 1] = '\0';
    if (s[0] == '*' && s[1] == '.' && host_chars(s + 2)) {
        memmove(s, s + 1, strlen(s));
        r->host_wildcard = true;
    } else if (!host_chars(s)) {
        errorf(c, node, "bad host %s (expected a host name or *.suffix)", quote(&q, s));
        free(s);
        return;
    }
    r->host = s;
}

/* An origin-form path as the router compares it: no query, fragment, space or control. */
static void parse_path(struct ctx *c, yaml_node_t *node, const char *key, char **out)
{
    struct quoted q;
    char *s = NULL;

    if (get_string(c, node, key, &s) != 0)
        return;
    if (s[0] != '/' || strpbrk(s, "?# \t") != NULL) {
        errorf(c, node,
               "bad path %s for \"%s\" (expected a path starting with \"/\", without "
               "query)",
               quote(&q, s), key);
        free(s);
        return;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            errorf(c, node, "bad path %s for \"%s\" (control character)", quote(&q, s), key);
            free(s);
            return;
        }
    }
    *out = s;
}

/* RFC 9110 section 5.6.2: a method is a token. */
static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              strchr("!#$%&'*+-.^_`|~", ch) != NULL))
            return false;
    }
    return true;
}

static void parse_methods(struct ctx *c, yaml_node_t *node, struct rem_cfg_route *r)
{
    yaml_node_item_t *items;
    struct quoted q;
    size_t n;

    if (!seq_items(c, node, "\"methods\"", &items, &n))
        return;
    if (n == 0) {
        errorf(c, node, "\"methods\" must not be empty (leave it out to match any method)");
        return;
    }
    r->methods = rem_xcalloc(n, sizeof(*r->methods));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node_at(c, items[i]);
        char *s;

        if (item == NULL || !budget(c, item))
            break;
        s = scalar(c, item, "a method");
        if (s == NULL)
            continue;
        if (!is_token(s)) {
            errorf(c, item, "bad method %s (expected an HTTP method token)", quote(&q, s));
            free(s);
            continue;
        }
        for (char *p = s; *p != '\0'; p++) {
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 'a' + 'A');
        }
        r->methods[r->n_methods++] = s;
    }
}

static void parse_match(struct ctx *c, yaml_node_t *node, struct rem_cfg_route *r)
{
    enum { F_HOST, F_PATH, F_PREFIX, F_METHODS, F_N };
    struct field f[F_N] = {
        [F_HOST] = {.key = "host"},
        [F_PATH] = {.key = "path"},
        [F_PREFIX] = {.key = "path_prefix"},
        [F_METHODS] = {.key = "methods"},
    };

    if (!map_fields(c, node, "\"match\"", "in match", f, F_N))
        return;
    if (f[F_HOST].val != NULL)
        parse_host(c, f[F_HOST].val, r);
    if (f[F_PATH].val != NULL && f[F_PREFIX].val != NULL) {
        bool prefix_last =
            f[F_PREFIX].key_node->start_mark.index > f[F_PATH].key_node->start_mark.index;

        errorf(c, prefix_last ? f[F_PREFIX].val : f[F_PATH].val,
               "\"path\" and \"path_prefix\" are mutually exclusive");
    } else if (f[F_PATH].val != NULL) {
        parse_path(c, f[F_PATH].val, "path", &r->path);
    } else if (f[F_PREFIX].val != NULL) {
        parse_path(c, f[F_PREFIX].val, "path_prefix", &r->path_prefix);
    }
    if (f[F_METHODS].val != NULL)
        parse_methods(c, f[F_METHODS].val, r);
}

/* YAML's spellings of infinity, which a bucket list must leave out. */
static bool is_inf(const char *s)
{
    s += *s == '+' || *s == '-';
    s += *s == '.';
    return strcasecmp(s, "inf") == 0 || strcasecmp(s, "infinity") == 0;
}

/* A histogram bucket list (metrics.buckets, routes[].buckets). *out is replaced only when
 * every item is good, so metrics.buckets is never left half-built. */
static void parse_buckets(struct ctx *c, yaml_node_t *node, struct rem_cfg_buckets *out)
{
    struct rem_cfg_buckets b = {0};
    yaml_node_item_t *items;
    size_t n, errors = c->n_errors;
    char *prev = NULL;
    struct quoted q;

    if (!seq_items(c, node, "\"buckets\"", &items, &n))
        return;
    if (n == 0) {
        errorf(c, node, "\"buckets\" must not be empty");
        return;
    }
    if (n > REM_MAX_BUCKETS) {
        errorf(c, node_at(c, items[REM_MAX_BUCKETS]), "too many buckets (at most %d)",
               REM_MAX_BUCKETS);
        n = REM_MAX_BUCKETS;
    }
    b.le = rem_xcalloc(n, sizeof(*b.le));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node_at(c, items[i]);
        double v;
        char *s;

        if (item == NULL || !budget(c, item))
            break;
        s = scalar(c, item, "a bucket");
        if (s == NULL)
            continue;
        if (is_inf(s)) {
            errorf(c, item, "bad bucket %s (+Inf is implicit; leave it out)", quote(&q, s));
        } else if (rem_parse_seconds(s, &v) != 0) {
            errorf(c, item, "bad bucket %s (expected seconds as a number, or a duration like 5ms)",
                   quote(&q, s));
        } else if (!(v > 0)) {
            errorf(c, item, "bucket must be greater than 0");
        } else if (b.n > 0 && v <= b.le[b.n - 1]) {
            /* Both passed rem_parse_seconds: digits, signs, '.', 'e' and units only. */
            errorf(c, item, "buckets must be strictly increasing: %s after %s", s, prev);
        } else {
            b.le[b.n++] = v;
            free(prev);
            prev = s;
            s = NULL;
        }
        free(s);
    }
    free(prev);
    if (c->n_errors != errors) {
        free(b.le);
        return;
    }
    free(out->le);
    *out = b;
}

static void parse_routes(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    enum { F_NAME, F_MATCH, F_UPSTREAM, F_TIMEOUT, F_BUCKETS, F_MAXREQ, F_MAXPEND, F_N };
    yaml_node_item_t *items;
    struct entry *names = NULL;
    size_t n, n_names = 0;

    if (!seq_items(c, node, "\"routes\"", &items, &n))
        return;
    if (n == 0) {
        errorf(c, node,
               "\"routes\" must not be empty (leave it out for one route to the first "
               "upstream)");
        return;
    }
    cfg->routes = rem_xcalloc(n, sizeof(*cfg->routes));
    c->route_upstream = rem_xcalloc(n, sizeof(*c->route_upstream));
    names = rem_xcalloc(n, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        struct field f[F_N] = {
            [F_NAME] = {.key = "name"},           [F_MATCH] = {.key = "match"},
            [F_UPSTREAM] = {.key = "upstream"},   [F_TIMEOUT] = {.key = "timeout"},
            [F_BUCKETS] = {.key = "buckets"},     [F_MAXREQ] = {.key = "max_requests"},
            [F_MAXPEND] = {.key = "max_pending"},
        };
        struct rem_cfg_route *r = &cfg->routes[cfg->n_routes++];
        yaml_node_t *item = node_at(c, items[i]);
        uint64_t v;

        r->timeout_ms = REM_DEF_ROUTE_TIMEOUT_MS;
        r->max_pending = REM_DEF_MAX_PENDING;
        if (item == NULL || !budget(c, item))
            break;
        if (!map_fields(c, item, "a route", "in route", f, F_N))
            continue;
        if (f[F_NAME].val == NULL)
            missing(c, item, "name", "in route");
        else if (get_name(c, f[F_NAME].val, &r->name) == 0)
            names[n_names++] = (struct entry){.name = r->name, .node = f[F_NAME].val, .idx = i};
        if (f[F_MATCH].val != NULL)
            parse_match(c, f[F_MATCH].val, r);
        if (f[F_UPSTREAM].val == NULL)
            missing(c, item, "upstream", "in route");
        else if (get_string(c, f[F_UPSTREAM].val, "upstream", &r->upstream) == 0)
            c->route_upstream[i] = f[F_UPSTREAM].val;
        if (f[F_TIMEOUT].val != NULL)
            (void)get_duration(c, f[F_TIMEOUT].val, "timeout", false, &r->timeout_ms);
        if (f[F_BUCKETS].val != NULL)
            parse_buckets(c, f[F_BUCKETS].val, &r->buckets);
        /* max_requests left out means no route limit (0); a queue length without it would
         * bound a queue that never forms, so it is refused rather than ignored. */
        if (f[F_MAXREQ].val != NULL &&
            get_uint(c, f[F_MAXREQ].val, "max_requests", 1, MAX_ADMISSION, &v) == 0)
            r->max_requests = (uint32_t)v;
        if (f[F_MAXPEND].val != NULL) {
            if (f[F_MAXREQ].val == NULL)
                errorf(c, f[F_MAXPEND].key_node,
                       "\"max_pending\" on a route needs \"max_requests\"");
            if (get_uint(c, f[F_MAXPEND].val, "max_pending", 0, MAX_ADMISSION, &v) == 0)
                r->max_pending = (uint32_t)v;
        }
    }
    check_dup_names(c, names, n_names, "route");
    free(names);
}

static void parse_limits(struct ctx *c, yaml_node_t *node, struct rem_cfg_limits *lim)
{
    enum { F_HDR_BYTES, F_HEADERS, F_BODY, F_IDLE, F_HDR_TIMEOUT, F_BUFFER, F_N };
    struct field f[F_N] = {
        [F_HDR_BYTES] = {.key = "max_header_bytes"},
        [F_HEADERS] = {.key = "max_headers"},
        [F_BODY] = {.key = "max_body_bytes"},
        [F_IDLE] = {.key = "client_idle_timeout"},
        [F_HDR_TIMEOUT] = {.key = "request_header_timeout"},
        [F_BUFFER] = {.key = "buffer_bytes"},
    };
    uint64_t v;

    if (!map_fields(c, node, "\"limits\"", "in limits", f, F_N))
        return;
    if (f[F_HDR_BYTES].val != NULL)
        (void)get_size(c, f[F_HDR_BYTES].val, "max_header_bytes", true, &lim->max_header_bytes);
    if (f[F_HEADERS].val != NULL &&
        get_uint(c, f[F_HEADERS].val, "max_headers", 1, UINT32_MAX, &v) == 0)
        lim->max_headers = (uint32_t)v;
    if (f[F_BODY].val != NULL)
        (void)get_size(c, f[F_BODY].val, "max_body_bytes", false, &lim->max_body_bytes);
    if (f[F_IDLE].val != NULL)
        (void)get_duration(c, f[F_IDLE].val, "client_idle_timeout", false,
                           &lim->client_idle_timeout_ms);
    if (f[F_HDR_TIMEOUT].val != NULL)
        (void)get_duration(c, f[F_HDR_TIMEOUT].val, "request_header_timeout", false,
                           &lim->request_header_timeout_ms);
    if (f[F_BUFFER].val != NULL)
        (void)get_size(c, f[F_BUFFER].val, "buffer_bytes", true, &lim->buffer_bytes);
}

static void parse_log(struct ctx *c, yaml_node_t *node, struct rem_cfg_log *lg)
{
    enum { F_LEVEL, F_FORMAT, F_ACCESS, F_N };
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    static const char *const formats[] = {"json", "text", NULL};
    struct field f[F_N] = {
        [F_LEVEL] = {.key = "level"},
        [F_FORMAT] = {.key = "format"},
        [F_ACCESS] = {.key = "access_log"},
    };
    int v;

    if (!map_fields(c, node, "\"log\"", "in log", f, F_N))
        return;
    if (f[F_LEVEL].val != NULL &&
        get_enum(c, f[F_LEVEL].val, "level", levels, "debug, info, warn or error", &v) == 0)
        lg->level = (enum rem_log_level)v;
    if (f[F_FORMAT].val != NULL &&
        get_enum(c, f[F_FORMAT].val, "format", formats, "json or text", &v) == 0)
        lg->format = (enum rem_log_format)v;
    if (f[F_ACCESS].val != NULL)
        (void)get_bool(c, f[F_ACCESS].val, "access_log", &lg->access_log);
}

static void parse_metrics(struct ctx *c, yaml_node_t *node, struct rem_cfg_metrics *m)
{
    struct field f[] = {{.key = "buckets"}};

    if (map_fields(c, node, "\"metrics\"", "in metrics", f, 1) && f[0].val != NULL)
        parse_buckets(c, f[0].val, &m->buckets);
}

/* One dns.resolvers item: "ip", "ip:port", "[v6]" or "[v6]:port", port 53 when left out.
 * Numeric only: the resolver cannot be found by resolving. Returns NULL, or what is wrong. */
static const char *resolver_problem(const char *s, struct rem_sockaddr *out)
{
    static const char *const expected =
        "expected a numeric ip, ip:port, [v6] or [v6]:port; port 1-65535, default 53";
    char buf[INET6_ADDRSTRLEN + 16], host[INET6_ADDRSTRLEN];
    const char *colon;
    size_t len = strlen(s);
    struct in6_addr a6;
    struct in_addr a4;

    if (len + sizeof(":53") > sizeof(buf))
        return expected;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return expected;
        snprintf(buf, sizeof(buf), close[1] == '\0' ? "%s:%d" : "%s", s, DNS_DEFAULT_PORT);
    } else {
        colon = strchr(s, ':');
        /* resolv.conf writes IPv6 bare, but here "::1:53" could be either. */
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return inet_pton(AF_INET6, s, &a6) == 1 ? "put an IPv6 address in brackets: [v6]"
                                                    : expected;
        /* rem_parse_sockaddr takes "*" and "localhost" too: only a dotted quad here. */
        len = colon != NULL ? (size_t)(colon - s) : len;
        if (len >= sizeof(host))
            return expected;
        memcpy(host, s, len);
        host[len] = '\0';
        if (inet_pton(AF_INET, host, &a4) != 1)
            return expected;
        snprintf(buf, sizeof(buf), colon == NULL ? "%s:%d" : "%s", s, DNS_DEFAULT_PORT);
    }
    if (rem_parse_sockaddr(buf, out) != 0 || addr_port(out) == 0)
        return expected;
    return NULL;
}

static void parse_resolvers(struct ctx *c, yaml_node_t *node, struct rem_cfg_dns *dns)
{
    yaml_node_item_t *items;
    struct entry *e = NULL;
    struct quoted q;
    size_t n, first = 0;
    char abuf[64];

    if (!seq_items(c, node, "\"resolvers\"", &items, &n))
        return;
    if (n == 0) {
        errorf(c, node, "\"resolvers\" must not be empty (leave it out to use /etc/resolv.conf)");
        return;
    }
    if (n > DNS_MAX_RESOLVERS) {
        errorf(c, node_at(c, items[DNS_MAX_RESOLVERS]), "too many resolvers (at most %d)",
               DNS_MAX_RESOLVERS);
        n = DNS_MAX_RESOLVERS;
    }
    dns->resolvers = rem_xcalloc(n, sizeof(*dns->resolvers));
    e = rem_xcalloc(n, sizeof(*e));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node_at(c, items[i]);
        struct rem_sockaddr *a = &dns->resolvers[dns->n_resolvers];
        const char *why;
        char *s;

        if (item == NULL || !budget(c, item))
            break;
        s = scalar(c, item, "a resolver");
        if (s == NULL)
            continue;
        why = resolver_problem(s, a);
        if (why != NULL) {
            errorf(c, item, "bad resolver %s (%s)", quote(&q, s), why);
        } else {
            e[dns->n_resolvers] = (struct entry){.addr = a, .node = item, .idx = i};
            dns->n_resolvers++;
        }
        free(s);
    }
    /* The same server twice only doubles the wait on it when it is down. */
    qsort(e, dns->n_resolvers, sizeof(*e), cmp_entry_addr);
    for (size_t i = 1; i < dns->n_resolvers; i++) {
        if (cmp_addr(e[i].addr, e[first].addr) != 0) {
            first = i;
            continue;
        }
        if (rem_sockaddr_str(e[i].addr, abuf, sizeof(abuf)) != 0)
            abuf[0] = '\0';
        errorf(c, e[i].node, "duplicate resolver %s (first at %zu:%zu)", abuf,
               e[first].node->start_mark.line + 1, e[first].node->start_mark.column + 1);
    }
    free(e);
}

/* The dns section; its defaults are already in *dns. min_ttl may be 0 (no floor); max_ttl
 * must not be below it, whichever of the two is written or left at its default. */
static void parse_dns(struct ctx *c, yaml_node_t *node, struct rem_cfg_dns *dns)
{
    enum { F_RESOLVERS, F_MIN_TTL, F_MAX_TTL, F_TIMEOUT, F_ATTEMPTS, F_FAMILY, F_STALE_TTL, F_N };
    static const char *const families[] = {"auto", "v4", "v6", NULL};
    struct field f[F_N] = {
        [F_RESOLVERS] = {.key = "resolvers"}, [F_MIN_TTL] = {.key = "min_ttl"},
        [F_MAX_TTL] = {.key = "max_ttl"},     [F_TIMEOUT] = {.key = "timeout"},
        [F_ATTEMPTS] = {.key = "attempts"},   [F_FAMILY] = {.key = "family"},
        [F_STALE_TTL] = {.key = "stale_ttl"},
    };
    bool ttl_ok = true;
    char lo[32], hi[32];
    uint64_t v;
    int family;

    if (!map_fields(c, node, "\"dns\"", "in dns", f, F_N))
        return;
    if (f[F_RESOLVERS].val != NULL)
        parse_resolvers(c, f[F_RESOLVERS].val, dns);
    if (f[F_MIN_TTL].val != NULL && get_duration_range(c, f[F_MIN_TTL].val, "min_ttl", 0,
                                                       DNS_MAX_TTL_MS, &dns->min_ttl_ms) != 0)
        ttl_ok = false;
    if (f[F_MAX_TTL].val != NULL && get_duration_range(c, f[F_MAX_TTL].val, "max_ttl", 1,
                                                       DNS_MAX_TTL_MS, &dns->max_ttl_ms) != 0)
        ttl_ok = false;
    if (ttl_ok && dns->max_ttl_ms < dns->min_ttl_ms) {
        duration_str(lo, sizeof(lo), dns->min_ttl_ms);
        duration_str(hi, sizeof(hi), dns->max_ttl_ms);
        if (f[F_MAX_TTL].val != NULL)
            errorf(c, f[F_MAX_TTL].val, "\"max_ttl\" (%s) must not be less than \"min_ttl\" (%s%s)",
                   hi, lo, f[F_MIN_TTL].val != NULL ? "" : ", the default");
        else
            errorf(c, f[F_MIN_TTL].val,
                   "\"min_ttl\" (%s) must not be greater than \"max_ttl\" (%s, the default)", lo,
                   hi);
    }
    if (f[F_TIMEOUT].val != NULL)
        (void)get_duration_range(c, f[F_TIMEOUT].val, "timeout", 1, DNS_MAX_TIMEOUT_MS,
                                 &dns->timeout_ms);
    if (f[F_ATTEMPTS].val != NULL &&
        get_uint(c, f[F_ATTEMPTS].val, "attempts", 1, DNS_MAX_ATTEMPTS, &v) == 0)
        dns->attempts = (uint32_t)v;
    if (f[F_FAMILY].val != NULL &&
        get_enum(c, f[F_FAMILY].val, "family", families, "auto, v4 or v6", &family) == 0)
        dns->family = (enum rem_dns_family)family;
    if (f[F_STALE_TTL].val != NULL)
        (void)get_duration_range(c, f[F_STALE_TTL].val, "stale_ttl", 0, DNS_MAX_TTL_MS,
                                 &dns->stale_ttl_ms);
}

/* Fills upstream_idx of every route; reports names with no upstream. */
static void resolve_routes(struct ctx *c, struct rem_config *cfg)
{
    struct entry *ups = rem_xcalloc(cfg->n_upstreams, sizeof(*ups));
    struct quoted q1, q2;
    size_t n = 0;

    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        if (cfg->upstreams[i].name != NULL)
            ups[n++] = (struct entry){.name = cfg->upstreams[i].name, .idx = i};
    }
    qsort(ups, n, sizeof(*ups), cmp_entry_name);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        struct rem_cfg_route *r = &cfg->routes[i];
        size_t lo = 0, hi = n;

        if (r->upstream == NULL)
            continue;
        /* Lower bound: duplicates sort by index, so the first definition wins. */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;

            if (strcmp(ups[mid].name, r->upstream) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < n && strcmp(ups[lo].name, r->upstream) == 0)
            r->upstream_idx = ups[lo].idx;
        else
            errorf(c, c->route_upstream ? c->route_upstream[i] : NULL,
                   "unknown upstream %s in route %s", quote(&q1, r->upstream),
                   quote(&q2, r->name ? r->name : ""));
    }
    free(ups);
}

/* Two listeners (or a listener and admin) on the same address cannot both bind. Port 0 asks
 * the kernel for a fresh port, so it never collides. */
static void check_addresses(struct ctx *c, struct rem_config *cfg)
{
    struct entry *e = rem_xcalloc(cfg->n_listeners + 1, sizeof(*e));
    struct quoted q;
    size_t n = 0, first = 0;
    char abuf[64];

    for (size_t i = 0; i <= cfg->n_listeners; i++) {
        const struct rem_cfg_listener *l = i < cfg->n_listeners ? &cfg->listeners[i] : &cfg->admin;

        if (l->addr.len == 0 || addr_port(&l->addr) == 0)
            continue;
        e[n++] = (struct entry){
            .name = l->name ? l->name : "",
            .addr = &l->addr,
            .node = i < cfg->n_listeners ? (c->listener_addr ? c->listener_addr[i] : NULL)
                                         : c->admin_addr,
            .idx = i,
        };
    }
    qsort(e, n, sizeof(*e), cmp_entry_addr);
    for (size_t i = 1; i < n; i++) {
        /* Report at the later one, unless it is the admin default, which has no node. */
        const struct entry *dup = e[i].node != NULL ? &e[i] : &e[first];
        const struct entry *other = dup == &e[i] ? &e[first] : &e[i];

        if (cmp_addr(e[i].addr, e[first].addr) != 0) {
            first = i;
            continue;
        }
        if (rem_sockaddr_str(dup->addr, abuf, sizeof(abuf)) != 0)
            abuf[0] = '\0';
        if (other->idx == cfg->n_listeners)
            errorf(c, dup->node, "address %s is already used by admin", abuf);
        else
            errorf(c, dup->node, "address %s is already used by listener %s", abuf,
                   quote(&q, other->name));
    }
    free(e);
}

static struct rem_config *build(struct ctx *c, yaml_node_t *root)
{
    enum {
        F_WORKERS,
        F_LISTENERS,
        F_ADMIN,
        F_UPSTREAMS,
        F_ROUTES,
        F_LIMITS,
        F_LOG,
        F_METRICS,
        F_DNS,
        F_N
    };
    struct field f[F_N] = {
        [F_WORKERS] = {.key = "workers"}, [F_LISTENERS] = {.key = "listeners"},
        [F_ADMIN] = {.key = "admin"},     [F_UPSTREAMS] = {.key = "upstreams"},
        [F_ROUTES] = {.key = "routes"},   [F_LIMITS] = {.key = "limits"},
        [F_LOG] = {.key = "log"},         [F_METRICS] = {.key = "metrics"},
        [F_DNS] = {.key = "dns"},
    };
    struct rem_config *cfg = rem_config_new(c->name);

    if (!map_fields(c, root, "the document", "at top level", f, F_N))
        goto fail;
    if (f[F_WORKERS].val != NULL)
        parse_workers(c, f[F_WORKERS].val, cfg);
    if (f[F_LISTENERS].val != NULL)
        parse_listeners(c, f[F_LISTENERS].val, cfg);
    if (f[F_ADMIN].val != NULL)
        parse_admin(c, f[F_ADMIN].val, cfg);
    if (f[F_UPSTREAMS].val != NULL)
        parse_upstreams(c, f[F_UPSTREAMS].val, cfg);
    if (f[F_ROUTES].val != NULL)
        parse_routes(c, f[F_ROUTES].val, cfg);
    if (f[F_LIMITS].val != NULL)
        parse_limits(c, f[F_LIMITS].val, &cfg->limits);
    if (f[F_LOG].val != NULL)
        parse_log(c, f[F_LOG].val, &cfg->log);
    if (f[F_METRICS].val != NULL)
        parse_metrics(c, f[F_METRICS].val, &cfg->metrics);
    if (f[F_DNS].val != NULL)
        parse_dns(c, f[F_DNS].val, &cfg->dns);
    /* A section that failed as a whole gets its default here; the cross-checks skip it. */
    rem_config_fill_defaults(cfg);
    if (!c->upstreams_bad)
        resolve_routes(c, cfg);
    if (!c->listeners_bad)
        check_addresses(c, cfg);
    if (c->n_errors > 0)
        goto fail;
    return cfg;

fail:
    rem_config_unref(cfg);
    return NULL;
}

static void syntax_error(struct ctx *c, const yaml_parser_t *parser, const char *buf, size_t len)
{
    const char *problem = parser->problem ? parser->problem : "unknown error";
    yaml_mark_t mark = parser->problem_mark;

    switch (parser->error) {
    case YAML_MEMORY_ERROR:
        errorf_at(c, NULL, "out of memory while reading YAML");
        return;
    case YAML_READER_ERROR:
        /* The reader reports a byte offset, not a mark: count lines up to it. */
        mark.line = mark.column = 0;
        for (size_t i = 0; i < parser->problem_offset && i < len; i++) {
            if (buf[i] == '\n') {
                mark.line++;
                mark.column = 0;
            } else {
                mark.column++;
            }
        }
        break;
    default:
        break;
    }
    /* libyaml's context names the construct the problem interrupts, often lines earlier (an
     * unclosed quote is only noticed at the end of the file). */
    if (parser->context != NULL)
        errorf_at(c, &mark, "YAML syntax error: %s (%s at %zu:%zu)", problem, parser->context,
                  parser->context_mark.line + 1, parser->context_mark.column + 1);
    else
        errorf_at(c, &mark, "YAML syntax error: %s", problem);
}

static struct rem_config *load_buffer(const char *buf, size_t len, const char *name,
                                      struct rem_config_diag *diag)
{
    struct ctx c = {
        .name = name != NULL ? name : "<string>",
        .diag = diag,
        .diag_base = diag != NULL ? diag->n : 0,
    };
    struct rem_config *cfg = NULL;
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_parser = false, have_doc = false, have_extra = false;
    yaml_node_t *extra_root;

    if (!yaml_parser_initialize(&parser)) {
        errorf_at(&c, NULL, "out of memory while reading YAML");
        goto fail;
    }
    have_parser = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        syntax_error(&c, &parser, buf, len);
        goto fail;
    }
    have_doc = true;
    /* Only one document: a second one is likely a concatenation mistake. Read it now so that a
     * syntax error anywhere in the file stops the load before any other message. */
    if (!yaml_parser_load(&parser, &extra)) {
        syntax_error(&c, &parser, buf, len);
        goto fail;
    }
    have_extra = true;
    c.doc = &doc;
    cfg = build(&c, yaml_document_get_root_node(&doc));
    extra_root = yaml_document_get_root_node(&extra);
    if (extra_root != NULL) {
        errorf(&c, extra_root, "only one YAML document is allowed");
        rem_config_unref(cfg);
        cfg = NULL;
    }

fail:
    diag_sort(&c);
    free(c.diag_pos);
    free(c.listener_addr);
    free(c.route_upstream);
    if (have_extra)
        yaml_document_delete(&extra);
    if (have_doc)
        yaml_document_delete(&doc);
    if (have_parser)
        yaml_parser_delete(&parser);
    return cfg;
}

struct rem_config *rem_config_load_string(const char *yaml, const char *name,
                                          struct rem_config_diag *diag)
{
    if (yaml == NULL)
        return NULL;
    return load_buffer(yaml, strlen(yaml), name, diag);
}

struct rem_config *rem_config_load_file(const char *path, struct rem_config_diag *diag)
{
    struct ctx c = {.name = path, .diag = diag, .diag_base = diag != NULL ? diag->n : 0};
    struct rem_config *cfg = NULL;
    struct sbuf b = {0};
    char chunk[16384];
    int fd = -1;

    if (path == NULL)
        return NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errorf_at(&c, NULL, "cannot open: %s", strerror(errno));
        goto fail;
    }
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            errorf_at(&c, NULL, "cannot read: %s", strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        if (b.len + (size_t)n > MAX_FILE_BYTES) {
            errorf_at(&c, NULL, "too large (more than %u bytes)", MAX_FILE_BYTES);
            goto fail;
        }
        sb_add(&b, chunk, (size_t)n);
    }
    cfg = load_buffer(b.p ? b.p : "", b.len, path, diag);

fail:
    free(c.diag_pos);
    if (fd >= 0)
        close(fd);
    free(b.p);
    return cfg;
}
