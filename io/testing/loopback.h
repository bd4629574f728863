#pragma once

// Blocking loopback sockets for the io/ tests: the other end of what a shard serves or dials.

#include <unistd.h>

#include <cstdint>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

namespace sluice::io::testing {

// The local port a socket is bound to.
inline uint16_t PortOf(int fd) {
  sockaddr_in sin{};
  socklen_t len = sizeof(sin);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  return ntohs(sin.sin_port);
}

// A blocking client connected to 127.0.0.1:port whose reads give up after 5 s; -1 on failure.
inline int ConnectTo(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// Bytes up to and including the next '\n' (fewer on EOF, timeout or past 1 MiB).
inline std::string ReadLine(int fd) {
  std::string out;
  char c;
  while (out.size() < 1 << 20 && read(fd, &c, 1) == 1) {
    out.push_back(c);
    if (c == '\n')
      break;
  }
  return out;
}

}  // namespace sluice::io::testing
