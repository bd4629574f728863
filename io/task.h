#pragma once

// Task<T>: a lazily started C++20 coroutine that resumes its awaiter by
// symmetric transfer when it finishes. Detached<> runs a top-level coroutine
// (one per connection) that frees itself at the end.
//
// Rules (docs/design.md §6.4):
// - co_await only as a full statement or the initialiser of a named variable
//   (g++ 12 temporary-lifetime bugs, GCC PR 95599).
// - Coroutine parameters by value; named member coroutines, no coroutine
//   lambdas handed to a scheduler.
// - A suspended coroutine is never destroyed from outside: cancellation makes
//   the pending operation complete with -ECANCELED and the coroutine unwinds.

#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

namespace sluice::io {

template <typename T>
class Task;

namespace detail {

struct FinalAwaiter {
  bool await_ready() const noexcept {
    return false;
  }
  template <typename Promise>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
    auto next = h.promise().continuation;
    return next ? next : std::noop_coroutine();
  }
  void await_resume() const noexcept {
  }
};

struct PromiseBase {
  std::coroutine_handle<> continuation;
  std::suspend_always initial_suspend() noexcept {
    return {};
  }
  FinalAwaiter final_suspend() noexcept {
    return {};
  }
  // The data path does not throw; an escaping exception is a bug.
  void unhandled_exception() noexcept {
    std::terminate();
  }
};

}  // namespace detail

template <typename T>
class [[nodiscard]] Task {
 public:
  struct promise_type : detail::PromiseBase {
    std::optional<T> value;
    Task get_return_object() {
      return Task(Handle::from_promise(*this));
    }
    template <typename U>
    void return_value(U&& v) {
      value.emplace(std::forward<U>(v));
    }
  };
  using Handle = std::coroutine_handle<promise_type>;

  Task(Task&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {
  }
  Task& operator=(Task&&) = delete;
  Task(const Task&) = delete;
  ~Task() {
    if (h_)
      h_.destroy();
  }

  bool await_ready() const noexcept {
    return false;
  }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
    h_.promise().continuation = awaiter;
    return h_;
  }
  T await_resume() {
    return std::move(*h_.promise().value);
  }

 private:
  explicit Task(Handle h) : h_(h) {
  }
  Handle h_;
};

template <>
class [[nodiscard]] Task<void> {
 public:
  struct promise_type : detail::PromiseBase {
    Task get_return_object() {
      return Task(Handle::from_promise(*this));
    }
    void return_void() {
    }
  };
  using Handle = std::coroutine_handle<promise_type>;

  Task(Task&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {
  }
  Task& operator=(Task&&) = delete;
  Task(const Task&) = delete;
  ~Task() {
    if (h_)
      h_.destroy();
  }

  bool await_ready() const noexcept {
    return false;
  }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
    h_.promise().continuation = awaiter;
    return h_;
  }
  void await_resume() const noexcept {
  }

 private:
  explicit Task(Handle h) : h_(h) {
  }
  Handle h_;
};

// A fire-and-forget coroutine: starts immediately, frees its frame when it
// returns. Used for the top-level coroutine of a connection or listener.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept {
      return {};
    }
    std::suspend_never initial_suspend() noexcept {
      return {};
    }
    std::suspend_never final_suspend() noexcept {
      return {};
    }
    void return_void() noexcept {
    }
    void unhandled_exception() noexcept {
      std::terminate();
    }
  };
};

}  // namespace sluice::io
