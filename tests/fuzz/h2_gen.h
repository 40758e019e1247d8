/* SPDX-License-Identifier: Apache-2.0
 * h2_gen: structure-aware HTTP/2 input for the fuzz targets. A plain byte mutator rarely keeps
 * frame lengths, stream ids and HPACK blocks valid (fuzz_h2_frames stalls early), so here the
 * fuzzer's bytes are a sequence of frame descriptors (kind, flags, a stream id picked from a
 * small set relative to the last stream opened, payload kind) from which valid frames are
 * built; HEADERS blocks are HPACK-encoded with nghttp2_hd_deflate from fuzzer-chosen names and
 * values (pseudo-headers usually valid, sometimes not). DATA, trailers, RST_STREAM,
 * WINDOW_UPDATE, SETTINGS, PING, GOAWAY, PRIORITY, PUSH_PROMISE and CONTINUATION follow, and a
 * raw descriptor copies fuzzer bytes verbatim, so malformed frames stay reachable. The output
 * is split into segments the driver feeds one at a time (the loop runs between them). */
#ifndef REM_FUZZ_H2_GEN_H
#define REM_FUZZ_H2_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* Which peer the frames come from. */
enum h2gen_side {
    H2GEN_CLIENT, /* toward h2_down: requests; new streams are the next odd id */
    H2GEN_SERVER, /* toward h2_up: responses on the streams remora opened (1, 3, 5, ...) */
};

/* Most segments one input yields. */
#define H2GEN_MAX_SEGMENTS 16

/* The frames built from an input, in segments. */
struct h2gen_out {
    struct evbuffer *buf;               /* every segment's bytes, in order (owned) */
    size_t seg_end[H2GEN_MAX_SEGMENTS]; /* the end offset of each segment in buf */
    size_t n_segs;                      /* at least 1 */
    uint8_t knobs;                      /* the input's first byte: the driver's options */
    bool connect;                       /* some header block has :method CONNECT (a tunnel) */
};

/* Builds frames from data (its first byte goes to out->knobs, the rest are descriptors) as
 * side sends them. n_opened: for H2GEN_SERVER, the streams remora is known to have opened (1,
 * 3, ... up to 2 * n_opened - 1). Returns 0, or -1 (out of memory; out disposable). */
int h2gen_build(const uint8_t *data, size_t size, enum h2gen_side side, unsigned n_opened,
                struct h2gen_out *out);
/* Frees out->buf. NULL-safe on a zeroed out. */
void h2gen_dispose(struct h2gen_out *out);

/* Appends one frame header (9 bytes) and payload to b. */
void h2gen_frame(struct evbuffer *b, uint8_t type, uint8_t flags, uint32_t id, const void *payload,
                 size_t len);
/* Appends HEADERS (END_HEADERS, plus END_STREAM when end) carrying the n name, value pairs of
 * nv (C strings), HPACK-encoded with a fresh deflater. Returns 0 or -1. */
int h2gen_headers(struct evbuffer *b, uint32_t id, int end, const char *const *nv, size_t n);

#endif
