//! The FUSE mount: a bucket as a file system. Files are the objects under the same keys,
//! directories key prefixes (with marker objects), and attributes object metadata, so S3
//! clients and the mount see one namespace. See docs/mount.md.

pub mod attrs;
mod errors;
mod extents;
mod file;
pub mod fs;
pub mod names;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use fs::{Core, MountOptions, TidepoolFs};

/// How the kernel mounts it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mounting {
    /// Other users may use the mount (`allow_other`).
    pub allow_other: bool,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Mounts `core`'s bucket at `dir` and serves it until `stop` resolves (every open file is
/// then flushed before the unmount) or the file system is unmounted from outside.
pub async fn serve(
    core: Arc<Core>,
    dir: &Path,
    mounting: Mounting,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use fuser::MountOption;
    let mut options = vec![
        MountOption::FSName(format!("tidepool:{}", core.bucket_name())),
        MountOption::Subtype("tidepool".into()),
        MountOption::DefaultPermissions,
        if mounting.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    if mounting.allow_other {
        options.push(MountOption::AllowOther);
    }
    let fs = TidepoolFs::new(core.clone(), tokio::runtime::Handle::current());
    let dir = dir.to_path_buf();
    let session = tokio::task::spawn_blocking(move || fuser::Session::new(fs, &dir, &options))
        .await
        .map_err(std::io::Error::other)??;
    let background = session.spawn()?;
    tracing::info!("mounted");
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => {
                tracing::info!("stopping: flushing open files, then unmounting");
                core.flush_all().await;
                tokio::task::spawn_blocking(move || drop(background))
                    .await
                    .map_err(std::io::Error::other)?;
                return Ok(());
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if background.guard.is_finished() {
                    tracing::info!("unmounted");
                    // Unmounted from outside already: dropping the session would try again.
                    std::mem::forget(background);
                    return Ok(());
                }
            }
        }
    }
}
