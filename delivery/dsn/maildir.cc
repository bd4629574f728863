#include "delivery/dsn/maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include <sys/stat.h>

namespace sluice::delivery {
namespace {

constexpr mode_t kDirMode = 0700;
constexpr mode_t kFileMode = 0600;
constexpr int kMaxNameAttempts = 8;

Error ErrnoError(std::string_view what, const std::string& path, int err) {
  return MakeError(std::string(what) + " " + path + ": " + std::strerror(err), err);
}

std::string Parent(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) {
    return ".";
  }
  if (slash == 0) {
    return "/";
  }
  return path.substr(0, slash);
}

Result<void> FsyncDir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoError("open", path, errno);
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return ErrnoError("fsync", path, err);
  }
  return {};
}

// mkdir -p with kDirMode. A directory we create is made durable by fsyncing its parent, so a
// message later fsynced into it cannot vanish with the directory after a crash.
Result<void> MakeDirs(const std::string& path, int depth = 0) {
  if (::mkdir(path.c_str(), kDirMode) == 0) {
    return FsyncDir(Parent(path));
  }
  const int err = errno;
  if (err == EEXIST) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      return ErrnoError("stat", path, errno);
    }
    if (!S_ISDIR(st.st_mode)) {
      return ErrnoError("mkdir", path, ENOTDIR);
    }
    return {};
  }
  if (err == ENOENT && depth < 64) {
    const std::string parent = Parent(path);
    if (parent != path) {
      Result<void> made = MakeDirs(parent, depth + 1);
      if (!made.ok()) {
        return made;
      }
      return MakeDirs(path, depth + 1);
    }
  }
  return ErrnoError("mkdir", path, err);
}

Result<void> EnsureMaildir(const std::string& root) {
  for (const char* sub : {"/tmp", "/new", "/cur"}) {
    const std::string dir = root + sub;
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      continue;
    }
    Result<void> made = MakeDirs(dir);
    if (!made.ok()) {
      return made;
    }
  }
  return {};
}

const std::string& EscapedHostname() {
  static const std::string kHost = [] {
    char buf[256] = {};
    if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') {
      return std::string("localhost");
    }
    std::string out;
    for (const char* p = buf; *p != '\0'; ++p) {
      if (*p == '/') {
        out += "\\057";
      } else if (*p == ':') {
        out += "\\072";
      } else {
        out += *p;
      }
    }
    return out;
  }();
  return kHost;
}

std::string UniqueName(size_t size) {
  static std::atomic<uint64_t> counter{0};
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::to_string(ts.tv_sec) + ".M" + std::to_string(ts.tv_nsec / 1000) + "P" +
         std::to_string(::getpid()) + "Q" +
         std::to_string(counter.fetch_add(1, std::memory_order_relaxed) + 1) + "." +
         EscapedHostname() + ",S=" + std::to_string(size);
}

Result<void> WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return ErrnoError("write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// Writes, fsyncs and closes; the caller unlinks `path` on error.
Result<void> WriteFile(int fd, const std::string& path, std::string_view prefix,
                       std::string_view message) {
  Result<void> written = WriteAll(fd, prefix, path);
  if (written.ok()) {
    written = WriteAll(fd, message, path);
  }
  if (written.ok() && ::fsync(fd) != 0) {
    written = ErrnoError("fsync", path, errno);
  }
  // close() after a successful fsync cannot lose data, but report it like Postfix does.
  if (::close(fd) != 0 && written.ok()) {
    written = ErrnoError("close", path, errno);
  }
  return written;
}

// RENAME_NOREPLACE (Linux 3.15; glibc 2.28 renameat2): never overwrite a message already in new/.
// File systems without it answer EINVAL; fall back to rename(), whose overwrite the unique name
// makes a non-issue in practice.
int RenameNoReplace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
    return 0;
  }
  if (errno != EINVAL && errno != ENOSYS) {
    return -1;
  }
  return ::rename(from.c_str(), to.c_str());
}

bool HasLineBreak(const std::string& s) {
  return s.find_first_of("\r\n") != std::string::npos;
}

}  // namespace

Result<std::string> DeliverToMaildir(const std::string& root, std::string_view message,
                                     const std::string& sender, const std::string& recipient) {
  if (root.empty()) {
    return MakeError("maildir root is empty", EINVAL);
  }
  if (HasLineBreak(sender) || HasLineBreak(recipient)) {
    return MakeError("maildir: CR or LF in sender or recipient", EINVAL);
  }
  Result<void> dirs = EnsureMaildir(root);
  if (!dirs.ok()) {
    return dirs.error();
  }

  // Same line ending as the message's first line: CRLF for stored messages.
  const size_t first_lf = message.find('\n');
  const std::string_view eol =
      (first_lf != std::string_view::npos && (first_lf == 0 || message[first_lf - 1] != '\r'))
          ? "\n"
          : "\r\n";
  // RFC 5321 §4.4: the final delivery records the reverse-path, "<>" for a
  // bounce, as Postfix's local and virtual agents do.
  std::string prefix = "Return-Path: <" + sender + ">" + std::string(eol);
  if (!recipient.empty()) {
    prefix += "Delivered-To: " + recipient + std::string(eol);
  }
  const size_t size = prefix.size() + message.size();

  std::string unique;
  std::string tmp_path;
  int fd = -1;
  for (int attempt = 0; attempt < kMaxNameAttempts && fd < 0; ++attempt) {
    unique = UniqueName(size);
    tmp_path = root;
    tmp_path += "/tmp/";
    tmp_path += unique;
    fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kFileMode);
    if (fd < 0 && errno != EEXIST) {
      return ErrnoError("open", tmp_path, errno);
    }
  }
  if (fd < 0) {
    return ErrnoError("open", tmp_path, EEXIST);
  }

  Result<void> written = WriteFile(fd, tmp_path, prefix, message);
  if (!written.ok()) {
    ::unlink(tmp_path.c_str());
    return written.error();
  }
  const std::string new_path = root + "/new/" + unique;
  if (RenameNoReplace(tmp_path, new_path) != 0) {
    const int err = errno;
    ::unlink(tmp_path.c_str());
    return ErrnoError("rename to", new_path, err);
  }
  // The rename is durable only once the directory is synced. If that fails, take the message
  // back out so that an error always means "not delivered" and the caller's retry does not
  // leave a duplicate.
  Result<void> synced = FsyncDir(root + "/new");
  if (!synced.ok()) {
    ::unlink(new_path.c_str());
    return synced.error();
  }
  return new_path;
}

}  // namespace sluice::delivery
