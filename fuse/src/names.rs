//! Names on the mount and keys in the bucket, pure: a file `a/b/c` is the key `a/b/c`, a
//! directory `a/b` the prefix `a/b/` (and its marker object `a/b/`). See docs/mount.md.

/// The longest name a directory entry may have, in bytes (Linux's `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Why a name cannot be an entry of the mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Longer than [`NAME_MAX`] bytes (`ENAMETOOLONG`).
    TooLong,
    /// Not UTF-8: S3 keys are (`EINVAL`).
    NotUtf8,
    /// Empty, `.`, `..`, or holding `/` or NUL (`EINVAL`).
    Invalid,
}

/// Whether `name` may be a directory entry; why not otherwise.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// The key of entry `name` of the directory whose key is `dir` (`""` for the root).
pub fn child_key(dir: &str, name: &[u8]) -> Result<String, NameError> {
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    let name = std::str::from_utf8(name).map_err(|_| NameError::NotUtf8)?;
    check_name(name)?;
    Ok(format!("{}{name}", dir_prefix(dir)))
}

/// The prefix of the keys under the directory `dir`: `a/b` → `a/b/`, the root → `""`.
pub fn dir_prefix(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

/// The last segment of `key` (its name in its directory).
pub fn name_of(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, name)| name)
}

/// The key of the directory holding `key` (`""`: the root).
pub fn parent_of(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// What one line of a listing of the directory whose keys begin with `prefix` (listed with
/// the delimiter `/`) is on the mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed<'a> {
    /// An entry that is an object (a file, a link, a special file), by name.
    Object(&'a str),
    /// An entry that is a directory (a common prefix), by name.
    Dir(&'a str),
    /// The directory's own marker object (`prefix` itself).
    Marker,
    /// Not a name the mount can show; why.
    Skip(NameError),
}

/// What the object `key` of a listing under `prefix` is.
pub fn listed_object<'a>(prefix: &str, key: &'a str) -> Listed<'a> {
    match key.strip_prefix(prefix) {
        Some("") => Listed::Marker,
        Some(name) => match check_name(name) {
            Ok(()) => Listed::Object(name),
            Err(error) => Listed::Skip(error),
        },
        None => Listed::Skip(NameError::Invalid),
    }
}

/// What the common prefix `common` (ending in `/`) of a listing under `prefix` is.
pub fn listed_prefix<'a>(prefix: &str, common: &'a str) -> Listed<'a> {
    let name = common
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix('/'));
    match name {
        Some(name) => match check_name(name) {
            Ok(()) => Listed::Dir(name),
            Err(error) => Listed::Skip(error),
        },
        None => Listed::Skip(NameError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: entries map to keys under their directory's prefix; names the mount cannot hold
    /// are refused with the POSIX reason.
    #[test]
    fn names_map_to_keys() {
        assert_eq!(child_key("", b"a").as_deref(), Ok("a"));
        assert_eq!(child_key("a/b", b"c").as_deref(), Ok("a/b/c"));
        assert_eq!(child_key("", &[b'x'; 256]), Err(NameError::TooLong));
        assert_eq!(child_key("", &[b'x'; 255]).map(|k| k.len()), Ok(255));
        assert_eq!(child_key("", b"\xff"), Err(NameError::NotUtf8));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert_eq!(child_key("d", bad), Err(NameError::Invalid), "{bad:?}");
        }
        assert_eq!((name_of("a/b/c"), parent_of("a/b/c")), ("c", "a/b"));
        assert_eq!((name_of("top"), parent_of("top")), ("top", ""));
        assert_eq!(dir_prefix("a/b"), "a/b/");
    }

    /// Rule: a listing shows objects and common prefixes by name, the directory's own marker
    /// apart, and skips keys that are no names: empty segments, `.`/`..`, over 255 bytes.
    #[test]
    fn listings_skip_keys_that_are_no_names() {
        assert_eq!(listed_object("d/", "d/f"), Listed::Object("f"));
        assert_eq!(listed_object("d/", "d/"), Listed::Marker);
        assert_eq!(listed_object("", "f"), Listed::Object("f"));
        assert_eq!(listed_prefix("d/", "d/sub/"), Listed::Dir("sub"));
        assert_eq!(listed_prefix("d/", "d//"), Listed::Skip(NameError::Invalid));
        assert_eq!(
            listed_object("d/", "d/.."),
            Listed::Skip(NameError::Invalid)
        );
        assert_eq!(listed_prefix("", "./"), Listed::Skip(NameError::Invalid));
        let long = format!("d/{}", "x".repeat(256));
        assert_eq!(listed_object("d/", &long), Listed::Skip(NameError::TooLong));
    }
}
