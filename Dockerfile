# syntax=docker/dockerfile:1
# A small image for Cloud Run, Kubernetes and friends: honours PORT, listens on 0.0.0.0, keeps
# its embedded store and development secret in /data (mount a volume there, or set
# SESSION_STORE to Redis or PostgreSQL). app/tests/image.rs runs the binary the way this
# file's runtime stage does.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# The registry and the build folder live in cache mounts: a rebuild after a code change
# compiles the app, not its dependencies. --locked: exactly the versions in Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cloakroom \
    && cp target/release/cloakroom /usr/local/bin/cloakroom

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 cloakroom && mkdir /data && chown cloakroom /data
COPY --from=build /usr/local/bin/cloakroom /usr/local/bin/cloakroom
USER 10001
ENV HOST=0.0.0.0 PORT=8080 CLOAKROOM_ENV=production CLOAKROOM_DATA=/data
VOLUME /data
# 8080: the app; 9090: /metrics, for the scraper only (never on the public port).
EXPOSE 8080 9090
# The binary probes its own /healthz (no curl here); healthy while the store is down.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s CMD ["cloakroom", "healthcheck"]
# `docker run IMAGE` serves; `docker run IMAGE secret` prints a secret; any other command too.
ENTRYPOINT ["cloakroom"]
CMD ["serve"]
