//! A file's attributes and extended attributes as object metadata, pure: Tidepool writes
//! s3fs's names (`mode` decimal with the type bits, `uid`, `gid`, `mtime`, `atime`, `ctime`),
//! and reads s3fs's and rclone's forms. See docs/mount.md.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_bytes::ByteBuf;

/// Metadata names.
pub const MODE: &str = "mode";
pub const UID: &str = "uid";
pub const GID: &str = "gid";
pub const MTIME: &str = "mtime";
pub const ATIME: &str = "atime";
pub const CTIME: &str = "ctime";
pub const RDEV: &str = "rdev";
pub const XATTRS: &str = "xattrs";

/// The file type bits of a mode.
pub const S_IFMT: u32 = 0o170_000;

/// What kind of file an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    /// Its type bits in a mode.
    pub fn bits(self) -> u32 {
        match self {
            Kind::File => 0o100_000,
            Kind::Dir => 0o040_000,
            Kind::Symlink => 0o120_000,
            Kind::Fifo => 0o010_000,
            Kind::Socket => 0o140_000,
            Kind::CharDevice => 0o020_000,
            Kind::BlockDevice => 0o060_000,
        }
    }

    /// The kind a mode's type bits name (`None`: none, or not a type).
    pub fn of_mode(mode: u32) -> Option<Kind> {
        [
            Kind::File,
            Kind::Dir,
            Kind::Symlink,
            Kind::Fifo,
            Kind::Socket,
            Kind::CharDevice,
            Kind::BlockDevice,
        ]
        .into_iter()
        .find(|kind| kind.bits() == mode & S_IFMT)
    }
}

/// A time: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    /// Of milliseconds since the epoch.
    pub fn from_ms(ms: u64) -> Time {
        Time {
            secs: (ms / 1000) as i64,
            nanos: (ms % 1000) as u32 * 1_000_000,
        }
    }

    /// Now.
    pub fn now() -> Time {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            secs: since.as_secs() as i64,
            nanos: since.subsec_nanos(),
        }
    }

    /// Parses seconds (`1700000000`, `1700000000.5`: s3fs and rclone) or RFC 3339
    /// (`2023-11-14T22:13:20.5Z`: rclone's metadata).
    pub fn parse(text: &str) -> Option<Time> {
        let text = text.trim();
        if let Ok(when) = chrono::DateTime::parse_from_rfc3339(text) {
            return Some(Time {
                secs: when.timestamp(),
                nanos: when.timestamp_subsec_nanos(),
            });
        }
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let secs: i64 = whole.parse().ok()?;
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: String = fraction
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        let nanos: u32 = digits.parse().ok()?;
        if secs < 0 && nanos > 0 {
            return None;
        }
        Some(Time { secs, nanos })
    }

    /// As Tidepool writes it: seconds, and nanoseconds when there are any.
    pub fn format(self) -> String {
        if self.nanos == 0 {
            self.secs.to_string()
        } else {
            format!("{}.{:09}", self.secs, self.nanos)
        }
    }
}

/// Parses a mode: decimal as s3fs writes it (`33188`), or octal as rclone does (`0100644`,
/// or six octal digits such as `100644`). `None` when neither gives a mode.
pub fn parse_mode(text: &str) -> Option<u32> {
    let text = text.trim();
    let octal_digits = !text.is_empty() && text.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let octal = octal_digits && (text.starts_with('0') || text.len() >= 6);
    let mode = if octal {
        u32::from_str_radix(text, 8).ok()?
    } else {
        text.parse().ok()?
    };
    (mode <= 0o177_777).then_some(mode)
}

/// An entry's attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// A device node's device.
    pub rdev: u32,
}

