#pragma once

// Connection: one TCP stream on a shard. Plaintext bytes arrive through a
// multishot recv on the shard's provided-buffer ring and are appended to the
// inbox; the owning coroutine consumes them. One send is in flight at a time.
// The object must outlive every request it issued: Close() cancels them and
// waits for the last completion before closing the fd.

#include <coroutine>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/clock.h"
#include "base/result.h"
#include "io/net.h"
#include "io/shard.h"
#include "io/stream_transform.h"
#include "io/task.h"
#include "io/timer_wheel.h"

namespace sluice::io {

enum class ReadStatus {
  kData,         // new bytes were appended to the inbox
  kEof,          // the peer closed its side
  kError,        // the socket failed (reset, ...)
  kTimeout,      // nothing arrived before the deadline
  kInterrupted,  // Interrupt() was called (shutdown) while waiting
};
// For messages: "data", "connection closed by the peer", "socket error", "timed out",
// "interrupted".
const char* ToString(ReadStatus status);

class Connection final : private CompletionHandler, private TimerHandler {
 public:
  // Inbox bounds: past the high-water mark the recv is cancelled (the kernel
  // buffers and TCP flow control take over) and re-armed below low water
  // (a quarter of it). The defaults suit a stream that is consumed as it
  // arrives (a message body); an owner that may stop consuming for a while
  // (an SMTP session whose client does not read its replies) sets a lower
  // mark so such a connection holds little memory.
  static constexpr size_t kInboxHighWater = 256 * 1024;
  // Multishot recv (the default) keeps bringing data as it arrives: up to 32 buffers (512 KiB)
  // per wakeup, so a cancel at the high-water mark lands well past it. An owner that may stop
  // consuming (a session waiting for a client that does not read its replies) receives
  // single-shot instead: one buffer per request, renewed while below the mark.
  void SetMultishot(bool on);
  // An empty inbox keeps at most this much capacity while its owner waits for data.
  static constexpr size_t kIdleInboxCapacity = 64 * 1024;
  void SetInboxHighWater(size_t bytes);

  Connection(Shard& shard, int fd);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const {
    return fd_;
  }
  Shard& shard() {
    return shard_;
  }

  // Starts receiving. Call once.
  void Start();

  std::string_view inbox() const {
    return std::string_view(inbox_).substr(inbox_pos_);
  }
  void Consume(size_t n);
  // Drops everything received so far (STARTTLS injection defence).
  void DiscardInbox() {
    Consume(inbox().size());
  }
  bool eof() const {
    return eof_;
  }

  class ReadAwaiter {
   public:
    ReadAwaiter(Connection& c, Duration timeout, bool interruptible)
        : c_(c), timeout_(timeout), interruptible_(interruptible) {
    }
    bool await_ready();
    void await_suspend(std::coroutine_handle<> h);
    ReadStatus await_resume();

   private:
    Connection& c_;
    Duration timeout_;
    bool interruptible_;
  };
  // Waits until more bytes arrive than were in the inbox at the last wait.
  ReadAwaiter WaitForData(Duration timeout, bool interruptible) {
    return ReadAwaiter(*this, timeout, interruptible);
  }

  // Quick ACKs while waiting on a partial answer. Linux delays the ACK of data that arrives
  // shortly after a send of ours (its "pingpong" mode: the ACK is meant to ride on our answer)
  // by 40 ms at least (TCP_DELACK_MIN). A client waiting for the rest of an answer (the next
  // reply of a pipelined group, RFC 2920; the next line of a multi-line reply) has nothing to
  // send meanwhile, and a server that writes each reply on its own with Nagle's algorithm on
  // (RFC 896; RFC 2920 §3.2 asks servers to batch with a SHOULD only) holds the rest until its
  // first segment is acknowledged: 40 ms per wait. With this on, a wait for more data after
  // something arrived since our last send sets TCP_QUICKACK: the ACK the kernel holds goes out
  // at once, and what arrives until our next send is acknowledged as it is read. A peer that
  // answers in one segment never leaves us waiting on a partial answer: no system call, no
  // extra ACK. Off by default: a server answers what it read, and its ACKs ride on the answer.
  void SetQuickAck(bool on);

  // Sends all of data (handles short sends); through the TLS transform when
  // there is one. false on error or timeout.
  Task<bool> SendAll(std::string data, Duration timeout);
  // Sends bytes as they are, bypassing the transform.
  Task<bool> SendRaw(std::string data, Duration timeout);

  // Wakes an interruptible WaitForData with kInterrupted; later interruptible
  // waits return kInterrupted at once.
  void Interrupt();
  bool interrupted() const {
    return interrupted_;
  }

  // Forced close during shutdown: pending and later reads and sends fail at
  // once. The owner still calls Close().
  void Abort();

  // Cancels everything in flight, waits for the last completion, closes.
  // With TLS, sends close_notify first (best effort).
  Task<void> Close();

  // TLS. From now on received bytes are ciphertext for `transform`; bytes
  // already in the inbox (the client's first flight may have arrived) are fed
  // to it. Then Handshake() drives it to completion or failure.
  void StartTransform(std::unique_ptr<StreamTransform> transform);
  Task<bool> Handshake(Duration timeout);
  StreamTransform* transform() {
    return transform_.get();
  }
  bool secure() const {
    return transform_ != nullptr && transform_->handshake_done();
  }

 private:
  class SendOp;

  void ArmRecv();
  void OnCompletion(int32_t res, uint32_t flags) override;  // multishot recv
  void OnTimer() override;                                  // read deadline
  void WakeReader();
  void OpDone();
  // Sets TCP_QUICKACK (SetQuickAck).
  void QuickAck();
  // Cancels the armed recv and the send in flight, each by its user_data.
  void CancelOps();

  Shard& shard_;
  int fd_;
  std::string inbox_;
  size_t inbox_pos_ = 0;
  size_t seen_ = 0;  // inbox().size() when the reader last looked
  bool multishot_ = true;
  size_t high_water_ = kInboxHighWater;
  size_t low_water_ = kInboxHighWater / 4;

  uint64_t recv_user_data_ = 0;
  bool recv_armed_ = false;
  bool recv_paused_ = false;  // cancelled for backpressure
  bool eof_ = false;
  int error_ = 0;
  bool interrupted_ = false;

  bool quick_ack_ = false;            // SetQuickAck
  bool received_since_send_ = false;  // bytes arrived since our last send
  bool quick_acked_ = false;          // TCP_QUICKACK set since our last send

  std::coroutine_handle<> reader_;
  bool reader_interruptible_ = false;
  TimerWheel::Id read_timer_;

  std::unique_ptr<StreamTransform> transform_;
  bool transform_error_ = false;
  bool raw_progress_ = false;  // ciphertext arrived during the handshake

  unsigned ops_in_flight_ = 0;      // the armed recv and sends
  uint64_t send_user_data_ = 0;     // the (latest) send in flight (0: none)
  std::coroutine_handle<> closer_;  // waits for ops_in_flight_ == 0
  bool closed_ = false;
};

// Opens a TCP connection from the shard's ring (IORING_OP_CONNECT, 5.5).
// Returns the connected fd, or an Error (code = errno; ETIMEDOUT after
// `timeout`). The caller wraps the fd in a Connection.
Task<Result<int>> ConnectTcp(Shard& shard, SocketAddress address, Duration timeout);

}  // namespace sluice::io
