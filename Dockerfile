# syntax=docker/dockerfile:1
# AI Cost Optimizer: both binaries (optimizer, optimizer-worker) in one slim image.
# Build: docker build -t ai-cost-optimizer .   (docker compose build does the same)

# ── Dependency caching: cargo-chef compiles the dependency tree once per Cargo.lock ──────────
FROM rust:1.95-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# No query! macros need a live database; the flag keeps it that way.
ENV SQLX_OFFLINE=true
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --workspace --recipe-path recipe.json
COPY . .
# The same command .ci/run uses to prove the release build.
RUN cargo build --release --workspace --locked

# ── Runtime: Debian slim, non-root, no shell tools needed (TLS roots are compiled in) ──────
FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 optimizer \
    && useradd --system --uid 10001 --gid optimizer --no-create-home --shell /usr/sbin/nologin optimizer
COPY --from=builder /app/target/release/optimizer /app/target/release/optimizer-worker /usr/local/bin/
USER 10001:10001
ENV BIND=0.0.0.0:8000 \
    WORKER_BIND=0.0.0.0:9100 \
    LOG_FORMAT=json
EXPOSE 8000 9100
# The binary probes itself: no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["optimizer", "healthcheck"]
ENTRYPOINT ["optimizer"]
CMD ["serve"]
