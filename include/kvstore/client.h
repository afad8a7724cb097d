// A blocking RESP client over TCP, used by kvctl and by tests. One connection per object;
// not thread-safe (use one Client per thread). Speaks RESP through kvstore/resp.h, the same codec
// as the server.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/resp.h"
#include "kvstore/status.h"

namespace kvstore {

struct ClientOptions {
  std::string host = "127.0.0.1";
  int port = 5555;
  std::string password;  // sent with AUTH right after connecting when not empty
  // Connecting: the whole attempt. After that: the longest a send or a wait for a reply may go
  // without progress (a byte sent, received, or leaving our send buffer), so a large value
  // moving slowly (e.g. through kubectl port-forward) never times out while a stalled peer does.
  std::chrono::milliseconds timeout{5000};
};

class Client {
 public:
  // Connects (and authenticates when a password is set).
  // Failure: Unavailable("cannot connect to host:port: <reason>") when the server is unreachable,
  // InvalidArgument for an authentication error reply.
  static Result<std::unique_ptr<Client>> Connect(const ClientOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends one command and waits for its reply. An error reply is a successful Result whose
  // value is_error(); a non-ok Status means the connection failed (IOError / Unavailable) or
  // the reply was malformed (Corruption). After a non-ok Status the client is unusable.
  // When the send fails because the server refused the command part-way and closed (e.g. a
  // value over its limit), the result is the server's error reply, which says why.
  Result<resp::Value> Call(const std::vector<std::string>& args);
  // The same with one more argument: the concatenation of value_pieces (e.g. a value read in
  // chunks), sent piece by piece so that the value is never copied into one request.
  Result<resp::Value> Call(const std::vector<std::string>& args,
                           const std::vector<std::string>& value_pieces);

  // Streaming, for commands that answer with more than one reply (SNAPSHOT) or take raw
  // data after their reply (RESTORE-SNAPSHOT). Same failure rules as Call(), except that after
  // a failed send, one ReadReply() still returns a reply the server sent before it closed (it
  // explains the failure; wait at most about a second); then the client is unusable.
  Status Send(const std::vector<std::string>& args);
  Status SendRaw(std::string_view bytes);
  Result<resp::Value> ReadReply();
  // Changes the wait for each later reply or send (e.g. a long one for a snapshot to be taken).
  void set_timeout(std::chrono::milliseconds timeout) { options_.timeout = timeout; }

 private:
  Client(int fd, ClientOptions options);
  Status SendAll(std::string_view bytes);
  Result<resp::Value> Receive(std::chrono::milliseconds idle_timeout);
  Result<resp::Value> ReplyAfter(Status sent);
  Status Broken(Status status);

  int fd_;
  bool send_failed_ = false;  // the socket is kept only to read the server's last reply
  ClientOptions options_;
  resp::ReplyParser parser_;
};

}  // namespace kvstore
