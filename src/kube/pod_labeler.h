// PodLabeler: keeps this pod's `role` label (master | replica) in step with the role the process
// has, through the Kubernetes API, so that the kvstore-master Service selects the master.
// Thread-safe: SetRole() and the accessors may be called from any thread and never block on the
// network; the PATCH requests run on the labeler's own worker thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace kvstore {

struct PodLabelerOptions {
  // The API server (KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT). Empty host: not running
  // in a cluster, and the labeler does nothing.
  std::string api_host;
  int api_port = 443;
  // Holds token, ca.crt and namespace, as Kubernetes mounts the service account.
  std::string serviceaccount_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
  std::string pod_name;
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{30000};
  // Per connect, write and read. Bounds how long the destructor waits for a request in flight:
  // it runs after the engine's final sync, so a slow API server delays the exit, never data.
  std::chrono::seconds request_timeout{5};

  // From the process environment: KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and
  // KUBE_SERVICEACCOUNT_DIR (overrides the mount path, for tests).
  static PodLabelerOptions FromEnvironment(std::string pod_name);
};

class PodLabeler {
 public:
  explicit PodLabeler(PodLabelerOptions options);
  // Stops the worker. A request in flight finishes first (bounded by request_timeout).
  ~PodLabeler();
  PodLabeler(const PodLabeler&) = delete;
  PodLabeler& operator=(const PodLabeler&) = delete;

  // Asks for the label role=<role>. Returns at once; the worker patches the pod, retrying with
  // capped exponential backoff until it succeeds or another role is asked for (the newest wins).
  // Failures are logged and counted, never fatal. Outside a cluster: nothing happens.
  void SetRole(std::string role);

  bool enabled() const { return !options_.api_host.empty(); }
  // Failed PATCH attempts since start.
  std::uint64_t failures() const;
  // The last failure's message; empty once a PATCH succeeded after it.
  std::string last_error() const;
  // The role the API server last confirmed; empty until then.
  std::string applied_role() const;

 private:
  void Run();
  // One PATCH. Empty string on success, otherwise what went wrong.
  std::string Patch(const std::string& role);

  const PodLabelerOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::string wanted_role_;       // GUARDED_BY(mutex_)
  std::string applied_role_;      // GUARDED_BY(mutex_)
  std::string last_error_;        // GUARDED_BY(mutex_)
  std::uint64_t failures_ = 0;    // GUARDED_BY(mutex_)
  std::uint64_t generation_ = 0;  // GUARDED_BY(mutex_): bumped by every SetRole
  bool stopping_ = false;         // GUARDED_BY(mutex_)
  std::thread worker_;
};

}  // namespace kvstore
