/* SPDX-License-Identifier: MIT */
/*
 * log.c: error and access log sinks with per-thread, non-blocking buffered writes.
 *
 * Each thread that attached a loop owns, per sink, two buffers: lines are appended to the active
 * one while the other is being written by uv_fs_write in the thread pool. When the write
 * completes the buffers swap. Nothing is shared between threads but the file descriptors, and
 * writes of whole lines to O_APPEND files (or pipes, up to PIPE_BUF) do not interleave.
 */
#include "herald/log.h"
#include "herald/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define SINK_BUF_BYTES (64 * 1024)
#define LINE_MAX_BYTES 2048

enum { SINK_ERROR = 0, SINK_ACCESS = 1, SINK_COUNT };

int hd_log_level_ = HD_LOG_INFO;
static int sink_fd[SINK_COUNT] = {STDERR_FILENO, -1};
static int access_on;

typedef struct sink_state_s {
    uv_fs_t req;
    char *active, *writing;
    size_t active_len, writing_len, writing_off;
    unsigned is_writing : 1;
    uint64_t dropped;
    int which;
} sink_state_t;

static __thread const char *thread_name = "main";
static __thread uv_loop_t *thread_loop;
static __thread sink_state_t *thread_sinks;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void hd_log_set_level(int level)
{
    __atomic_store_n(&hd_log_level_, level, __ATOMIC_RELAXED);
}

static int open_into(int which, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(e));
        return -e;
    }
    int cur = __atomic_load_n(&sink_fd[which], __ATOMIC_ACQUIRE);
    if (cur >= 0 && cur != STDERR_FILENO) {
        /* Replace in place: other threads keep using the same number. */
        dup2(fd, cur);
        close(fd);
    } else {
        __atomic_store_n(&sink_fd[which], fd, __ATOMIC_RELEASE);
    }
    return 0;
}

int hd_log_open(const char *log_file, const char *access_log, char *err, size_t errlen)
{
    int rc;
    if (log_file && (rc = open_into(SINK_ERROR, log_file, err, errlen)) < 0)
        return rc;
    if (access_log) {
        if ((rc = open_into(SINK_ACCESS, access_log, err, errlen)) < 0)
            return rc;
        __atomic_store_n(&access_on, 1, __ATOMIC_RELEASE);
    } else {
        /* The descriptor stays open (another thread may be writing to it); lines stop. */
        __atomic_store_n(&access_on, 0, __ATOMIC_RELEASE);
    }
    return 0;
}

int hd_log_access_enabled(void)
{
    return __atomic_load_n(&access_on, __ATOMIC_ACQUIRE);
}

