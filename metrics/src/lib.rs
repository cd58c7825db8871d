//! Prometheus metrics of every daemon (docs/observability.md): each process keeps one
//! [`Registry`] of its own (no global recorder), its daemon registers its counters and
//! histograms there, and [`render`] writes them in the text format (the binary serves it on
//! `GET /metrics`). No IO here: the daemons' crates depend on this one alone for metrics.
//!
//! Names follow Prometheus' conventions: `tidepool_<daemon>_…`, the unit in the name,
//! `_total` on counters. Labels come from fixed sets (an operation kind, a status class, a
//! PG state), never from keys, buckets or clients.

use std::time::Instant;

pub use prometheus::core::Collector;
pub use prometheus::{
    Gauge as FloatGauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Registry,
};
pub use prometheus::{HistogramOpts, Opts};

/// Latency buckets in seconds, 100 µs to 10 s: a 4 KiB write on one machine takes about a
/// millisecond, a degraded read or a commit waiting for a slow disk seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A metric that could not be registered: two of one name, a mistake in the daemon's code,
/// found when it starts.
#[derive(Debug)]
pub struct MetricsError(prometheus::Error);

impl std::fmt::Display for MetricsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "registering a metric: {}", self.0)
    }
}

impl std::error::Error for MetricsError {}

impl From<prometheus::Error> for MetricsError {
    fn from(error: prometheus::Error) -> MetricsError {
        MetricsError(error)
    }
}

/// `metric`, registered in `registry`.
pub fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> Result<M, MetricsError> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// A counter registered in `registry`.
pub fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    register(registry, IntCounter::with_opts(Opts::new(name, help)))
}

/// Counters by `labels`, registered in `registry`.
pub fn counters(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

/// A gauge registered in `registry`.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    register(registry, IntGauge::with_opts(Opts::new(name, help)))
}

/// Gauges by `labels`, registered in `registry`.
pub fn gauges(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

/// A gauge of a fractional value registered in `registry`.
pub fn float_gauge(
    registry: &Registry,
    name: &str,
    help: &str,
) -> Result<FloatGauge, MetricsError> {
    register(registry, FloatGauge::with_opts(Opts::new(name, help)))
}

/// Gauges of fractional values by `labels`, registered in `registry`.
pub fn float_gauges(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, MetricsError> {
    register(registry, GaugeVec::new(Opts::new(name, help), labels))
}

/// Latency histograms (in seconds, [`LATENCY_BUCKETS`]) by `labels`, registered in
/// `registry`.
pub fn latencies(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<HistogramVec, MetricsError> {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register(registry, HistogramVec::new(opts, labels))
}

/// A latency histogram (in seconds, [`LATENCY_BUCKETS`]) registered in `registry`.
pub fn latency(registry: &Registry, name: &str, help: &str) -> Result<Histogram, MetricsError> {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register(registry, Histogram::with_opts(opts))
}

/// Seconds since `start`, for a histogram.
pub fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The registry's metrics in Prometheus' text format.
pub fn render(registry: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|error| format!("# metrics could not be encoded: {error}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let registry = Registry::new();
        let ops = counters(&registry, "tidepool_test_ops_total", "Ops.", &["op"]).unwrap();
        let seconds = latencies(
            &registry,
            "tidepool_test_op_seconds",
            "Op latency.",
            &["op"],
        )
        .unwrap();
        ops.with_label_values(&["write"]).inc_by(3);
        seconds.with_label_values(&["write"]).observe(0.002);
        let text = render(&registry);
        assert!(
            text.contains("# TYPE tidepool_test_ops_total counter"),
            "{text}"
        );
        assert!(
            text.contains("tidepool_test_ops_total{op=\"write\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("tidepool_test_op_seconds_bucket{op=\"write\",le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tidepool_test_op_seconds_count{op=\"write\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_second_metric_of_one_name_is_refused() {
        let registry = Registry::new();
        gauge(&registry, "tidepool_test_g", "G.").unwrap();
        assert!(matches!(
            gauge(&registry, "tidepool_test_g", "G."),
            Err(MetricsError(_))
        ));
    }
}
