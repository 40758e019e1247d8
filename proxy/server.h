/* SPDX-License-Identifier: Apache-2.0
 * server: builds, swaps and tears down what runs on each worker: its generation (gen.h:
 * clusters bound to their pool and upstream codec, route states and admits, histograms), its
 * DNS channel and its listeners. The main thread prepares a plan per config generation (the
 * config, its metric layout, the listening sockets of new addresses); each worker builds its
 * own generation from it, on its own thread, keeping what did not change. The top of the
 * module stack. */
#ifndef REM_SERVER_H
#define REM_SERVER_H

#include <stdint.h>
#include <sys/types.h>

struct ssl_ctx_st;
struct rem_config;
struct rem_tls_client;
struct rem_metrics_layout;
struct rem_worker;

/* One config generation as the main thread hands it to the workers. Immutable once built
 * except for fds, whose entries the workers take. */
struct rem_server_plan {
    int refs;                      /* atomic: the main thread's and each worker's to apply */
    uint64_t id;                   /* the generation number (1 at start) */
    struct rem_config *cfg;        /* a reference */
    struct rem_metrics_layout *ml; /* a reference */
    unsigned n_workers;
    ssize_t *keep;   /* [cfg->n_listeners]: the previous config's listener with the same
                        address (its socket carries over), or -1: a new address */
    int *fds;        /* [cfg->n_listeners * n_workers]: the socket of new listener i for worker
                        w at i * n_workers + w (-1 once taken, or kept) */
    uint16_t *ports; /* [cfg->n_listeners]: the bound port of each listener */
    struct ssl_ctx_st **tls;       /* [cfg->n_listeners]: a reference on the server context of
                                      each TLS listener (built for every plan, kept address or
                                      not: a reload re-reads the files), NULL for plaintext */
    struct rem_tls_client **uptls; /* [cfg->n_upstreams]: a reference on the client of each
                                      TLS upstream (built for every plan, like tls), NULL for
                                      cleartext; each worker's cluster takes its own */
};

/* The plan of cfg for n_workers, after prev (NULL at start): builds the TLS context of every
 * TLS listener (reading its certificate and key), binds every new listener address once per
 * worker and the client context of every TLS upstream (reading its files)
 * (SO_REUSEPORT; a port 0 becomes one port for all), reuses prev's sockets for
 * addresses it already had. Returns NULL, with the reason logged, when a context cannot be
 * built or an address cannot be bound (nothing changes then). Main thread only. */
struct rem_server_plan *rem_server_plan_new(struct rem_config *cfg, struct rem_metrics_layout *ml,
                                            const struct rem_server_plan *prev, unsigned n_workers,
                                            uint64_t id);
/* Drops a reference (thread-safe); the last closes the sockets no worker took. NULL-safe. */
void rem_server_plan_unref(struct rem_server_plan *p);

/* Sets up worker id's context (rem_worker_init) and its first generation from p (start: p has
 * no previous plan). Returns 0, or -REM_E_SYS with the reason logged. On failure w is left
 * disposable by rem_server_worker_dispose. */
int rem_server_worker_init(struct rem_worker *w, unsigned id, struct rem_server_plan *p);
/* Main thread: hands p to the running worker w (a reference is taken), which swaps to the
 * generation it builds from it at the top of its next loop iteration and then publishes
 * p->id as its w->gen_id (rem_server_worker_gen_id). The previous plan posted must have been
 * applied (gen_id) first. */
void rem_server_worker_reload(struct rem_worker *w, struct rem_server_plan *p);
/* The id of the last plan w acknowledged (any thread): the generation it runs, unless that
 * plan failed on it (rem_server_worker_failed_id). */
uint64_t rem_server_worker_gen_id(const struct rem_worker *w);
/* The id of the last plan w could not apply (it kept its generation), 0: none. */
uint64_t rem_server_worker_failed_id(const struct rem_worker *w);
/* Closes every conn, frees listeners, the generation (clusters, route states) and the DNS
 * channel, then the worker's context. w must be stopped (or never started). NULL-safe. */
void rem_server_worker_dispose(struct rem_worker *w);

#endif
