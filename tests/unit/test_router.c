/* SPDX-License-Identifier: Apache-2.0
 * test_router: unit tests for router.h over hand-built configurations: host (exact, wildcard,
 * port, case, trailing dot, IPv6 literal), path (exact, prefix, query ignored), absolute-form
 * targets, method lists and first-match-wins order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "config.h"
#include "router.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* A route's match as config_parse leaves it: hosts lower-cased, wildcards stored as ".suffix". */
struct route_spec {
    const char *name;
    const char *host;
    bool wildcard;
    const char *path;
    const char *path_prefix;
    const char *methods[4]; /* NULL-terminated */
};

#define MAX_ROUTES 8

struct fixture {
    struct rem_config cfg;
    struct rem_cfg_route routes[MAX_ROUTES];
    char *methods[MAX_ROUTES][4];
};

/* Casting away const is safe: the router only reads the configuration. */
static void build(struct fixture *f, const struct route_spec *specs, size_t n)
{
    assert_true(n <= MAX_ROUTES);
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < n; i++) {
        struct rem_cfg_route *r = &f->routes[i];

        r->name = (char *)specs[i].name;
        r->host = (char *)specs[i].host;
        r->host_wildcard = specs[i].wildcard;
        r->path = (char *)specs[i].path;
        r->path_prefix = (char *)specs[i].path_prefix;
        for (size_t m = 0; m < 4 && specs[i].methods[m] != NULL; m++)
            f->methods[i][r->n_methods++] = (char *)specs[i].methods[m];
        r->methods = r->n_methods ? f->methods[i] : NULL;
        r->upstream = "app";
        r->upstream_idx = i;
    }
    f->cfg.routes = f->routes;
    f->cfg.n_routes = n;
}

