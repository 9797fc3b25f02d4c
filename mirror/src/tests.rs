//! In-process tests of the mirror's request path over fake sources: the
//! order sources are asked in, a source that lies, one that stalls, a slow
//! node hedged with the next, and private content refused — fast checks of
//! what the end-to-end suite (`tests/tests/e2e/mirror.rs`) proves with
//! real containerd and real nodes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use bytes::Bytes;
use futures_util::StreamExt as _;

use crate::cache::Cache;
use crate::inflight::{Context, Downloads, Timeouts};
use crate::metrics::Metrics;
use crate::routing::BoxFuture;
use crate::sources::{Answer, CacheSource, Chain, Penalties, Source, SourceKind, Stream};
use crate::upstream::UpstreamError;

/// What a fake source does when opened.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Not there.
    Missing,
    /// Sends these bytes (from the offset asked for).
    Sends(Vec<u8>),
    /// Waits this long, then sends these bytes.
    SlowStart(Duration, Vec<u8>),
    /// Sends the first `n` of these bytes, then nothing, ever.
    StallsAfter(usize, Vec<u8>),
}

#[derive(Debug)]
struct Fake {
    kind: SourceKind,
    name: &'static str,
    behaviour: Behaviour,
    /// Every open, as `name@offset`, shared by the sources of one test.
    log: Arc<Mutex<Vec<String>>>,
    /// A registry that serves piece digests of its bytes (256 KiB pieces).
    pieces: bool,
}

fn chunks(bytes: Vec<u8>) -> Vec<Result<Bytes, String>> {
    bytes
        .chunks(64 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

impl Source for Fake {
    fn kind(&self) -> SourceKind {
        self.kind
    }

    fn peer(&self) -> Option<&str> {
        (self.kind != SourceKind::Registry).then_some(self.name)
    }

    fn pieces<'a>(&'a self, _digest: &'a Digest) -> BoxFuture<'a, Option<crate::upstream::Pieces>> {
        let pieces = match (&self.behaviour, self.pieces) {
            (Behaviour::Sends(b), true) => Some(crate::upstream::Pieces {
                piece_size: 256 << 10,
                hashes: b
                    .chunks(256 << 10)
                    .map(|c| {
                        let h = Digest::sha256(c);
                        <[u8; 32]>::try_from(hex::decode(h.hex()).unwrap().as_slice()).unwrap()
                    })
                    .collect(),
            }),
            _ => None,
        };
        Box::pin(async move { pieces })
    }

    fn open<'a>(
        &'a self,
        _digest: &'a Digest,
        offset: u64,
    ) -> BoxFuture<'a, Result<Stream, UpstreamError>> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}@{offset}", self.name));
        let behaviour = self.behaviour.clone();
        Box::pin(async move {
            let from = move |b: Vec<u8>| b[(offset as usize).min(b.len())..].to_vec();
            // As an HTTP source: the length is announced.
            let total = match &behaviour {
                Behaviour::Missing => None,
                Behaviour::Sends(b) | Behaviour::SlowStart(_, b) | Behaviour::StallsAfter(_, b) => {
                    Some(b.len() as u64 - offset.min(b.len() as u64))
                }
            };
            let bytes = match behaviour {
                Behaviour::Missing => return Err(UpstreamError::NotFound),
                Behaviour::Sends(b) => futures_util::stream::iter(chunks(from(b))).boxed(),
                Behaviour::SlowStart(delay, b) => futures_util::stream::once(async move {
                    tokio::time::sleep(delay).await;
                    futures_util::stream::iter(chunks(from(b)))
                })
                .flatten()
                .boxed(),
                Behaviour::StallsAfter(n, b) => {
                    let mut head = from(b);
                    head.truncate(n.saturating_sub(offset as usize));
                    futures_util::stream::iter(chunks(head))
                        .chain(futures_util::stream::pending())
                        .boxed()
                }
            };
            Ok(Stream {
                total,
                from_offset: true,
                bytes,
            })
        })
    }
}

