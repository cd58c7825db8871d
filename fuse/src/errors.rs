//! POSIX errors for what the cluster and the bucket layer answer.

use tidepool_buckets::BucketError;
use tidepool_client::ObjectError;
use tidepool_proto::osd::OpError;

/// A POSIX error number.
pub type Errno = libc::c_int;

/// The error a program should see for `error`.
pub fn errno_of(error: &BucketError) -> Errno {
    match error {
        BucketError::NoSuchKey | BucketError::NoSuchBucket => libc::ENOENT,
        BucketError::PreconditionFailed => libc::EEXIST,
        BucketError::Invalid(_) => libc::EINVAL,
        BucketError::Conflict => libc::EAGAIN,
        // As a file system without hard links answers link(2).
        BucketError::NotSupported(_) => libc::EPERM,
        BucketError::Cluster(ObjectError::Op(OpError::Full(_))) => libc::ENOSPC,
        other => {
            tracing::warn!(error = %other, "an operation failed");
            libc::EIO
        }
    }
}
