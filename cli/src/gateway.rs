//! `tidepool gateway`: the S3 gateway over the cluster of a cluster folder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tidepool_buckets::{Buckets, BucketsConfig};
use tidepool_client::MonClient;
use tidepool_gateway::GatewayConfig;
use tidepool_messenger::{ClusterCa, Identity};
use tidepool_placement::{BucketType, PoolKind};
use tidepool_proto::mon::{Command, CommandError};

use crate::admin::{runtime, ClusterArgs};
use crate::cluster::load_cluster_id;

/// The certificate the gateway speaks with (the monitors let it read users' keys).
pub const GATEWAY_ENTITY: &str = "gateway";

/// Flags of `tidepool gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Where to serve S3.
    #[arg(long, default_value = "127.0.0.1:7480")]
    bind: SocketAddr,
    /// Seconds unlinked stripes are kept before the garbage collector removes them.
    #[arg(long, default_value_t = 120)]
    gc_delay: u64,
    /// Seconds between garbage collection passes.
    #[arg(long, default_value_t = 30)]
    gc_interval: u64,
    /// Seconds between lifecycle passes (0: none by this gateway).
    #[arg(long, default_value_t = 3600)]
    lifecycle_interval: u64,
    /// Seconds a lifecycle rule's day lasts (shorter only to try rules out).
    #[arg(long, default_value_t = 86_400)]
    lifecycle_day: u64,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

/// Runs the gateway until Ctrl-C or SIGTERM.
pub fn gateway(args: GatewayArgs) -> Result<()> {
    crate::logs::name("gateway");
    let dir = args.cluster.dir();
    let cluster_id = load_cluster_id(&dir)?;
    let certs = dir.join("certs");
    if !certs.join(format!("{GATEWAY_ENTITY}.pem")).exists() {
        ClusterCa::load(&dir, &cluster_id)?.issue_into(GATEWAY_ENTITY, &certs)?;
    }
    let identity = Identity::load(&dir, &cluster_id, GATEWAY_ENTITY)?;
    let config = BucketsConfig {
        gc_delay: Duration::from_secs(args.gc_delay),
        lifecycle_day: Duration::from_secs(args.lifecycle_day.max(1)),
        ..BucketsConfig::default()
    };
    runtime()?.block_on(async {
        let mut mon = MonClient::new(&dir, &identity)?;
        let map = mon.map().await?;
        let hosts = map
            .buckets
            .values()
            .filter(|b| b.kind == BucketType::Host)
            .count();
        let size = map.osds.len().clamp(1, 3) as u8;
        let domain = if hosts >= usize::from(size) {
            BucketType::Host
        } else {
            BucketType::Osd
        };
        ensure_pools(&mut mon, &config, size, domain).await?;
        let client = crate::objects::object_client(&dir, &identity).await?;
        let buckets = Buckets::new(Arc::new(client), config);
        let gateway = GatewayConfig {
            bind: args.bind,
            gc_interval: Duration::from_secs(args.gc_interval.max(1)),
            lifecycle_interval: (args.lifecycle_interval > 0)
                .then(|| Duration::from_secs(args.lifecycle_interval)),
            metrics: tidepool_metrics::Registry::new(),
        };
        args.metrics
            .serve(&gateway.metrics, &dir, GATEWAY_ENTITY)
            .await?;
        tidepool_gateway::serve(buckets, mon, gateway, crate::daemons::daemon_stopped())
            .await
            .with_context(|| format!("serving S3 on {}", args.bind))
    })
}

/// Creates the bucket layer's pools when they are missing, with `size` copies (writes need
/// two, or one in smaller pools) across `domain`.
pub async fn ensure_pools(
    mon: &mut MonClient,
    config: &BucketsConfig,
    size: u8,
    domain: BucketType,
) -> Result<()> {
    let map = mon.map().await?;
    for (name, pg_num) in [(&config.index_pool, 8), (&config.data_pool, 32)] {
        if map.pool_by_name(name).is_some() {
            continue;
        }
        let command = Command::PoolCreate {
            name: name.clone(),
            kind: PoolKind::Replicated {
                size,
                min_size: if size >= 3 { 2 } else { 1 },
            },
            pg_num,
            failure_domain: domain,
        };
        match mon.command(command).await? {
            Ok(_) | Err(CommandError::Exists(_)) => {}
            Err(error) => anyhow::bail!("creating pool {name}: {error}"),
        }
    }
    Ok(())
}
