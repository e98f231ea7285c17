# The three eventline services in one image: `docker run eventline eventline-command` (or
# eventline-projector, eventline-query). Built by docker-compose.yml.

# --- dependencies, cached in their own layer (recompiled only when Cargo.lock or a manifest changes)
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json \
    -p eventline-command -p eventline-projector -p eventline-query

# --- the services
COPY . .
RUN cargo build --release --locked -p eventline-command -p eventline-projector -p eventline-query \
    && mkdir -p /out \
    && cp target/release/eventline-command target/release/eventline-projector target/release/eventline-query /out/

# --- a small runtime image (librdkafka links the system OpenSSL, for TLS and SASL SCRAM to Kafka)
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin eventline
COPY --from=builder /out/ /usr/local/bin/
USER 10001
ENV LOG_FORMAT=json \
    EVENTLINE_HEALTH_PORT=8081
# Each service answers /healthz on its own port; set EVENTLINE_HEALTH_PORT to it (compose does).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${EVENTLINE_HEALTH_PORT} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]
CMD ["eventline-command"]
