//! An open file: its base entry as read at `open`, the file's bytes in the cluster as a
//! manifest (the base's, with what was staged since spliced over it), the bytes written
//! since (in memory, or being staged under a data id of its own), and the commit that links
//! the manifest. Only what was written is staged: whole stripes for a sequential writer,
//! small runs packed together for random writes. See docs/mount.md, "Data path".

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use bytes::Bytes;
use futures::TryStreamExt;
use md5::{Digest, Md5};
use tidepool_buckets::manifest;
use tidepool_buckets::{BucketError, Buckets, Entry, ObjectMeta, PutCondition, Segment};
use tidepool_proto::Payload;

use crate::errors::{errno_of, Errno};
use crate::extents::{overlay_run, Extents};

/// Bytes an open file keeps in memory before it stages them.
const DIRTY_BYTES_MAX: u64 = 64 << 20;

/// Stagings in flight per open file (each at most a stripe).
const STAGINGS_IN_FLIGHT: usize = 16;

/// Stripes read ahead of a sequential reader.
const STRIPES_AHEAD: u64 = 8;

/// Segments one stripe of a file may share before a commit writes the stripe again whole.
const SEGMENTS_PER_STRIPE_MAX: usize = 64;

/// Segments a file's manifest may have before a commit writes its busiest stripes again
/// whole (down to half of it).
const SEGMENTS_MAX: usize = 8192;

/// Files up to this size written whole in one pass get the MD5 of their bytes as their
/// ETag, as a PUT's; larger ones a manifest's, as aws-cli's multipart uploads of files over
/// its 8 MiB threshold do. (Hashing every byte cost the mount more CPU than anything else.)
const MD5_BYTES_MAX: u64 = 8 << 20;

/// Runs of the file being written to the cluster in the background.
#[derive(Debug)]
struct Staging {
    /// The runs (file offset, bytes): served to reads meanwhile, and in memory again if the
    /// staging fails.
    runs: Vec<(u64, Bytes)>,
    /// Where each run went: its file offset and its segment of the staging data id.
    writes: Vec<(u64, Segment)>,
    /// The task writing its stripes.
    task: tokio::task::JoinHandle<Result<(), BucketError>>,
}

/// An open file (every handle of one inode in this mount shares it).
#[derive(Debug)]
pub struct OpenFile {
    /// Its key.
    pub key: String,
    /// The entry as last read or committed (`None`: the key does not exist yet).
    base: Option<Entry>,
    /// The file's bytes in the cluster: the base's (up to where a truncation cut them), with
    /// the runs staged since spliced over them; past their end, zeros.
    current: Vec<Segment>,
    /// The file's size.
    pub size: u64,
    /// Bytes written and not staged yet (newer than what is staged), and an inline base's
    /// bytes.
    dirty: Extents,
    /// Runs being staged, oldest first (newer than `current`, older than `dirty`).
    inflight: VecDeque<Staging>,
    /// Every stripe staged since the base: what the next commit does not link is removed.
    staged: Vec<Segment>,
    /// The bucket's id.
    bucket_id: String,
    /// The staging data id.
    prefix: String,
    /// Its next unused stripe.
    next_stripe: u64,
    /// Its data pool (`None`: the default), the base's.
    pool: Option<String>,
    /// The metadata the next commit writes.
    pub meta: ObjectMeta,
    /// Whether the bytes changed since the base.
    changed: bool,
    /// Whether the metadata changed since the base.
    pub meta_changed: bool,
    /// The MD5 of the file's bytes while they were written in order from 0: the ETag of a
    /// file written whole in one pass.
    md5: Option<(Md5, u64)>,
    /// The stripe of `current` last read, by number.
    cache: Option<(u64, Bytes)>,
    /// Stripes of `current` read ahead of a sequential reader, by number.
    ahead: BTreeMap<u64, tokio::task::JoinHandle<Result<Bytes, Errno>>>,
    /// Handles open on it.
    pub opens: usize,
    /// Whether its key was unlinked while it was open.
    pub unlinked: bool,
    /// The link group and holder name that keep its base's stripes since its key went.
    pub held: Option<(String, String)>,
}

