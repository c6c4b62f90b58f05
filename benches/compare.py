#!/usr/bin/env python3
"""Side-by-side benchmark: tierlb, HAProxy (mode tcp, leastconn), nginx stream (least_conn)
and a direct connection, on the same local backends, interleaved over several rounds.

Run it through benches/compare.sh, which installs the tools first. Every process it starts is
recorded by PID and ended by PID; all traffic stays on 127.0.0.0/8; every step is bounded.

Layout on a 2-core machine: the proxy under test is pinned alone to PROXY_CPU (one thread);
wrk, iperf3 and the backends share LOAD_CPU.

Measured per proxy and round:
  - keep-alive req/s, p50, p99 (wrk -c50) and the proxy's CPU time per request;
  - new connections/s (wrk with "Connection: close"), p99, and CPU time per connection;
  - bulk throughput, 1 and 4 streams (iperf3 through a proxy whose only node is one iperf3
    server: iperf3's control and data connections must reach the same server);
  - RSS per idle connection (IDLE connections held open, RSS delta / IDLE), the proxy's whole
    RSS while they are held, and new connections/s meanwhile.
The table shows the median over rounds, each figure also as a ratio to HAProxy.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
# The descriptor limit every process started here inherits (set in main).
FD_LIMIT = 65536


_given_ports = set()


def free_port():
    """A port nothing listens on, never the same one twice in a run."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no free port")


def wait_port(port, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {limit}s")


class Procs:
    """Every process started here, ended by PID only."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, name, argv, cpu):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def switches(pid):
    """Context switches (voluntary and not) of every thread of `pid` so far: a proxy that
    sleeps and wakes more per request shows it here, where user-space counts cannot."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def parse_latency(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


def run_wrk(port, seconds, close, cpu):
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", "-c50", f"-d{seconds}s", "--latency",
            "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": requests,
        "p50": parse_latency(lat["50"]),
        "p99": parse_latency(lat["99"]),
        "errors": (errors.group(1) if errors else "") + (f" non2xx {non2xx.group(1)}" if non2xx else ""),
    }


