/* SPDX-License-Identifier: Apache-2.0
 * fuzz_parse: the config value parsers of proxy/config.c (durations, sizes, seconds, listener
 * addresses, Unix socket paths, upstream endpoints, host:port). The input's first byte picks
 * the parser, the rest is the string (up to the first NUL, as YAML hands it over). Besides
 * crashes it checks round trips: a parsed duration or size written back in its plainest form
 * parses to the same value, and an address or endpoint formatted by rem_sockaddr_str /
 * rem_cfg_endpoint_str parses back to the same address. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *s)
{
    fprintf(stderr, "fuzz_parse: %s: \"%s\"\n", what, s);
    abort();
}

static void check(unsigned which, const char *s)
{
    char buf[512];
    switch (which % 7) {
    case 0: {
        uint64_t v, w;
        if (rem_parse_duration_ms(s, &v) == 0) {
            snprintf(buf, sizeof(buf), "%" PRIu64 "ms", v);
            if (rem_parse_duration_ms(buf, &w) != 0 || w != v)
                fail("duration round trip", s);
        }
        break;
    }
    case 1: {
        uint64_t v, w;
        if (rem_parse_size_bytes(s, &v) == 0) {
            snprintf(buf, sizeof(buf), "%" PRIu64, v);
            if (rem_parse_size_bytes(buf, &w) != 0 || w != v)
                fail("size round trip", s);
        }
        break;
    }
    case 2: {
        double d;
        if (rem_parse_seconds(s, &d) == 0 && !isfinite(d))
            fail("seconds not finite", s);
        break;
    }
    case 3:
    case 4: {
        struct rem_sockaddr a, b;
        const char *why = NULL;
        memset(&a, 0, sizeof(a));
        memset(&b, 0, sizeof(b));
        int rc = which % 7 == 3 ? rem_parse_sockaddr(s, &a) : rem_parse_unix(s, &a, &why);
        if (rc == 0) {
            if (rem_sockaddr_str(&a, buf, sizeof(buf)) != 0)
                fail("address not formatted", s);
            if (rem_parse_sockaddr(buf, &b) != 0 || a.len != b.len ||
                memcmp(&a.ss, &b.ss, a.len) != 0)
                fail("address round trip", s);
        }
        break;
    }
    case 5: {
        struct rem_cfg_endpoint e = {0}, f = {0};
        const char *why = NULL;
        if (rem_parse_endpoint(s, &e, &why) == 0) {
            if (rem_cfg_endpoint_str(&e, buf, sizeof(buf)) != 0)
                fail("endpoint not formatted", s);
            if (rem_parse_endpoint(buf, &f, &why) != 0 || strcmp(e.host, f.host) != 0 ||
                e.port != f.port || e.is_name != f.is_name || e.is_unix != f.is_unix)
                fail("endpoint round trip", s);
            free(f.host);
            free(e.host);
        }
        break;
    }
    default: {
        char *host = NULL;
        uint16_t port;
        if (rem_parse_hostport(s, &host, &port) == 0)
            free(host);
        break;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *s = malloc(size); /* exact size: a read past the NUL is caught */
    if (!s)
        abort();
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    check(data[0], s);
    free(s);
    return 0;
}
