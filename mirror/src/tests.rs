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
                asked: Instant::now(),
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
            timing: crate::timing::Measured::new(Timeouts {
                stall: Duration::from_millis(300),
                first_byte: Duration::from_secs(5),
                hedge,
            }),
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
        n.source(Fetcher, "fetcher", Sends(bytes.clone())),
        n.source(Registry, "registry", Sends(bytes.clone())),
    ]);
    let (got, clean, kind) = n.fetch(&chain, &d).await;
    assert!(clean && got == bytes);
    assert_eq!(kind, Fetcher);
    assert_eq!(n.opened(), ["peer-a@0", "peer-b@0", "fetcher@0"]);
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

/// A registry serving one repository's blobs slowly (so downloads
/// overlap), counting the blob GETs it answers.
async fn counting_registry(blobs: Vec<Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::http::{StatusCode, Uri};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gets: Arc<Mutex<Vec<String>>> = Arc::default();
    let by_digest: Arc<std::collections::BTreeMap<String, Bytes>> = Arc::new(
        blobs
            .into_iter()
            .map(|b| (Digest::sha256(&b).to_string(), Bytes::from(b)))
            .collect(),
    );
    let log = gets.clone();
    let app = axum::Router::new().fallback(move |method: axum::http::Method, uri: Uri| {
        let (log, by_digest) = (log.clone(), by_digest.clone());
        async move {
            let Some(d) = uri.path().strip_prefix("/v2/team/app/blobs/") else {
                return StatusCode::OK.into_response();
            };
            let Some(b) = by_digest.get(d).cloned() else {
                return StatusCode::NOT_FOUND.into_response();
            };
            if method == axum::http::Method::HEAD {
                return ([("content-length", b.len().to_string())], "").into_response();
            }
            log.lock().unwrap().push(d.to_owned());
            // Slow to answer (so the fetcher's download is still starting
            // when the others are sent to it), then 64 KiB every 2 ms:
            // about 32 MiB/s.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let chunks: Vec<Bytes> = (0..b.len())
                .step_by(64 << 10)
                .map(|i| b.slice(i..(i + (64 << 10)).min(b.len())))
                .collect();
            let body = futures_util::stream::iter(chunks).then(|c| async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok::<_, std::io::Error>(c)
            });
            (
                [("content-length", b.len().to_string())],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, gets)
}

/// Three mirrors that list each other, pulling from `registry`.
async fn cluster(registry: &str) -> (Vec<Arc<crate::Mirror>>, Vec<String>, Vec<tempfile::TempDir>) {
    let mut listeners = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", l.local_addr().unwrap()));
        listeners.push(l);
    }
    let mut mirrors = Vec::new();
    let mut dirs = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let peers: Vec<String> = urls
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, u)| format!("{u:?}"))
            .collect();
        let text = format!(
            "registries = [\"reg:5000\"]\ndata = \"{}\"\nadvertise_url = \"{}\"\npeers = [{}]\n[upstreams]\n\"reg:5000\" = \"{registry}\"\n",
            dir.path().display(),
            urls[i],
            peers.join(", ")
        );
        let config = crate::config::Config::parse(&text).unwrap();
        let m = Arc::new(crate::Mirror::open(config).unwrap());
        tokio::spawn(crate::serve(l, m.clone(), std::future::pending()));
        mirrors.push(m);
        dirs.push(dir);
    }
    (mirrors, urls, dirs)
}

