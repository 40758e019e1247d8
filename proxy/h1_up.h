/* SPDX-License-Identifier: Apache-2.0
 * h1_up: the HTTP/1.1 upstream codec. Writes a stream's request (head, framed body, end) to an
 * upconn and parses the response with llhttp, handing head, body and end to the stream. */
#ifndef REM_H1_UP_H
#define REM_H1_UP_H

#include <stdbool.h>
#include <stddef.h>

struct rem_upconn;
struct rem_stream;

void rem_h1_up_init(struct rem_upconn *uc);
/* Resets the response parser for the next request on uc. */
void rem_h1_up_reset(struct rem_upconn *uc);

/* Return 0 or -REM_E_NOMEM. */
int rem_h1_up_write_head(struct rem_upconn *uc, struct rem_stream *s);
int rem_h1_up_write_body(struct rem_upconn *uc, struct rem_stream *s, const char *p, size_t n);
int rem_h1_up_write_end(struct rem_upconn *uc, struct rem_stream *s);

/* Parses buffered response bytes (unless paused). Calls the stream; may release or close uc. */
void rem_h1_up_process(struct rem_upconn *uc);
/* The upstream closed: completes a close-delimited response or reports the failure. */
void rem_h1_up_on_eof(struct rem_upconn *uc);

#endif