/// A node's download machinery over a cache in a temporary directory.
struct Node {
    _dir: tempfile::TempDir,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    penalties: Arc<Penalties>,
    downloads: Arc<Downloads>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn new(hedge: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(dir.path(), 1 << 30).unwrap());
        let metrics = Arc::new(Metrics::default());
        let penalties = Arc::new(Penalties::default());
        let downloads = Arc::new(Downloads::new(Context {
            cache: cache.clone(),
            metrics: metrics.clone(),
            penalties: penalties.clone(),
            timeouts: Timeouts {
                stall: Duration::from_millis(300),
                first_byte: Duration::from_secs(5),
                hedge,
            },
            published: Box::new(|_| {}),
        }));
        Self {
            _dir: dir,
            cache,
            metrics,
            penalties,
            downloads,
            log: Arc::default(),
        }
    }

    fn source(&self, kind: SourceKind, name: &'static str, b: Behaviour) -> Arc<dyn Source> {
        Arc::new(Fake {
            kind,
            name,
            behaviour: b,
            log: self.log.clone(),
            pieces: false,
        })
    }

    /// The registry, serving `bytes` and their piece digests.
    fn registry_with_pieces(&self, bytes: Vec<u8>) -> Arc<dyn Source> {
        Arc::new(Fake {
            kind: SourceKind::Registry,
            name: "registry",
            behaviour: Behaviour::Sends(bytes),
            log: self.log.clone(),
            pieces: true,
        })
    }

    fn chain(&self, remote: Vec<Arc<dyn Source>>) -> Chain {
        Chain {
            local: vec![Arc::new(CacheSource(self.cache.clone()))],
            remote,
        }
    }

    fn opened(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn metric(&self, name: &str) -> u64 {
        let text = self.metrics.render(crate::metrics::State::default());
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Ask `chain` for `digest` and read the whole answer: the bytes read,
    /// whether the read ended cleanly, and where they came from.
    async fn fetch(&self, chain: &Chain, digest: &Digest) -> (Vec<u8>, bool, SourceKind) {
        match chain.blob(&self.downloads, digest).await {
            Answer::File { path, kind, .. } => (std::fs::read(path).unwrap(), true, kind),
            Answer::Flight { flight, kind } => {
                let mut stream = self.downloads.read(digest.clone(), flight, kind).boxed();
                let mut got = Vec::new();
                let mut clean = true;
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(c) => got.extend_from_slice(&c),
                        Err(_) => {
                            clean = false;
                            break;
                        }
                    }
                }
                (got, clean, kind)
            }
            Answer::Miss(e) => panic!("a miss: {e:?}"),
        }
    }
}

fn blob(len: usize) -> (Vec<u8>, Digest) {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let d = Digest::sha256(&bytes);
    (bytes, d)
}

#[tokio::test]
async fn sources_are_asked_in_order_and_the_first_that_has_it_is_read() {
    use Behaviour::*;
    use SourceKind::*;
    let n = Node::new(Duration::from_secs(5));
    let (bytes, d) = blob(300_000);
    let chain = n.chain(vec![
        n.source(Peer, "peer-a", Missing),
        n.source(Peer, "peer-b", Missing),
        n.source(Owner, "owner", Sends(bytes.clone())),
        n.source(Registry, "registry", Sends(bytes.clone())),
    ]);
    let (got, clean, kind) = n.fetch(&chain, &d).await;
    assert!(clean && got == bytes);
    assert_eq!(kind, Owner);
    assert_eq!(n.opened(), ["peer-a@0", "peer-b@0", "owner@0"]);
    assert_eq!(n.metric("berth_mirror_upstream_bytes_total"), 0);
    // Now cached: the cache answers and no remote source is asked.
    let (got, clean, kind) = n.fetch(&chain, &d).await;
    assert!(clean && got == bytes);
    assert_eq!(kind, Cache);
    assert_eq!(n.opened().len(), 3);
    // Nothing has it: a miss with the registry's reason.
    let (_, other) = blob(10);
    let nobody = n.chain(vec![
        n.source(Peer, "peer-a", Missing),
        n.source(Registry, "registry", Missing),
    ]);
    assert!(matches!(
        nobody.blob(&n.downloads, &other).await,
        Answer::Miss(Some(UpstreamError::NotFound))
    ));
}

