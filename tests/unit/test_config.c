/* SPDX-License-Identifier: Apache-2.0
 * test_config: unit tests for config.h: defaults, loading good and bad YAML (exact messages
 * and positions), ${VAR} expansion, the dns section, endpoint names, the value parsers and
 * the generation's lifetime. Fixtures
 * live in tests/unit/configs; conf/remora.yaml is loaded as shipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"

#ifndef REM_TEST_DATADIR
#error "REM_TEST_DATADIR must be the absolute path of tests/unit"
#endif
#define CONFIGS REM_TEST_DATADIR "/configs/"

/* ---- helpers ------------------------------------------------------------------------------ */

static struct rem_config *load_ok(const char *path)
{
    struct rem_config_diag diag = {0};
    struct rem_config *cfg = rem_config_load_file(path, &diag);

    for (size_t i = 0; i < diag.n; i++)
        print_error("unexpected: %s\n", diag.msgs[i]);
    assert_non_null(cfg);
    assert_int_equal(diag.n, 0);
    rem_config_diag_dispose(&diag);
    return cfg;
}

/* Checks that loading fails with exactly the messages in want[] (NULL-terminated), in order. */
static void check_diag(struct rem_config *cfg, struct rem_config_diag *diag,
                       const char *const *want)
{
    size_t n_want = 0;

    while (want[n_want] != NULL)
        n_want++;
    assert_null(cfg);
    for (size_t i = 0; i < diag->n || i < n_want; i++) {
        const char *got = i < diag->n ? diag->msgs[i] : "(none)";
        const char *exp = i < n_want ? want[i] : "(none)";

        if (strcmp(got, exp) != 0)
            print_error("message %zu:\n  got:  %s\n  want: %s\n", i, got, exp);
    }
    assert_int_equal(diag->n, n_want);
    for (size_t i = 0; i < n_want; i++)
        assert_string_equal(diag->msgs[i], want[i]);
    rem_config_diag_dispose(diag);
}

static void expect_file_errors(const char *path, const char *const *want)
{
    struct rem_config_diag diag = {0};

    check_diag(rem_config_load_file(path, &diag), &diag, want);
}

static void expect_string_errors(const char *yaml, const char *const *want)
{
    struct rem_config_diag diag = {0};

    check_diag(rem_config_load_string(yaml, "t.yaml", &diag), &diag, want);
}

static struct rem_config *load_string_ok(const char *yaml)
{
    struct rem_config_diag diag = {0};
    struct rem_config *cfg = rem_config_load_string(yaml, "t.yaml", &diag);

    for (size_t i = 0; i < diag.n; i++)
        print_error("unexpected: %s\n", diag.msgs[i]);
    assert_non_null(cfg);
    assert_int_equal(diag.n, 0);
    return cfg;
}

static void assert_addr(const struct rem_sockaddr *a, const char *want)
{
    char buf[64];

    assert_int_equal(rem_sockaddr_str(a, buf, sizeof(buf)), 0);
    assert_string_equal(buf, want);
}

/* Exact comparison: a bucket written "0.005" or "5ms" must be the double the literal 0.005 is,
 * or the scrape would print a bound nobody wrote. */
static void assert_buckets(const struct rem_cfg_buckets *b, const double *want, size_t n)
{
    if (b->n != n)
        fail_msg("%zu buckets, want %zu", b->n, n);
    assert_non_null(b->le);
    for (size_t i = 0; i < n; i++) {
        if (b->le[i] != want[i])
            fail_msg("bucket %zu is %.17g, want %.17g", i, b->le[i], want[i]);
    }
}

static void assert_default_buckets(const struct rem_cfg_buckets *b)
{
    static const double want[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                  0.1,    0.25,  0.5,    1,     2.5,  5,     10};

    assert_buckets(b, want, 14);
}

static void assert_hc_defaults(const struct rem_cfg_health_check *hc)
{
    assert_null(hc->path);
    assert_int_equal(hc->interval_ms, 1000);
    assert_int_equal(hc->timeout_ms, 1000);
    assert_int_equal(hc->rise, 2);
    assert_int_equal(hc->fall, 3);
}

/* An upstream's admission keys left out; queue_timeout_ms follows connect_timeout_ms, so the
 * caller checks it. */
static void assert_admission_defaults(const struct rem_cfg_upstream *u)
{
    assert_int_equal(u->max_requests, REM_DEF_MAX_REQUESTS);
    assert_int_equal(u->max_pending, REM_DEF_MAX_PENDING);
    assert_false(u->adaptive);
}

/* listeners[].http2 left out: the documented defaults, the header list limit resolved from
 * limits.max_header_bytes (hdr_list here). Literals, so that a changed default fails. */
static void assert_h2_defaults(const struct rem_cfg_http2 *h2, uint32_t hdr_list)
{
    assert_int_equal(h2->max_concurrent_streams, 100);
    assert_int_equal(h2->initial_window_bytes, 65535);
    assert_int_equal(h2->max_header_list_bytes, hdr_list);
    assert_int_equal(h2->max_resets, 200);
    assert_int_equal(h2->reset_interval_ms, 1000);
    assert_int_equal(h2->max_control_frames, 1000);
}

/* The dns section left out: the documented defaults, as literals so that a changed default
 * fails. */
static void assert_dns_defaults(const struct rem_cfg_dns *dns)
{
    assert_null(dns->resolvers);
    assert_int_equal(dns->n_resolvers, 0);
    assert_int_equal(dns->min_ttl_ms, 5000);
    assert_int_equal(dns->max_ttl_ms, 300000);
    assert_int_equal(dns->timeout_ms, 1000);
    assert_int_equal(dns->attempts, 2);
    assert_int_equal(dns->family, REM_DNS_AUTO);
    assert_int_equal(dns->stale_ttl_ms, 300000);
}

/* Every field of a generation that took every default. */
static void assert_all_defaults(const struct rem_config *cfg)
{
    assert_int_equal(cfg->refcnt, 1);
    assert_int_equal(cfg->workers, 0);

    assert_int_equal(cfg->n_listeners, 1);
    assert_string_equal(cfg->listeners[0].name, "inbound");
    assert_string_equal(cfg->listeners[0].address, REM_DEF_LISTEN);
    assert_addr(&cfg->listeners[0].addr, "0.0.0.0:8000");
    assert_int_equal(cfg->listeners[0].max_connections, 0);
    assert_h2_defaults(&cfg->listeners[0].http2, 65536);

    assert_string_equal(cfg->admin.name, "admin");
    assert_string_equal(cfg->admin.address, REM_DEF_ADMIN);
    assert_addr(&cfg->admin.addr, "0.0.0.0:9090");
    assert_int_equal(cfg->admin.max_connections, 0);
    assert_h2_defaults(&cfg->admin.http2, 65536);

    assert_int_equal(cfg->n_upstreams, 1);
    assert_string_equal(cfg->upstreams[0].name, "app");
    assert_int_equal(cfg->upstreams[0].n_endpoints, 1);
    assert_string_equal(cfg->upstreams[0].endpoints[0].host, "127.0.0.1");
    assert_int_equal(cfg->upstreams[0].endpoints[0].port, 8080);
    assert_false(cfg->upstreams[0].endpoints[0].is_name);
    assert_int_equal(cfg->upstreams[0].protocol, REM_PROTO_HTTP1);
    assert_int_equal(cfg->upstreams[0].lb, REM_LB_ROUND_ROBIN);
    assert_int_equal(cfg->upstreams[0].connect_timeout_ms, REM_DEF_CONNECT_TIMEOUT_MS);
    assert_int_equal(cfg->upstreams[0].idle_timeout_ms, REM_DEF_IDLE_TIMEOUT_MS);
    assert_int_equal(cfg->upstreams[0].max_connections, REM_DEF_MAX_CONNECTIONS);
    assert_admission_defaults(&cfg->upstreams[0]);
    assert_int_equal(cfg->upstreams[0].queue_timeout_ms, REM_DEF_CONNECT_TIMEOUT_MS);
    assert_hc_defaults(&cfg->upstreams[0].health_check);

    assert_int_equal(cfg->n_routes, 1);
    assert_string_equal(cfg->routes[0].name, "default");
    assert_null(cfg->routes[0].host);
    assert_false(cfg->routes[0].host_wildcard);
    assert_null(cfg->routes[0].path);
    assert_string_equal(cfg->routes[0].path_prefix, "/");
    assert_int_equal(cfg->routes[0].n_methods, 0);
    assert_string_equal(cfg->routes[0].upstream, "app");
    assert_int_equal(cfg->routes[0].upstream_idx, 0);
    assert_int_equal(cfg->routes[0].timeout_ms, REM_DEF_ROUTE_TIMEOUT_MS);
    assert_int_equal(cfg->routes[0].buckets.n, 0);
    assert_null(cfg->routes[0].buckets.le);
    assert_int_equal(cfg->routes[0].max_requests, 0);
    assert_int_equal(cfg->routes[0].max_pending, REM_DEF_MAX_PENDING);

    assert_int_equal(cfg->limits.max_header_bytes, REM_DEF_MAX_HEADER_BYTES);
    assert_int_equal(cfg->limits.max_headers, REM_DEF_MAX_HEADERS);
    assert_int_equal(cfg->limits.max_body_bytes, 0);
    assert_int_equal(cfg->limits.client_idle_timeout_ms, REM_DEF_CLIENT_IDLE_TIMEOUT_MS);
    assert_int_equal(cfg->limits.request_header_timeout_ms, REM_DEF_REQUEST_HEADER_TIMEOUT_MS);
    assert_int_equal(cfg->limits.buffer_bytes, REM_DEF_BUFFER_BYTES);
    assert_int_equal(cfg->limits.max_tls_handshakes, 256);
    assert_int_equal(cfg->limits.headers_with_underscores, REM_UNDERSCORES_DROP);

    assert_int_equal(cfg->log.level, REM_LOG_INFO);
    assert_int_equal(cfg->log.format, REM_LOG_FORMAT_JSON);
    assert_false(cfg->log.access_log);

    assert_default_buckets(&cfg->metrics.buckets);
    assert_dns_defaults(&cfg->dns);
}

/* ---- defaults and lifetime ---------------------------------------------------------------- */

/* A fully qualified host ("example.com.") names the same host as without the dot; the router
 * strips the request's dot, so the loader strips the route's. */
static void test_route_host_trailing_dot(void **state)
{
    (void)state;
    struct rem_config *cfg =
        load_string_ok("routes:\n"
                       "  - { name: a, match: { host: \"Example.COM.\" }, upstream: app }\n"
                       "  - { name: b, match: { host: \"*.example.org.\" }, upstream: app }\n");
    assert_string_equal(cfg->routes[0].host, "example.com");
    assert_false(cfg->routes[0].host_wildcard);
    assert_string_equal(cfg->routes[1].host, ".example.org");
    assert_true(cfg->routes[1].host_wildcard);
    rem_config_unref(cfg);
    expect_string_errors(
        "routes:\n  - { name: a, match: { host: \"example.com..\" }, upstream: app }\n",
        (const char *const[]){"t.yaml:2:31: bad host \"example.com..\" (expected a "
                              "host name or *.suffix)",
                              NULL});
}

static void test_route_client_san(void **state)
{
    (void)state;
    struct rem_config *cfg = load_string_ok(
        "routes:\n"
        "  - { name: a, match: { client_san: \"spiffe://cluster.local/ns/default/sa/web\" }, "
        "upstream: app }\n"
        "  - { name: b, match: { path_prefix: /b, client_san: [db.default.svc, \"urn:x*\"] }, "
        "upstream: app }\n"
        "  - { name: c, upstream: app }\n");
    assert_int_equal(cfg->routes[0].n_client_san, 1);
    assert_string_equal(cfg->routes[0].client_san[0], "spiffe://cluster.local/ns/default/sa/web");
    assert_int_equal(cfg->routes[1].n_client_san, 2);
    assert_string_equal(cfg->routes[1].client_san[0], "db.default.svc");
    assert_string_equal(cfg->routes[1].client_san[1], "urn:x*");
    assert_int_equal(cfg->routes[2].n_client_san, 0);
    rem_config_unref(cfg);
    expect_string_errors(
        "routes:\n"
        "  - { name: a, match: { client_san: [] }, upstream: app }\n"
        "  - { name: b, match: { client_san: \"\" }, upstream: app }\n"
        "  - { name: c, match: { client_san: [a, \"\"] }, upstream: app }\n"
        "  - { name: d, match: { client_san: { a: b } }, upstream: app }\n",
        (const char *const[]){
            "t.yaml:2:37: \"client_san\" must not be empty (leave it out to allow any client)",
            "t.yaml:3:37: \"client_san\" must not be empty",
            "t.yaml:4:41: empty SAN in \"client_san\"",
            "t.yaml:5:37: expected a sequence for \"client_san\", got a mapping", NULL});
}

static void test_listener_client_ca(void **state)
{
    (void)state;
    struct rem_config *cfg = load_string_ok(
        "listeners:\n"
        "  - { name: a, address: \"127.0.0.1:1\", tls: { cert: a.pem, key: a.key, "
        "client_ca: ca.pem, require_client_cert: true } }\n"
        "  - { name: b, address: \"127.0.0.1:2\", tls: { cert: a.pem, key: a.key, "
        "client_ca: ca.pem } }\n"
        "  - { name: c, address: \"127.0.0.1:3\", tls: { cert: a.pem, key: a.key } }\n");
    assert_string_equal(cfg->listeners[0].tls->client_ca, "ca.pem");
    assert_true(cfg->listeners[0].tls->require_client_cert);
    assert_string_equal(cfg->listeners[1].tls->client_ca, "ca.pem");
    assert_false(cfg->listeners[1].tls->require_client_cert);
    assert_null(cfg->listeners[2].tls->client_ca);
    assert_false(cfg->listeners[2].tls->require_client_cert);
    rem_config_unref(cfg);
    expect_string_errors(
        "listeners:\n"
        "  - { name: a, address: \"127.0.0.1:1\", tls: { cert: a.pem, key: a.key, "
        "require_client_cert: true } }\n"
        "  - { name: b, address: \"127.0.0.1:2\", tls: { cert: a.pem, key: a.key, "
        "client_ca: \"\", require_client_cert: yes } }\n",
        (const char *const[]){"t.yaml:2:72: \"require_client_cert\" needs \"client_ca\" (the CAs "
                              "that client certificates are verified against)",
                              "t.yaml:3:83: \"client_ca\" must not be empty",
                              "t.yaml:3:108: expected a boolean (true or false) for "
                              "\"require_client_cert\", got \"yes\"",
                              NULL});
}

static void test_default_config(void **state)
{
    struct rem_config *cfg = rem_config_default();

    assert_non_null(cfg);
    assert_string_equal(cfg->source, "<embedded>");
    assert_all_defaults(cfg);
    rem_config_unref(cfg);
}

static void test_empty_file_is_all_defaults(void **state)
{
    struct rem_config *cfg = load_ok(CONFIGS "good_minimal.yaml");

    assert_string_equal(cfg->source, CONFIGS "good_minimal.yaml");
    assert_all_defaults(cfg);
    rem_config_unref(cfg);

    cfg = load_string_ok("");
    assert_string_equal(cfg->source, "t.yaml");
    assert_all_defaults(cfg);
    rem_config_unref(cfg);

    /* Null sections ("key:" with nothing after it) count as empty mappings. */
    cfg = load_string_ok("# nothing\nadmin:\nlimits: ~\nlog: null\nmetrics:\ndns:\n");
    assert_all_defaults(cfg);
    rem_config_unref(cfg);
    cfg = load_string_ok("dns: {}\n");
    assert_all_defaults(cfg);
    rem_config_unref(cfg);

    /* rem_config_new alone (the loader's starting point) already holds the dns defaults. */
    cfg = rem_config_new(NULL);
    assert_string_equal(cfg->source, "<embedded>");
    assert_dns_defaults(&cfg->dns);
    rem_config_unref(cfg);
}

static void test_refcount(void **state)
{
    struct rem_config *cfg = rem_config_default();

    assert_ptr_equal(rem_config_ref(cfg), cfg);
    assert_int_equal(cfg->refcnt, 2);
    rem_config_unref(cfg);
    assert_int_equal(cfg->refcnt, 1);
    assert_null(rem_config_ref(NULL));
    rem_config_unref(NULL);
    rem_config_unref(cfg); /* frees: ASan reports a leak or a double free otherwise */
}

