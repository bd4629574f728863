// sluiced: the Sluice daemon.
//   sluiced --config FILE          run in the foreground
//   sluiced --check-config FILE    validate and exit

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <sys/resource.h>
#include <sys/statvfs.h>

#include "base/log.h"
#include "gateway/config.h"
#include "gateway/server.h"
#include "metrics/admin_server.h"
#include "metrics/event_log.h"
#include "metrics/process_metrics.h"
#include "metrics/registry.h"
#include "queue/spool.h"

namespace {

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "0.1.0"
#endif
#ifndef SLUICE_GIT_REVISION
#define SLUICE_GIT_REVISION "unknown"
#endif

// Spool metrics: the writer's own histograms (fed by SpoolOptions::on_batch)
// and the gauges read at scrape time.
void RegisterSpoolMetrics(sluice::metrics::Registry& registry, sluice::queue::Spool& spool,
                          const std::string& path, uint64_t min_free) {
  using sluice::metrics::MetricType;
  registry.AddCollector([&spool, path, min_free](sluice::metrics::Exposition& out) {
    const sluice::queue::SpoolStats s = spool.stats();
    auto gauge = [&out](const char* name, const char* help, double v) {
      out.Family(name, help, MetricType::kGauge);
      out.Sample(name, {}, v);
    };
    auto counter = [&out](const char* name, const char* help, double v) {
      out.Family(name, help, MetricType::kCounter);
      out.Sample(name, {}, v);
    };
    gauge("sluice_spool_healthy",
          "1 while the spool accepts writes; 0 after a write error until it has reopened.",
          spool.healthy() ? 1 : 0);
    gauge("sluice_spool_disk_low",
          "1 while the spool's file system is below spool.min_free_bytes (new mail gets 452).",
          s.disk_low ? 1 : 0);
    gauge("sluice_spool_min_free_bytes", "spool.min_free_bytes: the free space new mail needs.",
          static_cast<double>(min_free));
    gauge("sluice_spool_deferred_updates",
          "Removals and envelope updates waiting for room or for the spool to reopen.",
          static_cast<double>(s.deferred_updates));
    counter("sluice_spool_reopens_total",
            "Times the spool closed and reopened its database after a write error.",
            static_cast<double>(s.reopens));
    gauge("sluice_spool_quarantined_messages",
          "Spool records set aside because they could not be read (sluicectl quarantine list).",
          static_cast<double>(spool.quarantined_messages()));
    gauge("sluice_spool_pending_messages", "Messages handed to the spool writer, not yet durable.",
          static_cast<double>(s.pending_messages));
    gauge("sluice_spool_pending_bytes", "Bytes handed to the spool writer, not yet durable.",
          static_cast<double>(s.pending_bytes));
    counter("sluice_spool_write_stalls_total",
            "Spool writes that RocksDB answered with a write stall.",
            static_cast<double>(s.stalls));
    out.Family("sluice_spool_failed_messages_total",
               "Messages the spool could not make durable (the client got 451).",
               MetricType::kCounter);
    out.Sample("sluice_spool_failed_messages_total", {{"reason", "timed_out"}},
               static_cast<double>(s.timed_out_messages));
    out.Sample("sluice_spool_failed_messages_total", {{"reason", "io_error"}},
               static_cast<double>(s.failed_messages));
    out.Sample("sluice_spool_failed_messages_total", {{"reason", "no_space"}},
               static_cast<double>(s.no_space_messages));
    gauge("sluice_rocksdb_write_stopped", "RocksDB rocksdb.is-write-stopped.",
          static_cast<double>(s.write_stopped));
    gauge("sluice_rocksdb_delayed_write_rate_bytes", "RocksDB rocksdb.actual-delayed-write-rate.",
          static_cast<double>(s.delayed_write_rate));
    gauge("sluice_rocksdb_pending_compaction_bytes",
          "RocksDB rocksdb.estimate-pending-compaction-bytes.",
          static_cast<double>(s.estimate_pending_compaction_bytes));
    gauge("sluice_rocksdb_running_compactions", "RocksDB rocksdb.num-running-compactions.",
          static_cast<double>(s.running_compactions));
    gauge("sluice_rocksdb_memtable_bytes", "RocksDB rocksdb.cur-size-all-mem-tables.",
          static_cast<double>(s.memtable_bytes));
    gauge("sluice_rocksdb_background_errors", "RocksDB rocksdb.background-errors.",
          static_cast<double>(s.background_errors));
    struct statvfs vfs {};
    if (statvfs(path.c_str(), &vfs) == 0 && vfs.f_blocks > 0) {
      gauge("sluice_spool_disk_free_bytes", "Free bytes on the spool's file system.",
            static_cast<double>(vfs.f_bavail) * static_cast<double>(vfs.f_frsize));
      gauge("sluice_spool_disk_free_ratio", "Free fraction of the spool's file system.",
            static_cast<double>(vfs.f_bavail) / static_cast<double>(vfs.f_blocks));
    }
  });
}

// Every connection is a descriptor, and the default soft limit (often 1024) is far below
// max_connections. Raise the soft limit to the hard one, as other daemons do, and say so when
// even that is too low for the configured connections plus the spool's files.
void RaiseFileLimit(const sluice::gateway::Config& config) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  if (rl.rlim_cur < rl.rlim_max) {
    const rlim_t before = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      rl.rlim_cur = before;
    } else {
      spdlog::info("open file limit raised from {} to {}", before, rl.rlim_cur);
    }
  }
  const rlim_t wanted = static_cast<rlim_t>(config.max_connections) + 1024;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < wanted) {
    spdlog::warn(
        "open file limit {} is below server.max_connections ({}) + 1024 for the spool and "
        "outbound connections; connections past it are refused (raise LimitNOFILE / ulimit -Hn)",
        rl.rlim_cur, config.max_connections);
  }
}

