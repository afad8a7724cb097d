// Dispatcher tests: commands run against a real Engine in a temporary directory, without
// sockets. Replies are compared as raw RESP so failures show exactly what a client would see.
#include "commands/dispatcher.h"

#include <catch2/catch.hpp>
#include <future>

#include "commands/scan_cursors.h"
#include "temp_dir.h"

namespace kvstore {
namespace {

class NoClients : public ServerContext {
 public:
  std::vector<ClientInfo> ListClients() const override { return {}; }
  ServerCounters Counters() const override { return {}; }
};

class Fixture {
 public:
  explicit Fixture(std::string password = "") {
    REQUIRE(!dir_.path().empty());
    EngineOptions options;
    options.data_dir = dir_.path();
    auto engine = Engine::Open(options);
    REQUIRE(engine.ok());
    engine_ = std::move(*engine);
    DispatcherOptions dispatcher_options;
    dispatcher_options.requirepass = std::move(password);
    dispatcher_options.max_value_bytes = 1024;
    dispatcher_ = std::make_unique<Dispatcher>(*engine_, server_, nullptr, dispatcher_options);
    client_.info.id = 7;
  }
  ~Fixture() {
    dispatcher_.reset();
    (void)engine_->Shutdown();
    engine_.reset();
  }

  // Runs one command to completion (as `client`, by default the fixture's) and returns its raw
  // RESP reply.
  std::string Run(std::vector<std::string> args, ClientState* client = nullptr) {
    std::string out;
    SnapshotLender reads(*engine_);
    Outcome outcome = dispatcher_->Execute(dispatcher_->Lookup(args[0]), args,
                                           client ? *client : client_, reads, &out);
    reads.Release();
    if (outcome.kind == Outcome::Kind::kWrite) {
      std::promise<std::vector<Status>> done;
      engine_->Submit({outcome.write},
                      [&done](std::vector<Status> s, std::uint64_t) { done.set_value(s); });
      const auto results = done.get_future().get();
      REQUIRE(results.size() == 1);
      AppendWriteResult(results[0], *outcome.reply, &out);
    }
    return out;
  }

  ClientState& client() { return client_; }

