//! S3 storage classes, each mapped to the data pool its objects' stripes go to, as RGW's
//! placement targets: `STANDARD` is the layer's default data pool unless mapped elsewhere,
//! and every other class names a pool (for example `STANDARD_IA` → an erasure pool). The map
//! is the omap of one index pool object, so every gateway and mount shares it; each keeps a
//! copy for [`CLASSES_TTL`] (a class it does not know yet it reads again at once).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use tidepool_client::ObjectError;
use tidepool_proto::osd::{ObjectOp, OpError};

use crate::records::STORAGE_CLASSES;
use crate::{omap_output, BucketError, Buckets};

/// The class of objects written without one.
pub const STANDARD: &str = "STANDARD";

/// How long a gateway uses the map it read before it reads it again.
pub const CLASSES_TTL: Duration = Duration::from_secs(5);

/// The map as last read, and when.
pub(crate) type ClassCache = std::sync::Mutex<Option<(Instant, BTreeMap<String, String>)>>;

/// Whether `class` may name a storage class: 1 to 64 of `A-Z`, `0-9` and `_` (as AWS's).
pub fn check_class(class: &str) -> Result<(), BucketError> {
    let valid = (1..=64).contains(&class.len())
        && class
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(BucketError::Invalid(format!(
            "{class:?} is not a storage class name (1 to 64 of A-Z, 0-9 and _)"
        )))
    }
}

impl Buckets {
    /// Every storage class and its data pool, `STANDARD` among them.
    pub async fn storage_classes(&self) -> Result<BTreeMap<String, String>, BucketError> {
        let ops = vec![ObjectOp::OmapList {
            start_after: None,
            limit: 1000,
        }];
        let mut classes: BTreeMap<String, String> = match self.index_op(STORAGE_CLASSES, ops).await
        {
            Ok((_, outputs)) => omap_output(outputs)?
                .into_iter()
                .filter_map(|(k, v)| Some((String::from_utf8(k).ok()?, String::from_utf8(v).ok()?)))
                .collect(),
            Err(ObjectError::Op(OpError::NotFound)) => BTreeMap::new(),
            Err(other) => return Err(other.into()),
        };
        classes
            .entry(STANDARD.into())
            .or_insert_with(|| self.config().data_pool.clone());
        *self.inner.classes.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), classes.clone()));
        Ok(classes)
    }

    /// Maps `class` to data pool `pool` (which the caller checked exists). Objects written
    /// before keep their stripes where they are.
    pub async fn set_storage_class(&self, class: &str, pool: &str) -> Result<(), BucketError> {
        check_class(class)?;
        let ops = vec![
            ObjectOp::Create { exclusive: false },
            ObjectOp::OmapSet(vec![(
                ByteBuf::from(class.as_bytes().to_vec()),
                ByteBuf::from(pool.as_bytes().to_vec()),
            )]),
        ];
        self.index_op(STORAGE_CLASSES, ops).await?;
        self.forget_classes();
        Ok(())
    }

    /// Removes `class` (`STANDARD` goes back to the default data pool). Objects written in
    /// it keep their stripes and still read; new writes naming it are refused.
    pub async fn remove_storage_class(&self, class: &str) -> Result<(), BucketError> {
        check_class(class)?;
        let ops = vec![ObjectOp::OmapRemove(vec![ByteBuf::from(
            class.as_bytes().to_vec(),
        )])];
        match self.index_op(STORAGE_CLASSES, ops).await {
            Ok(_) | Err(ObjectError::Op(OpError::NotFound)) => {}
            Err(other) => return Err(other.into()),
        }
        self.forget_classes();
        Ok(())
    }

    /// For a write naming `class` (`None`: `STANDARD`): the class to record (`None` for
    /// `STANDARD`) and the data pool of its stripes (`None`: the default data pool).
    pub async fn storage_class_pool(
        &self,
        class: Option<&str>,
    ) -> Result<(Option<String>, Option<String>), BucketError> {
        let class = class.unwrap_or(STANDARD);
        let cached = self
            .inner
            .classes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < CLASSES_TTL)
            .map(|(_, classes)| classes.clone());
        // A class the copy lacks may be new: read the map again before refusing it.
        let classes = match cached.filter(|classes| classes.contains_key(class)) {
            Some(classes) => classes,
            None => self.storage_classes().await?,
        };
        let pool = classes
            .get(class)
            .ok_or_else(|| BucketError::InvalidStorageClass(class.into()))?;
        let pool = (*pool != self.config().data_pool).then(|| pool.clone());
        Ok(((class != STANDARD).then(|| class.to_owned()), pool))
    }

    fn forget_classes(&self) {
        *self.inner.classes.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: class names are what S3 clients send: upper-case letters, digits and `_`.
    #[test]
    fn class_names_are_checked() {
        for good in ["STANDARD", "STANDARD_IA", "GLACIER_IR", "COLD2"] {
            assert!(check_class(good).is_ok(), "{good}");
        }
        for bad in ["", "standard", "A B", "X-Y", &"A".repeat(65)] {
            assert!(check_class(bad).is_err(), "{bad:?}");
        }
    }
}
