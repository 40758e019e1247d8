/* SPDX-License-Identifier: Apache-2.0
 * admin: the admin listener (never a traffic port): /healthz, /readyz, /metrics. Runs on the
 * main thread's event_base with libevent's evhttp, so a slow scraper never touches a worker.
 * Reads worker counters and heartbeats with relaxed atomics, and their generations under each
 * worker's gen_lock; owns nothing of the workers. */
#ifndef REM_ADMIN_H
#define REM_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct rem_cfg_listener;
struct rem_worker;
struct rem_admin;
struct rem_metrics_layout;
struct rem_config;
struct rem_healthcheck;

/* Listens on cfg->addr. Returns NULL with the reason logged. workers and hc (may be NULL) are
 * borrowed and must outlive the admin; config and layout (the active generation) are
 * referenced. /readyz is 200 only while set ready and every health-checked upstream is
 * healthy. */
struct rem_admin *rem_admin_new(struct event_base *base, const struct rem_cfg_listener *cfg,
                                struct rem_worker *workers, size_t n_workers,
                                struct rem_config *config, struct rem_metrics_layout *layout,
                                struct rem_healthcheck *hc);
/* Moves the admin port to cfg->addr: the new socket first (on failure -1, logged, and the old
 * one stays), then the old one closes; open admin conns finish. */
int rem_admin_rebind(struct rem_admin *a, const struct rem_cfg_listener *cfg);
/* The active generation changed (a reload): /config, /metrics and remora_config_info follow
 * config and layout (referenced), readiness hc (borrowed). */
void rem_admin_set_config(struct rem_admin *a, struct rem_config *config,
                          struct rem_metrics_layout *layout, struct rem_healthcheck *hc);
/* Reload figures for /metrics (remora_config_*, remora_tls_cert_reloads_total). */
struct rem_admin_reloads {
    uint64_t generation; /* 1 at start */
    uint64_t ok, failed;
    double last_success;           /* Unix seconds */
    uint64_t cert_ok, cert_failed; /* the reloads a certificate or key change asked for */
};
void rem_admin_set_reloads(struct rem_admin *a, const struct rem_admin_reloads *r);
/* The notAfter (Unix seconds) of the certificate each of the n TLS listeners names[i] serves,
 * for remora_tls_cert_expiry_timestamp_seconds; replaces the previous set (names copied). */
void rem_admin_set_tls_expiry(struct rem_admin *a, const char *const *names,
                              const double *not_after, size_t n);
/* /readyz answers 200 only while ready; reason (static string) is sent otherwise. */
void rem_admin_set_ready(struct rem_admin *a, bool ready, const char *reason);
/* POST /drain calls drain(arg) (on the main thread) and answers 202; other methods on /drain
 * get 405. */
void rem_admin_set_drain(struct rem_admin *a, void (*drain)(void *arg), void *arg);
/* A drain started: /readyz answers 503 "draining" from now on and remora_draining is 1. */
void rem_admin_set_draining(struct rem_admin *a);
void rem_admin_free(struct rem_admin *a);

#endif