int Run(const std::string& config_path) {
  using namespace sluice;
  auto config = gateway::LoadConfig(config_path);
  if (!config) {
    std::fprintf(stderr, "sluiced: %s\n", config.error().message.c_str());
    return 2;
  }
  InitLogging(config->log_level.c_str());
  RaiseFileLimit(*config);

  // Signals are taken synchronously by the main thread (sigwait); every
  // thread started from here inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  metrics::Registry registry(config->shards);
  metrics::RegisterProcessMetrics(registry, SLUICE_VERSION, SLUICE_GIT_REVISION);
  std::unique_ptr<metrics::EventLog> events;
  if (!config->event_log.empty()) {
    metrics::EventLogOptions eo;
    eo.metrics = &registry;
    auto opened = metrics::EventLog::Open(config->event_log, eo);
    if (!opened) {
      spdlog::critical("cannot open the event log: {}", opened.error().message);
      return 1;
    }
    events = std::move(*opened);
  }
  metrics::Histogram& group_size =
      registry
          .AddHistogram("sluice_spool_commit_group_messages",
                        "Messages made durable by one spool write (group commit).", {},
                        metrics::ExponentialBuckets(1, 2, 12))
          .WithLabels({});
  metrics::Histogram& write_seconds = registry
                                          .AddHistogram("sluice_spool_write_duration_seconds",
                                                        "One spool write, including its fsync.", {},
                                                        metrics::ExponentialBuckets(0.00005, 2, 18))
                                          .WithLabels({});
  const unsigned other = registry.other_thread();

  queue::SpoolOptions spool_options;
  spool_options.on_batch = [&group_size, &write_seconds, other](size_t messages, double seconds) {
    if (messages > 0)
      group_size.Observe(other, static_cast<double>(messages));
    write_seconds.Observe(other, seconds);
  };
  spool_options.path = config->spool.path;
  spool_options.max_pending_messages = config->spool.max_pending_messages;
  spool_options.max_pending_bytes = config->spool.max_pending_bytes;
  spool_options.stall_deadline = config->spool.stall_deadline;
  spool_options.min_free_bytes = config->spool.min_free_bytes;
  auto spool = queue::Spool::Open(spool_options);
  if (!spool) {
    // With ENOSPC the message says how much to free (queue::NoSpaceToOpen).
    spdlog::critical("cannot open spool {}: {}", config->spool.path, spool.error().message);
    return 1;
  }
  spdlog::info("spool {}: {} messages recovered", config->spool.path,
               (*spool)->recovered_messages());

  // Nothing of the queue is read before the listeners open (docs/architecture.md "Start and
  // recovery"): delivery reads due work from the spool's schedule index as it goes, and the
  // audit below runs in the background.
  RegisterSpoolMetrics(registry, **spool, config->spool.path, config->spool.min_free_bytes);
  gateway::Server server(*config, **spool, registry, events.get());
  // A message whose write failed (its client got 451) but that the reopened spool holds after
  // all goes to its owner shard like a recovered one.
  (*spool)->SetRecoveredHandler([&server](const queue::MessageId& id, queue::Envelope env) {
    server.AdoptRecovered(id, std::move(env));
  });
  registry.AddCollector([&server](metrics::Exposition& out) { server.CollectShards(out); });
  registry.AddCollector([&server](metrics::Exposition& out) { server.CollectQueue(out); });
  if (auto started = server.Start(); !started) {
    spdlog::critical("cannot start: {}", started.error().message);
    server.Shutdown();
    server.Wait();
    (*spool)->Shutdown();
    return 1;
  }
  for (const auto& l : config->listeners) {
    spdlog::info("listener '{}' on {}:{} ({} shards)", l.name, l.address, l.port, config->shards);
  }
  std::unique_ptr<metrics::AdminServer> admin;
  if (config->admin.enabled) {
    admin = std::make_unique<metrics::AdminServer>(registry, [&server] { return server.Ready(); });
    if (auto r = admin->Start(config->admin.address, config->admin.port); !r) {
      spdlog::critical("cannot start the admin server: {}", r.error().message);
      server.Shutdown();
      server.Wait();
      (*spool)->Shutdown();
      return 1;
    }
    spdlog::info("admin server (metrics, health) on {}:{}", config->admin.address, admin->port());
  }
  spdlog::info("sluiced ready");
  // The background pass over every envelope: unreadable records go to the quarantine, the
  // queue counters are checked, a spool from before the schedule index is indexed. At the
  // lowest CPU priority: it must not slow delivery down.
  std::atomic<bool> audit_stop{false};
  std::thread audit([&spool, &audit_stop] {
    pthread_setname_np(pthread_self(), "sluice-audit");
    setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 19);
    const auto started = std::chrono::steady_clock::now();
    Result<queue::Spool::AuditReport> report = (*spool)->Audit(&audit_stop);
    if (!report.ok()) {
      spdlog::error("spool audit: {}", report.error().message);
      return;
    }
    spdlog::info("spool audit: {} messages in {:.1f} s, {} quarantined, {} indexed",
                 report->messages,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                 report->quarantined, report->indexed);
  });

  for (;;) {
    // Every 30 s without a signal: give free heap pages back to the kernel. Message bodies are
    // large, short-lived allocations that glibc serves from the heap once its dynamic mmap
    // threshold has risen past them (fixing the threshold instead made every large buffer a
    // fresh mapping: 5x the page faults, -30% throughput at 100 KiB). Without this the process
    // would keep the high-water mark of a burst, or of an attack, resident long after it.
    timespec period{30, 0};
    const int sig = sigtimedwait(&signals, nullptr, &period);
    if (sig < 0) {
      if (errno == EAGAIN)
        malloc_trim(0);
      continue;
    }
    if (sig == SIGHUP) {
      // logrotate: reopen the event log by path (no copytruncate needed).
      if (events)
        events->Reopen();
      // New certificates and users files for new connections; existing
      // connections keep what they started with.
      if (auto r = server.LoadSecurity(); !r) {
        spdlog::error("SIGHUP: keeping the old TLS certificates and users files: {}",
                      r.error().message);
      } else {
        spdlog::info("SIGHUP: TLS certificates and users files reloaded");
      }
      spdlog::info("SIGHUP: event log reopened");
      continue;
    }
    spdlog::info("{}: shutting down (grace {} s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 config->shutdown_grace.count());
    break;
  }
  audit_stop = true;
  audit.join();
  server.Shutdown();
  server.Wait();
  if (admin)
    admin->Stop();
  // Every session is gone, so nothing waits on the spool any more; this
  // commits what is queued and closes RocksDB.
  (*spool)->Shutdown();
  if (events)
    events->Stop();
  spdlog::info("sluiced stopped");
  return 0;
}

}  // namespace

// An exception that escapes here (a std::bad_alloc at start-up, say) ends the process with a
// message, which is all main could do with it.
// NOLINTNEXTLINE(bugprone-exception-escape)
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
