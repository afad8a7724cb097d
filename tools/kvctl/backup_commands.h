// kvctl's backup subcommands: `backup --out FILE|DIR [--keep N]`, `backup verify FILE` and
// `restore FILE [--force]`. Each returns kvctl's exit code (0 ok; 1 refused, damaged or error
// reply; 2 usage; 3 unreachable or connection lost). Single-threaded.
#pragma once

#include <string>

#include "kvstore/client.h"

namespace kvctl {

int Backup(const kvstore::ClientOptions& options, const std::string& out, int keep);
int VerifyBackup(const std::string& file);
int Restore(const kvstore::ClientOptions& options, const std::string& file, bool force);

}  // namespace kvctl
