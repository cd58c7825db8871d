//! The file system the kernel talks to: each request is served by a task on the mount's
//! runtime (so requests run concurrently), over the bucket layer. See docs/mount.md.

use crate::metrics::MountMetrics;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use libc::c_int;
use md5::{Digest, Md5};
use tidepool_buckets::{
    BucketError, BucketInfo, Buckets, Entry, ListQuery, ObjectMeta, PutCondition,
};
use tokio::sync::Mutex as AsyncMutex;

use crate::attrs::{self, Attrs, Kind, Owner, Time};
use crate::errors::{errno_of, Errno};
use crate::file::OpenFile;
use crate::names::{self, Listed, NameError};

/// A change of an entry's attributes and metadata.
type MetaChange = dyn Fn(&mut Attrs, &mut std::collections::BTreeMap<String, String>) -> Result<(), Errno>
    + Send
    + Sync;

/// The root directory's inode.
const ROOT: u64 = fuser::FUSE_ROOT_ID;

/// Keys a listing asks for per page.
const LIST_PAGE: usize = 1000;

/// Block size reported in attributes and `statfs`.
const BLOCK: u32 = 4096;

/// How a mount behaves.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// The bucket.
    pub bucket: String,
    /// Who owns entries whose metadata does not say.
    pub owner: Owner,
    /// How long the kernel may keep attributes and entries.
    pub attr_timeout: Duration,
    /// Whether nothing may be changed.
    pub read_only: bool,
}

/// What the mount knows of an inode.
#[derive(Debug)]
struct Node {
    key: String,
    dir: bool,
    lookups: u64,
    /// Its other names (hard links) looked up here.
    others: Vec<String>,
    /// Its link group, hashed (0: none).
    group: u64,
}

/// Inode numbers and the keys they stand for.
#[derive(Debug)]
struct Nodes {
    by_ino: HashMap<u64, Node>,
    by_key: HashMap<String, u64>,
    /// Inodes of link groups, by the group's hash: every name of a file is one inode.
    by_group: HashMap<u64, u64>,
    next: u64,
}

impl Nodes {
    fn new() -> Nodes {
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT,
            Node {
                key: String::new(),
                dir: true,
                lookups: 1,
                others: Vec::new(),
                group: 0,
            },
        );
        Nodes {
            by_ino,
            by_key: [(String::new(), ROOT)].into(),
            by_group: HashMap::new(),
            next: ROOT + 1,
        }
    }

    /// The inode of `key` (made when new); counts a lookup when `counted`.
    fn ino_of(&mut self, key: &str, dir: bool, counted: bool) -> u64 {
        let ino = match self.by_key.get(key) {
            Some(ino) => *ino,
            None => {
                let ino = self.next;
                self.next += 1;
                self.by_key.insert(key.to_owned(), ino);
                self.by_ino.insert(
                    ino,
                    Node {
                        key: key.to_owned(),
                        dir,
                        lookups: 0,
                        others: Vec::new(),
                        group: 0,
                    },
                );
                ino
            }
        };
        let node = self.by_ino.get_mut(&ino).expect("indexed");
        node.dir = dir;
        if counted {
            node.lookups += 1;
        }
        ino
    }

    /// The inode of `key`, a name of link group `group` (hashed; 0: none): the group's inode
    /// when it has one here. Counts a lookup when `counted`.
    fn ino_for(&mut self, key: &str, dir: bool, group: u64, counted: bool) -> u64 {
        let shared = (group != 0)
            .then(|| self.by_group.get(&group).copied())
            .flatten()
            .filter(|ino| self.by_ino.contains_key(ino));
        let Some(ino) = shared else {
            let ino = self.ino_of(key, dir, counted);
            if group != 0 {
                self.join_group(ino, group);
            }
            return ino;
        };
        if self.by_key.get(key) != Some(&ino) {
            self.unlink(key);
            self.by_key.insert(key.to_owned(), ino);
        }
        let node = self.by_ino.get_mut(&ino).expect("indexed");
        if node.key.starts_with('\0') {
            node.key = key.to_owned();
        } else if node.key != key && !node.others.iter().any(|o| o == key) {
            node.others.push(key.to_owned());
        }
        if counted {
            node.lookups += 1;
        }
        ino
    }

    /// The kernel took a reference to `ino`, inode of `key` when it was listed (from a
    /// listing with attributes); known again if it was forgotten since.
    fn count_lookup(&mut self, ino: u64, key: &str, dir: bool) {
        let node = self.by_ino.entry(ino).or_insert_with(|| Node {
            key: key.to_owned(),
            dir,
            lookups: 0,
            others: Vec::new(),
            group: 0,
        });
        node.lookups += 1;
        self.by_key.entry(key.to_owned()).or_insert(ino);
    }

    /// Inode `ino` is the file of link group `group` (hashed).
    fn join_group(&mut self, ino: u64, group: u64) {
        if let Some(node) = self.by_ino.get_mut(&ino) {
            node.group = group;
            self.by_group.insert(group, ino);
        }
    }

    /// Another name of `key`'s inode known here, if any.
    fn other_name(&self, key: &str) -> Option<String> {
        let node = self.by_ino.get(self.by_key.get(key)?)?;
        std::iter::once(&node.key)
            .chain(&node.others)
            .find(|name| *name != key && !name.starts_with('\0'))
            .cloned()
    }

    fn key(&self, ino: u64) -> Option<(String, bool)> {
        self.by_ino.get(&ino).map(|n| (n.key.clone(), n.dir))
    }

    fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(node) = self.by_ino.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
            if node.lookups == 0 {
                let node = self.by_ino.remove(&ino).expect("present");
                for key in std::iter::once(&node.key).chain(&node.others) {
                    if self.by_key.get(key) == Some(&ino) {
                        self.by_key.remove(key);
                    }
                }
                if self.by_group.get(&node.group) == Some(&ino) {
                    self.by_group.remove(&node.group);
                }
            }
        }
    }

    /// `key` no longer names its inode (unlinked): a new entry of that name gets a new one,
    /// while the old one lives on for its open handles.
    fn unlink(&mut self, key: &str) {
        if let Some(ino) = self.by_key.remove(key) {
            if let Some(node) = self.by_ino.get_mut(&ino) {
                node.others.retain(|o| o != key);
                if node.key == key {
                    node.key = node.others.pop().unwrap_or_else(|| String::from("\0gone"));
                }
            }
        }
    }

    /// Moves `from` (and, for a directory, every key under it) to `to`.
    fn rename(&mut self, from: &str, to: &str) {
        let from_prefix = names::dir_prefix(from);
        let moved: Vec<(String, u64)> = self
            .by_key
            .iter()
            .filter(|(k, _)| *k == from || k.starts_with(&from_prefix))
            .map(|(k, i)| (k.clone(), *i))
            .collect();
        self.unlink(to);
        for (key, ino) in moved {
            self.by_key.remove(&key);
            let new = format!("{to}{}", &key[from.len()..]);
            if let Some(node) = self.by_ino.get_mut(&ino) {
                if node.key == key {
                    node.key = new.clone();
                } else {
                    for other in node.others.iter_mut().filter(|o| **o == key) {
                        *other = new.clone();
                    }
                }
            }
            self.by_key.insert(new, ino);
        }
    }
}

/// An entry's attributes and size.
#[derive(Clone, Copy, Debug)]
struct Stat {
    attrs: Attrs,
    size: u64,
    /// Names of a file (hard links).
    nlink: u32,
    /// Its link group, hashed (0: none).
    group: u64,
}

/// Link group `links`, hashed for the inode table (0: none).
fn group_hash(links: Option<&str>) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    links.map_or(0, |id| {
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(id)
            .max(1)
    })
}

/// What an open handle refers to.
#[derive(Debug)]
enum Open {
    File(u64, Arc<AsyncMutex<OpenFile>>),
    Dir(Vec<DirEntry>),
}

/// One entry of an open directory, as listed when it was opened.
#[derive(Clone, Debug)]
struct DirEntry {
    ino: u64,
    kind: FileType,
    name: String,
    key: String,
    /// What the listing said of an object (`None`: a directory, `.` or `..`).
    stat: Option<Stat>,
}

