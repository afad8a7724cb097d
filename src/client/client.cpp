// Client: a blocking RESP connection on POSIX sockets. The socket is non-blocking underneath so
// that connecting, sending and waiting for each reply all honour options.timeout through poll():
// the whole connect, then the longest time without progress. Not thread-safe: one Client per
// thread.
#include "kvstore/client.h"

#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <utility>

namespace kvstore {
namespace {

using Clock = std::chrono::steady_clock;

// After a failed send, how long to wait for the reply the server may have sent before closing:
// a server that refuses a command answers before it stops reading, so the reply is normally
// already here.
constexpr std::chrono::milliseconds kPendingReplyWait{1000};
// While our request is still leaving the send buffer, how often to check that it moves.
constexpr std::chrono::milliseconds kSendQueueCheck{100};

// Thread-safe strerror().
std::string ErrnoText(int error) { return std::generic_category().message(error); }

// "host:port", with brackets around an IPv6 literal so the port stays readable.
std::string Endpoint(const ClientOptions& options) {
  const bool ipv6 = options.host.find(':') != std::string::npos;
  return (ipv6 ? "[" + options.host + "]" : options.host) + ":" + std::to_string(options.port);
}

// Waits until fd is ready for `events` (or has an error, which the next call on it reports).
// Returns 0, ETIMEDOUT when the deadline passes first, or poll's errno.
int WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    // Round up: poll(0) would spin through the last millisecond.
    pollfd pfd{fd, events, 0};
    const int rc = poll(&pfd, 1, left < 0 ? 0 : static_cast<int>(left) + 1);
    if (rc > 0) return 0;
    if (rc == 0) {
      if (Clock::now() >= deadline) return ETIMEDOUT;
      continue;
    }
    if (errno != EINTR) return errno;
  }
}

