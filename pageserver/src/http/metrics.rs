//! Process-wide metrics, rendered in the Prometheus text format by `GET /metrics`.
//!
//! Hand-written (atomics) rather than the `prometheus` crate: a handful of counters and one
//! histogram do not justify the dependency.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS_SECONDS: [f64; 10] =
    [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A histogram of durations with fixed buckets.
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS_SECONDS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The pageserver's metrics.
pub struct Metrics {
    pub ingest_bytes: AtomicU64,
    pub getpage_requests: AtomicU64,
    pub getpage_latency: Histogram,
    pub redo_latency: Histogram,
    pub page_service_errors: AtomicU64,
    /// Reconstructions that found a cached materialized version.
    pub page_cache_hits: AtomicU64,
    /// Reconstructions that found none.
    pub page_cache_misses: AtomicU64,
    /// Bytes charged for the entries of the materialized page caches.
    pub page_cache_bytes: AtomicU64,
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics {
    ingest_bytes: AtomicU64::new(0),
    getpage_requests: AtomicU64::new(0),
    getpage_latency: Histogram::new(),
    redo_latency: Histogram::new(),
    page_service_errors: AtomicU64::new(0),
    page_cache_hits: AtomicU64::new(0),
    page_cache_misses: AtomicU64::new(0),
    page_cache_bytes: AtomicU64::new(0),
};

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// Renders everything; `layers` is (count, bytes) of layer files on disk.
pub fn render(layers: (usize, u64)) -> String {
    let m = &METRICS;
    let mut out = String::new();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(
        &mut out,
        "pageserver_wal_ingest_bytes_total",
        "Bytes of WAL (LSN distance) ingested or imported.",
        load(&m.ingest_bytes),
    );
    counter(
        &mut out,
        "pageserver_getpage_requests_total",
        "GetPage requests served.",
        load(&m.getpage_requests),
    );
    counter(
        &mut out,
        "pageserver_page_service_errors_total",
        "Page service requests answered with an error.",
        load(&m.page_service_errors),
    );
    counter(
        &mut out,
        "pageserver_page_cache_hits_total",
        "Reconstructions served (fully or partly) from the materialized page cache.",
        load(&m.page_cache_hits),
    );
    counter(
        &mut out,
        "pageserver_page_cache_misses_total",
        "Reconstructions that found no cached materialized version.",
        load(&m.page_cache_misses),
    );
    gauge(
        &mut out,
        "pageserver_page_cache_bytes",
        "Bytes held by the materialized page cache.",
        load(&m.page_cache_bytes),
    );
    m.getpage_latency.render(
        "pageserver_getpage_latency_seconds",
        "Time to answer a GetPage request.",
        &mut out,
    );
    m.redo_latency.render(
        "pageserver_wal_redo_seconds",
        "Time spent rebuilding values with WAL redo.",
        &mut out,
    );
    gauge(
        &mut out,
        "pageserver_layer_files",
        "Layer files on local disk.",
        layers.0 as u64,
    );
    gauge(
        &mut out,
        "pageserver_layer_bytes",
        "Bytes of layer files on local disk.",
        layers.1,
    );
    for (name, kind, help, v) in crate::walreceiver::METRICS.samples() {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(20));
        let mut s = String::new();
        h.render("x", "help", &mut s);
        assert!(s.contains("x_bucket{le=\"0.0001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.05\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 2\n"), "{s}");
        assert!(s.contains("x_count 2\n"), "{s}");
    }

    #[test]
    fn render_has_page_cache_metrics() {
        let text = render((0, 0));
        for name in [
            "pageserver_page_cache_hits_total ",
            "pageserver_page_cache_misses_total ",
            "pageserver_page_cache_bytes ",
            "pageserver_walreceiver_wal_bytes_received_total ",
            "pageserver_walreceiver_records_ingested_total ",
            "pageserver_walreceiver_reconnects_total ",
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing: {text}"
            );
        }
    }
}
