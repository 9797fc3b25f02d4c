//! Where a blob comes from, in order: this node's own cache, the node's
//! containerd content store, a download already in flight here, other
//! nodes that have it (found by routing), the node fetching the cold blob
//! for the cluster (named by its coordinator, [`crate::claims`]), and the
//! registry.
//! Each is a [`Source`]; a [`Chain`] asks them in that order and answers
//! with an [`Answer`]: a verified file on this node, a download to read
//! along (joined or started here, with the later sources as its fallbacks),
//! or a miss with the registry's reason. `api.rs` renders the answer; it
//! does not know which source gave it beyond its [`SourceKind`].
//!
//! Must never hand out a file it has not verified (the cache and the
//! content store hold only content addressed by its digest; remote bytes
//! go through [`crate::inflight`], which verifies them).

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use http::HeaderValue;

use crate::cache::Cache;
use crate::inflight::{Claim, Downloads, InFlight, Starter};
use crate::routing::BoxFuture;
use crate::upstream::{Upstream, UpstreamError};

/// What kind of source content came from: for decisions (hedge between
/// peers, count registry bytes) and for the metrics' `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The mirror's own cache.
    Cache,
    /// The node's containerd content store.
    Containerd,
    /// A download already running on this node.
    InFlight,
    /// Another node that has the content.
    Peer,
    /// The node fetching a cold blob from the registry for the cluster.
    Fetcher,
    /// The mirrored registry.
    Registry,
    /// The last verified answer for a tag, served while the registry is
    /// unreachable.
    Stale,
}

impl SourceKind {
    /// The metrics label (a fetcher is a peer there, the registry is
    /// `upstream`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Containerd => "containerd",
            Self::InFlight => "inflight",
            Self::Peer | Self::Fetcher => "peer",
            Self::Registry => "upstream",
            Self::Stale => "stale",
        }
    }

    /// Another node (a peer or the fetcher).
    pub fn is_node(self) -> bool {
        matches!(self, Self::Peer | Self::Fetcher)
    }
}

/// A blob's bytes from a remote source.
pub struct Stream {
    /// The blob's whole length, when the source announced it.
    pub total: Option<u64>,
    /// Whether the bytes start at the offset asked for (a 206); otherwise
    /// they start at 0 and the reader skips to the offset.
    pub from_offset: bool,
    /// The bytes.
    pub bytes: BoxStream<'static, Result<Bytes, String>>,
    /// When the source was asked (for the time to its first bytes).
    pub asked: Instant,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("total", &self.total)
            .field("from_offset", &self.from_offset)
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// The body of an HTTP response.
    pub fn from_response(resp: reqwest::Response, offset: u64) -> Self {
        let from_offset = offset == 0 || resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let total = if offset == 0 {
            resp.content_length()
        } else {
            None
        };
        Self {
            total,
            from_offset,
            asked: Instant::now(),
            bytes: resp
                .bytes_stream()
                .map(|c| c.map_err(|e| e.to_string()))
                .boxed(),
        }
    }
}

/// A place a blob can be had from.
pub trait Source: Send + Sync + fmt::Debug {
    /// What kind of source it is.
    fn kind(&self) -> SourceKind;

    /// The node behind it, penalised if its bytes do not match.
    fn peer(&self) -> Option<&str> {
        None
    }

    /// For a cold blob's fetcher: its hops from the registry (each adds
    /// about one piece of delay before its bytes show).
    fn depth(&self) -> u32 {
        0
    }

    /// A file on this node that holds `digest`, verified when it got there,
    /// and its length. Remote sources have none.
    fn file(&self, _digest: &Digest) -> Option<(PathBuf, u64)> {
        None
    }

    /// The piece digests of `digest`, if this is a registry that serves
    /// them (trusted: only the registry is asked).
    fn pieces<'a>(&'a self, _digest: &'a Digest) -> BoxFuture<'a, Option<crate::upstream::Pieces>> {
        Box::pin(async { None })
    }

    /// The bytes of `digest` from `offset` on. Local sources answer
    /// `NotFound`.
    fn open<'a>(
        &'a self,
        _digest: &'a Digest,
        _offset: u64,
    ) -> BoxFuture<'a, Result<Stream, UpstreamError>> {
        Box::pin(async { Err(UpstreamError::NotFound) })
    }
}

