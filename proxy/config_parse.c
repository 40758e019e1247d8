/* SPDX-License-Identifier: Apache-2.0
 * config_parse: remora's configuration schema. Walks the one YAML document yaml_reader hands
 * it, section by section, into a configuration generation, then runs the checks across
 * sections (routes name known upstreams, no two listeners share an address). Reading, typing
 * and the "FILE:LINE:COL: message" errors are yaml_reader's; defaults and the value parsers
 * live in config.c. Owns the generation until a load returns it to the caller. */
#include "config.h"
#include "error.h"
#include "yaml_reader.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

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

/* One load's schema state; the reader holds the document and the errors. */
struct ctx {
    struct rem_yaml_reader *y;
    const char *name;       /* the generation's source: FILE in messages; borrowed */
    struct rem_config *cfg; /* the generation being built; owned until the load returns it */
    bool listeners_bad;     /* section unusable: skip the cross-checks that read it */
    bool upstreams_bad;
    const yaml_node_t *admin_addr; /* value nodes kept for the cross-checks; borrowed */
    const yaml_node_t **listener_addr;
    const yaml_node_t **route_upstream;
};

/* A name or an address with the node it came from, for sorting out duplicates. */
struct entry {
    const char *name;
    const struct rem_sockaddr *addr;
    const yaml_node_t *node;
    size_t idx;
};

/* ---- remora's value types, on the reader's strings ------------------------------------------- */

/* The duration a scalar holds; *text gets its expanded text (malloc'd) for the caller's
 * messages, and is NULL on error. */
static int duration_value(struct ctx *c, yaml_node_t *node, const char *key, char **text,
                          uint64_t *out)
{
    struct rem_yaml_quoted q;
    char *s = NULL;

    *text = NULL;
    if (rem_yaml_get_string(c->y, node, key, &s) != 0)
        goto fail;
    if (rem_parse_duration_ms(s, out) != 0) {
        rem_yaml_errorf(c->y, node,
                        "bad duration %s for \"%s\" (expected an integer with ms, s, m or h, or 0)",
                        rem_yaml_quote(&q, s), key);
        goto fail;
    }
    *text = s;
    return 0;
fail:
    free(s);
    return -REM_E_CONFIG;
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
    struct rem_yaml_quoted q;
    char *s = NULL, lo[32], hi[32];
    uint64_t v;
    int rc = -REM_E_CONFIG;

    if (duration_value(c, node, key, &s, &v) != 0)
        goto fail;
    if (v == 0 && min == 1) {
        rem_yaml_errorf(c->y, node, "\"%s\" must not be 0", key);
        goto fail;
    }
    if (v < min || v > max) {
        rem_yaml_errorf(c->y, node, "\"%s\" must be between %s and %s, got %s", key,
                        duration_str(lo, sizeof(lo), min), duration_str(hi, sizeof(hi), max),
                        rem_yaml_quote(&q, s));
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
    struct rem_yaml_quoted q;
    char *s = NULL;

    *text = NULL;
    if (rem_yaml_get_string(c->y, node, key, &s) != 0)
        goto fail;
    if (rem_parse_size_bytes(s, out) != 0) {
        rem_yaml_errorf(c->y, node,
                        "bad size %s for \"%s\" (expected bytes, or an integer with B, KiB, "
                        "MiB, GiB, KB, MB or GB)",
                        rem_yaml_quote(&q, s), key);
        goto fail;
    }
    *text = s;
    return 0;
fail:
    free(s);
    return -REM_E_CONFIG;
}

/* nonzero: 0 is refused (a size that must hold something). */
static int get_size(struct ctx *c, yaml_node_t *node, const char *key, bool nonzero, uint64_t *out)
{
    char *s = NULL;
    uint64_t v;
    int rc = -REM_E_CONFIG;

    if (size_value(c, node, key, &s, &v) != 0)
        goto fail;
    if (nonzero && v == 0) {
        rem_yaml_errorf(c->y, node, "\"%s\" must not be 0", key);
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
    struct rem_yaml_quoted q;
    char *s = NULL, lo[32], hi[32];
    uint64_t v;
    int rc = -REM_E_CONFIG;

    if (size_value(c, node, key, &s, &v) != 0)
        goto fail;
    if (v < min || v > max) {
        rem_yaml_errorf(c->y, node, "\"%s\" must be between %s and %s, got %s", key,
                        size_str(lo, sizeof(lo), min), size_str(hi, sizeof(hi), max),
                        rem_yaml_quote(&q, s));
        goto fail;
    }
    *out = v;
    rc = 0;
fail:
    free(s);
    return rc;
}

/* Names appear in logs and metric labels: keep them to a safe alphabet. */
static int get_name(struct ctx *c, yaml_node_t *node, char **out)
{
    struct rem_yaml_quoted q;
    char *s = NULL;

    if (rem_yaml_get_string(c->y, node, "name", &s) != 0)
        return -REM_E_CONFIG;
    if (s[0] == '\0' || strspn(s, NAME_CHARS) != strlen(s)) {
        rem_yaml_errorf(c->y, node, "bad name %s (expected letters, digits, '-', '_' or '.')",
                        rem_yaml_quote(&q, s));
        free(s);
        return -REM_E_CONFIG;
    }
    free(*out);
    *out = s;
    return 0;
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
    struct rem_yaml_quoted q;
    size_t first = 0;

    qsort(e, n, sizeof(*e), cmp_entry_name);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(e[i].name, e[first].name) != 0) {
            first = i;
            continue;
        }
        rem_yaml_errorf(c->y, e[i].node, "duplicate %s name %s (first at %zu:%zu)", what,
                        rem_yaml_quote(&q, e[i].name), e[first].node->start_mark.line + 1,
                        e[first].node->start_mark.column + 1);
    }
}

/* ---- sections: one parse_* per top-level key ------------------------------------------------- */

static void parse_workers(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    struct rem_yaml_quoted q;
    char *s = NULL;
    char *end;
    unsigned long long v;

    if (rem_yaml_get_string(c->y, node, "workers", &s) != 0)
        return;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (strcmp(s, "auto") == 0)
        cfg->workers = 0;
    else if (s[0] >= '0' && s[0] <= '9' && *end == '\0' && errno == 0 && v >= 1 && v <= MAX_WORKERS)
        cfg->workers = (unsigned)v;
    else
        rem_yaml_errorf(c->y, node,
                        "bad value %s for \"workers\" (expected auto or an integer from 1 to %d)",
                        rem_yaml_quote(&q, s), MAX_WORKERS);
    free(s);
}

static void parse_address(struct ctx *c, yaml_node_t *node, struct rem_cfg_listener *l)
{
    struct rem_yaml_quoted q;
    const char *why;

    if (rem_yaml_get_string(c->y, node, "address", &l->address) != 0)
        return;
    if (rem_parse_unix(l->address, &l->addr, &why) < 0)
        rem_yaml_errorf(c->y, node, "bad address %s (%s)", rem_yaml_quote(&q, l->address), why);
    else if (l->addr.len == 0 && rem_parse_sockaddr(l->address, &l->addr) != 0)
        rem_yaml_errorf(c->y, node,
                        "bad address %s (expected a numeric host:port, [v6]:port or *:port; %s)",
                        rem_yaml_quote(&q, l->address), "port 0-65535");
}

/* listeners[].mode: the permissions of a unix:/path listener's socket file, as octal digits
 * ("0660", "660"); connecting takes write permission. */
