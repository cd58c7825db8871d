//! `tidepool mount` for real: `tidepool up` with its gateway, a bucket made by aws-cli, and
//! the bucket mounted through FUSE (docs/mount.md). What a newcomer does (a tree copied in
//! with its modes, times and links, compared; a file changed in its middle; renames; `rm
//! -r`), the same bytes through both doors (aws-cli and the mount), a random-operation test
//! against a model in memory, extended attributes, and the files still there after an
//! unmount and a new mount. Every mount is unmounted when the test ends, whatever happens.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tidepool_tests::{free_port, pattern, scrape, sum_of, tidepool_ok, venv_bin, Daemon, TempDir};

const MIB: usize = 1 << 20;

/// A running `tidepool up` with its S3 keys.
struct Up {
    dir: TempDir,
    _daemon: Daemon,
    port: u16,
    keys: (String, String),
}

impl Up {
    fn start(name: &str) -> Up {
        let dir = TempDir::new(name);
        let cluster = dir.path().join("cluster");
        let port = free_port();
        let log = dir.path().join("up.log");
        let daemon = Daemon::start(
            &[
                "up",
                "--dir",
                cluster.to_str().expect("utf-8"),
                "--osds",
                "3",
                "--s3-port",
                &port.to_string(),
            ],
            &log,
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ctrl-C stops the cluster") {
                break text;
            }
            assert!(
                Instant::now() < deadline,
                "tidepool up did not come up: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let key = |label: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .expect("printed keys")
                .trim()
                .to_owned()
        };
        let keys = (key("access key"), key("secret key"));
        Up {
            dir,
            _daemon: daemon,
            port,
            keys,
        }
    }

    fn cluster(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    fn aws(&self, args: &[&str]) -> Output {
        Command::new(venv_bin("aws"))
            .arg("--endpoint-url")
            .arg(format!("http://127.0.0.1:{}", self.port))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.keys.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.keys.1)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("aws runs")
    }

