#include "auth/user_db.h"

#include <stdio.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "base/temp_dir.h"

namespace sluice::auth {
namespace {

using namespace std::string_literals;

// Hashes come from the real tools users will run, at test time: a parser
// that only agrees with itself would prove nothing. A missing tool fails the
// test (never skips), naming the package scripts/install-deps must install.
struct Tool {
  const char* binary;
  const char* package;
};
constexpr Tool kMkpasswd{"mkpasswd", "whois"};
constexpr Tool kHtpasswd{"htpasswd", "apache2-utils"};

std::string ShellQuote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

// Runs `args` with `tool` and returns its stdout without the trailing
// newlines, or "" after recording a test failure.
std::string RunTool(const Tool& tool, const std::string& args) {
  const std::string probe = "command -v "s + tool.binary + " >/dev/null 2>&1";
  if (system(probe.c_str()) != 0) {
    ADD_FAILURE() << tool.binary << " not found: install Debian package '" << tool.package
                  << "' (scripts/install-deps)";
    return "";
  }
  const std::string cmd = std::string(tool.binary) + " " + args;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    ADD_FAILURE() << "popen failed: " << cmd;
    return "";
  }
  std::string out;
  char buf[512];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
    out.append(buf, n);
  }
  const int status = pclose(p);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    ADD_FAILURE() << cmd << " failed with status " << status;
    return "";
  }
  while (!out.empty() && out.back() == '\n') {
    out.pop_back();
  }
  return out;
}

std::string Mkpasswd(std::string_view method, std::string_view password) {
  return RunTool(kMkpasswd, "-m " + std::string(method) + " -- " + ShellQuote(password));
}

class UserDbTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& contents, const std::string& name = "users") {
    std::string path = dir_.path() + "/" + name;
    std::ofstream(path, std::ios::binary) << contents;
    return path;
  }
  std::shared_ptr<const UserDb> MustLoad(const std::string& contents) {
    auto db = UserDb::Load(Write(contents));
    EXPECT_TRUE(db.ok()) << db.error().message;
    return db.ok() ? *db : nullptr;
  }
  // The error message of a load that must fail.
  std::string LoadError(const std::string& contents) {
    auto db = UserDb::Load(Write(contents));
    EXPECT_FALSE(db.ok()) << contents;
    return db.ok() ? "" : db.error().message;
  }
  std::string UsersPath() const {
    return dir_.path() + "/users";
  }

  TempDir dir_{"sluice-auth"};
};

constexpr std::string_view kPassword = "c0rrect horse$battery'staple";

TEST_F(UserDbTest, VerifiesHashesFromRealTools) {
  struct Case {
    const char* what;
    std::string line;  // a full "user:hash" line
    const char* prefix;
  };
  const std::vector<Case> cases = {
      {"mkpasswd -m yescrypt", "u:" + Mkpasswd("yescrypt", kPassword), "$y$"},
      {"mkpasswd -m sha-512", "u:" + Mkpasswd("sha-512", kPassword), "$6$"},
      {"mkpasswd -m sha-256", "u:" + Mkpasswd("sha-256", kPassword), "$5$"},
      {"mkpasswd -m bcrypt", "u:" + Mkpasswd("bcrypt", kPassword), "$2b$"},
      // htpasswd prints the whole "user:hash" line.
      {"htpasswd -nbB", RunTool(kHtpasswd, "-nbB u " + ShellQuote(kPassword)), "$2y$"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ASSERT_TRUE(c.line.starts_with("u:"s + c.prefix)) << c.line;
    const auto db = MustLoad("# users\n" + c.line + "\n");
    ASSERT_NE(db, nullptr);
    EXPECT_TRUE(db->Verify("u", kPassword));
    EXPECT_FALSE(db->Verify("u", "c0rrect horse$battery'stapl"));
    EXPECT_FALSE(db->Verify("u", std::string(kPassword) + "x"));
    EXPECT_FALSE(db->Verify("u", "C0rrect horse$battery'staple"));
    EXPECT_FALSE(db->Verify("u", ""));
    EXPECT_FALSE(db->Verify("U", kPassword));  // names are case-sensitive
    EXPECT_FALSE(db->Verify("nobody", kPassword));
  }
}

TEST_F(UserDbTest, ManyUsersMixedMethods) {
  const std::string file =
      "alice:" + Mkpasswd("yescrypt", "alice pw") + "\n\n" + "  # indented comment\n" +
      RunTool(kHtpasswd, "-nbB bob 'bob pw'") + "\r\n" +  // CRLF file
      "carol@example.com:" + Mkpasswd("sha-512", "carol pw") + ":domains=example.com\n";
  const auto db = MustLoad(file);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->size(), 3u);
  EXPECT_TRUE(db->Verify("alice", "alice pw"));
  EXPECT_TRUE(db->Verify("bob", "bob pw"));
  EXPECT_TRUE(db->Verify("carol@example.com", "carol pw"));
  EXPECT_FALSE(db->Verify("alice", "bob pw"));
  EXPECT_FALSE(db->Verify("bob", "alice pw"));
  ASSERT_NE(db->Find("bob"), nullptr);
  EXPECT_TRUE(db->Find("bob")->hash.starts_with("$2y$"));
  EXPECT_EQ(db->Find("nobody"), nullptr);
}