/// The mount's state, shared by the request tasks.
#[derive(Debug)]
pub struct Core {
    /// What it counts, served on `--metrics-addr`.
    pub metrics: Arc<MountMetrics>,
    buckets: Buckets,
    info: BucketInfo,
    options: MountOptions,
    nodes: Mutex<Nodes>,
    files: Mutex<HashMap<u64, Arc<AsyncMutex<OpenFile>>>>,
    handles: Mutex<HashMap<u64, Open>>,
    next_fh: AtomicU64,
    warned: Mutex<HashSet<String>>,
    started: Time,
    mon: AsyncMutex<tidepool_client::MonClient>,
    /// What keys were found to be, and when, kept for the attribute timeout.
    stats: Mutex<HashMap<String, (std::time::Instant, Stat, bool)>>,
    /// When an entry of a folder (by key) last came, went or was renamed through this mount:
    /// the folder's modification and change times are at least that (POSIX), without a
    /// write of its marker per entry.
    folder_changes: Mutex<HashMap<String, Time>>,
    /// Folders whose every name is known (by key): when they were listed or made, and their
    /// names, kept up to date with what this mount changes in them. A lookup of another name
    /// within the attribute timeout is answered "no such file" without a round trip (what an
    /// S3 client adds meanwhile shows within that timeout, as promised).
    folders_known: Mutex<HashMap<String, (std::time::Instant, HashSet<String>)>>,
    /// Keys of files created here whose first commit is still to come: listed in their
    /// folder, which is not empty while it holds one.
    created: Mutex<BTreeSet<String>>,
    /// Bumped by every change this mount makes: what a lookup that began before a change
    /// found is not kept.
    generation: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn name_errno(error: NameError) -> Errno {
    match error {
        NameError::TooLong => libc::ENAMETOOLONG,
        NameError::NotUtf8 | NameError::Invalid => libc::EINVAL,
    }
}

fn system_time(time: Time) -> SystemTime {
    if time.secs >= 0 {
        UNIX_EPOCH + Duration::new(time.secs as u64, time.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(time.secs.unsigned_abs())
    }
}

fn time_of(value: TimeOrNow) -> Time {
    match value {
        TimeOrNow::Now => Time::now(),
        TimeOrNow::SpecificTime(at) => match at.duration_since(UNIX_EPOCH) {
            Ok(since) => Time {
                secs: since.as_secs() as i64,
                nanos: since.subsec_nanos(),
            },
            Err(before) => Time {
                secs: -(before.duration().as_secs() as i64),
                nanos: 0,
            },
        },
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    let digest: [u8; 16] = Md5::digest(bytes).into();
    tidepool_buckets::hex(&digest)
}

impl Core {
    /// The mount's state for `bucket` (`info`) over `buckets`.
    pub fn new(
        buckets: Buckets,
        mon: tidepool_client::MonClient,
        info: BucketInfo,
        options: MountOptions,
        metrics: Arc<MountMetrics>,
    ) -> Core {
        Core {
            metrics,
            mon: AsyncMutex::new(mon),
            stats: Mutex::new(HashMap::new()),
            folder_changes: Mutex::new(HashMap::new()),
            folders_known: Mutex::new(HashMap::new()),
            created: Mutex::new(BTreeSet::new()),
            generation: AtomicU64::new(0),
            buckets,
            info,
            options,
            nodes: Mutex::new(Nodes::new()),
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            warned: Mutex::new(HashSet::new()),
            started: Time::now(),
        }
    }

    fn bucket(&self) -> &str {
        &self.options.bucket
    }

    /// The bucket mounted.
    pub fn bucket_name(&self) -> &str {
        &self.options.bucket
    }

    fn ttl(&self) -> Duration {
        self.options.attr_timeout
    }

    /// How long the kernel may keep `attr`: a file of several names changes through the
    /// others (another inode to the kernel), so never.
    fn ttl_of(&self, attr: &FileAttr) -> Duration {
        if attr.kind == FileType::RegularFile && attr.nlink > 1 {
            Duration::ZERO
        } else {
            self.ttl()
        }
    }

    fn file_attr(&self, ino: u64, stat: &Stat) -> FileAttr {
        let a = &stat.attrs;
        let size = if a.kind == Kind::Dir { 0 } else { stat.size };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: system_time(a.atime),
            mtime: system_time(a.mtime),
            ctime: system_time(a.ctime),
            crtime: system_time(a.ctime),
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: if a.kind == Kind::Dir { 2 } else { stat.nlink },
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: BLOCK,
            flags: 0,
        }
    }

    fn key_of(&self, ino: u64) -> Result<(String, bool), Errno> {
        lock(&self.nodes).key(ino).ok_or(libc::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<String, Errno> {
        let (dir, _) = self.key_of(parent)?;
        names::child_key(&dir, name.as_bytes()).map_err(name_errno)
    }

    fn open_file_of(&self, ino: u64) -> Option<Arc<AsyncMutex<OpenFile>>> {
        lock(&self.files).get(&ino).cloned()
    }

    /// The attributes of an object's entry.
    fn stat_of_entry(&self, entry: &Entry, dir: bool) -> Stat {
        Stat {
            attrs: Attrs::of_object(
                &entry.meta.metadata,
                entry.modified_ms,
                dir,
                self.options.owner,
            ),
            size: entry.size,
            nlink: 1,
            group: group_hash(entry.links.as_deref()),
        }
    }

    /// The attributes of an object's entry, with its count of names.
    async fn stat_of_linked(&self, entry: &Entry) -> Result<Stat, Errno> {
        let mut stat = self.stat_of_entry(entry, false);
        stat.nlink = self.names_of(entry.links.as_deref(), 1).await?;
        Ok(stat)
    }

    /// How many keys link group `links` has (`alone` when the file is in none).
    async fn names_of(&self, links: Option<&str>, alone: u32) -> Result<u32, Errno> {
        let Some(id) = links else {
            return Ok(alone);
        };
        let group = self
            .buckets
            .link_group(self.bucket(), id)
            .await
            .map_err(|e| errno_of(&e))?;
        Ok(group.map_or(alone, |g| g.names.len() as u32))
    }

    /// What `key` is: an object, a directory (marker or prefix), or nothing. An object wins
    /// over a directory of the same name (listings say the same). A key open here shows its
    /// open state.
    async fn stat(&self, key: &str, dir_hint: bool) -> Result<(Stat, bool), Errno> {
        let (mut stat, dir) = self.stat_of_key(key, dir_hint).await?;
        if dir {
            if let Some(when) = lock(&self.folder_changes).get(key) {
                stat.attrs.mtime = stat.attrs.mtime.max(*when);
                stat.attrs.ctime = stat.attrs.ctime.max(*when);
            }
        }
        Ok((stat, dir))
    }

    /// Entry `key` came (made, linked or renamed here).
    fn entry_came(&self, key: &str) {
        self.folder_changed(key);
        let (folder, name) = key.rsplit_once('/').unwrap_or(("", key));
        if let Some((_, names)) = lock(&self.folders_known).get_mut(folder) {
            names.insert(name.to_owned());
        }
    }

    /// Entry `key` went (removed or renamed away here).
    fn entry_went(&self, key: &str) {
        self.folder_changed(key);
        let (folder, name) = key.rsplit_once('/').unwrap_or(("", key));
        if let Some((_, names)) = lock(&self.folders_known).get_mut(folder) {
            names.remove(name);
        }
    }

    /// Folder `key` held exactly `names` at `when` (a listing began then, or it was made).
    fn folder_known(&self, key: &str, names: HashSet<String>, when: std::time::Instant) {
        const KEPT_MAX: usize = 1024;
        let mut known = lock(&self.folders_known);
        if known.len() >= KEPT_MAX {
            let ttl = self.ttl();
            known.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        if known.len() < KEPT_MAX && !self.ttl().is_zero() {
            known.insert(key.to_owned(), (when, names));
        }
    }

    /// Whether `name` is known to be absent from folder `folder` (listed or made within the
    /// attribute timeout, and changed here since only as recorded).
    fn known_absent(&self, folder: &str, name: &str) -> bool {
        lock(&self.folders_known)
            .get(folder)
            .is_some_and(|(at, names)| at.elapsed() < self.ttl() && !names.contains(name))
    }

    /// An entry of the folder of `key` came, went or was renamed.
    fn folder_changed(&self, key: &str) {
        const KEPT_MAX: usize = 65_536;
        let folder = names::parent_of(key);
        let mut changes = lock(&self.folder_changes);
        if changes.len() >= KEPT_MAX {
            changes.clear();
        }
        // The folder's cached attributes stay: the change is laid over them when asked.
        changes.insert(folder.to_owned(), Time::now());
    }

    async fn stat_of_key(&self, key: &str, dir_hint: bool) -> Result<(Stat, bool), Errno> {
        if key.is_empty() {
            return Ok((
                Stat {
                    attrs: Attrs::implicit_dir(self.options.owner, self.started),
                    size: 0,
                    nlink: 2,
                    group: 0,
                },
                true,
            ));
        }
        let ino = lock(&self.nodes).by_key.get(key).copied();
        if let Some(file) = ino.and_then(|ino| self.open_file_of(ino)) {
            let file = file.lock().await;
            if !file.unlinked {
                return Ok((self.open_stat(&file).await?, false));
            }
        }
        if let Some((at, stat, dir)) = lock(&self.stats).get(key) {
            if at.elapsed() < self.ttl() {
                return Ok((*stat, *dir));
            }
        }
        let since = self.generation.load(Ordering::SeqCst);
        let found = self.stat_uncached(key, dir_hint).await?;
        self.remember(key, found.0, found.1, since);
        Ok(found)
    }

    /// Keeps what `key` was found to be for the attribute timeout, unless this mount changed
    /// anything since generation `since` (when the lookup began).
    fn remember(&self, key: &str, stat: Stat, dir: bool, since: u64) {
        // A file of several names changes through the others: never kept.
        if self.ttl().is_zero() || (!dir && stat.nlink > 1) {
            return;
        }
        let mut stats = lock(&self.stats);
        if self.generation.load(Ordering::SeqCst) == since {
            stats.insert(key.to_owned(), (std::time::Instant::now(), stat, dir));
        }
    }

    /// Forgets what `key` was found to be: this mount changed it. A lookup in flight
    /// meanwhile keeps nothing.
    fn forget_stat(&self, key: &str) {
        let key = key.trim_end_matches('/');
        let mut stats = lock(&self.stats);
        self.generation.fetch_add(1, Ordering::SeqCst);
        stats.remove(key);
    }

    async fn stat_uncached(&self, key: &str, dir_hint: bool) -> Result<(Stat, bool), Errno> {
        // One listing says both whether the directory has a marker (the first key under its
        // prefix is the marker itself) and whether it holds anything. It runs beside the
        // object's lookup: a name that is neither costs one round trip, not two.
        let marker = names::dir_prefix(key);
        let query = ListQuery {
            prefix: marker.clone(),
            delimiter: None,
            after: None,
            limit: 1,
        };
        let (object, page) = if dir_hint {
            (None, self.buckets.list(self.bucket(), &query).await)
        } else {
            let (object, page) = tokio::join!(
                self.buckets.head(self.bucket(), key),
                self.buckets.list(self.bucket(), &query)
            );
            (Some(object), page)
        };
        match object {
            Some(Ok(entry)) => return Ok((self.stat_of_linked(&entry).await?, false)),
            Some(Err(BucketError::NoSuchKey)) | None => {}
            Some(Err(other)) => return Err(errno_of(&other)),
        }
        let page = page.map_err(|e| errno_of(&e))?;
        if let Some((first, entry)) = page.entries.first() {
            if *first == marker {
                return Ok((self.stat_of_entry(entry, true), true));
            }
            let when = Time::from_ms(entry.modified_ms);
            return Ok((
                Stat {
                    attrs: Attrs::implicit_dir(self.options.owner, when),
                    size: 0,
                    nlink: 2,
                    group: 0,
                },
                true,
            ));
        }
        if dir_hint {
            // Known as a directory, gone as one: maybe an object now.
            return match self.buckets.head(self.bucket(), key).await {
                Ok(entry) => Ok((self.stat_of_linked(&entry).await?, false)),
                Err(error) => Err(errno_of(&error)),
            };
        }
        Err(libc::ENOENT)
    }

    async fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let key = self.child(parent, name)?;
        let (folder, leaf) = key.rsplit_once('/').unwrap_or(("", &key));
        if self.known_absent(folder, leaf) {
            return Err(libc::ENOENT);
        }
        let (stat, dir) = self.stat(&key, false).await?;
        let ino = lock(&self.nodes).ino_for(&key, dir, stat.group, true);
        Ok(self.file_attr(ino, &stat))
    }

    async fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        // An open file answers for itself, also once its key is unlinked or replaced.
        if let Some(file) = self.open_file_of(ino) {
            let stat = self.open_stat(&*file.lock().await).await?;
            return Ok(self.file_attr(ino, &stat));
        }
        let (key, dir) = self.key_of(ino)?;
        let (stat, _) = self.stat(&key, dir).await?;
        Ok(self.file_attr(ino, &stat))
    }

    /// The attributes of an open file: its metadata and size as written here, and its count
    /// of names (none left once its key was unlinked, but for its other links).
    async fn open_stat(&self, file: &OpenFile) -> Result<Stat, Errno> {
        let links = file.base().and_then(|b| b.links.as_deref());
        let alone = if file.unlinked { 0 } else { 1 };
        Ok(Stat {
            attrs: Attrs::of_object(&file.meta.metadata, now_ms(), false, self.options.owner),
            size: file.size,
            nlink: self.names_of(links, alone).await?,
            group: group_hash(links),
        })
    }

    /// Every entry of directory `key`: name, kind and key; keys that are no names are
    /// skipped with one warning each.
    async fn list_dir(
        &self,
        key: &str,
    ) -> Result<Vec<(String, Kind, String, Option<Stat>)>, Errno> {
        let prefix = names::dir_prefix(key);
        let since = self.generation.load(Ordering::SeqCst);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut after = None;
        loop {
            let query = ListQuery {
                prefix: prefix.clone(),
                delimiter: Some("/".into()),
                after: after.take(),
                limit: LIST_PAGE,
            };
            let page = self
                .buckets
                .list(self.bucket(), &query)
                .await
                .map_err(|e| errno_of(&e))?;
            for (object, entry) in &page.entries {
                match names::listed_object(&prefix, object) {
                    Listed::Object(name) => {
                        let stat = self.stat_of_entry(entry, false);
                        self.remember(object, stat, false, since);
                        seen.insert(name.to_owned());
                        out.push((name.to_owned(), stat.attrs.kind, object.clone(), Some(stat)));
                    }
                    Listed::Marker | Listed::Dir(_) => {}
                    Listed::Skip(why) => self.warn_once(object, why),
                }
            }
            for common in &page.prefixes {
                match names::listed_prefix(&prefix, common) {
                    Listed::Dir(name) if seen.contains(name) => {
                        self.warn_once(common, NameError::Invalid);
                    }
                    Listed::Dir(name) => {
                        let child = common.trim_end_matches('/').to_owned();
                        out.push((name.to_owned(), Kind::Dir, child, None));
                    }
                    Listed::Skip(why) => self.warn_once(common, why),
                    _ => {}
                }
            }
            match (page.truncated, page.last) {
                (true, Some(last)) => after = Some(last),
                _ => break,
            }
        }
        // Files created here and not committed yet are in the folder too.
        for child in self.created_under(&prefix) {
            let name = &child[prefix.len()..];
            if name.contains('/') || seen.contains(name) {
                continue;
            }
            let ino = lock(&self.nodes).by_key.get(&child).copied();
            if let Some(file) = ino.and_then(|ino| self.open_file_of(ino)) {
                let stat = self.open_stat(&*file.lock().await).await?;
                out.push((name.to_owned(), Kind::File, child.clone(), Some(stat)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn warn_once(&self, key: &str, why: NameError) {
        if lock(&self.warned).insert(key.to_owned()) {
            tracing::warn!(
                key,
                ?why,
                "a key that is no file name is left out of the mount"
            );
        }
    }

    async fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        let (key, _) = self.key_of(ino)?;
        let parent_key = names::parent_of(&key).to_owned();
        let (began, since) = (
            std::time::Instant::now(),
            self.generation.load(Ordering::SeqCst),
        );
        let listed = self.list_dir(&key).await?;
        // Known only when nothing changed here meanwhile (a change the listing missed would
        // be forgotten).
        if self.generation.load(Ordering::SeqCst) == since {
            let names = listed.iter().map(|(name, ..)| name.clone()).collect();
            self.folder_known(&key, names, began);
        }
        let mut nodes = lock(&self.nodes);
        let parent = if ino == ROOT {
            ROOT
        } else {
            nodes.ino_of(&parent_key, true, false)
        };
        let dot = |ino, name: &str| DirEntry {
            ino,
            kind: FileType::Directory,
            name: name.to_owned(),
            key: String::new(),
            stat: None,
        };
        let mut entries = vec![dot(ino, "."), dot(parent, "..")];
        for (name, kind, child, stat) in listed {
            let group = stat.map_or(0, |s| s.group);
            let child_ino = nodes.ino_for(&child, kind == Kind::Dir, group, false);
            entries.push(DirEntry {
                ino: child_ino,
                kind: file_type(kind),
                name,
                key: child,
                stat,
            });
        }
        drop(nodes);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Open::Dir(entries));
        Ok(fh)
    }

    /// Entries of open directory `fh` from `offset` with their attributes, as many as
    /// `reply` holds. Each entry it takes counts as a lookup (the kernel keeps its inode). A
    /// directory's attributes are not listed (its marker is not in the listing): they go with
    /// a zero timeout, so the kernel asks again. A file open here shows its open state.
    async fn readdirplus(
        &self,
        fh: u64,
        offset: usize,
        mut reply: ReplyDirectoryPlus,
    ) -> Result<ReplyDirectoryPlus, (ReplyDirectoryPlus, Errno)> {
        const BATCH: usize = 256;
        let batch: Vec<DirEntry> = match lock(&self.handles).get(&fh) {
            Some(Open::Dir(entries)) => entries.iter().skip(offset).take(BATCH).cloned().collect(),
            _ => return Err((reply, libc::EBADF)),
        };
        for (i, entry) in batch.into_iter().enumerate() {
            let stat = match (entry.stat, self.open_file_of(entry.ino)) {
                (Some(_), Some(file)) => match self.open_stat(&*file.lock().await).await {
                    Ok(stat) => Some(stat),
                    Err(errno) => return Err((reply, errno)),
                },
                (stat, _) => stat,
            };
            let (attr, ttl) = match &stat {
                Some(stat) => {
                    let attr = self.file_attr(entry.ino, stat);
                    (attr, self.ttl_of(&attr))
                }
                None => {
                    let dir = Stat {
                        attrs: Attrs::implicit_dir(self.options.owner, self.started),
                        size: 0,
                        nlink: 2,
                        group: 0,
                    };
                    (self.file_attr(entry.ino, &dir), Duration::ZERO)
                }
            };
            if reply.add(
                entry.ino,
                (offset + i + 1) as i64,
                &entry.name,
                &ttl,
                &attr,
                0,
            ) {
                break;
            }
            if entry.name != "." && entry.name != ".." {
                let dir = entry.kind == FileType::Directory;
                lock(&self.nodes).count_lookup(entry.ino, &entry.key, dir);
            }
        }
        Ok(reply)
    }

    /// The open state of file `ino` (`key`), made from its entry when not open yet.
    async fn open_state(&self, ino: u64, key: &str) -> Result<Arc<AsyncMutex<OpenFile>>, Errno> {
        if let Some(file) = self.open_file_of(ino) {
            return Ok(file);
        }
        let base = match self.buckets.get(self.bucket(), key).await {
            Ok(found) => Some(found),
            Err(BucketError::NoSuchKey) => None,
            Err(other) => return Err(errno_of(&other)),
        };
        let file = Arc::new(AsyncMutex::new(OpenFile::new(
            &self.info.id,
            key.to_owned(),
            base,
        )));
        Ok(lock(&self.files).entry(ino).or_insert(file).clone())
    }

    async fn open(&self, ino: u64) -> Result<u64, Errno> {
        let (key, _) = self.key_of(ino)?;
        loop {
            let file = self.open_state(ino, &key).await?;
            if self.hold(ino, &file).await {
                return Ok(self.handle(ino, file));
            }
        }
    }

    /// Counts a handle on `file` (the open state of `ino`) unless its last handle was
    /// released meanwhile and another state took its place; whether it did. A state whose
    /// last release took it out of the table goes back in. Counting and the release's
    /// removal both happen under the state's lock.
    async fn hold(&self, ino: u64, file: &Arc<AsyncMutex<OpenFile>>) -> bool {
        let mut state = file.lock().await;
        let mut files = lock(&self.files);
        match files.get(&ino) {
            Some(current) if !Arc::ptr_eq(current, file) => return false,
            Some(_) => {}
            None => {
                files.insert(ino, file.clone());
            }
        }
        state.opens += 1;
        true
    }

    /// A new handle on `file` (of `ino`).
    fn handle(&self, ino: u64, file: Arc<AsyncMutex<OpenFile>>) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Open::File(ino, file));
        fh
    }

    fn file_of(&self, fh: u64) -> Result<Arc<AsyncMutex<OpenFile>>, Errno> {
        match lock(&self.handles).get(&fh) {
            Some(Open::File(_, file)) => Ok(file.clone()),
            _ => Err(libc::EBADF),
        }
    }

    async fn read(&self, fh: u64, offset: u64, len: u64) -> Result<bytes::Bytes, Errno> {
        let file = self.file_of(fh)?;
        let mut file = file.lock().await;
        file.read(&self.buckets, offset, len).await
    }

    async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let file = self.file_of(fh)?;
        let mut file = file.lock().await;
        file.write(&self.buckets, offset, data).await?;
        let mut attrs = Attrs::of_object(&file.meta.metadata, now_ms(), false, self.options.owner);
        attrs.mtime = Time::now();
        attrs.ctime = attrs.mtime;
        attrs.write(&mut file.meta.metadata);
        Ok(data.len() as u32)
    }

    /// `fallocate(2)`: mode 0 makes the file at least `offset + length` bytes (zeros, held
    /// as holes until written); `FALLOC_FL_PUNCH_HOLE` and `FALLOC_FL_ZERO_RANGE` make the
    /// range zeros; `FALLOC_FL_KEEP_SIZE` keeps the size. Other modes are not supported.
    async fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        self.refuse_if_read_only()?;
        if mode & !(KEEP | PUNCH | ZERO) != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        if mode & PUNCH != 0 && (mode & KEEP == 0 || mode & ZERO != 0) {
            return Err(libc::EINVAL);
        }
        if length == 0 {
            return Err(libc::EINVAL);
        }
        let end = offset.checked_add(length).ok_or(libc::EFBIG)?;
        let file = self.file_of(fh)?;
        let mut file = file.lock().await;
        let grows = mode & KEEP == 0 && end > file.size;
        if grows {
            let (total, free) = self.statfs().await;
            if total > 0 && end - file.size > free {
                return Err(libc::ENOSPC);
            }
        }
        if mode & (PUNCH | ZERO) != 0 {
            let zero_end = if mode & KEEP != 0 {
                end.min(file.size)
            } else {
                end
            };
            let zeros = vec![0u8; 1 << 20];
            let mut at = offset;
            while at < zero_end {
                let take = (zero_end - at).min(zeros.len() as u64);
                file.write(&self.buckets, at, &zeros[..take as usize])
                    .await?;
                at += take;
            }
        }
        if grows && end > file.size {
            file.truncate(end).await?;
        }
        if grows || mode & (PUNCH | ZERO) != 0 {
            let mut attrs =
                Attrs::of_object(&file.meta.metadata, now_ms(), false, self.options.owner);
            attrs.mtime = Time::now();
            attrs.ctime = attrs.mtime;
            attrs.write(&mut file.meta.metadata);
            file.meta_changed = true;
        }
        Ok(())
    }

    async fn flush(&self, fh: u64) -> Result<(), Errno> {
        let file = self.file_of(fh)?;
        let mut file = file.lock().await;
        self.commit_file(&mut file).await
    }

    /// Commits what was written to `file` and its metadata; a file created here is in the
    /// index from then on.
    async fn commit_file(&self, file: &mut OpenFile) -> Result<(), Errno> {
        self.forget_stat(&file.key);
        let committed = file.commit(&self.buckets, self.bucket()).await;
        self.forget_stat(&file.key);
        if file.base().is_some() || file.unlinked {
            lock(&self.created).remove(&file.key);
        }
        committed
    }

    /// Commits the file created here as `key`, if its first commit is still to come.
    async fn commit_created(&self, key: &str) -> Result<(), Errno> {
        if !lock(&self.created).contains(key) {
            return Ok(());
        }
        let ino = lock(&self.nodes).by_key.get(key).copied();
        match ino.and_then(|ino| self.open_file_of(ino)) {
            Some(file) => self.commit_file(&mut *file.lock().await).await,
            None => {
                lock(&self.created).remove(key);
                Ok(())
            }
        }
    }

    /// Keys under folder `prefix` (with its slash) of files created here and not committed.
    fn created_under(&self, prefix: &str) -> Vec<String> {
        lock(&self.created)
            .range(prefix.to_owned()..)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    async fn release(&self, fh: u64) -> Result<(), Errno> {
        let (ino, file) = match lock(&self.handles).remove(&fh) {
            Some(Open::File(ino, file)) => (ino, file),
            _ => return Err(libc::EBADF),
        };
        let mut state = file.lock().await;
        let committed = self.commit_file(&mut state).await;
        state.opens = state.opens.saturating_sub(1);
        if state.opens == 0 {
            if state.unlinked {
                state.discard(&self.buckets).await;
                if let Some((id, holder)) = state.held.take() {
                    if let Err(error) = self.buckets.release(self.bucket(), &id, &holder).await {
                        tracing::warn!(key = %state.key, %error, "releasing an unlinked file's stripes failed; they stay");
                    }
                }
            }
            let mut files = lock(&self.files);
            if files
                .get(&ino)
                .is_some_and(|current| Arc::ptr_eq(current, &file))
            {
                files.remove(&ino);
            }
        }
        committed
    }

    /// Flushes every open file (before an unmount).
    pub async fn flush_all(&self) {
        let files: Vec<Arc<AsyncMutex<OpenFile>>> = lock(&self.files).values().cloned().collect();
        for file in files {
            let mut file = file.lock().await;
            if let Err(errno) = self.commit_file(&mut file).await {
                tracing::error!(key = %file.key, errno, "flushing an open file at unmount failed");
            }
        }
    }

    /// The owner of a new entry made by `req` in directory `parent` (a set-group-ID
    /// directory passes its group on), and whether it passes set-group-ID on.
    async fn new_owner(&self, uid: u32, gid: u32, parent: u64) -> Result<(Owner, bool), Errno> {
        let (parent_key, dir) = self.key_of(parent)?;
        let (stat, _) = self.stat(&parent_key, dir).await?;
        if stat.attrs.perm & 0o2000 != 0 {
            Ok((
                Owner {
                    uid,
                    gid: stat.attrs.gid,
                },
                true,
            ))
        } else {
            Ok((Owner { uid, gid }, false))
        }
    }

    /// Links an object of `attrs` holding `data` as `key`, only if `key` is absent.
    async fn put_small(
        &self,
        key: &str,
        attrs: &Attrs,
        data: &[u8],
        condition: PutCondition,
    ) -> Result<Entry, Errno> {
        let mut meta = ObjectMeta::default();
        attrs.write(&mut meta.metadata);
        let entry = Entry {
            inline: !data.is_empty(),
            etag: md5_hex(data),
            size: data.len() as u64,
            ..empty_entry(meta)
        };
        let inline = (!data.is_empty()).then(|| Bytes::copy_from_slice(data));
        self.forget_stat(key);
        self.forget_stat(key.trim_end_matches('/'));
        self.buckets
            .put_entry(self.bucket(), key, entry.clone(), inline, &condition)
            .await
            .map_err(|e| errno_of(&e))?;
        Ok(entry)
    }

    fn refuse_if_read_only(&self) -> Result<(), Errno> {
        if self.options.read_only {
            Err(libc::EROFS)
        } else {
            Ok(())
        }
    }

    /// Makes entry `name` of `parent` of `kind` (not a directory), empty or holding `data`.
    #[allow(clippy::too_many_arguments)]
    async fn make(
        &self,
        uid: u32,
        gid: u32,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        perm: u32,
        rdev: u32,
        data: &[u8],
    ) -> Result<(u64, FileAttr, Entry), Errno> {
        self.refuse_if_read_only()?;
        let key = self.child(parent, name)?;
        // The kernel looked the name up first; the link below is refused if an object took
        // it since, and a directory of that name is checked from the cache when known.
        if lock(&self.stats).get(&key).is_some_and(|(_, _, dir)| *dir) {
            return Err(libc::EEXIST);
        }
        let (owner, _) = self.new_owner(uid, gid, parent).await?;
        let mut attrs = Attrs::new(kind, perm, owner);
        attrs.rdev = rdev;
        let entry = self
            .put_small(&key, &attrs, data, PutCondition::Absent)
            .await?;
        self.entry_came(&key);
        let ino = lock(&self.nodes).ino_of(&key, false, true);
        let attr = self.file_attr(ino, &self.stat_of_entry(&entry, false));
        Ok((ino, attr, entry))
    }

    /// Makes file `name` in `parent`, open. It is linked by its first commit (the first
    /// close or `fsync`), with its first bytes: one index write for a small file. Meanwhile
    /// it is this mount's alone (close-to-open), listed with its folder.
    async fn create(
        &self,
        uid: u32,
        gid: u32,
        parent: u64,
        name: &OsStr,
        perm: u32,
    ) -> Result<(FileAttr, u64), Errno> {
        self.refuse_if_read_only()?;
        let key = self.child(parent, name)?;
        // The kernel looked the name up first; a directory of that name is checked from the
        // cache when known.
        if lock(&self.stats).get(&key).is_some_and(|(_, _, dir)| *dir) {
            return Err(libc::EEXIST);
        }
        let (owner, _) = self.new_owner(uid, gid, parent).await?;
        let mut meta = ObjectMeta::default();
        Attrs::new(Kind::File, perm, owner).write(&mut meta.metadata);
        let fresh = OpenFile::created(&self.info.id, key.clone(), meta);
        let stat = self.open_stat(&fresh).await?;
        let fresh = Arc::new(AsyncMutex::new(fresh));
        self.forget_stat(&key);
        lock(&self.created).insert(key.clone());
        self.entry_came(&key);
        let ino = lock(&self.nodes).ino_of(&key, false, true);
        let attr = self.file_attr(ino, &stat);
        loop {
            let file = lock(&self.files)
                .entry(ino)
                .or_insert(fresh.clone())
                .clone();
            if self.hold(ino, &file).await {
                return Ok((attr, self.handle(ino, file)));
            }
        }
    }

    async fn mkdir(
        &self,
        uid: u32,
        gid: u32,
        parent: u64,
        name: &OsStr,
        perm: u32,
    ) -> Result<FileAttr, Errno> {
        self.refuse_if_read_only()?;
        let key = self.child(parent, name)?;
        if self.stat(&key, false).await.is_ok() {
            return Err(libc::EEXIST);
        }
        let (owner, setgid) = self.new_owner(uid, gid, parent).await?;
        let perm = if setgid { perm | 0o2000 } else { perm };
        let attrs = Attrs::new(Kind::Dir, perm, owner);
        let entry = self
            .put_small(&names::dir_prefix(&key), &attrs, &[], PutCondition::Absent)
            .await?;
        self.entry_came(&key);
        self.folder_known(&key, HashSet::new(), std::time::Instant::now());
        let ino = lock(&self.nodes).ino_of(&key, true, true);
        Ok(self.file_attr(ino, &self.stat_of_entry(&entry, true)))
    }

    async fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        self.refuse_if_read_only()?;
        let key = self.child(parent, name)?;
        self.commit_created(&key).await?;
        self.forget_stat(&key);
        let links = match self.buckets.head(self.bucket(), &key).await {
            Ok(entry) => entry.links,
            Err(BucketError::NoSuchKey) => return Err(libc::ENOENT),
            Err(other) => return Err(errno_of(&other)),
        };
        self.keep_if_open(&key).await?;
        self.buckets
            .delete(self.bucket(), &key)
            .await
            .map_err(|e| errno_of(&e))?;
        self.entry_went(&key);
        let ino = lock(&self.nodes).by_key.get(&key).copied();
        lock(&self.nodes).unlink(&key);
        self.forget_stat(&key);
        // A file with other names lost one: its change time moves (POSIX).
        if let (Some(ino), Some(_)) = (ino, links) {
            let named = lock(&self.nodes)
                .key(ino)
                .is_some_and(|(k, _)| !k.starts_with('\0'));
            if named {
                self.touch_ctime(ino).await;
            }
        }
        Ok(())
    }

    async fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        self.refuse_if_read_only()?;
        let key = self.child(parent, name)?;
        self.forget_stat(&key);
        let (_, dir) = self.stat(&key, true).await?;
        self.forget_stat(&key);
        if !dir {
            return Err(libc::ENOTDIR);
        }
        let marker = names::dir_prefix(&key);
        if !self.created_under(&marker).is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        let query = ListQuery {
            prefix: marker.clone(),
            delimiter: None,
            after: Some(marker.clone()),
            limit: 1,
        };
        let page = self
            .buckets
            .list(self.bucket(), &query)
            .await
            .map_err(|e| errno_of(&e))?;
        if !page.entries.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        self.buckets
            .delete(self.bucket(), &marker)
            .await
            .map_err(|e| errno_of(&e))?;
        self.entry_went(&key);
        lock(&self.folders_known).remove(&key);
        lock(&self.nodes).unlink(&key);
        self.forget_stat(&key);
        Ok(())
    }

    async fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let (key, _) = self.key_of(ino)?;
        let (entry, inline) = self
            .buckets
            .get(self.bucket(), &key)
            .await
            .map_err(|e| errno_of(&e))?;
        let size = entry.size;
        let chunks: Vec<Bytes> =
            futures::TryStreamExt::try_collect(self.buckets.read_data(&entry, inline, 0..size))
                .await
                .map_err(|e| errno_of(&e))?;
        Ok(chunks.concat())
    }

