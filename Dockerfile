# tierlb container image.
# Build: docker build -t tierlb .
# Run:   docker run --rm -p 8000:8000 -v "$PWD/conf:/etc/tierlb:ro" tierlb
# Arguments after the image name replace CMD, so give the whole command line:
#        docker run --rm -p 8000:8000 tierlb -l :8000 -p 10.0.0.11:8080 -p 10.0.0.12:8080
#
# Where the binary comes from: BINARY=build (the default) compiles it in the rust stage below;
# BINARY=prebuilt takes the file PREBUILT (default target/release/tierlb, from
# `cargo build --release --locked` on the host) from the build context instead, for machines
# that cannot pull the rust image or reach crates.io from a build container. Needs BuildKit
# (Docker's default builder since 23.0), which builds only the stages the image uses.
ARG BINARY=build

# Build stage: the locked dependency set, release profile.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin tierlb

# The host's build, at the same path.
FROM scratch AS prebuilt
ARG PREBUILT=target/release/tierlb
COPY ${PREBUILT} /src/target/release/tierlb

# hadolint ignore=DL3006
FROM ${BINARY} AS binary

# Final stage: glibc and nothing else (no shell, no package manager), running as non-root (uid 65532, "nonroot" in distroless).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=binary /src/target/release/tierlb /usr/local/bin/tierlb
COPY config.example.toml /etc/tierlb/config.toml
USER 65532:65532
# 8000: clients (the shipped config's listen address); 9090: the admin endpoint, when enabled.
EXPOSE 8000 9090
# No HEALTHCHECK: the image has no shell or client to run one; orchestrators probe the admin
# endpoint's GET /ready and GET /live from outside (see the README).
ENTRYPOINT ["tierlb"]
CMD ["-c", "/etc/tierlb/config.toml"]
