#!/usr/bin/env python3
"""Gossip traffic of a tierlb cluster: bytes per second each instance sends.

Starts INSTANCES real tierlb processes on 127.0.0.1 (release build), each with SERVICES
services of NODES nodes (greeting listeners run by this script), joined in one cluster, and
reads `tierlb_cluster_bytes_total{direction="sent"}` from each admin endpoint over a window:
first idle (nothing changes but heartbeats), then with clients churning through every
instance, so that active counts change all the time and are republished every interval;
then with SOURCES client addresses (127.1.x.y) holding two connections each on every
instance under `max_per_source = 10`, so that every source is heavy and each instance
publishes its 100 heaviest per service.

    python3 benches/gossip.py [--instances 3] [--services 3] [--nodes 100] [--seconds 20] [--sources 1000]
"""

import argparse
import os
import random
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "tierlb")
SECRET = "gossip-benchmark-secret-of-more-than-32-bytes"


def listeners(count):
    """COUNT listening sockets that greet and then hold each connection until it closes, all
    served by one selector thread (thousands of held connections cost no thread each)."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "listener")
        socks.append(s)

    def serve():
        while True:
            for key, _ in sel.select():
                if key.data == "listener":
                    try:
                        conn, _ = key.fileobj.accept()
                        conn.setblocking(False)
                        conn.send(b"hi\n")
                        sel.register(conn, selectors.EVENT_READ, "conn")
                    except OSError:
                        pass
                    continue
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()

    threading.Thread(target=serve, daemon=True).start()
    return [s.getsockname() for s in socks]


def config(name, nodes, services, peers, limits):
    node_list = ", ".join(f'"{h}:{p}"' for h, p in nodes)
    text = limits + "[health]\ninterval = \"2s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n"
    text += f'[cluster]\nname = "{name}"\nlisten = "127.0.0.1:0"\nsecret = "{SECRET}"\n'
    text += "peers = [" + ", ".join(f'"{p}"' for p in peers) + "]\n\n"
    for i in range(services):
        text += f'[services.s{i}]\nlisten = "127.0.0.1:0"\nnodes = [{node_list}]\n\n'
    return text


def start(name, text, workdir):
    path = os.path.join(workdir, f"{name}.toml")
    with open(path, "w") as f:
        f.write(text)
    proc = subprocess.Popen([BINARY, "-c", path], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RUST_LOG": "tierlb=info"})
    found = {"services": [], "admin": None, "gossip": None}
    deadline = time.time() + 15
    while time.time() < deadline and not (found["admin"] and found["gossip"]):
        line = proc.stderr.readline()
        m = re.search(r"addr=(\S+)", line)
        if not m:
            continue
        if "cluster gossip listening" in line:
            found["gossip"] = m.group(1)
        elif "admin listening" in line:
            found["admin"] = m.group(1)
        elif "listening" in line:
            found["services"].append(m.group(1))
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, found


def sent_bytes(admin):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    m = re.search(r'^tierlb_cluster_bytes_total\{direction="sent"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def alive(admin):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    m = re.search(r'^tierlb_cluster_members\{state="alive"\} (\S+)$', text, re.M)
    return int(float(m.group(1))) if m else 0


def window(instances, seconds):
    before = [sent_bytes(i["admin"]) for _, i in instances]
    time.sleep(seconds)
    after = [sent_bytes(i["admin"]) for _, i in instances]
    return [(a - b) / seconds for a, b in zip(after, before)]


def churn(addresses, stop):
    """Clients that connect, hold a moment and close, through every service of every instance."""
    def client(addr):
        host, port = addr.rsplit(":", 1)
        while not stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=2) as s:
                    s.recv(16)
                    time.sleep(0.05)
            except OSError:
                time.sleep(0.05)
    for addr in addresses:
        for _ in range(4):
            threading.Thread(target=client, args=(addr,), daemon=True).start()


def hold_sources(addresses, sources, per_instance):
    """SOURCES client addresses (127.1.x.y), each holding PER_INSTANCE connections on every
    instance, to one service each (source i to service i mod the number of services)."""
    held = []
    for i in range(sources):
        src = f"127.1.{i // 250}.{i % 250 + 1}"
        for services in addresses:
            host, port = services[i % len(services)].rsplit(":", 1)
            for _ in range(per_instance):
                held.append(open_from(src, host, int(port)))
    return held


def open_from(src, host, port):
    s = socket.socket()
    s.bind((src, 0))
    s.connect((host, port))
    return s


def churn_sources(held, stop):
    """Every 100 ms, 50 held connections closed and opened again from the same source to the
    same service: the heavy sources' counts change at every gossip interval, so every
    instance republishes them every interval (the most gossip they can cost)."""
    rng = random.Random(1)
    while not stop.is_set():
        for k in rng.sample(range(len(held)), 50):
            old = held[k]
            src, dst = old.getsockname()[0], old.getpeername()
            old.close()
            try:
                held[k] = open_from(src, *dst)
            except OSError:
                held[k] = socket.socket()
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--services", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--sources", type=int, default=1000,
                    help="client addresses holding connections in the third window (0: none)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Every source over a tenth of max_per_source on every instance: each publishes its
    # heaviest 100 per service, the most it ever publishes.
    limits = 'max_per_source = 10\nrate_per_source = "20/s"\n' if args.sources else ""
    if not os.access(BINARY, os.X_OK):
        sys.exit(f"build first: cargo build --release ({BINARY} is missing)")
    nodes = listeners(args.nodes)
    workdir = tempfile.mkdtemp(prefix="tierlb-gossip-")
    instances = []
    try:
        first = None
        for i in range(args.instances):
            peers = [first] if first else []
            proc, found = start(f"lb{i}", config(f"lb{i}", nodes, args.services, peers, limits), workdir)
            instances.append((proc, found))
            first = first or found["gossip"]
        deadline = time.time() + 30
        while time.time() < deadline and not all(alive(i["admin"]) == args.instances for _, i in instances):
            time.sleep(0.2)
        time.sleep(3)  # the initial state transfer done
        idle = window(instances, args.seconds)
        stop = threading.Event()
        churn([a for _, i in instances for a in i["services"]], stop)
        time.sleep(2)
        busy = window(instances, args.seconds)
        stop.set()
        time.sleep(2)
        heavy = None
        if args.sources:
            held = hold_sources([i["services"] for _, i in instances], args.sources, 2)
            time.sleep(3)  # the counts published and their windows settled
            steady = window(instances, args.seconds)
            stop = threading.Event()
            threading.Thread(target=churn_sources, args=(held, stop), daemon=True).start()
            time.sleep(2)
            heavy = (steady, window(instances, args.seconds))
            stop.set()
            time.sleep(0.5)
            for s in held:
                s.close()
        shape = f"{args.instances} instances x {args.services} services x {args.nodes} nodes"
        print(f"gossip sent per instance ({shape}, {args.seconds:.0f} s windows, interval 200ms):")
        print("  idle:  " + ", ".join(f"{b:,.0f} B/s" for b in idle))
        print("  churn: " + ", ".join(f"{b:,.0f} B/s" for b in busy))
        if heavy:
            print(f"  {args.sources:,} sources holding 2 connections each per instance (max_per_source 10: all heavy, 100 per service published):")
            print("    held:     " + ", ".join(f"{b:,.0f} B/s" for b in heavy[0]))
            print("    churning: " + ", ".join(f"{b:,.0f} B/s" for b in heavy[1]))
    finally:
        for proc, _ in instances:
            proc.terminate()
        for proc, _ in instances:
            proc.wait(timeout=40)


if __name__ == "__main__":
    main()