static void test_summary(void **state)
{
    struct rem_config *cfg = rem_config_default();
    char buf[128];

    assert_int_equal(rem_config_summary(cfg, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "ok: 1 listener, 1 upstream (1 endpoint), 1 route, workers auto");
    assert_int_equal(rem_config_summary(cfg, buf, 10), -1);
    assert_int_equal(strlen(buf), 9);
    assert_int_equal(rem_config_summary(cfg, buf, 0), -1);
    assert_int_equal(rem_config_summary(NULL, buf, sizeof(buf)), -1);
    rem_config_unref(cfg);

    cfg = load_ok(REM_TEST_DATADIR "/../../conf/remora.yaml");
    assert_int_equal(rem_config_summary(cfg, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "ok: 1 listener, 1 upstream (1 endpoint), 2 routes, workers auto");
    rem_config_unref(cfg);

    cfg = load_ok(CONFIGS "good_full.yaml");
    assert_int_equal(rem_config_summary(cfg, buf, sizeof(buf)), 0);
    assert_string_equal(buf,
                        "ok: 2 listeners, 2 upstreams (4 endpoints), 1 health check, 3 routes, "
                        "workers 4");
    rem_config_unref(cfg);
}

static void test_diag_dispose(void **state)
{
    struct rem_config_diag diag = {0};

    rem_config_diag_dispose(&diag);
    rem_config_diag_dispose(NULL);
    assert_null(rem_config_load_string("bogus: 1\n", "a.yaml", &diag));
    assert_null(rem_config_load_string("bogus: 2\n", "b.yaml", &diag));
    /* A second load appends to what the first left. */
    assert_int_equal(diag.n, 2);
    assert_string_equal(diag.msgs[0], "a.yaml:1:1: unknown key \"bogus\" at top level");
    assert_string_equal(diag.msgs[1], "b.yaml:1:1: unknown key \"bogus\" at top level");
    rem_config_diag_dispose(&diag);
    assert_null(diag.msgs);
    assert_int_equal(diag.n, 0);
    /* diag is optional. */
    assert_null(rem_config_load_string("bogus: 1\n", "a.yaml", NULL));
}

/* ---- good files --------------------------------------------------------------------------- */

static void test_sample_config(void **state)
{
    struct rem_config *cfg = load_ok(REM_TEST_DATADIR "/../../conf/remora.yaml");
    const struct rem_cfg_route *api, *def;

    assert_int_equal(cfg->workers, 0);
    assert_int_equal(cfg->n_listeners, 1);
    assert_string_equal(cfg->listeners[0].name, "inbound");
    assert_addr(&cfg->listeners[0].addr, "0.0.0.0:8000");
    assert_addr(&cfg->admin.addr, "0.0.0.0:9090");
    assert_int_equal(cfg->n_upstreams, 1);
    assert_string_equal(cfg->upstreams[0].name, "app");
    assert_string_equal(cfg->upstreams[0].endpoints[0].host, "127.0.0.1");
    assert_int_equal(cfg->upstreams[0].endpoints[0].port, 8080);
    assert_false(cfg->upstreams[0].endpoints[0].is_name);
    assert_int_equal(cfg->upstreams[0].lb, REM_LB_ROUND_ROBIN);
    /* The dns section is commented out in the sample. */
    assert_dns_defaults(&cfg->dns);
    /* The admission keys the sample sets are the defaults; the others are commented out. */
    assert_int_equal(cfg->listeners[0].max_connections, 0);
    assert_h2_defaults(&cfg->listeners[0].http2, 65536);
    assert_int_equal(cfg->upstreams[0].protocol, REM_PROTO_HTTP1);
    assert_admission_defaults(&cfg->upstreams[0]);
    assert_int_equal(cfg->upstreams[0].queue_timeout_ms, 1000);
    assert_int_equal(cfg->n_routes, 2);
    api = &cfg->routes[0];
    def = &cfg->routes[1];
    assert_string_equal(api->name, "api");
    assert_string_equal(api->host, "api.example.com");
    assert_string_equal(api->path_prefix, "/api/");
    assert_int_equal(api->n_methods, 2);
    assert_string_equal(api->methods[0], "GET");
    assert_string_equal(api->methods[1], "POST");
    assert_int_equal(api->timeout_ms, 15000);
    assert_int_equal(api->max_requests, 0);
    assert_int_equal(api->max_pending, REM_DEF_MAX_PENDING);
    assert_string_equal(def->name, "default");
    assert_string_equal(def->path_prefix, "/");
    assert_int_equal(def->upstream_idx, 0);
    assert_true(cfg->log.access_log);
    assert_int_equal(cfg->limits.max_header_bytes, 65536);
    /* The health check and buckets are commented out in the sample. */
    assert_hc_defaults(&cfg->upstreams[0].health_check);
    assert_int_equal(api->buckets.n, 0);
    assert_default_buckets(&cfg->metrics.buckets);
    rem_config_unref(cfg);
}

/* The sample's commented dns block, uncommented, loads and says what the defaults are. */
static void test_sample_dns_block(void **state)
{
    FILE *f = fopen(REM_TEST_DATADIR "/../../conf/remora.yaml", "re");
    char line[256], yaml[2048] = "";
    size_t off = 0;
    bool in_block = false;
    struct rem_config *cfg;

    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strcmp(line, "# dns:\n") == 0)
            in_block = true;
        if (!in_block)
            continue;
        if (strncmp(line, "# ", 2) != 0)
            break;
        off += (size_t)snprintf(yaml + off, sizeof(yaml) - off, "%s", line + 2);
        assert_true(off < sizeof(yaml));
    }
    fclose(f);
    assert_true(in_block);
    cfg = load_string_ok(yaml);
    assert_int_equal(cfg->dns.n_resolvers, 2);
    assert_addr(&cfg->dns.resolvers[0], "10.0.0.10:53");
    assert_addr(&cfg->dns.resolvers[1], "[fd00::10]:53");
    cfg->dns.n_resolvers = 0; /* the rest are the defaults */
    free(cfg->dns.resolvers);
    cfg->dns.resolvers = NULL;
    assert_dns_defaults(&cfg->dns);
    rem_config_unref(cfg);
}

static void test_full_config(void **state)
{
    struct rem_config *cfg = load_ok(CONFIGS "good_full.yaml");
    const struct rem_cfg_upstream *app, *grpc;
    const struct rem_cfg_route *r;

    assert_int_equal(cfg->workers, 4);
    assert_int_equal(cfg->n_listeners, 2);
    assert_string_equal(cfg->listeners[0].name, "inbound");
    assert_string_equal(cfg->listeners[0].address, "127.0.0.1:8001");
    assert_int_equal(cfg->listeners[0].addr.len, sizeof(struct sockaddr_in));
    assert_addr(&cfg->listeners[0].addr, "127.0.0.1:8001");
    assert_int_equal(cfg->listeners[0].max_connections, 10000);
    assert_int_equal(cfg->listeners[0].http2.max_concurrent_streams, 250);
    assert_int_equal(cfg->listeners[0].http2.initial_window_bytes, 1048576);
    assert_int_equal(cfg->listeners[0].http2.max_header_list_bytes, 16384);
    assert_int_equal(cfg->listeners[0].http2.max_resets, 50);
    assert_int_equal(cfg->listeners[0].http2.reset_interval_ms, 10000);
    assert_int_equal(cfg->listeners[0].http2.max_control_frames, 500);
    assert_string_equal(cfg->listeners[1].name, "inbound6");
    assert_int_equal(cfg->listeners[1].addr.len, sizeof(struct sockaddr_in6));
    assert_addr(&cfg->listeners[1].addr, "[::1]:8002");
    assert_int_equal(cfg->listeners[1].max_connections, 0);
    /* No http2 key: the defaults, the header list limit following limits (32KiB here). */
    assert_h2_defaults(&cfg->listeners[1].http2, 32768);
    assert_string_equal(cfg->admin.address, "127.0.0.1:9091");
    assert_addr(&cfg->admin.addr, "127.0.0.1:9091");

    assert_int_equal(cfg->n_upstreams, 2);
    app = &cfg->upstreams[0];
    assert_string_equal(app->name, "app");
    assert_int_equal(app->n_endpoints, 3);
    assert_string_equal(app->endpoints[0].host, "127.0.0.1");
    assert_int_equal(app->endpoints[0].port, 8080);
    assert_false(app->endpoints[0].is_name);
    assert_string_equal(app->endpoints[1].host, "app.internal");
    assert_int_equal(app->endpoints[1].port, 8081);
    assert_true(app->endpoints[1].is_name);
    assert_string_equal(app->endpoints[2].host, "::1");
    assert_int_equal(app->endpoints[2].port, 8082);
    assert_false(app->endpoints[2].is_name);
    assert_int_equal(app->protocol, REM_PROTO_H2C);
    assert_int_equal(app->lb, REM_LB_LEAST_REQUEST);
    assert_int_equal(app->connect_timeout_ms, 250);
    assert_int_equal(app->idle_timeout_ms, 60000);
    assert_int_equal(app->max_connections, 16);
    assert_int_equal(app->max_requests, 64);
    assert_int_equal(app->max_pending, 0);
    assert_int_equal(app->queue_timeout_ms, 5000);
    assert_true(app->adaptive);
    assert_string_equal(app->health_check.path, "/ready?deep=1");
    assert_int_equal(app->health_check.interval_ms, 5000);
    assert_int_equal(app->health_check.timeout_ms, 250);
    assert_int_equal(app->health_check.rise, 1);
    assert_int_equal(app->health_check.fall, 10);
    grpc = &cfg->upstreams[1];
    assert_string_equal(grpc->name, "grpc");
    assert_int_equal(grpc->n_endpoints, 1);
    assert_string_equal(grpc->endpoints[0].host, "10.0.0.1");
    assert_int_equal(grpc->endpoints[0].port, 50051);
    assert_int_equal(grpc->protocol, REM_PROTO_H2C);
    /* Keys left out of an upstream take their defaults. */
    assert_int_equal(grpc->lb, REM_LB_ROUND_ROBIN);
    assert_int_equal(grpc->connect_timeout_ms, REM_DEF_CONNECT_TIMEOUT_MS);
    assert_int_equal(grpc->idle_timeout_ms, REM_DEF_IDLE_TIMEOUT_MS);
    assert_int_equal(grpc->max_connections, REM_DEF_MAX_CONNECTIONS);
    assert_admission_defaults(grpc);
    assert_int_equal(grpc->queue_timeout_ms, REM_DEF_CONNECT_TIMEOUT_MS);
    assert_hc_defaults(&grpc->health_check);

    assert_int_equal(cfg->n_routes, 3);
    r = &cfg->routes[0];
    assert_string_equal(r->name, "api");
    assert_string_equal(r->host, "api.example.com"); /* lower-cased */
    assert_false(r->host_wildcard);
    assert_null(r->path);
    assert_string_equal(r->path_prefix, "/api/");
    assert_int_equal(r->n_methods, 2);
    assert_string_equal(r->methods[0], "GET"); /* upper-cased */
    assert_string_equal(r->methods[1], "POST");
    assert_string_equal(r->upstream, "grpc");
    assert_int_equal(r->upstream_idx, 1);
    assert_int_equal(r->timeout_ms, 3600000);
    assert_buckets(&r->buckets, (const double[]){0.001, 0.005, 0.25, 1, 2.5}, 5);
    assert_int_equal(r->max_requests, 100);
    assert_int_equal(r->max_pending, 10);
    r = &cfg->routes[1];
    assert_string_equal(r->name, "wild");
    assert_string_equal(r->host, ".svc.local");
    assert_true(r->host_wildcard);
    assert_string_equal(r->path, "/health");
    assert_null(r->path_prefix);
    assert_int_equal(r->n_methods, 0);
    assert_int_equal(r->upstream_idx, 0);
    assert_int_equal(r->timeout_ms, REM_DEF_ROUTE_TIMEOUT_MS);
    assert_int_equal(r->buckets.n, 0); /* inherits metrics.buckets */
    assert_int_equal(r->max_requests, 5);
    assert_int_equal(r->max_pending, REM_DEF_MAX_PENDING);
    r = &cfg->routes[2];
    assert_string_equal(r->name, "default");
    /* No match at all: matches everything. */
    assert_null(r->host);
    assert_null(r->path);
    assert_null(r->path_prefix);
    assert_null(r->methods);
    assert_int_equal(r->upstream_idx, 0);
    assert_int_equal(r->max_requests, 0);
    assert_int_equal(r->max_pending, REM_DEF_MAX_PENDING);

    assert_int_equal(cfg->limits.max_header_bytes, 32 * 1024);
    assert_int_equal(cfg->limits.max_headers, 50);
    assert_int_equal(cfg->limits.max_body_bytes, 10 * 1000 * 1000);
    assert_int_equal(cfg->limits.client_idle_timeout_ms, 30000);
    assert_int_equal(cfg->limits.request_header_timeout_ms, 0);
    assert_int_equal(cfg->limits.buffer_bytes, 131072);
    assert_int_equal(cfg->log.level, REM_LOG_DEBUG);
    assert_int_equal(cfg->log.format, REM_LOG_FORMAT_TEXT);
    assert_true(cfg->log.access_log);
    assert_buckets(&cfg->metrics.buckets, (const double[]){0.01, 0.1, 1, 10}, 4);
    assert_int_equal(cfg->dns.n_resolvers, 2);
    assert_addr(&cfg->dns.resolvers[0], "127.0.0.1:5353");
    assert_addr(&cfg->dns.resolvers[1], "[::1]:53");
    assert_int_equal(cfg->dns.min_ttl_ms, 1000);
    assert_int_equal(cfg->dns.max_ttl_ms, 60000);
    assert_int_equal(cfg->dns.timeout_ms, 500);
    assert_int_equal(cfg->dns.attempts, 3);
    assert_int_equal(cfg->dns.family, REM_DNS_V4);
    assert_int_equal(cfg->dns.stale_ttl_ms, 0);
    rem_config_unref(cfg);
}

static void test_upstreams_without_routes(void **state)
{
    struct rem_config *cfg = load_ok(CONFIGS "good_upstreams_only.yaml");

    assert_int_equal(cfg->n_upstreams, 2);
    assert_string_equal(cfg->upstreams[0].endpoints[0].host, "web.default.svc");
    assert_int_equal(cfg->upstreams[0].endpoints[0].port, 80);
    assert_true(cfg->upstreams[0].endpoints[0].is_name);
    assert_false(cfg->upstreams[1].endpoints[0].is_name);
    /* The default route goes to the first upstream. */
    assert_int_equal(cfg->n_routes, 1);
    assert_string_equal(cfg->routes[0].name, "default");
    assert_string_equal(cfg->routes[0].path_prefix, "/");
    assert_string_equal(cfg->routes[0].upstream, "web");
    assert_int_equal(cfg->routes[0].upstream_idx, 0);
    /* Listeners and admin still take their defaults. */
    assert_int_equal(cfg->n_listeners, 1);
    assert_addr(&cfg->listeners[0].addr, "0.0.0.0:8000");
    assert_addr(&cfg->admin.addr, "0.0.0.0:9090");
    rem_config_unref(cfg);
}

static void test_routes_without_upstreams(void **state)
{
    /* Routes may name the default upstream "app". */
    struct rem_config *cfg = load_string_ok("routes:\n"
                                            "  - name: only-get\n"
                                            "    upstream: app\n"
                                            "    match: { methods: [get] }\n");

    assert_int_equal(cfg->n_upstreams, 1);
    assert_string_equal(cfg->upstreams[0].name, "app");
    assert_int_equal(cfg->n_routes, 1);
    assert_string_equal(cfg->routes[0].methods[0], "GET");
    assert_null(cfg->routes[0].path_prefix);
    assert_int_equal(cfg->routes[0].upstream_idx, 0);
    rem_config_unref(cfg);
}

static void test_scalar_forms(void **state)
{
    /* Quoted numbers, YAML ints for sizes, "*:port", "localhost", listener port 0, booleans in
     * other capitalisations and an alias all load. */
    struct rem_config *cfg = load_string_ok("workers: \"2\"\n"
                                            "listeners:\n"
                                            "  - { name: a, address: \"*:8000\" }\n"
                                            "  - { name: b, address: \"localhost:0\" }\n"
                                            "  - { name: c, address: \"[::]:8000\" }\n"
                                            "  - { name: d, address: \"127.0.0.1:0\" }\n"
                                            "admin: { address: &adm \"127.0.0.1:9999\" }\n"
                                            "limits:\n"
                                            "  max_header_bytes: 65536\n"
                                            "  max_headers: \"7\"\n"
                                            "  max_body_bytes: 1GiB\n"
                                            "  buffer_bytes: 512B\n"
                                            "  client_idle_timeout: 0s\n"
                                            "  max_tls_handshakes: 0\n"
                                            "  headers_with_underscores: reject\n"
                                            "log: { access_log: TRUE }\n");

    assert_int_equal(cfg->workers, 2);
    assert_addr(&cfg->listeners[0].addr, "0.0.0.0:8000");
    assert_addr(&cfg->listeners[1].addr, "127.0.0.1:0");
    assert_addr(&cfg->listeners[2].addr, "[::]:8000");
    assert_addr(&cfg->listeners[3].addr, "127.0.0.1:0");
    assert_addr(&cfg->admin.addr, "127.0.0.1:9999");
    assert_int_equal(cfg->limits.max_header_bytes, 65536);
    assert_int_equal(cfg->limits.max_headers, 7);
    assert_int_equal(cfg->limits.max_body_bytes, 1024 * 1024 * 1024);
    assert_int_equal(cfg->limits.buffer_bytes, 512);
    assert_int_equal(cfg->limits.client_idle_timeout_ms, 0);
    assert_int_equal(cfg->limits.max_tls_handshakes, 0); /* no cap */
    assert_int_equal(cfg->limits.headers_with_underscores, REM_UNDERSCORES_REJECT);
    assert_true(cfg->log.access_log);
    rem_config_unref(cfg);

    cfg = load_string_ok("log: { access_log: False, level: error }\nworkers: 1024\n");
    assert_false(cfg->log.access_log);
    assert_int_equal(cfg->log.level, REM_LOG_ERROR);
    assert_int_equal(cfg->workers, 1024);
    rem_config_unref(cfg);
}

