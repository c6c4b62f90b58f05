# tierlb container image, built from source.
# Build: docker build -t tierlb .
# Run:   docker run --rm -p 8000:8000 -v "$PWD/examples/tierlb:/etc/tierlb:ro" tierlb
# Arguments after the image name replace CMD, so give the whole command line:
#        docker run --rm -p 8000:8000 tierlb -l :8000 -p 10.0.0.11:8080 -p 10.0.0.12:8080
#
# Needs the rust and distroless base images and crates.io. Where a build container cannot
# reach them, build the binary on the host and use Dockerfile.prebuilt instead (same final
# image). Works with BuildKit and with the classic builder.

# BASE: the final stage's base image.
ARG BASE=gcr.io/distroless/cc-debian12:nonroot

# Build stage: the locked dependency set, release profile, installed out of the source tree.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo install --locked --path . --bin tierlb --root /out

# Final stage: glibc and nothing else (no shell, no package manager), running as non-root (uid 65532, "nonroot" in distroless).
# hadolint ignore=DL3006
FROM ${BASE}
COPY --from=build /out/bin/tierlb /usr/local/bin/tierlb
COPY config.example.toml /etc/tierlb/config.toml
USER 65532:65532
# 8000: clients (the shipped config's listen address); 9090: the admin endpoint, when enabled.
EXPOSE 8000 9090
# No HEALTHCHECK: the image has no shell or client to run one; orchestrators probe the admin
# endpoint's GET /ready and GET /live from outside (see docs/docker-and-kubernetes.md).
ENTRYPOINT ["tierlb"]
CMD ["-c", "/etc/tierlb/config.toml"]
