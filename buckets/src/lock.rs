//! Object lock, as S3 has it: a version under retention (until a date, in governance or
//! compliance mode) or under a legal hold cannot be deleted, and its retention cannot be
//! weakened. The rules are pure; the bucket layer applies them inside the guarded shard
//! transaction that deletes or changes the version, so no concurrent change slips between
//! the check and the commit. See docs/buckets.md, "Object lock".

use serde::{Deserialize, Serialize};

use crate::{BucketError, ObjectMeta};

const DAY_MS: u64 = 86_400_000;

/// A retention's strength.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// Users with `x-amz-bypass-governance-retention` may shorten, remove or delete through it.
    Governance,
    /// No one may shorten or remove it, or delete the version, until it ends.
    Compliance,
}

impl LockMode {
    /// The mode S3 names `name` (`GOVERNANCE` or `COMPLIANCE`, exactly).
    pub fn parse(name: &str) -> Option<LockMode> {
        match name {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }

    /// Its S3 name.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// A version's retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Its mode.
    pub mode: LockMode,
    /// Until when (milliseconds since the Unix epoch).
    pub until_ms: u64,
}

impl Retention {
    /// Whether it still holds at `now_ms`.
    pub fn holds(&self, now_ms: u64) -> bool {
        self.until_ms > now_ms
    }
}

/// A bucket's object lock: present once enabled (at creation, or later on a bucket with
/// versioning enabled), never removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLock {
    /// The retention new versions get when their write names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultRetention>,
}

/// A bucket's default retention: a mode and a period of days or of years.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRetention {
    /// Its mode.
    pub mode: LockMode,
    /// The period in days (exactly one of `days` and `years` is set).
    pub days: Option<u32>,
    /// The period in years (of 365 days, as S3 counts them).
    pub years: Option<u32>,
}

impl DefaultRetention {
    /// The default retention of mode `mode` for `days` or `years`; refused unless exactly one
    /// is given, and positive (S3's `MalformedXML` and `InvalidRetentionPeriod`).
    pub fn new(
        mode: LockMode,
        days: Option<i32>,
        years: Option<i32>,
    ) -> Result<DefaultRetention, LockError> {
        let positive = |n: i32| u32::try_from(n).ok().filter(|n| *n > 0);
        match (days, years) {
            (Some(_), Some(_)) | (None, None) => Err(LockError::Malformed(
                "a default retention names either Days or Years".into(),
            )),
            (Some(days), None) => positive(days)
                .filter(|d| *d <= 36_500)
                .map(|d| DefaultRetention {
                    mode,
                    days: Some(d),
                    years: None,
                })
                .ok_or(LockError::Period),
            (None, Some(years)) => positive(years)
                .filter(|y| *y <= 100)
                .map(|y| DefaultRetention {
                    mode,
                    days: None,
                    years: Some(y),
                })
                .ok_or(LockError::Period),
        }
    }

    /// The retention a version written at `now_ms` gets.
    pub fn from(&self, now_ms: u64) -> Retention {
        let days = u64::from(self.days.unwrap_or(0)) + 365 * u64::from(self.years.unwrap_or(0));
        Retention {
            mode: self.mode,
            until_ms: now_ms.saturating_add(days * DAY_MS),
        }
    }
}

/// Why a lock setting is refused before it reaches the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockError {
    /// The configuration is not well formed.
    Malformed(String),
    /// The default retention's period is not a positive number (of at most 100 years).
    Period,
}

/// Whether the version with `meta` may be deleted at `now_ms`: not under a legal hold, and
/// not under a retention that holds (one in governance mode yields to `bypass`).
pub fn check_delete(meta: &ObjectMeta, now_ms: u64, bypass: bool) -> Result<(), BucketError> {
    if meta.legal_hold {
        return Err(BucketError::Locked(
            "the version is under a legal hold".into(),
        ));
    }
    match meta.retention {
        Some(r) if r.holds(now_ms) && !(r.mode == LockMode::Governance && bypass) => {
            Err(BucketError::Locked(format!(
                "the version is under {} retention",
                r.mode.as_str()
            )))
        }
        _ => Ok(()),
    }
}

/// Whether a version with `meta` may be replaced or moved for good now (by a write of the
/// `null` version, or a rename): as a delete without bypass.
pub(crate) fn check_replace(meta: &ObjectMeta) -> Result<(), BucketError> {
    check_delete(meta, crate::now_ms(), false)
}

