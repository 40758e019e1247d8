/* SPDX-License-Identifier: Apache-2.0
 * router: picks the route for a request head, first match wins (config order). Pure: reads
 * the config generation, owns nothing. */
#ifndef REM_ROUTER_H
#define REM_ROUTER_H

#include <stddef.h>

struct rem_config;
struct rem_cfg_route;

/* Returns the first route of cfg whose match accepts the request, or NULL (404 no_route).
 * host: the Host header (or :authority) as sent, port and case allowed, may be NULL;
 * target: the request-target (origin-form path with optional query, or absolute-form);
 * method: the method token. Lengths are explicit; nothing needs NUL termination. */
const struct rem_cfg_route *rem_router_match(const struct rem_config *cfg, const char *method,
                                             size_t method_len, const char *host, size_t host_len,
                                             const char *target, size_t target_len);

#endif
