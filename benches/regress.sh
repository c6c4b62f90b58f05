#!/usr/bin/env bash
# Regression guard: this tree's release build against COMMIT's, by interleaved timing rounds
# and by callgrind's instruction and cache-miss counts per request (benches/regress.py says
# how). Run it for every change on the data path and put its tables in the commit message.
#
#   bash benches/regress.sh COMMIT [--rounds 3] [--seconds 5] [--no-timing]
#
# COMMIT is built in a worktree under target/regress (its builds are kept there and reused);
# installs what it lacks (Debian). Needs 2+ cores: the proxy is pinned to CPU 0, the load to 1.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bash benches/regress.sh COMMIT [--rounds N] [--seconds S]" >&2; exit 2; }
commit=$(git rev-parse --short=12 "$1^{commit}")
shift

# shellcheck source=benches/need.sh
source benches/need.sh
need nginx wrk iperf3 valgrind taskset ss

cargo build --release --locked --bin tierlb
baseline="target/regress/bin/tierlb-$commit"
if [ ! -x "$baseline" ]; then
  tree="target/regress/tree-$commit"
  rm -rf "$tree"
  git worktree add --detach "$tree" "$commit" >/dev/null
  # The worktree is only for the build (the script ends in exec, so no EXIT trap would run).
  built=0
  (cd "$tree" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked --bin tierlb) && built=1
  git worktree remove --force "$tree"
  [ "$built" = 1 ] || { echo "cannot build $commit" >&2; exit 1; }
  mkdir -p target/regress/bin
  cp "target/regress/target/release/tierlb" "$baseline"
fi
exec timeout 3600 python3 benches/regress.py --baseline "$baseline" "$@"
