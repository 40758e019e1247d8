/* SPDX-License-Identifier: Apache-2.0
 * h2_proto: what both HTTP/2 codecs (h2_down, h2_up) share: mapping a parsed head to nghttp2
 * header lists (RFC 9113 8.2: lower-case names, no connection-specific fields, :authority from
 * Host), remora's gRPC status mapping, and the reset/GOAWAY counters. Pure; owns nothing. */
#ifndef REM_H2_PROTO_H
#define REM_H2_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "error.h"

struct evbuffer;
struct rem_head;
struct rem_metrics_shard;

#define REM_H2_NV(n, v, vl)                                                                        \
    ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE})
/* A field whose value is new on every message (x-request-id): never worth a slot in the
 * peer's HPACK dynamic table, and indexing it would evict the fields that repeat. */
#define REM_H2_NV_UNIQUE(n, v, vl)                                                                 \
    ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NO_INDEX})

#define REM_H2_FRAME_HDLEN 9 /* RFC 9113 4.1 */

enum rem_h2_side { REM_H2_SIDE_DOWN = 0, REM_H2_SIDE_UP, REM_H2_SIDE__N };

/* Fills nva (room for resp->n_hdrs + 4) with :status and the end-to-end fields of a response,
 * plus x-request-id when rid is not NULL. Header names are lower-cased in place. status must
 * have room for 4 bytes. Returns the count. */
size_t rem_h2_response_nva(struct rem_head *resp, char status[4], const char *rid, size_t rid_len,
                           nghttp2_nv *nva);

/* A trailer list (end-to-end fields of trl, classified here, names lower-cased in place):
 * returns a malloc'd array and its count in *n, or NULL (*n == 0 when trl has none). */
nghttp2_nv *rem_h2_trailer_nva(struct rem_head *trl, size_t *n);

/* Header lists up to this long are built on the stack (nghttp2 copies them when submitted):
 * no allocation for a typical head. */
#define REM_H2_SMALL_NV 32

/* What a request going upstream over HTTP/2 carries beyond the client's head. Lives on the
 * caller's stack while it is submitted. */
struct rem_h2_request {
    nghttp2_nv *nva; /* small_nva or owned: free with rem_h2_request_dispose */
    size_t n;
    char *scratch; /* small_scratch or owned: joined and formatted values */
    nghttp2_nv small_nva[REM_H2_SMALL_NV];
    char small_scratch[256];
};

/* Builds the request header list: :method, :scheme http, :authority (absolute-form authority,
 * Host, or default_host), :path, end-to-end fields, te: trailers when the client sent it,
 * X-Forwarded-For/-Proto joined with client_addr/proto ("http", "https"), X-Request-Id when the
 * head has none, x-forwarded-client-cert when xfcc is not NULL (the client's own is never
 * forwarded), content-length when >= 0. With protocol (length protocol_len) it is an extended
 * CONNECT (RFC 8441 4: :method CONNECT, :protocol; an HTTP/1.1 WebSocket handshake's
 * Sec-WebSocket-Key is left out, RFC 8441 5). Returns 0 or -REM_E_NOMEM. */
int rem_h2_request_build(struct rem_h2_request *r, struct rem_head *req, const char *client_addr,
                         const char *proto, const char *request_id, const char *default_host,
                         int64_t content_length, const char *protocol, size_t protocol_len,
                         const char *xfcc);
void rem_h2_request_dispose(struct rem_h2_request *r);

/* Moves the frames the session has to send into out until it has none or out holds high
 * bytes. Returns 0, an nghttp2 error (< 0) or -REM_E_NOMEM. Not for use inside ng's own
 * callbacks. */
int rem_h2_pump(nghttp2_session *ng, struct evbuffer *out, size_t high);

/* For a send_data_callback (a data provider that answered NGHTTP2_DATA_FLAG_NO_COPY): appends
 * the DATA frame f to out: its header framehd (REM_H2_FRAME_HDLEN bytes), then length bytes
 * moved from src (whole evbuffer chains move without a copy), with the padding f asks for.
 * Drains length bytes from src; src must hold them. Returns 0 or -REM_E_NOMEM. */
int rem_h2_data_out(struct evbuffer *out, const nghttp2_frame *f, const uint8_t *framehd,
                    struct evbuffer *src, size_t length);

/* Counts one RST_STREAM on a conn of that side (remora_http2_resets_total). */
void rem_h2_count_reset(struct rem_metrics_shard *m, enum rem_h2_side side, uint32_t code);
/* Counts f when it is a RST_STREAM or a GOAWAY (sent or received) on a conn of that side. */
/* Counts a GOAWAY sent or received on side with its error code (remora_http2_goaway_total). */
void rem_h2_count_goaway(struct rem_metrics_shard *m, enum rem_h2_side side, uint32_t code);
void rem_h2_count_frame(struct rem_metrics_shard *m, enum rem_h2_side side, const nghttp2_frame *f);

#endif
