/*
 * blob_file.c - the file:// blob backend: one local directory.
 *
 * Layout: ROOT/ab/cd/<key> (two fan-out levels of two hex digits) and ROOT/tmp
 * for temporaries. Invariant: a file under its final name is complete and
 * durable - it is only ever created by renaming an fsynced temporary, and the
 * directory holding it is fsynced after the rename (and each new fan-out
 * directory's parent after the mkdir). Stateless apart from the root: thread-safe.
 */
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "store/blob_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BF_DIR_MODE   0755
#define BF_BLOB_MODE  0444 /* blobs never change */
#define BF_STALE_SECS 3600 /* temporaries older than this at open are a crash's leftovers */
#define BF_COPY_CHUNK (1 << 30)

struct bf {
    char *root; /* absolute, no trailing slash */
    char *tmp;  /* root/tmp */
};

static int bf_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* bf_errno maps an errno of a failed write-side call to a status. */
static int bf_errno(int e)
{
    return (e == ENOSPC || e == EDQUOT) ? E_NOSPACE : E_IO;
}

/* bf_fail logs a failed system call once, with its subject, and maps errno e. */
static int bf_fail(int e, const char *what, const char *path)
{
    log_error("store", "%s '%s': %s", what, path, strerror(e));
    return bf_errno(e);
}

/*
 * bf_paths writes the fan-out directories and the final path of a key; any of
 * them may be NULL. Refuses anything but a valid key before building a path.
 */
static int bf_paths(const struct bf *b, const char *key, char *dir1, char *dir2, char *final)
{
    if (key == NULL || !blob_key_valid(key, strnlen(key, BLOB_KEY_LEN + 1)))
        return E_INVALID;
    /* The root's length was checked at open: these fit in PATH_MAX. */
    if (dir1 != NULL)
        snprintf(dir1, PATH_MAX, "%s/%.2s", b->root, key);
    if (dir2 != NULL)
        snprintf(dir2, PATH_MAX, "%s/%.2s/%.2s", b->root, key, key + 2);
    if (final != NULL)
        snprintf(final, PATH_MAX, "%s/%.2s/%.2s/%s", b->root, key, key + 2, key);
    return OK;
}

/* bf_fsync_dir makes a directory's entries (a rename, an unlink, a mkdir) durable. */
static int bf_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = OK;

    if (fd < 0) {
        rc = bf_fail(errno, "cannot open directory", path);
        goto out;
    }
    if (fsync(fd) != 0)
        rc = bf_fail(errno, "cannot fsync directory", path);
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* bf_mkdir creates dir if missing; when it did, fsyncs parent so the new entry survives. */
static int bf_mkdir(const char *dir, const char *parent)
{
    if (mkdir(dir, BF_DIR_MODE) == 0)
        return bf_fsync_dir(parent);
    if (errno == EEXIST)
        return OK;
    return bf_fail(errno, "cannot create directory", dir);
}

/* bf_tmp_name writes root/tmp/<32 random hex digits>.tmp into buf. */
static int bf_tmp_name(const struct bf *b, char *buf, size_t cap)
{
    return blob_tmp_name(b->tmp, buf, cap);
}

/*
 * bf_copy copies in to out from their current offsets to the end of in:
 * copy_file_range (in-kernel, reflinks where the filesystem can), falling back
 * to read/write where it is not supported (another filesystem, old kernel).
 * Returns 0 or an errno.
 */
static int bf_copy(int in, int out)
{
    char chunk[65536];
    bool kernel_copy = true;

    for (;;) {
        if (kernel_copy) {
            ssize_t n = copy_file_range(in, NULL, out, NULL, BF_COPY_CHUNK, 0);
            if (n > 0)
                continue;
            if (n == 0)
                return 0;
            if (errno == EINTR)
                continue;
            if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP &&
                errno != EBADF)
                return errno;
            kernel_copy = false; /* the offsets have advanced: read/write goes on from there */
        }
        ssize_t n = read(in, chunk, sizeof(chunk));
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, chunk + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return errno;
            off += w;
        }
    }
}

