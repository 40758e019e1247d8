/* SPDX-License-Identifier: Apache-2.0
 * healthcheck: active HTTP health checks of upstream endpoints for readiness. Runs on the main
 * thread's event_base (never on a worker): every interval it sends `GET <path>` to each endpoint
 * of each upstream that configures a health check; 2xx is a success. An endpoint becomes
 * healthy on its first success, then flips after `fall` consecutive failures or `rise`
 * consecutive successes; an upstream is healthy while any of its endpoints is. Owns its
 * evhttp connections and timers; borrows the config generation. */
#ifndef REM_HEALTHCHECK_H
#define REM_HEALTHCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct rem_config;
struct rem_healthcheck;
struct rem_tls_client;

/* Starts checking cfg's upstreams (referenced; the first round runs at once). tls (NULL: none)
 * holds the client of each TLS upstream (the server plan's uptls, cfg->n_upstreams entries,
 * NULL for cleartext), referenced by the checks of its endpoints: they probe over TLS with it
 * (HTTP/1.1, ALPN http/1.1). After a reload,
 * prev (the old checker, may be NULL) lends the state of every check that did not change
 * (same upstream name, endpoint and settings), so readiness does not flap. Returns NULL with
 * the reason logged. */
struct rem_healthcheck *rem_healthcheck_new(struct event_base *base, struct rem_config *cfg,
                                            struct rem_tls_client *const *tls,
                                            const struct rem_healthcheck *prev);
void rem_healthcheck_free(struct rem_healthcheck *h);

/* Per upstream (config order): -1 no health check, 0 unhealthy, 1 healthy. Valid for the
 * lifetime of h; read on the main thread. */
const int8_t *rem_healthcheck_states(const struct rem_healthcheck *h);

/* true when every checked upstream is healthy; otherwise false and a one-line reason naming
 * the first unhealthy upstream is written to reason. NULL-safe (no checks: ready). */
bool rem_healthcheck_ready(const struct rem_healthcheck *h, char *reason, size_t len);

#endif
