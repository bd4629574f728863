#pragma once

// BoringSSL's thread-local error queue, turned into text. The queue is per thread and a shard
// runs many connections, so every operation clears it first and drains it after a failure.

#include <string>

namespace sluice::tls::detail {

// Pops every queued error and joins them with "; " (ERR_error_string_n: BoringSSL has no
// function codes, so the reason text is what identifies the error). "" when the queue is empty.
std::string DrainErrors();

}  // namespace sluice::tls::detail
