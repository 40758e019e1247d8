/* SPDX-License-Identifier: Apache-2.0
 * config_dump: JSON rendering of a config generation. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include <event2/buffer.h>

#include "config.h"
#include "config_dump.h"
#include "error.h"

/* JSON string (RFC 8259 7): quotes, backslash and control characters escaped. */
static void str(struct evbuffer *o, const char *s)
{
    evbuffer_add(o, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            evbuffer_add_printf(o, "\\%c", *p);
        else if (*p < 0x20)
            evbuffer_add_printf(o, "\\u%04x", *p);
        else
            evbuffer_add(o, p, 1);
    }
    evbuffer_add(o, "\"", 1);
}

static void key(struct evbuffer *o, bool *first, const char *k)
{
    if (!*first)
        evbuffer_add(o, ",", 1);
    *first = false;
    str(o, k);
    evbuffer_add(o, ":", 1);
}

static void kstr(struct evbuffer *o, bool *first, const char *k, const char *v)
{
    key(o, first, k);
    if (v)
        str(o, v);
    else
        evbuffer_add(o, "null", 4);
}

/* A list of strings. */
static void kstrs(struct evbuffer *o, bool *first, const char *k, char *const *v, size_t n)
{
    key(o, first, k);
    evbuffer_add(o, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            evbuffer_add(o, ",", 1);
        str(o, v[i]);
    }
    evbuffer_add(o, "]", 1);
}

static void kuint(struct evbuffer *o, bool *first, const char *k, uint64_t v)
{
    key(o, first, k);
    evbuffer_add_printf(o, "%" PRIu64, v);
}

static void kbool(struct evbuffer *o, bool *first, const char *k, bool v)
{
    key(o, first, k);
    evbuffer_add_printf(o, "%s", v ? "true" : "false");
}

/* A duration the way the file writes it: whole seconds as "2s", else "250ms". */
static void kdur(struct evbuffer *o, bool *first, const char *k, uint64_t ms)
{
    char b[32];
    if (ms % 1000 == 0)
        snprintf(b, sizeof(b), "%" PRIu64 "s", ms / 1000);
    else
        snprintf(b, sizeof(b), "%" PRIu64 "ms", ms);
    kstr(o, first, k, b);
}

static void kbuckets(struct evbuffer *o, bool *first, const char *k,
                     const struct rem_cfg_buckets *b)
{
    key(o, first, k);
    evbuffer_add(o, "[", 1);
    for (size_t i = 0; i < b->n; i++)
        evbuffer_add_printf(o, "%s%.17g", i ? "," : "", b->le[i]);
    evbuffer_add(o, "]", 1);
}

/* "ip:port" or "[v6]:port" */
static void addr_text(char *b, size_t n, const struct rem_sockaddr *a)
{
    char host[INET6_ADDRSTRLEN] = "";
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(b, n, "[%s]:%u", host, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(b, n, "%s:%u", host, ntohs(s4->sin_port));
    }
}