/// The mirror's own cache.
#[derive(Debug)]
pub struct CacheSource(pub Arc<Cache>);

impl Source for CacheSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Cache
    }

    fn file(&self, digest: &Digest) -> Option<(PathBuf, u64)> {
        Some((self.0.path(digest), self.0.stat(digest)?))
    }
}

/// The node's containerd content store (`<root>/blobs/<alg>/<hex>`): its
/// files are named by their digest and written by containerd only after
/// it verified them.
#[derive(Debug)]
pub struct ContentStore(pub PathBuf);

impl ContentStore {
    /// A manifest from the store, checked against its digest, with its
    /// media type (its own `mediaType` field), if it is at most `max`
    /// bytes.
    pub fn manifest(&self, digest: &Digest, max: u64) -> Option<(Vec<u8>, String)> {
        let (path, len) = self.file(digest)?;
        if len > max {
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        digest.verify(&bytes).ok()?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()?
            .get("mediaType")?
            .as_str()?
            .to_owned();
        Some((bytes, media_type))
    }
}

impl Source for ContentStore {
    fn kind(&self) -> SourceKind {
        SourceKind::Containerd
    }

    fn file(&self, digest: &Digest) -> Option<(PathBuf, u64)> {
        let path = self
            .0
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex());
        let len = std::fs::metadata(&path).ok()?.len();
        Some((path, len))
    }
}

/// A peer, the fetcher or the registry, over HTTP.
pub struct Http {
    /// Which of the three.
    pub kind: SourceKind,
    /// The blob's URL there.
    pub url: String,
    /// Credentials to send (the registry only).
    pub auth: Option<HeaderValue>,
    /// The node, for a peer or the fetcher.
    pub peer: Option<String>,
    /// The fetcher's hops from the registry.
    pub depth: u32,
    /// The client.
    pub client: Upstream,
}

impl fmt::Debug for Http {
    /// Kind and URL only: this is what logs show of a source.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.label(), self.url)
    }
}

impl Source for Http {
    fn kind(&self) -> SourceKind {
        self.kind
    }

    fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    fn depth(&self) -> u32 {
        self.depth
    }

    fn open<'a>(
        &'a self,
        _digest: &'a Digest,
        offset: u64,
    ) -> BoxFuture<'a, Result<Stream, UpstreamError>> {
        Box::pin(async move {
            let asked = Instant::now();
            let resp = self
                .client
                .blob_from(&self.url, self.auth.as_ref(), offset)
                .await?;
            Ok(Stream {
                asked,
                ..Stream::from_response(resp, offset)
            })
        })
    }

    fn pieces<'a>(&'a self, _digest: &'a Digest) -> BoxFuture<'a, Option<crate::upstream::Pieces>> {
        Box::pin(async move {
            if self.kind != SourceKind::Registry {
                return None;
            }
            self.client.pieces(&self.url, self.auth.as_ref()).await
        })
    }
}

/// Nodes that sent bytes not matching their digest, and when: skipped for
/// [`Penalties::PERIOD`].
#[derive(Debug, Default)]
pub struct Penalties(Mutex<std::collections::BTreeMap<String, Instant>>);

impl Penalties {
    /// How long a node that sent wrong bytes is not asked again.
    pub const PERIOD: Duration = Duration::from_secs(600);

    /// Penalise `peer`.
    pub fn penalise(&self, peer: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.to_owned(), Instant::now());
    }

    /// Whether `peer` is under penalty.
    pub fn is_penalised(&self, peer: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .is_some_and(|t| t.elapsed() <= Self::PERIOD)
    }
}

/// How a chain answered.
#[derive(Debug)]
pub enum Answer {
    /// A verified file on this node.
    File {
        /// Its path.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The cache or the content store.
        kind: SourceKind,
    },
    /// A download to read along.
    Flight {
        /// The download.
        flight: Arc<InFlight>,
        /// Where it comes from (`InFlight` when joined).
        kind: SourceKind,
    },
    /// No source has it; the registry's reason, when it was asked.
    Miss(Option<UpstreamError>),
}

