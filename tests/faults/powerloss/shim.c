/* Power-loss and disk-full simulation for the files of one directory (LD_PRELOAD).
 *
 * EDBUS_POWERLOSS_DIR     the watched directory (the store's); required, else the shim does nothing.
 * EDBUS_POWERLOSS_IMAGES  where the durable images are kept; optional (no durability model without it).
 * EDBUS_POWERLOSS_ENOSPC_AFTER  bytes the watched files may grow by in this process before a write
 *                         fails with ENOSPC; optional.
 *
 * Durability model (see README.md): every regular file of the watched directory except *-shm has a
 * durable image <images>/<name>.data. A write is appended to <images>/<name>.dirty (offset, length)
 * and then done for real; an fsync/fdatasync of the file copies its dirty ranges from the real file
 * into the image and sets the image's size to the real file's. A file's name survives a power loss only
 * once the directory has been fsynced after it was created (<images>/names lists the names as of the
 * last directory fsync); an unlink is undone by a power loss until the next directory fsync.
 * All of it is done under one lock (a mutex between threads, flock(2) between processes), so an fsync
 * in one process covers the writes of every process, as the page cache does.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum kind { UNTRACKED = 0, DURABLE_FILE = 1, VOLATILE_FILE = 2, WATCHED_DIR = 3 };

#define MAX_FDS 65536
#define NAME_LEN 128
#define MAX_NAMES 32

struct fd_entry {
    int kind;
    int name;  /* index into names[] for DURABLE_FILE */
};

struct name_entry {
    char name[NAME_LEN];
    int data_fd;   /* <images>/<name>.data */
    int dirty_fd;  /* <images>/<name>.dirty, O_APPEND */
};

static struct fd_entry fds[MAX_FDS];
static struct name_entry names[MAX_NAMES];
static int name_count;
static char watched[PATH_MAX];
static char images[PATH_MAX];
static int modelling;        /* images given: keep durable images */
static long long enospc_after = -1;
static long long grown;      /* bytes the watched files grew by in this process */
static int lock_fd = -1;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);

static void die(const char *what) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "powerloss shim: %s: %s\n", what, strerror(errno));
    if (n > 0) {
        ssize_t ignored = real_write(2, msg, (size_t)n);
        (void)ignored;
    }
    abort();
}

static void open_lock(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/lock", images);
    lock_fd = real_open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) die("cannot open the lock file");
}

static void child_after_fork(void) {
    /* the parent's flock is shared with the child through the inherited descriptor: take our own */
    pthread_mutex_init(&mu, NULL);
    if (modelling) {
        real_close(lock_fd);
        open_lock();
    }
}

__attribute__((constructor)) static void init(void) {
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_unlink = dlsym(RTLD_NEXT, "unlink");
    real_unlinkat = dlsym(RTLD_NEXT, "unlinkat");
    const char *dir = getenv("EDBUS_POWERLOSS_DIR");
    if (dir == NULL || realpath(dir, watched) == NULL) {
        watched[0] = '\0';
        return;
    }
    const char *img = getenv("EDBUS_POWERLOSS_IMAGES");
    if (img != NULL && realpath(img, images) != NULL) {
        modelling = 1;
        open_lock();
    }
    const char *limit = getenv("EDBUS_POWERLOSS_ENOSPC_AFTER");
    if (limit != NULL && *limit) enospc_after = atoll(limit);
    pthread_atfork(NULL, NULL, child_after_fork);
}

static void lock(void) {
    pthread_mutex_lock(&mu);
    if (modelling && flock(lock_fd, LOCK_EX) != 0) die("flock");
}

static void unlock(void) {
    if (modelling) flock(lock_fd, LOCK_UN);
    pthread_mutex_unlock(&mu);
}

