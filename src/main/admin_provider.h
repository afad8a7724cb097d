// EngineAdminProvider: what the admin port (/healthz, /readyz, /metrics) reports about this
// process, from the engine's statistics, the server's counters, replication's status and the
// role label's state. It only formats: every number is recorded elsewhere. Thread-safe: all the
// sources are; the provider's own state is one flag (the role is taken).
#pragma once

#include <atomic>
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
  // The pod took its role: until then it is not ready (the admin port opens first, so that a
  // port in use stops the start before a master opens an epoch).
  void MarkRoleTaken() { role_taken_.store(true); }

 private:
  // The one place that decides readiness: a master is ready while it accepts writes; a replica
  // that attached to its master while it is at most ready_max_lag_entries behind (and, its
  // master gone, serving stale reads).
  HealthReport Readiness();

  Engine& engine_;
  const ServerContext& server_;
  const PodLabeler& labeler_;
  const ReplicationContext& replication_;
  const std::uint64_t ready_max_lag_entries_;
  std::atomic<bool> role_taken_{false};
};

}  // namespace kvstore
