#!/usr/bin/env python3
"""Object lock through boto3: lock-enabled buckets, default retention, retention and legal
hold on versions, what they refuse (with S3's codes) and that a refusal changes nothing, and
that a retention change racing a delete never lets both win."""

import datetime
import threading
import time

import s3check
from s3check import fails


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def versions(s3, bucket, key):
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return sorted(v["VersionId"] for v in listing.get("Versions", []))


def check_buckets_without_lock_refuse_lock_settings(t):
    s3 = t.s3
    plain = t.bucket()
    s3.put_object(Bucket=plain, Key="k", Body=b"x")
    fails("ObjectLockConfigurationNotFoundError", s3.get_object_lock_configuration,
          Bucket=plain, status=404)
    config = {"ObjectLockEnabled": "Enabled"}
    fails("InvalidBucketState", s3.put_object_lock_configuration, Bucket=plain,
          ObjectLockConfiguration=config, status=409)
    until = now() + datetime.timedelta(days=1)
    fails("InvalidRequest", s3.put_object, Bucket=plain, Key="k2", Body=b"x",
          ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until, status=400)
    fails("InvalidRequest", s3.put_object_retention, Bucket=plain, Key="k",
          Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    fails("InvalidRequest", s3.get_object_retention, Bucket=plain, Key="k")
    fails("InvalidRequest", s3.put_object_legal_hold, Bucket=plain, Key="k",
          LegalHold={"Status": "ON"})
    assert "Versions" not in s3.list_object_versions(Bucket=plain, Prefix="k2")
    # A bucket with versioning enabled may take object lock later, as AWS allows.
    s3.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=plain, ObjectLockConfiguration=config)
    got = s3.get_object_lock_configuration(Bucket=plain)["ObjectLockConfiguration"]
    assert got["ObjectLockEnabled"] == "Enabled", got
    fails("InvalidBucketState", s3.put_bucket_versioning, Bucket=plain,
          VersioningConfiguration={"Status": "Suspended"}, status=409)


def check_lock_configuration(t):
    s3 = t.s3
    bucket = t.bucket(ObjectLockEnabledForBucket=True)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    got = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert got == {"ObjectLockEnabled": "Enabled"}, got
    fails("InvalidBucketState", s3.put_bucket_versioning, Bucket=bucket,
          VersioningConfiguration={"Status": "Suspended"}, status=409)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    def rule(**retention):
        return {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": retention}}

    for bad, code in [
        (rule(Mode="GOVERNANCE", Days=0), "InvalidRetentionPeriod"),
        (rule(Mode="GOVERNANCE", Years=-1), "InvalidRetentionPeriod"),
        (rule(Mode="GOVERNANCE", Days=1, Years=1), "MalformedXML"),
        (rule(Mode="abc", Days=1), "MalformedXML"),
        (rule(Mode="governance", Days=1), "MalformedXML"),
        ({"ObjectLockEnabled": "Disabled"}, "MalformedXML"),
    ]:
        fails(code, s3.put_object_lock_configuration, Bucket=bucket,
              ObjectLockConfiguration=bad, status=400)
    got = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert got == {"ObjectLockEnabled": "Enabled"}, got
    s3.put_object_lock_configuration(Bucket=bucket,
                                     ObjectLockConfiguration=rule(Mode="COMPLIANCE", Years=2))
    got = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert got["Rule"]["DefaultRetention"] == {"Mode": "COMPLIANCE", "Years": 2}, got


def check_default_retention_protects_each_version(t):
    s3 = t.s3
    bucket = t.bucket(ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    first = s3.put_object(Bucket=bucket, Key="doc", Body=b"first")["VersionId"]
    head = s3.head_object(Bucket=bucket, Key="doc")
    assert head["ObjectLockMode"] == "GOVERNANCE", head
    left = head["ObjectLockRetainUntilDate"] - now()
    assert datetime.timedelta(hours=23) < left <= datetime.timedelta(days=1), left
    # Overwriting makes a new version; the locked one stays, bytes and all.
    second = s3.put_object(Bucket=bucket, Key="doc", Body=b"second")["VersionId"]
    # A delete without a version makes a delete marker: allowed, as in S3.
    marker = s3.delete_object(Bucket=bucket, Key="doc")
    assert marker["DeleteMarker"], marker
    for version in (first, second):
        fails("AccessDenied", s3.delete_object, Bucket=bucket, Key="doc", VersionId=version,
              status=403)
    body = s3.get_object(Bucket=bucket, Key="doc", VersionId=first)["Body"].read()
    assert body == b"first", body
    kept = versions(s3, bucket, "doc")
    assert sorted([first, second]) == kept, kept
    # DeleteObjects answers the refusal per key.
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "doc", "VersionId": first}, {"Key": "doc", "VersionId": second}]})
    assert sorted(e["Code"] for e in answer["Errors"]) == ["AccessDenied"] * 2, answer
    assert versions(s3, bucket, "doc") == kept
    # Governance yields to the bypass header.
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=first, BypassGovernanceRetention=True)
    answer = s3.delete_objects(Bucket=bucket, BypassGovernanceRetention=True, Delete={
        "Objects": [{"Key": "doc", "VersionId": second}]})
    assert not answer.get("Errors"), answer
    assert versions(s3, bucket, "doc") == []


