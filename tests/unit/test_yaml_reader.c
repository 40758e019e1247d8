/* SPDX-License-Identifier: Apache-2.0
 * test_yaml_reader: unit tests for yaml_reader.h on a made-up schema (no remora config): typed
 * getters and their errors, messages as NAME:LINE:COL in file order whatever the walk order,
 * ${VAR} expansion, syntax errors and extra documents, a file that cannot be opened, and
 * messages appended after the caller's own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "yaml_reader.h"

/* What on_doc found in a document with the keys port, name, on, level and list. */
struct doc {
    bool called;
    uint64_t port;
    char *name;
    bool on;
    int level;
    size_t n_list;
};

static void on_doc(struct rem_yaml_reader *y, yaml_node_t *root, void *arg)
{
    static const char *const levels[] = {"low", "high", NULL};
    enum { F_PORT, F_NAME, F_ON, F_LEVEL, F_LIST, F_N };
    struct rem_yaml_field f[F_N] = {
        [F_PORT] = {.key = "port"},   [F_NAME] = {.key = "name"}, [F_ON] = {.key = "on"},
        [F_LEVEL] = {.key = "level"}, [F_LIST] = {.key = "list"},
    };
    struct doc *d = arg;
    yaml_node_item_t *items;

    d->called = true;
    if (rem_yaml_map_fields(y, root, "the document", "at top level", f, F_N) != 0)
        return;
    /* Walked last to first: the messages must still come out in file order. */
    if (f[F_LIST].val != NULL &&
        rem_yaml_seq_items(y, f[F_LIST].val, "\"list\"", &items, &d->n_list) == 0) {
        for (size_t i = 0; i < d->n_list; i++) {
            yaml_node_t *item = rem_yaml_node(y, items[i]);
            char *s;

            assert_non_null(item);
            assert_int_equal(rem_yaml_visit(y, item), 0);
            s = rem_yaml_scalar(y, item, "a list item");
            free(s);
        }
    }
    if (f[F_LEVEL].val != NULL)
        (void)rem_yaml_get_enum(y, f[F_LEVEL].val, "level", levels, "low or high", &d->level);
    if (f[F_ON].val != NULL)
        (void)rem_yaml_get_bool(y, f[F_ON].val, "on", &d->on);
    if (f[F_NAME].val == NULL)
        rem_yaml_missing_key(y, root, "name", "at top level");
    else
        (void)rem_yaml_get_string(y, f[F_NAME].val, "name", &d->name);
    if (f[F_PORT].val != NULL)
        (void)rem_yaml_get_uint(y, f[F_PORT].val, "port", 1, 65535, &d->port);
}

/* Reads text as "t.yaml" and checks the return code and the messages (NULL-terminated). */
static void read_expect(const char *text, struct doc *d, int want_rc, const char *const *want)
{
    struct rem_yaml_reader *y = rem_yaml_reader_new("t.yaml");
    char **msgs = NULL;
    size_t n = 0, n_want = 0;
    int rc;

    rc = rem_yaml_read_buffer(y, text, strlen(text), on_doc, d);
    rem_yaml_append_messages(y, &msgs, &n);
    while (want[n_want] != NULL)
        n_want++;
    for (size_t i = 0; i < n || i < n_want; i++) {
        const char *got = i < n ? msgs[i] : "(none)", *exp = i < n_want ? want[i] : "(none)";

        if (strcmp(got, exp) != 0)
            print_error("message %zu:\n  got:  %s\n  want: %s\n", i, got, exp);
    }
    assert_int_equal(rc, want_rc);
    assert_int_equal(n, n_want);
    assert_int_equal(rem_yaml_n_errors(y), n_want);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(msgs[i], want[i]);
        free(msgs[i]);
    }
    free(msgs);
    rem_yaml_reader_free(y);
}

static void test_typed_values(void **state)
{
    struct doc d = {0};

    (void)state;
    setenv("REM_T_YR_NAME", "remora", 1);
    read_expect("port: 8080\nname: ${REM_T_YR_NAME}-$$1\non: TRUE\nlevel: high\nlist: [a, b]\n", &d,
                0, (const char *const[]){NULL});
    assert_true(d.called);
    assert_int_equal(d.port, 8080);
    assert_string_equal(d.name, "remora-$1");
    assert_true(d.on);
    assert_int_equal(d.level, 1);
    assert_int_equal(d.n_list, 2);
    free(d.name);
}

