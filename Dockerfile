# A small image for Cloud Run and friends: honours PORT, listens on 0.0.0.0.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin cloakroom

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 cloakroom && mkdir /data && chown cloakroom /data
COPY --from=build /src/target/release/cloakroom /usr/local/bin/cloakroom
USER cloakroom
ENV HOST=0.0.0.0 PORT=8080 CLOAKROOM_ENV=production CLOAKROOM_DATA=/data
EXPOSE 8080
ENTRYPOINT ["cloakroom", "serve"]
