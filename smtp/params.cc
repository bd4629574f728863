#include "smtp/params.h"

#include <charconv>
#include <limits>

#include "base/ascii.h"
#include "smtp/address.h"

namespace sluice::smtp {

namespace {

Reply Syntax(std::string_view text) {
  return MakeReply(501, "5.5.4", text);
}

struct Param {
  std::string_view keyword;
  std::optional<std::string_view> value;
};

// Splits "KEY=VALUE KEY2 ..." one parameter at a time. RFC 5321 separates
// parameters with one SP; more are tolerated.
class ParamScanner {
 public:
  explicit ParamScanner(std::string_view text) : text_(text) {
  }

  // Returns false at the end. On a malformed parameter sets *error.
  bool Next(Param* p, std::optional<Reply>* error) {
    while (pos_ < text_.size() && text_[pos_] == ' ')
      ++pos_;
    if (pos_ >= text_.size())
      return false;
    size_t end = text_.find(' ', pos_);
    if (end == std::string_view::npos)
      end = text_.size();
    const std::string_view item = text_.substr(pos_, end - pos_);
    pos_ = end;
    const size_t eq = item.find('=');
    p->keyword = item.substr(0, eq);
    p->value.reset();
    // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    bool ok = !p->keyword.empty() && IsAsciiAlnum(p->keyword[0]);
    for (char c : p->keyword)
      ok = ok && (IsAsciiAlnum(c) || c == '-');
    if (!ok) {
      *error = Syntax("Syntax error in parameters");
      return true;
    }
    if (eq != std::string_view::npos) {
      const std::string_view v = item.substr(eq + 1);
      // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF8-non-ascii (RFC 6531 §3.3).
      bool non_ascii = false;
      ok = !v.empty();
      for (char c : v) {
        const auto u = static_cast<unsigned char>(c);
        non_ascii |= u >= 0x80;
        ok = ok && ((u >= 33 && u <= 126 && u != '=') || u >= 0x80);
      }
      if (!ok || (non_ascii && !IsValidUtf8(v))) {
        *error = Syntax("Syntax error in parameters");
        return true;
      }
      p->value = v;
    }
    return true;
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

Reply Unknown(std::string_view keyword) {
  return MakeReply(555, "5.5.4", "Unsupported parameter " + AsciiToUpper(keyword));
}
Reply Duplicate(std::string_view keyword) {
  return MakeReply(501, "5.5.4", "Duplicate parameter " + AsciiToUpper(keyword));
}
Reply BadValue(std::string_view keyword) {
  return Syntax("Bad " + AsciiToUpper(keyword) + " parameter");
}

bool IsXtextOrUtf8(std::string_view s, bool allow_utf8) {
  if (!allow_utf8)
    return IsValidXtext(s);
  // RFC 6533 §3: with SMTPUTF8 the xtext may carry raw UTF-8 (utf-8-addr-unitext);
  // check the ASCII characters as xtext and the rest as UTF-8.
  if (!IsValidUtf8(s))
    return false;
  std::string ascii;
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x80)
      ascii.push_back(c);
  }
  return IsValidXtext(ascii);
}

}  // namespace

bool IsValidXtext(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '+') {
      auto upper_hex = [](char h) { return IsAsciiDigit(h) || (h >= 'A' && h <= 'F'); };
      if (i + 2 >= s.size())
        return false;
      if (!upper_hex(s[i + 1]) || !upper_hex(s[i + 2]))
        return false;
      i += 2;
      continue;
    }
    if (c < '!' || c > '~' || c == '=')
      return false;
  }
  return true;
}

