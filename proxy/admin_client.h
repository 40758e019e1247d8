/* SPDX-License-Identifier: Apache-2.0
 * admin_client: `remora --admin-request METHOD PATH`, a blocking one-shot HTTP/1.1 client for
 * remora's own admin port, so an image without a shell or curl can still POST /drain from a
 * preStop hook or read /readyz. Runs in the CLI process only, never in a serving remora. */
#ifndef REM_ADMIN_CLIENT_H
#define REM_ADMIN_CLIENT_H

#include <stdio.h>

struct rem_cfg_listener;

/* Sends METHOD PATH to the admin address (a wildcard address means loopback), waits at most
 * timeout_ms for the whole answer, writes its body to out. Returns the HTTP status, or -1 with
 * the reason on stderr. */
int rem_admin_request(const struct rem_cfg_listener *admin, const char *method, const char *path,
                      unsigned timeout_ms, FILE *out);

#endif
