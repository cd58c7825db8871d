#!/usr/bin/env python3
"""Access control through boto3 with two users and anonymous requests: every operation on
another user's bucket refused and changing nothing; canned and explicit ACLs on buckets and
objects; bucket policies (Allow, Deny beating an ACL grant, conditions); public access
blocks; ownership controls; malformed documents answered with S3's codes."""

import json
import sys

import s3check
from s3check import fails

PUBLIC_READ_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                   "Resource": "arn:aws:s3:::BUCKET/*"}],
}


def policy(bucket, document):
    return json.dumps(document).replace("BUCKET", bucket)


def check_another_users_bucket_is_closed(t):
    """bob tries every operation on alice's bucket: each is AccessDenied, and nothing
    changed."""
    alice, bob = t.s3, t.client("bob")
    bucket = t.bucket()
    alice.put_object(Bucket=bucket, Key="k", Body=b"alice's")
    upload = alice.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    b, k = {"Bucket": bucket}, {"Bucket": bucket, "Key": "k"}
    attempts = [
        (bob.list_objects, b), (bob.list_objects_v2, b),
        (bob.list_object_versions, b), (bob.list_multipart_uploads, b),
        (bob.get_bucket_location, b), (bob.get_bucket_versioning, b),
        (bob.put_bucket_versioning, dict(b, VersioningConfiguration={"Status": "Enabled"})),
        (bob.get_bucket_acl, b), (bob.put_bucket_acl, dict(b, ACL="public-read")),
        (bob.get_bucket_policy, b),
        (bob.put_bucket_policy, dict(b, Policy=policy(bucket, PUBLIC_READ_POLICY))),
        (bob.delete_bucket_policy, b),
        (bob.get_bucket_tagging, b),
        (bob.put_bucket_tagging, dict(b, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})),
        (bob.get_bucket_cors, b), (bob.delete_bucket_cors, b),
        (bob.get_public_access_block, b), (bob.delete_public_access_block, b),
        (bob.put_bucket_ownership_controls, dict(b, OwnershipControls={
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})),
        (bob.get_object_lock_configuration, b),
        (bob.delete_bucket, b),
        (bob.get_object, k), (bob.get_object_acl, k),
        (bob.put_object_acl, dict(k, ACL="public-read")),
        (bob.get_object_tagging, k), (bob.delete_object_tagging, k),
        (bob.put_object_tagging, dict(k, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})),
        (bob.put_object, dict(k, Body=b"bob's")), (bob.delete_object, k),
        (bob.copy_object, dict(b, Key="copy", CopySource={"Bucket": bucket, "Key": "k"})),
        (bob.create_multipart_upload, dict(b, Key="bob")),
        (bob.upload_part, dict(b, Key="mp", UploadId=upload, PartNumber=1, Body=b"x")),
        (bob.list_parts, dict(b, Key="mp", UploadId=upload)),
        (bob.abort_multipart_upload, dict(b, Key="mp", UploadId=upload)),
        (bob.get_object_attributes, dict(k, ObjectAttributes=["ETag"])),
    ]
    for call, args in attempts:
        fails("AccessDenied", call, **args, status=403)
    # HEAD answers carry no body: the status tells.
    fails("403", bob.head_bucket, **b)
    fails("403", bob.head_object, **k)
    answer = bob.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})
    assert [e["Code"] for e in answer["Errors"]] == ["AccessDenied"], answer
    # bob's own bucket may not take alice's object as a copy source either.
    theirs = t.bucket(bob)
    fails("AccessDenied", bob.copy_object, Bucket=theirs, Key="stolen",
          CopySource={"Bucket": bucket, "Key": "k"})
    # Nothing changed.
    assert alice.get_object(**k)["Body"].read() == b"alice's"
    assert [o["Key"] for o in alice.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    assert [u["UploadId"] for u in alice.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    assert alice.get_bucket_versioning(Bucket=bucket).get("Status") is None
    grants = alice.get_bucket_acl(Bucket=bucket)["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"], grants
    fails("NoSuchBucketPolicy", alice.get_bucket_policy, Bucket=bucket, status=404)
    assert [x["Name"] for x in bob.list_buckets()["Buckets"]] == [theirs]
    alice.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)


def check_anonymous_requests(t):
    alice, anonymous = t.s3, t.client(None)
    bucket = t.bucket()
    alice.put_object(Bucket=bucket, Key="private", Body=b"p")
    alice.put_object(Bucket=bucket, Key="public", Body=b"open", ACL="public-read")
    fails("AccessDenied", anonymous.get_object, Bucket=bucket, Key="private")
    fails("AccessDenied", anonymous.list_objects, Bucket=bucket)
    fails("AccessDenied", anonymous.put_object, Bucket=bucket, Key="anon", Body=b"x")
    fails("AccessDenied", anonymous.list_buckets)
    fails("AccessDenied", anonymous.create_bucket, Bucket=f"{bucket}-anon")
    assert anonymous.get_object(Bucket=bucket, Key="public")["Body"].read() == b"open"
    grants = alice.get_object_acl(Bucket=bucket, Key="public")["Grants"]
    assert {(g["Grantee"].get("URI"), g["Permission"]) for g in grants} == {
        (None, "FULL_CONTROL"),
        ("http://acs.amazonaws.com/groups/global/AllUsers", "READ")}, grants
    # A public-read bucket lists to anyone; its private objects stay private.
    alice.put_bucket_acl(Bucket=bucket, ACL="public-read")
    keys = [o["Key"] for o in anonymous.list_objects(Bucket=bucket)["Contents"]]
    assert keys == ["private", "public"], keys
    fails("AccessDenied", anonymous.get_object, Bucket=bucket, Key="private")
    fails("AccessDenied", anonymous.put_object, Bucket=bucket, Key="anon", Body=b"x")
    # public-read-write lets anyone write.
    alice.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    anonymous.put_object(Bucket=bucket, Key="anon", Body=b"x")
    alice.put_bucket_acl(Bucket=bucket, ACL="private")
    fails("AccessDenied", anonymous.list_objects, Bucket=bucket)


def check_acl_grants_to_another_user(t):
    alice, bob, carol = t.s3, t.client("bob"), t.client("carol")
    bucket = t.bucket()
    alice.put_object(Bucket=bucket, Key="shared", Body=b"s")
    alice.put_object_acl(Bucket=bucket, Key="shared", GrantRead='id="bob"')
    assert bob.get_object(Bucket=bucket, Key="shared")["Body"].read() == b"s"
    fails("AccessDenied", carol.get_object, Bucket=bucket, Key="shared")
    fails("AccessDenied", bob.put_object_acl, Bucket=bucket, Key="shared", ACL="public-read")
    # An explicit document: bob may write to the bucket.
    owner = alice.get_bucket_acl(Bucket=bucket)["Owner"]
    alice.put_bucket_acl(Bucket=bucket, AccessControlPolicy={"Owner": owner, "Grants": [
        {"Grantee": {"Type": "CanonicalUser", "ID": owner["ID"]}, "Permission": "FULL_CONTROL"},
        {"Grantee": {"Type": "CanonicalUser", "ID": "bob"}, "Permission": "WRITE"}]})
    grants = alice.get_bucket_acl(Bucket=bucket)["Grants"]
    assert [(g["Grantee"].get("ID"), g["Permission"]) for g in grants] == [
        (owner["ID"], "FULL_CONTROL"), ("bob", "WRITE")], grants
    bob.put_object(Bucket=bucket, Key="from-bob", Body=b"b")
    # bob owns what he wrote; alice, the bucket's owner, still reaches it.
    acl = bob.get_object_acl(Bucket=bucket, Key="from-bob")
    assert acl["Owner"]["ID"] == "bob", acl
    assert alice.get_object(Bucket=bucket, Key="from-bob")["Body"].read() == b"b"
    fails("AccessDenied", bob.list_objects_v2, Bucket=bucket)
    fails("AccessDenied", carol.put_object, Bucket=bucket, Key="c", Body=b"c")
    # Grants naming nobody, or by e-mail, are refused.
    fails("InvalidArgument", alice.put_object_acl, Bucket=bucket, Key="shared",
          GrantRead='id="nobody-of-that-name"')
    fails("UnresolvableGrantByEmailAddress", alice.put_bucket_acl, Bucket=bucket,
          GrantRead='emailAddress="someone@example.com"')
    fails("InvalidArgument", alice.put_object, Bucket=bucket, Key="x", Body=b"x",
          GrantRead="not-a-grant")
    grants = alice.get_bucket_acl(Bucket=bucket)["Grants"]
    assert len(grants) == 2, grants


def check_policy_allow_deny_and_conditions(t):
    alice, bob, anonymous = t.s3, t.client("bob"), t.client(None)
    bucket = t.bucket()
    for key in ("open/a", "secret/b"):
        alice.put_object(Bucket=bucket, Key=key, Body=key.encode(), ACL="public-read")
    document = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::bob:root"]},
         "Action": ["s3:ListBucket"], "Resource": "arn:aws:s3:::BUCKET",
         "Condition": {"StringLike": {"s3:prefix": "open/*"}}},
        {"Effect": "Allow", "Principal": {"AWS": "bob"}, "Action": "s3:PutObject",
         "Resource": "arn:aws:s3:::BUCKET/open/*"},
        # A Deny beats the object's public-read ACL.
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::BUCKET/secret/*"}]}
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(bucket, document))
    assert json.loads(alice.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"][2]["Effect"] == "Deny"
    keys = [o["Key"] for o in bob.list_objects_v2(Bucket=bucket, Prefix="open/")["Contents"]]
    assert keys == ["open/a"], keys
    fails("AccessDenied", bob.list_objects_v2, Bucket=bucket)
    fails("AccessDenied", bob.list_objects_v2, Bucket=bucket, Prefix="secret/")
    bob.put_object(Bucket=bucket, Key="open/bob", Body=b"b")
    fails("AccessDenied", bob.put_object, Bucket=bucket, Key="secret/bob", Body=b"b")
    assert anonymous.get_object(Bucket=bucket, Key="open/a")["Body"].read() == b"open/a"
    for client in (anonymous, bob, alice):
        fails("AccessDenied", client.get_object, Bucket=bucket, Key="secret/b")
    status = alice.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]
    assert status["IsPublic"] is False, status
    # A source-address condition: the loopback matches, another network does not.
    alice.put_object(Bucket=bucket, Key="closed", Body=b"c")
    for network, allowed in (("127.0.0.0/8", True), ("198.18.0.0/15", False)):
        alice.put_bucket_policy(Bucket=bucket, Policy=policy(bucket, {"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::BUCKET/*",
             "Condition": {"IpAddress": {"aws:SourceIp": network}}}]}))
        try:
            bob.get_object(Bucket=bucket, Key="closed")
            got = True
        except Exception:
            got = False
        assert got == allowed, (network, got)
    # The owner may always mend a policy that denies everyone.
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(bucket, {"Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": ["arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/*"]}]}))
    fails("AccessDenied", alice.list_objects_v2, Bucket=bucket)
    alice.delete_bucket_policy(Bucket=bucket)
    alice.list_objects_v2(Bucket=bucket)
    fails("NoSuchBucketPolicy", alice.get_bucket_policy, Bucket=bucket)


def check_malformed_policies_change_nothing(t):
    alice = t.s3
    bucket = t.bucket()
    good = policy(bucket, PUBLIC_READ_POLICY)
    alice.put_bucket_policy(Bucket=bucket, Policy=good)
    for bad in [
        "{not json",
        json.dumps({"Version": "1999-01-01", "Statement": []}),
        policy(bucket, {"Statement": [{"Effect": "Perhaps", "Principal": "*",
                                       "Action": "s3:GetObject", "Resource": "arn:aws:s3:::BUCKET/*"}]}),
        policy(bucket, {"Statement": [{"Effect": "Allow", "Principal": "*",
                                       "Action": "s3:GetObject", "Resource": "arn:aws:s3:::elsewhere/*"}]}),
        policy(bucket, {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                       "Resource": "arn:aws:s3:::BUCKET/*",
                                       "Condition": {"Sometimes": {"s3:prefix": "x"}}}]}),
    ]:
        fails("MalformedPolicy", alice.put_bucket_policy, Bucket=bucket, Policy=bad, status=400)
    assert alice.get_bucket_policy(Bucket=bucket)["Policy"] == good
    fails("MalformedACLError", alice.put_bucket_acl, Bucket=bucket, AccessControlPolicy={
        "Owner": {"ID": t.owner}, "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": t.owner}}]})
    fails("MalformedXML", alice.put_bucket_ownership_controls, Bucket=bucket,
          OwnershipControls={"Rules": [{"ObjectOwnership": "Whoever"}]})


def check_public_access_block(t):
    alice, anonymous = t.s3, t.client(None)
    bucket = t.bucket()
    alice.put_object(Bucket=bucket, Key="k", Body=b"k", ACL="public-read")
    fails("NoSuchPublicAccessBlockConfiguration", alice.get_public_access_block, Bucket=bucket,
          status=404)
    alice.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True,
        "BlockPublicPolicy": True, "RestrictPublicBuckets": False})
    got = alice.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert got == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                   "BlockPublicPolicy": True, "RestrictPublicBuckets": False}, got
    fails("AccessDenied", anonymous.get_object, Bucket=bucket, Key="k")
    fails("AccessDenied", alice.put_object, Bucket=bucket, Key="p", Body=b"p", ACL="public-read")
    fails("AccessDenied", alice.put_bucket_acl, Bucket=bucket, ACL="public-read")
    fails("AccessDenied", alice.put_bucket_policy, Bucket=bucket,
          Policy=policy(bucket, PUBLIC_READ_POLICY))
    fails("NoSuchKey", alice.get_object, Bucket=bucket, Key="p")
    # RestrictPublicBuckets: a public policy serves no one but the owner.
    alice.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "RestrictPublicBuckets": True})
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(bucket, PUBLIC_READ_POLICY))
    assert alice.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
    fails("AccessDenied", anonymous.get_object, Bucket=bucket, Key="k")
    alice.delete_public_access_block(Bucket=bucket)
    assert anonymous.get_object(Bucket=bucket, Key="k")["Body"].read() == b"k"


def check_ownership_controls(t):
    alice, bob = t.s3, t.client("bob")
    bucket = t.bucket()
    fails("OwnershipControlsNotFoundError", alice.get_bucket_ownership_controls, Bucket=bucket,
          status=404)
    alice.put_bucket_acl(Bucket=bucket, GrantWrite='id="bob"')
    bob.put_object(Bucket=bucket, Key="writer-owns", Body=b"w")
    assert alice.get_object_acl(Bucket=bucket, Key="writer-owns")["Owner"]["ID"] == "bob"
    alice.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={
        "Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]})
    bob.put_object(Bucket=bucket, Key="preferred", Body=b"p", ACL="bucket-owner-full-control")
    assert alice.get_object_acl(Bucket=bucket, Key="preferred")["Owner"]["ID"] == t.owner
    alice.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    rules = alice.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}], rules
    # ACLs are off: they grant nothing and cannot be set.
    fails("AccessDenied", bob.put_object, Bucket=bucket, Key="enforced", Body=b"e")
    fails("AccessControlListNotSupported", alice.put_object, Bucket=bucket, Key="e", Body=b"e",
          ACL="public-read", status=400)
    alice.put_object(Bucket=bucket, Key="e", Body=b"e", ACL="bucket-owner-full-control")
    alice.delete_bucket_ownership_controls(Bucket=bucket)
    bob.put_object(Bucket=bucket, Key="again", Body=b"a")


def check_bucket_created_with_acl(t):
    alice, anonymous = t.s3, t.client(None)
    bucket = t.bucket(ACL="public-read")
    anonymous.list_objects_v2(Bucket=bucket)
    owned = t.bucket(ObjectOwnership="BucketOwnerEnforced")
    rules = alice.get_bucket_ownership_controls(Bucket=owned)["OwnershipControls"]["Rules"]
    assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}], rules


if __name__ == "__main__":
    s3check.run(sys.modules[__name__])
