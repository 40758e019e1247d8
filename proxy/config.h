/* SPDX-License-Identifier: Apache-2.0
 * config: the immutable, refcounted configuration generation that every worker reads.
 * Owns every string and array below it. Parsing from YAML lives in config_parse.c;
 * this header is the in-memory shape and its lifetime rules only.
 *
 * A generation is built once (by rem_config_load_*), then only read. Workers take a
 * reference for as long as they use it (live reload swaps generations per worker). */
#ifndef REM_CONFIG_H
#define REM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "http.h"

/* Defaults: the public interface documented in conf/README.md. */
#define REM_DEFAULT_CONFIG_PATH "/etc/remora/remora.yaml"
#define REM_DEF_LISTEN "0.0.0.0:8000"
#define REM_DEF_ADMIN "0.0.0.0:9090"
#define REM_DEF_UPSTREAM_ENDPOINT "127.0.0.1:8080"
#define REM_DEF_CONNECT_TIMEOUT_MS 1000
#define REM_DEF_IDLE_TIMEOUT_MS 2000
#define REM_DEF_MAX_CONNECTIONS 1024
#define REM_DEF_ROUTE_TIMEOUT_MS 15000
#define REM_DEF_TUNNEL_IDLE_TIMEOUT_MS (3600u * 1000u)
#define REM_DEF_MAX_HEADER_BYTES ((uint64_t)64 * 1024)
#define REM_DEF_MAX_HEADERS 100
#define REM_DEF_CLIENT_IDLE_TIMEOUT_MS 60000
#define REM_DEF_DRAIN_DELAY_MS 0
#define REM_DEF_DRAIN_TIMEOUT_MS 20000
#define REM_DEF_REQUEST_HEADER_TIMEOUT_MS 10000
#define REM_DEF_BUFFER_BYTES ((uint64_t)64 * 1024)
#define REM_DEF_TLS_HANDSHAKE_TIMEOUT_MS 10000
#define REM_DEF_MAX_TLS_HANDSHAKES 256 /* per worker; conf/README.md says why */
/* nginx's default (underscores_in_headers off); conf/README.md says why not Envoy's ALLOW. */
#define REM_DEF_HEADERS_WITH_UNDERSCORES REM_UNDERSCORES_DROP
/* listeners[].tls defaults (issue 16's modern profile): TLS 1.2 suites are AEAD with ECDHE
 * only (no RSA key exchange, no CBC); TLS 1.3 keeps OpenSSL's three suites. */
#define REM_DEF_TLS_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define REM_DEF_TLS_CIPHERSUITES                                                                   \
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define REM_DEF_TLS_GROUPS "X25519:P-256"

#define REM_DEF_MAX_REQUESTS 1024
#define REM_DEF_MAX_PENDING 1024
#define REM_DEF_HC_INTERVAL_MS 1000
#define REM_DEF_HC_TIMEOUT_MS 1000
#define REM_DEF_HC_RISE 2
#define REM_DEF_HC_FALL 3
#define REM_MAX_BUCKETS 64
#define REM_DEF_DNS_MIN_TTL_MS 5000
#define REM_DEF_DNS_MAX_TTL_MS 300000
#define REM_DEF_DNS_TIMEOUT_MS 1000
#define REM_DEF_DNS_ATTEMPTS 2
#define REM_DEF_DNS_STALE_TTL_MS 300000
#define REM_DEF_H2_MAX_CONCURRENT_STREAMS 100
#define REM_DEF_H2_INITIAL_WINDOW_BYTES 65535
#define REM_DEF_H2_MAX_RESETS 200
#define REM_DEF_H2_RESET_INTERVAL_MS 1000
#define REM_DEF_H2_MAX_CONTROL_FRAMES 1000
#define REM_DEF_UNIX_MODE 0666 /* a listener's socket file: any local user may connect */

/* Default latency buckets (seconds): tuned for a sidecar, 0.5 ms to 10 s. */
#define REM_DEF_BUCKETS                                                                            \
    {                                                                                              \
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10             \
    }

enum rem_proto {
    REM_PROTO_HTTP1 = 0,
    REM_PROTO_H2C,
    REM_PROTO_H2,
};

enum rem_log_level {
    REM_LOG_DEBUG = 0,
    REM_LOG_INFO,
    REM_LOG_WARN,
    REM_LOG_ERROR,
};