#[tokio::test]
async fn registry_bytes_are_counted_and_concurrent_asks_share_one_download() {
    use Behaviour::*;
    let n = Node::new(Duration::from_secs(5));
    let (bytes, d) = blob(1 << 20);
    let slow = SlowStart(Duration::from_millis(100), bytes.clone());
    let chain = Arc::new(n.chain(vec![n.source(SourceKind::Registry, "registry", slow)]));
    let n = Arc::new(n);
    let asks: Vec<_> = (0..4)
        .map(|_| {
            let (n, chain, d) = (n.clone(), chain.clone(), d.clone());
            tokio::spawn(async move { n.fetch(&chain, &d).await })
        })
        .collect();
    for a in asks {
        let (got, clean, _) = a.await.unwrap();
        assert!(clean && got == bytes);
    }
    assert_eq!(n.opened(), ["registry@0"], "one download for four asks");
    assert_eq!(
        n.metric("berth_mirror_upstream_bytes_total"),
        bytes.len() as u64
    );
}

#[tokio::test]
async fn a_lying_peer_costs_time_not_a_failed_read() {
    use Behaviour::*;
    let n = Node::new(Duration::from_secs(5));
    let (bytes, d) = blob(2_000_000);
    // Wrong bytes of the right length, and the right prefix then garbage.
    for flipped in [150_000, 1_900_000] {
        let n = Node::new(Duration::from_secs(5));
        let mut lie = bytes.clone();
        lie[flipped] ^= 1;
        let chain = n.chain(vec![
            n.source(SourceKind::Peer, "liar", Sends(lie)),
            n.source(SourceKind::Registry, "registry", Sends(bytes.clone())),
        ]);
        let (got, clean, _) = n.fetch(&chain, &d).await;
        assert!(clean, "the first read succeeds");
        assert!(got == bytes, "with bytes that verify");
        assert!(n.penalties.is_penalised("liar"));
        assert_eq!(n.metric("berth_mirror_verify_failures_total"), 1);
        // Nothing of the peer's was shown, so the registry starts at 0.
        assert_eq!(n.opened(), ["liar@0", "registry@0"]);
        assert_eq!(n.cache.stat(&d), Some(bytes.len() as u64));
    }
    // A lying registry (no one to trust after it): never served whole,
    // nothing cached.
    let mut lie = bytes.clone();
    lie[150_000] ^= 1;
    let chain = n.chain(vec![n.source(SourceKind::Registry, "registry", Sends(lie))]);
    let (got, clean, _) = n.fetch(&chain, &d).await;
    assert!(!clean, "the read ends in an error");
    assert!(got.len() < bytes.len(), "the last byte is withheld");
    assert_eq!(n.cache.stat(&d), None, "nothing unverified is cached");
    assert_eq!(n.metric("berth_mirror_verify_failures_total"), 1);
}

#[tokio::test]
async fn a_stalling_source_is_left_and_the_rest_comes_from_the_next() {
    use Behaviour::*;
    let n = Node::new(Duration::from_secs(5));
    let (bytes, d) = blob(400_000);
    let chain = n.chain(vec![
        n.source(
            SourceKind::Peer,
            "staller",
            StallsAfter(150_000, bytes.clone()),
        ),
        n.source(SourceKind::Registry, "registry", Sends(bytes.clone())),
    ]);
    let began = Instant::now();
    let (got, clean, _) = n.fetch(&chain, &d).await;
    assert!(clean && got == bytes);
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    // Resumed at the first byte the staller did not send.
    assert_eq!(n.opened(), ["staller@0", "registry@150000"]);
    assert_eq!(n.metric("berth_mirror_resumed_total"), 1);
    assert_eq!(n.metric("berth_mirror_upstream_bytes_total"), 250_000);
    assert!(n.penalties.is_penalised("staller"));
    assert_eq!(n.cache.stat(&d), Some(bytes.len() as u64));
}

