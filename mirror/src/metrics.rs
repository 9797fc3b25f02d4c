//! The mirror's Prometheus metrics, on the `prometheus-client` crate and
//! rendered in the OpenMetrics text format at `/metrics`: requests by kind
//! (manifest, blob), source (cache, upstream, stale, …) and result, bytes
//! served by source, bytes fetched from the registry, verification
//! failures, resumed and hedged downloads, cold-blob claims answered (as
//! coordinator), advertised digests, and tag
//! resolution latency. A test proves a pull was served from the cache by
//! these, and an operator sees how much the mirror spares the registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the rendered metrics.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the tag-resolution latency histogram.
const RESOLVE_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    source: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RegistryLabels {
    registry: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// The mirror's state at the moment of a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct State {
    /// Other nodes known to routing.
    pub peers: u64,
    /// Of them, under penalty.
    pub peers_penalised: u64,
    /// Blobs being fetched now.
    pub downloads_in_flight: u64,
}

/// The metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    served: Family<SourceLabels, Counter>,
    registry_up: Family<RegistryLabels, Gauge>,
    upstream_bytes: Counter,
    verify_failures: Counter,
    resumed: Counter,
    hedged: Counter,
    claims_granted: Counter,
    claims_followed: Counter,
    advertised: Counter,
    resolve: Histogram,
    peers: Gauge,
    peers_penalised: Gauge,
    downloads_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            served: Family::default(),
            registry_up: Family::default(),
            upstream_bytes: Counter::default(),
            verify_failures: Counter::default(),
            resumed: Counter::default(),
            hedged: Counter::default(),
            claims_granted: Counter::default(),
            claims_followed: Counter::default(),
            advertised: Counter::default(),
            resolve: Histogram::new(RESOLVE_BUCKETS),
            peers: Gauge::default(),
            peers_penalised: Gauge::default(),
            downloads_in_flight: Gauge::default(),
        };
        registry.register(
            "berth_mirror_resolve_seconds",
            "Tag resolution with the registry",
            m.resolve.clone(),
        );
        for (name, help, gauge) in [
            (
                "berth_mirror_peers",
                "Other nodes known to routing",
                &m.peers,
            ),
            (
                "berth_mirror_peers_penalised",
                "Peers skipped for sending bytes that did not match",
                &m.peers_penalised,
            ),
            (
                "berth_mirror_downloads_in_flight",
                "Blobs being fetched now",
                &m.downloads_in_flight,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "berth_mirror_requests",
            "Requests by kind, source and result",
            m.requests.clone(),
        );
        registry.register(
            "berth_mirror_registry_up",
            "Whether each mirrored registry answered the last request or probe (1) or not (0)",
            m.registry_up.clone(),
        );
        registry.register(
            "berth_mirror_served_bytes",
            "Body bytes sent, by source",
            m.served.clone(),
        );
        for (name, help, counter) in [
            (
                "berth_mirror_upstream_bytes",
                "Bytes received from registries",
                &m.upstream_bytes,
            ),
            (
                "berth_mirror_verify_failures",
                "Content that did not match its digest (never served whole, never cached)",
                &m.verify_failures,
            ),
            (
                "berth_mirror_resumed",
                "Downloads that continued from another source after a stall or break",
                &m.resumed,
            ),
            (
                "berth_mirror_hedged",
                "Slow peers joined by a second request to another peer",
                &m.hedged,
            ),
            (
                "berth_mirror_claims_granted",
                "Cold blobs this node, as coordinator, let the asking node fetch from the registry",
                &m.claims_granted,
            ),
            (
                "berth_mirror_claims_followed",
                "Cold blobs this node, as coordinator, told the asking node to read from another",
                &m.claims_followed,
            ),
            (
                "berth_mirror_advertised",
                "Digests announced to the other nodes (routing)",
                &m.advertised,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        Self { registry, ..m }
    }
}

impl Metrics {
    /// One request of `kind` answered from `source` with `result`.
    pub fn request(&self, kind: &'static str, source: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                kind,
                source,
                result,
            })
            .inc();
    }

    /// `n` body bytes sent from `source`.
    pub fn served(&self, source: &'static str, n: u64) {
        self.served
            .get_or_create(&SourceLabels { source })
            .inc_by(n);
    }

    /// Whether `registry` is reachable.
    pub fn registry_up(&self, registry: &str, up: bool) {
        self.registry_up
            .get_or_create(&RegistryLabels {
                registry: registry.to_owned(),
            })
            .set(i64::from(up));
    }

    /// `n` bytes received from a registry.
    pub fn upstream_bytes(&self, n: u64) {
        self.upstream_bytes.inc_by(n);
    }

    /// A tag resolved with the registry in `took`.
    pub fn resolved(&self, took: std::time::Duration) {
        self.resolve.observe(took.as_secs_f64());
    }

    /// A download that continued from another source.
    pub fn resumed(&self) {
        self.resumed.inc();
    }

    /// `n` digests announced to the other nodes.
    pub fn advertised(&self, n: u64) {
        self.advertised.inc_by(n);
    }

    /// A hedged request was sent (a slow peer joined by another).
    pub fn hedged(&self) {
        self.hedged.inc();
    }

    /// A claim answered as coordinator: the asker fetches (`granted`) or
    /// reads from another node.
    pub fn claim(&self, granted: bool) {
        if granted {
            self.claims_granted.inc();
        } else {
            self.claims_followed.inc();
        }
    }

    /// Content that did not match its digest.
    pub fn verify_failure(&self) {
        self.verify_failures.inc();
    }

    /// The text exposition, with the mirror's `state` now.
    pub fn render(&self, state: State) -> String {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.peers.set(gauge(state.peers));
        self.peers_penalised.set(gauge(state.peers_penalised));
        self.downloads_in_flight
            .set(gauge(state.downloads_in_flight));
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
    fn renders_what_the_tests_and_benchmarks_read() {
        let m = Metrics::default();
        m.request("blob", "cache", "hit");
        m.served("peer", 7);
        m.upstream_bytes(5);
        m.resolved(std::time::Duration::from_millis(3));
        let text = m.render(State {
            peers: 2,
            peers_penalised: 1,
            downloads_in_flight: 0,
        });
        for line in [
            r#"berth_mirror_requests_total{kind="blob",source="cache",result="hit"} 1"#,
            r#"berth_mirror_served_bytes_total{source="peer"} 7"#,
            "berth_mirror_upstream_bytes_total 5",
            "berth_mirror_verify_failures_total 0",
            "berth_mirror_peers 2",
            "berth_mirror_peers_penalised 1",
            r#"berth_mirror_resolve_seconds_bucket{le="0.005"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