static void test_type_error_at_line_col(void **state)
{
    struct doc d = {.port = 7};

    (void)state;
    read_expect("name: x\nport:   abc\n", &d, -REM_E_CONFIG,
                (const char *const[]){
                    "t.yaml:2:9: expected an integer for \"port\", got \"abc\"",
                    NULL,
                });
    assert_int_equal(d.port, 7); /* untouched on error */
    free(d.name);
}

static void test_messages_in_file_order(void **state)
{
    struct doc d = {0};

    (void)state;
    read_expect("port: 70000\non: yes\nbogus: 1\nlevel: mid\nlist: [ok, {a: 1}]\nport: 1\n", &d,
                -REM_E_CONFIG,
                (const char *const[]){
                    "t.yaml:1:1: missing key \"name\" at top level",
                    "t.yaml:1:7: \"port\" must be between 1 and 65535, got \"70000\"",
                    "t.yaml:2:5: expected a boolean (true or false) for \"on\", got \"yes\"",
                    "t.yaml:3:1: unknown key \"bogus\" at top level",
                    "t.yaml:4:8: bad value \"mid\" for \"level\" (expected low or high)",
                    "t.yaml:5:12: expected a scalar for a list item, got a mapping",
                    "t.yaml:6:1: duplicate key \"port\" at top level (first at 1:1)",
                    NULL,
                });
}

static void test_unset_variable(void **state)
{
    struct doc d = {0};

    (void)state;
    unsetenv("REM_T_YR_UNSET");
    read_expect("name: \"a ${REM_T_YR_UNSET}\"\n", &d, -REM_E_CONFIG,
                (const char *const[]){
                    "t.yaml:1:7: environment variable REM_T_YR_UNSET is not set",
                    NULL,
                });
    assert_null(d.name);
}

static void test_syntax_error_skips_the_walk(void **state)
{
    struct doc d = {0};

    (void)state;
    read_expect("name: x\nlist: [a, b\n", &d, -REM_E_CONFIG,
                (const char *const[]){
                    "t.yaml:3:1: YAML syntax error: did not find expected ',' or ']' (while "
                    "parsing a flow sequence at 2:7)",
                    NULL,
                });
    assert_false(d.called);
}

static void test_second_document(void **state)
{
    struct doc d = {0};

    (void)state;
    read_expect("name: x\n---\nname: y\n", &d, -REM_E_CONFIG,
                (const char *const[]){"t.yaml:3:1: only one YAML document is allowed", NULL});
    assert_true(d.called);
    free(d.name);
}

static void test_missing_file_and_append(void **state)
{
    struct rem_yaml_reader *y = rem_yaml_reader_new("/nonexistent/r.yaml");
    char **msgs = calloc(1, sizeof(*msgs));
    size_t n = 1;
    struct doc d = {0};

    (void)state;
    assert_non_null(msgs);
    msgs[0] = strdup("earlier");
    assert_int_equal(rem_yaml_read_file(y, "/nonexistent/r.yaml", on_doc, &d), -REM_E_SYS);
    assert_false(d.called);
    rem_yaml_append_messages(y, &msgs, &n);
    rem_yaml_reader_free(y);
    assert_int_equal(n, 2);
    assert_string_equal(msgs[0], "earlier");
    assert_string_equal(msgs[1], "/nonexistent/r.yaml: cannot open: No such file or directory");
    free(msgs[0]);
    free(msgs[1]);
    free(msgs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_typed_values),
        cmocka_unit_test(test_type_error_at_line_col),
        cmocka_unit_test(test_messages_in_file_order),
        cmocka_unit_test(test_unset_variable),
        cmocka_unit_test(test_syntax_error_skips_the_walk),
        cmocka_unit_test(test_second_document),
        cmocka_unit_test(test_missing_file_and_append),
    };

    return cmocka_run_group_tests_name("yaml_reader", tests, NULL, NULL);
}