static void parse_mode(struct ctx *c, yaml_node_t *node, struct rem_cfg_listener *l)
{
    struct rem_yaml_quoted q;
    char *s = NULL, *end;
    unsigned long v;

    if (rem_yaml_get_string(c->y, node, "mode", &s) != 0)
        return;
    errno = 0;
    v = strtoul(s, &end, 8);
    if (s[0] < '0' || s[0] > '7' || *end != '\0' || errno != 0 || v > 0777 || strlen(s) > 4)
        rem_yaml_errorf(c->y, node, "bad mode %s (expected octal permissions such as \"0660\")",
                        rem_yaml_quote(&q, s));
    else if (l->addr.ss.ss_family != AF_UNIX)
        rem_yaml_errorf(c->y, node, "\"mode\" needs a unix:/path address");
    else if (((const struct sockaddr_un *)&l->addr.ss)->sun_path[0] == '\0')
        rem_yaml_errorf(c->y, node, "\"mode\" does not apply to an abstract socket (unix:@name)");
    else
        l->mode = (uint32_t)v;
    free(s);
}

/* listeners[].http2. A key left out stays 0 and rem_config_fill_defaults gives it its default
 * once the whole file is read: max_header_list_size follows limits, which may come later. */
static void parse_http2(struct ctx *c, yaml_node_t *node, struct rem_cfg_http2 *h2)
{
    enum { F_STREAMS, F_WINDOW, F_HDR_LIST, F_RESETS, F_RESET_INTERVAL, F_CONTROL, F_CONNECT, F_N };
    struct rem_yaml_field f[F_N] = {
        [F_CONNECT] = {.key = "enable_connect_protocol"},
        [F_STREAMS] = {.key = "max_concurrent_streams"},
        [F_WINDOW] = {.key = "initial_window"},
        [F_HDR_LIST] = {.key = "max_header_list_size"},
        [F_RESETS] = {.key = "max_resets"},
        [F_RESET_INTERVAL] = {.key = "reset_interval"},
        [F_CONTROL] = {.key = "max_control_frames"},
    };
    uint64_t v;

    if (rem_yaml_map_fields(c->y, node, "\"http2\"", "in http2", f, F_N) != 0)
        return;
    if (f[F_STREAMS].val != NULL &&
        rem_yaml_get_uint(c->y, f[F_STREAMS].val, "max_concurrent_streams", 1, H2_MAX_STREAMS,
                          &v) == 0)
        h2->max_concurrent_streams = (uint32_t)v;
    if (f[F_WINDOW].val != NULL &&
        get_size_range(c, f[F_WINDOW].val, "initial_window", 1, H2_MAX_WINDOW, &v) == 0)
        h2->initial_window_bytes = (uint32_t)v;
    if (f[F_HDR_LIST].val != NULL &&
        get_size_range(c, f[F_HDR_LIST].val, "max_header_list_size", H2_MIN_HEADER_LIST,
                       H2_MAX_HEADER_LIST, &v) == 0)
        h2->max_header_list_bytes = (uint32_t)v;
    if (f[F_RESETS].val != NULL &&
        rem_yaml_get_uint(c->y, f[F_RESETS].val, "max_resets", 1, H2_MAX_RESETS, &v) == 0)
        h2->max_resets = (uint32_t)v;
    if (f[F_RESET_INTERVAL].val != NULL)
        (void)get_duration(c, f[F_RESET_INTERVAL].val, "reset_interval", true,
                           &h2->reset_interval_ms);
    if (f[F_CONTROL].val != NULL && rem_yaml_get_uint(c->y, f[F_CONTROL].val, "max_control_frames",
                                                      1, H2_MAX_CONTROL_FRAMES, &v) == 0)
        h2->max_control_frames = (uint32_t)v;
    if (f[F_CONNECT].val != NULL &&
        rem_yaml_get_bool(c->y, f[F_CONNECT].val, "enable_connect_protocol",
                          &h2->enable_connect_protocol) == 0)
        h2->connect_protocol_set = true;
}

/* listeners[].tls.alpn: a non-empty list of distinct protocols, in the server's order of
 * preference. */
static void parse_alpn(struct ctx *c, yaml_node_t *node, struct rem_cfg_tls *t)
{
    static const char *const names[] = {"h2", "http/1.1", NULL};
    yaml_node_item_t *items;
    size_t n;

    if (rem_yaml_seq_items(c->y, node, "\"alpn\"", &items, &n) != 0)
        return;
    if (n == 0) {
        rem_yaml_errorf(c->y, node, "\"alpn\" must not be empty");
        return;
    }
    t->n_alpn = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = rem_yaml_node(c->y, items[i]);
        int v;

        if (item == NULL || rem_yaml_visit(c->y, item) != 0)
            return;
        if (rem_yaml_get_enum(c->y, item, "alpn", names, "h2 or http/1.1", &v) != 0)
            continue;
        bool dup = false;
        for (size_t j = 0; j < t->n_alpn; j++)
            dup = dup || t->alpn[j] == (enum rem_alpn)v;
        if (dup)
            rem_yaml_errorf(c->y, item, "duplicate protocol \"%s\" in alpn", names[v]);
        else
            t->alpn[t->n_alpn++] = (enum rem_alpn)v;
    }
}

/* A cipher list is OpenSSL's syntax, a client_ca or ocsp_response a file: they are checked when
 * the listener's context is built (tls.c); here only that it is a non-empty string. */
static void parse_cipher_list(struct ctx *c, yaml_node_t *node, const char *key, char **out)
{
    if (rem_yaml_get_string(c->y, node, key, out) == 0 && (*out)[0] == '\0') {
        rem_yaml_errorf(c->y, node, "\"%s\" must not be empty", key);
        free(*out);
        *out = NULL;
    }
}

/* listeners[].tls: TLS termination. The files are read when the server plans the listeners
 * (tls.c), which reports a missing file or a key that does not match its certificate. */
static void parse_tls(struct ctx *c, yaml_node_t *node, struct rem_cfg_listener *l)
{
    enum {
        F_CERT,
        F_KEY,
        F_MIN,
        F_ALPN,
        F_CIPHERS,
        F_SUITES,
        F_TICKETS,
        F_CA,
        F_REQUIRE,
        F_OCSP,
        F_N
    };
    static const char *const versions[] = {"1.2", "1.3", NULL};
    struct rem_yaml_field f[F_N] = {
        [F_CERT] = {.key = "cert"},
        [F_KEY] = {.key = "key"},
        [F_MIN] = {.key = "min_version"},
        [F_ALPN] = {.key = "alpn"},
        [F_CIPHERS] = {.key = "ciphers"},
        [F_SUITES] = {.key = "ciphersuites"},
        [F_TICKETS] = {.key = "session_tickets"},
        [F_CA] = {.key = "client_ca"},
        [F_REQUIRE] = {.key = "require_client_cert"},
        [F_OCSP] = {.key = "ocsp_response"},
    };
    int v;

    if (rem_yaml_map_fields(c->y, node, "\"tls\"", "in tls", f, F_N) != 0)
        return;
    if (l->addr.ss.ss_family == AF_UNIX) {
        rem_yaml_errorf(c->y, node, "\"tls\" needs a TCP address (not a unix: socket)");
        return;
    }
    struct rem_cfg_tls *t = l->tls = rem_xcalloc(1, sizeof(*t));
    t->min_version = REM_TLS_1_2;
    t->alpn[0] = REM_ALPN_H2;
    t->alpn[1] = REM_ALPN_HTTP1;
    t->n_alpn = 2;
    t->session_tickets = true;
    if (f[F_CERT].val == NULL)
        rem_yaml_missing_key(c->y, node, "cert", "in tls");
    else
        (void)rem_yaml_get_string(c->y, f[F_CERT].val, "cert", &t->cert);
    if (f[F_KEY].val == NULL)
        rem_yaml_missing_key(c->y, node, "key", "in tls");
    else
        (void)rem_yaml_get_string(c->y, f[F_KEY].val, "key", &t->key);
    if (f[F_MIN].val != NULL && rem_yaml_get_enum(c->y, f[F_MIN].val, "min_version", versions,
                                                  "\"1.2\" or \"1.3\"", &v) == 0)
        t->min_version = (enum rem_tls_version)v;
    if (f[F_ALPN].val != NULL)
        parse_alpn(c, f[F_ALPN].val, t);
    if (f[F_CIPHERS].val != NULL)
        parse_cipher_list(c, f[F_CIPHERS].val, "ciphers", &t->ciphers);
    if (f[F_SUITES].val != NULL)
        parse_cipher_list(c, f[F_SUITES].val, "ciphersuites", &t->ciphersuites);
    if (t->ciphers == NULL)
        t->ciphers = rem_xstrdup(REM_DEF_TLS_CIPHERS);
    if (t->ciphersuites == NULL)
        t->ciphersuites = rem_xstrdup(REM_DEF_TLS_CIPHERSUITES);
    if (f[F_TICKETS].val != NULL)
        (void)rem_yaml_get_bool(c->y, f[F_TICKETS].val, "session_tickets", &t->session_tickets);
    if (f[F_CA].val != NULL)
        parse_cipher_list(c, f[F_CA].val, "client_ca", &t->client_ca);
    if (f[F_OCSP].val != NULL)
        parse_cipher_list(c, f[F_OCSP].val, "ocsp_response", &t->ocsp_response);
    if (f[F_REQUIRE].val != NULL &&
        rem_yaml_get_bool(c->y, f[F_REQUIRE].val, "require_client_cert", &t->require_client_cert) ==
            0 &&
        t->require_client_cert && f[F_CA].val == NULL)
        rem_yaml_errorf(c->y, f[F_REQUIRE].key_node,
                        "\"require_client_cert\" needs \"client_ca\" (the CAs that client "
                        "certificates are verified against)");
}

