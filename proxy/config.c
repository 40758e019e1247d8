/* SPDX-License-Identifier: Apache-2.0
 * config: lifetime of a configuration generation (defaults, references, free, summary) and the
 * value parsers for durations, seconds, sizes and addresses. Owns nothing beyond the generation
 * it builds; reading YAML lives in config_parse.c. */
#include "config.h"
#include "error.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <time.h>

static void listener_dispose(struct rem_cfg_listener *l)
{
    if (l->tls) {
        free(l->tls->cert);
        free(l->tls->key);
        free(l->tls->ciphers);
        free(l->tls->ciphersuites);
        free(l->tls->client_ca);
        free(l->tls->ocsp_response);
        free(l->tls);
        l->tls = NULL;
    }
    free(l->name);
    l->name = NULL;
    free(l->address);
    l->address = NULL;
}

static void upstream_dispose(struct rem_cfg_upstream *u)
{
    free(u->name);
    u->name = NULL;
    for (size_t i = 0; u->endpoints != NULL && i < u->n_endpoints; i++)
        free(u->endpoints[i].host);
    free(u->endpoints);
    u->endpoints = NULL;
    u->n_endpoints = 0;
    free(u->health_check.path);
    u->health_check.path = NULL;
    if (u->tls) {
        free(u->tls->ca);
        free(u->tls->sni);
        free(u->tls->cert);
        free(u->tls->key);
        free(u->tls);
        u->tls = NULL;
    }
}

static void buckets_dispose(struct rem_cfg_buckets *b)
{
    free(b->le);
    b->le = NULL;
    b->n = 0;
}

static void route_dispose(struct rem_cfg_route *r)
{
    free(r->name);
    free(r->host);
    free(r->path);
    free(r->path_prefix);
    for (size_t i = 0; r->methods != NULL && i < r->n_methods; i++)
        free(r->methods[i]);
    free(r->methods);
    for (size_t i = 0; r->client_san != NULL && i < r->n_client_san; i++)
        free(r->client_san[i]);
    free(r->client_san);
    for (size_t i = 0; r->upgrades != NULL && i < r->n_upgrades; i++)
        free(r->upgrades[i]);
    free(r->upgrades);
    free(r->upstream);
    buckets_dispose(&r->buckets);
    memset(r, 0, sizeof(*r));
}

static void config_free(struct rem_config *cfg)
{
    for (size_t i = 0; cfg->listeners != NULL && i < cfg->n_listeners; i++)
        listener_dispose(&cfg->listeners[i]);
    free(cfg->listeners);
    listener_dispose(&cfg->admin);
    for (size_t i = 0; cfg->upstreams != NULL && i < cfg->n_upstreams; i++)
        upstream_dispose(&cfg->upstreams[i]);
    free(cfg->upstreams);
    for (size_t i = 0; cfg->routes != NULL && i < cfg->n_routes; i++)
        route_dispose(&cfg->routes[i]);
    free(cfg->routes);
    buckets_dispose(&cfg->metrics.buckets);
    free(cfg->dns.resolvers);
    free(cfg->source);
    free(cfg);
}

void rem_cfg_upstream_defaults(struct rem_cfg_upstream *u)
{
    u->protocol = REM_PROTO_HTTP1;
    u->connect_timeout_ms = REM_DEF_CONNECT_TIMEOUT_MS;
    u->idle_timeout_ms = REM_DEF_IDLE_TIMEOUT_MS;
    u->max_connections = REM_DEF_MAX_CONNECTIONS;
    u->max_requests = REM_DEF_MAX_REQUESTS;
    u->max_pending = REM_DEF_MAX_PENDING;
    u->queue_timeout_ms = REM_DEF_CONNECT_TIMEOUT_MS;
    u->adaptive = false;
    u->lb = REM_LB_ROUND_ROBIN;
    u->health_check.interval_ms = REM_DEF_HC_INTERVAL_MS;
    u->health_check.timeout_ms = REM_DEF_HC_TIMEOUT_MS;
    u->health_check.rise = REM_DEF_HC_RISE;
    u->health_check.fall = REM_DEF_HC_FALL;
}

