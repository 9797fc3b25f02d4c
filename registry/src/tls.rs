//! HTTPS for `berth serve`: the certificate chain and private key read from
//! PEM files, re-read when either file changes (cert-manager, certbot and
//! `systemd-creds` all replace files in place or by rename), and served with
//! rustls over HTTP/1.1 and HTTP/2 (ALPN). A reload that fails — a key that
//! does not match the certificate, a half-written file — keeps the pair in
//! use and logs why, so a bad renewal never takes the registry down.
//!
//! [`serve_tls`] is [`crate::serve`]'s twin: accept, handshake (bounded in
//! time, so a client that connects and says nothing holds no task for
//! long), serve the same router, and drain in-flight requests on shutdown.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::Registry;

/// How often the files are looked at for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to plain HTTP on the HTTPS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 61\r\n\r\nClient sent an HTTP request to an HTTPS server: use https://\n";

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{key} = {path:?}: cannot read it: {source}")]
    Read {
        /// The configuration key naming it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{key} = {path:?}: {why}")]
    Pem {
        /// The configuration key naming it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key does not sign for the certificate, or rustls refused it.
    #[error("tls.key_file {key:?} does not go with tls.cert_file {cert:?}: {why}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        why: String,
    },
}

/// The two files of a TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

impl TlsFiles {
    /// Read and check both files: a chain, a key, and that they belong
    /// together.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let pem = |why: String, key, path: &Path| TlsError::Pem {
            key,
            path: path.to_owned(),
            why,
        };
        let cert_pem = read("tls.cert_file", &self.cert)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                pem(
                    format!("not a PEM certificate chain: {e}"),
                    "tls.cert_file",
                    &self.cert,
                )
            })?;
        if chain.is_empty() {
            return Err(pem(
                "holds no CERTIFICATE block (is it the key file?)".into(),
                "tls.cert_file",
                &self.cert,
            ));
        }
        let key_pem = read("tls.key_file", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            pem(
                format!("holds no PEM private key ({e}; is it the certificate?)"),
                "tls.key_file",
                &self.key,
            )
        })?;
        let mismatch = |why: String| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            why,
        };
        let provider = rustls::crypto::ring::default_provider();
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| mismatch(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|e| mismatch(e.to_string()))?;
        Ok(certified)
    }

    /// What identifies the files' current contents without reading them.
    fn stamp(&self) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt as _;
        let one = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.ino(), m.modified().ok()?, m.ctime_nsec(), m.len()))
        };
        Some([one(&self.cert)?, one(&self.key)?])
    }
}

/// Inode, modification and change times and length of the certificate and
/// key files: a rename over the file changes the inode, a write in place
/// the times, even within one timestamp tick the length or the ctime.
type Stamp = [(u64, SystemTime, i64, u64); 2];

/// The certificate in use, swapped when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<(Arc<CertifiedKey>, Option<Stamp>)>,
}

impl ReloadingCert {
    /// Load the files now; an error here stops start-up.
    pub fn new(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let stamp = files.stamp();
        let key = Arc::new(files.load()?);
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((key, stamp)),
        }))
    }

    /// Re-read the files if they changed since the last look: `Ok(true)`
    /// when a new pair is in use, `Err` (the old pair stays) when the new
    /// files do not load.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = self.files.stamp();
        if stamp.is_none() || stamp == self.current.read().unwrap_or_else(|e| e.into_inner()).1 {
            return Ok(false);
        }
        let loaded = self.files.load();
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        // Look at these files again only once they change again.
        current.1 = stamp;
        current.0 = Arc::new(loaded?);
        Ok(true)
    }

    /// Watch the files for as long as the server runs.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded"
                ),
                Ok(Ok(false)) | Err(_) => {}
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "TLS certificate files changed but do not load; still serving the previous certificate"
                ),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()).0,
        ))
    }
}

/// The rustls server configuration: the reloading certificate, HTTP/2 and
/// HTTP/1.1 offered by ALPN.
pub fn server_config(cert: Arc<ReloadingCert>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| unreachable!("ring supports the default protocol versions: {e}"))
    .with_no_client_auth()
    .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serve the registry over TLS on `listener` until `shutdown` completes,
/// then stop accepting and wait for in-flight requests to finish.
pub async fn serve_tls(
    listener: TcpListener,
    registry: Arc<Registry>,
    cert: Arc<ReloadingCert>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tasks = crate::background(&registry);
    let app = crate::api::router(registry);
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(Arc::clone(&cert)));
    let watcher = tokio::spawn(cert.watch());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        // The client's address, as `axum::serve` gives it to handlers.
        let service =
            hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
                app.clone(),
                move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                },
            ));
        let builder = builder.clone();
        let watch = graceful.watcher();
        tokio::spawn(async move {
            // A plain-HTTP request on the HTTPS port (the usual `http://`
            // mistake) gets an answer saying so, as Go's servers give.
            let mut first = [0u8; 1];
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] != 0x16 => {
                    use tokio::io::AsyncWriteExt as _;
                    let mut tcp = tcp;
                    let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
                    let _ = tcp.shutdown().await;
                    return;
                }
                Ok(Ok(1)) => {}
                _ => return,
            }
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watch.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    watcher.abort();
    for task in tasks {
        task.abort();
    }
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.key_pair.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn files_load_and_mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a.test");
        let b = pair(dir.path(), "b.test");
        a.load().unwrap();
        let swapped = TlsFiles {
            cert: a.key.clone(),
            key: a.cert.clone(),
        };
        let e = swapped.load().unwrap_err().to_string();
        assert!(
            e.contains("tls.cert_file") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let mixed = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = mixed.load().unwrap_err().to_string();
        assert!(e.contains("does not go with"), "{e}");
        let missing = TlsFiles {
            cert: dir.path().join("nope.crt"),
            key: a.key.clone(),
        };
        let e = missing.load().unwrap_err().to_string();
        assert!(
            e.contains("tls.cert_file") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn a_changed_pair_is_picked_up_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a.test");
        let cert = ReloadingCert::new(a.clone()).unwrap();
        let first = cert.current.read().unwrap().0.cert[0].clone();
        assert!(!cert.reload_if_changed().unwrap(), "unchanged files");
        // A renewal: new files renamed over the old ones.
        let b = pair(dir.path(), "b.test");
        std::fs::rename(&b.cert, &a.cert).unwrap();
        std::fs::rename(&b.key, &a.key).unwrap();
        assert!(cert.reload_if_changed().unwrap());
        let second = cert.current.read().unwrap().0.cert[0].clone();
        assert_ne!(first, second);
        // A half-written certificate: refused, the previous one stays.
        std::fs::write(&a.cert, "-----BEGIN CERTIFICATE-----\nAAAA").unwrap();
        assert!(cert.reload_if_changed().is_err());
        assert_eq!(cert.current.read().unwrap().0.cert[0], second);
        assert!(
            !cert.reload_if_changed().unwrap(),
            "looked at once per change"
        );
    }
}
