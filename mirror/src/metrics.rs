//! The mirror's Prometheus counters, rendered at `/metrics`: requests by
//! kind (manifest, blob), source (cache, upstream, stale) and result, bytes
//! served by source, bytes fetched from the registry, and verification
//! failures. A test proves a pull was served from the cache by these, and
//! an operator sees how much the mirror spares the registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    served: Mutex<BTreeMap<&'static str, u64>>,
    upstream_bytes: AtomicU64,
    verify_failures: AtomicU64,
    resumed: AtomicU64,
    hedged: AtomicU64,
    advertised: AtomicU64,
    resolve: Mutex<Histogram>,
}

/// Upper bounds (seconds) of the tag-resolution latency histogram.
const RESOLVE_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; RESOLVE_BUCKETS.len()],
    sum: f64,
    count: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// One request of `kind` answered from `source` with `result`.
    pub fn request(&self, kind: &'static str, source: &'static str, result: &'static str) {
        *lock(&self.requests)
            .entry((kind, source, result))
            .or_default() += 1;
    }

    /// `n` body bytes sent from `source`.
    pub fn served(&self, source: &'static str, n: u64) {
        *lock(&self.served).entry(source).or_default() += n;
    }

    /// `n` bytes received from a registry.
    pub fn upstream_bytes(&self, n: u64) {
        self.upstream_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// A tag resolved with the registry in `took`.
    pub fn resolved(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let mut h = lock(&self.resolve);
        for (i, b) in RESOLVE_BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// A download that continued from another source.
    pub fn resumed(&self) {
        self.resumed.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` digests announced to the other nodes.
    pub fn advertised(&self, n: u64) {
        self.advertised.fetch_add(n, Ordering::Relaxed);
    }

    /// A hedged request was sent (a slow peer joined by another).
    pub fn hedged(&self) {
        self.hedged.fetch_add(1, Ordering::Relaxed);
    }

    /// Content that did not match its digest.
    pub fn verify_failure(&self) {
        self.verify_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format, with `gauges` (name, help, value) of
    /// the mirror's state appended.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        {
            let h = lock(&self.resolve);
            out.push_str("# HELP berth_mirror_resolve_seconds Tag resolution with the registry.\n# TYPE berth_mirror_resolve_seconds histogram\n");
            for (i, b) in RESOLVE_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "berth_mirror_resolve_seconds_bucket{{le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "berth_mirror_resolve_seconds_bucket{{le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "berth_mirror_resolve_seconds_sum {}", h.sum);
            let _ = writeln!(out, "berth_mirror_resolve_seconds_count {}", h.count);
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out.push_str("# HELP berth_mirror_requests_total Requests by kind, source and result.\n# TYPE berth_mirror_requests_total counter\n");
        for ((kind, source, result), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "berth_mirror_requests_total{{kind=\"{kind}\",source=\"{source}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP berth_mirror_served_bytes_total Body bytes sent, by source.\n# TYPE berth_mirror_served_bytes_total counter\n");
        for (source, n) in lock(&self.served).iter() {
            let _ = writeln!(
                out,
                "berth_mirror_served_bytes_total{{source=\"{source}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP berth_mirror_upstream_bytes_total Bytes received from registries.\n# TYPE berth_mirror_upstream_bytes_total counter\nberth_mirror_upstream_bytes_total {}",
            self.upstream_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP berth_mirror_verify_failures_total Content that did not match its digest (never served whole, never cached).\n# TYPE berth_mirror_verify_failures_total counter\nberth_mirror_verify_failures_total {}",
            self.verify_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP berth_mirror_resumed_total Downloads that continued from another source after a stall or break.\n# TYPE berth_mirror_resumed_total counter\nberth_mirror_resumed_total {}",
            self.resumed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP berth_mirror_hedged_total Slow peers joined by a second request to another peer.\n# TYPE berth_mirror_hedged_total counter\nberth_mirror_hedged_total {}",
            self.hedged.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP berth_mirror_advertised_total Digests announced to the other nodes (routing).\n# TYPE berth_mirror_advertised_total counter\nberth_mirror_advertised_total {}",
            self.advertised.load(Ordering::Relaxed)
        );
        out
    }
}
