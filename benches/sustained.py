#!/usr/bin/env python3
"""Sustained new connections, clients closing first, through a veth pair between two network
namespaces this script makes (and removes): a client namespace running benches/churn.rs, and
a proxy namespace holding the proxy and one nginx node on its loopback, with
net.ipv4.tcp_tw_reuse = 0 there, so TIME_WAIT on the proxy's outgoing ports is never reused.
Each proxy gets a fresh pair of namespaces (no TIME_WAIT left from the one before).

Reports, per proxy: new connections/s in the first and the last 10 s, failed connects and
clients left unanswered, and TIME_WAIT sockets on each side at the end.

    bash benches/compare.sh --sustained [--seconds 60] [--workers 64] [--only tierlb,haproxy]

Run as root (namespaces). The proxies: tierlb (the release build), tierlb with
net.ipv4.tcp_tw_reuse = 1 in its namespace (the host tuning docs/performance.md gives: a
TIME_WAIT port is reused for a new connection to the node once it is a second old), tierlb
with four `source` addresses (127.0.0.1-4: four port ranges towards the node), HAProxy 2.6
(mode tcp). Every setting here is safe: none cuts a connection short.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

CLIENT_IP, PROXY_IP, PORT, NODE_PORT = "10.78.0.1", "10.78.0.2", 18000, 18080


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check).stdout


class Pair:
    """Two namespaces joined by a veth pair; removed on exit."""

    def __init__(self, tag, tw_reuse):
        self.cli, self.lb = f"tlbs-cli-{tag}", f"tlbs-lb-{tag}"
        self.tw_reuse = tw_reuse

    def __enter__(self):
        for ns in (self.cli, self.lb):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "tlbs-c", "netns", self.cli, "type", "veth", "peer", "name", "tlbs-l",
           "netns", self.lb)
        for ns, dev, ip in ((self.cli, "tlbs-c", CLIENT_IP), (self.lb, "tlbs-l", PROXY_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        # The proxy's side: no TIME_WAIT reuse (unless the run is about it), the default port
        # range. The clients may reuse theirs, so that only the proxy's side can run out.
        self.sysctl(self.lb, "net.ipv4.tcp_tw_reuse", self.tw_reuse)
        self.sysctl(self.cli, "net.ipv4.tcp_tw_reuse", "1")
        self.sysctl(self.cli, "net.ipv4.ip_local_port_range", "1024 65535")
        return self

    def sysctl(self, ns, key, value):
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")

    def spawn(self, ns, argv, log):
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log, stderr=log)

    def time_wait(self, ns):
        return len(sh("ip", "netns", "exec", ns, "ss", "-Htan", "state", "time-wait").splitlines())

    def __exit__(self, *exc):
        for ns in (self.cli, self.lb):
            sh("ip", "netns", "pids", ns, check=False)
            for pid in sh("ip", "netns", "pids", ns, check=False).split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)


def wait_port(pair, ns, ip, port, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if subprocess.run(["ip", "netns", "exec", ns, "bash", "-c", f"exec 3<>/dev/tcp/{ip}/{port}"],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {ip}:{port} in {ns}")


def proxy_argv(kind, work, tierlb):
    listen, node = f"{PROXY_IP}:{PORT}", f"127.0.0.1:{NODE_PORT}"
    if kind.startswith("tierlb"):
        extra = {
            "tierlb+source": 'source = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]\n',
        }.get(kind, "")
        path = os.path.join(work, f"{kind}.toml")
        with open(path, "w") as f:
            f.write(f'listen = "{listen}"\nthreads = 1\n{extra}nodes = ["{node}"]\n')
        return ["taskset", "-c", "0", tierlb, "-c", path]
    path = os.path.join(work, "haproxy.cfg")
    with open(path, "w") as f:
        f.write("global\n  maxconn 9000\n  nbthread 1\n"
                "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n"
                f"frontend fe\n  bind {listen}\n  default_backend be\n"
                f"backend be\n  balance leastconn\n  server n1 {node}\n")
    return ["taskset", "-c", "0", "haproxy", "-f", path]


def run(kind, args, work, tierlb, churn):
    with Pair(os.getpid(), "1" if kind.endswith("+reuse") else "0") as pair:
        log = open(os.path.join(work, f"{kind}.log"), "w")
        conf = os.path.join(work, "node.conf")
        with open(conf, "w") as f:
            f.write(f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {work}/node.pid;\n"
                    f"error_log {work}/node.err warn;\nworker_rlimit_nofile 20000;\n"
                    "events { worker_connections 19000; }\n"
                    "http { access_log off; keepalive_timeout 300s; keepalive_requests 1000000;\n"
                    f"  server {{ listen 127.0.0.1:{NODE_PORT} backlog=4096; location / {{ return 200 \"ok\\n\"; }} }} }}\n")
        pair.spawn(pair.lb, ["taskset", "-c", "1", "nginx", "-p", work, "-c", conf], log)
        wait_port(pair, pair.lb, "127.0.0.1", NODE_PORT)
        proxy = pair.spawn(pair.lb, proxy_argv(kind, work, tierlb), log)
        wait_port(pair, pair.cli, PROXY_IP, PORT)
        out = subprocess.run(["ip", "netns", "exec", pair.cli, "taskset", "-c", "1", churn, f"{PROXY_IP}:{PORT}",
                              str(args.seconds), str(args.workers)], capture_output=True, text=True,
                             timeout=args.seconds + 60).stdout
        result = json.loads(out.strip().splitlines()[-1])
        with open(os.path.join(work, f"{kind}.json"), "w") as f:
            json.dump(result, f)
        result["tw_proxy"] = pair.time_wait(pair.lb)
        result["tw_client"] = pair.time_wait(pair.cli)
        proxy.kill()
        log.close()
        return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--only", default="tierlb,tierlb+reuse,tierlb+source,haproxy")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the sustained test makes network namespaces: run it as root")
    tierlb = os.path.abspath("target/release/tierlb")
    built = sh("cargo", "bench", "--bench", "churn", "--no-run", "--locked") + \
        subprocess.run(["cargo", "bench", "--bench", "churn", "--no-run", "--locked"],
                       capture_output=True, text=True).stderr
    churn = re.search(r"\((target/release/deps/churn-[0-9a-f]+)\)", built).group(1)
    work = tempfile.mkdtemp(prefix="tierlb-sustained-")
    rows = []
    for kind in args.only.split(","):
        print(f"{kind}: {args.seconds} s ...", file=sys.stderr)
        rows.append((kind, run(kind, args, work, tierlb, os.path.abspath(churn))))
    print(f"\nsustained, clients closing first: {args.seconds} s, {args.workers} client workers, one node; "
          "proxy namespace with tcp_tw_reuse = 0 (1 for +reuse)\n")
    print("| proxy | new conn/s, first 10 s | new conn/s, last 10 s | failed connects | unanswered | TIME_WAIT proxy side | TIME_WAIT client side |")
    print("|---|---|---|---|---|---|---|")
    for kind, r in rows:
        print(f"| {kind} | {r['first10_rate']:,} | {r['last10_rate']:,} | {r['connect_failed']} | "
              f"{r['no_answer']} | {r['tw_proxy']:,} | {r['tw_client']:,} |")
    print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
