//! Who may ask the monitors what, by the entity its certificate names, never by what a
//! message claims. On several hosts a host holds only the certificates of its own daemons,
//! so a host that is broken into must not be able to change the cluster beyond them.
//!
//! - `client-admin`: everything.
//! - `osd-N`: boot and mark down OSD N only, its beacons and failure reports as OSD N, and
//!   the PG changes a primary asks (`PgActive`, `PgTemp`).
//! - `gateway`: create the bucket layer's pools, and read users' keys.
//! - Anyone of the cluster: read the map, the status, the options and the report.
//! - Monitors speak to each other over their own channel (checked where it arrives).

use tidepool_placement::OsdId;
use tidepool_proto::mon::{Command, MonRequest};

/// The admin's entity.
pub const ADMIN: &str = "client-admin";
/// The gateways' entity.
pub const GATEWAY: &str = "gateway";

/// Whether `entity` (from its certificate; `None` when it names none) may ask `request`.
pub fn permitted(entity: Option<&str>, request: &MonRequest) -> bool {
    let Some(entity) = entity else {
        return false;
    };
    if entity == ADMIN {
        return true;
    }
    let osd = osd_of(entity);
    let is = |id: &OsdId| osd == Some(*id);
    match request {
        MonRequest::Command(request) => match &request.command {
            Command::OsdBoot { id, .. } | Command::OsdDown { id } => is(id),
            Command::PgActive(_) | Command::PgTemp(_) => osd.is_some(),
            Command::PoolCreate { .. } => entity == GATEWAY,
            _ => false,
        },
        MonRequest::Beacon(beacon) => is(&beacon.osd),
        MonRequest::Failure { reporter, .. } => is(reporter),
        MonRequest::GetUsers => entity == GATEWAY,
        MonRequest::GetMap
        | MonRequest::Status
        | MonRequest::Subscribe { .. }
        | MonRequest::GetReport
        | MonRequest::GetConfig
        | MonRequest::Peer { .. } => true,
    }
}

/// The OSD an entity `osd-N` is.
fn osd_of(entity: &str) -> Option<OsdId> {
    let digits = entity.strip_prefix("osd-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(OsdId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidepool_placement::{BucketType, PoolKind, Weight};
    use tidepool_proto::mon::Request;

    fn command(command: Command) -> MonRequest {
        MonRequest::Command(Request {
            client: "x".into(),
            sequence: 1,
            command,
        })
    }

    #[test]
    fn each_entity_asks_only_what_is_its_own() {
        let boot = |id| {
            command(Command::OsdBoot {
                id: OsdId(id),
                addr: "198.18.0.11:6800".into(),
            })
        };
        let pool = command(Command::PoolCreate {
            name: "p".into(),
            kind: PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
            pg_num: 8,
            failure_domain: BucketType::Host,
        });
        let create = command(Command::OsdCreate {
            host: "h".into(),
            weight: Weight::ONE,
        });
        let remove = command(Command::PoolRemove { name: "p".into() });

        for request in [&boot(3), &pool, &create, &remove, &MonRequest::GetUsers] {
            assert!(permitted(Some(ADMIN), request));
            assert!(!permitted(None, request));
            assert!(!permitted(Some("mon-0"), request));
        }
        assert!(permitted(Some("osd-3"), &boot(3)));
        assert!(!permitted(Some("osd-3"), &boot(4)));
        assert!(!permitted(Some("osd-3x"), &boot(3)));
        assert!(!permitted(Some("osd-"), &boot(0)));
        assert!(!permitted(Some("osd-3"), &pool));
        assert!(!permitted(Some("osd-3"), &create));
        assert!(!permitted(Some("osd-3"), &MonRequest::GetUsers));
        assert!(permitted(
            Some("osd-3"),
            &command(Command::PgTemp(Vec::new()))
        ));
        assert!(!permitted(
            Some(GATEWAY),
            &command(Command::PgTemp(Vec::new()))
        ));
        assert!(permitted(Some(GATEWAY), &pool));
        assert!(permitted(Some(GATEWAY), &MonRequest::GetUsers));
        assert!(!permitted(Some(GATEWAY), &remove));
        assert!(!permitted(Some(GATEWAY), &boot(3)));
        let failure = |reporter| MonRequest::Failure {
            reporter: OsdId(reporter),
            target: OsdId(1),
            epoch: tidepool_placement::Epoch(1),
        };
        assert!(permitted(Some("osd-2"), &failure(2)));
        assert!(!permitted(Some("osd-2"), &failure(1)));
        assert!(!permitted(Some(GATEWAY), &failure(2)));
        for entity in ["osd-2", GATEWAY, "client-mount"] {
            assert!(permitted(Some(entity), &MonRequest::GetMap));
            assert!(permitted(Some(entity), &MonRequest::Status));
        }
    }
}
