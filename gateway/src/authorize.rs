//! The gateway's access check: `s3s` calls [`Access::check`] for every request once its
//! signature is verified (or it is anonymous), before its body is read; the check gathers
//! what [`access::allowed`] decides on (the caller, the bucket's record and policy, the
//! object's ACL when the operation needs it, the request's condition keys). Also the ACL
//! documents and headers, to and from the bucket layer's records.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::dto::{
    AccessControlPolicy, Grant as GrantDto, Grantee as GranteeDto, Owner, Permission as PermDto,
    Type,
};
use s3s::path::S3Path;
use s3s::{s3_error, S3Result};
use tidepool_buckets::acl::{ALL_USERS_URI, AUTHENTICATED_USERS_URI};
use tidepool_buckets::{
    Acl, BucketError, BucketInfo, Buckets, Grant, Grantee, Ownership, Permission,
};

use crate::access::{self, Needs, Question};
use crate::error::{access_denied, s3};
use crate::policy::Policy;
use crate::users::Users;

/// Who signed the request (`None`: anonymous), as the check found; handlers read it from the
/// request's extensions.
#[derive(Clone, Debug)]
pub struct Caller(pub Option<String>);

/// The client's address, put in the request's extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// The access check `s3s` calls.
#[derive(Debug)]
pub struct Access {
    pub buckets: Buckets,
    pub users: Arc<Users>,
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// The condition keys of a request, by lower-case name.
pub fn context_of(
    headers: &http::HeaderMap,
    query: Option<&str>,
    remote: Option<SocketAddr>,
    principal: Option<&str>,
) -> BTreeMap<String, String> {
    let mut context = BTreeMap::new();
    context.insert("aws:securetransport".into(), "false".into());
    if let Some(remote) = remote {
        context.insert("aws:sourceip".into(), remote.ip().to_string());
    }
    if let Some(name) = principal {
        context.insert("aws:username".into(), name.to_owned());
    }
    for (key, header) in [
        ("aws:referer", "referer"),
        ("aws:useragent", "user-agent"),
        ("s3:x-amz-acl", "x-amz-acl"),
        ("s3:x-amz-copy-source", "x-amz-copy-source"),
        ("s3:x-amz-metadata-directive", "x-amz-metadata-directive"),
        ("s3:x-amz-storage-class", "x-amz-storage-class"),
        (
            "s3:x-amz-server-side-encryption",
            "x-amz-server-side-encryption",
        ),
    ] {
        if let Some(value) = headers.get(header).and_then(|v| v.to_str().ok()) {
            context.insert(key.into(), value.to_owned());
        }
    }
    for (key, name) in [
        ("s3:prefix", "prefix"),
        ("s3:delimiter", "delimiter"),
        ("s3:max-keys", "max-keys"),
        ("s3:versionid", "versionId"),
    ] {
        if let Some(value) = query_value(query, name) {
            context.insert(key.into(), value);
        }
    }
    context
}

/// The resource name of `key` in `bucket` (the bucket itself without a key).
pub fn resource(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("arn:aws:s3:::{bucket}/{key}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

/// One request to decide on, as the check and the handlers that check more (a copy's
/// source, each key of `DeleteObjects`) describe it.
pub struct Ask<'a> {
    pub principal: Option<&'a str>,
    pub op: &'a str,
    pub bucket: &'a str,
    pub key: Option<&'a str>,
    pub version: Option<&'a str>,
    pub context: BTreeMap<String, String>,
}

/// Allows or refuses `ask` (`AccessDenied`); `NoSuchBucket` when the bucket does not exist.
pub async fn decide(buckets: &Buckets, ask: Ask<'_>) -> S3Result<()> {
    let (action, needs) = access::action_of(ask.op, ask.version.is_some());
    let info = buckets.lookup(ask.bucket, false).await.map_err(s3)?;
    let owner = ask.principal == Some(info.owner.as_str());
    if owner && access::manages_policy(ask.op) {
        return Ok(());
    }
    let policy = info
        .policy
        .as_deref()
        .and_then(|text| Policy::parse(text, ask.bucket).ok());
    let object_acl = match (needs, ask.key) {
        (Needs::Object(_), Some(key)) if !owner => {
            object_acl(buckets, ask.bucket, key, ask.version).await?
        }
        _ => None,
    };
    let question = Question {
        principal: ask.principal,
        bucket: &info,
        policy: policy.as_ref(),
        action: &action,
        resource: resource(ask.bucket, ask.key),
        context: ask.context,
        needs,
        object_acl: object_acl.as_ref(),
    };
    if access::allowed(&question) {
        Ok(())
    } else {
        Err(access_denied())
    }
}

/// The ACL of `key` (or its version): its own, or its bucket owner's alone (`None`); `None`
/// too when it does not exist (the policy may still allow, and the handler answers).
async fn object_acl(
    buckets: &Buckets,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> S3Result<Option<Acl>> {
    let found = match version {
        Some(version) => buckets
            .get_version(bucket, key, version)
            .await
            .map(|(e, _)| e),
        None => buckets.head(bucket, key).await,
    };
    match found {
        Ok(entry) => Ok(entry.meta.acl),
        Err(BucketError::NoSuchKey | BucketError::NoSuchVersion | BucketError::DeleteMarker(_)) => {
            Ok(None)
        }
        Err(BucketError::Invalid(_)) => Ok(None),
        Err(other) => Err(s3(other)),
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let principal = match cx.credentials() {
            Some(credentials) => Some(
                self.users
                    .by_access_key(&credentials.access_key)
                    .await
                    .map(|u| u.name)
                    .ok_or_else(|| s3_error!(InvalidAccessKeyId))?,
            ),
            None => None,
        };
        let remote = cx.extensions_mut().get::<RemoteAddr>().map(|r| r.0);
        cx.extensions_mut().insert(Caller(principal.clone()));
        let op = cx.s3_op().name();
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(bucket.to_string()), None),
            S3Path::Object { bucket, key } => (Some(bucket.to_string()), Some(key.to_string())),
        };
        let query = cx.uri().query();
        let version = query_value(query, "versionId");
        let (_, needs) = access::action_of(op, version.is_some());
        let Some(bucket) = bucket.filter(|_| !matches!(needs, Needs::SignedIn)) else {
            return match principal {
                Some(_) => Ok(()),
                None => Err(access_denied()),
            };
        };
        if op == "DeleteObjects" {
            // Each key is decided on by the handler.
            return Ok(());
        }
        let context = context_of(cx.headers(), query, remote, principal.as_deref());
        decide(
            &self.buckets,
            Ask {
                principal: principal.as_deref(),
                op,
                bucket: &bucket,
                key: key.as_deref(),
                version: version.as_deref(),
                context,
            },
        )
        .await
    }
}

/// A grantee as S3 shows it.
fn grantee_dto(grantee: &Grantee) -> GranteeDto {
    match grantee {
        Grantee::User(name) => GranteeDto {
            display_name: Some(name.clone()),
            id: Some(name.clone()),
            type_: Type::from(Type::CANONICAL_USER.to_owned()),
            email_address: None,
            uri: None,
        },
        group => GranteeDto {
            uri: Some(
                if *group == Grantee::AllUsers {
                    ALL_USERS_URI
                } else {
                    AUTHENTICATED_USERS_URI
                }
                .to_owned(),
            ),
            type_: Type::from(Type::GROUP.to_owned()),
            display_name: None,
            email_address: None,
            id: None,
        },
    }
}

/// An ACL as S3 shows it: the owner, its `FULL_CONTROL` first, then the grants.
pub fn acl_dto(acl: &Acl) -> (Owner, Vec<GrantDto>) {
    let owner = Owner {
        display_name: Some(acl.owner.clone()),
        id: Some(acl.owner.clone()),
    };
    let mut grants = vec![GrantDto {
        grantee: Some(grantee_dto(&Grantee::User(acl.owner.clone()))),
        permission: Some(PermDto::from(Permission::FullControl.as_str().to_owned())),
    }];
    grants.extend(acl.grants.iter().map(|g| GrantDto {
        grantee: Some(grantee_dto(&g.grantee)),
        permission: Some(PermDto::from(g.permission.as_str().to_owned())),
    }));
    (owner, grants)
}

/// The grantee a document or header names, checked against the users that exist.
async fn grantee_of(
    users: &Users,
    id: Option<&str>,
    uri: Option<&str>,
    email: Option<&str>,
) -> S3Result<Grantee> {
    if email.is_some() {
        return Err(s3_error!(
            UnresolvableGrantByEmailAddress,
            "The e-mail address you provided does not match any account on record."
        ));
    }
    match (id, uri) {
        (Some(id), None) => {
            if !users.exists(id).await {
                return Err(s3_error!(InvalidArgument, "Invalid id: {id}"));
            }
            Ok(Grantee::User(id.to_owned()))
        }
        (None, Some(ALL_USERS_URI)) => Ok(Grantee::AllUsers),
        (None, Some(AUTHENTICATED_USERS_URI)) => Ok(Grantee::AuthenticatedUsers),
        (None, Some(other)) => Err(s3_error!(InvalidArgument, "Invalid group uri: {other}")),
        _ => Err(s3_error!(
            MalformedACLError,
            "The XML you provided was not well-formed or did not validate against our published schema"
        )),
    }
}

/// The grants of the `x-amz-grant-*` headers (`id="name"`, `uri="group"`, comma separated).
pub async fn header_grants(
    users: &Users,
    headers: [(Option<&str>, Permission); 5],
) -> S3Result<Vec<Grant>> {
    let mut grants = Vec::new();
    for (value, permission) in headers {
        let Some(value) = value else { continue };
        for item in value.split(',') {
            let Some((kind, name)) = item.trim().split_once('=') else {
                return Err(s3_error!(InvalidArgument, "Invalid grant header: {item}"));
            };
            let name = name.trim().trim_matches('"');
            let grantee = match kind.trim().to_ascii_lowercase().as_str() {
                "id" => grantee_of(users, Some(name), None, None).await?,
                "uri" => grantee_of(users, None, Some(name), None).await?,
                "emailaddress" => grantee_of(users, None, None, Some(name)).await?,
                _ => return Err(s3_error!(InvalidArgument, "Invalid grant header: {item}")),
            };
            grants.push(Grant {
                grantee,
                permission,
            });
        }
    }
    Ok(grants)
}

/// The grants of an `AccessControlPolicy` document (the owner's own grant dropped: the
/// owner holds `FULL_CONTROL` always).
pub async fn document_grants(
    users: &Users,
    owner: &str,
    document: &AccessControlPolicy,
) -> S3Result<Vec<Grant>> {
    if let Some(id) = document.owner.as_ref().and_then(|o| o.id.as_deref()) {
        if id != owner {
            return Err(access_denied());
        }
    }
    let mut grants = Vec::new();
    for grant in document.grants.iter().flatten() {
        let malformed = || {
            s3_error!(
                MalformedACLError,
                "The XML you provided was not well-formed or did not validate against our published schema"
            )
        };
        let grantee = grant.grantee.as_ref().ok_or_else(malformed)?;
        let permission = grant
            .permission
            .as_ref()
            .and_then(|p| Permission::parse(p.as_str()))
            .ok_or_else(malformed)?;
        let grantee = grantee_of(
            users,
            grantee.id.as_deref(),
            grantee.uri.as_deref(),
            grantee.email_address.as_deref(),
        )
        .await?;
        if grantee == Grantee::User(owner.to_owned()) && permission == Permission::FullControl {
            continue;
        }
        grants.push(Grant {
            grantee,
            permission,
        });
    }
    Ok(grants)
}

/// The ACL a request sets: its canned ACL, else its grant headers, else its document; for a
/// resource owned by `owner` in `bucket`. Refused as S3 refuses: ACLs on a bucket whose
/// ownership is `BucketOwnerEnforced` (but `bucket-owner-full-control`), public ACLs under
/// `BlockPublicAcls`. `None` when the request names none.
pub async fn requested_acl(
    users: &Users,
    bucket: &BucketInfo,
    owner: &str,
    canned: Option<&str>,
    grants: Vec<Grant>,
    document: Option<&AccessControlPolicy>,
) -> S3Result<Option<Acl>> {
    let acl = match (canned, grants.is_empty(), document) {
        (Some(name), _, _) => Some(
            Acl::canned(name, owner, &bucket.owner)
                .ok_or_else(|| s3_error!(InvalidArgument, "Unknown canned ACL {name}"))?,
        ),
        (None, false, _) => Some(Acl {
            owner: owner.to_owned(),
            grants,
        }),
        (None, true, Some(document)) => Some(Acl {
            owner: owner.to_owned(),
            grants: document_grants(users, owner, document).await?,
        }),
        (None, true, None) => None,
    };
    if bucket.ownership == Some(Ownership::BucketOwnerEnforced)
        && acl.is_some()
        && canned != Some("bucket-owner-full-control")
    {
        return Err(s3_error!(
            AccessControlListNotSupported,
            "The bucket does not allow ACLs"
        ));
    }
    let block = bucket.public_access_block.unwrap_or_default();
    if block.block_public_acls && acl.as_ref().is_some_and(Acl::is_public) {
        return Err(access_denied());
    }
    Ok(acl)
}

/// The ACL a new object written by `writer` gets: what the request asks, owned by the
/// writer; `None` (the bucket owner's alone) when the bucket owner writes without one, under
/// `BucketOwnerEnforced`, and under `BucketOwnerPreferred` with `bucket-owner-full-control`.
pub fn object_acl_for(
    bucket: &BucketInfo,
    writer: &str,
    requested: Option<Acl>,
    canned: Option<&str>,
) -> Option<Acl> {
    match bucket.ownership {
        Some(Ownership::BucketOwnerEnforced) => return None,
        Some(Ownership::BucketOwnerPreferred) if canned == Some("bucket-owner-full-control") => {
            return None
        }
        _ => {}
    }
    match requested {
        Some(acl) => Some(acl),
        None if writer == bucket.owner => None,
        None => Some(Acl::private(writer)),
    }
}
