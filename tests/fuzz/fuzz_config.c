/* SPDX-License-Identifier: Apache-2.0
 * fuzz_config: the whole configuration loader (libyaml, remora's YAML reader, every key's
 * parser and the cross-checks) over arbitrary bytes, as a reload reads a ConfigMap: a config or
 * a list of errors, never a crash, a leak or a hang. ${VAR} expansion reads the environment;
 * the fuzzer's environment is fixed, so runs repeat. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rem_config_diag diag = {0};
    struct rem_config *cfg = rem_config_load_bytes((const char *)data, size, "fuzz", &diag);
    rem_config_unref(cfg);
    rem_config_diag_dispose(&diag);
    return 0;
}