static void parse_listeners(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    enum { F_NAME, F_ADDRESS, F_MAXCONN, F_HTTP2, F_MODE, F_TLS, F_N };
    yaml_node_item_t *items;
    struct entry *names = NULL;
    size_t n, n_names = 0;

    if (rem_yaml_seq_items(c->y, node, "\"listeners\"", &items, &n) != 0) {
        c->listeners_bad = true;
        return;
    }
    if (n == 0) {
        rem_yaml_errorf(c->y, node, "\"listeners\" must not be empty");
        c->listeners_bad = true;
        return;
    }
    cfg->listeners = rem_xcalloc(n, sizeof(*cfg->listeners));
    c->listener_addr = rem_xcalloc(n, sizeof(*c->listener_addr));
    names = rem_xcalloc(n, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        struct rem_yaml_field f[F_N] = {
            [F_NAME] = {.key = "name"},
            [F_ADDRESS] = {.key = "address"},
            [F_MAXCONN] = {.key = "max_connections"},
            [F_HTTP2] = {.key = "http2"},
            [F_MODE] = {.key = "mode"},
            [F_TLS] = {.key = "tls"},
        };
        struct rem_cfg_listener *l = &cfg->listeners[cfg->n_listeners++];
        yaml_node_t *item = rem_yaml_node(c->y, items[i]);
        uint64_t v;

        if (item == NULL || rem_yaml_visit(c->y, item) != 0)
            break;
        if (rem_yaml_map_fields(c->y, item, "a listener", "in listener", f, F_N) != 0)
            continue;
        if (f[F_NAME].val == NULL)
            rem_yaml_missing_key(c->y, item, "name", "in listener");
        else if (get_name(c, f[F_NAME].val, &l->name) == 0)
            names[n_names++] = (struct entry){.name = l->name, .node = f[F_NAME].val, .idx = i};
        if (f[F_ADDRESS].val == NULL) {
            rem_yaml_missing_key(c->y, item, "address", "in listener");
        } else {
            parse_address(c, f[F_ADDRESS].val, l);
            c->listener_addr[i] = f[F_ADDRESS].val;
        }
        /* Left out, it stays 0: main derives it from RLIMIT_NOFILE and the memory limit. */
        if (f[F_MAXCONN].val != NULL &&
            rem_yaml_get_uint(c->y, f[F_MAXCONN].val, "max_connections", 1, MAX_ADMISSION, &v) == 0)
            l->max_connections = (uint32_t)v;
        if (f[F_HTTP2].val != NULL)
            parse_http2(c, f[F_HTTP2].val, &l->http2);
        l->mode = REM_DEF_UNIX_MODE;
        if (f[F_MODE].val != NULL && l->addr.len != 0)
            parse_mode(c, f[F_MODE].val, l);
        if (f[F_TLS].val != NULL && l->addr.len != 0)
            parse_tls(c, f[F_TLS].val, l);
    }
    check_dup_names(c, names, n_names, "listener");
    free(names);
}

static void parse_admin(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    struct rem_yaml_field f[] = {{.key = "address"}};

    /* Without an address, rem_config_fill_defaults gives admin its default. */
    if (rem_yaml_map_fields(c->y, node, "\"admin\"", "in admin", f, 1) != 0 || f[0].val == NULL)
        return;
    cfg->admin.name = rem_xstrdup("admin");
    parse_address(c, f[0].val, &cfg->admin);
    c->admin_addr = f[0].val;
    if (cfg->admin.addr.ss.ss_family == AF_UNIX)
        rem_yaml_errorf(c->y, f[0].val, "the admin listener takes a host:port, not a Unix socket");
}

/* node is the value of "endpoints", NULL when the key is absent; map is the upstream. */
static void parse_endpoints(struct ctx *c, yaml_node_t *map, yaml_node_t *node,
                            struct rem_cfg_upstream *u)
{
    yaml_node_item_t *items = NULL;
    struct rem_yaml_quoted q;
    size_t n = 0;

    if (node != NULL && rem_yaml_seq_items(c->y, node, "\"endpoints\"", &items, &n) != 0)
        return;
    if (n == 0) {
        rem_yaml_errorf(c->y, node != NULL ? node : map, "upstream %s has no endpoints",
                        rem_yaml_quote(&q, u->name != NULL ? u->name : ""));
        return;
    }
    u->endpoints = rem_xcalloc(n, sizeof(*u->endpoints));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = rem_yaml_node(c->y, items[i]);
        const char *why;
        char *s;

        if (item == NULL || rem_yaml_visit(c->y, item) != 0)
            break;
        s = rem_yaml_scalar(c->y, item, "an endpoint");
        if (s == NULL)
            continue;
        if (rem_parse_endpoint(s, &u->endpoints[u->n_endpoints], &why) != 0)
            rem_yaml_errorf(c->y, item, "bad endpoint %s (%s)", rem_yaml_quote(&q, s), why);
        else
            u->n_endpoints++;
        free(s);
    }
}

/* The request target a health check sends as is: origin-form (RFC 9112 section 3.2.1), so a
 * query is allowed, unlike in a route; no fragment, and nothing a request line cannot carry. */
