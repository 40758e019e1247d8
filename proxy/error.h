/* SPDX-License-Identifier: Apache-2.0
 * error: the one table of every error remora can end a stream or a call with.
 * Each row: enum name, HTTP status sent downstream (0: none can be sent), the two-letter
 * termination code for the access log (HAProxy's idea: who ended it, in which phase), and the
 * reason label used in `x-remora-error` and in metrics. Enum, strings and statuses are all
 * generated from this table so they cannot drift.
 *
 * Termination code, first letter (who): C client, S server (upstream), P proxy (remora),
 * R resource limit, c/s client/server timeout, - none. Second letter (phase): R request head,
 * D data (body), C upstream connect, H response head, Q queue, K killed by the drain timeout
 * (in whatever phase it was), T an open tunnel, - none. */
#ifndef REM_ERROR_H
#define REM_ERROR_H

#include <stdbool.h>
#include <stdint.h>

#define REM_ERRORS(X)                                                                              \
    X(OK, 0, "--", "ok")                                                                           \
    X(NOMEM, 500, "RR", "nomem")                                                                   \
    X(INTERNAL, 500, "PR", "internal")                                                             \
    X(SYS, 500, "PR", "system")                                                                    \
    X(CONFIG, 0, "--", "config")                                                                   \
    X(BAD_REQUEST, 400, "CR", "bad_request")                                                       \
    X(BAD_FRAMING, 400, "CR", "bad_framing")                                                       \
    X(HEADER_TOO_LARGE, 431, "CR", "header_too_large")                                             \
    X(TOO_MANY_HEADERS, 431, "CR", "too_many_headers")                                             \
    X(HEADER_UNDERSCORE, 400, "CR", "header_underscore")                                           \
    X(BODY_TOO_LARGE, 413, "CD", "body_too_large")                                                 \
    X(URI_TOO_LONG, 414, "CR", "uri_too_long")                                                     \
    X(HTTP_VERSION, 505, "CR", "http_version_not_supported")                                       \
    X(CHUNK_LINE_TOO_LONG, 400, "CD", "chunk_line_too_long")                                       \
    X(UNSUPPORTED_TE, 501, "CR", "unsupported_transfer_encoding")                                  \
    X(NO_ROUTE, 404, "PR", "no_route")                                                             \
    X(REQUEST_HEADER_TIMEOUT, 408, "cR", "request_header_timeout")                                 \
    X(CLIENT_TIMEOUT, 408, "cD", "client_timeout")                                                 \
    X(CLIENT_ABORT, 0, "CD", "client_abort")                                                       \
    X(CONNECT_REFUSED, 502, "SC", "connect_refused")                                               \
    X(CONNECT_FAILED, 502, "SC", "connect_failed")                                                 \
    X(CONNECT_TIMEOUT, 504, "sC", "connect_timeout")                                               \
    X(UPSTREAM_TLS, 502, "SC", "upstream_tls")                                                     \
    X(NO_ENDPOINT, 503, "PC", "no_endpoint")                                                       \
    X(DNS, 503, "PC", "dns")                                                                       \
    X(UPSTREAM_OVERFLOW, 503, "RC", "upstream_overflow")                                           \
    X(QUEUE_FULL, 503, "RQ", "queue_full")                                                         \
    X(QUEUE_TIMEOUT, 503, "sQ", "queue_timeout")                                                   \
    X(UPSTREAM_RESET, 502, "SH", "upstream_reset")                                                 \
    X(UPSTREAM_TIMEOUT, 504, "sH", "upstream_timeout")                                             \
    X(BAD_RESPONSE, 502, "SH", "bad_response")                                                     \
    X(UPSTREAM_TRUNCATED, 0, "SD", "upstream_truncated")                                           \
    X(SHUTDOWN, 503, "PR", "shutdown")                                                             \
    X(UNSUPPORTED, 0, "--", "unsupported")                                                         \
    X(CONNECT_DISABLED, 405, "PR", "connect_disabled")                                             \
    X(CLIENT_NOT_ALLOWED, 403, "PR", "client_not_allowed")                                         \
    X(TUNNEL_IDLE_TIMEOUT, 0, "sT", "tunnel_idle_timeout")                                         \
    X(DRAIN_TIMEOUT, 503, "PK", "drain_timeout")

