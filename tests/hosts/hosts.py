#!/usr/bin/env python3
"""Several hosts on one machine: each a Linux network namespace, linked by veth pairs into a
bridge that lives in a namespace of its own, addressed from 198.18.0.0/15 and with no route
out. A cluster is deployed across them with the commands of docs/operating.md ("Several
hosts"), then faults are laid between hosts while a client writes through the gateway.

    hosts.py [SCENARIO ...]     run scenarios (default: all of the bridge's, or with DELAY_US
                                all of linksim's), one cluster for all of them
    hosts.py bench [SECONDS]    throughput across the hosts, then the time a cut-off host
                                takes to be marked down and its PGs to be active again
    hosts.py writer ...         (internal) the S3 client, run inside the client's namespace

Hosts: h1-h3 run a monitor and an OSD each, h4 an OSD, h5 the gateway, h6 the client and
the admin. Every acknowledged write is read back exact at the end of each scenario.

Environment: TIDEPOOL (the binary), WORK (a scratch folder), PYTHON (one with boto3),
DELAY_US=N links the hosts through linksim (LINKSIM: its binary), a switch whose links hold
each frame N microseconds, instead of a bridge; MTU=9000 gives the links jumbo frames. Needs root, iproute2 and nft.
Namespaces are named tp<pid>-*; a run sweeps those of runs that died.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

TIDEPOOL = os.environ.get("TIDEPOOL", "tidepool")
LINKSIM = os.environ.get("LINKSIM", "linksim")
PYTHON = os.environ.get("PYTHON", sys.executable)
SUBNET = "198.18.0"
MON_PORT = 6789
S3_PORT = 7480
# The longest any scenario's wait lasts; the whole run is bounded by the caller too.
WAIT = 120


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


def sh(*args, check=True, capture=True, timeout=60):
    out = subprocess.run(args, capture_output=capture, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {out.returncode}\n{out.stdout}{out.stderr}")
    return out.stdout if capture else ""


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def delete_namespace(name):
    """Kills what still runs in namespace `name`, then deletes it."""
    for pid in sh("ip", "netns", "pids", name, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    sh("ip", "netns", "del", name, check=False)


def sweep_stale():
    """Deletes the namespaces (and kills the processes) of earlier runs that died."""
    for line in sh("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(r"tp(\d+)-\w+", name)
        if m and not alive(int(m.group(1))):
            delete_namespace(name)


class Net:
    """The namespaces, their links and the processes started in them."""

    def __init__(self, hosts, delay_us=None, mtu=1500):
        """Hosts on a bridge, or with `delay_us`, on linksim's switch whose every link holds
        each frame that long (the kernel's netem, where the kernel has it not); links of
        `mtu` bytes (9000: jumbo frames, as storage networks often have)."""
        self.prefix = f"tp{os.getpid()}-"
        self.bridge = self.prefix + "br"
        self.hosts = {}  # name -> address
        self.procs = []  # (name, Popen)
        self.switched = delay_us is not None
        sh("ip", "netns", "add", self.bridge)
        names = list(hosts)
        if self.switched:
            ports = [f"tp{os.getpid() % 100000}p{i}" for i in range(len(names))]
            switch = subprocess.Popen(
                ["ip", "netns", "exec", self.bridge, LINKSIM, "--delay-us", str(delay_us)]
                + ports, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE, start_new_session=True, text=True)
            self.procs.append(("linksim", switch))
            self.switch = switch
            self.ports = {host: i for i, host in enumerate(names)}
            ready = switch.stdout.readline().strip()
            if ready != "ready":
                raise RuntimeError(f"linksim did not start: {ready}{switch.stdout.read()}")
        else:
            sh("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.bridge, "link", "set", "br0", "up")
        for i, host in enumerate(names, start=1):
            ns = self.ns(host)
            sh("ip", "netns", "add", ns)
            if self.switched:
                # The switch's TAP port moves into the host and becomes its eth0.
                port = ports[i - 1]
                sh("ip", "-n", self.bridge, "link", "set", port, "netns", ns)
                sh("ip", "-n", ns, "link", "set", port, "name", "eth0")
            else:
                # eth0 in the host, its peer (named after the host) on the bridge.
                sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", host,
                   "netns", self.bridge)
                sh("ip", "-n", self.bridge, "link", "set", host, "mtu", str(mtu))
                sh("ip", "-n", self.bridge, "link", "set", host, "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "eth0", "mtu", str(mtu))
            addr = f"{SUBNET}.{10 + i}"
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            self.hosts[host] = addr

    def ns(self, host):
        return self.prefix + host

    def exec_args(self, host, args):
        return ["ip", "netns", "exec", self.ns(host)] + list(args)

    def run(self, host, *args, check=True, timeout=60):
        return sh(*self.exec_args(host, args), check=check, timeout=timeout)

    def spawn(self, host, name, args, logfile):
        out = open(logfile, "ab")
        proc = subprocess.Popen(self.exec_args(host, args), stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def link(self, host, up):
        """Plugs a host's cable in or out (its port on the bridge, or its end of the
        switch's link)."""
        state = "up" if up else "down"
        if self.switched:
            sh("ip", "-n", self.ns(host), "link", "set", "eth0", state)
        else:
            sh("ip", "-n", self.bridge, "link", "set", host, state)

    def nft(self, host, script):
        proc = subprocess.run(self.exec_args(host, ["nft", "-f", "-"]), input=script,
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"nft on {host}: {proc.stderr}\n{script}")

    def drop(self, host, peers, udp_port=None, direction="both"):
        """Drops what `host` exchanges with `peers` (addresses), only packets to or from
        `udp_port` when given, in one or both directions."""
        rules = []
        port = ""
        for peer in peers:
            if direction in ("both", "in"):
                port = f" udp sport {udp_port}" if udp_port else ""
                rules.append(f"add rule inet tpfault input ip saddr {peer}{port} drop")
                if udp_port:
                    rules.append(f"add rule inet tpfault input ip saddr {peer} udp dport {udp_port} drop")
            if direction in ("both", "out"):
                port = f" udp dport {udp_port}" if udp_port else ""
                rules.append(f"add rule inet tpfault output ip daddr {peer}{port} drop")
                if udp_port:
                    rules.append(f"add rule inet tpfault output ip daddr {peer} udp sport {udp_port} drop")
        self.nft(host, self.table() + "\n".join(rules) + "\n")

    def slow(self, host, delay_us, loss_percent):
        """Delays every frame to or from `host` by `delay_us` more and loses `loss_percent` %
        of them, as `tc netem delay ... loss ...` on its link would (on linksim only)."""
        assert self.switched, "a slow link needs linksim (DELAY_US)"
        self.switch.stdin.write(f"{self.ports[host]} {delay_us} {loss_percent}\n")
        self.switch.stdin.flush()
        answer = self.switch.stdout.readline().strip()
        if not answer.startswith("port "):
            raise RuntimeError(f"linksim: {answer}")

    def lose(self, host, percent):
        """Loses `percent` % of the host's packets each way, at random."""
        self.nft(host, self.table()
                 + f"add rule inet tpfault input numgen random mod 100 < {percent} drop\n"
                 + f"add rule inet tpfault output numgen random mod 100 < {percent} drop\n")

    @staticmethod
    def table():
        return ("table inet tpfault {\n"
                " chain input { type filter hook input priority 0; }\n"
                " chain output { type filter hook output priority 0; }\n}\n")

    def heal(self, host):
        self.run(host, "nft", "delete", "table", "inet", "tpfault", check=False)
        self.link(host, True)

    def stop(self, name, proc):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def close(self):
        for name, proc in reversed(self.procs):
            try:
                self.stop(name, proc)
            except Exception as error:  # noqa: BLE001 - clean up the rest regardless
                log(f"stopping {name}: {error}")
        for ns in [self.ns(host) for host in self.hosts] + [self.bridge]:
            delete_namespace(ns)


class Cluster:
    """A cluster deployed across the hosts as docs/operating.md tells."""

    MON_HOSTS = ["h1", "h2", "h3"]
    OSD_HOSTS = ["h1", "h2", "h3", "h4"]
    GATEWAY = "h5"
    CLIENT = "h6"

    def __init__(self, net, work):
        self.net = net
        self.work = work
        self.admin = os.path.join(work, "admin")
        self.osds = {}  # host -> osd id
        self.daemons = {}  # name -> (host, args, process)

    def folder(self, host):
        return os.path.join(self.work, host, "etc")

    def tidepool(self, *args, host=None, timeout=60):
        host = host or self.CLIENT
        return self.net.run(host, TIDEPOOL, *args, "--cluster", self.admin, timeout=timeout)

    def json(self, *args, timeout=60):
        return json.loads(self.tidepool(*args, "--format", "json", timeout=timeout))

    def deploy(self):
        net = self.net
        mons = [f"{net.hosts[h]}:{MON_PORT}" for h in self.MON_HOSTS]
        sh(TIDEPOOL, "cluster", "init", self.admin, *sum((["--mon", m] for m in mons), []))
        for rank, host in enumerate(self.MON_HOSTS):
            sh(TIDEPOOL, "cluster", "host", host, "--mon", str(rank), "--out", self.folder(host),
               "--cluster", self.admin)
            self.start(f"mon.{rank}", host,
                       [TIDEPOOL, "mon", "--id", str(rank), "--data", self.folder(host)])
        for host in self.OSD_HOSTS:
            made = json.loads(self.tidepool("cluster", "host", host, "--osds", "1", "--out",
                                            self.folder(host), "--format", "json"))
            self.osds[host] = made["osds"][0]
            self.start_osd(host)
        sh(TIDEPOOL, "cluster", "host", self.GATEWAY, "--gateway", "--out",
           self.folder(self.GATEWAY), "--cluster", self.admin)
        self.start_gateway()
        user = self.json("user", "create", "writer")
        self.keys = (user["access_key"], user["secret_key"])
        self.endpoint = f"http://{net.hosts[self.GATEWAY]}:{S3_PORT}"

    def start(self, name, host, args):
        process = self.net.spawn(host, name, args, os.path.join(self.work, f"{name}.log"))
        self.daemons[name] = (host, args, process)

    def restart(self, name):
        """Stops a daemon (SIGTERM, as systemd does) and starts it again, as an upgrade does."""
        host, args, process = self.daemons[name]
        self.net.stop(name, process)
        self.start(name, host, args)

    def start_osd(self, host):
        osd = self.osds[host]
        self.start(f"osd.{osd}", host, [
            TIDEPOOL, "osd", "--cluster", self.folder(host), "--id", str(osd),
            "--data", os.path.join(self.work, host, f"osd-{osd}"),
            "--bind", f"{self.net.hosts[host]}:0", "--workers", "1", "--size", "4GiB"])

    def start_gateway(self):
        host = self.GATEWAY
        self.start("gateway", host, [
            TIDEPOOL, "gateway", "--cluster", self.folder(host),
            "--bind", f"{self.net.hosts[host]}:{S3_PORT}"])

    def osd_up(self, osd):
        dump = self.json("osd", "dump")
        for entry in dump["osds"].values():
            if entry["id"] == osd:
                return entry["up"] is True
        raise RuntimeError(f"osd.{osd} is not in the map")

    def pgs(self):
        """(total, active, active+clean) PGs."""
        status = self.json("status")
        pgs = status["pgs"]
        active = sum(n for state, n in pgs["by_state"].items()
                     if "active" in state.split("+") and "stale" not in state)
        return pgs["total"], active, pgs["active_clean"]

    def wait(self, what, done, limit=WAIT):
        started = time.monotonic()
        while True:
            try:
                if done():
                    return time.monotonic() - started
            except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as error:
                last = error
            else:
                last = None
            if time.monotonic() - started > limit:
                raise AssertionError(f"not {what} within {limit} s (last error: {last})")
            time.sleep(0.25)

    def wait_clean(self, limit=WAIT):
        def clean():
            total, _, active_clean = self.pgs()
            return total > 0 and active_clean == total
        return self.wait("active+clean", clean, limit)

    def wait_active(self, limit=WAIT):
        def active():
            total, active, _ = self.pgs()
            return total > 0 and active == total
        return self.wait("every PG active", active, limit)

    def mons(self):
        return self.json("mon", "dump")["mons"]

    def mons_agree(self):
        """Whether every monitor answers and all hold one map."""
        mons = self.mons()
        return all(m["up"] for m in mons) and len({(m["epoch"], m["map_digest"]) for m in mons}) == 1


class Writer:
    """The client: writes new objects through the gateway from its own host and notes each
    acknowledged one; at the end reads every acknowledged one back."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.acks = os.path.join(cluster.work, f"{name}.acks")
        self.stop_file = os.path.join(cluster.work, f"{name}.stop")
        self.result = os.path.join(cluster.work, f"{name}.json")
        for path in (self.acks, self.stop_file, self.result):
            if os.path.exists(path):
                os.remove(path)
        access, secret = cluster.keys
        self.proc = cluster.net.spawn(cluster.CLIENT, name, [
            PYTHON, os.path.abspath(__file__), "writer", cluster.endpoint, access, secret,
            name, self.acks, self.stop_file, self.result],
            os.path.join(cluster.work, f"{name}.log"))

    def acked(self):
        try:
            with open(self.acks) as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def wait_acked(self, more, limit=WAIT):
        target = self.acked() + more
        return self.cluster.wait(f"{more} more writes acknowledged ({self.name})",
                                 lambda: self.acked() >= target, limit)

    def finish(self, limit=WAIT * 2):
        """Stops writing, reads everything acknowledged back; returns the summary."""
        open(self.stop_file, "w").close()
        self.proc.wait(timeout=limit)
        with open(self.result) as f:
            result = json.load(f)
        assert result["acked"] > 0, result
        assert result["wrong"] == [], f"acknowledged writes read back wrong: {result}"
        return result


def payload(key, size):
    seed = sum(key.encode()) * 2654435761 % (1 << 32)
    block = (seed.to_bytes(4, "little") + key.encode()) * (size // (4 + len(key)) + 1)
    return block[:size]


def writer_main(endpoint, access, secret, bucket, acks, stop_file, result):
    import boto3
    import botocore.config
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5,
                                      read_timeout=30, s3={"addressing_style": "path"}))
    deadline = time.monotonic() + 60
    while True:
        try:
            s3.create_bucket(Bucket=bucket)
            break
        except s3.exceptions.BucketAlreadyOwnedByYou:
            break
        except Exception:  # noqa: BLE001 - the gateway may still be starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    sizes = [1, 4096, 70_000, 300_000, 1_100_000]
    acked, errors, i = [], 0, 0
    with open(acks, "a") as out:
        while not os.path.exists(stop_file):
            key = f"{bucket}-{i:06}"
            size = sizes[i % len(sizes)]
            i += 1
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=payload(key, size))
            except Exception as error:  # noqa: BLE001 - unacknowledged: may or may not exist
                errors += 1
                print(f"{key}: {error}", flush=True)
                time.sleep(0.2)
                continue
            acked.append((key, size))
            out.write(f"{key}\n")
            out.flush()
    wrong = []
    for key, size in acked:
        for attempt in range(20):
            try:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                break
            except Exception as error:  # noqa: BLE001 - retried, then counted wrong
                print(f"reading {key}: {error}", flush=True)
                time.sleep(1)
        else:
            body = None
        if body != payload(key, size):
            wrong.append(key)
    with open(result, "w") as f:
        json.dump({"acked": len(acked), "errors": errors, "wrong": wrong}, f)


# Scenarios: each leaves the cluster healed and clean.

def scenario_link_down(cluster, figures):
    """A host's link goes down while the client writes: the cluster marks its OSD down,
    serves from the others, and heals when the link returns."""
    net = cluster.net
    host = "h2"  # a monitor and an OSD
    osd = cluster.osds[host]
    writer = Writer(cluster, "linkdown")
    writer.wait_acked(20)
    log(f"cutting {host} off")
    net.link(host, False)
    down_at = time.monotonic()
    to_down = cluster.wait(f"osd.{osd} marked down", lambda: not cluster.osd_up(osd))
    to_active = cluster.wait_active()
    total_active = time.monotonic() - down_at
    log(f"osd.{osd} marked down after {to_down:.1f} s; every PG active after "
        f"{total_active:.1f} s")
    writer.wait_acked(20)
    net.link(host, True)
    log(f"{host} back")
    cluster.wait(f"osd.{osd} up again", lambda: cluster.osd_up(osd))
    cluster.wait_clean()
    result = writer.finish()
    log(f"link down: {result['acked']} writes acknowledged, all read back exact "
        f"({result['errors']} failed and were not acknowledged)")
    figures["link_down_to_osd_down_s"] = round(to_down, 1)
    figures["link_down_to_active_s"] = round(total_active, 1)


def scenario_asymmetric(cluster, figures):
    """h4 hears nothing from h1 (h1 still hears h4): its OSD and h1's cannot talk, both can
    reach the monitors' quorum. Writes go on; nothing acknowledged is lost."""
    net = cluster.net
    writer = Writer(cluster, "asym")
    writer.wait_acked(10)
    net.drop("h4", [net.hosts["h1"]], direction="in")
    log("h4 deaf to h1")
    # The two OSDs miss each other's heartbeats; the monitors mark the deaf side down.
    deaf = cluster.osds["h4"]
    cluster.wait(f"osd.{deaf} marked down", lambda: not cluster.osd_up(deaf))
    writer.wait_acked(20)
    down = [osd for osd in cluster.osds.values() if not cluster.osd_up(osd)]
    log(f"while h4 was deaf to h1, OSDs marked down: {down}")
    assert down == [deaf], f"the deaf side of a one-way cut is marked down, no more: {down}"
    net.heal("h4")
    log("h4 healed")
    for osd in cluster.osds.values():
        cluster.wait(f"osd.{osd} up", lambda osd=osd: cluster.osd_up(osd))
    cluster.wait_clean()
    result = writer.finish()
    log(f"asymmetric: {result['acked']} writes acknowledged, all read back exact")


def scenario_lossy(cluster, figures):
    """h3 loses 5 % of its packets each way: slower, nothing lost."""
    net = cluster.net
    writer = Writer(cluster, "lossy")
    writer.wait_acked(10)
    net.lose("h3", 5)
    log("h3 loses 5 % of its packets")
    writer.wait_acked(30)
    net.heal("h3")
    cluster.wait_clean()
    result = writer.finish()
    log(f"lossy: {result['acked']} writes acknowledged, all read back exact")


def scenario_slow_host(cluster, figures):
    """h3's link delays each packet 20 ms more and loses 3 % of them (`tc netem delay 20ms
    loss 3%` on its link, here on linksim): the cluster goes on, slower; nothing acknowledged
    is lost; once the link is healed every PG is clean again."""
    net = cluster.net
    writer = Writer(cluster, "slow")
    writer.wait_acked(10)
    net.slow("h3", 20_000, 3)
    log("h3's link: 20 ms more delay and 3 % loss each way")
    taken = writer.wait_acked(30)
    down = [osd for osd in cluster.osds.values() if not cluster.osd_up(osd)]
    log(f"30 writes took {taken:.1f} s with h3 slow; OSDs marked down: {down}")
    net.slow("h3", 0, 0)
    for osd in cluster.osds.values():
        cluster.wait(f"osd.{osd} up", lambda osd=osd: cluster.osd_up(osd))
    cluster.wait_clean()
    result = writer.finish()
    log(f"slow host: {result['acked']} writes acknowledged, all read back exact")


def scenario_monitor_cut_off(cluster, figures):
    """mon.0 (on h1) is cut off from the other monitors, while every OSD, h1's included,
    still reaches it: the quorum of mon.1 and mon.2 goes on, mon.0 commits nothing alone
    (no split brain), clients are served, and mon.0 catches up when healed."""
    net = cluster.net
    writer = Writer(cluster, "moncut")
    writer.wait_acked(10)
    others = [net.hosts["h2"], net.hosts["h3"]]
    net.drop("h1", others, udp_port=MON_PORT)
    log("mon.0 cut off from mon.1 and mon.2")
    # mon.0 led (rank 0 is preferred): cut off, it steps down, the other two elect.
    cluster.wait("mon.1 or mon.2 to lead",
                 lambda: cluster.mons()[1]["leader"] in (1, 2) and cluster.mons()[0]["leader"] != 0)
    # A change the quorum commits while mon.0 is away, asked once: an admin is served by
    # the side that holds the quorum at the first try.
    started = time.monotonic()
    cluster.tidepool("config", "set", "osd_max_backfills", "3")
    log(f"a change committed by mon.1 and mon.2 in {time.monotonic() - started:.1f} s")
    writer.wait_acked(20)
    mons = cluster.mons()
    log(f"monitors while mon.0 is cut off: {mons}")
    assert mons[1]["up"] and mons[2]["up"], mons
    assert mons[1]["leader"] in (1, 2), f"the quorum of mon.1 and mon.2 leads: {mons}"
    assert mons[0]["leader"] != 0, f"mon.0 claims to lead alone: {mons}"
    if mons[0]["up"]:
        assert mons[0]["commit"] < mons[1]["commit"], f"mon.0 committed alone: {mons}"
    net.heal("h1")
    log("mon.0 back")
    cluster.wait("the three monitors on one map", cluster.mons_agree)
    cluster.wait_clean()
    result = writer.finish()
    log(f"monitor cut off: {result['acked']} writes acknowledged, all read back exact")


ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
while True:
    data, peer = s.recvfrom(64)
    s.sendto(data, peer)
"""

PING = """
import socket, statistics, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
times = []
for i in range(50):
    start = time.perf_counter()
    s.sendto(b"ping", (sys.argv[1], 9999))
    try:
        s.recvfrom(64)
    except socket.timeout:
        continue
    times.append(time.perf_counter() - start)
    time.sleep(0.01)
print(statistics.median(times) * 1000)
"""


def round_trip_ms(net, a, b):
    """The median round trip of a small UDP datagram from host `a` to host `b`."""
    echo = net.spawn(b, "echo", [PYTHON, "-c", ECHO, net.hosts[b]], os.devnull)
    try:
        time.sleep(0.5)
        return float(net.run(a, PYTHON, "-c", PING, net.hosts[b]).strip())
    finally:
        net.stop("echo", echo)


def bench(cluster, seconds):
    """`tidepool bench` (4 MiB writes and reads on a pool of size 3 across hosts) and S3
    PUT and GET of 4 MiB and 4 KiB objects through the gateway, from the client's host."""
    figures = {"round_trip_ms": round(round_trip_ms(cluster.net, "h6", "h1"), 2)}
    log(f"round trip between two hosts: {figures['round_trip_ms']} ms")
    cluster.tidepool("pool", "create", "bench", "--size", "3", "--pg-num", "32",
                     "--failure-domain", "host")
    cluster.wait_clean()
    for mode in ("write", "read"):
        out = cluster.json("bench", "bench", mode, "--seconds", str(seconds), timeout=seconds + 120)
        figures[f"bench_{mode}_mib_s"] = round(out["mib_per_second"], 1)
        log(f"tidepool bench {mode}: {out['mib_per_second']:.1f} MiB/s")
    cluster.tidepool("bench", "bench", "cleanup", timeout=300)
    access, secret = cluster.keys
    load = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "s3load.py")
    for size in ("4M", "4K"):
        out = cluster.net.run(cluster.CLIENT, PYTHON, load, "--endpoint", cluster.endpoint,
                              "--access", access, "--secret", secret, "--bucket", f"load{size.lower()}",
                              "--size", size, "--seconds", str(seconds), timeout=seconds * 4 + 300)
        for line in out.splitlines():
            phase = json.loads(line)
            if phase.get("phase") in ("put", "get"):
                key = f"s3_{phase['phase']}_{size}"
                figures[key + "_mib_s"] = phase.get("MiB_s")
                figures[key + "_ops_s"] = phase.get("ops_s")
                log(f"S3 {phase['phase']} {size}: {phase.get('MiB_s')} MiB/s, "
                    f"{phase.get('ops_s')} op/s")
    return figures


