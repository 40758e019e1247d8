/* SPDX-License-Identifier: Apache-2.0
 * h1_down: the HTTP/1.1 downstream codec (RFC 9112). Parses requests from a conn's input
 * with llhttp into a stream's head, feeds request bodies to the stream, and serializes the
 * stream's response (head, body with chunked or length framing, end) to the conn's output. */
#ifndef REM_H1_DOWN_H
#define REM_H1_DOWN_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct rem_conn;
struct rem_stream;

/* Sets up the parser of a new conn. */
void rem_h1_down_init(struct rem_conn *c);

/* Parses as much buffered input as the pause mask allows. Starts streams, forwards body
 * bytes, answers bad input (then closes). May close the conn. */
void rem_h1_down_process(struct rem_conn *c);

/* The request head did not arrive in time: 408, then close. */
void rem_h1_down_timeout(struct rem_conn *c);
/* The client closed mid-request: abort the stream. */
void rem_h1_down_eof(struct rem_conn *c);

/* Response side, called by stream. Each returns 0 or -REM_E_NOMEM. */
int rem_h1_down_write_head(struct rem_conn *c, struct rem_stream *s);
/* An interim 1xx head (status line and end-to-end headers only). */
int rem_h1_down_write_interim(struct rem_conn *c, struct rem_stream *s);
/* Appends body bytes (framed). */
int rem_h1_down_write_body(struct rem_conn *c, struct rem_stream *s, const char *p, size_t n);
/* Finishes the response (last chunk and trailers when chunked). */
int rem_h1_down_write_end(struct rem_conn *c, struct rem_stream *s);
/* remora's own error response for s (or for a conn with no stream when s is NULL). */
int rem_h1_down_write_error(struct rem_conn *c, struct rem_stream *s, enum rem_err e);
/* "100 Continue" (RFC 9110 10.1.1), sent once the upstream is ready for the body. */
int rem_h1_down_write_continue(struct rem_conn *c);

#endif
