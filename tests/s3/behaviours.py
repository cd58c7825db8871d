#!/usr/bin/env python3
"""Single S3 behaviours that SDKs and conformance suites rely on, each as AWS answers it:
retried multipart completions, bucket locations, owners in listings, empty pages, request
ids in errors, stored content encodings, chunked transfers without a length, Content-MD5
checks, presigned URL lifetimes, conditional GETs and conditional PUTs."""

import base64
import datetime
import hashlib
import http.client
import os
import sys
import time
import urllib.parse

import botocore.exceptions

import s3check
from s3check import fails

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from sigv4 import sign_headers  # noqa: E402


def raw(t, method, path, headers=None, body=None, query="", sign=True, chunked=False):
    """One request over plain HTTP; its status, headers and body."""
    url = urllib.parse.urlparse(t.endpoint)
    headers = dict(headers or {})
    if sign:
        headers.setdefault("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        access, secret = t.users[t.owner]
        sign_headers(method, url.netloc, path, headers, secret, access,
                     datetime.datetime.now(datetime.timezone.utc), query)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    target = urllib.parse.quote(path, safe="/~") + (f"?{query}" if query else "")
    if chunked:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("transfer-encoding", "chunked")
        connection.endheaders()
        for piece in body:
            connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        connection.send(b"0\r\n\r\n")
    else:
        connection.request(method, target, body=body, headers=headers)
    response = connection.getresponse()
    answer = (response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    connection.close()
    return answer


def check_repeated_complete_answers_the_same_etag(t):
    s3 = t.s3
    bucket = t.bucket()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"p" * 100)
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    first = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                         MultipartUpload=parts)
    again = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                         MultipartUpload=parts)
    assert again["ETag"] == first["ETag"], (first, again)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"p" * 100
    # Once the key holds another object, the upload is gone.
    s3.put_object(Bucket=bucket, Key="mp", Body=b"other")
    fails("NoSuchUpload", s3.complete_multipart_upload, Bucket=bucket, Key="mp",
          UploadId=upload, MultipartUpload=parts)
    fails("NoSuchUpload", s3.complete_multipart_upload, Bucket=bucket, Key="mp",
          UploadId="nothere", MultipartUpload=parts)


def check_bucket_location(t):
    s3 = t.s3
    plain = t.bucket()
    assert s3.get_bucket_location(Bucket=plain).get("LocationConstraint") is None
    placed = t.bucket(CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    got = s3.get_bucket_location(Bucket=placed)["LocationConstraint"]
    assert got == "eu-west-1", got


def check_listing_owners_and_empty_pages(t):
    s3 = t.s3
    bucket = t.bucket()
    for key in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    listing = s3.list_objects_v2(Bucket=bucket, FetchOwner=True)
    owners = {o["Key"]: o.get("Owner", {}).get("ID") for o in listing["Contents"]}
    assert owners == {"a": t.owner, "b": t.owner}, owners
    listing = s3.list_objects_v2(Bucket=bucket)
    assert all("Owner" not in o for o in listing["Contents"]), listing
    listing = s3.list_objects(Bucket=bucket)
    assert all(o["Owner"]["ID"] == t.owner for o in listing["Contents"]), listing
    empty = s3.list_objects_v2(Bucket=bucket, MaxKeys=0)
    assert "Contents" not in empty and not empty["IsTruncated"], empty
    assert empty["KeyCount"] == 0 and empty["MaxKeys"] == 0, empty
    empty = s3.list_objects(Bucket=bucket, MaxKeys=0)
    assert "Contents" not in empty and not empty["IsTruncated"], empty


def check_errors_carry_their_request_id(t):
    try:
        t.s3.head_object(Bucket=t.bucket(), Key="nothere")
    except botocore.exceptions.ClientError:
        pass
    status, headers, body = raw(t, "GET", f"/{t.bucket()}/nothere")
    assert status == 404, status
    request_id = headers.get("x-amz-request-id")
    assert request_id and f"<RequestId>{request_id}</RequestId>".encode() in body, (headers, body)


def check_aws_chunked_is_not_stored(t):
    s3 = t.s3
    bucket = t.bucket()
    s3.put_object(Bucket=bucket, Key="gz", Body=b"zz", ContentEncoding="gzip, aws-chunked")
    got = s3.head_object(Bucket=bucket, Key="gz").get("ContentEncoding")
    assert got == "gzip", got
    s3.put_object(Bucket=bucket, Key="plain", Body=b"zz", ContentEncoding="aws-chunked")
    got = s3.head_object(Bucket=bucket, Key="plain").get("ContentEncoding")
    assert got is None, got


def check_chunked_transfer_without_length(t):
    bucket = t.bucket()
    pieces = [b"a" * 1000, b"b" * 70000, b"c"]
    status, _, body = raw(t, "PUT", f"/{bucket}/streamed", body=pieces, chunked=True)
    assert status == 200, (status, body)
    got = t.s3.get_object(Bucket=bucket, Key="streamed")["Body"].read()
    assert got == b"".join(pieces), len(got)


def check_content_md5(t):
    s3 = t.s3
    bucket = t.bucket()
    body = b"digest me"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="ok", Body=body, ContentMD5=good)
    for bad in ["not base64!", base64.b64encode(b"short").decode(), ""]:
        status, _, answer = raw(t, "PUT", f"/{bucket}/bad", body=body,
                                headers={"content-md5": bad})
        assert status == 400 and b"<Code>InvalidDigest</Code>" in answer, (bad, status, answer)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    fails("BadDigest", s3.put_object, Bucket=bucket, Key="bad", Body=body, ContentMD5=wrong)
    fails("NoSuchKey", s3.get_object, Bucket=bucket, Key="bad")


