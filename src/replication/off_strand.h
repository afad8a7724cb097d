// RunOffStrand: runs a blocking call (a snapshot install, a blocking client call) on a thread of
// its own and awaits its result from a coroutine without blocking the coroutine's executor.
// The thread is detached and owns the shared result, so a coroutine abandoned at shutdown leaves
// nothing dangling (fn must therefore capture what it uses by value). Pass named std::function
// objects: GCC 12 destroys temporaries of a co_await expression twice. Header-only.
#pragma once

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

namespace kvstore {

// while_waiting, when not empty, runs on the coroutine's executor between polls (every 5 ms).
// No default argument: it would be a temporary of the caller's co_await expression.
template <typename T>
asio::awaitable<T> RunOffStrand(std::function<T()> fn, std::function<void()> while_waiting) {
  struct Job {
    std::atomic<bool> done{false};
    std::optional<T> result;  // set before done
  };
  auto job = std::make_shared<Job>();
  std::thread([job, fn = std::move(fn)] {
    job->result.emplace(fn());
    job->done.store(true, std::memory_order_release);
  }).detach();
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer poll(executor);
  while (!job->done.load(std::memory_order_acquire)) {
    if (while_waiting) while_waiting();
    poll.expires_after(std::chrono::milliseconds(5));
    co_await poll.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  }
  co_return std::move(*job->result);
}

}  // namespace kvstore
