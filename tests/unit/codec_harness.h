/* SPDX-License-Identifier: Apache-2.0
 * codec_harness: drives remora's codecs over in-memory transports, for the codec unit tests and
 * the fuzz targets (h2o's fuzz/driver.cc is the model). It builds a worker from a YAML config
 * with rem_server_worker_init (whose listener binds 127.0.0.1 port 0 and never accepts), opens
 * one downstream conn over an io_mem end that the test feeds and reads, and makes every upconn
 * connect over io_mem to a far end the harness owns (struct ch_upstream), where the test plays
 * the app. It also carries two stub codecs: an upstream one (ch_stub_up_ops) that records the
 * request a downstream codec handed over and answers from the test, and a downstream one
 * (ch_stub_down_ops) that builds requests from the test and records the response an upstream
 * codec handed over. Owns everything it builds; does not use cmocka (fuzz targets link it too):
 * functions return errors and the tests assert. */
#ifndef REM_TEST_CODEC_HARNESS_H
#define REM_TEST_CODEC_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "conn.h"
#include "error.h"
#include "transport.h"
#include "upconn.h"
#include "worker.h"

struct evbuffer;
struct rem_config;
struct rem_metrics_layout;
struct rem_stream;

/* The downstream client's address (TEST-NET-1): what X-Forwarded-For carries. */
#define CH_CLIENT_ADDR "192.0.2.10"
/* The one endpoint of the upstream: numeric, never dialled (upconns connect over io_mem). */
#define CH_ENDPOINT "127.0.0.1:1"
/* Loop passes ch_run allows before it calls the loop stuck. */
#define CH_MAX_PASSES 10000
/* Upconns (far ends) one harness can serve. */
#define CH_MAX_UPSTREAMS 16

/* A config with one listener, one upstream of protocol proto ("http1", "h2c") at CH_ENDPOINT
 * and one catch-all route; access logging off. */
#define CH_YAML(proto)                                                                             \
    "workers: 1\n"                                                                                 \
    "listeners:\n"                                                                                 \
    "  - name: in\n"                                                                               \
    "    address: \"127.0.0.1:0\"\n"                                                               \
    "    max_connections: 64\n"                                                                    \
    "admin:\n"                                                                                     \
    "  address: \"127.0.0.1:0\"\n"                                                                 \
    "upstreams:\n"                                                                                 \
    "  - name: app\n"                                                                              \
    "    endpoints: [\"" CH_ENDPOINT "\"]\n"                                                       \
    "    protocol: " proto "\n"                                                                    \
    "routes:\n"                                                                                    \
    "  - name: all\n"                                                                              \
    "    upstream: app\n"                                                                          \
    "log: { level: warn, access_log: false }\n"

/* The far end of one upconn: the test as the app. */
struct ch_upstream {
    struct rem_transport t; /* paired with the upconn's transport (rem_io_mem_pair) */
    struct evbuffer *rx;    /* what the upconn sent and the test has not consumed */
    bool eof;               /* the upconn closed or shut its sending side */
};

/* What the stub upstream codec received of the latest request (reset by ch_stub_up_clear). */
struct ch_stub_up {
    struct evbuffer *head;     /* "METHOD target HTTP/x.y\r\n", then "name: value\r\n" for
                                  every field of s->req in order (dropped ones too), "\r\n" */
    struct evbuffer *body;     /* the bytes of every write_body, in order */
    struct evbuffer *trailers; /* "name: value\r\n" per field of s->req_trl at write_end */
    unsigned n_heads, n_bodies, n_ends, n_cancels;
    bool has_body, chunked, head_request; /* the stream's request flags at write_head */
    int64_t content_length;               /* s->req's, -1: none */
    char rid[64];                         /* the request id in effect (s->rid) */
    /* The exchange the test answers (ch_stub_answer_*): set by write_head, cleared when the
     * stream is let go or answered. Borrowed. */
    struct rem_stream *s;
    struct rem_upconn *uc;
};

/* What the stub downstream codec received of the latest response (reset by
 * ch_stub_down_clear), and the request it is sending. */