enum rem_log_format {
    REM_LOG_FORMAT_JSON = 0,
    REM_LOG_FORMAT_TEXT,
};

/* A numeric socket address parsed from "host:port", "[v6]:port" or "*:port", or a Unix socket
 * from "unix:/path" or "unix:@name" (abstract: sun_path[0] is NUL, len counts the name). */
struct rem_sockaddr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* HTTP/2 settings of a listener (listeners[].http2); h2c prior knowledge is detected on every
 * listener, these shape what remora advertises and tolerates. In a loaded generation every
 * field is set (none is 0): rem_config_fill_defaults fills those left out. */
struct rem_cfg_http2 {
    uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS, default 100 */
    uint32_t initial_window_bytes;   /* SETTINGS_INITIAL_WINDOW_SIZE, default 65535, max 2^31-1 */
    uint32_t max_header_list_bytes;  /* SETTINGS_MAX_HEADER_LIST_SIZE; left out, the effective
                                        limits.max_header_bytes (capped at UINT32_MAX) */
    uint32_t max_resets;             /* stream resets by the client tolerated per reset_interval
                                        (rapid reset, CVE-2023-44487), default 200 */
    uint64_t reset_interval_ms;      /* default 1000 */
    uint32_t max_control_frames;     /* SETTINGS/PING/PRIORITY/empty frames per reset_interval
                                        before GOAWAY ENHANCE_YOUR_CALM, default 1000 */
    bool enable_connect_protocol;    /* SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441), default on */
    bool connect_protocol_set;       /* ... was written in the file */
};

enum rem_tls_version {
    REM_TLS_1_2 = 0,
    REM_TLS_1_3,
};

/* Application protocols a TLS listener offers in ALPN (RFC 7301). */
enum rem_alpn {
    REM_ALPN_H2 = 0,
    REM_ALPN_HTTP1, /* "http/1.1" */
};
#define REM_MAX_ALPN 2

/* listeners[].tls: TLS termination. Only file names and choices: the SSL_CTX built from them
 * (tls.c) belongs to the server plan, so a config stays plain data. Every field is set in a
 * loaded generation. */
struct rem_cfg_tls {
    char *cert;                       /* PEM certificate chain file, leaf first */
    char *key;                        /* PEM private key file */
    enum rem_tls_version min_version; /* default REM_TLS_1_2; nothing older is ever allowed */
    enum rem_alpn alpn[REM_MAX_ALPN]; /* the server's order of preference, distinct */
    size_t n_alpn;                    /* default 2: h2, http/1.1 */
    char *ciphers;                    /* TLS 1.2 cipher list, default REM_DEF_TLS_CIPHERS */
    char *ciphersuites;               /* TLS 1.3 suites, default REM_DEF_TLS_CIPHERSUITES */
    bool session_tickets;             /* stateless resumption, default on */
    char *client_ca; /* PEM file of the CAs client certificates are verified against (mTLS);
                        NULL: no client certificate is asked for */
    bool require_client_cert; /* a client without a certificate fails the handshake; needs
                                 client_ca; default off (one without is served anonymous) */
    char *ocsp_response;      /* DER OCSP response for cert, stapled to clients that ask (status
                                 request); NULL: no stapling */
};

struct rem_cfg_listener {
    char *name;
    char *address; /* as written, for logs */
    struct rem_sockaddr addr;
    uint32_t mode; /* unix:/path only: the socket file's permissions, default REM_DEF_UNIX_MODE */
    uint32_t max_connections; /* 0: derived at start from RLIMIT_NOFILE and the memory limit */
    struct rem_cfg_http2 http2;
    struct rem_cfg_tls *tls; /* NULL: plaintext (h2c told apart by its preface) */
};

/* An upstream endpoint as configured: host may be a name (resolved later by dns) or a
 * numeric address. */
struct rem_cfg_endpoint {
    char *host; /* without brackets for IPv6 */
    uint16_t port;
    bool is_name; /* host is not a numeric address: resolved (and re-resolved) by dns.c */
    bool is_unix; /* host is "unix:/path" or "unix:@name" as written, port 0 */
};

enum rem_lb {
    REM_LB_ROUND_ROBIN = 0,
    REM_LB_LEAST_REQUEST, /* fewest requests in flight (power of two choices) */
};

enum rem_dns_family {
    REM_DNS_AUTO = 0, /* A and AAAA */
    REM_DNS_V4,
    REM_DNS_V6,
};

