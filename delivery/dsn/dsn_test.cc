#include "delivery/dsn/dsn.h"

#include <stdio.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "base/ascii.h"
#include "base/temp_dir.h"
#include "smtp/header.h"

namespace sluice::delivery {
namespace {

constexpr uint64_t kSecond = 1000000;
constexpr uint64_t kNow = 1795000000 * kSecond + 123456;  // 2026-11-18
constexpr uint64_t kArrival = kNow - 3600 * kSecond;

// --- A tiny MIME splitter, enough to take a DSN apart ---------------------------------------

using Fields = std::vector<std::pair<std::string, std::string>>;  // name (as written), unfolded

// Parses a CRLF header block (no blank line) into fields, unfolding continuation lines.
Fields ParseFields(std::string_view block) {
  Fields fields;
  size_t pos = 0;
  while (pos < block.size()) {
    size_t eol = block.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      eol = block.size();
    }
    const std::string_view line = block.substr(pos, eol - pos);
    pos = eol + 2;
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
      EXPECT_FALSE(fields.empty()) << "continuation without a field";
      if (!fields.empty()) {
        fields.back().second += std::string(line);
      }
      continue;
    }
    const size_t colon = line.find(':');
    EXPECT_NE(colon, std::string_view::npos) << "not a field: " << line;
    if (colon == std::string_view::npos) {
      continue;
    }
    std::string value(line.substr(colon + 1));
    fields.emplace_back(std::string(line.substr(0, colon)), value);
  }
  for (auto& [name, value] : fields) {
    const size_t start = value.find_first_not_of(" \t");
    value = start == std::string::npos ? "" : value.substr(start);
  }
  return fields;
}

// The value of the only field `name` (case-insensitive); "" and a failure when absent or repeated.
std::string Field(const Fields& fields, std::string_view name, bool expect_present = true) {
  std::string found;
  int count = 0;
  for (const auto& [n, v] : fields) {
    if (EqualsIgnoreCase(n, name)) {
      found = v;
      ++count;
    }
  }
  if (expect_present) {
    EXPECT_EQ(count, 1) << name;
  }
  return found;
}

bool HasField(const Fields& fields, std::string_view name) {
  for (const auto& [n, v] : fields) {
    if (EqualsIgnoreCase(n, name)) {
      return true;
    }
  }
  return false;
}

struct Entity {
  Fields headers;
  std::string body;  // the content: without the CRLF that belongs to the next delimiter
};

Entity SplitEntity(std::string_view text) {
  Entity e;
  if (text.substr(0, 2) == "\r\n") {
    e.body = std::string(text.substr(2));
    return e;
  }
  const size_t end = text.find("\r\n\r\n");
  EXPECT_NE(end, std::string_view::npos);
  e.headers = ParseFields(text.substr(0, end));
  e.body = std::string(text.substr(end + 4));
  return e;
}

std::string Boundary(const Fields& headers) {
  const std::string ct = Field(headers, "Content-Type");
  const size_t at = ct.find("boundary=\"");
  if (at == std::string::npos) {
    return {};
  }
  const size_t start = at + 10;
  return ct.substr(start, ct.find('"', start) - start);
}

std::string MediaType(const Fields& headers) {
  const std::string ct = Field(headers, "Content-Type");
  return AsciiToLower(ct.substr(0, ct.find(';')));
}

struct ParsedDsn {
  Fields headers;
  std::string boundary;
  std::vector<Entity> parts;
};

ParsedDsn Parse(const std::string& message) {
  ParsedDsn p;
  const Entity top = SplitEntity(message);
  p.headers = top.headers;
  p.boundary = Boundary(top.headers);
  EXPECT_FALSE(p.boundary.empty());
  if (p.boundary.empty()) {
    return p;
  }
  const std::string& body = top.body;
  const std::string first = "--" + p.boundary + "\r\n";
  size_t start = body.find(first);
  EXPECT_TRUE(start == 0 || (start != std::string::npos && body[start - 1] == '\n'));
  if (start == std::string::npos) {
    return p;
  }
  start += first.size();
  const std::string delimiter = "\r\n--" + p.boundary;
  for (;;) {
    const size_t next = body.find(delimiter, start);
    EXPECT_NE(next, std::string::npos) << "no closing delimiter";
    if (next == std::string::npos) {
      break;
    }
    p.parts.push_back(SplitEntity(std::string_view(body).substr(start, next - start)));
    const size_t after = next + delimiter.size();
    if (body.compare(after, 2, "--") == 0) {
      EXPECT_EQ(body.substr(after + 2), "\r\n");
      break;
    }
    EXPECT_EQ(body.compare(after, 2, "\r\n"), 0);
    start = after + 2;
  }
  return p;
}

