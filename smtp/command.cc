#include "smtp/command.h"

#include <array>
#include <charconv>

#include "base/ascii.h"

namespace sluice::smtp {

namespace {

struct VerbEntry {
  const char* name;
  Verb verb;
};

constexpr std::array<VerbEntry, 14> kVerbs = {{
    {"EHLO", Verb::kEhlo},
    {"HELO", Verb::kHelo},
    {"MAIL", Verb::kMail},
    {"RCPT", Verb::kRcpt},
    {"DATA", Verb::kData},
    {"BDAT", Verb::kBdat},
    {"RSET", Verb::kRset},
    {"NOOP", Verb::kNoop},
    {"QUIT", Verb::kQuit},
    {"VRFY", Verb::kVrfy},
    {"EXPN", Verb::kExpn},
    {"HELP", Verb::kHelp},
    {"STARTTLS", Verb::kStartTls},
    {"AUTH", Verb::kAuth},
}};

Reply Syntax(std::string_view text) {
  return MakeReply(501, "5.5.4", text);
}

std::string_view SkipSpaces(std::string_view s) {
  while (!s.empty() && s.front() == ' ')
    s.remove_prefix(1);
  return s;
}

// Shared by MAIL and RCPT: "<keyword>:" [SP] path [SP params].
struct PathAndRest {
  PathParse parse;
  std::string_view params;
  bool syntax_error = false;
};

PathAndRest SplitPath(std::string_view arg, std::string_view keyword, PathRole role) {
  PathAndRest out;
  if (!StartsWithIgnoreCase(arg, keyword)) {
    out.syntax_error = true;
    return out;
  }
  // "FROM: <a@b>" is not RFC 5321 but many clients send it.
  const std::string_view rest = SkipSpaces(arg.substr(keyword.size()));
  out.parse = ParsePath(rest, role);
  if (out.parse.error != AddressError::kNone)
    return out;
  out.params = rest.substr(out.parse.consumed);
  // Parameters are separated from the path by SP: "<a@b>SIZE=1" is an error.
  if (!out.params.empty() && out.params.front() != ' ')
    out.syntax_error = true;
  return out;
}

Reply AddressReply(AddressError e, bool sender) {
  const std::string_view enhanced = sender ? "5.1.7" : "5.1.3";
  const std::string_view who = sender ? "Sender" : "Recipient";
  switch (e) {
    case AddressError::kLocalPartTooLong:
      return MakeReply(501, enhanced, std::string(who) + " local part too long");
    case AddressError::kDomainTooLong:
      return MakeReply(501, enhanced, std::string(who) + " domain too long");
    case AddressError::kPathTooLong:
      return MakeReply(501, enhanced, std::string(who) + " address too long");
    case AddressError::kNone:
    case AddressError::kSyntax:
      break;
  }
  return MakeReply(501, enhanced,
                   sender ? "Bad sender address syntax" : "Bad recipient address syntax");
}

Reply Utf8Required() {
  return MakeReply(553, "5.6.7", "SMTPUTF8 is required for a non-ASCII address");
}

}  // namespace

const char* ToString(Verb v) {
  for (const VerbEntry& e : kVerbs) {
    if (e.verb == v)
      return e.name;
  }
  return "UNKNOWN";
}

Command ParseCommand(std::string_view line) {
  const size_t sp = line.find(' ');
  const std::string_view word = line.substr(0, sp);
  Verb verb = Verb::kUnknown;
  for (const VerbEntry& e : kVerbs) {
    if (EqualsIgnoreCase(word, e.name)) {
      verb = e.verb;
      break;
    }
  }
  std::string_view arg;
  if (sp != std::string_view::npos) {
    arg = SkipSpaces(line.substr(sp));
    while (!arg.empty() && arg.back() == ' ')
      arg.remove_suffix(1);
  }
  return Command{verb, arg};
}

ReplyOr<MailFrom> ParseMailFrom(std::string_view arg) {
  PathAndRest p = SplitPath(arg, "FROM:", PathRole::kReverse);
  if (p.syntax_error)
    return Syntax("Syntax: MAIL FROM:<address> [parameters]");
  if (p.parse.error != AddressError::kNone)
    return AddressReply(p.parse.error, true);
  ReplyOr<MailParams> params = ParseMailParams(p.params);
  if (!params)
    return params.error();
  if (p.parse.path.utf8 && !params->smtputf8)
    return Utf8Required();
  return MailFrom{std::move(p.parse.path), std::move(params).value()};
}

ReplyOr<RcptTo> ParseRcptTo(std::string_view arg, bool smtputf8) {
  PathAndRest p = SplitPath(arg, "TO:", PathRole::kForward);
  if (p.syntax_error)
    return Syntax("Syntax: RCPT TO:<address> [parameters]");
  if (p.parse.error != AddressError::kNone)
    return AddressReply(p.parse.error, false);
  ReplyOr<RcptParams> params = ParseRcptParams(p.params, smtputf8);
  if (!params)
    return params.error();
  if (p.parse.path.utf8 && !smtputf8)
    return Utf8Required();
  return RcptTo{std::move(p.parse.path), std::move(params).value()};
}

ReplyOr<BdatArg> ParseBdat(std::string_view arg) {
  const size_t sp = arg.find(' ');
  const std::string_view number = arg.substr(0, sp);
  BdatArg out{0, false};
  const char* end = number.data() + number.size();
  const auto [ptr, ec] = std::from_chars(number.data(), end, out.size);
  // from_chars accepts neither sign nor space; it must use the whole token.
  if (number.empty() || ec != std::errc() || ptr != end) {
    return Syntax("Syntax: BDAT chunk-size [LAST]");
  }
  if (sp != std::string_view::npos) {
    if (!EqualsIgnoreCase(SkipSpaces(arg.substr(sp)), "LAST")) {
      return Syntax("Syntax: BDAT chunk-size [LAST]");
    }
    out.last = true;
  }
  return out;
}

ReplyOr<std::string> ParseHeloDomain(std::string_view arg) {
  if (arg.empty())
    return Syntax("Syntax: EHLO hostname");
  if (arg.front() == '[') {
    if (!IsValidAddressLiteral(arg))
      return Syntax("Invalid address literal");
    return std::string(arg);
  }
  // RFC 5321 Domain, tolerating '_' in labels (common on Windows hosts and
  // harmless: we only log this name and put it in Received).
  std::string tolerant(arg);
  for (char& c : tolerant) {
    if (c == '_')
      c = 'x';
  }
  bool utf8 = false;
  if (tolerant.size() > kMaxDomain || !IsValidDomain(tolerant, &utf8)) {
    return Syntax("Invalid domain name");
  }
  return std::string(arg);
}

ReplyOr<AuthArg> ParseAuth(std::string_view arg) {
  const size_t sp = arg.find(' ');
  const std::string_view mech = arg.substr(0, sp);
  // RFC 4422 §3.1: sasl-mech = 1*20(UPPER-ALPHA / DIGIT / "-" / "_"); clients
  // may send it in lower case.
  if (mech.empty() || mech.size() > 20)
    return Syntax("Syntax: AUTH mechanism [initial-response]");
  AuthArg out;
  for (char c : mech) {
    if (!(IsAsciiAlnum(c) || c == '-' || c == '_')) {
      return Syntax("Syntax: AUTH mechanism [initial-response]");
    }
    out.mechanism.push_back(AsciiUpper(c));
  }
  if (sp == std::string_view::npos)
    return out;
  const std::string_view response = SkipSpaces(arg.substr(sp));
  if (response.empty() || response.find(' ') != std::string_view::npos) {
    return Syntax("Syntax: AUTH mechanism [initial-response]");
  }
  if (response == "=") {
    out.initial_response.emplace();
    return out;
  }
  // base64: [A-Za-z0-9+/]*, then at most two '=' of padding.
  size_t i = 0;
  while (i < response.size() &&
         (IsAsciiAlnum(response[i]) || response[i] == '+' || response[i] == '/')) {
    ++i;
  }
  const size_t pad = response.size() - i;
  bool ok = pad <= 2 && (response.size() % 4) == 0;
  for (; i < response.size(); ++i)
    ok = ok && response[i] == '=';
  if (!ok)
    return MakeReply(501, "5.5.2", "Invalid base64 data");
  out.initial_response.emplace(response);
  return out;
}

}  // namespace sluice::smtp
