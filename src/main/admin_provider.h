// EngineAdminProvider: what the admin port (/healthz, /readyz, /metrics) reports about this
// process, from the engine's statistics, the server's counters, replication's status and the
// role label's state. It only formats: every number is recorded elsewhere. Thread-safe: all the
// sources are; the provider holds no state of its own.
#pragma once

#include <string>

#include "admin/admin_server.h"
#include "commands/replication_context.h"
#include "commands/server_context.h"
#include "engine/engine.h"
#include "kube/pod_labeler.h"

namespace kvstore {

class EngineAdminProvider final : public AdminProvider {
 public:
  // All must outlive the provider.
  EngineAdminProvider(Engine& engine, const ServerContext& server, const PodLabeler& labeler,
                      const ReplicationContext& replication, std::uint64_t ready_max_lag_entries)
      : engine_(engine),
        server_(server),
        labeler_(labeler),
        replication_(replication),
        ready_max_lag_entries_(ready_max_lag_entries) {}

  // Alive while the engine can still write: a poisoned engine (failed fsync) needs a restart
  // to recover from what is really on disk, which is what a failed liveness probe gives.
  HealthReport Health() override;
  HealthReport Ready() override { return Readiness(); }
  // The metrics listed in docs/OBSERVABILITY.md, in Prometheus' text format.
  std::string Metrics() override;

 private:
  // The one place that decides readiness: a master is ready while it accepts writes; a replica
  // while its master link is up and it is at most ready_max_lag_entries behind.
  HealthReport Readiness();

  Engine& engine_;
  const ServerContext& server_;
  const PodLabeler& labeler_;
  const ReplicationContext& replication_;
  const std::uint64_t ready_max_lag_entries_;
};

}  // namespace kvstore