void hd_log_thread_name(const char *name)
{
    char comm[16]; /* the kernel keeps 15 bytes: "herald-w0", "herald-redis" */
    thread_name = name;
    snprintf(comm, sizeof(comm), "herald-%s", name);
    prctl(PR_SET_NAME, comm, 0, 0, 0);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void start_write(sink_state_t *s);

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t k = 0;
    for (const char *end = p + n; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        k++;
    return k;
}

static void on_write_cb(uv_fs_t *req)
{
    sink_state_t *s = hd_container_of(req, sink_state_t, req);
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    if (r > 0 && s->writing_off + (size_t)r < s->writing_len) {
        s->writing_off += (size_t)r; /* short write (pipe): write the rest */
    } else {
        if (r < 0) /* a write error (a full disk): its lines are lost, and counted */
            s->dropped += count_lines(s->writing + s->writing_off, s->writing_len - s->writing_off);
        s->writing_len = s->writing_off = 0;
    }
    s->is_writing = 0;
    start_write(s);
}

static void start_write(sink_state_t *s)
{
    if (s->is_writing)
        return;
    if (s->writing_len == 0) {
        if (s->active_len == 0)
            return;
        char *t = s->writing;
        s->writing = s->active;
        s->writing_len = s->active_len;
        s->writing_off = 0;
        s->active = t;
        s->active_len = 0;
    }
    uv_buf_t b =
        uv_buf_init(s->writing + s->writing_off, (unsigned)(s->writing_len - s->writing_off));
    int fd = __atomic_load_n(&sink_fd[s->which], __ATOMIC_ACQUIRE);
    if (uv_fs_write(thread_loop, &s->req, fd, &b, 1, -1, on_write_cb) == 0) {
        s->is_writing = 1;
    } else {
        s->dropped += count_lines(s->writing + s->writing_off, s->writing_len - s->writing_off);
        s->writing_len = s->writing_off = 0;
    }
}

static size_t format_time(char *out, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    k += (size_t)snprintf(out + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
    return k;
}

/* An error-log line, "TIME LEVEL THREAD message\n", into line[LINE_MAX_BYTES]; its length. */
static size_t format_line(char *line, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static size_t format_line(char *line, int level, const char *fmt, va_list ap)
{
    size_t n = format_time(line, LINE_MAX_BYTES);
    if (level < HD_LOG_DEBUG || level > HD_LOG_ERROR)
        level = HD_LOG_ERROR;
    n += (size_t)snprintf(line + n, LINE_MAX_BYTES - n, " %s %s ", level_names[level], thread_name);
    int k = vsnprintf(line + n, LINE_MAX_BYTES - n - 1, fmt, ap);
    if (k < 0)
        k = 0;
    n += (size_t)k;
    if (n > LINE_MAX_BYTES - 2)
        n = LINE_MAX_BYTES - 2;
    line[n++] = '\n';
    return n;
}

static size_t warn_line(char *line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t warn_line(char *line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = format_line(line, HD_LOG_WARN, fmt, ap);
    va_end(ap);
    return n;
}

/* Appends line to the thread's buffer of sink s: 0, or -1 when it does not fit. */
static int append(sink_state_t *s, const char *line, size_t len)
{
    if (s->active_len + len > SINK_BUF_BYTES)
        return -1;
    memcpy(s->active + s->active_len, line, len);
    s->active_len += len;
    return 0;
}

/* Room kept for a "lines dropped" line (its text is under 100 bytes). */
#define NOTE_BYTES 160

/*
 * Lines that do not fit the thread's buffer of a sink (the sink is slower than the thread logs)
 * are dropped and counted; once the error log's buffer has room again the count is written
 * there, as a line of its own: no line, access or error, is lost without the error log saying
 * how many were.
 */
static void emit(int which, const char *line, size_t len)
{
    int fd = __atomic_load_n(&sink_fd[which], __ATOMIC_ACQUIRE);
    if (fd < 0)
        return;
    if (!thread_sinks) {
        write_all(fd, line, len);
        return;
    }
    sink_state_t *s = &thread_sinks[which];
    sink_state_t *err = &thread_sinks[SINK_ERROR];
    size_t room = NOTE_BYTES + (which == SINK_ERROR ? len : 0);
    if (s->dropped && err->active_len + room <= SINK_BUF_BYTES) {
        char note[LINE_MAX_BYTES];
        size_t n = warn_line(note, "%llu %s lines dropped (log sink too slow or failing)",
                             (unsigned long long)s->dropped,
                             which == SINK_ERROR ? "error log" : "access log");
        if (append(err, note, n) == 0) {
            s->dropped = 0;
            start_write(err);
        }
    }
    if (append(s, line, len) < 0) {
        s->dropped++;
        return;
    }
    start_write(s);
}

void hd_log_printf(int level, const char *fmt, ...)
{
    char line[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    size_t n = format_line(line, level, fmt, ap);
    va_end(ap);
    emit(SINK_ERROR, line, n);
}

void hd_log_access(const char *line, size_t len)
{
    if (!hd_log_access_enabled())
        return;
    char tmp[LINE_MAX_BYTES];
    if (len > sizeof(tmp) - 1)
        len = sizeof(tmp) - 1;
    memcpy(tmp, line, len);
    tmp[len++] = '\n';
    emit(SINK_ACCESS, tmp, len);
}

void hd_log_thread_attach(uv_loop_t *loop)
{
    thread_loop = loop;
    thread_sinks = hd_calloc(SINK_COUNT, sizeof(sink_state_t));
    for (int i = 0; i < SINK_COUNT; i++) {
        thread_sinks[i].which = i;
        thread_sinks[i].active = hd_malloc(SINK_BUF_BYTES);
        thread_sinks[i].writing = hd_malloc(SINK_BUF_BYTES);
    }
}

void hd_log_thread_detach(void)
{
    sink_state_t *sinks = thread_sinks;
    if (!sinks)
        return;
    /* Any write still in flight completes inside the loop before it is closed; callers detach
     * after uv_run returned, so only unwritten bytes remain. */
    thread_sinks = NULL;
    for (int i = 0; i < SINK_COUNT; i++) {
        sink_state_t *s = &sinks[i];
        int fd = __atomic_load_n(&sink_fd[i], __ATOMIC_ACQUIRE);
        if (fd >= 0) {
            if (s->writing_len > s->writing_off && !s->is_writing)
                write_all(fd, s->writing + s->writing_off, s->writing_len - s->writing_off);
            write_all(fd, s->active, s->active_len);
        }
        if (!s->is_writing) {
            free(s->active);
            free(s->writing);
        }
    }
    if (!sinks[0].is_writing && !sinks[1].is_writing)
        free(sinks);
    thread_loop = NULL;
}
