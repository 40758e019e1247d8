/* SPDX-License-Identifier: Apache-2.0
 * worker: one thread, one event_base, owning every conn, stream, upconn and cluster it
 * created. Workers share nothing mutable: each holds a reference to the immutable config
 * generation and keeps its own metrics shard, read by the admin thread with relaxed
 * atomics. Also owns the reaper that frees objects after their callbacks have returned. */
#ifndef REM_WORKER_H
#define REM_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "transport.h"

struct event;
struct event_base;
struct rem_config;
struct rem_cluster;
struct rem_listener;
struct rem_stream;
struct rem_conn;
struct rem_metrics_layout;
struct rem_metrics_shard;
struct rem_admit;

/* Deferred free: embedded in every object that may be closed from inside its own callback
 * stack (STYLE.md: mark closing, detach, and let the reaper free it). */
struct rem_reap {
    struct rem_reap *next;
    void (*fn)(struct rem_reap *r);
    bool queued;
};

struct rem_worker {
    unsigned id;
    pthread_t thread;
    bool started;
    struct event_base *base;         /* owned */
    struct rem_config *cfg;          /* a reference */
    struct rem_listener **listeners; /* owned; one per configured listener */
    size_t n_listeners;
    struct rem_admit **route_admits; /* owned: per route index (+1 unmatched); NULL when the
                                        route sets no max_requests */
    struct rem_cluster **clusters;   /* owned; index = config upstream index */
    struct rem_dns *dns;             /* owned: c-ares channel, when an endpoint is a name */
    size_t n_clusters;
    struct event *reap_ev;
    struct rem_reap *reap_head;
    struct event *stop_ev; /* reads mail_fd */
    int mail_fd;           /* eventfd: other threads' only way in */
    bool stop_requested;   /* atomic */
    struct event *tick_ev;
    uint64_t rng;                     /* xorshift state for request ids */
    uint64_t heartbeat_ms;            /* monotonic ms of the last tick; atomic */
    TAILQ_HEAD(, rem_conn) conns;     /* every open downstream conn */
    struct rem_transport_list flushq; /* transports with output to write this iteration */
    struct event *flush_ev;           /* writes flushq at the end of the loop iteration */
    struct rem_stream *free_streams;  /* freelist, keeps head arenas warm */
    size_t n_free_streams;
    const struct rem_metrics_layout *mlayout; /* borrowed: the generation's metric layout */
    struct rem_metrics_shard *metrics;        /* owned: written only by this worker */
};

/* Number of workers for `workers: auto`: the CPUs in the affinity mask, capped by the cgroup
 * v2 cpu.max quota rounded up. At least 1. */
unsigned rem_workers_auto(void);

/* Sets up w (event base, clusters, listener sockets bound with SO_REUSEPORT). `ports` carries
 * the ports actually bound by worker 0 for listeners configured with port 0 (in: 0 for worker
 * 0, out: filled by worker 0). Returns 0, or -REM_E_SYS with the reason logged. On failure w
 * is left disposable. */
int rem_worker_init(struct rem_worker *w, unsigned id, struct rem_config *cfg,
                    const struct rem_metrics_layout *ml, uint16_t *ports);
/* Starts the thread. Returns 0 or -REM_E_SYS. */
int rem_worker_start(struct rem_worker *w);
/* Asks the loop to stop (thread-safe) and joins the thread. */
void rem_worker_stop(struct rem_worker *w);
/* Frees everything w owns; w must be stopped (or never started). NULL-safe. */
void rem_worker_dispose(struct rem_worker *w);

/* Queues r to be freed by fn once the current callbacks have returned. Idempotent. */
void rem_worker_defer_free(struct rem_worker *w, struct rem_reap *r, void (*fn)(struct rem_reap *));

/* Queues t to be written once the current callbacks are done; cancel takes it off again. */
struct rem_transport;
void rem_worker_flush_later(struct rem_worker *w, struct rem_transport *t);
void rem_worker_flush_cancel(struct rem_worker *w, struct rem_transport *t);

uint64_t rem_now_ms(void);
uint64_t rem_now_ns(void); /* CLOCK_MONOTONIC */

#endif