static void parse_check_path(struct ctx *c, yaml_node_t *node, char **out)
{
    struct rem_yaml_quoted q;
    char *s = NULL;
    bool ok;

    if (rem_yaml_get_string(c->y, node, "path", &s) != 0)
        return;
    ok = s[0] == '/';
    for (const unsigned char *p = (const unsigned char *)s; ok && *p != '\0'; p++)
        ok = *p > 0x20 && *p < 0x7f && *p != '#';
    if (!ok) {
        rem_yaml_errorf(
            c->y, node,
            "bad path %s for \"path\" (expected a path starting with \"/\", query allowed; "
            "visible ASCII, no \"#\")",
            rem_yaml_quote(&q, s));
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
    struct rem_yaml_field f[F_N] = {
        [F_PATH] = {.key = "path"},       [F_INTERVAL] = {.key = "interval"},
        [F_TIMEOUT] = {.key = "timeout"}, [F_RISE] = {.key = "rise"},
        [F_FALL] = {.key = "fall"},
    };
    uint64_t v;

    if (rem_yaml_map_fields(c->y, node, "\"health_check\"", "in health_check", f, F_N) != 0)
        return;
    if (f[F_PATH].val == NULL)
        rem_yaml_missing_key(c->y, node, "path", "in health_check");
    else
        parse_check_path(c, f[F_PATH].val, &hc->path);
    if (f[F_INTERVAL].val != NULL)
        (void)get_duration(c, f[F_INTERVAL].val, "interval", true, &hc->interval_ms);
    /* A probe should not outlive the interval unless asked to. */
    if (f[F_TIMEOUT].val != NULL)
        (void)get_duration(c, f[F_TIMEOUT].val, "timeout", true, &hc->timeout_ms);
    else if (hc->interval_ms < REM_DEF_HC_TIMEOUT_MS)
        hc->timeout_ms = hc->interval_ms;
    if (f[F_RISE].val != NULL && rem_yaml_get_uint(c->y, f[F_RISE].val, "rise", 1, 1000, &v) == 0)
        hc->rise = (uint32_t)v;
    if (f[F_FALL].val != NULL && rem_yaml_get_uint(c->y, f[F_FALL].val, "fall", 1, 1000, &v) == 0)
        hc->fall = (uint32_t)v;
}

static void lower(char *s);
static bool host_chars(const char *s);

/* A PEM file name of upstreams[].tls: a non-empty string (tls_client.c reads the file). */
static void parse_tls_file(struct ctx *c, yaml_node_t *node, const char *key, char **out)
{
    if (rem_yaml_get_string(c->y, node, key, out) == 0 && (*out)[0] == '\0') {
        rem_yaml_errorf(c->y, node, "\"%s\" must not be empty (a PEM file name)", key);
        free(*out);
        *out = NULL;
    }
}

/* upstreams[].tls: TLS toward the app. node NULL: none written (h2 implies the defaults). The
 * files are read when the server plans the upstreams (tls_client.c). u->protocol and
 * u->endpoints are parsed already. */
static void parse_upstream_tls(struct ctx *c, yaml_node_t *item, yaml_node_t *node,
                               struct rem_cfg_upstream *u)
{
    enum { F_CA, F_SNI, F_VERIFY, F_CERT, F_KEY, F_N };
    struct rem_yaml_field f[F_N] = {
        [F_CA] = {.key = "ca"},     [F_SNI] = {.key = "sni"}, [F_VERIFY] = {.key = "verify"},
        [F_CERT] = {.key = "cert"}, [F_KEY] = {.key = "key"},
    };
    struct rem_yaml_quoted q;

    if (node == NULL && u->protocol != REM_PROTO_H2)
        return;
    if (node != NULL && u->protocol == REM_PROTO_H2C) {
        rem_yaml_errorf(c->y, node,
                        "\"tls\" with protocol h2c: h2c is cleartext HTTP/2; write protocol h2 "
                        "for HTTP/2 over TLS");
        return;
    }
    if (node != NULL && rem_yaml_map_fields(c->y, node, "\"tls\"", "in tls", f, F_N) != 0)
        return;
    for (size_t i = 0; i < u->n_endpoints; i++)
        if (u->endpoints[i].is_unix) {
            rem_yaml_errorf(c->y, node != NULL ? node : item,
                            "upstream %s: TLS needs host:port endpoints, not %s",
                            rem_yaml_quote(&q, u->name != NULL ? u->name : ""),
                            u->endpoints[i].host);
            return;
        }
    struct rem_cfg_upstream_tls *t = u->tls = rem_xcalloc(1, sizeof(*t));
    t->verify = true;
    if (node == NULL)
        return;
    if (f[F_CA].val != NULL)
        parse_tls_file(c, f[F_CA].val, "ca", &t->ca);
    if (f[F_CERT].val != NULL)
        parse_tls_file(c, f[F_CERT].val, "cert", &t->cert);
    if (f[F_KEY].val != NULL)
        parse_tls_file(c, f[F_KEY].val, "key", &t->key);
    if (f[F_VERIFY].val != NULL)
        (void)rem_yaml_get_bool(c->y, f[F_VERIFY].val, "verify", &t->verify);
    if (f[F_SNI].val != NULL && rem_yaml_get_string(c->y, f[F_SNI].val, "sni", &t->sni) == 0) {
        unsigned char a[sizeof(struct in6_addr)];
        lower(t->sni);
        /* RFC 6066 3: a host name; an address is never sent as server_name. */
        if (!host_chars(t->sni) || strlen(t->sni) > 253 || inet_pton(AF_INET, t->sni, a) == 1 ||
            inet_pton(AF_INET6, t->sni, a) == 1) {
            rem_yaml_errorf(c->y, f[F_SNI].val,
                            "bad sni %s (expected a DNS host name such as app.internal; an IP "
                            "endpoint without sni is verified against its address)",
                            rem_yaml_quote(&q, t->sni));
            free(t->sni);
            t->sni = NULL;
        }
    }
    if ((f[F_CERT].val == NULL) != (f[F_KEY].val == NULL))
        rem_yaml_errorf(c->y, node,
                        "tls.cert and tls.key go together (the client certificate and its key)");
    if (f[F_CA].val != NULL && f[F_VERIFY].val != NULL && !t->verify)
        rem_yaml_errorf(c->y, f[F_CA].val,
                        "tls.ca is never used with verify: false (nothing is verified)");
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
        F_TLS,
        F_N
    };
    static const char *const protocols[] = {"http1", "h2c", "h2", NULL};
    static const char *const lbs[] = {"round_robin", "least_request", NULL};
    yaml_node_item_t *items;
    struct entry *names = NULL;
    size_t n, n_names = 0;

    if (rem_yaml_seq_items(c->y, node, "\"upstreams\"", &items, &n) != 0) {
        c->upstreams_bad = true;
        return;
    }
    if (n == 0) {
        rem_yaml_errorf(c->y, node, "\"upstreams\" must not be empty");
        c->upstreams_bad = true;
        return;
    }
    cfg->upstreams = rem_xcalloc(n, sizeof(*cfg->upstreams));
    names = rem_xcalloc(n, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        struct rem_yaml_field f[F_N] = {
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
            [F_TLS] = {.key = "tls"},
        };
        struct rem_cfg_upstream *u = &cfg->upstreams[cfg->n_upstreams++];
        yaml_node_t *item = rem_yaml_node(c->y, items[i]);
        uint64_t v;
        int proto, lb;

        rem_cfg_upstream_defaults(u);
        if (item == NULL || rem_yaml_visit(c->y, item) != 0)
            break;
        if (rem_yaml_map_fields(c->y, item, "an upstream", "in upstream", f, F_N) != 0)
            continue;
        if (f[F_NAME].val == NULL)
            rem_yaml_missing_key(c->y, item, "name", "in upstream");
        else if (get_name(c, f[F_NAME].val, &u->name) == 0)
            names[n_names++] = (struct entry){.name = u->name, .node = f[F_NAME].val, .idx = i};
        parse_endpoints(c, item, f[F_ENDPOINTS].val, u);
        if (f[F_PROTOCOL].val != NULL &&
            rem_yaml_get_enum(c->y, f[F_PROTOCOL].val, "protocol", protocols, "http1, h2c or h2",
                              &proto) == 0)
            u->protocol = (enum rem_proto)proto;
        parse_upstream_tls(c, item, f[F_TLS].val, u);
        if (f[F_CONNECT].val != NULL)
            (void)get_duration(c, f[F_CONNECT].val, "connect_timeout", false,
                               &u->connect_timeout_ms);
        if (f[F_IDLE].val != NULL)
            (void)get_duration(c, f[F_IDLE].val, "idle_timeout", false, &u->idle_timeout_ms);
        if (f[F_MAXCONN].val != NULL &&
            rem_yaml_get_uint(c->y, f[F_MAXCONN].val, "max_connections", 1, UINT32_MAX, &v) == 0)
            u->max_connections = (uint32_t)v;
        if (f[F_MAXREQ].val != NULL &&
            rem_yaml_get_uint(c->y, f[F_MAXREQ].val, "max_requests", 1, MAX_ADMISSION, &v) == 0)
            u->max_requests = (uint32_t)v;
        if (f[F_MAXPEND].val != NULL &&
            rem_yaml_get_uint(c->y, f[F_MAXPEND].val, "max_pending", 0, MAX_ADMISSION, &v) == 0)
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
            (void)rem_yaml_get_bool(c->y, f[F_ADAPTIVE].val, "adaptive", &u->adaptive);
        if (f[F_LB].val != NULL && rem_yaml_get_enum(c->y, f[F_LB].val, "lb", lbs,
                                                     "round_robin or least_request", &lb) == 0)
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
    struct rem_yaml_quoted q;
    char *s = NULL;

    if (rem_yaml_get_string(c->y, node, "host", &s) != 0)
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
        rem_yaml_errorf(c->y, node, "bad host %s (expected a host name or *.suffix)",
                        rem_yaml_quote(&q, s));
        free(s);
        return;
    }
    r->host = s;
}

