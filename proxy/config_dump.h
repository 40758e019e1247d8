/* SPDX-License-Identifier: Apache-2.0
 * config_dump: the active config generation as JSON (GET /config on the admin port, Envoy's
 * config_dump): every key with its effective value after defaults and ${VAR} expansion, in
 * the file's own vocabulary (durations as "250ms"/"2s", sizes in bytes), plus a hash of the
 * dump and the time the generation was loaded. Pure: reads the generation, owns nothing. */
#ifndef REM_CONFIG_DUMP_H
#define REM_CONFIG_DUMP_H

#include <stdint.h>

struct evbuffer;
struct rem_config;

/* Appends the JSON document to out. Returns 0 or -REM_E_NOMEM. */
int rem_config_dump_json(const struct rem_config *cfg, struct evbuffer *out);
/* FNV-1a 64 of the dump without its "hash", "loaded_at" and "source" members: equal for equal
 * effective configurations, whatever the file's name or formatting. */
uint64_t rem_config_hash(const struct rem_config *cfg);

#endif
