/* SPDX-License-Identifier: Apache-2.0
 * h2_up: the HTTP/2 upstream codec (protocol h2c) over nghttp2's client session. One session
 * per upconn, carrying up to the app's SETTINGS_MAX_CONCURRENT_STREAMS streams. Owns the
 * session and the list of attached streams (borrowed: each stream is owned by its conn). Request
 * bodies leave through a data provider (deferred when empty); response body bytes are given
 * back as window only once the downstream took them. */
#ifndef REM_H2_UP_H
#define REM_H2_UP_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct rem_upconn;
struct rem_stream;

/* Creates uc's session (before connecting). Returns 0 or -REM_E_NOMEM. */
int rem_h2_up_init(struct rem_upconn *uc);
/* Frees the session; uc must be closed. NULL-safe on uc->h2. */
void rem_h2_up_free(struct rem_upconn *uc);

/* Whether uc can take one more stream (not draining, under the app's concurrency limit). */
bool rem_h2_up_has_room(const struct rem_upconn *uc);
/* Attaches s (s->upconn = uc). */
void rem_h2_up_attach(struct rem_upconn *uc, struct rem_stream *s);
unsigned rem_h2_up_n_streams(const struct rem_upconn *uc);

/* The connect completed: SETTINGS go out and every waiting stream is made ready. */
void rem_h2_up_connected(struct rem_upconn *uc);
/* Input arrived / output drained. May fail streams and close uc. */
void rem_h2_up_process(struct rem_upconn *uc);
void rem_h2_up_on_drained(struct rem_upconn *uc);
/* uc's timer fired while active: response timeouts of its streams. */
void rem_h2_up_on_timer(struct rem_upconn *uc);
/* Liveness on idle upconns: a PING every REM_H2_PING_TIMEOUT_MS; an upconn whose PING is not
 * acknowledged within that time, or that stayed idle for idle_timeout, is closed. */
#define REM_H2_PING_TIMEOUT_MS 1000
void rem_h2_up_idle_tick(struct rem_upconn *uc);
/* Closes uc and tells every attached stream e (those never sent are marked unprocessed). */
void rem_h2_up_fail_all(struct rem_upconn *uc, enum rem_err e);
/* uc is closing: streams are detached without being called back. */
void rem_h2_up_detach_all(struct rem_upconn *uc);

/* Request side, called by stream. Each returns 0 or -REM_E_NOMEM. */
int rem_h2_up_write_head(struct rem_upconn *uc, struct rem_stream *s);
int rem_h2_up_write_body(struct rem_upconn *uc, struct rem_stream *s, const char *p, size_t n);
int rem_h2_up_write_end(struct rem_upconn *uc, struct rem_stream *s);
/* s gives up its exchange: RST_STREAM(CANCEL) and detach; uc stays for the others. */
void rem_h2_up_cancel(struct rem_upconn *uc, struct rem_stream *s);
/* The downstream took response bytes: give the window back. */
void rem_h2_up_resume(struct rem_upconn *uc, struct rem_stream *s);

#endif
