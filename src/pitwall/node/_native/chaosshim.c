/*
 * Preloaded into pod processes (LD_PRELOAD) so TimeChaos and IOChaos can act
 * on running processes without root or ptrace.
 *
 * The kubelet gives every container a control file ($PITWALL_CHAOS_FILE);
 * pitwall's chaos controller writes the faults in force there (a new file
 * renamed over the old one) and removes them on recovery. At most every
 * CHECK_NS the first intercepted call stats the file and, when it changed
 * (inode, size or mtime), parses it again, so faults come and go without
 * restarting the process. Without the variable every call goes straight to
 * libc; a missing or unreadable file means no fault (fail open).
 *
 * The file holds one fault per line:
 *   time <offset ns> <clock id mask>
 *   io <l|f> <delay ns> <errno> <percent> <method mask> <glob>
 *   dns <e|r> [<pattern> ...]   (DNSChaos on getaddrinfo: e fails, r answers a random address)
 * Paths are matched after resolving them to absolute, symlink-free paths
 * (realpath for path arguments, /proc/self/fd for descriptors), only while
 * an io fault is in force.
 *
 * Thread safety: the time offset is one atomic word; io rules live in a
 * ring of SLOTS tables published by an atomic pointer, and a reader copies
 * what it needs before sleeping. Reloads take a try-lock (a thread that
 * loses keeps the current table). The file is read with raw system calls so
 * the reload never re-enters the wrappers. Static binaries (no dynamic
 * libc) never load this library.
 *
 * Built as an optional extension module only to be compiled by pip; it is
 * never imported and uses no Python API.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define CHECK_NS 100000000LL /* how often the control file is looked at */
#define MAX_RULES 16
#define MAX_PATTERN 512
#define SLOTS 4
#define FILE_MAX 16384

/* Chaos Mesh's method names the shim intercepts; the bit order matches pitwall.chaos.shimfaults.METHODS. */
enum { M_OPEN = 1, M_READ = 2, M_WRITE = 4, M_FLUSH = 8, M_FSYNC = 16, M_MKDIR = 32, M_UNLINK = 64,
       M_RMDIR = 128, M_RENAME = 256, M_CREATE = 512, M_RELEASE = 1024 };

struct rule {
    char action; /* 'l' latency, 'f' fault */
    long long delay_ns;
    int err;
    int percent;
    unsigned methods;
    char pattern[MAX_PATTERN];
};

struct table {
    int n;
    struct rule rules[MAX_RULES];
};

#define MAX_DNS 32
#define MAX_NAME 256

struct dns_rule {
    char action; /* 'e' error, 'r' random */
    char pattern[MAX_NAME]; /* Chaos Mesh's: '?' any one character, a final '*' any rest */
};

struct dns_table {
    int n;
    struct dns_rule rules[MAX_DNS];
};

static char control_path[PATH_MAX];
static int enabled;
static struct table slots[SLOTS];
static struct table *_Atomic current; /* NULL: no io fault */
static int next_slot;
static struct dns_table dns_slots[SLOTS];
static struct dns_table *_Atomic dns_current; /* NULL: no DNS fault */
static _Atomic long long time_offset_ns;
static _Atomic unsigned time_clocks;
static _Atomic long long next_check_ns;
static _Atomic int reloading;
static dev_t seen_dev;
static ino_t seen_ino;
static off_t seen_size;
static struct timespec seen_mtime;
static __thread uint64_t rng;

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
typedef int (*gettimeofday_fn)(struct timeval *, void *);
typedef time_t (*time_fn)(time_t *);
typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef ssize_t (*rw_fn)(int, void *, size_t);
typedef ssize_t (*prw_fn)(int, void *, size_t, off_t);
typedef ssize_t (*rwv_fn)(int, const struct iovec *, int);
typedef int (*fd_fn)(int);
typedef int (*path_fn)(const char *);
typedef int (*mkdir_fn)(const char *, mode_t);
typedef int (*mkdirat_fn)(int, const char *, mode_t);
typedef int (*unlinkat_fn)(int, const char *, int);
typedef int (*rename_fn)(const char *, const char *);
typedef int (*renameat_fn)(int, const char *, int, const char *);