    async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        self.refuse_if_read_only()?;
        const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
        if flags & !NOREPLACE != 0 {
            return Err(libc::EINVAL);
        }
        let from = self.child(parent, name)?;
        let to = self.child(new_parent, new_name)?;
        let (_, from_dir) = self.stat(&from, false).await?;
        let target = match self.stat(&to, false).await {
            Ok((_, dir)) => Some(dir),
            Err(libc::ENOENT) => None,
            Err(other) => return Err(other),
        };
        if target.is_some() && flags & NOREPLACE != 0 {
            return Err(libc::EEXIST);
        }
        if from_dir && names::dir_prefix(&to).starts_with(&names::dir_prefix(&from)) {
            return Err(libc::EINVAL);
        }
        if target == Some(false) && !from_dir && self.same_inode(&from, &to).await? {
            // Two names of one file: POSIX says nothing happens.
            return Ok(());
        }
        match (from_dir, target) {
            (true, Some(false)) => return Err(libc::ENOTDIR),
            (false, Some(true)) => return Err(libc::EISDIR),
            (true, Some(true)) => {
                if !self.list_dir(&to).await?.is_empty() {
                    return Err(libc::ENOTEMPTY);
                }
                let _ = self
                    .buckets
                    .delete(self.bucket(), &names::dir_prefix(&to))
                    .await;
            }
            _ => {}
        }
        // An open file's pending bytes go to the old key first; it then follows its key.
        let ino = lock(&self.nodes).by_key.get(&from).copied();
        let open = ino.and_then(|ino| self.open_file_of(ino));
        if let Some(file) = &open {
            self.commit_file(&mut *file.lock().await).await?;
        }
        // So do those of files created under a directory and not committed yet.
        if from_dir {
            for key in self.created_under(&names::dir_prefix(&from)) {
                self.commit_created(&key).await?;
            }
        }
        // A file open under the target's name is replaced: it lives on for its handles, and
        // its writes no longer go to the key.
        if target == Some(false) {
            self.keep_if_open(&to).await?;
        }
        if from_dir {
            self.rename_tree(&from, &to).await?;
        } else {
            self.buckets
                .rename(self.bucket(), &from, &to)
                .await
                .map_err(|e| errno_of(&e))?;
        }
        self.entry_went(&from);
        if from_dir {
            lock(&self.folders_known).clear();
        }
        self.entry_came(&to);
        // Forgotten now (the checks above looked both up), and everything under a directory.
        self.forget_stat(&from);
        self.forget_stat(&to);
        if from_dir {
            lock(&self.stats).clear();
        }
        lock(&self.nodes).rename(&from, &to);
        if let Some(file) = open {
            file.lock().await.key = to.clone();
        }
        let files: Vec<Arc<AsyncMutex<OpenFile>>> = lock(&self.files).values().cloned().collect();
        let from_prefix = names::dir_prefix(&from);
        for file in files {
            let mut file = file.lock().await;
            if let Some(rest) = file.key.strip_prefix(&from_prefix) {
                file.key = format!("{}{rest}", names::dir_prefix(&to));
            }
        }
        Ok(())
    }

    /// Moves file `ino`'s change time to now (a name came or went), best effort: a failure
    /// is logged, the operation that caused it stands.
    async fn touch_ctime(&self, ino: u64) {
        let touched = self
            .change_meta(ino, &|attrs, _| {
                attrs.ctime = Time::now();
                Ok(())
            })
            .await;
        if let Err(errno) = touched {
            tracing::warn!(ino, errno, "moving a file's change time failed");
        }
    }

    /// Whether keys `a` and `b` are names of one file (hard links).
    async fn same_inode(&self, a: &str, b: &str) -> Result<bool, Errno> {
        let a = self.buckets.head(self.bucket(), a).await;
        let b = self.buckets.head(self.bucket(), b).await;
        Ok(match (a, b) {
            (Ok(a), Ok(b)) => a.links.is_some() && a.links == b.links,
            _ => false,
        })
    }

    /// A file open here under `key`, whose key is about to go: its stripes are held for it
    /// until its last close, and its writes no longer go to the key (but to another name of
    /// it, when it has one).
    async fn keep_if_open(&self, key: &str) -> Result<(), Errno> {
        let (ino, other) = {
            let nodes = lock(&self.nodes);
            (nodes.by_key.get(key).copied(), nodes.other_name(key))
        };
        let Some(file) = ino.and_then(|ino| self.open_file_of(ino)) else {
            return Ok(());
        };
        let mut file = file.lock().await;
        if file.unlinked {
            return Ok(());
        }
        if let Some(other) = other {
            // The file lives on under another name: its writes go there.
            if file.key == key {
                file.key = other;
            }
            return Ok(());
        }
        if file.base().is_some() && file.held.is_none() {
            let holder = format!("{}:{}", std::process::id(), tidepool_buckets::random_id());
            match self.buckets.hold(self.bucket(), key, &holder).await {
                Ok(id) => file.held = Some((id, holder)),
                // Nothing to hold: the key is gone or never got an entry.
                Err(BucketError::NoSuchKey) => {}
                Err(other) => return Err(errno_of(&other)),
            }
        }
        file.unlinked = true;
        lock(&self.created).remove(key);
        Ok(())
    }

    /// Makes `new_name` in `new_parent` another name of file `ino` (a hard link).
    async fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> Result<FileAttr, Errno> {
        self.refuse_if_read_only()?;
        let (from, dir) = self.key_of(ino)?;
        if dir {
            return Err(libc::EPERM);
        }
        let to = self.child(new_parent, new_name)?;
        if self.stat(&to, false).await.is_ok() {
            return Err(libc::EEXIST);
        }
        // An open file's pending bytes go first; its base then joins the link group.
        let open = self.open_file_of(ino);
        if let Some(file) = &open {
            let mut file = file.lock().await;
            if file.unlinked {
                return Err(libc::ENOENT);
            }
            self.commit_file(&mut file).await?;
        }
        self.forget_stat(&from);
        self.forget_stat(&to);
        let entry = match self.buckets.hard_link(self.bucket(), &from, &to).await {
            Ok(entry) => entry,
            Err(BucketError::PreconditionFailed) => return Err(libc::EEXIST),
            Err(other) => return Err(errno_of(&other)),
        };
        self.entry_came(&to);
        if let Some(file) = &open {
            file.lock().await.relinked(&entry);
        }
        let group = group_hash(entry.links.as_deref());
        let same = {
            let mut nodes = lock(&self.nodes);
            nodes.join_group(ino, group);
            nodes.ino_for(&to, false, group, true)
        };
        self.touch_ctime(same).await;
        self.getattr(same).await
    }

    /// Renames every key under directory `from` (its marker too) to under `to`: recorded
    /// first, so that a crash leaves it for the next mount to complete.
    async fn rename_tree(&self, from: &str, to: &str) -> Result<(), Errno> {
        self.buckets
            .rename_prefix(
                self.bucket(),
                &names::dir_prefix(from),
                &names::dir_prefix(to),
            )
            .await
            .map_err(|e| errno_of(&e))
    }

    /// Changes metadata of `ino` with `change`: through its open state when open (written
    /// with its bytes), else by relinking its entry (or directory marker) guarded on it.
    async fn change_meta(&self, ino: u64, change: &MetaChange) -> Result<FileAttr, Errno> {
        self.refuse_if_read_only()?;
        let (key, dir) = self.key_of(ino)?;
        self.forget_stat(&key);
        if !dir {
            if let Some(file) = self.open_file_of(ino) {
                let mut file = file.lock().await;
                let mut attrs =
                    Attrs::of_object(&file.meta.metadata, now_ms(), false, self.options.owner);
                change(&mut attrs, &mut file.meta.metadata)?;
                attrs.write(&mut file.meta.metadata);
                file.meta_changed = true;
                let stat = self.open_stat(&file).await?;
                return Ok(self.file_attr(ino, &stat));
            }
        }
        for _ in 0..8 {
            let (stat, is_dir) = self.stat(&key, dir).await?;
            let target = if is_dir {
                names::dir_prefix(&key)
            } else {
                key.clone()
            };
            if target.is_empty() {
                // The root has no marker to keep its attributes in.
                return Ok(self.file_attr(ino, &stat));
            }
            let (entry, inline, condition) = match self.buckets.get(self.bucket(), &target).await {
                Ok((entry, inline)) => {
                    let condition = PutCondition::Exactly(Box::new(entry.clone()));
                    (entry, inline, condition)
                }
                // A directory with no marker gets one.
                Err(BucketError::NoSuchKey) if is_dir => {
                    let mut meta = ObjectMeta::default();
                    stat.attrs.write(&mut meta.metadata);
                    (empty_entry(meta), None, PutCondition::Absent)
                }
                Err(other) => return Err(errno_of(&other)),
            };
            let mut attrs = Attrs::of_object(
                &entry.meta.metadata,
                entry.modified_ms,
                is_dir,
                self.options.owner,
            );
            let mut meta = entry.meta.clone();
            change(&mut attrs, &mut meta.metadata)?;
            attrs.write(&mut meta.metadata);
            let new = Entry {
                meta,
                ..entry.clone()
            };
            let linked = self
                .buckets
                .put_entry(self.bucket(), &target, new.clone(), inline, &condition)
                .await;
            self.forget_stat(&key);
            match linked {
                Ok(_) if is_dir => return Ok(self.file_attr(ino, &self.stat_of_entry(&new, true))),
                Ok(_) => return Ok(self.file_attr(ino, &self.stat_of_linked(&new).await?)),
                Err(BucketError::PreconditionFailed) => continue,
                Err(other) => return Err(errno_of(&other)),
            }
        }
        Err(libc::EAGAIN)
    }

    #[allow(clippy::too_many_arguments)]
    async fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        if let Some(size) = size {
            self.refuse_if_read_only()?;
            let (key, dir) = self.key_of(ino)?;
            if dir {
                return Err(libc::EISDIR);
            }
            self.forget_stat(&key);
            let file = self.open_state(ino, &key).await?;
            let mut state = file.lock().await;
            state.truncate(size).await?;
            let mut attrs =
                Attrs::of_object(&state.meta.metadata, now_ms(), false, self.options.owner);
            attrs.mtime = Time::now();
            attrs.ctime = attrs.mtime;
            attrs.write(&mut state.meta.metadata);
            if state.opens == 0 {
                let done = state.commit(&self.buckets, self.bucket()).await;
                let mut files = lock(&self.files);
                if files
                    .get(&ino)
                    .is_some_and(|current| Arc::ptr_eq(current, &file))
                {
                    files.remove(&ino);
                }
                drop(files);
                drop(state);
                self.forget_stat(&key);
                done?;
            }
        }
        if mode.is_none() && uid.is_none() && gid.is_none() && atime.is_none() && mtime.is_none() {
            return self.getattr(ino).await;
        }
        if mtime.is_some() {
            // Times set by hand win over the entries' changes before.
            if let Ok((key, true)) = self.key_of(ino) {
                lock(&self.folder_changes).remove(&key);
            }
        }
        self.change_meta(ino, &move |attrs, _| {
            if let Some(mode) = mode {
                attrs.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                attrs.uid = uid;
            }
            if let Some(gid) = gid {
                attrs.gid = gid;
            }
            if let Some(at) = atime {
                attrs.atime = time_of(at);
            }
            if let Some(at) = mtime {
                attrs.mtime = time_of(at);
            }
            attrs.ctime = Time::now();
            Ok(())
        })
        .await
    }

    async fn xattrs(&self, ino: u64) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Errno> {
        let (key, dir) = self.key_of(ino)?;
        if let Some(file) = self.open_file_of(ino) {
            return Ok(attrs::xattrs_of(&file.lock().await.meta.metadata));
        }
        let (_, is_dir) = self.stat(&key, dir).await?;
        let target = if is_dir { names::dir_prefix(&key) } else { key };
        match self.buckets.head(self.bucket(), &target).await {
            Ok(entry) => Ok(attrs::xattrs_of(&entry.meta.metadata)),
            Err(BucketError::NoSuchKey) => Ok(Default::default()),
            Err(other) => Err(errno_of(&other)),
        }
    }

    /// The cluster's raw capacity and free bytes, from the OSDs' last reports to the
    /// monitors (what any S3 client could store is this over the copies kept).
    async fn statfs(&self) -> (u64, u64) {
        let report = tokio::time::timeout(Duration::from_secs(10), async {
            self.mon.lock().await.report().await
        })
        .await;
        match report {
            Ok(Ok(report)) => report.osds.iter().fold((0, 0), |(total, free), (_, stat)| {
                (total + stat.total_bytes, free + stat.available_bytes)
            }),
            _ => (0, 0),
        }
    }
}

