// EngineAdminProvider (see admin_provider.h). Runs on the admin server's HTTP threads.
#include "main/admin_provider.h"

#include <cstdint>

#include "commands/command_metrics.h"
#include "metrics/exposition.h"
#include "metrics/process.h"

namespace kvstore {
// The probes read nothing that waits for the storage: a map growth waiting for a long snapshot
// (a backup, a full resync) holds up new readers, and a probe timing out there would unready or
// restart the very pod that is serving the snapshot.
HealthReport EngineAdminProvider::Health() {
  if (auto reason = engine_.PoisonReason()) return {false, "writes disabled: " + *reason};
  return {true, ""};
}

HealthReport EngineAdminProvider::Readiness() {
  if (!role_taken_.load()) return {false, "starting: the role is not taken yet"};
  const ReplicationStatus status = replication_.LiveStatus();
  HealthReport report{true, "master"};
  if (status.role == ReplicationStatus::Role::kMaster) {
    if (auto refusal = replication_.WriteRefusal()) {
      report = {false, "master not accepting writes: " + *refusal};
    }
  } else {
    const std::uint64_t lag = status.master_seq > status.seq ? status.master_seq - status.seq : 0;
    const std::string where =
        "replica of " + status.master_host + ":" + std::to_string(status.master_port);
    const std::string link_error = LinkErrorNote(status);
    if (auto unconfirmed = UnconfirmedReplicaData(status)) {
      report = {false, where + ": " + *unconfirmed};
    } else if (lag > ready_max_lag_entries_) {
      report = {false, where + ": " + std::to_string(lag) +
                           " entries behind (ready_max_lag_entries " +
                           std::to_string(ready_max_lag_entries_) + ")" +
                           (status.link_up ? "" : "; master link down" + link_error)};
    } else if (!status.link_up) {
      // The master is away (a crash, a node failure): the replica keeps serving its data through
      // kvstore-read, stale by however long the link is down, rather than leaving the Service
      // with no endpoint at all. /readyz, INFO and the metrics say the link is down.
      report = {true, where + ": master link down" + link_error + "; serving stale reads, " +
                          std::to_string(lag) + " entries behind when it went down"};
    } else {
      report = {true, where + ", " + std::to_string(lag) + " entries behind"};
    }
  }
  // A missing label does not make the pod unready (that would also drop it from kvstore-read
  // and fix nothing), but the operator sees why kvstore-master has no endpoint.
  if (const std::string error = labeler_.last_error(); !error.empty()) {
    report.detail += " (role label not set: " + error + ")";
  }
  return report;
}

std::string EngineAdminProvider::Metrics() {
  using metrics::Exposition;
  using Type = Exposition::Type;
  const EngineStats stats = engine_.Stats();
  const ServerCounters counters = server_.Counters();
  const ReplicationStatus repl = replication_.CurrentStatus();
  const auto d = [](std::uint64_t v) { return static_cast<double>(v); };
  Exposition e;

  e.Gauge("kvstore_up", "1 while the server runs", 1);
  e.Family("kvstore_build_info", "the running version (always 1)", Type::kGauge);
  e.Sample("kvstore_build_info", {{"version", KVSTORE_VERSION}}, 1);
  e.Gauge("kvstore_ready", "1 while /readyz answers ok", Readiness().ok ? 1 : 0);

  // Commands.
  if (const CommandMetrics* commands = server_.command_metrics()) {
    e.Family("kvstore_commands_total", "commands processed, by command and result (ok, error)",
             Type::kCounter);
    for (const auto& c : commands->Counts()) {
      const std::string name(c.name);
      e.Sample("kvstore_commands_total", {{"command", name}, {"result", "ok"}}, d(c.ok));
      e.Sample("kvstore_commands_total", {{"command", name}, {"result", "error"}}, d(c.errors));
    }
    e.Family("kvstore_command_duration_seconds",
             "time from a command's parse to its reply, by family (read, write, admin); writes "
             "include the group commit and its fsync",
             Type::kHistogram);
    for (CommandMetrics::Family family : CommandMetrics::kFamilies) {
      e.HistogramSamples("kvstore_command_duration_seconds",
                         {{"family", std::string(CommandMetrics::FamilyName(family))}},
                         commands->Latency(family));
    }
  }

  // Clients.
  e.Gauge("kvstore_connected_clients", "client connections open now",
          d(counters.connected_clients));
  e.Counter("kvstore_connections_received_total", "client connections accepted",
            d(counters.total_connections));
  e.Counter("kvstore_rejected_connections_total", "connections refused at max_clients",
            d(counters.rejected_connections));
  e.Counter("kvstore_net_input_bytes_total", "bytes read from clients",
            d(counters.net_input_bytes));
  e.Counter("kvstore_net_output_bytes_total", "bytes written to clients",
            d(counters.net_output_bytes));

  // Storage.
  e.Gauge("kvstore_keys", "keys in the key space", d(stats.storage.keys));
  e.Gauge("kvstore_storage_used_bytes", "database size: LMDB pages in use times the page size",
          d(stats.storage.used_bytes));
  e.Gauge("kvstore_storage_map_size_bytes", "LMDB's current map size (the data file's size)",
          d(stats.storage.map_bytes));
  e.Gauge("kvstore_storage_map_max_bytes",
          "the largest the map may grow (max_map_bytes); writes fail with storage full beyond it",
          d(stats.storage.max_map_bytes));
  e.Gauge("kvstore_applied_seq", "newest log entry applied to the key space",
          d(stats.storage.applied_seq));

  // Log and durability.
  e.Gauge("kvstore_log_first_seq", "oldest log entry still on disk", d(stats.log.first_seq));
  e.Gauge("kvstore_log_last_seq", "sequence number of the newest log entry", d(stats.log.last_seq));
  e.Gauge("kvstore_log_bytes", "bytes of log records on disk", d(stats.log.bytes));
  e.Gauge("kvstore_log_segments", "log segment files", d(stats.log.segments));
  e.Counter("kvstore_fsyncs_total", "log fsyncs", d(stats.fsyncs));
  e.Family("kvstore_fsync_duration_seconds", "duration of each log fsync", Type::kHistogram);
  e.HistogramSamples("kvstore_fsync_duration_seconds", {}, stats.fsync_seconds);
  e.Counter("kvstore_group_commits_total", "group commits (one LMDB transaction each)",
            d(stats.commits));
  e.Counter("kvstore_committed_writes_total", "write commands committed",
            d(stats.committed_writes));
  e.Family("kvstore_group_commit_writes", "write commands per group commit (batch size)",
           Type::kHistogram);
  e.HistogramSamples("kvstore_group_commit_writes", {}, stats.batch_writes);
  e.Gauge("kvstore_writes_disabled", "1 after a failed fsync until restart",
          stats.poisoned ? 1 : 0);

  // Replication.
  const bool master = repl.role == ReplicationStatus::Role::kMaster;
  e.Family("kvstore_role", "1 for the role this pod has now, 0 for the other", Type::kGauge);
  e.Sample("kvstore_role", {{"role", "master"}}, master ? 1 : 0);
  e.Sample("kvstore_role", {{"role", "replica"}}, master ? 0 : 1);
  e.Gauge("kvstore_epoch", "the newest epoch (bumped by every master start and promotion)",
          d(repl.epoch));
  e.Gauge("kvstore_replication_seq", "committed sequence here (Redis' master_repl_offset)",
          d(repl.seq));
  e.Counter("kvstore_replication_full_resyncs_total", "full resyncs this replica went through",
            d(repl.full_resyncs));
  e.Counter("kvstore_replication_partial_resyncs_total",
            "partial resyncs (resumed from the log) this replica went through",
            d(repl.partial_resyncs));
  // Master side: one series per attached replica.
  e.Gauge("kvstore_connected_replicas", "replicas attached to this master",
          d(repl.replicas.size()));
  auto replica_labels = [](const ReplicaStatus& r) {
    return metrics::Labels{{"replica", r.ip + ":" + std::to_string(r.port)},
                           {"ordinal", r.ordinal >= 0 ? std::to_string(r.ordinal) : ""}};
  };
  e.Family("kvstore_replica_acked_seq", "the newest sequence each replica acknowledged",
           Type::kGauge);
  for (const ReplicaStatus& r : repl.replicas) {
    e.Sample("kvstore_replica_acked_seq", replica_labels(r), d(r.ack_seq));
  }
  e.Family("kvstore_replica_lag_entries", "log entries each replica is behind this master",
           Type::kGauge);
  for (const ReplicaStatus& r : repl.replicas) {
    e.Sample("kvstore_replica_lag_entries", replica_labels(r),
             d(repl.seq > r.ack_seq ? repl.seq - r.ack_seq : 0));
  }
  e.Family("kvstore_replica_lag_seconds",
           "seconds since each replica's last acknowledgement (replicas ack at least every second)",
           Type::kGauge);
  for (const ReplicaStatus& r : repl.replicas) {
    e.Sample("kvstore_replica_lag_seconds", replica_labels(r), r.ack_age_seconds);
  }
  e.Family("kvstore_replica_link_state",
           "1 for each replica's feed state: wait_bgsave (full resync), send_bulk, online",
           Type::kGauge);
  for (const ReplicaStatus& r : repl.replicas) {
    metrics::Labels labels = replica_labels(r);
    labels.emplace_back("state", r.state);
    e.Sample("kvstore_replica_link_state", labels, 1);
  }
  // Replica side: its link to the master.
  if (!master) {
    e.Gauge("kvstore_master_link_up", "1 while this replica's link to its master is up",
            repl.link_up ? 1 : 0);
    e.Gauge("kvstore_master_seq", "the newest master sequence this replica has heard of",
            d(repl.master_seq));
    e.Gauge("kvstore_replication_lag_entries", "log entries this replica is behind its master",
            d(repl.master_seq > repl.seq ? repl.master_seq - repl.seq : 0));
    e.Gauge("kvstore_master_last_io_seconds", "seconds since this replica last heard its master",
            repl.last_io_seconds_ago);
    e.Family("kvstore_master_link_state",
             "1 for the link's state: connect, connecting, sync, connected", Type::kGauge);
    e.Sample("kvstore_master_link_state", {{"state", repl.link_state}}, 1);
  }
  e.Counter("kvstore_role_label_failures_total",
            "failed attempts to set the pod's role label through the Kubernetes API",
            d(labeler_.failures()));

  // Process, under the names every Prometheus client library uses.
  const metrics::ProcessStats process = metrics::ReadProcessStats();
  e.Counter("process_cpu_seconds_total", "user and system CPU time spent", process.cpu_seconds);
  e.Gauge("process_resident_memory_bytes", "resident memory", d(process.resident_bytes));
  e.Gauge("process_virtual_memory_bytes", "virtual memory (includes LMDB's whole map)",
          d(process.virtual_bytes));
  e.Gauge("process_open_fds", "open file descriptors", d(process.open_fds));
  e.Gauge("process_max_fds", "the open file descriptor limit", d(process.max_fds));
  e.Gauge("process_start_time_seconds", "start time of the process since the Unix epoch",
          process.start_time_seconds);
  return e.text();
}

}  // namespace kvstore