    fn aws_ok(&self, args: &[&str]) -> String {
        let output = self.aws(args);
        assert!(
            output.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The ETag (without quotes) of `key` in bucket `files`, and its bytes (fetched to `to`).
    fn fetch(&self, key: &str, to: &Path) -> (String, Vec<u8>) {
        self.aws_ok(&[
            "s3",
            "cp",
            &format!("s3://files/{key}"),
            to.to_str().unwrap(),
        ]);
        let head = self.aws_ok(&["s3api", "head-object", "--bucket", "files", "--key", key]);
        let head: serde_json::Value = serde_json::from_str(&head).expect("json");
        let etag = head["ETag"].as_str().expect("etag").trim_matches('"');
        (etag.to_owned(), std::fs::read(to).expect("fetched"))
    }
}

/// A bucket mounted in the background; unmounted (and its process stopped) when dropped.
struct Mounted {
    dir: PathBuf,
    pid: u32,
}

impl Mounted {
    fn mount(up: &Up, bucket: &str, dir: &Path) -> Mounted {
        std::fs::create_dir_all(dir).expect("mount point");
        let log = up.dir.path().join(format!("mount-{bucket}.log"));
        let printed = tidepool_ok(
            &up.cluster(),
            &[
                "mount",
                bucket,
                dir.to_str().expect("utf-8"),
                "--log",
                log.to_str().expect("utf-8"),
                "--metrics-addr",
                "127.0.0.1:0",
            ],
        );
        let pid = printed
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {printed:?}"));
        Mounted {
            dir: dir.to_owned(),
            pid,
        }
    }

    /// Kills the mount process with SIGKILL and waits until it is gone.
    fn kill9(&self) {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill -9");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.dead() {
            assert!(Instant::now() < deadline, "the mount outlived kill -9");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Gone, or a zombie nobody reaped yet.
    fn dead(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        })
    }

    /// `tidepool umount`, then waits for the mount process to end.
    fn unmount(self, up: &Up) {
        tidepool_ok(
            &up.cluster(),
            &["umount", self.dir.to_str().expect("utf-8")],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.alive() {
            assert!(
                Instant::now() < deadline,
                "the mount process outlived its unmount"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.dir)
            .stderr(std::process::Stdio::null())
            .status();
        if !self.dead() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.dead() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn sh(script: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A tree with files of awkward sizes, an empty directory, a symbolic link and modes.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("docs/empty")).expect("dirs");
    std::fs::create_dir_all(root.join("src/deep/er")).expect("dirs");
    for (name, len) in [
        ("empty.txt", 0),
        ("one.txt", 1),
        ("docs/inline.bin", 70 * 1024 - 3),
        ("docs/two-stripes.bin", 4 * MIB + 5),
        ("src/deep/er/small.rs", 1234),
        ("src/main.rs", 64 * 1024),
    ] {
        std::fs::write(root.join(name), pattern(len as u64 + 1, len)).expect("file");
    }
    std::fs::set_permissions(
        root.join("src/main.rs"),
        std::fs::Permissions::from_mode(0o750),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("../one.txt", root.join("docs/link")).expect("symlink");
}

/// Rule: what a newcomer does through the mount works, both doors see the same bytes, and
/// files survive an unmount.
#[test]
fn a_bucket_mounted_behaves_as_a_file_system() {
    let up = Up::start("mount");
    up.aws_ok(&["s3", "mb", "s3://files"]);
    let work = up.dir.path().to_path_buf();
    let mounted = Mounted::mount(&up, "files", &work.join("mnt"));
    let mnt = mounted.dir.clone();

    // A tree copied in with `cp -a` compares equal, with its modes, times and link.
    let source = work.join("tree");
    make_tree(&source);
    sh(&format!("cp -a {}/. {}/", source.display(), mnt.display()));
    sh(&format!("diff -r {} {}", source.display(), mnt.display()));
    let meta = std::fs::metadata(mnt.join("src/main.rs")).expect("stat");
    assert_eq!(meta.mode() & 0o7777, 0o750);
    let original = std::fs::metadata(source.join("src/main.rs")).expect("stat");
    assert_eq!(meta.mtime(), original.mtime(), "cp -a keeps the time");
    assert_eq!(
        std::fs::read_link(mnt.join("docs/link")).expect("readlink"),
        Path::new("../one.txt")
    );
    assert!(mnt.join("docs/empty").is_dir());
    let listed = sh(&format!("cd {} && find . | sort", mnt.display()));
    let expected = sh(&format!("cd {} && find . | sort", source.display()));
    assert_eq!(listed, expected);
    // The mount's metrics count what it did.
    let endpoint = std::fs::read_to_string(up.cluster().join("run/metrics/mount.files"))
        .expect("the mount records its metrics address");
    let samples = scrape(&format!("http://{}/metrics", endpoint.trim()));
    assert!(sum_of(&samples, "tidepool_mount_ops_total", &[("op", "write")]) > 0.0);
    assert!(sum_of(&samples, "tidepool_mount_ops_total", &[("op", "mkdir")]) > 0.0);
    assert!(
        sum_of(
            &samples,
            "tidepool_mount_bytes_total",
            &[("direction", "written")]
        ) >= 4.0 * MIB as f64
    );

    // Through the other door: aws-cli reads what the mount wrote, and the mount what aws-cli
    // put (multipart too).
    let fetched = work.join("fetched");
    let (etag, bytes) = up.fetch("docs/two-stripes.bin", &fetched);
    assert!(bytes == pattern(4 * MIB as u64 + 6, 4 * MIB + 5));
    // A file written whole in one pass has its bytes' MD5 as its ETag, as a PUT's.
    let md5 = sh(&format!("md5sum {} | cut -d' ' -f1", fetched.display()));
    assert_eq!(etag, md5.trim());
    let put = work.join("put.bin");
    std::fs::write(&put, pattern(99, 20 * MIB + 11)).expect("put file");
    up.aws_ok(&[
        "s3",
        "cp",
        put.to_str().unwrap(),
        "s3://files/from-s3/big.bin",
    ]);
    assert!(
        std::fs::read(mnt.join("from-s3/big.bin")).expect("read") == pattern(99, 20 * MIB + 11)
    );
    up.aws_ok(&["s3", "rm", "s3://files/from-s3/big.bin"]);
    // Gone within the attribute timeout (1 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    while mnt.join("from-s3/big.bin").exists() {
        assert!(
            Instant::now() < deadline,
            "a key deleted by S3 stays in the mount"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A write in the middle of a large file, an append and a truncation.
    let big = mnt.join("big.bin");
    let mut model = pattern(7, 12 * MIB + 3);
    std::fs::write(&big, &model).expect("big file");
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&big)
            .expect("open");
        file.seek(SeekFrom::Start(5 * MIB as u64 - 10))
            .expect("seek");
        file.write_all(&[0xab; 100]).expect("write");
        file.sync_all().expect("fsync");
    }
    model[5 * MIB - 10..5 * MIB + 90].fill(0xab);
    assert!(std::fs::read(&big).expect("read") == model);
    sh(&format!("printf 'tail' >> {}", big.display()));
    model.extend_from_slice(b"tail");
    sh(&format!(
        "truncate -s {} {}",
        9 * MIB + 1,
        mnt.join("docs/two-stripes.bin").display()
    ));
    let mut cut = pattern(4 * MIB as u64 + 6, 4 * MIB + 5);
    cut.resize(9 * MIB + 1, 0);
    assert!(std::fs::read(mnt.join("docs/two-stripes.bin")).expect("read") == cut);
    up.aws_ok(&["s3", "cp", "s3://files/big.bin", fetched.to_str().unwrap()]);
    assert!(
        std::fs::read(&fetched).expect("fetched") == model,
        "S3 sees the changed file"
    );

    // Renames: a file over another, across directories, and a directory.
    sh(&format!(
        "cd {0} && mv one.txt docs/moved.txt && mv docs/inline.bin src/main.rs && mv src renamed",
        mnt.display()
    ));
    assert!(!mnt.join("one.txt").exists());
    assert!(std::fs::read(mnt.join("docs/moved.txt")).expect("moved") == pattern(2, 1));
    assert!(
        std::fs::read(mnt.join("renamed/main.rs")).expect("replaced")
            == pattern(70 * 1024 - 2, 70 * 1024 - 3)
    );
    assert!(
        std::fs::read(mnt.join("renamed/deep/er/small.rs")).expect("deep") == pattern(1235, 1234)
    );
    let keys = up.aws_ok(&["s3", "ls", "--recursive", "s3://files/"]);
    assert!(
        keys.contains("renamed/deep/er/small.rs") && !keys.contains("src/"),
        "{keys}"
    );

    // Errors programs expect.
    let not_empty = Command::new("rmdir")
        .arg(mnt.join("renamed"))
        .output()
        .expect("rmdir");
    assert!(String::from_utf8_lossy(&not_empty.stderr).contains("not empty"));
    let exclusive = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(mnt.join("docs/moved.txt"));
    assert_eq!(
        exclusive.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::AlreadyExists)
    );
    let long = mnt.join("x".repeat(256));
    assert_eq!(
        std::fs::write(&long, b"x")
            .err()
            .and_then(|e| e.raw_os_error()),
        Some(libc_enametoolong())
    );

    // Extended attributes (user.*), binary values included.
    sh(&format!(
        "{} -c \"import os; p='{}'; os.setxattr(p, 'user.Colour', b'\\x00blue'); \
         assert os.getxattr(p, 'user.Colour') == b'\\x00blue'; assert 'user.Colour' in os.listxattr(p); \
         os.removexattr(p, 'user.Colour'); assert os.listxattr(p) == []\"",
        venv_bin("python").display(),
        mnt.join("docs/moved.txt").display()
    ));

    hard_links(&up, &mnt);
    unlinked_but_open(&up, &mnt);
    space_and_locks(&mnt);
    created_until_closed(&up, &mnt);
    random_operations(&mnt);
    small_random_writes(&up, &mnt, &work);
    newcomer_tools(&source, &mnt, &work);
    many_files(&mnt);

    // `rm -r` leaves the bucket empty of that tree.
    sh(&format!("rm -r {}", mnt.join("renamed").display()));
    let listing = up.aws_ok(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "files",
        "--prefix",
        "renamed/",
    ]);
    assert!(!listing.contains("\"Key\""), "{listing}");

    // An OSD killed (-9) while files are written: the writes go on, and read back exact.
    let osd = pid_of(&up.cluster(), "osd-1");
    let writer = std::thread::spawn({
        let mnt = mnt.clone();
        move || {
            for i in 0..3u64 {
                std::fs::write(
                    mnt.join(format!("during-{i}.bin")),
                    pattern(500 + i, 9 * MIB),
                )
                .expect("a write while an OSD dies");
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    sh(&format!("kill -9 {osd}"));
    writer.join().expect("writer");
    for i in 0..3u64 {
        let got = std::fs::read(mnt.join(format!("during-{i}.bin"))).expect("read");
        assert!(got == pattern(500 + i, 9 * MIB), "during-{i}.bin");
    }

    // Unmounted and mounted again: the files are there.
    mounted.unmount(&up);
    assert!(!mnt.join("big.bin").exists());
    let again = Mounted::mount(&up, "files", &mnt);
    assert!(std::fs::read(again.path("big.bin")).expect("read") == model);
    assert!(std::fs::read(again.path("docs/moved.txt")).expect("read") == pattern(2, 1));

    // The mount killed (-9) while a file is being written: what was closed before is whole,
    // and a new mount serves the bucket.
    std::fs::write(again.path("closed.bin"), pattern(77, 6 * MIB)).expect("closed file");
    let mut open = std::fs::File::create(again.path("open.bin")).expect("create");
    open.write_all(&pattern(78, 5 * MIB)).expect("write");
    let mut synced = std::fs::File::create(again.path("synced.bin")).expect("create");
    synced.write_all(&pattern(79, 3 * MIB + 5)).expect("write");
    synced.sync_all().expect("fsync");
    // Killed without a fork: a forked child's exec would close its copy of `open`'s
    // descriptor, and every close of a descriptor flushes the file (as FUSE does).
    // SIGKILL lands asynchronously: the close below must not reach a mount still dying.
    again.kill9();
    drop(open);
    drop(synced);
    drop(again);
    let third = Mounted::mount(&up, "files", &mnt);
    assert!(std::fs::read(third.path("closed.bin")).expect("read") == pattern(77, 6 * MIB));
    // A file created and never closed or synced was never linked (its create waits for its
    // first commit): it is not there, and none of its bytes are anywhere.
    assert!(
        !third.path("open.bin").exists(),
        "a file created and never closed appeared after the crash"
    );
    // One synced and not closed is durable: `fsync` returned once it was linked.
    assert!(std::fs::read(third.path("synced.bin")).expect("read") == pattern(79, 3 * MIB + 5));

    // The mount killed (-9) during a directory rename: the next mount completes it (or it
    // never began): the tree is whole in one place, nothing half-renamed is left.
    let files = 200;
    std::fs::create_dir(third.path("moving")).expect("mkdir");
    for i in 0..files {
        std::fs::write(third.path(&format!("moving/f{i:03}")), format!("file {i}")).expect("write");
    }
    // Killed once the first key has moved, as a second mount sees (the kernel keeps the
    // first one's directory locked while it renames).
    let watcher = Mounted::mount(&up, "files", &work.join("watch"));
    let mut mover = Command::new("mv")
        .arg(third.path("moving"))
        .arg(third.path("moved"))
        .spawn()
        .expect("mv");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !watcher.path("moved").exists() {
        assert!(Instant::now() < deadline, "the rename did not begin");
        std::thread::sleep(Duration::from_millis(5));
    }
    third.kill9();
    let _ = mover.wait();
    drop(third);
    watcher.unmount(&up);
    let keys_under = |prefix: &str| {
        let listed = up.aws(&["s3", "ls", "--recursive", &format!("s3://files/{prefix}")]);
        String::from_utf8_lossy(&listed.stdout).lines().count()
    };
    let halfway = keys_under("moving/");
    let fourth = Mounted::mount(&up, "files", &mnt);
    let done = fourth.path("moved").exists();
    println!("killed during a directory rename with {halfway} keys left of {files}; done: {done}");
    assert!(
        done != fourth.path("moving").exists(),
        "the directory is in exactly one place ({halfway} keys were left under the old name at the kill)"
    );
    let dir = if done { "moved" } else { "moving" };
    for i in 0..files {
        let got = std::fs::read_to_string(fourth.path(&format!("{dir}/f{i:03}")))
            .expect("a file of the tree");
        assert_eq!(got, format!("file {i}"));
    }
    for prefix in ["moving/", "moved/"] {
        let keys = keys_under(prefix);
        let expected = if prefix.starts_with(dir) {
            files + 1
        } else {
            0
        };
        assert_eq!(keys, expected, "keys under {prefix}");
    }
    fourth.unmount(&up);
}

/// One pass of the garbage collector over everything, due or not: the stripes it removed.
fn collect_all_garbage(up: &Up) -> u64 {
    let printed = tidepool_ok(&up.cluster(), &["gc", "--include-all", "--format", "json"]);
    let pass: serde_json::Value = serde_json::from_str(&printed).expect("gc prints json");
    pass["stripes"].as_u64().expect("stripes")
}

/// Hard links: two keys, one file. Both names read (through S3 too) and change the same
/// bytes, the link count follows, and the stripes go only with the last name.
fn hard_links(up: &Up, mnt: &Path) {
    let (a, b) = (mnt.join("linked-a.bin"), mnt.join("docs/linked-b.bin"));
    let mut model = pattern(31, 9 * MIB + 7);
    std::fs::write(&a, &model).expect("write");
    let changed = |p: &Path| {
        let m = std::fs::metadata(p).expect("stat");
        (m.ctime(), m.ctime_nsec(), m.mtime(), m.mtime_nsec())
    };
    let (file_before, folder_before) = (changed(&a), changed(&mnt.join("docs")));
    std::thread::sleep(Duration::from_millis(20));
    std::fs::hard_link(&a, &b).expect("link");
    // A link moves the file's change time, and the folder's times (POSIX).
    let (file_after, folder_after) = (changed(&a), changed(&mnt.join("docs")));
    assert!(
        file_after.0 * 1_000_000_000 + file_after.1 > file_before.0 * 1_000_000_000 + file_before.1,
        "ctime"
    );
    assert!(
        folder_after.2 * 1_000_000_000 + folder_after.3
            > folder_before.2 * 1_000_000_000 + folder_before.3,
        "folder mtime"
    );
    assert_eq!(std::fs::metadata(&a).expect("stat").nlink(), 2);
    assert_eq!(std::fs::metadata(&b).expect("stat").nlink(), 2);
    assert_eq!(
        std::fs::metadata(&a).expect("stat").ino(),
        std::fs::metadata(&b).expect("stat").ino(),
        "two names, one inode"
    );
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&b)
            .expect("open");
        file.seek(SeekFrom::Start(4 * MIB as u64 + 1))
            .expect("seek");
        file.write_all(b"through b").expect("write");
    }
    model[4 * MIB + 1..4 * MIB + 10].copy_from_slice(b"through b");
    assert!(
        std::fs::read(&a).expect("read a") == model,
        "a write through one name shows through the other"
    );
    let fetched = mnt.parent().expect("work").join("linked.fetched");
    for key in ["linked-a.bin", "docs/linked-b.bin"] {
        up.aws_ok(&[
            "s3",
            "cp",
            &format!("s3://files/{key}"),
            fetched.to_str().unwrap(),
        ]);
        assert!(
            std::fs::read(&fetched).expect("fetched") == model,
            "S3 reads {key}"
        );
    }
    // chmod through one name is the other's mode too.
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(std::fs::metadata(&b).expect("stat").mode() & 0o777, 0o640);
    // Errors: an existing target, a directory.
    let exists = std::fs::hard_link(&a, mnt.join("docs/moved.txt")).expect_err("target exists");
    assert_eq!(exists.kind(), std::io::ErrorKind::AlreadyExists);
    let dir = std::fs::hard_link(mnt.join("docs"), mnt.join("docs-link")).expect_err("a directory");
    assert_eq!(dir.raw_os_error(), Some(1), "EPERM");
    // A rename of one name over the other does nothing (POSIX).
    std::fs::rename(&a, &b).expect("rename onto another link");
    assert!(a.exists() && b.exists());
    // One name goes: the other keeps the bytes, through the garbage collector.
    std::fs::remove_file(&a).expect("unlink a");
    assert_eq!(std::fs::metadata(&b).expect("stat").nlink(), 1);
    collect_all_garbage(up);
    assert!(
        std::fs::read(&b).expect("read b") == model,
        "the last name keeps the bytes"
    );
    std::fs::remove_file(&b).expect("unlink b");
    assert!(
        collect_all_garbage(up) >= 3,
        "the stripes go with the last name"
    );
}

/// A file unlinked (or replaced by a rename) while open reads and writes on until its last
/// close, even after the garbage collector has run; then its stripes go.
fn unlinked_but_open(up: &Up, mnt: &Path) {
    let path = mnt.join("open-unlinked.bin");
    let model = pattern(41, 9 * MIB);
    std::fs::write(&path, &model).expect("write");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    std::fs::remove_file(&path).expect("unlink");
    assert!(!path.exists());
    assert_eq!(file.metadata().expect("fstat").nlink(), 0);
    collect_all_garbage(up);
    let mut read = Vec::new();
    file.read_to_end(&mut read).expect("read after unlink");
    assert!(read == model, "an unlinked open file reads its bytes");
    file.seek(SeekFrom::Start(100)).expect("seek");
    file.write_all(b"still mine").expect("write after unlink");
    file.seek(SeekFrom::Start(100)).expect("seek");
    let mut back = [0u8; 10];
    file.read_exact(&mut back).expect("read back");
    assert_eq!(&back, b"still mine");
    drop(file);
    assert!(
        collect_all_garbage(up) >= 3,
        "its stripes go at the last close"
    );

    // Replaced by a rename while open: the same.
    let (old, new) = (mnt.join("replaced.bin"), mnt.join("replacing.bin"));
    std::fs::write(&old, pattern(42, 5 * MIB)).expect("write");
    std::fs::write(&new, b"new").expect("write");
    let mut file = std::fs::File::open(&old).expect("open");
    std::fs::rename(&new, &old).expect("rename over");
    collect_all_garbage(up);
    let mut read = Vec::new();
    file.read_to_end(&mut read).expect("read after replace");
    assert!(read == pattern(42, 5 * MIB));
    assert_eq!(std::fs::read(&old).expect("read"), b"new");
    std::fs::remove_file(&old).expect("rm");
}

/// `fallocate` (sizes, holes, zeroed ranges) and locks between processes (flock and fcntl
/// record locks, kept by the kernel for the mount).
fn space_and_locks(mnt: &Path) {
    let path = mnt.join("fallocated.bin");
    sh(&format!("fallocate -l 10M {}", path.display()));
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        10 * MIB as u64
    );
    assert!(std::fs::read(&path).expect("read").iter().all(|b| *b == 0));
    std::fs::write(&path, pattern(51, 6 * MIB)).expect("write");
    sh(&format!(
        "fallocate -p -o {} -l 4096 {}",
        MIB,
        path.display()
    ));
    sh(&format!(
        "fallocate -z -o {} -l 10 {}",
        6 * MIB,
        path.display()
    ));
    sh(&format!(
        "fallocate -n -o 0 -l {} {}",
        64 * MIB,
        path.display()
    ));
    let mut model = pattern(51, 6 * MIB);
    model[MIB..MIB + 4096].fill(0);
    model.resize(6 * MIB + 10, 0);
    assert!(
        std::fs::read(&path).expect("read") == model,
        "holes punched and ranges zeroed"
    );
    let unsupported = Command::new("fallocate")
        .args(["-c", "-o", "0", "-l", "4096"])
        .arg(&path)
        .output()
        .expect("fallocate");
    assert!(
        !unsupported.status.success(),
        "collapsing a range is refused"
    );

    // Locks: a second process cannot take what the first holds.
    let lock = mnt.join("lockfile");
    std::fs::write(&lock, b"").expect("lock file");
    let script = mnt.parent().expect("work").join("locks.py");
    std::fs::write(&script, LOCKS_PY).expect("script");
    sh(&format!(
        "{} {} {}",
        venv_bin("python").display(),
        script.display(),
        lock.display()
    ));
}

/// Locks on the file named by its argument, taken by this process and tried by others.
const LOCKS_PY: &str = r#"
import fcntl, subprocess, sys
path = sys.argv[1]
f = open(path, 'r+')
fcntl.flock(f, fcntl.LOCK_EX)
assert subprocess.run(['flock', '-n', path, 'true']).returncode != 0, 'flock taken twice'
fcntl.flock(f, fcntl.LOCK_UN)
assert subprocess.run(['flock', '-n', path, 'true']).returncode == 0, 'flock not released'
fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)
probe = 'import fcntl, sys; f = open(sys.argv[1], "r+"); fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, %d)'
taken = subprocess.run([sys.executable, '-c', probe % 0, path], capture_output=True)
assert taken.returncode != 0, 'a record lock taken twice'
free = subprocess.run([sys.executable, '-c', probe % 10, path], capture_output=True)
assert free.returncode == 0, 'another range is free: %r' % free.stderr
"#;

/// The PID of the daemon of `cluster` whose command line holds `what`.
fn pid_of(cluster: &Path, what: &str) -> u32 {
    let output = Command::new("pgrep")
        .args(["-af", &cluster.display().to_string()])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|line| line.contains(what) && !line.contains(" mount "))
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no daemon {what}"))
}

/// Rule: tar, rsync, git and an editor's save work through the mount as on a local disk.
fn newcomer_tools(source: &Path, mnt: &Path, work: &Path) {
    let (source, mnt, work) = (source.display(), mnt.display(), work.display());
    // tar in and out, modes and links kept.
    sh(&format!(
        "tar -C {source} -cf {work}/tree.tar . && mkdir {mnt}/untar && \
         tar -C {mnt}/untar -xpf {work}/tree.tar && diff -r {source} {mnt}/untar && \
         test \"$(stat -c %a {mnt}/untar/src/main.rs)\" = 750 && \
         mkdir {work}/back && tar -C {mnt}/untar -cf - . | tar -C {work}/back -xpf - && \
         diff -r {source} {work}/back"
    ));
    // rsync both ways (it writes temporary files and renames them over).
    sh(&format!(
        "rsync -a {source}/ {mnt}/rsynced/ && diff -r {source} {mnt}/rsynced && \
         rsync -a {mnt}/rsynced/ {work}/rsync-back/ && diff -r {source} {work}/rsync-back && \
         rsync -a --checksum {source}/ {mnt}/rsynced/"
    ));
    // A repository made, committed to and cloned inside the mount.
    sh(&format!(
        "cd {mnt} && git init -q repo && cd repo && git config user.email t@example.com && \
         git config user.name tester && cp -r {source}/src {source}/docs . && \
         git add -A && git commit -qm first && echo more >> docs/moved-later.txt && \
         git add -A && git commit -qm second && test \"$(git log --oneline | wc -l)\" = 2 && \
         git fsck --no-progress >/dev/null && cd .. && git clone -q repo clone && diff -r --no-dereference -x .git -x empty repo clone && \
         git -C clone log --oneline | grep -q second"
    ));
    // An editor's save: a temporary file written, synced and renamed over the original.
    sh(&format!(
        "cd {mnt} && printf 'draft' > notes.txt && printf 'saved text' > .notes.txt.swp && \
         sync .notes.txt.swp && mv .notes.txt.swp notes.txt && test \"$(cat notes.txt)\" = 'saved text'"
    ));
    sh(&format!(
        "rm -r {mnt}/untar {mnt}/rsynced {mnt}/repo {mnt}/clone"
    ));
}

/// Rule: `find`, `du` and `ls -lR` of a directory with a thousand files list every one.
fn many_files(mnt: &Path) {
    const FILES: usize = 10_000;
    let dir = mnt.join("many");
    let started = Instant::now();
    // Eight writers at once: the mount serves requests concurrently.
    sh(&format!(
        "mkdir {0} && cd {0} && for w in 0 1 2 3 4 5 6 7; do \
           (i=$w; while [ $i -lt {FILES} ]; do echo $i > f$i; i=$((i + 8)); done) & \
         done; wait",
        dir.display()
    ));
    eprintln!("{FILES} files created in {:?}", started.elapsed());
    let started = Instant::now();
    let listed = sh(&format!("ls -lR {} | grep -c '^-'", dir.display()));
    assert_eq!(listed.trim(), FILES.to_string());
    eprintln!("ls -lR of them in {:?}", started.elapsed());
    let found = sh(&format!("find {} -type f | wc -l", dir.display()));
    assert_eq!(found.trim(), FILES.to_string());
    sh(&format!("du -s {}", dir.display()));
    assert_eq!(
        std::fs::read_to_string(dir.join("f4321")).expect("a file"),
        "4321\n"
    );
    eprintln!("ls -lR, find and du of them in {:?}", started.elapsed());
    sh(&format!("rm -r {}", dir.display()));
}

fn libc_enametoolong() -> i32 {
    36
}

/// Rule: a file created here and not closed yet is listed here, its folder not empty to
/// `rmdir`; S3 sees it from its close; and a rename of it while it is open carries what was
/// written before and after.
fn created_until_closed(up: &Up, mnt: &Path) {
    let dir = mnt.join("fresh");
    std::fs::create_dir(&dir).expect("mkdir");
    let mut file = std::fs::File::create(dir.join("new.txt")).expect("create");
    file.write_all(b"new bytes").expect("write");
    let listed: Vec<String> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert_eq!(listed, vec!["new.txt".to_owned()]);
    assert_eq!(
        std::fs::metadata(dir.join("new.txt")).expect("stat").len(),
        9
    );
    let refused = std::fs::remove_dir(&dir).expect_err("rmdir of a folder holding a new file");
    assert_eq!(refused.kind(), std::io::ErrorKind::DirectoryNotEmpty);
    // (Whether S3 sees it before the close cannot be asked from here: starting aws-cli forks,
    // and the child's copy of the descriptor closes at its `exec`, which flushes the file.)
    drop(file);
    assert_eq!(
        up.aws_ok(&["s3", "cp", "s3://files/fresh/new.txt", "-"]),
        "new bytes"
    );

    let mut moving = std::fs::File::create(dir.join("a.txt")).expect("create");
    moving.write_all(b"aaa").expect("write");
    std::fs::rename(dir.join("a.txt"), dir.join("b.txt")).expect("rename");
    moving.write_all(b"bbb").expect("write");
    drop(moving);
    assert!(!dir.join("a.txt").exists());
    assert_eq!(std::fs::read(dir.join("b.txt")).expect("read"), b"aaabbb");
    assert_eq!(
        up.aws_ok(&["s3", "cp", "s3://files/fresh/b.txt", "-"]),
        "aaabbb"
    );
    std::fs::remove_dir_all(&dir).expect("rm -r");
}

/// Rule: thousands of small writes at random offsets of a large file, committed now and
/// then, read back exact through the mount and through S3, and the file's manifest stays
/// bounded (its ETag counts its segments after the dash): the stripes too many small runs
/// share are written again whole.
fn small_random_writes(up: &Up, mnt: &Path, work: &Path) {
    let path = mnt.join("small-writes.bin");
    let mut model = pattern(21, 8 * MIB);
    std::fs::write(&path, &model).expect("write");
    let mut next = seeded(0x9e37_79b9_7f4a_7c15u64);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    for round in 0..3000u64 {
        let len = 16 + next(240) as usize;
        let offset = next((model.len() - len) as u64) as usize;
        let data = pattern(1000 + round, len);
        file.write_all_at(&data, offset as u64).expect("write");
        model[offset..offset + len].copy_from_slice(&data);
        if round % 1000 == 999 {
            file.sync_all().expect("fsync");
        }
        if round % 250 == 0 {
            let mut got = vec![0u8; 4096];
            let at = next((model.len() - 4096) as u64);
            file.read_exact_at(&mut got, at).expect("read");
            assert!(
                got == model[at as usize..at as usize + 4096],
                "round {round}: differs at {at}"
            );
        }
    }
    drop(file);
    assert!(
        std::fs::read(&path).expect("read") == model,
        "the mount reads what was written"
    );
    let (etag, bytes) = up.fetch("small-writes.bin", &work.join("small-writes.bin"));
    assert!(bytes == model, "S3 reads what was written");
    let segments: usize = etag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .expect("a manifest's ETag");
    assert!(
        segments <= 2 * 64 + 1,
        "{segments} segments in an 8 MiB file"
    );
    std::fs::remove_file(&path).expect("rm");
}

/// Numbers below a bound, from `seed` (xorshift): the same every run.
fn seeded(mut state: u64) -> impl FnMut(u64) -> u64 {
    move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound.max(1)
    }
}

