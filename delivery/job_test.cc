#include "delivery/job.h"

#include <gtest/gtest.h>

namespace sluice::delivery {
namespace {

queue::Envelope ThreeRecipients() {
  queue::Envelope env;
  env.sender = "alice@example.com";
  env.envid = "abc";
  env.smtputf8 = true;
  for (const char* a : {"b@one.example", "c@two.example", "d@one.example"}) {
    env.recipients.push_back(
        {a, 0, "rfc822;" + std::string(a), queue::RecipientState::kPending, 0, ""});
  }
  return env;
}

TEST(JobGrouperTest, RecipientsOfOneDestinationShareOneJobInArrivalOrder) {
  const queue::Envelope env = ThreeRecipients();
  auto body = std::make_shared<const std::string>("Subject: x\r\n\r\nhi\r\n");
  JobGrouper grouper(queue::MessageId{7, 9}, 1, env, body);
  grouper.Add(0, "mx-site-one", nullptr, "one.example", {});
  grouper.Add(1, "mx-site-two", nullptr, "two.example", {});
  grouper.Add(2, "mx-site-one", nullptr, "one.example", {});
  std::vector<Job> jobs = grouper.Take();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].key, "mx-site-one");
  EXPECT_EQ(jobs[0].rcpts, (std::vector<size_t>{0, 2}));
  ASSERT_EQ(jobs[0].message.recipients.size(), 2u);
  EXPECT_EQ(jobs[0].message.recipients[1].address, "d@one.example");
  EXPECT_EQ(jobs[0].message.recipients[1].orcpt, "rfc822;d@one.example");
  EXPECT_EQ(jobs[1].key, "mx-site-two");
  EXPECT_EQ(jobs[1].rcpts, (std::vector<size_t>{1}));
  for (const Job& j : jobs) {
    EXPECT_EQ(j.owner, 1u);
    EXPECT_EQ(j.id, (queue::MessageId{7, 9}));
    EXPECT_EQ(j.message.sender, "alice@example.com");
    EXPECT_EQ(j.message.envid, "abc");
    EXPECT_TRUE(j.message.smtputf8);
    EXPECT_EQ(j.message.body, body);  // shared, not copied
  }
}

TEST(JobGrouperTest, RouteKeysNameTheRoute) {
  RouteConfig route;
  route.name = "relay";
  route.type = RouteType::kSmarthost;
  EXPECT_EQ(RouteKey(route), "smarthost:relay");
  route.type = RouteType::kLmtp;
  EXPECT_EQ(RouteKey(route), "lmtp:relay");
  route.type = RouteType::kMaildir;
  EXPECT_EQ(RouteKey(route), "maildir:relay");
}

}  // namespace
}  // namespace sluice::delivery