def run_iperf(port, seconds, streams, cpu):
    argv = ["taskset", "-c", str(cpu), "iperf3", "-c", "127.0.0.1", "-p", str(port),
            "-t", str(seconds), "-P", str(streams), "-J"]
    # The proxy's health probe connects to the iperf3 server too; one that lands just as a test
    # starts is taken by the server for the test's control connection, and the test fails
    # ("unable to receive control message"). That is the server's single-client design, not
    # the proxy: such a test is run once more.
    for attempt in range(2):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
        data = json.loads(out)
        if "error" not in data:
            return data["end"]["sum_received"]["bits_per_second"] / 1e9
        if attempt == 0 and "control message" in data["error"]:
            print(f"  iperf3: {data['error']}; once more", file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        raise RuntimeError(f"iperf3: {data['error']}")


IDLE_CLIENT = r"""
import socket, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(n):
    s = socket.socket()
    s.bind(("127.0.0.%d" % (2 + i // 20000), 0))
    s.connect(("127.0.0.1", port))
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def established_to(ports):
    expr = " or ".join(f"dport = :{p}" for p in ports)
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( {expr} )"],
                         capture_output=True, text=True, timeout=30).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def idle_hold(proc, port, backend_ports, count, seconds, cpu):
    """Holds `count` idle connections through the proxy; measures the RSS they cost, then how
    fast the proxy still accepts new connections meanwhile."""
    before = rss_kib(proc.pid)
    client = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", IDLE_CLIENT,
                               str(count), str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        line = client.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError("idle client failed")
        deadline = time.monotonic() + 120
        while established_to(backend_ports) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy did not open every backend connection")
            time.sleep(0.2)
        time.sleep(0.5)
        after = rss_kib(proc.pid)
        busy = run_wrk(port, seconds, True, cpu)
    finally:
        client.stdin.close()
        client.wait(timeout=60)
    return {
        "idle_kib": (after - before) / count,
        "idle_rss_mib": after / 1024,
        "idle_nc_rps": busy["rps"],
    }


# A second tierlb binary to run beside this one (--baseline), e.g. a build of the previous
# commit, so that a change on the data path is measured against what it replaces.
BASELINE = None
# The binary of the 'tierlb' column (--tierlb): this tree's release build unless given.
TIERLB = os.path.join(ROOT, "target", "release", "tierlb")
# Extra top-level config lines for the tierlb column only (--tierlb-config), e.g.
# "access_log = true", to measure what a feature costs against the same binary without it.
TIERLB_EXTRA = ""


def haproxy_head():
    """HAProxy's global and defaults sections, as every comparison runs it: one thread, as
    many connections as the descriptor limit allows, mode tcp."""
    return (f"global\n  nbthread 1\n  maxconn {(FD_LIMIT - 100) // 2}\n"
            "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n")


def nginx_head(work, name):
    """nginx's main and events sections, as every comparison runs it: the stream module, one
    worker in the foreground, its pid and error files in `work` named after `name`."""
    return (f"load_module {NGINX_STREAM_MODULE};\ndaemon off;\nmaster_process off;\n"
            f"worker_processes 1;\nworker_rlimit_nofile {FD_LIMIT};\npid {work}/{name}.pid;\n"
            f"error_log {work}/{name}.err warn;\n"
            f"events {{ worker_connections {FD_LIMIT - 100}; }}\n")


def configs(work, kind, port, nodes):
    """Writes the proxy's config; returns its argv."""
    path = os.path.join(work, f"{kind}-{port}.conf")
    if kind in ("tierlb", "baseline"):
        text = (f'listen = "127.0.0.1:{port}"\nnodes = [{", ".join(chr(34) + n + chr(34) for n in nodes)}]\n'
                'threads = 1\n' + (TIERLB_EXTRA + '\n' if kind == "tierlb" and TIERLB_EXTRA else '') +
                '[health]\ninterval = "2s"\ntimeout = "1s"\nrise = 2\nfall = 3\n')
        binary = BASELINE if kind == "baseline" else TIERLB
        argv = [binary, "-c", path]
    elif kind == "haproxy":
        servers = "".join(f"  server n{i} {n} check inter 2s fall 3 rise 2\n" for i, n in enumerate(nodes))
        text = (haproxy_head() + f"frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n"
                f"backend be\n  balance leastconn\n{servers}")
        argv = ["haproxy", "-db", "-f", path]
    elif kind == "nginx":
        servers = "".join(f"    server {n};\n" for n in nodes)
        text = (nginx_head(work, f"nginx-{port}") +
                f"stream {{\n  upstream be {{\n    least_conn;\n{servers}  }}\n"
                f"  server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    proxy_pass be;\n"
                "    proxy_connect_timeout 1s;\n    proxy_timeout 1h;\n  }\n}\n")
        argv = ["nginx", "-p", work, "-e", f"{work}/nginx-{port}.err", "-c", path]
    else:
        raise ValueError(kind)
    with open(path, "w") as f:
        f.write(text)
    return argv


def start_backends(procs, work, cpu):
    http_ports = [free_port() for _ in range(3)]
    # The same backends behind ports that expect a PROXY header first (--proxy-v2).
    pp_ports = [free_port() for _ in range(3)]
    listens = "".join(f"    listen 127.0.0.1:{p} backlog=4096;\n" for p in http_ports)
    listens += "".join(f"    listen 127.0.0.1:{p} proxy_protocol backlog=4096;\n" for p in pp_ports)
    conf = os.path.join(work, "backends.conf")
    with open(conf, "w") as f:
        f.write(f"daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile {FD_LIMIT};\n"
                f"pid {work}/backends.pid;\nerror_log {work}/backends.err warn;\n"
                f"events {{ worker_connections {FD_LIMIT - 100}; }}\n"
                "http {\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n"
                "  client_header_timeout 300s;\n"
                f"  server {{\n{listens}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n")
    procs.start("backends", ["nginx", "-p", work, "-e", f"{work}/backends.err", "-c", conf], cpu)
    iperf_port = free_port()
    procs.start("iperf3", ["iperf3", "-s", "-p", str(iperf_port)], cpu)
    for p in http_ports + pp_ports + [iperf_port]:
        wait_port(p)
    return http_ports, pp_ports, iperf_port


def measure(procs, work, kind, ports, iperf_port, args):
    r = {}
    http_ports, pp_ports = ports
    # With --proxy-v2 the tierlb column sends PROXY v2 to backends that read it.
    proxied = args.proxy_v2 and kind == "tierlb"
    used = pp_ports if proxied else http_ports
    nodes = [f"127.0.0.1:{p}" for p in used]
    # HTTP: keep-alive, then new connections, against the same proxy process.
    if kind == "direct":
        port, proc = http_ports[0], None
    else:
        port = free_port()
        proc = procs.start(f"{kind}-http", configs(work, kind, port, nodes), args.proxy_cpu)
        wait_port(port)
    try:
        for test, close in (("ka", False), ("nc", True)):
            cpu0 = cpu_seconds(proc.pid) if proc else 0
            cs0 = switches(proc.pid) if proc else 0
            w = run_wrk(port, args.seconds, close, args.load_cpu)
            cpu1 = cpu_seconds(proc.pid) if proc else 0
            cs1 = switches(proc.pid) if proc else 0
            r[f"{test}_rps"] = w["rps"]
            r[f"{test}_p50"] = w["p50"]
            r[f"{test}_p99"] = w["p99"]
            if proc:
                r[f"{test}_cpu_us"] = (cpu1 - cpu0) * 1e6 / max(w["requests"], 1)
                r[f"{test}_cs"] = (cs1 - cs0) / max(w["requests"], 1)
            if w["errors"]:
                print(f"  {kind} {test}: wrk errors: {w['errors']}", file=sys.stderr)
        if proc and args.idle:
            r.update(idle_hold(proc, port, used, args.idle, args.seconds, args.load_cpu))
    finally:
        if proc:
            procs.stop(proc)
    # Bulk: a proxy whose only node is the iperf3 server (which cannot read a PROXY header).
    if proxied or args.no_bulk:
        return r
    if kind == "direct":
        port, proc = iperf_port, None
    else:
        port = free_port()
        proc = procs.start(f"{kind}-bulk", configs(work, kind, port, [f"127.0.0.1:{iperf_port}"]),
                           args.proxy_cpu)
        wait_port(port)
    try:
        r["bulk1"] = run_iperf(port, args.seconds, 1, args.load_cpu)
        r["bulk4"] = run_iperf(port, args.seconds, 4, args.load_cpu)
    finally:
        if proc:
            procs.stop(proc)
    return r


ROWS = [
    ("keep-alive req/s", "ka_rps", "{:,.0f}", True),
    ("keep-alive p50 µs", "ka_p50", "{:,.0f}", False),
    ("keep-alive p99 µs", "ka_p99", "{:,.0f}", False),
    ("CPU µs / request", "ka_cpu_us", "{:.1f}", False),
    ("context switches / request", "ka_cs", "{:.3f}", False),
    ("new conn/s", "nc_rps", "{:,.0f}", True),
    ("new conn p99 µs", "nc_p99", "{:,.0f}", False),
    ("CPU µs / connection", "nc_cpu_us", "{:.1f}", False),
    ("context switches / connection", "nc_cs", "{:.3f}", False),
    ("bulk 1 stream Gbit/s", "bulk1", "{:.2f}", True),
    ("bulk 4 streams Gbit/s", "bulk4", "{:.2f}", True),
    ("KiB / idle connection", "idle_kib", "{:.2f}", False),
    ("RSS with idle held, MiB", "idle_rss_mib", "{:.1f}", False),
    ("new conn/s with idle held", "idle_nc_rps", "{:,.0f}", True),
]


def table(results, kinds):
    med = {k: {} for k in kinds}
    for k in kinds:
        keys = set().union(*(r.keys() for r in results[k]))
        for key in keys:
            med[k][key] = statistics.median(r[key] for r in results[k] if key in r)
    lines = ["| metric | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for label, key, fmt, _ in ROWS:
        cells = []
        base = med.get("haproxy", {}).get(key)
        for k in kinds:
            v = med[k].get(key)
            if v is None:
                cells.append("—")
            elif k != "haproxy" and base:
                cells.append(f"{fmt.format(v)} ({v / base:.2f}×)")
            else:
                cells.append(fmt.format(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10, help="length of each wrk/iperf3 run")
    ap.add_argument("--idle", type=int, default=5000, help="idle connections for the memory test (0: skip)")
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--only", default="tierlb,haproxy,nginx,direct")
    ap.add_argument("--baseline", metavar="BIN",
                    help="another tierlb binary, run as the extra column 'baseline'")
    ap.add_argument("--tierlb", metavar="BIN",
                    help="the binary of the 'tierlb' column (default: target/release/tierlb)")
    ap.add_argument("--tierlb-config", metavar="TOML", default="",
                    help="top-level config lines for the tierlb column only, e.g. 'access_log = true'")
    ap.add_argument("--no-bulk", action="store_true", help="skip the bulk (iperf3) rows")
    ap.add_argument("--proxy-v2", action="store_true",
                    help="the tierlb column sends PROXY v2 to backend ports that read it (no bulk rows)")
    args = ap.parse_args()
    kinds = args.only.split(",")
    global BASELINE, TIERLB, TIERLB_EXTRA
    if args.tierlb:
        TIERLB = os.path.abspath(args.tierlb)
    TIERLB_EXTRA = args.tierlb_config
    if args.proxy_v2:
        TIERLB_EXTRA += '\nproxy_protocol = "v2"'
    if args.baseline:
        BASELINE = os.path.abspath(args.baseline)
        kinds.insert(1, "baseline")

    global FD_LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(65536, args.idle * 2 + 1000)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        # Raising the hard limit needs CAP_SYS_RESOURCE; make do with the hard limit.
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    FD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    most_idle = (FD_LIMIT - 1000) // 2
    if args.idle > most_idle:
        print(f"descriptor limit {FD_LIMIT}: idle test capped at {most_idle} connections "
              f"(a proxy needs two descriptors per connection)", file=sys.stderr)
        args.idle = most_idle

    work = tempfile.mkdtemp(prefix="tierlb-compare-")
    procs = Procs(work)
    results = {k: [] for k in kinds}
    try:
        http_ports, pp_ports, iperf_port = start_backends(procs, work, args.load_cpu)
        for rnd in range(1, args.rounds + 1):
            # A run right after another's new-connection test pays for the TIME_WAIT sockets
            # that one left, most after the direct run's (the same binary in two columns,
            # always in the same order, measured up to 1.6x apart). So the proxies rotate
            # each round and the direct run comes last: each proxy follows it at most once,
            # which the median leaves out.
            proxies = [k for k in kinds if k != "direct"]
            shift = (rnd - 1) % len(proxies)
            order = proxies[shift:] + proxies[:shift] + [k for k in kinds if k == "direct"]
            for kind in order:
                print(f"round {rnd}/{args.rounds}: {kind}", file=sys.stderr, flush=True)
                r = measure(procs, work, kind, (http_ports, pp_ports), iperf_port, args)
                print("  " + json.dumps({k: round(v, 2) for k, v in r.items()}), file=sys.stderr, flush=True)
                results[kind].append(r)
    finally:
        procs.stop_all()
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    print(f"\n{args.rounds} rounds, medians; {os.cpu_count()} cores ({cpu}); kernel {os.uname().release}; "
          f"proxy pinned to CPU {args.proxy_cpu} with one thread, load and backends on CPU {args.load_cpu}; "
          f"{args.seconds}s per run; {args.idle} idle connections.\n")
    print(table(results, kinds))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