TEST_F(UserDbTest, DovecotSchemePrefixes) {
  // Produced by `doveadm pw -s <SCHEME> -p 'dove pw'` (Dovecot 2.3, Debian 12).
  const auto db = MustLoad(
      "a:{SHA512-CRYPT}$6$bdJr8z6KR/iV0mVU$dJdX7SKj1mqMesQE.VZf2k58aZUm1Vru2P5xqwrgJTPY/sEq3wtv/"
      "EL08uFZWuqblYfc5rTiYAAcuEvcMwdaz1\n"
      "b:{BLF-CRYPT}$2y$05$IqEihX/TWSZN92Nf.HUEo.dfhY/krJ7CcaRz1C8v2kjwyTEhzZ8K2\n"
      "c:{SHA256-CRYPT}$5$BPvQ9ZjRsRJsKSUj$QF56x8ho15U6BSQuuAP8DsFZ/2QJ17UPOVx4j1ujiaB\n"
      "d:{CRYPT}$5$BPvQ9ZjRsRJsKSUj$QF56x8ho15U6BSQuuAP8DsFZ/2QJ17UPOVx4j1ujiaB\n");
  ASSERT_NE(db, nullptr);
  for (const char* user : {"a", "b", "c", "d"}) {
    EXPECT_TRUE(db->Verify(user, "dove pw")) << user;
    EXPECT_FALSE(db->Verify(user, "dove pW")) << user;
    EXPECT_FALSE(db->Find(user)->hash.starts_with("{")) << user;
  }
}

TEST_F(UserDbTest, UnknownUserCostsAHashComputation) {
  const auto db = MustLoad("alice:" + Mkpasswd("yescrypt", "pw") + "\n");
  ASSERT_NE(db, nullptr);
  using std::chrono::steady_clock;
  auto fastest = [&](std::string_view user) {
    auto best = steady_clock::duration::max();
    for (int i = 0; i < 3; ++i) {
      const auto t0 = steady_clock::now();
      EXPECT_FALSE(db->Verify(user, "wrong"));
      best = std::min(best, steady_clock::now() - t0);
    }
    return best;
  };
  const auto known = fastest("alice");
  const auto unknown = fastest("mallory");
  // Without the dummy hash an unknown user answers in microseconds, a yescrypt
  // check takes milliseconds. The margin absorbs a loaded machine.
  EXPECT_GT(unknown * 4, known) << "unknown " << unknown.count() << " known " << known.count();
}

TEST_F(UserDbTest, EmptyDatabaseVerifiesNothing) {
  const auto db = MustLoad("# nobody yet\n\n");
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->size(), 0u);
  EXPECT_FALSE(db->Verify("alice", "pw"));
  EXPECT_FALSE(db->Verify("", ""));
}

TEST_F(UserDbTest, NulAndOverlongPasswordsNeverMatch) {
  const std::string pw = "pw";
  const auto db = MustLoad("alice:" + Mkpasswd("sha-512", pw) + "\n");
  ASSERT_NE(db, nullptr);
  EXPECT_TRUE(db->Verify("alice", "pw"));
  // crypt(3) sees a C string: "pw\0junk" would otherwise hash as "pw".
  EXPECT_FALSE(db->Verify("alice", "pw\0junk"s));
  EXPECT_FALSE(db->Verify("alice\0junk"s, "pw"));
  EXPECT_FALSE(db->Verify("alice", std::string(UserDb::kMaxPasswordBytes + 1, 'a')));
}