static clock_gettime_fn real_clock_gettime;
static gettimeofday_fn real_gettimeofday;
static time_fn real_time;
static open_fn real_open, real_open64;
static openat_fn real_openat, real_openat64;
static rw_fn real_read, real_write;
static prw_fn real_pread, real_pread64, real_pwrite, real_pwrite64;
static rwv_fn real_readv, real_writev;
static fd_fn real_close, real_fsync, real_fdatasync;
static path_fn real_unlink, real_rmdir;
static mkdir_fn real_mkdir;
static mkdirat_fn real_mkdirat;
static unlinkat_fn real_unlinkat;
static rename_fn real_rename;
static renameat_fn real_renameat;

#define RESOLVE(var, name) (var = (__typeof__(var))dlsym(RTLD_NEXT, name))

static void after_fork_child(void) { reloading = 0; }

__attribute__((constructor)) static void chaosshim_init(void) {
    RESOLVE(real_clock_gettime, "clock_gettime");
    RESOLVE(real_gettimeofday, "gettimeofday");
    RESOLVE(real_time, "time");
    RESOLVE(real_open, "open");
    RESOLVE(real_open64, "open64");
    RESOLVE(real_openat, "openat");
    RESOLVE(real_openat64, "openat64");
    RESOLVE(real_read, "read");
    RESOLVE(real_write, "write");
    RESOLVE(real_pread, "pread");
    RESOLVE(real_pread64, "pread64");
    RESOLVE(real_pwrite, "pwrite");
    RESOLVE(real_pwrite64, "pwrite64");
    RESOLVE(real_readv, "readv");
    RESOLVE(real_writev, "writev");
    RESOLVE(real_close, "close");
    RESOLVE(real_fsync, "fsync");
    RESOLVE(real_fdatasync, "fdatasync");
    RESOLVE(real_unlink, "unlink");
    RESOLVE(real_rmdir, "rmdir");
    RESOLVE(real_mkdir, "mkdir");
    RESOLVE(real_mkdirat, "mkdirat");
    RESOLVE(real_unlinkat, "unlinkat");
    RESOLVE(real_rename, "rename");
    RESOLVE(real_renameat, "renameat");
    const char *p = getenv("PITWALL_CHAOS_FILE");
    if (p != NULL && p[0] == '/' && strlen(p) < sizeof control_path) {
        strcpy(control_path, p);
        pthread_atfork(NULL, NULL, after_fork_child);
        enabled = 1;
    }
}

static long long mono_ns(void) {
    struct timespec ts;
    if (real_clock_gettime == NULL || real_clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) {
        return 0;
    }
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One line of the control file into the time settings or a rule; a malformed line is ignored. */
static void parse_dns(char *line, struct dns_table *d) {
    char action = line[0];
    if ((action != 'e' && action != 'r') || (line[1] != ' ' && line[1] != '\0')) {
        return;
    }
    char *save = NULL;
    int any = 0;
    for (char *p = strtok_r(line + 1, " ", &save); p != NULL && d->n < MAX_DNS; p = strtok_r(NULL, " ", &save)) {
        if (strlen(p) < MAX_NAME) {
            d->rules[d->n].action = action;
            strcpy(d->rules[d->n++].pattern, p);
            any = 1;
        }
    }
    if (!any && d->n < MAX_DNS) { /* no patterns: every name */
        d->rules[d->n].action = action;
        strcpy(d->rules[d->n++].pattern, "*");
    }
}

static void parse_line(char *line, long long *offset, unsigned *clocks, struct table *t, struct dns_table *d) {
    if (strncmp(line, "dns ", 4) == 0) {
        parse_dns(line + 4, d);
        return;
    }
    if (strncmp(line, "time ", 5) == 0) {
        long long off;
        unsigned mask;
        if (sscanf(line + 5, "%lld %u", &off, &mask) == 2) {
            *offset += off;
            *clocks |= mask;
        }
        return;
    }
    if (strncmp(line, "io ", 3) != 0 || t->n >= MAX_RULES) {
        return;
    }
    struct rule *r = &t->rules[t->n];
    int used = 0;
    if (sscanf(line + 3, "%c %lld %d %d %u %n", &r->action, &r->delay_ns, &r->err, &r->percent, &r->methods,
               &used) < 5 || used == 0) {
        return;
    }
    const char *pat = line + 3 + used;
    if ((r->action != 'l' && r->action != 'f') || strlen(pat) == 0 || strlen(pat) >= MAX_PATTERN) {
        return;
    }
    strcpy(r->pattern, pat);
    t->n++;
}

static void load(void) {
    static char buf[FILE_MAX + 1];
    long long offset = 0;
    unsigned clocks = 0;
    struct table *t = &slots[next_slot];
    struct dns_table *d = &dns_slots[next_slot];
    t->n = 0;
    d->n = 0;
    long fd = syscall(SYS_openat, AT_FDCWD, control_path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        long n = syscall(SYS_read, (int)fd, buf, FILE_MAX);
        syscall(SYS_close, (int)fd);
        buf[n > 0 ? n : 0] = '\0';
        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
            parse_line(line, &offset, &clocks, t, d);
        }
    }
    time_offset_ns = offset;
    time_clocks = clocks;
    current = t->n > 0 ? t : NULL;
    dns_current = d->n > 0 ? d : NULL;
    next_slot = (next_slot + 1) % SLOTS;
}

