//! Access control lists as S3 keeps them: an owner and grants of permissions to users or
//! to the two groups (everyone, and every signed-in user), on buckets and on object versions;
//! with the public access block and the ownership controls a bucket may have. The records
//! and their pure rules; the gateway evaluates them with the bucket policy (see
//! docs/gateway.md, "Access control").

use serde::{Deserialize, Serialize};

/// What a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// List a bucket; read an object.
    Read,
    /// Create, overwrite and delete a bucket's objects.
    Write,
    /// Read the ACL.
    ReadAcp,
    /// Change the ACL.
    WriteAcp,
    /// All of the above.
    FullControl,
}

impl Permission {
    /// The permission S3 names `name`.
    pub fn parse(name: &str) -> Option<Permission> {
        Some(match name {
            "READ" => Permission::Read,
            "WRITE" => Permission::Write,
            "READ_ACP" => Permission::ReadAcp,
            "WRITE_ACP" => Permission::WriteAcp,
            "FULL_CONTROL" => Permission::FullControl,
            _ => return None,
        })
    }

    /// Its S3 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Write => "WRITE",
            Permission::ReadAcp => "READ_ACP",
            Permission::WriteAcp => "WRITE_ACP",
            Permission::FullControl => "FULL_CONTROL",
        }
    }

    /// Whether holding `self` allows `wanted`.
    pub fn allows(self, wanted: Permission) -> bool {
        self == Permission::FullControl || self == wanted
    }
}

/// Who a grant is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grantee {
    /// One user, by name (the canonical id this store shows).
    User(String),
    /// Everyone, anonymous requests included (`.../groups/global/AllUsers`).
    AllUsers,
    /// Every signed request (`.../groups/global/AuthenticatedUsers`).
    AuthenticatedUsers,
}

/// The URI of the group of everyone.
pub const ALL_USERS_URI: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// The URI of the group of signed-in users.
pub const AUTHENTICATED_USERS_URI: &str =
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

impl Grantee {
    /// Whether it is one of the public groups.
    pub fn is_public(&self) -> bool {
        !matches!(self, Grantee::User(_))
    }

    /// Whether it covers the request of `principal` (`None`: anonymous).
    pub fn covers(&self, principal: Option<&str>) -> bool {
        match self {
            Grantee::User(name) => principal == Some(name.as_str()),
            Grantee::AllUsers => true,
            Grantee::AuthenticatedUsers => principal.is_some(),
        }
    }
}

/// One grant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    /// To whom.
    pub grantee: Grantee,
    /// What.
    pub permission: Permission,
}

/// An ACL: the owner (who holds `FULL_CONTROL` whatever the grants say) and the grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    /// The owner's name.
    pub owner: String,
    /// The grants besides the owner's own.
    pub grants: Vec<Grant>,
}

impl Acl {
    /// The ACL of `owner` alone (canned `private`).
    pub fn private(owner: &str) -> Acl {
        Acl {
            owner: owner.to_owned(),
            grants: Vec::new(),
        }
    }

    /// The canned ACL `name` for a resource owned by `owner` in a bucket owned by
    /// `bucket_owner`; `None` for a name S3 does not define.
    pub fn canned(name: &str, owner: &str, bucket_owner: &str) -> Option<Acl> {
        let grant = |grantee: Grantee, permission| Grant {
            grantee,
            permission,
        };
        let grants = match name {
            "private" => Vec::new(),
            "public-read" => vec![grant(Grantee::AllUsers, Permission::Read)],
            "public-read-write" => vec![
                grant(Grantee::AllUsers, Permission::Read),
                grant(Grantee::AllUsers, Permission::Write),
            ],
            "authenticated-read" => vec![grant(Grantee::AuthenticatedUsers, Permission::Read)],
            "bucket-owner-read" if owner != bucket_owner => {
                vec![grant(
                    Grantee::User(bucket_owner.to_owned()),
                    Permission::Read,
                )]
            }
            "bucket-owner-full-control" if owner != bucket_owner => vec![grant(
                Grantee::User(bucket_owner.to_owned()),
                Permission::FullControl,
            )],
            "bucket-owner-read"
            | "bucket-owner-full-control"
            | "aws-exec-read"
            | "log-delivery-write" => Vec::new(),
            _ => return None,
        };
        Some(Acl {
            owner: owner.to_owned(),
            grants,
        })
    }