static int bf_put_path(void *be, const char *key, const char *src_path)
{
    struct bf *b = be;
    char dir1[PATH_MAX], dir2[PATH_MAX], final[PATH_MAX], tmp[PATH_MAX];
    struct stat st;
    bool tmp_made = false;
    int in = -1;
    int out = -1;
    int e;
    int rc = bf_paths(b, key, dir1, dir2, final);

    if (rc != OK)
        goto out;
    if (lstat(final, &st) == 0) {
        /*
         * Already stored: blobs are immutable. A concurrent put may have renamed
         * it a moment ago and not yet fsynced its directory: do it before OK.
         */
        rc = bf_fsync_dir(dir2);
        goto out;
    }
    if (errno != ENOENT && errno != ENOTDIR) {
        rc = bf_fail(errno, "cannot stat blob", final);
        goto out;
    }
    in = open(src_path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        log_error("store", "put %s: cannot open source '%s': %s", key, src_path, strerror(errno));
        rc = E_IO;
        goto out;
    }
    rc = bf_tmp_name(b, tmp, sizeof(tmp));
    if (rc != OK)
        goto out;
    out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, BF_BLOB_MODE);
    if (out < 0) {
        rc = bf_fail(errno, "cannot create temporary", tmp);
        goto out;
    }
    tmp_made = true;
    e = bf_copy(in, out);
    if (e != 0) {
        rc = bf_fail(e, "cannot write temporary", tmp);
        goto out;
    }
    if (fsync(out) != 0) {
        rc = bf_fail(errno, "cannot fsync temporary", tmp);
        goto out;
    }
    e = close(out) == 0 ? 0 : errno;
    out = -1;
    if (e != 0) {
        rc = bf_fail(e, "cannot close temporary", tmp);
        goto out;
    }
    rc = bf_mkdir(dir1, b->root);
    if (rc != OK)
        goto out;
    rc = bf_mkdir(dir2, dir1);
    if (rc != OK)
        goto out;
    /* A concurrent put of the same key may win the race: it renamed the same bytes. */
    if (rename(tmp, final) != 0) {
        rc = bf_fail(errno, "cannot rename into place", final);
        goto out;
    }
    tmp_made = false;
    rc = bf_fsync_dir(dir2);
out:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (tmp_made)
        unlink(tmp);
    return rc;
}

static int bf_open(void *be, const char *key, int *fd, uint64_t *size)
{
    char final[PATH_MAX];
    struct stat st;
    int f = -1;
    int rc = bf_paths(be, key, NULL, NULL, final);

    if (rc != OK)
        goto out;
    f = open(final, O_RDONLY | O_CLOEXEC);
    if (f < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            rc = E_NOTFOUND;
        else
            rc = bf_fail(errno, "cannot open blob", final);
        goto out;
    }
    if (fstat(f, &st) != 0) {
        rc = bf_fail(errno, "cannot stat blob", final);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        log_error("store", "blob '%s' is not a regular file", final);
        rc = E_IO;
        goto out;
    }
    *fd = f;
    *size = (uint64_t)st.st_size;
    f = -1;
out:
    if (f >= 0)
        close(f);
    return rc;
}

static int bf_exists(void *be, const char *key, bool *exists)
{
    char final[PATH_MAX];
    struct stat st;
    int rc = bf_paths(be, key, NULL, NULL, final);

    if (rc != OK)
        goto out;
    if (stat(final, &st) == 0)
        *exists = true;
    else if (errno != ENOENT && errno != ENOTDIR)
        rc = bf_fail(errno, "cannot stat blob", final);
out:
    return rc;
}

static int bf_delete(void *be, const char *key)
{
    char dir2[PATH_MAX], final[PATH_MAX];
    int rc = bf_paths(be, key, NULL, dir2, final);

    if (rc != OK)
        goto out;
    if (unlink(final) != 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            rc = bf_fail(errno, "cannot remove blob", final);
        goto out;
    }
    rc = bf_fsync_dir(dir2);
out:
    return rc;
}