enum rem_err {
#define REM_X_ENUM(name, status, term, label) REM_E_##name,
    REM_ERRORS(REM_X_ENUM)
#undef REM_X_ENUM
        REM_E__COUNT
};

/* Table look-ups; every value of enum rem_err is valid, anything else REM_BUG_ON. */
int rem_err_status(enum rem_err e);        /* 0 when no status can be sent */
const char *rem_err_term(enum rem_err e);  /* two letters */
const char *rem_err_label(enum rem_err e); /* reason label */
/* Synchronous functions return 0 or -(enum rem_err); this maps a return back. */
static inline enum rem_err rem_err_from_rc(int rc)
{
    return rc >= 0 ? REM_E_OK : (enum rem_err)(-rc);
}

/* Always-on invariant check: aborts with file:line. */
void rem_bug(const char *file, int line, const char *cond) __attribute__((noreturn));
#define REM_BUG_ON(cond)                                                                           \
    do {                                                                                           \
        if (__builtin_expect(!!(cond), 0))                                                         \
            rem_bug(__FILE__, __LINE__, #cond);                                                    \
    } while (0)

/* Control-path allocation that aborts on OOM (never for peer-driven, data-path growth). */
void *rem_xcalloc(size_t n, size_t size);
/* Logs "out of memory" and aborts: what a control object does when its allocation fails. */
void rem_oom(void) __attribute__((noreturn));
char *rem_xstrdup(const char *s);
/* After a burst of frees on this thread (a reload's old generation): hands the thread's
 * allocator cache back to the arenas and, with all_arenas (the main thread, once), returns
 * their unused pages to the kernel. Otherwise an idle sidecar keeps them resident. A no-op
 * without jemalloc. */
void rem_alloc_release(bool all_arenas);
/* Runs the arenas' time-based decay now (any thread). jemalloc otherwise decays dirty pages
 * only as allocations happen, so a sidecar that goes idle after a burst would keep the pages
 * the burst freed; main calls this every few seconds, and they go back to the kernel about
 * dirty_decay_ms (10 s by default) after they were freed, busy or not. A no-op without
 * jemalloc. */
void rem_alloc_decay(void);

/* A thread's allocator cache, watched for idleness (rem_alloc_idle_tick). jemalloc trims a
 * thread's cache only as that thread allocates, so a worker that goes idle after a burst keeps
 * the objects it freed (0.35 MiB after test_19's battery) for as long as it stays idle. */
struct rem_alloc_idle {
    const uint64_t *allocated; /* jemalloc's thread.allocatedp (NULL without jemalloc) */
    uint64_t last;             /* its value at the last tick */
    unsigned quiet_ticks;      /* ticks in a row that allocated nothing, up to the limit */
};
/* Ticks after which a thread that allocated nothing in between flushes its cache, once. */
#define REM_ALLOC_IDLE_TICKS 2
/* Binds st to the calling thread (call on that thread, before its ticks). */
void rem_alloc_idle_init(struct rem_alloc_idle *st);
/* Called on st's thread at a steady period: once the thread has allocated nothing for
 * REM_ALLOC_IDLE_TICKS ticks in a row, hands its cache back to the arenas (their decay then
 * returns the pages). Returns true when it flushed. Costs one load while the thread is busy. */
bool rem_alloc_idle_tick(struct rem_alloc_idle *st);

/* The gRPC status remora answers a gRPC call with for e (grpc-status; 14 UNAVAILABLE for
 * shedding and connect failures, 4 DEADLINE_EXCEEDED, 12 UNIMPLEMENTED, 8 RESOURCE_EXHAUSTED, 7
 * PERMISSION_DENIED for client_not_allowed, 13 INTERNAL otherwise). */
int rem_err_grpc_status(enum rem_err e);

#endif
