#pragma once

// Everything the gateway keeps per shard: the io::Shard, its listeners, its
// sessions, its message-id generator, and the bridge that brings spool
// completions back from the writer thread.

#include <coroutine>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <utility>
#include <vector>

#include "delivery/delivery_shard.h"
#include "gateway/server.h"
#include "io/listener.h"
#include "io/shard.h"
#include "io/task.h"
#include "queue/message_id.h"
#include "queue/spool.h"

namespace sluice::gateway {

class Server;
class Session;

// Counters of one shard; written by the shard thread only.
struct SessionStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_rejected = 0;
  uint64_t messages_queued = 0;
  uint64_t bytes_queued = 0;
  uint64_t transactions_rejected = 0;
  uint64_t smuggling_rejected = 0;
};

class ShardContext final : public queue::CompletionSink {
 public:
  ShardContext(Server& server, unsigned id);

  // co_await ctx.Commit(...): waits for the spool's answer for this token.
  class CommitAwaiter {
   public:
    CommitAwaiter(ShardContext& ctx, uint64_t token) : ctx_(ctx), token_(token) {}
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h);
    queue::CommitStatus await_resume();

   private:
    ShardContext& ctx_;
    uint64_t token_;
  };
  // Reserves a token for one Spool::Enqueue; AwaitCommit(token) waits for it.
  uint64_t NewCommitToken();
  void DropCommitToken(uint64_t token);  // Enqueue refused: no completion will come
  CommitAwaiter AwaitCommit(uint64_t token) { return CommitAwaiter(*this, token); }

  // queue::CompletionSink, on the writer thread.
  void OnCommitted(uint64_t token, queue::CommitStatus status) override;

  io::Shard& shard() { return shard_; }
  delivery::DeliveryShard& delivery() { return *delivery_; }
  Server& server() { return server_; }
  queue::MessageIdGenerator& ids() { return ids_; }
  SessionStats& stats() { return stats_; }
  bool stopping() const { return stopping_; }

  // Shard thread: bind listeners, start delivery and adopt the messages
  // recovered from the spool that this shard owns.
  Result<void> Start(std::vector<std::pair<queue::MessageId, queue::Envelope>> recovered);
  void BeginShutdown();  // posted by Server::Shutdown

 private:
  struct Pending {
    std::coroutine_handle<> waiter;
    queue::CommitStatus status = queue::CommitStatus::kOk;
    bool done = false;
    uint32_t generation = 1;
    bool in_use = false;
  };

  void DrainCommits();
  void OnAccept(size_t listener_index, int fd);
  // Judges the connections accepted in this loop iteration, after the sessions woken in the same
  // completion batch have run: a client that closed one connection and opened the next at once
  // finds the first one's slot released (its EOF comes before the new accept).
  io::Detached JudgeAccepts();
  void Judge(size_t listener_index, int fd);
  io::Detached JudgeAgain(size_t listener_index, int fd, io::IpAddress ip, std::string client);
  void Admit(size_t listener_index, int fd, const io::IpAddress& ip, std::string client);
  void Refuse(size_t listener_index, int fd, Server::Admission admission);

  // A connection over a limit is looked at again this often before it gets 421; at most this
  // many wait at a time per shard (past it: 421 at once), so a flood cannot pile up descriptors.
  static constexpr int kAdmissionRetries = 10;
  static constexpr std::chrono::milliseconds kAdmissionRetryDelay{10};
  static constexpr unsigned kMaxWaitingAdmission = 256;
  io::Detached RunSession(std::unique_ptr<Session> session);
  io::Detached DrainAndQuit();

  Server& server_;
  io::Shard shard_;
  queue::MessageIdGenerator ids_;
  std::unique_ptr<delivery::DeliveryShard> delivery_;
  std::vector<std::unique_ptr<io::Listener>> listeners_;
  std::unordered_set<Session*> sessions_;
  std::vector<std::pair<size_t, int>> accepted_;  // listener index, fd; not judged yet
  bool judging_ = false;                          // JudgeAccepts is scheduled
  unsigned waiting_admission_ = 0;                // JudgeAgain coroutines
  bool stopping_ = false;
  SessionStats stats_;

  std::vector<Pending> pending_;
  std::vector<uint32_t> free_pending_;

  // Completions handed over by the writer thread.
  std::mutex done_mu_;
  std::vector<std::pair<uint64_t, queue::CommitStatus>> done_;  // guarded by done_mu_
  std::vector<std::pair<uint64_t, queue::CommitStatus>> done_work_;
};

}  // namespace sluice::gateway
