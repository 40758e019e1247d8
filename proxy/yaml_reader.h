/* SPDX-License-Identifier: Apache-2.0
 * yaml_reader: a typed reader over one YAML document, for loaders that walk a schema by hand.
 * It reads a file or a buffer with libyaml's document API, refuses a second document, hands
 * the root node to the caller, and collects every error as "NAME:LINE:COL: text" in file
 * order. Scalars are expanded (${VAR}, ${VAR:-default}, "$$") and typed: string, unsigned
 * integer, boolean, one of a list; a mapping is matched against the caller's table of keys.
 *
 * It owns the libyaml parser and document for the length of one read and its messages until
 * they are taken. It knows no schema: what a key means, its default, its range and the checks
 * across sections belong to the caller (config_parse.c for remora's configuration).
 *
 * Messages. NAME is the name given to rem_yaml_reader_new; LINE and COL are 1-based and point
 * at the first character of the node (or key) at fault; an error with no place in the file
 * (the file cannot be read, a value that came from a default) is "NAME: text". A quoted value
 * in a message has '"' and '\' escaped, control bytes as \xNN, and is cut with "..." to fit in
 * 96 bytes. After 100 errors one last message "NAME: too many errors, giving up after 100"
 * stands for the rest, which are still counted.
 *
 * Nodes are libyaml's, borrowed from the document: valid only inside the rem_yaml_doc_cb of
 * the read that produced them. */
#ifndef REM_YAML_READER_H
#define REM_YAML_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "error.h"

/* One read of one document and the errors found in it. Opaque. */
struct rem_yaml_reader;

/* Called once per successful parse with the document's root node, NULL for an empty
 * document. The callback reports what is wrong with rem_yaml_errorf and friends; the read's
 * result counts those errors. It must not start another read on y. */
typedef void (*rem_yaml_doc_cb)(struct rem_yaml_reader *y, yaml_node_t *root, void *arg);

/* A message-sized, quoted and escaped copy of a value; see rem_yaml_quote. */
struct rem_yaml_quoted {
    char s[96];
};

/* A mapping key the caller knows. The caller sets key; rem_yaml_map_fields sets the rest. */
struct rem_yaml_field {
    const char *key;
    yaml_node_t *key_node; /* the key as found, NULL when absent; borrowed */
    yaml_node_t *val;      /* its value, NULL when absent; borrowed */
};

/* A reader for one read; name (copied) is NAME in every message and must not be NULL.
 * Aborts on OOM. */
struct rem_yaml_reader *rem_yaml_reader_new(const char *name);
/* Frees y and the messages not taken. NULL-safe. */
void rem_yaml_reader_free(struct rem_yaml_reader *y);

/* Parses buf (len bytes, need not be NUL-terminated) as exactly one YAML document and calls
 * on_doc(y, root, arg) before returning. A syntax error anywhere, the first document's or a
 * second one's, is reported ("YAML syntax error: PROBLEM" or "YAML syntax error: PROBLEM
 * (CONTEXT at LINE:COL)", at the problem) and on_doc is not called. A second document is
 * reported ("only one YAML document is allowed", at its root) after on_doc has run. At most one
 * read per reader. Returns 0 when no error was reported (by the read or by on_doc), else
 * -REM_E_NOMEM when libyaml ran out of memory ("out of memory while reading YAML", no position)
 * or -REM_E_CONFIG. */
int rem_yaml_read_buffer(struct rem_yaml_reader *y, const char *buf, size_t len,
                         rem_yaml_doc_cb on_doc, void *arg);

/* Same, with the contents of the file at path, read whole (blocking: not for a worker). The
 * messages still name the reader's NAME. Returns what rem_yaml_read_buffer does, or
 * -REM_E_SYS when the file cannot be opened or read ("cannot open: STRERROR", "cannot read:
 * STRERROR") and -REM_E_CONFIG when it is over 4 MiB ("too large (more than 4194304 bytes)"),
 * those without a position and without calling on_doc. */
int rem_yaml_read_file(struct rem_yaml_reader *y, const char *path, rem_yaml_doc_cb on_doc,
                       void *arg);

/* Errors reported so far, including those past the message limit. */
size_t rem_yaml_n_errors(const struct rem_yaml_reader *y);

/* Moves the messages of y, in file order (by LINE then COL; those without a position last,
 * each group in the order reported), to the end of the caller's array *msgs of *n strings,
 * growing it with realloc. The caller then owns them: free each and the array. y keeps none.
 * Aborts on OOM. */
void rem_yaml_append_messages(struct rem_yaml_reader *y, char ***msgs, size_t *n);

/* Reports an error at node (its first character), or with no position when node is NULL. The
 * text is cut at 511 bytes. */
