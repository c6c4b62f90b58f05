#!/usr/bin/env python3
"""The container scenarios, run by tests/docker/run.sh (which builds the images, sets
TIERLB_IMAGE, NODE_IMAGE, TIERLB_TEST_TAG and TIERLB_TEST_WORK, and removes everything after).

1. examples/compose.yaml: tierlb in front of node1-node3, clients through the published port
   (on 127.0.0.1): 60 requests spread 20/20/20; `docker kill node2`, the next 60 all succeed;
   node2 re-created with a new address is back within rise x interval plus a margin; `docker
   stop` of tierlb while a transfer runs: the transfer completes intact and tierlb exits 0
   before the grace period ends. The image runs as uid 65532 with a read-only root.
2. examples/compose.scaled.yaml: one `node` service scaled 3 -> 5 -> 2 under a client loop;
   tierlb's nodes follow Docker's DNS within dns_ttl + 1 s, and no client fails but those in
   flight on a removed replica.
3. examples/cluster/compose.yaml: lb1 and lb2 as one cluster: `docker kill node2` (found by
   lb1) makes lb2 avoid node2 with no failed client; a drain through lb1 reaches lb2; lb2
   disconnected from the gossip network, both keep serving.

Every wait is bounded; a failed check raises, and the script exits non-zero with the reason.
"""

import http.client
import json
import os
import subprocess
import sys
import threading
import time

TAG = os.environ["TIERLB_TEST_TAG"]
WORK = os.environ["TIERLB_TEST_WORK"]
TOKEN = "change-me-to-a-long-random-token"
# examples/tierlb/config.toml and the cluster configs: probes every 1 s, rise 2; names are
# looked up again every dns_ttl (2 s).
RISE_INTERVAL = 2.0
MARGIN = 4.0


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def run(*args, env=None, check_rc=True):
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if check_rc and done.returncode != 0:
        raise Failed(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


class Project:
    """One compose project: a compose file under its own project name."""

    def __init__(self, name, file, env):
        self.name, self.file = f"{TAG}-{name}", file
        self.env = dict(os.environ, **env)

    def compose(self, *args, check_rc=True):
        return run("docker-compose", "-p", self.name, "-f", self.file, *args,
                   env=self.env, check_rc=check_rc)

    def container(self, service):
        return self.compose("ps", "-q", service)

    def published(self, service, port):
        host_port = self.compose("port", service, str(port))
        check(host_port.startswith("127.0.0.1:"), f"{service}:{port} published on loopback only: {host_port}")
        return host_port

    def address(self, service, network="default"):
        return run("docker", "inspect", "-f",
                   "{{(index .NetworkSettings.Networks \"" + f"{self.name}_{network}" + "\").IPAddress}}",
                   self.container(service))

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "--timeout", "1", check_rc=False)


def request(addr, path="/", method="GET", headers=None, timeout=5.0):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def name_of(body):
    first = body.decode(errors="replace").splitlines()[:1]
    return first[0].removeprefix("Name: ") if first else ""


