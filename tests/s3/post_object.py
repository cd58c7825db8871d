#!/usr/bin/env python3
"""Browser form uploads (POST object): a policy signed by boto3's generate_presigned_post,
sent as a browser sends a form (multipart/form-data, the file last), with its conditions
enforced and every refusal leaving no object behind."""

import base64
import datetime
import http.client
import json
import sys
import urllib.parse
import uuid

import s3check
from s3check import fails


def send_form(url, fields, filename, content, content_type="application/octet-stream"):
    """POSTs `fields` and then the file, as a browser's form submission; status, headers
    and body of the answer."""
    boundary = "----TidepoolFormBoundary" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            .encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    body = b"".join(parts)
    url = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("POST", url.path, body=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Origin": "http://app.example",
        "User-Agent": "Mozilla/5.0 (form upload test)"})
    response = connection.getresponse()
    answer = (response.status, {k.lower(): v for k, v in response.getheaders()},
              response.read())
    connection.close()
    return answer


def code_of(body):
    text = body.decode(errors="replace")
    start = text.find("<Code>")
    return text[start + 6:text.find("</Code>")] if start >= 0 else None


def presigned(t, bucket, key, fields=None, conditions=None, expires=60):
    v4 = t.client(t.owner, signature_version="s3v4")
    return v4.generate_presigned_post(bucket, key, Fields=fields, Conditions=conditions,
                                      ExpiresIn=expires)


def check_form_upload(t):
    s3 = t.s3
    bucket = t.bucket()
    post = presigned(t, bucket, "uploads/picture.png",
                     fields={"Content-Type": "image/png", "x-amz-meta-origin": "form"},
                     conditions=[["starts-with", "$key", "uploads/"],
                                 {"Content-Type": "image/png"},
                                 {"x-amz-meta-origin": "form"},
                                 ["content-length-range", 1, 4096]])
    content = bytes(range(256)) * 3
    status, headers, body = send_form(post["url"], post["fields"], "picture.png", content,
                                      "image/png")
    assert status == 204, (status, body)
    got = s3.get_object(Bucket=bucket, Key="uploads/picture.png")
    assert got["Body"].read() == content
    assert got["ContentType"] == "image/png", got["ContentType"]
    assert got["Metadata"] == {"origin": "form"}, got["Metadata"]
    assert headers.get("etag", "").strip('"') == got["ETag"].strip('"'), headers

    # success_action_status 201 answers the PostResponse document.
    post = presigned(t, bucket, "created", fields={"success_action_status": "201"},
                     conditions=[{"success_action_status": "201"}])
    status, _, body = send_form(post["url"], post["fields"], "f", b"created")
    assert status == 201 and b"<Key>created</Key>" in body, (status, body)
    assert s3.get_object(Bucket=bucket, Key="created")["Body"].read() == b"created"


def check_conditions_are_enforced(t):
    s3 = t.s3
    bucket = t.bucket()
    post = presigned(t, bucket, "uploads/a",
                     conditions=[["starts-with", "$key", "uploads/"],
                                 ["content-length-range", 1, 10]])
    status, _, body = send_form(post["url"], post["fields"], "a", b"x" * 11)
    assert status == 400 and code_of(body) == "EntityTooLarge", (status, body)
    status, _, body = send_form(post["url"], post["fields"], "a", b"")
    assert status == 400 and code_of(body) == "EntityTooSmall", (status, body)
    # A key outside the policy's prefix.
    fields = dict(post["fields"], key="elsewhere/a")
    status, _, body = send_form(post["url"], fields, "a", b"x")
    assert status == 403 and code_of(body) == "AccessDenied", (status, body)
    # A field the policy does not name.
    fields = dict(post["fields"], **{"x-amz-meta-extra": "1"})
    status, _, body = send_form(post["url"], fields, "a", b"x")
    assert status == 403, (status, body)
    # A policy changed after it was signed.
    document = json.loads(base64.b64decode(post["fields"]["policy"]))
    document["conditions"] = [c for c in document["conditions"]
                              if not (isinstance(c, list) and c[0] == "content-length-range")]
    fields = dict(post["fields"], policy=base64.b64encode(json.dumps(document).encode()).decode())
    status, _, body = send_form(post["url"], fields, "a", b"x" * 100)
    assert status == 403 and code_of(body) == "SignatureDoesNotMatch", (status, body)
    # An expired policy.
    expired = presigned(t, bucket, "uploads/late", expires=-60)
    status, _, body = send_form(expired["url"], expired["fields"], "late", b"x")
    assert status == 403 and code_of(body) == "AccessDenied", (status, body)
    listing = s3.list_objects_v2(Bucket=bucket)
    assert "Contents" not in listing, listing
    # And the policy that holds still works.
    status, _, body = send_form(post["url"], post["fields"], "a", b"fits")
    assert status == 204, (status, body)
    assert s3.get_object(Bucket=bucket, Key="uploads/a")["Body"].read() == b"fits"


def check_forms_are_checked_against_access(t):
    """A form signed by a user who may not write the bucket is refused."""
    bucket = t.bucket()
    bob = t.client("bob", signature_version="s3v4")
    post = bob.generate_presigned_post(bucket, "from-bob", ExpiresIn=60)
    status, _, body = send_form(post["url"], post["fields"], "f", b"x")
    assert status == 403 and code_of(body) == "AccessDenied", (status, body)
    fails("NoSuchKey", t.s3.get_object, Bucket=bucket, Key="from-bob")
    t.s3.put_bucket_acl(Bucket=bucket, GrantWrite='id="bob"')
    status, _, body = send_form(post["url"], post["fields"], "f", b"bob's")
    assert status == 204, (status, body)
    assert t.s3.get_object(Bucket=bucket, Key="from-bob")["Body"].read() == b"bob's"


if __name__ == "__main__":
    s3check.run(sys.modules[__name__])
