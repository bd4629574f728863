#include "io/connection.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <netinet/tcp.h>
#include <sys/socket.h>

#include "base/log.h"

namespace sluice::io {

const char* ToString(ReadStatus status) {
  switch (status) {
    case ReadStatus::kData:
      return "data";
    case ReadStatus::kEof:
      return "connection closed by the peer";
    case ReadStatus::kError:
      return "socket error";
    case ReadStatus::kTimeout:
      return "timed out";
    case ReadStatus::kInterrupted:
      return "interrupted";
  }
  return "unknown";
}

Connection::Connection(Shard& shard, int fd) : shard_(shard), fd_(fd) {
}

Connection::~Connection() {
  if (ops_in_flight_ != 0)
    SLUICE_BUG("connection freed with requests in flight");
  if (!closed_ && fd_ >= 0)
    ::close(fd_);
}

void Connection::Start() {
  ArmRecv();
}

void Connection::ArmRecv() {
  if (recv_armed_ || eof_ || error_ != 0 || closed_)
    return;
  io_uring_sqe* sqe = shard_.GetSqe();
  // Recv selecting from the shard's buffer ring: no buffer is pinned to an idle connection.
  // Multishot (kernel 6.0) for streams; single-shot (len 0: the buffer's size) where one request
  // may bring no more than one buffer past the high-water mark (SetMultishot).
  if (multishot_) {
    io_uring_prep_recv_multishot(sqe, fd_, nullptr, 0, 0);
  } else {
    io_uring_prep_recv(sqe, fd_, nullptr, 0, 0);
  }
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = Shard::kRecvBufferGroup;
  recv_user_data_ = shard_.Arm(sqe, this);
  recv_armed_ = true;
  recv_paused_ = false;
  ++ops_in_flight_;
}

void Connection::OnCompletion(int32_t res, uint32_t flags) {
  if (flags & IORING_CQE_F_BUFFER) {
    const unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    if (res > 0) {
      const std::string_view data(shard_.RecvBuffer(bid), static_cast<size_t>(res));
      if (transform_) {
        // Decrypt in place of the copy: the plaintext lands in the inbox.
        const bool handshaking = !transform_->handshake_done();
        if (!transform_->Receive(data, &inbox_))
          transform_error_ = true;
        if (handshaking || transform_error_)
          raw_progress_ = true;
      } else {
        inbox_.append(data);
      }
      received_since_send_ = true;
    }
    shard_.ReturnRecvBuffer(bid);
  }
  if (transform_ && transform_->handshake_done() &&
      (transform_error_ || transform_->peer_closed()) && error_ == 0) {
    // A TLS failure or close_notify ends the stream for the owner. (During
    // the handshake, Handshake() sends the alert and reports the failure.)
    if (transform_error_)
      error_ = EPROTO;
    else
      eof_ = true;
  }
  const bool more = flags & IORING_CQE_F_MORE;
  if (res == 0) {
    if (transform_ && transform_->handshake_done() && !transform_->peer_closed() && !eof_) {
      // No close_notify before the TCP FIN: a truncation attack or a sloppy
      // peer; SMTP's own framing (QUIT, the final dot) makes it harmless.
      auto& s = const_cast<ShardStats&>(shard_.stats());
      s.tls_abrupt_eof.store(s.tls_abrupt_eof.load(std::memory_order_relaxed) + 1,
                             std::memory_order_relaxed);
    }
    eof_ = true;
  } else if (res == -ENOBUFS) {
    // The ring ran dry; this batch's buffers are already back.
    auto& s = const_cast<ShardStats&>(shard_.stats());
    s.enobufs.store(s.enobufs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  } else if (res < 0 && res != -ECANCELED) {
    error_ = -res;
  }
  if (!more) {
    // The multishot is over (EOF, error, ENOBUFS, our cancel, or the kernel
    // ended it). Receive again unless the connection is done, or paused for
    // backpressure with the owner still behind: then Consume() re-arms. A
    // waiting reader always gets a receive, or it could wait forever.
    recv_armed_ = false;
    OpDone();
    // A single-shot recv that reached the mark is not renewed: the same pause as a cancelled
    // multishot.
    if (!recv_paused_ && inbox().size() >= high_water_)
      recv_paused_ = true;
    const bool behind = recv_paused_ && inbox().size() >= low_water_ && !reader_;
    if (!closed_ && !behind)
      ArmRecv();
  }

  if (!closed_ && recv_armed_ && !recv_paused_ && inbox().size() >= high_water_) {
    recv_paused_ = true;
    shard_.Cancel(recv_user_data_);
  }
  if (reader_) {
    // New bytes, progress below a transform, end of stream or an error: the reader wakes.
    if (inbox().size() > seen_ || raw_progress_ || eof_ || error_ != 0)
      WakeReader();
  }
}

void Connection::Consume(size_t n) {
  inbox_pos_ += n;
  if (inbox_pos_ >= inbox_.size()) {
    inbox_.clear();
    inbox_pos_ = 0;
  } else if (inbox_pos_ > 64 * 1024 && inbox_pos_ * 2 > inbox_.size()) {
    inbox_.erase(0, inbox_pos_);
    inbox_pos_ = 0;
  }
  seen_ = std::min(seen_ > n ? seen_ - n : 0, inbox().size());
  if (recv_paused_ && !recv_armed_ && inbox().size() < low_water_)
    ArmRecv();
}

void Connection::SetInboxHighWater(size_t bytes) {
  high_water_ = std::max<size_t>(bytes, 1024);
  low_water_ = high_water_ / 4;
  if (!closed_ && recv_armed_ && !recv_paused_ && inbox().size() >= high_water_) {
    recv_paused_ = true;
    shard_.Cancel(recv_user_data_);
  } else if (recv_paused_ && !recv_armed_ && inbox().size() < low_water_) {
    ArmRecv();
  }
}

void Connection::SetMultishot(bool on) {
  if (multishot_ == on)
    return;
  multishot_ = on;
  // An armed multishot would go on bringing data: end it, the completion re-arms single-shot.
  // (An armed single-shot completes once and is then renewed as a multishot.)
  if (!on && recv_armed_ && !closed_)
    shard_.Cancel(recv_user_data_);
}

void Connection::SetQuickAck(bool on) {
  quick_ack_ = on;
}

void Connection::QuickAck() {
  quick_acked_ = true;
  if (fd_ < 0 || closed_)
    return;
  // tcp(7): leaves pingpong mode and sends an ACK that is due. Not permanent: a send of ours
  // soon after data arrived enters it again, hence once per send (SendRaw resets the flags). A
  // failure (a socket already reset) costs nothing but the delay.
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

void Connection::WakeReader() {
  auto h = reader_;
  reader_ = nullptr;
  shard_.timers().Cancel(read_timer_);
  read_timer_ = {};
  shard_.Schedule(h);
}

void Connection::OnTimer() {
  read_timer_ = {};
  if (reader_)
    WakeReader();
}

void Connection::Interrupt() {
  interrupted_ = true;
  if (reader_ && reader_interruptible_)
    WakeReader();
}

void Connection::Abort() {
  if (closed_)
    return;
  if (error_ == 0)
    error_ = ECONNABORTED;
  CancelOps();
  if (reader_)
    WakeReader();
}

void Connection::CancelOps() {
  if (ops_in_flight_ == 0)
    return;
  const unsigned known = (recv_armed_ ? 1u : 0u) + (send_user_data_ != 0 ? 1u : 0u);
  if (known != ops_in_flight_) {
    shard_.CancelFd(fd_);  // two sends at once: not how this class is used; still correct
    return;
  }
  // By user_data: the kernel finds each request in its hash. Cancelling by fd instead makes it
  // walk every armed request of the ring, which with 10,000 idle connections (each with its
  // multishot recv armed) cost 7% of the process's CPU at only 140 closes/s.
  if (recv_armed_)
    shard_.Cancel(recv_user_data_);
  if (send_user_data_ != 0)
    shard_.Cancel(send_user_data_);
}

bool Connection::ReadAwaiter::await_ready() {
  if (c_.inbox().size() > c_.seen_ || c_.raw_progress_)
    return true;
  if (c_.eof_ || c_.error_ != 0)
    return true;
  if (interruptible_ && c_.interrupted_)
    return true;
  return false;
}

void Connection::ReadAwaiter::await_suspend(std::coroutine_handle<> h) {
  if (c_.inbox().empty() && c_.inbox_.capacity() > kIdleInboxCapacity) {
    // A burst grew the inbox; a connection that waits must not keep that memory (a thousand
    // clients that each sent a burst and then went quiet would hold hundreds of MiB).
    std::string().swap(c_.inbox_);
    c_.inbox_pos_ = 0;
  }
  // Part of an answer is here and the rest is not: the peer may hold it until we acknowledge.
  if (c_.quick_ack_ && c_.received_since_send_ && !c_.quick_acked_)
    c_.QuickAck();
  c_.reader_ = h;
  c_.reader_interruptible_ = interruptible_;
  c_.read_timer_ = c_.shard_.timers().Add(c_.shard_.Now() + timeout_, &c_);
  // A paused recv resumes once the owner drained the inbox (Consume); if it
  // is waiting now, the inbox is below the mark, so make sure we receive.
  if (!c_.recv_armed_)
    c_.ArmRecv();
}

ReadStatus Connection::ReadAwaiter::await_resume() {
  ReadStatus status = ReadStatus::kTimeout;
  if (c_.inbox().size() > c_.seen_ || c_.raw_progress_) {
    c_.raw_progress_ = false;
    status = ReadStatus::kData;
  } else if (c_.error_ != 0 || c_.closed_) {
    status = ReadStatus::kError;
  } else if (c_.eof_) {
    status = ReadStatus::kEof;
  } else if (interruptible_ && c_.interrupted_) {
    status = ReadStatus::kInterrupted;
  }
  c_.seen_ = c_.inbox().size();
  return status;
}

// One send request; lives in the SendAll frame until its completion.
class Connection::SendOp final : public CompletionHandler, public TimerHandler {
 public:
  SendOp(Connection& c, const char* data, size_t len, MonoTime deadline) : c_(c) {
    io_uring_sqe* sqe = c_.shard_.GetSqe();
    io_uring_prep_send(sqe, c_.fd_, data, len, MSG_NOSIGNAL);
    user_data_ = c_.shard_.Arm(sqe, this);
    ++c_.ops_in_flight_;
    c_.send_user_data_ = user_data_;
    timer_ = c_.shard_.timers().Add(deadline, this);
  }
  bool await_ready() const noexcept {
    return done_;
  }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    waiter_ = h;
  }
  int32_t await_resume() const noexcept {
    return res_;
  }

  void OnCompletion(int32_t res, uint32_t /*flags*/) override {
    res_ = res;
    done_ = true;
    c_.shard_.timers().Cancel(timer_);
    if (c_.send_user_data_ == user_data_)
      c_.send_user_data_ = 0;
    c_.OpDone();
    if (waiter_)
      c_.shard_.Schedule(waiter_);
  }
  void OnTimer() override {
    timer_ = {};
    c_.shard_.Cancel(user_data_);  // completes with -ECANCELED
  }

 private:
  Connection& c_;
  uint64_t user_data_ = 0;
  TimerWheel::Id timer_;
  std::coroutine_handle<> waiter_;
  int32_t res_ = 0;
  bool done_ = false;
};

Task<bool> Connection::SendAll(std::string data, Duration timeout) {
  if (transform_) {
    // Anything the transform produced on its own (tickets, alerts) goes first.
    std::string cipher = transform_->TakeOutput();
    if (!transform_->Send(data, &cipher))
      co_return false;
    const bool ok = co_await SendRaw(std::move(cipher), timeout);
    co_return ok;
  }
  const bool ok = co_await SendRaw(std::move(data), timeout);
  co_return ok;
}

Task<bool> Connection::SendRaw(std::string data, Duration timeout) {
  const MonoTime deadline = shard_.Now() + timeout;
  size_t off = 0;
  while (off < data.size()) {
    if (closed_ || error_ != 0)
      co_return false;
    received_since_send_ = false;
    quick_acked_ = false;
    SendOp op(*this, data.data() + off, data.size() - off, deadline);
    const int32_t res = co_await op;
    if (res <= 0) {
      if (res == -EINTR || res == -EAGAIN)
        continue;
      if (res < 0 && res != -ECANCELED)
        error_ = -res;
      co_return false;
    }
    off += static_cast<size_t>(res);
  }
  co_return true;
}

void Connection::OpDone() {
  if (ops_in_flight_ == 0) {
    SLUICE_BUG("op count underflow");
    return;
  }
  if (--ops_in_flight_ == 0 && closer_) {
    auto h = closer_;
    closer_ = nullptr;
    shard_.Schedule(h);
  }
}

namespace {
struct AwaitHandle {
  std::coroutine_handle<>* slot;
  bool await_ready() const noexcept {
    return false;
  }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    *slot = h;
  }
  void await_resume() const noexcept {
  }
};
}  // namespace

void Connection::StartTransform(std::unique_ptr<StreamTransform> transform) {
  transform_ = std::move(transform);
  transform_->Start();
  std::string early(inbox());
  DiscardInbox();
  seen_ = 0;
  if (!early.empty() && !transform_->Receive(early, &inbox_))
    transform_error_ = true;
}

Task<bool> Connection::Handshake(Duration timeout) {
  const MonoTime deadline = shard_.Now() + timeout;
  for (;;) {
    std::string out = transform_->TakeOutput();
    if (!out.empty()) {
      const bool sent = co_await SendRaw(std::move(out), deadline - shard_.Now());
      if (!sent)
        co_return false;
    }
    if (transform_error_ || transform_->failed()) {
      // The alert (e.g. protocol_version, RFC 8446 §4.2.1) went out above.
      if (error_ == 0)
        error_ = EPROTO;
      co_return false;
    }
    if (transform_->handshake_done())
      co_return true;
    const Duration left = deadline - shard_.Now();
    if (left <= Duration::zero())
      co_return false;
    // Handshake records produce no plaintext; OnCompletion flags raw
    // progress so this wait wakes for them.
    const ReadStatus st = co_await WaitForData(left, false);
    if (st == ReadStatus::kTimeout || st == ReadStatus::kError || st == ReadStatus::kEof) {
      co_return false;
    }
  }
}

Task<void> Connection::Close() {
  if (closed_)
    co_return;
  if (transform_ && transform_->handshake_done() && error_ == 0 && !eof_) {
    // close_notify, best effort and brief: the peer may be gone already.
    transform_->Close();
    std::string bye = transform_->TakeOutput();
    if (!bye.empty()) {
      const bool sent = co_await SendRaw(std::move(bye), std::chrono::seconds(2));
      (void)sent;
    }
  }
  closed_ = true;
  if (reader_)
    WakeReader();
  if (ops_in_flight_ > 0) {
    CancelOps();
    co_await AwaitHandle{&closer_};
  }
  ::close(fd_);
  fd_ = -1;
}

namespace {

// Cancels a connect that takes too long; lives in ConnectTcp's frame.
class ConnectDeadline final : public TimerHandler {
 public:
  ConnectDeadline(Shard& shard, uint64_t user_data, Duration timeout)
      : shard_(shard), user_data_(user_data) {
    id_ = shard_.timers().Add(shard_.Now() + timeout, this);
  }
  ~ConnectDeadline() override {
    shard_.timers().Cancel(id_);
  }
  void OnTimer() override {
    id_ = {};
    fired_ = true;
    shard_.Cancel(user_data_);
  }
  bool fired() const {
    return fired_;
  }

 private:
  Shard& shard_;
  uint64_t user_data_;
  TimerWheel::Id id_;
  bool fired_ = false;
};

}  // namespace

Task<Result<int>> ConnectTcp(Shard& shard, SocketAddress address, Duration timeout) {
  const int fd = ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    co_return MakeError(std::string("socket: ") + std::strerror(errno), errno);
  // Writes are whole command groups or body chunks: no Nagle delay (see ListenTcp).
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  UringOp op(shard);
  io_uring_prep_connect(op.sqe(), fd, address.get(), address.len);
  ConnectDeadline deadline(shard, op.user_data(), timeout);
  const int32_t res = co_await op;
  if (res == 0)
    co_return fd;
  ::close(fd);
  const int err = (res == -ECANCELED && deadline.fired()) ? ETIMEDOUT : -res;
  co_return MakeError("connect " + address.ToString() + ": " + std::strerror(err), err);
}

}  // namespace sluice::io
