//! Large buffers kept for reuse once the bytes lent from them are dropped.
//!
//! A fresh buffer of megabytes costs a page fault and a zeroed page per 4 KiB on first touch,
//! and returns its memory to the kernel when freed: under 4 MiB writes, joining each received
//! payload into a fresh buffer cost a tenth of all CPU in page faults, zeroing and unmapping
//! (docs/BENCHMARKS.md); a reused buffer is only overwritten.

use std::sync::Mutex;

use bytes::Bytes;

/// A pool of buffers of one size, each zero-initialised once and then reused.
#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    size: usize,
    kept: usize,
}

/// Buffers for data of 1 MiB to 4 MiB plus a block (objects' stripes and chunks, aligned for
/// direct IO): the received payloads of a process and an OSD's reads.
pub static LARGE: BufferPool = BufferPool::new(4 << 20 | 4096, 16);

impl BufferPool {
    /// A pool of `size`-byte buffers that keeps up to `kept` of them free.
    pub const fn new(size: usize, kept: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
            size,
            kept,
        }
    }

    /// A buffer of the pool's size (reused, or zero-initialised once) for `len` bytes, when
    /// `len` is from a quarter of that size to all of it; `None` for other lengths, which are
    /// not worth keeping a buffer for or do not fit one.
    pub fn take(&'static self, len: usize) -> Option<Vec<u8>> {
        if !(self.size / 4..=self.size).contains(&len) {
            return None;
        }
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        Some(reused.unwrap_or_else(|| vec![0; self.size]))
    }

    /// The bytes `range` of `buffer`; a buffer from [`BufferPool::take`] goes back to the pool
    /// when they and every slice of them are dropped.
    pub fn share(&'static self, buffer: Vec<u8>, range: std::ops::Range<usize>) -> Bytes {
        if buffer.len() != self.size {
            return Bytes::from(buffer).slice(range);
        }
        Bytes::from_owner(Leased { buffer, pool: self }).slice(range)
    }

    /// How many buffers are free.
    pub fn free(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A pooled buffer lent out as the owner of some `Bytes`.
struct Leased {
    buffer: Vec<u8>,
    pool: &'static BufferPool,
}

impl AsRef<[u8]> for Leased {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.pool.kept {
            free.push(std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn buffers_come_back_when_their_bytes_are_dropped() {
        static POOL: BufferPool = BufferPool::new(1 << 20, 2);
        let buffer = POOL.take(1 << 19).expect("pooled");
        assert_eq!(buffer.len(), 1 << 20);
        let address = buffer.as_ptr();
        let bytes = POOL.share(buffer, 10..20);
        let slice = bytes.slice(2..4);
        drop(bytes);
        assert_eq!(POOL.free(), 0, "still lent out");
        drop(slice);
        assert_eq!(POOL.free(), 1);
        let again = POOL.take(1 << 20).expect("pooled");
        assert_eq!(again.as_ptr(), address, "reused");
        drop(again);
        assert!(POOL.take(100).is_none(), "small buffers are not pooled");
        assert!(POOL.take((1 << 20) + 1).is_none(), "nor larger ones");
        drop(POOL.share(vec![0; 2 << 20], 0..1));
        assert_eq!(POOL.free(), 0, "nor kept");
        // No more than `kept` stay free.
        let lent: Vec<_> = (0..3)
            .map(|_| POOL.share(POOL.take(1 << 20).expect("pooled"), 0..1))
            .collect();
        drop(lent);
        assert_eq!(POOL.free(), 2);
    }
}
