// Filling a sockaddr_un, shared by the socket calls of sockets.cc and device_io.cc.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <string>

// Fills `addr` for `path`; false when the path is empty or does not fit (sun_path keeps room for
// the terminating NUL).
inline bool UnixAddress(const std::string& path, sockaddr_un* addr) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr->sun_path) return false;
  memcpy(addr->sun_path, path.data(), path.size());
  return true;
}