/* ---- histogram buckets -------------------------------------------------------------------- */

static void test_buckets(void **state)
{
    struct rem_config *cfg;

    /* YAML ints and floats, quoted, an exponent, and durations with and without a fraction. */
    cfg = load_string_ok("metrics:\n"
                         "  buckets: [0.5ms, 0.001, 2.5ms, 5ms, \"0.01\", 25e-3, 0.1, 1, 2.5s, "
                         "10s, 1m, 2h]\n");
    assert_buckets(
        &cfg->metrics.buckets,
        (const double[]){0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1, 2.5, 10, 60, 7200}, 12);
    rem_config_unref(cfg);

    /* Routes without buckets inherit (n == 0); one route's list is its own; an alias reuses a
     * list; ${VAR} works in items. metrics.buckets keeps its default when left out. */
    setenv("REM_T_BUCKET", "250ms", 1);
    cfg = load_string_ok("routes:\n"
                         "  - name: a\n"
                         "    upstream: app\n"
                         "    buckets: &fast [0.01, 0.1, 1]\n"
                         "  - name: b\n"
                         "    upstream: app\n"
                         "  - name: c\n"
                         "    upstream: app\n"
                         "    buckets: *fast\n"
                         "  - name: d\n"
                         "    upstream: app\n"
                         "    buckets:\n"
                         "      - 0.1\n"
                         "      - ${REM_T_BUCKET}\n"
                         "      - ${REM_T_BUCKET_UNSET:-1}\n");
    unsetenv("REM_T_BUCKET");
    assert_default_buckets(&cfg->metrics.buckets);
    assert_buckets(&cfg->routes[0].buckets, (const double[]){0.01, 0.1, 1}, 3);
    assert_int_equal(cfg->routes[1].buckets.n, 0);
    assert_null(cfg->routes[1].buckets.le);
    assert_buckets(&cfg->routes[2].buckets, (const double[]){0.01, 0.1, 1}, 3);
    assert_ptr_not_equal(cfg->routes[2].buckets.le, cfg->routes[0].buckets.le);
    assert_buckets(&cfg->routes[3].buckets, (const double[]){0.1, 0.25, 1}, 3);
    rem_config_unref(cfg);

    /* A single bucket, and exactly REM_MAX_BUCKETS. */
    cfg = load_string_ok("metrics: { buckets: [1] }\n");
    assert_buckets(&cfg->metrics.buckets, (const double[]){1}, 1);
    rem_config_unref(cfg);

    char yaml[1024];
    double want[REM_MAX_BUCKETS];
    size_t off = (size_t)snprintf(yaml, sizeof(yaml), "metrics:\n  buckets: [");

    for (int i = 1; i <= REM_MAX_BUCKETS; i++) {
        off += (size_t)snprintf(yaml + off, sizeof(yaml) - off, "%s%d", i > 1 ? ", " : "", i);
        want[i - 1] = i;
    }
    snprintf(yaml + off, sizeof(yaml) - off, "]\n");
    cfg = load_string_ok(yaml);
    assert_buckets(&cfg->metrics.buckets, want, REM_MAX_BUCKETS);
    rem_config_unref(cfg);

    /* One more is too many, reported at the first item past the limit. */
    snprintf(yaml + off, sizeof(yaml) - off, ", 65]\n");
    expect_string_errors(
        yaml, (const char *const[]){"t.yaml:2:260: too many buckets (at most 64)", NULL});
}

static void test_bucket_errors(void **state)
{
    unsetenv("REM_T_SURELY_UNSET");
    expect_file_errors(
        CONFIGS "bad_buckets.yaml",
        (const char *const[]){
            CONFIGS "bad_buckets.yaml:2:13: bad bucket \"abc\" (expected seconds as a number, or "
                    "a duration like 5ms)",
            CONFIGS "bad_buckets.yaml:2:18: bucket must be greater than 0",
            CONFIGS "bad_buckets.yaml:2:21: bucket must be greater than 0",
            CONFIGS "bad_buckets.yaml:2:30: buckets must be strictly increasing: 0.1 after 0.5",
            CONFIGS "bad_buckets.yaml:2:35: buckets must be strictly increasing: 0.5 after 0.5",
            CONFIGS "bad_buckets.yaml:2:40: bad bucket \"+Inf\" (+Inf is implicit; leave it out)",
            CONFIGS "bad_buckets.yaml:2:46: bad bucket \".inf\" (+Inf is implicit; leave it out)",
            CONFIGS "bad_buckets.yaml:2:52: bad bucket \"1e999\" (expected seconds as a number, "
                    "or a duration like 5ms)",
            CONFIGS "bad_buckets.yaml:2:59: bad bucket \"0x10\" (expected seconds as a number, "
                    "or a duration like 5ms)",
            CONFIGS "bad_buckets.yaml:2:65: bad bucket \"1 s\" (expected seconds as a number, or "
                    "a duration like 5ms)",
            CONFIGS "bad_buckets.yaml:2:72: bad bucket \"1.5.2ms\" (expected seconds as a number, "
                    "or a duration like 5ms)",
            CONFIGS "bad_buckets.yaml:2:81: buckets must be strictly increasing: 500ms after 0.5",
            CONFIGS "bad_buckets.yaml:2:88: expected a scalar for a bucket, got a sequence",
            CONFIGS "bad_buckets.yaml:6:14: \"buckets\" must not be empty",
            CONFIGS "bad_buckets.yaml:9:14: expected a sequence for \"buckets\", got a scalar",
            CONFIGS "bad_buckets.yaml:14:9: buckets must be strictly increasing: 1000ms after 1",
            CONFIGS "bad_buckets.yaml:16:8: missing value for a bucket",
            NULL,
        });
    expect_string_errors("metrics: { buckets: }\n",
                         (const char *const[]){"t.yaml:1:21: \"buckets\" must not be empty", NULL});
    expect_string_errors("metrics: { buckets: [1, \"${REM_T_SURELY_UNSET}\"] }\n",
                         (const char *const[]){"t.yaml:1:25: environment variable "
                                               "REM_T_SURELY_UNSET is not set",
                                               NULL});
    expect_string_errors(
        "metrics: { bucket: [1] }\n",
        (const char *const[]){"t.yaml:1:12: unknown key \"bucket\" in metrics", NULL});
    expect_string_errors(
        "metrics: [1]\n",
        (const char *const[]){"t.yaml:1:10: expected a mapping for \"metrics\", got a sequence",
                              NULL});
    expect_string_errors("routes: [{ name: r, upstream: app, buckets: [-0.5] }]\n",
                         (const char *const[]){"t.yaml:1:46: bucket must be greater than 0", NULL});
}

/* ---- health checks ------------------------------------------------------------------------ */

