/* SPDX-License-Identifier: Apache-2.0
 * identity: a verified client certificate's identity and its x-forwarded-client-cert form. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "identity.h"

struct rem_identity *rem_identity_new(const unsigned char digest[32], const char *subject,
                                      size_t subject_len)
{
    static const char hex[] = "0123456789abcdef";
    struct rem_identity *id = calloc(1, sizeof(*id));
    if (!id || !(id->subject = malloc(subject_len + 1))) {
        free(id);
        return NULL;
    }
    memcpy(id->subject, subject, subject_len);
    id->subject[subject_len] = '\0';
    for (size_t i = 0; i < 32; i++) {
        id->hash[2 * i] = hex[digest[i] >> 4];
        id->hash[2 * i + 1] = hex[digest[i] & 15];
    }
    id->hash[64] = '\0';
    return id;
}

int rem_identity_add_san(struct rem_identity *id, bool uri, const char *san, size_t len)
{
    char ***list = uri ? &id->uris : &id->dns;
    size_t *n = uri ? &id->n_uris : &id->n_dns;
    char **grown = realloc(*list, (*n + 1) * sizeof(**list));
    if (!grown)
        return -REM_E_NOMEM;
    *list = grown;
    char *copy = malloc(len + 1);
    if (!copy)
        return -REM_E_NOMEM;
    memcpy(copy, san, len);
    copy[len] = '\0';
    grown[(*n)++] = copy;
    return 0;
}

int rem_identity_finish(struct rem_identity *id)
{
    free(id->xfcc);
    id->xfcc = rem_identity_xfcc(id);
    return id->xfcc ? 0 : -REM_E_NOMEM;
}

void rem_identity_free(struct rem_identity *id)
{
    if (!id)
        return;
    free(id->subject);
    for (size_t i = 0; i < id->n_uris; i++)
        free(id->uris[i]);
    free(id->uris);
    for (size_t i = 0; i < id->n_dns; i++)
        free(id->dns[i]);
    free(id->dns);
    free(id->xfcc);
    free(id);
}

/* Envoy's rule for an XFCC value: quoted when it holds a separator of the header's own syntax
 * (',' between elements, ';' between pairs, '=' in a pair) or a quote; and a backslash, the
 * escape character inside quotes, so that no value can end its quotes early (a SAN ending in
 * '\' would otherwise escape the closing quote and let the next value's text be parsed as
 * pairs of its own). */
static bool needs_quotes(const char *v)
{
    return strpbrk(v, ",;=\"\\") != NULL;
}

/* Appends "key=value" (after a ';' unless first), quoted when quote, '"' and '\' escaped with
 * a backslash inside the quotes. Returns the new end; p has room (rem_identity_xfcc sizes for
 * the worst case: every byte escaped). */
static char *put_pair(char *p, bool first, const char *key, const char *v, bool quote)
{
    if (!first)
        *p++ = ';';
    size_t kl = strlen(key);
    memcpy(p, key, kl);
    p += kl;
    *p++ = '=';
    if (quote)
        *p++ = '"';
    for (; *v; v++) {
        if (quote && (*v == '"' || *v == '\\'))
            *p++ = '\\';
        *p++ = *v;
    }
    if (quote)
        *p++ = '"';
    return p;
}

char *rem_identity_xfcc(const struct rem_identity *id)
{
    const char *subject = id->subject ? id->subject : "";
    /* Worst case: every byte of a value escaped, plus key, '=', two quotes and ';'. */
    size_t need = sizeof("Hash=") + sizeof(id->hash) + 16 + 2 * strlen(subject);
    for (size_t i = 0; i < id->n_uris; i++)
        need += 2 * strlen(id->uris[i]) + 8;
    for (size_t i = 0; i < id->n_dns; i++)
        need += 2 * strlen(id->dns[i]) + 8;
    char *out = malloc(need);
    if (!out)
        return NULL;
    char *p = put_pair(out, true, "Hash", id->hash, false);
    p = put_pair(p, false, "Subject", subject, true);
    for (size_t i = 0; i < id->n_uris; i++)
        p = put_pair(p, false, "URI", id->uris[i], needs_quotes(id->uris[i]));
    for (size_t i = 0; i < id->n_dns; i++)
        p = put_pair(p, false, "DNS", id->dns[i], needs_quotes(id->dns[i]));
    *p = '\0';
    return out;
}

/* Whether san is name, or starts with name's text before a trailing '*'. */
/* Whether san matches name: equal, or starting with name's text before a trailing '*'; DNS
 * names compare without regard to case (RFC 4343). */
static bool san_matches(const char *san, const char *name, bool dns)
{
    size_t n = strlen(name);
    bool prefix = n > 0 && name[n - 1] == '*';
    if (prefix)
        return dns ? strncasecmp(san, name, n - 1) == 0 : strncmp(san, name, n - 1) == 0;
    return dns ? strcasecmp(san, name) == 0 : strcmp(san, name) == 0;
}

/* A value with a ':' names a URI SAN (a scheme: spiffe://..., urn:...), any other a DNS SAN (a
 * host name never holds one): each is compared with its own kind only, so a DNS SAN spelled
 * like a SPIFFE ID (a CA signs what a CSR asks) never passes for one. */
bool rem_identity_allowed(const struct rem_identity *id, char *const *allowed, size_t n)
{
    if (!id)
        return false;
    for (size_t k = 0; k < n; k++) {
        bool uri = strchr(allowed[k], ':') != NULL;
        char *const *sans = uri ? id->uris : id->dns;
        size_t n_sans = uri ? id->n_uris : id->n_dns;
        for (size_t i = 0; i < n_sans; i++)
            if (san_matches(sans[i], allowed[k], !uri))
                return true;
    }
    return false;
}

const char *rem_identity_first_san(const struct rem_identity *id)
{
    if (!id)
        return NULL;
    if (id->n_uris)
        return id->uris[0];
    return id->n_dns ? id->dns[0] : NULL;
}