struct rem_config *rem_config_new(const char *source)
{
    static const double def_buckets[] = REM_DEF_BUCKETS;
    struct rem_config *cfg = rem_xcalloc(1, sizeof(*cfg));

    cfg->refcnt = 1;
    cfg->source = rem_xstrdup(source != NULL ? source : "<embedded>");
    cfg->loaded_at = (int64_t)time(NULL);
    cfg->workers = 0;
    cfg->limits.max_header_bytes = REM_DEF_MAX_HEADER_BYTES;
    cfg->limits.max_headers = REM_DEF_MAX_HEADERS;
    cfg->limits.max_body_bytes = 0;
    cfg->limits.client_idle_timeout_ms = REM_DEF_CLIENT_IDLE_TIMEOUT_MS;
    cfg->limits.request_header_timeout_ms = REM_DEF_REQUEST_HEADER_TIMEOUT_MS;
    cfg->limits.request_body_timeout_ms = 0; /* no limit: uploads over slow links */
    cfg->limits.buffer_bytes = REM_DEF_BUFFER_BYTES;
    cfg->limits.tls_handshake_timeout_ms = REM_DEF_TLS_HANDSHAKE_TIMEOUT_MS;
    cfg->limits.max_tls_handshakes = REM_DEF_MAX_TLS_HANDSHAKES;
    cfg->limits.headers_with_underscores = REM_DEF_HEADERS_WITH_UNDERSCORES;
    cfg->log.level = REM_LOG_INFO;
    cfg->log.format = REM_LOG_FORMAT_JSON;
    cfg->log.access_log = false;
    cfg->metrics.buckets.n = sizeof(def_buckets) / sizeof(def_buckets[0]);
    cfg->metrics.buckets.le = rem_xcalloc(cfg->metrics.buckets.n, sizeof(double));
    memcpy(cfg->metrics.buckets.le, def_buckets, sizeof(def_buckets));
    cfg->dns.resolvers = NULL;
    cfg->dns.n_resolvers = 0;
    cfg->dns.min_ttl_ms = REM_DEF_DNS_MIN_TTL_MS;
    cfg->dns.max_ttl_ms = REM_DEF_DNS_MAX_TTL_MS;
    cfg->dns.timeout_ms = REM_DEF_DNS_TIMEOUT_MS;
    cfg->dns.attempts = REM_DEF_DNS_ATTEMPTS;
    cfg->dns.family = REM_DNS_AUTO;
    cfg->dns.stale_ttl_ms = REM_DEF_DNS_STALE_TTL_MS;
    cfg->drain.delay_ms = REM_DEF_DRAIN_DELAY_MS;
    cfg->drain.timeout_ms = REM_DEF_DRAIN_TIMEOUT_MS;
    return cfg;
}

/* The default addresses are compile-time constants; failing to parse one is a build bug. */
static void default_listener(struct rem_cfg_listener *l, const char *name, const char *address)
{
    l->name = rem_xstrdup(name);
    l->address = rem_xstrdup(address);
    if (rem_parse_sockaddr(address, &l->addr) != 0) {
        fprintf(stderr, "remora: %s:%d: bad built-in address \"%s\"\n", __FILE__, __LINE__,
                address);
        abort();
    }
}

/* 0 is outside every http2 key's range, so it marks a key left out. The header list limit
 * follows limits.max_header_bytes: one bound for a request's headers whichever the protocol;
 * a SETTINGS value is 32 bits (RFC 9113 section 6.5.1), hence the cap. */
