#pragma once

// Result<T, E>: the return type of every fallible function on the data path. It holds either the
// value or the error that explains why there is none. No exceptions on the data path
// (docs/design.md §3); a Result must be looked at. E is Error below unless a component has a
// better description of a failure: the SMTP codec returns the reply to send
// (smtp::ReplyOr<T> = Result<T, Reply>).

#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace sluice {

struct Error {
  // errno-style code when one applies (0 otherwise) and a message for humans.
  int code = 0;
  std::string message;
};

template <typename T, typename E = Error>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<T, E>, "a value and an error of one type cannot be told apart");

 public:
  // NOLINTNEXTLINE(google-explicit-constructor)
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {
  }
  // NOLINTNEXTLINE(google-explicit-constructor)
  Result(E error) : v_(std::in_place_index<1>, std::move(error)) {
  }

  bool ok() const {
    return v_.index() == 0;
  }
  explicit operator bool() const {
    return ok();
  }

  T& value() & {
    return std::get<0>(v_);
  }
  const T& value() const& {
    return std::get<0>(v_);
  }
  T&& value() && {
    return std::get<0>(std::move(v_));
  }
  T& operator*() & {
    return value();
  }
  const T& operator*() const& {
    return value();
  }
  T* operator->() {
    return &value();
  }
  const T* operator->() const {
    return &value();
  }

  // Only valid when !ok().
  const E& error() const {
    return std::get<1>(v_);
  }

 private:
  std::variant<T, E> v_;
};

template <typename E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  Result(E error) : error_(std::move(error)), ok_(false) {
  }  // NOLINT

  bool ok() const {
    return ok_;
  }
  explicit operator bool() const {
    return ok_;
  }
  // Only valid when !ok().
  const E& error() const {
    return error_;
  }

 private:
  E error_;
  bool ok_ = true;
};

inline Error MakeError(std::string message, int code = 0) {
  return Error{code, std::move(message)};
}

}  // namespace sluice
