#!/usr/bin/env bash
# Side-by-side benchmark of tierlb, HAProxy (mode tcp, leastconn) and nginx stream
# (least_conn), plus a direct connection, on the same local backends. Prints one Markdown
# table of medians with ratios to HAProxy. Options go to benches/compare.py (--help).
#
#   bash benches/compare.sh                   # 3 rounds x 10 s runs, 5,000 idle connections
#   bash benches/compare.sh --rounds 5 --idle 50000
#
# Installs haproxy, nginx with the stream module, wrk, iperf3 and iproute2 if missing (Debian),
# builds tierlb in release mode, and ends only the processes it started. Traffic stays on
# 127.0.0.0/8. --baseline BIN adds a column for another tierlb build (the previous commit,
# say), run interleaved with this one, so a data-path change is measured against its parent. Needs 2+ cores: the proxy is pinned alone to CPU 0, the load to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
command -v wrk >/dev/null || missing+=(wrk)
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v ss >/dev/null || missing+=(iproute2)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian packages start system services; this benchmark runs its own processes only.

cargo build --release --locked --bin tierlb
# --sustained: the 60 s new-connection test through network namespaces (benches/sustained.py).
if [ "${1:-}" = "--sustained" ]; then
  shift
  exec timeout 3600 python3 benches/sustained.py "$@"
fi
# --sni: TLS clients routed by server name, beside HAProxy's req.ssl_sni and nginx's
# ssl_preread (benches/sni.py).
if [ "${1:-}" = "--sni" ]; then
  shift
  exec timeout 3600 python3 benches/sni.py "$@"
fi
# --udp: UDP services beside nginx's `listen ... udp` (benches/udp.py).
if [ "${1:-}" = "--udp" ]; then
  shift
  exec timeout 3600 python3 benches/udp.py "$@"
fi
exec timeout 3600 python3 benches/compare.py "$@"
