#!/usr/bin/env python3
"""Lifecycle rules through boto3, against a gateway whose lifecycle day lasts LIFECYCLE_DAY
seconds and whose passes run every second: configurations kept and refused as S3 does,
expiration by prefix and tag, older versions and lone delete markers on versioned buckets,
incomplete uploads aborted, and versions under object lock kept."""

import datetime
import os
import sys
import time

import s3check
from s3check import fails

DAY = float(os.environ.get("LIFECYCLE_DAY", "2"))


def wait_for(what, condition, days=4):
    """Waits (at most `days` lifecycle days and some passes) until `condition()` holds."""
    deadline = time.monotonic() + days * DAY + 10
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {days} lifecycle days")


def keys(s3, bucket):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def versions(s3, bucket, key):
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return ([v["VersionId"] for v in listing.get("Versions", [])],
            [m["VersionId"] for m in listing.get("DeleteMarkers", [])])


def rule(rule_id, prefix="", **actions):
    return dict({"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": prefix}}, **actions)


def check_configurations(t):
    s3 = t.s3
    bucket = t.bucket()
    fails("NoSuchLifecycleConfiguration", s3.get_bucket_lifecycle_configuration, Bucket=bucket,
          status=404)
    for bad, code in [
        ([rule("zero", Expiration={"Days": 0})], "InvalidArgument"),
        ([rule("nothing")], "InvalidArgument"),
        ([rule("same", Expiration={"Days": 1}), rule("same", Expiration={"Days": 2})],
         "InvalidArgument"),
        ([dict(rule("status", Expiration={"Days": 1}), Status="Sometimes")], "MalformedXML"),
        ([rule("move", Transitions=[{"Days": 1, "StorageClass": "GLACIER"}])], "NotImplemented"),
    ]:
        fails(code, s3.put_bucket_lifecycle_configuration, Bucket=bucket,
              LifecycleConfiguration={"Rules": bad})
    fails("NoSuchLifecycleConfiguration", s3.get_bucket_lifecycle_configuration, Bucket=bucket)
    rules = [
        rule("tmp", "tmp/", Expiration={"Days": 30}),
        {"ID": "tagged", "Status": "Disabled",
         "Filter": {"And": {"Prefix": "logs/", "Tags": [{"Key": "a", "Value": "1"},
                                                         {"Key": "b", "Value": "2"}]}},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 3, "NewerNoncurrentVersions": 2}},
        rule("uploads", AbortIncompleteMultipartUpload={"DaysAfterInitiation": 7}),
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] for r in got] == ["tmp", "tagged", "uploads"], got
    assert got[0]["Expiration"] == {"Days": 30} and got[0]["Filter"] == {"Prefix": "tmp/"}, got
    assert got[1]["Status"] == "Disabled", got
    assert sorted((x["Key"], x["Value"]) for x in got[1]["Filter"]["And"]["Tags"]) == [
        ("a", "1"), ("b", "2")], got
    assert got[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 3,
                                                     "NewerNoncurrentVersions": 2}, got
    assert got[2]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}, got
    s3.delete_bucket_lifecycle(Bucket=bucket)
    fails("NoSuchLifecycleConfiguration", s3.get_bucket_lifecycle_configuration, Bucket=bucket)


def check_expiration_by_prefix_and_tag(t):
    s3 = t.s3
    bucket = t.bucket()
    s3.put_object(Bucket=bucket, Key="tmp/a", Body=b"a")
    s3.put_object(Bucket=bucket, Key="keep/b", Body=b"b")
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"c", Tagging="expire=yes")
    s3.put_object(Bucket=bucket, Key="untagged", Body=b"d", Tagging="expire=no")
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        rule("tmp", "tmp/", Expiration={"Days": 1}),
        {"ID": "tag", "Status": "Enabled", "Filter": {"Tag": {"Key": "expire", "Value": "yes"}},
         "Expiration": {"Days": 1}},
        # A rule whose day has not come removes nothing.
        rule("later", "keep/", Expiration={"Days": 1000}),
    ]})
    wait_for("expiration", lambda: keys(s3, bucket) == ["keep/b", "untagged"])
    assert s3.get_object(Bucket=bucket, Key="keep/b")["Body"].read() == b"b"


def check_versioned_buckets(t):
    s3 = t.s3
    bucket = t.bucket()
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    made = [s3.put_object(Bucket=bucket, Key="v", Body=f"v{i}".encode())["VersionId"]
            for i in range(4)]
    s3.put_object(Bucket=bucket, Key="gone", Body=b"g")
    s3.delete_object(Bucket=bucket, Key="gone")
    only_marker = s3.list_object_versions(Bucket=bucket, Prefix="gone")["Versions"][0]["VersionId"]
    s3.delete_object(Bucket=bucket, Key="gone", VersionId=only_marker)
    assert versions(s3, bucket, "gone")[0] == [], versions(s3, bucket, "gone")
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        rule("old", "v", NoncurrentVersionExpiration={"NoncurrentDays": 1,
                                                      "NewerNoncurrentVersions": 1}),
        rule("markers", "gone", Expiration={"ExpiredObjectDeleteMarker": True}),
    ]})
    # The current version and the newest older one stay; the two oldest go.
    wait_for("older versions", lambda: versions(s3, bucket, "v")[0] == [made[3], made[2]])
    wait_for("lone delete marker", lambda: versions(s3, bucket, "gone") == ([], []))
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"v3"
    # Expiring current versions hides them behind a delete marker.
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        rule("current", "v", Expiration={"Days": 1})]})
    wait_for("delete marker", lambda: len(versions(s3, bucket, "v")[1]) == 1)
    fails("NoSuchKey", s3.get_object, Bucket=bucket, Key="v")
    assert s3.get_object(Bucket=bucket, Key="v", VersionId=made[3])["Body"].read() == b"v3"


def check_incomplete_uploads_are_aborted(t):
    s3 = t.s3
    bucket = t.bucket()
    stale = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="big", UploadId=stale, PartNumber=1, Body=b"p" * 1000)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        rule("abort", AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1})]})
    wait_for("abort", lambda: "Uploads" not in s3.list_multipart_uploads(Bucket=bucket))
    fails("NoSuchUpload", s3.list_parts, Bucket=bucket, Key="big", UploadId=stale)


def check_locked_versions_stay(t):
    s3 = t.s3
    bucket = t.bucket(ObjectLockEnabledForBucket=True)
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    first = s3.put_object(Bucket=bucket, Key="l", Body=b"locked", ObjectLockMode="GOVERNANCE",
                          ObjectLockRetainUntilDate=until)["VersionId"]
    s3.put_object(Bucket=bucket, Key="l", Body=b"newer")
    # An unlocked older version beside it: once it is gone, a pass has judged both.
    s3.put_object(Bucket=bucket, Key="u", Body=b"unlocked")
    s3.put_object(Bucket=bucket, Key="u", Body=b"newer")
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        rule("old", NoncurrentVersionExpiration={"NoncurrentDays": 1})]})
    wait_for("unlocked older version", lambda: len(versions(s3, bucket, "u")[0]) == 1)
    assert first in versions(s3, bucket, "l")[0], versions(s3, bucket, "l")
    assert s3.get_object(Bucket=bucket, Key="l", VersionId=first)["Body"].read() == b"locked"


if __name__ == "__main__":
    s3check.run(sys.modules[__name__])
