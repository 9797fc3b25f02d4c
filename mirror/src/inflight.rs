//! Downloads in flight, shared: a blob being fetched (from the registry or
//! a peer) is written by one background task to a temporary file while it
//! is hashed, and every request for it — this node's containerd, or peers
//! asking this node — reads along instead of fetching again: the last
//! MiB from memory (the network's own buffers, never copied), older bytes
//! from the growing file.
//! Readers see the registry's bytes as they arrive, but the last byte only
//! once the task has checked the digest, so nobody receives a whole wrong
//! blob; once another node has contributed bytes, readers see nothing more
//! until the whole blob verifies, and bytes that do not verify are
//! replaced from the registry in the same download — so a lying node can
//! never hand a client (which may resume with a Range request and keep
//! what it has) a wrong byte. A mismatch with no trusted source left, or a
//! broken source with none after it, fails every reader and caches
//! nothing. The download does not depend on any reader staying connected.
//! Which node fetches a cold blob for the cluster is decided elsewhere
//! ([`crate::claims`]); a download only knows its sources.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_oci::Digest;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::sources::{self, Penalties, Source, SourceKind};

/// Where a download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// This many bytes are in the file.
    Running(u64),
    /// All bytes are in, verified and published to the cache.
    Done(u64),
    /// The source broke or the digest did not match.
    Failed,
}

/// A blob being fetched.
#[derive(Debug)]
pub struct InFlight {
    /// The temporary file being written.
    pub path: PathBuf,
    /// Its length, if the source announced it.
    pub total: Option<u64>,
    progress: watch::Receiver<Progress>,
    /// The last bytes written, in memory: readers that keep up take them
    /// from here instead of reading the file again.
    recent: Mutex<std::collections::VecDeque<(u64, Bytes)>>,
}

/// Bytes of a download kept in memory for readers that keep up.
const RECENT_BYTES: usize = 1 << 20;

impl InFlight {
    /// The bytes at `pos` (up to `end`) if they are still in memory.
    fn recent_at(&self, pos: u64, end: u64) -> Option<Bytes> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (at, b) = recent
            .iter()
            .find(|(at, b)| *at <= pos && pos < at + b.len() as u64)?;
        let from = (pos - at) as usize;
        let to = (end.min(at + b.len() as u64) - at) as usize;
        (to > from).then(|| b.slice(from..to))
    }

    /// Keep `b`, written at `at`, dropping the oldest beyond
    /// [`RECENT_BYTES`].
    fn remember(&self, at: u64, b: Bytes) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_back((at, b));
        let mut held: usize = recent.iter().map(|(_, b)| b.len()).sum();
        while held > RECENT_BYTES {
            let Some((_, old)) = recent.pop_front() else {
                break;
            };
            held -= old.len();
        }
    }

    /// Forget what lies past `to` (the download was cut back there).
    fn forget_from(&self, to: u64) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|(at, b)| at + b.len() as u64 <= to);
    }
}

/// A digest's entry: a fetch being started (its source not answered yet),
/// or running.
#[derive(Debug)]
enum Entry {
    Starting(watch::Receiver<Option<Option<Arc<InFlight>>>>),
    Running(Arc<InFlight>),
}

pub use crate::timing::Timeouts;

/// What downloads need from the rest of the mirror: where verified blobs
/// go, what is counted, who is penalised, and whom to tell.
pub struct Context {
    /// The cache verified blobs are published into.
    pub cache: Arc<Cache>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Nodes that sent wrong bytes.
    pub penalties: Arc<Penalties>,
    /// How long sources are given, from what was measured.
    pub timing: crate::timing::Measured,
    /// Called with a digest once it is published (to announce it).
    pub published: Box<dyn Fn(&Digest) + Send + Sync>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// The downloads in flight on this node.
#[derive(Debug)]
pub struct Downloads {
    map: Mutex<BTreeMap<Digest, Entry>>,
    ctx: Context,
}

/// The answer to [`Downloads::claim`].
#[derive(Debug)]
pub enum Claim {
    /// Somebody is fetching it: read along.
    Joined(Arc<InFlight>),
    /// Nobody is: the caller fetches it and calls [`Starter::start`].
    Mine(Starter),
    /// Somebody tried and failed just now.
    Failed,
}

/// The right to start fetching a digest. Dropped without starting, it
/// releases the digest and tells those waiting that it failed.
#[derive(Debug)]
pub struct Starter {
    digest: Digest,
    tx: Option<watch::Sender<Option<Option<Arc<InFlight>>>>>,
    downloads: Arc<Downloads>,
}

impl Drop for Starter {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.downloads.remove(&self.digest);
            let _ = tx.send(Some(None));
        }
    }
}

