#!/usr/bin/env bash
# Installs every Debian package kvstore needs to build, run, test and benchmark.
# Safe to run repeatedly: it only calls apt-get when something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
  libasio-dev liblmdb-dev lmdb-utils libfmt-dev libcli11-dev libyaml-cpp-dev catch2 libspdlog-dev
  zlib1g-dev libcpp-httplib-dev libssl-dev openssl
  redis-tools redis-server python3 python3-redis python3-pytest python3-yaml netcat-openbsd
  iproute2 procps curl prometheus
)
# Node.js and npm for the offline validation of the Kubernetes manifests (tests/k8s). A machine
# with a Node.js of its own (e.g. from NodeSource, which bundles npm and conflicts with Debian's
# npm package) keeps it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
# kubectl renders the manifests (`kubectl kustomize`). Debian has no current kubectl: a machine
# with one (Kubernetes' or Google's apt repository) keeps it; otherwise Debian's
# kubernetes-client, whose kustomize is too old for the overlays: tests/k8s then skips the
# rendering checks and says so.
if ! command -v kubectl >/dev/null; then
  packages+=(kubernetes-client)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
