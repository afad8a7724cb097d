// Tests of PodLabeler against a real HTTPS server on loopback (httplib::SSLServer) with a
// self-signed certificate made by `openssl req -x509` for 127.0.0.1: the request's method,
// path, content type, bearer token and body; retries after a failure; a CA that does not match;
// the newest role winning; and doing nothing outside a cluster.
#include "kube/pod_labeler.h"

#include <httplib.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "temp_dir.h"

namespace kvstore {
namespace {

struct SeenRequest {
  std::string method;
  std::string path;
  std::string content_type;
  std::string authorization;
  std::string body;
};

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
  REQUIRE(out.good());
}

// A self-signed certificate for IP 127.0.0.1 in <dir>/<name>.crt and <dir>/<name>.key.
void MakeCertificate(const std::string& dir, const std::string& name) {
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
      "/CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout " +
      dir + "/" + name + ".key -out " + dir + "/" + name + ".crt 2>/dev/null";
  REQUIRE(std::system(command.c_str()) == 0);
}

// A fake API server: answers each PATCH with the next status of `statuses` (the last one
// repeats) and records what it saw.
class FakeApiServer {
 public:
  FakeApiServer(const std::string& dir, std::vector<int> statuses)
      : server_((dir + "/server.crt").c_str(), (dir + "/server.key").c_str()),
        statuses_(std::move(statuses)) {
    REQUIRE(server_.is_valid());
    server_.Patch(".*", [this](const httplib::Request& request, httplib::Response& response) {
      std::lock_guard<std::mutex> lock(mutex_);
      seen_.push_back(SeenRequest{request.method, request.path,
                                  request.get_header_value("Content-Type"),
                                  request.get_header_value("Authorization"), request.body});
      const std::size_t index = std::min(seen_.size() - 1, statuses_.size() - 1);
      response.status = statuses_[index];
      response.set_content(response.status == 200 ? "{}" : "{\"message\":\"injected\"}",
                           "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeApiServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  std::vector<SeenRequest> seen() {
    std::lock_guard<std::mutex> lock(mutex_);
    return seen_;
  }

 private:
  httplib::SSLServer server_;
  std::vector<int> statuses_;
  std::mutex mutex_;
  std::vector<SeenRequest> seen_;
  int port_ = 0;
  std::thread thread_;
};

// A service account directory (token, namespace, ca.crt) plus the server's certificate.
struct Fixture {
  testing::TempDir dir{"kvstore_kube_test"};
  Fixture() {
    REQUIRE(!dir.path().empty());
    MakeCertificate(dir.path(), "server");
    WriteFile(dir.path() + "/token", "secret-token\n");
    WriteFile(dir.path() + "/namespace", "kvstore");
    std::ifstream ca(dir.path() + "/server.crt");
    WriteFile(dir.path() + "/ca.crt",
              std::string(std::istreambuf_iterator<char>(ca), std::istreambuf_iterator<char>()));
  }
  PodLabelerOptions Options(int port) const {
    PodLabelerOptions options;
    options.api_host = "127.0.0.1";
    options.api_port = port;
    options.serviceaccount_dir = dir.path();
    options.pod_name = "kvstore-1";
    options.initial_backoff = std::chrono::milliseconds(20);
    options.max_backoff = std::chrono::milliseconds(80);
    options.request_timeout = std::chrono::seconds(5);
    return options;
  }
};

bool WaitFor(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

}  // namespace

TEST_CASE("pod labeler: PATCHes its own pod with a merge patch and the bearer token", "[kube]") {
  Fixture fixture;
  FakeApiServer api(fixture.dir.path(), {200});
  PodLabeler labeler(fixture.Options(api.port()));
  REQUIRE(labeler.enabled());
  labeler.SetRole("master");
  REQUIRE(WaitFor([&] { return labeler.applied_role() == "master"; }));
  const std::vector<SeenRequest> seen = api.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].method == "PATCH");
  CHECK(seen[0].path == "/api/v1/namespaces/kvstore/pods/kvstore-1");
  CHECK(seen[0].content_type == "application/merge-patch+json");
  CHECK(seen[0].authorization == "Bearer secret-token");
  CHECK(seen[0].body == R"({"metadata":{"labels":{"role":"master"}}})");
  CHECK(labeler.failures() == 0);
  CHECK(labeler.last_error().empty());
}

TEST_CASE("pod labeler: retries after a failure, counts it, and clears the error", "[kube]") {
  Fixture fixture;
  FakeApiServer api(fixture.dir.path(), {500, 403, 200});
  PodLabeler labeler(fixture.Options(api.port()));
  labeler.SetRole("replica");
  REQUIRE(WaitFor([&] { return labeler.applied_role() == "replica"; }));
  CHECK(api.seen().size() == 3);
  CHECK(labeler.failures() == 2);
  CHECK(labeler.last_error().empty());
}

TEST_CASE("pod labeler: a failure's message names the request and the status", "[kube]") {
  Fixture fixture;
  FakeApiServer api(fixture.dir.path(), {403});
  PodLabeler labeler(fixture.Options(api.port()));
  labeler.SetRole("master");
  REQUIRE(WaitFor([&] { return labeler.failures() >= 2; }));
  const std::string error = labeler.last_error();
  CHECK(error.find("PATCH https://127.0.0.1:" + std::to_string(api.port()) +
                   "/api/v1/namespaces/kvstore/pods/kvstore-1: HTTP 403") == 0);
  CHECK(error.find("get and patch on pods") != std::string::npos);
  CHECK(labeler.applied_role().empty());
}

TEST_CASE("pod labeler: a server whose certificate the CA does not sign is refused", "[kube]") {
  Fixture fixture;
  MakeCertificate(fixture.dir.path(), "other");
  std::ifstream other(fixture.dir.path() + "/other.crt");
  WriteFile(fixture.dir.path() + "/ca.crt",
            std::string(std::istreambuf_iterator<char>(other), std::istreambuf_iterator<char>()));
  FakeApiServer api(fixture.dir.path(), {200});
  PodLabeler labeler(fixture.Options(api.port()));
  labeler.SetRole("master");
  REQUIRE(WaitFor([&] { return labeler.failures() >= 1; }));
  CHECK(labeler.last_error().find("ca.crt") != std::string::npos);
  CHECK(labeler.applied_role().empty());
  CHECK(api.seen().empty());
}

TEST_CASE("pod labeler: the newest role wins", "[kube]") {
  Fixture fixture;
  FakeApiServer api(fixture.dir.path(), {200});
  PodLabeler labeler(fixture.Options(api.port()));
  labeler.SetRole("master");
  labeler.SetRole("replica");
  REQUIRE(WaitFor([&] { return labeler.applied_role() == "replica"; }));
  const std::vector<SeenRequest> seen = api.seen();
  REQUIRE_FALSE(seen.empty());
  CHECK(seen.back().body == R"({"metadata":{"labels":{"role":"replica"}}})");
}

TEST_CASE("pod labeler: a missing token is a counted failure, not a crash", "[kube]") {
  Fixture fixture;
  std::remove((fixture.dir.path() + "/token").c_str());
  FakeApiServer api(fixture.dir.path(), {200});
  PodLabeler labeler(fixture.Options(api.port()));
  labeler.SetRole("master");
  REQUIRE(WaitFor([&] { return labeler.failures() >= 1; }));
  CHECK(labeler.last_error() ==
        "cannot read the service account token " + fixture.dir.path() + "/token");
  CHECK(api.seen().empty());
}

TEST_CASE("pod labeler: outside a cluster it does nothing", "[kube]") {
  PodLabelerOptions options;  // no api_host
  options.pod_name = "kvstore-0";
  PodLabeler labeler(options);
  CHECK_FALSE(labeler.enabled());
  labeler.SetRole("master");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(labeler.applied_role().empty());
  CHECK(labeler.failures() == 0);
}

TEST_CASE("pod labeler: options come from the environment", "[kube]") {
  ::setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  ::setenv("KUBERNETES_SERVICE_PORT", "6443", 1);
  ::setenv("KUBE_SERVICEACCOUNT_DIR", "/tmp/sa", 1);
  const PodLabelerOptions options = PodLabelerOptions::FromEnvironment("kvstore-2");
  ::unsetenv("KUBERNETES_SERVICE_HOST");
  ::unsetenv("KUBERNETES_SERVICE_PORT");
  ::unsetenv("KUBE_SERVICEACCOUNT_DIR");
  CHECK(options.api_host == "10.96.0.1");
  CHECK(options.api_port == 6443);
  CHECK(options.serviceaccount_dir == "/tmp/sa");
  CHECK(options.pod_name == "kvstore-2");
  const PodLabelerOptions defaults = PodLabelerOptions::FromEnvironment("kvstore-0");
  CHECK(defaults.api_host.empty());
  CHECK(defaults.api_port == 443);
  CHECK(defaults.serviceaccount_dir == "/var/run/secrets/kubernetes.io/serviceaccount");
}

}  // namespace kvstore
