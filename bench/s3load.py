#!/usr/bin/env python3
"""S3 load generator: PUT, then GET of the same keys, with N requests in flight,
against any S3 endpoint (Tidepool's gateway, Ceph's radosgw, Garage). Plain http.client with
SigV4 and UNSIGNED-PAYLOAD (as clients sign over HTTPS), keep-alive connections, and several
processes so that the client's own CPU is spread over the cores. Every object written is
distinct in every 64 KiB, as block de-duplication would otherwise skip the writes; afterwards
every object written is deleted again, so that repeated runs do not fill the disk. One JSON
line per phase (put, get, delete): operations, MiB/s, operations/s, latency percentiles,
errors.

usage: s3load.py --endpoint http://127.0.0.1:7480 --access AK --secret SK --bucket B
                 [--size 4M] [--concurrency 16] [--seconds 20] [--processes 2] [--versioned]
"""

import argparse
import datetime
import http.client
import json
import multiprocessing
import os
import socket
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from sigv4 import sign_headers  # noqa: E402


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.upper().rstrip("IB")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


class Client:
    def __init__(self, args):
        self.args = args
        url = urllib.parse.urlparse(args.endpoint)
        self.host = url.netloc
        self.address = (url.hostname, url.port or 80)
        self.connection = None

    def request(self, method, path, body=b"", into=None, query=""):
        """Sends one signed request (`query`: its canonical query string); the status and the
        body (read into `into`, a bytearray, when given, to spare the client an allocation
        and a copy per response)."""
        headers = {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
        now = datetime.datetime.now(datetime.timezone.utc)
        sign_headers(method, self.host, path, headers, self.args.secret, self.args.access, now,
                     query)
        if query:
            path = f"{path}?{query}"
        headers["content-length"] = str(len(body))
        for attempt in (0, 1):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(*self.address, timeout=120)
                # As botocore's connection pool does: a small request is not held back.
                self.connection.connect()
                self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                if into is None:
                    return response.status, response.read()
                view = memoryview(into)
                got = 0
                while True:
                    n = response.readinto(view[got:]) if got < len(into) else 0
                    if not n:
                        break
                    got += n
                rest = response.read()
                return response.status, view[:got].nbytes + len(rest)
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


# What each phase's requests answer when they succeed.
SUCCESS = {"put": (200,), "get": (200,), "delete": (200, 204)}


def make_unique(payload, index, n):
    """Stamps the writer and the object's number into every 64 KiB of `payload`, so that no
    two objects share a block: a store that de-duplicates blocks (Garage) writes every byte."""
    tag = f"{index:08x}{n:08x}".encode()
    for offset in range(0, len(payload), 64 << 10):
        payload[offset : offset + len(tag)] = tag[: len(payload) - offset]


def worker(args, phase, index, deadline, keys_per_worker, queue):
    """One in-flight request stream: its latencies (s), bytes moved and errors."""
    client = Client(args)
    payload = bytearray(os.urandom(args.size))
    buffer = bytearray(args.size)
    latencies, moved, errors = [], 0, 0
    n = 0
    while phase == "delete" or time.time() < deadline:
        if phase == "get" and n >= keys_per_worker:
            n = 0
        if phase == "delete" and n >= keys_per_worker:
            break
        key = f"/{args.bucket}/load-{index}-{n}"
        started = time.perf_counter()
        try:
            if phase == "put":
                make_unique(payload, index, n)
                status, _ = client.request("PUT", key, payload)
                moved += args.size
            elif phase == "delete":
                status, _ = client.request("DELETE", key)
            else:
                status, length = client.request("GET", key, into=buffer)
                moved += length
        except Exception:  # noqa: BLE001 -- every failure counts as an error
            status = None
        latencies.append(time.perf_counter() - started)
        if status not in SUCCESS[phase]:
            errors += 1
        n += 1
    queue.put((latencies, moved, errors, n))


def run_phase(args, phase, keys_per_worker):
    queue = multiprocessing.Queue()
    started = time.time()
    deadline = started + args.seconds
    processes = []
    per_process = args.concurrency // args.processes
    for p in range(args.processes):
        proc = multiprocessing.Process(
            target=process_main,
            args=(args, phase, p * per_process, per_process, deadline, keys_per_worker, queue),
        )
        proc.start()
        processes.append(proc)
    results = [queue.get() for _ in range(args.concurrency)]
    for proc in processes:
        proc.join()
    elapsed = time.time() - started
    latencies = sorted(x for r in results for x in r[0])
    moved = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    counts = [r[3] for r in results]

    def percentile(q):
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None

    print(json.dumps({
        "phase": phase, "size": args.size, "concurrency": args.concurrency,
        "ops": len(latencies), "errors": errors, "secs": round(elapsed, 2),
        "MiB_s": round(moved / elapsed / (1 << 20), 1), "ops_s": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
    }), flush=True)
    return counts


def process_main(args, phase, first, count, deadline, keys_per_worker, queue):
    import threading
    threads = [
        threading.Thread(target=worker, args=(args, phase, first + i, deadline, keys_per_worker, queue))
        for i in range(count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--access", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--size", type=parse_size, default=4 << 20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--versioned", action="store_true",
                        help="enable versioning on the bucket first")
    args = parser.parse_args()
    if args.concurrency % args.processes:
        parser.error("--concurrency must be a multiple of --processes")
    client = Client(args)
    status, body = client.request("PUT", f"/{args.bucket}")
    if status not in (200, 409):
        sys.exit(f"creating bucket {args.bucket}: HTTP {status} {body[:200]!r}")
    if args.versioned:
        document = (b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    b"<Status>Enabled</Status></VersioningConfiguration>")
        status, body = client.request("PUT", f"/{args.bucket}", document, query="versioning=")
        if status != 200:
            sys.exit(f"enabling versioning on {args.bucket}: HTTP {status} {body[:200]!r}")
    written = run_phase(args, "put", None)
    run_phase(args, "get", min(written, default=0))
    # What was written is removed again, so that repeated runs do not fill the disk.
    run_phase(args, "delete", max(written, default=0))


if __name__ == "__main__":
    main()
