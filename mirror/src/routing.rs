//! Content routing: which other nodes can serve a digest now, and who the
//! members are (for choosing the node that fetches a cold blob). One trait,
//! [`Routing`], so the mirror does not care how nodes find each other:
//! [`StaticPeers`] asks a configured list of mirrors directly (enough for a
//! few nodes); [`InMemory`] is a shared table for tests within one process;
//! libp2p Kademlia, for clusters that grow, is the next implementation and
//! must pass the same conformance suite as [`InMemory`]. A routing answer
//! is only a hint: bytes from a provider are verified like any others.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_oci::Digest;

use crate::upstream::Upstream;

/// A boxed future, so [`Routing`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a digest names, for implementations that must ask by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A blob (`/v2/…/blobs/<digest>`).
    Blob,
    /// A manifest (`/v2/…/manifests/<digest>`).
    Manifest,
}

/// A node that says it can serve a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Its mirror's base URL.
    pub url: String,
    /// The content's size, when the answer carried it.
    pub size: Option<u64>,
    /// The node is still downloading it (its bytes show as they verify).
    pub in_flight: bool,
}

/// How nodes find content on each other.
pub trait Routing: Send + Sync + std::fmt::Debug {
    /// This node can now serve `digests`. Implementations announce in
    /// batches, never all at once on a timer.
    fn provide(&self, digests: &[Digest]);

    /// This node no longer holds `digests` (its cache pruned them): stop
    /// announcing them. Records already spread to other nodes expire on
    /// their own; until then a peer asking gets a 404 and moves on.
    fn unprovide(&self, _digests: &[Digest]) {}

    /// Other nodes that can serve `digest` now, in the order found, within
    /// `deadline`; never this node. An implementation may stop at the first
    /// (a probe of every peer) or return all its lookup found (a DHT).
    fn providers<'a>(
        &'a self,
        digest: &'a Digest,
        kind: Kind,
        deadline: Duration,
    ) -> BoxFuture<'a, Vec<Provider>>;

    /// The other members' base URLs.
    fn members(&self) -> Vec<String>;
}

/// The path a peer mirror answers for `digest` from its own node only
/// (`?local=1`: never from its peers or the registry, so asking never
/// loops). The repository name is not used for local answers.
pub fn local_url(peer: &str, digest: &Digest, kind: Kind) -> String {
    let what = match kind {
        Kind::Blob => "blobs",
        Kind::Manifest => "manifests",
    };
    format!(
        "{}/v2/berth/peer/{what}/{digest}?local=1",
        peer.trim_end_matches('/')
    )
}

/// A configured list of peer mirrors, asked directly (HEAD, all at once).
#[derive(Debug, Clone)]
pub struct StaticPeers {
    peers: Vec<String>,
    client: Upstream,
}

impl StaticPeers {
    /// Route among `peers` (base URLs), asking with `client`.
    pub fn new(peers: Vec<String>, client: Upstream) -> Self {
        Self { peers, client }
    }
}

impl Routing for StaticPeers {
    fn provide(&self, _digests: &[Digest]) {
        // Peers are asked when needed; nothing to announce.
    }

    fn providers<'a>(
        &'a self,
        digest: &'a Digest,
        kind: Kind,
        deadline: Duration,
    ) -> BoxFuture<'a, Vec<Provider>> {
        Box::pin(async move {
            use futures_util::StreamExt;
            let mut asks: futures_util::stream::FuturesUnordered<_> = self
                .peers
                .iter()
                .map(|peer| async move {
                    let size = self
                        .client
                        .peer_has(&local_url(peer, digest, kind), deadline)
                        .await;
                    (peer.clone(), size)
                })
                .collect();
            // The first that has it, and any others that answer within
            // 20 ms of it (to resume from if the first breaks), in the
            // configured order (an operator lists near peers first):
            // waiting for the slowest would cost every pull the deadline.
            let mut found = Vec::new();
            while let Some((url, size)) = asks.next().await {
                if let Some(size) = size {
                    found.push(Provider {
                        url,
                        size: Some(size.0),
                        in_flight: size.1,
                    });
                    break;
                }
            }
            if !found.is_empty() {
                let grace = tokio::time::sleep(Duration::from_millis(20));
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        () = &mut grace => break,
                        next = asks.next() => match next {
                            Some((url, Some((size, in_flight)))) => {
                                found.push(Provider { url, size: Some(size), in_flight });
                            }
                            Some((_, None)) => {}
                            None => break,
                        },
                    }
                }
            }
            found.sort_by_key(|p| self.peers.iter().position(|q| *q == p.url));
            found
        })
    }

    fn members(&self) -> Vec<String> {
        self.peers.clone()
    }
}

