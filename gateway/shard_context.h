#pragma once

// Everything the gateway keeps per shard: the io::Shard, its listeners, its
// sessions, its message-id generator, and the waiter that brings spool
// completions back from the writer thread.

#include <cstdint>
#include <memory>
#include <unordered_set>
#include <utility>
#include <vector>

#include "delivery/delivery_shard.h"
#include "gateway/server.h"
#include "io/listener.h"
#include "io/shard.h"
#include "io/task.h"
#include "queue/commit_waiter.h"
#include "queue/message_id.h"
#include "queue/spool.h"

namespace sluice::gateway {

class Server;
class Session;

class ShardContext final {
 public:
  ShardContext(Server& server, unsigned id);

  ShardContext(const ShardContext&) = delete;
  ShardContext& operator=(const ShardContext&) = delete;

  io::Shard& shard() {
    return shard_;
  }
  // Spool completions back onto this shard: sessions and delivery wait on it.
  queue::CommitWaiter& commits() {
    return commits_;
  }
  delivery::DeliveryShard& delivery() {
    return *delivery_;
  }
  Server& server() {
    return server_;
  }
  queue::MessageIdGenerator& ids() {
    return ids_;
  }
  bool stopping() const {
    return stopping_;
  }

  // Shard thread: start delivery (it reads this shard's due work from the
  // spool) and bind the listeners.
  Result<void> Start();
  void BeginShutdown();  // posted by Server::Shutdown

 private:
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
  queue::CommitWaiter commits_;
  queue::MessageIdGenerator ids_;
  std::unique_ptr<delivery::DeliveryShard> delivery_;
  std::vector<std::unique_ptr<io::Listener>> listeners_;
  std::unordered_set<Session*> sessions_;
  std::vector<std::pair<size_t, int>> accepted_;  // listener index, fd; not judged yet
  bool judging_ = false;                          // JudgeAccepts is scheduled
  unsigned waiting_admission_ = 0;                // JudgeAgain coroutines
  bool stopping_ = false;
};

}  // namespace sluice::gateway
