/* SPDX-License-Identifier: Apache-2.0
 * h2_up: the HTTP/2 upstream codec (protocol h2c) behind rem_up_ops, over nghttp2's client
 * session. One session per upconn, carrying up to the app's SETTINGS_MAX_CONCURRENT_STREAMS
 * streams. Owns the session and the per-stream state of the attached streams (the streams
 * themselves are borrowed: each is owned by its conn). Request bodies leave through a data
 * provider (deferred when empty); response body bytes are given back as window only once the
 * downstream took them. Idle upconns are kept alive with PINGs. */
#ifndef REM_H2_UP_H
#define REM_H2_UP_H

#include "upconn.h"

/* Liveness on idle upconns: a PING every REM_H2_PING_TIMEOUT_MS; an upconn whose PING is not
 * acknowledged within that time, or that stayed idle for idle_timeout, is closed. */
#define REM_H2_PING_TIMEOUT_MS 1000

extern const struct rem_up_ops rem_h2_up_ops;

#endif
