//! The one table from bucket-layer errors to S3 error codes. Internal failures are logged and
//! answered with a generic code; their details never reach the client.

use s3s::{s3_error, S3Error, S3ErrorCode};
use tidepool_buckets::BucketError;
use tidepool_client::ObjectError;
use tidepool_proto::osd::OpError;

/// The S3 error for `error`.
pub fn s3(error: BucketError) -> S3Error {
    match error {
        BucketError::NoSuchBucket => {
            s3_error!(NoSuchBucket, "The specified bucket does not exist.")
        }
        BucketError::BucketOwned => s3_error!(
            BucketAlreadyOwnedByYou,
            "Your previous request to create the named bucket succeeded and you already own it."
        ),
        BucketError::BucketExists => s3_error!(
            BucketAlreadyExists,
            "The requested bucket name is not available. Please select a different name and try again."
        ),
        BucketError::BucketNotEmpty => s3_error!(
            BucketNotEmpty,
            "The bucket you tried to delete is not empty."
        ),
        BucketError::NoSuchKey => s3_error!(NoSuchKey, "The specified key does not exist."),
        BucketError::NoSuchVersion => s3_error!(
            NoSuchVersion,
            "The version ID specified in the request does not match an existing version."
        ),
        BucketError::DeleteMarker(version) => {
            // As S3 answers a GET or HEAD of a delete marker's version: 405, saying so.
            let mut error = s3_error!(
                MethodNotAllowed,
                "The specified method is not allowed against this resource."
            );
            let mut headers = http::HeaderMap::new();
            headers.insert("x-amz-delete-marker", http::HeaderValue::from_static("true"));
            let shown = tidepool_buckets::shown(&version).to_owned();
            if let Ok(value) = http::HeaderValue::from_str(&shown) {
                headers.insert("x-amz-version-id", value);
            }
            error.set_headers(headers);
            error
        }
        BucketError::InvalidStorageClass(class) => s3_error!(
            InvalidStorageClass,
            "The storage class {class} is not one this cluster offers (tidepool storage-class ls)."
        ),
        BucketError::NoSuchUpload => s3_error!(
            NoSuchUpload,
            "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
        ),
        BucketError::PreconditionFailed => precondition_failed(),
        BucketError::InvalidPart(reason) => s3_error!(
            InvalidPart,
            "One or more of the specified parts could not be found or did not match: {reason}."
        ),
        BucketError::InvalidPartOrder => s3_error!(
            InvalidPartOrder,
            "The list of parts was not in ascending order. Parts must be ordered by part number."
        ),
        BucketError::EntityTooSmall(number) => s3_error!(
            EntityTooSmall,
            "Your proposed upload is smaller than the minimum allowed object size (part {number})."
        ),
        BucketError::Invalid(reason) => s3_error!(InvalidArgument, "{reason}"),
        BucketError::Locked(reason) => {
            s3_error!(AccessDenied, "Access Denied because object protected by object lock: {reason}.")
        }
        BucketError::InvalidBucketState(reason) => s3_error!(InvalidBucketState, "{reason}"),
        BucketError::NotSupported(what) => s3_error!(NotImplemented, "Not supported: {what}."),
        BucketError::Conflict => s3_error!(
            OperationAborted,
            "A conflicting operation on this key is in progress; try again."
        ),
        BucketError::Body(reason) => s3_error!(IncompleteBody, "{reason}"),
        BucketError::BadDigest(reason) => s3_error!(BadDigest, "{reason}"),
        BucketError::Cluster(ObjectError::Op(OpError::Full(osds))) => {
            tracing::warn!(%osds, "a write was refused: the cluster is full");
            // As MinIO answers on a full drive: 507, which clients do not retry.
            let mut error = S3Error::with_message(
                S3ErrorCode::Custom("XTidepoolStorageFull".into()),
                "The cluster is full: its storage has no space for this write. Delete objects \
                 or add storage, then try again.",
            );
            error.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            error
        }
        BucketError::Cluster(ObjectError::Timeout { .. } | ObjectError::Monitors(_)) => {
            tracing::warn!(%error, "the cluster did not answer");
            s3_error!(ServiceUnavailable, "The cluster is not answering; try again.")
        }
        other => {
            tracing::error!(error = %other, "request failed");
            s3_error!(InternalError)
        }
    }
}

/// `PreconditionFailed` as S3 words it.
pub fn precondition_failed() -> S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold"
    )
}

/// `InvalidRange` as S3 words it.
pub fn invalid_range() -> S3Error {
    s3_error!(InvalidRange, "The requested range is not satisfiable")
}

/// `AccessDenied` as S3 words it.
pub fn access_denied() -> S3Error {
    s3_error!(AccessDenied, "Access Denied")
}
