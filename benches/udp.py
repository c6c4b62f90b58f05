#!/usr/bin/env python3
"""UDP services side by side: tierlb (protocol = "udp") and nginx `stream` (`listen ... udp`),
on the same three UDP echo nodes, each proxy pinned alone to one core with one thread, the load
and the nodes on the other, interleaved over several rounds. The load and the nodes read in
batches and the load sends every flow from one socket (flow i from its own loopback address), so
that they cost far less per datagram than a proxy and the proxy's core is the limit.

Measured per proxy, round, flow count (1 and 1,000 client sockets, one request in flight each)
and datagram size (64 and 1,200 bytes): answered datagrams per second (each a request and its
reply through the proxy) and the proxy's CPU time per answered datagram; then the RSS per flow
with FLOWS idle flows held (tierlb with `max_flows` above them; nginx with `proxy_timeout` long
enough to keep its sessions). Prints one Markdown table of medians with ratios to nginx.

    bash benches/compare.sh --udp [--rounds 3] [--seconds 5] [--flows 16000]

Every process it starts is recorded and ended by PID; all traffic stays on 127.0.0.1.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the helpers of the main comparison)

SIZES = (64, 1200)
# Descriptors for every process started here (root may raise its hard limit this far).
FD_LIMIT = 262144
FLOWS = (1, 1000)


def tool():
    """The udp bench tool's binary, built in release mode."""
    out = subprocess.run(["cargo", "bench", "--bench", "udp", "--no-run", "--message-format=json"],
                         cwd=compare.ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "udp" \
                and msg.get("executable"):
            return msg["executable"]
    raise RuntimeError("no udp bench binary")


def config(work, kind, port, nodes, flows):
    path = os.path.join(work, f"{kind}-{port}.conf")
    if kind == "tierlb":
        listed = ", ".join(f'"{n}"' for n in nodes)
        text = (f'threads = 1\n[services.u]\nlisten = "127.0.0.1:{port}"\nprotocol = "udp"\n'
                f'max_flows = {flows + 1000}\nnodes = [{listed}]\n'
                '[services.u.health]\ninterval = "2s"\n[services.u.timeouts]\nflow_idle = "10m"\n')
        argv = [compare.TIERLB, "-c", path]
    else:
        servers = "".join(f"    server {n};\n" for n in nodes)
        # Each session is two of nginx's connections: room for the idle flows' row.
        head = compare.nginx_head(work, f"nginx-{port}").replace(
            str(compare.FD_LIMIT - 100), str(FD_LIMIT - 100)).replace(str(compare.FD_LIMIT), str(FD_LIMIT))
        text = (head +
                f"stream {{\n  upstream be {{\n    least_conn;\n{servers}  }}\n"
                f"  server {{\n    listen 127.0.0.1:{port} udp;\n    proxy_pass be;\n"
                "    proxy_timeout 10m;\n  }\n}\n")
        argv = ["nginx", "-p", work, "-e", f"{work}/nginx-{port}.err", "-c", path]
    with open(path, "w") as f:
        f.write(text)
    return argv


def wait_udp(port, limit=10.0):
    """Waits until a datagram to the proxy is answered (it serves)."""
    import socket
    deadline = time.monotonic() + limit
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(b"up?", ("127.0.0.1", port))
            try:
                s.recvfrom(64)
                return
            except OSError:
                pass
    raise RuntimeError(f"nothing answers UDP on 127.0.0.1:{port} after {limit}s")


def measure(procs, work, kind, nodes, binary, args):
    port = compare.free_port()
    proxy = procs.start(f"{kind}-{port}", config(work, kind, port, nodes, args.flows), args.proxy_cpu)
    wait_udp(port)
    r = {}
    for flows in FLOWS:
        for size in SIZES:
            cpu0 = compare.cpu_seconds(proxy.pid)
            out = subprocess.run(["taskset", "-c", str(args.load_cpu), binary, "load",
                                  f"127.0.0.1:{port}", str(flows), str(size), str(args.seconds)],
                                 check=True, capture_output=True, text=True,
                                 timeout=args.seconds + 60).stdout
            cpu = compare.cpu_seconds(proxy.pid) - cpu0
            got = json.loads(out)
            answered = max(got["answered"], 1)
            r[f"rate_{flows}_{size}"] = got["answered_per_s"]
            r[f"cpu_{flows}_{size}"] = cpu * 1e6 / answered
            r[f"resent_{flows}_{size}"] = got["resent"]
    procs.stop(proxy)
    if args.flows:
        # A fresh proxy: the load's flows would still be in its table.
        port = compare.free_port()
        proxy = procs.start(f"{kind}-{port}", config(work, kind, port, nodes, args.flows), args.proxy_cpu)
        wait_udp(port)
        time.sleep(0.5)
        base = compare.rss_kib(proxy.pid)
        holder = subprocess.Popen(["taskset", "-c", str(args.load_cpu), binary, "hold",
                                   f"127.0.0.1:{port}", str(args.flows)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = holder.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"the holder did not open its flows: {line!r}")
            time.sleep(1)
            r["flow_bytes"] = (compare.rss_kib(proxy.pid) - base) * 1024 / args.flows
        finally:
            holder.stdin.close()
            holder.wait(timeout=60)
        procs.stop(proxy)
    return r


ROWS = [(f"rate_{f}_{s}", f"datagrams/s, {f:,} flow{'s' if f > 1 else ''}, {s} B", "{:,.0f}")
        for f in FLOWS for s in SIZES] + \
       [(f"cpu_{f}_{s}", f"CPU µs / datagram, {f:,} flow{'s' if f > 1 else ''}, {s} B", "{:.2f}")
        for f in FLOWS for s in SIZES] + \
       [("flow_bytes", "bytes of RSS per idle flow", "{:,.0f}")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--flows", type=int, default=16000,
                    help="idle flows for the memory row (0: skip); each takes a descriptor in "
                         "the proxy, so the open-files limit bounds it")
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    args = ap.parse_args()
    with open("/proc/sys/fs/nr_open") as f:
        limit = min(FD_LIMIT, int(f.read()))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        print(f"descriptor limit {hard} (not root?): fewer idle flows may fit", file=sys.stderr)
    binary = tool()
    work = tempfile.mkdtemp(prefix="tierlb-udp-")
    procs = compare.Procs(work)
    results = {"tierlb": [], "nginx": []}
    try:
        for i in range(3):
            procs.start(f"echo-{i}", [binary, "echo", "127.0.0.1:0"], args.load_cpu)
        time.sleep(0.5)
        nodes = []
        for i in range(3):
            with open(os.path.join(work, f"echo-{i}.log")) as f:
                nodes.append(f.readline().strip())
        for round_ in range(args.rounds):
            order = ["tierlb", "nginx"] if round_ % 2 == 0 else ["nginx", "tierlb"]
            for kind in order:
                print(f"round {round_ + 1}/{args.rounds}: {kind}", file=sys.stderr)
                r = measure(procs, work, kind, nodes, binary, args)
                print("  " + json.dumps(r), file=sys.stderr)
                results[kind].append(r)
    finally:
        procs.stop_all()
    print("| metric | tierlb | nginx |\n|---|---|---|")
    for key, label, fmt in ROWS:
        vals = {k: [r[key] for r in v if key in r] for k, v in results.items()}
        if not all(vals.values()):
            continue
        med = {k: statistics.median(v) for k, v in vals.items()}
        ratio = med["tierlb"] / med["nginx"] if med["nginx"] else float("nan")
        print(f"| {label} | {fmt.format(med['tierlb'])} ({ratio:.2f}×) | {fmt.format(med['nginx'])} |")


if __name__ == "__main__":
    main()
