//! Prometheus metrics for the registry, on the `prometheus-client` crate
//! and rendered in the OpenMetrics text format at `/metrics`: requests by
//! route, method and status, request latency, bytes received and sent
//! (blob bytes separately, so a mirror test can prove the registry sent
//! none), upload sessions, and with S3 storage the store's requests by
//! operation and result, their latency, bytes written and read, retries
//! and redirects. Every update is an atomic add or a short read-locked
//! lookup; rendering never blocks a request for long.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the rendered metrics.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// The plain counters' names and help, in the order `Metrics::default`
/// registers them.
const COUNTERS: [(&str, &str); 5] = [
    (
        "berth_registry_received_bytes",
        "Bytes received in request bodies",
    ),
    ("berth_registry_sent_bytes", "Bytes sent in response bodies"),
    ("berth_registry_blob_sent_bytes", "Blob content bytes sent"),
    ("berth_registry_uploads_started", "Upload sessions started"),
    (
        "berth_registry_uploads_completed",
        "Uploads published as blobs",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct S3Labels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// Upper bounds (seconds) of the S3 latency histogram (a part upload takes
/// long).
const S3_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

fn s3_histogram() -> Histogram {
    Histogram::new(S3_BUCKETS)
}

/// What the S3 blob store counts; registered with the registry's metrics
/// by [`Metrics::s3`] (an unregistered one counts into the void).
#[derive(Debug, Clone)]
pub struct S3Metrics {
    requests: Family<S3Labels, Counter>,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    written: Counter,
    read: Counter,
    retries: Counter,
}

impl Default for S3Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(s3_histogram),
            written: Counter::default(),
            read: Counter::default(),
            retries: Counter::default(),
        }
    }
}

