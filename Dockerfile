# Build: the release binary (cmake builds libopus for voice conversion).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches benches
# The dependencies first, built against an empty stand-in of the crate, in a layer that
# a change to medialink's own code leaves cached: a rebuild then compiles one crate,
# not some 340.
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin medialink && rm -rf src
COPY src src
COPY migrations migrations
ARG GIT_REVISION=unknown
ENV MEDIALINK_GIT_REVISION=$GIT_REVISION
# `touch`: COPY keeps the files' times from the build context, older than the
# stand-in's build, and cargo judges whether a crate is fresh by file times.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin medialink \
    && strip target/release/medialink

# What the binary needs at run time and nothing else: the shared libraries `ldd` names
# (glibc from the same Debian release it was linked against; DNS and /etc/hosts lookups
# live in libc.so.6 itself since glibc 2.34), the CA roots rustls verifies upstreams
# against, a non-root user, and a /data and /tmp that user can write. Taken from the
# build image rather than from a base image, so the image is the binary and a few MB
# more, and nothing but the build image is pulled.
RUN set -eux; \
    mkdir -p /rootfs/etc/ssl/certs /rootfs/data /rootfs/tmp /rootfs/usr/local/bin; \
    for lib in $(ldd target/release/medialink | grep -o '/[^ ]*'); do cp --parents -L "$lib" /rootfs/; done; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    echo 'nonroot:x:65532:65532:nonroot:/data:/sbin/nologin' > /rootfs/etc/passwd; \
    echo 'nonroot:x:65532:' > /rootfs/etc/group; \
    chown 65532:65532 /rootfs/data; chmod 1777 /rootfs/tmp; \
    cp target/release/medialink /rootfs/usr/local/bin/medialink

FROM scratch
COPY --from=build /rootfs/ /
ENV MEDIALINK_LISTEN=0.0.0.0:8080 \
    MEDIALINK_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s \
  CMD ["/usr/local/bin/medialink", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/medialink"]
CMD ["serve"]