static void test_health_check(void **state)
{
    struct rem_config *cfg = load_string_ok("upstreams:\n"
                                            "  - name: a\n"
                                            "    endpoints: [\"a:1\"]\n"
                                            "    health_check: { path: /ready, interval: 5s }\n"
                                            "  - name: b\n"
                                            "    endpoints: [\"b:1\"]\n"
                                            "    health_check: { path: /h, interval: 200ms }\n"
                                            "  - name: c\n"
                                            "    endpoints: [\"c:1\"]\n"
                                            "  - name: d\n"
                                            "    endpoints: [\"d:1\"]\n"
                                            "    health_check:\n"
                                            "      path: \"/status?full=1&x=%20\"\n"
                                            "      interval: 100ms\n"
                                            "      timeout: 2s\n"
                                            "      rise: 1000\n"
                                            "      fall: 1\n");
    const struct rem_cfg_health_check *hc;
    char buf[128];

    /* Only path given: the numeric defaults. */
    hc = &cfg->upstreams[0].health_check;
    assert_string_equal(hc->path, "/ready");
    assert_int_equal(hc->interval_ms, 5000);
    assert_int_equal(hc->timeout_ms, REM_DEF_HC_TIMEOUT_MS);
    assert_int_equal(hc->rise, REM_DEF_HC_RISE);
    assert_int_equal(hc->fall, REM_DEF_HC_FALL);
    /* timeout defaults to the interval when that is shorter than REM_DEF_HC_TIMEOUT_MS. */
    hc = &cfg->upstreams[1].health_check;
    assert_string_equal(hc->path, "/h");
    assert_int_equal(hc->interval_ms, 200);
    assert_int_equal(hc->timeout_ms, 200);
    /* Absent: disabled, defaults still filled. */
    assert_hc_defaults(&cfg->upstreams[2].health_check);
    /* A query is allowed; a timeout longer than the interval is taken as written. */
    hc = &cfg->upstreams[3].health_check;
    assert_string_equal(hc->path, "/status?full=1&x=%20");
    assert_int_equal(hc->interval_ms, 100);
    assert_int_equal(hc->timeout_ms, 2000);
    assert_int_equal(hc->rise, 1000);
    assert_int_equal(hc->fall, 1);
    assert_int_equal(rem_config_summary(cfg, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "ok: 1 listener, 4 upstreams (4 endpoints), 3 health checks, 1 route, "
                             "workers auto");
    rem_config_unref(cfg);
}

static void test_health_check_errors(void **state)
{
    expect_file_errors(
        CONFIGS "bad_health_check.yaml",
        (const char *const[]){
            CONFIGS "bad_health_check.yaml:4:19: missing key \"path\" in health_check",
            CONFIGS "bad_health_check.yaml:4:31: \"interval\" must not be 0",
            CONFIGS "bad_health_check.yaml:4:43: \"timeout\" must not be 0",
            CONFIGS "bad_health_check.yaml:4:53: \"rise\" must be between 1 and 1000, got \"0\"",
            CONFIGS "bad_health_check.yaml:4:62: \"fall\" must be between 1 and 1000, got "
                    "\"1001\"",
            CONFIGS "bad_health_check.yaml:4:68: unknown key \"port\" in health_check",
            CONFIGS "bad_health_check.yaml:7:27: bad path \"ready\" for \"path\" (expected a path "
                    "starting with \"/\", query allowed; visible ASCII, no \"#\")",
            CONFIGS "bad_health_check.yaml:7:46: bad duration \"1.5s\" for \"interval\" "
                    "(expected an integer with ms, s, m or h, or 0)",
            CONFIGS "bad_health_check.yaml:7:58: expected an integer for \"rise\", got \"x\"",
            CONFIGS "bad_health_check.yaml:10:27: bad path \"/a b\" for \"path\" (expected a path "
                    "starting with \"/\", query allowed; visible ASCII, no \"#\")",
            CONFIGS "bad_health_check.yaml:13:27: bad path \"/a#b\" for \"path\" (expected a path "
                    "starting with \"/\", query allowed; visible ASCII, no \"#\")",
            CONFIGS "bad_health_check.yaml:13:44: bad duration \"10\" for \"timeout\" (expected "
                    "an integer with ms, s, m or h, or 0)",
            CONFIGS "bad_health_check.yaml:16:18: missing key \"path\" in health_check",
            CONFIGS "bad_health_check.yaml:19:19: expected a mapping for \"health_check\", got a "
                    "scalar",
            NULL,
        });
    expect_string_errors(
        "upstreams: [{ name: a, endpoints: [\"a:1\"], health_check: { path: \"/\\x7f\" } }]\n",
        (const char *const[]){"t.yaml:1:66: bad path \"/\\x7f\" for \"path\" (expected a path "
                              "starting with \"/\", query allowed; visible ASCII, no \"#\")",
                              NULL});
}

/* ---- admission limits --------------------------------------------------------------------- */

static void test_admission(void **state)
{
    struct rem_config *cfg;

    setenv("REM_T_MAXREQ", "300", 1);
    cfg = load_string_ok("listeners:\n"
                         "  - { name: a, address: \"127.0.0.1:0\", max_connections: 1 }\n"
                         "  - { name: b, address: \"127.0.0.1:0\", max_connections: 16777216 }\n"
                         "  - { name: c, address: \"127.0.0.1:0\", max_connections: \"7\" }\n"
                         "upstreams:\n"
                         "  - name: a\n"
                         "    endpoints: [\"a:1\"]\n"
                         "    max_requests: 1\n"
                         "    max_pending: 16777216\n"
                         "    queue_timeout: 1h\n"
                         "    connect_timeout: 250ms\n"
                         "    adaptive: TRUE\n"
                         "  - name: b\n"
                         "    endpoints: [\"b:1\"]\n"
                         "    queue_timeout: 1ms\n"
                         "    max_requests: 16777216\n"
                         "    max_pending: 0\n"
                         "    adaptive: false\n"
                         "  - name: c\n"
                         "    endpoints: [\"c:1\"]\n"
                         "    max_requests: \"${REM_T_MAXREQ}\"\n"
                         "    idle_timeout: 1s\n"
                         "    connect_timeout: 250ms\n"
                         "  - name: d\n"
                         "    endpoints: [\"d:1\"]\n"
                         "    connect_timeout: 0\n"
                         "  - name: e\n"
                         "    endpoints: [\"e:1\"]\n"
                         "    connect_timeout: 0\n"
                         "    queue_timeout: 3s\n"
                         "routes:\n"
                         "  - { name: a, upstream: a, max_requests: 1 }\n"
                         "  - { name: b, upstream: a, max_requests: 16777216, max_pending: 0 }\n"
                         "  - { name: c, upstream: a, max_pending: 16777216, max_requests: 2 }\n"
                         "  - { name: d, upstream: a }\n");
    unsetenv("REM_T_MAXREQ");
    assert_int_equal(cfg->listeners[0].max_connections, 1);
    assert_int_equal(cfg->listeners[1].max_connections, 16777216);
    assert_int_equal(cfg->listeners[2].max_connections, 7);
    /* The bounds; an explicit queue_timeout wins over connect_timeout, in any key order. */
    assert_int_equal(cfg->upstreams[0].max_requests, 1);
    assert_int_equal(cfg->upstreams[0].max_pending, 16777216);
    assert_int_equal(cfg->upstreams[0].queue_timeout_ms, 3600000);
    assert_true(cfg->upstreams[0].adaptive);
    assert_int_equal(cfg->upstreams[1].max_requests, 16777216);
    assert_int_equal(cfg->upstreams[1].max_pending, 0); /* no queue: reject at once */
    assert_int_equal(cfg->upstreams[1].queue_timeout_ms, 1);
    assert_false(cfg->upstreams[1].adaptive);
    /* queue_timeout left out follows connect_timeout, written after it or not... */
    assert_int_equal(cfg->upstreams[2].max_requests, 300);
    assert_int_equal(cfg->upstreams[2].max_pending, REM_DEF_MAX_PENDING);
    assert_int_equal(cfg->upstreams[2].queue_timeout_ms, 250);
    assert_false(cfg->upstreams[2].adaptive);
    /* ...except that no connect timeout does not make a queue wait endless. */
    assert_int_equal(cfg->upstreams[3].connect_timeout_ms, 0);
    assert_int_equal(cfg->upstreams[3].queue_timeout_ms, REM_DEF_CONNECT_TIMEOUT_MS);
    assert_admission_defaults(&cfg->upstreams[3]);
    assert_int_equal(cfg->upstreams[4].connect_timeout_ms, 0);
    assert_int_equal(cfg->upstreams[4].queue_timeout_ms, 3000);
    /* A route limit without max_pending gets the default queue. */
    assert_int_equal(cfg->routes[0].max_requests, 1);
    assert_int_equal(cfg->routes[0].max_pending, REM_DEF_MAX_PENDING);
    assert_int_equal(cfg->routes[1].max_requests, 16777216);
    assert_int_equal(cfg->routes[1].max_pending, 0);
    assert_int_equal(cfg->routes[2].max_requests, 2);
    assert_int_equal(cfg->routes[2].max_pending, 16777216);
    assert_int_equal(cfg->routes[3].max_requests, 0);
    assert_int_equal(cfg->routes[3].max_pending, REM_DEF_MAX_PENDING);
    rem_config_unref(cfg);
}

static void test_admission_errors(void **state)
{
    expect_file_errors(
        CONFIGS "bad_admission.yaml",
        (const char *const[]){
            CONFIGS "bad_admission.yaml:2:57: \"max_connections\" must be between 1 and "
                    "16777216, got \"0\"",
            CONFIGS "bad_admission.yaml:3:57: \"max_connections\" must be between 1 and "
                    "16777216, got \"16777217\"",
            CONFIGS "bad_admission.yaml:4:57: expected an integer for \"max_connections\", got "
                    "\"-1\"",
            CONFIGS "bad_admission.yaml:8:19: \"max_requests\" must be between 1 and 16777216, "
                    "got \"0\"",
            CONFIGS "bad_admission.yaml:9:18: \"max_pending\" must be between 0 and 16777216, "
                    "got \"16777217\"",
            CONFIGS "bad_admission.yaml:10:20: \"queue_timeout\" must not be 0",
            CONFIGS "bad_admission.yaml:11:15: expected a boolean (true or false) for "
                    "\"adaptive\", got \"yes\"",
            CONFIGS "bad_admission.yaml:14:19: \"max_requests\" must be between 1 and "
                    "16777216, got \"16777217\"",
            CONFIGS "bad_admission.yaml:15:18: expected an integer for \"max_pending\", got "
                    "\"-1\"",
            CONFIGS "bad_admission.yaml:16:20: bad duration \"1.5s\" for \"queue_timeout\" "
                    "(expected an integer with ms, s, m or h, or 0)",
            CONFIGS "bad_admission.yaml:17:15: expected a scalar for \"adaptive\", got a "
                    "sequence",
            CONFIGS "bad_admission.yaml:19:32: \"max_pending\" on a route needs "
                    "\"max_requests\"",
            CONFIGS "bad_admission.yaml:20:46: \"max_requests\" must be between 1 and "
                    "16777216, got \"0\"",
            CONFIGS "bad_admission.yaml:20:62: \"max_pending\" must be between 0 and 16777216, "
                    "got \"16777217\"",
            CONFIGS "bad_admission.yaml:23:5: \"max_pending\" on a route needs "
                    "\"max_requests\"",
            CONFIGS "bad_admission.yaml:23:18: expected an integer for \"max_pending\", got "
                    "\"x\"",
            CONFIGS "bad_admission.yaml:26:19: expected an integer for \"max_requests\", got "
                    "\"1.5\"",
            CONFIGS "bad_admission.yaml:27:18: expected an integer for \"max_pending\", got "
                    "\"0s\"",
            NULL,
        });
    /* 0s is 0 too; a null value is missing, not a default. */
    expect_string_errors(
        "upstreams: [{ name: a, endpoints: [\"a:1\"], queue_timeout: 0s }]\n",
        (const char *const[]){"t.yaml:1:59: \"queue_timeout\" must not be 0", NULL});
    expect_string_errors(
        "upstreams:\n  - name: a\n    endpoints: [\"a:1\"]\n    max_requests:\n",
        (const char *const[]){"t.yaml:4:18: missing value for \"max_requests\"", NULL});
    /* The admin listener has no connection limit of its own. */
    expect_string_errors(
        "admin: { address: \"127.0.0.1:1\", max_connections: 10 }\n",
        (const char *const[]){"t.yaml:1:34: unknown key \"max_connections\" in admin", NULL});
    /* Alone, with nothing else wrong: reported at the key. */
    expect_string_errors("routes:\n  - name: r\n    upstream: app\n    max_pending: 0\n",
                         (const char *const[]){"t.yaml:4:5: \"max_pending\" on a route needs "
                                               "\"max_requests\"",
                                               NULL});
}

/* ---- HTTP/2 ------------------------------------------------------------------------------- */

static void test_http2(void **state)
{
    const struct rem_cfg_http2 *h2;
    struct rem_config *cfg;

    /* Each key at its lower and upper bound; quoted, from the environment, with units; a null
     * mapping and an absent one take every default. limits, written after the listeners,
     * still sets the header list limit of those that leave it out. */
    setenv("REM_T_H2_STREAMS", "250", 1);
    cfg = load_string_ok("listeners:\n"
                         "  - name: low\n"
                         "    address: \"127.0.0.1:0\"\n"
                         "    http2:\n"
                         "      max_concurrent_streams: 1\n"
                         "      initial_window: 1\n"
                         "      max_header_list_size: 1KiB\n"
                         "      max_resets: 1\n"
                         "      reset_interval: 1ms\n"
                         "      max_control_frames: 1\n"
                         "  - name: high\n"
                         "    address: \"127.0.0.1:0\"\n"
                         "    http2:\n"
                         "      max_concurrent_streams: 1000000\n"
                         "      initial_window: 2147483647\n"
                         "      max_header_list_size: 16MiB\n"
                         "      max_resets: 1000000\n"
                         "      reset_interval: 1h\n"
                         "      max_control_frames: 10000000\n"
                         "  - name: forms\n"
                         "    address: \"127.0.0.1:0\"\n"
                         "    http2: { max_concurrent_streams: \"${REM_T_H2_STREAMS}\", "
                         "initial_window: 64KiB, max_header_list_size: \"1048576\" }\n"
                         "  - { name: nul, address: \"127.0.0.1:0\", http2: }\n"
                         "  - { name: absent, address: \"127.0.0.1:0\" }\n"
                         "limits: { max_header_bytes: 8KiB }\n");
    unsetenv("REM_T_H2_STREAMS");
    h2 = &cfg->listeners[0].http2;
    assert_int_equal(h2->max_concurrent_streams, 1);
    assert_int_equal(h2->initial_window_bytes, 1);
    assert_int_equal(h2->max_header_list_bytes, 1024);
    assert_int_equal(h2->max_resets, 1);
    assert_int_equal(h2->reset_interval_ms, 1);
    assert_int_equal(h2->max_control_frames, 1);
    h2 = &cfg->listeners[1].http2;
    assert_int_equal(h2->max_concurrent_streams, 1000000);
    assert_int_equal(h2->initial_window_bytes, 2147483647);
    assert_int_equal(h2->max_header_list_bytes, 16 * 1024 * 1024);
    assert_int_equal(h2->max_resets, 1000000);
    assert_int_equal(h2->reset_interval_ms, 3600000);
    assert_int_equal(h2->max_control_frames, 10000000);
    /* Keys left out of a partial mapping take their defaults; one set wins over limits. */
    h2 = &cfg->listeners[2].http2;
    assert_int_equal(h2->max_concurrent_streams, 250);
    assert_int_equal(h2->initial_window_bytes, 65536);
    assert_int_equal(h2->max_header_list_bytes, 1048576);
    assert_int_equal(h2->max_resets, 200);
    assert_int_equal(h2->reset_interval_ms, 1000);
    assert_int_equal(h2->max_control_frames, 1000);
    assert_h2_defaults(&cfg->listeners[3].http2, 8192);
    assert_h2_defaults(&cfg->listeners[4].http2, 8192);
    assert_h2_defaults(&cfg->admin.http2, 8192);
    rem_config_unref(cfg);

    /* The inherited limit is limits.max_header_bytes as is, below the 1KiB floor of the key
     * too, and capped at what SETTINGS_MAX_HEADER_LIST_SIZE can carry. */
    cfg = load_string_ok("limits: { max_header_bytes: 512 }\n");
    assert_h2_defaults(&cfg->listeners[0].http2, 512);
    rem_config_unref(cfg);
    cfg = load_string_ok("limits: { max_header_bytes: 8GiB }\n");
    assert_h2_defaults(&cfg->listeners[0].http2, UINT32_MAX);
    rem_config_unref(cfg);
    cfg = load_string_ok("limits: { max_header_bytes: 4294967295 }\n"
                         "listeners: [{ name: a, address: \"127.0.0.1:0\", http2: {} }]\n");
    assert_h2_defaults(&cfg->listeners[0].http2, UINT32_MAX);
    rem_config_unref(cfg);
}

static void test_http2_errors(void **state)
{
    expect_file_errors(
        CONFIGS "bad_http2.yaml",
        (const char *const[]){
            CONFIGS "bad_http2.yaml:5:31: \"max_concurrent_streams\" must be between 1 and "
                    "1000000, got \"0\"",
            CONFIGS "bad_http2.yaml:6:23: \"initial_window\" must be between 1 and 2147483647, "
                    "got \"0\"",
            CONFIGS "bad_http2.yaml:7:29: \"max_header_list_size\" must be between 1KiB and "
                    "16MiB, got \"1023\"",
            CONFIGS "bad_http2.yaml:8:19: \"max_resets\" must be between 1 and 1000000, got "
                    "\"0\"",
            CONFIGS "bad_http2.yaml:9:23: \"reset_interval\" must not be 0",
            CONFIGS "bad_http2.yaml:10:27: \"max_control_frames\" must be between 1 and "
                    "10000000, got \"0\"",
            CONFIGS "bad_http2.yaml:14:31: \"max_concurrent_streams\" must be between 1 and "
                    "1000000, got \"1000001\"",
            CONFIGS "bad_http2.yaml:15:23: \"initial_window\" must be between 1 and 2147483647, "
                    "got \"2GiB\"",
            CONFIGS "bad_http2.yaml:16:29: \"max_header_list_size\" must be between 1KiB and "
                    "16MiB, got \"16777217\"",
            CONFIGS "bad_http2.yaml:17:19: \"max_resets\" must be between 1 and 1000000, got "
                    "\"1000001\"",
            CONFIGS "bad_http2.yaml:18:23: \"reset_interval\" must not be 0",
            CONFIGS "bad_http2.yaml:19:27: \"max_control_frames\" must be between 1 and "
                    "10000000, got \"10000001\"",
            CONFIGS "bad_http2.yaml:23:31: expected an integer for \"max_concurrent_streams\", "
                    "got \"many\"",
            CONFIGS "bad_http2.yaml:24:23: bad size \"64kib\" for \"initial_window\" (expected "
                    "bytes, or an integer with B, KiB, MiB, GiB, KB, MB or GB)",
            CONFIGS "bad_http2.yaml:25:29: expected a scalar for \"max_header_list_size\", got "
                    "a sequence",
            CONFIGS "bad_http2.yaml:26:19: expected an integer for \"max_resets\", got \"-1\"",
            CONFIGS "bad_http2.yaml:27:23: bad duration \"10\" for \"reset_interval\" (expected "
                    "an integer with ms, s, m or h, or 0)",
            CONFIGS "bad_http2.yaml:28:27: expected an integer for \"max_control_frames\", got "
                    "\"1e3\"",
            CONFIGS "bad_http2.yaml:29:7: unknown key \"max_streams\" in http2",
            CONFIGS "bad_http2.yaml:30:7: duplicate key \"max_resets\" in http2 (first at 26:7)",
            CONFIGS "bad_http2.yaml:33:12: expected a mapping for \"http2\", got a scalar",
            CONFIGS "bad_http2.yaml:36:12: expected a mapping for \"http2\", got a sequence",
            NULL,
        });
    /* A null value is missing, not a default; an unset variable is reported as anywhere. */
    unsetenv("REM_T_SURELY_UNSET");
    expect_string_errors(
        "listeners:\n  - name: a\n    address: \"127.0.0.1:0\"\n    http2:\n"
        "      max_resets:\n      initial_window: \"${REM_T_SURELY_UNSET}\"\n",
        (const char *const[]){"t.yaml:5:18: missing value for \"max_resets\"",
                              "t.yaml:6:23: environment variable REM_T_SURELY_UNSET is not set",
                              NULL});
    /* A size form that overflows 64 bits is a bad size, not a wrapped small one. */
    expect_string_errors("listeners: [{ name: a, address: \"127.0.0.1:0\", "
                         "http2: { initial_window: 17179869184GiB } }]\n",
                         (const char *const[]){"t.yaml:1:73: bad size \"17179869184GiB\" for "
                                               "\"initial_window\" (expected bytes, or an integer "
                                               "with B, KiB, MiB, GiB, KB, MB or GB)",
                                               NULL});
    /* Only listeners take http2: not admin, not the top level, not an upstream. */
    expect_string_errors("admin: { address: \"127.0.0.1:1\", http2: {} }\nhttp2: {}\n"
                         "upstreams: [{ name: a, endpoints: [\"a:1\"], http2: {} }]\n",
                         (const char *const[]){"t.yaml:1:34: unknown key \"http2\" in admin",
                                               "t.yaml:2:1: unknown key \"http2\" at top level",
                                               "t.yaml:3:44: unknown key \"http2\" in upstream",
                                               NULL});
}

/* Upstream TLS does not exist yet: "h2" is refused with its own message rather than taken as
 * cleartext or reported as an unknown word. */
static void test_upstream_protocols(void **state)
{
    struct rem_config *cfg;

    setenv("REM_T_PROTO", "h2c", 1);
    cfg = load_string_ok("upstreams:\n"
                         "  - { name: a, endpoints: [\"a:1\"], protocol: http1 }\n"
                         "  - { name: b, endpoints: [\"b:1\"], protocol: h2c }\n"
                         "  - { name: c, endpoints: [\"c:1\"], protocol: \"${REM_T_PROTO}\" }\n"
                         "  - { name: d, endpoints: [\"d:1\"] }\n");
    unsetenv("REM_T_PROTO");
    assert_int_equal(cfg->upstreams[0].protocol, REM_PROTO_HTTP1);
    assert_int_equal(cfg->upstreams[1].protocol, REM_PROTO_H2C);
    assert_int_equal(cfg->upstreams[2].protocol, REM_PROTO_H2C);
    assert_int_equal(cfg->upstreams[3].protocol, REM_PROTO_HTTP1);
    rem_config_unref(cfg);

    /* h2 is HTTP/2 over TLS with the default settings; http1 with a tls block is HTTP/1.1
     * over TLS. */
    cfg = load_string_ok(
        "upstreams:\n"
        "  - { name: a, endpoints: [\"a:1\"], protocol: h2 }\n"
        "  - { name: b, endpoints: [\"10.0.0.1:443\"], tls: { ca: /ca.pem, sni: "
        "App.Internal, cert: /c.pem, key: /k.pem } }\n"
        "  - { name: c, endpoints: [\"c:1\"], protocol: h2, tls: { verify: false } }\n"
        "  - { name: d, endpoints: [\"d:1\"], protocol: h2c }\n");
    assert_int_equal(cfg->upstreams[0].protocol, REM_PROTO_H2);
    assert_non_null(cfg->upstreams[0].tls);
    assert_true(cfg->upstreams[0].tls->verify);
    assert_null(cfg->upstreams[0].tls->ca);
    assert_null(cfg->upstreams[0].tls->sni);
    assert_int_equal(cfg->upstreams[1].protocol, REM_PROTO_HTTP1);
    assert_string_equal(cfg->upstreams[1].tls->ca, "/ca.pem");
    assert_string_equal(cfg->upstreams[1].tls->sni, "app.internal");
    assert_string_equal(cfg->upstreams[1].tls->cert, "/c.pem");
    assert_string_equal(cfg->upstreams[1].tls->key, "/k.pem");
    assert_false(cfg->upstreams[2].tls->verify);
    assert_null(cfg->upstreams[3].tls);
    rem_config_unref(cfg);

    expect_string_errors(
        "upstreams:\n"
        "  - { name: a, endpoints: [\"a:1\"], protocol: h2c, tls: {} }\n"
        "  - { name: b, endpoints: [\"b:1\"], protocol: H2C }\n"
        "  - { name: c, endpoints: [\"c:1\"], tls: { cert: /c.pem } }\n"
        "  - { name: d, endpoints: [\"d:1\"], tls: { sni: 10.0.0.1 } }\n"
        "  - { name: e, endpoints: [\"e:1\"], tls: { ca: \"\", vrfy: true } }\n"
        "  - { name: f, endpoints: [\"f:1\"], tls: { ca: /ca.pem, verify: false } }\n"
        "  - { name: g, endpoints: [\"unix:/run/app.sock\"], protocol: h2 }\n",
        (const char *const[]){
            "t.yaml:2:56: \"tls\" with protocol h2c: h2c is cleartext HTTP/2; write protocol h2 "
            "for HTTP/2 over TLS",
            "t.yaml:3:46: bad value \"H2C\" for \"protocol\" (expected http1, h2c or h2)",
            "t.yaml:4:41: tls.cert and tls.key go together (the client certificate and its key)",
            "t.yaml:5:48: bad sni \"10.0.0.1\" (expected a DNS host name such as app.internal; an "
            "IP endpoint without sni is verified against its address)",
            "t.yaml:6:47: \"ca\" must not be empty (a PEM file name)",
            "t.yaml:6:51: unknown key \"vrfy\" in tls",
            "t.yaml:7:47: tls.ca is never used with verify: false (nothing is verified)",
            "t.yaml:8:5: upstream \"g\": TLS needs host:port endpoints, not unix:/run/app.sock",
            NULL,
        });
}

/* ---- dns ---------------------------------------------------------------------------------- */

static void test_dns(void **state)
{
    const struct rem_cfg_dns *dns;
    struct rem_config *cfg;

    /* Each resolver form, port 53 when left out; ${VAR} in an item; every key at a bound:
     * min_ttl 0 (no floor), stale_ttl 0 (never stale), attempts 10. */
    setenv("REM_T_DNS", "10.0.0.10:1053", 1);
    cfg = load_string_ok("dns:\n"
                         "  resolvers: [\"127.0.0.1\", \"127.0.0.2:5353\", \"[::1]\", "
                         "\"[2001:db8::1]:65535\", \"${REM_T_DNS}\", \"[::ffff:1.2.3.4]:1\"]\n"
                         "  min_ttl: 0\n"
                         "  max_ttl: 1h\n"
                         "  timeout: 250ms\n"
                         "  attempts: 10\n"
                         "  family: v6\n"
                         "  stale_ttl: 0s\n");
    unsetenv("REM_T_DNS");
    dns = &cfg->dns;
    assert_int_equal(dns->n_resolvers, 6);
    assert_addr(&dns->resolvers[0], "127.0.0.1:53");
    assert_int_equal(dns->resolvers[0].len, sizeof(struct sockaddr_in));
    assert_addr(&dns->resolvers[1], "127.0.0.2:5353");
    assert_addr(&dns->resolvers[2], "[::1]:53");
    assert_int_equal(dns->resolvers[2].len, sizeof(struct sockaddr_in6));
    assert_addr(&dns->resolvers[3], "[2001:db8::1]:65535");
    assert_addr(&dns->resolvers[4], "10.0.0.10:1053");
    assert_addr(&dns->resolvers[5], "[::ffff:1.2.3.4]:1");
    assert_int_equal(dns->min_ttl_ms, 0);
    assert_int_equal(dns->max_ttl_ms, 3600000);
    assert_int_equal(dns->timeout_ms, 250);
    assert_int_equal(dns->attempts, 10);
    assert_int_equal(dns->family, REM_DNS_V6);
    assert_int_equal(dns->stale_ttl_ms, 0);
    rem_config_unref(cfg);

    /* The other bounds: 8 resolvers, attempts 1, timeout 1ms and 1m, min_ttl == max_ttl,
     * TTLs at RFC 2181's 2^31-1 seconds. Keys left out keep their defaults. */
    cfg = load_string_ok("dns:\n"
                         "  resolvers: [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\", \"10.0.0.4\", "
                         "\"10.0.0.5\", \"10.0.0.6\", \"10.0.0.7\", \"10.0.0.8\"]\n"
                         "  min_ttl: 2147483647s\n"
                         "  max_ttl: 2147483647s\n"
                         "  attempts: \"1\"\n"
                         "  timeout: 1m\n"
                         "  family: v4\n"
                         "  stale_ttl: 2147483647s\n");
    dns = &cfg->dns;
    assert_int_equal(dns->n_resolvers, 8);
    assert_addr(&dns->resolvers[7], "10.0.0.8:53");
    assert_int_equal(dns->min_ttl_ms, 2147483647000ULL);
    assert_int_equal(dns->max_ttl_ms, 2147483647000ULL);
    assert_int_equal(dns->attempts, 1);
    assert_int_equal(dns->timeout_ms, 60000);
    assert_int_equal(dns->family, REM_DNS_V4);
    assert_int_equal(dns->stale_ttl_ms, 2147483647000ULL);
    rem_config_unref(cfg);

    cfg = load_string_ok("dns: { timeout: 1ms, family: auto, min_ttl: 1m }\n");
    dns = &cfg->dns;
    assert_null(dns->resolvers);
    assert_int_equal(dns->n_resolvers, 0);
    assert_int_equal(dns->timeout_ms, 1);
    assert_int_equal(dns->family, REM_DNS_AUTO);
    assert_int_equal(dns->min_ttl_ms, 60000);
    assert_int_equal(dns->max_ttl_ms, 300000);
    assert_int_equal(dns->attempts, 2);
    assert_int_equal(dns->stale_ttl_ms, 300000);
    rem_config_unref(cfg);

    /* Either TTL bound may meet the other's default. */
    cfg = load_string_ok("dns: { max_ttl: 5s }\n");
    assert_int_equal(cfg->dns.min_ttl_ms, 5000);
    assert_int_equal(cfg->dns.max_ttl_ms, 5000);
    rem_config_unref(cfg);
    cfg = load_string_ok("dns: { min_ttl: 5m }\n");
    assert_int_equal(cfg->dns.min_ttl_ms, 300000);
    assert_int_equal(cfg->dns.max_ttl_ms, 300000);
    rem_config_unref(cfg);
    /* A max_ttl below the default min_ttl is fine once min_ttl is lowered too. */
    cfg = load_string_ok("dns: { max_ttl: 1s, min_ttl: 0 }\n");
    assert_int_equal(cfg->dns.min_ttl_ms, 0);
    assert_int_equal(cfg->dns.max_ttl_ms, 1000);
    rem_config_unref(cfg);
}

static void test_dns_errors(void **state)
{
    static const char *const expected =
        "expected a numeric ip, ip:port, [v6] or [v6]:port; port 1-65535, default 53";
    char buf[8][160];
    const char *want[9];
    static const char *const bad_resolvers[] = {
        "localhost", "*:53",        "1.2.3.4:",      ":53",        "[::1]:0",
        "[::1]53",   "[fe80::1%1]", "1.2.3",         "0x7f000001", "[1.2.3.4]:53",
        "1.2.3.4 ",  "[::1",        "1.2.3.4:65536", "1.2.3.4:+5", "",
    };

    expect_file_errors(
        CONFIGS "bad_dns.yaml",
        (const char *const[]){
            CONFIGS "bad_dns.yaml:3:15: bad resolver \"dns.example\" (expected a numeric ip, "
                    "ip:port, [v6] or [v6]:port; port 1-65535, default 53)",
            CONFIGS "bad_dns.yaml:3:30: bad resolver \"1.2.3.4:0\" (expected a numeric ip, "
                    "ip:port, [v6] or [v6]:port; port 1-65535, default 53)",
            CONFIGS "bad_dns.yaml:3:43: bad resolver \"::1\" (put an IPv6 address in brackets: "
                    "[v6])",
            CONFIGS "bad_dns.yaml:3:50: bad resolver \"[::1]:65536\" (expected a numeric ip, "
                    "ip:port, [v6] or [v6]:port; port 1-65535, default 53)",
            CONFIGS "bad_dns.yaml:3:65: bad resolver \"[1.2.3.4]\" (expected a numeric ip, "
                    "ip:port, [v6] or [v6]:port; port 1-65535, default 53)",
            CONFIGS "bad_dns.yaml:3:90: duplicate resolver 10.0.0.1:53 (first at 3:78)",
            CONFIGS "bad_dns.yaml:3:105: bad resolver \"localhost\" (expected a numeric ip, "
                    "ip:port, [v6] or [v6]:port; port 1-65535, default 53)",
            CONFIGS "bad_dns.yaml:4:12: bad duration \"1.5s\" for \"min_ttl\" (expected an "
                    "integer with ms, s, m or h, or 0)",
            CONFIGS "bad_dns.yaml:5:12: \"max_ttl\" must not be 0",
            CONFIGS "bad_dns.yaml:6:12: \"timeout\" must be between 1ms and 1m, got \"2m\"",
            CONFIGS "bad_dns.yaml:7:13: \"attempts\" must be between 1 and 10, got \"11\"",
            CONFIGS "bad_dns.yaml:8:11: bad value \"ipv4\" for \"family\" (expected auto, v4 or "
                    "v6)",
            CONFIGS "bad_dns.yaml:9:14: bad duration \"-1s\" for \"stale_ttl\" (expected an "
                    "integer with ms, s, m or h, or 0)",
            CONFIGS "bad_dns.yaml:10:3: unknown key \"ttl\" in dns",
            NULL,
        });

    /* Numeric only: no names (not even localhost), no "*", no scope ids, no inet_aton
     * shorthands, no empty port. */
    for (size_t i = 0; i < sizeof(bad_resolvers) / sizeof(bad_resolvers[0]); i++) {
        char yaml[128];

        snprintf(yaml, sizeof(yaml), "dns: { resolvers: [\"%s\"] }\n", bad_resolvers[i]);
        snprintf(buf[0], sizeof(buf[0]), "t.yaml:1:20: bad resolver \"%s\" (%s)", bad_resolvers[i],
                 expected);
        want[0] = buf[0];
        want[1] = NULL;
        expect_string_errors(yaml, want);
    }
    expect_string_errors("dns: { resolvers: [\"2001:db8::1\"] }\n",
                         (const char *const[]){"t.yaml:1:20: bad resolver \"2001:db8::1\" (put an "
                                               "IPv6 address in brackets: [v6])",
                                               NULL});
    /* Spelled differently, the same server: "[::1]" and "[0:0::1]:53". */
    expect_string_errors("dns:\n  resolvers:\n    - \"[::1]\"\n    - \"[0:0::1]:53\"\n",
                         (const char *const[]){"t.yaml:4:7: duplicate resolver [::1]:53 (first "
                                               "at 3:7)",
                                               NULL});
    expect_string_errors("dns: { resolvers: [] }\n",
                         (const char *const[]){"t.yaml:1:19: \"resolvers\" must not be empty "
                                               "(leave it out to use /etc/resolv.conf)",
                                               NULL});
    expect_string_errors("dns: { resolvers: }\n",
                         (const char *const[]){"t.yaml:1:19: \"resolvers\" must not be empty "
                                               "(leave it out to use /etc/resolv.conf)",
                                               NULL});
    expect_string_errors("dns: { resolvers: \"127.0.0.1\" }\n",
                         (const char *const[]){"t.yaml:1:19: expected a sequence for "
                                               "\"resolvers\", got a scalar",
                                               NULL});
    expect_string_errors(
        "dns: { resolvers: [[\"127.0.0.1\"]] }\n",
        (const char *const[]){"t.yaml:1:20: expected a scalar for a resolver, got a sequence",
                              NULL});
    /* A ninth is too many, reported at the ninth. */
    expect_string_errors(
        "dns:\n  resolvers: [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\", "
        "\"10.0.0.4\", \"10.0.0.5\", \"10.0.0.6\", \"10.0.0.7\", \"10.0.0.8\", "
        "\"10.0.0.9\"]\n",
        (const char *const[]){"t.yaml:2:111: too many resolvers (at most 8)", NULL});
    expect_string_errors(
        "dns: [1]\n",
        (const char *const[]){"t.yaml:1:6: expected a mapping for \"dns\", got a sequence", NULL});
    expect_string_errors("dns: { server: \"127.0.0.1\" }\n",
                         (const char *const[]){"t.yaml:1:8: unknown key \"server\" in dns", NULL});
    expect_string_errors("dns: { attempts: 0 }\n",
                         (const char *const[]){"t.yaml:1:18: \"attempts\" must be between 1 and "
                                               "10, got \"0\"",
                                               NULL});
    expect_string_errors(
        "dns: { attempts: two }\n",
        (const char *const[]){"t.yaml:1:18: expected an integer for \"attempts\", got \"two\"",
                              NULL});
    expect_string_errors("dns: { timeout: 0 }\n",
                         (const char *const[]){"t.yaml:1:17: \"timeout\" must not be 0", NULL});
    expect_string_errors(
        "dns: { timeout: 61s }\n",
        (const char *const[]){"t.yaml:1:17: \"timeout\" must be between 1ms and 1m, got \"61s\"",
                              NULL});
    expect_string_errors("dns: { family: V4 }\n",
                         (const char *const[]){"t.yaml:1:16: bad value \"V4\" for \"family\" "
                                               "(expected auto, v4 or v6)",
                                               NULL});
    expect_string_errors("dns: { max_ttl: 2147483648s, stale_ttl: 2147483648s, min_ttl: 25000d }\n",
                         (const char *const[]){
                             "t.yaml:1:17: \"max_ttl\" must be between 1ms and 2147483647s, got "
                             "\"2147483648s\"",
                             "t.yaml:1:41: \"stale_ttl\" must be between 0s and 2147483647s, got "
                             "\"2147483648s\"",
                             "t.yaml:1:63: bad duration \"25000d\" for \"min_ttl\" (expected an "
                             "integer with ms, s, m or h, or 0)",
                             NULL,
                         });
    expect_string_errors(
        "dns: { min_ttl: 35791395m }\n",
        (const char *const[]){"t.yaml:1:17: \"min_ttl\" must be between 0s and 2147483647s, got "
                              "\"35791395m\"",
                              NULL});
    /* max_ttl below min_ttl: at max_ttl when written, naming both and which is a default. */
    expect_string_errors("dns:\n  max_ttl: 10s\n  min_ttl: 1m\n",
                         (const char *const[]){"t.yaml:2:12: \"max_ttl\" (10s) must not be less "
                                               "than \"min_ttl\" (1m)",
                                               NULL});
    expect_string_errors("dns: { max_ttl: 4999ms }\n",
                         (const char *const[]){"t.yaml:1:17: \"max_ttl\" (4999ms) must not be "
                                               "less than \"min_ttl\" (5s, the default)",
                                               NULL});
    expect_string_errors("dns: { min_ttl: 301s }\n",
                         (const char *const[]){"t.yaml:1:17: \"min_ttl\" (301s) must not be "
                                               "greater than \"max_ttl\" (5m, the default)",
                                               NULL});
    /* A TTL already wrong is not compared again. */
    expect_string_errors("dns: { min_ttl: 1m, max_ttl: 0 }\n",
                         (const char *const[]){"t.yaml:1:30: \"max_ttl\" must not be 0", NULL});
    /* dns is top level only. */
    expect_string_errors(
        "upstreams: [{ name: a, endpoints: [\"a:1\"], dns: {} }]\n",
        (const char *const[]){"t.yaml:1:44: unknown key \"dns\" in upstream", NULL});
}

/* ---- upstreams[].lb and endpoint names ---------------------------------------------------- */

static void test_upstream_lb(void **state)
{
    struct rem_config *cfg;

    setenv("REM_T_LB", "least_request", 1);
    cfg = load_string_ok("upstreams:\n"
                         "  - { name: a, endpoints: [\"a:1\"], lb: round_robin }\n"
                         "  - { name: b, endpoints: [\"b:1\"], lb: least_request }\n"
                         "  - { name: c, endpoints: [\"c:1\"], lb: \"${REM_T_LB}\" }\n"
                         "  - { name: d, endpoints: [\"d:1\"] }\n");
    unsetenv("REM_T_LB");
    assert_int_equal(cfg->upstreams[0].lb, REM_LB_ROUND_ROBIN);
    assert_int_equal(cfg->upstreams[1].lb, REM_LB_LEAST_REQUEST);
    assert_int_equal(cfg->upstreams[2].lb, REM_LB_LEAST_REQUEST);
    assert_int_equal(cfg->upstreams[3].lb, REM_LB_ROUND_ROBIN);
    rem_config_unref(cfg);

    expect_string_errors("upstreams:\n"
                         "  - { name: a, endpoints: [\"a:1\"], lb: random }\n"
                         "  - { name: b, endpoints: [\"b:1\"], lb: [round_robin] }\n"
                         "  - { name: c, endpoints: [\"c:1\"], lb: }\n",
                         (const char *const[]){
                             "t.yaml:2:40: bad value \"random\" for \"lb\" (expected round_robin "
                             "or least_request)",
                             "t.yaml:3:40: expected a scalar for \"lb\", got a sequence",
                             "t.yaml:4:40: missing value for \"lb\"",
                             NULL,
                         });
    /* lb belongs to an upstream, not to a route. */
    expect_string_errors("routes: [{ name: r, upstream: app, lb: round_robin }]\n",
                         (const char *const[]){"t.yaml:1:36: unknown key \"lb\" in route", NULL});
}

/* is_name is what decides whether dns.c resolves an endpoint: only inet_pton's numeric forms
 * are addresses, "localhost" included among names. */
static void test_endpoint_names(void **state)
{
    static const struct {
        const char *host;
        uint16_t port;
        bool is_name;
    } want[] = {
        {"127.0.0.1", 1, false},    {"::1", 2, false},       {"::ffff:10.0.0.1", 3, false},
        {"localhost", 4, true},     {"LocalHost.", 5, true}, {"app.svc.cluster.local", 6, true},
        {"svc_1", 7, true},         {"0.0.0.0", 8, false},   {"x.1a", 9, true},
        {"2001.example", 10, true}, {"10.0.0.1", 11, false},
    };
    struct rem_config *cfg = load_string_ok(
        "upstreams:\n"
        "  - name: a\n"
        "    endpoints: [\"127.0.0.1:1\", \"[::1]:2\", \"[::ffff:10.0.0.1]:3\", \"localhost:4\",\n"
        "                \"LocalHost.:5\", \"app.svc.cluster.local:6\", \"svc_1:7\",\n"
        "                \"0.0.0.0:8\", \"x.1a:9\", \"2001.example:10\"]\n"
        "  - { name: b, endpoints: [\"10.0.0.1:11\"] }\n");
    const struct rem_cfg_upstream *u = &cfg->upstreams[0];

    assert_int_equal(u->n_endpoints, 10);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct rem_cfg_endpoint *e =
            i < 10 ? &u->endpoints[i] : &cfg->upstreams[1].endpoints[0];

        assert_string_equal(e->host, want[i].host);
        assert_int_equal(e->port, want[i].port);
        if (e->is_name != want[i].is_name)
            fail_msg("%s: is_name %d, want %d", e->host, e->is_name, want[i].is_name);
    }
    rem_config_unref(cfg);

    expect_string_errors(
        "upstreams:\n"
        "  - name: a\n"
        "    endpoints:\n"
        "      - \"1.2.3:80\"\n"
        "      - \"127.1:80\"\n"
        "      - \"0x7f000001:80\"\n"
        "      - \"256.0.0.1:80\"\n"
        "      - \"10.0.0.1.:80\"\n"
        "      - \"a.b..c:80\"\n"
        "      - \"[1.2.3.4]:80\"\n"
        "      - \"localhost\"\n"
        "      - \":80\"\n"
        "      - \"a/b:80\"\n"
        "      - \"app:65536\"\n",
        (const char *const[]){
            "t.yaml:4:9: bad endpoint \"1.2.3:80\" (not an IPv4 address, and a host name cannot "
            "end in a numeric label)",
            "t.yaml:5:9: bad endpoint \"127.1:80\" (not an IPv4 address, and a host name cannot "
            "end in a numeric label)",
            "t.yaml:6:9: bad endpoint \"0x7f000001:80\" (not an IPv4 address, and a host name "
            "cannot end in a numeric label)",
            "t.yaml:7:9: bad endpoint \"256.0.0.1:80\" (not an IPv4 address, and a host name "
            "cannot end in a numeric label)",
            "t.yaml:8:9: bad endpoint \"10.0.0.1.:80\" (not an IPv4 address, and a host name "
            "cannot end in a numeric label)",
            "t.yaml:9:9: bad endpoint \"a.b..c:80\" (empty label in host name)",
            "t.yaml:10:9: bad endpoint \"[1.2.3.4]:80\" (not an IPv6 address in brackets)",
            "t.yaml:11:9: bad endpoint \"localhost\" (expected host:port or [v6]:port)",
            "t.yaml:12:9: bad endpoint \":80\" (missing host)",
            "t.yaml:13:9: bad endpoint \"a/b:80\" (a host name takes letters, digits, '-', '_' "
            "and '.')",
            "t.yaml:14:9: bad endpoint \"app:65536\" (port must be 1-65535)",
            NULL,
        });
}

