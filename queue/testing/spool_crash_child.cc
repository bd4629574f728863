// Child process of SpoolCrashTest.KillNineLosesNoAcknowledgedMessage:
//   spool_crash_child SPOOL_DIR
// enqueues messages as fast as the spool takes them and writes the token of
// each one that completed kOk (the moment a session would send 250) to fd 3,
// until the parent kills it with SIGKILL. Bounded in count in case the parent
// is gone.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "base/log.h"
#include "queue/spool.h"
#include "queue/testing/test_messages.h"

namespace {

class PipeSink final : public sluice::queue::CompletionSink {
 public:
  void OnCommitted(uint64_t token, sluice::queue::CommitStatus status) override {
    if (status != sluice::queue::CommitStatus::kOk)
      return;
    SLUICE_CHECK(write(3, &token, sizeof token) == sizeof token);
  }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace sluice::queue;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SPOOL_DIR (fd 3: token pipe)\n", argv[0]);
    return 2;
  }
  SpoolOptions options;
  options.path = argv[1];
  auto spool = Spool::Open(options);
  if (!spool.ok()) {
    std::fprintf(stderr, "open: %s\n", spool.error().message.c_str());
    return 1;
  }
  PipeSink sink;
  for (uint64_t token = 0; token < 1'000'000; ++token) {
    std::string meta = EncodeEnvelope(testing::MakeEnvelope(token));
    std::string body = testing::MakeBody(token, 512 + token % 8192);
    // kFull leaves the strings with us; wait for the writer to make room.
    // NOLINTNEXTLINE(bugprone-use-after-move): kFull gives both strings back
    while ((*spool)->Enqueue({token + 1, 0}, std::move(meta), std::move(body), &sink, token) !=
           Admit::kAccepted) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return 0;
}
