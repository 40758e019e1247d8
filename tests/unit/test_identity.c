/* SPDX-License-Identifier: Apache-2.0
 * Unit tests for proxy/identity: the x-forwarded-client-cert value (Envoy's format, quoting and
 * escaping), match.client_san checks and the access log's SAN. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "identity.h"

static const unsigned char digest[32] = {0x00, 0x01, 0x02, 0xab, 0xcd, 0xef, 0x10, 0xff};
#define HASH "000102abcdef10ff000000000000000000000000000000000000000000000000"

static struct rem_identity *make(const char *subject, const char *const *uris,
                                 const char *const *dns)
{
    struct rem_identity *id = rem_identity_new(digest, subject, strlen(subject));
    assert_non_null(id);
    for (; uris && *uris; uris++)
        assert_int_equal(rem_identity_add_san(id, true, *uris, strlen(*uris)), 0);
    for (; dns && *dns; dns++)
        assert_int_equal(rem_identity_add_san(id, false, *dns, strlen(*dns)), 0);
    assert_int_equal(rem_identity_finish(id), 0);
    return id;
}

static void test_xfcc_plain(void **state)
{
    (void)state;
    struct rem_identity *id =
        make("CN=web,O=remora tests",
             (const char *const[]){"spiffe://cluster.local/ns/default/sa/web", NULL},
             (const char *const[]){"web.default.svc", "web", NULL});
    assert_string_equal(id->hash, HASH);
    assert_string_equal(id->xfcc, "Hash=" HASH ";Subject=\"CN=web,O=remora tests\";"
                                  "URI=spiffe://cluster.local/ns/default/sa/web;"
                                  "DNS=web.default.svc;DNS=web");
    rem_identity_free(id);
}

static void test_xfcc_quoting(void **state)
{
    (void)state;
    /* Subject always quoted, its '"' and '\' escaped; a SAN quoted only when it holds , ; = " or
     * \. */
    struct rem_identity *id =
        make("CN=a \\\"b\\\",O=Example\\, Inc",
             (const char *const[]){"https://x/?a=1", "urn:a;b", "urn:plain", "urn:q\"", NULL},
             (const char *const[]){"a,b", NULL});
    assert_string_equal(id->xfcc, "Hash=" HASH ";Subject="
                                  "\"CN=a \\\\\\\"b\\\\\\\",O=Example\\\\, Inc\";"
                                  "URI=\"https://x/?a=1\";URI=\"urn:a;b\";URI=urn:plain;"
                                  "URI=\"urn:q\\\"\";DNS=\"a,b\"");
    rem_identity_free(id);
}

/* A reader of one XFCC element as a strict consumer parses it: key=value pairs split on ';'
 * outside quotes, a quoted value's backslash escaping the next byte. Appends each value of key
 * to out[] (at most max); returns how many, or -1 on a syntax error. */
static int values_of(const char *x, const char *key, char out[][128], int max)
{
    int n = 0;
    while (*x) {
        const char *eq = strchr(x, '=');
        if (!eq)
            return -1;
        size_t kl = (size_t)(eq - x);
        char v[128];
        size_t vl = 0;
        const char *p = eq + 1;
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (vl + 1 < sizeof(v))
                    v[vl++] = *p;
            }
            if (*p != '"')
                return -1;
            p++;
        } else {
            for (; *p && *p != ';'; p++)
                if (vl + 1 < sizeof(v))
                    v[vl++] = *p;
        }
        v[vl] = '\0';
        if (kl == strlen(key) && strncmp(x, key, kl) == 0 && n < max)
            memcpy(out[n++], v, vl + 1);
        if (*p == ';')
            p++;
        else if (*p)
            return -1;
        x = p;
    }
    return n;
}