/* Reload the control file when it changed; cheap (one clock read) between checks. */
static void refresh(void) {
    long long now = mono_ns();
    if (now < next_check_ns) {
        return;
    }
    int idle = 0;
    if (!__atomic_compare_exchange_n(&reloading, &idle, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        return;
    }
    next_check_ns = now + CHECK_NS;
    struct stat st;
    int saved = errno;
    if (syscall(SYS_newfstatat, AT_FDCWD, control_path, &st, 0) != 0) {
        memset(&st, 0, sizeof st); /* gone: every fault is off */
    }
    if (st.st_dev != seen_dev || st.st_ino != seen_ino || st.st_size != seen_size ||
        st.st_mtim.tv_sec != seen_mtime.tv_sec || st.st_mtim.tv_nsec != seen_mtime.tv_nsec) {
        seen_dev = st.st_dev;
        seen_ino = st.st_ino;
        seen_size = st.st_size;
        seen_mtime = st.st_mtim;
        load();
    }
    errno = saved;
    __atomic_store_n(&reloading, 0, __ATOMIC_RELEASE);
}

/* ---- TimeChaos ---------------------------------------------------------- */

static void shift(struct timespec *ts, long long off) {
    long long ns = (long long)ts->tv_nsec + off % 1000000000LL;
    long long sec = (long long)ts->tv_sec + off / 1000000000LL + ns / 1000000000LL;
    ns %= 1000000000LL;
    if (ns < 0) {
        ns += 1000000000LL;
        sec -= 1;
    }
    ts->tv_sec = (time_t)sec;
    ts->tv_nsec = (long)ns;
}

/* libc declares these pointers non-null, yet callers pass NULL (gettimeofday(NULL, &tz)): an opaque test. */
static int given(void *p) {
    __asm__("" : "+r"(p));
    return p != NULL;
}

static long long offset_for(clockid_t id) {
    if (!enabled) {
        return 0;
    }
    refresh();
    long long off = time_offset_ns;
    return off != 0 && id >= 0 && id < 32 && (time_clocks & (1u << id)) ? off : 0;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    if (real_clock_gettime == NULL) {
        RESOLVE(real_clock_gettime, "clock_gettime");
        if (real_clock_gettime == NULL) {
            return (int)syscall(SYS_clock_gettime, id, ts);
        }
    }
    int rc = real_clock_gettime(id, ts);
    if (rc == 0 && given(ts)) {
        long long off = offset_for(id);
        if (off != 0) {
            shift(ts, off);
        }
    }
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    if (real_gettimeofday == NULL) {
        RESOLVE(real_gettimeofday, "gettimeofday");
        if (real_gettimeofday == NULL) {
            return (int)syscall(SYS_gettimeofday, tv, tz);
        }
    }
    int rc = real_gettimeofday(tv, tz);
    if (rc == 0 && given(tv)) {
        long long off = offset_for(CLOCK_REALTIME);
        if (off != 0) {
            struct timespec ts = {tv->tv_sec, (long)tv->tv_usec * 1000};
            shift(&ts, off);
            tv->tv_sec = ts.tv_sec;
            tv->tv_usec = ts.tv_nsec / 1000;
        }
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return (time_t)-1;
    }
    if (out != NULL) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}

/* ---- IOChaos ------------------------------------------------------------ */

struct verdict {
    long long delay_ns;
    int err;
};

static int roll(int percent) {
    if (percent >= 100) {
        return 1;
    }
    if (rng == 0) {
        rng = (uint64_t)mono_ns() ^ ((uint64_t)(uintptr_t)&rng << 17) ^ 0x9e3779b97f4a7c15ULL;
    }
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int)(rng % 100) < percent;
}