impl Downloads {
    /// No downloads yet; each will use `ctx`.
    pub fn new(ctx: Context) -> Self {
        Self {
            map: Mutex::new(BTreeMap::new()),
            ctx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Digest, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running download of `d`, if any.
    pub fn get(&self, d: &Digest) -> Option<Arc<InFlight>> {
        match self.lock().get(d) {
            Some(Entry::Running(f)) => Some(f.clone()),
            _ => None,
        }
    }

    /// Whether `d` is being fetched here (starting or running).
    pub fn is_fetching(&self, d: &Digest) -> bool {
        self.lock().contains_key(d)
    }

    /// The download of `d` once it runs, if it is running or starting here:
    /// a fetch that is still asking its source is waited for (at most
    /// `wait`), so a node told that this one fetches a blob finds the
    /// download even if it asks before the registry answered.
    pub async fn running_or_starting(&self, d: &Digest, wait: Duration) -> Option<Arc<InFlight>> {
        let mut rx = match self.lock().get(d) {
            Some(Entry::Running(f)) => return Some(f.clone()),
            Some(Entry::Starting(rx)) => rx.clone(),
            None => return None,
        };
        tokio::time::timeout(wait, started(&mut rx))
            .await
            .ok()
            .flatten()
    }

    fn remove(&self, d: &Digest) {
        self.lock().remove(d);
    }

    /// How long sources are given now.
    pub fn timeouts(&self) -> Timeouts {
        self.ctx.timing.timeouts()
    }

    /// How many digests are being fetched.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Join the fetch of `d`, or take the right to start it: one fetch per
    /// digest on this node, however many ask at once.
    pub async fn claim(self: &Arc<Self>, d: &Digest) -> Claim {
        let mut rx = {
            let mut map = self.lock();
            match map.get(d) {
                Some(Entry::Running(f)) => return Claim::Joined(f.clone()),
                Some(Entry::Starting(rx)) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(d.clone(), Entry::Starting(rx));
                    return Claim::Mine(Starter {
                        digest: d.clone(),
                        tx: Some(tx),
                        downloads: self.clone(),
                    });
                }
            }
        };
        match started(&mut rx).await {
            Some(f) => Claim::Joined(f),
            None => Claim::Failed,
        }
    }

    /// The bytes of `flight` as they arrive, counted under `source`. Ends
    /// with an error if the download fails.
    pub fn read(
        &self,
        digest: Digest,
        flight: Arc<InFlight>,
        source: SourceKind,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + use<> {
        read(
            self.ctx.cache.clone(),
            self.ctx.metrics.clone(),
            digest,
            flight,
            source.label(),
        )
    }
}

/// How a fetch that was starting turned out: its download, or `None` if
/// it failed (or its starter went away).
async fn started(rx: &mut watch::Receiver<Option<Option<Arc<InFlight>>>>) -> Option<Arc<InFlight>> {
    loop {
        if let Some(outcome) = rx.borrow_and_update().clone() {
            return outcome;
        }
        if rx.changed().await.is_err() {
            return None;
        }
    }
}

impl Starter {
    /// Penalise node `peer` (it failed to serve what it said it has).
    pub fn penalise(&self, peer: &str) {
        self.downloads.ctx.penalties.penalise(peer);
    }

    /// How long sources are given now.
    pub fn timeouts(&self) -> Timeouts {
        self.downloads.ctx.timing.timeouts()
    }

    /// Fetch the blob in the background from `stream`, the bytes `source`
    /// answered with; when it stalls or breaks, the rest comes from
    /// `fallbacks`, in order.
    pub fn start(
        mut self,
        source: Arc<dyn Source>,
        stream: sources::Stream,
        fallbacks: Vec<Arc<dyn Source>>,
    ) -> io::Result<Arc<InFlight>> {
        let d = self.downloads.clone();
        let tmp = d.ctx.cache.temp()?;
        let file = tmp.reopen()?;
        let (tx, rx) = watch::channel(Progress::Running(0));
        let flight = Arc::new(InFlight {
            path: tmp.path().to_owned(),
            total: stream.total,
            progress: rx,
            recent: Mutex::default(),
        });
        d.lock()
            .insert(self.digest.clone(), Entry::Running(flight.clone()));
        if let Some(waiting) = self.tx.take() {
            let _ = waiting.send(Some(Some(flight.clone())));
        }
        let digest = self.digest.clone();
        let flight_for_task = flight.clone();
        tokio::spawn(async move {
            let from = format!("{source:?}");
            let spool = Spool {
                file: Some(Arc::new(file)),
                pending: Vec::new(),
                pending_len: 0,
                written: 0,
                flight: flight_for_task,
            };
            let outcome = download(&d.ctx, &digest, source, stream, fallbacks, spool, &tx).await;
            let final_state = match outcome {
                Ok(n) => match d.ctx.cache.publish(tmp, &digest, n) {
                    Ok(()) => {
                        (d.ctx.published)(&digest);
                        Progress::Done(n)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %digest, "cannot publish a verified blob");
                        Progress::Failed
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, %digest, %from, "download failed; nothing cached");
                    Progress::Failed
                }
            };
            d.remove(&digest);
            let _ = tx.send(final_state);
        });
        Ok(flight)
    }
}

impl InFlight {
    /// Wait until the download ends: whether it succeeded.
    pub async fn finished(&self) -> bool {
        let mut rx = self.progress.clone();
        loop {
            match *rx.borrow_and_update() {
                Progress::Done(_) => return true,
                Progress::Failed => return false,
                Progress::Running(_) => {}
            }
            if rx.changed().await.is_err() {
                return matches!(*rx.borrow(), Progress::Done(_));
            }
        }
    }
}

/// Bytes gathered before a write to the download's file.
const WRITE_BATCH: usize = 512 << 10;

/// The download's file, written on the blocking pool straight from the
/// network's chunks (no copy in between), which are then kept in the
/// flight's memory for readers that keep up.
struct Spool {
    file: Option<Arc<std::fs::File>>,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Bytes in the file.
    written: u64,
    flight: Arc<InFlight>,
}

impl Spool {
    fn push(&mut self, b: Bytes) {
        self.pending_len += b.len();
        self.pending.push(b);
    }

