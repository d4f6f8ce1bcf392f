/* SPDX-License-Identifier: MIT */
/*
 * log.h: the error log and the access log.
 *
 * One line per event: "2026-11-28T12:00:00.123Z info w1 c#42 127.0.0.1:5000 http: message".
 * A thread that runs a uv loop attaches it (hd_log_thread_attach) and from then on its lines go
 * to a per-thread buffer written by uv_fs_write in libuv's thread pool, so a slow disk or a full
 * pipe on stderr never blocks the loop; when that buffer is full, lines are dropped and counted
 * ("N log lines dropped"). Threads without a loop write synchronously.
 *
 * The level check happens before the arguments are evaluated.
 */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stddef.h>
#include <uv.h>

/* Levels, lowest first; a line is written when its level is at least the configured one. */
enum { HD_LOG_DEBUG = 0, HD_LOG_INFO = 1, HD_LOG_WARN = 2, HD_LOG_ERROR = 3 };

extern int hd_log_level_;

static inline int hd_log_enabled(int level)
{
    return level >= __atomic_load_n(&hd_log_level_, __ATOMIC_RELAXED);
}

#define hd_log(level, ...)                                                                         \
    do {                                                                                           \
        if (hd_log_enabled(level))                                                                 \
            hd_log_printf(level, __VA_ARGS__);                                                     \
    } while (0)
#define hd_log_debug(...) hd_log(HD_LOG_DEBUG, __VA_ARGS__)
#define hd_log_info(...)  hd_log(HD_LOG_INFO, __VA_ARGS__)
#define hd_log_warn(...)  hd_log(HD_LOG_WARN, __VA_ARGS__)
#define hd_log_error(...) hd_log(HD_LOG_ERROR, __VA_ARGS__)

void hd_log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void hd_log_set_level(int level);

/*
 * Opens the sinks: log_file (NULL: stderr) and access_log (NULL: off). Called at start and, for
 * reopening after rotation, on SIGUSR1 and on reload: an open file is replaced in place (dup2),
 * so writes in flight on other threads land in the old or the new file, never nowhere.
 * Returns 0 or a negative errno with a message in err naming the file.
 */
int hd_log_open(const char *log_file, const char *access_log, char *err, size_t errlen);

/* Appends one access-log line (no newline needed) when the access log is on. */
void hd_log_access(const char *line, size_t len);
int hd_log_access_enabled(void);

/* Thread name used as the line prefix: "main", "w0", "w1", ...; also the thread's name in the
 * kernel ("herald-w0": top -H, perf, /proc/PID/task/TID/comm), so CPU shows per thread. */
void hd_log_thread_name(const char *name);
/* Routes this thread's lines through `loop` (asynchronous writes). */
void hd_log_thread_attach(uv_loop_t *loop);
/* Writes what is buffered synchronously and detaches; call before the loop is closed. */
void hd_log_thread_detach(void);

#endif
