/* SPDX-License-Identifier: Apache-2.0
 * fuzz_router: rem_router_match on fuzzed method, Host and request-target against a fixed
 * config whose routes use every match kind (exact host, wildcard host, exact path, path prefix,
 * methods, and combinations; no catch-all, so "no route" is reachable). The input is
 * "METHOD\nHOST\nTARGET" (no second line: no Host at all). Besides crashes it checks two rules
 * of the matcher: the host compares case-insensitively (an upper-cased Host picks the same
 * route), and a query never changes the route of an origin-form target. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char YAML[] =
    "listeners:\n"
    "  - name: in\n"
    "    address: \"127.0.0.1:0\"\n"
    "upstreams:\n"
    "  - name: app\n"
    "    endpoints: [\"127.0.0.1:1\"]\n"
    "routes:\n"
    "  - name: exact\n"
    "    match: { host: \"API.Example.com\", path: \"/v1/exact\", methods: [GET, HEAD] }\n"
    "    upstream: app\n"
    "  - name: api\n"
    "    match: { host: \"api.example.com\", path_prefix: \"/v1/\" }\n"
    "    upstream: app\n"
    "  - name: wild\n"
    "    match: { host: \"*.svc.local\", methods: [POST, CONNECT] }\n"
    "    upstream: app\n"
    "  - name: local\n"
    "    match: { host: \"localhost\", path_prefix: \"/six\" }\n"
    "    upstream: app\n"
    "  - name: put\n"
    "    match: { methods: [PUT, PATCH], path: \"/\" }\n"
    "    upstream: app\n"
    "  - name: static\n"
    "    match: { path_prefix: \"/static/\" }\n"
    "    upstream: app\n"
    "  - name: host\n"
    "    match: { host: \"plain\" }\n"
    "    upstream: app\n"
    "  - name: root\n"
    "    match: { path_prefix: \"/\", methods: [GET] }\n"
    "    upstream: app\n"
    "log: { level: error, access_log: false }\n";

static struct rem_config *cfg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!cfg) {
        struct rem_config_diag diag = {0};
        cfg = rem_config_load_string(YAML, "<fuzz_router>", &diag);
        if (!cfg) {
            for (size_t i = 0; i < diag.n; i++)
                fprintf(stderr, "fuzz_router: %s\n", diag.msgs[i]);
            abort();
        }
    }
    const char *p = (const char *)data, *end = p + size;
    const char *nl1 = memchr(p, '\n', size);
    if (!nl1)
        return 0;
    const char *host = nl1 + 1, *nl2 = memchr(host, '\n', (size_t)(end - host));
    const char *target = nl2 ? nl2 + 1 : host;
    size_t mlen = (size_t)(nl1 - p), hlen = nl2 ? (size_t)(nl2 - host) : 0;
    size_t tlen = (size_t)(end - target);
    /* Exact-size copies, so ASan sees any read past a field. */
    char *m = malloc(mlen + 1), *hc = nl2 ? malloc(hlen + 1) : NULL, *t = malloc(tlen + 1);
    char *hu = nl2 ? malloc(hlen + 1) : NULL, *tq = malloc(tlen + 3);
    if (!m || !t || !tq || (nl2 && (!hc || !hu)))
        abort();
    memcpy(m, p, mlen);
    memcpy(t, target, tlen);
    if (nl2) {
        memcpy(hc, host, hlen);
        for (size_t i = 0; i < hlen; i++)
            hu[i] = (char)toupper((unsigned char)hc[i]);
    }
    const struct rem_cfg_route *r = rem_router_match(cfg, m, mlen, hc, hlen, t, tlen);
    if (r && (r < cfg->routes || r >= cfg->routes + cfg->n_routes))
        abort();
    if (rem_router_match(cfg, m, mlen, hu, hlen, t, tlen) != r) {
        fprintf(stderr, "fuzz_router: an upper-cased Host picked another route\n");
        abort();
    }
    /* An origin-form target without a query: adding one keeps the route. */
    if (tlen && t[0] == '/' && !memchr(t, '?', tlen) && !memchr(t, '#', tlen)) {
        memcpy(tq, t, tlen);
        memcpy(tq + tlen, "?q", 2);
        if (rem_router_match(cfg, m, mlen, hc, hlen, tq, tlen + 2) != r) {
            fprintf(stderr, "fuzz_router: a query changed the route\n");
            abort();
        }
    }
    free(m);
    free(hc);
    free(hu);
    free(t);
    free(tq);
    return 0;
}
