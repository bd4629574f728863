// BoringSSL and OpenSSL 3 in one process segfault (unversioned symbols; docs/design.md §7). This
// binary links tls/, so it must load BoringSSL's libssl.so.0/libcrypto.so.0 from the android
// directory and no libssl.so.3/libcrypto.so.3 -- both as linked (ldd) and as actually mapped.

#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <openssl/base.h>
#include <openssl/crypto.h>

namespace {

constexpr char kAndroidLibDir[] = "/usr/lib/x86_64-linux-gnu/android/";

std::string SelfPath() {
  std::array<char, 4096> buf{};
  ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  return n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : "";
}

std::string Ldd(const std::string& path) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(("ldd '" + path + "' 2>&1").c_str(), "r"),
                                             pclose);
  if (pipe == nullptr) {
    return out;
  }
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe.get())) > 0) {
    out.append(buf.data(), n);
  }
  return out;
}

TEST(LinkageTest, HeadersAreBoringSsl) {
#ifndef OPENSSL_IS_BORINGSSL
  FAIL() << "<openssl/base.h> is not BoringSSL's: /usr/include/android must come first";
#endif
  EXPECT_NE(std::string(OpenSSL_version(OPENSSL_VERSION)).find("BoringSSL"), std::string::npos)
      << OpenSSL_version(OPENSSL_VERSION);
}

TEST(LinkageTest, LddShowsBoringSslAndNoOpenSsl3) {
  std::string self = SelfPath();
  ASSERT_FALSE(self.empty());
  std::string ldd = Ldd(self);
  EXPECT_NE(ldd.find(std::string("libssl.so.0 => ") + kAndroidLibDir + "libssl.so.0"),
            std::string::npos)
      << ldd;
  EXPECT_NE(ldd.find(std::string("libcrypto.so.0 => ") + kAndroidLibDir + "libcrypto.so.0"),
            std::string::npos)
      << ldd;
  EXPECT_EQ(ldd.find("libssl.so.3"), std::string::npos) << ldd;
  EXPECT_EQ(ldd.find("libcrypto.so.3"), std::string::npos) << ldd;
}

TEST(LinkageTest, MappedLibrariesAreBoringSslOnly) {
  std::ifstream maps("/proc/self/maps");
  std::stringstream ss;
  ss << maps.rdbuf();
  std::string text = ss.str();
  EXPECT_NE(text.find(std::string(kAndroidLibDir) + "libssl.so.0"), std::string::npos);
  EXPECT_EQ(text.find("libssl.so.3"), std::string::npos);
  EXPECT_EQ(text.find("libcrypto.so.3"), std::string::npos);
}

}  // namespace
