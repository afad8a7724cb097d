#!/usr/bin/env bash
# Installs dependencies, builds kvstore and runs a local StatefulSet look-alike in the foreground:
# kvstore-0 (master) on 127.0.0.1:5550, kvstore-1 and kvstore-2 (replicas) on 5551 and 5552.
# Each pod has its own data directory (its PersistentVolume) under ./local-data; they share one
# ConfigMap directory, ./local-data/config, as Kubernetes mounts one ConfigMap into every pod.
# Promote kvstore-1 live with:  echo 1 > local-data/config/MASTER_ORDINAL
# Ctrl-C stops all three cleanly. Extra arguments go to every pod.
# KVSTORE_BUILD_DIR=<dir> uses binaries built there (no install, no build: tests use this), and
# LOCAL_DATA=<dir> puts the pods' data elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${KVSTORE_BUILD_DIR:-}"
if [[ -z "$build" ]]; then
  ./scripts/install-deps.sh
  ./scripts/build.sh build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSTORE_TESTS=OFF
  build=build
fi
data="${LOCAL_DATA:-local-data}"

mkdir -p "$data/config"
[[ -f "$data/config/MASTER_ORDINAL" ]] || echo 0 > "$data/config/MASTER_ORDINAL"
pids=()
stop() {
  trap - INT TERM
  echo "stopping the pods..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM

for ordinal in 0 1 2; do
  # Each pod's log lines get its name. The prefixing sed ignores Ctrl-C, so it outlives the pod
  # and the shutdown messages still get through.
  # "{ordinal}" in MASTER_ADDRESS is replaced by MASTER_ORDINAL: every pod finds the master
  # the way a pod finds kvstore-<MASTER_ORDINAL>.kvstore-headless in Kubernetes.
  POD_NAME="kvstore-$ordinal" MASTER_ADDRESS='127.0.0.1:555{ordinal}' \
    "$build/src/main/kvstore" --bind 127.0.0.1 --port "555$ordinal" --admin-port 0 \
    --data-dir "$data/kvstore-$ordinal" --config-dir "$data/config" \
    "$@" 2> >(trap '' INT TERM; exec sed -u "s/^/[kvstore-$ordinal] /" >&2) &
  pids+=($!)
done

cat <<MSG
kvstore-0 (master) on 127.0.0.1:5550, kvstore-1 and kvstore-2 (replicas) on 5551 and 5552.
Data in $data. Try:
  $build/tools/kvctl/kvctl --port 5550 put hello world
  $build/tools/kvctl/kvctl --port 5551 read hello
  $build/tools/kvctl/kvctl --port 5551 status
  redis-cli -p 5552 info replication
Promote kvstore-1 without a restart:  echo 1 > $data/config/MASTER_ORDINAL
Ctrl-C stops all three.
MSG
wait "${pids[@]}"
