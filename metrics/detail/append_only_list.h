#pragma once

// AppendOnlyList<T>: a list that one thread at a time appends to (under the owner's mutex) while
// any number of threads read it without a lock. Elements never move, so references stay valid
// for the list's lifetime. Readers see a prefix: size() is published with release after the new
// element is fully constructed, and chunks are never freed before the list itself.
//
// Chunk k holds kFirst << k elements, so 40 chunk pointers cover far more than memory allows.

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <memory>
#include <new>
#include <utility>

namespace sluice::metrics::detail {

template <typename T>
class AppendOnlyList {
 public:
  AppendOnlyList() = default;
  AppendOnlyList(const AppendOnlyList&) = delete;
  AppendOnlyList& operator=(const AppendOnlyList&) = delete;

  ~AppendOnlyList() {
    const size_t n = size_.load(std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i) {
      Slot(i)->~T();
    }
    for (size_t k = 0; k < chunks_.size(); ++k) {
      T* chunk = chunks_[k].load(std::memory_order_relaxed);
      if (chunk != nullptr) {
        std::allocator<T>().deallocate(chunk, ChunkCapacity(k));
      }
    }
  }

  // Any thread, no lock. Elements [0, size()) are fully constructed.
  size_t size() const {
    return size_.load(std::memory_order_acquire);
  }
  const T& operator[](size_t i) const {
    return *Slot(i);
  }
  T& operator[](size_t i) {
    return *Slot(i);
  }

  // The caller serializes appends (one appender at a time).
  template <typename... Args>
  T& Append(Args&&... args) {
    const size_t i = size_.load(std::memory_order_relaxed);
    const auto [k, offset] = Locate(i);
    T* chunk = chunks_[k].load(std::memory_order_relaxed);
    if (chunk == nullptr) {
      chunk = std::allocator<T>().allocate(ChunkCapacity(k));
      chunks_[k].store(chunk, std::memory_order_relaxed);  // published by the size_ store below
    }
    T* element = new (chunk + offset) T(std::forward<Args>(args)...);
    size_.store(i + 1, std::memory_order_release);
    return *element;
  }

 private:
  static constexpr size_t kFirstLog2 = 4;
  static constexpr size_t kFirst = size_t{1} << kFirstLog2;

  static constexpr size_t ChunkCapacity(size_t k) {
    return kFirst << k;
  }

  // Element i lives in chunk k = floor(log2(i + kFirst)) - kFirstLog2.
  static std::pair<size_t, size_t> Locate(size_t i) {
    const size_t m = i + kFirst;
    const size_t k = static_cast<size_t>(std::bit_width(m)) - 1 - kFirstLog2;
    return {k, m - ChunkCapacity(k)};
  }

  T* Slot(size_t i) const {
    const auto [k, offset] = Locate(i);
    return chunks_[k].load(std::memory_order_relaxed) + offset;
  }

  std::array<std::atomic<T*>, 40> chunks_{};
  std::atomic<size_t> size_{0};
};

}  // namespace sluice::metrics::detail