/* The `dns` section: how upstream endpoint names are resolved (c-ares, in the event loops). */
struct rem_cfg_dns {
    struct rem_sockaddr *resolvers; /* NULL / 0: /etc/resolv.conf */
    size_t n_resolvers;
    uint64_t min_ttl_ms; /* answers are re-resolved no sooner than this, default 5s */
    uint64_t max_ttl_ms; /* ... and no later than this, default 300s */
    uint64_t timeout_ms; /* per query attempt, default 1s */
    uint32_t attempts;   /* tries per server, default 2 */
    enum rem_dns_family family;
    uint64_t stale_ttl_ms; /* how long the last good answer serves after failures, default 5m */
};

/* Histogram bucket upper bounds in seconds, strictly increasing, > 0, at most
 * REM_MAX_BUCKETS; +Inf is implicit. n == 0 means "not set" (inherit). */
struct rem_cfg_buckets {
    double *le;
    size_t n;
};

/* upstreams[].tls: TLS toward the app (tls_client.c builds the client SSL_CTX from it). Only file
 * names and choices, like rem_cfg_tls. */
struct rem_cfg_upstream_tls {
    char *ca;    /* PEM CA bundle the app's chain must lead to; NULL: the system store */
    char *sni;   /* server_name sent and the name verified; NULL: each endpoint's host name */
    bool verify; /* chain and host name verification, default on */
    char *cert;  /* PEM client certificate chain (mTLS to the app), with key; NULL: none */
    char *key;
};

/* Active health check of an upstream's endpoints (readiness), off unless path is set. */
struct rem_cfg_health_check {
    char *path;           /* NULL: no health check */
    uint64_t interval_ms; /* default REM_DEF_HC_INTERVAL_MS */
    uint64_t timeout_ms;  /* default REM_DEF_HC_TIMEOUT_MS */
    uint32_t rise;        /* consecutive 2xx to become healthy, default REM_DEF_HC_RISE */
    uint32_t fall;        /* consecutive failures to become unhealthy, default REM_DEF_HC_FALL */
};

struct rem_cfg_upstream {
    char *name;
    struct rem_cfg_endpoint *endpoints;
    size_t n_endpoints;
    enum rem_proto protocol;
    uint64_t connect_timeout_ms;
    uint64_t idle_timeout_ms;
    uint32_t max_connections;
    uint32_t max_requests; /* in flight to the upstream, default REM_DEF_MAX_REQUESTS */
    uint32_t max_pending;  /* waiting for a slot (FIFO), default REM_DEF_MAX_PENDING; 0 allowed */
    uint64_t queue_timeout_ms; /* default: connect_timeout_ms */
    bool adaptive;             /* gradient concurrency limiter below max_requests */
    enum rem_lb lb;            /* endpoint choice, default round robin */
    struct rem_cfg_health_check health_check;
    struct rem_cfg_upstream_tls *tls; /* NULL: cleartext (http1, h2c); always set for h2 */
};

struct rem_cfg_route {
    char *name;
    /* match: every set field must match; NULL / 0 means "any". */
    char *host; /* exact host, lower-case; or the suffix (with its dot) when host_wildcard */
    bool host_wildcard; /* written as "*.suffix": host stores ".suffix" */
    char *path;         /* exact path (query excluded) */
    char *path_prefix;
    char **methods; /* upper-case tokens */
    size_t n_methods;
    /* match.client_san: checked after the route is picked (not a match field: a request it
     * refuses gets 403 client_not_allowed, not the next route). Allowed: a conn whose verified
     * client certificate has a URI or DNS SAN equal to one of these. n == 0: anyone. */
    char **client_san;
    size_t n_client_san;
    char *upstream;      /* as written */
    size_t upstream_idx; /* index into rem_config.upstreams, resolved at load */
    uint64_t timeout_ms; /* how long the upstream may stay silent while a response is due */
    struct rem_cfg_buckets buckets; /* n == 0: metrics.buckets */
    uint32_t max_requests;          /* 0: no per-route limit */
    uint32_t max_pending;           /* with max_requests; default REM_DEF_MAX_PENDING */
    /* Tunnels (DESIGN.md "Tunnels"). */
    char **upgrades; /* Upgrade protocols tunnelled, lower-case tokens; see upgrades_set */
    size_t n_upgrades;
    bool upgrades_set; /* false: the default, [websocket] */
    bool connect;      /* plain CONNECT is tunnelled to the upstream (default: refused) */
    uint64_t tunnel_idle_timeout_ms; /* a tunnel silent both ways this long is closed */
};
/* Whether route r tunnels one of the protocols of an Upgrade list (RFC 9110 7.8: comma
 * separated, each a name with an optional "/version"); h2c never is. When it does and off / n
 * are given, they locate the first such protocol in list: the one remora offers the app. */