void rem_yaml_errorf(struct rem_yaml_reader *y, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reports "missing key \"KEY\" WHERE" at map, the mapping that lacks it. */
void rem_yaml_missing_key(struct rem_yaml_reader *y, const yaml_node_t *map, const char *key,
                          const char *where);

/* s quoted for a message (see the top of this file), in q; returns q->s. */
const char *rem_yaml_quote(struct rem_yaml_quoted *q, const char *s);

/* The node at libyaml index idx in the document being read (a sequence item, a mapping key or
 * value), or NULL when there is none. */
yaml_node_t *rem_yaml_node(struct rem_yaml_reader *y, int idx);

/* Counts one visit of node against the read's budget of 2^20 visits: aliases let a small file
 * name one large node many times, and the budget keeps the walk linear in what an alias-free
 * file could ask for. rem_yaml_map_fields counts each key itself; a caller walking a sequence
 * counts each item. Returns 0, or -REM_E_CONFIG once the budget is spent (reported once, at
 * the first node over it: "document too large (too many nodes after alias expansion)"). */
int rem_yaml_visit(struct rem_yaml_reader *y, const yaml_node_t *node);

/* Matches the keys of the mapping node against fields[0..n_fields): sets each field's key_node
 * and val, NULL for the keys absent. A NULL or null node (YAML's null: empty, "~" or "null", as
 * left by "key:") is an empty mapping. Each bad key is reported at the key and skipped:
 * "expected a scalar key WHERE, got a mapping|a sequence", "unknown key \"KEY\" WHERE",
 * "duplicate key \"KEY\" WHERE (first at LINE:COL)". subject and where are phrases for the
 * messages, e.g. "\"dns\"" and "in dns". Returns 0; -REM_E_CONFIG when node is not a mapping
 * ("expected a mapping for SUBJECT, got a sequence|a scalar", fields all NULL) or the visit
 * budget ran out (fields partly set). */
int rem_yaml_map_fields(struct rem_yaml_reader *y, yaml_node_t *node, const char *subject,
                        const char *where, struct rem_yaml_field *fields, size_t n_fields);

/* The items of the sequence node (not NULL): *items (libyaml indexes, for rem_yaml_node) and
 * their count *n; a null node has none. Returns 0, or -REM_E_CONFIG when node is not a sequence
 * ("expected a sequence for SUBJECT, got a mapping|a scalar"; *items NULL, *n 0). */
int rem_yaml_seq_items(struct rem_yaml_reader *y, yaml_node_t *node, const char *subject,
                       yaml_node_item_t **items, size_t *n);

/* The expanded text of the scalar node: ${VAR} is VAR from the environment, ${VAR:-default}
 * default when VAR is unset or empty (as in sh), "$$" one '$'; any other '$' stays. Returns a
 * malloc'd string the caller frees, or NULL with one error reported at node: "expected a
 * scalar for SUBJECT, got a mapping|a sequence", "missing value for SUBJECT" (null),
 * "NUL character in the value of SUBJECT", "unterminated \"${\" in VALUE", "bad variable
 * reference \"${...}\" (expected ${NAME} or ${NAME:-default})", "environment variable NAME is
 * not set". */
char *rem_yaml_scalar(struct rem_yaml_reader *y, yaml_node_t *node, const char *subject);

/* The typed getters read the value node of key (the YAML key, for the messages: SUBJECT is
 * "\"KEY\""). Each returns 0 and sets *out, or -REM_E_CONFIG with *out untouched and one error
 * reported at node: those of rem_yaml_scalar, or the one listed. */

/* *out gets the expanded text (malloc'd, the caller frees it); a previous *out is freed. */
int rem_yaml_get_string(struct rem_yaml_reader *y, yaml_node_t *node, const char *key, char **out);
/* Decimal digits only, in [min, max]: "expected an integer for \"KEY\", got VALUE", "\"KEY\"
 * must be between MIN and MAX, got VALUE". */
int rem_yaml_get_uint(struct rem_yaml_reader *y, yaml_node_t *node, const char *key, uint64_t min,
                      uint64_t max, uint64_t *out);
/* true, True, TRUE, false, False or FALSE (YAML 1.2's core schema; no yes/no or on/off):
 * "expected a boolean (true or false) for \"KEY\", got VALUE". */
int rem_yaml_get_bool(struct rem_yaml_reader *y, yaml_node_t *node, const char *key, bool *out);
/* One of names[] (NULL-terminated, compared exactly); *out gets its index. expected lists them
 * for the message: "bad value VALUE for \"KEY\" (expected EXPECTED)". */
int rem_yaml_get_enum(struct rem_yaml_reader *y, yaml_node_t *node, const char *key,
                      const char *const *names, const char *expected, int *out);

#endif
