//! The flags every daemon takes for its Prometheus metrics, and the record of where each
//! daemon of a cluster folder serves them (`run/metrics/<daemon>`), which `tidepool up`'s
//! greeting and `tidepool status --format json` list.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use tidepool_metrics::Registry;

/// Where the daemons of a cluster folder record their metrics addresses, one file each.
pub const METRICS_DIR: &str = "run/metrics";

/// Flags of every daemon for its metrics.
#[derive(Debug, Clone, Default, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0: any free one). Loopback
    /// only, unless --metrics-public.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Let --metrics-addr be an address off loopback.
    #[arg(long)]
    pub metrics_public: bool,
}

impl MetricsArgs {
    /// Serves `registry` when asked to, and records the address bound in the cluster folder
    /// `dir` under `daemon` (`osd.3`, `mon.0`, `gateway`).
    pub async fn serve(&self, registry: &Registry, dir: &Path, daemon: &str) -> Result<()> {
        let Some(addr) = self.metrics_addr else {
            return Ok(());
        };
        if !addr.ip().is_loopback() && !self.metrics_public {
            bail!(
                "--metrics-addr {addr} is not a loopback address: metrics say much about the \
                 cluster; add --metrics-public to serve them there"
            );
        }
        let bound = serve(addr, registry.clone()).await?;
        // The record is for `tidepool up`'s status; a read-only cluster folder (a host's under
        // systemd, a Kubernetes secret) only goes without it.
        let records = dir.join(METRICS_DIR);
        if let Err(error) = std::fs::create_dir_all(&records)
            .and_then(|()| std::fs::write(records.join(daemon), bound.to_string()))
        {
            tracing::warn!(%error, folder = %records.display(), %bound, "metrics address not recorded");
        }
        Ok(())
    }
}

/// The metrics addresses recorded in the cluster folder `dir`, by daemon.
pub fn endpoints(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir.join(METRICS_DIR)) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let addr = std::fs::read_to_string(entry.path()).ok()?;
            Some((name, format!("http://{}/metrics", addr.trim())))
        })
        .collect()
}

/// Serves `GET /metrics` from `registry` on `addr` (port 0: any free one) for as long as the
/// runtime runs; returns the address bound.
async fn serve(addr: SocketAddr, registry: Registry) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    tidepool_metrics::render(&registry),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "metrics served at /metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_metrics_public() {
        let dir = std::env::temp_dir();
        let args = MetricsArgs {
            metrics_addr: Some("198.18.0.1:0".parse().unwrap()),
            metrics_public: false,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let error = runtime
            .block_on(args.serve(&Registry::new(), &dir, "test"))
            .unwrap_err();
        assert!(error.to_string().contains("--metrics-public"), "{error}");
    }
}
