/* SPDX-License-Identifier: Apache-2.0
 * h2_proto: head <-> nghttp2 header-list mapping shared by h2_down and h2_up. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "h2_proto.h"
#include "http.h"
#include "metrics.h"

static void lower(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        /* p is a field name in a head's buffer, never NULL; see .clang-tidy. */
        // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] = (char)(p[i] + ('a' - 'A'));
}

static nghttp2_nv nv_of(struct rem_head *h, const struct rem_hdr *x)
{
    char *name = h->buf + x->name_off;
    lower(name, x->name_len);
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)(h->buf + x->val_off), x->name_len, x->val_len,
                        x->kind == REM_HDR_REQUEST_ID ? NGHTTP2_NV_FLAG_NO_INDEX
                                                      : NGHTTP2_NV_FLAG_NONE};
}

/* Connection-specific and framing fields never go on an HTTP/2 stream (RFC 9113 8.2.2). */
static bool end_to_end(const struct rem_hdr *x)
{
    switch (x->kind) {
    case REM_HDR_HOP:
    case REM_HDR_CONNECTION:
    case REM_HDR_TRANSFER_ENCODING:
    case REM_HDR_HOST:
        return false;
    default:
        return true;
    }
}

size_t rem_h2_response_nva(struct rem_head *resp, char status[4], const char *rid, size_t rid_len,
                           nghttp2_nv *nva)
{
    size_t n = 0;
    int st = resp->status >= 100 && resp->status <= 999 ? resp->status : 502;
    status[0] = (char)('0' + st / 100);
    status[1] = (char)('0' + st / 10 % 10);
    status[2] = (char)('0' + st % 10);
    status[3] = '\0';
    nva[n++] = REM_H2_NV(":status", status, 3);
    for (uint32_t i = 0; i < resp->n_hdrs; i++) {
        const struct rem_hdr *x = &resp->hdrs[i];
        if (end_to_end(x))
            nva[n++] = nv_of(resp, x);
    }
    if (rid && resp->request_id_idx < 0)
        nva[n++] = REM_H2_NV_UNIQUE("x-request-id", rid, rid_len);
    return n;
}

nghttp2_nv *rem_h2_trailer_nva(struct rem_head *trl, size_t *n)
{
    *n = 0;
    if (trl->n_hdrs == 0)
        return NULL;
    rem_head_classify(trl);
    nghttp2_nv *nva = malloc(sizeof(*nva) * trl->n_hdrs);
    if (!nva)
        return NULL;
    for (uint32_t i = 0; i < trl->n_hdrs; i++) {
        const struct rem_hdr *x = &trl->hdrs[i];
        if (x->kind == REM_HDR_OTHER || x->kind == REM_HDR_REQUEST_ID)
            nva[(*n)++] = nv_of(trl, x);
    }
    return nva;
}

/* Appends the values of every field of kind, comma-joined, then extra. */
/* The values of every `kind` field joined with ", ", then extra; an empty extra (a client on a
 * Unix socket has no address) appends nothing. Returns the length, 0 for no value at all. */
static size_t joined(char *out, const struct rem_head *h, enum rem_hdr_kind kind, const char *extra)
{
    size_t o = 0;
    for (uint32_t i = 0; i < h->n_hdrs; i++) {
        const struct rem_hdr *x = &h->hdrs[i];
        if (x->kind != kind || x->val_len == 0)
            continue;
        if (o) {
            memcpy(out + o, ", ", 2);
            o += 2;
        }
        memcpy(out + o, REM_HDR_VAL(h, x), x->val_len);
        o += x->val_len;
    }
    if (*extra && o) {
        memcpy(out + o, ", ", 2);
        o += 2;
    }
    memcpy(out + o, extra, strlen(extra));
    return o + strlen(extra);
}

