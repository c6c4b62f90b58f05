# The test node image: examples/node.rs (built on the host: NODE_BINARY, a path in the build
# context), on the same base as tierlb's image (BASE: the run's stand-in where there is no
# registry).
# Build from the project root: docker build -f tests/docker/node.Dockerfile -t NAME .
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
# hadolint ignore=DL3006
FROM ${BASE}
ARG NODE_BINARY=target/release/examples/node
COPY ${NODE_BINARY} /usr/local/bin/node
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/node"]
