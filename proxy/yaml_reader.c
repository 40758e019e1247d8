/* SPDX-License-Identifier: Apache-2.0
 * yaml_reader: reads one YAML document (libyaml's document API) and types its scalars for a
 * loader that walks its own schema, collecting errors as "NAME:LINE:COL: text" in file order.
 * Owns the libyaml parser and document for one read and the messages until they are taken;
 * knows nothing of what the keys mean (see yaml_reader.h for the contracts). */
#include "yaml_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A file larger than this is a mistake (a log or a binary given by accident). */
#define MAX_FILE_BYTES (4u * 1024 * 1024)
/* Beyond this many errors, more messages only bury the first ones. */
#define MAX_ERRORS 100
/* Node visits allowed per read. Aliases let a small file name the same large node many times;
 * this bounds the work to a linear multiple of what an alias-free file could ask for. */
#define MAX_STEPS (1u << 20)

struct rem_yaml_reader {
    char *name;           /* NAME in messages; owned */
    yaml_document_t *doc; /* the document being read, during on_doc only; borrowed */
    char **msgs;          /* owned, MAX_ERRORS + 1 slots once the first error is reported */
    uint64_t *pos;        /* position of each message: line << 32 | column, UINT64_MAX for none */
    size_t n_msgs;
    size_t n_errors; /* reported, including those past MAX_ERRORS */
    size_t steps;
    bool nomem; /* libyaml ran out of memory */
    bool used;  /* a read has started: one per reader */
};

/* Control-path growth: aborts on OOM like the rest of the loader. */
static void *xrealloc(void *p, size_t size)
{
    p = realloc(p, size != 0 ? size : 1);
    if (p == NULL) {
        fputs("remora: out of memory loading the configuration\n", stderr);
        abort();
    }
    return p;
}

static char *xstrndup(const char *s, size_t len)
{
    char *p = rem_xcalloc(len + 1, 1);

    memcpy(p, s, len);
    return p;
}

/* Growable byte string. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;

        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
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

const char *rem_yaml_quote(struct rem_yaml_quoted *q, const char *s)
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

/* Records one error with its text already formatted, at mark (0-based in libyaml, 1-based in
 * the message), or with no position when mark is NULL. */
static void push_error(struct rem_yaml_reader *y, const yaml_mark_t *mark, const char *text)
{
    char more[64], *msg;
    size_t len;

    y->n_errors++;
    if (y->n_errors > MAX_ERRORS + 1)
        return;
    if (y->n_errors == MAX_ERRORS + 1) {
        snprintf(more, sizeof(more), "too many errors, giving up after %d", MAX_ERRORS);
        mark = NULL;
        text = more;
    }
    len = strlen(y->name) + strlen(text) + 64;
    msg = rem_xcalloc(len, 1);
    if (mark != NULL)
        snprintf(msg, len, "%s:%zu:%zu: %s", y->name, mark->line + 1, mark->column + 1, text);
    else
        snprintf(msg, len, "%s: %s", y->name, text);
    if (y->msgs == NULL) {
        y->msgs = rem_xcalloc(MAX_ERRORS + 1, sizeof(*y->msgs));
        y->pos = rem_xcalloc(MAX_ERRORS + 1, sizeof(*y->pos));
    }
    y->pos[y->n_msgs] = mark != NULL
                            ? (uint64_t)mark->line << 32 | (uint64_t)(mark->column & 0xffffffffu)
                            : UINT64_MAX;
    y->msgs[y->n_msgs++] = msg;
}

static void verrorf_at(struct rem_yaml_reader *y, const yaml_mark_t *mark, const char *fmt,
                       va_list ap)
{
    char text[512];

    vsnprintf(text, sizeof(text), fmt, ap);
    push_error(y, mark, text);
}

__attribute__((format(printf, 3, 4))) static void
errorf_at(struct rem_yaml_reader *y, const yaml_mark_t *mark, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verrorf_at(y, mark, fmt, ap);
    va_end(ap);
}

void rem_yaml_errorf(struct rem_yaml_reader *y, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verrorf_at(y, node != NULL ? &node->start_mark : NULL, fmt, ap);
    va_end(ap);
}

void rem_yaml_missing_key(struct rem_yaml_reader *y, const yaml_node_t *map, const char *key,
                          const char *where)
{
    rem_yaml_errorf(y, map, "missing key \"%s\" %s", key, where);
}

