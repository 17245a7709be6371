# syntax=docker/dockerfile:1

# ---- build ----------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /build
# No database at image build time: sqlx macros must use checked-in metadata if any.
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never

# Compile the dependencies against stub sources first, so this (slow) layer stays
# cached until Cargo.toml or Cargo.lock change. build.rs: the binary's link settings.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin agents-api

# Everything the crate reads at compile time: migrations/ (sqlx::migrate!), .sqlx/ (the
# query metadata sqlx::query! checks against offline), config/ and
# assets/ (include_str!). scripts/check-image.sh rebuilds from exactly these lines.
COPY migrations ./migrations
COPY config ./config
COPY assets ./assets
COPY .sqlx ./.sqlx
COPY src ./src
# COPY keeps the context's mtimes, which can be older than the stub build: touch so
# cargo rebuilds the crate instead of shipping the stub.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin agents-api

# ---- runtime --------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to Kommo, Sentry and OTLP endpoints. Nothing else is needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 agents-api \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin agents-api

COPY --from=builder /build/target/release/agents-api /usr/local/bin/agents-api
COPY config /app/config
COPY migrations /app/migrations
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

EXPOSE 8080 9091
ENV HTTP_ADDR=0.0.0.0:8080 \
    METRICS_ADDR=0.0.0.0:9091 \
    APP_ENV=production \
    LOG_FORMAT=json
# No HEALTHCHECK: the image has no curl; orchestrators probe /health/live and
# /health/ready over HTTP instead.
ENTRYPOINT ["agents-api"]
CMD ["serve"]