def check_presigned_lifetimes(t):
    s3 = t.s3
    bucket = t.bucket()
    s3.put_object(Bucket=bucket, Key="p", Body=b"presigned")
    v4 = t.client(t.owner, signature_version="s3v4")

    def get(url):
        url = urllib.parse.urlparse(url)
        return raw(t, "GET", urllib.parse.unquote(url.path), query=url.query, sign=False)

    status, _, body = get(v4.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=60))
    assert (status, body) == (200, b"presigned"), (status, body)
    for expires in (604801, 609901):
        url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"},
                                        ExpiresIn=expires)
        status, _, body = get(url)
        assert status == 403 and b"AuthorizationQueryParametersError" in body, (status, body)
    url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"},
                                    ExpiresIn=1)
    time.sleep(2.1)
    status, _, body = get(url)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body, (status, body)


def check_conditional_reads_and_writes(t):
    s3 = t.s3
    bucket = t.bucket()
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"cond")["ETag"]
    status, headers, body = raw(t, "GET", f"/{bucket}/c", headers={"if-none-match": etag})
    assert status == 304 and headers.get("etag") == etag and body == b"", (status, headers)
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1))
    status, headers, _ = raw(t, "GET", f"/{bucket}/c", headers={
        "if-modified-since": later.strftime("%a, %d %b %Y %H:%M:%S GMT")})
    assert status == 304 and headers.get("etag") == etag, (status, headers)
    fails("PreconditionFailed", s3.put_object, Bucket=bucket, Key="c", Body=b"new",
          IfMatch='"0123456789abcdef0123456789abcdef"', status=412)
    fails("PreconditionFailed", s3.put_object, Bucket=bucket, Key="absent", Body=b"new",
          IfMatch=etag, status=412)
    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"cond"
    s3.put_object(Bucket=bucket, Key="c", Body=b"new", IfMatch=etag)
    fails("PreconditionFailed", s3.put_object, Bucket=bucket, Key="c", Body=b"x",
          IfNoneMatch="*", status=412)


