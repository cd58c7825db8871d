//! The FUSE mount: a bucket as a file system. Files are the objects under the same keys,
//! directories key prefixes (with marker objects), and attributes object metadata, so S3
//! clients and the mount see one namespace. See docs/mount.md.

pub mod attrs;
mod errors;
mod extents;
mod file;
pub mod fs;
pub mod metrics;
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

/// The kernel's read-ahead for the mount, in KiB: a sequential reader's requests come in
/// 1 MiB pieces (`max_pages`), where the kernel's default (128 KiB) makes eight times as
/// many round trips through FUSE. Reading 2 GiB here: 805-890 MB/s at 128 KiB, 0.87-1.1
/// GB/s at 1 MiB, 0.86-0.95 GB/s at 2 MiB, 483 MB/s at 4 MiB (requests queue behind one
/// another on the open file).
const READ_AHEAD_KIB: u32 = 1024;

/// Sets the read-ahead of the mount at `dir` (its backing device's, in sysfs), best effort:
/// the kernel offers a FUSE file system no more than its default at `init`, but lets the
/// administrator raise it after. Without the right to (not root), the default stays.
fn raise_read_ahead(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata(dir) {
        Ok(meta) => meta.dev(),
        Err(error) => {
            tracing::warn!(%error, "the mount's device is unknown; its read-ahead stays");
            return;
        }
    };
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&path, READ_AHEAD_KIB.to_string()) {
        Ok(()) => tracing::info!(%path, kib = READ_AHEAD_KIB, "read-ahead raised"),
        Err(error) => tracing::info!(%path, %error, "read-ahead left at the kernel's default"),
    }
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
    let mounted = dir.to_path_buf();
    let dir = dir.to_path_buf();
    let session = tokio::task::spawn_blocking(move || fuser::Session::new(fs, &dir, &options))
        .await
        .map_err(std::io::Error::other)??;
    let background = session.spawn()?;
    tracing::info!("mounted");
    tokio::task::spawn_blocking(move || raise_read_ahead(&mounted));
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