ReplyOr<MailParams> ParseMailParams(std::string_view text) {
  MailParams out;
  bool seen_size = false, seen_body = false, seen_ret = false, seen_envid = false,
       seen_auth = false;
  ParamScanner scanner(text);
  Param p;
  std::optional<Reply> error;
  while (scanner.Next(&p, &error)) {
    if (error)
      return *error;
    const std::string_view k = p.keyword;
    if (EqualsIgnoreCase(k, "SIZE")) {
      if (seen_size)
        return Duplicate(k);
      seen_size = true;
      // RFC 1870: size-value ::= 1*20DIGIT
      if (!p.value || p.value->size() > 20)
        return BadValue(k);
      for (char c : *p.value) {
        if (!IsAsciiDigit(c))
          return BadValue(k);
      }
      uint64_t n = 0;
      const auto [ptr, ec] = std::from_chars(p.value->data(), p.value->data() + p.value->size(), n);
      (void)ptr;
      if (ec == std::errc::result_out_of_range)
        n = std::numeric_limits<uint64_t>::max();
      out.size = n;
    } else if (EqualsIgnoreCase(k, "BODY")) {
      if (seen_body)
        return Duplicate(k);
      seen_body = true;
      if (!p.value)
        return BadValue(k);
      if (EqualsIgnoreCase(*p.value, "7BIT")) {
        out.body = BodyType::k7Bit;
      } else if (EqualsIgnoreCase(*p.value, "8BITMIME")) {
        out.body = BodyType::k8BitMime;
      } else if (EqualsIgnoreCase(*p.value, "BINARYMIME")) {
        out.body = BodyType::kBinaryMime;
      } else {
        return BadValue(k);
      }
    } else if (EqualsIgnoreCase(k, "SMTPUTF8")) {
      if (out.smtputf8)
        return Duplicate(k);
      if (p.value)
        return BadValue(k);  // RFC 6531 §3.4: no value
      out.smtputf8 = true;
    } else if (EqualsIgnoreCase(k, "RET")) {
      if (seen_ret)
        return Duplicate(k);
      seen_ret = true;
      if (!p.value)
        return BadValue(k);
      if (EqualsIgnoreCase(*p.value, "FULL")) {
        out.ret = Ret::kFull;
      } else if (EqualsIgnoreCase(*p.value, "HDRS")) {
        out.ret = Ret::kHdrs;
      } else {
        return BadValue(k);
      }
    } else if (EqualsIgnoreCase(k, "ENVID")) {
      if (seen_envid)
        return Duplicate(k);
      seen_envid = true;
      if (!p.value || p.value->size() > kMaxEnvid || !IsValidXtext(*p.value))
        return BadValue(k);
      out.envid.assign(*p.value);
    } else if (EqualsIgnoreCase(k, "AUTH")) {
      if (seen_auth)
        return Duplicate(k);
      seen_auth = true;
      // RFC 4954 §5: AUTH=xtext or AUTH=<>
      if (!p.value || (*p.value != "<>" && !IsValidXtext(*p.value)))
        return BadValue(k);
      out.auth.assign(*p.value);
    } else {
      return Unknown(k);
    }
  }
  if (error)
    return *error;
  return out;
}

ReplyOr<RcptParams> ParseRcptParams(std::string_view text, bool smtputf8) {
  RcptParams out;
  bool seen_notify = false, seen_orcpt = false;
  ParamScanner scanner(text);
  Param p;
  std::optional<Reply> error;
  while (scanner.Next(&p, &error)) {
    if (error)
      return *error;
    const std::string_view k = p.keyword;
    if (EqualsIgnoreCase(k, "NOTIFY")) {
      if (seen_notify)
        return Duplicate(k);
      seen_notify = true;
      if (!p.value)
        return BadValue(k);
      // RFC 3461 §4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" )
      std::string_view rest = *p.value;
      uint8_t flags = 0;
      while (true) {
        const size_t comma = rest.find(',');
        const std::string_view item = rest.substr(0, comma);
        if (EqualsIgnoreCase(item, "NEVER")) {
          flags |= kNotifyNever;
        } else if (EqualsIgnoreCase(item, "SUCCESS")) {
          flags |= kNotifySuccess;
        } else if (EqualsIgnoreCase(item, "FAILURE")) {
          flags |= kNotifyFailure;
        } else if (EqualsIgnoreCase(item, "DELAY")) {
          flags |= kNotifyDelay;
        } else {
          return BadValue(k);
        }
        if (comma == std::string_view::npos)
          break;
        rest.remove_prefix(comma + 1);
      }
      if ((flags & kNotifyNever) != 0 && flags != kNotifyNever)
        return BadValue(k);
      out.notify = flags;
    } else if (EqualsIgnoreCase(k, "ORCPT")) {
      if (seen_orcpt)
        return Duplicate(k);
      seen_orcpt = true;
      // RFC 3461 §4.2: ORCPT=addr-type ";" xtext; addr-type is an atom
      // (in practice "rfc822" or "utf-8").
      if (!p.value || p.value->size() > kMaxOrcpt)
        return BadValue(k);
      const size_t semi = p.value->find(';');
      if (semi == 0 || semi == std::string_view::npos || semi + 1 == p.value->size()) {
        return BadValue(k);
      }
      for (char c : p.value->substr(0, semi)) {
        if (!(IsAsciiAlnum(c) || c == '-'))
          return BadValue(k);
      }
      if (!IsXtextOrUtf8(p.value->substr(semi + 1), smtputf8))
        return BadValue(k);
      out.orcpt.assign(*p.value);
    } else {
      return Unknown(k);
    }
  }
  if (error)
    return *error;
  return out;
}

}  // namespace sluice::smtp
