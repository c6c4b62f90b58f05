#!/usr/bin/env python3
"""SNI routing side by side: tierlb (services sharing one port by `sni`), HAProxy (`mode tcp`,
`req.ssl_sni`) and nginx (`stream`, `ssl_preread`), each routing TLS clients by the server
name of their ClientHello, without terminating TLS, to the same nginx TLS nodes. Run it
through `bash benches/compare.sh --sni`, which installs the tools first.

Every proxy has three routes: the benchmark's name (`a.bench.test`, the one clients use) to
the three TLS nodes, another name to one node, and a default to one node. wrk's clients send
the name of their URL as their SNI; wrk runs in a mount namespace of its own where a hosts
file of this run is bind-mounted on /etc/hosts, so the name resolves to 127.0.0.1 without
touching the host's.

Measured per proxy and round, the proxy pinned alone to PROXY_CPU with one thread:
  - new TLS connections/s through the proxy (wrk, "Connection: close": each request a new TLS
    handshake with the node) and the proxy's CPU time per connection;
  - RSS per idle routed connection: IDLE clients each send a ClientHello naming the route and
    then nothing, so each holds a routed connection to a node mid-handshake.
The table shows the median over rounds, each figure also as a ratio to HAProxy.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the helpers of the main comparison)

NAME = "a.bench.test"


def client_hello(name):
    """A real ClientHello naming `name`, as Python's TLS client writes it: the node answers it
    and then waits for the rest of a handshake that never comes, holding the connection."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


IDLE_CLIENT = r"""
import socket, sys
count, port, hello = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
held = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(hello)
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def tls_nodes(procs, work, cpu):
    """Three nginx TLS nodes (self-signed certificate for every name) for the route the
    clients use, and a fourth address where nothing listens for the other routes: a client
    routed anywhere else fails, and the run with it."""
    key, crt = os.path.join(work, "node.key"), os.path.join(work, "node.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={NAME}",
                    "-addext", f"subjectAltName=DNS:{NAME},DNS:*.bench.test"],
                   check=True, capture_output=True)
    ports = [compare.free_port() for _ in range(4)]
    listens = "".join(f"    listen 127.0.0.1:{p} ssl backlog=4096;\n" for p in ports[:3])
    conf = os.path.join(work, "tls-nodes.conf")
    with open(conf, "w") as f:
        f.write(f"daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile {compare.FD_LIMIT};\n"
                f"pid {work}/tls-nodes.pid;\nerror_log {work}/tls-nodes.err warn;\n"
                f"events {{ worker_connections {compare.FD_LIMIT - 100}; }}\n"
                "http {\n  access_log off;\n  ssl_session_cache off;\n  ssl_session_tickets off;\n"
                f"  server {{\n{listens}    ssl_certificate {crt};\n    ssl_certificate_key {key};\n"
                "    location / { return 200 \"ok\\n\"; }\n  }\n}\n")
    procs.start("tls-nodes", ["nginx", "-p", work, "-e", f"{work}/tls-nodes.err", "-c", conf], cpu)
    for p in ports[:3]:
        compare.wait_port(p)
    return ports


def config(work, kind, port, nodes):
    """The proxy's SNI config: NAME to the first three nodes, other.bench.test and the default
    to the fourth address. Returns its argv."""
    a, other = [f"127.0.0.1:{p}" for p in nodes[:3]], f"127.0.0.1:{nodes[3]}"
    path = os.path.join(work, f"sni-{kind}-{port}.conf")
    if kind in ("tierlb", "baseline"):
        listed = ", ".join(f'"{n}"' for n in a)
        text = (f'threads = 1\n[health]\ninterval = "2s"\n'
                f'[services.a]\nlisten = "127.0.0.1:{port}"\nsni = ["{NAME}"]\nnodes = [{listed}]\n'
                f'[services.other]\nlisten = "127.0.0.1:{port}"\nsni = ["other.bench.test"]\nnodes = ["{other}"]\n'
                f'[services.rest]\nlisten = "127.0.0.1:{port}"\nnodes = ["{other}"]\n')
        argv = [compare.BASELINE if kind == "baseline" else compare.TIERLB, "-c", path]
    elif kind == "haproxy":
        servers = "".join(f"  server n{i} {n} check inter 2s fall 3 rise 2\n" for i, n in enumerate(a))
        text = (compare.haproxy_head() + f"frontend fe\n  bind 127.0.0.1:{port}\n  tcp-request inspect-delay 3s\n"
                "  tcp-request content accept if { req.ssl_hello_type 1 }\n"
                f"  use_backend a if {{ req.ssl_sni -i {NAME} }}\n"
                "  use_backend other if { req.ssl_sni -i other.bench.test }\n  default_backend other\n"
                f"backend a\n  balance leastconn\n{servers}"
                f"backend other\n  server o {other} check inter 2s fall 3 rise 2\n")
        argv = ["haproxy", "-db", "-f", path]
    elif kind == "nginx":
        servers = "".join(f"    server {n};\n" for n in a)
        text = (compare.nginx_head(work, f"sni-nginx-{port}") +
                f"stream {{\n  upstream a {{\n    least_conn;\n{servers}  }}\n"
                f"  upstream other {{\n    server {other};\n  }}\n"
                f"  map $ssl_preread_server_name $route {{\n    {NAME} a;\n    default other;\n  }}\n"
                f"  server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    ssl_preread on;\n"
                "    preread_timeout 3s;\n    proxy_pass $route;\n    proxy_connect_timeout 1s;\n"
                "    proxy_timeout 1h;\n  }\n}\n")
        argv = ["nginx", "-p", work, "-e", f"{work}/sni-nginx-{port}.err", "-c", path]
    else:
        raise ValueError(kind)
    with open(path, "w") as f:
        f.write(text)
    return argv


def run_wrk(port, seconds, cpu):
    """New TLS connections through the proxy: wrk against https://NAME:PORT/, each request on
    a new connection with a full TLS handshake with a node; NAME resolves through this run's
    hosts file, bind-mounted on /etc/hosts in wrk's own mount namespace."""
    argv = ["unshare", "--mount", "--", "sh", "-c",
            'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh", HOSTS,
            "taskset", "-c", str(cpu), "wrk", "-t1", "-c50", f"-d{seconds}s", "--timeout", "5s",
            "-H", "Connection: close", f"https://{NAME}:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    requests = int(compare.re.search(r"(\d+) requests in", out).group(1))
    errors = compare.re.search(r"Socket errors: (.*)", out)
    return float(compare.re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), requests, errors


HOSTS = ""


def idle_hold(proc, port, nodes, count, cpu):
    before = compare.rss_kib(proc.pid)
    client = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", IDLE_CLIENT, str(count),
                               str(port), client_hello(NAME).hex()], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("idle client failed")
        deadline = time.monotonic() + 120
        while compare.established_to(nodes[:3]) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy did not route every idle client")
            time.sleep(0.2)
        time.sleep(0.5)
        after = compare.rss_kib(proc.pid)
    finally:
        client.stdin.close()
        client.wait(timeout=60)
    return {"idle_kib": (after - before) / count, "idle_rss_mib": after / 1024}


