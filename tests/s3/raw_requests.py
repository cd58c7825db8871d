#!/usr/bin/env python3
"""Hand-made S3 requests the everyday clients never send: SigV4 signed aws-chunked bodies
(whole, and with one chunk's signature tampered with) and a body shorter than its
Content-Length. Prints one JSON line: the HTTP status and the S3 error code, if any.

usage: raw_requests.py ENDPOINT ACCESS_KEY SECRET_KEY BUCKET KEY CASE
CASE: signed-chunks | tampered-chunk | unsigned-trailer | wrong-trailer | short-body |
      damaged-SEED (200 requests: valid signed and trailer uploads and XML bodies, each with
      random damage to its body or headers; prints the statuses seen, the requests answered
      by a dropped connection, and which valid body the object holds after all of them)
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import sys
import urllib.parse
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from sigv4 import sign_headers  # noqa: E402

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def chunked_body(chunks, key, scope, amz_date, seed, tamper):
    """The aws-chunked body of `chunks`, each signed after the one before; with `tamper`,
    the second chunk's signature is wrong."""
    out = b""
    previous = seed
    for i, chunk in enumerate(chunks + [b""]):
        to_sign = "\n".join([
            "AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous,
            EMPTY_SHA256, hashlib.sha256(chunk).hexdigest(),
        ])
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        previous = signature
        if tamper and i == 1:
            signature = ("0" if signature[0] != "0" else "1") + signature[1:]
        out += f"{len(chunk):x};chunk-signature={signature}\r\n".encode() + chunk + b"\r\n"
    return out


def signed_chunked_upload(chunks, host, path, access, secret, now, tamper=False):
    """Headers and body of a PUT of `chunks` as a SigV4 signed aws-chunked body."""
    headers = {
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-decoded-content-length": str(sum(len(c) for c in chunks)),
        "content-encoding": "aws-chunked",
    }
    signing, scope, amz_date, seed = sign_headers("PUT", host, path, headers, secret, access, now)
    return headers, chunked_body(chunks, signing, scope, amz_date, seed, tamper)


def trailer_upload(data, host, path, access, secret, now, wrong=False):
    """Headers and body of a PUT of `data` as aws-cli sends it over HTTPS by default: an
    unsigned aws-chunked body (chunks of 64 KiB) whose CRC32 comes in a trailer after the
    last chunk; with `wrong`, the CRC32 is not the data's."""
    crc = zlib.crc32(data).to_bytes(4, "big")
    if wrong:
        crc = bytes(b ^ 0xFF for b in crc)
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(data)),
        "content-encoding": "aws-chunked",
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    sign_headers("PUT", host, path, headers, secret, access, now)
    body = b""
    for start in range(0, len(data), 65536):
        chunk = data[start:start + 65536]
        body += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    body += b"0\r\nx-amz-checksum-crc32:" + base64.b64encode(crc) + b"\r\n\r\n"
    return headers, body


