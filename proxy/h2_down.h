/* SPDX-License-Identifier: Apache-2.0
 * h2_down: the HTTP/2 downstream codec (RFC 9113) over nghttp2's server session. One per conn
 * that opened with the connection preface (h2c prior knowledge; h2 over TLS will differ only in
 * the transport). Owns the nghttp2 session and the list of the conn's streams; each stream's
 * request head and body go to the stream, its response comes back through a data provider.
 * Flow control is the backpressure: automatic WINDOW_UPDATE is off and request body bytes are
 * given back as window only once the upconn took them. Also enforces the abuse limits of
 * listeners[].http2 that nghttp2 1.52 does not (rapid reset, control-frame floods). */
#ifndef REM_H2_DOWN_H
#define REM_H2_DOWN_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct evbuffer;
struct rem_conn;
struct rem_stream;

/* Whether in starts with the HTTP/2 connection preface. *need_more: in holds a strict prefix
 * of it, so the decision must wait. Peeks only. */
bool rem_h2_down_detect(struct evbuffer *in, bool *need_more);

/* Turns c into an HTTP/2 conn: creates the session and queues remora's SETTINGS. Returns 0 or
 * -REM_E_NOMEM. */
int rem_h2_down_init(struct rem_conn *c);
/* Feeds buffered input to the session and writes what it has to send. May close c. */
void rem_h2_down_process(struct rem_conn *c);
/* The conn's output drained: more frames may go. */
void rem_h2_down_on_drained(struct rem_conn *c);
/* No stream for client_idle_timeout: GOAWAY(NO_ERROR), then close. */
void rem_h2_down_idle(struct rem_conn *c);
/* The conn is closing: every stream is aborted (logged, freed). */
void rem_h2_down_abort_all(struct rem_conn *c);
/* Frees the session (from the conn's reaper). NULL-safe on c->h2. */
void rem_h2_down_free(struct rem_conn *c);
/* Number of streams of c still held. */
unsigned rem_h2_down_n_streams(const struct rem_conn *c);

/* Response side, called by stream. Each returns 0 or -REM_E_NOMEM. */
int rem_h2_down_write_head(struct rem_stream *s);
int rem_h2_down_write_interim(struct rem_stream *s);
int rem_h2_down_write_body(struct rem_stream *s, const char *p, size_t n);
/* End of the response; s->resp_trl, when not empty, goes as a trailing HEADERS frame. */
int rem_h2_down_write_end(struct rem_stream *s);
/* remora's own answer: status + x-remora-error, or for gRPC a trailers-only 200 with
 * grpc-status and grpc-message. */
int rem_h2_down_write_error(struct rem_stream *s, enum rem_err e);
/* The response bytes held for s are over the watermark: the upstream must pause. */
bool rem_h2_down_full(struct rem_stream *s);
/* An upconn took (or can take) request body: pending bytes go to it, window is given back. */
void rem_h2_down_req_resume(struct rem_stream *s);
/* The proxy side of s finished (it was logged and counted). The stream is reset if its
 * response is incomplete, and freed once nghttp2 has closed it too. */
void rem_h2_down_stream_done(struct rem_stream *s);

#endif
