#pragma once

// CellArena: the per-thread value cells behind every registered series (docs/design.md §9.1).
//
// Each slot (one per shard, plus one for non-shard threads) has its own chunks of 64-bit atomic
// cells, aligned to cache lines, so cells written by different threads never share a line and a
// shard's cells for many series sit together. Cells are zeroed at allocation and never freed
// before the arena, so a series may keep raw pointers to them.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace sluice::metrics::detail {

using Cell = std::atomic<uint64_t>;
static_assert(Cell::is_always_lock_free);

class CellArena {
 public:
  explicit CellArena(unsigned slots) : slots_(slots) {
  }
  CellArena(const CellArena&) = delete;
  CellArena& operator=(const CellArena&) = delete;

  unsigned slots() const {
    return static_cast<unsigned>(slots_.size());
  }

  // n contiguous zeroed cells in `slot`. Any thread; serialized internally (registration is rare).
  Cell* Allocate(unsigned slot, size_t n) {
    std::lock_guard<std::mutex> lock(mutex_);
    Slot& s = slots_[slot];
    if (s.chunks.empty() || s.used + n > s.capacity) {
      // A chunk is a whole number of cache lines; a request larger than a chunk gets its own.
      const size_t cells =
          (std::max(n, kChunkCells) + kCellsPerLine - 1) / kCellsPerLine * kCellsPerLine;
      s.chunks.emplace_back(cells);
      s.used = 0;
      s.capacity = cells;
    }
    Cell* cells = s.chunks.back().data() + s.used;
    s.used += n;
    return cells;
  }

 private:
  static constexpr size_t kLineBytes = 64;
  static constexpr size_t kCellsPerLine = kLineBytes / sizeof(Cell);
  static constexpr size_t kChunkCells = 512;  // 4 KiB

  // Cache-line aligned, zeroed cells.
  class Chunk {
   public:
    explicit Chunk(size_t n)
        : n_(n), cells_(static_cast<Cell*>(::operator new(n * sizeof(Cell), kAlign))) {
      std::uninitialized_value_construct_n(cells_, n_);
    }
    Chunk(Chunk&& other) noexcept : n_(other.n_), cells_(std::exchange(other.cells_, nullptr)) {
    }
    Chunk(const Chunk&) = delete;
    Chunk& operator=(const Chunk&) = delete;
    Chunk& operator=(Chunk&&) = delete;
    ~Chunk() {
      if (cells_ != nullptr) {
        std::destroy_n(cells_, n_);
        ::operator delete(cells_, kAlign);
      }
    }
    Cell* data() const {
      return cells_;
    }

   private:
    static constexpr std::align_val_t kAlign{kLineBytes};
    size_t n_;
    Cell* cells_;
  };

  struct Slot {
    std::vector<Chunk> chunks;
    size_t used = 0;
    size_t capacity = 0;
  };

  std::mutex mutex_;
  std::vector<Slot> slots_;
};

}  // namespace sluice::metrics::detail
