"""AWS Signature Version 4 for S3, as small as the project's own tools need it: headers
signed with every header the caller passes (used by tests/s3/raw_requests.py and
bench/s3load.py)."""

import hashlib
import hmac
import urllib.parse

REGION = "us-east-1"


def hmac_sha256(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret, day, region=REGION):
    key = hmac_sha256(("AWS4" + secret).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = hmac_sha256(key, part)
    return key


def sign_headers(method, host, path, headers, secret, access, now, query=""):
    """Adds host, x-amz-date and Authorization (SigV4 over every header in `headers`, which
    must hold x-amz-content-sha256) to `headers`. Returns the signing key, the credential
    scope, the request time and the signature, which signed aws-chunked bodies chain from."""
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
        query,
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
