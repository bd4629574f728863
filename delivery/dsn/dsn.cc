#include "delivery/dsn/dsn.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <ctime>

#include "base/ascii.h"
#include "delivery/dsn/detail/mime.h"
#include "smtp/header.h"

namespace sluice::delivery {

const char* ToString(DsnAction action) {
  switch (action) {
    case DsnAction::kFailed:
      return "failed";
    case DsnAction::kDelayed:
      return "delayed";
    case DsnAction::kDelivered:
      return "delivered";
    case DsnAction::kRelayed:
      return "relayed";
  }
  return "failed";
}

namespace {

using detail::AppendFoldedField;
using detail::AppendWrapped;
using detail::kMaxLineOctets;
using detail::SanitizeFieldText;

// A remote reply longer than this is cut: the DSN is for humans and parsers, not an archive.
constexpr size_t kMaxDiagnosticOctets = 2048;

std::string Date(uint64_t us) {
  return smtp::FormatRfc5322Date(static_cast<std::time_t>(us / 1000000));
}

// RFC 3463 §2: class "." subject "." detail; class 2, 4 or 5, subject and detail 1-3 digits.
bool IsStatusCode(std::string_view s) {
  if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') {
    return false;
  }
  size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    const size_t start = i;
    while (i < s.size() && IsAsciiDigit(s[i])) {
      ++i;
    }
    if (i == start || i - start > 3) {
      return false;
    }
    if (part == 0) {
      if (i >= s.size() || s[i] != '.') {
        return false;
      }
      ++i;
    }
  }
  return i == s.size();
}

std::string EffectiveStatus(const DsnRecipient& r) {
  if (IsStatusCode(r.status)) {
    return r.status;
  }
  const std::string_view d = r.diagnostic;
  if (d.size() >= 3 && IsAsciiDigit(d[0]) && IsAsciiDigit(d[1]) && IsAsciiDigit(d[2]) &&
      (d[0] == '2' || d[0] == '4' || d[0] == '5')) {
    if (d.size() > 4 && (d[3] == ' ' || d[3] == '-')) {
      // RFC 2034 §3: the enhanced code follows the reply code and has the same class.
      std::string_view rest = d.substr(4);
      const std::string_view token = rest.substr(0, rest.find_first_of(" \r\n"));
      if (IsStatusCode(token) && token[0] == d[0]) {
        return std::string(token);
      }
    }
    return std::string(1, d[0]) + ".0.0";
  }
  switch (r.action) {
    case DsnAction::kFailed:
      return "5.0.0";
    case DsnAction::kDelayed:
      return "4.0.0";
    case DsnAction::kDelivered:
    case DsnAction::kRelayed:
      return "2.0.0";
  }
  return "5.0.0";
}

// One line for a (possibly multi-line, CRLF or LF separated) SMTP reply, cut to a sane size.
std::string DiagnosticText(std::string_view reply, bool utf8) {
  std::string text = SanitizeFieldText(reply, utf8);  // CR/LF runs become one space
  if (text.size() > kMaxDiagnosticOctets) {
    size_t cut = kMaxDiagnosticOctets;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
      --cut;
    }
    text.resize(cut);
    text += "...";
  }
  return text;
}

// RFC 3464 §2.3.2 / RFC 6533 §3: an all-ASCII address is "rfc822"; otherwise "utf-8", raw in
// message/global-delivery-status, utf-8-addr-xtext in message/delivery-status.
std::string AddressField(std::string_view address, bool utf8) {
  if (detail::IsAscii(address)) {
    return "rfc822; " + SanitizeFieldText(address, false);
  }
  if (utf8) {
    return "utf-8; " + SanitizeFieldText(address, true);
  }
  return "utf-8; " + detail::EncodeUtf8AddrXtext(address);
}