// The message/delivery-status body: per-message fields, then one group per recipient.
std::vector<Fields> StatusGroups(const std::string& body) {
  std::vector<Fields> groups;
  EXPECT_TRUE(body.ends_with("\r\n"));  // RFC 3464 §2.1: every field line ends in CRLF
  const std::string& text = body;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find("\r\n\r\n", pos);
    if (end == std::string::npos) {
      end = text.size() - 2;
    }
    groups.push_back(ParseFields(std::string_view(text).substr(pos, end - pos)));
    pos = end + 4;
  }
  return groups;
}

std::vector<std::string> RawLines(const std::string& message) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < message.size()) {
    size_t eol = message.find("\r\n", pos);
    if (eol == std::string::npos) {
      eol = message.size();
    }
    lines.push_back(message.substr(pos, eol - pos));
    pos = eol + 2;
  }
  return lines;
}

void ExpectWellFormedLines(const std::string& message) {
  ASSERT_GE(message.size(), 2u);
  EXPECT_EQ(message.substr(message.size() - 2), "\r\n");
  for (size_t i = 0; i < message.size(); ++i) {
    if (message[i] == '\n') {
      ASSERT_TRUE(i > 0 && message[i - 1] == '\r') << "bare LF at " << i;
    }
    if (message[i] == '\r') {
      ASSERT_TRUE(i + 1 < message.size() && message[i + 1] == '\n') << "bare CR at " << i;
    }
  }
  for (const std::string& line : RawLines(message)) {
    EXPECT_LE(line.size(), 998u) << line.substr(0, 80);
  }
}

// --- Inputs ----------------------------------------------------------------------------------

const std::string kOriginal =
    "From: Alice <alice@example.com>\r\n"
    "To: bob@example.net\r\n"
    "Subject: lunch\r\n"
    "Message-ID: <orig-1@example.com>\r\n"
    "\r\n"
    "Shall we meet at noon?\r\n"
    "-- \r\n"
    "Alice\r\n";

DsnRecipient FailedBob() {
  DsnRecipient r;
  r.final_recipient = "bob@example.net";
  r.action = DsnAction::kFailed;
  r.status = "5.1.1";
  r.remote_mta = "mx.example.net";
  r.diagnostic = "550 5.1.1 no such user";
  r.last_attempt_us = kNow - 5 * kSecond;
  return r;
}

DsnInput BaseInput() {
  DsnInput in;
  in.reporting_mta = "relay.example.org";
  in.original_sender = "alice@example.com";
  in.arrival_us = kArrival;
  in.original_message = kOriginal;
  in.recipients.push_back(FailedBob());
  return in;
}

std::string DateOf(uint64_t us) {
  return smtp::FormatRfc5322Date(static_cast<time_t>(us / kSecond));
}

// --- Tests -----------------------------------------------------------------------------------

