#pragma once

// Size accounting shared by DataReader and BdatReader: counts every octet of
// the message, appends only while the total stays within max_size, so memory
// is bounded by the limit whatever the peer sends.

#include <cstddef>
#include <cstdint>
#include <string>

namespace sluice::smtp::detail {

class BodySink {
 public:
  explicit BodySink(uint64_t max_size) : max_size_(max_size) {
  }

  void Append(std::string* body, const char* p, size_t n) {
    if (n == 0)
      return;
    const uint64_t before = size_;
    size_ += n;
    if (too_big_ || dropping_) {
      too_big_ = too_big_ || size_ > max_size_;
      return;
    }
    if (size_ > max_size_) {
      too_big_ = true;
      // Keep the body at exactly max_size octets; it will be discarded.
      body->append(p, static_cast<size_t>(max_size_ - before));
      return;
    }
    body->append(p, n);
  }

  uint64_t size() const {
    return size_;
  }
  bool too_big() const {
    return too_big_;
  }
  // From now on nothing is stored (the owner has no room for it); octets are still counted.
  void Drop() {
    dropping_ = true;
  }

 private:
  uint64_t max_size_;
  uint64_t size_ = 0;
  bool too_big_ = false;
  bool dropping_ = false;
};

}  // namespace sluice::smtp::detail
