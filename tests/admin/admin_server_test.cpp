// Tests of the admin port: the routing (/healthz, /readyz, /metrics, 404) without sockets, then
// the real AdminServer on a loopback port driven by an HTTP client, including start/stop races
// and a port that is taken. The provider is a fake whose answers the tests change.
#include "admin/admin_server.h"

#include <httplib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <string>

namespace kvstore {
namespace {

class FakeProvider final : public AdminProvider {
 public:
  HealthReport Health() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return health_;
  }
  HealthReport Ready() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return ready_;
  }
  std::string Metrics() override { return "kvstore_up 1\n"; }

  void Set(HealthReport health, HealthReport ready) {
    std::lock_guard<std::mutex> lock(mutex_);
    health_ = std::move(health);
    ready_ = std::move(ready);
  }

 private:
  std::mutex mutex_;
  HealthReport health_{true, ""};
  HealthReport ready_{true, "master"};
};

// "<status> <body>" of a GET, or "error <httplib error>".
std::string Get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(std::chrono::seconds(5));
  client.set_read_timeout(std::chrono::seconds(5));
  const httplib::Result result = client.Get(path.c_str());
  if (!result) return "error " + httplib::to_string(result.error());
  return std::to_string(result->status) + " " + result->body;
}

}  // namespace

TEST_CASE("admin routing: probes map the provider's reports to 200 or 503", "[admin]") {
  FakeProvider provider;
  CHECK(HandleAdminRequest("/healthz", provider).status == 200);
  CHECK(HandleAdminRequest("/healthz", provider).body == "ok\n");
  CHECK(HandleAdminRequest("/readyz", provider).body == "ok: master\n");

  provider.Set({false, "writes disabled: fsync failed"}, {false, "no link to the master"});
  const AdminResponse health = HandleAdminRequest("/healthz", provider);
  CHECK(health.status == 503);
  CHECK(health.body == "writes disabled: fsync failed\n");
  const AdminResponse ready = HandleAdminRequest("/readyz", provider);
  CHECK(ready.status == 503);
  CHECK(ready.body == "no link to the master\n");
  CHECK(ready.content_type == "text/plain; charset=utf-8");

  provider.Set({false, ""}, {true, ""});
  CHECK(HandleAdminRequest("/healthz", provider).body == "not ok\n");
}

TEST_CASE("admin routing: /metrics is Prometheus text, other paths are 404", "[admin]") {
  FakeProvider provider;
  const AdminResponse metrics = HandleAdminRequest("/metrics", provider);
  CHECK(metrics.status == 200);
  CHECK(metrics.content_type == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(metrics.body == "kvstore_up 1\n");
  CHECK(HandleAdminRequest("/", provider).status == 404);
  CHECK(HandleAdminRequest("/healthz/x", provider).status == 404);
  CHECK(HandleAdminRequest("/HEALTHZ", provider).status == 404);
}

TEST_CASE("admin server: answers over HTTP on loopback and follows the provider", "[admin]") {
  FakeProvider provider;
  AdminServer server(AdminOptions{"127.0.0.1", 0}, provider);
  REQUIRE(server.Start().ok());
  REQUIRE(server.port() > 0);
  CHECK(Get(server.port(), "/healthz") == "200 ok\n");
  CHECK(Get(server.port(), "/readyz") == "200 ok: master\n");
  CHECK(Get(server.port(), "/metrics") == "200 kvstore_up 1\n");
  CHECK(Get(server.port(), "/nope").rfind("404 ", 0) == 0);
  provider.Set({true, ""}, {false, "replica lag 20000 entries > ready_max_lag_entries 10000"});
  CHECK(Get(server.port(), "/readyz") ==
        "503 replica lag 20000 entries > ready_max_lag_entries 10000\n");
  const int port = server.port();
  server.Stop();
  CHECK(Get(port, "/healthz").rfind("error ", 0) == 0);
  server.Stop();  // idempotent
}

TEST_CASE("admin server: Stop right after Start returns", "[admin]") {
  FakeProvider provider;
  for (int i = 0; i < 20; ++i) {
    AdminServer server(AdminOptions{"127.0.0.1", 0}, provider);
    REQUIRE(server.Start().ok());
    server.Stop();
  }
}

TEST_CASE("admin server: a taken port fails with a message naming it", "[admin]") {
  FakeProvider provider;
  AdminServer first(AdminOptions{"127.0.0.1", 0}, provider);
  REQUIRE(first.Start().ok());
  AdminServer second(AdminOptions{"127.0.0.1", first.port()}, provider);
  const Status status = second.Start();
  REQUIRE_FALSE(status.ok());
  CHECK(status.code() == Status::Code::kIOError);
  CHECK(status.message().find("cannot listen on admin port 127.0.0.1:" +
                              std::to_string(first.port())) == 0);
  CHECK(Get(first.port(), "/healthz") == "200 ok\n");
}

}  // namespace kvstore