/// Sources in the order they are asked.
#[derive(Debug, Default)]
pub struct Chain {
    /// On this node: a file or nothing.
    pub local: Vec<Arc<dyn Source>>,
    /// Elsewhere: the first that answers is read, the rest are its
    /// fallbacks when it stalls or breaks.
    pub remote: Vec<Arc<dyn Source>>,
}

impl Chain {
    /// A verified file on this node holding `digest`.
    pub fn local_file(&self, digest: &Digest) -> Option<(PathBuf, u64, SourceKind)> {
        self.local
            .iter()
            .find_map(|s| s.file(digest).map(|(p, l)| (p, l, s.kind())))
    }

    /// Ask for `digest`: a local file, the download in flight, or a new
    /// download from the first remote source that answers (one per digest
    /// on this node, however many ask at once).
    pub async fn blob(&self, downloads: &Arc<Downloads>, digest: &Digest) -> Answer {
        if let Some((path, len, kind)) = self.local_file(digest) {
            return Answer::File { path, len, kind };
        }
        if let Some(flight) = downloads.get(digest) {
            return Answer::Flight {
                flight,
                kind: SourceKind::InFlight,
            };
        }
        if self.remote.is_empty() {
            return Answer::Miss(None);
        }
        fetch(downloads, digest, async { self.remote.clone() }).await
    }
}

/// Join the download of `digest`, or take the right to start it and start
/// it from the first of `remote` that answers (the rest its fallbacks).
/// `remote` is worked out only once the right is taken, so a node told
/// that this one fetches finds the download starting.
pub async fn fetch(
    downloads: &Arc<Downloads>,
    digest: &Digest,
    remote: impl std::future::Future<Output = Vec<Arc<dyn Source>>>,
) -> Answer {
    match downloads.claim(digest).await {
        Claim::Joined(flight) => Answer::Flight {
            flight,
            kind: SourceKind::InFlight,
        },
        Claim::Failed => Answer::Miss(Some(UpstreamError::Unreachable(
            "the download failed; try again".into(),
        ))),
        Claim::Mine(starter) => start(starter, digest, remote.await).await,
    }
}

/// Start the download of `digest` (the right to, `starter`) from the first
/// of `remote` that answers, with the rest as its fallbacks.
async fn start(starter: Starter, digest: &Digest, remote: Vec<Arc<dyn Source>>) -> Answer {
    let t = starter.timeouts();
    let mut rest = remote;
    let mut last = None;
    while !rest.is_empty() {
        let source = rest.remove(0);
        match crate::inflight::open_within(&*source, digest, 0, t.first_byte, t.stall).await {
            Ok(stream) => {
                let kind = source.kind();
                return match starter.start(source, stream, rest) {
                    Ok(flight) => Answer::Flight { flight, kind },
                    Err(e) => Answer::Miss(Some(UpstreamError::Unreachable(e.to_string()))),
                };
            }
            Err(e) => {
                tracing::warn!(source = ?source, error = %e, "source failed; trying the next");
                // A node that said it has the blob and does not serve it
                // is skipped for a while, like one that lies.
                if let (SourceKind::Peer, Some(p)) = (source.kind(), source.peer()) {
                    starter.penalise(p);
                }
                last = Some(e);
            }
        }
    }
    Answer::Miss(last)
}

/// What a request for a blob or manifest names, as the chain needs it.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// The registry's API base URL.
    pub base: &'a str,
    /// The registry as containerd names it.
    pub ns: &'a str,
    /// The repository.
    pub name: &'a str,
    /// The caller's credentials, forwarded to the registry only.
    pub auth: Option<&'a HeaderValue>,
    /// From a peer: this node's own content only.
    pub local: bool,
}

impl crate::Mirror {
    /// The sources on this node: the cache, then the content store.
    pub fn local_sources(&self) -> Chain {
        let mut local: Vec<Arc<dyn Source>> = vec![Arc::new(CacheSource(self.cache.clone()))];
        if let Some(root) = &self.config.containerd_content {
            local.push(Arc::new(ContentStore(root.clone())));
        }
        Chain {
            local,
            remote: Vec::new(),
        }
    }

