//! The mount's Prometheus metrics (`tidepool_mount_…`, on `tidepool mount --metrics-addr`):
//! FUSE requests by operation, their latency to the answer, and the bytes read and written.

use std::time::Instant;

use tidepool_metrics::{
    self as metrics, HistogramVec, IntCounter, IntCounterVec, MetricsError, Registry,
};

#[derive(Debug)]
pub struct MountMetrics {
    ops: IntCounterVec,
    seconds: HistogramVec,
    pub read_bytes: IntCounter,
    pub written_bytes: IntCounter,
}

impl MountMetrics {
    pub fn new(registry: &Registry) -> Result<MountMetrics, MetricsError> {
        let bytes = metrics::counters(
            registry,
            "tidepool_mount_bytes_total",
            "Bytes read from and written to files of the mount",
            &["direction"],
        )?;
        Ok(MountMetrics {
            ops: metrics::counters(
                registry,
                "tidepool_mount_ops_total",
                "File system requests answered, by operation",
                &["op"],
            )?,
            seconds: metrics::latencies(
                registry,
                "tidepool_mount_op_seconds",
                "Time from a file system request to its answer, by operation",
                &["op"],
            )?,
            read_bytes: bytes.with_label_values(&["read"]),
            written_bytes: bytes.with_label_values(&["written"]),
        })
    }

    /// A request `op`, received at `start`, was answered.
    pub fn answered(&self, op: &str, start: Instant) {
        self.ops.with_label_values(&[op]).inc();
        self.seconds
            .with_label_values(&[op])
            .observe(metrics::seconds_since(start));
    }
}