// Connects to one resolved address before the deadline. Returns the socket, or -1 with *error
// set to the errno that explains why not.
int ConnectTo(const addrinfo& address, Clock::time_point deadline, int* error) {
  const int fd = socket(address.ai_family, address.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        address.ai_protocol);
  if (fd < 0) {
    *error = errno;
    return -1;
  }
  if (connect(fd, address.ai_addr, address.ai_addrlen) != 0) {
    int err = errno;
    if (err == EINPROGRESS) {
      err = WaitFor(fd, POLLOUT, deadline);
      socklen_t len = sizeof(err);
      if (err == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    if (err != 0) {
      *error = err;
      close(fd);
      return -1;
    }
  }
  // Each request is small and waits for its reply: Nagle's algorithm would only add latency.
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// Bytes sent but not yet acknowledged by the peer (0 when unknown).
int UnsentBytes(int fd) {
  int unsent = 0;
  if (ioctl(fd, SIOCOUTQ, &unsent) != 0) return 0;
  return unsent;
}

}  // namespace

Result<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  const std::string failure = "cannot connect to " + Endpoint(options) + ": ";
  if (options.port < 1 || options.port > 65535) {
    return Status::InvalidArgument(failure + "the port must be between 1 and 65535");
  }

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  const int rc =
      getaddrinfo(options.host.c_str(), std::to_string(options.port).c_str(), &hints, &addresses);
  if (rc != 0) {
    return Status::Unavailable(failure + (rc == EAI_SYSTEM ? ErrnoText(errno) : gai_strerror(rc)));
  }

  // One deadline for all addresses (e.g. "localhost" gives ::1 then 127.0.0.1).
  const Clock::time_point deadline = Clock::now() + options.timeout;
  int fd = -1;
  int error = ECONNREFUSED;
  for (const addrinfo* a = addresses; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ConnectTo(*a, deadline, &error);
  }
  freeaddrinfo(addresses);
  if (fd < 0) return Status::Unavailable(failure + ErrnoText(error));

  std::unique_ptr<Client> client(new Client(fd, options));
  if (!options.password.empty()) {
    Result<resp::Value> reply = client->Call({"AUTH", options.password});
    if (!reply.ok()) return reply.status();
    if (reply->is_error()) return Status::InvalidArgument(reply->str);
  }
  return Result<std::unique_ptr<Client>>(std::move(client));
}

Client::Client(int fd, ClientOptions options) : fd_(fd), options_(std::move(options)) {}

Client::~Client() {
  if (fd_ >= 0) close(fd_);
}

Result<resp::Value> Client::Call(const std::vector<std::string>& args) {
  return ReplyAfter(Send(args));
}

Result<resp::Value> Client::Call(const std::vector<std::string>& args,
                                 const std::vector<std::string>& value_pieces) {
  std::size_t value_size = 0;
  for (const std::string& piece : value_pieces) value_size += piece.size();
  // The request up to the value's bytes: "*<n>\r\n" (args) "$<value size>\r\n".
  std::string head;
  resp::AppendArrayHeader(&head, args.size() + 1);
  for (const std::string& arg : args) resp::AppendBulkString(&head, arg);
  // Appended piece by piece: GCC 12 at -O3 (the Release build) reports a false -Wrestrict on
  // the concatenation "$" + std::to_string(...).
  head += '$';
  head += std::to_string(value_size);
  head += "\r\n";
  Status sent = SendRaw(head);
  for (std::size_t i = 0; sent.ok() && i < value_pieces.size(); ++i) {
    sent = SendRaw(value_pieces[i]);
  }
  if (sent.ok()) sent = SendRaw("\r\n");
  return ReplyAfter(std::move(sent));
}

// A failed send usually means that the server refused the command and closed: its error reply,
// already sent, says why ("Broken pipe" does not).
Result<resp::Value> Client::ReplyAfter(Status sent) {
  Result<resp::Value> reply = ReadReply();
  if (sent.ok() || (reply.ok() && reply->is_error())) return reply;
  return sent;
}

// Any failure leaves the stream at an unknown position: close, so later calls fail cleanly.
Status Client::Broken(Status status) {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  return status;
}

Status Client::Send(const std::vector<std::string>& args) {
  return SendRaw(resp::EncodeCommand(args));
}

Status Client::SendRaw(std::string_view bytes) {
  if (fd_ < 0 || send_failed_) {
    return Status::IOError("connection to " + Endpoint(options_) + " was closed after an error");
  }
  Status sent = SendAll(bytes);
  // The socket stays open for ReadReply(): see ReplyAfter().
  if (!sent.ok()) send_failed_ = true;
  return sent;
}

Result<resp::Value> Client::ReadReply() {
  if (fd_ < 0) {
    return Status::IOError("connection to " + Endpoint(options_) + " was closed after an error");
  }
  if (!send_failed_) return Receive(options_.timeout);
  Result<resp::Value> reply = Receive(std::min(options_.timeout, kPendingReplyWait));
  if (reply.ok()) (void)Broken(Status::Ok());  // the rest of the stream is unknown
  return reply;
}

Result<resp::Value> Client::Receive(std::chrono::milliseconds idle_timeout) {
  Clock::time_point deadline = Clock::now() + idle_timeout;
  // A large request may still be leaving our send buffer toward a slow peer: that is progress
  // too, though no reply can come before it has all arrived.
  int unsent = UnsentBytes(fd_);
  resp::Value value;
  char buffer[64 * 1024];
  for (;;) {
    switch (parser_.Next(&value)) {
      case resp::ReplyParser::ParseStatus::kValue:
        return value;
      case resp::ReplyParser::ParseStatus::kError:
        return Broken(Status::Corruption("malformed reply from " + Endpoint(options_) + ": " +
                                         parser_.error()));
      case resp::ReplyParser::ParseStatus::kNeedMore:
        break;
    }
    const int err = WaitFor(
        fd_, POLLIN, unsent > 0 ? std::min(deadline, Clock::now() + kSendQueueCheck) : deadline);
    if (err == ETIMEDOUT) {
      const int still_unsent = UnsentBytes(fd_);
      if (still_unsent < unsent) deadline = Clock::now() + idle_timeout;
      unsent = still_unsent;
      if (Clock::now() < deadline) continue;
      return Broken(Status::Unavailable("no reply from " + Endpoint(options_) +
                                        ": nothing received for " +
                                        std::to_string(idle_timeout.count()) + " ms"));
    }
    if (err != 0) return Broken(Status::IOError("poll failed: " + ErrnoText(err)));
    const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
    if (n > 0) {
      deadline = Clock::now() + idle_timeout;
      parser_.Feed(std::string_view(buffer, static_cast<std::size_t>(n)));
    } else if (n == 0) {
      return Broken(
          Status::IOError("connection to " + Endpoint(options_) + " closed by the server"));
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      return Broken(
          Status::IOError("connection to " + Endpoint(options_) + " lost: " + ErrnoText(errno)));
    }
  }
}

Status Client::SendAll(std::string_view bytes) {
  Clock::time_point deadline = Clock::now() + options_.timeout;
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    // MSG_NOSIGNAL: a closed peer is reported as EPIPE here instead of killing the process.
    const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<std::size_t>(n);
      deadline = Clock::now() + options_.timeout;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Status::IOError("connection to " + Endpoint(options_) + " lost: " + ErrnoText(errno));
    }
    const int err = WaitFor(fd_, POLLOUT, deadline);
    if (err == ETIMEDOUT) {
      return Status::Unavailable("cannot send to " + Endpoint(options_) + ": no progress for " +
                                 std::to_string(options_.timeout.count()) + " ms");
    }
    if (err != 0) return Status::IOError("poll failed: " + ErrnoText(err));
  }
  return Status::Ok();
}

}  // namespace kvstore