#[tokio::test]
async fn a_slow_node_is_hedged_with_the_next_and_the_first_to_send_wins() {
    use Behaviour::*;
    let n = Node::new(Duration::from_millis(50));
    let (bytes, d) = blob(300_000);
    let chain = n.chain(vec![
        n.source(
            SourceKind::Peer,
            "slow",
            SlowStart(Duration::from_secs(3), bytes.clone()),
        ),
        n.source(SourceKind::Peer, "fast", Sends(bytes.clone())),
        n.source(SourceKind::Registry, "registry", Sends(bytes.clone())),
    ]);
    let began = Instant::now();
    let (got, clean, _) = n.fetch(&chain, &d).await;
    assert!(clean && got == bytes);
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        n.opened(),
        ["slow@0", "fast@0"],
        "the registry is not asked"
    );
    assert_eq!(n.metric("berth_mirror_hedged_total"), 1);
    assert_eq!(n.metric("berth_mirror_resumed_total"), 0);
    // A node and the registry are not hedged: the registry gets its time.
    let n = Node::new(Duration::from_millis(50));
    let (bytes, d) = blob(1000);
    let chain = n.chain(vec![
        n.source(
            SourceKind::Peer,
            "slow",
            SlowStart(Duration::from_millis(200), bytes.clone()),
        ),
        n.source(SourceKind::Registry, "registry", Sends(bytes.clone())),
    ]);
    let (got, clean, _) = n.fetch(&chain, &d).await;
    assert!(clean && got == bytes);
    assert_eq!(n.opened(), ["slow@0"]);
    assert_eq!(n.metric("berth_mirror_hedged_total"), 0);
}

/// The order a real mirror builds: nodes that have it, the owner, the
/// registry; only the registry for an owner asked to fetch.
#[tokio::test]
async fn remote_sources_are_peers_then_the_owner_then_the_registry() {
    use crate::routing::{InMemory, InMemoryNetwork, Routing};
    let dir = tempfile::tempdir().unwrap();
    let net = Arc::new(InMemoryNetwork::default());
    let urls = ["http://a:5001", "http://b:5001", "http://c:5001"];
    let nodes: Vec<InMemory> = urls.iter().map(|u| InMemory::join(&net, u)).collect();
    let config = crate::config::Config {
        data: dir.path().to_owned(),
        advertise_url: Some(urls[0].to_owned()),
        ..Default::default()
    };
    let upstream = crate::upstream::Upstream::new(&config.upstream, 1 << 20);
    let m = crate::Mirror::with_routing(config, upstream, Arc::new(nodes[0].clone())).unwrap();
    let want = crate::sources::Want {
        base: "http://registry:5000",
        ns: "registry:5000",
        name: "team/app",
        auth: None,
        local: false,
        fetch: false,
    };
    for i in 0..40u32 {
        let d = Digest::sha256(&i.to_le_bytes());
        nodes[2].provide(std::slice::from_ref(&d));
        let kinds: Vec<SourceKind> = m
            .remote_sources(&want, &d)
            .await
            .iter()
            .map(|s| s.kind())
            .collect();
        let owner = m.owner_peer(&d);
        let want_kinds: Vec<SourceKind> = match owner.as_deref() {
            // The owner is the node that has it, asked once as a peer.
            Some("http://c:5001") | None => vec![SourceKind::Peer, SourceKind::Registry],
            Some(_) => vec![SourceKind::Peer, SourceKind::Owner, SourceKind::Registry],
        };
        assert_eq!(kinds, want_kinds, "{d} owned by {owner:?}");
        let fetch = crate::sources::Want {
            fetch: true,
            ..want
        };
        let only: Vec<SourceKind> = m
            .remote_sources(&fetch, &d)
            .await
            .iter()
            .map(|s| s.kind())
            .collect();
        assert_eq!(only, [SourceKind::Registry]);
    }
}

