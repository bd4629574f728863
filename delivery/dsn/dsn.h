#pragma once

// RFC 3464 delivery status notifications ("bounces"), RFC 3461 §6 for what goes in them.
//
// SMTPUTF8 (RFC 6533): when the original transaction used SMTPUTF8 the report uses the
// internationalized types, as Postfix does: multipart/report; report-type=global-delivery-status
// with message/global-delivery-status (UTF-8 allowed in its fields, non-ASCII addresses as
// "utf-8; addr") and the original as message/global or message/global-headers. Such a DSN must
// be sent with SMTPUTF8 (Dsn::smtputf8). Otherwise every header and every delivery-status field is
// ASCII: non-ASCII text from a remote reply is written as RFC 6533 "\x{HEX}".

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "smtp/params.h"

namespace sluice::delivery {

enum class DsnAction { kFailed, kDelayed, kDelivered, kRelayed };
// The Action field's value (RFC 3464 §2.3.3): "failed", "delayed", "delivered", "relayed".
const char* ToString(DsnAction action);

struct DsnRecipient {
  // Address as in RCPT TO.
  std::string final_recipient;
  // ORCPT as received ("rfc822;user+2B1@x", xtext); written decoded as Original-Recipient
  // (RFC 3461 §4.2). Empty = omitted.
  std::string original_recipient;
  DsnAction action = DsnAction::kFailed;
  // RFC 3463 "5.1.1". Empty or malformed = taken from the enhanced code at the start of
  // `diagnostic`, else derived from its reply code (5xx → 5.0.0, 4xx → 4.0.0, 2xx → 2.0.0), else
  // from the action (failed 5.0.0, delayed 4.0.0, delivered/relayed 2.0.0).
  std::string status;
  // Host name of the remote MTA; empty = omitted.
  std::string remote_mta;
  // The remote reply, e.g. "550 5.1.1 no such user" (lines of a multi-line reply are joined with
  // spaces); written as "Diagnostic-Code: smtp; ...", folded, cut at 2048 octets. Empty = omitted.
  std::string diagnostic;
  uint64_t last_attempt_us = 0;      // 0 = omitted
  uint64_t will_retry_until_us = 0;  // written for kDelayed only; 0 = omitted
};

struct DsnInput {
  std::string reporting_mta;    // our host name
  std::string original_sender;  // the DSN goes to this address; never empty (no DSN for <>)
  std::string envid;            // ENVID as received (xtext); empty = omitted
  smtp::Ret ret = smtp::Ret::kUnspecified;
  uint64_t arrival_us = 0;  // 0 = Arrival-Date omitted
  std::vector<DsnRecipient> recipients;
  std::string_view original_message;  // as stored (CRLF lines)
  // Originals larger than this are returned as headers only; the header section is cut (at a line
  // boundary) to this size as well. A full original with a line over 998 octets is also returned
  // as headers only, so that the DSN itself stays within RFC 5322 §2.1.1.
  size_t max_full_return = 256 * 1024;
  bool smtputf8 = false;  // the original used SMTPUTF8 (see the file comment)
};

struct Dsn {
  std::string message;     // the whole report, CRLF lines of at most 998 octets
  std::string message_id;  // as in the Message-ID field, angle brackets included
  // Transport requirements for sending `message` (MAIL FROM:<>): BODY=8BITMIME when it holds
  // 8-bit octets (an 8-bit original or UTF-8 text), SMTPUTF8 when DsnInput::smtputf8.
  bool eight_bit = false;
  bool smtputf8 = false;
};

// Builds the report for `in.recipients` (callers pass only the recipients whose NOTIFY asks for
// this report; RFC 3461 §4.1). `now_us` is wall-clock microseconds (Date field, Message-ID).
Dsn BuildDsn(const DsnInput& in, uint64_t now_us);

}  // namespace sluice::delivery
