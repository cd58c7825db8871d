//! Lifecycle configurations on the wire, to and from the bucket layer's rules (which the
//! gateways apply in the background; see `tidepool_buckets::lifecycle`).

use s3s::dto::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule as RuleDto, LifecycleRuleAndOperator, LifecycleRuleFilter,
    NoncurrentVersionExpiration, Tag,
};
use s3s::{s3_error, S3Result};
use tidepool_buckets::LifecycleRule;

use crate::s3::{millis, timestamp};

/// The most rules a configuration may hold, as in S3.
const RULES_MAX: usize = 1000;

fn tag_pair(tag: &Tag) -> S3Result<(String, String)> {
    match (&tag.key, &tag.value) {
        (Some(k), Some(v)) => Ok((k.clone(), v.clone())),
        _ => Err(s3_error!(MalformedXML, "A tag names its key and value.")),
    }
}

fn size(n: Option<i64>) -> S3Result<Option<u64>> {
    n.map(|n| {
        u64::try_from(n).map_err(|_| s3_error!(InvalidArgument, "Object sizes are not negative."))
    })
    .transpose()
}

fn days(n: Option<i32>, what: &str) -> S3Result<Option<u32>> {
    n.map(|n| {
        u32::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| s3_error!(InvalidArgument, "'{what}' must be a positive integer"))
    })
    .transpose()
}

