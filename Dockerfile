# syntax=docker/dockerfile:1
# One image per binary of the fan-out backend, from one build:
#   docker build --target ingest        -t fanout-ingest .
#   docker build --target fanout-worker -t fanout-worker .
#   docker build --target local-gateway -t fanout-local-gateway .
# The Rust version is the workspace's `rust-version`, and the release build command below is the one
# `./dev deploy-check` checks against ./dev's own build (deploy-check/tests/deploy/container.rs).
# Images cannot be built on the development machines (no Docker engine there); hadolint and checkov check
# this file instead. See deploy/README.md.

ARG RUST_VERSION=1.95
# The base images, by tag. A release build pins both by digest (deploy/README.md, "Container images"):
#   --build-arg BUILDER_IMAGE=rust:1.95-bookworm@sha256:... --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:...
# The builder is Debian bookworm, so the binaries need the glibc of the runtime (distroless Debian 12).
ARG BUILDER_IMAGE=rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# --- dependency layer: cargo-chef builds the dependencies from the manifests alone, so this layer is
# reused until Cargo.toml or Cargo.lock change.
# checkov:skip=CKV_DOCKER_7:the base images are build arguments with explicit tags (above), pinned by digest in release builds; checkov cannot resolve the variable
FROM ${BUILDER_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p ingest -p fanout-worker -p local-gateway \
    && mkdir -p /out \
    && cp target/release/ingest target/release/fanout-worker target/release/local-gateway /out/ \
    && rustc --edition 2021 -O -o /out/healthcheck deploy/docker/healthcheck.rs

# --- runtime: distroless (glibc and libgcc, no shell, no package manager), the builder's CA bundle for TLS
# to AWS and Redis, the health probe (deploy/docker/healthcheck.rs), a numeric non-root user, nothing else.
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/healthcheck /usr/local/bin/healthcheck
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    FANOUT_LOG_FORMAT=json
USER 65532:65532

FROM runtime AS local-gateway
COPY --from=builder /out/local-gateway /usr/local/bin/local-gateway
ENV EMULATOR_WS_LISTEN=0.0.0.0:4001 \
    EMULATOR_MANAGEMENT_LISTEN=0.0.0.0:4000 \
    EMULATOR_LOG_FORMAT=json
EXPOSE 4001 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/healthcheck", "4000", "/metrics"]
ENTRYPOINT ["/usr/local/bin/local-gateway"]

FROM runtime AS fanout-worker
COPY --from=builder /out/fanout-worker /usr/local/bin/fanout-worker
ENV FANOUT_METRICS_LISTEN=0.0.0.0:9090
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/healthcheck", "9090", "/healthz"]
ENTRYPOINT ["/usr/local/bin/fanout-worker"]

# The last stage is the default target: ingest.
FROM runtime AS ingest
COPY --from=builder /out/ingest /usr/local/bin/ingest
ENV FANOUT_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/healthcheck", "8080", "/healthz"]
ENTRYPOINT ["/usr/local/bin/ingest"]
