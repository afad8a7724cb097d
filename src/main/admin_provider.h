// EngineAdminProvider: what the admin port (/healthz, /readyz, /metrics) reports about this
// process, from the engine's statistics and the role label's state. Thread-safe: the engine's
// Stats() and the labeler's accessors are; the provider holds no state of its own.
#pragma once

#include <string>

#include "admin/admin_server.h"
#include "engine/engine.h"
#include "kube/pod_labeler.h"

namespace kvstore {

class EngineAdminProvider final : public AdminProvider {
 public:
  // Both must outlive the provider.
  EngineAdminProvider(Engine& engine, const PodLabeler& labeler)
      : engine_(engine), labeler_(labeler) {}

  // Alive while the engine can still write: a poisoned engine (failed fsync) needs a restart
  // to recover from what is really on disk, which is what a failed liveness probe gives.
  HealthReport Health() override;
  HealthReport Ready() override { return Readiness(); }
  std::string Metrics() override;

 private:
  // The one place that decides readiness. Today: a master is ready once it serves. Replication
  // adds here: a replica is ready while its master link is up and it is at most
  // ready_max_lag_entries behind; a master that does not accept writes is not ready.
  HealthReport Readiness();

  Engine& engine_;
  const PodLabeler& labeler_;
};

}  // namespace kvstore
