#pragma once

// IP addresses, CIDR blocks and socket helpers.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <netinet/in.h>
#include <sys/socket.h>

#include "base/result.h"

namespace sluice::io {

// An IPv4 or IPv6 address. IPv4-mapped IPv6 (::ffff:a.b.c.d) is stored as
// IPv4 so policy written for 127.0.0.0/8 matches clients of a dual-stack
// listener.
class IpAddress {
 public:
  static std::optional<IpAddress> Parse(std::string_view text);
  static IpAddress FromSockaddr(const sockaddr* sa);
  bool is_v4() const {
    return v4_;
  }
  std::string ToString() const;
  const std::array<uint8_t, 16>& bytes() const {
    return bytes_;
  }  // v4 in the first 4 bytes
  bool operator==(const IpAddress&) const = default;
  // The address with every bit past `prefix` cleared: the network it belongs to. A prefix past
  // the family's width (32, 128) keeps the whole address.
  IpAddress Network(unsigned prefix) const;

 private:
  bool v4_ = true;
  std::array<uint8_t, 16> bytes_{};
};

class Cidr {
 public:
  // "10.0.0.0/8", "::1/128", or a bare address (a host route).
  static std::optional<Cidr> Parse(std::string_view text);
  bool Contains(const IpAddress& ip) const;
  std::string ToString() const;

 private:
  IpAddress net_;
  int prefix_ = 0;
};

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t len = 0;

  static Result<SocketAddress> Parse(std::string_view host, uint16_t port);
  const sockaddr* get() const {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
  std::string ToString() const;  // "127.0.0.1:25", "[::1]:25"
};

// A listening TCP socket with SO_REUSEPORT, so every shard binds its own and
// the kernel spreads connections across them.
// send_buffer > 0: SO_SNDBUF of the accepted sockets (inherited from the listener; the kernel
// doubles it for its bookkeeping), which also turns off send-buffer autotuning for them.
Result<int> ListenTcp(const SocketAddress& addr, int backlog, int send_buffer = 0);

// Address of the peer of a connected socket, if it has one.
std::optional<SocketAddress> PeerAddress(int fd);

}  // namespace sluice::io