/* The kind of `path` (after the open, from `fd`'s type) and, for a file, its name in the directory. */
static int classify(int dirfd, const char *path, const char **base) {
    char full[PATH_MAX], parent[PATH_MAX], resolved[PATH_MAX];
    if (!watched[0] || path == NULL) return UNTRACKED;
    if (path[0] == '/') {
        snprintf(full, sizeof full, "%s", path);
    } else {
        char cwd[PATH_MAX];
        if (dirfd != AT_FDCWD) return UNTRACKED;  /* SQLite opens by absolute path */
        if (getcwd(cwd, sizeof cwd) == NULL) return UNTRACKED;
        snprintf(full, sizeof full, "%s/%s", cwd, path);
    }
    if (realpath(full, resolved) != NULL && strcmp(resolved, watched) == 0) return WATCHED_DIR;
    char *slash = strrchr(full, '/');
    if (slash == NULL || slash[1] == '\0') return UNTRACKED;
    size_t len = (size_t)(slash - full);
    memcpy(parent, full, len);
    parent[len] = '\0';
    if (len == 0) snprintf(parent, sizeof parent, "/");
    if (realpath(parent, resolved) == NULL || strcmp(resolved, watched) != 0) return UNTRACKED;
    *base = path + (strrchr(path, '/') ? (size_t)(strrchr(path, '/') - path) + 1 : 0);
    size_t n = strlen(*base);
    if (n >= 4 && strcmp(*base + n - 4, "-shm") == 0) return VOLATILE_FILE;  /* rebuilt on recovery */
    return DURABLE_FILE;
}

static int image_fd(const char *name, const char *suffix, int flags) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.%s", images, name, suffix);
    int fd = real_open(path, flags | O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) die(path);
    return fd;
}

static int name_index(const char *name) {
    for (int i = 0; i < name_count; i++)
        if (strcmp(names[i].name, name) == 0) return i;
    if (name_count == MAX_NAMES || strlen(name) >= NAME_LEN) {
        errno = ENAMETOOLONG;
        die("too many or too long file names in the watched directory");
    }
    struct name_entry *e = &names[name_count];
    snprintf(e->name, NAME_LEN, "%s", name);
    e->data_fd = image_fd(name, "data", 0);
    e->dirty_fd = image_fd(name, "dirty", O_APPEND);
    return name_count++;
}

static void log_dirty(int name, int64_t offset, int64_t length) {
    int64_t rec[2] = {offset, length};  /* length -1: truncated to offset */
    if (real_write(names[name].dirty_fd, rec, sizeof rec) != (ssize_t)sizeof rec) die("dirty log");
}

/* fsync: the file's dirty ranges become durable, in the order they were written. */
static void make_durable(int fd, int name) {
    struct name_entry *e = &names[name];
    struct stat st, log_st;
    if (fstat(fd, &st) != 0 || fstat(e->dirty_fd, &log_st) != 0) die("fstat");
    size_t count = (size_t)log_st.st_size / (2 * sizeof(int64_t));
    int64_t *recs = malloc(count * 2 * sizeof(int64_t) + 1);
    if (recs == NULL) die("malloc");
    if (pread(e->dirty_fd, recs, count * 2 * sizeof(int64_t), 0) != (ssize_t)(count * 2 * sizeof(int64_t)))
        die("read dirty log");
    char *buf = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < count; i++) {
        int64_t off = recs[2 * i], len = recs[2 * i + 1];
        if (len < 0) {
            if (real_ftruncate(e->data_fd, off) != 0) die("truncate image");
            continue;
        }
        if (off >= st.st_size) continue;
        if (off + len > st.st_size) len = st.st_size - off;
        if ((size_t)len > cap) {
            free(buf);
            cap = (size_t)len;
            buf = malloc(cap);
            if (buf == NULL) die("malloc");
        }
        ssize_t got = pread(fd, buf, (size_t)len, off);
        if (got < 0) die("read file");
        if (got > 0 && real_pwrite64(e->data_fd, buf, (size_t)got, off) != got) die("write image");
    }
    free(buf);
    free(recs);
    if (real_ftruncate(e->data_fd, st.st_size) != 0) die("size image");
    if (real_ftruncate(e->dirty_fd, 0) != 0) die("clear dirty log");
}

