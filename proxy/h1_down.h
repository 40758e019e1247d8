/* SPDX-License-Identifier: Apache-2.0
 * h1_down: the HTTP/1.1 downstream codec (RFC 9112) behind rem_down_ops. Parses requests from
 * a conn's input with llhttp into a stream's head, feeds request bodies to the stream, and
 * serializes the stream's response (head, body with chunked or length framing, end) to the
 * conn's output. Owns its per-conn state (the parser and the current stream); one stream at a
 * time. */
#ifndef REM_H1_DOWN_H
#define REM_H1_DOWN_H

#include "conn.h"

extern const struct rem_down_ops rem_h1_down_ops;

#endif
