#!/usr/bin/env python3
"""Fault run: three echo nodes (separate processes) behind tierlb under steady load, each node
failed in turn, and what clients saw.

Each fault hits the node taking the most new connections at that moment (least connections
sends short clients to the nodes holding the fewest of the long-lived streams), so that every
fault is felt.

Load: --rate new short connections a second (connect, send a line, read the node's answer,
close; 3 s limit) and 6 long-lived streams (a line every 100 ms). The client speaks first, as
in HTTP: what `[timeouts] response` is for. Faults, one
after another, each held --hold seconds and then undone:

  kill      SIGKILL, then the node is started again on its port
  blackhole its port drops every packet (an nftables table this script makes and removes;
            skipped, with the reason, where nft is missing)
  freeze    SIGSTOP (its kernel still completes handshakes), then SIGCONT

For each: the time from the fault to tierlb reporting the node down (polled from /status every
20 ms), the short clients that failed while it lasted, and the recovered node's share of new
connections in the first second after tierlb has it up again (1/3 would be an even share;
least connections without slow start sends nearly everything to the emptiest node).

    python3 benches/faults.py --bin target/release/tierlb [--response 1s] [--slow-start 10s]
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

TABLE = "tierlb_faults"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve_node(name, port):
    """An echo node: answers each line with NAME and the line, until EOF."""
    async def handle(reader, writer):
        try:
            while line := await reader.readline():
                writer.write(name.encode() + b" " + line)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def start_node(name, port):
    return subprocess.Popen([sys.executable, __file__, "--node", name, str(port)])


def status(admin):
    with urllib.request.urlopen(f"http://{admin}/status", timeout=2) as r:
        return json.load(r)


def busiest(admin, ports):
    """The index in `ports` of the node taking the most new connections now."""
    rates = {n["address"]: n["recent"]["connections_per_second"]
             for n in status(admin)["services"][0]["nodes"]}
    return max(range(len(ports)), key=lambda k: rates.get(f"127.0.0.1:{ports[k]}", 0))


def states(admin):
    """address -> up, for the one service."""
    return {n["address"]: n["up"] for n in status(admin)["services"][0]["nodes"]}


class Load:
    """Short clients at a steady rate and a few long-lived streams; every result recorded."""

    def __init__(self, lb_port, rate):
        self.port, self.rate = lb_port, rate
        self.short = []  # (start, node or None)
        self.stream_breaks = 0
        self.running = True

    async def one(self):
        start = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 3)
            try:
                writer.write(b"ping\n")
                answer = (await asyncio.wait_for(reader.readline(), 3)).decode()
                name = answer[:-len(" ping\n")] if answer.endswith(" ping\n") else None
                self.short.append((start, name or None))
            finally:
                writer.close()
        except (OSError, asyncio.TimeoutError):
            self.short.append((start, None))

    async def shorts(self):
        tasks, step, nxt = set(), 1.0 / self.rate, time.monotonic()
        while self.running:
            t = asyncio.ensure_future(self.one())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            nxt += step
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        await asyncio.gather(*tasks)

    async def stream(self):
        while self.running:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                while self.running:
                    writer.write(b"tick\n")
                    if not (await asyncio.wait_for(reader.readline(), 3)).endswith(b" tick\n"):
                        raise OSError("stream ended")
                    await asyncio.sleep(0.1)
                writer.close()
            except (OSError, asyncio.TimeoutError):
                self.stream_breaks += 1
                await asyncio.sleep(0.1)


async def watch(admin, address, want_up, limit):
    """Seconds (monotonic) at which `address` is first seen in state `want_up`, or None."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if (await asyncio.to_thread(states, admin)).get(address) == want_up:
            return time.monotonic()
        await asyncio.sleep(0.02)
    return None


async def wait_listening(port):
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"node on port {port} never listened")


def nft(*args):
    return subprocess.run(["nft", *args], capture_output=True, text=True)


