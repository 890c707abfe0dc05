# syntax=docker/dockerfile:1
# Build: the release binary (cmake builds libopus for voice conversion).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY migrations migrations
COPY benches benches
ARG GIT_REVISION=unknown
ENV MEDIALINK_GIT_REVISION=$GIT_REVISION
RUN cargo build --release --locked --bin medialink && strip target/release/medialink

# Run: distroless with glibc and CA certificates, as a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/medialink /usr/local/bin/medialink
ENV MEDIALINK_LISTEN=0.0.0.0:8080 \
    MEDIALINK_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
USER nonroot:nonroot
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s \
  CMD ["/usr/local/bin/medialink", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/medialink"]
CMD ["serve"]
