// Role selection (see role.h).
#include "config/role.h"

#include <charconv>

namespace kvstore {

std::optional<int> OrdinalOf(const std::string& pod_name) {
  const auto dash = pod_name.rfind('-');
  if (dash == std::string::npos || dash + 1 >= pod_name.size() || dash == 0) return std::nullopt;
  int ordinal = 0;
  const char* begin = pod_name.data() + dash + 1;
  const char* end = pod_name.data() + pod_name.size();
  auto [ptr, ec] = std::from_chars(begin, end, ordinal);
  if (ec != std::errc() || ptr != end || ordinal < 0) return std::nullopt;
  return ordinal;
}

Result<RoleDecision> DecideRole(const Config& config, const std::string& hostname) {
  const bool pod_name_was_set = !config.pod_name.empty();
  RoleDecision decision;
  decision.pod_name = pod_name_was_set ? config.pod_name : hostname;
  decision.ordinal = OrdinalOf(decision.pod_name);
  if (!config.replication_enabled) {
    decision.reason = "replication_enabled is false";
    return decision;
  }
  if (!decision.ordinal) {
    if (pod_name_was_set) {
      return Status::InvalidArgument("invalid pod_name \"" + config.pod_name +
                                     "\": expected <statefulset>-<ordinal>, for example kvstore-0");
    }
    decision.reason = "no POD_NAME is set and the hostname \"" + hostname + "\" carries no ordinal";
    return decision;
  }
  int master_ordinal = 0;
  const std::string& text = config.master_ordinal;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), master_ordinal);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || master_ordinal < 0) {
    return Status::InvalidArgument("invalid master_ordinal \"" + text +
                                   "\": expected a non-negative integer");
  }
  if (*decision.ordinal == master_ordinal) {
    decision.kind = RoleDecision::Kind::kMaster;
    decision.reason = "ordinal " + std::to_string(*decision.ordinal) + " equals MASTER_ORDINAL";
    return decision;
  }
  decision.kind = RoleDecision::Kind::kReplica;
  if (!config.master_address.empty()) {
    decision.master_address = config.master_address;
    if (const auto at = decision.master_address.find("{ordinal}"); at != std::string::npos) {
      decision.master_address.replace(at, 9, text);
      // Checked as a setting with "{ordinal}" as 0; MASTER_ORDINAL may make the port too large
      // (127.0.0.1:6{ordinal}000 with 12). Only a replica uses the address.
      if (auto problem = HostPortProblem(decision.master_address)) {
        return Status::InvalidArgument("invalid master_address \"" + config.master_address +
                                       "\": with MASTER_ORDINAL " + text + " it is " +
                                       decision.master_address + ": " + *problem);
      }
    }
    decision.reason = "ordinal " + std::to_string(*decision.ordinal) +
                      " differs from MASTER_ORDINAL " + text + "; MASTER_ADDRESS overrides";
  } else {
    const std::string statefulset = decision.pod_name.substr(0, decision.pod_name.rfind('-'));
    decision.master_address = statefulset + "-" + text + "." + config.headless_service + ":" +
                              std::to_string(config.port);
    decision.reason =
        "ordinal " + std::to_string(*decision.ordinal) + " differs from MASTER_ORDINAL " + text;
  }
  return decision;
}

}  // namespace kvstore