def check_compliance_holds_until_its_time(t):
    s3 = t.s3
    bucket = t.bucket(ObjectLockEnabledForBucket=True)
    until = now() + datetime.timedelta(seconds=6)
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"kept", ObjectLockMode="COMPLIANCE",
                        ObjectLockRetainUntilDate=until)
    version = put["VersionId"]
    got = s3.get_object_retention(Bucket=bucket, Key="c", VersionId=version)["Retention"]
    assert got["Mode"] == "COMPLIANCE", got
    assert abs((got["RetainUntilDate"] - until).total_seconds()) < 1, got
    fails("AccessDenied", s3.delete_object, Bucket=bucket, Key="c", VersionId=version,
          BypassGovernanceRetention=True)
    shorter = {"Mode": "COMPLIANCE", "RetainUntilDate": until - datetime.timedelta(seconds=3)}
    fails("AccessDenied", s3.put_object_retention, Bucket=bucket, Key="c", VersionId=version,
          Retention=shorter, BypassGovernanceRetention=True)
    governance = {"Mode": "GOVERNANCE", "RetainUntilDate": until + datetime.timedelta(days=1)}
    fails("AccessDenied", s3.put_object_retention, Bucket=bucket, Key="c", VersionId=version,
          Retention=governance, BypassGovernanceRetention=True)
    # Lengthening is allowed.
    later = until + datetime.timedelta(seconds=2)
    s3.put_object_retention(Bucket=bucket, Key="c", VersionId=version,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})
    got = s3.get_object_retention(Bucket=bucket, Key="c", VersionId=version)["Retention"]
    assert abs((got["RetainUntilDate"] - later).total_seconds()) < 1, got
    assert s3.get_object(Bucket=bucket, Key="c", VersionId=version)["Body"].read() == b"kept"
    # Once its time has passed, the version may go.
    time.sleep(max(0.0, (later - now()).total_seconds()) + 0.5)
    s3.delete_object(Bucket=bucket, Key="c", VersionId=version)
    assert versions(s3, bucket, "c") == []


def check_governance_changes_need_bypass(t):
    s3 = t.s3
    bucket = t.bucket(ObjectLockEnabledForBucket=True)
    until = now() + datetime.timedelta(days=2)
    version = s3.put_object(Bucket=bucket, Key="g", Body=b"g", ObjectLockMode="GOVERNANCE",
                            ObjectLockRetainUntilDate=until)["VersionId"]
    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": until - datetime.timedelta(days=1)}
    fails("AccessDenied", s3.put_object_retention, Bucket=bucket, Key="g", VersionId=version,
          Retention=shorter)
    compliance = {"Mode": "COMPLIANCE", "RetainUntilDate": until}
    fails("AccessDenied", s3.put_object_retention, Bucket=bucket, Key="g", VersionId=version,
          Retention=compliance)
    got = s3.get_object_retention(Bucket=bucket, Key="g", VersionId=version)["Retention"]
    assert got["Mode"] == "GOVERNANCE" and abs((got["RetainUntilDate"] - until).total_seconds()) < 1
    s3.put_object_retention(Bucket=bucket, Key="g", VersionId=version, Retention=shorter,
                            BypassGovernanceRetention=True)
    got = s3.get_object_retention(Bucket=bucket, Key="g", VersionId=version)["Retention"]
    assert abs((got["RetainUntilDate"] - shorter["RetainUntilDate"]).total_seconds()) < 1, got
    # Bad documents and dates.
    past = {"Mode": "GOVERNANCE", "RetainUntilDate": now() - datetime.timedelta(days=1)}
    fails("InvalidArgument", s3.put_object_retention, Bucket=bucket, Key="g", VersionId=version,
          Retention=past, BypassGovernanceRetention=True)
    fails("MalformedXML", s3.put_object_retention, Bucket=bucket, Key="g", VersionId=version,
          Retention={"Mode": "FOREVER", "RetainUntilDate": until})
    fails("InvalidArgument", s3.put_object, Bucket=bucket, Key="g", Body=b"x",
          ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=now() - datetime.timedelta(days=1))
    fails("NoSuchVersion", s3.put_object_retention, Bucket=bucket, Key="g",
          VersionId="0000000000000001", Retention=shorter)
    # An object with no retention has none to show.
    plain = s3.put_object(Bucket=bucket, Key="p", Body=b"p")["VersionId"]
    fails("NoSuchObjectLockConfiguration", s3.get_object_retention, Bucket=bucket, Key="p",
          VersionId=plain, status=404)
    # Removal, with the bypass.
    s3.put_object_retention(Bucket=bucket, Key="g", VersionId=version, Retention={},
                            BypassGovernanceRetention=True)
    fails("NoSuchObjectLockConfiguration", s3.get_object_retention, Bucket=bucket, Key="g",
          VersionId=version)
    s3.delete_object(Bucket=bucket, Key="g", VersionId=version)


