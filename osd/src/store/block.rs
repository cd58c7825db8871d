//! The block file: one file per store holding the data of every blob, at block-aligned places
//! an [`Allocator`] hands out, as BlueStore keeps data on its block device.
//!
//! A blob is written into free space, never over data an onode references, and the file is
//! synced once per group commit before the metadata that points at the new blobs commits; a
//! blob's space returns to the allocator only once the metadata that drops it is on disk. The
//! allocator itself is not stored: at open it is rebuilt from the onodes, so space written by
//! a transaction that never committed is free again. See docs/osd.md.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

/// `O_DIRECT` and `EINVAL` of Linux (x86-64 and aarch64 agree on both).
const O_DIRECT: i32 = if cfg!(target_arch = "aarch64") {
    0o200000
} else {
    0o40000
};
const EINVAL: i32 = 22;

/// Free space in a file of `size` bytes, as extents `start → len`, never adjacent (released
/// space merges with its neighbours). Allocation is next-fit from where the last one ended, so
/// blobs written one after another lie one after another.
#[derive(Debug, Default)]
pub(super) struct Allocator {
    free: BTreeMap<u64, u64>,
    size: u64,
    free_bytes: u64,
    cursor: u64,
}

impl Allocator {
    /// The free space of a file of `size` bytes whose `used` ranges (`start`, `len`) hold data;
    /// `None` when two of them overlap or one passes the end.
    pub(super) fn with_used(
        size: u64,
        used: impl IntoIterator<Item = (u64, u64)>,
    ) -> Option<Allocator> {
        let mut used: Vec<(u64, u64)> = used.into_iter().filter(|(_, len)| *len > 0).collect();
        used.sort_unstable();
        let mut allocator = Allocator {
            size,
            ..Allocator::default()
        };
        let mut at = 0;
        for (start, len) in used {
            let end = start.checked_add(len)?;
            if start < at || end > size {
                return None;
            }
            allocator.add_free(at, start - at);
            at = end;
        }
        allocator.add_free(at, size - at);
        Some(allocator)
    }

    /// The file's size.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Free bytes.
    pub(super) fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    fn add_free(&mut self, start: u64, len: u64) {
        if len > 0 {
            self.free.insert(start, len);
            self.free_bytes += len;
        }
    }

    /// The start of `len` free bytes, now used; `None` when no free extent is that long.
    pub(super) fn allocate(&mut self, len: u64) -> Option<u64> {
        let fits = |(&start, &free): (&u64, &u64)| (free >= len).then_some((start, free));
        let (start, free) = self
            .free
            .range(self.cursor..)
            .find_map(fits)
            .or_else(|| self.free.range(..self.cursor).find_map(fits))?;
        self.free.remove(&start);
        if free > len {
            self.free.insert(start + len, free - len);
        }
        self.free_bytes -= len;
        self.cursor = start + len;
        Some(start)
    }

    /// Returns `len` bytes from `start` (which were allocated) to the free space.
    pub(super) fn release(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let (mut start, mut len) = (start, len);
        if let Some((&before, &before_len)) = self.free.range(..start).next_back() {
            debug_assert!(before + before_len <= start, "released space was free");
            if before + before_len == start {
                self.free.remove(&before);
                self.free_bytes -= before_len;
                (start, len) = (before, before_len + len);
            }
        }
        if let Some(after_len) = self.free.get(&(start + len)).copied() {
            self.free.remove(&(start + len));
            self.free_bytes -= after_len;
            len += after_len;
        }
        self.add_free(start, len);
    }

    /// The file grew to `size` bytes: the new space is free.
    pub(super) fn grow(&mut self, size: u64) {
        if size > self.size {
            let (start, len) = (self.size, size - self.size);
            self.size = size;
            self.release(start, len);
        }
    }
}

/// The file grows by a quarter of its size, at least this much...
const GROW_MIN: u64 = 64 << 20;
/// ...and at most this much at a time (more when one blob needs it).
const GROW_MAX: u64 = 1 << 30;

/// The block file and its free space.
#[derive(Debug)]
pub(super) struct BlockFile {
    file: File,
    free: Mutex<Allocator>,
}