/* Name of the matched route, "(none)" when none matches. host may be NULL. */
static const char *match(const struct fixture *f, const char *method, const char *host,
                         const char *target)
{
    const struct rem_cfg_route *r = rem_router_match(
        &f->cfg, method, strlen(method), host, host ? strlen(host) : 0, target, strlen(target));

    return r ? r->name : "(none)";
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_empty_config_matches_nothing(void **state)
{
    struct fixture f;

    (void)state;
    build(&f, NULL, 0);
    assert_null(rem_router_match(&f.cfg, "GET", 3, "a", 1, "/", 1));
}

static void test_route_without_match_fields_matches_everything(void **state)
{
    static const struct route_spec specs[] = {{.name = "all"}};
    struct fixture f;

    (void)state;
    build(&f, specs, 1);
    assert_string_equal(match(&f, "GET", "example.com", "/"), "all");
    assert_string_equal(match(&f, "DELETE", NULL, "/x/y?z"), "all");
    assert_string_equal(match(&f, "OPTIONS", "", "*"), "all");
    assert_ptr_equal(rem_router_match(&f.cfg, "GET", 3, NULL, 0, "/", 1), &f.routes[0]);
}

static void test_first_match_wins(void **state)
{
    static const struct route_spec specs[] = {
        {.name = "health", .path = "/healthz"},
        {.name = "api", .path_prefix = "/api/"},
        {.name = "api-v2", .path_prefix = "/api/v2/"}, /* shadowed by "api" */
        {.name = "default", .path_prefix = "/"},
    };
    struct fixture f;

    (void)state;
    build(&f, specs, 4);
    assert_string_equal(match(&f, "GET", "h", "/healthz"), "health");
    assert_string_equal(match(&f, "GET", "h", "/api/v2/users"), "api");
    assert_string_equal(match(&f, "GET", "h", "/api/v1"), "api");
    assert_string_equal(match(&f, "GET", "h", "/other"), "default");
    assert_ptr_equal(rem_router_match(&f.cfg, "GET", 3, "h", 1, "/api/x", 6), &f.routes[1]);
}

static void test_no_match_returns_null(void **state)
{
    static const struct route_spec specs[] = {
        {.name = "a", .host = "a.example.com"},
        {.name = "b", .path_prefix = "/b/"},
    };
    struct fixture f;

    (void)state;
    build(&f, specs, 2);
    assert_null(rem_router_match(&f.cfg, "GET", 3, "c.example.com", 13, "/c", 2));
    assert_string_equal(match(&f, "GET", "c.example.com", "/b"), "(none)");
}

static void test_host_exact(void **state)
{
    static const struct route_spec specs[] = {{.name = "api", .host = "api.example.com"}};
    struct fixture f;

    (void)state;
    build(&f, specs, 1);
    assert_string_equal(match(&f, "GET", "api.example.com", "/"), "api");
    assert_string_equal(match(&f, "GET", "API.Example.COM", "/"), "api");
    assert_string_equal(match(&f, "GET", "api.example.com:8080", "/"), "api");
    assert_string_equal(match(&f, "GET", "api.example.com:", "/"), "api");
    assert_string_equal(match(&f, "GET", "api.example.com.", "/"), "api");
    assert_string_equal(match(&f, "GET", "api.example.com.:443", "/"), "api");

    assert_string_equal(match(&f, "GET", "example.com", "/"), "(none)");
    assert_string_equal(match(&f, "GET", "x.api.example.com", "/"), "(none)");
    assert_string_equal(match(&f, "GET", "api.example.co", "/"), "(none)");
    assert_string_equal(match(&f, "GET", "api.example.com.evil", "/"), "(none)");
    assert_string_equal(match(&f, "GET", "api.example.com..", "/"), "(none)");
    assert_string_equal(match(&f, "GET", "", "/"), "(none)");
    assert_string_equal(match(&f, "GET", NULL, "/"), "(none)");
}

/* The host length is explicit: bytes past it must not take part. */
static void test_host_length_is_respected(void **state)
{
    static const struct route_spec specs[] = {{.name = "a", .host = "a.example.com"}};
    struct fixture f;
    const char *host = "a.example.com.evil";

    (void)state;
    build(&f, specs, 1);
    assert_ptr_equal(rem_router_match(&f.cfg, "GET", 3, host, 13, "/", 1), &f.routes[0]);
    assert_null(rem_router_match(&f.cfg, "GET", 3, host, 12, "/", 1));
}

static void test_host_wildcard(void **state)
{
    static const struct route_spec specs[] = {
        {.name = "wild", .host = ".example.com", .wildcard = true},
    };
    struct fixture f;

    (void)state;
    build(&f, specs, 1);
    assert_string_equal(match(&f, "GET", "a.example.com", "/"), "wild");
    assert_string_equal(match(&f, "GET", "a.b.example.com", "/"), "wild");
    assert_string_equal(match(&f, "GET", "A.EXAMPLE.com:80", "/"), "wild");
    assert_string_equal(match(&f, "GET", "a.example.com.", "/"), "wild");

    /* "*.example.com" needs at least one label in front. */
    assert_string_equal(match(&f, "GET", "example.com", "/"), "(none)");
    assert_string_equal(match(&f, "GET", ".example.com", "/"), "(none)");
    assert_string_equal(match(&f, "GET", "example.com:80", "/"), "(none)");
    assert_string_equal(match(&f, "GET", "badexample.com", "/"), "(none)");
    assert_string_equal(match(&f, "GET", "a.example.org", "/"), "(none)");
    assert_string_equal(match(&f, "GET", NULL, "/"), "(none)");
}

/* "[v6]:port" keeps its brackets; the colons inside them are not a port separator. */
static void test_host_ipv6_literal(void **state)
{
    static const struct route_spec specs[] = {
        {.name = "v6", .host = "[::1]"},
        {.name = "other", .host = "example.com"},
        {.name = "any"},
    };
    struct fixture f;

    (void)state;
    build(&f, specs, 3);
    assert_string_equal(match(&f, "GET", "[::1]:8080", "/"), "v6");
    assert_string_equal(match(&f, "GET", "[::1]", "/"), "v6");
    assert_string_equal(match(&f, "GET", "[::2]:8080", "/"), "any");
    assert_string_equal(match(&f, "GET", "[2001:db8::1]:443", "/"), "any");
}

static void test_path_exact(void **state)
{
    static const struct route_spec specs[] = {{.name = "hz", .path = "/healthz"}};
    struct fixture f;

    (void)state;
    build(&f, specs, 1);
    assert_string_equal(match(&f, "GET", "h", "/healthz"), "hz");
    assert_string_equal(match(&f, "GET", "h", "/healthz?verbose=1"), "hz");
    assert_string_equal(match(&f, "GET", "h", "/healthz?"), "hz");
    assert_string_equal(match(&f, "GET", "h", "/healthz/"), "(none)");
    assert_string_equal(match(&f, "GET", "h", "/healthzz"), "(none)");
    assert_string_equal(match(&f, "GET", "h", "/health"), "(none)");
    /* Paths compare case-sensitively (RFC 3986 6.2.2.1: only scheme and host fold case). */
    assert_string_equal(match(&f, "GET", "h", "/HEALTHZ"), "(none)");
    assert_string_equal(match(&f, "GET", "h", "/x?/healthz"), "(none)");
}

static void test_path_prefix(void **state)
{
    static const struct route_spec specs[] = {{.name = "api", .path_prefix = "/api/"}};
    struct fixture f;

    (void)state;
    build(&f, specs, 1);
    assert_string_equal(match(&f, "GET", "h", "/api/"), "api");
    assert_string_equal(match(&f, "GET", "h", "/api/users/1"), "api");
    assert_string_equal(match(&f, "GET", "h", "/api/users?limit=1"), "api");
    assert_string_equal(match(&f, "GET", "h", "/api"), "(none)");
    assert_string_equal(match(&f, "GET", "h", "/apix/"), "(none)");
    assert_string_equal(match(&f, "GET", "h", "/API/"), "(none)");
    /* The query is cut before prefix matching: "/ap?i/" has path "/ap". */
    assert_string_equal(match(&f, "GET", "h", "/ap?i/"), "(none)");
    assert_string_equal(match(&f, "GET", "h", "/api?/"), "(none)");
}

/* The target length is explicit: a prefix of the buffer is the whole target. */
static void test_target_length_is_respected(void **state)
{
    static const struct route_spec specs[] = {{.name = "hz", .path = "/healthz"}};
    struct fixture f;
    const char *t = "/healthzzz";

    (void)state;
    build(&f, specs, 1);
    assert_ptr_equal(rem_router_match(&f.cfg, "GET", 3, "h", 1, t, 8), &f.routes[0]);
    assert_null(rem_router_match(&f.cfg, "GET", 3, "h", 1, t, 9));
}

/* RFC 9112 3.2.2: in absolute-form the target's authority stands for Host. */
static void test_absolute_form(void **state)
{
    static const struct route_spec specs[] = {
        {.name = "api", .host = "api.example.com", .path_prefix = "/v1/"},
        {.name = "root", .host = "api.example.com", .path = "/"},
        {.name = "other-host", .host = "other.example.com"},
        {.name = "fallback"},
    };
    struct fixture f;

    (void)state;
    build(&f, specs, 4);
    assert_string_equal(match(&f, "GET", NULL, "http://api.example.com/v1/x?q=1"), "api");
    assert_string_equal(match(&f, "GET", NULL, "http://API.example.com:8080/v1/x"), "api");
    /* The authority wins over a different Host header. */
    assert_string_equal(match(&f, "GET", "other.example.com", "http://api.example.com/v1/"), "api");
    assert_string_equal(match(&f, "GET", "api.example.com", "http://other.example.com/v1/"),
                        "other-host");
    /* No path: it stands for "/". */
    assert_string_equal(match(&f, "GET", NULL, "http://api.example.com"), "root");
    assert_string_equal(match(&f, "GET", NULL, "http://api.example.com:80"), "root");
    assert_string_equal(match(&f, "GET", NULL, "https://api.example.com/"), "root");
    /* The query of an absolute-form target is ignored like in origin-form. */
    assert_string_equal(match(&f, "GET", NULL, "http://api.example.com/?x=/v1/"), "root");
    assert_string_equal(match(&f, "GET", NULL, "http://x.example.com/v1/"), "fallback");
    /* Origin-form paths that merely contain "://" are not absolute-form. */
    assert_string_equal(match(&f, "GET", "api.example.com", "/v1/http://x/"), "api");
}

/* RFC 3986 3.2: the authority ends at the first '/', '?' or '#', and path-abempty may be empty,
 * so "http://host?q" is a valid absolute-form target whose host is "host" and path "/". */
static void test_asterisk_form(void **state)
{
    static const struct route_spec specs[] = {
        {.name = "api", .path_prefix = "/api/"},
        {.name = "exact", .path = "/"},
        {.name = "default", .path_prefix = "/"},
    };
    struct fixture f;

    (void)state;
    build(&f, specs, 3);
    /* OPTIONS * (RFC 9112 3.2.4): only a route taking every path matches. */
    assert_string_equal(match(&f, "OPTIONS", "a", "*"), "default");
    build(&f, specs, 2);
    assert_string_equal(match(&f, "OPTIONS", "a", "*"), "(none)");
}

static void test_absolute_form_query_without_path(void **state)
{
    static const struct route_spec specs[] = {
        {.name = "api", .host = "api.example.com"},
        {.name = "fallback"},
    };
    struct fixture f;

    (void)state;
    build(&f, specs, 2);
    assert_string_equal(match(&f, "GET", NULL, "http://api.example.com?x=1"), "api");
    assert_string_equal(match(&f, "GET", NULL, "http://api.example.com:8080?x=1"), "api");
}

static void test_methods(void **state)
{
    static const struct route_spec specs[] = {
        {.name = "read", .path_prefix = "/", .methods = {"GET", "HEAD"}},
        {.name = "write", .path_prefix = "/", .methods = {"POST", "PUT", "PATCH"}},
        {.name = "rest", .host = "rest.example.com"},
    };
    struct fixture f;

    (void)state;
    build(&f, specs, 3);
    assert_string_equal(match(&f, "GET", "h", "/"), "read");
    assert_string_equal(match(&f, "HEAD", "h", "/"), "read");
    assert_string_equal(match(&f, "POST", "h", "/"), "write");
    assert_string_equal(match(&f, "PATCH", "h", "/"), "write");
    assert_string_equal(match(&f, "DELETE", "h", "/"), "(none)");
    assert_string_equal(match(&f, "DELETE", "rest.example.com", "/"), "rest");
    /* RFC 9110 9.1: methods are case-sensitive. */
    assert_string_equal(match(&f, "get", "h", "/"), "(none)");
    /* Whole-token comparison, no prefixes. */
    assert_string_equal(match(&f, "GE", "h", "/"), "(none)");
    assert_string_equal(match(&f, "GETX", "h", "/"), "(none)");
    assert_string_equal(match(&f, "POS", "h", "/"), "(none)");
    /* The method length is explicit. */
    assert_ptr_equal(rem_router_match(&f.cfg, "GETX", 3, "h", 1, "/", 1), &f.routes[0]);
}

/* Every field of a match must hold. */
static void test_all_fields_must_match(void **state)
{
    static const struct route_spec specs[] = {
        {.name = "api",
         .host = "api.example.com",
         .path_prefix = "/api/",
         .methods = {"GET", "POST"}},
        {.name = "fallback", .path_prefix = "/"},
    };
    struct fixture f;

    (void)state;
    build(&f, specs, 2);
    assert_string_equal(match(&f, "GET", "api.example.com", "/api/x"), "api");
    assert_string_equal(match(&f, "PUT", "api.example.com", "/api/x"), "fallback");
    assert_string_equal(match(&f, "GET", "www.example.com", "/api/x"), "fallback");
    assert_string_equal(match(&f, "GET", "api.example.com", "/web/x"), "fallback");
    assert_string_equal(match(&f, "GET", NULL, "/api/x"), "fallback");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_config_matches_nothing),
        cmocka_unit_test(test_route_without_match_fields_matches_everything),
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_no_match_returns_null),
        cmocka_unit_test(test_host_exact),
        cmocka_unit_test(test_host_length_is_respected),
        cmocka_unit_test(test_host_wildcard),
        cmocka_unit_test(test_host_ipv6_literal),
        cmocka_unit_test(test_path_exact),
        cmocka_unit_test(test_path_prefix),
        cmocka_unit_test(test_target_length_is_respected),
        cmocka_unit_test(test_absolute_form),
        cmocka_unit_test(test_asterisk_form),
        cmocka_unit_test(test_absolute_form_query_without_path),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_all_fields_must_match),
    };

    return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
