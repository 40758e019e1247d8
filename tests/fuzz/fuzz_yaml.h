/* SPDX-License-Identifier: Apache-2.0
 * fuzz_yaml: config text the fuzz targets that build their own YAML share. */
#ifndef REM_FUZZ_YAML_H
#define REM_FUZZ_YAML_H

#include "codec_harness.h"

/* What follows the listeners and admin in such a config: one upstream "app" at CH_ENDPOINT
 * (never dialled), a catch-all route to it, logging at error level, no access log. */
#define FZ_YAML_APP_ROUTE                                                                          \
    "upstreams:\n"                                                                                 \
    "  - name: app\n"                                                                              \
    "    endpoints: [\"" CH_ENDPOINT "\"]\n"                                                       \
    "routes:\n"                                                                                    \
    "  - name: all\n"                                                                              \
    "    upstream: app\n"                                                                          \
    "log: { level: error, access_log: false }\n"

#endif