impl OpenFile {
    /// The file `key` as `entry` (with its inline bytes) holds it, or a new one.
    pub fn new(bucket_id: &str, key: String, base: Option<(Entry, Option<Bytes>)>) -> OpenFile {
        let (base, inline) = match base {
            Some((entry, inline)) => (Some(entry), inline),
            None => (None, None),
        };
        let size = base.as_ref().map_or(0, |e| e.size);
        let pool = base
            .as_ref()
            .and_then(|e| e.segments.iter().find(|s| !s.is_hole()))
            .and_then(|s| s.pool.clone());
        let mut file = OpenFile {
            key,
            meta: base.as_ref().map(|e| e.meta.clone()).unwrap_or_default(),
            base: None,
            current: Vec::new(),
            size,
            dirty: Extents::new(),
            inflight: VecDeque::new(),
            staged: Vec::new(),
            bucket_id: bucket_id.to_owned(),
            prefix: String::new(),
            next_stripe: 0,
            pool,
            changed: false,
            meta_changed: false,
            md5: (size == 0).then(|| (Md5::new(), 0)),
            cache: None,
            ahead: BTreeMap::new(),
            opens: 0,
            unlinked: false,
            held: None,
        };
        file.rebase(base, inline);
        file
    }

    /// A file made here as `key` with `meta`, not in the index yet: its first commit links
    /// it (with its first bytes: one index write for a small file).
    pub fn created(bucket_id: &str, key: String, meta: ObjectMeta) -> OpenFile {
        let mut file = OpenFile::new(bucket_id, key, None);
        file.meta = meta;
        file.changed = true;
        file
    }

    /// `entry` (with its inline bytes) is the base from now on, with nothing written since.
    fn rebase(&mut self, entry: Option<Entry>, inline: Option<Bytes>) {
        self.current = match &entry {
            Some(e) if !e.inline => e.segments.clone(),
            _ => Vec::new(),
        };
        self.dirty = Extents::new();
        if let (Some(e), Some(bytes)) = (&entry, inline) {
            if e.inline {
                let len = bytes.len().min(e.size as usize);
                self.dirty.write(0, &bytes[..len]);
            }
        }
        self.base = entry;
        self.staged.clear();
        self.prefix = staging_prefix(&self.bucket_id);
        self.next_stripe = 0;
        self.current_changed();
    }

    /// The entry as last read or committed.
    pub fn base(&self) -> Option<&Entry> {
        self.base.as_ref()
    }

    /// The base is now `entry`, the same but for its link group (a link was made).
    pub fn relinked(&mut self, entry: &Entry) {
        let same = self.base.as_ref().is_some_and(|b| {
            Entry {
                links: entry.links.clone(),
                ..b.clone()
            } == *entry
        });
        if same {
            self.base = Some(entry.clone());
        }
    }

    /// Whether a commit has anything to write.
    pub fn pending(&self) -> bool {
        self.changed || self.meta_changed
    }

    fn stripe_bytes(buckets: &Buckets) -> u64 {
        buckets.config().stripe_bytes.max(1)
    }

    /// Bytes `current` describes.
    fn current_len(&self) -> u64 {
        self.current.iter().map(|s| s.size).sum()
    }

    /// `current` changed: what was read of it goes.
    fn current_changed(&mut self) {
        self.cache = None;
        for (_, task) in std::mem::take(&mut self.ahead) {
            task.abort();
        }
    }

