#pragma once

// Local delivery into a maildir (https://cr.yp.to/proto/maildir.html).

#include <string>
#include <string_view>

#include "base/result.h"

namespace sluice::delivery {

// Delivers one message into the maildir at `root`:
//   - creates root (and missing parents) and root/{tmp,new,cur} with mode 0700 when missing,
//     fsyncing the parent of each directory it creates;
//   - writes root/tmp/<unique> (O_EXCL, mode 0600), fsync(file), renames it to root/new/<unique>
//     (without replacing an existing file), fsync(root/new).
// Crash semantics: once this returns a path the message survives a crash; before that the message
// is either absent from new/ or complete in it (a crash may leave a file in tmp/, which maildir
// readers ignore and clean up after 36 hours). On error nothing is left in tmp/ or new/.
//
// <unique> = "<unix seconds>.M<micros>P<pid>Q<counter>.<hostname>,S=<file size>", the hostname with
// '/' and ':' written as \057 and \072.
//
// Prepends "Return-Path: <sender>" ("<>" for the null sender) and "Delivered-To: recipient" (when
// non-empty), as Postfix local/virtual do, with the message's own line ending (CRLF for stored
// messages); the message bytes are written unchanged (no CRLF → LF conversion; Dovecot reads both).
// A sender or recipient containing CR or LF is refused (EINVAL).
//
// Blocking (fsync): callers run it on a thread pool, never on a shard. Thread-safe.
// Returns the final path in new/, or an Error whose code is the failing call's errno.
Result<std::string> DeliverToMaildir(const std::string& root, std::string_view message,
                                     const std::string& sender, const std::string& recipient);

}  // namespace sluice::delivery
