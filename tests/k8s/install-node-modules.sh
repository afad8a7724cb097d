#!/usr/bin/env bash
# Installs the npm packages of the manifest validation (package-lock.json, exact versions) into
# tests/k8s/node_modules, unless the installed set already matches the lock file. ctest runs it
# as the setup fixture of the k8s tests, so a fresh CI machine gets them (npm registry access).
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.kvstore-lock-stamp
if [[ -f $stamp ]] && cmp -s package-lock.json "$stamp"; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "install-node-modules: npm is missing; run scripts/install-deps.sh" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json "$stamp"
