# syntax=docker/dockerfile:1.7
#
# Boardroom: a multi-stage build.
#   docker build -t boardroom .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgres://… boardroom
# Migrations and config/default.toml are compiled into the binary, so the
# runtime image holds the binary alone.

# --- build -----------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The registry, git checkouts and target/ live in cache mounts (kept between
# builds, never in a layer), so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p boardroom \
    && cp target/release/boardroom /usr/local/bin/boardroom

# --- run -------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ca-certificates for TLS to outside services; curl for the HEALTHCHECK.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 boardroom \
    && useradd --system --uid 10001 --gid boardroom --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin boardroom
COPY --from=builder /usr/local/bin/boardroom /usr/local/bin/boardroom
USER boardroom:boardroom
# Listen on all interfaces inside the container (the default is 127.0.0.1:8080).
ENV BOARDROOM__SERVER__ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health/live"]
# SIGTERM (docker stop) drains in-flight requests, then the process exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/boardroom"]
CMD ["serve"]
