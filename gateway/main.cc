// sluiced: the Sluice daemon.
//   sluiced --config FILE          run in the foreground
//   sluiced --check-config FILE    validate and exit

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <CLI/CLI.hpp>

#include "base/log.h"
#include "gateway/config.h"
#include "gateway/server.h"
#include "queue/spool.h"

namespace {

int Run(const std::string& config_path) {
  using namespace sluice;
  auto config = gateway::LoadConfig(config_path);
  if (!config) {
    std::fprintf(stderr, "sluiced: %s\n", config.error().message.c_str());
    return 2;
  }
  InitLogging(config->log_level.c_str());

  // Signals are taken synchronously by the main thread (sigwait); every
  // thread started from here inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  queue::SpoolOptions spool_options;
  spool_options.path = config->spool.path;
  spool_options.max_pending_messages = config->spool.max_pending_messages;
  spool_options.max_pending_bytes = config->spool.max_pending_bytes;
  spool_options.stall_deadline = config->spool.stall_deadline;
  auto spool = queue::Spool::Open(spool_options);
  if (!spool) {
    spdlog::critical("cannot open spool {}: {}", config->spool.path, spool.error().message);
    return 1;
  }
  spdlog::info("spool {}: {} messages recovered", config->spool.path,
               (*spool)->recovered_messages());

  // Rebuild the schedule: every message in the spool goes back to its owner
  // shard (DESIGN.md §7: meta.next_due is the durable truth).
  std::vector<std::pair<queue::MessageId, queue::Envelope>> recovered;
  auto scanned = (*spool)->ForEach([&](const queue::MessageId& id, const queue::Envelope& env) {
    recovered.emplace_back(id, env);
    return true;
  });
  if (!scanned) {
    spdlog::critical("cannot read spool {}: {}", config->spool.path, scanned.error().message);
    return 1;
  }
  gateway::Server server(*config, **spool);
  if (auto started = server.Start(std::move(recovered)); !started) {
    spdlog::critical("cannot start: {}", started.error().message);
    server.Shutdown();
    server.Wait();
    (*spool)->Shutdown();
    return 1;
  }
  for (const auto& l : config->listeners) {
    spdlog::info("listener '{}' on {}:{} ({} shards)", l.name, l.address, l.port, config->shards);
  }
  spdlog::info("sluiced ready");

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: nothing to reload yet");
      continue;
    }
    spdlog::info("{}: shutting down (grace {} s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 config->shutdown_grace.count());
    break;
  }
  server.Shutdown();
  server.Wait();
  // Every session is gone, so nothing waits on the spool any more; this
  // commits what is queued and closes RocksDB.
  (*spool)->Shutdown();
  spdlog::info("sluiced stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sluice SMTP relay daemon"};
  std::string config_path;
  std::string check_path;
  app.add_option("-c,--config", config_path, "configuration file (TOML)");
  app.add_option("--check-config", check_path, "validate a configuration file and exit");
  CLI11_PARSE(app, argc, argv);

  if (!check_path.empty()) {
    auto config = sluice::gateway::LoadConfig(check_path);
    if (!config) {
      std::fprintf(stderr, "%s\n", config.error().message.c_str());
      return 2;
    }
    std::printf("%s: OK (%zu listeners, %u shards, spool %s)\n", check_path.c_str(),
                config->listeners.size(), config->shards, config->spool.path.c_str());
    return 0;
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "sluiced: --config FILE is required (or --check-config FILE)\n");
    return 2;
  }
  return Run(config_path);
}
