// EngineAdminProvider: what the admin port (/healthz, /readyz, /metrics) reports about this
// process, from the engine's statistics and the role label's state. Thread-safe: the engine's
// Stats() and the labeler's accessors are; the provider holds no state of its own.
#pragma once

#include <string>

#include "admin/admin_server.h"
#include "commands/replication_context.h"
#include "engine/engine.h"
#include "kube/pod_labeler.h"

namespace kvstore {

class EngineAdminProvider final : public AdminProvider {
 public:
  // All must outlive the provider.
  EngineAdminProvider(Engine& engine, const PodLabeler& labeler,
                      const ReplicationContext& replication, std::uint64_t ready_max_lag_entries)
      : engine_(engine),
        labeler_(labeler),
        replication_(replication),
        ready_max_lag_entries_(ready_max_lag_entries) {}

  // Alive while the engine can still write: a poisoned engine (failed fsync) needs a restart
  // to recover from what is really on disk, which is what a failed liveness probe gives.
  HealthReport Health() override;
  HealthReport Ready() override { return Readiness(); }
  std::string Metrics() override;

 private:
  // The one place that decides readiness: a master is ready while it accepts writes; a replica
  // while its master link is up and it is at most ready_max_lag_entries behind.
  HealthReport Readiness();

  Engine& engine_;
  const PodLabeler& labeler_;
  const ReplicationContext& replication_;
  const std::uint64_t ready_max_lag_entries_;
};

}  // namespace kvstore
