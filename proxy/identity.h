/* SPDX-License-Identifier: Apache-2.0
 * identity: who the client is, from the certificate it presented and remora verified (mTLS):
 * the SHA-256 of the certificate, its Subject and its URI and DNS SANs. Built once per conn
 * after the handshake (tls.c fills it from OpenSSL's peer certificate; io_tls.c hands it up
 * through the transport) and owned by the conn. Pure: formats the x-forwarded-client-cert value
 * and answers route checks; knows nothing of OpenSSL, sockets or streams. */
#ifndef REM_IDENTITY_H
#define REM_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

struct rem_identity {
    char hash[65]; /* SHA-256 of the certificate's DER, lower-case hex */
    char *subject; /* owned: the Subject, RFC 2253 ("CN=a,O=b"); "" when empty */
    char **uris;   /* owned: URI SANs in certificate order */
    size_t n_uris;
    char **dns; /* owned: DNS SANs in certificate order */
    size_t n_dns;
    char *xfcc; /* owned: the x-forwarded-client-cert value (rem_identity_finish) */
};

/* An identity with no SANs yet: hash from the certificate's SHA-256 digest, subject a copy of
 * the subject_len bytes at subject. NULL on out of memory. */
struct rem_identity *rem_identity_new(const unsigned char digest[32], const char *subject,
                                      size_t subject_len);
/* Appends a copy of san (len bytes, not NUL-terminated) to the URI SANs (uri true) or the DNS
 * SANs. Returns 0 or -REM_E_NOMEM (id unchanged). */
int rem_identity_add_san(struct rem_identity *id, bool uri, const char *san, size_t len);
/* Once hash, subject and SANs are set: formats id->xfcc. Returns 0 or -REM_E_NOMEM. */
int rem_identity_finish(struct rem_identity *id);
/* NULL-safe. */
void rem_identity_free(struct rem_identity *id);

/* The x-forwarded-client-cert element for id in Envoy's format (SANITIZE_SET: remora's is the
 * only one sent): Hash=<hex>;Subject="<subject>";URI=<uri>...;DNS=<dns>... with one URI= or DNS=
 * pair per SAN. Subject is always quoted; a URI or DNS value is quoted when it holds ',', ';',
 * '=', '"' or '\\'; inside quotes '"' and '\\' are escaped with a backslash. Returns a malloc'd
 * string or NULL (out of memory). */
char *rem_identity_xfcc(const struct rem_identity *id);

/* Whether id (NULL: no verified client certificate) has a SAN equal to one of the n names in
 * allowed: a name holding ':' against the URI SANs, any other against the DNS SANs (without
 * regard to case); a name ending in '*' matches SANs that start with what precedes it. */
bool rem_identity_allowed(const struct rem_identity *id, char *const *allowed, size_t n);

/* The SAN for the access log: the first URI SAN, else the first DNS SAN; NULL when id is NULL or
 * has none. */
const char *rem_identity_first_san(const struct rem_identity *id);

#endif