    fn file(&self) -> io::Result<Arc<std::fs::File>> {
        self.file
            .clone()
            .ok_or_else(|| io::Error::other("the download's file was lost"))
    }

    /// Write what is pending.
    async fn write(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let file = self.file()?;
        let at = self.written;
        let chunks = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt as _;
            let mut pos = at;
            for c in &chunks {
                file.write_all_at(c, pos)?;
                pos += c.len() as u64;
            }
            Ok::<_, io::Error>(chunks)
        })
        .await
        .map_err(io::Error::other)??;
        for c in chunks {
            let len = c.len() as u64;
            self.flight.remember(self.written, c);
            self.written += len;
        }
        Ok(())
    }

    /// Cut the file back to `to` bytes and (given a `hasher`) hash them
    /// again into it, fresh, so the download continues from `to`.
    async fn rewind(
        &mut self,
        hasher: Option<&mut berth_oci::Hasher>,
        digest: &Digest,
        to: u64,
    ) -> io::Result<()> {
        self.pending.clear();
        self.pending_len = 0;
        self.flight.forget_from(to);
        let file = self.file()?;
        let algorithm = digest.algorithm();
        let rehash = hasher.is_some();
        let fresh = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt as _;
            file.set_len(to)?;
            if !rehash {
                return Ok(None);
            }
            let mut h = algorithm.hasher();
            let mut buf = vec![0u8; 1 << 20];
            let mut pos = 0u64;
            while pos < to {
                let want = ((to - pos) as usize).min(buf.len());
                let k = file.read_at(&mut buf[..want], pos)?;
                if k == 0 {
                    return Err(io::Error::other(
                        "the download's file is shorter than written",
                    ));
                }
                h.update(&buf[..k]);
                pos += k as u64;
            }
            Ok::<_, io::Error>(Some(h))
        })
        .await
        .map_err(io::Error::other)??;
        if let (Some(h), Some(fresh)) = (hasher, fresh) {
            *h = fresh;
        }
        self.written = to;
        Ok(())
    }
}

