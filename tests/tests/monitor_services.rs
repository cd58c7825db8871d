//! One real monitor process serving what sits on top of consensus: users and their keys,
//! options, the failure-domain hierarchy, map subscriptions, and the leader's failure policy
//! (missed beacons → down → out after the configured interval → back in on boot).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidepool_client::MonClient;
use tidepool_messenger::Identity;
use tidepool_placement::{Epoch, OsdId};
use tidepool_proto::mon::{Beacon, Command, OsdStat};
use tidepool_tests::{cluster_id, run, tidepool_ok, Daemon, TempDir};

fn admin(dir: &Path) -> MonClient {
    let identity = Identity::load(dir, &cluster_id(dir), "client-admin").expect("admin identity");
    MonClient::new(dir, &identity).expect("client")
}

/// Rule: a single monitor leads on its own and serves users, options, buckets, subscriptions
/// and the failure policy.
#[test]
fn one_monitor_serves_the_map_service() {
    let dir = TempDir::new("mon1");
    let path = dir.path();
    let init = run(&[
        "cluster",
        "init",
        path.to_str().expect("utf-8"),
        "--mons",
        "1",
    ]);
    assert!(init.status.success());
    let _monitor = Daemon::start(
        &["mon", "--id", "0", "--data", path.to_str().expect("utf-8")],
        &path.join("mon-0.log"),
    );

    // Users: created keys are listed, JSON has the fields S3 tools need, removal works.
    let created: Value = serde_json::from_str(&tidepool_ok(
        path,
        &["user", "create", "alice", "--format", "json"],
    ))
    .expect("JSON");
    let access = created["access_key"].as_str().expect("access key");
    assert!(created["secret_key"].as_str().expect("secret").len() >= 40);
    assert!(tidepool_ok(path, &["user", "ls"]).contains(access));
    let again = run(&[
        "user",
        "create",
        "alice",
        "--cluster",
        path.to_str().expect("utf-8"),
    ]);
    assert!(!again.status.success(), "a user name is unique");
    tidepool_ok(path, &["user", "rm", "alice"]);
    assert!(!tidepool_ok(path, &["user", "ls"]).contains(access));

    // Options: checked before they are sent, and read back.
    let bad = run(&[
        "config",
        "set",
        "mon_osd_report_timeout",
        "soon",
        "--cluster",
        path.to_str().expect("utf-8"),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("whole number"));
    for (key, value) in [
        ("mon_osd_report_timeout", "2"),
        ("mon_osd_down_out_interval", "2"),
    ] {
        tidepool_ok(path, &["config", "set", key, value]);
        assert_eq!(tidepool_ok(path, &["config", "get", key]).trim(), value);
    }

    // The hierarchy: a rack, a host in it, an OSD moved there.
    tidepool_ok(path, &["bucket", "add", "rack1", "--type", "rack"]);
    tidepool_ok(
        path,
        &[
            "bucket", "add", "host1", "--type", "host", "--parent", "rack1",
        ],
    );
    tidepool_ok(path, &["osd", "create", "--host", "host0"]);
    tidepool_ok(path, &["osd", "move", "0", "host1"]);
    let map: Value = serde_json::from_str(&tidepool_ok(path, &["osd", "dump", "--format", "json"]))
        .expect("JSON");
    let buckets = map["buckets"].to_string();
    assert!(buckets.contains("rack1") && buckets.contains("host1"));

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = admin(path);
        // Subscriptions: a new subscriber gets the whole map; one that is current is held until
        // the next epoch and then gets just the incremental.
        let update = client
            .subscribe(Epoch(0), Duration::from_secs(1))
            .await
            .expect("subscribe")
            .expect("a map");
        let map = update.apply(None).expect("whole map");
        let mut watcher = admin(path);
        let have = map.epoch;
        let held = tokio::spawn(async move {
            let started = Instant::now();
            let update = watcher
                .subscribe(have, Duration::from_secs(10))
                .await
                .expect("subscribe")
                .expect("a new epoch");
            (update, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .command(Command::OsdBoot {
                id: OsdId(0),
                addr: "127.0.0.1:1".into(),
            })
            .await
            .expect("reached")
            .expect("boot applies");
        let (update, waited) = held.await.expect("joined");
        assert!(
            update.full.is_none(),
            "a current subscriber gets incrementals"
        );
        assert!(
            waited < Duration::from_secs(5),
            "pushed when committed, not at the timeout"
        );
        let map = update.apply(Some(&map)).expect("applies");
        assert!(map.osds[&OsdId(0)].up);

        // Beacons keep the OSD up; without them it goes down, then out, then back in when it
        // boots again.
        for _ in 0..6 {
            let beacon = Beacon {
                osd: OsdId(0),
                epoch: map.epoch,
                stat: OsdStat::default(),
                pgs: Vec::new(),
            };
            client.beacon(beacon).await.expect("beacon");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            client.map().await.expect("map").osds[&OsdId(0)].up,
            "beacons keep it up"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let osd = client.map().await.expect("map").osds[&OsdId(0)].clone();
            if !osd.up && !osd.is_in {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "silent OSD not marked down and out: {osd:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client
            .command(Command::OsdBoot {
                id: OsdId(0),
                addr: "127.0.0.1:1".into(),
            })
            .await
            .expect("reached")
            .expect("boot applies");
        let osd = client.map().await.expect("map").osds[&OsdId(0)].clone();
        assert!(
            osd.up && osd.is_in,
            "an OSD marked out by the policy comes back in"
        );
    });
}
