// Test setup for metrics_test: the human log goes to stderr, where death tests look for
// SLUICE_BUG/SLUICE_CHECK messages.

#include <gtest/gtest.h>

#include "base/log.h"

namespace {

class LoggingEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    sluice::InitLogging("warn");
  }
};

const auto* const kLoggingEnvironment = ::testing::AddGlobalTestEnvironment(new LoggingEnvironment);

}  // namespace
