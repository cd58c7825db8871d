//! An open file: its base entry as read at `open`, the stripes written since (in memory, or
//! staged in the data pool under a data id of its own), and the commit that links a new
//! manifest naming only the rewritten stripes anew. See docs/mount.md, "Data path".

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bytes::Bytes;
use futures::TryStreamExt;
use md5::{Digest, Md5};
use tidepool_buckets::manifest;
use tidepool_buckets::{BucketError, Buckets, Entry, ObjectMeta, PutCondition, Segment};

use crate::errors::{errno_of, Errno};

/// Dirty bytes an open file keeps in memory before it stages its oldest stripes.
const DIRTY_BYTES_MAX: u64 = 64 << 20;

/// Stripes written to the cluster at once by a commit.
const STRIPES_IN_FLIGHT: usize = 6;

/// Base stripes read ahead of a sequential reader.
const STRIPES_AHEAD: u64 = 3;

/// A stripe's staging in the background.
type Staging = tokio::task::JoinHandle<Result<(), BucketError>>;

/// An open file (every handle of one inode in this mount shares it).
#[derive(Debug)]
pub struct OpenFile {
    /// Its key.
    pub key: String,
    /// The entry as last read or committed (`None`: the key does not exist yet).
    base: Option<Entry>,
    /// The base's inline bytes.
    inline: Option<Bytes>,
    /// Bytes of the base that are still the file's (a truncation below them cuts them off).
    valid: u64,
    /// The file's size.
    pub size: u64,
    /// Stripes written since the base, by number: their bytes from the stripe's start (bytes
    /// past a buffer's end, within the size, are zeros).
    dirty: BTreeMap<u64, Vec<u8>>,
    /// Stripes written to the staging data id since the base, with how many bytes each got.
    staged: BTreeMap<u64, u64>,
    /// Stripes being staged in the background, by number: their bytes (served to reads,
    /// and dirty again if the staging fails) and the task.
    inflight: BTreeMap<u64, (Vec<u8>, Staging)>,
    /// Staged stripes a truncation left out: removed after the next commit.
    orphans: BTreeSet<u64>,
    /// The bucket's id.
    bucket_id: String,
    /// The staging data id.
    prefix: String,
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
    /// The base stripe last read, by number.
    cache: Option<(u64, Vec<u8>)>,
    /// Base stripes read ahead of a sequential reader, by number.
    ahead: BTreeMap<u64, tokio::task::JoinHandle<Result<Vec<u8>, Errno>>>,
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
        OpenFile {
            key,
            meta: base.as_ref().map(|e| e.meta.clone()).unwrap_or_default(),
            inline,
            valid: size,
            size,
            dirty: BTreeMap::new(),
            staged: BTreeMap::new(),
            inflight: BTreeMap::new(),
            orphans: BTreeSet::new(),
            bucket_id: bucket_id.to_owned(),
            prefix: staging_prefix(bucket_id),
            pool,
            changed: false,
            meta_changed: false,
            md5: (size == 0).then(|| (Md5::new(), 0)),
            cache: None,
            ahead: BTreeMap::new(),
            opens: 0,
            unlinked: false,
            held: None,
            base,
        }
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

    /// The part of the file in stripe `n`.
    fn extent(&self, n: u64, stripe: u64) -> Range<u64> {
        let start = n * stripe;
        start.min(self.size)..((n + 1) * stripe).min(self.size)
    }

    /// Bytes `range` of the base (within `valid`), read from the cluster.
    async fn read_base(&self, buckets: &Buckets, range: Range<u64>) -> Result<Vec<u8>, Errno> {
        let range = range.start.min(self.valid)..range.end.min(self.valid);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let Some(entry) = &self.base else {
            return Ok(Vec::new());
        };
        collect(buckets.read_data(entry, self.inline.clone(), range)).await
    }