struct ch_stub_down {
    struct evbuffer *head;     /* "HTTP/x.y status[ reason]\r\n", then "name: value\r\n" for
                                  every field of s->resp in order, "\r\n" */
    struct evbuffer *body;     /* the bytes of every write_body, in order */
    struct evbuffer *trailers; /* "name: value\r\n" per field of s->resp_trl at write_end */
    unsigned n_heads, n_interims, n_bodies, n_ends, n_errors, n_cuts, n_done;
    int status;            /* s->resp.status at write_head */
    int64_t down_cl;       /* the stream's framing decision at write_head (-1: none) */
    bool down_chunked;     /* ... */
    bool down_close;       /* ... */
    enum rem_err error;    /* write_error's */
    enum rem_err done_err; /* s->err when the stream was done */
    char rid[64];          /* the request id in effect when the stream was done */
    /* The request being sent: */
    struct rem_stream *s;     /* borrowed: the stub's stream until stream_done */
    struct evbuffer *req_out; /* body bytes queued by the test, not yet given to the stream */
    bool req_end;             /* the test queued the end of the body */
    bool ready;               /* req_ready came: the stream takes body */
    bool blocked;             /* the upconn was full: no body until req_resume */
    bool fail_head;           /* write_head answers -REM_E_NOMEM (a downstream write failure) */
    bool full;                /* `full` says yes: the upstream must pause (a slow client) */
};

struct ch {
    struct rem_config *cfg;        /* a reference */
    struct rem_metrics_layout *ml; /* owned */
    struct rem_worker w;           /* built by rem_server_worker_init */
    bool worker_up;
    size_t window; /* io_mem send window of every end made from now on (0: unbounded) */
    /* The downstream conn. */
    const struct rem_down_ops *force_down;   /* the codec it gets; NULL: chosen as listener.c
                                                does (the HTTP/2 preface, else HTTP/1.1) */
    struct rem_conn *conn;                   /* borrowed; NULL once closed */
    struct evbuffer *down_rx;                /* what the conn sent, not yet consumed by the test */
    bool conn_closed, conn_shut, conn_reset; /* seen when it closed */
    /* The far ends of upconns, in connect order. */
    struct ch_upstream *ups[CH_MAX_UPSTREAMS];
    size_t n_ups;
    struct ch_stub_up sup;
    struct ch_stub_down sdown;
};

/* Builds the config from yaml (its load errors go to stderr), the worker and its clusters, whose
 * upconns connect over io_mem. Request ids come from a fixed seed, so runs repeat. Returns 0,
 * or -1 with h disposable. */
int ch_init(struct ch *h, const char *yaml);
/* The usual fixture in one call: ch_init(yaml), the upstream codec up (NULL: the configured
 * one), the conn's codec down (NULL: chosen as listener.c does), ch_open. Returns 0, or -1 with
 * h disposed. */
int ch_start(struct ch *h, const char *yaml, const struct rem_up_ops *up,
             const struct rem_down_ops *down);
/* Closes the conn and every far end, lets the loop settle, frees the worker (reaper run) and
 * everything else. Idempotent. */
void ch_dispose(struct ch *h);

/* Every cluster's upconns use ops from now on (e.g. ch_stub_up_ops); no upconn may exist. */
void ch_set_up_ops(struct ch *h, const struct rem_up_ops *ops);

/* Opens the downstream conn over an io_mem end (h->force_down decides its codec). Returns 0 or
 * the negative -REM_E_* of rem_conn_open. */
int ch_open(struct ch *h);
/* Bytes from the client: queued for the conn (run the loop to have them read). 0 or -1. */
int ch_feed(struct ch *h, const void *p, size_t n);
int ch_feed_str(struct ch *h, const char *s);
/* The client closes its sending side. */
void ch_feed_eof(struct ch *h);

/* Runs the loop (EVLOOP_NONBLOCK passes) until no event is active, collecting what the conn
 * sent into h->down_rx after every pass. Returns the passes it took, or -1 when the loop was
 * still busy after CH_MAX_PASSES passes. */
int ch_run(struct ch *h);

/* The far end of the i-th upconn, or NULL. */
struct ch_upstream *ch_upstream(struct ch *h, size_t i);
/* Bytes from the app to the upconn (sent from the loop). 0 or -1. */
int ch_upstream_send(struct ch_upstream *u, const void *p, size_t n);
int ch_upstream_send_str(struct ch_upstream *u, const char *s);
/* The app closes the connection: the upconn reads EOF. Idempotent. */
void ch_upstream_close(struct ch_upstream *u);