/// A registry that lets only `Bearer ok` read anything (HEAD or GET) and
/// challenges everyone else.
async fn private_registry() -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|h: HeaderMap| async move {
        if h.get("authorization").is_some_and(|v| v == "Bearer ok") {
            StatusCode::OK.into_response()
        } else {
            (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", r#"Bearer realm="http://auth/token",service="reg",scope="repository:team/app:pull""#)],
            )
                .into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn private_content_goes_only_to_callers_the_registry_lets_read_it() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;
    let registry = private_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "registries = [\"reg:5000\"]\nprivate = [\"reg:5000/team/*\"]\ndata = \"{}\"\n[upstreams]\n\"reg:5000\" = \"{registry}\"\n",
        dir.path().display()
    );
    let config = crate::config::Config::parse(&text).unwrap();
    let m = Arc::new(crate::Mirror::open(config).unwrap());
    // The blob is already cached on this node.
    let (bytes, d) = blob(5000);
    let tmp = m.cache.temp().unwrap();
    std::fs::write(tmp.path(), &bytes).unwrap();
    m.cache.publish(tmp, &d, bytes.len() as u64).unwrap();
    let get = |path: String, auth: Option<&str>| {
        let mut r = Request::get(path);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        crate::api::router(m.clone()).oneshot(r.body(Body::empty()).unwrap())
    };
    let path = format!("/v2/team/app/blobs/{d}?ns=reg:5000");
    // Without credentials: the registry's refusal and challenge.
    let r = get(path.clone(), None).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("repository:team/app:pull")
    );
    // Wrong credentials: refused too, although the blob is right here.
    let r = get(path.clone(), Some("Bearer wrong")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The registry's "yes": served from the cache.
    let r = get(path.clone(), Some("Bearer ok")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    assert_eq!(body.as_ref(), bytes.as_slice());
    // Peers never get it, whoever asks.
    let local = format!("/v2/berth/peer/blobs/{d}?local=1");
    let r = get(local, Some("Bearer ok")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(m.cache.is_private(&d), "marked private when first asked");
}

#[tokio::test]
async fn with_piece_digests_a_liar_costs_only_the_pieces_it_spoiled() {
    use Behaviour::*;
    let n = Node::new(Duration::from_secs(5));
    let (bytes, d) = blob(2_000_000);
    let mut lie = bytes.clone();
    lie[1_900_000] ^= 1;
    let chain = n.chain(vec![
        n.source(SourceKind::Peer, "liar", Sends(lie)),
        n.registry_with_pieces(bytes.clone()),
    ]);
    let (got, clean, _) = n.fetch(&chain, &d).await;
    assert!(clean, "the first read succeeds");
    assert!(got == bytes, "with bytes that verify");
    assert!(n.penalties.is_penalised("liar"));
    // The seven pieces before the spoiled one were kept (and could be
    // shown as they verified); the registry sent only the rest.
    assert_eq!(n.opened(), ["liar@0", "registry@1835008"]);
    assert_eq!(n.cache.stat(&d), Some(bytes.len() as u64));
    // An honest peer with piece digests: verified piece by piece, and the
    // registry is not asked for bytes at all.
    let n = Node::new(Duration::from_secs(5));
    let chain = n.chain(vec![
        n.source(SourceKind::Peer, "honest", Sends(bytes.clone())),
        n.registry_with_pieces(bytes.clone()),
    ]);
    let (got, clean, _) = n.fetch(&chain, &d).await;
    assert!(clean && got == bytes);
    assert_eq!(n.opened(), ["honest@0"]);
}

#[tokio::test]
async fn with_piece_digests_a_blob_cut_at_a_piece_boundary_is_finished_elsewhere() {
    use Behaviour::*;
    let n = Node::new(Duration::from_secs(5));
    let (bytes, d) = blob(2_000_000);
    // Three whole pieces, then the peer stops: every piece it sent
    // verifies, but the blob is not all there.
    let chain = n.chain(vec![
        n.source(SourceKind::Peer, "short", Sends(bytes[..786_432].to_vec())),
        n.registry_with_pieces(bytes.clone()),
    ]);
    let (got, clean, _) = n.fetch(&chain, &d).await;
    assert!(clean && got == bytes);
    assert_eq!(n.opened(), ["short@0", "registry@786432"]);
}
