/* SPDX-License-Identifier: Apache-2.0
 * stream: one request/response exchange, the glue between a downstream codec (HTTP/1.1 or
 * HTTP/2, behind conn->down) and an upstream codec (behind upconn->up), which it commands only
 * through their ops tables; admission, DNS and the pool answer it through its wait handles.
 * Owns both heads (request, response) and their trailers, the route choice, retry decision,
 * timers' meaning and the access-log line. Does not own the conn (whose codec owns it) nor the
 * upconn (the pool lists hold it; the stream only borrows it while attached). The codecs name
 * the rem_stream_on_* functions below; the setters are for them too, so that only this module
 * writes a stream's fields.
 *
 * Two half-lives end a stream: the request side (received from downstream, sent upstream)
 * and the response side (received from upstream, written downstream). The stream finishes
 * when both are done, or fails with one enum rem_err. */
#ifndef REM_STREAM_H
#define REM_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/queue.h>

struct event;
struct evbuffer;

#include "admit.h"
#include "error.h"
#include "http.h"
#include "upconn.h"
#include "upool.h"
#include "wait.h"

struct rem_conn;
struct rem_worker;
struct rem_gen;
struct rem_cfg_route;
struct rem_cluster;
struct rem_endpoint;
struct rem_upconn;

enum rem_stream_state {
    REM_STREAM_HEAD = 0, /* request head being parsed */
    REM_STREAM_QUEUED,   /* waiting for an admission slot (queue.c) */
    REM_STREAM_CONNECT,  /* waiting for an upconn */
    REM_STREAM_ACTIVE,   /* request and/or response flowing */
    REM_STREAM_DONE,     /* finished or failed; about to be freed */
};

/* What a request asks of the connection, once its route has allowed it (DESIGN.md
 * "Tunnels"). */
enum rem_tunnel_req {
    REM_TUNNEL_NONE = 0,
    REM_TUNNEL_UPGRADE, /* HTTP/1.1 Upgrade or h2 extended CONNECT: the app answers 101 / 2xx */
    REM_TUNNEL_CONNECT, /* plain CONNECT: remora answers 200 once the upstream is connected */
};

struct rem_stream {
    struct rem_stream *next_free;      /* worker freelist link */
    struct rem_admit_ticket rt;        /* place at the route's admit (routes[].max_requests) */
    struct rem_admit_ticket ut;        /* place at the upstream's admit */
    struct rem_worker *worker;         /* borrowed */
    struct rem_conn *conn;             /* borrowed: the conn owns the stream */
    struct rem_gen *gen;               /* a reference: the worker's generation when the
                                          stream started; route, cluster, mroute and the
                                          admits all come from it */
    const struct rem_cfg_route *route; /* borrowed from gen->cfg */
    struct rem_cluster *cluster;       /* borrowed from gen */
    struct rem_endpoint *endpoint;     /* a reference (rem_endpoint_ref) */
    struct rem_upconn *upconn;         /* borrowed while attached */
    enum rem_stream_state state;
    struct rem_head req, resp;         /* owned arenas, kept across reuse */
    struct rem_head req_trl, resp_trl; /* chunked trailers */
    struct evbuffer *replay;           /* owned: body bytes sent, kept (up to buffer_bytes)
                                          until the response starts, for the one retry */
    char request_id[37];               /* generated id, when the client sent none */
    const char *rid;                   /* the id in effect (generated or client's) */
    size_t rid_len;

    bool head_request;
    bool req_has_body;
    bool req_chunked;
    bool req_done;       /* the whole request was received from downstream */
    bool req_sent;       /* ... and queued to the upconn */
    bool resp_started;   /* a response byte arrived from the upstream */
    bool resp_head_sent; /* the response head went downstream */
    bool resp_done;      /* the whole response was queued downstream */
    bool down_chunked;   /* response framing toward downstream */
    bool down_close;     /* close the downstream conn after this response */
    bool retried;
    bool replay_ok;           /* idempotent and every body byte sent so far is in replay */
    struct rem_wait dns_w;    /* waiting for the cluster's first DNS answer */
    struct rem_pool_req preq; /* getting an upconn (preq.reused: it came from the pool) */
    bool in_resp_trailers;
    bool resp_headers_only; /* the upstream ended the response with its head (h2 END_STREAM
                               on HEADERS, e.g. gRPC trailers-only): no body, no DATA */

