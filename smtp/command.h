#pragma once

// SMTP command lines (RFC 5321 §4.1) and their arguments. Every parser takes
// a view of the line and returns either the parsed value or the exact reply
// to send (ReplyOr<T>); none of them throws or keeps state.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "smtp/address.h"
#include "smtp/params.h"
#include "smtp/reply.h"

namespace sluice::smtp {

enum class Verb {
  kEhlo,
  kHelo,
  kMail,
  kRcpt,
  kData,
  kBdat,
  kRset,
  kNoop,
  kQuit,
  kVrfy,
  kExpn,
  kHelp,
  kStartTls,
  kAuth,
  kUnknown,
};

const char* ToString(Verb v);  // "EHLO", ..., "UNKNOWN"

struct Command {
  Verb verb;
  // Text after the verb and one or more spaces, trailing spaces trimmed;
  // a view into the line. Empty when the line is just the verb.
  std::string_view arg;
};

// Verbs are case-insensitive. A verb glued to other text ("MAILX", "QUIT:")
// is kUnknown.
Command ParseCommand(std::string_view line);

struct MailFrom {
  Path path;
  MailParams params;
};
struct RcptTo {
  Path path;
  RcptParams params;
};

// "FROM:<a@b> SIZE=100 BODY=8BITMIME" (also "FROM: <a@b>"). Errors:
// 501 5.5.4 syntax, 501 5.1.7 bad or too long sender, 555 5.5.4 unknown
// parameter, 501 5.5.4 duplicate parameter, 553 5.6.7 non-ASCII sender
// without SMTPUTF8.
ReplyOr<MailFrom> ParseMailFrom(std::string_view arg);

// "TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b"; "<Postmaster>" allowed.
// `smtputf8`: the transaction's MAIL FROM carried SMTPUTF8 (RFC 6531 §3.4);
// without it a non-ASCII recipient gets 553 5.6.7. Other errors as for MAIL,
// with 501 5.1.3 for a bad recipient.
ReplyOr<RcptTo> ParseRcptTo(std::string_view arg, bool smtputf8 = false);

// RFC 3030: "BDAT" SP chunk-size [ SP end-marker ]
struct BdatArg {
  uint64_t size;
  bool last;
};
ReplyOr<BdatArg> ParseBdat(std::string_view arg);

// EHLO/HELO argument: a domain (U-labels allowed; '_' tolerated since many
// Windows hosts use it) or an address literal. Returns it as written.
ReplyOr<std::string> ParseHeloDomain(std::string_view arg);

// RFC 4954 §4: "AUTH" SP sasl-mech [SP initial-response]. The mechanism is
// returned upper-cased; the initial response stays base64 (not decoded);
// "=" stands for an empty response and yields "". Bad base64 characters give
// 501 5.5.2 (RFC 4954 §4), other errors 501 5.5.4.
struct AuthArg {
  std::string mechanism;
  std::optional<std::string> initial_response;
};
ReplyOr<AuthArg> ParseAuth(std::string_view arg);

}  // namespace sluice::smtp