// ORCPT is "addr-type;xtext"; RFC 3461 §4.2 and RFC 3464 §2.3.1 want it decoded in the DSN.
std::string OriginalRecipientField(std::string_view orcpt, bool utf8) {
  std::string decoded = detail::DecodeXtext(orcpt);
  if (!utf8 && !detail::IsAscii(decoded)) {
    // RFC 6533 §3: message/delivery-status carries utf-8 addresses in their xtext form.
    const size_t semi = decoded.find(';');
    if (semi != std::string::npos) {
      return decoded.substr(0, semi + 1) +
             detail::EncodeUtf8AddrXtext(std::string_view(decoded).substr(semi + 1));
    }
  }
  return SanitizeFieldText(decoded, utf8);
}

// Copies `text` with every line ending made CRLF (a bare CR or LF becomes CRLF) and lines longer
// than kMaxLineOctets cut to that length; `*cut` says whether any line was.
std::string CopyLines(std::string_view text, bool* cut) {
  std::string out;
  out.reserve(text.size() + 2);
  *cut = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find_first_of("\r\n", pos);
    const bool has_eol = eol != std::string_view::npos;
    if (!has_eol) {
      eol = text.size();
    }
    std::string_view line = text.substr(pos, eol - pos);
    if (line.size() > kMaxLineOctets) {
      line = line.substr(0, kMaxLineOctets);
      *cut = true;
    }
    out.append(line);
    out.append("\r\n");
    if (!has_eol) {
      break;
    }
    pos = eol + ((text[eol] == '\r' && eol + 1 < text.size() && text[eol + 1] == '\n') ? 2 : 1);
  }
  return out;
}

struct ReturnedContent {
  std::string content_type;
  std::string description;
  std::string body;
};

ReturnedContent ReturnedPart(const DsnInput& in) {
  const std::string_view original = in.original_message;
  if (in.ret != smtp::Ret::kHdrs && original.size() <= in.max_full_return) {
    bool cut = false;
    std::string body = CopyLines(original, &cut);
    if (!cut) {
      return {in.smtputf8 ? "message/global" : "message/rfc822", "Undelivered Message",
              std::move(body)};
    }
  }
  // Only the first max_full_return octets can matter (plus 2 so that a line ending exactly at
  // the cap keeps its CRLF). Line ends are made CRLF before looking for the end of the header
  // section so that a stray bare CR or LF does not hide it.
  const size_t cap = in.max_full_return;
  const size_t take =
      original.size() - std::min(original.size(), cap) >= 2 ? cap + 2 : original.size();
  bool cut = false;
  const std::string normalized = CopyLines(original.substr(0, take), &cut);
  std::string_view headers =
      std::string_view(normalized).substr(0, smtp::HeaderSectionEnd(normalized));
  if (headers.size() > cap) {
    // Longest prefix of whole lines within the cap.
    const size_t last_eol = cap >= 2 ? headers.rfind("\r\n", cap - 2) : std::string_view::npos;
    headers = headers.substr(0, last_eol == std::string_view::npos ? 0 : last_eol + 2);
  }
  // The empty line that ends the header section is not part of text/rfc822-headers.
  if (headers == "\r\n") {
    headers = {};
  } else if (headers.ends_with("\r\n\r\n")) {
    headers.remove_suffix(2);
  }
  return {in.smtputf8 ? "message/global-headers" : "text/rfc822-headers",
          "Undelivered Message Headers", std::string(headers)};
}