 private:
  testing::TempDir dir_{"kvstore_dispatcher_test"};
  NoClients server_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Dispatcher> dispatcher_;
  ClientState client_;
};

TEST_CASE("dispatcher: strings") {
  Fixture f;
  CHECK(f.Run({"SET", "k", "v"}) == "+OK\r\n");
  CHECK(f.Run({"get", "k"}) == "$1\r\nv\r\n");
  CHECK(f.Run({"GET", "missing"}) == "$-1\r\n");
  CHECK(f.Run({"SET", "k", "w", "NX"}) == "$-1\r\n");
  CHECK(f.Run({"SET", "k", "w", "XX", "GET"}) == "$1\r\nv\r\n");
  CHECK(f.Run({"SET", "new", "x", "XX"}) == "$-1\r\n");
  CHECK(f.Run({"SET", "k", "v", "EX", "10"}).starts_with("-ERR SET ex is not supported"));
  CHECK(f.Run({"SET", "k", "v", "NX", "XX"}) == "-ERR syntax error\r\n");
  CHECK(f.Run({"INCR", "n"}) == ":1\r\n");
  CHECK(f.Run({"INCRBY", "n", "41"}) == ":42\r\n");
  CHECK(f.Run({"DECRBY", "n", "2"}) == ":40\r\n");
  CHECK(f.Run({"INCR", "k"}) == "-ERR value is not an integer or out of range\r\n");
  CHECK(f.Run({"SET", "big", "9223372036854775807"}) == "+OK\r\n");
  CHECK(f.Run({"INCR", "big"}) == "-ERR increment or decrement would overflow\r\n");
  CHECK(f.Run({"APPEND", "k", "123"}) == ":4\r\n");
  CHECK(f.Run({"STRLEN", "k"}) == ":4\r\n");
  CHECK(f.Run({"GETDEL", "k"}) == "$4\r\nw123\r\n");
  CHECK(f.Run({"EXISTS", "k", "n", "n"}) == ":2\r\n");
  CHECK(f.Run({"MSET", "a", "1", "b", "2"}) == "+OK\r\n");
  CHECK(f.Run({"MGET", "a", "x", "b"}) == "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
  CHECK(f.Run({"TYPE", "a"}) == "+string\r\n");
  CHECK(f.Run({"TYPE", "x"}) == "+none\r\n");
  CHECK(f.Run({"DEL", "a", "b", "x"}) == ":2\r\n");
}

TEST_CASE("dispatcher: limits and errors worded like Redis") {
  Fixture f;
  CHECK(f.Run({"GET"}) == "-ERR wrong number of arguments for 'get' command\r\n");
  CHECK(f.Run({"NOPE", "a"}) == "-ERR unknown command 'NOPE', with args beginning with: 'a' \r\n");
  CHECK(f.Run({"SET", std::string(512, 'k'), "v"}).find("511") != std::string::npos);
  CHECK(f.Run({"SET", std::string(511, 'k'), "v"}) == "+OK\r\n");
  CHECK(f.Run({"SET", "", "v"}).starts_with("-ERR empty keys"));
  CHECK(f.Run({"SET", "k", std::string(1025, 'v')}).starts_with("-ERR string exceeds maximum"));
  CHECK(f.Run({"SELECT", "0"}) == "+OK\r\n");
  CHECK(f.Run({"SELECT", "1"}) == "-ERR DB index is out of range\r\n");
  CHECK(f.Run({"HELLO", "3"}).starts_with("-NOPROTO"));
}

TEST_CASE("dispatcher: MULTI queues, EXEC runs the queue in one write with its own reads") {
  Fixture f;
  CHECK(f.Run({"EXEC"}) == "-ERR EXEC without MULTI\r\n");
  CHECK(f.Run({"MULTI"}) == "+OK\r\n");
  CHECK(f.Run({"SET", "k", "1"}) == "+QUEUED\r\n");
  CHECK(f.Run({"INCR", "k"}) == "+QUEUED\r\n");
  CHECK(f.Run({"GET", "k"}) == "+QUEUED\r\n");
  CHECK(f.Run({"DBSIZE"}) == "+QUEUED\r\n");
  CHECK(f.Run({"MULTI"}) == "-ERR MULTI calls can not be nested\r\n");
  CHECK(f.client().transaction.queued.size() == 4);
  // Nothing ran yet.
  ClientState other;
  CHECK(f.Run({"EXISTS", "k"}, &other) == ":0\r\n");
  CHECK(f.Run({"EXEC"}) == "*4\r\n+OK\r\n:2\r\n$1\r\n2\r\n:1\r\n");
  CHECK(!f.client().transaction.open);
  CHECK(f.Run({"GET", "k"}) == "$1\r\n2\r\n");
  // A refusal while queuing fails the whole EXEC.
  CHECK(f.Run({"MULTI"}) == "+OK\r\n");
  CHECK(f.Run({"SET", "k", "3"}) == "+QUEUED\r\n");
  CHECK(f.Run({"CLIENT", "ID"}).starts_with("-ERR CLIENT is not allowed inside MULTI"));
  CHECK(f.Run({"EXEC"}) == "-EXECABORT Transaction discarded because of previous errors.\r\n");
  CHECK(f.Run({"GET", "k"}) == "$1\r\n2\r\n");
}

TEST_CASE("dispatcher: WATCH fails EXEC when a watched key's value changed") {
  Fixture f;
  ClientState other;
  CHECK(f.Run({"SET", "k", "v"}) == "+OK\r\n");
  CHECK(f.Run({"WATCH", "k", "absent"}) == "+OK\r\n");
  CHECK(f.Run({"MULTI"}) == "+OK\r\n");
  CHECK(f.Run({"WATCH", "k"}) == "-ERR WATCH inside MULTI is not allowed\r\n");
  CHECK(f.Run({"SET", "k", "mine"}) == "+QUEUED\r\n");
  CHECK(f.Run({"SET", "absent", "x"}, &other) == "+OK\r\n");
  CHECK(f.Run({"EXEC"}) == "*-1\r\n");
  CHECK(f.Run({"GET", "k"}) == "$1\r\nv\r\n");
  // EXEC ended the WATCH: the next transaction runs.
  CHECK(f.Run({"MULTI"}) == "+OK\r\n");
  CHECK(f.Run({"SET", "k", "mine"}) == "+QUEUED\r\n");
  CHECK(f.Run({"EXEC"}) == "*1\r\n+OK\r\n");
  // Rewritten to the same value: the data the client read is still current, so EXEC runs.
  CHECK(f.Run({"WATCH", "k"}) == "+OK\r\n");
  CHECK(f.Run({"SET", "k", "mine"}, &other) == "+OK\r\n");
  CHECK(f.Run({"MULTI"}) == "+OK\r\n");
  CHECK(f.Run({"GET", "k"}) == "+QUEUED\r\n");
  CHECK(f.Run({"EXEC"}) == "*1\r\n$4\r\nmine\r\n");
}

TEST_CASE("dispatcher: scan returns every key once across calls") {
  Fixture f;
  for (int i = 0; i < 25; ++i)
    REQUIRE(f.Run({"SET", "key" + std::to_string(100 + i), "v"}) == "+OK\r\n");
  CHECK(f.Run({"DBSIZE"}) == ":25\r\n");
  // The first page holds the 10 smallest keys and a non-zero cursor.
  const std::string page = f.Run({"SCAN", "0"});
  CHECK(page.find("key100") != std::string::npos);
  CHECK(page.find("key109") != std::string::npos);
  CHECK(page.find("key110") == std::string::npos);
  CHECK(page.rfind("*2\r\n$1\r\n0\r\n", 0) != 0);
  CHECK(f.Run({"SCAN", "0", "MATCH", "key12*", "COUNT", "100"}) ==
        "*2\r\n$1\r\n0\r\n*5\r\n$6\r\nkey120\r\n$6\r\nkey121\r\n$6\r\nkey122\r\n$6\r\nkey123\r\n"
        "$6\r\nkey124\r\n");
  CHECK(f.Run({"SCAN", "12345"}).starts_with("-ERR invalid cursor"));
  CHECK(f.Run({"FLUSHALL"}) == "+OK\r\n");
  CHECK(f.Run({"DBSIZE"}) == ":0\r\n");
  CHECK(f.Run({"KEYS", "*"}) == "*0\r\n");
}

// The dispatcher's cursor table, at a small capacity.
TEST_CASE("scan cursors: a long scan evicts its own superseded cursors, not another's") {
  ScanCursors cursors(4);
  const std::uint64_t other = cursors.Save("b", 0);
  std::uint64_t mine = cursors.Save("a", 0);
  for (int i = 0; i < 20; ++i) mine = cursors.Save("a" + std::to_string(i), mine);
  CHECK(cursors.Find(other) == "b");
  CHECK(cursors.Find(mine) == "a19");
  // The cursor a scan just left is kept for a retry while there is room.
  const std::uint64_t left = mine;
  mine = cursors.Save("a20", mine);
  CHECK(cursors.Find(left) == "a19");
  // With only live scans, the least recently used is forgotten.
  const std::uint64_t third = cursors.Save("c", 0);
  const std::uint64_t fourth = cursors.Save("d", 0);
  CHECK(cursors.Find(other) == "b");
  cursors.Save("e", 0);
  CHECK(cursors.Find(other) == "b");
  CHECK(cursors.Find(third) == "c");
  CHECK(cursors.Find(fourth) == "d");
  CHECK(cursors.Find(mine) == std::nullopt);
}

TEST_CASE("dispatcher: AUTH gates every command but AUTH, HELLO and QUIT") {
  Fixture f("secret");
  CHECK(f.Run({"GET", "k"}) == "-NOAUTH Authentication required.\r\n");
  // In redis-server 7's order: an unknown command or a wrong arity before the missing login.
  CHECK(f.Run({"NOPE"}).starts_with("-ERR unknown command 'NOPE'"));
  CHECK(f.Run({"GET"}) == "-ERR wrong number of arguments for 'get' command\r\n");
  CHECK(f.Run({"AUTH", "wrong"}).starts_with("-WRONGPASS"));
  CHECK(f.Run({"AUTH", "secret"}) == "+OK\r\n");
  CHECK(f.client().authenticated);
  CHECK(f.Run({"GET", "k"}) == "$-1\r\n");
}

}  // namespace
}  // namespace kvstore
