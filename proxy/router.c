/* SPDX-License-Identifier: Apache-2.0
 * router: linear first-match over the configured routes. Route counts in a sidecar are small
 * (tens), so a scan over pre-normalised match fields beats building an index. */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "http.h"
#include "router.h"

static bool host_matches(const struct rem_cfg_route *r, const char *host, size_t len)
{
    if (!r->host)
        return true;
    if (!host)
        return false;
    /* Drop the port (RFC 9110 7.2); "[v6]:port" keeps its brackets. */
    size_t n = len;
    if (n && host[0] == '[') {
        const char *rb = memchr(host, ']', n);
        if (rb)
            n = (size_t)(rb - host) + 1;
    } else {
        const char *colon = memchr(host, ':', n);
        if (colon)
            n = (size_t)(colon - host);
    }
    if (n && host[n - 1] == '.') /* absolute FQDN */
        n--;
    size_t rn = strlen(r->host);
    if (r->host_wildcard) /* r->host is ".suffix": at least one label before it */
        return n > rn && strncasecmp(host + n - rn, r->host, rn) == 0;
    return n == rn && strncasecmp(host, r->host, rn) == 0;
}

static bool method_matches(const struct rem_cfg_route *r, const char *m, size_t len)
{
    if (r->n_methods == 0)
        return true;
    for (size_t i = 0; i < r->n_methods; i++)
        if (strlen(r->methods[i]) == len && memcmp(r->methods[i], m, len) == 0)
            return true;
    return false;
}

static bool path_matches(const struct rem_cfg_route *r, const char *path, size_t len)
{
    if (r->path)
        return strlen(r->path) == len && memcmp(r->path, path, len) == 0;
    if (r->path_prefix) {
        size_t pn = strlen(r->path_prefix);
        return len >= pn && memcmp(path, r->path_prefix, pn) == 0;
    }
    return true;
}

const struct rem_cfg_route *rem_router_match(const struct rem_config *cfg, const char *method,
                                             size_t method_len, const char *host, size_t host_len,
                                             const char *target, size_t target_len)
{
    /* absolute-form (RFC 9112 3.2.2): match on its path, and its authority stands for Host. */
    const char *path = target, *rest;
    size_t plen = target_len, rest_len;
    if (rem_http_absolute_form(target, target_len, &host, &host_len, &rest, &rest_len)) {
        bool has_path = rest_len && rest[0] == '/';
        path = has_path ? rest : "/";
        plen = has_path ? rest_len : 1;
    }
    /* CONNECT's authority-form target (RFC 9112 3.2.3) names the host and has no path: only
     * routes without a path match it. h2 sends none (its :authority is the Host). */
    if (method_len == 7 && memcmp(method, "CONNECT", 7) == 0 && (plen == 0 || path[0] != '/')) {
        if (plen) {
            host = path;
            host_len = plen;
        }
        path = "";
        plen = 0;
    }
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);
    /* OPTIONS's asterisk-form (RFC 9112 3.2.4; h1_down refuses it on other methods) asks
     * about the server as a whole: the routes that take every path match it. */
    bool asterisk = plen == 1 && path[0] == '*';

    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct rem_cfg_route *r = &cfg->routes[i];
        bool any_path = asterisk && r->path_prefix && strcmp(r->path_prefix, "/") == 0;
        if (method_matches(r, method, method_len) && host_matches(r, host, host_len) &&
            (any_path || path_matches(r, path, plen)))
            return r;
    }
    return NULL;
}
