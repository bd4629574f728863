#include "delivery/delivery_config.h"

#include <gtest/gtest.h>

namespace sluice::delivery {
namespace {

TEST(RouteTest, FirstMatchWinsWithWildcards) {
  std::vector<RouteConfig> routes(3);
  routes[0].name = "exact";
  routes[0].domains = {"example.com"};
  routes[1].name = "sub";
  routes[1].domains = {"*.example.org"};
  routes[2].name = "default";
  routes[2].domains = {"*"};
  EXPECT_EQ(FindRoute(routes, "example.com")->name, "exact");
  EXPECT_EQ(FindRoute(routes, "EXAMPLE.com")->name, "exact");
  EXPECT_EQ(FindRoute(routes, "example.com.")->name, "exact");
  EXPECT_EQ(FindRoute(routes, "a.example.org")->name, "sub");
  EXPECT_EQ(FindRoute(routes, "a.b.Example.ORG")->name, "sub");
  EXPECT_EQ(FindRoute(routes, "example.org")->name, "default");  // the apex is not a subdomain
  EXPECT_EQ(FindRoute(routes, "other.net")->name, "default");
  routes.pop_back();
  EXPECT_EQ(FindRoute(routes, "other.net"), nullptr);
}

TEST(RouteTest, ParsesRates) {
  EXPECT_DOUBLE_EQ(*ParseRate("100/s"), 100);
  EXPECT_DOUBLE_EQ(*ParseRate("600/min"), 10);
  EXPECT_DOUBLE_EQ(*ParseRate("3600/h"), 1);
  EXPECT_DOUBLE_EQ(*ParseRate("0.5/s"), 0.5);
  EXPECT_FALSE(ParseRate("100"));
  EXPECT_FALSE(ParseRate("100/day"));
  EXPECT_FALSE(ParseRate("-1/s"));
  EXPECT_FALSE(ParseRate("x/s"));
}

}  // namespace
}  // namespace sluice::delivery
