//! The blob-store conformance suite: one function that every [`BlobStore`]
//! implementation's tests call, so the filesystem, in-memory and (later) S3
//! stores are held to the same contract — atomic publish, resumable appends
//! that discard unacknowledged bytes, ranges, idempotent deletes.

use berth_oci::{Algorithm, Digest};
use bytes::Bytes;
use futures_util::TryStreamExt;

use super::{BlobStore, StorageError, UploadId, UploadWriter};

async fn read_all<S: BlobStore>(
    store: &S,
    d: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let chunks: Vec<Bytes> = store
        .read(d, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

async fn append<S: BlobStore>(store: &S, id: UploadId, offset: u64, parts: &[&[u8]]) -> u64 {
    let mut w = store.append_upload(id, offset).await.unwrap();
    for p in parts {
        w.write(Bytes::copy_from_slice(p)).await.unwrap();
    }
    w.finish().await.unwrap()
}

/// Run the whole suite against `store`, which must start empty.
pub(crate) async fn run<S: BlobStore>(store: &S) {
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256(&content);

    // Nothing is visible before commit.
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert!(matches!(
        store.read(&digest, None).await,
        Err(StorageError::BlobNotFound(_))
    ));

    // A chunked upload, with an interrupted (unacknowledged) tail that a
    // resumed append at the acknowledged offset discards.
    let id = UploadId::new();
    store.create_upload(id).await.unwrap();
    assert_eq!(
        append(store, id, 0, &[&content[..1000], &content[1000..2_000_000]]).await,
        2_000_000
    );
    assert_eq!(
        append(
            store,
            id,
            2_000_000,
            &[b"garbage that was never acknowledged"]
        )
        .await,
        2_000_035
    );
    assert_eq!(
        append(store, id, 2_000_000, &[&content[2_000_000..]]).await,
        3_000_000
    );
    assert!(matches!(
        store.append_upload(id, 3_000_001).await,
        Err(StorageError::Gap { .. })
    ));
    assert_eq!(
        store.stat(&digest).await.unwrap(),
        None,
        "upload bytes are not a blob"
    );

    // Re-hashing agrees with a direct hash, for both algorithms.
    assert_eq!(
        store
            .hash_upload(id, 3_000_000, Algorithm::Sha256)
            .await
            .unwrap(),
        digest
    );
    assert_eq!(
        store.hash_upload(id, 10, Algorithm::Sha512).await.unwrap(),
        Algorithm::Sha512.digest(&content[..10])
    );

    store.commit_upload(id, 3_000_000, &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(3_000_000));
    assert_eq!(read_all(store, &digest, None).await, content);
    assert_eq!(read_all(store, &digest, Some(5..10)).await, &content[5..10]);
    assert_eq!(
        read_all(store, &digest, Some(2_999_000..3_000_000)).await,
        &content[2_999_000..]
    );
    assert!(matches!(
        store.read(&digest, Some(10..3_000_001)).await,
        Err(StorageError::Range { .. })
    ));
    // The session is gone once committed.
    assert!(matches!(
        store.append_upload(id, 0).await,
        Err(StorageError::UploadNotFound(_))
    ));

    // An empty blob.
    let empty = Digest::sha256(b"");
    let id = UploadId::new();
    store.create_upload(id).await.unwrap();
    store.commit_upload(id, 0, &empty).await.unwrap();
    assert_eq!(store.stat(&empty).await.unwrap(), Some(0));
    assert!(read_all(store, &empty, None).await.is_empty());

    // A committed length shorter than what was written publishes only that.
    let id = UploadId::new();
    store.create_upload(id).await.unwrap();
    append(store, id, 0, &[b"abcdef"]).await;
    let abc = Digest::sha256(b"abc");
    store.commit_upload(id, 3, &abc).await.unwrap();
    assert_eq!(read_all(store, &abc, None).await, b"abc");

    // A writer dropped mid-write (its request went away) never interleaves
    // with the next append at the acknowledged offset.
    let id = UploadId::new();
    store.create_upload(id).await.unwrap();
    {
        let mut w = store.append_upload(id, 0).await.unwrap();
        for _ in 0..8 {
            w.write(Bytes::from(vec![0xEE; 1 << 20])).await.unwrap();
        }
    }
    let fresh: Vec<u8> = (0..9_000_000u32).map(|i| (i % 7) as u8).collect();
    assert_eq!(append(store, id, 0, &[&fresh]).await, fresh.len() as u64);
    let d = Digest::sha256(&fresh);
    assert_eq!(
        store
            .hash_upload(id, fresh.len() as u64, Algorithm::Sha256)
            .await
            .unwrap(),
        d
    );
    store
        .commit_upload(id, fresh.len() as u64, &d)
        .await
        .unwrap();
    assert_eq!(read_all(store, &d, None).await, fresh);

    // Aborting discards; aborting twice is fine; unknown ids are errors.
    let id = UploadId::new();
    store.create_upload(id).await.unwrap();
    append(store, id, 0, &[b"doomed"]).await;
    store.abort_upload(id).await.unwrap();
    store.abort_upload(id).await.unwrap();
    assert!(matches!(
        store.hash_upload(id, 6, Algorithm::Sha256).await,
        Err(StorageError::UploadNotFound(_))
    ));

    // Deletes are idempotent.
    store.delete(&digest).await.unwrap();
    store.delete(&digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), None);

    // A sha512 blob.
    let d512 = Algorithm::Sha512.digest(b"five-twelve");
    let id = UploadId::new();
    store.create_upload(id).await.unwrap();
    append(store, id, 0, &[b"five-twelve"]).await;
    store.commit_upload(id, 11, &d512).await.unwrap();
    assert_eq!(read_all(store, &d512, None).await, b"five-twelve");

    // Concurrent sessions do not interfere.
    let ids: Vec<UploadId> = (0..8).map(|_| UploadId::new()).collect();
    for id in &ids {
        store.create_upload(*id).await.unwrap();
    }
    futures_util::future::join_all(ids.iter().enumerate().map(|(i, id)| async move {
        let data = vec![i as u8; 100_000 + i];
        append(store, *id, 0, &[&data]).await;
        let d = Digest::sha256(&data);
        store
            .commit_upload(*id, data.len() as u64, &d)
            .await
            .unwrap();
        assert_eq!(read_all(store, &d, None).await, data);
    }))
    .await;
}