/// What an entry's attributes are when its metadata does not say: the mount's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Attrs {
    /// A new entry of `kind` with mode bits `perm`, owned by `owner`, made now.
    pub fn new(kind: Kind, perm: u32, owner: Owner) -> Attrs {
        let now = Time::now();
        Attrs {
            kind,
            perm: (perm & 0o7777) as u16,
            uid: owner.uid,
            gid: owner.gid,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
        }
    }

    /// The attributes of an object (or directory marker, when `dir`) with user metadata
    /// `meta`, last modified at `modified_ms`: what the metadata says, else regular files
    /// of 0644 and directories of 0755 owned by `owner`, with every time its modification.
    pub fn of_object(
        meta: &BTreeMap<String, String>,
        modified_ms: u64,
        dir: bool,
        owner: Owner,
    ) -> Attrs {
        let get = |name: &str| meta.get(name).map(String::as_str);
        let mode = get(MODE).and_then(parse_mode);
        let kind = if dir {
            Kind::Dir
        } else {
            mode.and_then(Kind::of_mode)
                .filter(|k| *k != Kind::Dir)
                .unwrap_or(Kind::File)
        };
        let perm = mode.map_or(if dir { 0o755 } else { 0o644 }, |m| m & 0o7777);
        let number = |name: &str, default: u32| {
            get(name)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        let modified = Time::from_ms(modified_ms);
        let time = |name: &str| get(name).and_then(Time::parse);
        let mtime = time(MTIME).unwrap_or(modified);
        Attrs {
            kind,
            perm: perm as u16,
            uid: number(UID, owner.uid),
            gid: number(GID, owner.gid),
            atime: time(ATIME).unwrap_or(mtime),
            mtime,
            ctime: time(CTIME).unwrap_or(mtime),
            rdev: number(RDEV, 0),
        }
    }

    /// The directory an S3 prefix with no marker shows as.
    pub fn implicit_dir(owner: Owner, when: Time) -> Attrs {
        Attrs {
            kind: Kind::Dir,
            perm: 0o755,
            uid: owner.uid,
            gid: owner.gid,
            atime: when,
            mtime: when,
            ctime: when,
            rdev: 0,
        }
    }

    /// The full `st_mode`: type bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.bits() | u32::from(self.perm)
    }

    /// Writes them into user metadata `meta`.
    pub fn write(&self, meta: &mut BTreeMap<String, String>) {
        meta.insert(MODE.into(), self.mode().to_string());
        meta.insert(UID.into(), self.uid.to_string());
        meta.insert(GID.into(), self.gid.to_string());
        meta.insert(MTIME.into(), self.mtime.format());
        meta.insert(ATIME.into(), self.atime.format());
        meta.insert(CTIME.into(), self.ctime.format());
        if matches!(self.kind, Kind::CharDevice | Kind::BlockDevice) {
            meta.insert(RDEV.into(), self.rdev.to_string());
        } else {
            meta.remove(RDEV);
        }
    }
}

/// The most bytes of extended attributes (names and values) one entry keeps: a value may be
/// as large as Linux allows one (64 KiB), and the whole set lives in the index entry.
pub const XATTRS_BYTES_MAX: usize = 64 << 10;

/// The extended attributes kept in user metadata `meta` (none when it holds none, or holds
/// ones that do not decode).
pub fn xattrs_of(meta: &BTreeMap<String, String>) -> BTreeMap<String, Vec<u8>> {
    let Some(text) = meta.get(XATTRS) else {
        return BTreeMap::new();
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|raw| rmp_serde::from_slice::<BTreeMap<String, ByteBuf>>(&raw).ok());
    match decoded {
        Some(map) => map.into_iter().map(|(k, v)| (k, v.into_vec())).collect(),
        None => {
            tracing::warn!("extended attributes that do not decode are ignored");
            BTreeMap::new()
        }
    }
}