def scenario_replace_host(cluster, figures):
    """h4's OSD is removed as docs/operating.md tells (out, clean, safe to destroy, stopped,
    removed), then the host gets a new OSD (`cluster host h4 --osds 1`), which backfills its
    share; the client writes throughout."""
    writer = Writer(cluster, "replace")
    writer.wait_acked(10)
    old = cluster.osds["h4"]
    cluster.tidepool("osd", "out", str(old))
    cluster.wait_clean()
    # Its stray copies go once their PGs are clean elsewhere: until then it is not safe.
    cluster.wait(f"osd.{old} safe to destroy",
                 lambda: cluster.tidepool("osd", "safe-to-destroy", str(old)) is not None)
    safe = cluster.tidepool("osd", "safe-to-destroy", str(old))
    log(f"osd.{old} out and drained: {safe.strip()}")
    _, _, process = cluster.daemons[f"osd.{old}"]
    cluster.net.stop(f"osd.{old}", process)
    cluster.wait(f"osd.{old} down", lambda: not cluster.osd_up(old))
    cluster.tidepool("osd", "rm", str(old))
    assert old not in [o["id"] for o in cluster.json("osd", "dump")["osds"].values()]
    # The disk is replaced: the new OSD starts empty (it may get the freed id again).
    shutil.rmtree(os.path.join(cluster.work, "h4", f"osd-{old}"))
    writer.wait_acked(10)
    made = json.loads(cluster.tidepool("cluster", "host", "h4", "--osds", "1", "--out",
                                       cluster.folder("h4"), "--format", "json"))
    cluster.osds["h4"] = made["osds"][0]
    cluster.start_osd("h4")
    new = cluster.osds["h4"]
    cluster.wait(f"osd.{new} up", lambda: cluster.osd_up(new))
    cluster.wait_clean()
    used = {o["id"]: o for o in cluster.json("osd", "df")["osds"]}
    log(f"osd.{old} removed; a new osd.{new} on h4 backfilled: {used[new]['pgs']} PGs, "
        f"{used[new]['used_bytes']} bytes")
    assert used[new]["pgs"] > 0, used
    result = writer.finish()
    log(f"replace host: {result['acked']} writes acknowledged, all read back exact")