/// Copy the blob into `file`, hashing: from `stream` (which `current`
/// answered with), and when a source stalls or breaks, the rest from the
/// next fallback. The byte count if the digest matches; a mismatch is
/// `InvalidData`, and every node that contributed is penalised.
async fn download(
    ctx: &Context,
    digest: &Digest,
    mut current: Arc<dyn Source>,
    mut stream: sources::Stream,
    mut fallbacks: Vec<Arc<dyn Source>>,
    mut file: Spool,
    tx: &watch::Sender<Progress>,
) -> io::Result<u64> {
    let Timeouts {
        stall,
        first_byte,
        hedge,
    } = ctx.timing.timeouts();
    // The longest silence of a source once it started, to learn from.
    let mut last_chunk = std::time::Instant::now();
    let mut silence = Duration::ZERO;
    let mut hasher = digest.algorithm().hasher();
    let mut n: u64 = 0;
    // Network chunks are small; the file and the readers get 512 KiB at a
    // time, so each costs one blocking write and one wake-up per 512 KiB.
    let mut contributors: Vec<String> = current.peer().map(str::to_owned).into_iter().collect();
    // Bytes of a whole-blob answer to skip when resuming at `n`.
    let mut skip: u64 = 0;
    // Bytes received from the current source.
    let mut from_current: u64 = 0;
    // A first chunk already taken (by the hedge below).
    let mut primed: Option<Result<Option<Bytes>, String>> = None;
    // What readers may see: bytes from the registry (the one trusted
    // source) stream to them as they come; once a node has contributed,
    // nothing more is shown until the whole blob verifies, so a lying or
    // broken node can cost time but never hand a client a wrong byte
    // (containerd resumes a broken download with a Range request and would
    // keep what it already has).
    let mut exposed: u64 = 0;
    let mut tainted = current.kind().is_node();
    // The trusted source to start over from if nodes' bytes do not verify.
    let mut retry: Option<Arc<dyn Source>> = std::iter::once(&current)
        .chain(fallbacks.iter())
        .find(|f| f.kind() == SourceKind::Registry)
        .cloned();
    // With the registry's piece digests, a node's bytes are shown piece by
    // piece as each verifies, instead of only once the whole blob has.
    let mut pieces = match (&retry, tainted) {
        (Some(r), true) => r.pieces(digest).await.map(PieceCheck::new),
        _ => None,
    };
    if current.kind().is_node() && fallbacks.first().is_some_and(|f| f.kind().is_node()) {
        // A hedged request: if this node has not started within `hedge`,
        // ask the next one too and keep whichever sends first.
        match tokio::time::timeout(hedge, stream.bytes.next()).await {
            Ok(first) => primed = Some(first.transpose()),
            Err(_) => {
                let other = fallbacks.remove(0);
                match open_within(&*other, digest, 0, first_byte, stall).await {
                    Ok(mut second) => {
                        ctx.metrics.hedged();
                        tokio::select! {
                            a = stream.bytes.next() => {
                                primed = Some(a.transpose());
                                fallbacks.insert(0, other);
                            }
                            b = second.bytes.next() => {
                                tracing::info!(slow = ?current.peer(), fast = ?other.peer(), %digest, "hedged: the second node answered first");
                                primed = Some(b.transpose());
                                contributors.extend(other.peer().map(str::to_owned));
                                tainted = true;
                                stream = second;
                                current = other;
                            }
                        }
                    }
                    Err(_) => fallbacks.insert(0, other),
                }
            }
        }
    }
    loop {
        // A node pulling the blob for the cluster passes on its own
        // source's silences too: it keeps its allowance throughout.
        let wait = if from_current == 0 || current.kind() == SourceKind::Fetcher {
            allowance(&*current, first_byte, stall)
        } else {
            stall
        };
        let next = match primed.take() {
            Some(first) => first,
            None => match tokio::time::timeout(wait, stream.bytes.next()).await {
                Ok(chunk) => chunk.transpose(),
                Err(_) => Err(format!("no bytes for {wait:?}")),
            },
        };
        match next {
            Ok(Some(mut chunk)) => {
                if from_current == 0 {
                    ctx.timing
                        .first_byte(current.kind(), stream.asked.elapsed());
                } else {
                    silence = silence.max(last_chunk.elapsed());
                }
                last_chunk = std::time::Instant::now();
                if skip > 0 {
                    let k = skip.min(chunk.len() as u64);
                    skip -= k;
                    chunk = chunk.slice(k as usize..);
                    if chunk.is_empty() {
                        continue;
                    }
                }
                if let Some(p) = pieces.as_mut() {
                    if let Err(bad) = p.feed(&chunk) {
                        // A piece that does not verify: keep what did (the
                        // pieces this chunk completed first, too), and take
                        // the rest from the next source.
                        let keep = p.verified.saturating_sub(n) as usize;
                        if keep > 0 {
                            file.push(chunk.slice(..keep));
                        }
                        file.write().await?;
                        n = piece_failed(ctx, &mut file, digest, p, &contributors).await?;
                        primed = Some(Err(format!("piece {bad} does not verify")));
                        continue;
                    }
                }
                // With piece digests every byte is checked by its piece; the
                // whole-blob hash would only repeat that work.
                if pieces.is_none() {
                    hasher.update(&chunk);
                }
                let len = chunk.len() as u64;
                file.push(chunk);
                n += len;
                from_current += len;
                if current.kind() == SourceKind::Registry {
                    ctx.metrics.upstream_bytes(len);
                }
                if file.pending_len >= WRITE_BATCH {
                    file.write().await?;
                    if !tainted {
                        exposed = n;
                        let _ = tx.send(Progress::Running(n));
                    } else if let Some(p) = &pieces {
                        if p.verified > exposed {
                            exposed = p.verified;
                            let _ = tx.send(Progress::Running(exposed));
                        }
                    }
                }
            }
            Ok(None) => {
                file.write().await?;
                if let Some(p) = pieces.as_mut() {
                    match p.finish() {
                        // Every piece, and nothing more, verified: the blob
                        // is the registry's.
                        Ok(()) => {
                            ctx.timing.silence(silence);
                            break;
                        }
                        Err(bad) => {
                            n = piece_failed(ctx, &mut file, digest, p, &contributors).await?;
                            primed = Some(Err(format!(
                                "the blob ends short of its pieces at piece {bad}"
                            )));
                            continue;
                        }
                    }
                }
                // Readers see the bytes after `exposed` only once the digest
                // checks out (`Done`): whether or not the source announced a
                // length, a wrong blob is never read whole, and nodes' bytes
                // are never read before they verify.
                let got = hasher.clone().finish();
                if &got == digest {
                    ctx.timing.silence(silence);
                    break;
                }
                ctx.metrics.verify_failure();
                for p in &contributors {
                    ctx.penalties.penalise(p);
                }
                // Nodes contributed: start over from what readers have seen,
                // with the registry.
                let Some(trusted) = retry.take().filter(|_| tainted) else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("got {got} for {digest}"),
                    ));
                };
                tracing::warn!(%digest, %got, offset = exposed, "nodes sent bytes that do not verify; starting over from the registry");
                let s = open_within(&*trusted, digest, exposed, first_byte, stall)
                    .await
                    .map_err(|e| {
                        io::Error::other(format!(
                            "nodes sent wrong bytes and the registry failed: {e}"
                        ))
                    })?;
                file.rewind(Some(&mut hasher), digest, exposed).await?;
                if let Some(p) = pieces.as_mut() {
                    p.restart_at(exposed);
                }
                n = exposed;
                skip = if s.from_offset { 0 } else { exposed };
                ctx.metrics.resumed();
                contributors.clear();
                tainted = false;
                stream = s;
                current = trusted;
                from_current = 0;
            }
            Err(why) => {
                // Resume elsewhere with the rest.
                let mut resumed = None;
                while !fallbacks.is_empty() {
                    let f = fallbacks.remove(0);
                    tracing::warn!(from = ?current, %why, to = ?f, offset = n, %digest, "source stalled or broke; resuming elsewhere");
                    if let Some(p) = current.peer() {
                        ctx.penalties.penalise(p);
                    }
                    match open_within(&*f, digest, n, first_byte, stall).await {
                        Ok(s) => {
                            skip = if s.from_offset { 0 } else { n };
                            resumed = Some((s, f));
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(source = ?f, error = %e, "fallback failed");
                            if let (SourceKind::Peer, Some(p)) = (f.kind(), f.peer()) {
                                ctx.penalties.penalise(p);
                            }
                        }
                    }
                }
                let Some((s, f)) = resumed else {
                    return Err(io::Error::other(format!("every source failed: {why}")));
                };
                ctx.metrics.resumed();
                contributors.extend(f.peer().map(str::to_owned));
                tainted |= f.kind().is_node();
                stream = s;
                current = f;
                from_current = 0;
            }
        }
    }
    Ok(n)
}

