#!/usr/bin/env python3
"""Hand-made S3 requests the everyday clients never send: SigV4 signed aws-chunked bodies
(whole, and with one chunk's signature tampered with) and a body shorter than its
Content-Length. Prints one JSON line: the HTTP status and the S3 error code, if any.

usage: raw_requests.py ENDPOINT ACCESS_KEY SECRET_KEY BUCKET KEY CASE
CASE: signed-chunks | tampered-chunk | short-body
"""

import datetime
import hashlib
import hmac
import http.client
import json
import re
import sys
import urllib.parse

REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def hmac_sha256(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret, day):
    key = hmac_sha256(("AWS4" + secret).encode(), day)
    for part in (REGION, "s3", "aws4_request"):
        key = hmac_sha256(key, part)
    return key


def sign_headers(method, host, path, headers, secret, access, now):
    """Adds x-amz-date and Authorization (SigV4, every header signed) to `headers`."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    headers["host"] = host
    headers["x-amz-date"] = amz_date
    names = sorted(headers)
    canonical_headers = "".join(f"{n}:{headers[n].strip()}\n" for n in names)
    signed = ";".join(names)
    canonical = "\n".join([
        method,
        urllib.parse.quote(path, safe="/~"),
        "",
        canonical_headers,
        signed,
        headers["x-amz-content-sha256"],
    ])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope,
        hashlib.sha256(canonical.encode()).hexdigest(),
    ])
    key = signing_key(secret, day)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return key, scope, amz_date, signature


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


def respond(connection):
    response = connection.getresponse()
    body = response.read().decode(errors="replace")
    code = re.search(r"<Code>([^<]*)</Code>", body)
    print(json.dumps({"status": response.status, "code": code.group(1) if code else None}))


def main():
    endpoint, access, secret, bucket, key, case = sys.argv[1:7]
    url = urllib.parse.urlparse(endpoint)
    host = url.netloc
    path = f"/{bucket}/{key}"
    now = datetime.datetime.now(datetime.timezone.utc)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    if case in ("signed-chunks", "tampered-chunk"):
        chunks = [bytes([65 + i]) * 65536 for i in range(3)]
        decoded = sum(len(c) for c in chunks)
        headers = {
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "x-amz-decoded-content-length": str(decoded),
            "content-encoding": "aws-chunked",
        }
        signing, scope, amz_date, seed = sign_headers("PUT", host, path, headers, secret, access, now)
        body = chunked_body(chunks, signing, scope, amz_date, seed, case == "tampered-chunk")
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