/* Whether b holds exactly the n bytes at p; on a mismatch both are printed (escaped) to stderr
 * under what. Peeks only. */
bool ch_buf_eq(struct evbuffer *b, const void *p, size_t n, const char *what);
bool ch_buf_eq_str(struct evbuffer *b, const char *s, const char *what);
/* Empties b. */
void ch_buf_clear(struct evbuffer *b);

/* ---- stub upstream codec --------------------------------------------------------------------
 * One stream per upconn, like HTTP/1.1: it records the request in h->sup and never touches the
 * upconn's bytes; the test answers through the stream callbacks below. */
extern const struct rem_up_ops ch_stub_up_ops;

/* Forgets what h->sup recorded (not the exchange being answered). */
void ch_stub_up_clear(struct ch *h);
/* The response head of the held exchange: status, reason (may be NULL) and fields, a
 * NULL-terminated list of name, value pairs, as a codec hands them to the stream
 * (rem_stream_on_resp_head). Returns 0, -1 (no exchange held) or the stream's error. */
int ch_stub_answer_head(struct ch *h, int status, const char *reason, const char *const *fields);
/* Response body bytes (rem_stream_on_resp_body). Returns 0, 1 (the downstream is full) or -1. */
int ch_stub_answer_body(struct ch *h, const void *p, size_t n);
/* The end of the response: the upconn goes back to the pool and the stream hears
 * rem_stream_on_resp_end. Returns 0 or -1 (no exchange held). */
int ch_stub_answer_end(struct ch *h);

/* ---- stub downstream codec ------------------------------------------------------------------
 * Set h->force_down to it before ch_open. Client bytes are ignored: requests come from the
 * test, responses are recorded in h->sdown. */
extern const struct rem_down_ops ch_stub_down_ops;

/* Forgets what h->sdown recorded of the response. */
void ch_stub_down_clear(struct ch *h);
/* Starts a request as a downstream codec would: a new stream whose head holds method, target
 * and fields (a NULL-terminated list of name, value pairs; framing fields included) as
 * HTTP/1.1, then rem_stream_start. body: a body follows (ch_stub_request_body); without one the
 * request is complete at once. chunked: its length is unknown. Returns 0, or -1 when the conn
 * does not run the stub or a stream is in progress. */
int ch_stub_request(struct ch *h, const char *method, const char *target, const char *const *fields,
                    bool body, bool chunked);
/* The slow client read: sdown.full goes off and the stream hears the downstream drained
 * (rem_stream_on_down_writable). */
void ch_stub_down_drained(struct ch *h);
/* Queues request body bytes (end: the last of them); they go to the stream from the conn's
 * kick once its upconn is ready. 0 or -1. */
int ch_stub_request_body(struct ch *h, const void *p, size_t n, bool end);

/* ---- an nghttp2 peer of the test (client toward h2_down, app toward h2_up) ------------- */

/* What the peer received and the body it sends; the peer's own struct embeds it as `rx` and
 * passes that as the session's user data to the recorders below. */
struct ch_h2_rx {
    struct evbuffer *fields; /* "name: value\r\n" per received field, pseudo ones too */
    struct evbuffer *data;   /* received DATA payload */
    const char *body;        /* what the data provider sends */
    size_t body_len, body_off;
    const char *const *trailers; /* name, value, ..., NULL: sent after the body; NULL: none */
};

/* Returns 0 or -1 (out of memory). dispose is NULL-safe on a zeroed rx. */
int ch_h2_rx_init(struct ch_h2_rx *rx);
void ch_h2_rx_dispose(struct ch_h2_rx *rx);
/* nghttp2 callbacks recording into the rx given as user data. */
int ch_h2_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                    const uint8_t *value, size_t vlen, uint8_t flags, void *arg);
int ch_h2_on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                        size_t len, void *arg);
/* Data provider over rx->body; at its end the trailers (if any) go as a trailing HEADERS. */
ssize_t ch_h2_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                        uint32_t *flags, nghttp2_data_source *src, void *arg);

#endif