bool rem_route_allows_upgrade(const struct rem_cfg_route *r, const char *list, size_t len,
                              size_t *off, size_t *n);

struct rem_cfg_limits {
    uint64_t max_header_bytes;
    uint32_t max_headers;
    uint64_t max_body_bytes; /* 0: unlimited */
    uint64_t client_idle_timeout_ms;
    uint64_t request_header_timeout_ms;
    uint64_t request_body_timeout_ms;  /* the whole request body; 0: no limit */
    uint64_t buffer_bytes;             /* per connection, per direction high watermark */
    uint64_t tls_handshake_timeout_ms; /* a TLS handshake not done by then closes the conn */
    uint32_t max_tls_handshakes;       /* per worker: TLS conns accepted beyond this many in
                                          HANDSHAKE are refused; 0: no cap */
    enum rem_underscores headers_with_underscores; /* request fields (and trailers) named
                                                      with '_'; default DROP */
};

/* The names of enum rem_underscores in the file and the dump, by value; NULL-terminated. */
extern const char *const rem_underscores_names[];

struct rem_cfg_log {
    enum rem_log_level level;
    enum rem_log_format format;
    bool access_log;
};

/* Graceful shutdown (SIGTERM, SIGINT, POST /drain). */
struct rem_cfg_drain {
    uint64_t delay_ms;   /* listeners keep accepting this long after the drain starts */
    uint64_t timeout_ms; /* what is still in flight after this is cut (drain_timeout) */
};

struct rem_cfg_metrics {
    struct rem_cfg_buckets buckets; /* always set: REM_DEF_BUCKETS unless configured */
};

struct rem_config {
    int refcnt;        /* atomic; see rem_config_ref */
    char *source;      /* file path or "<embedded>" */
    int64_t loaded_at; /* wall-clock seconds when this generation was built */
    unsigned workers;  /* 0: auto */
    struct rem_cfg_listener *listeners;
    size_t n_listeners;
    struct rem_cfg_listener admin;
    struct rem_cfg_upstream *upstreams;
    size_t n_upstreams;
    struct rem_cfg_route *routes;
    size_t n_routes;
    struct rem_cfg_limits limits;
    struct rem_cfg_log log;
    struct rem_cfg_metrics metrics;
    struct rem_cfg_dns dns;
    struct rem_cfg_drain drain;
};

/* Diagnostics collected while loading: each message is "FILE:LINE:COL: text" (or
 * "FILE: text" when no position applies). */
struct rem_config_diag {
    char **msgs;
    size_t n;
};

/* Load a generation from a YAML file. On success returns a config with refcnt 1 and leaves
 * diag empty; on any error returns NULL and appends one message per error found to diag
 * (parsing goes on after the first error to report as many as possible). ${VAR} and
 * ${VAR:-default} in scalar values are expanded from the environment before typing. */
struct rem_config *rem_config_load_file(const char *path, struct rem_config_diag *diag);

/* Same, from a NUL-terminated YAML text; name is used in messages in place of FILE. */
struct rem_config *rem_config_load_string(const char *yaml, const char *name,
                                          struct rem_config_diag *diag);

/* Same, from len bytes at buf (the file as read once: live reload hashes the same bytes it
 * loads). */
struct rem_config *rem_config_load_bytes(const char *buf, size_t len, const char *name,
                                         struct rem_config_diag *diag);

/* The embedded default: listen 0.0.0.0:8000, everything to 127.0.0.1:8080, admin on
 * 0.0.0.0:9090. Never fails (aborts on OOM). */
struct rem_config *rem_config_default(void);

/* Reference counting; thread-safe. unref frees at zero; NULL-safe. */
struct rem_config *rem_config_ref(struct rem_config *cfg);
void rem_config_unref(struct rem_config *cfg);

/* One line summary for `remora --check`, e.g. "ok: 1 listener, 1 upstream, 2 routes". */
/* Returns 0, or -1 when an argument is NULL or empty or buf is too small (buf then holds a
 * truncated, NUL-terminated line). */
