#!/usr/bin/env python3
"""ListObjectVersions of a bucket with many versions, against any S3 endpoint: writes
--versions small versions over --keys keys of a new versioned bucket (32 in flight), then
lists every version, 1,000 per page, --listings times; one JSON line with the write rate
and the pages per second of each listing. With --purge, every version of the bucket is
removed afterwards (and the bucket); --versions 0 --purge only empties an existing bucket.

usage: versions.py --endpoint URL --access AK --secret SK --bucket B
                   [--versions 100000] [--keys 1000] [--listings 3] [--purge]
"""

import argparse
import json
import re
import sys
import threading
import time
import urllib.parse

from s3load import Client

VERSIONING = (b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
              b"<Status>Enabled</Status></VersioningConfiguration>")


def query_of(params):
    return "&".join(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}"
                    for k, v in sorted(params.items()))


def list_all(client, bucket):
    """Every (key, version id) of `bucket`, and the pages it took."""
    found, pages = [], 0
    params = {"versions": "", "max-keys": "1000"}
    while True:
        status, body = client.request("GET", f"/{bucket}", query=query_of(params))
        if status != 200:
            sys.exit(f"listing versions: HTTP {status} {body[:200]!r}")
        pages += 1
        text = body.decode()
        for block in re.findall(r"<(?:Version|DeleteMarker)>(.*?)</(?:Version|DeleteMarker)>", text, re.S):
            key = re.search(r"<Key>(.*?)</Key>", block).group(1)
            version = re.search(r"<VersionId>(.*?)</VersionId>", block).group(1)
            found.append((key, version))
        if "<IsTruncated>true</IsTruncated>" not in text:
            return found, pages
        params["key-marker"] = re.search(r"<NextKeyMarker>(.*?)</NextKeyMarker>", text).group(1)
        params["version-id-marker"] = re.search(
            r"<NextVersionIdMarker>(.*?)</NextVersionIdMarker>", text).group(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--access", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--listings", type=int, default=3)
    parser.add_argument("--purge", action="store_true")
    args = parser.parse_args()
    client = Client(args)
    status, body = client.request("PUT", f"/{args.bucket}")
    if status not in (200, 409):
        sys.exit(f"creating bucket: HTTP {status} {body[:200]!r}")
    status, body = client.request("PUT", f"/{args.bucket}", VERSIONING, query="versioning=")
    if status != 200:
        sys.exit(f"enabling versioning: HTTP {status} {body[:200]!r}")

    errors = []
    counter = iter(range(args.versions))
    lock = threading.Lock()

    def writer():
        own = Client(args)
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            status, _ = own.request("PUT", f"/{args.bucket}/key-{n % args.keys:06d}", b"v%d" % n)
            if status != 200:
                errors.append(status)

    started = time.time()
    threads = [threading.Thread(target=writer) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    write_secs = time.time() - started

    listings = []
    for _ in range(args.listings if args.versions else 0):
        started = time.time()
        found, pages = list_all(client, args.bucket)
        secs = time.time() - started
        listings.append({"versions": len(found), "pages": pages, "secs": round(secs, 2),
                         "pages_s": round(pages / secs, 1)})
    if args.versions:
        print(json.dumps({"versions": args.versions, "keys": args.keys, "write_errors": len(errors),
                          "write_ops_s": round(args.versions / write_secs, 1),
                          "listings": listings}), flush=True)

    if args.purge:
        found, _ = list_all(client, args.bucket)

        def remover(share):
            own = Client(args)
            for key, version in share:
                own.request("DELETE", f"/{args.bucket}/{key}",
                            query=query_of({"versionId": version}))

        threads = [threading.Thread(target=remover, args=(found[i::32],)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.request("DELETE", f"/{args.bucket}")


if __name__ == "__main__":
    main()