static void listener(struct evbuffer *o, const struct rem_cfg_listener *l, bool with_http2)
{
    bool f = true;
    evbuffer_add(o, "{", 1);
    if (l->name)
        kstr(o, &f, "name", l->name);
    kstr(o, &f, "address", l->address);
    if (with_http2 && l->addr.ss.ss_family == AF_UNIX &&
        ((const struct sockaddr_un *)&l->addr.ss)->sun_path[0] != '\0') {
        char m[8];
        snprintf(m, sizeof(m), "%04o", (unsigned)l->mode);
        kstr(o, &f, "mode", m);
    }
    if (with_http2) {
        kuint(o, &f, "max_connections", l->max_connections);
        const struct rem_cfg_http2 *h = &l->http2;
        bool g = true;
        key(o, &f, "http2");
        evbuffer_add(o, "{", 1);
        kuint(o, &g, "max_concurrent_streams", h->max_concurrent_streams);
        kuint(o, &g, "initial_window", h->initial_window_bytes);
        kuint(o, &g, "max_header_list_size", h->max_header_list_bytes);
        kuint(o, &g, "max_resets", h->max_resets);
        kdur(o, &g, "reset_interval", h->reset_interval_ms);
        kuint(o, &g, "max_control_frames", h->max_control_frames);
        kbool(o, &g, "enable_connect_protocol", h->enable_connect_protocol);
        evbuffer_add(o, "}", 1);
    }
    if (l->tls) {
        const struct rem_cfg_tls *t = l->tls;
        bool g = true;
        key(o, &f, "tls");
        evbuffer_add(o, "{", 1);
        kstr(o, &g, "cert", t->cert);
        kstr(o, &g, "key", t->key);
        kstr(o, &g, "min_version", t->min_version == REM_TLS_1_3 ? "1.3" : "1.2");
        key(o, &g, "alpn");
        evbuffer_add(o, "[", 1);
        for (size_t i = 0; i < t->n_alpn; i++) {
            if (i)
                evbuffer_add(o, ",", 1);
            str(o, t->alpn[i] == REM_ALPN_H2 ? "h2" : "http/1.1");
        }
        evbuffer_add(o, "]", 1);
        kstr(o, &g, "ciphers", t->ciphers);
        kstr(o, &g, "ciphersuites", t->ciphersuites);
        kbool(o, &g, "session_tickets", t->session_tickets);
        kstr(o, &g, "client_ca", t->client_ca);
        kstr(o, &g, "ocsp_response", t->ocsp_response);
        kbool(o, &g, "require_client_cert", t->require_client_cert);
        evbuffer_add(o, "}", 1);
    }
    evbuffer_add(o, "}", 1);
}

static const char *proto_name(enum rem_proto p)
{
    return p == REM_PROTO_H2C ? "h2c" : p == REM_PROTO_H2 ? "h2" : "http1";
}

static void upstream(struct evbuffer *o, const struct rem_cfg_upstream *u)
{
    bool f = true;
    evbuffer_add(o, "{", 1);
    kstr(o, &f, "name", u->name);
    key(o, &f, "endpoints");
    evbuffer_add(o, "[", 1);
    for (size_t i = 0; i < u->n_endpoints; i++) {
        char b[300];
        if (rem_cfg_endpoint_str(&u->endpoints[i], b, sizeof(b)) != 0)
            b[0] = '\0';
        if (i)
            evbuffer_add(o, ",", 1);
        str(o, b);
    }
    evbuffer_add(o, "]", 1);
    kstr(o, &f, "protocol", proto_name(u->protocol));
    kdur(o, &f, "connect_timeout", u->connect_timeout_ms);
    kdur(o, &f, "idle_timeout", u->idle_timeout_ms);
    kuint(o, &f, "max_connections", u->max_connections);
    kuint(o, &f, "max_requests", u->max_requests);
    kuint(o, &f, "max_pending", u->max_pending);
    kdur(o, &f, "queue_timeout", u->queue_timeout_ms);
    kbool(o, &f, "adaptive", u->adaptive);
    kstr(o, &f, "lb", u->lb == REM_LB_LEAST_REQUEST ? "least_request" : "round_robin");
    key(o, &f, "health_check");
    if (!u->health_check.path) {
        evbuffer_add(o, "null", 4);
    } else {
        bool g = true;
        evbuffer_add(o, "{", 1);
        kstr(o, &g, "path", u->health_check.path);
        kdur(o, &g, "interval", u->health_check.interval_ms);
        kdur(o, &g, "timeout", u->health_check.timeout_ms);
        kuint(o, &g, "rise", u->health_check.rise);
        kuint(o, &g, "fall", u->health_check.fall);
        evbuffer_add(o, "}", 1);
    }
    key(o, &f, "tls");
    if (!u->tls) {
        evbuffer_add(o, "null", 4);
    } else {
        const struct rem_cfg_upstream_tls *t = u->tls;
        bool g = true;
        evbuffer_add(o, "{", 1);
        if (t->ca)
            kstr(o, &g, "ca", t->ca);
        if (t->sni)
            kstr(o, &g, "sni", t->sni);
        kbool(o, &g, "verify", t->verify);
        if (t->cert) {
            kstr(o, &g, "cert", t->cert);
            kstr(o, &g, "key", t->key);
        }
        evbuffer_add(o, "}", 1);
    }
    evbuffer_add(o, "}", 1);
}