    /// Whether it allows `principal` (`None`: anonymous) `wanted`; grants to the public groups
    /// count unless `ignore_public`.
    pub fn allows(&self, principal: Option<&str>, wanted: Permission, ignore_public: bool) -> bool {
        if principal == Some(self.owner.as_str()) {
            return true;
        }
        self.grants.iter().any(|g| {
            g.permission.allows(wanted)
                && g.grantee.covers(principal)
                && !(ignore_public && g.grantee.is_public())
        })
    }

    /// Whether it grants anything to a public group.
    pub fn is_public(&self) -> bool {
        self.grants.iter().any(|g| g.grantee.is_public())
    }
}

/// A bucket's public access block (S3's four settings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAccessBlock {
    /// Refuse requests that set a public ACL.
    pub block_public_acls: bool,
    /// Ignore grants to the public groups.
    pub ignore_public_acls: bool,
    /// Refuse a public bucket policy.
    pub block_public_policy: bool,
    /// While the policy is public, only the bucket's owner gets access through it.
    pub restrict_public_buckets: bool,
}

/// A bucket's object ownership (S3's ownership controls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ownership {
    /// ACLs are off: the bucket owner owns every object; only policies grant access.
    BucketOwnerEnforced,
    /// Objects written with `bucket-owner-full-control` belong to the bucket owner.
    BucketOwnerPreferred,
    /// The writer owns an object (the default here, as in Ceph's gateway).
    ObjectWriter,
}

impl Ownership {
    /// The setting S3 names `name`.
    pub fn parse(name: &str) -> Option<Ownership> {
        Some(match name {
            "BucketOwnerEnforced" => Ownership::BucketOwnerEnforced,
            "BucketOwnerPreferred" => Ownership::BucketOwnerPreferred,
            "ObjectWriter" => Ownership::ObjectWriter,
            _ => return None,
        })
    }

    /// Its S3 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Ownership::BucketOwnerEnforced => "BucketOwnerEnforced",
            Ownership::BucketOwnerPreferred => "BucketOwnerPreferred",
            Ownership::ObjectWriter => "ObjectWriter",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_hold_everything_and_grants_what_they_say() {
        let acl = Acl::canned("public-read", "alice", "alice").unwrap();
        for wanted in [Permission::Read, Permission::Write, Permission::WriteAcp] {
            assert!(acl.allows(Some("alice"), wanted, false));
        }
        assert!(acl.allows(None, Permission::Read, false));
        assert!(acl.allows(Some("bob"), Permission::Read, false));
        assert!(!acl.allows(Some("bob"), Permission::Write, false));
        assert!(!acl.allows(None, Permission::Read, true));
        assert!(acl.allows(Some("alice"), Permission::Read, true));
        let acl = Acl::canned("authenticated-read", "alice", "alice").unwrap();
        assert!(!acl.allows(None, Permission::Read, false));
        assert!(acl.allows(Some("bob"), Permission::Read, false));
        let acl = Acl {
            owner: "alice".into(),
            grants: vec![Grant {
                grantee: Grantee::User("bob".into()),
                permission: Permission::FullControl,
            }],
        };
        assert!(acl.allows(Some("bob"), Permission::WriteAcp, false));
        assert!(!acl.allows(Some("carol"), Permission::Read, false));
        assert!(!acl.is_public());
    }

    #[test]
    fn canned_acls_for_objects_in_others_buckets() {
        let acl = Acl::canned("bucket-owner-full-control", "bob", "alice").unwrap();
        assert!(acl.allows(Some("alice"), Permission::WriteAcp, false));
        assert!(acl.allows(Some("bob"), Permission::WriteAcp, false));
        let acl = Acl::canned("bucket-owner-read", "bob", "alice").unwrap();
        assert!(acl.allows(Some("alice"), Permission::Read, false));
        assert!(!acl.allows(Some("alice"), Permission::Write, false));
        assert_eq!(
            Acl::canned("bucket-owner-read", "alice", "alice")
                .unwrap()
                .grants,
            []
        );
        assert!(Acl::canned("everyone-please", "alice", "alice").is_none());
    }
}
