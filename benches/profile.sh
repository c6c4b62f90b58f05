#!/usr/bin/env bash
# Where a proxy's time goes per new connection and per keep-alive request, for tierlb and
# HAProxy side by side (one nginx node on 127.0.0.1, the proxy pinned alone to CPU 0 with one
# thread, the load on CPU 1):
#   - user and system CPU µs per request (/proc/PID/stat around a 5 s wrk run, -c50);
#   - user-space instructions per request (valgrind --tool=callgrind, 10 s of wrk -c4):
#     exact and repeatable, so it compares builds where this VM's timing noise cannot;
#   - system calls per new connection (strace -c -f, 5 s of wrk -c20).
#
#   bash benches/profile.sh [TIERLB_BINARY]
#
# Installs what it lacks (Debian), ends only the processes it started, traffic on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=benches/need.sh
source benches/need.sh
need haproxy nginx wrk valgrind strace taskset ss
if [ $# -ge 1 ]; then
  tierlb=$(realpath "$1")
else
  cargo build --release --locked --bin tierlb
  tierlb=$(realpath target/release/tierlb)
fi

work=$(mktemp -d /tmp/tierlb-profile-XXXXXX)
node_port=18580
proxy_port=18500
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

cat >"$work/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_timeout 300s; keepalive_requests 1000000;
  server { listen 127.0.0.1:$node_port backlog=4096; location / { return 200 "ok\n"; } } }
EOF
cat >"$work/tierlb.toml" <<EOF
listen = "127.0.0.1:$proxy_port"
threads = 1
nodes = ["127.0.0.1:$node_port"]
EOF
cat >"$work/haproxy.cfg" <<EOF
global
  maxconn 9000
  nbthread 1
defaults
  mode tcp
  timeout connect 1s
  timeout client 1h
  timeout server 1h
frontend fe
  bind 127.0.0.1:$proxy_port
  default_backend be
backend be
  balance leastconn
  server n1 127.0.0.1:$node_port
EOF

# Waits (at most 10 s) until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 1 100); do
    ss -ltn | grep -q "127.0.0.1:$1 " && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  exit 1
}

for port in $node_port $proxy_port; do
  if ss -ltn | grep -q "127.0.0.1:$port "; then
    echo "127.0.0.1:$port is taken (a proxy or node left running?): free it first" >&2
    exit 1
  fi
done
taskset -c 1 nginx -c "$work/nginx.conf" &
pids+=($!)
wait_port $node_port

proxy_cmd() {
  case $1 in
    tierlb) echo "$tierlb -c $work/tierlb.toml" ;;
    haproxy) echo "haproxy -db -f $work/haproxy.cfg" ;;
  esac
}
# Runs wrk against the proxy: wrk_run MODE CONNECTIONS SECONDS, MODE nc (each request on a
# new connection) or ka (keep-alive); prints the request count.
wrk_run() {
  local header=()
  [ "$1" = nc ] && header=(-H "Connection: close")
  taskset -c 1 wrk -t1 -c"$2" -d"$3"s "${header[@]}" "http://127.0.0.1:$proxy_port/" | awk '/requests in/{print $1}'
}

echo "| proxy | test | requests | user µs | system µs | system share | instructions per request |"
echo "|---|---|---|---|---|---|---|"
for proxy in tierlb haproxy; do
  for mode in nc ka; do
    # shellcheck disable=SC2046
    taskset -c 0 $(proxy_cmd $proxy) >/dev/null 2>&1 &
    pid=$!
    pids+=($pid)
    wait_port $proxy_port
    read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
    reqs=$(wrk_run $mode 50 5)
    read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
    kill $pid
    wait $pid 2>/dev/null || true
    while ss -ltn | grep -q "127.0.0.1:$proxy_port "; do sleep 0.1; done

    out="$work/$proxy.$mode.callgrind"
    # shellcheck disable=SC2046
    valgrind --tool=callgrind --callgrind-out-file="$out" $(proxy_cmd $proxy) >"$work/$proxy.$mode.valgrind" 2>&1 &
    pid=$!
    pids+=($pid)
    wait_port $proxy_port
    cg_reqs=$(wrk_run $mode 4 10)
    kill -TERM $pid
    wait $pid 2>/dev/null || true
    ir=$(grep -E "^(summary|totals):" "$out" | head -1 | awk '{print $2}')
    while ss -ltn | grep -q "127.0.0.1:$proxy_port "; do sleep 0.1; done

    python3 -c "
tck = $(getconf CLK_TCK); r = $reqs
u = ($u1 - $u0) / tck * 1e6 / r; s = ($s1 - $s0) / tck * 1e6 / r
print(f'| $proxy | $mode | {r:,} | {u:.1f} | {s:.1f} | {100 * s / (u + s):.0f} % | {$ir // $cg_reqs:,} |')"
  done
done

echo
echo "system calls per new connection (strace -c -f, wrk -c20 with Connection: close, 5 s):"
for proxy in tierlb haproxy; do
  # shellcheck disable=SC2046
  taskset -c 0 $(proxy_cmd $proxy) >/dev/null 2>&1 &
  pid=$!
  pids+=($pid)
  wait_port $proxy_port
  strace -c -f -p $pid -o "$work/$proxy.strace" 2>/dev/null &
  spid=$!
  sleep 0.5
  reqs=$(wrk_run nc 20 5)
  kill -INT $spid
  wait $spid 2>/dev/null || true
  kill $pid
  wait $pid 2>/dev/null || true
  while ss -ltn | grep -q "127.0.0.1:$proxy_port "; do sleep 0.1; done
  # Columns: % time, seconds, usecs/call, calls, [errors,] syscall; the last line is the total.
  awk -v r="$reqs" -v p="$proxy" '
    $NF == "total" { total = $4 }
    NR > 2 && $1 ~ /^[0-9.]+$/ && $NF != "total" { calls[$NF] = $4 }
    END {
      line = sprintf("%s: %.1f per connection:", p, total / r)
      for (c in calls) if (calls[c] / r >= 0.01) line = line sprintf(" %s %.2f", c, calls[c] / r)
      print line
    }' "$work/$proxy.strace"
done
echo "details: $work"
