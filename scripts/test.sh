#!/usr/bin/env bash
# The one test command: installs dependencies, checks formatting, builds kvstore twice (plain, then
# with AddressSanitizer + UndefinedBehaviorSanitizer) and runs every unit and integration test on
# both, builds it as the Dockerfile does (Release), then fuzzes the RESP parser for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

echo "== clang-format check"
git ls-files -- '*.cpp' '*.h' | xargs clang-format --dry-run --Werror

echo "== build and test (RelWithDebInfo)"
./scripts/build.sh build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSTORE_TESTS=ON
(cd build && ctest --output-on-failure -j2)

echo "== build and test (ASan + UBSan)"
./scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSTORE_SANITIZE=ON -DKVSTORE_TESTS=ON
# The manifest and monitoring checks do not exercise more server code than the plain pass did.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j2 -E '^(k8s|monitoring): ')

echo "== build as the Dockerfile does (Release, no tests)"
# GCC 12 warns differently at -O3 (false -Wrestrict reports), and warnings are errors: the image
# build must not be the first to find out.
./scripts/build.sh build-release -DCMAKE_BUILD_TYPE=Release -DKVSTORE_TESTS=OFF

echo "== fuzz the RESP parser (libFuzzer, ${FUZZ_SECONDS:=60}s)"
CXX=clang++ ./scripts/build.sh build-fuzz -DKVSTORE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
mkdir -p build-fuzz/corpus
build-fuzz/tests/fuzz/resp_parser_fuzz -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 \
  -print_final_stats=1 build-fuzz/corpus tests/fuzz/corpus 2>&1 | tail -n 12
echo "fuzz: no crash in ${FUZZ_SECONDS}s"
