// ReadProcessStats (see process.h): /proc/self/stat fields 14-15 (utime, stime in clock ticks),
// 22 (starttime, ticks since boot), 23 (vsize), 24 (rss pages); /proc/stat's btime; the entries
// of /proc/self/fd; RLIMIT_NOFILE.
#include "metrics/process.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kvstore::metrics {
namespace {

double BootTime() {
  std::ifstream stat("/proc/stat");
  std::string line;
  while (std::getline(stat, line)) {
    if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
  }
  return 0;
}

}  // namespace

ProcessStats ReadProcessStats() {
  ProcessStats stats;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  std::ifstream file("/proc/self/stat");
  std::string content((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
  const auto close = content.rfind(')');
  if (close != std::string::npos && ticks > 0) {
    std::istringstream rest(content.substr(close + 2));
    std::vector<std::string> fields;  // fields[0] is field 3 (state)
    for (std::string f; rest >> f;) fields.push_back(f);
    if (fields.size() > 21) {
      stats.cpu_seconds = (std::stod(fields[11]) + std::stod(fields[12])) / ticks;
      stats.start_time_seconds = BootTime() + std::stod(fields[19]) / ticks;
      stats.virtual_bytes = std::stoull(fields[20]);
      stats.resident_bytes =
          std::stoull(fields[21]) * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
    }
  }
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++stats.open_fds;
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) stats.max_fds = limit.rlim_cur;
  return stats;
}

}  // namespace kvstore::metrics
