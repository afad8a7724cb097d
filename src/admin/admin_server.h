// AdminServer: the HTTP port (default 8080) that Kubernetes probes and Prometheus scrape:
// /healthz (liveness), /readyz (readiness), /metrics. It knows nothing of the engine or the
// server: everything it reports comes from an AdminProvider. Threads: cpp-httplib's accept loop
// runs on a thread of its own and requests on a small pool; Start() and Stop() are called from
// one thread (main); the provider is called from the pool and must be thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "kvstore/status.h"

namespace httplib {
class Server;
}

namespace kvstore {

struct HealthReport {
  bool ok = false;
  std::string detail;  // why not, when !ok; optional context when ok
};

// What the admin port reports. Implementations are called concurrently from the HTTP pool and
// must answer quickly (a probe has a timeout of a few seconds): no disk or network I/O.
class AdminProvider {
 public:
  virtual ~AdminProvider() = default;
  virtual HealthReport Health() = 0;  // liveness: restart the pod when !ok
  virtual HealthReport Ready() = 0;   // readiness: send it traffic only when ok
  virtual std::string Metrics() = 0;  // Prometheus text exposition format 0.0.4
};

// One HTTP answer, computed without I/O so that the routing is unit-tested without sockets.
struct AdminResponse {
  int status = 404;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Routes a GET (or HEAD) of path to the provider:
//   /healthz, /readyz: 200 "ok[: detail]\n", or 503 "<detail>\n";
//   /metrics: 200 with the provider's text as Prometheus' text format;
//   anything else: 404.
AdminResponse HandleAdminRequest(std::string_view path, AdminProvider& provider);

struct AdminOptions {
  std::string bind = "0.0.0.0";
  int port = 8080;  // 0 picks a free port (tests)
};

class AdminServer {
 public:
  // provider must outlive the server.
  AdminServer(AdminOptions options, AdminProvider& provider);
  ~AdminServer();  // Stop()
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds, then serves on a thread of its own. IOError("cannot listen on admin port
  // <bind>:<port>: ...") when the address cannot be bound. Call at most once.
  Status Start();
  // Closes the listening socket, waits for requests in flight and joins the thread. Idempotent.
  void Stop();
  // The bound port, after Start().
  int port() const { return bound_port_; }

 private:
  const AdminOptions options_;
  AdminProvider& provider_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  int bound_port_ = 0;
};

}  // namespace kvstore