int rem_yaml_visit(struct rem_yaml_reader *y, const yaml_node_t *node)
{
    if (++y->steps <= MAX_STEPS)
        return 0;
    if (y->steps == MAX_STEPS + 1)
        rem_yaml_errorf(y, node, "document too large (too many nodes after alias expansion)");
    return -REM_E_CONFIG;
}

yaml_node_t *rem_yaml_node(struct rem_yaml_reader *y, int idx)
{
    return y->doc != NULL ? yaml_document_get_node(y->doc, idx) : NULL;
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

int rem_yaml_map_fields(struct rem_yaml_reader *y, yaml_node_t *node, const char *subject,
                        const char *where, struct rem_yaml_field *fields, size_t n_fields)
{
    struct rem_yaml_quoted q;

    for (size_t i = 0; i < n_fields; i++)
        fields[i].key_node = fields[i].val = NULL;
    if (node == NULL || is_null(node))
        return 0;
    if (node->type != YAML_MAPPING_NODE) {
        rem_yaml_errorf(y, node, "expected a mapping for %s, got %s", subject, kind(node));
        return -REM_E_CONFIG;
    }
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = rem_yaml_node(y, p->key), *v = rem_yaml_node(y, p->value);
        const char *key;
        size_t i;

        if (k == NULL || v == NULL || rem_yaml_visit(y, k) != 0)
            return -REM_E_CONFIG;
        if (k->type != YAML_SCALAR_NODE) {
            rem_yaml_errorf(y, k, "expected a scalar key %s, got %s", where, kind(k));
            continue;
        }
        key = (const char *)k->data.scalar.value;
        for (i = 0; i < n_fields; i++) {
            if (strlen(key) == k->data.scalar.length && strcmp(key, fields[i].key) == 0)
                break;
        }
        if (i == n_fields) {
            rem_yaml_errorf(y, k, "unknown key %s %s", rem_yaml_quote(&q, key), where);
        } else if (fields[i].key_node != NULL) {
            rem_yaml_errorf(y, k, "duplicate key %s %s (first at %zu:%zu)", rem_yaml_quote(&q, key),
                            where, fields[i].key_node->start_mark.line + 1,
                            fields[i].key_node->start_mark.column + 1);
        } else {
            fields[i].key_node = k;
            fields[i].val = v;
        }
    }
    return 0;
}

int rem_yaml_seq_items(struct rem_yaml_reader *y, yaml_node_t *node, const char *subject,
                       yaml_node_item_t **items, size_t *n)
{
    *items = NULL;
    *n = 0;
    if (is_null(node))
        return 0;
    if (node->type != YAML_SEQUENCE_NODE) {
        rem_yaml_errorf(y, node, "expected a sequence for %s, got %s", subject, kind(node));
        return -REM_E_CONFIG;
    }
    *items = node->data.sequence.items.start;
    *n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    return 0;
}

static bool is_name_char(char ch, bool first)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_' ||
           (!first && ch >= '0' && ch <= '9');
}

/* Expands in[0..len) (see rem_yaml_scalar). Returns a malloc'd string, or NULL with an error
 * reported at node. */
