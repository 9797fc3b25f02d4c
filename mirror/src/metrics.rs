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

    /// A download that continued from another source.
    pub fn resumed(&self) {
        self.resumed.fetch_add(1, Ordering::Relaxed);
    }

    /// Content that did not match its digest.
    pub fn verify_failure(&self) {
        self.verify_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
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
        out
    }
}
