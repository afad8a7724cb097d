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

// The pod is config.pod_name, or the hostname when that is empty. A pod_name that was set must be
// <statefulset>-<ordinal>; a hostname without an ordinal means standalone. InvalidArgument names
// the setting at fault.
Result<RoleDecision> DecideRole(const Config& config, const std::string& hostname);

// "<statefulset>-<ordinal>" -> ordinal; nullopt when the name does not end in -<digits>.
std::optional<int> OrdinalOf(const std::string& pod_name);

}  // namespace kvstore