def damage(data, rng):
    """`data` with one to four random edits: bytes flipped, set, inserted or removed, a cut,
    or four bytes of 0xff (a length claiming the most it can)."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data)) if data else 0
        kind = rng.randrange(6)
        if not data:
            data.append(rng.randrange(256))
        elif kind == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at] = rng.randrange(256)
        elif kind == 2:
            data.insert(at, rng.randrange(256))
        elif kind == 3:
            del data[at]
        elif kind == 4:
            del data[at:]
        else:
            data[at:at + 4] = b"\xff\xff\xff\xff"
    return bytes(data)


def damaged_requests(endpoint, access, secret, bucket, key, seed):
    """Valid uploads and XML bodies with random damage; the object `key` never changes."""
    url = urllib.parse.urlparse(endpoint)
    host = url.netloc
    path = f"/{bucket}/{key}"
    rng = random.Random(seed)
    statuses = {}
    dropped = []
    for i in range(200):
        now = datetime.datetime.now(datetime.timezone.utc)
        form = i % 4
        query = ""
        method = "PUT"
        if form == 0:
            chunks = [bytes([65 + j]) * 9000 for j in range(3)]
            headers, body = signed_chunked_upload(chunks, host, path, access, secret, now)
        elif form == 1:
            headers, body = trailer_upload(b"trailing checksums " * 700, host, path, access, secret, now)
        else:
            # XML bodies the gateway reads: a multipart completion of an upload that does not
            # exist, and a batch delete of keys that do not exist.
            method = "POST"
            if form == 2:
                query = "uploadId=no-such-upload"
                body = (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
                        b"<ETag>\"0123\"</ETag></Part></CompleteMultipartUpload>")
            else:
                query = "delete="
                body = (b"<Delete><Object><Key>absent-1</Key></Object>"
                        b"<Object><Key>absent-2</Key></Object><Quiet>true</Quiet></Delete>")
            headers = {
                "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                "content-md5": base64.b64encode(hashlib.md5(body).digest()).decode(),
            }
            target = path if form == 2 else f"/{bucket}"
            sign_headers("POST", host, target, headers, secret, access, now, query=query)
        body = damage(body, rng)
        if rng.randrange(4) == 0:
            name = rng.choice(sorted(headers))
            headers[name] = damage(headers[name].encode(), rng).decode("latin-1")
        headers["content-length"] = str(len(body))
        target = (path if form != 3 else f"/{bucket}") + (f"?{query}" if query else "")
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value.encode("latin-1"))
            connection.endheaders(body)
            response = connection.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
        except (http.client.HTTPException, ConnectionError, ValueError) as error:
            dropped.append(f"{i}: {error}")
        finally:
            connection.close()
    # The object as stored now, read with a plain signed GET.
    now = datetime.datetime.now(datetime.timezone.utc)
    headers = {"x-amz-content-sha256": EMPTY_SHA256}
    sign_headers("GET", host, path, headers, secret, access, now)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    stored = response.read()
    valid = {
        b"".join(bytes([65 + j]) * 9000 for j in range(3)): "signed",
        b"trailing checksums " * 700: "trailer",
    }
    print(json.dumps({
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "dropped": dropped,
        "get_status": response.status,
        "stored": valid.get(stored, "other") if response.status == 200 else None,
    }))


def respond(connection):
    response = connection.getresponse()
    body = response.read().decode(errors="replace")
    code = re.search(r"<Code>([^<]*)</Code>", body)
    print(json.dumps({"status": response.status, "code": code.group(1) if code else None}))


def main():
    endpoint, access, secret, bucket, key, case = sys.argv[1:7]
    if case.startswith("damaged-"):
        damaged_requests(endpoint, access, secret, bucket, key, int(case.split("-")[1]))
        return
    url = urllib.parse.urlparse(endpoint)
    host = url.netloc
    path = f"/{bucket}/{key}"
    now = datetime.datetime.now(datetime.timezone.utc)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    if case in ("signed-chunks", "tampered-chunk", "unsigned-trailer", "wrong-trailer"):
        if case in ("signed-chunks", "tampered-chunk"):
            chunks = [bytes([65 + i]) * 65536 for i in range(3)]
            headers, body = signed_chunked_upload(
                chunks, host, path, access, secret, now, tamper=case == "tampered-chunk")
        else:
            headers, body = trailer_upload(
                b"trailing checksums " * 5000, host, path, access, secret, now,
                wrong=case == "wrong-trailer")
        headers["content-length"] = str(len(body))
        connection.request("PUT", path, body=body, headers=headers)
        respond(connection)
    elif case == "short-body":
        headers = {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
        sign_headers("PUT", host, path, headers, secret, access, now)
        headers["content-length"] = "100000"
        connection.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        connection.send(b"x" * 50000)
        connection.sock.shutdown(1)
        try:
            respond(connection)
        except (http.client.HTTPException, ConnectionError) as error:
            print(json.dumps({"status": None, "code": None, "closed": str(error)}))
    else:
        sys.exit(f"unknown case {case}")


if __name__ == "__main__":
    main()