int rem_config_summary(const struct rem_config *cfg, char *buf, size_t len);

void rem_config_diag_dispose(struct rem_config_diag *diag);

/* For the loader (config_parse.c) only: a generation with refcnt 1, source copied (NULL:
 * "<embedded>"), workers, limits, log, metrics and dns at their defaults and no listeners, admin,
 * upstreams or routes yet. Free it with rem_config_unref. Aborts on OOM. */
struct rem_config *rem_config_new(const char *source);
/* For the loader only: every field of u that has a default gets it (name, endpoints and the
 * health check path are left alone). */
void rem_cfg_upstream_defaults(struct rem_cfg_upstream *u);
/* For the loader only: gives each section still absent (listeners == NULL, admin.name == NULL,
 * upstreams == NULL, routes == NULL) the default rem_config_default describes, and each http2
 * field still 0 of every listener and admin its default (max_header_list_bytes from
 * limits.max_header_bytes). The default route goes to upstreams[0], so call it once the
 * upstreams and limits are final. Aborts on OOM. */
void rem_config_fill_defaults(struct rem_config *cfg);

/* FNV-1a 64 of n bytes: the hash of a config file's bytes (live reload) and of its dump
 * (remora_config_info). */
static inline uint64_t rem_fnv1a(const void *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

/* Value parsers shared by config_parse and tests. Each returns 0 or -1 (REM_E_CONFIG). */
int rem_parse_duration_ms(const char *s, uint64_t *out_ms); /* "250ms" "2s" "1m" "1h" "0" */
int rem_parse_size_bytes(const char *s, uint64_t *out);     /* "512" "64KiB" "1MiB" "1GiB" "10KB" */
/* Seconds as a double: a decimal number with an optional sign and exponent ("0.005", "1",
 * "2.5", "1e-3", "-1"), or an unsigned decimal with a unit ms, s, m or h ("5ms", "2.5ms",
 * "1m"; at most 60 characters before the unit). Any finite result is returned, 0 and
 * negatives included: range is the caller's rule. inf, nan, hex, spaces and an overflowing
 * value are -1. */
int rem_parse_seconds(const char *s, double *out_s);
/* "host:port", "[v6]:port", "*:port" (any IPv4) into a numeric address; host must be numeric
 * or "localhost". "unix:..." as rem_parse_unix takes it. */
int rem_parse_sockaddr(const char *s, struct rem_sockaddr *out);
/* "unix:/path" (absolute, at most 107 bytes: sun_path holds 108 with the NUL) or "unix:@name"
 * (Linux abstract namespace, 1 to 107 bytes after the '@') into a sockaddr_un. Returns 0; 1
 * when s does not start with "unix:" (out untouched); -1 when it does but is malformed, with
 * *why (when why is not NULL) pointing at a static phrase saying what is wrong. */
int rem_parse_unix(const char *s, struct rem_sockaddr *out, const char **why);
/* An upstream endpoint, "host:port", "[v6]:port" or "unix:/path" / "unix:@name" (host is then
 * the whole string, port 0, is_unix set; checked as rem_parse_unix does), into out: host (malloc'd,
 * brackets removed), port (1-65535) and is_name, true unless host is a numeric address (an IPv4
 * dotted quad, or IPv6 in brackets; "localhost" is a name). A name is letters, digits, '-', '_' and
 * '.', at most 253 bytes besides a final dot and 63 per label, and does not end in a numeric
 * label ("1.2.3", "127.1": RFC 1123 section 2.1). Returns 0, or -1 leaving out untouched and,
 * when why is not NULL, pointing *why at a static phrase that says what is wrong. */
int rem_parse_endpoint(const char *s, struct rem_cfg_endpoint *out, const char **why);
/* The same, into host (malloc'd, brackets removed) and port only. */
int rem_parse_hostport(const char *s, char **host, uint16_t *port);
/* Formats an address as "1.2.3.4:80", "[::1]:80", "unix:/path" or "unix:@name". Returns 0, or
 * -1 when it does not fit in len. */
int rem_sockaddr_str(const struct rem_sockaddr *a, char *buf, size_t len);
/* Formats a configured endpoint as written: "host:port", "[v6]:port" or "unix:...". Returns 0,
 * or -1 when it does not fit in len. */
int rem_cfg_endpoint_str(const struct rem_cfg_endpoint *e, char *buf, size_t len);

#endif