static void route(struct evbuffer *o, const struct rem_config *cfg, const struct rem_cfg_route *r)
{
    bool f = true, m = true;
    evbuffer_add(o, "{", 1);
    kstr(o, &f, "name", r->name);
    key(o, &f, "match");
    evbuffer_add(o, "{", 1);
    if (r->host) {
        char b[512];
        snprintf(b, sizeof(b), r->host_wildcard ? "*%s" : "%s", r->host);
        kstr(o, &m, "host", b);
    }
    if (r->path)
        kstr(o, &m, "path", r->path);
    if (r->path_prefix)
        kstr(o, &m, "path_prefix", r->path_prefix);
    if (r->n_methods)
        kstrs(o, &m, "methods", r->methods, r->n_methods);
    if (r->n_client_san)
        kstrs(o, &m, "client_san", r->client_san, r->n_client_san);
    evbuffer_add(o, "}", 1);
    kstr(o, &f, "upstream", cfg->upstreams[r->upstream_idx].name);
    kdur(o, &f, "timeout", r->timeout_ms);
    kbuckets(o, &f, "buckets", r->buckets.n ? &r->buckets : &cfg->metrics.buckets);
    kuint(o, &f, "max_requests", r->max_requests);
    kuint(o, &f, "max_pending", r->max_pending);
    key(o, &f, "upgrades");
    evbuffer_add(o, "[", 1);
    if (!r->upgrades_set)
        str(o, "websocket");
    for (size_t i = 0; i < r->n_upgrades; i++) {
        if (i)
            evbuffer_add(o, ",", 1);
        str(o, r->upgrades[i]);
    }
    evbuffer_add(o, "]", 1);
    kbool(o, &f, "connect", r->connect);
    kdur(o, &f, "tunnel_idle_timeout", r->tunnel_idle_timeout_ms);
    evbuffer_add(o, "}", 1);
}

static const char *const levels[] = {"debug", "info", "warn", "error"};