def check_legal_hold(t):
    s3 = t.s3
    bucket = t.bucket(ObjectLockEnabledForBucket=True)
    version = s3.put_object(Bucket=bucket, Key="h", Body=b"h",
                            ObjectLockLegalHoldStatus="ON")["VersionId"]
    head = s3.head_object(Bucket=bucket, Key="h")
    assert head["ObjectLockLegalHoldStatus"] == "ON", head
    fails("AccessDenied", s3.delete_object, Bucket=bucket, Key="h", VersionId=version,
          BypassGovernanceRetention=True)
    fails("MalformedXML", s3.put_object_legal_hold, Bucket=bucket, Key="h", VersionId=version,
          LegalHold={"Status": "MAYBE"})
    got = s3.get_object_legal_hold(Bucket=bucket, Key="h", VersionId=version)["LegalHold"]
    assert got == {"Status": "ON"}, got
    s3.put_object_legal_hold(Bucket=bucket, Key="h", VersionId=version,
                             LegalHold={"Status": "OFF"})
    got = s3.get_object_legal_hold(Bucket=bucket, Key="h", VersionId=version)["LegalHold"]
    assert got == {"Status": "OFF"}, got
    s3.delete_object(Bucket=bucket, Key="h", VersionId=version)
    assert versions(s3, bucket, "h") == []


def check_multipart_and_copy_take_lock_headers(t):
    s3 = t.s3
    bucket = t.bucket(ObjectLockEnabledForBucket=True)
    until = now() + datetime.timedelta(days=1)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m", ObjectLockMode="GOVERNANCE",
                                        ObjectLockRetainUntilDate=until)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"m" * 10)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    head = s3.head_object(Bucket=bucket, Key="m")
    assert head["ObjectLockMode"] == "GOVERNANCE", head
    fails("AccessDenied", s3.delete_object, Bucket=bucket, Key="m", VersionId=done["VersionId"])
    copy = s3.copy_object(Bucket=bucket, Key="m2", CopySource={"Bucket": bucket, "Key": "m"},
                          ObjectLockLegalHoldStatus="ON")
    head = s3.head_object(Bucket=bucket, Key="m2")
    assert head["ObjectLockLegalHoldStatus"] == "ON" and "ObjectLockMode" not in head, head
    fails("AccessDenied", s3.delete_object, Bucket=bucket, Key="m2", VersionId=copy["VersionId"])
    # A copy into a bucket without lock carries none.
    plain = t.bucket()
    s3.copy_object(Bucket=plain, Key="m", CopySource={"Bucket": bucket, "Key": "m"})
    head = s3.head_object(Bucket=plain, Key="m")
    assert "ObjectLockMode" not in head and "ObjectLockLegalHoldStatus" not in head, head
    s3.delete_object(Bucket=plain, Key="m")


def check_retention_racing_a_delete_never_both_win(t):
    """A delete with bypass races a change to COMPLIANCE (allowed with bypass): each round,
    exactly one of the two may succeed, and a surviving version is under compliance."""
    s3 = t.s3
    bucket = t.bucket(ObjectLockEnabledForBucket=True)
    clients = [t.client(t.owner, max_pool_connections=4) for _ in range(2)]
    outcomes = {"retained": 0, "deleted": 0}
    for round in range(12):
        key = f"race-{round}"
        until = now() + datetime.timedelta(days=1)
        version = s3.put_object(Bucket=bucket, Key=key, Body=b"r", ObjectLockMode="GOVERNANCE",
                                ObjectLockRetainUntilDate=until)["VersionId"]
        results = {}
        start = threading.Barrier(2)

        def retain():
            start.wait()
            try:
                clients[0].put_object_retention(
                    Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True,
                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
                results["retain"] = "ok"
            except Exception as error:
                results["retain"] = error.response["Error"]["Code"]

        def delete():
            start.wait()
            try:
                clients[1].delete_object(Bucket=bucket, Key=key, VersionId=version,
                                         BypassGovernanceRetention=True)
                results["delete"] = "ok"
            except Exception as error:
                results["delete"] = error.response["Error"]["Code"]

        threads = [threading.Thread(target=f) for f in (retain, delete)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        left = versions(s3, bucket, key)
        if results["delete"] == "ok":
            assert left == [] and results["retain"] != "ok", (results, left)
            outcomes["deleted"] += 1
        else:
            assert results == {"retain": "ok", "delete": "AccessDenied"}, results
            got = s3.get_object_retention(Bucket=bucket, Key=key, VersionId=version)
            assert got["Retention"]["Mode"] == "COMPLIANCE" and left == [version], (got, left)
            outcomes["retained"] += 1
    print(f"  race outcomes: {outcomes}")


if __name__ == "__main__":
    import sys
    s3check.run(sys.modules[__name__])