static void http2_fill_defaults(struct rem_cfg_http2 *h2, const struct rem_cfg_limits *lim)
{
    if (h2->max_concurrent_streams == 0)
        h2->max_concurrent_streams = REM_DEF_H2_MAX_CONCURRENT_STREAMS;
    if (h2->initial_window_bytes == 0)
        h2->initial_window_bytes = REM_DEF_H2_INITIAL_WINDOW_BYTES;
    if (h2->max_header_list_bytes == 0)
        h2->max_header_list_bytes =
            lim->max_header_bytes > UINT32_MAX ? UINT32_MAX : (uint32_t)lim->max_header_bytes;
    if (h2->max_resets == 0)
        h2->max_resets = REM_DEF_H2_MAX_RESETS;
    if (h2->reset_interval_ms == 0)
        h2->reset_interval_ms = REM_DEF_H2_RESET_INTERVAL_MS;
    if (h2->max_control_frames == 0)
        h2->max_control_frames = REM_DEF_H2_MAX_CONTROL_FRAMES;
    if (!h2->connect_protocol_set)
        h2->enable_connect_protocol = true;
}

void rem_config_fill_defaults(struct rem_config *cfg)
{
    if (cfg->listeners == NULL) {
        cfg->listeners = rem_xcalloc(1, sizeof(*cfg->listeners));
        cfg->n_listeners = 1;
        default_listener(&cfg->listeners[0], "inbound", REM_DEF_LISTEN);
    }
    if (cfg->admin.name == NULL) {
        listener_dispose(&cfg->admin);
        default_listener(&cfg->admin, "admin", REM_DEF_ADMIN);
    }
    if (cfg->upstreams == NULL) {
        struct rem_cfg_upstream *u;

        cfg->upstreams = rem_xcalloc(1, sizeof(*cfg->upstreams));
        cfg->n_upstreams = 1;
        u = &cfg->upstreams[0];
        u->name = rem_xstrdup("app");
        u->endpoints = rem_xcalloc(1, sizeof(*u->endpoints));
        u->n_endpoints = 1;
        if (rem_parse_endpoint(REM_DEF_UPSTREAM_ENDPOINT, &u->endpoints[0], NULL) != 0) {
            fprintf(stderr, "remora: %s:%d: bad built-in endpoint \"%s\"\n", __FILE__, __LINE__,
                    REM_DEF_UPSTREAM_ENDPOINT);
            abort();
        }
        rem_cfg_upstream_defaults(u);
    }
    /* A nameless first upstream only exists in a load that has already failed. */
    if (cfg->routes == NULL && cfg->n_upstreams > 0 && cfg->upstreams[0].name != NULL) {
        struct rem_cfg_route *r;

        cfg->routes = rem_xcalloc(1, sizeof(*cfg->routes));
        cfg->n_routes = 1;
        r = &cfg->routes[0];
        r->name = rem_xstrdup("default");
        r->path_prefix = rem_xstrdup("/");
        r->upstream = rem_xstrdup(cfg->upstreams[0].name);
        r->upstream_idx = 0;
        r->timeout_ms = REM_DEF_ROUTE_TIMEOUT_MS;
        r->tunnel_idle_timeout_ms = REM_DEF_TUNNEL_IDLE_TIMEOUT_MS;
        r->max_requests = 0;
        r->max_pending = REM_DEF_MAX_PENDING;
    }
    for (size_t i = 0; cfg->listeners != NULL && i < cfg->n_listeners; i++)
        http2_fill_defaults(&cfg->listeners[i].http2, &cfg->limits);
    http2_fill_defaults(&cfg->admin.http2, &cfg->limits);
}

/* One protocol (RFC 9110 7.8: name ["/" version]) against the route's list. */
static bool allows_one(const struct rem_cfg_route *r, const char *tok, size_t len)
{
    const char *slash = memchr(tok, '/', len);
    if (slash)
        len = (size_t)(slash - tok);
    if (len == 0 || (len == 3 && strncasecmp(tok, "h2c", 3) == 0))
        return false; /* h2c is never tunnelled: remora speaks h2c by prior knowledge */
    if (!r->upgrades_set)
        return len == 9 && strncasecmp(tok, "websocket", 9) == 0;
    for (size_t i = 0; i < r->n_upgrades; i++)
        if (strlen(r->upgrades[i]) == len && strncasecmp(r->upgrades[i], tok, len) == 0)
            return true;
    return false;
}

