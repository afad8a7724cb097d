// EngineAdminProvider (see admin_provider.h). Runs on the admin server's HTTP threads.
#include "main/admin_provider.h"

#include <cstdint>

namespace kvstore {
namespace {

void Gauge(std::string& out, const std::string& name, const std::string& help,
           std::uint64_t value) {
  out += "# HELP " + name + " " + help + "\n";
  out += "# TYPE " + name + " gauge\n";
  out += name + " " + std::to_string(value) + "\n";
}

void Counter(std::string& out, const std::string& name, const std::string& help,
             std::uint64_t value) {
  out += "# HELP " + name + " " + help + "\n";
  out += "# TYPE " + name + " counter\n";
  out += name + " " + std::to_string(value) + "\n";
}

}  // namespace

HealthReport EngineAdminProvider::Health() {
  const EngineStats stats = engine_.Stats();
  if (stats.poisoned) return {false, "writes disabled: " + stats.poison_reason};
  return {true, ""};
}

HealthReport EngineAdminProvider::Readiness() {
  const ReplicationStatus status = replication_.CurrentStatus();
  HealthReport report{true, "master"};
  if (status.role == ReplicationStatus::Role::kMaster) {
    if (auto refusal = replication_.WriteRefusal()) {
      report = {false, "master not accepting writes: " + *refusal};
    }
  } else {
    const std::uint64_t lag = status.master_seq > status.seq ? status.master_seq - status.seq : 0;
    const std::string where =
        "replica of " + status.master_host + ":" + std::to_string(status.master_port);
    if (!status.link_up) {
      report = {false, where + ": master link down" +
                           (status.last_error.empty() ? "" : " (" + status.last_error + ")")};
    } else if (lag > ready_max_lag_entries_) {
      report = {false, where + ": " + std::to_string(lag) +
                           " entries behind (ready_max_lag_entries " +
                           std::to_string(ready_max_lag_entries_) + ")"};
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
  const EngineStats stats = engine_.Stats();
  std::string out;
  Gauge(out, "kvstore_up", "1 while the server runs", 1);
  Gauge(out, "kvstore_keys", "keys in the key space", stats.storage.keys);
  Gauge(out, "kvstore_log_last_seq", "sequence number of the newest log entry", stats.log.last_seq);
  Gauge(out, "kvstore_applied_seq", "newest log entry applied to the key space",
        stats.storage.applied_seq);
  Gauge(out, "kvstore_writes_disabled", "1 after a failed fsync until restart",
        stats.poisoned ? 1 : 0);
  Counter(out, "kvstore_role_label_failures_total",
          "failed attempts to set the pod's role label through the Kubernetes API",
          labeler_.failures());
  return out;
}

}  // namespace kvstore
