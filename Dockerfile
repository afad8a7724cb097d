# kvstore container image: a build stage with the -dev packages of scripts/install-deps.sh, and
# a runtime stage (bookworm-slim) with only the shared libraries the binaries load plus the
# kvstore and kvctl binaries. Runs as uid 65532, works with a read-only root filesystem (it
# writes only to /data). tests/k8s/test_dockerfile.py checks the runtime package list against
# `ldd` of the built binaries.
#   docker build --build-arg KVSTORE_VERSION=0.1.0 -t kvstore:0.1.0 .

FROM debian:bookworm AS build
ARG KVSTORE_VERSION=0.1.0
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libasio-dev liblmdb-dev libfmt-dev libcli11-dev libyaml-cpp-dev libspdlog-dev zlib1g-dev \
      libcpp-httplib-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY include include
COPY src src
COPY tools tools
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DKVSTORE_TESTS=OFF \
      -DKVSTORE_VERSION="${KVSTORE_VERSION}" \
 && cmake --build /build -j"$(nproc)" \
 && install -D -m 0755 /build/src/main/kvstore /out/kvstore \
 && install -D -m 0755 /build/tools/kvctl/kvctl /out/kvctl \
 && /out/kvstore --version

FROM debian:bookworm-slim AS runtime
ARG KVSTORE_VERSION=0.1.0
LABEL org.opencontainers.image.title="kvstore" \
      org.opencontainers.image.description="Replicated key-value server speaking the Redis protocol" \
      org.opencontainers.image.version="${KVSTORE_VERSION}"
# Exactly the packages that own the shared libraries kvstore and kvctl load (ldd), named even
# when the slim image already has them, so the list stays complete on its own.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libc6 libgcc-s1 libstdc++6 zlib1g \
      liblmdb0 libfmt9 libspdlog1.10 libyaml-cpp0.7 \
      libcpp-httplib0.11 libssl3 libbrotli1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 kvstore \
 && useradd --system --uid 65532 --gid 65532 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin kvstore \
 && mkdir -p /data /etc/kvstore \
 && chown 65532:65532 /data
COPY --from=build /out/kvstore /out/kvctl /usr/local/bin/
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
# 5555: RESP (clients and replication); 8080: admin HTTP (/healthz, /readyz, /metrics).
EXPOSE 5555 8080
ENTRYPOINT ["kvstore"]