int rem_h2_request_build(struct rem_h2_request *r, struct rem_head *req, const char *client_addr,
                         const char *proto, const char *request_id, const char *default_host,
                         int64_t content_length, const char *protocol, size_t protocol_len,
                         const char *xfcc)
{
    size_t fwd = 0;
    for (uint32_t i = 0; i < req->n_hdrs; i++)
        if (req->hdrs[i].kind == REM_HDR_XFF || req->hdrs[i].kind == REM_HDR_XFP)
            fwd += req->hdrs[i].val_len + 2;
    size_t scratch = fwd + strlen(client_addr) + strlen(proto) + 24 + 8;
    r->n = 0;
    r->scratch = scratch <= sizeof(r->small_scratch) ? r->small_scratch : malloc(scratch);
    r->nva = req->n_hdrs + 12 <= REM_H2_SMALL_NV ? r->small_nva
                                                 : malloc(sizeof(*r->nva) * (req->n_hdrs + 12));
    if (!r->scratch || !r->nva) {
        rem_h2_request_dispose(r);
        return -REM_E_NOMEM;
    }
    char *sp = r->scratch;
    const char *target = rem_head_ptr(req, req->span_off[REM_SPAN_TARGET]);
    size_t target_len = req->span_len[REM_SPAN_TARGET];
    const char *auth = NULL, *rest;
    size_t auth_len = 0, rest_len;
    bool absolute = rem_http_absolute_form(target, target_len, &auth, &auth_len, &rest, &rest_len);
    if (absolute) {
        target = rest_len ? rest : "/";
        target_len = rest_len ? rest_len : 1;
    } else if (req->host_idx >= 0) {
        auth = REM_HDR_VAL(req, &req->hdrs[req->host_idx]);
        auth_len = req->hdrs[req->host_idx].val_len;
    } else if (default_host) {
        auth = default_host;
        auth_len = strlen(default_host);
    }
    size_t n = 0;
    nghttp2_nv *nva = r->nva;
    if (protocol) {
        nva[n++] = REM_H2_NV(":method", "CONNECT", 7);
        nva[n++] = REM_H2_NV(":protocol", protocol, protocol_len);
    } else {
        nva[n++] = REM_H2_NV(":method", rem_head_ptr(req, req->span_off[REM_SPAN_METHOD]),
                             req->span_len[REM_SPAN_METHOD]);
    }
    nva[n++] = REM_H2_NV(":scheme", "http", 4);
    if (auth)
        nva[n++] = REM_H2_NV(":authority", auth, auth_len);
    nva[n++] = REM_H2_NV(":path", target, target_len);
    bool te_trailers = false;
    for (uint32_t i = 0; i < req->n_hdrs; i++) {
        const struct rem_hdr *x = &req->hdrs[i];
        switch (x->kind) {
        case REM_HDR_OTHER:
            if (protocol &&
                rem_http_name_eq(REM_HDR_NAME(req, x), x->name_len, "sec-websocket-key"))
                break;
            nva[n++] = nv_of(req, x);
            break;
        case REM_HDR_REQUEST_ID:
            nva[n++] = nv_of(req, x);
            break;
        case REM_HDR_EXPECT:
            if (!rem_http_name_eq(REM_HDR_VAL(req, x), x->val_len, "100-continue"))
                nva[n++] = nv_of(req, x);
            break;
        case REM_HDR_HOP:
            /* RFC 9113 8.2.2: TE may go on, with "trailers" only (gRPC needs it). */
            if (rem_http_name_eq(REM_HDR_NAME(req, x), x->name_len, "te") &&
                rem_http_list_has(REM_HDR_VAL(req, x), x->val_len, "trailers"))
                te_trailers = true;
            break;
        default:
            break;
        }
    }
    if (te_trailers)
        nva[n++] = REM_H2_NV("te", "trailers", 8);
    size_t l = joined(sp, req, REM_HDR_XFF, client_addr);
    if (l)
        nva[n++] = REM_H2_NV("x-forwarded-for", sp, l);
    sp += l;
    l = joined(sp, req, REM_HDR_XFP, proto);
    nva[n++] = REM_H2_NV("x-forwarded-proto", sp, l);
    sp += l;
    if (req->request_id_idx < 0 && request_id)
        nva[n++] = REM_H2_NV_UNIQUE("x-request-id", request_id, strlen(request_id));
    if (xfcc)
        nva[n++] = REM_H2_NV("x-forwarded-client-cert", xfcc, strlen(xfcc));
    if (content_length >= 0) {
        int k = snprintf(sp, 24, "%" PRId64, content_length);
        nva[n++] = REM_H2_NV("content-length", sp, (size_t)k);
    }
    r->n = n;
    return 0;
}

void rem_h2_request_dispose(struct rem_h2_request *r)
{
    if (r->nva != r->small_nva)
        free(r->nva);
    if (r->scratch != r->small_scratch)
        free(r->scratch);
    r->nva = NULL;
    r->scratch = NULL;
}

void rem_h2_count_reset(struct rem_metrics_shard *m, enum rem_h2_side side, uint32_t code)
{
    REM_M_ADD(m->h2_resets[side][code < REM_H2_REASONS ? code : REM_H2_REASONS], 1);
}

void rem_h2_count_goaway(struct rem_metrics_shard *m, enum rem_h2_side side, uint32_t code)
{
    REM_M_ADD(m->h2_goaway[side][code < REM_H2_REASONS ? code : REM_H2_REASONS], 1);
}

void rem_h2_count_frame(struct rem_metrics_shard *m, enum rem_h2_side side, const nghttp2_frame *f)
{
    if (f->hd.type == NGHTTP2_RST_STREAM)
        rem_h2_count_reset(m, side, f->rst_stream.error_code);
    else if (f->hd.type == NGHTTP2_GOAWAY)
        rem_h2_count_goaway(m, side, f->goaway.error_code);
}

int rem_h2_data_out(struct evbuffer *out, const nghttp2_frame *f, const uint8_t *framehd,
                    struct evbuffer *src, size_t length)
{
    /* RFC 9113 6.1: frame header, Pad Length (padlen counts it), data, padding. */
    size_t pad = f->data.padlen > 0 ? f->data.padlen - 1 : 0;
    static const uint8_t zeros[256];
    uint8_t padlen = (uint8_t)pad;
    if (evbuffer_add(out, framehd, REM_H2_FRAME_HDLEN) < 0 ||
        (f->data.padlen > 0 && evbuffer_add(out, &padlen, 1) < 0) ||
        evbuffer_remove_buffer(src, out, length) != (int)length ||
        (pad > 0 && evbuffer_add(out, zeros, pad) < 0))
        return -REM_E_NOMEM;
    return 0;
}

int rem_h2_pump(nghttp2_session *ng, struct evbuffer *out, size_t high)
{
    while (evbuffer_get_length(out) < high) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(ng, &data);
        if (n <= 0)
            return (int)n;
        if (evbuffer_add(out, data, (size_t)n) < 0)
            return -REM_E_NOMEM;
    }
    return 0;
}