impl BlockFile {
    /// Opens (or creates) the block file at `path`, its data read and written directly
    /// (`O_DIRECT`: whole blocks from block-aligned buffers) where the file system allows,
    /// and rebuilds its free space around the `used` ranges.
    pub(super) fn open(
        path: &Path,
        used: impl IntoIterator<Item = (u64, u64)>,
    ) -> std::io::Result<BlockFile> {
        let open = |flags| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(flags)
                .open(path)
        };
        let file = match open(O_DIRECT) {
            Err(error) if error.raw_os_error() == Some(EINVAL) => open(0)?,
            other => other?,
        };
        // Whole blocks only: space is handed out in them.
        let block = super::CHECKSUM_BLOCK as u64;
        let size = file.metadata()?.len() / block * block;
        let free = Allocator::with_used(size, used).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: the objects' data overlaps or passes the file's end ({size} bytes)",
                    path.display()
                ),
            )
        })?;
        Ok(BlockFile {
            file,
            free: Mutex::new(free),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Allocator> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The start of `len` bytes of free space (a whole number of blocks), growing the file
    /// when none is left.
    pub(super) fn allocate(&self, len: u64) -> std::io::Result<u64> {
        let mut free = self.lock();
        if let Some(start) = free.allocate(len) {
            return Ok(start);
        }
        let size = free.size();
        let grown = size + (size / 4).clamp(GROW_MIN, GROW_MAX).max(len);
        // Allocated now (as unwritten extents), so the file is laid out in long runs and its
        // blocks need no allocation when first written; a file system without fallocate
        // gets a sparse file instead.
        match rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::empty(),
            size,
            grown - size,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::OPNOTSUPP) => self.file.set_len(grown)?,
            Err(error) => return Err(error.into()),
        }
        free.grow(grown);
        Ok(free.allocate(len).expect("the file grew by at least len"))
    }

    /// Returns space whose data nothing references any more (on disk).
    pub(super) fn release(&self, ranges: impl IntoIterator<Item = (u64, u64)>) {
        let mut free = self.lock();
        for (start, len) in ranges {
            free.release(start, len);
        }
    }

    /// Writes whole blocks from a block-aligned buffer at `at` (allocated, block-aligned).
    pub(super) fn write(&self, at: u64, blocks: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(blocks, at)
    }

    /// Reads into `buffer` (block-aligned, whole blocks) from `at` (block-aligned); returns
    /// how many bytes were read, fewer only at the file's end.
    pub(super) fn read(&self, at: u64, buffer: &mut [u8]) -> std::io::Result<usize> {
        let mut got = 0;
        while got < buffer.len() {
            match self.file.read_at(&mut buffer[got..], at + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(got)
    }

    /// Makes every completed write durable, with the file's size and allocation.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// The file's size and how much of it is free.
    pub(super) fn space(&self) -> (u64, u64) {
        let free = self.lock();
        (free.size(), free.free_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::Allocator;
    use proptest::prelude::*;

    #[test]
    fn free_space_is_the_complement_of_the_used_ranges() {
        let a = Allocator::with_used(100, [(10, 5), (50, 50), (0, 0)]).expect("valid");
        assert_eq!(a.free.iter().collect::<Vec<_>>(), [(&0, &10), (&15, &35)]);
        assert_eq!(a.free_bytes(), 45);
        assert!(
            Allocator::with_used(100, [(10, 5), (14, 2)]).is_none(),
            "overlap"
        );
        assert!(
            Allocator::with_used(100, [(90, 11)]).is_none(),
            "past the end"
        );
        assert!(
            Allocator::with_used(100, [(u64::MAX, 2)]).is_none(),
            "overflow"
        );
    }

    #[test]
    fn allocation_is_next_fit_and_release_merges() {
        let mut a = Allocator::with_used(100, []).expect("valid");
        assert_eq!(a.allocate(30), Some(0));
        assert_eq!(a.allocate(30), Some(30));
        a.release(0, 30);
        // Next fit: after the last allocation first, then from the start.
        assert_eq!(a.allocate(30), Some(60));
        assert_eq!(a.allocate(30), Some(0));
        assert_eq!(a.allocate(11), None);
        assert_eq!(a.allocate(10), Some(90));
        a.release(30, 30);
        a.release(0, 30);
        a.release(60, 30);
        assert_eq!(a.free.iter().collect::<Vec<_>>(), [(&0, &90)]);
        a.release(90, 10);
        assert_eq!(a.free.iter().collect::<Vec<_>>(), [(&0, &100)]);
        a.grow(150);
        assert_eq!(a.free.iter().collect::<Vec<_>>(), [(&0, &150)]);
        assert_eq!(a.free_bytes(), 150);
    }

    proptest! {
        /// Rule: allocations never overlap each other, stay inside the file, and every byte is
        /// either free or allocated, whatever the order of allocations, releases and growth.
        #[test]
        fn allocations_never_overlap(steps in prop::collection::vec((0u8..3, 1u64..40), 1..200)) {
            let mut a = Allocator::with_used(64, []).expect("valid");
            let mut held: Vec<(u64, u64)> = Vec::new();
            for (kind, n) in steps {
                match kind {
                    0 => {
                        if let Some(start) = a.allocate(n) {
                            held.push((start, n));
                        }
                    }
                    1 if !held.is_empty() => {
                        let (start, len) = held.swap_remove(n as usize % held.len());
                        a.release(start, len);
                    }
                    _ => a.grow(a.size() + n),
                }
                let mut sorted = held.clone();
                sorted.sort_unstable();
                for pair in sorted.windows(2) {
                    prop_assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{:?} overlap", pair);
                }
                prop_assert!(sorted.iter().all(|(s, l)| s + l <= a.size()));
                let used: u64 = held.iter().map(|(_, l)| l).sum();
                prop_assert_eq!(used + a.free_bytes(), a.size());
                let rebuilt = Allocator::with_used(a.size(), held.iter().copied()).expect("valid");
                prop_assert_eq!(&rebuilt.free, &a.free);
            }
        }
    }
}