/// How long `source` is given to start: a peer that says it has the blob
/// `first_byte`; the registry `stall`; a node pulling a cold blob for the
/// cluster `stall` for each hop it is from the registry and one more (it
/// waits on the registry as this node would, and each node on the way
/// shows only verified pieces) — and as long for each silence after.
fn allowance(source: &dyn Source, first_byte: Duration, stall: Duration) -> Duration {
    match source.kind() {
        SourceKind::Peer => first_byte.min(stall),
        SourceKind::Fetcher => stall * (source.depth().min(30) + 1),
        _ => stall,
    }
}

/// Open `source` at `offset` within its [`allowance`].
pub async fn open_within(
    source: &dyn Source,
    digest: &Digest,
    offset: u64,
    first_byte: Duration,
    stall: Duration,
) -> Result<sources::Stream, crate::upstream::UpstreamError> {
    let wait = allowance(source, first_byte, stall);
    match tokio::time::timeout(wait, source.open(digest, offset)).await {
        Ok(answer) => answer,
        Err(_) => Err(crate::upstream::UpstreamError::Unreachable(format!(
            "no answer within {wait:?}"
        ))),
    }
}

/// Back to the last verified piece after one did not: the file cut there,
/// the check restarted, the nodes that contributed penalised. Returns the
/// download's new length.
async fn piece_failed(
    ctx: &Context,
    file: &mut Spool,
    digest: &Digest,
    p: &mut PieceCheck,
    contributors: &[String],
) -> io::Result<u64> {
    let good = p.verified;
    file.rewind(None, digest, good).await?;
    p.restart_at(good);
    ctx.metrics.verify_failure();
    for c in contributors {
        ctx.penalties.penalise(c);
    }
    Ok(good)
}

