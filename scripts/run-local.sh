#!/usr/bin/env bash
# Installs dependencies, builds kvstore and runs it locally in the foreground on port 5555 with
# its data in ./local-data (Ctrl-C stops it cleanly). Extra arguments go to kvstore.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSTORE_TESTS=OFF
mkdir -p local-data
echo "kvstore on 127.0.0.1:5555 (data in $(pwd)/local-data). Try: build/tools/kvctl/kvctl put hello world"
exec build/src/main/kvstore --bind 127.0.0.1 --port 5555 --data-dir local-data/kvstore-0 --admin-port 0 "$@"