bool rem_route_allows_upgrade(const struct rem_cfg_route *r, const char *list, size_t len,
                              size_t *off, size_t *n)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (list[i] == ' ' || list[i] == '\t' || list[i] == ','))
            i++;
        size_t start = i;
        while (i < len && list[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (list[end - 1] == ' ' || list[end - 1] == '\t'))
            end--;
        if (end > start && allows_one(r, list + start, end - start)) {
            if (off)
                *off = start;
            if (n)
                *n = end - start;
            return true;
        }
    }
    return false;
}

struct rem_config *rem_config_default(void)
{
    struct rem_config *cfg = rem_config_new("<embedded>");

    rem_config_fill_defaults(cfg);
    return cfg;
}

struct rem_config *rem_config_ref(struct rem_config *cfg)
{
    if (cfg != NULL)
        __atomic_add_fetch(&cfg->refcnt, 1, __ATOMIC_RELAXED);
    return cfg;
}

void rem_config_unref(struct rem_config *cfg)
{
    int left;

    if (cfg == NULL)
        return;
    /* Release so that every write by this holder happens before the free; the acquire half
     * makes the freeing thread see them. */
    left = __atomic_sub_fetch(&cfg->refcnt, 1, __ATOMIC_ACQ_REL);
    if (left < 0) {
        fprintf(stderr, "remora: %s:%d: config refcount below zero\n", __FILE__, __LINE__);
        abort();
    }
    if (left == 0)
        config_free(cfg);
}

const char *const rem_underscores_names[] = {
    [REM_UNDERSCORES_ALLOW] = "allow",
    [REM_UNDERSCORES_DROP] = "drop",
    [REM_UNDERSCORES_REJECT] = "reject",
    NULL,
};

static const char *plural(size_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

int rem_config_summary(const struct rem_config *cfg, char *buf, size_t len)
{
    size_t n_endpoints = 0, n_checks = 0;
    char workers[16], checks[48] = "";
    int n;

    if (cfg == NULL || buf == NULL || len == 0)
        return -1;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        n_endpoints += cfg->upstreams[i].n_endpoints;
        n_checks += cfg->upstreams[i].health_check.path != NULL;
    }
    if (n_checks > 0)
        snprintf(checks, sizeof(checks), ", %zu %s", n_checks,
                 plural(n_checks, "health check", "health checks"));
    if (cfg->workers == 0)
        snprintf(workers, sizeof(workers), "auto");
    else
        snprintf(workers, sizeof(workers), "%u", cfg->workers);
    n = snprintf(buf, len, "ok: %zu %s, %zu %s (%zu %s)%s, %zu %s, workers %s", cfg->n_listeners,
                 plural(cfg->n_listeners, "listener", "listeners"), cfg->n_upstreams,
                 plural(cfg->n_upstreams, "upstream", "upstreams"), n_endpoints,
                 plural(n_endpoints, "endpoint", "endpoints"), checks, cfg->n_routes,
                 plural(cfg->n_routes, "route", "routes"), workers);
    if (n < 0 || (size_t)n >= len)
        return -1;
    return 0;
}

void rem_config_diag_dispose(struct rem_config_diag *diag)
{
    if (diag == NULL)
        return;
    for (size_t i = 0; diag->msgs != NULL && i < diag->n; i++)
        free(diag->msgs[i]);
    free(diag->msgs);
    diag->msgs = NULL;
    diag->n = 0;
}

/* Reads a run of decimal digits into *out; returns the number of digits read, or 0 when there
 * are none or the value does not fit in 64 bits. */
static size_t parse_digits(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;

    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');

        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return i;
}