    /// The runs being staged, as byte ranges of the file.
    fn staging_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.inflight.iter().flat_map(|staging| {
            staging
                .runs
                .iter()
                .map(|(start, run)| *start..start + run.len() as u64)
        })
    }

    /// Whether bytes newer than `current` (in memory or being staged) hold all of `range`.
    fn newer_covers(&self, range: Range<u64>) -> bool {
        self.dirty.covers(range.clone())
            || self
                .staging_ranges()
                .any(|r| r.start <= range.start && r.end >= range.end)
    }

    /// Whether bytes newer than `current` hold any of `range`.
    fn newer_overlaps(&self, range: Range<u64>) -> bool {
        self.dirty.overlaps(range.clone())
            || self
                .staging_ranges()
                .any(|r| r.start < range.end && r.end > range.start)
    }

    /// Stripe `n` of `current` (cached: sequential reads ask for it piece by piece). A
    /// reader that moves on to the next stripe gets the few after it read ahead.
    async fn current_stripe(&mut self, buckets: &Buckets, n: u64) -> Result<Bytes, Errno> {
        if self.cache.as_ref().is_none_or(|(cached, _)| *cached != n) {
            let sequential = n == 0 || self.cache.as_ref().is_some_and(|(c, _)| *c + 1 == n);
            // What was read ahead and is behind the reader now goes.
            let behind: Vec<u64> = self.ahead.range(..n).map(|(k, _)| *k).collect();
            for k in behind {
                if let Some(task) = self.ahead.remove(&k) {
                    task.abort();
                }
            }
            let bytes = match self.ahead.remove(&n) {
                Some(task) => match task.await {
                    Ok(read) => read?,
                    Err(_) => return Err(libc::EIO),
                },
                None => match self.read_current(buckets, n) {
                    Some(read) => read.await?,
                    None => Bytes::new(),
                },
            };
            self.cache = Some((n, bytes));
            if sequential {
                for k in n + 1..=n + STRIPES_AHEAD {
                    if self.ahead.contains_key(&k) {
                        continue;
                    }
                    if let Some(read) = self.read_current(buckets, k) {
                        self.ahead.insert(k, tokio::spawn(read));
                    }
                }
            }
        }
        Ok(self
            .cache
            .as_ref()
            .map_or_else(Bytes::new, |(_, bytes)| bytes.clone()))
    }

    /// The read of stripe `n` of `current` (`None`: past its end).
    fn read_current(
        &self,
        buckets: &Buckets,
        n: u64,
    ) -> Option<impl std::future::Future<Output = Result<Bytes, Errno>> + Send + 'static> {
        let stripe = Self::stripe_bytes(buckets);
        let range = n * stripe..((n + 1) * stripe).min(self.current_len());
        if range.is_empty() {
            return None;
        }
        let len = range.end - range.start;
        let segments = manifest::slice(&self.current, range);
        let buckets = buckets.clone();
        Some(async move { collect(buckets.read_segments(&segments, 0..len)).await })
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    pub async fn read(&mut self, buckets: &Buckets, offset: u64, len: u64) -> Result<Bytes, Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        // Within one stripe of `current` and nothing newer over it (a sequential reader): a
        // slice of the stripe read, no copy.
        let n = offset / stripe;
        if end <= ((n + 1) * stripe).min(self.current_len()) && !self.newer_overlaps(offset..end) {
            let bytes = self.current_stripe(buckets, n).await?;
            let from = (offset - n * stripe) as usize;
            let to = (end - n * stripe) as usize;
            if to <= bytes.len() {
                return Ok(bytes.slice(from..to));
            }
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let held = self.current_len().min(end);
        let mut at = offset;
        while at < held {
            let n = at / stripe;
            let stop = ((n + 1) * stripe).min(held);
            if !self.newer_covers(at..stop) {
                let bytes = self.current_stripe(buckets, n).await?;
                let bytes = bytes.as_ref();
                let within = (at - n * stripe) as usize;
                let piece = bytes.get(within..).unwrap_or(&[]);
                let piece = &piece[..piece.len().min((stop - at) as usize)];
                let from = (at - offset) as usize;
                out[from..from + piece.len()].copy_from_slice(piece);
            }
            at = stop;
        }
        for staging in &self.inflight {
            for (start, run) in &staging.runs {
                overlay_run(offset, &mut out, *start, run);
            }
        }
        self.dirty.overlay(offset, &mut out);
        Ok(Bytes::from(out))
    }

    /// Writes `data` at `offset`. The stripes it completes are staged behind the writer,
    /// and everything written when too much is held.
    pub async fn write(
        &mut self,
        buckets: &Buckets,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let end = offset + data.len() as u64;
        self.md5 = match self.md5.take() {
            Some((mut md5, at)) if at == offset && at == self.size && end <= MD5_BYTES_MAX => {
                md5.update(data);
                Some((md5, end))
            }
            _ => None,
        };
        self.dirty.set_grain(stripe);
        self.dirty.write(offset, data);
        self.size = self.size.max(end);
        self.changed = true;
        // A writer that went past a stripe's end is done with it (sequential writes).
        for n in offset / stripe..end / stripe {
            if let Some(bytes) = self.dirty.take_whole(n * stripe..(n + 1) * stripe) {
                self.stage_behind(buckets, vec![(n * stripe, Bytes::from(bytes))])
                    .await?;
            }
        }
        if self.dirty.bytes() > DIRTY_BYTES_MAX {
            self.stage_dirty(buckets).await?;
        }
        Ok(())
    }

    /// Stages `runs` (at most a stripe in all) in a task of its own, one after another in the
    /// staging data id, with at most `STAGINGS_IN_FLIGHT` at once (waits for the oldest
    /// first). When that fails the runs are in memory again.
    async fn stage_behind(
        &mut self,
        buckets: &Buckets,
        runs: Vec<(u64, Bytes)>,
    ) -> Result<(), Errno> {
        while self.inflight.len() >= STAGINGS_IN_FLIGHT {
            if let Err(errno) = self.settle_oldest().await {
                for (start, run) in &runs {
                    self.dirty.write(*start, run);
                }
                return Err(errno);
            }
        }
        let stripe = Self::stripe_bytes(buckets);
        let total: u64 = runs.iter().map(|(_, run)| run.len() as u64).sum();
        let first = self.next_stripe;
        let count = total.div_ceil(stripe);
        self.next_stripe += count;
        let segment = |offset: u64, size: u64| Segment {
            prefix: self.prefix.clone(),
            offset,
            size,
            stripe_bytes: stripe,
            pool: self.pool.clone(),
        };
        self.staged.push(segment(first * stripe, total));
        // Each run's segment, and the runs cut at the stripes of the data id.
        let mut writes = Vec::with_capacity(runs.len());
        let mut stripes: Vec<Vec<Bytes>> = vec![Vec::new(); count as usize];
        let mut at = 0u64;
        for (start, run) in &runs {
            writes.push((*start, segment(first * stripe + at, run.len() as u64)));
            let mut done = 0usize;
            while done < run.len() {
                let room = (stripe - at % stripe) as usize;
                let take = room.min(run.len() - done);
                stripes[(at / stripe) as usize].push(run.slice(done..done + take));
                done += take;
                at += take as u64;
            }
        }
        let task = tokio::spawn({
            let (buckets, pool, prefix) = (buckets.clone(), self.pool.clone(), self.prefix.clone());
            async move {
                let puts = stripes.into_iter().enumerate().map(|(i, chunks)| {
                    buckets.put_stripe(
                        pool.clone(),
                        format!("{prefix}.{}", first + i as u64),
                        Payload::from_chunks(chunks),
                    )
                });
                futures::future::try_join_all(puts).await.map(|_| ())
            }
        });
        self.inflight.push_back(Staging { runs, writes, task });
        Ok(())
    }

    /// Stages every byte held in memory: whole stripes one by one, the rest packed together
    /// a stripe at a time.
    async fn stage_dirty(&mut self, buckets: &Buckets) -> Result<(), Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let mut batches: Vec<Vec<(u64, Bytes)>> = Vec::new();
        let mut pack: Vec<(u64, Bytes)> = Vec::new();
        let mut packed = 0u64;
        for (start, run) in self.dirty.take_all() {
            let mut done = 0usize;
            while done < run.len() {
                let at = start + done as u64;
                let to_boundary = (stripe - at % stripe) as usize;
                let mut piece = (
                    at,
                    run.slice(done..done + to_boundary.min(run.len() - done)),
                );
                done += piece.1.len();
                if piece.1.len() as u64 == stripe {
                    batches.push(vec![piece]);
                    continue;
                }
                while piece.1.len() as u64 > stripe - packed {
                    let room = (stripe - packed) as usize;
                    pack.push((piece.0, piece.1.slice(..room)));
                    batches.push(std::mem::take(&mut pack));
                    packed = 0;
                    piece = (piece.0 + room as u64, piece.1.slice(room..));
                }
                packed += piece.1.len() as u64;
                pack.push(piece);
                if packed == stripe {
                    batches.push(std::mem::take(&mut pack));
                    packed = 0;
                }
            }
        }
        if !pack.is_empty() {
            batches.push(pack);
        }
        let mut batches = batches.into_iter();
        while let Some(batch) = batches.next() {
            if let Err(errno) = self.stage_behind(buckets, batch).await {
                for (start, run) in batches.flatten() {
                    self.dirty.write(start, &run);
                }
                return Err(errno);
            }
        }
        Ok(())
    }

    /// Waits for the oldest staging: its runs join `current`; when it failed, it and every
    /// later one are in memory again (under what was written since) and the error is
    /// returned: no byte is dropped silently.
    async fn settle_oldest(&mut self) -> Result<(), Errno> {
        let Some(staging) = self.inflight.pop_front() else {
            return Ok(());
        };
        let failed = match staging.task.await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(errno_of(&error)),
            Err(_) => Some(libc::EIO),
        };
        if let Some(errno) = failed {
            let mut back = vec![staging.runs];
            while let Some(later) = self.inflight.pop_front() {
                let _ = later.task.await;
                back.push(later.runs);
            }
            for runs in back.iter().rev() {
                for (start, run) in runs {
                    self.dirty.write_under(*start, run);
                }
            }
            return Err(errno);
        }
        let mut writes = staging.writes;
        writes.sort_by_key(|(start, _)| *start);
        let end = writes.last().map_or(0, |(start, s)| start + s.size);
        let len = self.current_len().max(end);
        self.current = manifest::splice(&self.current, len, &writes);
        self.current_changed();
        Ok(())
    }

    /// Waits for every staging.
    async fn settle_all(&mut self) -> Result<(), Errno> {
        while !self.inflight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Sets the size to `size`: bytes past it go, and bytes up to it are zeros where nothing
    /// was written.
    pub async fn truncate(&mut self, size: u64) -> Result<(), Errno> {
        self.settle_all().await?;
        if size < self.size {
            if size < self.current_len() {
                self.current = manifest::slice(&self.current, 0..size);
                self.current_changed();
            }
            self.dirty.truncate(size);
        }
        self.md5 = match self.md5.take() {
            _ if size == 0 => Some((Md5::new(), 0)),
            Some(kept) if kept.1 == size => Some(kept),
            _ => None,
        };
        if size != self.size {
            self.changed = true;
        }
        self.size = size;
        Ok(())
    }

    /// Writes the stripes of the file that too many segments share again whole (a file
    /// written at random in small pieces): a stripe with more than `SEGMENTS_PER_STRIPE_MAX`,
    /// and the busiest while the manifest has more than `SEGMENTS_MAX`.
    async fn compact(&mut self, buckets: &Buckets) -> Result<(), Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let segments = manifest::splice(&self.current, self.size, &[]);
        let mut excess = if segments.len() > SEGMENTS_MAX {
            segments.len() - SEGMENTS_MAX / 2
        } else {
            0
        };
        let mut busy = Vec::new();
        for (n, count) in manifest::crowded(&segments, stripe, 1) {
            if count > SEGMENTS_PER_STRIPE_MAX || excess > 0 {
                busy.push(n);
                excess = excess.saturating_sub(count - 1);
            }
        }
        busy.sort_unstable();
        self.rewrite(buckets, &busy).await
    }

    /// Writes stripes `numbers` of the file again whole.
    async fn rewrite(&mut self, buckets: &Buckets, numbers: &[u64]) -> Result<(), Errno> {
        let stripe = Self::stripe_bytes(buckets);
        for n in numbers {
            let bytes = self.read(buckets, n * stripe, stripe).await?;
            if !bytes.is_empty() {
                self.stage_behind(buckets, vec![(n * stripe, bytes)])
                    .await?;
            }
        }
        self.settle_all().await
    }

    /// Links what was written (and the metadata) as the key's entry, guarded on the base:
    /// only what was written since is new. When the key changed since the base, the file is
    /// written whole and linked over whatever is there. Nothing to do for an unlinked file.
    pub async fn commit(&mut self, buckets: &Buckets, bucket: &str) -> Result<(), Errno> {
        self.settle_all().await?;
        if !self.pending() || self.unlinked {
            return Ok(());
        }
        let small = self.size < buckets.config().inline_bytes_max;
        let (entry, inline) = if small {
            let bytes = self.read(buckets, 0, self.size).await?;
            let md5: [u8; 16] = Md5::digest(&bytes).into();
            let entry = self.entry(hex(&md5), Vec::new(), !bytes.is_empty());
            (entry, (!bytes.is_empty()).then_some(bytes))
        } else {
            self.stage_dirty(buckets).await?;
            self.settle_all().await?;
            self.compact(buckets).await?;
            let manifest = manifest::splice(&self.current, self.size, &[]);
            (self.entry(self.etag(&manifest), manifest, false), None)
        };
        let condition = match &self.base {
            Some(base) => PutCondition::Exactly(Box::new(base.clone())),
            None => PutCondition::Absent,
        };
        let linked = match buckets
            .put_entry(bucket, &self.key, entry.clone(), inline.clone(), &condition)
            .await
        {
            Err(BucketError::PreconditionFailed) if !small => {
                tracing::info!(key = %self.key, "the key changed since it was opened; writing the file whole");
                let stripe = Self::stripe_bytes(buckets);
                let all: Vec<u64> = (0..self.size.div_ceil(stripe)).collect();
                self.rewrite(buckets, &all).await?;
                let manifest = manifest::splice(&self.current, self.size, &[]);
                let entry = self.entry(self.etag(&manifest), manifest, false);
                buckets
                    .put_entry(
                        bucket,
                        &self.key,
                        entry.clone(),
                        None,
                        &PutCondition::Always,
                    )
                    .await
                    .map(|_| entry)
            }
            Err(BucketError::PreconditionFailed) => buckets
                .put_entry(
                    bucket,
                    &self.key,
                    entry.clone(),
                    inline.clone(),
                    &PutCondition::Always,
                )
                .await
                .map(|_| entry),
            other => other.map(|_| entry),
        };
        let entry = linked.map_err(|e| errno_of(&e))?;
        // What was staged and not linked goes; what was linked is the new base, and later
        // writes stage under a fresh data id.
        let orphans = manifest::unreferenced(&self.staged, &entry.segments);
        if !orphans.is_empty() {
            buckets.remove_segments(&orphans).await;
        }
        self.rebase(Some(entry), inline);
        self.changed = false;
        self.meta_changed = false;
        Ok(())
    }

    /// The ETag of the file with `manifest`: the MD5 of its bytes when it was written whole in
    /// one pass, else the MD5 of the manifest and its count of segments after a dash (as S3
    /// marks an ETag that is not the body's MD5).
    fn etag(&self, manifest: &[Segment]) -> String {
        if let Some((md5, at)) = &self.md5 {
            if *at == self.size {
                let digest: [u8; 16] = md5.clone().finalize().into();
                return hex(&digest);
            }
        }
        let mut md5 = Md5::new();
        for segment in manifest {
            md5.update(segment.prefix.as_bytes());
            md5.update(segment.offset.to_le_bytes());
            md5.update(segment.size.to_le_bytes());
        }
        let digest: [u8; 16] = md5.finalize().into();
        format!("{}-{}", hex(&digest), manifest.len().max(1))
    }

    fn entry(&self, etag: String, segments: Vec<Segment>, inline: bool) -> Entry {
        Entry {
            size: self.size,
            etag,
            modified_ms: tidepool_buckets::now_ms(),
            meta: self.meta.clone(),
            segments,
            inline,
            part_sizes: Vec::new(),
            links: self.base.as_ref().and_then(|b| b.links.clone()),
            version_id: None,
        }
    }

    /// Removes what this file staged and never linked (an unlinked file's last close).
    pub async fn discard(&mut self, buckets: &Buckets) {
        // Staged or not, what is in flight goes too.
        let _ = self.settle_all().await;
        buckets.remove_segments(&self.staged).await;
        self.staged.clear();
    }
}

/// A fresh staging data id in the bucket of id `bucket_id`.
fn staging_prefix(bucket_id: &str) -> String {
    format!("{bucket_id}.{}", tidepool_buckets::random_id())
}

/// A read's bytes in one buffer (as they arrived when they came in one piece).
async fn collect(stream: tidepool_buckets::DataStream) -> Result<Bytes, Errno> {
    let mut chunks: Vec<Bytes> = stream.try_collect().await.map_err(|e| errno_of(&e))?;
    if chunks.len() == 1 {
        return Ok(chunks.pop().unwrap_or_default());
    }
    let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

fn hex(bytes: &[u8]) -> String {
    tidepool_buckets::hex(bytes)
}