def check_malformed_documents_change_nothing(t):
    """Configuration documents that are not XML, or not the XML S3 defines, are refused with
    S3's code, and the configuration stays as it was."""
    s3 = t.s3
    bucket = t.bucket()
    s3.put_object(Bucket=bucket, Key="k", Body=b"k")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "team", "Value": "a"}]})
    before = (s3.get_bucket_versioning(Bucket=bucket)["Status"],
              s3.get_bucket_tagging(Bucket=bucket)["TagSet"],
              s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"])
    garbage = [b"<not-closed", b"plain text", b"<Wrong><Shape/></Wrong>"]
    for query, path in [("versioning=", f"/{bucket}"), ("tagging=", f"/{bucket}"),
                        ("cors=", f"/{bucket}"), ("lifecycle=", f"/{bucket}"),
                        ("acl=", f"/{bucket}"), ("object-lock=", f"/{bucket}"),
                        ("tagging=", f"/{bucket}/k"), ("delete=", f"/{bucket}")]:
        for body in garbage:
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            method = "POST" if query == "delete=" else "PUT"
            status, _, answer = raw(t, method, path, body=body, query=query,
                                    headers={"content-md5": md5})
            assert status == 400 and (b"<Code>MalformedXML</Code>" in answer
                                      or b"<Code>MalformedACLError</Code>" in answer), (
                query, body, status, answer)
    after = (s3.get_bucket_versioning(Bucket=bucket)["Status"],
             s3.get_bucket_tagging(Bucket=bucket)["TagSet"],
             s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"])
    assert after == before, (before, after)
    fails("NoSuchCORSConfiguration", s3.get_bucket_cors, Bucket=bucket)
    fails("NoSuchLifecycleConfiguration", s3.get_bucket_lifecycle_configuration, Bucket=bucket)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"k"


def check_multipart_checksums(t):
    import zlib
    from awscrt import checksums as crt

    s3 = t.s3
    bucket = t.bucket()
    first, second = b"a" * (5 << 20), b"tail bytes"
    whole = first + second

    def b64(value, width):
        return base64.b64encode(value.to_bytes(width, "big")).decode()

    def upload(key, algorithm, kind=None, parts=(first, second)):
        extra = {"ChecksumType": kind} if kind else {}
        made = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm,
                                          **extra)
        listed = []
        for number, body in enumerate(parts, 1):
            part = s3.upload_part(Bucket=bucket, Key=key, UploadId=made["UploadId"],
                                  PartNumber=number, Body=body, ChecksumAlgorithm=algorithm)
            listed.append({"PartNumber": number, "ETag": part["ETag"],
                           f"Checksum{algorithm}": part[f"Checksum{algorithm}"]})
        return made, listed

    # COMPOSITE (CRC32's default): the CRC of the parts' CRCs, with the part count.
    made, listed = upload("composite", "CRC32")
    assert made["ChecksumType"] == "COMPOSITE", made
    done = s3.complete_multipart_upload(Bucket=bucket, Key="composite", UploadId=made["UploadId"],
                                        MultipartUpload={"Parts": listed})
    joined = b"".join(base64.b64decode(p["ChecksumCRC32"]) for p in listed)
    composite = f"{b64(zlib.crc32(joined), 4)}-2"
    assert done["ChecksumCRC32"] == composite and done["ChecksumType"] == "COMPOSITE", done
    head = s3.head_object(Bucket=bucket, Key="composite", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == composite and head["ChecksumType"] == "COMPOSITE", head
    # FULL_OBJECT: the CRC of the whole object, made from the parts' CRCs.
    for algorithm, expected in [("CRC32", b64(zlib.crc32(whole), 4)),
                                ("CRC64NVME", b64(crt.crc64nvme(whole), 8))]:
        made, listed = upload(f"full-{algorithm}", algorithm, "FULL_OBJECT")
        done = s3.complete_multipart_upload(
            Bucket=bucket, Key=f"full-{algorithm}", UploadId=made["UploadId"],
            MultipartUpload={"Parts": listed}, ChecksumType="FULL_OBJECT",
            **{f"Checksum{algorithm}": expected})
        assert done[f"Checksum{algorithm}"] == expected, (done, expected)
        attrs = s3.get_object_attributes(Bucket=bucket, Key=f"full-{algorithm}",
                                         ObjectAttributes=["Checksum"])["Checksum"]
        assert attrs[f"Checksum{algorithm}"] == expected and attrs["ChecksumType"] == "FULL_OBJECT", attrs
    # Combinations S3 refuses.
    fails("InvalidRequest", s3.create_multipart_upload, Bucket=bucket, Key="x",
          ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT")
    fails("InvalidRequest", s3.create_multipart_upload, Bucket=bucket, Key="x",
          ChecksumAlgorithm="CRC64NVME", ChecksumType="COMPOSITE")
    # A part's checksum that differs, and a whole-object checksum that differs: nothing made.
    made, listed = upload("wrong", "CRC32", "FULL_OBJECT")
    bad = [dict(listed[0], ChecksumCRC32=b64(1, 4)), listed[1]]
    fails("InvalidPart", s3.complete_multipart_upload, Bucket=bucket, Key="wrong",
          UploadId=made["UploadId"], MultipartUpload={"Parts": bad})
    fails("BadDigest", s3.complete_multipart_upload, Bucket=bucket, Key="wrong",
          UploadId=made["UploadId"], MultipartUpload={"Parts": listed},
          ChecksumType="FULL_OBJECT", ChecksumCRC32=b64(1, 4))
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="wrong")
    s3.complete_multipart_upload(Bucket=bucket, Key="wrong", UploadId=made["UploadId"],
                                 MultipartUpload={"Parts": listed})
    assert s3.get_object(Bucket=bucket, Key="wrong")["Body"].read() == whole


if __name__ == "__main__":
    s3check.run(sys.modules[__name__])