    int status_sent;        /* status written downstream, 0 if none */
    int64_t down_cl;        /* Content-Length written downstream, -1 if none */
    int64_t req_body_bytes; /* body bytes received from downstream */
    int64_t resp_body_bytes;
    uint64_t bytes_in, bytes_out;
    uint64_t start_ns;    /* first byte of the request head */
    uint64_t up_start_ns; /* request head sent upstream */
    size_t mroute;        /* route index in gen (gen->cfg->n_routes: unmatched) */
    bool in_flight;       /* counted in the route's in-flight gauge */
    enum rem_err err;
    bool err_in_body; /* err came after the request head was taken (state past HEAD): a
                         client's framing error in the body or trailers logs phase D */

    /* gRPC (content-type application/grpc*): remora's own errors become grpc-status. */
    bool grpc;
    struct event *deadline;   /* owned: grpc-timeout, absolute; NULL when none */
    struct event *body_timer; /* owned: limits.request_body_timeout, from the moment the body
                                 can flow to the app until its last byte; NULL when none */

    /* Tunnels: the protocol the client offered (HTTP/1.1 Upgrade, h2 :protocol), what its
     * route allows, and once the app accepted, the open tunnel's accounting. While the tunnel
     * is open the body functions carry opaque bytes and req_done / resp_done mean "that
     * side sent its FIN". */
    char upgrade[64];
    uint8_t upgrade_len;
    enum rem_tunnel_req tunnel_req;
    bool tunnel;                     /* open: bytes flow both ways until both sides end */
    char tunnel_closer;              /* 'C' client or 'S' app ended first; 0 while both send */
    uint64_t tunnel_up, tunnel_down; /* payload bytes client->app, app->client */
    uint64_t open_in, open_out;      /* bytes_in / bytes_out counted when the tunnel opened */
    void *down_ctx; /* the downstream codec's per-stream state (owned by the codec), or NULL */

    void *up_ctx; /* the upstream codec's per-stream state while attached, or NULL */
};

/* What the downstream codec found in the request head: a HEAD request, a body, chunked (no
 * length known). */
static inline void rem_stream_set_request(struct rem_stream *s, bool head, bool body, bool chunked)
{
    s->head_request = head;
    s->req_has_body = body;
    s->req_chunked = chunked;
}
/* A gRPC call (content-type application/grpc*): remora's own errors become grpc-status. */
static inline void rem_stream_set_grpc(struct rem_stream *s, bool grpc)
{
    s->grpc = grpc;
}
/* The client offered to switch to protocol p (an HTTP/1.1 Upgrade value, an h2 :protocol);
 * rem_stream_start decides with the route. One too long for any allow-list is ignored. */
static inline void rem_stream_set_upgrade(struct rem_stream *s, const char *p, size_t n)
{
    if (n < sizeof(s->upgrade)) {
        memcpy(s->upgrade, p, n);
        s->upgrade[n] = '\0';
        s->upgrade_len = (uint8_t)n;
    }
}
/* Bytes received from / written to the client for this stream, as the wire counts them. */
static inline void rem_stream_count_in(struct rem_stream *s, uint64_t n)
{
    s->bytes_in += n;
}
static inline void rem_stream_count_out(struct rem_stream *s, uint64_t n)
{
    s->bytes_out += n;
}
/* The downstream codec's per-stream state. */
static inline void rem_stream_set_down_ctx(struct rem_stream *s, void *ctx)
{
    s->down_ctx = ctx;
}
/* The upstream codec's per-stream state while s is attached to its upconn. */
static inline void rem_stream_set_up_ctx(struct rem_stream *s, void *ctx)
{
    s->up_ctx = ctx;
}
/* A response byte arrived from the upstream (no retry from now on). */
static inline void rem_stream_mark_resp_started(struct rem_stream *s)
{
    s->resp_started = true;
}
/* The upstream ended the response with its head (h2 END_STREAM on HEADERS). */
static inline void rem_stream_set_resp_headers_only(struct rem_stream *s, bool only)
{
    s->resp_headers_only = only;
}
/* The conn closes after this response (drain): it carries Connection: close on HTTP/1.1. */
static inline void rem_stream_close_after(struct rem_stream *s)
{
    s->down_close = true;
}
/* The upconn of s closed without a failure to report (its exchange was over or abandoned). */
static inline void rem_stream_upconn_gone(struct rem_stream *s)
{
    s->upconn = NULL;
}
/* Lowers the request head and trailer limits to n bytes (0: unchanged). */
void rem_stream_limit_head_bytes(struct rem_stream *s, uint32_t n);

