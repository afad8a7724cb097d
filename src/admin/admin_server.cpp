// AdminServer (see admin_server.h). cpp-httplib does the HTTP; this file routes and manages the
// listening thread. Threads: Start/Stop on the caller's thread, the accept loop on thread_,
// handlers on httplib's pool.
#include "admin/admin_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace kvstore {
namespace {

// Probes and scrapers are few; two workers are plenty and keep the thread count low.
constexpr std::size_t kWorkerThreads = 2;

AdminResponse Probe(const HealthReport& report) {
  AdminResponse response;
  response.status = report.ok ? 200 : 503;
  if (report.ok) {
    response.body = report.detail.empty() ? "ok\n" : "ok: " + report.detail + "\n";
  } else {
    response.body = (report.detail.empty() ? "not ok" : report.detail) + "\n";
  }
  return response;
}

}  // namespace

AdminResponse HandleAdminRequest(std::string_view path, AdminProvider& provider) {
  if (path == "/healthz") return Probe(provider.Health());
  if (path == "/readyz") return Probe(provider.Ready());
  if (path == "/metrics") {
    AdminResponse response;
    response.status = 200;
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response.body = provider.Metrics();
    return response;
  }
  AdminResponse response;
  response.body = "not found; try /healthz, /readyz or /metrics\n";
  return response;
}

AdminServer::AdminServer(AdminOptions options, AdminProvider& provider)
    : options_(std::move(options)), provider_(provider) {}

AdminServer::~AdminServer() { Stop(); }

Status AdminServer::Start() {
  http_ = std::make_unique<httplib::Server>();
  http_->new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  // httplib's default sets SO_REUSEPORT, with which a second process binds the same port and
  // silently takes half the probes. SO_REUSEADDR alone still allows a quick restart.
  http_->set_socket_options([](int sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // GET handlers also answer HEAD. The pattern is a regex: every path goes to the router, which
  // gives unknown paths a 404 with a hint.
  http_->Get(".*", [this](const httplib::Request& request, httplib::Response& response) {
    AdminResponse answer = HandleAdminRequest(request.path, provider_);
    response.status = answer.status;
    response.set_content(answer.body, answer.content_type.c_str());
  });
  const std::string where = options_.bind + ":" + std::to_string(options_.port);
  errno = 0;
  if (options_.port == 0) {
    bound_port_ = http_->bind_to_any_port(options_.bind);
  } else if (http_->bind_to_port(options_.bind, options_.port)) {
    bound_port_ = options_.port;
  }
  if (bound_port_ <= 0) {
    const std::string reason = errno != 0 ? std::strerror(errno) : "bind failed";
    http_.reset();
    return Status::IOError("cannot listen on admin port " + where + ": " + reason +
                           " (set admin_port to another port, or 0 to disable it)");
  }
  thread_ = std::thread([this] {
    http_->listen_after_bind();
    listen_returned_ = true;
  });
  return Status::Ok();
}

void AdminServer::Stop() {
  if (!thread_.joinable()) return;
  // httplib's stop() does nothing until the accept loop has marked itself running, so a Stop()
  // right after Start() waits for that first (or for the loop to have given up).
  while (!listen_returned_ && !http_->is_running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  http_->stop();
  thread_.join();
}

}  // namespace kvstore
