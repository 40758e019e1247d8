/* SPDX-License-Identifier: Apache-2.0
 * h2_down: the HTTP/2 downstream codec (RFC 9113) behind rem_down_ops, over nghttp2's server
 * session. One per conn that opened with the connection preface (h2c prior knowledge) or that
 * negotiated h2 by ALPN over TLS: the same codec, two tables (only the name and the proto label
 * differ). Owns the nghttp2 session, the per-stream state of
 * the conn's streams, and the streams themselves until nghttp2 is done with them. Each stream's
 * request head and body go to the stream; its response comes back through a data provider.
 * Flow control is the backpressure: automatic WINDOW_UPDATE is off and request body bytes are
 * given back as window only once the upconn took them. Also enforces the abuse limits of
 * listeners[].http2 that nghttp2 1.52 does not (rapid reset, control-frame floods). */
#ifndef REM_H2_DOWN_H
#define REM_H2_DOWN_H

#include <stdbool.h>

#include "conn.h"

struct evbuffer;

/* h2c: cleartext, chosen by the preface. */
extern const struct rem_down_ops rem_h2_down_ops;
/* h2: over TLS, chosen by ALPN. */
extern const struct rem_down_ops rem_h2_down_tls_ops;

/* Whether in starts with the HTTP/2 connection preface. *need_more: in holds a strict prefix
 * of it, so the decision must wait. Peeks only. */
bool rem_h2_down_detect(struct evbuffer *in, bool *need_more);

#endif