    /// Bytes `range` (within one stripe) of the staging data id: zeros past what the stripe
    /// got when it was staged.
    async fn read_staged(&self, buckets: &Buckets, range: Range<u64>) -> Result<Vec<u8>, Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let n = range.start / stripe;
        let held = n * stripe + self.staged.get(&n).copied().unwrap_or(0);
        let want = (range.end - range.start) as usize;
        let range = range.start.min(held)..range.end.min(held);
        if range.is_empty() {
            return Ok(vec![0; want]);
        }
        let segment = Segment {
            prefix: self.prefix.clone(),
            offset: range.start,
            size: range.end - range.start,
            stripe_bytes: Self::stripe_bytes(buckets),
            pool: self.pool.clone(),
        };
        let entry = Entry {
            size: segment.size,
            etag: String::new(),
            modified_ms: 0,
            meta: ObjectMeta::default(),
            segments: vec![segment.clone()],
            inline: false,
            part_sizes: Vec::new(),
            links: None,
        };
        let mut bytes = collect(buckets.read_data(&entry, None, 0..segment.size)).await?;
        bytes.resize(want, 0);
        Ok(bytes)
    }

    /// Stripe `n` as the file holds it now, from its start to the file's end within it.
    async fn stripe_now(&mut self, buckets: &Buckets, n: u64) -> Result<Vec<u8>, Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let extent = self.extent(n, stripe);
        let want = (extent.end - extent.start) as usize;
        let mut bytes = if let Some(dirty) = self.dirty.get(&n) {
            dirty.clone()
        } else if let Some((bytes, _)) = self.inflight.get(&n) {
            bytes.clone()
        } else if self.staged.contains_key(&n) {
            self.read_staged(buckets, extent.clone()).await?
        } else {
            self.base_stripe(buckets, n).await?.to_vec()
        };
        bytes.resize(want, 0);
        Ok(bytes)
    }

    /// Base stripe `n` within `valid` (cached: sequential reads ask for it piece by piece).
    /// A reader that moves on to the next stripe gets the few after it read ahead.
    async fn base_stripe(&mut self, buckets: &Buckets, n: u64) -> Result<&[u8], Errno> {
        if self.cache.as_ref().is_none_or(|(cached, _)| *cached != n) {
            let stripe = Self::stripe_bytes(buckets);
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
                None => {
                    self.read_base(buckets, n * stripe..(n + 1) * stripe)
                        .await?
                }
            };
            self.cache = Some((n, bytes));
            if sequential {
                self.read_ahead(buckets, n);
            }
        }
        Ok(self
            .cache
            .as_ref()
            .map_or(&[], |(_, bytes)| bytes.as_slice()))
    }

    /// Stops what was read ahead (the base changed).
    fn drop_read_ahead(&mut self) {
        for (_, task) in std::mem::take(&mut self.ahead) {
            task.abort();
        }
    }

    /// Starts reading the `STRIPES_AHEAD` base stripes after `n` in the background.
    fn read_ahead(&mut self, buckets: &Buckets, n: u64) {
        let stripe = Self::stripe_bytes(buckets);
        let Some(base) = &self.base else {
            return;
        };
        for k in n + 1..=n + STRIPES_AHEAD {
            let start = k * stripe;
            if start >= self.valid || self.ahead.contains_key(&k) || base.inline {
                continue;
            }
            let range = start..((k + 1) * stripe).min(self.valid);
            let (buckets, entry) = (buckets.clone(), base.clone());
            let task =
                tokio::spawn(async move { collect(buckets.read_data(&entry, None, range)).await });
            self.ahead.insert(k, task);
        }
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    pub async fn read(
        &mut self,
        buckets: &Buckets,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let n = at / stripe;
            let within = (at - n * stripe) as usize;
            let take = ((n + 1) * stripe).min(end) - at;
            let held = self
                .dirty
                .get(&n)
                .or_else(|| self.inflight.get(&n).map(|(bytes, _)| bytes));
            if let Some(dirty) = held {
                let piece = dirty.get(within..).unwrap_or(&[]);
                let piece = &piece[..piece.len().min(take as usize)];
                out.extend_from_slice(piece);
                out.resize(out.len() + take as usize - piece.len(), 0);
            } else if self.staged.contains_key(&n) {
                let mut bytes = self.read_staged(buckets, at..at + take).await?;
                bytes.resize(take as usize, 0);
                out.extend_from_slice(&bytes);
            } else {
                let bytes = self.base_stripe(buckets, n).await?;
                let piece = bytes.get(within..).unwrap_or(&[]);
                let piece = &piece[..piece.len().min(take as usize)];
                out.extend_from_slice(piece);
                out.resize(out.len() + take as usize - piece.len(), 0);
            }
            at += take;
        }
        Ok(out)
    }

    /// Writes `data` at `offset`; stages the oldest stripes when too many are dirty.
    pub async fn write(
        &mut self,
        buckets: &Buckets,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let end = offset + data.len() as u64;
        self.md5 = match self.md5.take() {
            Some((mut md5, at)) if at == offset && at == self.size => {
                md5.update(data);
                Some((md5, end))
            }
            _ => None,
        };
        let mut at = offset;
        while at < end {
            let n = at / stripe;
            let within = (at - n * stripe) as usize;
            let take = (((n + 1) * stripe).min(end) - at) as usize;
            if let Some(bytes) = self.settle(n).await? {
                // Staged meanwhile, and changed again: dirty once more.
                self.dirty.insert(n, bytes);
            }
            if !self.dirty.contains_key(&n) {
                let bytes = if n * stripe < self.size {
                    self.stripe_now(buckets, n).await?
                } else {
                    Vec::new()
                };
                self.dirty.insert(n, bytes);
            }
            let buffer = self.dirty.get_mut(&n).expect("just made dirty");
            if buffer.len() < within + take {
                buffer.resize(within + take, 0);
            }
            let from = (at - offset) as usize;
            buffer[within..within + take].copy_from_slice(&data[from..from + take]);
            at += take as u64;
            self.size = self.size.max(at);
            // A writer that went past the stripe's end is done with it (sequential writes):
            // it is staged behind the writes that follow.
            if at == (n + 1) * stripe {
                self.stage_behind(buckets, n).await?;
            }
        }
        self.size = self.size.max(end);
        self.changed = true;
        while self.dirty.len() as u64 * stripe > DIRTY_BYTES_MAX {
            let oldest = *self.dirty.keys().next().expect("dirty stripes");
            self.stage_behind(buckets, oldest).await?;
        }
        Ok(())
    }

    /// Stages dirty stripe `n` in a task of its own, with at most `STRIPES_IN_FLIGHT` at
    /// once (waits for the oldest first).
    async fn stage_behind(&mut self, buckets: &Buckets, n: u64) -> Result<(), Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let Some(mut bytes) = self.dirty.remove(&n) else {
            return Ok(());
        };
        let extent = self.extent(n, stripe);
        bytes.resize((extent.end - extent.start) as usize, 0);
        while self.inflight.len() >= STRIPES_IN_FLIGHT {
            let oldest = *self.inflight.keys().next().expect("in flight");
            if let Err(errno) = self.settle(oldest).await {
                self.dirty.insert(n, bytes);
                return Err(errno);
            }
        }
        let task = tokio::spawn({
            let buckets = buckets.clone();
            let (pool, name, data) = (
                self.pool.clone(),
                format!("{}.{n}", self.prefix),
                bytes.clone(),
            );
            async move { buckets.put_stripe(pool, name, data).await }
        });
        self.inflight.insert(n, (bytes, task));
        Ok(())
    }

    /// Waits for stripe `n`'s staging in the background, if any: then it is staged (its
    /// bytes are returned), or, when that failed, dirty again (and the error returned).
    async fn settle(&mut self, n: u64) -> Result<Option<Vec<u8>>, Errno> {
        let Some((bytes, task)) = self.inflight.remove(&n) else {
            return Ok(None);
        };
        let failed = match task.await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(errno_of(&error)),
            Err(_) => Some(libc::EIO),
        };
        if let Some(errno) = failed {
            self.dirty.entry(n).or_insert(bytes);
            return Err(errno);
        }
        self.orphans.remove(&n);
        self.staged.insert(n, bytes.len() as u64);
        Ok(Some(bytes))
    }

    /// Waits for every stripe staged in the background.
    async fn settle_all(&mut self) -> Result<(), Errno> {
        let numbers: Vec<u64> = self.inflight.keys().copied().collect();
        let mut first_error = None;
        for n in numbers {
            if let Err(errno) = self.settle(n).await {
                first_error.get_or_insert(errno);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sets the size to `size`: bytes past it go, and bytes up to it are zeros where nothing
    /// was written.
    pub async fn truncate(&mut self, buckets: &Buckets, size: u64) -> Result<(), Errno> {
        self.settle_all().await?;
        let stripe = Self::stripe_bytes(buckets);
        if size < self.size {
            // The stripe cut in two keeps its head, in memory: bytes past the cut must read
            // as zeros if the file grows again.
            let n = size / stripe;
            if !size.is_multiple_of(stripe) && !self.dirty.contains_key(&n) {
                let head = self.stripe_now(buckets, n).await?;
                self.dirty.insert(n, head);
            }
            let first_gone = size.div_ceil(stripe);
            self.dirty.retain(|n, _| *n < first_gone);
            let cut: Vec<u64> = self.staged.range(first_gone..).map(|(n, _)| *n).collect();
            for n in cut {
                self.staged.remove(&n);
                self.orphans.insert(n);
            }
            if let Some(buffer) = self.dirty.get_mut(&n) {
                buffer.truncate((size - n * stripe) as usize);
            }
            self.valid = self.valid.min(size);
            self.cache = None;
            self.drop_read_ahead();
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

    /// Writes stripes `numbers` (dirty ones) to the staging data id.
    async fn stage(&mut self, buckets: &Buckets, numbers: &[u64]) -> Result<(), Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let mut writes = Vec::new();
        for n in numbers {
            let Some(mut bytes) = self.dirty.remove(n) else {
                continue;
            };
            let extent = self.extent(*n, stripe);
            bytes.resize((extent.end - extent.start) as usize, 0);
            writes.push((*n, bytes));
        }
        for batch in writes.chunks(STRIPES_IN_FLIGHT) {
            let mut sent = Vec::with_capacity(batch.len());
            for (n, bytes) in batch {
                sent.push(buckets.put_stripe(
                    self.pool.clone(),
                    format!("{}.{n}", self.prefix),
                    bytes.clone(),
                ));
            }
            for done in futures::future::join_all(sent).await {
                done.map_err(|e| errno_of(&e))?;
            }
        }
        for (n, bytes) in &writes {
            self.orphans.remove(n);
            self.staged.insert(*n, bytes.len() as u64);
        }
        Ok(())
    }

    /// Links what was written (and the metadata) as the key's entry, guarded on the base:
    /// only the rewritten stripes are new. When the key changed since the base, the file is
    /// written whole and linked over whatever is there. Nothing to do for an unlinked file.
    pub async fn commit(&mut self, buckets: &Buckets, bucket: &str) -> Result<(), Errno> {
        self.settle_all().await?;
        if !self.pending() || self.unlinked {
            return Ok(());
        }
        let stripe = Self::stripe_bytes(buckets);
        let small = self.size < buckets.config().inline_bytes_max;
        let (entry, inline) = if small {
            let bytes = self.read(buckets, 0, self.size).await?;
            let md5: [u8; 16] = Md5::digest(&bytes).into();
            let entry = self.entry(hex(&md5), Vec::new(), !bytes.is_empty());
            (entry, (!bytes.is_empty()).then(|| Bytes::from(bytes)))
        } else {
            if self.base.as_ref().is_some_and(|b| b.inline)
                && self.valid > 0
                && !self.dirty.contains_key(&0)
            {
                let first = self.stripe_now(buckets, 0).await?;
                self.dirty.insert(0, first);
            }
            // A staged stripe the file has grown past since gets its zeros written.
            let short: Vec<u64> = self
                .staged
                .iter()
                .filter(|(n, len)| {
                    **len < {
                        let e = self.extent(**n, stripe);
                        e.end - e.start
                    }
                })
                .map(|(n, _)| *n)
                .collect();
            for n in short {
                if !self.dirty.contains_key(&n) {
                    let bytes = self.stripe_now(buckets, n).await?;
                    self.dirty.insert(n, bytes);
                }
            }
            let dirty: Vec<u64> = self.dirty.keys().copied().collect();
            self.stage(buckets, &dirty).await?;
            let manifest = self.manifest(stripe, false);
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
                self.stage_everything(buckets).await?;
                let manifest = self.manifest(stripe, true);
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
        let orphans: Vec<Segment> = std::mem::take(&mut self.orphans)
            .into_iter()
            .map(|n| self.staged_stripe(n, stripe))
            .collect();
        if !orphans.is_empty() {
            buckets.remove_segments(&orphans).await;
        }
        // What was linked is the new base; later writes stage under a fresh data id.
        self.valid = entry.size;
        self.base = Some(entry);
        self.inline = inline;
        self.staged.clear();
        self.dirty.clear();
        self.cache = None;
        self.drop_read_ahead();
        self.changed = false;
        self.meta_changed = false;
        self.prefix = staging_prefix(&self.bucket_id);
        Ok(())
    }

    /// Every stripe of the file staged (for a commit that cannot reuse the base's).
    async fn stage_everything(&mut self, buckets: &Buckets) -> Result<(), Errno> {
        let stripe = Self::stripe_bytes(buckets);
        let stripes = self.size.div_ceil(stripe);
        for n in 0..stripes {
            let extent = self.extent(n, stripe);
            let whole = self
                .staged
                .get(&n)
                .is_some_and(|len| *len >= extent.end - extent.start);
            if !whole && !self.dirty.contains_key(&n) {
                let bytes = self.stripe_now(buckets, n).await?;
                self.dirty.insert(n, bytes);
            }
            if self.dirty.len() >= STRIPES_IN_FLIGHT || n + 1 == stripes {
                let dirty: Vec<u64> = self.dirty.keys().copied().collect();
                self.stage(buckets, &dirty).await?;
            }
        }
        Ok(())
    }

    /// The manifest: the base (within `valid`, unless `whole`) with the staged stripes over
    /// it.
    fn manifest(&self, stripe: u64, whole: bool) -> Vec<Segment> {
        let writes: Vec<(u64, Segment)> = self
            .staged
            .keys()
            .filter(|n| **n * stripe < self.size)
            .map(|n| {
                let extent = self.extent(*n, stripe);
                (
                    extent.start,
                    Segment {
                        prefix: self.prefix.clone(),
                        offset: extent.start,
                        size: extent.end - extent.start,
                        stripe_bytes: stripe,
                        pool: self.pool.clone(),
                    },
                )
            })
            .collect();
        let base = match &self.base {
            Some(base) if !whole && !base.inline => manifest::slice(&base.segments, 0..self.valid),
            _ => Vec::new(),
        };
        manifest::splice(&base, self.size, &writes)
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
        }
    }

    /// Staged stripe `n`, whole, as a segment (for removing it).
    fn staged_stripe(&self, n: u64, stripe: u64) -> Segment {
        Segment {
            prefix: self.prefix.clone(),
            offset: n * stripe,
            size: stripe,
            stripe_bytes: stripe,
            pool: self.pool.clone(),
        }
    }

    /// Removes what this file staged and never linked (an unlinked file's last close).
    pub async fn discard(&mut self, buckets: &Buckets) {
        // Staged or not, a stripe in flight goes too.
        let _ = self.settle_all().await;
        let stripe = Self::stripe_bytes(buckets);
        let segments: Vec<Segment> = self
            .staged
            .keys()
            .chain(&self.orphans)
            .map(|n| self.staged_stripe(*n, stripe))
            .collect();
        buckets.remove_segments(&segments).await;
        self.staged.clear();
        self.orphans.clear();
    }
}

/// A fresh staging data id in the bucket of id `bucket_id`.
fn staging_prefix(bucket_id: &str) -> String {
    format!("{bucket_id}.{}", tidepool_buckets::random_id())
}

/// A read's bytes in one buffer.
async fn collect(stream: tidepool_buckets::DataStream) -> Result<Vec<u8>, Errno> {
    let chunks: Vec<Bytes> = stream.try_collect().await.map_err(|e| errno_of(&e))?;
    let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    tidepool_buckets::hex(bytes)
}
