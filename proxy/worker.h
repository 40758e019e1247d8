/* SPDX-License-Identifier: Apache-2.0
 * worker: one thread and its context: the loop (event_base, flush list, reaper), the metrics
 * shard, the config generation reference, the mailbox. Every conn, stream, upconn and cluster
 * created on the thread belongs to it (server.c builds them, and they borrow this context).
 * Workers share nothing mutable: each holds a reference to the immutable config generation and
 * keeps its own metrics shard, read by the admin thread with relaxed atomics. */
#ifndef REM_WORKER_H
#define REM_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "error.h"
#include "loop.h"

struct event;
struct event_base;
struct rem_config;
struct rem_gen;
struct rem_dns;
struct rem_listener;
struct rem_stream;
struct rem_conn;
struct rem_metrics_shard;

struct rem_worker {
    unsigned id;
    pthread_t thread;
    bool started;
    struct rem_loop loop;     /* owned: event_base, flush list, reaper, clock */
    struct rem_gen *gen;      /* a reference: the current generation (gen.h); new streams take
                                 it, old ones keep theirs */
    struct rem_config *cfg;   /* borrowed: gen->cfg, which new conns take a reference on */
    uint64_t gen_id;          /* atomic: the id of the last plan acknowledged (server.c) */
    uint64_t reload_failed;   /* atomic: the id of the last plan it could not apply */
    pthread_mutex_t gen_lock; /* held by the worker while it swaps or frees generation objects,
                                 by the scrape while it reads them */
    bool gen_lock_init;
    void *reload;                    /* atomic: the plan posted with REM_MAIL_RELOAD (server.c) */
    struct rem_listener **listeners; /* owned; index = the current config's listener index */
    size_t n_listeners;
    struct rem_listener **retired; /* owned: removed by a reload, freed once their conns end */
    size_t n_retired;
    struct rem_dns *dns;   /* owned: c-ares channel, when an endpoint is a name */
    struct event *stop_ev; /* reads mail_fd */
    int mail_fd;           /* eventfd: other threads' only way in */
    bool stop_requested;   /* atomic */
    unsigned mail;         /* atomic: REM_MAIL_* posted by other threads */
    /* What runs on the worker handles REM_MAIL_* (set by server.c before the thread starts). */
    void (*on_mail)(struct rem_worker *w, unsigned what);
    bool draining;          /* a drain started: new conns are drained at once */
    struct event *drain_ev; /* owned (server.c): stops the listeners after drain.delay */
    bool listeners_closed;  /* atomic: set by the worker once its listeners are closed */
    int64_t n_conns;        /* atomic (relaxed): open conns not lingering (nothing in flight on
                               those), read by the main thread */
    uint32_t n_handshakes;  /* worker-only: its downstream conns in HANDSHAKE, whatever their
                               generation (conn.c counts; limits.max_tls_handshakes caps) */
    TAILQ_HEAD(, rem_conn) handshakes; /* worker-only (conn.c): those conns, oldest first */
    struct event *tick_ev;
    struct rem_alloc_idle alloc_idle; /* worker-only: its allocator cache, flushed once idle */
    uint64_t rng;                     /* xorshift state for request ids */
    uint64_t heartbeat_ms;            /* monotonic ms of the last tick; atomic */
    TAILQ_HEAD(, rem_conn) conns;     /* every open downstream conn */
    struct rem_stream *free_streams;  /* freelist, keeps head arenas warm */
    size_t n_free_streams;
    struct rem_metrics_shard *metrics; /* owned: process-wide counters, written only here */
};

/* Requests posted to a worker from another thread (rem_worker_post). */
enum {
    REM_MAIL_DRAIN = 1 << 0,  /* stop taking new work gracefully (drain) */
    REM_MAIL_CUT = 1 << 1,    /* the drain timed out: cut what is left */
    REM_MAIL_RELOAD = 1 << 2, /* swap to the generation in w->reload */
};

/* This worker's equal share of a process-wide limit v over n_workers (0 counts as 1): at
 * least 1, so a small limit still lets every worker serve. */
static inline uint32_t rem_worker_share(uint64_t v, unsigned n_workers)
{
    uint64_t s = v / (n_workers ? n_workers : 1);
    return s ? (uint32_t)(s > UINT32_MAX ? UINT32_MAX : s) : 1;
}

/* Number of workers for `workers: auto`: the CPUs in the affinity mask, capped by the cgroup
 * v2 cpu.max quota rounded up. At least 1. */
unsigned rem_workers_auto(void);

/* Sets up the context of worker id: its loop, mailbox, heartbeat, metrics shard and
 * generation lock (its generation and what runs on it are built by rem_server_worker_init).
 * Returns 0, or -REM_E_SYS with the reason logged. On failure w is left disposable. */
int rem_worker_init(struct rem_worker *w, unsigned id);
/* Starts the thread. Returns 0 or -REM_E_SYS. */
int rem_worker_start(struct rem_worker *w);
/* Posts what (REM_MAIL_*) to w from any thread; w's on_mail runs on its loop. */
void rem_worker_post(struct rem_worker *w, unsigned what);
/* A conn opened (+1) or closed (-1) on w: the count the main thread polls while draining. */
static inline void rem_worker_count_conn(struct rem_worker *w, int delta)
{
    __atomic_store_n(&w->n_conns, __atomic_load_n(&w->n_conns, __ATOMIC_RELAXED) + delta,
                     __ATOMIC_RELAXED);
}
/* A downstream conn of w entered (+1) or left (-1) its TLS handshake (conn.c). */
static inline void rem_worker_count_handshake(struct rem_worker *w, int delta)
{
    w->n_handshakes += (uint32_t)delta;
}
static inline int64_t rem_worker_conns(const struct rem_worker *w)
{
    return __atomic_load_n(&w->n_conns, __ATOMIC_RELAXED);
}
/* The worker closed its listeners (drain); read by the main thread. */
static inline void rem_worker_set_listeners_closed(struct rem_worker *w)
{
    __atomic_store_n(&w->listeners_closed, true, __ATOMIC_RELEASE);
}
static inline bool rem_worker_listeners_closed(const struct rem_worker *w)
{
    return __atomic_load_n(&w->listeners_closed, __ATOMIC_ACQUIRE);
}
/* Asks the loop to stop (thread-safe) and joins the thread. */
void rem_worker_stop(struct rem_worker *w);
/* Frees the context; w must be stopped (or never started) and everything built on it gone
 * (rem_server_worker_dispose). NULL-safe. */
void rem_worker_dispose(struct rem_worker *w);

#endif