async def run(args):
    work = tempfile.mkdtemp(prefix="tierlb-faults-")
    ports = [free_port() for _ in range(3)]
    names = ["node1", "node2", "node3"]
    nodes = [start_node(n, p) for n, p in zip(names, ports)]
    for p in ports:
        await wait_listening(p)
    lb_port, admin_port = free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    config = os.path.join(work, "tierlb.toml")
    with open(config, "w") as f:
        f.write(f'listen = "127.0.0.1:{lb_port}"\n'
                f'nodes = [{", ".join(f"{chr(34)}127.0.0.1:{p}{chr(34)}" for p in ports)}]\n'
                f'[health]\ninterval = "1s"\ntimeout = "500ms"\nrise = 2\nfall = 3\n'
                f'slow_start = "{args.slow_start}"\n'
                f'[timeouts]\nresponse = "{args.response}"\n'
                f'[admin]\nlisten = "{admin}"\n')
    log = open(os.path.join(work, "tierlb.log"), "w")
    lb = subprocess.Popen([args.bin, "--config", config], stdout=log, stderr=log)
    results = []
    try:
        for _ in range(200):
            try:
                states(admin)
                break
            except OSError:
                await asyncio.sleep(0.05)
        load = Load(lb_port, args.rate)
        runners = [asyncio.ensure_future(load.shorts())] + \
                  [asyncio.ensure_future(load.stream()) for _ in range(6)]
        await asyncio.sleep(3)
        have_nft = shutil.which("nft") is not None
        for kind in ["kill", "blackhole", "freeze"]:
            k = await asyncio.to_thread(busiest, admin, ports)
            address = f"127.0.0.1:{ports[k]}"
            if kind == "blackhole" and not have_nft:
                print("blackhole skipped: nft is not installed", file=sys.stderr)
                continue
            fault = time.monotonic()
            if kind == "kill":
                nodes[k].kill()
                nodes[k].wait()
            elif kind == "blackhole":
                nft("add", "table", "inet", TABLE)
                nft("add", "chain", "inet", TABLE, "out", "{ type filter hook output priority 0 ; }")
                nft("add", "rule", "inet", TABLE, "out", "tcp", "dport", str(ports[k]), "drop")
            else:
                nodes[k].send_signal(signal.SIGSTOP)
            down = await watch(admin, address, False, args.hold)
            await asyncio.sleep(max(0.0, fault + args.hold - time.monotonic()))
            undone = time.monotonic()
            if kind == "kill":
                nodes[k] = start_node(names[k], ports[k])
            elif kind == "blackhole":
                nft("delete", "table", "inet", TABLE)
            else:
                nodes[k].send_signal(signal.SIGCONT)
            # Up for good: up, and still up a second later (a frozen node's connect-only
            # probes can bring it back on probation before it is thawed).
            up = None
            for _ in range(30):
                up = await watch(admin, address, True, 30)
                await asyncio.sleep(1.0)
                if up is None or (await asyncio.to_thread(states, admin)).get(address):
                    break
            await asyncio.sleep(max(0.0, (up or undone) + args.settle - time.monotonic()))
            end = max(up or undone, undone) + 1.0
            failed = sum(1 for s, n in load.short if fault <= s < end and n is None)
            first = [n for s, n in load.short if up and up <= s < up + 1.0]
            share = sum(1 for n in first if n == names[k]) / len(first) if first else 0.0
            results.append((kind, names[k], down and down - fault, up and up - undone,
                            failed, share, len(first)))
        load.running = False
        await asyncio.gather(*runners)
    finally:
        nft("delete", "table", "inet", TABLE) if shutil.which("nft") else None
        lb.send_signal(signal.SIGTERM)
        try:
            lb.wait(timeout=40)
        except subprocess.TimeoutExpired:
            lb.kill()
        for n in nodes:
            n.send_signal(signal.SIGCONT)
            n.kill()
            n.wait()
        log.close()
    total = len(load.short)
    bad = sum(1 for _, n in load.short if n is None)
    print(f"tierlb fault run: {args.rate} new connections/s + 6 streams, response {args.response}, "
          f"slow_start {args.slow_start}, faults held {args.hold}s")
    print("| fault | node | fault → down | undone → up | short clients failed | share in 1st s up |")
    # "undone → up" is 0.00 when the node was already up again when the fault ended: a frozen
    # node's connect-only probes bring it back on probation (the log says when).
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, name, down, up, failed, share, n in results:
        d = f"{down:.2f} s" if down is not None else "never"
        u = f"{up:.2f} s" if up is not None else "never"
        print(f"| {kind} | {name} | {d} | {u} | {failed} | {share:.0%} of {n} |")
    print(f"short clients: {total}, failed {bad}; long-lived stream breaks: {load.stream_breaks}")
    print(f"log: {log.name}")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--node":
        asyncio.run(serve_node(sys.argv[2], int(sys.argv[3])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/tierlb")
    ap.add_argument("--rate", type=int, default=150)
    ap.add_argument("--hold", type=float, default=6.0, help="seconds each fault lasts")
    ap.add_argument("--settle", type=float, default=12.0, help="seconds after recovery before the next fault")
    ap.add_argument("--response", default="1s")
    ap.add_argument("--slow-start", default="10s")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
