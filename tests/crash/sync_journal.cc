// sync_journal: an LD_PRELOAD library that lets a test simulate a power cut on an unmodified
// `gpuledger` process (issue 8, item 2). It records, in a journal file, what the process made
// durable under one directory:
//
//   C <path>         a file created (open/openat/creat with O_CREAT of a path that did not exist)
//   S <path> <size>  fsync/fdatasync of a regular file: its first <size> bytes are durable
//   R <old> <new>    rename
//   U <path>         unlink
//
// After the process is SIGKILLed, the test replays the journal (ingest_kill_test.cc, CutPower)
// and truncates every file created since the journal began to the size its last sync made
// durable (0 if it was never synced): what a power cut drops from the page cache. Directory
// entries (creations, renames, unlinks) are kept: the model is RocksDB's own fault-injection
// file system's DropUnsyncedFileData.
//
// Environment: GPULEDGER_SYNC_JOURNAL names the journal (appended to); only paths under
// GPULEDGER_SYNC_JOURNAL_UNDER are recorded. Without GPULEDGER_SYNC_JOURNAL it records nothing.
// Each record is one write(2) to an O_APPEND descriptor, so records from threads do not mix, and
// a record is in the journal before the call it describes returns.
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

namespace {

int journal_fd = -2;  // -2: not opened yet; -1: not recording
const char* under = nullptr;
size_t under_len = 0;

template <typename F>
F Real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

int JournalFd() {
  if (journal_fd != -2) return journal_fd;
  const char* path = getenv("GPULEDGER_SYNC_JOURNAL");
  under = getenv("GPULEDGER_SYNC_JOURNAL_UNDER");
  under_len = under != nullptr ? strlen(under) : 0;
  if (path == nullptr || under == nullptr || under_len == 0) {
    journal_fd = -1;
    return journal_fd;
  }
  using OpenFn = int (*)(const char*, int, ...);
  static OpenFn real_open = Real<OpenFn>("open");
  journal_fd = real_open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  return journal_fd;
}

// `path` made absolute against `dirfd` (AT_FDCWD: the working directory); false if it cannot be.
bool Absolute(int dirfd, const char* path, char* out) {
  if (path[0] == '/') return snprintf(out, PATH_MAX, "%s", path) < PATH_MAX;
  char base[PATH_MAX];
  if (dirfd == AT_FDCWD) {
    if (getcwd(base, sizeof base) == nullptr) return false;
  } else {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
    const ssize_t n = readlink(link, base, sizeof base - 1);
    if (n <= 0) return false;
    base[n] = '\0';
  }
  return snprintf(out, PATH_MAX, "%s/%s", base, path) < PATH_MAX;
}

bool Watched(const char* abs) {
  return JournalFd() >= 0 && strncmp(abs, under, under_len) == 0 &&
         (abs[under_len] == '/' || abs[under_len] == '\0');
}

void Record(const char* format, ...) {
  char line[2 * PATH_MAX + 64];
  va_list ap;
  va_start(ap, format);
  const int n = vsnprintf(line, sizeof line, format, ap);
  va_end(ap);
  if (n > 0 && static_cast<size_t>(n) < sizeof line) {
    const ssize_t w = write(journal_fd, line, static_cast<size_t>(n));
    (void)w;
  }
}

int OpenCommon(int dirfd, const char* path, int flags, mode_t mode,
               int (*open_fn)(int, const char*, int, ...)) {
  char abs[PATH_MAX];
  const bool watch =
      (flags & O_CREAT) != 0 && JournalFd() >= 0 && Absolute(dirfd, path, abs) && Watched(abs);
  struct stat st;
  const bool existed = watch && fstatat(dirfd, path, &st, 0) == 0;
  const int fd = open_fn(dirfd, path, flags, mode);
  if (fd >= 0 && watch && !existed) Record("C %s\n", abs);
  return fd;
}

void RecordSync(int fd) {
  if (JournalFd() < 0) return;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return;
  path[n] = '\0';
  struct stat st;
  if (!Watched(path) || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
  Record("S %s %lld\n", path, static_cast<long long>(st.st_size));
}

mode_t ModeArg(int flags, va_list ap) {
  return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE
             ? static_cast<mode_t>(va_arg(ap, int))
             : 0;
}

int RealOpenat(int dirfd, const char* path, int flags, ...) {
  using Fn = int (*)(int, const char*, int, ...);
  static Fn real = Real<Fn>("openat");
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return real(dirfd, path, flags, mode);
}

}  // namespace

extern "C" {

int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return OpenCommon(AT_FDCWD, path, flags, mode, RealOpenat);
}

int openat(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return OpenCommon(dirfd, path, flags, mode, RealOpenat);
}

// The 64-bit names are the same calls on x86-64.
int open64(const char* path, int flags, ...) __attribute__((alias("open")));
int openat64(int dirfd, const char* path, int flags, ...) __attribute__((alias("openat")));

int creat(const char* path, mode_t mode) {
  return OpenCommon(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, RealOpenat);
}

int fsync(int fd) {
  using Fn = int (*)(int);
  static Fn real = Real<Fn>("fsync");
  const int r = real(fd);
  if (r == 0) RecordSync(fd);
  return r;
}

int fdatasync(int fd) {
  using Fn = int (*)(int);
  static Fn real = Real<Fn>("fdatasync");
  const int r = real(fd);
  if (r == 0) RecordSync(fd);
  return r;
}

int rename(const char* from, const char* to) {
  using Fn = int (*)(const char*, const char*);
  static Fn real = Real<Fn>("rename");
  const int r = real(from, to);
  char a[PATH_MAX], b[PATH_MAX];
  if (r == 0 && JournalFd() >= 0 && Absolute(AT_FDCWD, from, a) && Absolute(AT_FDCWD, to, b) &&
      (Watched(a) || Watched(b))) {
    Record("R %s %s\n", a, b);
  }
  return r;
}

int unlink(const char* path) {
  using Fn = int (*)(const char*);
  static Fn real = Real<Fn>("unlink");
  const int r = real(path);
  char a[PATH_MAX];
  if (r == 0 && JournalFd() >= 0 && Absolute(AT_FDCWD, path, a) && Watched(a)) {
    Record("U %s\n", a);
  }
  return r;
}

}  // extern "C"