static void test_xfcc_cannot_be_forged(void **state)
{
    (void)state;
    /* SANs a CA may sign as asked (CSR-driven): one ending in a backslash, then one that spells
     * pairs of its own. Parsed back with escapes honoured, the values are exactly the SANs: no
     * extra URI appears, and the Subject with '"' and '\' in it stays one value. */
    const char *const uris[] = {"spiffe://team/x;\\", "q;URI=spiffe://prod/admin;By=", NULL};
    const char *subject = "CN=evil\\\"\\;URI=spiffe://prod/admin";
    struct rem_identity *id = make(subject, uris, (const char *const[]){"a\\", NULL});
    char got[8][128];
    assert_int_equal(values_of(id->xfcc, "URI", got, 8), 2);
    assert_string_equal(got[0], uris[0]);
    assert_string_equal(got[1], uris[1]);
    assert_int_equal(values_of(id->xfcc, "Subject", got, 8), 1);
    assert_string_equal(got[0], subject);
    assert_int_equal(values_of(id->xfcc, "DNS", got, 8), 1);
    assert_string_equal(got[0], "a\\");
    assert_int_equal(values_of(id->xfcc, "By", got, 8), 0);
    rem_identity_free(id);
}

static void test_xfcc_no_sans(void **state)
{
    (void)state;
    struct rem_identity *id = make("", NULL, NULL);
    assert_string_equal(id->xfcc, "Hash=" HASH ";Subject=\"\"");
    assert_null(rem_identity_first_san(id));
    rem_identity_free(id);
}

static void test_allowed(void **state)
{
    (void)state;
    struct rem_identity *id =
        make("CN=web", (const char *const[]){"spiffe://cluster.local/ns/default/sa/web", NULL},
             (const char *const[]){"web.default.svc", NULL});
    char *uri[] = {"spiffe://cluster.local/ns/default/sa/db",
                   "spiffe://cluster.local/ns/default/sa/web"};
    char *dns[] = {"web.default.svc"};
    char *prefix[] = {"spiffe://cluster.local/ns/default/*"};
    char *other_prefix[] = {"spiffe://cluster.local/ns/kube-system/*"};
    char *partial[] = {"spiffe://cluster.local/ns/default/sa/we", "web.default"};
    assert_true(rem_identity_allowed(id, uri, 2));
    assert_false(rem_identity_allowed(id, uri, 1));
    assert_true(rem_identity_allowed(id, dns, 1));
    assert_true(rem_identity_allowed(id, prefix, 1));
    assert_false(rem_identity_allowed(id, other_prefix, 1));
    assert_false(rem_identity_allowed(id, partial, 2)); /* exact, not a prefix */
    assert_false(rem_identity_allowed(NULL, uri, 2));   /* no client certificate */
    char *upper[] = {"WEB.Default.SVC"};
    assert_true(rem_identity_allowed(id, upper, 1)); /* DNS names: any case */
    rem_identity_free(id);
    /* A DNS SAN spelled like a SPIFFE ID never passes for one, nor a URI SAN for a DNS name. */
    id = make("CN=x", (const char *const[]){"web.default.svc", NULL},
              (const char *const[]){"spiffe://cluster.local/ns/default/sa/web", NULL});
    assert_false(rem_identity_allowed(id, uri, 2));
    assert_false(rem_identity_allowed(id, prefix, 1));
    assert_false(rem_identity_allowed(id, dns, 1));
    rem_identity_free(id);
}

static void test_first_san(void **state)
{
    (void)state;
    struct rem_identity *both = make("CN=a", (const char *const[]){"urn:a", "urn:b", NULL},
                                     (const char *const[]){"a.example", NULL});
    struct rem_identity *dns = make("CN=a", NULL, (const char *const[]){"a.example", NULL});
    assert_string_equal(rem_identity_first_san(both), "urn:a");
    assert_string_equal(rem_identity_first_san(dns), "a.example");
    assert_null(rem_identity_first_san(NULL));
    rem_identity_free(both);
    rem_identity_free(dns);
    rem_identity_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xfcc_plain),
        cmocka_unit_test(test_xfcc_quoting),
        cmocka_unit_test(test_xfcc_cannot_be_forged),
        cmocka_unit_test(test_xfcc_no_sans),
        cmocka_unit_test(test_allowed),
        cmocka_unit_test(test_first_san),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
