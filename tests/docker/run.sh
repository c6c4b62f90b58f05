#!/usr/bin/env bash
# The container set-up run for real: builds the project's images, then runs
# examples/compose.yaml (tierlb in front of node1-node3), examples/compose.scaled.yaml (one
# name scaled 3 -> 5 -> 2) and examples/cluster/compose.yaml (two tierlb instances as one
# cluster) through tests/docker/scenarios.py. Everything it creates
# (containers, networks, images, stand-in base images, files) is named after this run and
# removed on exit, even on failure, so two runs at once never share anything. Where there is
# no Docker engine, no BuildKit builder or no docker-compose, it says why and exits 0 (skipped).
#
# Without a registry nothing can be pulled, so the base image is made here when missing:
# gcr.io/distroless/cc-debian12:nonroot from Debian's own packages (libc6, libgcc-s1, netbase,
# tzdata: what distroless' cc image holds, unpacked with dpkg-deb, plus its nonroot user 65532
# and /tmp), imported with `docker import` under a tag of this run's own. tierlb is built on
# the host and Dockerfile.prebuilt takes it, built with the classic builder
# (DOCKER_BUILDKIT=0) and with BuildKit; the scenarios run the BuildKit image. The Dockerfile
# (from source) needs the rust image and crates.io: it is built only where the rust image is
# already present, and otherwise skipped with that reason (nothing is pulled).
#
#   bash tests/docker/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() {
  echo "docker tests skipped: $*"
  exit 0
}

docker info >/dev/null 2>&1 || skip "no Docker engine answers (docker info failed)"
command -v docker-compose >/dev/null 2>&1 || skip "docker-compose is not installed"
# A builder that skips unused stages (BuildKit): buildx, or a Docker CLI older than 23 that
# has BuildKit built in (Debian's docker.io).
builder=""
if docker buildx version >/dev/null 2>&1; then
  builder="docker"
else
  for candidate in $(which -a docker); do
    major=$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then
      builder="$candidate"
      break
    fi
  done
fi
[ -n "$builder" ] || skip "no BuildKit builder: install docker-buildx"

tag="tierlb-test-$$"
work=$(mktemp -d)
created_images=()
export TIERLB_IMAGE="$tag-tierlb:latest" NODE_IMAGE="$tag-node:latest"
export TIERLB_TEST_TAG="$tag" TIERLB_TEST_WORK="$work"

cleanup() {
  status=$?
  set +e
  docker-compose -p "$tag-single" -f examples/compose.yaml down -v --remove-orphans \
    --timeout 1 >/dev/null 2>&1
  docker-compose -p "$tag-scaled" -f examples/compose.scaled.yaml down -v --remove-orphans \
    --timeout 1 >/dev/null 2>&1
  docker-compose -p "$tag-cluster" -f examples/cluster/compose.yaml down -v --remove-orphans \
    --timeout 1 >/dev/null 2>&1
  docker ps -aq --filter "label=tierlb-test=$tag" | xargs -r docker rm -f >/dev/null 2>&1
  for image in "${created_images[@]}"; do
    docker rmi -f "$image" >/dev/null 2>&1
  done
  rm -rf "$work"
  left=$(docker ps -aq --filter "name=$tag" | wc -l)
  nets=$(docker network ls -q --filter "name=$tag" | wc -l)
  echo "docker tests: cleaned up ($left containers and $nets networks of this run left)"
  exit "$status"
}
trap cleanup EXIT
trap "exit 143" TERM INT

distroless="gcr.io/distroless/cc-debian12:nonroot"
base="$distroless"
if ! docker image inspect "$distroless" >/dev/null 2>&1; then
  base="$tag-base:latest"
  echo "== stand-in for $distroless ($base), from Debian packages"
  root="$work/rootfs"
  mkdir -p "$root" "$work/debs"
  (cd "$work/debs" && { apt-get download libc6 libgcc-s1 netbase tzdata 2>/dev/null \
    || { apt-get update -qq && apt-get download libc6 libgcc-s1 netbase tzdata; }; })
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
  rm -rf "$root"/usr/share/{doc,man,lintian,locale}
  mkdir -p "$root/tmp" "$root/home/nonroot" "$root/etc"
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
  tar -C "$root" -c . | docker import --change 'USER 65532:65532' \
    --change 'WORKDIR /home/nonroot' - "$base" >/dev/null
  created_images+=("$base")
fi

# The binaries: those of the calling test run (tests/docker.rs passes cargo test's own), else
# a release build.
if [ -n "${TIERLB_BINARY:-}" ] && [ -n "${TIERLB_NODE_BINARY:-}" ]; then
  tierlb_bin=$(realpath --relative-to=. "$TIERLB_BINARY")
  node_bin=$(realpath --relative-to=. "$TIERLB_NODE_BINARY")
else
  echo "== host build: tierlb and the node example (release)"
  cargo build --release --locked --bin tierlb --example node
  tierlb_bin=target/release/tierlb node_bin=target/release/examples/node
fi
case "$tierlb_bin$node_bin" in
  ../*|*/../*) echo "the binaries must be inside the project: $tierlb_bin $node_bin" >&2; exit 1 ;;
esac

# The prebuilt image, with the classic builder and with BuildKit: each must run the binary.
classic="$tag-classic:latest"
echo "== docker build -f Dockerfile.prebuilt (BINARY=$tierlb_bin), classic builder"
DOCKER_BUILDKIT=0 "$builder" build --quiet -f Dockerfile.prebuilt --build-arg BASE="$base" \
  --build-arg BINARY="$tierlb_bin" --label "tierlb-test=$tag" -t "$classic" . >/dev/null
created_images+=("$classic")
echo "== docker build -f Dockerfile.prebuilt (BINARY=$tierlb_bin), BuildKit ($builder)"
DOCKER_BUILDKIT=1 "$builder" build --quiet -f Dockerfile.prebuilt --build-arg BASE="$base" \
  --build-arg BINARY="$tierlb_bin" --label "tierlb-test=$tag" -t "$TIERLB_IMAGE" . >/dev/null
created_images+=("$TIERLB_IMAGE")
for image in "$classic" "$TIERLB_IMAGE"; do
  docker run --rm --label "tierlb-test=$tag" "$image" --version
done
if docker image inspect rust:1.95-slim-bookworm >/dev/null 2>&1; then
  echo "== docker build . (from source)"
  "$builder" build --quiet --build-arg BASE="$base" --label "tierlb-test=$tag" \
    -t "$tag-source:latest" . >/dev/null
  created_images+=("$tag-source:latest")
  docker run --rm --label "tierlb-test=$tag" "$tag-source:latest" --version
else
  echo "== docker build . (from source) skipped: the rust:1.95-slim-bookworm image is not here and cannot be pulled without a registry"
fi
DOCKER_BUILDKIT=1 "$builder" build --quiet -f tests/docker/node.Dockerfile \
  --build-arg BASE="$base" --build-arg NODE_BINARY="$node_bin" \
  --label "tierlb-test=$tag" -t "$NODE_IMAGE" . >/dev/null
created_images+=("$NODE_IMAGE")

# A gossip subnet of this run's own for the cluster example: 10.213.N.0/24 with N from the
# process id, past any subnet an existing network already has.
used=$(docker network inspect $(docker network ls -q) --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null || true)
n=$(( $$ % 200 + 20 ))
for _ in $(seq 1 200); do
  case " $used " in *" 10.213.$n.0/24 "*) n=$(( (n - 19) % 200 + 20 )) ;; *) break ;; esac
done
export TIERLB_GOSSIP_PREFIX="10.213.$n"

python3 tests/docker/scenarios.py
