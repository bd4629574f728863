#include "base/result.h"

#include <memory>
#include <string>
#include <type_traits>

#include <gtest/gtest.h>

namespace sluice {
namespace {

Result<int> Half(int n) {
  if (n % 2 != 0) {
    return MakeError("odd", 22);
  }
  return n / 2;
}

TEST(Result, HoldsAValueOrAnError) {
  const Result<int> half = Half(8);
  ASSERT_TRUE(half.ok());
  EXPECT_TRUE(static_cast<bool>(half));
  EXPECT_EQ(*half, 4);
  EXPECT_EQ(half.value(), 4);

  const Result<int> odd = Half(7);
  ASSERT_FALSE(odd.ok());
  EXPECT_FALSE(static_cast<bool>(odd));
  EXPECT_EQ(odd.error().code, 22);
  EXPECT_EQ(odd.error().message, "odd");
}

TEST(Result, MovesItsValueOut) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(5);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> taken = std::move(r).value();
  ASSERT_NE(taken, nullptr);
  EXPECT_EQ(*taken, 5);

  Result<std::string> s = std::string("abc");
  EXPECT_EQ(s->size(), 3u);
}

TEST(Result, VoidCarriesOnlyTheError) {
  const Result<void> fine;
  EXPECT_TRUE(fine.ok());
  const Result<void> failed = MakeError("disk full", 28);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, 28);
}

// Any error type: what a component can say best about a failure (the SMTP codec: its reply).
struct Refusal {
  int code = 0;
};

TEST(Result, TakesAnotherErrorType) {
  const Result<std::string, Refusal> value = std::string("ok");
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, "ok");
  const Result<std::string, Refusal> refused = Refusal{550};
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, 550);

  const Result<void, Refusal> none = Refusal{451};
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, 451);
}

// Result<T> is Result<T, Error>: one template, whichever way it is spelled.
static_assert(std::is_same_v<Result<int>, Result<int, Error>>);
static_assert(std::is_same_v<Result<void>, Result<void, Error>>);

}  // namespace
}  // namespace sluice