/* ---- environment expansion ---------------------------------------------------------------- */

static void test_env_expansion(void **state)
{
    struct rem_config *cfg;

    unsetenv("REM_T_HOST");
    setenv("REM_T_PORT", "8123", 1);
    setenv("REM_T_UPSTREAM", "up.example:1", 1);
    setenv("REM_T_EMPTY", "", 1);
    setenv("REM_T_LEVEL", "warn", 1);
    cfg = load_ok(CONFIGS "good_env.yaml");
    /* Two references in one value, the first from its default. */
    assert_string_equal(cfg->listeners[0].address, "127.0.0.1:8123");
    assert_addr(&cfg->listeners[0].addr, "127.0.0.1:8123");
    assert_string_equal(cfg->upstreams[0].endpoints[0].host, "up.example");
    assert_int_equal(cfg->upstreams[0].endpoints[0].port, 1);
    /* Set but empty takes the default too, as in sh. */
    assert_string_equal(cfg->upstreams[0].endpoints[1].host, "fallback.local");
    assert_int_equal(cfg->upstreams[0].endpoints[1].port, 9);
    /* "$$" is one '$', a lone '$' stays, and "$${X}" is not a reference. */
    assert_string_equal(cfg->routes[0].path_prefix, "/a$b/${NOT_A_VAR}/");
    /* Expansion happens before typing. */
    assert_int_equal(cfg->log.level, REM_LOG_WARN);
    rem_config_unref(cfg);

    setenv("REM_T_HOST", "10.9.8.7", 1);
    cfg = load_ok(CONFIGS "good_env.yaml");
    assert_addr(&cfg->listeners[0].addr, "10.9.8.7:8123");
    rem_config_unref(cfg);

    /* Keys are not expanded. */
    expect_string_errors(
        "${REM_T_LEVEL}: 1\n",
        (const char *const[]){"t.yaml:1:1: unknown key \"${REM_T_LEVEL}\" at top level", NULL});
    /* A default may be empty; the typed value then says what is wrong. */
    expect_string_errors("log: { level: \"${REM_T_UNSET_X:-}\" }\n",
                         (const char *const[]){"t.yaml:1:15: bad value \"\" for \"level\" "
                                               "(expected debug, info, warn or error)",
                                               NULL});
    unsetenv("REM_T_PORT");
    unsetenv("REM_T_UPSTREAM");
    unsetenv("REM_T_EMPTY");
    unsetenv("REM_T_LEVEL");
    unsetenv("REM_T_HOST");
}

