# tierlb container image.
# Build: docker build -t tierlb .
# Run:   docker run --rm -p 8000:8000 -v "$PWD/conf:/etc/tierlb:ro" tierlb
# Arguments after the image name replace CMD, so give the whole command line:
#        docker run --rm -p 8000:8000 tierlb -l :8000 -p 10.0.0.11:8080 -p 10.0.0.12:8080

# Build stage: the locked dependency set, release profile.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin tierlb

# Final stage: glibc and nothing else (no shell, no package manager), running as non-root (uid 65532, "nonroot" in distroless).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tierlb /usr/local/bin/tierlb
COPY config.example.toml /etc/tierlb/config.toml
USER 65532:65532
# 8000: clients (the shipped config's listen address); 9090: the admin endpoint, when enabled.
EXPOSE 8000 9090
ENTRYPOINT ["tierlb"]
CMD ["-c", "/etc/tierlb/config.toml"]