static char *expand(struct rem_yaml_reader *y, const yaml_node_t *node, const char *in, size_t len)
{
    struct sbuf out = {0};
    struct rem_yaml_quoted q;
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
            rem_yaml_errorf(y, node, "unterminated \"${\" in %s", rem_yaml_quote(&q, in));
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
            rem_yaml_errorf(y, node,
                            "bad variable reference %s (expected ${NAME} or ${NAME:-default})",
                            rem_yaml_quote(&q, var));
            goto fail;
        }
        free(var);
        var = xstrndup(in + start, j - start);
        val = getenv(var);
        if (dflt != NULL && (val == NULL || val[0] == '\0')) {
            sb_add(&out, dflt, (size_t)(close - dflt));
        } else if (val == NULL) {
            rem_yaml_errorf(y, node, "environment variable %s is not set", var);
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

char *rem_yaml_scalar(struct rem_yaml_reader *y, yaml_node_t *node, const char *subject)
{
    const char *v;
    size_t len;

    if (node->type != YAML_SCALAR_NODE) {
        rem_yaml_errorf(y, node, "expected a scalar for %s, got %s", subject, kind(node));
        return NULL;
    }
    if (is_null(node)) {
        rem_yaml_errorf(y, node, "missing value for %s", subject);
        return NULL;
    }
    v = (const char *)node->data.scalar.value;
    len = node->data.scalar.length;
    if (memchr(v, '\0', len) != NULL) {
        rem_yaml_errorf(y, node, "NUL character in the value of %s", subject);
        return NULL;
    }
    return expand(y, node, v, len);
}

int rem_yaml_get_string(struct rem_yaml_reader *y, yaml_node_t *node, const char *key, char **out)
{
    char subject[64];
    char *s;

    snprintf(subject, sizeof(subject), "\"%s\"", key);
    s = rem_yaml_scalar(y, node, subject);
    if (s == NULL)
        return -REM_E_CONFIG;
    free(*out);
    *out = s;
    return 0;
}

int rem_yaml_get_uint(struct rem_yaml_reader *y, yaml_node_t *node, const char *key, uint64_t min,
                      uint64_t max, uint64_t *out)
{
    struct rem_yaml_quoted q;
    char *s = NULL;
    char *end;
    unsigned long long v;
    int rc = -REM_E_CONFIG;

    if (rem_yaml_get_string(y, node, key, &s) != 0)
        goto fail;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0') {
        rem_yaml_errorf(y, node, "expected an integer for \"%s\", got %s", key,
                        rem_yaml_quote(&q, s));
        goto fail;
    }
    if (errno == ERANGE || v < min || v > max) {
        rem_yaml_errorf(y, node, "\"%s\" must be between %llu and %llu, got %s", key,
                        (unsigned long long)min, (unsigned long long)max, rem_yaml_quote(&q, s));
        goto fail;
    }
    *out = v;
    rc = 0;
fail:
    free(s);
    return rc;
}

int rem_yaml_get_bool(struct rem_yaml_reader *y, yaml_node_t *node, const char *key, bool *out)
{
    struct rem_yaml_quoted q;
    char *s = NULL;
    int rc = -REM_E_CONFIG;

    if (rem_yaml_get_string(y, node, key, &s) != 0)
        goto fail;
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        *out = true;
    } else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        *out = false;
    } else {
        rem_yaml_errorf(y, node, "expected a boolean (true or false) for \"%s\", got %s", key,
                        rem_yaml_quote(&q, s));
        goto fail;
    }
    rc = 0;
fail:
    free(s);
    return rc;
}

int rem_yaml_get_enum(struct rem_yaml_reader *y, yaml_node_t *node, const char *key,
                      const char *const *names, const char *expected, int *out)
{
    struct rem_yaml_quoted q;
    char *s = NULL;
    int i;

    if (rem_yaml_get_string(y, node, key, &s) != 0)
        return -REM_E_CONFIG;
    for (i = 0; names[i] != NULL && strcmp(s, names[i]) != 0; i++)
        ;
    if (names[i] == NULL)
        rem_yaml_errorf(y, node, "bad value %s for \"%s\" (expected %s)", rem_yaml_quote(&q, s),
                        key, expected);
    else
        *out = i;
    free(s);
    return names[i] == NULL ? -REM_E_CONFIG : 0;
}