/* A glob as Chaos Mesh's path filter reads it: '*' and '?' within one path component, '[...]' classes,
 * '**' as a component for any number of components, a backslash escaping the next character. */
static int glob_class(const char **pp, char c) {
    const char *p = *pp + 1;
    int negate = (*p == '!' || *p == '^');
    int hit = 0;
    if (negate) {
        p++;
    }
    for (int first = 1; *p != '\0' && (first || *p != ']'); first = 0, p++) {
        if (p[1] == '-' && p[2] != '\0' && p[2] != ']') {
            hit |= (c >= p[0] && c <= p[2]);
            p += 2;
        } else {
            hit |= (c == *p);
        }
    }
    if (*p != ']') {
        return -1; /* unterminated: a plain '[' */
    }
    *pp = p + 1;
    return hit != negate;
}

static int glob_match(const char *p, const char *s) {
    for (;;) {
        if (p[0] == '*' && p[1] == '*' && (p[2] == '/' || p[2] == '\0')) {
            const char *rest = p[2] == '/' ? p + 3 : p + 2;
            if (*rest == '\0') {
                return 1;
            }
            for (const char *t = s;; t++) {
                if ((t == s || t[-1] == '/') && glob_match(rest, t)) {
                    return 1;
                }
                if (*t == '\0') {
                    return 0;
                }
            }
        }
        if (*p == '*') {
            p++;
            for (const char *t = s;; t++) {
                if (glob_match(p, t)) {
                    return 1;
                }
                if (*t == '\0' || *t == '/') {
                    return 0;
                }
            }
        }
        if (*s == '\0') {
            return *p == '\0';
        }
        if (*p == '?' && *s != '/') {
            p++;
            s++;
            continue;
        }
        if (*p == '[' && *s != '/') {
            const char *q = p;
            int hit = glob_class(&q, *s);
            if (hit == 1) {
                p = q;
                s++;
                continue;
            }
            if (hit == 0) {
                return 0;
            }
        }
        if (*p == '\\' && p[1] != '\0') {
            p++;
        }
        if (*p != *s) {
            return 0;
        }
        p++;
        s++;
    }
}

/* The rules matching an absolute path for one method: delays add up, the first fault wins. */
static struct verdict judge(const char *path, unsigned method) {
    struct verdict v = {0, 0};
    struct table *t = current;
    if (t == NULL || path == NULL) {
        return v;
    }
    for (int i = 0; i < t->n && i < MAX_RULES; i++) {
        const struct rule *r = &t->rules[i];
        if ((r->methods != 0 && !(r->methods & method)) || !glob_match(r->pattern, path) || !roll(r->percent)) {
            continue;
        }
        if (r->action == 'l') {
            v.delay_ns += r->delay_ns;
        } else if (v.err == 0) {
            v.err = r->err;
        }
    }
    return v;
}

static int io_active(void) {
    if (!enabled) {
        return 0;
    }
    refresh();
    return current != NULL;
}

/* The absolute path an argument names: realpath of it, or of its directory when it does not exist yet. */
static int resolve_at(int dirfd, const char *path, char *out) {
    char joined[PATH_MAX];
    if (path == NULL) {
        return 0;
    }
    if (path[0] != '/' && dirfd != AT_FDCWD) {
        char link[64], dir[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, dir, sizeof dir - 1);
        if (n <= 0) {
            return 0;
        }
        dir[n] = '\0';
        if (snprintf(joined, sizeof joined, "%s/%s", dir, path) >= (int)sizeof joined) {
            return 0;
        }
        path = joined;
    }
    if (realpath(path, out) != NULL) {
        return 1;
    }
    const char *slash = strrchr(path, '/');
    char parent[PATH_MAX];
    if (slash == NULL) {
        strcpy(parent, ".");
    } else if (slash == path) {
        strcpy(parent, "/");
    } else {
        size_t len = (size_t)(slash - path);
        if (len >= sizeof parent) {
            return 0;
        }
        memcpy(parent, path, len);
        parent[len] = '\0';
    }
    char real_parent[PATH_MAX];
    const char *base = slash == NULL ? path : slash + 1;
    if (realpath(parent, real_parent) == NULL) {
        return 0;
    }
    return snprintf(out, PATH_MAX, "%s/%s", strcmp(real_parent, "/") == 0 ? "" : real_parent, base) < PATH_MAX;
}

