// End-to-end: a spool written by queue::Spool, read by the sluicectl binary (path in $SLUICECTL).

#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/temp_dir.h"
#include "queue/spool.h"

namespace sluice::admin {
namespace {

using namespace std::chrono_literals;

using sluice::TempDir;

class Sink final : public queue::CompletionSink {
 public:
  void OnCommitted(uint64_t, queue::CommitStatus status) override {
    std::lock_guard lock(mu_);
    ok_ += status == queue::CommitStatus::kOk;
    ++calls_;
    cv_.notify_all();
  }
  bool WaitFor(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 30s, [&] { return calls_ >= n; }) && ok_ == n;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t calls_ = 0;
  size_t ok_ = 0;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class SluicectlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("SLUICECTL");
    if (bin == nullptr)
      FAIL() << "SLUICECTL not set (run through meson test)";
    sluicectl_ = bin;
    config_ = dir_.path() + "/sluice.toml";
    std::ofstream(config_) << "[spool]\npath = \"" << dir_.path() << "/spool\"\n";
  }

  // Runs sluicectl with args (already shell-quoted where needed).
  RunResult Sluicectl(const std::string& args, const std::string& cwd = "") {
    const std::string out = dir_.path() + "/stdout";
    const std::string err = dir_.path() + "/stderr";
    std::string cmd = "'" + sluicectl_ + "' " + args + " >'" + out + "' 2>'" + err + "'";
    if (!cwd.empty())
      cmd = "cd '" + cwd + "' && " + cmd;
    const int status = std::system(cmd.c_str());
    RunResult run;
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    run.out = ReadFile(out);
    run.err = ReadFile(err);
    return run;
  }

  std::unique_ptr<queue::Spool> OpenSpool() {
    queue::SpoolOptions options;
    options.path = dir_.path() + "/spool";
    Result<std::unique_ptr<queue::Spool>> spool = queue::Spool::Open(options);
    SLUICE_CHECK(spool.ok());
    return std::move(*spool);
  }