std::string HumanText(const DsnInput& in, const std::string& host, bool full_returned) {
  const bool utf8 = in.smtputf8;
  std::string out;
  AppendWrapped(&out, "This is the mail system at host " + host + ".", "");
  out += "\r\n";
  static constexpr std::array<DsnAction, 4> kOrder = {DsnAction::kFailed, DsnAction::kDelayed,
                                                      DsnAction::kDelivered, DsnAction::kRelayed};
  for (const DsnAction action : kOrder) {
    bool any = false;
    for (const DsnRecipient& r : in.recipients) {
      any = any || r.action == action;
    }
    if (!any) {
      continue;
    }
    switch (action) {
      case DsnAction::kFailed:
        AppendWrapped(&out,
                      std::string("Your message could not be delivered to the recipients below. ") +
                          (full_returned ? "It is attached to this report."
                                         : "Its header section is attached to this report."),
                      "");
        break;
      case DsnAction::kDelayed:
        AppendWrapped(&out,
                      "Delivery to the recipients below has been delayed. The mail system will "
                      "keep trying; you do not need to send the message again.",
                      "");
        break;
      case DsnAction::kDelivered:
        AppendWrapped(&out, "Your message was delivered to the recipients below.", "");
        break;
      case DsnAction::kRelayed:
        AppendWrapped(&out,
                      "Your message was relayed to the recipients below, to a system that may not "
                      "send further delivery notifications.",
                      "");
        break;
    }
    out += "\r\n";
    for (const DsnRecipient& r : in.recipients) {
      if (r.action != action) {
        continue;
      }
      AppendWrapped(&out, "<" + SanitizeFieldText(r.final_recipient, utf8) + ">", "");
      std::string detail;
      if (!r.diagnostic.empty()) {
        detail = (r.remote_mta.empty() ? std::string("The remote server")
                                       : "Host " + SanitizeFieldText(r.remote_mta, utf8)) +
                 " said: " + DiagnosticText(r.diagnostic, utf8);
      } else if (!r.remote_mta.empty()) {
        detail = "Host: " + SanitizeFieldText(r.remote_mta, utf8);
      }
      if (!detail.empty()) {
        AppendWrapped(&out, detail, "    ");
      }
      if (action == DsnAction::kDelayed && r.will_retry_until_us != 0) {
        AppendWrapped(&out, "Will keep trying until " + Date(r.will_retry_until_us) + ".", "    ");
      }
      out += "\r\n";
    }
  }
  if (out.ends_with("\r\n\r\n")) {
    out.resize(out.size() - 2);  // no trailing empty line
  }
  return out;
}

// RFC 3464 §2.2 per-message fields, then §2.3 per-recipient groups, each preceded by a blank line.
std::string DeliveryStatus(const DsnInput& in, const std::string& host) {
  const bool utf8 = in.smtputf8;
  std::string out;
  AppendFoldedField(&out, "Reporting-MTA", "dns; " + host);
  if (!in.envid.empty()) {
    AppendFoldedField(&out, "Original-Envelope-Id",
                      SanitizeFieldText(detail::DecodeXtext(in.envid), utf8));
  }
  if (in.arrival_us != 0) {
    AppendFoldedField(&out, "Arrival-Date", Date(in.arrival_us));
  }
  for (const DsnRecipient& r : in.recipients) {
    out += "\r\n";
    AppendFoldedField(&out, "Final-Recipient", AddressField(r.final_recipient, utf8));
    if (!r.original_recipient.empty()) {
      AppendFoldedField(&out, "Original-Recipient",
                        OriginalRecipientField(r.original_recipient, utf8));
    }
    AppendFoldedField(&out, "Action", ToString(r.action));
    AppendFoldedField(&out, "Status", EffectiveStatus(r));
    if (!r.remote_mta.empty()) {
      AppendFoldedField(&out, "Remote-MTA", "dns; " + SanitizeFieldText(r.remote_mta, utf8));
    }
    if (!r.diagnostic.empty()) {
      AppendFoldedField(&out, "Diagnostic-Code", "smtp; " + DiagnosticText(r.diagnostic, utf8));
    }
    if (r.last_attempt_us != 0) {
      AppendFoldedField(&out, "Last-Attempt-Date", Date(r.last_attempt_us));
    }
    if (r.action == DsnAction::kDelayed && r.will_retry_until_us != 0) {
      AppendFoldedField(&out, "Will-Retry-Until", Date(r.will_retry_until_us));
    }
  }
  return out;
}

std::string_view Subject(const DsnInput& in) {
  bool failed = false;
  bool delayed = false;
  for (const DsnRecipient& r : in.recipients) {
    failed = failed || r.action == DsnAction::kFailed;
    delayed = delayed || r.action == DsnAction::kDelayed;
  }
  if (failed) {
    return "Undelivered Mail Returned to Sender";
  }
  if (delayed) {
    return "Delayed Mail (still being retried)";
  }
  return "Successful Mail Delivery Report";
}

