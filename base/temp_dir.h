#pragma once

// TempDir: a private directory under $TMPDIR (or /tmp) for a test, removed
// with everything in it when the object goes away.

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "base/log.h"

namespace sluice {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "sluice-test") {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
    SLUICE_CHECK(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const {
    return path_;
  }
  std::string spool() const {
    return path_ + "/spool";
  }

 private:
  std::string path_;
};

}  // namespace sluice