fn empty_entry(meta: ObjectMeta) -> Entry {
    Entry {
        size: 0,
        etag: md5_hex(&[]),
        modified_ms: now_ms(),
        meta,
        segments: Vec::new(),
        inline: false,
        part_sizes: Vec::new(),
        links: None,
        version_id: None,
    }
}

fn now_ms() -> u64 {
    tidepool_buckets::now_ms()
}

/// The file system handed to the kernel: each request is a task on `runtime`.
#[derive(Debug)]
pub struct TidepoolFs {
    core: Arc<Core>,
    runtime: tokio::runtime::Handle,
}

impl TidepoolFs {
    /// The file system over `core`, serving requests on `runtime`.
    pub fn new(core: Arc<Core>, runtime: tokio::runtime::Handle) -> TidepoolFs {
        TidepoolFs { core, runtime }
    }

    /// Runs `task` (which answers its request), counted and timed as `op`.
    fn spawn<F>(&self, op: &'static str, task: impl FnOnce(Arc<Core>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let start = std::time::Instant::now();
        let metrics = self.core.metrics.clone();
        let done = task(self.core.clone());
        self.runtime.spawn(async move {
            done.await;
            metrics.answered(op, start);
        });
    }

    /// Runs `task` and answers `reply` with its outcome.
    fn answer_empty<F>(
        &self,
        op: &'static str,
        reply: ReplyEmpty,
        task: impl FnOnce(Arc<Core>) -> F,
    ) where
        F: std::future::Future<Output = Result<(), Errno>> + Send + 'static,
    {
        self.spawn(op, |core| {
            let done = task(core);
            async move {
                match done.await {
                    Ok(()) => reply.ok(),
                    Err(errno) => reply.error(errno),
                }
            }
        });
    }