/* A stream for conn c, from the worker's freelist. Aborts on OOM (control object). */
struct rem_stream *rem_stream_new(struct rem_conn *c);
/* Frees the worker's stream freelist (teardown). */
void rem_stream_freelist_dispose(struct rem_worker *w);
/* Returns s to the freelist. The stream must be detached from its upconn. NULL-safe. */
void rem_stream_free(struct rem_stream *s);

/* The request head is complete and valid: route it and get an upconn. May answer an error
 * downstream (then s->state is DONE on return and the conn decides what to do). */
void rem_stream_start(struct rem_stream *s);

/* Request body from downstream. Returns true when the caller must pause (upconn output over
 * the watermark). */
bool rem_stream_req_body(struct rem_stream *s, const char *p, size_t n);
/* The whole request was received (trailers, if any, are in s->req_trl). Before
 * rem_stream_start (a request without body) it only marks the request complete. */
void rem_stream_req_end(struct rem_stream *s);
/* The client half-closed its side. Returns true when s is still answered (a complete request
 * that is not just waiting in an admission queue); the conn then closes after it. */
bool rem_stream_on_client_eof(struct rem_stream *s);

/* Callbacks from the upstream codec. */
/* uc is connected and s attached: the request goes. */
void rem_stream_on_upconn_ready(struct rem_stream *s, struct rem_upconn *uc);
/* Connect failure, or I/O failure before the response completed; s was let go by its upconn.
 * hint says whether a retry is safe. */
void rem_stream_on_upconn_error(struct rem_stream *s, enum rem_err e, enum rem_retry_hint hint);
int rem_stream_on_resp_head(struct rem_stream *s);
/* The app accepted the tunnel s->tunnel_req asked for (a 101 to an Upgrade, a 2xx to an h2
 * extended CONNECT; the head is in s->resp): the head goes downstream, both codecs switch to
 * opaque bytes (set_tunnel), and the body functions carry the tunnel until both sides end.
 * Returns 0, or < 0 when it cannot (s was failed). */
int rem_stream_on_upgrade(struct rem_stream *s);
/* What an interim head counts at least towards the response head limit (a status line). */
#define REM_INTERIM_MIN_BYTES 32
/* An interim (1xx, not 101) response head is in s->resp: counted towards the response head
 * limit (s->resp's max_bytes is lowered by it), then forwarded to HTTP/1.1 clients unless it
 * is a 100. Returns 0, -REM_E_BAD_RESPONSE when the interim heads overflow the limit, or
 * -REM_E_NOMEM. */
int rem_stream_on_resp_interim(struct rem_stream *s);
/* Returns true when the upconn must pause reading (downstream output over the watermark). */
bool rem_stream_on_resp_body(struct rem_stream *s, const char *p, size_t n);
void rem_stream_on_resp_end(struct rem_stream *s);
/* The upconn's output drained below its watermark: request body may flow again. */
void rem_stream_on_upconn_writable(struct rem_stream *s);

/* The downstream output drained below its watermark. */
void rem_stream_on_down_writable(struct rem_stream *s);
/* The downstream conn is going away: abort the stream (closing the upconn if needed), log
 * it, and free it. */
void rem_stream_abort(struct rem_stream *s, enum rem_err e);

/* Answers s downstream with remora's own error response and ends it. */
void rem_stream_fail(struct rem_stream *s, enum rem_err e);

#endif
