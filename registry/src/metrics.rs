//! Prometheus metrics for the registry, rendered in the text exposition
//! format at `/metrics`: requests by route, method and status, request
//! latency, bytes received and sent (blob bytes separately, so a mirror test
//! can prove the registry sent none), and upload sessions. Counters are
//! atomics or a short-held map; rendering never blocks a request for long.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The registry's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    blob_bytes_out: AtomicU64,
    uploads_started: AtomicU64,
    uploads_completed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Count one finished request.
    pub fn request(&self, route: &'static str, method: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((route, method.to_owned(), status))
            .or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let mut lat = lock(&self.latency);
        let h = lat.entry(route).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Count bytes received in request bodies.
    pub fn bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Count bytes sent in response bodies; `blob` for blob content.
    pub fn bytes_out(&self, n: u64, blob: bool) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        if blob {
            self.blob_bytes_out.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Count a started upload session.
    pub fn upload_started(&self) {
        self.uploads_started.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a completed (published) upload.
    pub fn upload_completed(&self) {
        self.uploads_completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Render every metric; `open_uploads` is read from the metadata store.
    pub fn render(&self, open_uploads: u64) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP berth_registry_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE berth_registry_requests_total counter\n");
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "berth_registry_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP berth_registry_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE berth_registry_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            for (b, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "berth_registry_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "berth_registry_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 berth_registry_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 berth_registry_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let counters = [
            (
                "berth_registry_received_bytes_total",
                "Bytes received in request bodies.",
                &self.bytes_in,
            ),
            (
                "berth_registry_sent_bytes_total",
                "Bytes sent in response bodies.",
                &self.bytes_out,
            ),
            (
                "berth_registry_blob_sent_bytes_total",
                "Blob content bytes sent.",
                &self.blob_bytes_out,
            ),
            (
                "berth_registry_uploads_started_total",
                "Upload sessions started.",
                &self.uploads_started,
            ),
            (
                "berth_registry_uploads_completed_total",
                "Uploads published as blobs.",
                &self.uploads_completed,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP berth_registry_upload_sessions Open upload sessions.\n\
             # TYPE berth_registry_upload_sessions gauge\nberth_registry_upload_sessions {open_uploads}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.request("manifest", "GET", 200, Duration::from_millis(2));
        m.request("manifest", "GET", 200, Duration::from_millis(30));
        m.bytes_out(10, true);
        let text = m.render(3);
        assert!(text.contains(
            r#"berth_registry_requests_total{route="manifest",method="GET",status="200"} 2"#
        ));
        assert!(text.contains(
            r#"berth_registry_request_duration_seconds_bucket{route="manifest",le="0.005"} 1"#
        ));
        assert!(text.contains("berth_registry_blob_sent_bytes_total 10"));
        assert!(text.contains("berth_registry_upload_sessions 3"));
    }
}
