/* SPDX-License-Identifier: Apache-2.0
 * watch: tells the main thread that one of a set of files may have changed, with inotify on
 * each file's directory rather than the file, so every way a file is replaced is seen: an
 * in-place edit, an editor writing a new file and renaming it over the old one, and a
 * Kubernetes ConfigMap or Secret volume, where the kubelet swaps the `..data` symlink
 * atomically (the file itself is a symlink through it and never changes). Events for one of
 * the files' names and for names starting with ".." (the kubelet's) in its directory re-arm a
 * debounce timer; the callback runs once the directories have been quiet for debounce_ms, so
 * one change is reported once, even when it touches several files. Whether the content
 * really changed is the caller's business. Used for the config file and for the certificates
 * keys and client CAs of the TLS listeners (main.c). */
#ifndef REM_WATCH_H
#define REM_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct rem_watch;

/* Watches the directories of the n files in paths (one inotify instance; a directory holding
 * several of them is watched once) on base; changed(arg) runs on base after debounce_ms of
 * quiet following a relevant event. A watched directory that is removed or moved away (a
 * path through `..data` names the timestamped directory behind it) is relevant too, and from
 * then on rem_watch_same is false: the caller makes a new watch. what ("config", "tls")
 * prefixes the log line. Returns NULL with the reason logged (no inotify, a directory that
 * cannot be watched); remora then reloads on SIGHUP only. paths are copied. */
struct rem_watch *rem_watch_new(struct event_base *base, const char *const *paths, size_t n,
                                uint64_t debounce_ms, const char *what, void (*changed)(void *arg),
                                void *arg);
/* Whether w watches exactly the files in paths (in any order, duplicates ignored) and still
 * has all of its directories. */
bool rem_watch_same(const struct rem_watch *w, const char *const *paths, size_t n);
/* NULL-safe. */
void rem_watch_free(struct rem_watch *w);

#endif