TEST_F(UserDbTest, ConcurrentVerify) {
  const auto db = MustLoad("alice:" + Mkpasswd("sha-512", "a") + "\n" +
                           "bob:" + Mkpasswd("yescrypt", "b") + "\n");
  ASSERT_NE(db, nullptr);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        const bool alice = (t + i) % 2 == 0;
        if (!db->Verify(alice ? "alice" : "bob", alice ? "a" : "b")) {
          ++wrong;
        }
        if (db->Verify(alice ? "alice" : "bob", alice ? "b" : "a")) {
          ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(UserDbTest, SenderDomains) {
  const std::string hash = Mkpasswd("sha-256", "pw");
  const auto db = MustLoad("any:" + hash + "\n" + "also-any:" + hash + ":domains=\n" +
                           "two:" + hash + ":domains=Example.COM, example.org.\n");
  ASSERT_NE(db, nullptr);
  EXPECT_TRUE(db->SenderAllowed("any", "whatever.example"));
  EXPECT_TRUE(db->SenderAllowed("any", ""));
  EXPECT_TRUE(db->SenderAllowed("also-any", "whatever.example"));
  EXPECT_TRUE(db->SenderAllowed("two", "example.com"));
  EXPECT_TRUE(db->SenderAllowed("two", "EXAMPLE.com"));
  EXPECT_TRUE(db->SenderAllowed("two", "example.com."));
  EXPECT_TRUE(db->SenderAllowed("two", "Example.Org"));
  EXPECT_FALSE(db->SenderAllowed("two", "sub.example.com"));
  EXPECT_FALSE(db->SenderAllowed("two", "example.net"));
  EXPECT_FALSE(db->SenderAllowed("two", "com"));
  EXPECT_FALSE(db->SenderAllowed("two", ""));
  EXPECT_FALSE(db->SenderAllowed("nobody", "example.com"));
  ASSERT_NE(db->Find("two"), nullptr);
  EXPECT_EQ(db->Find("two")->allowed_sender_domains,
            (std::vector<std::string>{"example.com", "example.org"}));
}

TEST_F(UserDbTest, MissingFile) {
  auto db = UserDb::Load(dir_.path() + "/absent");
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code, ENOENT);
  EXPECT_NE(db.error().message.find(dir_.path() + "/absent: "), std::string::npos)
      << db.error().message;
}

TEST_F(UserDbTest, ErrorsNameFileAndLine) {
  const std::string yes = Mkpasswd("yescrypt", "pw");
  const std::string sha = Mkpasswd("sha-512", "pw");
  const std::string good = "alice:" + yes + "\n# comment\n\n";  // lines 1-3
  struct Case {
    std::string line4;
    const char* expect;  // a fragment of the message
  };
  const Case cases[] = {
      {"bob", "expected user:hash"},
      {"bob:" + yes + ":domains=a:extra", "expected user:hash"},
      {":" + yes, "user name"},
      {"b ob:" + yes, "user name"},
      {"bob:", "unsupported password hash"},
      {"bob:secret", "unsupported password hash"},           // plain text
      {"bob:" + Mkpasswd("md5crypt", "pw"), "unsupported"},  // $1$
      {"bob:" + Mkpasswd("descrypt", "pw"), "unsupported"},  // DES
      {"bob:$2a$05$IqEihX/TWSZN92Nf.HUEo.dfhY/krJ7CcaRz1C8v2kjwyTEhzZ8K2", "unsupported"},
      {"bob:$7$CU..../....abc$def", "unsupported"},  // scrypt
      {"bob:{PLAIN}secret", "unsupported"},
      {"bob:{SHA512-CRYPT" + sha, "unterminated"},
      {"bob:{BLF-CRYPT}" + sha, "does not match"},
      {"bob:" + yes.substr(0, yes.size() - 1), "truncated yescrypt"},
      {"bob:" + sha.substr(0, sha.size() - 5), "truncated sha512-crypt"},
      {"bob:" + sha + "!", "truncated sha512-crypt"},
      {"bob:$6$salt$", "truncated sha512-crypt"},
      {"bob:$2y$05$IqEihX/TWSZN92Nf.HUEo.dfhY/krJ7CcaRz1C8v2kjwyTEhzZ8K", "truncated bcrypt"},
      {"bob:" + yes + ":domain=example.com", "domains="},
      {"bob:" + yes + ":domains=a.example,,b.example", "bad sender domain"},
      {"bob:" + yes + ":domains=user@example.com", "bad sender domain"},
      {"alice:" + sha, "duplicate user 'alice' (first on line 1)"},
  };
  for (const Case& c : cases) {
    std::string file = good;
    file += c.line4 + "\nzed:" + yes + "\n";
    const std::string msg = LoadError(file);
    EXPECT_TRUE(msg.starts_with(UsersPath() + ":4: ")) << c.line4 << " -> " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.line4 << " -> " << msg;
  }
}

}  // namespace
}  // namespace sluice::auth
