#include "delivery/dsn/maildir.h"

#include <errno.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "base/temp_dir.h"

namespace sluice::delivery {
namespace {

namespace fs = std::filesystem;

const std::string kMessage =
    "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello Bob.\r\n";

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream buf;
  buf << file.rdbuf();
  return buf.str();
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

mode_t Mode(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(MaildirTest, DeliversIntoNewWithPrependedHeaders) {
  TempDir dir;
  const std::string root = dir.path() + "/Maildir";
  const Result<std::string> path =
      DeliverToMaildir(root, kMessage, "alice@example.com", "bob@example.net");
  ASSERT_TRUE(path.ok()) << path.error().message;

  const std::vector<std::string> names = Names(root + "/new");
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(*path, root + "/new/" + names[0]);
  const std::string expected =
      "Return-Path: <alice@example.com>\r\nDelivered-To: bob@example.net\r\n" + kMessage;
  EXPECT_EQ(ReadFile(*path), expected);
  EXPECT_TRUE(Names(root + "/tmp").empty());
  EXPECT_TRUE(Names(root + "/cur").empty());
  for (const char* sub : {"", "/tmp", "/new", "/cur"}) {
    EXPECT_EQ(Mode(root + sub), 0700u) << sub;
  }
  EXPECT_EQ(Mode(*path), 0600u);

  // "<secs>.M<micros>P<pid>Q<n>.<host>,S=<size>"
  const std::string& name = names[0];
  const std::string pid = "P" + std::to_string(::getpid()) + "Q";
  EXPECT_NE(name.find(".M"), std::string::npos) << name;
  EXPECT_NE(name.find(pid), std::string::npos) << name;
  EXPECT_TRUE(name.ends_with(",S=" + std::to_string(expected.size()))) << name;
  const std::string host = name.substr(name.find('.', name.find(pid)) + 1);
  EXPECT_EQ(host.find_first_of("/:"), std::string::npos) << name;
  EXPECT_GT(std::stoll(name.substr(0, name.find('.'))), 1700000000);
}

TEST(MaildirTest, NullSenderGetsAnEmptyReturnPath) {
  TempDir dir;
  const Result<std::string> path = DeliverToMaildir(dir.path() + "/md", kMessage, "", "");
  ASSERT_TRUE(path.ok()) << path.error().message;
  EXPECT_EQ(ReadFile(*path), "Return-Path: <>\r\n" + kMessage);
  const Result<std::string> only_rcpt = DeliverToMaildir(dir.path() + "/md", kMessage, "", "b@x");
  ASSERT_TRUE(only_rcpt.ok());
  EXPECT_EQ(ReadFile(*only_rcpt), "Return-Path: <>\r\nDelivered-To: b@x\r\n" + kMessage);
}

TEST(MaildirTest, LfMessageGetsLfHeaders) {
  TempDir dir;
  const std::string message = "Subject: unix\n\nbody\n";
  const Result<std::string> path = DeliverToMaildir(dir.path() + "/md", message, "a@x", "b@y");
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(ReadFile(*path), "Return-Path: <a@x>\nDelivered-To: b@y\n" + message);
}

TEST(MaildirTest, ExistingMaildirIsReused) {
  TempDir dir;
  const std::string root = dir.path() + "/md";
  for (const char* sub : {"", "/tmp", "/new", "/cur"}) {
    ASSERT_EQ(::mkdir((root + sub).c_str(), 0750), 0);
  }
  ASSERT_TRUE(DeliverToMaildir(root, kMessage, "a@x", "b@y").ok());
  EXPECT_EQ(Mode(root + "/new"), 0750u);  // left alone
  EXPECT_EQ(Names(root + "/new").size(), 1u);
}

TEST(MaildirTest, CreatesMissingParentDirectories) {
  TempDir dir;
  const std::string root = dir.path() + "/a/b/c/Maildir";
  const Result<std::string> path = DeliverToMaildir(root, kMessage, "a@x", "b@y");
  ASSERT_TRUE(path.ok()) << path.error().message;
  EXPECT_TRUE(fs::is_directory(root + "/cur"));
  EXPECT_EQ(Names(root + "/new").size(), 1u);
}

TEST(MaildirTest, ManyDeliveriesGetUniqueNames) {
  TempDir dir;
  const std::string root = dir.path() + "/md";
  std::set<std::string> paths;
  for (int i = 0; i < 300; ++i) {
    const Result<std::string> path = DeliverToMaildir(root, kMessage, "a@x", "b@y");
    ASSERT_TRUE(path.ok()) << path.error().message;
    paths.insert(*path);
  }
  EXPECT_EQ(paths.size(), 300u);
  EXPECT_EQ(Names(root + "/new").size(), 300u);
  EXPECT_TRUE(Names(root + "/tmp").empty());
}

TEST(MaildirTest, RootUnderARegularFileFailsWithErrno) {
  TempDir dir;
  const std::string file = dir.path() + "/plain";
  std::ofstream(file) << "x";
  for (const std::string& root : {file + "/Maildir", file}) {
    const Result<std::string> path = DeliverToMaildir(root, kMessage, "a@x", "b@y");
    ASSERT_FALSE(path.ok()) << root;
    EXPECT_EQ(path.error().code, ENOTDIR) << path.error().message;
    EXPECT_NE(path.error().message.find(root), std::string::npos) << path.error().message;
  }
  EXPECT_EQ(ReadFile(file), "x");
}

TEST(MaildirTest, RefusesLineBreaksInEnvelopeAddresses) {
  TempDir dir;
  const std::string root = dir.path() + "/md";
  const Result<std::string> bad_sender =
      DeliverToMaildir(root, kMessage, "a@x>\r\nX-Evil: 1", "b@y");
  ASSERT_FALSE(bad_sender.ok());
  EXPECT_EQ(bad_sender.error().code, EINVAL);
  const Result<std::string> bad_rcpt = DeliverToMaildir(root, kMessage, "a@x", "b@y\nX: 1");
  ASSERT_FALSE(bad_rcpt.ok());
  EXPECT_EQ(bad_rcpt.error().code, EINVAL);
  EXPECT_FALSE(fs::exists(root + "/new") && !Names(root + "/new").empty());
}

TEST(MaildirTest, ConcurrentDeliveriesAllLand) {
  TempDir dir;
  const std::string root = dir.path() + "/md";
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::vector<std::vector<std::string>> results(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string body =
            kMessage + "thread " + std::to_string(t) + " message " + std::to_string(i) + "\r\n";
        Result<std::string> path = DeliverToMaildir(root, body, "a@x", "b@y");
        results[t].push_back(path.ok() ? *path : "ERROR: " + path.error().message);
      }
    });
  }
  for (std::thread& th : threads) {
    th.join();
  }

  std::set<std::string> paths;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      const std::string& path = results[t][i];
      ASSERT_FALSE(path.starts_with("ERROR")) << path;
      EXPECT_EQ(ReadFile(path), "Return-Path: <a@x>\r\nDelivered-To: b@y\r\n" + kMessage +
                                    "thread " + std::to_string(t) + " message " +
                                    std::to_string(i) + "\r\n");
      paths.insert(path);
    }
  }
  EXPECT_EQ(paths.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(Names(root + "/new").size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_TRUE(Names(root + "/tmp").empty());
}

}  // namespace
}  // namespace sluice::delivery
