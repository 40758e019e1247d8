/* SPDX-License-Identifier: Apache-2.0
 * test_error: unit tests for error.h: every row of the REM_ERRORS table has a unique label, a
 * well-formed two-letter termination code and a plausible status, and rem_err_from_rc maps
 * synchronous return codes back to the enum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "error.h"

/* The labels end up in x-remora-error and as Prometheus label values: snake case only. */
static bool is_snake(const char *s)
{
    if (*s < 'a' || *s > 'z')
        return false;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static void test_every_row_has_label_and_term(void **state)
{
    (void)state;
    for (int e = 0; e < REM_E__COUNT; e++) {
        const char *label = rem_err_label((enum rem_err)e);
        const char *term = rem_err_term((enum rem_err)e);

        assert_non_null(label);
        assert_true(strlen(label) > 0);
        assert_true(is_snake(label));
        assert_non_null(term);
        assert_int_equal(strlen(term), 2);
        /* error.h: first letter who (C S P R c s -), second the phase (R D C H Q T -, or K:
         * killed by the drain timeout in whatever phase it was). */
        assert_non_null(strchr("CSPRcs-", term[0]));
        assert_non_null(strchr("RDCHQTK-", term[1]));
    }
}

static void test_labels_are_unique(void **state)
{
    (void)state;
    for (int a = 0; a < REM_E__COUNT; a++)
        for (int b = a + 1; b < REM_E__COUNT; b++)
            if (strcmp(rem_err_label((enum rem_err)a), rem_err_label((enum rem_err)b)) == 0)
                fail_msg("rows %d and %d share the label %s", a, b, rem_err_label((enum rem_err)a));
}

static void test_statuses_are_zero_or_error_class(void **state)
{
    (void)state;
    for (int e = 0; e < REM_E__COUNT; e++) {
        int st = rem_err_status((enum rem_err)e);

        if (st != 0 && (st < 400 || st > 599))
            fail_msg("%s has status %d", rem_err_label((enum rem_err)e), st);
    }
}

static void test_well_known_rows(void **state)
{
    (void)state;
    assert_int_equal(REM_E_OK, 0);
    assert_int_equal(rem_err_status(REM_E_OK), 0);
    assert_string_equal(rem_err_term(REM_E_OK), "--");
    assert_string_equal(rem_err_label(REM_E_OK), "ok");

    assert_int_equal(rem_err_status(REM_E_BAD_REQUEST), 400);
    assert_int_equal(rem_err_status(REM_E_HEADER_TOO_LARGE), 431);
    assert_int_equal(rem_err_status(REM_E_TOO_MANY_HEADERS), 431);
    assert_int_equal(rem_err_status(REM_E_BODY_TOO_LARGE), 413);
    assert_int_equal(rem_err_status(REM_E_UNSUPPORTED_TE), 501);
    assert_int_equal(rem_err_status(REM_E_NO_ROUTE), 404);
    assert_int_equal(rem_err_status(REM_E_REQUEST_HEADER_TIMEOUT), 408);
    assert_int_equal(rem_err_status(REM_E_CONNECT_REFUSED), 502);
    assert_int_equal(rem_err_status(REM_E_CONNECT_TIMEOUT), 504);
    assert_int_equal(rem_err_status(REM_E_UPSTREAM_TIMEOUT), 504);
    assert_int_equal(rem_err_status(REM_E_UPSTREAM_RESET), 502);
    assert_int_equal(rem_err_status(REM_E_SHUTDOWN), 503);

    /* Nothing can be sent downstream for these. */
    assert_int_equal(rem_err_status(REM_E_CONFIG), 0);
    assert_int_equal(rem_err_status(REM_E_CLIENT_ABORT), 0);
    assert_int_equal(rem_err_status(REM_E_UPSTREAM_TRUNCATED), 0);

    assert_string_equal(rem_err_label(REM_E_NO_ROUTE), "no_route");
    assert_string_equal(rem_err_label(REM_E_UNSUPPORTED_TE), "unsupported_transfer_encoding");
    assert_string_equal(rem_err_term(REM_E_NO_ROUTE), "PR");
    assert_string_equal(rem_err_term(REM_E_REQUEST_HEADER_TIMEOUT), "cR");
    assert_string_equal(rem_err_term(REM_E_CONNECT_TIMEOUT), "sC");
    assert_string_equal(rem_err_term(REM_E_UPSTREAM_TIMEOUT), "sH");
    assert_string_equal(rem_err_term(REM_E_UPSTREAM_RESET), "SH");
    assert_string_equal(rem_err_term(REM_E_BODY_TOO_LARGE), "CD");
}

/* Client-side timeouts are lower-case 'c', upstream ones lower-case 's' (error.h legend). */
static void test_timeouts_use_lower_case_who(void **state)
{
    (void)state;
    assert_int_equal(rem_err_term(REM_E_REQUEST_HEADER_TIMEOUT)[0], 'c');
    assert_int_equal(rem_err_term(REM_E_CLIENT_TIMEOUT)[0], 'c');
    assert_int_equal(rem_err_term(REM_E_CONNECT_TIMEOUT)[0], 's');
    assert_int_equal(rem_err_term(REM_E_UPSTREAM_TIMEOUT)[0], 's');
}

static void test_err_from_rc(void **state)
{
    (void)state;
    assert_int_equal(rem_err_from_rc(0), REM_E_OK);
    assert_int_equal(rem_err_from_rc(1), REM_E_OK);
    assert_int_equal(rem_err_from_rc(12345), REM_E_OK);
    assert_int_equal(rem_err_from_rc(-REM_E_NOMEM), REM_E_NOMEM);
    assert_int_equal(rem_err_from_rc(-REM_E_NO_ROUTE), REM_E_NO_ROUTE);
    assert_int_equal(rem_err_from_rc(-REM_E_HEADER_TOO_LARGE), REM_E_HEADER_TOO_LARGE);
    for (int e = 1; e < REM_E__COUNT; e++)
        assert_int_equal(rem_err_from_rc(-e), e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_row_has_label_and_term),
        cmocka_unit_test(test_labels_are_unique),
        cmocka_unit_test(test_statuses_are_zero_or_error_class),
        cmocka_unit_test(test_well_known_rows),
        cmocka_unit_test(test_timeouts_use_lower_case_who),
        cmocka_unit_test(test_err_from_rc),
    };

    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
