//! The one table from bucket-layer errors to S3 error codes. Internal failures are logged and
//! answered with a generic code; their details never reach the client.

use s3s::{s3_error, S3Error};
use tidepool_buckets::BucketError;
use tidepool_client::ObjectError;

/// The S3 error for `error`.
pub fn s3(error: BucketError) -> S3Error {
    match error {
        BucketError::NoSuchBucket => s3_error!(NoSuchBucket),
        BucketError::BucketOwned => s3_error!(BucketAlreadyOwnedByYou),
        BucketError::BucketExists => s3_error!(BucketAlreadyExists),
        BucketError::BucketNotEmpty => s3_error!(BucketNotEmpty),
        BucketError::NoSuchKey => s3_error!(NoSuchKey),
        BucketError::NoSuchUpload => s3_error!(NoSuchUpload),
        BucketError::PreconditionFailed => s3_error!(PreconditionFailed),
        BucketError::InvalidPart(reason) => s3_error!(InvalidPart, "{reason}"),
        BucketError::InvalidPartOrder => s3_error!(InvalidPartOrder),
        BucketError::EntityTooSmall(_) => s3_error!(EntityTooSmall),
        BucketError::Invalid(reason) => s3_error!(InvalidArgument, "{reason}"),
        BucketError::Conflict => s3_error!(
            OperationAborted,
            "A conflicting operation on this key is in progress; try again."
        ),
        BucketError::Body(reason) => s3_error!(IncompleteBody, "{reason}"),
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