/// A routing table shared by the nodes of one process (tests).
#[derive(Debug, Default)]
pub struct InMemoryNetwork {
    providers: Mutex<BTreeMap<Digest, BTreeSet<String>>>,
    members: Mutex<BTreeSet<String>>,
}

/// One node's view of an [`InMemoryNetwork`].
#[derive(Debug, Clone)]
pub struct InMemory {
    net: Arc<InMemoryNetwork>,
    me: String,
}

impl InMemory {
    /// Join `net` as the node at `me`.
    pub fn join(net: &Arc<InMemoryNetwork>, me: &str) -> Self {
        net.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(me.to_owned());
        Self {
            net: net.clone(),
            me: me.to_owned(),
        }
    }
}

impl Routing for InMemory {
    fn provide(&self, digests: &[Digest]) {
        let mut map = self.net.providers.lock().unwrap_or_else(|e| e.into_inner());
        for d in digests {
            map.entry(d.clone()).or_default().insert(self.me.clone());
        }
    }

    fn unprovide(&self, digests: &[Digest]) {
        let mut map = self.net.providers.lock().unwrap_or_else(|e| e.into_inner());
        for d in digests {
            if let Some(set) = map.get_mut(d) {
                set.remove(&self.me);
            }
        }
    }

    fn providers<'a>(
        &'a self,
        digest: &'a Digest,
        _kind: Kind,
        _deadline: Duration,
    ) -> BoxFuture<'a, Vec<Provider>> {
        let found = self
            .net
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .map(|set| {
                set.iter()
                    .filter(|u| **u != self.me)
                    .map(|url| Provider {
                        url: url.clone(),
                        size: None,
                        in_flight: false,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(async move { found })
    }

    fn members(&self) -> Vec<String> {
        self.net
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|u| **u != self.me)
            .cloned()
            .collect()
    }
}

/// The behaviour every [`Routing`] must have, checked on `nodes` (each
/// joined to the same network, `urls[i]` being node i's URL).
#[cfg(test)]
pub(crate) async fn conformance(nodes: &[Arc<dyn Routing>], urls: &[String]) {
    assert!(nodes.len() >= 3, "the suite needs three nodes");
    let deadline = Duration::from_secs(5);
    let d1 = Digest::sha256(b"one");
    let d2 = Digest::sha256(b"two");
    // Nobody has anything yet.
    for n in nodes {
        assert!(n.providers(&d1, Kind::Blob, deadline).await.is_empty());
    }
    // Members are the others.
    for (i, n) in nodes.iter().enumerate() {
        let mut want: Vec<String> = urls
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, u)| u.clone())
            .collect();
        want.sort();
        let mut got = n.members();
        got.sort();
        assert_eq!(got, want, "members of node {i}");
    }
    // An announcement spreads (at once in a table, within moments in a
    // DHT): what `n` finds for `d` once it includes every URL of `want`,
    // or what it found last when `deadline` has passed.
    let found_all = |n: &Arc<dyn Routing>, d: Digest, want: Vec<String>| {
        let n = n.clone();
        async move {
            let until = tokio::time::Instant::now() + deadline;
            loop {
                let p = n.providers(&d, Kind::Blob, deadline).await;
                let urls: BTreeSet<String> = p.into_iter().map(|p| p.url).collect();
                if want.iter().all(|u| urls.contains(u)) || tokio::time::Instant::now() >= until {
                    return urls;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // One batch from node 0 is visible to the others, not to itself.
    nodes[0].provide(&[d1.clone(), d2.clone()]);
    for d in [&d1, &d2] {
        for n in &nodes[1..] {
            let p = found_all(n, d.clone(), vec![urls[0].clone()]).await;
            assert!(p.contains(&urls[0]), "{p:?}");
        }
        assert!(
            !nodes[0]
                .providers(d, Kind::Blob, deadline)
                .await
                .iter()
                .any(|p| p.url == urls[0]),
            "a node is not its own provider"
        );
    }
    // A second provider is found too.
    nodes[1].provide(std::slice::from_ref(&d1));
    let both = vec![urls[0].clone(), urls[1].clone()];
    let found = found_all(&nodes[2], d1.clone(), both).await;
    assert!(
        found.contains(&urls[0]) && found.contains(&urls[1]),
        "{found:?}"
    );
    // Other digests stay unknown.
    assert!(
        nodes[2]
            .providers(&Digest::sha256(b"three"), Kind::Blob, deadline)
            .await
            .is_empty()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse as _;

    /// A node for [`StaticPeers`]: it answers the `?local=1` HEAD probes of
    /// the others (as a mirror does) for what it was told to provide, and
    /// asks the others through a real `StaticPeers`.
    #[derive(Debug)]
    struct Probed {
        peers: StaticPeers,
        held: Arc<Mutex<BTreeSet<String>>>,
    }

    impl Routing for Probed {
        fn provide(&self, digests: &[Digest]) {
            let mut held = self.held.lock().unwrap();
            held.extend(digests.iter().map(|d| format!("/v2/berth/peer/blobs/{d}")));
        }

        fn providers<'a>(
            &'a self,
            digest: &'a Digest,
            kind: Kind,
            deadline: Duration,
        ) -> BoxFuture<'a, Vec<Provider>> {
            self.peers.providers(digest, kind, deadline)
        }

        fn members(&self) -> Vec<String> {
            self.peers.members()
        }
    }

    #[tokio::test]
    async fn static_peers_pass_the_conformance_suite() {
        let mut urls = Vec::new();
        let mut helds = Vec::new();
        for _ in 0..3 {
            let held: Arc<Mutex<BTreeSet<String>>> = Arc::default();
            let h = held.clone();
            let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
                let h = h.clone();
                async move {
                    let local = uri.query() == Some("local=1");
                    if local && h.lock().unwrap().contains(uri.path()) {
                        ([(http::header::CONTENT_LENGTH, "3")], "abc").into_response()
                    } else {
                        http::StatusCode::NOT_FOUND.into_response()
                    }
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            urls.push(format!("http://{}", listener.local_addr().unwrap()));
            tokio::spawn(async move { axum::serve(listener, app).await });
            helds.push(held);
        }
        let client = Upstream::new(&crate::config::UpstreamConfig::default(), 1 << 20);
        let nodes: Vec<Arc<dyn Routing>> = (0..3)
            .map(|i| {
                let others = urls
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, u)| u.clone())
                    .collect();
                Arc::new(Probed {
                    peers: StaticPeers::new(others, client.clone()),
                    held: helds[i].clone(),
                }) as Arc<dyn Routing>
            })
            .collect();
        conformance(&nodes, &urls).await;
        // The size a probe answers with is the provider's.
        let d = Digest::sha256(b"one");
        let p = nodes[1]
            .providers(&d, Kind::Blob, Duration::from_secs(1))
            .await;
        assert_eq!(p[0].size, Some(3));
    }

    #[tokio::test]
    async fn in_memory_passes_the_conformance_suite() {
        let net = Arc::new(InMemoryNetwork::default());
        let urls: Vec<String> = (0..3).map(|i| format!("http://node{i}:5001")).collect();
        let nodes: Vec<Arc<dyn Routing>> = urls
            .iter()
            .map(|u| Arc::new(InMemory::join(&net, u)) as Arc<dyn Routing>)
            .collect();
        conformance(&nodes, &urls).await;
        // A node that pruned a digest is no longer its provider.
        let d = Digest::sha256(b"one");
        nodes[0].unprovide(std::slice::from_ref(&d));
        let p = nodes[2]
            .providers(&d, Kind::Blob, Duration::from_secs(1))
            .await;
        assert!(p.iter().all(|p| p.url != urls[0]), "{p:?}");
        assert!(
            p.iter().any(|p| p.url == urls[1]),
            "the other provider stays"
        );
    }
}
