#!/usr/bin/env python3
"""Seeded chaos test: a real cluster (monitors, OSDs, an S3 gateway, each a process of its own),
concurrent S3 clients that record every operation (start, end, outcome), a fault injector, and a
checker of what the clients saw.

Faults, one at a time per kind, drawn from the seed: kill -9 and restart of an OSD, a monitor or
the gateway; SIGSTOP of an OSD or a monitor, then SIGHUP and SIGCONT (as the kernel sends a
stopped process whose process group is orphaned); a partition of one OSD or monitor (its UDP
port dropped both ways with nftables). At the end every fault is healed, the cluster is left to
become clean, and every key is read and listed once more.

The checker, per key (a register; a DELETE writes "absent"):
- every read returns a value some write of it had started to write before the read ended, and
  that was not definitely overwritten before the read began (an acknowledged write that started
  after that write had ended and ended before the read began). So no stale read after an
  acknowledged write, no acknowledged delete undone, no acknowledged write lost;
- every body read is exactly the bytes its write sent (each value's bytes derive from its id);
- every key the final listing names can be read, and every key whose last write was
  acknowledged (with none in doubt after it) is listed;
- no daemon exits unless a fault killed it.

The seed is printed first; the same seed draws the same faults, sizes and keys (timing differs).

usage: chaos.py --tidepool BIN --dir DIR [--seed N] [--seconds 60] [--osds 5] [--clients 6]
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from sigv4 import sign_headers  # noqa: E402

MIB = 1 << 20
PART = 5 * MIB
BUCKET = "chaos"
HOT_KEYS = 4


def log(*parts):
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Values: the bytes of a value come from its id, so a read names the write it saw and proves
# every byte.

def body_of(value_id, size):
    head = f"tpchaos {value_id} {size}\n".encode()
    block = hashlib.sha256(value_id.encode()).digest() * 128  # 4 KiB
    if size <= len(head):
        return head[:size] if size else b""
    rest = size - len(head)
    return head + (block * (rest // len(block) + 1))[:rest]


def value_of(body, value_id):
    """The id of the write whose bytes `body` is (`value_id`, from the object's metadata), or
    raises ValueError for bytes no write sent."""
    if not value_id:
        raise ValueError(f"{len(body)} bytes without the writer's id in their metadata")
    if body != body_of(value_id, len(body)):
        raise ValueError(f"the bytes of {value_id} differ from what was written ({len(body)} bytes)")
    return value_id


# ---------------------------------------------------------------------------------------------
# The cluster: every daemon a process of ours, restarted by us.

class Cluster:
    def __init__(self, args):
        self.args = args
        self.bin = args.tidepool
        self.dir = os.path.abspath(args.dir)
        self.procs = {}  # name -> Popen
        self.stopped = set()  # names paused with SIGSTOP
        self.partitioned = {}  # name -> port
        self.gateway_port = free_port()
        self.nft_table = f"tpchaos{os.getpid()}"
        self.nft = shutil.which("nft") is not None and os.geteuid() == 0

    def tidepool(self, *args, check=True):
        out = subprocess.run([self.bin, *args, "--cluster", self.dir], capture_output=True,
                             text=True, timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"tidepool {args}: {out.stderr}")
        return out

    def spawn(self, name, argv):
        logf = open(os.path.join(self.dir, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen([self.bin, *argv], stdout=logf, stderr=logf)

    def start(self, name):
        if name.startswith("mon."):
            rank = name.split(".")[1]
            self.spawn(name, ["mon", "--id", rank, "--data", self.dir])
        elif name.startswith("osd."):
            n = name.split(".")[1]
            self.spawn(name, ["osd", "--data", os.path.join(self.dir, f"osd-{n}"),
                              "--cluster", self.dir, "--workers", "1",
                              # Fullness follows what the run wrote, not the machine's disk.
                              "--size", "32G"])
        else:
            self.spawn(name, ["gateway", "--cluster", self.dir, "--bind",
                              f"127.0.0.1:{self.gateway_port}", "--gc-delay", "1",
                              "--gc-interval", "2"])

    def status(self):
        out = self.tidepool("status", "--format", "json", check=False)
        try:
            return json.loads(out.stdout)
        except ValueError:
            return None

    def wait(self, what, done, limit):
        deadline = time.time() + limit
        while time.time() < deadline:
            if done():
                return True
            time.sleep(0.5)
        raise RuntimeError(f"{what}: not within {limit} s")

    def up(self):
        os.makedirs(self.dir, exist_ok=True)
        out = subprocess.run([self.bin, "cluster", "init", self.dir, "--mons", "3"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        for rank in range(3):
            self.start(f"mon.{rank}")
        self.wait("a monitor quorum",
                  lambda: (self.status() or {}).get("monitors", {}).get("leader") is not None, 60)
        self.tidepool("config", "set", "osd_heartbeat_grace", "3")
        for n in range(self.args.osds):
            self.start(f"osd.{n}")
            marker = os.path.join(self.dir, f"osd-{n}", "osd.json")
            self.wait(f"osd.{n} created", lambda: os.path.exists(marker), 30)
        self.wait("every OSD up", lambda: self.osds_up() == self.args.osds, 60)
        self.start("gateway")
        user = json.loads(self.tidepool("user", "create", "chaos", "--format", "json").stdout)
        self.access, self.secret = user["access_key"], user["secret_key"]
        self.wait("the gateway", self.gateway_listens, 60)

    def osds_up(self):
        out = self.tidepool("osd", "dump", "--format", "json", check=False)
        try:
            return sum(1 for o in json.loads(out.stdout)["osds"].values() if o["up"])
        except (ValueError, KeyError):
            return 0

    def gateway_listens(self):
        try:
            socket.create_connection(("127.0.0.1", self.gateway_port), timeout=1).close()
            return True
        except OSError:
            return False

    def port_of(self, name):
        if name.startswith("mon."):
            monmap = json.load(open(os.path.join(self.dir, "monmap.json")))
            return int(monmap["addrs"][int(name.split(".")[1])].rsplit(":", 1)[1])
        dump = json.loads(self.tidepool("osd", "dump", "--format", "json").stdout)
        osd = dump["osds"].get(name.split(".")[1])
        return int(osd["addr"].rsplit(":", 1)[1]) if osd and osd.get("addr") else None

    # Faults -----------------------------------------------------------------------------------

    def kill(self, name):
        proc = self.procs.get(name)
        if proc and proc.poll() is None:
            if name in self.stopped:
                os.kill(proc.pid, signal.SIGCONT)
                self.stopped.discard(name)
            proc.kill()
            proc.wait()

    def pause(self, name):
        os.kill(self.procs[name].pid, signal.SIGSTOP)
        self.stopped.add(name)

    def resume(self, name):
        if name in self.stopped:
            # As the kernel does to a stopped process whose process group is orphaned: a
            # daemon must ignore the SIGHUP.
            os.kill(self.procs[name].pid, signal.SIGHUP)
            os.kill(self.procs[name].pid, signal.SIGCONT)
            self.stopped.discard(name)

    def partition(self, name):
        port = self.port_of(name)
        if port is None or not self.nft:
            return False
        self.partitioned[name] = port
        self.apply_partitions()
        return True

    def heal_partition(self, name):
        self.partitioned.pop(name, None)
        self.apply_partitions()

    def apply_partitions(self):
        subprocess.run(["nft", "delete", "table", "inet", self.nft_table], capture_output=True)
        if not self.partitioned:
            return
        rules = [f"table inet {self.nft_table} {{",
                 "  chain input { type filter hook input priority 0; policy accept;"]
        for port in self.partitioned.values():
            rules.append(f"    udp dport {port} drop")
            rules.append(f"    udp sport {port} drop")
        rules += ["  }", "}"]
        subprocess.run(["nft", "-f", "-"], input="\n".join(rules), text=True, check=True)

    def heal_all(self):
        """Heals every fault; returns the daemons that had exited on their own (the faults
        restart the ones they kill), each with its exit status."""
        for name in list(self.stopped):
            self.resume(name)
        self.partitioned.clear()
        self.apply_partitions()
        exited = []
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                exited.append(f"{name} exited on its own with status {proc.returncode}")
                self.start(name)
        return exited

    def shutdown(self):
        self.partitioned.clear()
        try:
            self.apply_partitions()
        except Exception:  # noqa: BLE001 -- best effort on the way out
            pass
        for name, proc in self.procs.items():
            if proc.poll() is None:
                if name in self.stopped:
                    os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        deadline = time.time() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------------------------------
# S3 over plain HTTP with SigV4.

class S3:
    def __init__(self, cluster, timeout=90):
        self.cluster = cluster
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, query="", body=b"", extra=None):
        host = f"127.0.0.1:{self.cluster.gateway_port}"
        headers = {"x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
                   "content-length": str(len(body))}
        headers.update(extra or {})
        now = datetime.datetime.now(datetime.timezone.utc)
        sign_headers(method, host, path, headers, self.cluster.secret, self.cluster.access, now,
                     query=query)
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.cluster.gateway_port,
                                                   timeout=self.timeout)
        url = urllib.parse.quote(path, safe="/~") + (f"?{query}" if query else "")
        try:
            self.conn.request(method, url, body=body, headers=headers)
            response = self.conn.getresponse()
            self.headers = response.headers
            return response.status, response.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = None
            raise

    def put(self, key, value_id, body):
        """True when acknowledged; raises or returns False otherwise (the write is in doubt)."""
        meta = {"x-amz-meta-chaos": value_id}
        if len(body) <= PART:
            status, _ = self.request("PUT", f"/{BUCKET}/{key}", body=body, extra=meta)
            return status == 200
        status, answer = self.request("POST", f"/{BUCKET}/{key}", query="uploads=", extra=meta)
        if status != 200:
            return False
        upload = re.search(rb"<UploadId>([^<]+)</UploadId>", answer).group(1).decode()
        etags = []
        for number, offset in enumerate(range(0, len(body), PART), start=1):
            q = f"partNumber={number}&uploadId={urllib.parse.quote(upload, safe='')}"
            status, _ = self.request("PUT", f"/{BUCKET}/{key}", query=q,
                                     body=body[offset:offset + PART])
            if status != 200:
                return False
            etags.append((number, self.headers.get("ETag", "")))
        parts = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
                        for n, e in etags)
        complete = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        q = f"uploadId={urllib.parse.quote(upload, safe='')}"
        status, answer = self.request("POST", f"/{BUCKET}/{key}", query=q, body=complete)
        return status == 200 and b"<Error>" not in answer

    def get(self, key):
        """('value', id) / ('absent', None) / ('error', text)."""
        status, body = self.request("GET", f"/{BUCKET}/{key}")
        if status == 404:
            return ("absent", None)
        if status != 200:
            return ("error", f"HTTP {status}")
        return ("value", value_of(body, self.headers.get("x-amz-meta-chaos")))

    def delete(self, key):
        status, _ = self.request("DELETE", f"/{BUCKET}/{key}")
        return status in (200, 204)

    def list_keys(self):
        keys, token = [], None
        while True:
            query = "list-type=2"
            if token:
                query = ("continuation-token=" + urllib.parse.quote(token, safe="")
                         + "&list-type=2")
            status, body = self.request("GET", f"/{BUCKET}", query=query)
            if status != 200:
                raise RuntimeError(f"ListObjectsV2: HTTP {status}")
            keys += [k.decode() for k in re.findall(rb"<Key>([^<]+)</Key>", body)]
            more = re.search(rb"<NextContinuationToken>([^<]+)</NextContinuationToken>", body)
            if not more:
                return keys
            token = more.group(1).decode()


# ---------------------------------------------------------------------------------------------
# Clients and their history.

class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []  # dicts: kind, key, value, start, end, ok

    def add(self, **op):
        with self.lock:
            self.ops.append(op)


def pick_size(rng):
    roll = rng.random()
    if roll < 0.08:
        return 0
    if roll < 0.6:
        return rng.randint(1, 64 << 10)
    if roll < 0.9:
        return rng.randint(64 << 10, 2 * MIB)
    return rng.randint(5 * MIB + 1, 12 * MIB)  # multipart


def client(cluster, index, seed, deadline, history, errors):
    rng = random.Random(seed * 1000 + index)
    s3 = S3(cluster)
    mine = []
    n = 0
    while time.monotonic() < deadline:
        n += 1
        roll = rng.random()
        if roll < 0.45 or not mine:
            kind, key = "put", f"u/{index}/{n}"
        elif roll < 0.65:
            kind, key = "put", f"hot/{rng.randrange(HOT_KEYS)}"
        elif roll < 0.78:
            kind, key = "get", f"hot/{rng.randrange(HOT_KEYS)}"
        elif roll < 0.92:
            kind, key = "get", rng.choice(mine)
        else:
            kind, key = "delete", rng.choice(mine + [f"hot/{rng.randrange(HOT_KEYS)}"])
        value = f"c{index}-{n}" if kind == "put" else None
        start = time.monotonic()
        ok, seen = False, None
        try:
            if kind == "put":
                ok = s3.put(key, value, body_of(value, pick_size(rng)))
                if key.startswith("u/"):
                    mine.append(key)
            elif kind == "delete":
                ok = s3.delete(key)
            else:
                seen = s3.get(key)
                ok = seen[0] != "error"
        except ValueError as error:  # bytes no write sent: always wrong
            errors.append(f"GET {key}: {error}")
        except Exception:  # noqa: BLE001 -- a failed or cut-off request is in doubt
            ok = False
        end = time.monotonic()
        if kind == "get":
            if ok:
                history.add(kind="get", key=key, value=seen[1], start=start, end=end, ok=True)
        else:
            history.add(kind=kind, key=key, value=value, start=start, end=end, ok=ok)


# ---------------------------------------------------------------------------------------------
# The checker.

def check(history, final_reads, listed, errors):
    writes = {}
    reads = {}
    for op in history.ops:
        (reads if op["kind"] == "get" else writes).setdefault(op["key"], []).append(op)
    for key, value in final_reads.items():
        reads.setdefault(key, []).append(
            {"kind": "get", "key": key, "value": value, "start": float("inf"),
             "end": float("inf"), "ok": True, "final": True})
    initial = {"kind": "delete", "value": None, "start": float("-inf"), "end": float("-inf"),
               "ok": True}
    for key, key_reads in reads.items():
        key_writes = [initial] + writes.get(key, [])
        acked = [w for w in key_writes if w["ok"]]
        for read in key_reads:
            candidates = [w for w in key_writes if w["value"] == read["value"]
                          and w["start"] < read["end"]]
            # A write in doubt may take effect any time after it started.
            fresh = [w for w in candidates if not any(
                a["start"] > (w["end"] if w["ok"] else float("inf")) and a["end"] < read["start"]
                for a in acked)]
            if not fresh:
                what = read["value"] or "absent"
                newer = [a for a in acked if a["end"] < read["start"]]
                last = max(newer, key=lambda a: a["end"]) if newer else None
                when = "final read" if read.get("final") else f"read at {read['start']:.2f}"
                errors.append(
                    f"{key}: {when} saw {what}, but acknowledged "
                    f"{last['kind']} of {last['value'] or 'absent'} ended at {last['end']:.2f}"
                    if last else f"{key}: {when} saw {what}, which no write wrote")
    for key in listed:
        if final_reads.get(key) is None:
            errors.append(f"{key}: listed, but reads as absent")
    for key, key_writes in writes.items():
        last_acked = max((w for w in key_writes if w["ok"]), key=lambda w: w["end"], default=None)
        if last_acked is None or last_acked["kind"] != "put":
            continue
        in_doubt_after = any(not w["ok"] and w["end"] > last_acked["start"] for w in key_writes)
        if not in_doubt_after and key not in listed:
            errors.append(f"{key}: acknowledged PUT of {last_acked['value']}, but not listed")


# ---------------------------------------------------------------------------------------------
# Faults.

def inject(cluster, rng, deadline, faults, stop):
    osds = [f"osd.{n}" for n in range(cluster.args.osds)]
    mons = [f"mon.{r}" for r in range(3)]
    kinds = ["osd_kill", "osd_stop", "osd_partition", "mon_kill", "mon_stop",
             "mon_partition", "gateway_kill"]
    weights = [4, 4, 2, 1, 1, 1, 1]
    while time.monotonic() < deadline - 10 and not stop.is_set():
        if stop.wait(rng.uniform(4, 10)):
            return
        kind = rng.choices(kinds, weights)[0]
        target = rng.choice(osds if kind.startswith("osd") else mons) \
            if not kind.startswith("gateway") else "gateway"
        hold = rng.uniform(3, 12) if kind != "gateway_kill" else rng.uniform(0.5, 3)
        log(f"fault: {kind} {target} for {hold:.1f} s")
        faults.append(f"{kind} {target} {hold:.1f}s")
        try:
            if kind.endswith("kill"):
                cluster.kill(target)
                time.sleep(hold)
                cluster.start(target)
            elif kind.endswith("stop"):
                cluster.pause(target)
                time.sleep(hold)
                cluster.resume(target)
            elif cluster.partition(target):
                time.sleep(hold)
                cluster.heal_partition(target)
        except Exception as error:  # noqa: BLE001 -- a fault that could not be made is logged
            log(f"fault {kind} {target} failed: {error}")
        # Let the cluster settle a little between faults.
        stop.wait(rng.uniform(1, 4))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tidepool", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--osds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=6)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    log(f"chaos seed {seed} ({args.seconds:.0f} s, {args.osds} OSDs, {args.clients} clients)")
    cluster = Cluster(args)
    errors, faults = [], []
    try:
        cluster.up()
        s3 = S3(cluster)
        cluster.wait("the bucket", lambda: s3.request("PUT", f"/{BUCKET}")[0] == 200, 60)
        log(f"cluster up; gateway at 127.0.0.1:{cluster.gateway_port}")
        history = History()
        deadline = time.monotonic() + args.seconds
        stop = threading.Event()
        injector = threading.Thread(target=inject,
                                    args=(cluster, random.Random(seed), deadline, faults, stop))
        clients = [threading.Thread(target=client,
                                    args=(cluster, i, seed, deadline, history, errors))
                   for i in range(args.clients)]
        injector.start()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        stop.set()
        injector.join()
        log("healing every fault; waiting for the cluster to be clean")
        errors.extend(cluster.heal_all())
        cluster.wait("every OSD up", lambda: cluster.osds_up() == args.osds, 120)

        def clean():
            status = cluster.status() or {}
            pgs = status.get("pgs", {})
            return pgs.get("total") and pgs.get("active_clean") == pgs["total"]
        cluster.wait("every PG active+clean", clean, 180)
        cluster.wait("the gateway", cluster.gateway_listens, 60)
        keys = sorted({op["key"] for op in history.ops})
        final = {}
        for key in keys:
            for attempt in range(5):
                try:
                    kind, value = s3.get(key)
                except ValueError as error:
                    errors.append(f"final GET {key}: {error}")
                    break
                except Exception:  # noqa: BLE001
                    kind = "error"
                if kind != "error":
                    final[key] = value
                    break
                time.sleep(1)
            else:
                errors.append(f"final GET {key} kept failing")
        listed = set(s3.list_keys())
        check(history, final, listed, errors)
        ops = history.ops
        summary = {
            "seed": seed,
            "seconds": args.seconds,
            "faults": len(faults),
            "puts_acked": sum(1 for o in ops if o["kind"] == "put" and o["ok"]),
            "puts_in_doubt": sum(1 for o in ops if o["kind"] == "put" and not o["ok"]),
            "deletes_acked": sum(1 for o in ops if o["kind"] == "delete" and o["ok"]),
            "reads": sum(1 for o in ops if o["kind"] == "get"),
            "keys": len(keys),
            "violations": len(errors),
        }
        log("summary " + json.dumps(summary))
    except Exception as error:  # noqa: BLE001
        errors.append(f"the run failed: {error}")
    finally:
        cluster.shutdown()
    if errors:
        log(f"FAILED (seed {seed}):")
        for error in errors[:50]:
            log("  " + error)
        sys.exit(1)
    log(f"passed (seed {seed})")


if __name__ == "__main__":
    main()