/* fsync of the directory: the names it holds now are the ones a power loss keeps. */
static void make_names_durable(void) {
    char path[PATH_MAX], tmp[PATH_MAX];
    snprintf(path, sizeof path, "%s/names", images);
    snprintf(tmp, sizeof tmp, "%s/names.tmp", images);
    FILE *out = fopen(tmp, "w");
    if (out == NULL) die(tmp);
    DIR *d = opendir(watched);
    if (d == NULL) die(watched);
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        size_t n = strlen(ent->d_name);
        struct stat st;
        if (ent->d_type == DT_UNKNOWN) {  /* some file systems do not fill d_type in */
            if (fstatat(dirfd(d), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
        } else if (ent->d_type != DT_REG) {
            continue;
        }
        if (n >= 4 && strcmp(ent->d_name + n - 4, "-shm") == 0) continue;
        fprintf(out, "%s\n", ent->d_name);
    }
    closedir(d);
    if (fclose(out) != 0 || rename(tmp, path) != 0) die("names");
}

/* ENOSPC: the watched files may grow by enospc_after bytes in this process, then writes fail. */
static int out_of_space(int fd, int64_t end) {
    if (enospc_after < 0) return 0;
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    int64_t growth = end > st.st_size ? end - st.st_size : 0;
    if (growth == 0) return 0;
    if (grown + growth > enospc_after) return 1;
    grown += growth;
    return 0;
}

static int kind_of(int fd) { return fd >= 0 && fd < MAX_FDS ? fds[fd].kind : UNTRACKED; }

/* Opening: remember what the descriptor is; a file the open created starts with an empty image. */
static int tracked_open(int dirfd, const char *path, int flags, mode_t mode, int at, int large) {
    const char *base = NULL;
    int kind = classify(dirfd, path, &base);
    if (kind == UNTRACKED) {
        if (at) return large ? real_openat64(dirfd, path, flags, mode) : real_openat(dirfd, path, flags, mode);
        return large ? real_open64(path, flags, mode) : real_open(path, flags, mode);
    }
    lock();
    struct stat before;
    int existed = (kind != DURABLE_FILE) || fstatat(dirfd, path, &before, 0) == 0;
    int fd = at ? (large ? real_openat64(dirfd, path, flags, mode) : real_openat(dirfd, path, flags, mode))
                : (large ? real_open64(path, flags, mode) : real_open(path, flags, mode));
    int saved = errno;
    if (fd >= 0 && fd < MAX_FDS) {
        struct stat st;
        if (fstat(fd, &st) == 0) {
            if (kind == WATCHED_DIR && !S_ISDIR(st.st_mode)) kind = UNTRACKED;
            if (kind != WATCHED_DIR && !S_ISREG(st.st_mode)) kind = UNTRACKED;
        }
        fds[fd].kind = kind;
        if (kind == DURABLE_FILE && modelling) {
            int name = name_index(base);
            fds[fd].name = name;
            if (!existed) {  /* a new file: nothing of it is durable yet */
                if (real_ftruncate(names[name].data_fd, 0) != 0 || real_ftruncate(names[name].dirty_fd, 0) != 0)
                    die("reset image");
            }
            if (flags & O_TRUNC) log_dirty(name, 0, -1);
        }
    }
    unlock();
    errno = saved;
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    return __OPEN_NEEDS_MODE(flags) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return tracked_open(AT_FDCWD, path, flags, mode, 0, 0);
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return tracked_open(AT_FDCWD, path, flags, mode, 0, 1);
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return tracked_open(dirfd, path, flags, mode, 1, 0);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return tracked_open(dirfd, path, flags, mode, 1, 1);
}

int close(int fd) {
    if (fd >= 0 && fd < MAX_FDS) fds[fd].kind = UNTRACKED;
    return real_close(fd);
}

/* Every write path: check the space, log the range, then write for real (in that order, so that an
 * fsync in between can never miss the bytes). */
static ssize_t tracked_write(int fd, int64_t offset, size_t length, ssize_t (*perform)(void *), void *ctx) {
    int kind = kind_of(fd);
    if (kind != DURABLE_FILE && kind != VOLATILE_FILE) return perform(ctx);
    lock();
    if (out_of_space(fd, offset + (int64_t)length)) {
        unlock();
        errno = ENOSPC;
        return -1;
    }
    if (kind == DURABLE_FILE && modelling) log_dirty(fds[fd].name, offset, (int64_t)length);
    ssize_t done = perform(ctx);
    int saved = errno;
    unlock();
    errno = saved;
    return done;
}

struct write_args {
    int fd;
    const void *buf;
    const struct iovec *iov;
    int iovcnt;
    size_t count;
    off_t offset;
    int large;
};

static ssize_t do_write(void *p) {
    struct write_args *a = p;
    return real_write(a->fd, a->buf, a->count);
}
static ssize_t do_pwrite(void *p) {
    struct write_args *a = p;
    return a->large ? real_pwrite64(a->fd, a->buf, a->count, a->offset)
                    : real_pwrite(a->fd, a->buf, a->count, a->offset);
}
static ssize_t do_writev(void *p) {
    struct write_args *a = p;
    return real_writev(a->fd, a->iov, a->iovcnt);
}
static ssize_t do_pwritev(void *p) {
    struct write_args *a = p;
    return real_pwritev(a->fd, a->iov, a->iovcnt, a->offset);
}

static size_t iov_total(const struct iovec *iov, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    return total;
}

ssize_t write(int fd, const void *buf, size_t count) {
    struct write_args a = {fd, buf, NULL, 0, count, 0, 0};
    if (kind_of(fd) == UNTRACKED) return real_write(fd, buf, count);
    return tracked_write(fd, lseek(fd, 0, SEEK_CUR), count, do_write, &a);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    struct write_args a = {fd, buf, NULL, 0, count, offset, 0};
    return tracked_write(fd, offset, count, do_pwrite, &a);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    struct write_args a = {fd, buf, NULL, 0, count, offset, 1};
    return tracked_write(fd, offset, count, do_pwrite, &a);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    struct write_args a = {fd, NULL, iov, iovcnt, 0, 0, 0};
    if (kind_of(fd) == UNTRACKED) return real_writev(fd, iov, iovcnt);
    return tracked_write(fd, lseek(fd, 0, SEEK_CUR), iov_total(iov, iovcnt), do_writev, &a);
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
    struct write_args a = {fd, NULL, iov, iovcnt, 0, offset, 0};
    return tracked_write(fd, offset, iov_total(iov, iovcnt), do_pwritev, &a);
}

static int tracked_truncate(int fd, off_t length, int (*real)(int, off_t)) {
    int kind = kind_of(fd);
    if (kind != DURABLE_FILE && kind != VOLATILE_FILE) return real(fd, length);
    lock();  /* no ENOSPC: growing a file with ftruncate makes a hole, it allocates nothing */
    if (kind == DURABLE_FILE && modelling) log_dirty(fds[fd].name, length, -1);
    int rc = real(fd, length);
    int saved = errno;
    unlock();
    errno = saved;
    return rc;
}

int ftruncate(int fd, off_t length) { return tracked_truncate(fd, length, real_ftruncate); }
int ftruncate64(int fd, off_t length) { return tracked_truncate(fd, length, real_ftruncate64); }

static int tracked_sync(int fd, int (*real)(int)) {
    int kind = kind_of(fd);
    if (!modelling || (kind != DURABLE_FILE && kind != WATCHED_DIR)) return real(fd);
    lock();
    int rc = real(fd);
    int saved = errno;
    if (rc == 0) {
        if (kind == DURABLE_FILE) make_durable(fd, fds[fd].name);
        else make_names_durable();
    }
    unlock();
    errno = saved;
    return rc;
}

int fsync(int fd) { return tracked_sync(fd, real_fsync); }
int fdatasync(int fd) { return tracked_sync(fd, real_fdatasync); }

/* unlink: the name is gone now, but comes back after a power loss until the directory is fsynced;
 * the file's unsynced writes die with it. */
static int tracked_unlink(int dirfd, const char *path, int flags) {
    const char *base = NULL;
    int kind = (flags == 0) ? classify(dirfd, path, &base) : UNTRACKED;
    if (kind != DURABLE_FILE || !modelling)
        return dirfd == AT_FDCWD && flags == 0 ? real_unlink(path) : real_unlinkat(dirfd, path, flags);
    lock();
    int rc = dirfd == AT_FDCWD ? real_unlink(path) : real_unlinkat(dirfd, path, flags);
    int saved = errno;
    if (rc == 0 && real_ftruncate(names[name_index(base)].dirty_fd, 0) != 0) die("clear dirty log");
    unlock();
    errno = saved;
    return rc;
}

int unlink(const char *path) { return tracked_unlink(AT_FDCWD, path, 0); }
int unlinkat(int dirfd, const char *path, int flags) { return tracked_unlink(dirfd, path, flags); }
