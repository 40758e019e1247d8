/* SPDX-License-Identifier: Apache-2.0
 * h1_up: the HTTP/1.1 upstream codec behind rem_up_ops. Writes a stream's request (head,
 * framed body, end) to an upconn and parses the response with llhttp, handing head, body and
 * end to the stream. One stream per upconn at a time; owns its per-upconn state (the parser,
 * the attached stream). */
#ifndef REM_H1_UP_H
#define REM_H1_UP_H

#include "upconn.h"

extern const struct rem_up_ops rem_h1_up_ops;

#endif