/// Checking a download piece by piece against the registry's piece
/// digests.
struct PieceCheck {
    pieces: crate::upstream::Pieces,
    hasher: berth_oci::Hasher,
    /// Bytes fed so far.
    pos: u64,
    /// Bytes in whole pieces that verified.
    verified: u64,
    /// Pieces that verified.
    closed: usize,
}

impl PieceCheck {
    fn new(pieces: crate::upstream::Pieces) -> Self {
        Self {
            pieces,
            hasher: berth_oci::Algorithm::Sha256.hasher(),
            pos: 0,
            verified: 0,
            closed: 0,
        }
    }

    /// Feed the next bytes; `Err(i)` when piece `i` ends and does not
    /// match (or there is no piece `i`).
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), usize> {
        let size = self.pieces.piece_size;
        while !bytes.is_empty() {
            let boundary = (self.pos / size + 1) * size;
            let take = ((boundary - self.pos) as usize).min(bytes.len());
            self.hasher.update(&bytes[..take]);
            self.pos += take as u64;
            bytes = &bytes[take..];
            if self.pos == boundary {
                self.close_piece()?;
            }
        }
        Ok(())
    }

    /// The blob ended: check the last, shorter piece, and that every
    /// piece came (`Err(i)`: piece `i` did not).
    fn finish(&mut self) -> Result<(), usize> {
        if self.pos > self.verified {
            self.close_piece()?;
        }
        if self.closed < self.pieces.hashes.len() {
            return Err(self.closed);
        }
        Ok(())
    }

    fn close_piece(&mut self) -> Result<(), usize> {
        let i = self.closed;
        let done = std::mem::replace(&mut self.hasher, berth_oci::Algorithm::Sha256.hasher());
        let got = hex::decode(done.finish().hex()).unwrap_or_default();
        if self.pieces.hashes.get(i).map(|h| &h[..]) == Some(&got[..]) {
            self.verified = self.pos;
            self.closed += 1;
            Ok(())
        } else {
            Err(i)
        }
    }

    /// Start again at `at`, a piece boundary at or before what verified.
    fn restart_at(&mut self, at: u64) {
        let at = at / self.pieces.piece_size * self.pieces.piece_size;
        self.pos = at;
        self.verified = at.min(self.verified);
        self.closed = (self.verified / self.pieces.piece_size) as usize;
        self.hasher = berth_oci::Algorithm::Sha256.hasher();
    }
}