    /// Runs `task` and answers `reply` with the entry it made or found.
    fn answer_entry<F>(
        &self,
        op: &'static str,
        reply: ReplyEntry,
        task: impl FnOnce(Arc<Core>) -> F,
    ) where
        F: std::future::Future<Output = Result<FileAttr, Errno>> + Send + 'static,
    {
        self.spawn(op, |core| {
            let done = task(core.clone());
            async move {
                match done.await {
                    Ok(attr) => reply.entry(&core.ttl_of(&attr), &attr, 0),
                    Err(errno) => reply.error(errno),
                }
            }
        });
    }
}

impl Filesystem for TidepoolFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), c_int> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(4 << 20);
        // Listings carry attributes: `ls -l` of a big folder needs no lookup per file.
        let _ = config.add_capabilities(fuser::consts::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        self.answer_entry("lookup", reply, move |core| async move {
            core.lookup(parent, &name).await
        });
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        lock(&self.core.nodes).forget(ino, nlookup);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        self.spawn("getattr", |core| async move {
            match core.getattr(ino).await {
                Ok(attr) => reply.attr(&core.ttl_of(&attr), &attr),
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        self.spawn("setattr", |core| async move {
            match core.setattr(ino, mode, uid, gid, size, atime, mtime).await {
                Ok(attr) => reply.attr(&core.ttl_of(&attr), &attr),
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        self.spawn("readlink", |core| async move {
            match core.readlink(ino).await {
                Ok(target) => reply.data(&target),
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (uid, gid, name) = (req.uid(), req.gid(), name.to_owned());
        self.spawn("mknod", |core| async move {
            let Some(kind) = Kind::of_mode(mode).filter(|k| *k != Kind::Dir && *k != Kind::Symlink)
            else {
                return reply.error(libc::EINVAL);
            };
            match core
                .make(uid, gid, parent, &name, kind, mode & !umask, rdev, &[])
                .await
            {
                Ok((_, attr, _)) => reply.entry(&core.ttl_of(&attr), &attr, 0),
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (uid, gid, name) = (req.uid(), req.gid(), name.to_owned());
        self.answer_entry("mkdir", reply, move |core| async move {
            core.mkdir(uid, gid, parent, &name, mode & !umask).await
        });
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.answer_empty("unlink", reply, move |core| async move {
            core.unlink(parent, &name).await
        });
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.answer_empty("rmdir", reply, move |core| async move {
            core.rmdir(parent, &name).await
        });
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (uid, gid, name) = (req.uid(), req.gid(), link_name.to_owned());
        let target = target.as_os_str().as_bytes().to_vec();
        self.answer_entry("symlink", reply, move |core| async move {
            core.make(uid, gid, parent, &name, Kind::Symlink, 0o777, 0, &target)
                .await
                .map(|(_, attr, _)| attr)
        });
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.to_owned();
        self.answer_entry("link", reply, move |core| async move {
            core.link(ino, newparent, &newname).await
        });
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.answer_empty("rename", reply, move |core| async move {
            core.rename(parent, &name, newparent, &newname, flags).await
        });
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        self.spawn("open", |core| async move {
            if writes && core.options.read_only {
                return reply.error(libc::EROFS);
            }
            match core.open(ino).await {
                Ok(fh) => reply.opened(fh, 0),
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        self.spawn("read", |core| async move {
            match core.read(fh, offset.max(0) as u64, u64::from(size)).await {
                Ok(data) => {
                    core.metrics.read_bytes.inc_by(data.len() as u64);
                    reply.data(&data)
                }
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn("write", |core| async move {
            match core.write(fh, offset.max(0) as u64, &data).await {
                Ok(written) => {
                    core.metrics.written_bytes.inc_by(u64::from(written));
                    reply.written(written)
                }
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        self.answer_empty(
            "flush",
            reply,
            move |core| async move { core.flush(fh).await },
        );
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.answer_empty("release", reply, move |core| async move {
            core.release(fh).await
        });
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.answer_empty("fallocate", reply, move |core| async move {
            let (offset, length) = match (u64::try_from(offset), u64::try_from(length)) {
                (Ok(offset), Ok(length)) => (offset, length),
                _ => return Err(libc::EINVAL),
            };
            core.fallocate(fh, offset, length, mode).await
        });
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.answer_empty(
            "fsync",
            reply,
            move |core| async move { core.flush(fh).await },
        );
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        self.spawn("opendir", |core| async move {
            match core.opendir(ino).await {
                Ok(fh) => reply.opened(fh, 0),
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let handles = lock(&self.core.handles);
        let Some(Open::Dir(entries)) = handles.get(&fh) else {
            drop(handles);
            return reply.error(libc::EBADF);
        };
        for (i, entry) in entries.iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(entry.ino, (i + 1) as i64, entry.kind, &entry.name) {
                break;
            }
        }
        drop(handles);
        reply.ok();
    }

    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        reply: ReplyDirectoryPlus,
    ) {
        self.spawn("readdirplus", move |core| async move {
            match core.readdirplus(fh, offset.max(0) as usize, reply).await {
                Ok(reply) => reply.ok(),
                Err((reply, errno)) => reply.error(errno),
            }
        });
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        lock(&self.core.handles).remove(&fh);
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every directory change is durable when it returns.
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        self.spawn("statfs", |core| async move {
            let (total, free) = core.statfs().await;
            let blocks = total / u64::from(BLOCK);
            let bfree = free / u64::from(BLOCK);
            reply.statfs(
                blocks,
                bfree,
                bfree,
                u64::MAX / 2,
                u64::MAX / 2,
                BLOCK,
                names::NAME_MAX as u32,
                BLOCK,
            );
        });
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (name.to_string_lossy().into_owned(), value.to_vec());
        self.spawn("setxattr", |core| async move {
            if !name.starts_with("user.") {
                return reply.error(libc::EOPNOTSUPP);
            }
            let done = core
                .change_meta(ino, &move |_, meta| {
                    let mut set = attrs::xattrs_of(meta);
                    let exists = set.contains_key(&name);
                    if flags & libc::XATTR_CREATE != 0 && exists {
                        return Err(libc::EEXIST);
                    }
                    if flags & libc::XATTR_REPLACE != 0 && !exists {
                        return Err(libc::ENODATA);
                    }
                    set.insert(name.clone(), value.clone());
                    if attrs::set_xattrs(meta, &set) {
                        Ok(())
                    } else {
                        Err(libc::ENOSPC)
                    }
                })
                .await;
            match done {
                Ok(_) => reply.ok(),
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let name = name.to_string_lossy().into_owned();
        // Only `user.*` names are kept: the others (`ls -l` asks for `security.selinux` and
        // the ACLs of every file) are answered without a look at the index.
        if !name.starts_with("user.") {
            return reply.error(libc::ENODATA);
        }
        self.spawn("getxattr", |core| async move {
            match core.xattrs(ino).await {
                Ok(set) => match set.get(&name) {
                    Some(value) if size == 0 => reply.size(value.len() as u32),
                    Some(value) if value.len() <= size as usize => reply.data(value),
                    Some(_) => reply.error(libc::ERANGE),
                    None => reply.error(libc::ENODATA),
                },
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        self.spawn("listxattr", |core| async move {
            match core.xattrs(ino).await {
                Ok(set) => {
                    let mut list = Vec::new();
                    for name in set.keys() {
                        list.extend_from_slice(name.as_bytes());
                        list.push(0);
                    }
                    if size == 0 {
                        reply.size(list.len() as u32);
                    } else if list.len() <= size as usize {
                        reply.data(&list);
                    } else {
                        reply.error(libc::ERANGE);
                    }
                }
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn removexattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_string_lossy().into_owned();
        self.spawn("removexattr", |core| async move {
            let done = core
                .change_meta(ino, &move |_, meta| {
                    let mut set = attrs::xattrs_of(meta);
                    if set.remove(&name).is_none() {
                        return Err(libc::ENODATA);
                    }
                    attrs::set_xattrs(meta, &set);
                    Ok(())
                })
                .await;
            match done {
                Ok(_) => reply.ok(),
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let (uid, gid, name) = (req.uid(), req.gid(), name.to_owned());
        self.spawn("create", |core| async move {
            match core.create(uid, gid, parent, &name, mode & !umask).await {
                Ok((attr, fh)) => reply.created(&core.ttl_of(&attr), &attr, 0, fh, 0),
                Err(errno) => reply.error(errno),
            }
        });
    }
}