/* An origin-form path as the router compares it: no query, fragment, space or control. */
static void parse_path(struct ctx *c, yaml_node_t *node, const char *key, char **out)
{
    struct rem_yaml_quoted q;
    char *s = NULL;

    if (rem_yaml_get_string(c->y, node, key, &s) != 0)
        return;
    if (s[0] != '/' || strpbrk(s, "?# \t") != NULL) {
        rem_yaml_errorf(c->y, node,
                        "bad path %s for \"%s\" (expected a path starting with \"/\", without "
                        "query)",
                        rem_yaml_quote(&q, s), key);
        free(s);
        return;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            rem_yaml_errorf(c->y, node, "bad path %s for \"%s\" (control character)",
                            rem_yaml_quote(&q, s), key);
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

/* One item of a string list: true to keep s (rewritten in place if need be), false after
 * reporting at item why not. */
typedef bool (*item_check_fn)(struct ctx *c, yaml_node_t *item, char *s);

/* A non-empty sequence of strings, each passing check, into *out and *n (what passes). subject
 * names the list ("\"methods\""), what one item ("a method"); empty is the error for []. */
static void parse_str_list(struct ctx *c, yaml_node_t *node, const char *subject, const char *what,
                           const char *empty, item_check_fn check, char ***out, size_t *n_out)
{
    yaml_node_item_t *items;
    size_t n;

    if (rem_yaml_seq_items(c->y, node, subject, &items, &n) != 0)
        return;
    if (n == 0) {
        rem_yaml_errorf(c->y, node, "%s", empty);
        return;
    }
    *out = rem_xcalloc(n, sizeof(**out));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = rem_yaml_node(c->y, items[i]);
        char *s;

        if (item == NULL || rem_yaml_visit(c->y, item) != 0)
            break;
        s = rem_yaml_scalar(c->y, item, what);
        if (s == NULL)
            continue;
        if (!check(c, item, s)) {
            free(s);
            continue;
        }
        (*out)[(*n_out)++] = s;
    }
}

/* A method: an HTTP token, stored upper-case. */
static bool check_method(struct ctx *c, yaml_node_t *item, char *s)
{
    struct rem_yaml_quoted q;

    if (!is_token(s)) {
        rem_yaml_errorf(c->y, item, "bad method %s (expected an HTTP method token)",
                        rem_yaml_quote(&q, s));
        return false;
    }
    for (char *p = s; *p != '\0'; p++) {
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
    return true;
}

static void parse_methods(struct ctx *c, yaml_node_t *node, struct rem_cfg_route *r)
{
    parse_str_list(c, node, "\"methods\"", "a method",
                   "\"methods\" must not be empty (leave it out to match any method)", check_method,
                   &r->methods, &r->n_methods);
}

static bool check_san(struct ctx *c, yaml_node_t *item, char *s)
{
    if (s[0] == '\0')
        rem_yaml_errorf(c->y, item, "empty SAN in \"client_san\"");
    return s[0] != '\0';
}

/* match.client_san: one SAN or a non-empty list of them, each a non-empty string compared
 * exactly with the URI and DNS SANs of the client's certificate. */
static void parse_client_san(struct ctx *c, yaml_node_t *node, struct rem_cfg_route *r)
{
    if (node->type == YAML_SCALAR_NODE) {
        char *s = NULL;
        if (rem_yaml_get_string(c->y, node, "client_san", &s) != 0)
            return;
        if (s[0] == '\0') {
            rem_yaml_errorf(c->y, node, "\"client_san\" must not be empty");
            free(s);
            return;
        }
        r->client_san = rem_xcalloc(1, sizeof(*r->client_san));
        r->client_san[r->n_client_san++] = s;
        return;
    }
    parse_str_list(c, node, "\"client_san\"", "a client SAN",
                   "\"client_san\" must not be empty (leave it out to allow any client)", check_san,
                   &r->client_san, &r->n_client_san);
}

static void parse_match(struct ctx *c, yaml_node_t *node, struct rem_cfg_route *r)
{
    enum { F_HOST, F_PATH, F_PREFIX, F_METHODS, F_CLIENT_SAN, F_N };
    struct rem_yaml_field f[F_N] = {
        [F_HOST] = {.key = "host"},
        [F_PATH] = {.key = "path"},
        [F_PREFIX] = {.key = "path_prefix"},
        [F_METHODS] = {.key = "methods"},
        [F_CLIENT_SAN] = {.key = "client_san"},
    };

    if (rem_yaml_map_fields(c->y, node, "\"match\"", "in match", f, F_N) != 0)
        return;
    if (f[F_HOST].val != NULL)
        parse_host(c, f[F_HOST].val, r);
    if (f[F_PATH].val != NULL && f[F_PREFIX].val != NULL) {
        bool prefix_last =
            f[F_PREFIX].key_node->start_mark.index > f[F_PATH].key_node->start_mark.index;

        rem_yaml_errorf(c->y, prefix_last ? f[F_PREFIX].val : f[F_PATH].val,
                        "\"path\" and \"path_prefix\" are mutually exclusive");
    } else if (f[F_PATH].val != NULL) {
        parse_path(c, f[F_PATH].val, "path", &r->path);
    } else if (f[F_PREFIX].val != NULL) {
        parse_path(c, f[F_PREFIX].val, "path_prefix", &r->path_prefix);
    }
    if (f[F_METHODS].val != NULL)
        parse_methods(c, f[F_METHODS].val, r);
    if (f[F_CLIENT_SAN].val != NULL)
        parse_client_san(c, f[F_CLIENT_SAN].val, r);
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
    size_t n, errors = rem_yaml_n_errors(c->y);
    char *prev = NULL;
    struct rem_yaml_quoted q;

    if (rem_yaml_seq_items(c->y, node, "\"buckets\"", &items, &n) != 0)
        return;
    if (n == 0) {
        rem_yaml_errorf(c->y, node, "\"buckets\" must not be empty");
        return;
    }
    if (n > REM_MAX_BUCKETS) {
        rem_yaml_errorf(c->y, rem_yaml_node(c->y, items[REM_MAX_BUCKETS]),
                        "too many buckets (at most %d)", REM_MAX_BUCKETS);
        n = REM_MAX_BUCKETS;
    }
    b.le = rem_xcalloc(n, sizeof(*b.le));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = rem_yaml_node(c->y, items[i]);
        double v;
        char *s;

        if (item == NULL || rem_yaml_visit(c->y, item) != 0)
            break;
        s = rem_yaml_scalar(c->y, item, "a bucket");
        if (s == NULL)
            continue;
        if (is_inf(s)) {
            rem_yaml_errorf(c->y, item, "bad bucket %s (+Inf is implicit; leave it out)",
                            rem_yaml_quote(&q, s));
        } else if (rem_parse_seconds(s, &v) != 0) {
            rem_yaml_errorf(c->y, item,
                            "bad bucket %s (expected seconds as a number, or a duration like 5ms)",
                            rem_yaml_quote(&q, s));
        } else if (!(v > 0)) {
            rem_yaml_errorf(c->y, item, "bucket must be greater than 0");
        } else if (b.n > 0 && v <= b.le[b.n - 1]) {
            /* Both passed rem_parse_seconds: digits, signs, '.', 'e' and units only. */
            rem_yaml_errorf(c->y, item, "buckets must be strictly increasing: %s after %s", s,
                            prev);
        } else {
            b.le[b.n++] = v;
            free(prev);
            prev = s;
            s = NULL;
        }
        free(s);
    }
    free(prev);
    if (rem_yaml_n_errors(c->y) != errors) {
        free(b.le);
        return;
    }
    free(out->le);
    *out = b;
}

/* routes[].upgrades: Upgrade protocol tokens (RFC 9110 7.8), stored lower-case; h2c is
 * refused (remora speaks h2c by prior knowledge and never tunnels it). */
static void parse_upgrades(struct ctx *c, yaml_node_t *node, struct rem_cfg_route *r)
{
    yaml_node_item_t *items;
    size_t n;
    struct rem_yaml_quoted q;

    if (rem_yaml_seq_items(c->y, node, "\"upgrades\"", &items, &n) != 0)
        return;
    r->upgrades_set = true;
    r->upgrades = rem_xcalloc(n ? n : 1, sizeof(*r->upgrades));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = rem_yaml_node(c->y, items[i]);
        char *s;

        if (item == NULL || rem_yaml_visit(c->y, item) != 0)
            break;
        s = rem_yaml_scalar(c->y, item, "an upgrade protocol");
        if (s == NULL)
            continue;
        for (char *p = s; *p != '\0'; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        if (!is_token(s) || strchr(s, '/') != NULL) {
            rem_yaml_errorf(c->y, item, "bad upgrade protocol %s (expected a token like websocket)",
                            rem_yaml_quote(&q, s));
            free(s);
            continue;
        }
        if (strcmp(s, "h2c") == 0) {
            rem_yaml_errorf(c->y, item,
                            "upgrade protocol \"h2c\" cannot be tunnelled (remora speaks h2c "
                            "by prior knowledge)");
            free(s);
            continue;
        }
        r->upgrades[r->n_upgrades++] = s;
    }
}

static void parse_routes(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    enum {
        F_NAME,
        F_MATCH,
        F_UPSTREAM,
        F_TIMEOUT,
        F_BUCKETS,
        F_MAXREQ,
        F_MAXPEND,
        F_UPGRADES,
        F_CONNECT,
        F_TUNNEL_IDLE,
        F_N
    };
    yaml_node_item_t *items;
    struct entry *names = NULL;
    size_t n, n_names = 0;

    if (rem_yaml_seq_items(c->y, node, "\"routes\"", &items, &n) != 0)
        return;
    if (n == 0) {
        rem_yaml_errorf(c->y, node,
                        "\"routes\" must not be empty (leave it out for one route to the first "
                        "upstream)");
        return;
    }
    cfg->routes = rem_xcalloc(n, sizeof(*cfg->routes));
    c->route_upstream = rem_xcalloc(n, sizeof(*c->route_upstream));
    names = rem_xcalloc(n, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        struct rem_yaml_field f[F_N] = {
            [F_NAME] = {.key = "name"},           [F_MATCH] = {.key = "match"},
            [F_UPSTREAM] = {.key = "upstream"},   [F_TIMEOUT] = {.key = "timeout"},
            [F_BUCKETS] = {.key = "buckets"},     [F_MAXREQ] = {.key = "max_requests"},
            [F_MAXPEND] = {.key = "max_pending"}, [F_UPGRADES] = {.key = "upgrades"},
            [F_CONNECT] = {.key = "connect"},     [F_TUNNEL_IDLE] = {.key = "tunnel_idle_timeout"},
        };
        struct rem_cfg_route *r = &cfg->routes[cfg->n_routes++];
        yaml_node_t *item = rem_yaml_node(c->y, items[i]);
        uint64_t v;

        r->timeout_ms = REM_DEF_ROUTE_TIMEOUT_MS;
        r->max_pending = REM_DEF_MAX_PENDING;
        r->tunnel_idle_timeout_ms = REM_DEF_TUNNEL_IDLE_TIMEOUT_MS;
        if (item == NULL || rem_yaml_visit(c->y, item) != 0)
            break;
        if (rem_yaml_map_fields(c->y, item, "a route", "in route", f, F_N) != 0)
            continue;
        if (f[F_NAME].val == NULL)
            rem_yaml_missing_key(c->y, item, "name", "in route");
        else if (get_name(c, f[F_NAME].val, &r->name) == 0)
            names[n_names++] = (struct entry){.name = r->name, .node = f[F_NAME].val, .idx = i};
        if (f[F_MATCH].val != NULL)
            parse_match(c, f[F_MATCH].val, r);
        if (f[F_UPSTREAM].val == NULL)
            rem_yaml_missing_key(c->y, item, "upstream", "in route");
        else if (rem_yaml_get_string(c->y, f[F_UPSTREAM].val, "upstream", &r->upstream) == 0)
            c->route_upstream[i] = f[F_UPSTREAM].val;
        if (f[F_TIMEOUT].val != NULL)
            (void)get_duration(c, f[F_TIMEOUT].val, "timeout", false, &r->timeout_ms);
        if (f[F_BUCKETS].val != NULL)
            parse_buckets(c, f[F_BUCKETS].val, &r->buckets);
        /* max_requests left out means no route limit (0); a queue length without it would
         * bound a queue that never forms, so it is refused rather than ignored. */
        if (f[F_MAXREQ].val != NULL &&
            rem_yaml_get_uint(c->y, f[F_MAXREQ].val, "max_requests", 1, MAX_ADMISSION, &v) == 0)
            r->max_requests = (uint32_t)v;
        if (f[F_MAXPEND].val != NULL) {
            if (f[F_MAXREQ].val == NULL)
                rem_yaml_errorf(c->y, f[F_MAXPEND].key_node,
                                "\"max_pending\" on a route needs \"max_requests\"");
            if (rem_yaml_get_uint(c->y, f[F_MAXPEND].val, "max_pending", 0, MAX_ADMISSION, &v) == 0)
                r->max_pending = (uint32_t)v;
        }
        if (f[F_UPGRADES].val != NULL)
            parse_upgrades(c, f[F_UPGRADES].val, r);
        if (f[F_CONNECT].val != NULL)
            (void)rem_yaml_get_bool(c->y, f[F_CONNECT].val, "connect", &r->connect);
        if (f[F_TUNNEL_IDLE].val != NULL)
            (void)get_duration(c, f[F_TUNNEL_IDLE].val, "tunnel_idle_timeout", false,
                               &r->tunnel_idle_timeout_ms);
    }
    check_dup_names(c, names, n_names, "route");
    free(names);
}

static void parse_limits(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    enum {
        F_HDR_BYTES,
        F_HEADERS,
        F_BODY,
        F_IDLE,
        F_HDR_TIMEOUT,
        F_BODY_TIMEOUT,
        F_BUFFER,
        F_TLS_HS,
        F_MAX_HS,
        F_UNDERSCORES,
        F_N
    };
    struct rem_yaml_field f[F_N] = {
        [F_HDR_BYTES] = {.key = "max_header_bytes"},
        [F_HEADERS] = {.key = "max_headers"},
        [F_BODY] = {.key = "max_body_bytes"},
        [F_IDLE] = {.key = "client_idle_timeout"},
        [F_HDR_TIMEOUT] = {.key = "request_header_timeout"},
        [F_BODY_TIMEOUT] = {.key = "request_body_timeout"},
        [F_BUFFER] = {.key = "buffer_bytes"},
        [F_TLS_HS] = {.key = "tls_handshake_timeout"},
        [F_MAX_HS] = {.key = "max_tls_handshakes"},
        [F_UNDERSCORES] = {.key = "headers_with_underscores"},
    };
    uint64_t v;
    int e;
    struct rem_cfg_limits *lim = &cfg->limits;

    if (rem_yaml_map_fields(c->y, node, "\"limits\"", "in limits", f, F_N) != 0)
        return;
    if (f[F_HDR_BYTES].val != NULL)
        (void)get_size(c, f[F_HDR_BYTES].val, "max_header_bytes", true, &lim->max_header_bytes);
    if (f[F_HEADERS].val != NULL &&
        rem_yaml_get_uint(c->y, f[F_HEADERS].val, "max_headers", 1, UINT32_MAX, &v) == 0)
        lim->max_headers = (uint32_t)v;
    if (f[F_BODY].val != NULL)
        (void)get_size(c, f[F_BODY].val, "max_body_bytes", false, &lim->max_body_bytes);
    if (f[F_IDLE].val != NULL)
        (void)get_duration(c, f[F_IDLE].val, "client_idle_timeout", false,
                           &lim->client_idle_timeout_ms);
    if (f[F_HDR_TIMEOUT].val != NULL)
        (void)get_duration(c, f[F_HDR_TIMEOUT].val, "request_header_timeout", false,
                           &lim->request_header_timeout_ms);
    if (f[F_BODY_TIMEOUT].val != NULL)
        (void)get_duration(c, f[F_BODY_TIMEOUT].val, "request_body_timeout", false,
                           &lim->request_body_timeout_ms);
    if (f[F_BUFFER].val != NULL)
        (void)get_size(c, f[F_BUFFER].val, "buffer_bytes", true, &lim->buffer_bytes);
    if (f[F_TLS_HS].val != NULL)
        (void)get_duration(c, f[F_TLS_HS].val, "tls_handshake_timeout", false,
                           &lim->tls_handshake_timeout_ms);
    if (f[F_MAX_HS].val != NULL &&
        rem_yaml_get_uint(c->y, f[F_MAX_HS].val, "max_tls_handshakes", 0, MAX_ADMISSION, &v) == 0)
        lim->max_tls_handshakes = (uint32_t)v;
    if (f[F_UNDERSCORES].val != NULL &&
        rem_yaml_get_enum(c->y, f[F_UNDERSCORES].val, "headers_with_underscores",
                          rem_underscores_names, "allow, drop or reject", &e) == 0)
        lim->headers_with_underscores = (enum rem_underscores)e;
}

static void parse_log(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    enum { F_LEVEL, F_FORMAT, F_ACCESS, F_N };
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    static const char *const formats[] = {"json", "text", NULL};
    struct rem_yaml_field f[F_N] = {
        [F_LEVEL] = {.key = "level"},
        [F_FORMAT] = {.key = "format"},
        [F_ACCESS] = {.key = "access_log"},
    };
    int v;
    struct rem_cfg_log *lg = &cfg->log;

    if (rem_yaml_map_fields(c->y, node, "\"log\"", "in log", f, F_N) != 0)
        return;
    if (f[F_LEVEL].val != NULL && rem_yaml_get_enum(c->y, f[F_LEVEL].val, "level", levels,
                                                    "debug, info, warn or error", &v) == 0)
        lg->level = (enum rem_log_level)v;
    if (f[F_FORMAT].val != NULL &&
        rem_yaml_get_enum(c->y, f[F_FORMAT].val, "format", formats, "json or text", &v) == 0)
        lg->format = (enum rem_log_format)v;
    if (f[F_ACCESS].val != NULL)
        (void)rem_yaml_get_bool(c->y, f[F_ACCESS].val, "access_log", &lg->access_log);
}

static void parse_drain(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    enum { F_DELAY, F_TIMEOUT, F_N };
    struct rem_yaml_field f[F_N] = {[F_DELAY] = {.key = "delay"}, [F_TIMEOUT] = {.key = "timeout"}};

    if (rem_yaml_map_fields(c->y, node, "\"drain\"", "in drain", f, F_N) != 0)
        return;
    if (f[F_DELAY].val != NULL)
        (void)get_duration(c, f[F_DELAY].val, "delay", false, &cfg->drain.delay_ms);
    if (f[F_TIMEOUT].val != NULL)
        (void)get_duration(c, f[F_TIMEOUT].val, "timeout", true, &cfg->drain.timeout_ms);
}

static void parse_metrics(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    struct rem_yaml_field f[] = {{.key = "buckets"}};

    if (rem_yaml_map_fields(c->y, node, "\"metrics\"", "in metrics", f, 1) == 0 && f[0].val != NULL)
        parse_buckets(c, f[0].val, &cfg->metrics.buckets);
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
    struct rem_yaml_quoted q;
    size_t n, first = 0;
    char abuf[64];

    if (rem_yaml_seq_items(c->y, node, "\"resolvers\"", &items, &n) != 0)
        return;
    if (n == 0) {
        rem_yaml_errorf(c->y, node,
                        "\"resolvers\" must not be empty (leave it out to use /etc/resolv.conf)");
        return;
    }
    if (n > DNS_MAX_RESOLVERS) {
        rem_yaml_errorf(c->y, rem_yaml_node(c->y, items[DNS_MAX_RESOLVERS]),
                        "too many resolvers (at most %d)", DNS_MAX_RESOLVERS);
        n = DNS_MAX_RESOLVERS;
    }
    dns->resolvers = rem_xcalloc(n, sizeof(*dns->resolvers));
    e = rem_xcalloc(n, sizeof(*e));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = rem_yaml_node(c->y, items[i]);
        struct rem_sockaddr *a = &dns->resolvers[dns->n_resolvers];
        const char *why;
        char *s;

        if (item == NULL || rem_yaml_visit(c->y, item) != 0)
            break;
        s = rem_yaml_scalar(c->y, item, "a resolver");
        if (s == NULL)
            continue;
        why = resolver_problem(s, a);
        if (why != NULL) {
            rem_yaml_errorf(c->y, item, "bad resolver %s (%s)", rem_yaml_quote(&q, s), why);
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
        rem_yaml_errorf(c->y, e[i].node, "duplicate resolver %s (first at %zu:%zu)", abuf,
                        e[first].node->start_mark.line + 1, e[first].node->start_mark.column + 1);
    }
    free(e);
}

/* The dns section; its defaults are already in *dns. min_ttl may be 0 (no floor); max_ttl
 * must not be below it, whichever of the two is written or left at its default. */
static void parse_dns(struct ctx *c, yaml_node_t *node, struct rem_config *cfg)
{
    enum { F_RESOLVERS, F_MIN_TTL, F_MAX_TTL, F_TIMEOUT, F_ATTEMPTS, F_FAMILY, F_STALE_TTL, F_N };
    static const char *const families[] = {"auto", "v4", "v6", NULL};
    struct rem_yaml_field f[F_N] = {
        [F_RESOLVERS] = {.key = "resolvers"}, [F_MIN_TTL] = {.key = "min_ttl"},
        [F_MAX_TTL] = {.key = "max_ttl"},     [F_TIMEOUT] = {.key = "timeout"},
        [F_ATTEMPTS] = {.key = "attempts"},   [F_FAMILY] = {.key = "family"},
        [F_STALE_TTL] = {.key = "stale_ttl"},
    };
    bool ttl_ok = true;
    char lo[32], hi[32];
    uint64_t v;
    int family;
    struct rem_cfg_dns *dns = &cfg->dns;

    if (rem_yaml_map_fields(c->y, node, "\"dns\"", "in dns", f, F_N) != 0)
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
            rem_yaml_errorf(c->y, f[F_MAX_TTL].val,
                            "\"max_ttl\" (%s) must not be less than \"min_ttl\" (%s%s)", hi, lo,
                            f[F_MIN_TTL].val != NULL ? "" : ", the default");
        else
            rem_yaml_errorf(
                c->y, f[F_MIN_TTL].val,
                "\"min_ttl\" (%s) must not be greater than \"max_ttl\" (%s, the default)", lo, hi);
    }
    if (f[F_TIMEOUT].val != NULL)
        (void)get_duration_range(c, f[F_TIMEOUT].val, "timeout", 1, DNS_MAX_TIMEOUT_MS,
                                 &dns->timeout_ms);
    if (f[F_ATTEMPTS].val != NULL &&
        rem_yaml_get_uint(c->y, f[F_ATTEMPTS].val, "attempts", 1, DNS_MAX_ATTEMPTS, &v) == 0)
        dns->attempts = (uint32_t)v;
    if (f[F_FAMILY].val != NULL && rem_yaml_get_enum(c->y, f[F_FAMILY].val, "family", families,
                                                     "auto, v4 or v6", &family) == 0)
        dns->family = (enum rem_dns_family)family;
    if (f[F_STALE_TTL].val != NULL)
        (void)get_duration_range(c, f[F_STALE_TTL].val, "stale_ttl", 0, DNS_MAX_TTL_MS,
                                 &dns->stale_ttl_ms);
}