TEST(DsnTest, FailedReportHasTopLevelHeadersAndThreeParts) {
  const Dsn dsn = BuildDsn(BaseInput(), kNow);
  ExpectWellFormedLines(dsn.message);
  const ParsedDsn p = Parse(dsn.message);

  EXPECT_EQ(Field(p.headers, "From"), "Mail Delivery System <MAILER-DAEMON@relay.example.org>");
  EXPECT_EQ(Field(p.headers, "To"), "<alice@example.com>");
  EXPECT_EQ(Field(p.headers, "Subject"), "Undelivered Mail Returned to Sender");
  EXPECT_EQ(Field(p.headers, "Date"), DateOf(kNow));
  EXPECT_EQ(Field(p.headers, "Message-ID"), dsn.message_id);
  EXPECT_EQ(dsn.message_id.front(), '<');
  EXPECT_TRUE(dsn.message_id.ends_with("@relay.example.org>")) << dsn.message_id;
  EXPECT_EQ(Field(p.headers, "Auto-Submitted"), "auto-replied");
  EXPECT_EQ(Field(p.headers, "MIME-Version"), "1.0");
  EXPECT_EQ(MediaType(p.headers), "multipart/report");
  EXPECT_NE(Field(p.headers, "Content-Type").find("report-type=delivery-status;"),
            std::string::npos);
  EXPECT_FALSE(dsn.eight_bit);
  EXPECT_FALSE(dsn.smtputf8);

  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(Field(p.parts[0].headers, "Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(MediaType(p.parts[1].headers), "message/delivery-status");
  EXPECT_EQ(MediaType(p.parts[2].headers), "message/rfc822");

  // The human part names the recipient and the remote reply.
  EXPECT_NE(p.parts[0].body.find("<bob@example.net>"), std::string::npos);
  EXPECT_NE(p.parts[0].body.find("mx.example.net said: 550 5.1.1 no such user"), std::string::npos)
      << p.parts[0].body;

  // The full original comes back byte for byte.
  EXPECT_EQ(p.parts[2].body, kOriginal);
}

TEST(DsnTest, DeliveryStatusFields) {
  const Dsn dsn = BuildDsn(BaseInput(), kNow);
  const ParsedDsn p = Parse(dsn.message);
  ASSERT_EQ(p.parts.size(), 3u);
  const std::vector<Fields> groups = StatusGroups(p.parts[1].body);
  ASSERT_EQ(groups.size(), 2u) << p.parts[1].body;

  const Fields& msg = groups[0];
  EXPECT_EQ(Field(msg, "Reporting-MTA"), "dns; relay.example.org");
  EXPECT_EQ(Field(msg, "Arrival-Date"), DateOf(kArrival));
  EXPECT_FALSE(HasField(msg, "Original-Envelope-Id"));

  const Fields& rcpt = groups[1];
  EXPECT_EQ(Field(rcpt, "Final-Recipient"), "rfc822; bob@example.net");
  EXPECT_EQ(Field(rcpt, "Action"), "failed");
  EXPECT_EQ(Field(rcpt, "Status"), "5.1.1");
  EXPECT_EQ(Field(rcpt, "Remote-MTA"), "dns; mx.example.net");
  EXPECT_EQ(Field(rcpt, "Diagnostic-Code"), "smtp; 550 5.1.1 no such user");
  EXPECT_EQ(Field(rcpt, "Last-Attempt-Date"), DateOf(kNow - 5 * kSecond));
  EXPECT_FALSE(HasField(rcpt, "Original-Recipient"));
  EXPECT_FALSE(HasField(rcpt, "Will-Retry-Until"));
}

TEST(DsnTest, OptionalFieldsOmittedWhenEmpty) {
  DsnInput in = BaseInput();
  in.arrival_us = 0;
  in.recipients[0].remote_mta.clear();
  in.recipients[0].diagnostic.clear();
  in.recipients[0].last_attempt_us = 0;
  const ParsedDsn p = Parse(BuildDsn(in, kNow).message);
  ASSERT_EQ(p.parts.size(), 3u);
  const std::vector<Fields> groups = StatusGroups(p.parts[1].body);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_FALSE(HasField(groups[0], "Arrival-Date"));
  EXPECT_EQ(groups[1].size(), 3u);  // Final-Recipient, Action, Status
  EXPECT_EQ(Field(groups[1], "Status"), "5.1.1");
}

TEST(DsnTest, OrcptAndEnvidAreXtextDecoded) {
  DsnInput in = BaseInput();
  in.envid = "QQ+2B314159+3Dx";
  in.recipients[0].original_recipient = "rfc822;a+2Bb@x";
  const ParsedDsn p = Parse(BuildDsn(in, kNow).message);
  ASSERT_EQ(p.parts.size(), 3u);
  const std::vector<Fields> groups = StatusGroups(p.parts[1].body);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(Field(groups[0], "Original-Envelope-Id"), "QQ+314159=x");
  EXPECT_EQ(Field(groups[1], "Original-Recipient"), "rfc822;a+b@x");
}

TEST(DsnTest, DecodedEnvidCannotInjectFields) {
  DsnInput in = BaseInput();
  in.envid = "id+0D+0AAction:+20delivered";
  const Dsn dsn = BuildDsn(in, kNow);
  ExpectWellFormedLines(dsn.message);
  const ParsedDsn p = Parse(dsn.message);
  ASSERT_EQ(p.parts.size(), 3u);
  const std::vector<Fields> groups = StatusGroups(p.parts[1].body);
  EXPECT_EQ(Field(groups[0], "Original-Envelope-Id"), "id Action: delivered");
  EXPECT_FALSE(HasField(groups[0], "Action"));
}

TEST(DsnTest, RetHdrsReturnsOnlyTheHeaderSection) {
  DsnInput in = BaseInput();
  in.ret = smtp::Ret::kHdrs;
  const ParsedDsn p = Parse(BuildDsn(in, kNow).message);
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(MediaType(p.parts[2].headers), "text/rfc822-headers");
  const std::string header_section(
      std::string_view(kOriginal).substr(0, smtp::HeaderSectionEnd(kOriginal) - 2));
  EXPECT_EQ(p.parts[2].body, header_section);
  EXPECT_EQ(p.parts[2].body.find("noon"), std::string::npos);
  EXPECT_NE(p.parts[0].body.find("Its header\r\nsection is attached"), std::string::npos)
      << p.parts[0].body;
}

TEST(DsnTest, RetFullAndUnspecifiedReturnTheFullMessage) {
  for (const smtp::Ret ret : {smtp::Ret::kFull, smtp::Ret::kUnspecified}) {
    DsnInput in = BaseInput();
    in.ret = ret;
    in.max_full_return = kOriginal.size();  // exactly at the cap is still returned in full
    const ParsedDsn p = Parse(BuildDsn(in, kNow).message);
    ASSERT_EQ(p.parts.size(), 3u);
    EXPECT_EQ(MediaType(p.parts[2].headers), "message/rfc822");
    EXPECT_EQ(p.parts[2].body, kOriginal);
  }
}

TEST(DsnTest, OriginalOverTheSizeCapIsReturnedAsHeaders) {
  for (const smtp::Ret ret : {smtp::Ret::kFull, smtp::Ret::kUnspecified}) {
    DsnInput in = BaseInput();
    in.ret = ret;
    in.max_full_return = kOriginal.size() - 1;
    const ParsedDsn p = Parse(BuildDsn(in, kNow).message);
    ASSERT_EQ(p.parts.size(), 3u);
    EXPECT_EQ(MediaType(p.parts[2].headers), "text/rfc822-headers");
    EXPECT_EQ(p.parts[2].body.find("noon"), std::string::npos);
    EXPECT_NE(p.parts[2].body.find("Subject: lunch"), std::string::npos);
  }
}

TEST(DsnTest, HugeHeaderSectionIsCutAtALineBoundary) {
  std::string original;
  for (int i = 0; i < 100; ++i) {
    original += "X-Filler-" + std::to_string(i) + ": 0123456789\r\n";
  }
  original += "\r\nbody\r\n";
  DsnInput in = BaseInput();
  in.original_message = original;
  in.max_full_return = 500;
  const Dsn dsn = BuildDsn(in, kNow);
  ExpectWellFormedLines(dsn.message);
  const ParsedDsn p = Parse(dsn.message);
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(MediaType(p.parts[2].headers), "text/rfc822-headers");
  EXPECT_LE(p.parts[2].body.size(), 500u);
  EXPECT_GT(p.parts[2].body.size(), 400u);
  EXPECT_TRUE(original.starts_with(p.parts[2].body));
}

TEST(DsnTest, DelayedReportHasWillRetryUntil) {
  DsnInput in = BaseInput();
  DsnRecipient& r = in.recipients[0];
  r.action = DsnAction::kDelayed;
  r.status.clear();
  r.diagnostic = "451 try again later";
  r.will_retry_until_us = kNow + 5 * 86400ULL * kSecond;
  const ParsedDsn p = Parse(BuildDsn(in, kNow).message);
  EXPECT_EQ(Field(p.headers, "Subject"), "Delayed Mail (still being retried)");
  ASSERT_EQ(p.parts.size(), 3u);
  const std::vector<Fields> groups = StatusGroups(p.parts[1].body);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(Field(groups[1], "Action"), "delayed");
  EXPECT_EQ(Field(groups[1], "Status"), "4.0.0");  // derived: no enhanced code in the reply
  EXPECT_EQ(Field(groups[1], "Will-Retry-Until"), DateOf(kNow + 5 * 86400ULL * kSecond));
  EXPECT_NE(p.parts[0].body.find("delayed"), std::string::npos);
}

TEST(DsnTest, WillRetryUntilOnlyForDelayed) {
  DsnInput in = BaseInput();
  in.recipients[0].will_retry_until_us = kNow + kSecond;
  const ParsedDsn p = Parse(BuildDsn(in, kNow).message);
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_FALSE(HasField(StatusGroups(p.parts[1].body)[1], "Will-Retry-Until"));
}

TEST(DsnTest, StatusIsDerivedFromTheReplyWhenMissing) {
  struct Case {
    std::string status;
    std::string diagnostic;
    DsnAction action;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"", "550 no such user", DsnAction::kFailed, "5.0.0"},
      {"", "550 5.7.1 relaying denied", DsnAction::kFailed, "5.7.1"},
      {"", "452-4.2.2 mailbox full\r\n452 4.2.2 try later", DsnAction::kDelayed, "4.2.2"},
      {"", "554 4.4.1 mismatched class", DsnAction::kFailed, "5.0.0"},
      {"", "", DsnAction::kFailed, "5.0.0"},
      {"", "", DsnAction::kDelayed, "4.0.0"},
      {"", "", DsnAction::kDelivered, "2.0.0"},
      {"", "250 2.0.0 ok", DsnAction::kRelayed, "2.0.0"},
      {"garbage", "421 closing", DsnAction::kDelayed, "4.0.0"},
      {"5.4.7", "451 timeout", DsnAction::kFailed, "5.4.7"},
  };
  for (const Case& c : cases) {
    DsnInput in = BaseInput();
    in.recipients[0].status = c.status;
    in.recipients[0].diagnostic = c.diagnostic;
    in.recipients[0].action = c.action;
    const ParsedDsn p = Parse(BuildDsn(in, kNow).message);
    ASSERT_EQ(p.parts.size(), 3u);
    EXPECT_EQ(Field(StatusGroups(p.parts[1].body)[1], "Status"), c.want) << c.diagnostic;
  }
}

TEST(DsnTest, MultipleRecipientsEachGetAGroup) {
  DsnInput in = BaseInput();
  DsnRecipient carol;
  carol.final_recipient = "carol@example.net";
  carol.original_recipient = "rfc822;carol@example.net";
  carol.action = DsnAction::kDelayed;
  carol.status = "4.4.1";
  carol.diagnostic = "421 4.4.1 connection timed out";
  carol.will_retry_until_us = kNow + 86400 * kSecond;
  DsnRecipient dave;
  dave.final_recipient = "dave@example.org";
  dave.action = DsnAction::kDelivered;
  dave.status = "2.0.0";
  dave.remote_mta = "mx.example.org";
  in.recipients.push_back(carol);
  in.recipients.push_back(dave);
  const Dsn dsn = BuildDsn(in, kNow);
  ExpectWellFormedLines(dsn.message);
  const ParsedDsn p = Parse(dsn.message);
  EXPECT_EQ(Field(p.headers, "Subject"), "Undelivered Mail Returned to Sender");
  ASSERT_EQ(p.parts.size(), 3u);
  const std::vector<Fields> groups = StatusGroups(p.parts[1].body);
  ASSERT_EQ(groups.size(), 4u);
  EXPECT_EQ(Field(groups[1], "Final-Recipient"), "rfc822; bob@example.net");
  EXPECT_EQ(Field(groups[1], "Action"), "failed");
  EXPECT_EQ(Field(groups[2], "Final-Recipient"), "rfc822; carol@example.net");
  EXPECT_EQ(Field(groups[2], "Original-Recipient"), "rfc822;carol@example.net");
  EXPECT_EQ(Field(groups[2], "Action"), "delayed");
  EXPECT_EQ(Field(groups[2], "Status"), "4.4.1");
  EXPECT_TRUE(HasField(groups[2], "Will-Retry-Until"));
  EXPECT_EQ(Field(groups[3], "Final-Recipient"), "rfc822; dave@example.org");
  EXPECT_EQ(Field(groups[3], "Action"), "delivered");
  EXPECT_EQ(Field(groups[3], "Remote-MTA"), "dns; mx.example.org");
  for (const char* who : {"<bob@example.net>", "<carol@example.net>", "<dave@example.org>"}) {
    EXPECT_NE(p.parts[0].body.find(who), std::string::npos) << who;
  }
}

TEST(DsnTest, SubjectFollowsTheActions) {
  DsnInput in = BaseInput();
  in.recipients[0].action = DsnAction::kDelivered;
  EXPECT_EQ(Field(Parse(BuildDsn(in, kNow).message).headers, "Subject"),
            "Successful Mail Delivery Report");
  in.recipients[0].action = DsnAction::kRelayed;
  const ParsedDsn p = Parse(BuildDsn(in, kNow).message);
  EXPECT_EQ(Field(p.headers, "Subject"), "Successful Mail Delivery Report");
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(Field(StatusGroups(p.parts[1].body)[1], "Action"), "relayed");
}

TEST(DsnTest, BoundaryNeverOccursInTheOriginal) {
  // An original that quotes DSN-looking delimiters, including our own boundary prefix.
  std::string original =
      "From: x@example.com\r\n"
      "Content-Type: multipart/mixed; boundary=\"=_sluice_dsn_\"\r\n"
      "\r\n"
      "--=_sluice_dsn_\r\n"
      "\r\n"
      "--=_sluice_dsn_000000000000000000000000\r\n"
      "--=_sluice_dsn_--\r\n";
  DsnInput in = BaseInput();
  in.original_message = original;
  for (int i = 0; i < 20; ++i) {
    const Dsn dsn = BuildDsn(in, kNow);
    const ParsedDsn p = Parse(dsn.message);
    ASSERT_FALSE(p.boundary.empty());
    EXPECT_EQ(original.find(p.boundary), std::string::npos) << p.boundary;
    EXPECT_LE(p.boundary.size(), 70u);  // RFC 2046 §5.1.1
    int delimiters = 0;
    for (const std::string& line : RawLines(dsn.message)) {
      if (line.starts_with("--" + p.boundary)) {
        ++delimiters;
      }
    }
    EXPECT_EQ(delimiters, 4);  // three parts and the close delimiter
    ASSERT_EQ(p.parts.size(), 3u);
    EXPECT_EQ(p.parts[2].body, original);
  }
}

TEST(DsnTest, LongMultiLineDiagnosticIsJoinedAndFolded) {
  const std::string reply =
      "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
      "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
      "550-5.1.1 unnecessary spaces. For more information, go to\r\n"
      "550 5.1.1  https://support.example.com/mail/?p=NoSuchUser a1-20020a170906 - gsmtp";
  DsnInput in = BaseInput();
  in.recipients[0].status.clear();
  in.recipients[0].diagnostic = reply;
  const Dsn dsn = BuildDsn(in, kNow);
  ExpectWellFormedLines(dsn.message);

  // The raw field spans several lines, each within 78 octets, continuations start with a space.
  const std::vector<std::string> lines = RawLines(dsn.message);
  size_t first = 0;
  while (first < lines.size() && !lines[first].starts_with("Diagnostic-Code:")) {
    ++first;
  }
  ASSERT_LT(first, lines.size());
  EXPECT_TRUE(lines[first].starts_with("Diagnostic-Code: smtp; 550-5.1.1 The email"));
  size_t continuation = 0;
  for (size_t i = first; i < lines.size(); ++i) {
    if (i > first && (lines[i].empty() || lines[i][0] != ' ')) {
      break;
    }
    EXPECT_LE(lines[i].size(), 78u) << lines[i];
    if (i > first) {
      ++continuation;
    }
  }
  EXPECT_GE(continuation, 3u);

  const ParsedDsn p = Parse(dsn.message);
  ASSERT_EQ(p.parts.size(), 3u);
  const Fields rcpt = StatusGroups(p.parts[1].body)[1];
  EXPECT_EQ(Field(rcpt, "Diagnostic-Code"),
            "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please "
            "try 550-5.1.1 double-checking the recipient's email address for typos or "
            "550-5.1.1 unnecessary spaces. For more information, go to 550 5.1.1 "
            "https://support.example.com/mail/?p=NoSuchUser a1-20020a170906 - gsmtp");
  EXPECT_EQ(Field(rcpt, "Status"), "5.1.1");
}

TEST(DsnTest, EveryLineIsCrlfAndAtMost998Octets) {
  std::string reply;
  for (int i = 0; i < 40; ++i) {
    reply += "550-5.7.1 " + std::string(120, 'a' + (i % 26)) + "\n";
  }
  reply += "550 5.7.1 " + std::string(5000, 'z');  // one unbreakable word
  // A non-conforming original: bare LF, bare CR and a 2000-octet body line.
  const std::string original = "Subject: x\nX-A: y\r\r\nbody " + std::string(2000, 'b') + "\r\n";
  DsnInput in = BaseInput();
  in.recipients[0].diagnostic = reply;
  in.recipients[0].remote_mta = std::string(1200, 'h');
  in.original_message = original;
  const Dsn dsn = BuildDsn(in, kNow);
  ExpectWellFormedLines(dsn.message);
  const ParsedDsn p = Parse(dsn.message);
  ASSERT_EQ(p.parts.size(), 3u);
  // The overlong body line cannot travel in message/rfc822: headers only, line ends fixed.
  EXPECT_EQ(MediaType(p.parts[2].headers), "text/rfc822-headers");
  EXPECT_EQ(p.parts[2].body, "Subject: x\r\nX-A: y\r\n");
  // The diagnostic is cut to a sane size.
  const std::string diag = Field(StatusGroups(p.parts[1].body)[1], "Diagnostic-Code");
  EXPECT_LT(diag.size(), 2200u);
  EXPECT_TRUE(diag.ends_with("...")) << diag.substr(diag.size() - 20);
}

TEST(DsnTest, EightBitOriginalIsLabelled) {
  const std::string original = "Subject: caf\xC3\xA9\r\n\r\nd\xC3\xA9j\xC3\xA0 vu\r\n";
  DsnInput in = BaseInput();
  in.original_message = original;
  const Dsn dsn = BuildDsn(in, kNow);
  EXPECT_TRUE(dsn.eight_bit);
  const ParsedDsn p = Parse(dsn.message);
  EXPECT_EQ(Field(p.headers, "Content-Transfer-Encoding"), "8bit");
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(Field(p.parts[0].headers, "Content-Transfer-Encoding"), "7bit");
  EXPECT_EQ(Field(p.parts[1].headers, "Content-Transfer-Encoding"), "7bit");
  EXPECT_EQ(Field(p.parts[2].headers, "Content-Transfer-Encoding"), "8bit");
  EXPECT_EQ(p.parts[2].body, original);
}

TEST(DsnTest, WithoutSmtputf8EverythingButTheOriginalIsAscii) {
  DsnInput in = BaseInput();
  in.recipients[0].diagnostic = "550 5.1.1 Benutzer unbekannt: j\xC3\xB6rg";
  in.recipients[0].final_recipient = "j\xC3\xB6rg@example.net";  // should not happen; stay safe
  in.recipients[0].original_recipient = "utf-8;j\\x{F6}rg@example.net";
  const Dsn dsn = BuildDsn(in, kNow);
  EXPECT_FALSE(dsn.eight_bit);
  EXPECT_FALSE(dsn.smtputf8);
  for (const char c : dsn.message) {
    ASSERT_LT(static_cast<unsigned char>(c), 0x80);
  }
  const ParsedDsn p = Parse(dsn.message);
  ASSERT_EQ(p.parts.size(), 3u);
  const Fields rcpt = StatusGroups(p.parts[1].body)[1];
  EXPECT_EQ(Field(rcpt, "Final-Recipient"), "utf-8; j\\x{F6}rg@example.net");
  EXPECT_EQ(Field(rcpt, "Original-Recipient"), "utf-8;j\\x{F6}rg@example.net");
  EXPECT_EQ(Field(rcpt, "Diagnostic-Code"), "smtp; 550 5.1.1 Benutzer unbekannt: j\\x{F6}rg");
}

TEST(DsnTest, Smtputf8UsesTheGlobalTypes) {
  const std::string original =
      "From: j\xC3\xB6rg@b\xC3\xA4r.example\r\nSubject: gr\xC3\xBC\xC3\x9F"
      "e\r\n\r\nhi\r\n";
  DsnInput in = BaseInput();
  in.smtputf8 = true;
  in.original_sender = "j\xC3\xB6rg@b\xC3\xA4r.example";
  in.original_message = original;
  in.recipients[0].final_recipient = "m\xC3\xBCller@example.net";
  in.recipients[0].original_recipient = "utf-8;m\\x{FC}ller@example.net";
  const Dsn dsn = BuildDsn(in, kNow);
  EXPECT_TRUE(dsn.smtputf8);
  EXPECT_TRUE(dsn.eight_bit);
  ExpectWellFormedLines(dsn.message);
  const ParsedDsn p = Parse(dsn.message);
  EXPECT_NE(Field(p.headers, "Content-Type").find("report-type=global-delivery-status"),
            std::string::npos);
  EXPECT_EQ(Field(p.headers, "To"), "<j\xC3\xB6rg@b\xC3\xA4r.example>");
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(MediaType(p.parts[1].headers), "message/global-delivery-status");
  EXPECT_EQ(MediaType(p.parts[2].headers), "message/global");
  const Fields rcpt = StatusGroups(p.parts[1].body)[1];
  EXPECT_EQ(Field(rcpt, "Final-Recipient"), "utf-8; m\xC3\xBCller@example.net");
  EXPECT_EQ(Field(rcpt, "Original-Recipient"), "utf-8;m\\x{FC}ller@example.net");
  EXPECT_EQ(p.parts[2].body, original);

  in.ret = smtp::Ret::kHdrs;
  const ParsedDsn hdrs = Parse(BuildDsn(in, kNow).message);
  ASSERT_EQ(hdrs.parts.size(), 3u);
  EXPECT_EQ(MediaType(hdrs.parts[2].headers), "message/global-headers");
}

TEST(DsnTest, MessageIdsAreUnique) {
  const Dsn a = BuildDsn(BaseInput(), kNow);
  const Dsn b = BuildDsn(BaseInput(), kNow);
  EXPECT_NE(a.message_id, b.message_id);
}

// Python's email package is an independent MIME parser: if it sees the same structure, the DSN
// is valid MIME and not just agreeable to our own splitter.
TEST(DsnTest, PythonEmailParserSeesTheReportStructure) {
  const char* env = std::getenv("SLUICE_PYTHON3");
  const std::string python = env != nullptr && *env != '\0' ? env : "python3";
  if (std::system((python + " -c 'import email' >/dev/null 2>&1").c_str()) != 0) {
    FAIL() << "python3 with the email package is needed (scripts/install-deps installs it)";
  }
  DsnInput in = BaseInput();
  in.envid = "env+2B1";
  in.recipients[0].original_recipient = "rfc822;a+2Bb@x";
  const Dsn dsn = BuildDsn(in, kNow);
  TempDir dir;
  const std::string path = dir.path() + "/dsn.eml";
  {
    std::ofstream file(path, std::ios::binary);
    file << dsn.message;
    ASSERT_TRUE(file.good());
  }
  const std::string command =
      python +
      " -c \"import email,sys; m=email.message_from_binary_file(open(sys.argv[1],'rb')); "
      "assert m.get_content_type()=='multipart/report'; "
      "assert not m.defects and all(not p.defects for p in m.walk()), m.defects; "
      "parts=[p.get_content_type() for p in m.walk()]; print(parts); "
      "ds=[p for p in m.walk() if p.get_content_type()=='message/delivery-status'][0]"
      ".get_payload(); "
      "print(ds[0]['Reporting-MTA'], '|', ds[0]['Original-Envelope-Id'], '|', "
      "ds[1]['Original-Recipient'], '|', ds[1]['Action'], '|', ds[1]['Status']); "
      "orig=[p for p in m.walk() if p.get_content_type()=='message/rfc822'][0].get_payload(0); "
      "print(orig['Subject'], '|', orig.get_payload().strip())\" " +
      path + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[512];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) {
    output.append(buf, n);
  }
  const int status = ::pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  // message/delivery-status is parsed as one block per field group; message/rfc822 as the
  // original (text/plain by default).
  EXPECT_EQ(output,
            "['multipart/report', 'text/plain', 'message/delivery-status', 'text/plain', "
            "'text/plain', 'message/rfc822', 'text/plain']\n"
            "dns; relay.example.org | env+1 | rfc822;a+b@x | failed | 5.1.1\n"
            "lunch | Shall we meet at noon?\n-- \nAlice\n");  // the parser reports LF line ends
}

}  // namespace
}  // namespace sluice::delivery