static int scale(uint64_t v, uint64_t mult, uint64_t *out)
{
    if (mult != 0 && v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

int rem_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}};
    uint64_t v;
    size_t n;

    if (s == NULL || out_ms == NULL)
        return -1;
    n = parse_digits(s, &v);
    if (n == 0)
        return -1;
    if (s[n] == '\0') {
        /* A bare number has no unit to guess; only 0 is unambiguous. */
        if (v != 0)
            return -1;
        *out_ms = 0;
        return 0;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + n, units[i].unit) == 0)
            return scale(v, units[i].ms, out_ms);
    }
    return -1;
}

int rem_parse_size_bytes(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"B", 1},
        {"KiB", 1024},
        {"MiB", 1024 * 1024},
        {"GiB", 1024 * 1024 * 1024},
        {"KB", 1000},
        {"MB", 1000 * 1000},
        {"GB", 1000 * 1000 * 1000},
    };
    uint64_t v;
    size_t n;

    if (s == NULL || out == NULL)
        return -1;
    n = parse_digits(s, &v);
    if (n == 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + n, units[i].unit) == 0)
            return scale(v, units[i].mult, out);
    }
    return -1;
}

/* [0-9]+ or [0-9]+.[0-9]+ over exactly n bytes. */
static bool is_decimal(const char *s, size_t n)
{
    size_t i = 0, frac;

    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == 0 || i == n)
        return i > 0;
    if (s[i] != '.')
        return false;
    frac = ++i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    return i == n && i > frac;
}

int rem_parse_seconds(const char *s, double *out_s)
{
    /* ms appends an exponent rather than dividing, so "5ms" rounds exactly as "0.005" does. */
    static const struct {
        const char *unit;
        const char *exp;
        double mult;
    } units[] = {{"ms", "e-3", 1}, {"s", "", 1}, {"m", "", 60}, {"h", "", 60 * 60}};
    char buf[64];
    char *end;
    double v;
    size_t n;

    if (s == NULL || out_s == NULL)
        return -1;
    n = strspn(s, "0123456789.");
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + n, units[i].unit) != 0)
            continue;
        if (!is_decimal(s, n) || n > sizeof(buf) - sizeof("e-3"))
            return -1;
        memcpy(buf, s, n);
        memcpy(buf + n, units[i].exp, strlen(units[i].exp) + 1);
        v = strtod(buf, &end) * units[i].mult;
        if (*end != '\0' || !isfinite(v))
            return -1;
        *out_s = v;
        return 0;
    }
    /* strtod alone would also take spaces, "inf", "nan" and hex: only let it see a plain
     * decimal. remora never calls setlocale, so '.' is the radix character. */
    if (s[0] == '\0' || strspn(s, "0123456789.eE+-") != strlen(s))
        return -1;
    v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v))
        return -1;
    *out_s = v;
    return 0;
}

/* Port: 1 to 5 digits, no sign, value <= 65535. */
static int parse_port(const char *s, unsigned min, uint16_t *out)
{
    uint64_t v;
    size_t n = parse_digits(s, &v);

    if (n == 0 || n > 5 || s[n] != '\0' || v < min || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* Splits "host:port" or "[v6]:port" into a host span and the port text; the span excludes
 * brackets. Returns -1 when the shape is wrong (no port, unbalanced brackets, bare v6). */
static int split_hostport(const char *s, const char **host, size_t *host_len, bool *bracketed,
                          const char **port)
{
    const char *colon;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || close[1] != ':')
            return -1;
        *host = s + 1;
        *host_len = (size_t)(close - s - 1);
        *bracketed = true;
        *port = close + 2;
        return 0;
    }
    colon = strchr(s, ':');
    /* More than one colon without brackets is an IPv6 address with no way to tell its port. */
    if (colon == NULL || strchr(colon + 1, ':') != NULL)
        return -1;
    *host = s;
    *host_len = (size_t)(colon - s);
    *bracketed = false;
    *port = colon + 1;
    return 0;
}