/// Rule: seeded rounds of writes at random offsets, truncations, reads, and closes and
/// reopens of files on the mount never leave a byte different from a model in memory.
fn random_operations(mnt: &Path) {
    let dir = mnt.join("random");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut next = seeded(0x2545_f491_4f6c_dd1du64);
    let mut models: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut open: Option<(String, std::fs::File)> = None;
    for round in 0..400u64 {
        let name = format!("f{}", next(3));
        let model = models.entry(name.clone()).or_default();
        if open.as_ref().is_none_or(|(n, _)| *n != name) || next(10) == 0 {
            // The previous file closes first (its last handle: it is committed).
            drop(open.take());
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(&name))
                .expect("open");
            open = Some((name.clone(), file));
        }
        let file = &mut open.as_mut().expect("open").1;
        match next(10) {
            0..=4 => {
                let offset = next(model.len() as u64 + 6 * MIB as u64);
                let most = if next(4) == 0 { 5 * MIB as u64 } else { 70_000 };
                let len = 1 + next(most) as usize;
                let data = pattern(round, len);
                file.seek(SeekFrom::Start(offset)).expect("seek");
                file.write_all(&data).expect("write");
                let end = offset as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[offset as usize..end].copy_from_slice(&data);
            }
            5 => {
                let size = next(model.len() as u64 + MIB as u64) as usize;
                file.set_len(size as u64).expect("truncate");
                model.resize(size, 0);
            }
            6 => file.sync_all().expect("fsync"),
            _ => {
                let offset = next(model.len() as u64 + 1);
                let len = next(3 * MIB as u64) as usize;
                let mut got = Vec::new();
                file.seek(SeekFrom::Start(offset)).expect("seek");
                Read::by_ref(file)
                    .take(len as u64)
                    .read_to_end(&mut got)
                    .expect("read");
                let end = (offset as usize + len).min(model.len());
                let want = &model[(offset as usize).min(end)..end];
                assert!(
                    got == want,
                    "round {round}: {name} differs at {offset}+{len}"
                );
            }
        }
    }
    drop(open);
    for (name, model) in &models {
        let got = std::fs::read(dir.join(name)).expect("read");
        assert_eq!(got.len(), model.len(), "{name}'s size");
        assert!(got == *model, "{name} differs after closing");
    }
}
