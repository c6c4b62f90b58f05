#!/usr/bin/env python3
"""Regression guard for the data path: this build against another commit's (or binary), on a
machine that need not be quiet.

    bash benches/regress.sh COMMIT [--rounds 3] [--seconds 5]
    python3 benches/regress.py --baseline BIN [--rounds 3] [--seconds 5] [--tierlb BIN]

Two measures, both interleaved so that drift of the machine falls on both builds alike:

1. Timing: benches/compare.py with the two builds as its 'tierlb' and 'baseline' columns,
   alternating each round (keep-alive req/s and CPU µs per request, new connections/s and CPU
   µs per connection, bulk throughput). Read within the noise the table states.
2. Counts, which do not depend on the machine's load: each build runs under
   `valgrind --tool=callgrind --cache-sim=yes` (32 KiB first level, 1 MiB last level); once it
   listens its counters are zeroed, wrk sends keep-alive requests over 50 connections (then,
   in a second run, one request per new connection) for a fixed time, and the counters are
   dumped. Per request: instructions (Ir), first-level data
   cache misses (D1mr + D1mw), last-level misses (ILmr + DLmr + DLmw), and I1 misses. The
   runs alternate A, B, A, B over the rounds and the table shows each median.

One nginx node on 127.0.0.1 serves a tiny HTTP answer; the proxy runs with one thread on
CPU 0, the load on CPU 1. Every process started is ended by PID; traffic stays on 127.0.0.1.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
import compare  # noqa: E402  (free_port, wait_port, Procs)

# wrk's connections in the counted runs: as many as the timed runs, so that the connections'
# state is as large a working set as there.
CONNECTIONS = 50
# The simulated caches, fixed so that counts compare across machines: a 32 KiB 8-way first
# level (64-byte lines) and a 1 MiB 16-way last level.
D1 = "32768,8,64"
LL = "1048576,16,64"


def counted_run(procs, work, binary, node, mode, seconds, tag):
    """One callgrind run of `binary` under `mode` ('ka' or 'nc'); returns (requests, events)."""
    port = compare.free_port()
    conf = os.path.join(work, f"{tag}.toml")
    with open(conf, "w") as f:
        f.write(f'listen = "127.0.0.1:{port}"\nthreads = 1\nnodes = ["127.0.0.1:{node}"]\n')
    out = os.path.join(work, f"{tag}.callgrind")
    proc = procs.start(tag, ["valgrind", "--tool=callgrind", "--cache-sim=yes", f"--D1={D1}", f"--LL={LL}",
                             f"--callgrind-out-file={out}", binary, "-c", conf], 0)
    compare.wait_port(port, limit=60.0)
    # Start-up (config, runtime, probes' first round) is not the data path: counted from here.
    subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
    header = ["-H", "Connection: close"] if mode == "nc" else []
    wrk = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", *header,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=seconds + 60)
    requests = int(re.search(r"(\d+) requests in", wrk.stdout).group(1))
    subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
    procs.stop(proc)
    dumps = sorted(p for p in os.listdir(work) if p.startswith(f"{tag}.callgrind."))
    with open(os.path.join(work, dumps[0])) as f:
        text = f.read()
    names = re.search(r"^events: (.*)$", text, re.M).group(1).split()
    totals = [int(v) for v in re.search(r"^(?:summary|totals): (.*)$", text, re.M).group(1).split()]
    return requests, dict(zip(names, totals))


def per_request(requests, events):
    return {
        "instructions": events["Ir"] / requests,
        "D1 misses": (events["D1mr"] + events["D1mw"]) / requests,
        "LL misses": (events["ILmr"] + events["DLmr"] + events["DLmw"]) / requests,
        "I1 misses": events["I1mr"] / requests,
    }


def counts(binaries, rounds, seconds):
    work = tempfile.mkdtemp(prefix="tierlb-regress-")
    procs = compare.Procs(work)
    results = {(name, mode): [] for name in binaries for mode in ("ka", "nc")}
    try:
        node = compare.free_port()
        conf = os.path.join(work, "node.conf")
        with open(conf, "w") as f:
            f.write(f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {work}/node.pid;\n"
                    f"error_log {work}/node.err warn;\nevents {{ worker_connections 4096; }}\n"
                    "http { access_log off; keepalive_timeout 300s; keepalive_requests 100000000;\n"
                    f"  server {{ listen 127.0.0.1:{node} backlog=4096; location / {{ return 200 \"ok\\n\"; }} }} }}\n")
        procs.start("node", ["nginx", "-p", work, "-e", f"{work}/node.err", "-c", conf], 1)
        compare.wait_port(node)
        for rnd in range(rounds):
            for mode in ("ka", "nc"):
                for name, binary in binaries.items():
                    tag = f"{name}-{mode}-{rnd}"
                    print(f"callgrind round {rnd + 1}/{rounds}: {name} {mode}", file=sys.stderr, flush=True)
                    requests, events = counted_run(procs, work, binary, node, mode, seconds, tag)
                    results[(name, mode)].append(per_request(requests, events))
    finally:
        procs.stop_all()
    return results


def table(results, names):
    lines = ["| per request (callgrind, median) | " + " | ".join(names) + " | ratio |",
             "|---|" + "---|" * (len(names) + 1)]
    for mode, label in (("ka", "keep-alive"), ("nc", "new connection")):
        for metric in ("instructions", "D1 misses", "LL misses", "I1 misses"):
            values = [statistics.median(r[metric] for r in results[(n, mode)]) for n in names]
            ratio = f"{values[0] / values[1]:.3f}×" if values[1] else "—"
            lines.append(f"| {label}: {metric} | " + " | ".join(f"{v:,.1f}" for v in values) + f" | {ratio} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, metavar="BIN", help="the tierlb binary to compare against")
    ap.add_argument("--tierlb", metavar="BIN", default=os.path.join(ROOT, "target", "release", "tierlb"),
                    help="the build under test (default: target/release/tierlb)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="length of each timed run and counted run")
    ap.add_argument("--no-timing", action="store_true", help="counts only")
    args = ap.parse_args()
    binaries = {"this": os.path.abspath(args.tierlb), "baseline": os.path.abspath(args.baseline)}
    if not args.no_timing:
        subprocess.run([sys.executable, os.path.join(ROOT, "benches", "compare.py"), "--rounds", str(args.rounds),
                        "--seconds", str(args.seconds), "--idle", "0", "--only", "tierlb",
                        "--tierlb", binaries["this"], "--baseline", binaries["baseline"]], check=True, timeout=3600)
    started = time.monotonic()
    results = counts(binaries, args.rounds, args.seconds)
    print(f"\ncallgrind --cache-sim=yes, wrk -c{CONNECTIONS} for {args.seconds} s per run, {args.rounds} runs per build "
          f"and mode, interleaved ({time.monotonic() - started:.0f} s):\n")
    print(table(results, list(binaries)))


if __name__ == "__main__":
    main()