def scenario_rolling_restart(cluster, figures):
    """Every daemon restarted in turn, as an upgrade one daemon at a time does: the
    monitors, then the OSDs, then the gateway, each once the cluster is whole again, while
    the client writes. The last monitor comes back with an empty store, as a replaced
    machine would, and catches up from the others."""
    writer = Writer(cluster, "rolling")
    writer.wait_acked(10)
    for rank, host in enumerate(cluster.MON_HOSTS):
        if rank == len(cluster.MON_HOSTS) - 1:
            _, _, process = cluster.daemons[f"mon.{rank}"]
            cluster.net.stop(f"mon.{rank}", process)
            shutil.rmtree(os.path.join(cluster.folder(host), f"mon-{rank}"))
            log(f"mon.{rank} replaced: its store removed")
        cluster.restart(f"mon.{rank}")
        cluster.wait("the three monitors on one map", cluster.mons_agree)
        writer.wait_acked(5)
    for osd in cluster.osds.values():
        cluster.restart(f"osd.{osd}")
        cluster.wait(f"osd.{osd} up", lambda osd=osd: cluster.osd_up(osd))
        cluster.wait_clean()
        writer.wait_acked(5)
    cluster.restart("gateway")
    writer.wait_acked(10)
    result = writer.finish()
    log(f"rolling restart: {result['acked']} writes acknowledged, all read back exact")