static int bf_tmp_path(void *be, char *buf, size_t cap)
{
    return bf_tmp_name(be, buf, cap);
}

static int bf_check(void *be)
{
    struct bf *b = be;

    return access(b->tmp, W_OK) == 0 ? OK : E_UNAVAILABLE;
}

/* bf_names lists the entries of dir accepted by ok (len-byte names), sorted; *v freed by caller. */
static int bf_names(const char *dir, size_t len, const char *after, size_t cmp, char ***v,
                    size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t alloc = 0;
    int rc = OK;

    *v = NULL;
    *n = 0;
    if (d == NULL) {
        if (errno == ENOENT || errno == ENOTDIR)
            return OK;
        return bf_fail(errno, "cannot list", dir);
    }
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        bool hex = strlen(nm) == len;
        for (size_t i = 0; hex && i < len; i++)
            hex = (nm[i] >= '0' && nm[i] <= '9') || (nm[i] >= 'a' && nm[i] <= 'f');
        /* at the level of after's prefix, skip what sorts before it (keys: before or equal) */
        if (!hex || (cmp > 0 && strncmp(nm, after, cmp) < (len == BLOB_KEY_LEN ? 1 : 0)))
            continue;
        if (*n == alloc) {
            alloc = alloc ? 2 * alloc : 64;
            *v = xrealloc(*v, alloc * sizeof(**v));
        }
        (*v)[(*n)++] = xstrdup(nm);
    }
    closedir(d);
    if (*n > 1)
        qsort(*v, *n, sizeof(**v), bf_cmp_str);
    return rc;
}

static void bf_names_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/*
 * bf_list walks ROOT/ab/cd/ in order from after's fan-out directories on, so
 * a page costs the directories it reads, not the whole store.
 */
static int bf_list(void *be, const char *after, struct blob_entry *out, size_t cap, size_t *n)
{
    struct bf *b = be;
    char **l1 = NULL, **l2 = NULL, **l3 = NULL;
    size_t n1 = 0, n2 = 0, n3 = 0;
    char path[PATH_MAX];
    bool first1 = after[0] != '\0', first2;
    int rc = bf_names(b->root, 2, after, first1 ? 2 : 0, &l1, &n1);

    for (size_t i = 0; rc == OK && i < n1 && *n < cap; i++) {
        first2 = first1 && strncmp(l1[i], after, 2) == 0;
        snprintf(path, sizeof(path), "%s/%s", b->root, l1[i]);
        rc = bf_names(path, 2, after + 2, first2 ? 2 : 0, &l2, &n2);
        for (size_t j = 0; rc == OK && j < n2 && *n < cap; j++) {
            bool first3 = first2 && strncmp(l2[j], after + 2, 2) == 0;
            snprintf(path, sizeof(path), "%s/%s/%s", b->root, l1[i], l2[j]);
            rc = bf_names(path, BLOB_KEY_LEN, after, first3 ? BLOB_KEY_LEN : 0, &l3, &n3);
            for (size_t k = 0; rc == OK && k < n3 && *n < cap; k++) {
                struct stat st;
                char file[PATH_MAX];
                if (bf_paths(b, l3[k], NULL, NULL, file) != OK || stat(file, &st) != 0 ||
                    !S_ISREG(st.st_mode))
                    continue; /* deleted meanwhile */
                memcpy(out[*n].key, l3[k], BLOB_KEY_LEN + 1);
                out[*n].size = (uint64_t)st.st_size;
                out[*n].mtime = (int64_t)st.st_mtime;
                (*n)++;
            }
            bf_names_free(l3, n3);
            l3 = NULL;
        }
        bf_names_free(l2, n2);
        l2 = NULL;
    }
    bf_names_free(l1, n1);
    return rc;
}

static void bf_free(void *be)
{
    struct bf *b = be;

    if (b == NULL)
        return;
    free(b->root);
    free(b->tmp);
    free(b);
}

