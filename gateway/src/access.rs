//! Who may do what: each operation's policy action and the ACL permission it needs, and the
//! decision in the order S3 documents it. Pure; the gateway gathers the inputs (see
//! `s3.rs`, `Gateway::authorize`). See docs/gateway.md, "Access control".

use std::collections::BTreeMap;

use tidepool_buckets::{Acl, BucketInfo, Ownership, Permission};

use crate::policy::{Effect, Policy, Request};

/// What an operation needs besides a policy's Allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Only the bucket's owner (or a policy) may.
    Owner,
    /// A permission on the bucket's ACL.
    Bucket(Permission),
    /// A permission on the object's ACL.
    Object(Permission),
    /// A signed-in user (listing one's buckets, creating one).
    SignedIn,
}

/// The policy action of operation `op` (as s3s names operations) and what it needs; a
/// request naming a version asks for the `...Version` actions, as S3's policies name them.
pub fn action_of(op: &str, versioned: bool) -> (String, Needs) {
    use Needs::*;
    use Permission::*;
    let v = |plain: &str, version: &str| if versioned { version } else { plain }.to_owned();
    let (action, needs) = match op {
        "ListBuckets" => ("s3:ListAllMyBuckets".to_owned(), SignedIn),
        "CreateBucket" => ("s3:CreateBucket".to_owned(), SignedIn),
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => {
            ("s3:ListBucket".to_owned(), Bucket(Read))
        }
        "ListObjectVersions" => ("s3:ListBucketVersions".to_owned(), Bucket(Read)),
        "ListMultipartUploads" => ("s3:ListBucketMultipartUploads".to_owned(), Bucket(Read)),
        "GetBucketAcl" => ("s3:GetBucketAcl".to_owned(), Bucket(ReadAcp)),
        "PutBucketAcl" => ("s3:PutBucketAcl".to_owned(), Bucket(WriteAcp)),
        "PutObject"
        | "PostObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "CopyObject" => ("s3:PutObject".to_owned(), Bucket(Write)),
        "AbortMultipartUpload" => ("s3:AbortMultipartUpload".to_owned(), Bucket(Write)),
        "ListParts" => ("s3:ListMultipartUploadParts".to_owned(), Bucket(Write)),
        "DeleteObject" => (
            v("s3:DeleteObject", "s3:DeleteObjectVersion"),
            Bucket(Write),
        ),
        "DeleteObjects" => ("s3:DeleteObject".to_owned(), Bucket(Write)),
        "GetObject" | "HeadObject" | "GetObjectAttributes" => {
            (v("s3:GetObject", "s3:GetObjectVersion"), Object(Read))
        }
        "GetObjectAcl" => (
            v("s3:GetObjectAcl", "s3:GetObjectVersionAcl"),
            Object(ReadAcp),
        ),
        "PutObjectAcl" => (
            v("s3:PutObjectAcl", "s3:PutObjectVersionAcl"),
            Object(WriteAcp),
        ),
        "GetObjectTagging" => (
            v("s3:GetObjectTagging", "s3:GetObjectVersionTagging"),
            Owner,
        ),
        "PutObjectTagging" => (
            v("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),
            Owner,
        ),
        "DeleteObjectTagging" => (
            v("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),
            Owner,
        ),
        "PutBucketCors" | "DeleteBucketCors" => ("s3:PutBucketCORS".to_owned(), Owner),
        "GetBucketCors" => ("s3:GetBucketCORS".to_owned(), Owner),
        "DeleteBucketTagging" => ("s3:PutBucketTagging".to_owned(), Owner),
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => {
            ("s3:PutBucketPublicAccessBlock".to_owned(), Owner)
        }
        "GetPublicAccessBlock" => ("s3:GetBucketPublicAccessBlock".to_owned(), Owner),
        "DeleteBucketOwnershipControls" => ("s3:PutBucketOwnershipControls".to_owned(), Owner),
        "PutObjectLockConfiguration" => ("s3:PutBucketObjectLockConfiguration".to_owned(), Owner),
        "GetObjectLockConfiguration" => ("s3:GetBucketObjectLockConfiguration".to_owned(), Owner),
        "DeleteBucketLifecycle" => ("s3:PutLifecycleConfiguration".to_owned(), Owner),
        "PutBucketLifecycleConfiguration" => ("s3:PutLifecycleConfiguration".to_owned(), Owner),
        "GetBucketLifecycleConfiguration" => ("s3:GetLifecycleConfiguration".to_owned(), Owner),
        other => (format!("s3:{other}"), Owner),
    };
    (action, needs)
}

/// Whether operation `op` manages the bucket policy: the bucket's owner may always, so that
/// a policy that denies its owner can still be mended.
pub fn manages_policy(op: &str) -> bool {
    matches!(
        op,
        "PutBucketPolicy" | "GetBucketPolicy" | "DeleteBucketPolicy" | "GetBucketPolicyStatus"
    )
}

/// What one decision is about.
pub struct Question<'a> {
    /// The signed-in user (`None`: anonymous).
    pub principal: Option<&'a str>,
    /// The bucket, with its owner, ACL, public access block and ownership.
    pub bucket: &'a BucketInfo,
    /// Its policy, parsed.
    pub policy: Option<&'a Policy>,
    /// The policy action.
    pub action: &'a str,
    /// The resource (`arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`).
    pub resource: String,
    /// The request's condition keys.
    pub context: BTreeMap<String, String>,
    /// What the operation needs.
    pub needs: Needs,
    /// The object's ACL, when the operation needs one (`None`: the bucket owner's alone).
    pub object_acl: Option<&'a Acl>,
}

/// Whether the request is allowed, in S3's order: an explicit Deny of the policy refuses;
/// then the bucket's owner, a policy Allow, or an ACL grant allows; nothing else does. The
/// public access block ignores public ACL grants and, while the policy is public, lets no
/// one but the owner in; with ownership `BucketOwnerEnforced` ACLs count for nothing.
pub fn allowed(question: &Question) -> bool {
    let Question {
        principal,
        bucket,
        policy,
        action,
        needs,
        ..
    } = question;
    if *needs == Needs::SignedIn {
        return principal.is_some();
    }
    let block = bucket.public_access_block.unwrap_or_default();
    let verdict = policy.and_then(|p| {
        p.evaluate(&Request {
            principal: *principal,
            action,
            resource: question.resource.clone(),
            context: question.context.clone(),
        })
    });
    if verdict == Some(Effect::Deny) {
        return false;
    }
    if *principal == Some(bucket.owner.as_str()) {
        return true;
    }
    if block.restrict_public_buckets && policy.is_some_and(|p| p.is_public()) {
        // While the policy is public, only the owner's own requests get in.
        return false;
    }
    if verdict == Some(Effect::Allow) {
        return true;
    }
    if bucket.ownership == Some(Ownership::BucketOwnerEnforced) {
        return false;
    }
    let ignore_public = block.ignore_public_acls;
    match needs {
        Needs::Bucket(permission) => bucket
            .acl
            .clone()
            .unwrap_or_else(|| Acl::private(&bucket.owner))
            .allows(*principal, *permission, ignore_public),
        Needs::Object(permission) => match question.object_acl {
            Some(acl) => acl.allows(*principal, *permission, ignore_public),
            None => false,
        },
        Needs::Owner | Needs::SignedIn => false,
    }
}

#[cfg(test)]
mod tests {
    use tidepool_buckets::{Grant, Grantee, PublicAccessBlock};

    use super::*;

    fn bucket() -> BucketInfo {
        BucketInfo::new("b", "alice", 1)
    }

    fn ask<'a>(
        bucket: &'a BucketInfo,
        policy: Option<&'a Policy>,
        principal: Option<&'a str>,
        op: &str,
        object_acl: Option<&'a Acl>,
    ) -> bool {
        let (action, needs) = action_of(op, false);
        allowed(&Question {
            principal,
            bucket,
            policy,
            action: &action,
            resource: match needs {
                Needs::Object(_) | Needs::Bucket(Permission::Write) => "arn:aws:s3:::b/k".into(),
                _ => "arn:aws:s3:::b".into(),
            },
            context: BTreeMap::new(),
            needs,
            object_acl,
        })
    }

    #[test]
    fn owners_alone_by_default() {
        let b = bucket();
        for op in [
            "GetObject",
            "PutObject",
            "ListObjectsV2",
            "PutBucketPolicy",
            "GetBucketAcl",
        ] {
            assert!(ask(&b, None, Some("alice"), op, None), "{op}");
            assert!(!ask(&b, None, Some("bob"), op, None), "{op}");
            assert!(!ask(&b, None, None, op, None), "{op}");
        }
        assert!(ask(&b, None, Some("bob"), "ListBuckets", None));
        assert!(!ask(&b, None, None, "ListBuckets", None));
    }

    #[test]
    fn acl_grants_and_what_blocks_them() {
        let mut b = bucket();
        b.acl = Acl::canned("public-read-write", "alice", "alice");
        assert!(ask(&b, None, None, "ListObjects", None));
        assert!(ask(&b, None, Some("bob"), "PutObject", None));
        assert!(!ask(&b, None, Some("bob"), "PutBucketAcl", None));
        let object = Acl::canned("public-read", "alice", "alice").unwrap();
        assert!(ask(&b, None, None, "GetObject", Some(&object)));
        assert!(!ask(&b, None, None, "GetObject", None));
        b.public_access_block = Some(PublicAccessBlock {
            ignore_public_acls: true,
            ..Default::default()
        });
        assert!(!ask(&b, None, None, "ListObjects", None));
        assert!(!ask(&b, None, None, "GetObject", Some(&object)));
        b.public_access_block = None;
        b.ownership = Some(Ownership::BucketOwnerEnforced);
        assert!(!ask(&b, None, None, "GetObject", Some(&object)));
        let granted = Acl {
            owner: "alice".into(),
            grants: vec![Grant {
                grantee: Grantee::User("bob".into()),
                permission: Permission::Read,
            }],
        };
        b.ownership = None;
        assert!(ask(&b, None, Some("bob"), "GetObject", Some(&granted)));
        assert!(!ask(&b, None, Some("bob"), "PutObjectAcl", Some(&granted)));
    }

    #[test]
    fn policy_deny_beats_acl_grants_and_restrict_public_buckets() {
        let mut b = bucket();
        b.acl = Acl::canned("public-read", "alice", "alice");
        let deny = Policy::parse(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b"}]}"#,
            "b",
        )
        .unwrap();
        assert!(!ask(&b, Some(&deny), None, "ListObjects", None));
        assert!(!ask(&b, Some(&deny), Some("alice"), "ListObjects", None));
        let public = Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
            "b",
        )
        .unwrap();
        assert!(ask(&b, Some(&public), None, "GetObject", None));
        b.public_access_block = Some(PublicAccessBlock {
            restrict_public_buckets: true,
            ..Default::default()
        });
        assert!(!ask(&b, Some(&public), None, "GetObject", None));
        assert!(ask(&b, Some(&public), Some("alice"), "GetObject", None));
    }
}