static void syntax_error(struct rem_yaml_reader *y, const yaml_parser_t *parser, const char *buf,
                         size_t len)
{
    const char *problem = parser->problem ? parser->problem : "unknown error";
    yaml_mark_t mark = parser->problem_mark;

    switch (parser->error) {
    case YAML_MEMORY_ERROR:
        y->nomem = true;
        errorf_at(y, NULL, "out of memory while reading YAML");
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
        errorf_at(y, &mark, "YAML syntax error: %s (%s at %zu:%zu)", problem, parser->context,
                  parser->context_mark.line + 1, parser->context_mark.column + 1);
    else
        errorf_at(y, &mark, "YAML syntax error: %s", problem);
}

/* What a read returns once it is over: see rem_yaml_read_buffer. */
static int read_result(const struct rem_yaml_reader *y)
{
    if (y->nomem)
        return -REM_E_NOMEM;
    return y->n_errors > 0 ? -REM_E_CONFIG : 0;
}

static int parse_buffer(struct rem_yaml_reader *y, const char *buf, size_t len,
                        rem_yaml_doc_cb on_doc, void *arg)
{
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_parser = false, have_doc = false, have_extra = false;
    yaml_node_t *extra_root;

    if (!yaml_parser_initialize(&parser)) {
        y->nomem = true;
        errorf_at(y, NULL, "out of memory while reading YAML");
        goto fail;
    }
    have_parser = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        syntax_error(y, &parser, buf, len);
        goto fail;
    }
    have_doc = true;
    /* Only one document: a second one is likely a concatenation mistake. Read it now so that a
     * syntax error anywhere in the file stops the read before any other message. */
    if (!yaml_parser_load(&parser, &extra)) {
        syntax_error(y, &parser, buf, len);
        goto fail;
    }
    have_extra = true;
    y->doc = &doc;
    on_doc(y, yaml_document_get_root_node(&doc), arg);
    y->doc = NULL;
    extra_root = yaml_document_get_root_node(&extra);
    if (extra_root != NULL)
        rem_yaml_errorf(y, extra_root, "only one YAML document is allowed");

fail:
    if (have_extra)
        yaml_document_delete(&extra);
    if (have_doc)
        yaml_document_delete(&doc);
    if (have_parser)
        yaml_parser_delete(&parser);
    return read_result(y);
}

int rem_yaml_read_buffer(struct rem_yaml_reader *y, const char *buf, size_t len,
                         rem_yaml_doc_cb on_doc, void *arg)
{
    REM_BUG_ON(y->used);
    y->used = true;
    return parse_buffer(y, buf, len, on_doc, arg);
}

int rem_yaml_read_file(struct rem_yaml_reader *y, const char *path, rem_yaml_doc_cb on_doc,
                       void *arg)
{
    struct sbuf b = {0};
    char chunk[16384];
    int fd, rc = -REM_E_SYS;

    REM_BUG_ON(y->used);
    y->used = true;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errorf_at(y, NULL, "cannot open: %s", strerror(errno));
        goto fail;
    }
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            errorf_at(y, NULL, "cannot read: %s", strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        if (b.len + (size_t)n > MAX_FILE_BYTES) {
            errorf_at(y, NULL, "too large (more than %u bytes)", MAX_FILE_BYTES);
            rc = -REM_E_CONFIG;
            goto fail;
        }
        sb_add(&b, chunk, (size_t)n);
    }
    rc = parse_buffer(y, b.p ? b.p : "", b.len, on_doc, arg);

fail:
    if (fd >= 0)
        close(fd);
    free(b.p);
    return rc;
}

struct rem_yaml_reader *rem_yaml_reader_new(const char *name)
{
    struct rem_yaml_reader *y = rem_xcalloc(1, sizeof(*y));

    REM_BUG_ON(name == NULL);
    y->name = rem_xstrdup(name);
    return y;
}

void rem_yaml_reader_free(struct rem_yaml_reader *y)
{
    if (y == NULL)
        return;
    for (size_t i = 0; i < y->n_msgs; i++)
        free(y->msgs[i]);
    free(y->msgs);
    free(y->pos);
    free(y->name);
    free(y);
}

size_t rem_yaml_n_errors(const struct rem_yaml_reader *y)
{
    return y->n_errors;
}

void rem_yaml_append_messages(struct rem_yaml_reader *y, char ***msgs, size_t *n)
{
    /* File order, as a compiler lists them; the walk order groups them by section instead.
     * Insertion sort: stable, and there are at most MAX_ERRORS + 1. */
    for (size_t i = 1; i < y->n_msgs; i++) {
        uint64_t pos = y->pos[i];
        char *msg = y->msgs[i];
        size_t j = i;

        for (; j > 0 && y->pos[j - 1] > pos; j--) {
            y->pos[j] = y->pos[j - 1];
            y->msgs[j] = y->msgs[j - 1];
        }
        y->pos[j] = pos;
        y->msgs[j] = msg;
    }
    if (y->n_msgs == 0)
        return;
    *msgs = xrealloc(*msgs, (*n + y->n_msgs) * sizeof(**msgs));
    memcpy(*msgs + *n, y->msgs, y->n_msgs * sizeof(*y->msgs));
    *n += y->n_msgs;
    y->n_msgs = 0;
}
