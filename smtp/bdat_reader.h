#pragma once

// The BDAT body reader (RFC 3030). The session parses "BDAT n [LAST]"
// (ParseBdat), calls StartChunk(n, last) and feeds octets until chunk_done().
// No dot-stuffing and no end marker: the chunk size frames the data. One
// reader per transaction, since a CRLF may straddle two chunks.
//
// With kReject the octets are stored verbatim and bare_newline() reports a
// bare CR or LF; for BODY=BINARYMIME the session should ignore that flag.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "smtp/data_reader.h"
#include "smtp/detail/body_sink.h"

namespace sluice::smtp {

class BdatReader {
 public:
  explicit BdatReader(DataLimits limits);

  // Expect exactly `size` more octets. `last` (BDAT ... LAST): once this chunk
  // is complete the message is (message_done()), and a CR ending it counts as
  // a bare CR. Calling StartChunk before chunk_done() is a caller bug; the
  // remaining count is simply replaced.
  void StartChunk(uint64_t size, bool last = false);

  // Consumes at most the octets left in the chunk; returns how many.
  size_t Feed(std::string_view input, std::string* body);

  bool chunk_done() const {
    return remaining_ == 0;
  }
  uint64_t remaining() const {
    return remaining_;
  }
  bool message_done() const {
    return message_done_;
  }  // the LAST chunk is complete

  bool bare_newline() const {
    return bare_newline_;
  }
  bool line_too_long() const {
    return line_too_long_;
  }
  bool too_big() const {
    return sink_.too_big();
  }
  // Reads on to the end without storing anything more (the caller ran out of room): the body
  // is left as it is, every other finding is still made.
  void DropBody() {
    sink_.Drop();
  }
  uint64_t size() const {
    return sink_.size();
  }

 private:
  void Count(size_t n) {
    line_len_ += n;
    if (line_len_ > limits_.max_line)
      line_too_long_ = true;
  }
  void Finish();

  DataLimits limits_;
  detail::BodySink sink_;
  uint64_t remaining_ = 0;
  uint64_t line_len_ = 0;
  bool last_ = false;
  bool message_done_ = false;
  // A CR ended the last Feed; its successor decides. kReject: the CR is
  // stored and a non-LF successor makes it bare. kNormalize: CRLF is already
  // stored, so an LF successor is dropped.
  bool cr_pending_ = false;
  bool skip_lf_ = false;
  bool bare_newline_ = false;
  bool line_too_long_ = false;
};

}  // namespace sluice::smtp