int rem_parse_unix(const char *s, struct rem_sockaddr *out, const char **why)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;
    const char *problem;
    size_t n;

    if (s == NULL || strncmp(s, "unix:", 5) != 0)
        return 1;
    s += 5;
    n = strlen(s);
    if (s[0] == '@') {
        /* Abstract (Linux): no file; the name is every byte after sun_path's leading NUL. */
        if (n == 1) {
            problem = "an abstract socket needs a name after \"unix:@\"";
            goto fail;
        }
        if (n > sizeof(sun->sun_path)) {
            problem = "an abstract socket name is at most 107 bytes";
            goto fail;
        }
    } else if (s[0] != '/') {
        problem = "a Unix socket path must be absolute: unix:/path, or unix:@name";
        goto fail;
    } else if (n >= sizeof(sun->sun_path)) {
        problem = "a Unix socket path is at most 107 bytes";
        goto fail;
    }
    memset(out, 0, sizeof(*out));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, s, n);
    if (s[0] == '@') {
        sun->sun_path[0] = '\0';
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;

fail:
    if (why != NULL)
        *why = problem;
    return -1;
}

int rem_parse_sockaddr(const char *s, struct rem_sockaddr *out)
{
    const char *host, *port_s;
    size_t host_len;
    bool bracketed;
    uint16_t port;
    char hbuf[INET6_ADDRSTRLEN];
    int rc;

    if (s == NULL || out == NULL)
        return -1;
    rc = rem_parse_unix(s, out, NULL);
    if (rc <= 0)
        return rc;
    if (split_hostport(s, &host, &host_len, &bracketed, &port_s) != 0)
        return -1;
    if (host_len == 0 || host_len >= sizeof(hbuf) || parse_port(port_s, 0, &port) != 0)
        return -1;
    memcpy(hbuf, host, host_len);
    hbuf[host_len] = '\0';

    memset(out, 0, sizeof(*out));
    if (bracketed) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;

        if (inet_pton(AF_INET6, hbuf, &sin6->sin6_addr) != 1)
            return -1;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        out->len = sizeof(*sin6);
        return 0;
    }

    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;

    if (strcmp(hbuf, "*") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(hbuf, "localhost") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, hbuf, &sin->sin_addr) != 1)
        return -1;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    out->len = sizeof(*sin);
    return 0;
}

/* RFC 1123 section 2.1: a host name never ends in a numeric label, so a host that does is a
 * malformed address ("1.2.3", "127.1", "0x7f.1"), not a name to look up. getaddrinfo and
 * inet_aton would take such forms as shorthand for an IPv4 address; the "0x" prefix is
 * inet_aton's hex, as the WHATWG URL standard's "ends in a number" check treats it. */
static bool ends_in_number(const char *s, size_t len)
{
    size_t start;
    bool hex;

    if (len > 0 && s[len - 1] == '.')
        len--;
    start = len;
    while (start > 0 && s[start - 1] != '.')
        start--;
    if (start == len)
        return false;
    hex = len - start >= 2 && s[start] == '0' && (s[start + 1] == 'x' || s[start + 1] == 'X');
    for (size_t i = start + (hex ? 2 : 0); i < len; i++) {
        char c = s[i];

        if (!((c >= '0' && c <= '9') ||
              (hex && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))))
            return false;
    }
    return true;
}

/* What is wrong with an unbracketed host, or NULL when it is a dotted IPv4 address or a DNS
 * name: letters, digits, '-', '_' and '.', at most 253 bytes besides a final dot and 63 per
 * label, no empty label (RFC 1035 sections 2.3.1 and 2.3.4). '_' is tolerated because service
 * names use it. */
static const char *host_problem(const char *s)
{
    size_t label = 0, len = strlen(s);

    if (len == 0)
        return "missing host";
    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (c == '.') {
            if (label == 0)
                return "empty label in host name";
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return "a host name takes letters, digits, '-', '_' and '.'";
        if (++label > 63)
            return "label longer than 63 bytes in host name";
    }
    if (len - (s[len - 1] == '.') > 253)
        return "host name longer than 253 bytes";
    if (ends_in_number(s, len)) {
        struct in_addr a4;

        if (inet_pton(AF_INET, s, &a4) != 1)
            return "not an IPv4 address, and a host name cannot end in a numeric label";
    }
    return NULL;
}

