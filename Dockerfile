# Dockerfile - the chat-gateway image: built on debian:12, run on debian:12-slim as a non-root user.
#   docker build -t chat-gateway .        (docker-compose.yml builds it as chat-gateway:local)
#   docker run --rm -p 8080:8080 chat-gateway    -> the demo page on http://localhost:8080
# Every option is an environment variable (CHAT_LISTEN, CHAT_NODE_ID, CHAT_REDIS_URL, ...); see
# `docker run --rm chat-gateway --help`.

FROM debian:12 AS build
# Only the shipped binary is compiled: no unit tests (-Dtests=disabled), so no cmocka.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev meson ninja-build pkg-config python3 \
      libuv1-dev libwslay-dev libhiredis-dev libcjson-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN meson setup build --buildtype=release -Dtests=disabled \
 && ninja -C build gateway/chat-gateway \
 && ./build/gateway/chat-gateway --version

FROM debian:12-slim
# Runtime libraries only (libssl3 carries libcrypto.so.3).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libuv1 libwslay1 libhiredis0.14 libcjson1 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin chat
COPY --from=build /src/build/gateway/chat-gateway /usr/local/bin/chat-gateway
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# All interfaces, the binary's own default too: a container is reached through its network, and
# only what is published (-p, a Service) is exposed. (deploy/local/run.sh uses 127.0.0.1.)
ENV CHAT_LISTEN=0.0.0.0:8080
# 8080: WebSocket + demo page. 9090: the admin listener (/healthz, /readyz, /metrics).
ENV CHAT_ADMIN_LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
# SIGTERM: close every WebSocket with 1001, then exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chat-gateway"]