/// Keeps `xattrs` in user metadata `meta`; `false` (and `meta` unchanged) when they exceed
/// [`XATTRS_BYTES_MAX`].
pub fn set_xattrs(meta: &mut BTreeMap<String, String>, xattrs: &BTreeMap<String, Vec<u8>>) -> bool {
    let bytes: usize = xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > XATTRS_BYTES_MAX {
        return false;
    }
    if xattrs.is_empty() {
        meta.remove(XATTRS);
        return true;
    }
    let map: BTreeMap<&String, ByteBuf> = xattrs
        .iter()
        .map(|(k, v)| (k, ByteBuf::from(v.clone())))
        .collect();
    let raw = rmp_serde::to_vec(&map).expect("a map encodes");
    meta.insert(
        XATTRS.into(),
        base64::engine::general_purpose::STANDARD.encode(raw),
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Owner = Owner {
        uid: 1000,
        gid: 100,
    };

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Rule: attributes written are read back the same.
    #[test]
    fn attributes_round_trip() {
        let mut attrs = Attrs::new(Kind::Symlink, 0o4755, OWNER);
        attrs.mtime = Time {
            secs: 1_700_000_000,
            nanos: 123_456_789,
        };
        let mut m = BTreeMap::new();
        attrs.write(&mut m);
        assert_eq!(Attrs::of_object(&m, 0, false, OWNER), attrs);
        let mut device = Attrs::new(Kind::CharDevice, 0o600, OWNER);
        device.rdev = 0x0103;
        device.write(&mut m);
        assert_eq!(Attrs::of_object(&m, 0, false, OWNER), device);
    }

    /// Rule: s3fs's decimal modes and whole-second times, rclone's octal modes, fractional
    /// and RFC 3339 times are read; an object with no metadata is a 0644 file of the
    /// mount's owner modified at its Last-Modified.
    #[test]
    fn other_tools_metadata_is_read() {
        let s3fs = meta(&[
            ("mode", "33261"),
            ("uid", "0"),
            ("gid", "0"),
            ("mtime", "1600000000"),
        ]);
        let attrs = Attrs::of_object(&s3fs, 5, false, OWNER);
        assert_eq!((attrs.kind, attrs.perm, attrs.uid), (Kind::File, 0o755, 0));
        assert_eq!(
            attrs.mtime,
            Time {
                secs: 1_600_000_000,
                nanos: 0
            }
        );
        let rclone = meta(&[("mode", "0100640"), ("mtime", "2023-11-14T22:13:20.5Z")]);
        let attrs = Attrs::of_object(&rclone, 5, false, OWNER);
        assert_eq!((attrs.kind, attrs.perm), (Kind::File, 0o640));
        assert_eq!(
            attrs.mtime,
            Time {
                secs: 1_700_000_000,
                nanos: 500_000_000
            }
        );
        assert_eq!(parse_mode("100644"), Some(0o100_644));
        assert_eq!(parse_mode("16877"), Some(0o040_755));
        assert_eq!(parse_mode("junk"), None);
        assert_eq!(
            Time::parse("1700000000.25"),
            Some(Time {
                secs: 1_700_000_000,
                nanos: 250_000_000
            })
        );
        let bare = Attrs::of_object(&BTreeMap::new(), 1_500, false, OWNER);
        assert_eq!(
            (bare.kind, bare.perm, bare.uid, bare.gid),
            (Kind::File, 0o644, 1000, 100)
        );
        assert_eq!(
            bare.mtime,
            Time {
                secs: 1,
                nanos: 500_000_000
            }
        );
        let marker = Attrs::of_object(&BTreeMap::new(), 0, true, OWNER);
        assert_eq!((marker.kind, marker.perm), (Kind::Dir, 0o755));
    }

    /// Rule: extended attributes keep binary values and case, and a set too large is
    /// refused whole.
    #[test]
    fn xattrs_round_trip_and_are_bounded() {
        let mut m = BTreeMap::new();
        let set: BTreeMap<String, Vec<u8>> = [
            ("user.Tag".to_string(), vec![0, 255, 7]),
            ("user.empty".to_string(), vec![]),
        ]
        .into();
        assert!(set_xattrs(&mut m, &set));
        assert_eq!(xattrs_of(&m), set);
        let huge: BTreeMap<String, Vec<u8>> = [("user.big".to_string(), vec![1; 70_000])].into();
        assert!(!set_xattrs(&mut m, &huge));
        assert_eq!(xattrs_of(&m), set);
        assert!(set_xattrs(&mut m, &BTreeMap::new()));
        assert!(!m.contains_key(XATTRS));
    }
}