/* ---- checks across sections ------------------------------------------------------------------ */

/* Fills upstream_idx of every route; reports names with no upstream. */
static void resolve_routes(struct ctx *c, struct rem_config *cfg)
{
    struct entry *ups = rem_xcalloc(cfg->n_upstreams, sizeof(*ups));
    struct rem_yaml_quoted q1, q2;
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
        if (lo < n && strcmp(ups[lo].name, r->upstream) == 0) {
            r->upstream_idx = ups[lo].idx;
            if (r->connect && cfg->upstreams[r->upstream_idx].protocol != REM_PROTO_HTTP1)
                rem_yaml_errorf(c->y, c->route_upstream ? c->route_upstream[i] : NULL,
                                "route %s has \"connect: true\": its upstream must have "
                                "protocol http1 (a CONNECT tunnel is raw bytes to an endpoint)",
                                rem_yaml_quote(&q2, r->name ? r->name : ""));
        } else
            rem_yaml_errorf(c->y, c->route_upstream ? c->route_upstream[i] : NULL,
                            "unknown upstream %s in route %s", rem_yaml_quote(&q1, r->upstream),
                            rem_yaml_quote(&q2, r->name ? r->name : ""));
    }
    free(ups);
}

/* Two listeners (or a listener and admin) on the same address cannot both bind. Port 0 asks
 * the kernel for a fresh port, so it never collides. */