/// The rules a `PutBucketLifecycleConfiguration` document asks for.
pub fn rules_of(document: Option<BucketLifecycleConfiguration>) -> S3Result<Vec<LifecycleRule>> {
    let document =
        document.ok_or_else(|| s3_error!(MalformedXML, "No lifecycle configuration."))?;
    if document.rules.is_empty() || document.rules.len() > RULES_MAX {
        return Err(s3_error!(
            MalformedXML,
            "A configuration holds 1 to 1,000 rules."
        ));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut rules = Vec::new();
    for dto in document.rules {
        if let Some(id) = &dto.id {
            if id.len() > 255 {
                return Err(s3_error!(
                    InvalidArgument,
                    "ID length should not exceed allowed limit of 255"
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(s3_error!(
                    InvalidArgument,
                    "Rule ID must be unique. Found same ID for more than one rule"
                ));
            }
        }
        let enabled = match dto.status.as_str() {
            ExpirationStatus::ENABLED => true,
            ExpirationStatus::DISABLED => false,
            _ => return Err(s3_error!(MalformedXML, "Status is Enabled or Disabled.")),
        };
        if dto.transitions.as_ref().is_some_and(|t| !t.is_empty())
            || dto
                .noncurrent_version_transitions
                .as_ref()
                .is_some_and(|t| !t.is_empty())
        {
            return Err(s3_error!(NotImplemented, "Lifecycle transitions are not supported; storage classes are chosen when objects are written."));
        }
        let mut rule = LifecycleRule {
            id: dto.id,
            enabled,
            prefix: dto.prefix.unwrap_or_default(),
            ..Default::default()
        };
        if let Some(filter) = dto.filter {
            let LifecycleRuleFilter {
                and,
                object_size_greater_than,
                object_size_less_than,
                prefix,
                tag,
            } = filter;
            let given = [
                and.is_some(),
                prefix.is_some()
                    || object_size_greater_than.is_some()
                    || object_size_less_than.is_some(),
                tag.is_some(),
            ];
            if given.iter().filter(|g| **g).count() > 1 && and.is_some() {
                return Err(s3_error!(
                    MalformedXML,
                    "A filter names And, or one condition."
                ));
            }
            if let Some(prefix) = prefix {
                rule.prefix = prefix;
            }
            rule.size_greater_than = size(object_size_greater_than)?;
            rule.size_less_than = size(object_size_less_than)?;
            if let Some(tag) = &tag {
                let (k, v) = tag_pair(tag)?;
                rule.tags.insert(k, v);
            }
            if let Some(and) = and {
                let LifecycleRuleAndOperator {
                    object_size_greater_than,
                    object_size_less_than,
                    prefix,
                    tags,
                } = and;
                if let Some(prefix) = prefix {
                    rule.prefix = prefix;
                }
                rule.size_greater_than = size(object_size_greater_than)?;
                rule.size_less_than = size(object_size_less_than)?;
                for tag in tags.iter().flatten() {
                    let (k, v) = tag_pair(tag)?;
                    rule.tags.insert(k, v);
                }
            }
        }
        if let Some(expiration) = dto.expiration {
            rule.expiration_days = days(expiration.days, "Days")?;
            rule.expiration_date_ms = expiration.date.as_ref().map(millis);
            rule.expired_object_delete_marker =
                expiration.expired_object_delete_marker.unwrap_or(false);
        }
        if let Some(noncurrent) = dto.noncurrent_version_expiration {
            rule.noncurrent_days = days(noncurrent.noncurrent_days, "NoncurrentDays")?;
            rule.newer_noncurrent_versions = noncurrent
                .newer_noncurrent_versions
                .map(|n| {
                    u32::try_from(n).map_err(|_| {
                        s3_error!(InvalidArgument, "NewerNoncurrentVersions must be positive")
                    })
                })
                .transpose()?;
        }
        if let Some(abort) = dto.abort_incomplete_multipart_upload {
            rule.abort_incomplete_days = days(abort.days_after_initiation, "DaysAfterInitiation")?;
        }
        rule.check()
            .map_err(|reason| s3_error!(InvalidArgument, "{reason}"))?;
        rules.push(rule);
    }
    Ok(rules)
}

/// A rule as S3 shows it.
pub fn rule_dto(rule: &LifecycleRule) -> RuleDto {
    let tags: Vec<Tag> = rule
        .tags
        .iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect();
    let sized = rule.size_greater_than.is_some() || rule.size_less_than.is_some();
    let filter = if tags.len() > 1 || (!tags.is_empty() && (sized || !rule.prefix.is_empty())) {
        LifecycleRuleFilter {
            and: Some(LifecycleRuleAndOperator {
                prefix: Some(rule.prefix.clone()),
                tags: Some(tags),
                object_size_greater_than: rule.size_greater_than.map(|n| n as i64),
                object_size_less_than: rule.size_less_than.map(|n| n as i64),
            }),
            ..Default::default()
        }
    } else {
        LifecycleRuleFilter {
            prefix: Some(rule.prefix.clone()),
            tag: tags.into_iter().next(),
            object_size_greater_than: rule.size_greater_than.map(|n| n as i64),
            object_size_less_than: rule.size_less_than.map(|n| n as i64),
            ..Default::default()
        }
    };
    let expires = rule.expiration_days.is_some()
        || rule.expiration_date_ms.is_some()
        || rule.expired_object_delete_marker;
    RuleDto {
        id: rule.id.clone(),
        status: ExpirationStatus::from(
            if rule.enabled {
                ExpirationStatus::ENABLED
            } else {
                ExpirationStatus::DISABLED
            }
            .to_owned(),
        ),
        filter: Some(filter),
        expiration: expires.then(|| LifecycleExpiration {
            days: rule.expiration_days.map(|d| d as i32),
            date: rule.expiration_date_ms.map(timestamp),
            expired_object_delete_marker: rule.expired_object_delete_marker.then_some(true),
        }),
        noncurrent_version_expiration: rule.noncurrent_days.map(|d| NoncurrentVersionExpiration {
            noncurrent_days: Some(d as i32),
            newer_noncurrent_versions: rule.newer_noncurrent_versions.map(|n| n as i32),
        }),
        abort_incomplete_multipart_upload: rule.abort_incomplete_days.map(|d| {
            AbortIncompleteMultipartUpload {
                days_after_initiation: Some(d as i32),
            }
        }),
        noncurrent_version_transitions: None,
        prefix: None,
        transitions: None,
    }
}