int rem_parse_endpoint(const char *s, struct rem_cfg_endpoint *out, const char **why)
{
    const char *h, *port_s, *problem = NULL;
    size_t host_len;
    bool bracketed, is_name = false;
    uint16_t p;
    char *copy = NULL;

    if (s == NULL || out == NULL) {
        problem = "no endpoint";
        goto fail;
    }
    if (strncmp(s, "unix:", 5) == 0) {
        struct rem_sockaddr a;

        if (rem_parse_unix(s, &a, &problem) != 0)
            goto fail;
        out->host = rem_xstrdup(s);
        out->port = 0;
        out->is_name = false;
        out->is_unix = true;
        return 0;
    }
    if (split_hostport(s, &h, &host_len, &bracketed, &port_s) != 0) {
        problem = "expected host:port or [v6]:port";
        goto fail;
    }
    if (parse_port(port_s, 1, &p) != 0) {
        problem = "port must be 1-65535";
        goto fail;
    }
    copy = rem_xcalloc(host_len + 1, 1);
    memcpy(copy, h, host_len);
    if (bracketed) {
        struct in6_addr a6;

        if (inet_pton(AF_INET6, copy, &a6) != 1) {
            problem = "not an IPv6 address in brackets";
            goto fail;
        }
    } else {
        struct in_addr a4;

        problem = host_problem(copy);
        if (problem != NULL)
            goto fail;
        /* Only inet_pton's strict dotted quad is numeric: "localhost" is a name like any
         * other, found in /etc/hosts or DNS. */
        is_name = inet_pton(AF_INET, copy, &a4) != 1;
    }
    out->host = copy;
    out->port = p;
    out->is_name = is_name;
    out->is_unix = false;
    return 0;

fail:
    free(copy);
    if (why != NULL)
        *why = problem;
    return -1;
}

int rem_parse_hostport(const char *s, char **host, uint16_t *port)
{
    struct rem_cfg_endpoint e;

    if (host == NULL || port == NULL || rem_parse_endpoint(s, &e, NULL) != 0)
        return -1;
    if (e.is_unix) {
        free(e.host);
        return -1;
    }
    *host = e.host;
    *port = e.port;
    return 0;
}

int rem_sockaddr_str(const struct rem_sockaddr *a, char *buf, size_t len)
{
    char hbuf[INET6_ADDRSTRLEN];
    int n;

    if (a == NULL || buf == NULL || len == 0)
        return -1;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;

        if (inet_ntop(AF_INET, &sin->sin_addr, hbuf, sizeof(hbuf)) == NULL)
            return -1;
        n = snprintf(buf, len, "%s:%u", hbuf, (unsigned)ntohs(sin->sin_port));
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;

        if (inet_ntop(AF_INET6, &sin6->sin6_addr, hbuf, sizeof(hbuf)) == NULL)
            return -1;
        n = snprintf(buf, len, "[%s]:%u", hbuf, (unsigned)ntohs(sin6->sin6_port));
    } else if (a->ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&a->ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);

        if (a->len <= off)
            return -1;
        if (sun->sun_path[0] == '\0')
            n = snprintf(buf, len, "unix:@%.*s", (int)(a->len - off - 1), sun->sun_path + 1);
        else
            n = snprintf(buf, len, "unix:%s", sun->sun_path);
    } else {
        return -1;
    }
    if (n < 0 || (size_t)n >= len)
        return -1;
    return 0;
}

int rem_cfg_endpoint_str(const struct rem_cfg_endpoint *e, char *buf, size_t len)
{
    int n;

    if (e == NULL || buf == NULL || len == 0)
        return -1;
    if (e->is_unix)
        n = snprintf(buf, len, "%s", e->host);
    else
        n = snprintf(buf, len, strchr(e->host, ':') ? "[%s]:%u" : "%s:%u", e->host,
                     (unsigned)e->port);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