static void test_env_errors(void **state)
{
    unsetenv("REM_T_SURELY_UNSET");
    expect_file_errors(
        CONFIGS "bad_env.yaml",
        (const char *const[]){
            CONFIGS "bad_env.yaml:3:14: environment variable REM_T_SURELY_UNSET is not set",
            CONFIGS "bad_env.yaml:6:17: unterminated \"${\" in \"${REM_T_UNTERMINATED\"",
            CONFIGS "bad_env.yaml:6:41: bad variable reference \"${1BAD}\" (expected ${NAME} or "
                    "${NAME:-default})",
            CONFIGS "bad_env.yaml:6:52: bad variable reference \"${A-B}\" (expected ${NAME} or "
                    "${NAME:-default})",
            NULL,
        });
    expect_string_errors("log: { level: \"${}\" }\n",
                         (const char *const[]){"t.yaml:1:15: bad variable reference \"${}\" "
                                               "(expected ${NAME} or ${NAME:-default})",
                                               NULL});
}

/* ---- bad files: exact messages and positions ---------------------------------------------- */

static void test_file_not_found(void **state)
{
    expect_file_errors(CONFIGS "does-not-exist.yaml",
                       (const char *const[]){CONFIGS "does-not-exist.yaml: cannot open: "
                                                     "No such file or directory",
                                             NULL});
    expect_file_errors(CONFIGS,
                       (const char *const[]){CONFIGS ": cannot read: Is a directory", NULL});
    /* Reading stops at the size cap rather than at the end of an endless file. */
    expect_file_errors(
        "/dev/zero", (const char *const[]){"/dev/zero: too large (more than 4194304 bytes)", NULL});
}

static void test_unknown_and_duplicate_keys(void **state)
{
    expect_file_errors(CONFIGS "bad_keys.yaml",
                       (const char *const[]){
                           CONFIGS "bad_keys.yaml:3:5: unknown key \"adress\" in listener",
                           CONFIGS "bad_keys.yaml:5:5: duplicate key \"address\" in listener "
                                   "(first at 4:5)",
                           CONFIGS "bad_keys.yaml:9:5: unknown key \"timeout\" in upstream",
                           CONFIGS "bad_keys.yaml:13:30: unknown key \"hots\" in match",
                           CONFIGS "bad_keys.yaml:14:1: unknown key \"loggin\" at top level",
                           NULL,
                       });
}

static void test_wrong_types(void **state)
{
    expect_file_errors(
        CONFIGS "bad_types.yaml",
        (const char *const[]){
            CONFIGS "bad_types.yaml:1:10: expected a scalar for \"workers\", got a sequence",
            CONFIGS "bad_types.yaml:3:3: expected a sequence for \"listeners\", got a mapping",
            CONFIGS "bad_types.yaml:4:8: expected a mapping for \"admin\", got a scalar",
            CONFIGS "bad_types.yaml:7:16: expected a sequence for \"endpoints\", got a scalar",
            CONFIGS "bad_types.yaml:8:22: expected an integer for \"max_connections\", got "
                    "\"lots\"",
            CONFIGS "bad_types.yaml:9:5: expected a mapping for an upstream, got a scalar",
            CONFIGS "bad_types.yaml:13:23: expected a sequence for \"methods\", got a scalar",
            CONFIGS "bad_types.yaml:14:24: expected an integer for \"max_headers\", got \"1.5\"",
            CONFIGS "bad_types.yaml:15:20: expected a boolean (true or false) for "
                    "\"access_log\", got \"1\"",
            NULL,
        });
    expect_string_errors("- a\n- b\n", (const char *const[]){"t.yaml:1:1: expected a mapping for "
                                                             "the document, got a sequence",
                                                             NULL});
    expect_string_errors("[a]: 1\nlog:\n  level:\n",
                         (const char *const[]){
                             "t.yaml:1:1: expected a scalar key at top level, got a sequence",
                             "t.yaml:3:9: missing value for \"level\"",
                             NULL,
                         });
    expect_string_errors("upstreams: [{ name: a, endpoints: [\"a:1\"], max_connections: "
                         "99999999999999999999999 }]\n",
                         (const char *const[]){"t.yaml:1:61: \"max_connections\" must be between 1 "
                                               "and 4294967295, got \"99999999999999999999999\"",
                                               NULL});
    expect_string_errors(
        "log: { level: \"a\\0b\" }\n",
        (const char *const[]){"t.yaml:1:15: NUL character in the value of \"level\"", NULL});
}

static void test_bad_values(void **state)
{
    expect_file_errors(
        CONFIGS "bad_values.yaml",
        (const char *const[]){
            CONFIGS "bad_values.yaml:1:10: bad value \"0\" for \"workers\" (expected auto or an "
                    "integer from 1 to 1024)",
            CONFIGS "bad_values.yaml:4:14: bad address \"example.com:8000\" (expected a numeric "
                    "host:port, [v6]:port or *:port; port 0-65535)",
            CONFIGS "bad_values.yaml:6:14: bad address \"0.0.0.0:65536\" (expected a numeric "
                    "host:port, [v6]:port or *:port; port 0-65535)",
            CONFIGS "bad_values.yaml:9:17: bad endpoint \"127.0.0.1:0\" (port must be 1-65535)",
            CONFIGS "bad_values.yaml:9:44: bad endpoint \"bad host:80\" (a host name takes "
                    "letters, digits, '-', '_' and '.')",
            CONFIGS "bad_values.yaml:10:15: bad value \"http3\" for \"protocol\" (expected "
                    "http1, h2c or h2)",
            CONFIGS "bad_values.yaml:11:22: bad duration \"10\" for \"connect_timeout\" "
                    "(expected an integer with ms, s, m or h, or 0)",
            CONFIGS "bad_values.yaml:12:19: bad duration \"1.5s\" for \"idle_timeout\" "
                    "(expected an integer with ms, s, m or h, or 0)",
            CONFIGS "bad_values.yaml:13:22: \"max_connections\" must be between 1 and "
                    "4294967295, got \"99999999999\"",
            CONFIGS "bad_values.yaml:17:14: bad duration \"18446744073709551615s\" for "
                    "\"timeout\" (expected an integer with ms, s, m or h, or 0)",
            CONFIGS "bad_values.yaml:18:20: bad host \"a..b\" (expected a host name or "
                    "*.suffix)",
            CONFIGS "bad_values.yaml:18:34: bad path \"no-slash\" for \"path\" (expected a path "
                    "starting with \"/\", without query)",
            CONFIGS "bad_values.yaml:18:56: bad method \"GE T\" (expected an HTTP method token)",
            CONFIGS "bad_values.yaml:20:21: bad size \"64kb\" for \"max_header_bytes\" "
                    "(expected bytes, or an integer with B, KiB, MiB, GiB, KB, MB or GB)",
            CONFIGS "bad_values.yaml:21:17: \"buffer_bytes\" must not be 0",
            CONFIGS "bad_values.yaml:22:15: bad value \"verbose\" for \"level\" (expected debug, "
                    "info, warn or error)",
            CONFIGS "bad_values.yaml:22:32: bad value \"xml\" for \"format\" (expected json or "
                    "text)",
            CONFIGS "bad_values.yaml:22:49: expected a boolean (true or false) for "
                    "\"access_log\", got \"yes\"",
            NULL,
        });
}

/* limits.max_tls_handshakes: 0 (no cap) to 2^24; a negative, an oversized or a fractional
 * count is refused with the key named. */
static void test_max_tls_handshakes_errors(void **state)
{
    expect_string_errors("limits:\n  max_tls_handshakes: 16777217\n",
                         (const char *const[]){"t.yaml:2:23: \"max_tls_handshakes\" must be "
                                               "between 0 and 16777216, got \"16777217\"",
                                               NULL});
    expect_string_errors("limits: { max_tls_handshakes: -1 }\n",
                         (const char *const[]){"t.yaml:1:31: expected an integer for "
                                               "\"max_tls_handshakes\", got \"-1\"",
                                               NULL});
    expect_string_errors("limits: { max_tls_handshakes: 2.5 }\n",
                         (const char *const[]){"t.yaml:1:31: expected an integer for "
                                               "\"max_tls_handshakes\", got \"2.5\"",
                                               NULL});
}

/* limits.headers_with_underscores: allow, drop or reject, spelled exactly; anything else (a
 * case variant, nginx's on/off, a boolean, a list) is refused with the key and the choices. */
static void test_headers_with_underscores(void **state)
{
    (void)state;
    static const char *const names[] = {"allow", "drop", "reject"};
    static const enum rem_underscores want[] = {REM_UNDERSCORES_ALLOW, REM_UNDERSCORES_DROP,
                                                REM_UNDERSCORES_REJECT};
    for (size_t i = 0; i < 3; i++) {
        char yaml[80];
        snprintf(yaml, sizeof(yaml), "limits: { headers_with_underscores: %s }\n", names[i]);
        struct rem_config *cfg = load_string_ok(yaml);
        assert_int_equal(cfg->limits.headers_with_underscores, want[i]);
        rem_config_unref(cfg);
    }
    expect_string_errors("limits:\n  headers_with_underscores: Drop\n",
                         (const char *const[]){"t.yaml:2:29: bad value \"Drop\" for "
                                               "\"headers_with_underscores\" (expected allow, "
                                               "drop or reject)",
                                               NULL});
    expect_string_errors("limits: { headers_with_underscores: off }\n",
                         (const char *const[]){"t.yaml:1:37: bad value \"off\" for "
                                               "\"headers_with_underscores\" (expected allow, "
                                               "drop or reject)",
                                               NULL});
    expect_string_errors("limits: { headers_with_underscores: [drop] }\n",
                         (const char *const[]){"t.yaml:1:37: expected a scalar for "
                                               "\"headers_with_underscores\", got a sequence",
                                               NULL});
}

static void test_references_and_duplicates(void **state)
{
    expect_file_errors(
        CONFIGS "bad_refs.yaml",
        (const char *const[]){
            CONFIGS "bad_refs.yaml:4:11: duplicate listener name \"a\" (first at 2:11)",
            CONFIGS "bad_refs.yaml:5:14: address 0.0.0.0:8000 is already used by listener \"a\"",
            CONFIGS "bad_refs.yaml:8:16: upstream \"app\" has no endpoints",
            CONFIGS "bad_refs.yaml:9:11: duplicate upstream name \"app\" (first at 7:11)",
            CONFIGS "bad_refs.yaml:11:5: upstream \"lonely\" has no endpoints",
            CONFIGS "bad_refs.yaml:14:15: unknown upstream \"nope\" in route \"r1\"",
            CONFIGS "bad_refs.yaml:15:37: \"path\" and \"path_prefix\" are mutually exclusive",
            CONFIGS "bad_refs.yaml:16:11: duplicate route name \"r1\" (first at 13:11)",
            CONFIGS "bad_refs.yaml:18:5: missing key \"upstream\" in route",
            CONFIGS "bad_refs.yaml:18:11: bad name \"bad name\" (expected letters, digits, '-', "
                    "'_' or '.')",
            NULL,
        });
    /* The admin default collides with a listener: reported at the listener. */
    expect_string_errors(
        "listeners: [{ name: a, address: \"0.0.0.0:9090\" }]\n",
        (const char *const[]){"t.yaml:1:33: address 0.0.0.0:9090 is already used by admin", NULL});
    /* Port 0 never collides. */
    rem_config_unref(load_string_ok("listeners:\n"
                                    "  - { name: a, address: \"127.0.0.1:0\" }\n"
                                    "  - { name: b, address: \"127.0.0.1:0\" }\n"));
    /* Regression (found by fuzzing): a nameless first upstream and no routes. */
    expect_string_errors(
        "upstreams:\n  - endpoints: [\"a:1\"]\n",
        (const char *const[]){"t.yaml:2:5: missing key \"name\" in upstream", NULL});
    expect_string_errors("listeners:\n  - address: \"0.0.0.0:1\"\n  - name: b\n",
                         (const char *const[]){
                             "t.yaml:2:5: missing key \"name\" in listener",
                             "t.yaml:3:5: missing key \"address\" in listener",
                             NULL,
                         });
}