def wait(what, limit, probe):
    """Polls `probe` until it returns a true value, for at most `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        try:
            value = probe()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            pass
        if time.monotonic() >= deadline:
            raise Failed(f"{what}: not within {limit} s")
        time.sleep(0.1)


def status(admin):
    _, body = request(admin, "/status")
    return json.loads(body)


def node_status(admin, node):
    return next(n for n in status(admin)["services"][0]["nodes"] if n["address"] == node)


def quiet(admin):
    """Waits until no client connection is open, so that the next pick sees the nodes equal."""
    wait("connections closed", 10, lambda: status(admin)["services"][0]["listener"]["active"] == 0)


def spread(lb, admin, count):
    """`count` sequential requests through `lb`: how many each node answered; any failure raises."""
    got = {}
    for k in range(count):
        code, body = request(lb)
        check(code == 200, f"request {k}: HTTP {code}")
        got[name_of(body)] = got.get(name_of(body), 0) + 1
        quiet(admin)
    return got


def image_runs_as_nonroot_read_only(project, service):
    c = project.container(service)
    check(run("docker", "inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", c) == "true", "read-only root")
    uids = [line.split()[1] for line in run("docker", "top", c, "-o", "pid,uid").splitlines()[1:]]
    check(uids and all(u == "65532" for u in uids), f"runs as uid 65532: {uids}")
    print(f"  {service}: uid 65532, read-only root filesystem")


def transfer_during_stop(project, lb):
    """GET /data through tierlb while `docker stop` runs; the bytes must all arrive intact."""
    size, seconds = 64 << 20, 4
    result = {}
    started = threading.Event()

    def client():
        host, port = lb.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", f"/data?bytes={size}&seconds={seconds}")
        response = conn.getresponse()
        pattern = bytes(range(251)) * (2 + (1 << 16) // 251)
        received, intact, offset = 0, True, 0
        while chunk := response.read(1 << 16):
            started.set()
            at = offset % 251
            intact = intact and chunk == pattern[at:at + len(chunk)]
            offset += len(chunk)
            received += len(chunk)
        result.update(code=response.status, received=received, intact=intact)
        conn.close()

    thread = threading.Thread(target=client)
    thread.start()
    check(started.wait(10), "the transfer started")
    grace = 30
    began = time.monotonic()
    run("docker", "stop", "-t", str(grace), project.container("tierlb"))
    took = time.monotonic() - began
    thread.join(60)
    c = project.container("tierlb")
    code = run("docker", "inspect", "-f", "{{.State.ExitCode}}", c)
    check(result.get("received") == size and result.get("intact"),
          f"transfer complete and intact: {result}")
    check(code == "0", f"tierlb exited 0, not {code}")
    check(took < grace, f"stopped in {took:.1f} s, within the {grace} s grace period")
    logs = subprocess.run(["docker", "logs", c], capture_output=True, text=True)
    check("draining" in logs.stderr + logs.stdout, "the drain is in the container's log")
    print(f"  docker stop during a {size >> 20} MiB transfer: intact, exit 0 after {took:.1f} s (grace {grace} s)")


def single():
    print("== examples/compose.yaml: tierlb in front of node1-node3")
    p = Project("single", "examples/compose.yaml", {
        "TIERLB_PUBLISH": "127.0.0.1:", "TIERLB_ADMIN_PUBLISH": "127.0.0.1:"})
    try:
        p.compose("up", "-d", "--no-build")
        lb, admin = p.published("tierlb", 8000), p.published("tierlb", 9090)
        wait("/ready 200", 30, lambda: request(admin, "/ready")[0] == 200)
        wait("every node up", 30, lambda: all(n["up"] for n in status(admin)["services"][0]["nodes"]))
        image_runs_as_nonroot_read_only(p, "tierlb")
        got = spread(lb, admin, 60)
        check(got == {"node1": 20, "node2": 20, "node3": 20}, f"60 requests spread 20/20/20: {got}")
        print(f"  60 requests: {got}")

        old = p.address("node2")
        p.compose("kill", "node2")
        got = spread(lb, admin, 60)
        check(sum(got.values()) == 60 and "node2" not in got, f"after the kill: {got}")
        print(f"  docker kill node2, next 60 requests: all answered, {got}")

        p.compose("rm", "-f", "node2")
        # A container on the network first, so that the new node2 cannot get the old address.
        run("docker", "run", "-d", "--label", f"tierlb-test={TAG}", "--name", f"{p.name}-hold",
            "--network", f"{p.name}_default", os.environ["NODE_IMAGE"], "--port", "9")
        p.compose("up", "-d", "--no-build", "node2")
        created = time.monotonic()
        new = p.address("node2")
        check(new and new != old, f"node2 re-created at a new address ({old} -> {new})")
        wait("node2 back up", RISE_INTERVAL + MARGIN, lambda: node_status(admin, "node2:8080")["up"])
        back = time.monotonic() - created
        got = spread(lb, admin, 30)
        check(got.get("node2", 0) > 0, f"node2 in rotation again: {got}")
        print(f"  node2 re-created ({old} -> {new}): back in rotation {back:.1f} s later "
              f"(bound {RISE_INTERVAL + MARGIN:.0f} s); 30 requests: {got}")

        transfer_during_stop(p, lb)
    finally:
        p.down()
        run("docker", "rm", "-f", f"{p.name}-hold", check_rc=False)


def discovered(admin):
    """The nodes found by the `discover` entry: how many, and whether every one is up."""
    nodes = [n for n in status(admin)["services"][0]["nodes"] if n["found_by"] == "dns node:8080"]
    return len(nodes), all(n["up"] for n in nodes)


def scaled():
    print("== examples/compose.scaled.yaml: one name, 3 -> 5 -> 2 replicas")
    p = Project("scaled", "examples/compose.scaled.yaml", {
        "TIERLB_PUBLISH": "127.0.0.1:", "TIERLB_ADMIN_PUBLISH": "127.0.0.1:"})
    follow = 2.0 + 1.0  # dns_ttl + 1 s
    try:
        p.compose("up", "-d", "--no-build", "--scale", "node=3")
        lb, admin = p.published("tierlb", 8000), p.published("tierlb", 9090)
        wait("/ready 200", 30, lambda: request(admin, "/ready")[0] == 200)
        wait("three replicas up", 30, lambda: discovered(admin) == (3, True))
        got = spread(lb, admin, 30)
        check(len(got) == 3 and all(v == 10 for v in got.values()), f"30 requests over 3 replicas: {got}")
        print(f"  3 replicas: 3 nodes, 30 requests spread {sorted(got.values())}")

        failures, served, stop = [], [0], threading.Event()

        def clients():
            while not stop.is_set():
                started = time.monotonic()
                try:
                    code, _ = request(lb)
                except (OSError, http.client.HTTPException) as e:
                    code = str(e)
                if code == 200:
                    served[0] += 1
                else:
                    failures.append((started, code))
                time.sleep(0.01)

        thread = threading.Thread(target=clients)
        thread.start()
        try:
            for count in (5, 2):
                began = time.monotonic()
                p.compose("up", "-d", "--no-build", "--no-recreate", "--timeout", "1",
                          "--scale", f"node={count}")
                done = time.monotonic()
                # A replica that goes may be down before it leaves the answer: the count is
                # of nodes in the list, up or not.
                wait(f"{count} nodes", follow + 10, lambda: discovered(admin)[0] == count)
                took = time.monotonic() - done
                check(took <= follow, f"nodes followed {count} replicas in {took:.1f} s (bound {follow:.0f} s)")
                removed = [f for f in failures if f[0] >= done + follow]
                check(not removed, f"no client failed after the nodes followed: {removed[:5]}")
                print(f"  scaled to {count} (compose took {done - began:.1f} s): "
                      f"{count} nodes {took:.1f} s later (bound {follow:.0f} s)")
        finally:
            stop.set()
            thread.join(30)
        check(len(failures) <= 3, f"at most the requests in flight on the 3 removed replicas failed: {failures}")
        check(served[0] > 0, "clients were served")
        print(f"  client loop: {served[0]} answered, {len(failures)} failed (in flight on a removed replica)")
    finally:
        p.down()


def metric(admin, sample):
    _, body = request(admin, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


def cluster():
    print("== examples/cluster/compose.yaml: lb1 and lb2 as one cluster")
    key = os.path.join(WORK, "cluster.key")
    with open(key, "wb") as f:
        f.write(os.urandom(32).hex().encode() + b"\n")
    os.chown(key, 65532, 65532)
    os.chmod(key, 0o400)
    # The configs of lb1 and lb2 with this run's own gossip subnet (run.sh picks it).
    prefix = os.environ["TIERLB_GOSSIP_PREFIX"]
    dirs = {}
    for lb in ("lb1", "lb2"):
        dirs[lb] = os.path.join(WORK, lb)
        os.makedirs(dirs[lb], exist_ok=True)
        with open(os.path.join("examples/cluster", lb, "config.toml")) as f:
            text = f.read().replace("10.213.77.", prefix + ".")
        with open(os.path.join(dirs[lb], "config.toml"), "w") as f:
            f.write(text)
        os.chmod(dirs[lb], 0o755)
    p = Project("cluster", "examples/cluster/compose.yaml", {
        "TIERLB_CLUSTER_KEY": key, "LB1_CONFIG": dirs["lb1"], "LB2_CONFIG": dirs["lb2"],
        "LB1_PUBLISH": "127.0.0.1:", "LB2_PUBLISH": "127.0.0.1:",
        "LB1_ADMIN_PUBLISH": "127.0.0.1:", "LB2_ADMIN_PUBLISH": "127.0.0.1:"})
    try:
        p.compose("up", "-d", "--no-build")
        lb1, lb2 = p.published("lb1", 8000), p.published("lb2", 8000)
        admin1, admin2 = p.published("lb1", 9090), p.published("lb2", 9090)
        for admin in (admin1, admin2):
            wait("/ready 200", 30, lambda: request(admin, "/ready")[0] == 200)
            wait("both members alive", 30,
                 lambda: metric(admin, 'tierlb_cluster_members{state="alive"}') == 2)
        print("  lb1 and lb2 see each other alive")
        image_runs_as_nonroot_read_only(p, "lb2")

        # Clients of lb2 run throughout. One already spliced to node2 when it dies loses its
        # answer (its request was delivered: no proxy may replay it); every client that
        # starts once the kill is done must be answered.
        failures, served, stop = [], {}, threading.Event()

        def clients():
            while not stop.is_set():
                started = time.monotonic()
                try:
                    code, body = request(lb2)
                    name = name_of(body) if code == 200 else None
                except (OSError, http.client.HTTPException) as e:
                    code, name = str(e), None
                if name is None:
                    failures.append((started, code))
                else:
                    served[name] = served.get(name, 0) + 1
                time.sleep(0.02)

        thread = threading.Thread(target=clients)
        thread.start()
        try:
            killed = time.monotonic()
            p.compose("kill", "node2")
            dead = time.monotonic()
            node2 = 'tierlb_node_peer_down{service="default",node="node2:8080"}'
            wait("lb2 told by lb1 that node2 is down", 10, lambda: (metric(admin2, node2) or 0) >= 1)
            told = time.monotonic() - killed
            wait("lb2 has node2 down", 10, lambda: not node_status(admin2, "node2:8080")["up"])
            before = dict(served)
            time.sleep(1.0)
            after = {k: served.get(k, 0) - before.get(k, 0) for k in served}
        finally:
            stop.set()
            thread.join(30)
        late = [f for f in failures if f[0] >= dead]
        check(not late, f"no client of lb2 that started after the kill failed: {late[:5]}")
        check(len(failures) <= 2, f"at most the clients in flight at the kill failed: {failures}")
        check(after.get("node2", 0) == 0 and sum(after.values()) > 0, f"lb2 avoids node2: {after}")
        print(f"  docker kill node2: lb1's report reached lb2 {told:.1f} s later; "
              f"{sum(served.values())} clients of lb2 answered, none failed after the kill "
              f"({len(failures)} in flight on node2 as it died)")

        code, body = request(admin1, "/nodes/node3:8080/drain", "POST",
                             {"Authorization": f"Bearer {TOKEN}"})
        check(code == 200, f"drain through lb1: HTTP {code} {body!r}")
        drained = time.monotonic()
        wait("the drain reaches lb2", 10, lambda: node_status(admin2, "node3:8080")["drained"])
        got = spread(lb2, admin2, 10)
        check(got == {"node1": 10}, f"lb2 sends nothing to drained node3 nor dead node2: {got}")
        print(f"  drain of node3 through lb1 reached lb2 in {time.monotonic() - drained:.1f} s; lb2: {got}")

        run("docker", "network", "disconnect", f"{p.name}_gossip", p.container("lb2"))
        for lb, admin in ((lb1, admin1), (lb2, admin2)):
            got = spread(lb, admin, 10)
            check(sum(got.values()) == 10, f"serving with lb2 cut off from gossip: {got}")
        print("  lb2 disconnected from the gossip network: lb1 and lb2 both keep serving")
    finally:
        p.down()


def main():
    try:
        single()
        scaled()
        cluster()
    except Failed as e:
        print(f"docker tests FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    print("docker tests: all scenarios passed")


if __name__ == "__main__":
    main()
