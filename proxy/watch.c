/* SPDX-License-Identifier: Apache-2.0
 * watch: inotify on the directories of a set of files with one debounce (watch.h). */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <event2/event.h>

#include "error.h"
#include "log.h"
#include "watch.h"

/* One watched file: its path as given, its directory and its name in it. */
struct watch_file {
    char *path, *dir, *name; /* owned */
    int wd;                  /* the directory's watch (shared by files in one directory) */
};

struct rem_watch {
    int fd;                 /* owned: the inotify instance */
    struct event *read_ev;  /* owned */
    struct event *quiet_ev; /* owned: the debounce timer */
    struct timeval debounce;
    struct watch_file *files; /* owned, [n] */
    size_t n;
    bool lost; /* a watched directory went away: its watch is gone */
    void (*changed)(void *arg);
    void *arg;
};

static void on_quiet(evutil_socket_t fd, short what, void *arg)
{
    struct rem_watch *w = arg;
    w->changed(w->arg);
}

/* Whether ev, on one of w's directories, may change one of w's files. */
static bool relevant(struct rem_watch *w, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW)
        return true; /* events were lost: assume the worst */
    for (size_t i = 0; i < w->n; i++) {
        if (w->files[i].wd != ev->wd)
            continue;
        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
            w->lost = true;
            return true;
        }
        if (ev->len && (strcmp(ev->name, w->files[i].name) == 0 || strncmp(ev->name, "..", 2) == 0))
            return true;
    }
    return false;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct rem_watch *w = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool any = false;
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0)
            break; /* EAGAIN: all read */
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            any = relevant(w, ev) || any;
            p += sizeof(*ev) + ev->len;
        }
    }
    if (any)
        event_add(w->quiet_ev, &w->debounce); /* re-arms: fires after the last event */
}

static bool has_path(const struct rem_watch *w, const char *path)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->files[i].path, path) == 0)
            return true;
    return false;
}

struct rem_watch *rem_watch_new(struct event_base *base, const char *const *paths, size_t n,
                                uint64_t debounce_ms, const char *what, void (*changed)(void *arg),
                                void *arg)
{
    struct rem_watch *w = rem_xcalloc(1, sizeof(*w));
    w->fd = -1;
    w->changed = changed;
    w->arg = arg;
    w->debounce.tv_sec = (time_t)(debounce_ms / 1000);
    w->debounce.tv_usec = (suseconds_t)((debounce_ms % 1000) * 1000);
    w->files = rem_xcalloc(n ? n : 1, sizeof(*w->files));
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) {
        rem_log_warn("%s: cannot watch files for changes (%s); reload with SIGHUP", what,
                     strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (has_path(w, paths[i]))
            continue;
        struct watch_file *f = &w->files[w->n++];
        const char *path = paths[i], *slash = strrchr(path, '/');
        f->path = strdup(path);
        f->dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
        f->name = strdup(slash ? slash + 1 : path);
        if (!f->path || !f->dir || !f->name)
            abort();
        f->wd =
            inotify_add_watch(w->fd, f->dir,
                              IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                                  IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
        if (f->wd < 0) {
            rem_log_warn("%s: cannot watch %s for changes (%s); reload with SIGHUP", what, f->dir,
                         strerror(errno));
            goto fail;
        }
    }
    w->read_ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_read, w);
    w->quiet_ev = evtimer_new(base, on_quiet, w);
    if (!w->read_ev || !w->quiet_ev || event_add(w->read_ev, NULL) < 0) {
        rem_log_warn("%s: cannot watch files for changes (out of memory)", what);
        goto fail;
    }
    return w;

fail:
    rem_watch_free(w);
    return NULL;
}

bool rem_watch_same(const struct rem_watch *w, const char *const *paths, size_t n)
{
    if (w->lost)
        return false;
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        if (!has_path(w, paths[i]))
            return false;
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = strcmp(paths[i], paths[j]) == 0;
        distinct += !dup;
    }
    return distinct == w->n;
}

void rem_watch_free(struct rem_watch *w)
{
    if (!w)
        return;
    if (w->read_ev)
        event_free(w->read_ev);
    if (w->quiet_ev)
        event_free(w->quiet_ev);
    if (w->fd >= 0)
        close(w->fd);
    for (size_t i = 0; i < w->n; i++) {
        free(w->files[i].path);
        free(w->files[i].dir);
        free(w->files[i].name);
    }
    free(w->files);
    free(w);
}