async fn pull(node: &str, d: &Digest) -> Vec<u8> {
    let r = reqwest::get(format!("{node}/v2/team/app/blobs/{d}?ns=reg:5000"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{node}");
    r.bytes().await.unwrap().to_vec()
}

fn upstream_bytes(m: &crate::Mirror) -> u64 {
    let state = crate::metrics::State {
        peers: 0,
        peers_penalised: 0,
        downloads_in_flight: 0,
    };
    let text = m.metrics.render(state);
    text.lines()
        .find_map(|l| l.strip_prefix("berth_mirror_upstream_bytes_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_blob_is_fetched_once_by_the_first_node_to_ask_and_read_from_it_by_the_rest() {
    // Three blobs: all three nodes at once, then one node after another.
    let blobs: Vec<Vec<u8>> = (0..3u8)
        .map(|k| (0..(3u32 << 20)).map(|i| (i % 253) as u8 ^ k).collect())
        .collect();
    let digests: Vec<Digest> = blobs.iter().map(|b| Digest::sha256(b)).collect();
    let (registry, gets) = counting_registry(blobs.clone()).await;
    let (mirrors, urls, _dirs) = cluster(&registry).await;

    // All three at once: the registry sends it once, whoever coordinates.
    let d = &digests[0];
    let all = futures_util::future::join_all(urls.iter().map(|u| pull(u, d))).await;
    for got in &all {
        assert!(got == &blobs[0]);
    }
    let sent = gets.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let fetched: u64 = mirrors.iter().map(|m| upstream_bytes(m)).sum();
    assert_eq!(fetched, blobs[0].len() as u64);

    // One after another, starting with a node that does not coordinate the
    // blob: that node fetches from the registry itself (no hop through
    // another node), and the next reads from it.
    for (k, d) in digests.iter().enumerate().skip(1) {
        let members: Vec<&str> = urls.iter().map(String::as_str).collect();
        let coordinator = crate::claims::coordinator_of(&members, d).unwrap();
        let first = urls.iter().position(|u| u != coordinator).unwrap();
        let second = urls.iter().position(|u| u == coordinator).unwrap();
        let before = upstream_bytes(&mirrors[first]);
        assert!(pull(&urls[first], d).await == blobs[k]);
        assert_eq!(
            upstream_bytes(&mirrors[first]) - before,
            blobs[k].len() as u64,
            "the first node fetched blob {k} from the registry itself"
        );
        assert!(pull(&urls[second], d).await == blobs[k]);
        let count = gets
            .lock()
            .unwrap()
            .iter()
            .filter(|g| **g == d.to_string())
            .count();
        assert_eq!(count, 1, "blob {k} was sent once");
    }
    // The coordinators answered the claims.
    let claims: usize = mirrors.iter().map(|m| m.claims.len()).sum();
    assert!(claims >= 1, "claims were made");
}

#[tokio::test]
async fn a_reader_joining_late_reads_old_bytes_from_the_file_and_new_ones_from_memory() {
    use Behaviour::*;
    let n = Node::new(Duration::from_secs(5));
    // 10 MiB arrive, then the source stalls (300 ms) and the registry sends
    // the rest: a reader joining during the stall starts beyond what is
    // kept in memory.
    let (bytes, d) = blob(14 << 20);
    let chain = n.chain(vec![
        n.source(
            SourceKind::Registry,
            "first",
            StallsAfter(10 << 20, bytes.clone()),
        ),
        n.source(SourceKind::Registry, "registry", Sends(bytes.clone())),
    ]);
    let Answer::Flight { flight, .. } = chain.blob(&n.downloads, &d).await else {
        panic!("a download")
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut late = n
        .downloads
        .read(d.clone(), flight, SourceKind::InFlight)
        .boxed();
    let mut got = Vec::new();
    while let Some(chunk) = late.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(
        got == bytes,
        "the late reader's bytes are the blob's, in order"
    );
    assert_eq!(n.opened(), ["first@0", "registry@10485760"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_says_when_a_blob_it_has_is_still_downloading() {
    let blob: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 241) as u8).collect();
    let d = Digest::sha256(&blob);
    let (registry, _gets) = counting_registry(vec![blob.clone()]).await;
    let (_mirrors, urls, _dirs) = cluster(&registry).await;
    let local = crate::routing::local_url(&urls[0], &d, crate::routing::Kind::Blob);
    let head = || async {
        let r = reqwest::Client::new().head(&local).send().await.unwrap();
        (
            r.status().as_u16(),
            r.headers().contains_key("berth-in-flight"),
        )
    };
    assert_eq!(head().await.0, 404, "not there before anyone asks");
    let node = urls[0].clone();
    let dd = d.clone();
    let pulled = tokio::spawn(async move { pull(&node, &dd).await });
    // The registry answers after 150 ms and sends for about 100 ms more.
    let mut seen = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (status, in_flight) = head().await;
        if status == 200 {
            seen = in_flight;
            break;
        }
    }
    assert!(seen, "a download in flight is marked so");
    assert!(pulled.await.unwrap() == blob);
    assert_eq!(head().await, (200, false), "a cached blob is not");
}
