//! `berth-mirror` is the node daemon that containerd pulls through: a
//! containerd-facing `/v2` API (with containerd's `?ns=<registry>`) served
//! from the mirror's own bounded cache, the node's containerd content
//! store, other nodes' mirrors and the mirrored registry (pull-through),
//! every byte from a peer or the registry verified against its digest while
//! it streams and nothing cached that did not verify; tags are resolved
//! only with the registry, falling back to the last verified answer (marked
//! stale) when it cannot be reached.
//!
//! Peers are found from a static list or with libp2p Kademlia. Content of
//! private repositories goes only to callers the registry would serve, and
//! never to peers. It
//! must never serve or cache a byte it has not verified against its digest,
//! and never trust a tag from a peer.
//!
//! # Layout
//! - [`config`]: the TOML configuration.
//! - [`cache`]: verified blobs and manifests on disk, LRU-bounded; last tags.
//! - [`upstream`]: requests to mirrored registries.
//! - [`api`]: the `/v2` routes, `/metrics`, `/healthz`, `/readyz`: parse,
//!   authorize, ask the sources, render.
//! - `private`: which callers may read private repositories.
//! - `render`: error JSON, manifests, files, downloads in flight, sizes.
//! - [`sources`]: where content comes from, in order (cache, containerd,
//!   in flight, peers, the cold blob's fetcher, registry), behind one
//!   `Source` trait.
//! - [`inflight`]: shared downloads (one fetch per blob per node, read
//!   along by every request) and the rendezvous choice of a coordinator.
//! - [`claims`]: which node fetches a cold blob for the cluster (asked of
//!   its coordinator), so the registry sends it about once.
//! - [`timing`]: timeouts grown from measured first-byte times and
//!   silences.
//! - [`metrics`]: counters by source and result.
//! - [`routing`]: which nodes can serve a digest (static peers; in-memory
//!   for tests), with the conformance suite.
//! - [`p2p`]: the libp2p Kademlia routing.
//! - [`health`]: which mirrored registries can be reached (logs, gauge,
//!   `/readyz`).
//! - [`hosts`]: containerd hosts.toml, Talos and k3s config writers, and
//!   the containerd config check.

pub mod api;
pub mod cache;
pub mod claims;
pub mod config;
pub mod health;
pub mod hosts;
pub mod inflight;
pub mod metrics;
pub mod p2p;
mod private;
mod render;
pub mod routing;
pub mod sources;
pub mod timing;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;

/// A running mirror's state.
#[derive(Debug)]
pub struct Mirror {
    /// Its configuration.
    pub config: config::Config,
    /// The on-disk cache.
    pub cache: Arc<cache::Cache>,
    /// The registry client.
    pub upstream: upstream::Upstream,
    /// Counters.
    pub metrics: Arc<metrics::Metrics>,
    /// Downloads in flight.
    pub downloads: Arc<inflight::Downloads>,
    /// How other nodes are found.
    pub routing: Arc<dyn routing::Routing>,
    /// Private-repository reads the registry allowed, by (registry,
    /// `name/blobs|manifests/ref`, credentials hash), and when: trusted for
    /// [`AUTH_TTL`].
    pub allowed:
        std::sync::Mutex<std::collections::BTreeMap<(String, String, String), std::time::Instant>>,
    /// Nodes that sent bytes not matching their digest.
    pub penalties: Arc<sources::Penalties>,
    /// Which mirrored registries can be reached.
    pub health: health::Health,
    /// As coordinator: which node fetches which cold blob.
    pub claims: claims::Claims,
}

/// How long a registry's "yes" to a private read is trusted.
pub const AUTH_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Tell the other nodes (through `routing`) this node can now serve
/// `digests`, and stop announcing what the cache pruned meanwhile.
fn announce(
    cache: &cache::Cache,
    metrics: &metrics::Metrics,
    routing: &dyn routing::Routing,
    digests: &[berth_oci::Digest],
) {
    metrics.advertised(digests.len() as u64);
    routing.provide(digests);
    let gone = cache.take_pruned();
    if !gone.is_empty() {
        routing.unprovide(&gone);
    }
}

impl Mirror {
    /// Penalise `peer` (it sent bytes that did not match their digest).
    pub fn penalise(&self, peer: &str) {
        self.penalties.penalise(peer);
    }

    /// Whether `peer` is under penalty.
    pub fn is_penalised(&self, peer: &str) -> bool {
        self.penalties.is_penalised(peer)
    }

    /// Tell the other nodes this node can now serve `digests`.
    pub fn provide(&self, digests: &[berth_oci::Digest]) {
        announce(&self.cache, &self.metrics, self.routing.as_ref(), digests);
    }

    /// Announce what the cache already holds, 256 digests at a time with a
    /// pause between batches, so a restart does not flood the network.
    pub fn announce_cached(self: &Arc<Self>) {
        let m = self.clone();
        tokio::spawn(async move {
            let digests = m.cache.digests();
            for batch in digests.chunks(256) {
                m.provide(batch);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
    }
}

impl Mirror {
    /// Open the cache and set up the client for `config`.
    pub fn open(config: config::Config) -> io::Result<Self> {
        let upstream = upstream::Upstream::new(&config.upstream, config.cache.max_manifest_bytes);
        let routing = Arc::new(routing::StaticPeers::new(
            config.peers.clone(),
            upstream.clone(),
        ));
        Self::with_routing(config, upstream, routing)
    }

    /// Open with another way of finding nodes.
    pub fn with_routing(
        config: config::Config,
        upstream: upstream::Upstream,
        routing: Arc<dyn routing::Routing>,
    ) -> io::Result<Self> {
        let cache = Arc::new(cache::Cache::open(&config.data, config.cache.max_bytes)?);
        let metrics = Arc::new(metrics::Metrics::default());
        let penalties = Arc::new(sources::Penalties::default());
        let ms = std::time::Duration::from_millis;
        let published = {
            let (cache, metrics, routing) = (cache.clone(), metrics.clone(), routing.clone());
            Box::new(move |d: &berth_oci::Digest| {
                announce(&cache, &metrics, routing.as_ref(), std::slice::from_ref(d));
            })
        };
        let downloads = Arc::new(inflight::Downloads::new(inflight::Context {
            cache: cache.clone(),
            metrics: metrics.clone(),
            penalties: penalties.clone(),
            timing: timing::Measured::new(timing::Timeouts {
                stall: ms(config.upstream.stall_timeout_ms),
                first_byte: ms(config.upstream.peer_first_byte_ms),
                hedge: ms(config.upstream.peer_hedge_ms),
            }),
            published,
        }));
        Ok(Self {
            routing,
            config,
            cache,
            upstream,
            health: health::Health::new(metrics.clone()),
            metrics,
            downloads,
            penalties,
            allowed: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            claims: claims::Claims::default(),
        })
    }
}

/// Serve `mirror` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    mirror: Arc<Mirror>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, api::router(mirror))
        .with_graceful_shutdown(shutdown)
        .await
}
