/* SPDX-License-Identifier: Apache-2.0
 * server: builds and tears down what runs on each worker from a config generation (DNS
 * channel, clusters, admits, listeners). The top of the module stack; live reload will swap
 * generations here. */
#ifndef REM_SERVER_H
#define REM_SERVER_H

#include <stdint.h>

struct rem_config;
struct rem_metrics_layout;
struct rem_worker;

/* Sets up worker id's context (rem_worker_init) and builds its objects from cfg: clusters,
 * route admits, listener sockets bound with SO_REUSEPORT. `ports` carries the ports actually
 * bound by worker 0 for listeners configured with port 0 (in: 0 for worker 0, out: filled by
 * worker 0). Returns 0, or -REM_E_SYS with the reason logged. On failure w is left disposable
 * by rem_server_worker_dispose. */
int rem_server_worker_init(struct rem_worker *w, unsigned id, struct rem_config *cfg,
                           const struct rem_metrics_layout *ml, uint16_t *ports);
/* Closes every conn, frees listeners, admits, clusters and the DNS channel, then the worker's
 * context. w must be stopped (or never started). NULL-safe. */
void rem_server_worker_dispose(struct rem_worker *w);

#endif