static const struct blob_ops bf_ops = {
    .name = "file",
    .free = bf_free,
    .put_path = bf_put_path,
    .open = bf_open,
    .exists = bf_exists,
    .del = bf_delete,
    .tmp_path = bf_tmp_path,
    .check = bf_check,
    .list = bf_list,
};

/* bf_mkdir_p creates path and its missing parents (path is absolute and writable here). */
static int bf_mkdir_p(char *path)
{
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        int r = mkdir(path, BF_DIR_MODE);
        int e = errno;
        *p = c;
        if (r != 0 && e != EEXIST)
            return bf_fail(e, "cannot create directory", path);
        if (c == '\0')
            return OK;
    }
}

/* bf_sweep removes what a crash left in tmp: files not modified for BF_STALE_SECS. */
static void bf_sweep(const char *tmp)
{
    DIR *d = opendir(tmp);
    struct dirent *de;
    time_t cutoff = time(NULL) - BF_STALE_SECS;
    size_t removed = 0;

    if (d == NULL) {
        log_warn("store", "cannot list '%s': %s", tmp, strerror(errno));
        return;
    }
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(st.st_mode) || st.st_mtime >= cutoff)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    if (removed > 0)
        log_info("store", "removed %zu stale temporaries from '%s'", removed, tmp);
}

int blob_file_open(const char *root, struct blob_store **out)
{
    struct bf *b = NULL;
    struct stat st;
    size_t len = root ? strlen(root) : 0;
    int rc = OK;

    *out = NULL;
    while (len > 1 && root[len - 1] == '/')
        len--;
    if (len < 2 || root[0] != '/') {
        log_error("store", "blob store root '%s' must be an absolute directory other than /",
                  root ? root : "");
        rc = E_INVALID;
        goto out;
    }
    /* Room for the longest path built later: root/ab/cd/<64 hex>. */
    if (len + 2 * 3 + BLOB_KEY_LEN + 1 >= PATH_MAX) {
        log_error("store", "blob store root '%s' is too long", root);
        rc = E_INVALID;
        goto out;
    }
    b = xcalloc(1, sizeof(*b));
    b->root = xstrndup(root, len);
    b->tmp = xasprintf("%s/tmp", b->root);
    rc = bf_mkdir_p(b->tmp);
    if (rc != OK)
        goto out;
    if (stat(b->root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        log_error("store", "blob store root '%s' is not a directory", b->root);
        rc = E_IO;
        goto out;
    }
    bf_sweep(b->tmp);
    *out = blob_store_new(&bf_ops, b);
    b = NULL;
out:
    bf_free(b);
    if (rc == E_NOSPACE)
        rc = E_IO;
    return rc;
}

int blob_file_quarantine(struct blob_store *bs, const char *key, int fd, const char *dir,
                         char *moved, size_t cap)
{
    char dir2[PATH_MAX], final[PATH_MAX];
    struct stat open_st, name_st;
    int rc;

    if (bs == NULL || bs->ops != &bf_ops)
        return E_INVALID;
    rc = bf_paths(bs->be, key, NULL, dir2, final);
    if (rc != OK)
        return rc;
    if (snprintf(moved, cap, "%s/%s.%lld", dir, key, (long long)time(NULL)) >= (int)cap)
        return E_INVALID;
    if (mkdir(dir, BF_DIR_MODE) != 0 && errno != EEXIST)
        return bf_fail(errno, "cannot create the quarantine", dir);
    /* the file checked, not one a put or a delete left under the name since */
    if (fstat(fd, &open_st) != 0 || stat(final, &name_st) != 0 ||
        open_st.st_ino != name_st.st_ino || open_st.st_dev != name_st.st_dev)
        return E_NOTFOUND;
    if (rename(final, moved) != 0)
        return errno == ENOENT ? E_NOTFOUND : bf_fail(errno, "cannot quarantine", final);
    rc = bf_fsync_dir(dir2);
    if (rc == OK)
        rc = bf_fsync_dir(dir);
    return rc;
}