/// The bytes of `flight` as they arrive, counted under `source`. Ends with
/// an error if the download fails.
fn read(
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    digest: Digest,
    flight: Arc<InFlight>,
    source: &'static str,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    struct Reader {
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        digest: Digest,
        flight: Arc<InFlight>,
        rx: watch::Receiver<Progress>,
        file: Option<tokio::fs::File>,
        pos: u64,
        source: &'static str,
        finished: bool,
    }
    let rx = flight.progress.clone();
    let state = Reader {
        cache,
        metrics,
        digest,
        flight,
        rx,
        file: None,
        pos: 0,
        source,
        finished: false,
    };
    futures_util::stream::unfold(state, |mut r| async move {
        if r.finished {
            return None;
        }
        loop {
            let progress = *r.rx.borrow_and_update();
            // Readable now: everything written, but the last byte only once
            // the digest has been checked.
            let readable = match progress {
                Progress::Failed => {
                    r.finished = true;
                    return Some((
                        Err(io::Error::other(format!(
                            "the download of {} failed",
                            r.digest
                        ))),
                        r,
                    ));
                }
                Progress::Done(n) => n,
                Progress::Running(n) => match r.flight.total {
                    Some(total) if n >= total => total.saturating_sub(1),
                    _ => n,
                },
            };
            if r.pos < readable {
                // Kept up: the bytes are still in memory.
                if let Some(b) = r.flight.recent_at(r.pos, readable) {
                    // A file opened before is now behind: reopen at `pos`.
                    r.file = None;
                    r.pos += b.len() as u64;
                    r.metrics.served(r.source, b.len() as u64);
                    return Some((Ok(b), r));
                }
                if r.file.is_none() {
                    // The temporary file, or the cache once it is published.
                    let opened = match tokio::fs::File::open(&r.flight.path).await {
                        Ok(f) => Ok(f),
                        Err(_) => tokio::fs::File::open(r.cache.path(&r.digest)).await,
                    };
                    match opened {
                        Ok(mut f) => {
                            if r.pos > 0 {
                                if let Err(e) = f.seek(io::SeekFrom::Start(r.pos)).await {
                                    r.finished = true;
                                    return Some((Err(e), r));
                                }
                            }
                            r.file = Some(f);
                        }
                        Err(e) => {
                            r.finished = true;
                            return Some((Err(e), r));
                        }
                    }
                }
                let want = (readable - r.pos).min(512 << 10) as usize;
                let mut buf = bytes::BytesMut::with_capacity(want);
                let file = r.file.as_mut().expect("opened above");
                match file.take(want as u64).read_buf(&mut buf).await {
                    Ok(0) => {
                        // Written but not visible yet: wait for more.
                    }
                    Ok(got) => {
                        r.pos += got as u64;
                        r.metrics.served(r.source, got as u64);
                        return Some((Ok(buf.freeze()), r));
                    }
                    Err(e) => {
                        r.finished = true;
                        return Some((Err(e), r));
                    }
                }
            } else if let Progress::Done(_) = progress {
                return None;
            }
            if r.rx.changed().await.is_err() {
                // The task ended; its last state tells how.
                if !matches!(*r.rx.borrow(), Progress::Done(_)) {
                    r.finished = true;
                    return Some((Err(io::Error::other("the download stopped")), r));
                }
            }
        }
    })
}