    /// The remote sources of blob `digest`, in order: nodes that have it,
    /// else the node fetching it for the cluster (asked of its coordinator;
    /// none when it is this node), then the registry. Called while this
    /// node holds the right to start the download, so a node told this
    /// one fetches finds the download starting.
    pub async fn remote_sources(&self, want: &Want<'_>, digest: &Digest) -> Vec<Arc<dyn Source>> {
        let http = |kind, url: String, auth: Option<&HeaderValue>, peer: Option<String>, depth| {
            Arc::new(Http {
                kind,
                url,
                auth: auth.cloned(),
                peer,
                depth,
                client: self.upstream.clone(),
            }) as Arc<dyn Source>
        };
        let registry = http(
            SourceKind::Registry,
            format!("{}/v2/{}/blobs/{digest}", want.base, want.name),
            want.auth,
            None,
            0,
        );
        let node = |kind, url: &str, depth| {
            let at = crate::routing::local_url(url, digest, crate::routing::Kind::Blob);
            http(kind, at, None, Some(url.to_owned()), depth)
        };
        let providers = self.providers(digest, crate::routing::Kind::Blob).await;
        let mut out: Vec<Arc<dyn Source>> = providers
            .iter()
            // A node still downloading it shows bytes as they verify, like
            // a fetcher one hop on.
            .map(|p| {
                if p.in_flight {
                    node(SourceKind::Fetcher, &p.url, 1)
                } else {
                    node(SourceKind::Peer, &p.url, 0)
                }
            })
            .collect();
        if out.is_empty() {
            let me = self.config.advertise_url.as_deref();
            if let Some(f) = self
                .fetcher(digest)
                .await
                .filter(|f| Some(f.url.as_str()) != me)
            {
                out.push(node(SourceKind::Fetcher, &f.url, f.depth));
            }
        }
        out.push(registry);
        out
    }

    /// The nodes (not under penalty) that routing says can serve `digest`,
    /// in the order found.
    pub async fn providers(
        &self,
        digest: &Digest,
        kind: crate::routing::Kind,
    ) -> Vec<crate::routing::Provider> {
        let deadline = Duration::from_millis(self.config.upstream.peer_probe_ms);
        self.routing
            .providers(digest, kind, deadline)
            .await
            .into_iter()
            .filter(|p| !self.is_penalised(&p.url))
            .collect()
    }

    /// A manifest by digest on this node: its bytes, media type and source.
    pub fn local_manifest(&self, digest: &Digest) -> Option<(Vec<u8>, String, SourceKind)> {
        if let Some((bytes, media_type)) = self.cache.manifest(digest) {
            return Some((bytes, media_type, SourceKind::Cache));
        }
        let store = ContentStore(self.config.containerd_content.clone()?);
        let (bytes, media_type) = store.manifest(digest, self.config.cache.max_manifest_bytes)?;
        Some((bytes, media_type, SourceKind::Containerd))
    }

    /// A manifest by digest from the first node that has it, verified (a
    /// node that sends other bytes is penalised), and cached.
    pub async fn peer_manifest(&self, digest: &Digest) -> Option<(Vec<u8>, String)> {
        let kind = crate::routing::Kind::Manifest;
        let p = self.providers(digest, kind).await.into_iter().next()?;
        if p.size
            .is_some_and(|n| n > self.config.cache.max_manifest_bytes)
        {
            return None;
        }
        let url = crate::routing::local_url(&p.url, digest, kind);
        let resp = self.upstream.peer_get(&url, None).await.ok()?;
        let media_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?
            .to_owned();
        let bytes = resp.bytes().await.ok()?;
        if digest.verify(&bytes).is_err() {
            self.metrics.verify_failure();
            self.penalise(&p.url);
            tracing::warn!(peer = %p.url, %digest, "a peer sent a manifest that does not match its digest");
            return None;
        }
        self.cache_manifest(digest, &bytes, &media_type);
        Some((bytes.to_vec(), media_type))
    }

    /// Cache a verified manifest and announce it.
    pub fn cache_manifest(&self, digest: &Digest, bytes: &[u8], media_type: &str) {
        match self.cache.put_manifest(digest, bytes, media_type) {
            Ok(()) => self.provide(std::slice::from_ref(digest)),
            Err(e) => tracing::warn!(error = %e, "cannot cache a manifest"),
        }
    }
}