/* The body without hash and load time, so that the hash covers exactly the settings. */
static void settings(struct evbuffer *o, const struct rem_config *cfg, bool *f)
{
    kuint(o, f, "workers", cfg->workers);
    key(o, f, "listeners");
    evbuffer_add(o, "[", 1);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (i)
            evbuffer_add(o, ",", 1);
        listener(o, &cfg->listeners[i], true);
    }
    evbuffer_add(o, "]", 1);
    key(o, f, "admin");
    listener(o, &cfg->admin, false);
    key(o, f, "upstreams");
    evbuffer_add(o, "[", 1);
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        if (i)
            evbuffer_add(o, ",", 1);
        upstream(o, &cfg->upstreams[i]);
    }
    evbuffer_add(o, "]", 1);
    key(o, f, "routes");
    evbuffer_add(o, "[", 1);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        if (i)
            evbuffer_add(o, ",", 1);
        route(o, cfg, &cfg->routes[i]);
    }
    evbuffer_add(o, "]", 1);
    bool g = true;
    const struct rem_cfg_limits *l = &cfg->limits;
    key(o, f, "limits");
    evbuffer_add(o, "{", 1);
    kuint(o, &g, "max_header_bytes", l->max_header_bytes);
    kuint(o, &g, "max_headers", l->max_headers);
    kuint(o, &g, "max_body_bytes", l->max_body_bytes);
    kdur(o, &g, "client_idle_timeout", l->client_idle_timeout_ms);
    kdur(o, &g, "request_header_timeout", l->request_header_timeout_ms);
    kdur(o, &g, "request_body_timeout", l->request_body_timeout_ms);
    kuint(o, &g, "buffer_bytes", l->buffer_bytes);
    kdur(o, &g, "tls_handshake_timeout", l->tls_handshake_timeout_ms);
    kuint(o, &g, "max_tls_handshakes", l->max_tls_handshakes);
    kstr(o, &g, "headers_with_underscores", rem_underscores_names[l->headers_with_underscores]);
    evbuffer_add(o, "}", 1);
    g = true;
    key(o, f, "log");
    evbuffer_add(o, "{", 1);
    kstr(o, &g, "level", levels[cfg->log.level <= REM_LOG_ERROR ? cfg->log.level : 1]);
    kstr(o, &g, "format", cfg->log.format == REM_LOG_FORMAT_TEXT ? "text" : "json");
    kbool(o, &g, "access_log", cfg->log.access_log);
    evbuffer_add(o, "}", 1);
    g = true;
    key(o, f, "metrics");
    evbuffer_add(o, "{", 1);
    kbuckets(o, &g, "buckets", &cfg->metrics.buckets);
    evbuffer_add(o, "}", 1);
    g = true;
    const struct rem_cfg_dns *d = &cfg->dns;
    key(o, f, "dns");
    evbuffer_add(o, "{", 1);
    key(o, &g, "resolvers");
    evbuffer_add(o, "[", 1);
    for (size_t i = 0; i < d->n_resolvers; i++) {
        char b[INET6_ADDRSTRLEN + 16];
        addr_text(b, sizeof(b), &d->resolvers[i]);
        if (i)
            evbuffer_add(o, ",", 1);
        str(o, b);
    }
    evbuffer_add(o, "]", 1);
    kdur(o, &g, "min_ttl", d->min_ttl_ms);
    kdur(o, &g, "max_ttl", d->max_ttl_ms);
    kdur(o, &g, "timeout", d->timeout_ms);
    kuint(o, &g, "attempts", d->attempts);
    kstr(o, &g, "family",
         d->family == REM_DNS_V4   ? "ipv4"
         : d->family == REM_DNS_V6 ? "ipv6"
                                   : "auto");
    kdur(o, &g, "stale_ttl", d->stale_ttl_ms);
    evbuffer_add(o, "}", 1);
    g = true;
    key(o, f, "drain");
    evbuffer_add(o, "{", 1);
    kdur(o, &g, "delay", cfg->drain.delay_ms);
    kdur(o, &g, "timeout", cfg->drain.timeout_ms);
    evbuffer_add(o, "}", 1);
}

uint64_t rem_config_hash(const struct rem_config *cfg)
{
    struct evbuffer *b = evbuffer_new();
    bool f = true;
    if (!b)
        return 0;
    settings(b, cfg, &f);
    size_t n = evbuffer_get_length(b);
    const unsigned char *p = evbuffer_pullup(b, (ev_ssize_t)n);
    uint64_t h = rem_fnv1a(p, p ? n : 0);
    evbuffer_free(b);
    return h;
}

int rem_config_dump_json(const struct rem_config *cfg, struct evbuffer *out)
{
    bool f = true;
    char hash[24], when[40];
    struct tm tm;
    time_t t = (time_t)cfg->loaded_at;
    snprintf(hash, sizeof(hash), "%016" PRIx64, rem_config_hash(cfg));
    if (gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        snprintf(when, sizeof(when), "unknown");
    evbuffer_add(out, "{", 1);
    kstr(out, &f, "hash", hash);
    kstr(out, &f, "loaded_at", when);
    kstr(out, &f, "source", cfg->source);
    settings(out, cfg, &f);
    return evbuffer_add(out, "}\n", 2) < 0 ? -REM_E_NOMEM : 0;
}
