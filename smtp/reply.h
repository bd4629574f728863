#pragma once

// SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463),
// and ReplyOr<T>: what every argument parser in smtp/ returns. A parse error
// is never an exception or a bare string: it is the exact reply the session
// sends back.

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace sluice::smtp {

struct Reply {
  int code = 0;          // 3 digits, 200..599
  std::string enhanced;  // "5.5.4"; empty when none
  std::string text;      // may contain '\n' for a multi-line reply
};

inline bool operator==(const Reply& a, const Reply& b) {
  return a.code == b.code && a.enhanced == b.enhanced && a.text == b.text;
}

Reply MakeReply(int code, std::string_view enhanced, std::string_view text);

// Appends the wire form of a reply: "250-line1\r\n250 line2\r\n". The enhanced
// code (RFC 2034 §4: on every line) is prefixed to every line when non-empty.
// Lines are split on '\n' (a '\r' before it is dropped); one trailing '\n' is
// ignored. A line with neither enhanced code nor text is "250\r\n" (last) or
// "250-\r\n" (continuation), both valid per RFC 5321 §4.2.
void AppendReply(std::string* out, int code, std::string_view enhanced, std::string_view text);
void AppendReply(std::string* out, const Reply& r);

// Either a value or the reply explaining why the input was refused.
template <typename T>
class [[nodiscard]] ReplyOr {
 public:
  ReplyOr(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  ReplyOr(Reply error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The reply to send; only valid when !ok().
  const Reply& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Reply> v_;
};

}  // namespace sluice::smtp