static void check_addresses(struct ctx *c, struct rem_config *cfg)
{
    struct entry *e = rem_xcalloc(cfg->n_listeners + 1, sizeof(*e));
    struct rem_yaml_quoted q;
    size_t n = 0, first = 0;
    char abuf[128];

    for (size_t i = 0; i <= cfg->n_listeners; i++) {
        const struct rem_cfg_listener *l = i < cfg->n_listeners ? &cfg->listeners[i] : &cfg->admin;

        if (l->addr.len == 0 || (l->addr.ss.ss_family != AF_UNIX && addr_port(&l->addr) == 0))
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
            rem_yaml_errorf(c->y, dup->node, "address %s is already used by admin", abuf);
        else
            rem_yaml_errorf(c->y, dup->node, "address %s is already used by listener %s", abuf,
                            rem_yaml_quote(&q, other->name));
    }
    free(e);
}

/* ---- loading --------------------------------------------------------------------------------- */

/* The top-level keys, each with its parser, called in this order (the cross-checks in
 * on_document run after all of them). Adding a section here is one parse_* function and one
 * row; its struct and defaults live in config.h and config.c. */
static const struct section {
    const char *key;
    void (*parse)(struct ctx *c, yaml_node_t *node, struct rem_config *cfg);
} sections[] = {
    {"workers", parse_workers},     /* worker threads: auto or a count */
    {"listeners", parse_listeners}, /* downstream addresses, with their http2 settings */
    {"admin", parse_admin},         /* the admin listener (/healthz, /readyz, /metrics) */
    {"upstreams", parse_upstreams}, /* clusters: endpoints, pool, admission, health checks */
    {"routes", parse_routes},       /* match -> upstream, timeout, buckets, route limits */
    {"limits", parse_limits},       /* downstream request limits and timeouts */
    {"log", parse_log},             /* level, format, access log */
    {"metrics", parse_metrics},     /* default latency buckets */
    {"dns", parse_dns},             /* resolvers and TTL bounds for endpoint names */
    {"drain", parse_drain},         /* graceful shutdown: listener delay, timeout */
};