/// Whether a version's retention may go from `old` to `new` at `now_ms`: a retention that
/// holds may be lengthened in its mode; anything else (shortened, removed, or a change of
/// mode) needs governance mode and `bypass`. A new retention must end in the future.
pub fn check_retention_change(
    old: Option<Retention>,
    new: Option<Retention>,
    now_ms: u64,
    bypass: bool,
) -> Result<(), BucketError> {
    if let Some(new) = new {
        if !new.holds(now_ms) {
            return Err(BucketError::Invalid(
                "the retain-until date must be in the future".into(),
            ));
        }
    }
    let Some(old) = old.filter(|r| r.holds(now_ms)) else {
        return Ok(());
    };
    let lengthened = new.is_some_and(|n| n.mode == old.mode && n.until_ms >= old.until_ms);
    if lengthened || (old.mode == LockMode::Governance && bypass) {
        return Ok(());
    }
    Err(BucketError::Locked(format!(
        "the version's {} retention may only be lengthened",
        old.mode.as_str()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000 * DAY_MS;

    fn retention(mode: LockMode, until_ms: u64) -> Option<Retention> {
        Some(Retention { mode, until_ms })
    }

    fn meta(retention: Option<Retention>, legal_hold: bool) -> ObjectMeta {
        ObjectMeta {
            retention,
            legal_hold,
            ..Default::default()
        }
    }

    #[test]
    fn deletes_wait_for_retention_and_legal_hold() {
        use LockMode::*;
        assert!(check_delete(&meta(None, false), NOW, false).is_ok());
        assert!(check_delete(&meta(None, true), NOW, true).is_err());
        for bypass in [false, true] {
            assert!(
                check_delete(&meta(retention(Compliance, NOW + 1), false), NOW, bypass).is_err()
            );
            assert!(check_delete(&meta(retention(Compliance, NOW), false), NOW, bypass).is_ok());
        }
        assert!(check_delete(&meta(retention(Governance, NOW + 1), false), NOW, false).is_err());
        assert!(check_delete(&meta(retention(Governance, NOW + 1), false), NOW, true).is_ok());
        assert!(check_delete(&meta(retention(Governance, NOW + 1), true), NOW, true).is_err());
    }

    #[test]
    fn retention_only_lengthens_unless_governance_is_bypassed() {
        use LockMode::*;
        let later = NOW + 10 * DAY_MS;
        let sooner = NOW + DAY_MS;
        let change = |old, new, bypass| check_retention_change(old, new, NOW, bypass).is_ok();
        // Nothing held: anything in the future goes.
        assert!(change(None, retention(Compliance, sooner), false));
        assert!(change(retention(Compliance, NOW - 1), None, false));
        assert!(!change(None, retention(Governance, NOW), true));
        for mode in [Governance, Compliance] {
            assert!(change(
                retention(mode, sooner),
                retention(mode, later),
                false
            ));
            assert!(!change(
                retention(mode, later),
                retention(mode, sooner),
                false
            ));
            assert!(!change(retention(mode, later), None, false));
        }
        assert!(!change(
            retention(Governance, sooner),
            retention(Compliance, later),
            false
        ));
        assert!(change(
            retention(Governance, sooner),
            retention(Compliance, later),
            true
        ));
        assert!(change(
            retention(Governance, later),
            retention(Governance, sooner),
            true
        ));
        assert!(change(retention(Governance, later), None, true));
        assert!(!change(
            retention(Compliance, later),
            retention(Compliance, sooner),
            true
        ));
        assert!(!change(
            retention(Compliance, sooner),
            retention(Governance, later),
            true
        ));
    }

    #[test]
    fn default_retention_names_one_positive_period() {
        use LockMode::*;
        let days = DefaultRetention::new(Governance, Some(2), None).unwrap();
        assert_eq!(days.from(NOW).until_ms, NOW + 2 * DAY_MS);
        let years = DefaultRetention::new(Compliance, None, Some(1)).unwrap();
        assert_eq!(years.from(NOW).until_ms, NOW + 365 * DAY_MS);
        assert!(matches!(
            DefaultRetention::new(Governance, Some(1), Some(1)),
            Err(LockError::Malformed(_))
        ));
        assert!(matches!(
            DefaultRetention::new(Governance, None, None),
            Err(LockError::Malformed(_))
        ));
        for bad in [0, -1, 36_501] {
            assert_eq!(
                DefaultRetention::new(Governance, Some(bad), None),
                Err(LockError::Period)
            );
        }
        assert_eq!(
            DefaultRetention::new(Governance, None, Some(0)),
            Err(LockError::Period)
        );
    }
}
