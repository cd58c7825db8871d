//! [`ObjectClient`]: object transactions sent to each PG's primary. Placement is computed from
//! the map; when an OSD says the client's map is old, or that it is not the primary, or does
//! not answer, the client fetches the newest map and resends (with the same request number,
//! so a change is made once) until a bounded deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidepool_messenger::{Messenger, MessengerError};
use tidepool_placement::{ClusterMap, OsdId, PgId, Placement, Scratch};
use tidepool_proto::osd::{ObjectOp, ObjectRequest, OpError, OpOutput, OsdRequest, OsdResponse};
use tidepool_proto::scrub::{ScrubRecord, ScrubReport};
use tokio::sync::{Mutex, RwLock};

use crate::{ClientError, MonClient};

/// How long one attempt at a primary may take; a primary that does not answer in time is
/// asked again (under a newer map, if it was replaced).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a primary may take to list a page of a PG's objects.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a primary may take to scrub a PG (a deep scrub reads every byte of every holder).
const SCRUB_TIMEOUT: Duration = Duration::from_secs(600);

/// Why an object transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The OSD refused it on its own terms (no such object, a failed guard, …).
    #[error(transparent)]
    Op(#[from] OpError),
    /// No such pool.
    #[error("no pool named {0:?}")]
    NoPool(String),
    /// The monitors could not be reached.
    #[error(transparent)]
    Monitors(#[from] ClientError),
    /// No OSD served the request before the deadline.
    #[error("no answer for {what} within {waited:?} (last: {last})")]
    Timeout {
        /// The request.
        what: String,
        /// How long the client tried.
        waited: Duration,
        /// The last thing that went wrong.
        last: String,
    },
}

impl ObjectError {
    /// Whether the operation may have been applied although it failed: no OSD answered it
    /// before the deadline, so it may have been applied and its answer lost. Every other error
    /// is an answer that it was not.
    pub fn in_doubt(&self) -> bool {
        matches!(self, ObjectError::Timeout { .. })
    }
}

/// Keeps `view` at the newest map: each answer to a held subscription brings the epochs after
/// the one the client has.
async fn follow(mut mon: MonClient, view: Arc<RwLock<Arc<View>>>) {
    loop {
        let current = view.read().await.clone();
        match mon
            .subscribe(current.map.epoch, Duration::from_secs(10))
            .await
        {
            Ok(Some(update)) => {
                if let Ok(map) = update.apply(Some(&current.map)) {
                    let mut view = view.write().await;
                    if map.epoch > view.map.epoch {
                        *view = Arc::new(View {
                            placement: Placement::new(&map),
                            map,
                        });
                    }
                }
            }
            Ok(None) => {}
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

impl Drop for ObjectClient {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// A compiled map.
#[derive(Debug)]
struct View {
    map: ClusterMap,
    placement: Placement,
}

/// Sends object transactions to primaries.
#[derive(Debug)]
pub struct ObjectClient {
    messenger: Messenger,
    mon: Mutex<MonClient>,
    view: Arc<RwLock<Arc<View>>>,
    /// Follows the map through a subscription; stopped when the client is dropped.
    follower: tokio::task::JoinHandle<()>,
    client: String,
    sequence: AtomicU64,
    /// How long a transaction may take, resends included.
    pub deadline: Duration,
}

impl ObjectClient {
    /// A client that talks to OSDs over `messenger` and follows the map through `mon` (and a
    /// subscription of its own on the same endpoint).
    pub async fn new(
        messenger: Messenger,
        mut mon: MonClient,
    ) -> Result<ObjectClient, ClientError> {
        let map = mon.map().await?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let view = Arc::new(RwLock::new(Arc::new(View {
            placement: Placement::new(&map),
            map,
        })));
        let subscriber =
            MonClient::with_messenger(messenger.clone(), mon.monmap().clone(), "client");
        let follower = tokio::spawn(follow(subscriber, view.clone()));
        Ok(ObjectClient {
            messenger,
            mon: Mutex::new(mon),
            view,
            follower,
            client: format!("client-{}-{nanos}", std::process::id()),
            sequence: AtomicU64::new(0),
            deadline: Duration::from_secs(60),
        })
    }

    /// The map in use.
    pub async fn map(&self) -> ClusterMap {
        self.view.read().await.map.clone()
    }

    /// Fetches the newest map now (the subscription may not have brought it yet).
    async fn refresh(&self) -> Result<(), ClientError> {
        let map = self.mon.lock().await.map().await?;
        let mut view = self.view.write().await;
        if map.epoch > view.map.epoch {
            *view = Arc::new(View {
                placement: Placement::new(&map),
                map,
            });
        }
        Ok(())
    }

    fn route(view: &View, pool: &str, name: &str) -> Option<(PgId, Option<OsdId>)> {
        let pool = view.map.pool_by_name(pool)?;
        let pg = view.placement.object_pg(pool.id, name.as_bytes())?;
        let mapping = view.placement.map_pg(pg, &mut Scratch::default())?;
        Some((pg, mapping.primary))
    }

    /// Where object `name` of `pool` lives under the current map: its PG and the PG's
    /// primary (`None` when the pool does not exist).
    pub async fn locate(&self, pool: &str, name: &str) -> Option<(PgId, Option<OsdId>)> {
        Self::route(&*self.view.read().await, pool, name)
    }

    /// Runs `ops` on object `name` of `pool` as one transaction: returns the object's version
    /// and one output per step.
    pub async fn execute(
        &self,
        pool: &str,
        name: &str,
        ops: Vec<ObjectOp>,
    ) -> Result<(u64, Vec<OpOutput>), ObjectError> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        let mut last: String;
        let mut pause = Duration::from_millis(50);
        let mut refreshed = false;
        loop {
            let view = self.view.read().await.clone();
            let Some((pg, primary)) = Self::route(&view, pool, name) else {
                if refreshed {
                    return Err(ObjectError::NoPool(pool.to_owned()));
                }
                self.refresh().await?;
                refreshed = true;
                continue;
            };
            let addr = primary
                .and_then(|p| view.map.osds.get(&p))
                .and_then(|o| o.addr.as_deref())
                .and_then(|a| a.parse().ok());
            match (primary, addr) {
                (Some(primary), Some(addr)) => {
                    let request: OsdRequest = OsdRequest::Object(ObjectRequest {
                        epoch: view.map.epoch,
                        pg,
                        name: name.to_owned(),
                        ops: ops.clone(),
                        client: self.client.clone(),
                        sequence,
                    });
                    let entity = format!("osd-{}", primary.0);
                    let answer: Result<OsdResponse, MessengerError> = self
                        .messenger
                        .call_within(addr, &entity, &request, ATTEMPT_TIMEOUT)
                        .await;
                    match answer {
                        Ok(OsdResponse::Object(Ok(result))) => return Ok(result),
                        Ok(OsdResponse::Object(Err(OpError::Undersized { up, min_size }))) => {
                            last = format!("PG {pg} has {up} of {min_size} copies up");
                        }
                        Ok(OsdResponse::Object(Err(error))) => return Err(error.into()),
                        Ok(OsdResponse::StaleEpoch { have }) => {
                            last =
                                format!("map epoch {} is older than {}", view.map.epoch.0, have.0);
                        }
                        Ok(OsdResponse::NotPrimary) => {
                            last = format!("osd.{} is not the primary of {pg}", primary.0);
                        }
                        Ok(other) => last = format!("osd.{}: {other:?}", primary.0),
                        Err(error) => last = format!("osd.{}: {error}", primary.0),
                    }
                }
                _ => last = format!("PG {pg} has no primary up"),
            }
            if started.elapsed() > self.deadline {
                return Err(ObjectError::Timeout {
                    what: format!("{pool}/{name}"),
                    waited: self.deadline,
                    last,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            let _ = self.refresh().await;
        }
    }

    /// The names of the objects of `pool`, in PG order then name order.
    pub async fn list(&self, pool: &str) -> Result<Vec<String>, ObjectError> {
        let view = self.view.read().await.clone();
        let pool_id = view
            .map
            .pool_by_name(pool)
            .ok_or_else(|| ObjectError::NoPool(pool.to_owned()))?
            .id;
        let pg_num = view.map.pools[&pool_id].pg_num;
        let mut names = Vec::new();
        for seed in 0..pg_num {
            let pg = PgId {
                pool: pool_id,
                seed,
            };
            let mut start_after = None;
            loop {
                let (page, done) = self.list_page(pg, start_after.clone()).await?;
                start_after = page.last().cloned();
                names.extend(page);
                if done {
                    break;
                }
            }
        }
        Ok(names)
    }

    async fn list_page(
        &self,
        pg: PgId,
        start_after: Option<String>,
    ) -> Result<(Vec<String>, bool), ObjectError> {
        let request = OsdRequest::PgList { pg, start_after };
        let what = format!("listing {pg}");
        self.call_primary(pg, &request, &what, LIST_TIMEOUT, |answer| match answer {
            OsdResponse::PgList { names, done } => Ok((names, done)),
            other => Err(format!("{other:?}")),
        })
        .await
    }

    /// Scrubs `pg` now (reading every byte when `deep`), then repairs what has a provably
    /// good copy when `repair`; returns what its primary found and repaired. A PG that is not
    /// active and clean is retried until the client's deadline.
    pub async fn scrub(
        &self,
        pg: PgId,
        deep: bool,
        repair: bool,
    ) -> Result<ScrubReport, ObjectError> {
        let what = format!("scrubbing {pg}");
        let request = OsdRequest::PgScrub { pg, deep, repair };
        self.call_primary(pg, &request, &what, SCRUB_TIMEOUT, |answer| match answer {
            OsdResponse::Scrubbed(report) => Ok(report),
            OsdResponse::Failed(reason) => Err(reason),
            other => Err(format!("{other:?}")),
        })
        .await
    }

    /// The record of the last scrubs of `pg`, from its primary: when they ran, and the
    /// inconsistencies they found that are not repaired.
    pub async fn scrub_record(&self, pg: PgId) -> Result<ScrubRecord, ObjectError> {
        let what = format!("asking for the scrub record of {pg}");
        let request = OsdRequest::PgScrubRecord { pg };
        self.call_primary(pg, &request, &what, LIST_TIMEOUT, |answer| match answer {
            OsdResponse::ScrubRecord(record) => Ok(record),
            OsdResponse::Failed(reason) => Err(reason),
            other => Err(format!("{other:?}")),
        })
        .await
    }

    /// Sends `request` to the primary of `pg` (each attempt within `limit`) until `accept`
    /// takes its answer, or times out with the last refusal; `what` names the request in that
    /// error.
    async fn call_primary<T>(
        &self,
        pg: PgId,
        request: &OsdRequest,
        what: &str,
        limit: Duration,
        accept: impl Fn(OsdResponse) -> Result<T, String>,
    ) -> Result<T, ObjectError> {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            let view = self.view.read().await.clone();
            let primary = view
                .placement
                .map_pg(pg, &mut Scratch::default())
                .and_then(|m| m.primary);
            let addr = primary
                .and_then(|p| view.map.osds.get(&p))
                .and_then(|o| o.addr.as_deref())
                .and_then(|a| a.parse().ok());
            if let (Some(primary), Some(addr)) = (primary, addr) {
                match self
                    .messenger
                    .call_within(addr, &format!("osd-{}", primary.0), request, limit)
                    .await
                {
                    Ok(answer) => match accept(answer) {
                        Ok(result) => return Ok(result),
                        Err(refused) => last = refused,
                    },
                    Err(error) => last = error.to_string(),
                }
            }
            if started.elapsed() > self.deadline {
                return Err(ObjectError::Timeout {
                    what: what.to_owned(),
                    waited: self.deadline,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = self.refresh().await;
        }
    }
}
