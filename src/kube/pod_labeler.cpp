// PodLabeler (see pod_labeler.h). The request, as the API server expects it:
//   PATCH /api/v1/namespaces/<namespace>/pods/<pod>
//   Authorization: Bearer <token>
//   Content-Type: application/merge-patch+json
//   {"metadata":{"labels":{"role":"<role>"}}}
// over TLS verified against the service account's ca.crt. The token and namespace are read at
// every attempt: kubelet rotates projected tokens, and a fresh read costs nothing next to TLS.
// Threads: SetRole and the accessors on any thread; Run and Patch on worker_ only.
#include "kube/pod_labeler.h"

#include <httplib.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/logging.h"

namespace kvstore {
namespace {

// The whole file, without a trailing newline; false when it cannot be read.
bool ReadSmallFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *out = buffer.str();
  while (!out->empty() && (out->back() == '\n' || out->back() == '\r')) out->pop_back();
  return true;
}

// Role names are fixed words (master, replica); anything else would need JSON escaping.
bool IsPlainWord(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

}  // namespace

PodLabelerOptions PodLabelerOptions::FromEnvironment(std::string pod_name) {
  PodLabelerOptions options;
  if (const char* host = std::getenv("KUBERNETES_SERVICE_HOST")) options.api_host = host;
  if (const char* port = std::getenv("KUBERNETES_SERVICE_PORT")) {
    const int value = std::atoi(port);
    if (value > 0 && value < 65536) options.api_port = value;
  }
  if (const char* dir = std::getenv("KUBE_SERVICEACCOUNT_DIR"); dir != nullptr && *dir != '\0') {
    options.serviceaccount_dir = dir;
  }
  options.pod_name = std::move(pod_name);
  return options;
}

PodLabeler::PodLabeler(PodLabelerOptions options) : options_(std::move(options)) {
  if (!enabled()) {
    logging::Info(
        "not running in Kubernetes (KUBERNETES_SERVICE_HOST is unset): the pod's role label is "
        "not managed");
    return;
  }
  worker_ = std::thread([this] { Run(); });
}

PodLabeler::~PodLabeler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void PodLabeler::SetRole(std::string role) {
  if (!enabled()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    wanted_role_ = std::move(role);
    ++generation_;
  }
  wake_.notify_all();
}

std::uint64_t PodLabeler::failures() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failures_;
}

std::string PodLabeler::last_error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_error_;
}

std::string PodLabeler::applied_role() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return applied_role_;
}

void PodLabeler::Run() {
  std::unique_lock<std::mutex> lock(mutex_);
  std::uint64_t done_generation = 0;
  std::chrono::milliseconds backoff = options_.initial_backoff;
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != done_generation; });
    if (stopping_) return;
    const std::uint64_t generation = generation_;
    const std::string role = wanted_role_;
    lock.unlock();
    const std::string error = Patch(role);
    lock.lock();
    if (error.empty()) {
      applied_role_ = role;
      last_error_.clear();
      done_generation = generation;
      backoff = options_.initial_backoff;
      logging::Info("pod label set", {{"label", "role=" + role}});
      continue;
    }
    ++failures_;
    last_error_ = error;
    logging::Warn("cannot set the pod's role label; retrying",
                  {{"label", "role=" + role},
                   {"error", error},
                   {"retry_in_ms", std::to_string(backoff.count())}});
    // Wait out the backoff, but a newer SetRole or the destructor cuts it short.
    wake_.wait_for(lock, backoff, [&] { return stopping_ || generation_ != generation; });
    if (generation_ != generation) {
      backoff = options_.initial_backoff;
    } else {
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }
}

std::string PodLabeler::Patch(const std::string& role) {
  if (!IsPlainWord(role)) return "invalid role \"" + role + "\"";
  if (options_.pod_name.empty()) return "the pod name is unknown (set POD_NAME)";
  const std::string& dir = options_.serviceaccount_dir;
  std::string token;
  std::string ns;
  if (!ReadSmallFile(dir + "/token", &token) || token.empty()) {
    return "cannot read the service account token " + dir + "/token";
  }
  if (!ReadSmallFile(dir + "/namespace", &ns) || ns.empty()) {
    return "cannot read the namespace from " + dir + "/namespace";
  }
  httplib::SSLClient client(options_.api_host, options_.api_port);
  client.set_ca_cert_path((dir + "/ca.crt").c_str());
  client.enable_server_certificate_verification(true);
  client.set_bearer_token_auth(token.c_str());
  client.set_connection_timeout(options_.request_timeout);
  client.set_read_timeout(options_.request_timeout);
  client.set_write_timeout(options_.request_timeout);
  const std::string path = "/api/v1/namespaces/" + ns + "/pods/" + options_.pod_name;
  const std::string body = R"({"metadata":{"labels":{"role":")" + role + R"("}}})";
  const httplib::Result result = client.Patch(path, body, "application/merge-patch+json");
  const std::string what =
      "PATCH https://" + options_.api_host + ":" + std::to_string(options_.api_port) + path;
  if (!result) {
    std::string reason = httplib::to_string(result.error());
    if (result.error() == httplib::Error::SSLServerVerification) {
      reason += " (is " + dir + "/ca.crt the cluster's CA?)";
    }
    return what + ": " + reason;
  }
  if (result->status / 100 != 2) {
    std::string reason = result->body.substr(0, 300);
    std::replace(reason.begin(), reason.end(), '\n', ' ');
    if (result->status == 403) {
      reason += " (does the pod's service account have the Role with get and patch on pods?)";
    }
    return what + ": HTTP " + std::to_string(result->status) + ": " + reason;
  }
  return "";
}

}  // namespace kvstore