def measure(procs, work, kind, nodes, args):
    port = compare.free_port()
    proc = procs.start(f"sni-{kind}", config(work, kind, port, nodes), args.proxy_cpu)
    compare.wait_port(port)
    try:
        cpu0 = compare.cpu_seconds(proc.pid)
        rps, requests, errors = run_wrk(port, args.seconds, args.load_cpu)
        cpu1 = compare.cpu_seconds(proc.pid)
        if errors:
            raise RuntimeError(f"{kind}: wrk errors (a client not routed by its name?): {errors.group(1)}")
        r = {"tls_rps": rps, "tls_cpu_us": (cpu1 - cpu0) * 1e6 / max(requests, 1)}
        if args.idle:
            r.update(idle_hold(proc, port, nodes, args.idle, args.load_cpu))
        return r
    finally:
        procs.stop(proc)


ROWS = [
    ("new TLS conn/s, routed by SNI", "tls_rps", "{:,.0f}", True),
    ("CPU µs / routed connection", "tls_cpu_us", "{:.1f}", False),
    ("KiB / idle routed connection", "idle_kib", "{:.2f}", False),
    ("RSS with idle routed held, MiB", "idle_rss_mib", "{:.1f}", False),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--idle", type=int, default=2000, help="idle routed connections for the memory test (0: skip)")
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--only", default="tierlb,haproxy,nginx")
    ap.add_argument("--baseline", metavar="BIN", help="another tierlb binary, as the column 'baseline'")
    args = ap.parse_args()
    kinds = args.only.split(",")
    if args.baseline:
        compare.BASELINE = os.path.abspath(args.baseline)
        kinds.insert(1, "baseline")
    import resource
    want = max(65536, args.idle * 2 + 1000)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    compare.FD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    work = tempfile.mkdtemp(prefix="tierlb-sni-")
    global HOSTS
    HOSTS = os.path.join(work, "hosts")
    with open(HOSTS, "w") as f:
        f.write(f"127.0.0.1 localhost {NAME} other.bench.test\n")
    procs = compare.Procs(work)
    results = {k: [] for k in kinds}
    try:
        nodes = tls_nodes(procs, work, args.load_cpu)
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                print(f"round {rnd}/{args.rounds}: {kind}", file=sys.stderr, flush=True)
                r = measure(procs, work, kind, nodes, args)
                print("  " + json.dumps({k: round(v, 2) for k, v in r.items()}), file=sys.stderr, flush=True)
                results[kind].append(r)
    finally:
        procs.stop_all()
    print(f"\n{args.rounds} rounds, medians; proxy pinned to CPU {args.proxy_cpu} with one thread, wrk and the "
          f"TLS nodes on CPU {args.load_cpu}; {args.seconds}s per run; {args.idle} idle routed connections.\n")
    compare.ROWS[:] = ROWS
    print(compare.table(results, kinds))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
