//! Piece digests of a blob: the sha256 of each 1 MiB piece, so that a node
//! mirror fetching a blob from another node (which it does not trust) can
//! check the bytes piece by piece as they stream, instead of only once the
//! whole blob is in. The list comes from the registry, the one trusted
//! source, at `GET /v2/<name>/blobs/<digest>?pieces=v1` (pull access on the
//! repository, like the blob); `/v2/` advertises it with `Berth-Pieces:
//! v1`. Computed from the stored bytes in the background right after a
//! push commits a blob larger than one piece (so the first node to pull it
//! does not wait for the hashing), or on the first ask for blobs stored
//! before; once per blob however many ask at once, and kept in the
//! metadata database (`blob_pieces`). A blob of one piece needs no reading:
//! its only piece digest is its own.

use std::sync::Arc;

use berth_oci::{Algorithm, Digest};
use futures_util::StreamExt as _;
use serde::Serialize;

use crate::Registry;
use crate::storage::{BlobStore, StorageError};

/// Bytes per piece.
pub const PIECE_SIZE: u64 = 1 << 20;
/// The media type of the answer.
pub const MEDIA_TYPE: &str = "application/vnd.berth.pieces.v1+json";
/// The header `/v2/` answers with, and its value.
pub const HEADER: (&str, &str) = ("Berth-Pieces", "v1");

/// The answer: the blob, its size, the piece size and each piece's sha256
/// (hex), in order; the last piece may be shorter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pieces {
    /// The blob.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Bytes per piece.
    pub piece_size: u64,
    /// The sha256 of each piece, hex.
    pub pieces: Vec<String>,
}

/// Blobs whose pieces are being computed, so each is computed once however
/// many ask at once.
#[derive(Debug, Default)]
pub struct Computing(
    std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
);

/// After a push committed `digest` (`size` bytes): compute its pieces in
/// the background, so they are ready before nodes pull it.
pub fn prepare(r: &Arc<Registry>, digest: &Digest, size: u64) {
    if size <= PIECE_SIZE || digest.algorithm() != Algorithm::Sha256 {
        return;
    }
    let (r, digest) = (r.clone(), digest.clone());
    tokio::spawn(async move {
        if let Err(e) = of(&r, &digest, size).await {
            tracing::debug!(%digest, error = %e, "piece digests not computed at push");
        }
    });
}

/// The pieces of `digest` (of `size` bytes), from the metadata or computed
/// from the store (and then kept).
pub async fn of(r: &Arc<Registry>, digest: &Digest, size: u64) -> Result<Pieces, StorageError> {
    let d = digest.to_string();
    let answer = |piece_size: u64, hashes: &[u8]| Pieces {
        digest: d.clone(),
        size,
        piece_size,
        pieces: hashes.chunks(32).map(hex::encode).collect(),
    };
    if size <= PIECE_SIZE && digest.algorithm() == Algorithm::Sha256 {
        let whole = hex::decode(digest.hex()).unwrap_or_default();
        return Ok(answer(PIECE_SIZE, if size == 0 { &[] } else { &whole }));
    }
    let stored = |r: &Registry| r.meta.blob_pieces(&d).ok().flatten();
    if let Some((piece_size, hashes)) = stored(r) {
        return Ok(answer(piece_size, &hashes));
    }
    // One computation per blob: those asking meanwhile wait for it and
    // read what it stored.
    let lock = {
        let mut map = r
            .pieces_computing
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(d.clone()).or_default().clone()
    };
    let held = lock.lock().await;
    let found = stored(r);
    let computed = match found {
        Some((piece_size, hashes)) => Ok(answer(piece_size, &hashes)),
        None => compute(r, digest, size)
            .await
            .map(|h| answer(PIECE_SIZE, &h)),
    };
    drop(held);
    drop(lock);
    let mut map = r
        .pieces_computing
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if map.get(&d).is_some_and(|l| Arc::strong_count(l) == 1) {
        map.remove(&d);
    }
    computed
}

/// Hash the stored bytes of `digest` piece by piece, and keep the list.
async fn compute(r: &Arc<Registry>, digest: &Digest, size: u64) -> Result<Vec<u8>, StorageError> {
    let mut stream = r.blobs.read(digest, None).await?;
    let mut hashes: Vec<u8> = Vec::with_capacity((size.div_ceil(PIECE_SIZE) * 32) as usize);
    let mut hasher = Algorithm::Sha256.hasher();
    let mut in_piece = 0u64;
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk?;
        total += chunk.len() as u64;
        while !chunk.is_empty() {
            let take = (PIECE_SIZE - in_piece).min(chunk.len() as u64) as usize;
            hasher.update(&chunk[..take]);
            in_piece += take as u64;
            chunk = chunk.slice(take..);
            if in_piece == PIECE_SIZE {
                let done = std::mem::replace(&mut hasher, Algorithm::Sha256.hasher());
                hashes.extend_from_slice(&hex::decode(done.finish().hex()).unwrap_or_default());
                in_piece = 0;
            }
        }
    }
    if in_piece > 0 {
        hashes.extend_from_slice(&hex::decode(hasher.finish().hex()).unwrap_or_default());
    }
    if total != size {
        return Err(StorageError::Io(std::io::Error::other(format!(
            "blob {digest} holds {total} bytes, not {size}"
        ))));
    }
    let stored = hashes.clone();
    let meta = r.meta.clone();
    let key = digest.to_string();
    let _ =
        tokio::task::spawn_blocking(move || meta.put_blob_pieces(&key, PIECE_SIZE, &stored)).await;
    Ok(hashes)
}
