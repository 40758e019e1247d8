/* SPDX-License-Identifier: Apache-2.0
 * watch: tells the main thread that a file may have changed, with inotify on the file's
 * directory rather than the file, so every way a file is replaced is seen: an in-place edit,
 * an editor writing a new file and renaming it over the old one, and a Kubernetes ConfigMap
 * volume, where the kubelet swaps the `..data` symlink atomically (the file itself is a
 * symlink through it and never changes). Events for the file's name and for names starting
 * with ".." (the kubelet's) re-arm a debounce timer; the callback runs once the directory has
 * been quiet for debounce_ms, so one change is reported once. Whether the content really
 * changed is the caller's business. */
#ifndef REM_WATCH_H
#define REM_WATCH_H

#include <stdint.h>

struct event_base;
struct rem_watch;

/* Watches path's directory on base. Returns NULL with the reason logged (no inotify, the
 * directory cannot be watched); remora then reloads on SIGHUP only. */
struct rem_watch *rem_watch_new(struct event_base *base, const char *path, uint64_t debounce_ms,
                                void (*changed)(void *arg), void *arg);
/* NULL-safe. */
void rem_watch_free(struct rem_watch *w);

#endif