impl S3Metrics {
    /// One S3 request of `operation` ended with `result` (`ok`, `error`,
    /// `unavailable`) after `elapsed` (its retries included).
    pub fn request(&self, operation: &'static str, result: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&S3Labels { operation, result })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Blob bytes written to the bucket.
    pub fn written(&self, n: u64) {
        self.written.inc_by(n);
    }

    /// Blob bytes read from the bucket.
    pub fn read(&self, n: u64) {
        self.read.inc_by(n);
    }

    /// One retried attempt.
    pub fn retry(&self) {
        self.retries.inc();
    }
}

/// The registry's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    bytes_in: Counter,
    bytes_out: Counter,
    blob_bytes_out: Counter,
    uploads_started: Counter,
    uploads_completed: Counter,
    upload_sessions: Gauge,
    blob_redirects: Counter,
    uploads_expired: Counter,
    gc_last_run: Gauge,
    gc_reclaimed: Counter,
    gc_removed: Counter,
    gc_kept: Gauge,
    job_failures: Family<JobLabels, Counter>,
    webhook_backlog: Gauge,
    free_bytes: Gauge,
    floor_bytes: Gauge,
    /// S3 multipart uploads open for upload sessions (set at render).
    pub s3_gauge: Option<Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let m = Self {
            requests,
            latency,
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            blob_bytes_out: Counter::default(),
            uploads_started: Counter::default(),
            uploads_completed: Counter::default(),
            upload_sessions: Gauge::default(),
            blob_redirects: Counter::default(),
            uploads_expired: Counter::default(),
            gc_last_run: Gauge::default(),
            gc_reclaimed: Counter::default(),
            gc_removed: Counter::default(),
            gc_kept: Gauge::default(),
            job_failures: Family::default(),
            webhook_backlog: Gauge::default(),
            free_bytes: Gauge::default(),
            floor_bytes: Gauge::default(),
            s3_gauge: None,
            registry: Registry::default(),
        };
        registry.register(
            "berth_registry_requests",
            "HTTP requests by route, method and status",
            m.requests.clone(),
        );
        registry.register(
            "berth_registry_request_duration_seconds",
            "Request latency by route",
            m.latency.clone(),
        );
        let counters = [
            &m.bytes_in,
            &m.bytes_out,
            &m.blob_bytes_out,
            &m.uploads_started,
            &m.uploads_completed,
        ];
        for ((name, help), counter) in COUNTERS.iter().zip(counters) {
            registry.register(*name, *help, counter.clone());
        }
        registry.register(
            "berth_registry_upload_sessions",
            "Open upload sessions",
            m.upload_sessions.clone(),
        );
        registry.register(
            "berth_registry_uploads_expired",
            "Abandoned upload sessions freed",
            m.uploads_expired.clone(),
        );
        registry.register(
            "berth_registry_blob_redirects",
            "Blob GETs answered with a redirect to the object store",
            m.blob_redirects.clone(),
        );
        registry.register(
            "berth_registry_gc_last_run_timestamp_seconds",
            "When the last garbage collection finished (unix seconds)",
            m.gc_last_run.clone(),
        );
        registry.register(
            "berth_registry_gc_reclaimed_bytes",
            "Blob bytes garbage collection removed",
            m.gc_reclaimed.clone(),
        );
        registry.register(
            "berth_registry_gc_removed_blobs",
            "Blobs garbage collection removed",
            m.gc_removed.clone(),
        );
        registry.register(
            "berth_registry_gc_kept_blobs",
            "Blobs the last garbage collection kept",
            m.gc_kept.clone(),
        );
        registry.register(
            "berth_registry_job_failures",
            "Retention and garbage collection runs that failed, by job",
            m.job_failures.clone(),
        );
        registry.register(
            "berth_registry_webhook_backlog",
            "Webhook deliveries waiting to be sent (or retried)",
            m.webhook_backlog.clone(),
        );
        registry.register(
            "berth_registry_storage_free_bytes",
            "Free bytes on the file system of the data directory (-1: unknown)",
            m.free_bytes.clone(),
        );
        registry.register(
            "berth_registry_storage_floor_bytes",
            "Uploads are refused below this many free bytes ([storage] min_free_mib)",
            m.floor_bytes.clone(),
        );
        // Both jobs' series exist from the start, so an alert on their
        // increase sees the first failure.
        for job in ["gc", "retention"] {
            let _ = m.job_failures.get_or_create(&JobLabels {
                job: job.to_owned(),
            });
        }
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Count one finished request.
    pub fn request(&self, route: &'static str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Count bytes received in request bodies.
    pub fn bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    /// Count bytes sent in response bodies; `blob` for blob content.
    pub fn bytes_out(&self, n: u64, blob: bool) {
        self.bytes_out.inc_by(n);
        if blob {
            self.blob_bytes_out.inc_by(n);
        }
    }

    /// Count abandoned upload sessions freed.
    pub fn uploads_expired(&self, n: u64) {
        self.uploads_expired.inc_by(n);
    }

    /// Set the data directory's free bytes (`None`: unknown).
    pub fn free_bytes(&self, free: Option<u64>) {
        self.free_bytes
            .set(free.map_or(-1, |f| i64::try_from(f).unwrap_or(i64::MAX)));
    }

    /// Set the free-space floor.
    pub fn floor_bytes(&self, floor: u64) {
        self.floor_bytes
            .set(i64::try_from(floor).unwrap_or(i64::MAX));
    }

    /// Record a finished garbage collection.
    pub fn gc_ran(&self, report: &crate::gc::GcReport, at: u64) {
        self.gc_last_run.set(at as i64);
        self.gc_reclaimed.inc_by(report.bytes);
        self.gc_removed.inc_by(report.blobs.len() as u64);
        self.gc_kept.set(report.blobs_kept as i64);
    }

    /// Count a failed retention or garbage collection run (`job`).
    pub fn job_failed(&self, job: &str) {
        self.job_failures
            .get_or_create(&JobLabels {
                job: job.to_owned(),
            })
            .inc();
    }

    /// Count a blob GET redirected to the object store.
    pub fn blob_redirect(&self) {
        self.blob_redirects.inc();
    }

    /// The S3 store's metrics, registered here.
    pub fn s3(&mut self) -> S3Metrics {
        let m = S3Metrics::default();
        self.registry.register(
            "berth_registry_s3_requests",
            "S3 requests by operation and result (ok, error, unavailable)",
            m.requests.clone(),
        );
        self.registry.register(
            "berth_registry_s3_request_duration_seconds",
            "S3 request latency by operation, retries included",
            m.latency.clone(),
        );
        self.registry.register(
            "berth_registry_s3_written_bytes",
            "Blob bytes written to the bucket",
            m.written.clone(),
        );
        self.registry.register(
            "berth_registry_s3_read_bytes",
            "Blob bytes read from the bucket",
            m.read.clone(),
        );
        self.registry.register(
            "berth_registry_s3_retries",
            "S3 request attempts after the first",
            m.retries.clone(),
        );
        let open = Gauge::default();
        self.registry.register(
            "berth_registry_s3_multipart_uploads",
            "S3 multipart uploads open for upload sessions",
            open.clone(),
        );
        self.s3_gauge = Some(open);
        m
    }

    /// Count a started upload session.
    pub fn upload_started(&self) {
        self.uploads_started.inc();
    }

    /// Count a completed (published) upload.
    pub fn upload_completed(&self) {
        self.uploads_completed.inc();
    }

    /// Render every metric; `open_uploads` and `webhook_backlog` are read
    /// from the metadata store.
    pub fn render(&self, open_uploads: u64, webhook_backlog: u64) -> String {
        self.upload_sessions
            .set(i64::try_from(open_uploads).unwrap_or(i64::MAX));
        self.webhook_backlog
            .set(i64::try_from(webhook_backlog).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot render the metrics");
        }
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
        m.job_failed("gc");
        let text = m.render(3, 7);
        assert!(text.contains(r#"berth_registry_job_failures_total{job="gc"} 1"#));
        assert!(text.contains("berth_registry_webhook_backlog 7"));
        assert!(text.contains(
            r#"berth_registry_requests_total{route="manifest",method="GET",status="200"} 2"#
        ));
        assert!(text.contains(
            r#"berth_registry_request_duration_seconds_bucket{le="0.005",route="manifest"} 1"#
        ));
        assert!(text.contains("berth_registry_blob_sent_bytes_total 10"));
        assert!(text.contains("berth_registry_upload_sessions 3"));
    }
}