static void test_empty_sections(void **state)
{
    expect_file_errors(CONFIGS "bad_empty_listeners.yaml",
                       (const char *const[]){
                           CONFIGS "bad_empty_listeners.yaml:1:12: \"listeners\" must not be empty",
                           CONFIGS "bad_empty_listeners.yaml:2:12: \"upstreams\" must not be empty",
                           CONFIGS "bad_empty_listeners.yaml:3:9: \"routes\" must not be empty "
                                   "(leave it out for one route to the first upstream)",
                           NULL,
                       });
    expect_string_errors(
        "upstreams:\n  - name: a\n    endpoints:\n",
        (const char *const[]){"t.yaml:3:15: upstream \"a\" has no endpoints", NULL});
    expect_string_errors("routes: [{ name: r, upstream: app, match: { methods: [] } }]\n",
                         (const char *const[]){"t.yaml:1:54: \"methods\" must not be empty "
                                               "(leave it out to match any method)",
                                               NULL});
}

static void test_yaml_syntax_errors(void **state)
{
    expect_file_errors(CONFIGS "bad_syntax.yaml",
                       (const char *const[]){
                           CONFIGS "bad_syntax.yaml:5:1: YAML syntax error: found unexpected end "
                                   "of stream (while scanning a quoted scalar at 3:14)",
                           NULL,
                       });
    expect_file_errors(CONFIGS "bad_indent.yaml",
                       (const char *const[]){
                           CONFIGS "bad_indent.yaml:3:2: YAML syntax error: did not find "
                                   "expected key (while parsing a block mapping at 1:1)",
                           NULL,
                       });
    /* Reader errors carry a byte offset; the message still gives line and column. */
    expect_string_errors(
        "log:\n  level: \xff\n",
        (const char *const[]){"t.yaml:2:10: YAML syntax error: invalid leading UTF-8 octet", NULL});
    expect_string_errors(
        "log: *nope\n",
        (const char *const[]){"t.yaml:1:6: YAML syntax error: found undefined alias", NULL});
    expect_file_errors(CONFIGS "bad_two_docs.yaml",
                       (const char *const[]){
                           CONFIGS "bad_two_docs.yaml:3:1: only one YAML document is allowed",
                           NULL,
                       });
}

static void test_too_many_errors(void **state)
{
    char *yaml = malloc(200 * 16);
    struct rem_config_diag diag = {0};
    size_t off = 0;

    assert_non_null(yaml);
    for (int i = 0; i < 150; i++)
        off += (size_t)snprintf(yaml + off, 200 * 16 - off, "k%d: 1\n", i);
    assert_null(rem_config_load_string(yaml, "t.yaml", &diag));
    assert_int_equal(diag.n, 101);
    assert_string_equal(diag.msgs[0], "t.yaml:1:1: unknown key \"k0\" at top level");
    assert_string_equal(diag.msgs[99], "t.yaml:100:1: unknown key \"k99\" at top level");
    assert_string_equal(diag.msgs[100], "t.yaml: too many errors, giving up after 100");
    rem_config_diag_dispose(&diag);
    free(yaml);
}

/* Aliases let a small file name one big node many times; the loader bounds its work. */
static void test_alias_amplification(void **state)
{
    size_t cap = 64 * 1024, off = 0;
    char *yaml = malloc(cap);
    struct rem_config_diag diag = {0};

    assert_non_null(yaml);
    off += (size_t)snprintf(yaml + off, cap - off,
                            "routes:\n  - name: r0\n    upstream: app\n"
                            "    match:\n      methods: &m [");
    for (int i = 0; i < 2000; i++)
        off += (size_t)snprintf(yaml + off, cap - off, "%sGET", i ? "," : "");
    off += (size_t)snprintf(yaml + off, cap - off, "]\n");
    for (int i = 1; i < 1000; i++)
        off += (size_t)snprintf(yaml + off, cap - off,
                                "  - {name: r%d, upstream: app, "
                                "match: {methods: *m}}\n",
                                i);
    assert_true(off < cap);
    assert_null(rem_config_load_string(yaml, "t.yaml", &diag));
    assert_true(diag.n >= 1);
    assert_non_null(strstr(diag.msgs[0], "document too large (too many nodes after alias "
                                         "expansion)"));
    rem_config_diag_dispose(&diag);
    free(yaml);
}

/* ---- value parsers ------------------------------------------------------------------------ */

static void test_parse_duration(void **state)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {
        {"0", 0},
        {"0ms", 0},
        {"0s", 0},
        {"250ms", 250},
        {"2s", 2000},
        {"1m", 60000},
        {"1h", 3600000},
        {"007s", 7000},
        {"18446744073709551615ms", UINT64_MAX},
        {"5124095576030h", 5124095576030ULL * 3600000ULL},
    };
    static const char *const bad[] = {
        "",
        "10",
        "s",
        "ms",
        "-1s",
        "+1s",
        " 1s",
        "1s ",
        "1 s",
        "1.5s",
        "1S",
        "1sec",
        "1d",
        "1ms2",
        "0x10s",
        "1e3ms",
        "18446744073709551616ms", /* digits overflow */
        "18446744073709551615s",  /* unit overflow */
        "5124095576031h",
    };
    uint64_t v;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 12345;
        if (rem_parse_duration_ms(good[i].s, &v) != 0)
            fail_msg("rejected \"%s\"", good[i].s);
        assert_int_equal(v, good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 12345;
        if (rem_parse_duration_ms(bad[i], &v) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(v, 12345); /* untouched on error */
    }
    assert_int_equal(rem_parse_duration_ms(NULL, &v), -1);
    assert_int_equal(rem_parse_duration_ms("1s", NULL), -1);
}

static void test_parse_size(void **state)
{
    static const struct {
        const char *s;
        uint64_t bytes;
    } good[] = {
        {"0", 0},
        {"512", 512},
        {"7B", 7},
        {"64KiB", 65536},
        {"1MiB", 1048576},
        {"1GiB", 1073741824},
        {"10KB", 10000},
        {"2MB", 2000000},
        {"3GB", 3000000000ULL},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183GiB", 17179869183ULL << 30},
    };
    static const char *const bad[] = {
        "",
        "KiB",
        "64kib",
        "64kb",
        "64 KiB",
        "64KiB ",
        "-1",
        "+1",
        "1.5MiB",
        "1TiB",
        "1K",
        "1KiBB",
        "0x10",
        "18446744073709551616",
        "17179869184GiB",
        "18446744073709552KB",
    };
    uint64_t v;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 12345;
        if (rem_parse_size_bytes(good[i].s, &v) != 0)
            fail_msg("rejected \"%s\"", good[i].s);
        assert_int_equal(v, good[i].bytes);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 12345;
        if (rem_parse_size_bytes(bad[i], &v) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(v, 12345);
    }
    assert_int_equal(rem_parse_size_bytes(NULL, &v), -1);
    assert_int_equal(rem_parse_size_bytes("1", NULL), -1);
}

static void test_parse_seconds(void **state)
{
    static const struct {
        const char *s;
        double v;
    } good[] = {
        {"0.005", 0.005}, {"1", 1},          {"2.5", 2.5},      {"1e-3", 0.001},   {"1E3", 1000},
        {".5", 0.5},      {"5.", 5},         {"+1", 1},         {"-1", -1},        {"0", 0},
        {"5ms", 0.005},   {"0.5ms", 0.0005}, {"2.5ms", 0.0025}, {"0.1ms", 0.0001}, {"0ms", 0},
        {"2s", 2},        {"1.5s", 1.5},     {"007s", 7},       {"1m", 60},        {"2h", 7200},
    };
    static const char *const bad[] = {
        "",       "abc", "inf",  "+Inf", ".inf",  "-inf",   "nan",  "NaN",    "0x10",
        "0x1p-3", " 1",  "1 ",   "1 s",  "1e999", "-1e999", "1e",   "e3",     ".",
        "+",      "ms",  "s",    "-5ms", "+5ms",  "1e-3ms", "1.ms", ".5ms",   "1.5.2ms",
        "5us",    "5S",  "5sec", "1,5",  "1.5.2", "1d",     "1s2",  "1e999h", "1_000",
    };
    char longer[128];
    double v;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 12345;
        if (rem_parse_seconds(good[i].s, &v) != 0)
            fail_msg("rejected \"%s\"", good[i].s);
        if (v != good[i].v)
            fail_msg("\"%s\" is %.17g, want %.17g", good[i].s, v, good[i].v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 12345;
        if (rem_parse_seconds(bad[i], &v) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_true(v == 12345); /* untouched on error */
    }
    /* Up to 60 characters before the unit; an overflowing plain number is refused. */
    memset(longer, '9', 60);
    memcpy(longer + 60, "ms", 3);
    assert_int_equal(rem_parse_seconds(longer, &v), 0);
    assert_true(v > 9.99e56 && v < 1.01e57);
    memset(longer, '9', 61);
    memcpy(longer + 61, "h", 2);
    assert_int_equal(rem_parse_seconds(longer, &v), -1);
    memset(longer, '9', 120);
    memcpy(longer + 120, "e300", 5);
    assert_int_equal(rem_parse_seconds(longer, &v), -1);
    assert_int_equal(rem_parse_seconds(NULL, &v), -1);
    assert_int_equal(rem_parse_seconds("1", NULL), -1);
}

static void test_parse_sockaddr(void **state)
{
    static const struct {
        const char *s;
        int family;
        const char *str;
    } good[] = {
        {"0.0.0.0:8000", AF_INET, "0.0.0.0:8000"},
        {"127.0.0.1:0", AF_INET, "127.0.0.1:0"},
        {"10.1.2.3:65535", AF_INET, "10.1.2.3:65535"},
        {"*:8000", AF_INET, "0.0.0.0:8000"},
        {"localhost:8000", AF_INET, "127.0.0.1:8000"},
        {"[::1]:8000", AF_INET6, "[::1]:8000"},
        {"[::]:8000", AF_INET6, "[::]:8000"},
        {"[2001:db8::1]:443", AF_INET6, "[2001:db8::1]:443"},
        {"[::ffff:1.2.3.4]:80", AF_INET6, "[::ffff:1.2.3.4]:80"},
    };
    static const char *const bad[] = {
        "",
        "0.0.0.0",
        "0.0.0.0:",
        ":8000",
        "0.0.0.0:65536",
        "0.0.0.0:123456",
        "0.0.0.0:-1",
        "0.0.0.0:+80",
        "0.0.0.0:80x",
        "0.0.0.0: 80",
        "example.com:80",
        "::1:80",
        "[::1]80",
        "[::1]",
        "[::1",
        "[]:80",
        "[1.2.3.4]:80",
        "1.2.3:80",
        "256.1.1.1:80",
        "[fe80::1%eth0]:80",
        "*.*:80",
        "LOCALHOST:80",
    };
    struct rem_sockaddr a;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (rem_parse_sockaddr(good[i].s, &a) != 0)
            fail_msg("rejected \"%s\"", good[i].s);
        assert_int_equal(a.ss.ss_family, good[i].family);
        assert_int_equal(a.len, good[i].family == AF_INET ? sizeof(struct sockaddr_in)
                                                          : sizeof(struct sockaddr_in6));
        assert_addr(&a, good[i].str);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (rem_parse_sockaddr(bad[i], &a) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(rem_parse_sockaddr(NULL, &a), -1);
    assert_int_equal(rem_parse_sockaddr("1.2.3.4:1", NULL), -1);
}

static void test_parse_hostport(void **state)
{
    static const struct {
        const char *s;
        const char *host;
        uint16_t port;
    } good[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080},
        {"app:1", "app", 1},
        {"app.default.svc.cluster.local:65535", "app.default.svc.cluster.local", 65535},
        {"My-Host_1.example.:80", "My-Host_1.example.", 80},
        {"[::1]:443", "::1", 443},
        {"[2001:db8::2]:8443", "2001:db8::2", 8443},
    };
    static const char *const bad[] = {
        "",          "app",    "app:",      ":80",     "app:0",   "app:65536", "app:-1",
        "app:80:90", "::1:80", "[::1]",     "[::1]:0", "[zz]:80", "a b:80",    "*:80",
        "a..b:80",   ".a:80",  "[::1]x:80", "app:8o",  "a/b:80",  "[]:80",
    };
    char *host;
    uint16_t port;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        host = NULL;
        if (rem_parse_hostport(good[i].s, &host, &port) != 0)
            fail_msg("rejected \"%s\"", good[i].s);
        assert_string_equal(host, good[i].host);
        assert_int_equal(port, good[i].port);
        free(host);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        host = NULL;
        if (rem_parse_hostport(bad[i], &host, &port) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_null(host);
    }
    assert_int_equal(rem_parse_hostport(NULL, &host, &port), -1);
    assert_int_equal(rem_parse_hostport("a:1", NULL, &port), -1);
    assert_int_equal(rem_parse_hostport("a:1", &host, NULL), -1);

    /* A 253-byte name is the longest DNS allows (RFC 1035 section 2.3.4): three 63-byte
     * labels and one of 61, besides a final dot; one byte more is too long. */
    char name[300];

    memset(name, 'a', 253);
    name[63] = name[127] = name[191] = '.';
    memcpy(name + 253, ":80", 4);
    host = NULL;
    assert_int_equal(rem_parse_hostport(name, &host, &port), 0);
    assert_int_equal(strlen(host), 253);
    free(host);
    memcpy(name + 253, ".:80", 5);
    assert_int_equal(rem_parse_hostport(name, &host, &port), 0);
    assert_int_equal(strlen(host), 254);
    free(host);
    memset(name, 'a', 254);
    name[63] = name[127] = name[191] = '.';
    memcpy(name + 254, ":80", 4);
    host = NULL;
    assert_int_equal(rem_parse_hostport(name, &host, &port), -1);
    assert_null(host);
}

static void test_parse_endpoint(void **state)
{
    static const struct {
        const char *s;
        const char *host;
        uint16_t port;
        bool is_name;
    } good[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080, false},
        {"[::1]:443", "::1", 443, false},
        {"[::ffff:1.2.3.4]:80", "::ffff:1.2.3.4", 80, false},
        {"localhost:80", "localhost", 80, true},
        {"LOCALHOST:80", "LOCALHOST", 80, true},
        {"app:1", "app", 1, true},
        {"a.0xg:1", "a.0xg", 1, true},
        {"1a:1", "1a", 1, true},
        {"1-2:1", "1-2", 1, true},
        {"_svc._tcp.example:1", "_svc._tcp.example", 1, true},
    };
    static const struct {
        const char *s;
        const char *why;
    } bad[] = {
        {"app", "expected host:port or [v6]:port"},
        {"::1:80", "expected host:port or [v6]:port"},
        {"[::1]80", "expected host:port or [v6]:port"},
        {"app:0", "port must be 1-65535"},
        {"app:", "port must be 1-65535"},
        {"app:08080x", "port must be 1-65535"},
        {"[zz]:80", "not an IPv6 address in brackets"},
        {"[]:80", "not an IPv6 address in brackets"},
        {":80", "missing host"},
        {".a:80", "empty label in host name"},
        {"a..b:80", "empty label in host name"},
        {".:80", "empty label in host name"},
        {"a b:80", "a host name takes letters, digits, '-', '_' and '.'"},
        {"*:80", "a host name takes letters, digits, '-', '_' and '.'"},
        {"h\xc3\xa9.example:80", "a host name takes letters, digits, '-', '_' and '.'"},
        {"1.2.3:80", "not an IPv4 address, and a host name cannot end in a numeric label"},
        {"a.1:80", "not an IPv4 address, and a host name cannot end in a numeric label"},
        {"a.0x:80", "not an IPv4 address, and a host name cannot end in a numeric label"},
        {"a.0x1F.:80", "not an IPv4 address, and a host name cannot end in a numeric label"},
        {"1.2.3.04:80", "not an IPv4 address, and a host name cannot end in a numeric label"},
    };
    struct rem_cfg_endpoint e;
    const char *why;
    char name[300];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        memset(&e, 0, sizeof(e));
        why = "untouched";
        if (rem_parse_endpoint(good[i].s, &e, &why) != 0)
            fail_msg("rejected \"%s\": %s", good[i].s, why);
        assert_string_equal(why, "untouched");
        assert_string_equal(e.host, good[i].host);
        assert_int_equal(e.port, good[i].port);
        if (e.is_name != good[i].is_name)
            fail_msg("\"%s\": is_name %d, want %d", good[i].s, e.is_name, good[i].is_name);
        free(e.host);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        e = (struct rem_cfg_endpoint){.host = NULL, .port = 7, .is_name = true};
        why = NULL;
        if (rem_parse_endpoint(bad[i].s, &e, &why) != -1)
            fail_msg("accepted \"%s\"", bad[i].s);
        if (why == NULL || strcmp(why, bad[i].why) != 0)
            fail_msg("\"%s\": why \"%s\", want \"%s\"", bad[i].s, why ? why : "(null)", bad[i].why);
        /* untouched on error */
        assert_null(e.host);
        assert_int_equal(e.port, 7);
        assert_true(e.is_name);
    }
    /* why is optional; s and out are required. */
    assert_int_equal(rem_parse_endpoint("a b:1", &e, NULL), -1);
    assert_int_equal(rem_parse_endpoint(NULL, &e, &why), -1);
    assert_int_equal(rem_parse_endpoint("a:1", NULL, &why), -1);

    /* A label of 63 bytes is the longest (RFC 1035 section 2.3.4). */
    memset(name, 'a', 63);
    memcpy(name + 63, ".b:80", 6);
    assert_int_equal(rem_parse_endpoint(name, &e, &why), 0);
    assert_true(e.is_name);
    free(e.host);
    memset(name, 'a', 64);
    memcpy(name + 64, ".b:80", 6);
    assert_int_equal(rem_parse_endpoint(name, &e, &why), -1);
    assert_string_equal(why, "label longer than 63 bytes in host name");
    /* 254 bytes in labels of at most 63. */
    memset(name, 'a', 254);
    name[63] = name[127] = name[191] = '.';
    memcpy(name + 254, ":80", 4);
    assert_int_equal(rem_parse_endpoint(name, &e, &why), -1);
    assert_string_equal(why, "host name longer than 253 bytes");
}