#define N_SECTIONS (sizeof(sections) / sizeof(sections[0]))

/* rem_yaml_doc_cb: builds c->cfg from the document's root (NULL when the file is empty). The
 * generation is kept even when errors were reported: the load drops it then. */
static void on_document(struct rem_yaml_reader *y, yaml_node_t *root, void *arg)
{
    struct ctx *c = arg;
    struct rem_yaml_field f[N_SECTIONS];

    c->cfg = rem_config_new(c->name);
    for (size_t i = 0; i < N_SECTIONS; i++)
        f[i].key = sections[i].key;
    if (rem_yaml_map_fields(y, root, "the document", "at top level", f, N_SECTIONS) != 0) {
        rem_config_unref(c->cfg);
        c->cfg = NULL;
        return;
    }
    for (size_t i = 0; i < N_SECTIONS; i++) {
        if (f[i].val != NULL)
            sections[i].parse(c, f[i].val, c->cfg);
    }
    /* A section that failed as a whole gets its default here; the cross-checks skip it. */
    rem_config_fill_defaults(c->cfg);
    if (!c->upstreams_bad)
        resolve_routes(c, c->cfg);
    if (!c->listeners_bad)
        check_addresses(c, c->cfg);
}

/* Reads the file at path, or buf when path is NULL, into a generation named name. */
static struct rem_config *load(const char *path, const char *buf, size_t len, const char *name,
                               struct rem_config_diag *diag)
{
    struct ctx c = {.y = rem_yaml_reader_new(name), .name = name};
    int rc;

    if (path != NULL)
        rc = rem_yaml_read_file(c.y, path, on_document, &c);
    else
        rc = rem_yaml_read_buffer(c.y, buf, len, on_document, &c);
    if (rc != 0) {
        rem_config_unref(c.cfg);
        c.cfg = NULL;
    }
    if (diag != NULL)
        rem_yaml_append_messages(c.y, &diag->msgs, &diag->n);
    free(c.listener_addr);
    free(c.route_upstream);
    rem_yaml_reader_free(c.y);
    return c.cfg;
}

struct rem_config *rem_config_load_string(const char *yaml, const char *name,
                                          struct rem_config_diag *diag)
{
    if (yaml == NULL)
        return NULL;
    return load(NULL, yaml, strlen(yaml), name != NULL ? name : "<string>", diag);
}

struct rem_config *rem_config_load_bytes(const char *buf, size_t len, const char *name,
                                         struct rem_config_diag *diag)
{
    if (buf == NULL)
        return NULL;
    return load(NULL, buf, len, name != NULL ? name : "<string>", diag);
}

struct rem_config *rem_config_load_file(const char *path, struct rem_config_diag *diag)
{
    if (path == NULL)
        return NULL;
    return load(path, NULL, 0, path, diag);
}
