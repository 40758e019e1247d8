/* SPDX-License-Identifier: Apache-2.0
 * admin: the admin listener (never a traffic port): /healthz, /readyz, /metrics. Runs on the
 * main thread's event_base with libevent's evhttp, so a slow scraper never touches a worker.
 * Reads worker counters and heartbeats with relaxed atomics; owns nothing of the workers. */
#ifndef REM_ADMIN_H
#define REM_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct rem_cfg_listener;
struct rem_worker;
struct rem_admin;
struct rem_metrics_layout;
struct rem_healthcheck;

/* Listens on cfg->addr. Returns NULL with the reason logged. workers, layout and hc (may be
 * NULL) are borrowed and must outlive the admin. /readyz is 200 only while set ready and every
 * health-checked upstream is healthy. */
struct rem_admin *rem_admin_new(struct event_base *base, const struct rem_cfg_listener *cfg,
                                struct rem_worker *workers, size_t n_workers,
                                const struct rem_metrics_layout *layout,
                                struct rem_healthcheck *hc);
/* /readyz answers 200 only while ready; reason (static string) is sent otherwise. */
void rem_admin_set_ready(struct rem_admin *a, bool ready, const char *reason);
/* POST /drain calls drain(arg) (on the main thread) and answers 202; other methods on /drain
 * get 405. */
void rem_admin_set_drain(struct rem_admin *a, void (*drain)(void *arg), void *arg);
/* A drain started: /readyz answers 503 "draining" from now on and remora_draining is 1. */
void rem_admin_set_draining(struct rem_admin *a);
void rem_admin_free(struct rem_admin *a);

#endif