static int resolve_fd(int fd, char *out) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, PATH_MAX - 1);
    if (n <= 0 || out[0] != '/') {
        return 0; /* a pipe, socket or anonymous file: never a volume's */
    }
    out[n] = '\0';
    return 1;
}

/* Apply the verdict: sleep the delay, then 0 to go on or -1 with errno set to fail the call. */
static int inflict(struct verdict v) {
    if (v.delay_ns > 0) {
        struct timespec d = {(time_t)(v.delay_ns / 1000000000LL), (long)(v.delay_ns % 1000000000LL)};
        int saved = errno;
        while (nanosleep(&d, &d) != 0 && errno == EINTR) {
        }
        errno = saved;
    }
    if (v.err != 0) {
        errno = v.err;
        return -1;
    }
    return 0;
}

static int check_path(int dirfd, const char *path, unsigned method) {
    char abs[PATH_MAX];
    if (!io_active()) {
        return 0;
    }
    int saved = errno;
    int ok = resolve_at(dirfd, path, abs);
    errno = saved;
    return ok ? inflict(judge(abs, method)) : 0;
}

static int check_fd(int fd, unsigned method) {
    char abs[PATH_MAX];
    if (!io_active()) {
        return 0;
    }
    int saved = errno;
    int ok = resolve_fd(fd, abs);
    errno = saved;
    return ok ? inflict(judge(abs, method)) : 0;
}

static unsigned open_method(int flags) { return (flags & O_CREAT) ? (M_OPEN | M_CREATE) : M_OPEN; }

