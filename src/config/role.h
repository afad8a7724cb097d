// Role selection: from the pod identity and MASTER_ORDINAL, decide whether this process is a
// standalone master, the master of a StatefulSet, or a replica (and of which address).
// Pure function of its inputs, thread-safe.
#pragma once

#include <optional>
#include <string>

#include "config/config.h"
#include "kvstore/status.h"

namespace kvstore {

struct RoleDecision {
  enum class Kind { kStandalone, kMaster, kReplica };
  Kind kind = Kind::kStandalone;
  std::string pod_name;        // as resolved (POD_NAME, else the hostname)
  std::optional<int> ordinal;  // parsed from pod_name
  std::string master_address;  // host:port, for kReplica
  std::string reason;          // one sentence, for logs and `kvstore role`
};

// pod_name_was_set: POD_NAME came from the environment/flags (a bad value is then an error)
// rather than from the hostname fallback. InvalidArgument names the setting at fault.
Result<RoleDecision> DecideRole(const Config& config, bool pod_name_was_set,
                                const std::string& hostname);

// "<statefulset>-<ordinal>" -> ordinal; nullopt when the name does not end in -<digits>.
std::optional<int> OrdinalOf(const std::string& pod_name);

}  // namespace kvstore