  TempDir dir_;
  std::string sluicectl_;
  std::string config_;
};

queue::Envelope TestEnvelope() {
  queue::Envelope e;
  e.sender = "weird\"\x01\xff@example.org";
  e.recipients.push_back({"a@example.com", 0, "", queue::RecipientState::kPending, 0, ""});
  e.recipients.push_back(
      {"b@example.com", 0, "", queue::RecipientState::kDelivered, 1, "250 ok\r\n"});
  e.received_at_us = UnixMicros() - 90'000'000;
  e.body_size = 11;
  return e;
}

// A NUL and a non-UTF-8 octet in the body: 13 octets (the literal's own terminator is not one).
const std::string kBody("Subj\0ect\r\n\xff\r\n", 13);

TEST_F(SluicectlTest, ListShowCountExportWhileTheSpoolIsOpen) {
  std::unique_ptr<queue::Spool> spool = OpenSpool();
  Sink sink;
  const queue::MessageId id1{UnixMicros(), 1};
  const queue::MessageId id2{id1.hi + 1, 2};
  ASSERT_EQ(
      spool->Enqueue(id1, queue::EncodeEnvelope(TestEnvelope()), std::string(kBody), &sink, 1),
      queue::Admit::kAccepted);
  ASSERT_EQ(spool->Enqueue(id2, queue::EncodeEnvelope(queue::Envelope{}), "x", &sink, 2),
            queue::Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(2));

  RunResult count = Sluicectl("--config '" + config_ + "' queue count");
  EXPECT_EQ(count.exit_code, 0) << count.err;
  EXPECT_EQ(count.out, "2\n");

  RunResult body = Sluicectl("--config '" + config_ + "' queue show " + id1.ToString() + " --body");
  EXPECT_EQ(body.exit_code, 0) << body.err;
  EXPECT_TRUE(body.out == kBody) << "raw body bytes, exactly";

  RunResult show = Sluicectl("--config '" + config_ + "' queue show " + id1.ToString());
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find("id: " + id1.ToString() + "\n"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("recipient: <a@example.com> state=pending"), std::string::npos);
  ASSERT_GE(show.out.size(), kBody.size() + 2);
  EXPECT_TRUE(show.out.substr(show.out.size() - kBody.size() - 2) == "\n\n" + kBody)
      << "blank line, then the raw body";

  RunResult list = Sluicectl("--config '" + config_ + "' queue list");
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find(id1.ToString()), std::string::npos);
  EXPECT_NE(list.out.find("<a@example.com>, <b@example.com>"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("1m30s"), std::string::npos) << list.out;

  RunResult json = Sluicectl("--config '" + config_ + "' queue list --json");
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(json.out.substr(0, json.out.find('\n')),
            "{\"id\":\"" + id1.ToString() +
                "\",\"sender\":\"weird\\\"\\u0001\\ufffd@example.org\",\"recipients\":["
                "\"a@example.com\",\"b@example.com\"],\"size\":11,\"age\":90}");

  const std::string exported = dir_.path() + "/export";
  RunResult exp = Sluicectl("--config '" + config_ + "' queue export '" + exported + "'");
  EXPECT_EQ(exp.exit_code, 0) << exp.err;
  EXPECT_TRUE(ReadFile(exported + "/" + id1.ToString() + ".eml") == kBody);
  EXPECT_EQ(ReadFile(exported + "/" + id2.ToString() + ".eml"), "x");
  const std::string envelope_json = ReadFile(exported + "/" + id1.ToString() + ".json");
  EXPECT_NE(envelope_json.find("\"last_reply\":\"250 ok\\u000d\\u000a\""), std::string::npos)
      << envelope_json;

  // Valid JSON by an independent parser, when python3 is around.
  if (std::system("command -v python3 >/dev/null 2>&1") == 0) {
    const std::string lines = dir_.path() + "/lines.json";
    std::ofstream(lines, std::ios::binary) << json.out << envelope_json;
    const std::string check =
        "python3 -c 'import json,sys\nfor l in open(sys.argv[1]): "
        "json.loads(l)' '" +
        lines + "'";
    EXPECT_EQ(std::system(check.c_str()), 0);
  }
}

TEST_F(SluicectlTest, RelativeSpoolPathIsRelativeToTheWorkingDirectory) {
  OpenSpool()->Shutdown();
  std::ofstream(config_) << "[spool]\npath = \"spool\"\n";
  RunResult run = Sluicectl("--config '" + config_ + "' queue count", dir_.path());
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "0\n");
}

TEST_F(SluicectlTest, ClearErrors) {
  RunResult missing_config = Sluicectl("--config '" + dir_.path() + "/nope.toml' queue count");
  EXPECT_EQ(missing_config.exit_code, 1);
  EXPECT_NE(missing_config.err.find("nope.toml not found"), std::string::npos)
      << missing_config.err;

  RunResult missing_spool = Sluicectl("--config '" + config_ + "' queue count");
  EXPECT_EQ(missing_spool.exit_code, 1);
  EXPECT_NE(missing_spool.err.find("no spool at"), std::string::npos) << missing_spool.err;

  OpenSpool()->Shutdown();
  RunResult unknown = Sluicectl("--config '" + config_ + "' queue show 00000000000000000000000001");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("no message 00000000000000000000000001"), std::string::npos)
      << unknown.err;

  RunResult bad_id = Sluicectl("--config '" + config_ + "' queue show nonsense");
  EXPECT_EQ(bad_id.exit_code, 1);
  EXPECT_NE(bad_id.err.find("invalid message id"), std::string::npos) << bad_id.err;

  std::ofstream(config_) << "[spool\npath = 3\n";
  RunResult bad_toml = Sluicectl("--config '" + config_ + "' queue count");
  EXPECT_EQ(bad_toml.exit_code, 1);
  EXPECT_NE(bad_toml.err.find("sluice.toml:1:"), std::string::npos) << bad_toml.err;
}

}  // namespace
}  // namespace sluice::admin
