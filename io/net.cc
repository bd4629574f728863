#include "io/net.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include <arpa/inet.h>
#include <netinet/tcp.h>

namespace sluice::io {

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  std::string s(text);
  IpAddress ip;
  in_addr a4{};
  if (inet_pton(AF_INET, s.c_str(), &a4) == 1) {
    ip.v4_ = true;
    std::memcpy(ip.bytes_.data(), &a4, 4);
    return ip;
  }
  in6_addr a6{};
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr = a6;
    return FromSockaddr(reinterpret_cast<const sockaddr*>(&sin6));
  }
  return std::nullopt;
}

IpAddress IpAddress::FromSockaddr(const sockaddr* sa) {
  IpAddress ip;
  if (sa->sa_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(sa);
    ip.v4_ = true;
    std::memcpy(ip.bytes_.data(), &sin->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(sa);
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
      ip.v4_ = true;
      std::memcpy(ip.bytes_.data(), sin6->sin6_addr.s6_addr + 12, 4);
    } else {
      ip.v4_ = false;
      std::memcpy(ip.bytes_.data(), sin6->sin6_addr.s6_addr, 16);
    }
  }
  return ip;
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(v4_ ? AF_INET : AF_INET6, bytes_.data(), buf, sizeof(buf));
  return buf;
}

std::optional<Cidr> Cidr::Parse(std::string_view text) {
  const size_t slash = text.find('/');
  auto ip = IpAddress::Parse(text.substr(0, slash));
  if (!ip)
    return std::nullopt;
  const int max = ip->is_v4() ? 32 : 128;
  int prefix = max;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (ec != std::errc() || ptr != p.data() + p.size() || p.empty() || prefix < 0 ||
        prefix > max) {
      return std::nullopt;
    }
  }
  Cidr c;
  c.net_ = *ip;
  c.prefix_ = prefix;
  return c;
}

IpAddress IpAddress::Network(unsigned prefix) const {
  IpAddress out = *this;
  const unsigned width = v4_ ? 32 : 128;
  if (prefix >= width)
    return out;
  for (unsigned bit = prefix; bit < width; ++bit) {
    out.bytes_[bit / 8] = static_cast<uint8_t>(out.bytes_[bit / 8] & ~(0x80u >> (bit % 8)));
  }
  return out;
}

bool Cidr::Contains(const IpAddress& ip) const {
  if (ip.is_v4() != net_.is_v4())
    return false;
  const auto& a = ip.bytes();
  const auto& b = net_.bytes();
  int bits = prefix_;
  for (size_t i = 0; bits > 0; ++i, bits -= 8) {
    const uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
    if ((a[i] & mask) != (b[i] & mask))
      return false;
  }
  return true;
}

std::string Cidr::ToString() const {
  return net_.ToString() + "/" + std::to_string(prefix_);
}

Result<SocketAddress> SocketAddress::Parse(std::string_view host, uint16_t port) {
  SocketAddress out;
  std::string h(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']')
    h = h.substr(1, h.size() - 2);
  auto* sin = reinterpret_cast<sockaddr_in*>(&out.storage);
  if (inet_pton(AF_INET, h.c_str(), &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    out.len = sizeof(sockaddr_in);
    return out;
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (inet_pton(AF_INET6, h.c_str(), &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    out.len = sizeof(sockaddr_in6);
    return out;
  }
  return MakeError("not an IP address: '" + h + "'", EINVAL);
}

std::string SocketAddress::ToString() const {
  const auto ip = IpAddress::FromSockaddr(get());
  uint16_t port = 0;
  if (storage.ss_family == AF_INET) {
    port = ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  } else if (storage.ss_family == AF_INET6) {
    port = ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
  if (storage.ss_family == AF_INET6 && !ip.is_v4()) {
    return "[" + ip.ToString() + "]:" + std::to_string(port);
  }
  return ip.ToString() + ":" + std::to_string(port);
}

Result<int> ListenTcp(const SocketAddress& addr, int backlog, int send_buffer) {
  const int fd = ::socket(addr.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return MakeError(std::string("socket: ") + std::strerror(errno), errno);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Inherited by accepted sockets. Replies are already coalesced per read batch, so Nagle only
  // adds delay: it holds a write's last partial segment until the previous ones are acked, and
  // with the peer's delayed ACK that can be 40 ms.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (send_buffer > 0)
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof(send_buffer));
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    const int err = errno;
    ::close(fd);
    return MakeError(std::string("SO_REUSEPORT: ") + std::strerror(err), err);
  }
  if (::bind(fd, addr.get(), addr.len) != 0) {
    const int err = errno;
    ::close(fd);
    return MakeError("bind " + addr.ToString() + ": " + std::strerror(err), err);
  }
  if (::listen(fd, backlog) != 0) {
    const int err = errno;
    ::close(fd);
    return MakeError("listen " + addr.ToString() + ": " + std::strerror(err), err);
  }
  return fd;
}

std::optional<SocketAddress> PeerAddress(int fd) {
  SocketAddress a;
  a.len = sizeof(a.storage);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a.storage), &a.len) != 0)
    return std::nullopt;
  return a;
}

}  // namespace sluice::io