# On linksim only (DELAY_US): what needs a link's delay changed while it runs.
SWITCH_SCENARIOS = {"slow_host": scenario_slow_host}

SCENARIOS = {
    "link_down": scenario_link_down,
    "asymmetric": scenario_asymmetric,
    "lossy": scenario_lossy,
    "monitor_cut_off": scenario_monitor_cut_off,
    "rolling_restart": scenario_rolling_restart,
    "replace_host": scenario_replace_host,
}


def main(names):
    if os.geteuid() != 0:
        sys.exit("hosts.py needs root (network namespaces)")
    bench_seconds = None
    if names[:1] == ["bench"]:
        bench_seconds = int(names[1]) if len(names) > 1 else 20
        names = []
    delay = os.environ.get("DELAY_US")
    known = {**SCENARIOS, **SWITCH_SCENARIOS} if delay else SCENARIOS
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown scenarios {unknown}; known here: {list(known)} "
                 f"({list(SWITCH_SCENARIOS)} need DELAY_US)")
    names = names or list(SWITCH_SCENARIOS if delay else SCENARIOS)
    work = os.environ.get("WORK") or f"/tmp/tidepool-hosts-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    sweep_stale()
    net = Net(["h1", "h2", "h3", "h4", "h5", "h6"], delay_us=int(delay) if delay else None,
              mtu=int(os.environ.get("MTU", "1500")))
    interrupted = []

    def on_signal(signum, _frame):
        interrupted.append(signum)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    figures = {}
    ok = False
    try:
        cluster = Cluster(net, work)
        cluster.deploy()
        log(f"deployed: monitors on h1-h3, OSDs {cluster.osds}, gateway {cluster.endpoint}")
        pools = cluster.json("pool", "ls")
        log(f"pools: {pools}")
        clean = cluster.wait_clean()
        log(f"clean after {clean:.1f} s")
        if bench_seconds:
            figures.update(bench(cluster, bench_seconds))
            figures.update(clean_after_deploy_s=round(clean, 1))
            scenario_link_down(cluster, figures)
        for name in [] if bench_seconds else names:
            log(f"scenario {name}")
            known[name](cluster, figures)
        ok = True
    finally:
        net.close()
        if not ok:
            for name in sorted(os.listdir(work)):
                if name.endswith(".log"):
                    with open(os.path.join(work, name), errors="replace") as f:
                        tail = f.readlines()[-15:]
                    print(f"--- {name} (last lines)\n{''.join(tail)}", flush=True)
        elif not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"figures": figures}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["writer"]:
        writer_main(*sys.argv[2:])
    else:
        main(sys.argv[1:])