static mode_t open_mode(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

#define NEED(var, name, fallback)                                                                            \
    do {                                                                                                     \
        if (var == NULL && RESOLVE(var, name) == NULL) {                                                     \
            errno = ENOSYS;                                                                                  \
            return fallback;                                                                                 \
        }                                                                                                    \
    } while (0)

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    NEED(real_open, "open", -1);
    if (check_path(AT_FDCWD, path, open_method(flags)) != 0) {
        return -1;
    }
    return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    NEED(real_open64, "open64", -1);
    if (check_path(AT_FDCWD, path, open_method(flags)) != 0) {
        return -1;
    }
    return real_open64(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    NEED(real_openat, "openat", -1);
    if (check_path(dirfd, path, open_method(flags)) != 0) {
        return -1;
    }
    return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    NEED(real_openat64, "openat64", -1);
    if (check_path(dirfd, path, open_method(flags)) != 0) {
        return -1;
    }
    return real_openat64(dirfd, path, flags, mode);
}

ssize_t read(int fd, void *buf, size_t n) {
    NEED(real_read, "read", -1);
    return check_fd(fd, M_READ) != 0 ? -1 : real_read(fd, buf, n);
}

ssize_t write(int fd, const void *buf, size_t n) {
    NEED(real_write, "write", -1);
    return check_fd(fd, M_WRITE) != 0 ? -1 : real_write(fd, (void *)buf, n);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off) {
    NEED(real_pread, "pread", -1);
    return check_fd(fd, M_READ) != 0 ? -1 : real_pread(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off) {
    NEED(real_pread64, "pread64", -1);
    return check_fd(fd, M_READ) != 0 ? -1 : real_pread64(fd, buf, n, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    NEED(real_pwrite, "pwrite", -1);
    return check_fd(fd, M_WRITE) != 0 ? -1 : real_pwrite(fd, (void *)buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    NEED(real_pwrite64, "pwrite64", -1);
    return check_fd(fd, M_WRITE) != 0 ? -1 : real_pwrite64(fd, (void *)buf, n, off);
}

ssize_t readv(int fd, const struct iovec *iov, int cnt) {
    NEED(real_readv, "readv", -1);
    return check_fd(fd, M_READ) != 0 ? -1 : real_readv(fd, iov, cnt);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    NEED(real_writev, "writev", -1);
    return check_fd(fd, M_WRITE) != 0 ? -1 : real_writev(fd, iov, cnt);
}

/* close is FUSE's flush and release: a fault is reported but the descriptor is closed all the same. */
int close(int fd) {
    NEED(real_close, "close", -1);
    int failed = check_fd(fd, M_FLUSH | M_RELEASE);
    int saved = errno;
    int rc = real_close(fd);
    if (failed != 0) {
        errno = saved;
        return -1;
    }
    return rc;
}

int fsync(int fd) {
    NEED(real_fsync, "fsync", -1);
    return check_fd(fd, M_FSYNC) != 0 ? -1 : real_fsync(fd);
}

int fdatasync(int fd) {
    NEED(real_fdatasync, "fdatasync", -1);
    return check_fd(fd, M_FSYNC) != 0 ? -1 : real_fdatasync(fd);
}

int mkdir(const char *path, mode_t mode) {
    NEED(real_mkdir, "mkdir", -1);
    return check_path(AT_FDCWD, path, M_MKDIR) != 0 ? -1 : real_mkdir(path, mode);
}

int mkdirat(int dirfd, const char *path, mode_t mode) {
    NEED(real_mkdirat, "mkdirat", -1);
    return check_path(dirfd, path, M_MKDIR) != 0 ? -1 : real_mkdirat(dirfd, path, mode);
}

int unlink(const char *path) {
    NEED(real_unlink, "unlink", -1);
    return check_path(AT_FDCWD, path, M_UNLINK) != 0 ? -1 : real_unlink(path);
}

int unlinkat(int dirfd, const char *path, int flags) {
    NEED(real_unlinkat, "unlinkat", -1);
    unsigned method = (flags & AT_REMOVEDIR) ? M_RMDIR : M_UNLINK;
    return check_path(dirfd, path, method) != 0 ? -1 : real_unlinkat(dirfd, path, flags);
}

int rmdir(const char *path) {
    NEED(real_rmdir, "rmdir", -1);
    return check_path(AT_FDCWD, path, M_RMDIR) != 0 ? -1 : real_rmdir(path);
}

int rename(const char *from, const char *to) {
    NEED(real_rename, "rename", -1);
    return check_path(AT_FDCWD, from, M_RENAME) != 0 ? -1 : real_rename(from, to);
}

int renameat(int fromfd, const char *from, int tofd, const char *to) {
    NEED(real_renameat, "renameat", -1);
    return check_path(fromfd, from, M_RENAME) != 0 ? -1 : real_renameat(fromfd, from, tofd, to);
}

/* ---- DNSChaos ----------------------------------------------------------- */

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
static getaddrinfo_fn real_getaddrinfo;

/* A domain name against a pattern as Chaos Mesh's DNS plugin reads it, ignoring case and a final dot. */
static int dns_match(const char *p, const char *s) {
    for (; *p != '\0'; p++, s++) {
        if (*p == '*' && p[1] == '\0') {
            return 1;
        }
        if (*s == '\0' || (*p != '?' && (*p | 0x20) != (*s | 0x20))) {
            return 0;
        }
    }
    return *s == '\0' || (s[0] == '.' && s[1] == '\0');
}

static char dns_verdict(const char *node) {
    struct dns_table *d = dns_current;
    if (d == NULL) {
        return 0;
    }
    for (int i = 0; i < d->n && i < MAX_DNS; i++) {
        if (dns_match(d->rules[i].pattern, node)) {
            return d->rules[i].action;
        }
    }
    return 0;
}

/* Names, not addresses, are looked up: a numeric host never meets DNS. */
static int numeric_host(const char *node) {
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, node, buf) == 1 || inet_pton(AF_INET6, node, buf) == 1;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    if (real_getaddrinfo == NULL && RESOLVE(real_getaddrinfo, "getaddrinfo") == NULL) {
        return EAI_SYSTEM;
    }
    if (!enabled || node == NULL || (hints != NULL && (hints->ai_flags & AI_NUMERICHOST)) || numeric_host(node)) {
        return real_getaddrinfo(node, service, hints, res);
    }
    refresh();
    char action = dns_verdict(node);
    if (action == 'e') {
        return EAI_AGAIN; /* the DNS server's SERVFAIL, as glibc reports it */
    }
    if (action != 'r') {
        return real_getaddrinfo(node, service, hints, res);
    }
    if (hints != NULL && hints->ai_family == AF_INET6) {
        return EAI_NONAME; /* the random answer is an A record */
    }
    char ip[INET_ADDRSTRLEN];
    roll(0); /* seeds this thread's generator */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    snprintf(ip, sizeof ip, "%u.%u.%u.%u", (unsigned)(rng % 223) + 1, (unsigned)(rng >> 8) & 255,
             (unsigned)(rng >> 16) & 255, (unsigned)((rng >> 24) % 254) + 1);
    struct addrinfo h = {0};
    if (hints != NULL) {
        h = *hints;
    }
    h.ai_family = AF_INET;
    h.ai_flags |= AI_NUMERICHOST;
    return real_getaddrinfo(ip, service, &h, res);
}