void AppendPart(std::string* out, const std::string& boundary, std::string_view headers,
                std::string_view body) {
  out->append("--");
  out->append(boundary);
  out->append("\r\n");
  out->append(headers);
  out->append("\r\n");
  out->append(body);
  // RFC 2046 §5.1.1: the CRLF before the next delimiter belongs to the delimiter, so `body` (empty
  // or ending in CRLF) keeps its own last CRLF: the returned message is byte-exact and every
  // delivery-status field line ends in CRLF (RFC 3464 §2.1).
  out->append("\r\n");
}

std::string TransferEncoding(std::string_view body) {
  return detail::IsAscii(body) ? "7bit" : "8bit";
}

}  // namespace

Dsn BuildDsn(const DsnInput& in, uint64_t now_us) {
  static std::atomic<uint64_t> counter{0};
  const bool utf8 = in.smtputf8;
  std::string host = SanitizeFieldText(in.reporting_mta, utf8);
  if (host.empty()) {
    host = "localhost";
  }

  const ReturnedContent returned = ReturnedPart(in);
  const bool full_returned =
      returned.content_type == "message/rfc822" || returned.content_type == "message/global";
  const std::string text = HumanText(in, host, full_returned);
  const std::string status = DeliveryStatus(in, host);

  const std::array<std::string_view, 4> contents = {in.original_message, returned.body, text,
                                                    status};
  const std::string boundary =
      detail::ChooseBoundary(contents, [] { return "=_sluice_dsn_" + detail::RandomHex(24); });

  Dsn dsn;
  dsn.smtputf8 = utf8;
  dsn.message_id = "<" + std::to_string(now_us) + "." +
                   std::to_string(counter.fetch_add(1, std::memory_order_relaxed)) + "." +
                   detail::RandomHex(12) + "@" + host + ">";

  const std::string text_cte = TransferEncoding(text);
  const std::string status_cte = TransferEncoding(status);
  const std::string returned_cte = TransferEncoding(returned.body);
  dsn.eight_bit = text_cte == "8bit" || status_cte == "8bit" || returned_cte == "8bit";
  const std::string_view report_type = utf8 ? "global-delivery-status" : "delivery-status";

  std::string& m = dsn.message;
  m.reserve(returned.body.size() + text.size() + status.size() + 2048);
  AppendFoldedField(&m, "From", "Mail Delivery System <MAILER-DAEMON@" + host + ">");
  AppendFoldedField(&m, "To", "<" + SanitizeFieldText(in.original_sender, utf8) + ">");
  AppendFoldedField(&m, "Subject", Subject(in));
  AppendFoldedField(&m, "Date", Date(now_us));
  AppendFoldedField(&m, "Message-ID", dsn.message_id);
  // RFC 3834 §5: a DSN is an automatic response; RFC 3464 §2 it goes out with MAIL FROM:<>.
  AppendFoldedField(&m, "Auto-Submitted", "auto-replied");
  AppendFoldedField(&m, "MIME-Version", "1.0");
  m += "Content-Type: multipart/report; report-type=";
  m += report_type;
  m += ";\r\n\tboundary=\"" + boundary + "\"\r\n";
  // RFC 2045 §6.4: a multipart is labelled with the widest encoding of its parts.
  AppendFoldedField(&m, "Content-Transfer-Encoding", dsn.eight_bit ? "8bit" : "7bit");
  m += "\r\nThis is a MIME-encapsulated message.\r\n\r\n";

  AppendPart(&m, boundary,
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Description: Notification\r\n"
             "Content-Transfer-Encoding: " +
                 text_cte + "\r\n",
             text);
  AppendPart(&m, boundary,
             std::string("Content-Type: message/") + std::string(report_type) +
                 "\r\n"
                 "Content-Description: Delivery report\r\n"
                 "Content-Transfer-Encoding: " +
                 status_cte + "\r\n",
             status);
  AppendPart(&m, boundary,
             "Content-Type: " + returned.content_type + "\r\nContent-Description: " +
                 returned.description + "\r\nContent-Transfer-Encoding: " + returned_cte + "\r\n",
             returned.body);
  m += "--" + boundary + "--\r\n";
  return dsn;
}

}  // namespace sluice::delivery
