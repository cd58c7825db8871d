//! Object lock on the wire: the lock headers of writes, the retention and legal-hold
//! documents, and the bucket's lock configuration, to and from the bucket layer's records.
//! The rules themselves are the bucket layer's (`tidepool_buckets::lock`).

use s3s::dto::{
    DefaultRetention as DefaultRetentionDto, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode, ObjectLockRule, Timestamp,
};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};
use tidepool_buckets::{
    BucketInfo, DefaultRetention, LockError, LockMode, ObjectLock, ObjectMeta, Retention,
};

use crate::s3::{millis, timestamp};

/// `InvalidRequest` for lock settings on a bucket without object lock, as S3 words it.
pub fn not_enabled() -> S3Error {
    s3_error!(
        InvalidRequest,
        "Bucket is missing Object Lock Configuration"
    )
}

/// The lock headers of a write (`x-amz-object-lock-mode`, `-retain-until-date`,
/// `-legal-hold`) set on `meta`; without them, the bucket's default retention. Headers on a
/// bucket without object lock are `InvalidRequest`.
pub fn apply_headers(
    bucket: &BucketInfo,
    meta: &mut ObjectMeta,
    mode: Option<&ObjectLockMode>,
    until: Option<&Timestamp>,
    hold: Option<&ObjectLockLegalHoldStatus>,
    now_ms: u64,
) -> S3Result<()> {
    let Some(lock) = &bucket.object_lock else {
        if mode.is_some() || until.is_some() || hold.is_some() {
            return Err(not_enabled());
        }
        // A copy from a locked bucket carries no lock into one without.
        meta.retention = None;
        meta.legal_hold = false;
        return Ok(());
    };
    meta.retention = match (mode, until) {
        (None, None) => lock.default.map(|d| d.from(now_ms)),
        (Some(mode), Some(until)) => {
            let mode = LockMode::parse(mode.as_str())
                .ok_or_else(|| s3_error!(InvalidArgument, "Unknown wormMode directive."))?;
            let until_ms = millis(until);
            if until_ms <= now_ms {
                return Err(s3_error!(
                    InvalidArgument,
                    "The retain until date must be in the future!"
                ));
            }
            Some(Retention { mode, until_ms })
        }
        _ => {
            return Err(s3_error!(
            InvalidArgument,
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied"
        ))
        }
    };
    meta.legal_hold = match hold.map(|h| h.as_str()) {
        None | Some(ObjectLockLegalHoldStatus::OFF) => false,
        Some(ObjectLockLegalHoldStatus::ON) => true,
        Some(_) => {
            return Err(s3_error!(
                InvalidArgument,
                "Legal Hold must be either of 'ON' or 'OFF'"
            ))
        }
    };
    Ok(())
}

/// The retention a `PutObjectRetention` document asks for (`None`: remove it, which only a
/// governance-mode retention with bypass allows).
pub fn retention_of(document: Option<ObjectLockRetention>) -> S3Result<Option<Retention>> {
    let document = document.unwrap_or_default();
    match (document.mode, document.retain_until_date) {
        (None, None) => Ok(None),
        (Some(mode), Some(until)) => {
            let mode = LockMode::parse(mode.as_str())
                .ok_or_else(|| s3_error!(MalformedXML, "The retention mode is not valid."))?;
            Ok(Some(Retention {
                mode,
                until_ms: millis(&until),
            }))
        }
        _ => Err(s3_error!(
            MalformedXML,
            "A retention names both its Mode and its RetainUntilDate."
        )),
    }
}

/// A retention as S3 shows it.
pub fn retention_dto(retention: &Retention) -> ObjectLockRetention {
    ObjectLockRetention {
        mode: Some(ObjectLockRetentionMode::from(
            retention.mode.as_str().to_owned(),
        )),
        retain_until_date: Some(timestamp(retention.until_ms)),
    }
}

/// The legal hold a `PutObjectLegalHold` document asks for.
pub fn legal_hold_of(document: Option<ObjectLockLegalHold>) -> S3Result<bool> {
    match document.and_then(|d| d.status).as_ref().map(|s| s.as_str()) {
        Some(ObjectLockLegalHoldStatus::ON) => Ok(true),
        Some(ObjectLockLegalHoldStatus::OFF) => Ok(false),
        _ => Err(s3_error!(
            MalformedXML,
            "The legal hold status must be ON or OFF."
        )),
    }
}

/// A legal hold as S3 shows it.
pub fn legal_hold_dto(on: bool) -> ObjectLockLegalHold {
    ObjectLockLegalHold {
        status: Some(ObjectLockLegalHoldStatus::from(
            if on { "ON" } else { "OFF" }.to_owned(),
        )),
    }
}

/// The lock configuration a `PutObjectLockConfiguration` document asks for.
pub fn configuration_of(document: Option<ObjectLockConfiguration>) -> S3Result<ObjectLock> {
    let document =
        document.ok_or_else(|| s3_error!(MalformedXML, "No object lock configuration."))?;
    if document.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some(ObjectLockEnabled::ENABLED)
    {
        return Err(s3_error!(
            MalformedXML,
            "ObjectLockEnabled must be Enabled."
        ));
    }
    let Some(retention) = document.rule.and_then(|r| r.default_retention) else {
        return Ok(ObjectLock::default());
    };
    let mode = retention
        .mode
        .as_ref()
        .and_then(|m| LockMode::parse(m.as_str()))
        .ok_or_else(|| s3_error!(MalformedXML, "The default retention's mode is not valid."))?;
    match DefaultRetention::new(mode, retention.days, retention.years) {
        Ok(default) => Ok(ObjectLock {
            default: Some(default),
        }),
        Err(LockError::Malformed(reason)) => Err(s3_error!(MalformedXML, "{reason}")),
        Err(LockError::Period) => {
            let mut error = S3Error::with_message(
                S3ErrorCode::Custom("InvalidRetentionPeriod".into()),
                "Default retention period must be a positive integer value.",
            );
            error.set_status_code(http::StatusCode::BAD_REQUEST);
            Err(error)
        }
    }
}

/// A bucket's lock configuration as S3 shows it.
pub fn configuration_dto(lock: &ObjectLock) -> ObjectLockConfiguration {
    ObjectLockConfiguration {
        object_lock_enabled: Some(ObjectLockEnabled::from(
            ObjectLockEnabled::ENABLED.to_owned(),
        )),
        rule: lock.default.map(|d| ObjectLockRule {
            default_retention: Some(DefaultRetentionDto {
                days: d.days.map(|n| n as i32),
                years: d.years.map(|n| n as i32),
                mode: Some(ObjectLockRetentionMode::from(d.mode.as_str().to_owned())),
            }),
        }),
    }
}