static void test_sockaddr_str(void **state)
{
    struct rem_sockaddr a;
    char buf[64];

    assert_int_equal(rem_parse_sockaddr("[2001:db8::1]:65535", &a), 0);
    assert_int_equal(rem_sockaddr_str(&a, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "[2001:db8::1]:65535");
    /* Exactly fits: 19 characters and the NUL. */
    assert_int_equal(rem_sockaddr_str(&a, buf, 20), 0);
    assert_int_equal(rem_sockaddr_str(&a, buf, 19), -1);
    assert_int_equal(rem_sockaddr_str(&a, buf, 0), -1);
    assert_int_equal(rem_sockaddr_str(NULL, buf, sizeof(buf)), -1);
    memset(&a, 0, sizeof(a));
    a.ss.ss_family = AF_UNIX;
    assert_int_equal(rem_sockaddr_str(&a, buf, sizeof(buf)), -1);
}

/* ---- tunnels ------------------------------------------------------------------------------ */

static void test_tunnels(void **state)
{
    (void)state;
    struct rem_config *cfg = load_string_ok(
        "upstreams: [{ name: a, endpoints: [\"a:1\"] }]\n"
        "listeners: [{ name: l, address: \"127.0.0.1:0\", http2: {enable_connect_protocol: "
        "false} }]\n"
        "routes:\n"
        "  - { name: d, upstream: a }\n"
        "  - { name: u, upstream: a, upgrades: [WebSocket, foo], connect: true,\n"
        "      tunnel_idle_timeout: 500ms }\n"
        "  - { name: n, upstream: a, upgrades: [] }\n");
    const struct rem_cfg_route *d = &cfg->routes[0], *u = &cfg->routes[1], *n = &cfg->routes[2];
    assert_false(cfg->listeners[0].http2.enable_connect_protocol);
    assert_true(cfg->admin.http2.enable_connect_protocol); /* left out: on */
    /* Defaults: websocket only, no CONNECT, an hour. */
    assert_false(d->upgrades_set);
    assert_false(d->connect);
    assert_int_equal(d->tunnel_idle_timeout_ms, 3600000);
    assert_true(rem_route_allows_upgrade(d, "websocket", 9, NULL, NULL));
    assert_true(rem_route_allows_upgrade(d, "WebSocket/13", 12, NULL, NULL));
    assert_false(rem_route_allows_upgrade(d, "foo", 3, NULL, NULL));
    assert_false(rem_route_allows_upgrade(d, "h2c", 3, NULL, NULL));
    /* A list: any listed protocol of the offer; stored lower-case. */
    assert_true(u->connect);
    assert_int_equal(u->tunnel_idle_timeout_ms, 500);
    assert_string_equal(u->upgrades[0], "websocket");
    assert_true(rem_route_allows_upgrade(u, "bar, Foo/2", 10, NULL, NULL));
    assert_true(rem_route_allows_upgrade(u, " h2c ,websocket", 15, NULL, NULL));
    assert_false(rem_route_allows_upgrade(u, "bar, h2c", 8, NULL, NULL));
    assert_false(rem_route_allows_upgrade(u, "", 0, NULL, NULL));
    /* The protocol picked is the first allowed one of the offer, with its version. */
    size_t off = 99, len = 99;
    assert_true(rem_route_allows_upgrade(u, "h2c, bar,  Foo/2 , websocket", 28, &off, &len));
    assert_int_equal(off, 11);
    assert_int_equal(len, 5); /* "Foo/2" */
    /* [] tunnels nothing. */
    assert_true(n->upgrades_set);
    assert_false(rem_route_allows_upgrade(n, "websocket", 9, NULL, NULL));
    rem_config_unref(cfg);

    expect_string_errors(
        "upstreams: [{ name: a, endpoints: [\"a:1\"] }, { name: b, protocol: h2c, endpoints: "
        "[\"b:1\"] }]\n"
        "routes:\n"
        "  - { name: r, upstream: a, upgrades: [h2c, \"x y\", web/13] }\n"
        "  - { name: s, upstream: b, connect: true }\n"
        "  - { name: t, upstream: a, connect: yes, tunnel_idle_timeout: 1.5s }\n",
        (const char *const[]){
            "t.yaml:3:40: upgrade protocol \"h2c\" cannot be tunnelled (remora speaks h2c by "
            "prior knowledge)",
            "t.yaml:3:45: bad upgrade protocol \"x y\" (expected a token like websocket)",
            "t.yaml:3:52: bad upgrade protocol \"web/13\" (expected a token like websocket)",
            "t.yaml:4:26: route \"s\" has \"connect: true\": its upstream must have protocol "
            "http1 (a CONNECT tunnel is raw bytes to an endpoint)",
            "t.yaml:5:38: expected a boolean (true or false) for \"connect\", got \"yes\"",
            "t.yaml:5:64: bad duration \"1.5s\" for \"tunnel_idle_timeout\" (expected an "
            "integer with ms, s, m or h, or 0)",
            NULL,
        });
}

/* limits.request_body_timeout: off by default, a duration, 0 is off. */
static void test_request_body_timeout(void **state)
{
    struct rem_config *cfg = load_string_ok("workers: 1\n");
    assert_int_equal(cfg->limits.request_body_timeout_ms, 0);
    rem_config_unref(cfg);
    cfg = load_string_ok("limits: { request_body_timeout: 30s }\n");
    assert_int_equal(cfg->limits.request_body_timeout_ms, 30000);
    rem_config_unref(cfg);
    cfg = load_string_ok("limits: { request_body_timeout: 0 }\n");
    assert_int_equal(cfg->limits.request_body_timeout_ms, 0);
    rem_config_unref(cfg);
    expect_string_errors(
        "limits: { request_body_timeout: 1.5s, request_header_timeout: 2s }\n",
        (const char *const[]){"t.yaml:1:33: bad duration \"1.5s\" for \"request_body_timeout\" "
                              "(expected an integer with ms, s, m or h, or 0)",
                              NULL});
    expect_string_errors("limits: { request_body_timeout: [1s] }\n",
                         (const char *const[]){"t.yaml:1:33: expected a scalar for "
                                               "\"request_body_timeout\", got a sequence",
                                               NULL});
}

/* unix:/path and unix:@name: sun_path holds 108 bytes, the NUL of a path or the leading NUL of
 * an abstract name included. */
static void test_parse_unix(void **state)
{
    struct rem_sockaddr a;
    const struct sockaddr_un *sun = (const struct sockaddr_un *)&a.ss;
    const char *why;
    char s[200], buf[200];
    size_t off = offsetof(struct sockaddr_un, sun_path);

    assert_int_equal(rem_parse_unix("unix:/run/app.sock", &a, &why), 0);
    assert_int_equal(a.ss.ss_family, AF_UNIX);
    assert_string_equal(sun->sun_path, "/run/app.sock");
    assert_int_equal(a.len, off + strlen("/run/app.sock") + 1);
    assert_addr(&a, "unix:/run/app.sock");
    assert_int_equal(rem_parse_unix("unix:@app", &a, &why), 0);
    assert_int_equal(sun->sun_path[0], '\0');
    assert_memory_equal(sun->sun_path + 1, "app", 3);
    assert_int_equal(a.len, off + 4);
    assert_addr(&a, "unix:@app");
    /* Not unix: 1, untouched. */
    memset(&a, 0x55, sizeof(a));
    assert_int_equal(rem_parse_unix("127.0.0.1:80", &a, &why), 1);
    assert_int_equal(a.len, 0x55555555);
    /* rem_parse_sockaddr takes both forms. */
    assert_int_equal(rem_parse_sockaddr("unix:/x", &a), 0);
    assert_int_equal(a.ss.ss_family, AF_UNIX);
    assert_int_equal(rem_parse_sockaddr("unix:x", &a), -1);

    struct {
        const char *s, *why;
    } bad[] = {
        {"unix:", "a Unix socket path must be absolute: unix:/path, or unix:@name"},
        {"unix:run/app.sock", "a Unix socket path must be absolute: unix:/path, or unix:@name"},
        {"unix:@", "an abstract socket needs a name after \"unix:@\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (rem_parse_unix(bad[i].s, &a, &why) != -1)
            fail_msg("accepted \"%s\"", bad[i].s);
        assert_non_null(why);
        assert_string_equal(why, bad[i].why);
    }
    /* A 107-byte path fits, 108 does not. */
    memcpy(s, "unix:/", 6);
    memset(s + 6, 'a', 106);
    s[112] = '\0';
    assert_int_equal(rem_parse_unix(s, &a, &why), 0);
    assert_int_equal(a.len, sizeof(struct sockaddr_un));
    assert_int_equal(rem_sockaddr_str(&a, buf, sizeof(buf)), 0);
    assert_string_equal(buf, s);
    s[112] = 'a';
    s[113] = '\0';
    assert_int_equal(rem_parse_unix(s, &a, &why), -1);
    assert_string_equal(why, "a Unix socket path is at most 107 bytes");
    /* An abstract name of 107 bytes fits, 108 does not. */
    memcpy(s, "unix:@", 6);
    memset(s + 6, 'b', 107);
    s[113] = '\0';
    assert_int_equal(rem_parse_unix(s, &a, &why), 0);
    assert_int_equal(a.len, sizeof(struct sockaddr_un));
    assert_int_equal(rem_sockaddr_str(&a, buf, sizeof(buf)), 0);
    assert_string_equal(buf, s);
    s[113] = 'b';
    s[114] = '\0';
    assert_int_equal(rem_parse_unix(s, &a, &why), -1);
    assert_string_equal(why, "an abstract socket name is at most 107 bytes");
}

static void test_unix_endpoints_and_listeners(void **state)
{
    struct rem_cfg_endpoint e;
    const char *why = NULL;
    char buf[200];

    assert_int_equal(rem_parse_endpoint("unix:/run/app.sock", &e, &why), 0);
    assert_true(e.is_unix);
    assert_false(e.is_name);
    assert_string_equal(e.host, "unix:/run/app.sock");
    assert_int_equal(e.port, 0);
    assert_int_equal(rem_cfg_endpoint_str(&e, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "unix:/run/app.sock");
    free(e.host);
    assert_int_equal(rem_parse_endpoint("unix:rel.sock", &e, &why), -1);
    assert_string_equal(why, "a Unix socket path must be absolute: unix:/path, or unix:@name");
    {
        char *host = NULL;
        uint16_t port;
        assert_int_equal(rem_parse_hostport("unix:/x", &host, &port), -1);
        assert_null(host);
    }

    struct rem_config *cfg =
        load_string_ok("listeners:\n"
                       "  - {name: a, address: \"unix:/run/r.sock\", mode: \"0660\"}\n"
                       "  - {name: b, address: \"unix:@r\"}\n"
                       "  - {name: c, address: \"unix:/run/c.sock\"}\n"
                       "upstreams: [{name: app, endpoints: [\"unix:@app\", \"127.0.0.1:80\"]}]\n");
    assert_int_equal(cfg->listeners[0].mode, 0660);
    assert_int_equal(cfg->listeners[2].mode, REM_DEF_UNIX_MODE);
    assert_addr(&cfg->listeners[1].addr, "unix:@r");
    assert_true(cfg->upstreams[0].endpoints[0].is_unix);
    assert_false(cfg->upstreams[0].endpoints[1].is_unix);
    rem_config_unref(cfg);

    expect_string_errors(
        "listeners:\n"
        "  - {name: a, address: \"unix:run/r.sock\"}\n"
        "  - {name: b, address: \"unix:/run/r.sock\", mode: \"0999\"}\n"
        "  - {name: c, address: \"unix:@r\", mode: \"0600\"}\n"
        "  - {name: d, address: \"127.0.0.1:1\", mode: \"0600\"}\n"
        "  - {name: e, address: \"unix:/run/r.sock\"}\n"
        "admin: {address: \"unix:/run/admin.sock\"}\n",
        (const char *const[]){
            "t.yaml:2:24: bad address \"unix:run/r.sock\" (a Unix socket path must be absolute: "
            "unix:/path, or unix:@name)",
            "t.yaml:3:50: bad mode \"0999\" (expected octal permissions such as \"0660\")",
            "t.yaml:4:41: \"mode\" does not apply to an abstract socket (unix:@name)",
            "t.yaml:5:45: \"mode\" needs a unix:/path address",
            "t.yaml:6:24: address unix:/run/r.sock is already used by listener \"b\"",
            "t.yaml:7:18: the admin listener takes a host:port, not a Unix socket",
            NULL,
        });
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_config),
        cmocka_unit_test(test_empty_file_is_all_defaults),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_diag_dispose),
        cmocka_unit_test(test_sample_config),
        cmocka_unit_test(test_sample_dns_block),
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_upstreams_without_routes),
        cmocka_unit_test(test_routes_without_upstreams),
        cmocka_unit_test(test_scalar_forms),
        cmocka_unit_test(test_request_body_timeout),
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_bucket_errors),
        cmocka_unit_test(test_health_check),
        cmocka_unit_test(test_health_check_errors),
        cmocka_unit_test(test_admission),
        cmocka_unit_test(test_admission_errors),
        cmocka_unit_test(test_http2),
        cmocka_unit_test(test_tunnels),
        cmocka_unit_test(test_http2_errors),
        cmocka_unit_test(test_upstream_protocols),
        cmocka_unit_test(test_dns),
        cmocka_unit_test(test_dns_errors),
        cmocka_unit_test(test_upstream_lb),
        cmocka_unit_test(test_endpoint_names),
        cmocka_unit_test(test_env_expansion),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_file_not_found),
        cmocka_unit_test(test_unknown_and_duplicate_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_max_tls_handshakes_errors),
        cmocka_unit_test(test_headers_with_underscores),
        cmocka_unit_test(test_references_and_duplicates),
        cmocka_unit_test(test_empty_sections),
        cmocka_unit_test(test_yaml_syntax_errors),
        cmocka_unit_test(test_too_many_errors),
        cmocka_unit_test(test_alias_amplification),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_seconds),
        cmocka_unit_test(test_parse_sockaddr),
        cmocka_unit_test(test_parse_hostport),
        cmocka_unit_test(test_parse_endpoint),
        cmocka_unit_test(test_sockaddr_str),
        cmocka_unit_test(test_parse_unix),
        cmocka_unit_test(test_unix_endpoints_and_listeners),
        cmocka_unit_test(test_route_host_trailing_dot),
        cmocka_unit_test(test_route_client_san),
        cmocka_unit_test(test_listener_client_ca),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
