//! Real monitor and OSD processes on loopback, a replicated pool of size 3 / min_size 2 over 4
//! OSDs: 1,000 objects of 0–8 MiB read back bit-exact; `kill -9` of an OSD under a concurrent
//! write/read workload with no errors and no wrong bytes; the OSD restarted catches up; bad
//! requests get errors and crash nothing.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check_acked, check_objects, object_client, write_objects, Cluster, Workload, MIB};
use tidepool_client::ObjectError;
use tidepool_placement::{PgId, PoolId};
use tidepool_proto::osd::{ObjectOp, OpError, OsdRequest, OsdResponse};

/// Rule: a replicated pool keeps every byte through an OSD's `kill -9` and restart, with no
/// error seen by a concurrent workload.
#[test]
fn replicated_pool_survives_an_osd_kill() {
    let mut cluster = Cluster::start("osds", 4, 32, &[]);
    let path = cluster.path().to_path_buf();
    let runtime = common::runtime();
    let client = Arc::new(runtime.block_on(object_client(&path)));

    // 1,000 objects of 0 to 8 MiB, written by 8 concurrent writers, read back bit-exact.
    let started = Instant::now();
    write_objects(&runtime, &client, 1000, 8 * MIB);
    check_objects(&runtime, &client, 1000, 8 * MIB);
    eprintln!(
        "1,000 objects written and read back in {:?}",
        started.elapsed()
    );

    // A write/read workload while osd.1 is killed; every acknowledged write must read back.
    let workload = Workload::start(&runtime, client.clone(), (1000, 8 * MIB), MIB);
    workload.wait_acked(10);
    cluster.osds[1].take().expect("osd.1").kill();
    let killed_at = Instant::now();
    // The monitors mark it down (peers report it within the 3 s grace).
    cluster.wait_for(Duration::from_secs(60), "osd.1 marked down", || {
        cluster.osd_states().get(&1).is_some_and(|(up, _)| !*up)
    });
    eprintln!("osd.1 marked down {:?} after the kill", killed_at.elapsed());
    std::thread::sleep(Duration::from_secs(5));
    // It restarts, and the workload goes on while it catches up.
    cluster.osds[1] = Some(cluster.start_osd(1));
    cluster.wait_osds_up(4);
    std::thread::sleep(Duration::from_secs(5));
    let (acked, errors) = workload.stop(&runtime);
    assert!(errors.is_empty(), "the workload saw errors: {errors:?}");
    assert!(
        acked.len() > 10,
        "the workload made progress: {} writes",
        acked.len()
    );
    // Every acknowledged write reads back.
    check_acked(&runtime, &client, &acked, MIB);

    runtime.block_on(async {
        // The restarted OSD caught up: for every PG it holds, its copy has the primary's
        // newest version.
        let map = client.map().await;
        let messenger = common::admin_messenger(&path);
        let placement = tidepool_placement::Placement::new(&map);
        let pool = map.pool_by_name("data").expect("pool").id;
        let query = |osd: u32, pg: PgId| {
            let messenger = messenger.clone();
            let addr = map.osds[&tidepool_placement::OsdId(osd)]
                .addr
                .clone()
                .expect("addr")
                .parse()
                .expect("socket address");
            async move {
                match messenger
                    .call::<OsdRequest, OsdResponse>(
                        addr,
                        &format!("osd-{osd}"),
                        // Epoch 0: a look that fences nothing.
                        &OsdRequest::PgQuery {
                            pg,
                            epoch: tidepool_placement::Epoch(0),
                        },
                    )
                    .await
                {
                    Ok(OsdResponse::PgInfo {
                        copy: Some((info, _)),
                        ..
                    }) => info.last_update,
                    other => panic!("osd.{osd} {pg}: {other:?}"),
                }
            }
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut behind = Vec::new();
            for seed in 0..32 {
                let pg = PgId { pool, seed };
                let mapping = placement
                    .map_pg(pg, &mut tidepool_placement::Scratch::default())
                    .expect("mapping");
                let acting: Vec<u32> = mapping.acting.iter().flatten().map(|o| o.0).collect();
                if !acting.contains(&1) {
                    continue;
                }
                let primary = mapping.primary.expect("primary").0;
                let (theirs, ours) = (query(1, pg).await, query(primary, pg).await);
                if theirs != ours {
                    behind.push((pg, theirs, ours));
                }
            }
            if behind.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "osd.1 did not catch up: {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // Bad requests get errors; nothing crashes.
        assert!(matches!(
            client
                .execute("no-such-pool", "x", vec![ObjectOp::Stat])
                .await,
            Err(ObjectError::NoPool(_))
        ));
        assert!(matches!(
            client
                .execute("data", "never-written", vec![ObjectOp::Stat])
                .await,
            Err(ObjectError::Op(OpError::NotFound))
        ));
        assert!(matches!(
            client.execute("data", "\0meta", vec![ObjectOp::Stat]).await,
            Err(ObjectError::Op(OpError::Invalid(_)))
        ));
        let addr: std::net::SocketAddr = map.osds[&tidepool_placement::OsdId(0)]
            .addr
            .clone()
            .expect("addr")
            .parse()
            .expect("address");
        let missing_pool: OsdRequest = OsdRequest::Object(tidepool_proto::osd::ObjectRequest {
            epoch: map.epoch,
            pg: PgId {
                pool: PoolId(99),
                seed: 0,
            },
            name: "x".into(),
            ops: vec![ObjectOp::Stat],
            client: "test".into(),
            sequence: 1,
        });
        let answer: OsdResponse = messenger
            .call(addr, "osd-0", &missing_pool)
            .await
            .expect("answer");
        assert!(
            matches!(answer, OsdResponse::Object(Err(OpError::NoPool))),
            "{answer:?}"
        );
        let garbage: OsdRequest = OsdRequest::Replicate {
            epoch: map.epoch,
            pg: PgId { pool, seed: 0 },
            entry: tidepool_proto::osd::LogEntry {
                version: 1,
                epoch: map.epoch,
                name: "x".into(),
                delete: false,
                reqid: None,
            },
            transaction: vec![0xc1, 0xff, 0x00].into(),
        };
        let answer: Result<OsdResponse, _> = messenger.call(addr, "osd-0", &garbage).await;
        assert!(
            matches!(
                &answer,
                Err(tidepool_messenger::MessengerError::Remote(e))
                    if e.code == tidepool_proto::RemoteErrorCode::BadRequest
            ),
            "{answer:?}"
        );
    });
    cluster.wait_osds_up(4);
}

/// Rule: a PG whose last active interval's OSDs are all down is `down`, says which OSDs it
/// waits for, and serves nothing (not the empty copies of the OSDs that are up); when one of
/// them returns, it serves the data again.
#[test]
fn a_pg_waits_for_its_last_active_interval() {
    let mut cluster = Cluster::start("down", 5, 8, &[]);
    let path = cluster.path().to_path_buf();
    let runtime = common::runtime();
    let mut client = runtime.block_on(object_client(&path));
    let data = common::object_bytes(7, MIB);
    runtime
        .block_on(client.execute(
            "data",
            "kept",
            vec![ObjectOp::WriteFull(data.clone().into())],
        ))
        .expect("write");
    let map = runtime.block_on(client.map());
    let placement = tidepool_placement::Placement::new(&map);
    let pool = map.pool_by_name("data").expect("pool").id;
    let pg = placement.object_pg(pool, b"kept").expect("pg");
    let acting: Vec<usize> = placement
        .map_pg(pg, &mut tidepool_placement::Scratch::default())
        .expect("mapping")
        .acting
        .into_iter()
        .flatten()
        .map(|o| o.0 as usize)
        .collect();
    assert_eq!(acting.len(), 3);

    // Every holder of the PG stops at once.
    for &n in &acting {
        cluster.osds[n].take().expect("osd").kill();
    }
    cluster.wait_for(Duration::from_secs(60), "the holders marked down", || {
        let states = cluster.osd_states();
        acting
            .iter()
            .all(|n| states.get(&(*n as u64)).is_some_and(|(up, _)| !*up))
    });
    // Marked out, they leave the placement: the PG moves to the two OSDs left, which have no
    // copy of it.
    for &n in &acting {
        tidepool_tests::tidepool_ok(&path, &["osd", "out", &n.to_string()]);
    }
    let waiting = format!("pg {pg} is down, waiting for osd.{}", acting[0]);
    cluster.wait_for(Duration::from_secs(60), "the PG reported down", || {
        let status = cluster.json(&["status"]);
        status["health"]["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["summary"].as_str().is_some_and(|s| s.contains(&waiting)))
    });
    // A read waits rather than answer from the empty copies.
    client.deadline = Duration::from_secs(5);
    let read = runtime.block_on(common::read_whole(&client, "kept"));
    assert!(
        matches!(read, Err(ObjectError::Timeout { .. })),
        "a read of a down PG answered {read:?}"
    );

    // One holder returns (a booted OSD comes back in): the PG peers with it and serves the
    // data.
    cluster.osds[acting[1]] = Some(cluster.start_osd(acting[1]));
    tidepool_tests::tidepool_ok(&path, &["osd", "in", &acting[1].to_string()]);
    client.deadline = Duration::from_secs(60);
    let read = runtime
        .block_on(common::read_whole(&client, "kept"))
        .expect("read after the holder returned");
    assert!(read == data, "the PG's data came back changed");
}
