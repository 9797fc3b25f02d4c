//! The registry client — the only part of `berth-oci` (and of the builder)
//! that opens sockets. It pushes an image from an OCI layout: blobs the
//! registry already has in the repository are skipped after a HEAD; others
//! are offered as a cross-repository mount (from a named repository, or
//! anonymously, which berth's registry answers from any repository holding
//! the blob) and, when the registry declines, uploaded into the session the
//! mount request opened. Blobs go up in parallel; transient failures are
//! retried with backoff; Basic credentials and the Docker Bearer token flow
//! (`WWW-Authenticate: Bearer realm=…`) are supported, with credentials from
//! a docker-style `auth.json` or given directly. [`JsonClient`] serves the
//! JSON APIs next to registries (the bumper's forge calls) on the same
//! stack, so this is the one place outside the servers that opens sockets.
//!
//! A synchronous API over reqwest (the workspace's one HTTP client): the
//! builder and the bumper that call it are synchronous, so each client
//! runs its requests on a small runtime of its own and must not be called
//! from inside another async runtime. Blob bodies stream from the layout
//! in 1 MiB chunks, verified as they are read.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bytes::Bytes;
use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};

use crate::digest::Digest;
use crate::distribution::{self, Challenge};
use crate::layout::ImageLayout;
use crate::manifest::Manifest;
use crate::reference::Reference;
use crate::retry::Backoff;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached.
    #[error("cannot reach registry {registry}: {cause}{}", unreachable_hint(.registry))]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The transport error.
        cause: String,
    },
    /// The registry answered with an error.
    #[error("registry answered {status} to {method} {url}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Request method.
        method: &'static str,
        /// Request URL.
        url: String,
        /// The response body (its OCI error message).
        body: String,
    },
    /// A JSON API (not a registry) could not be reached.
    #[error("{url}: {cause}")]
    Transport {
        /// The URL asked.
        url: String,
        /// The transport error.
        cause: String,
    },
    /// Credentials are missing or wrong.
    #[error(
        "registry {registry} refused the credentials for {scope}: log in (auth.json) or pass --username/--password"
    )]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The scope asked for.
        scope: String,
    },
    /// The local image is broken.
    #[error(transparent)]
    Layout(#[from] crate::layout::LayoutError),
    /// The local manifest does not parse.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// auth.json does not parse.
    #[error("reading credentials from {path}: {cause}")]
    AuthFile {
        /// The file.
        path: String,
        /// What is wrong.
        cause: String,
    },
}

/// What to check when `registry` cannot be reached: its address, and for a
/// registry berth would talk HTTPS to, whether it speaks plain HTTP
/// (loopback registries fall back to plain HTTP by themselves).
fn unreachable_hint(registry: &str) -> &'static str {
    if is_loopback(registry) {
        " (check that it runs and the port)"
    } else {
        " (check the address, and --plain-http for a registry without TLS)"
    }
}

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// None.
    Anonymous,
    /// A user name and password (or token).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
}

impl Credentials {
    /// The credentials `auth.json` (docker or podman format) holds for
    /// `registry`, or anonymous.
    pub fn from_auth_json(text: &str, registry: &str, path: &str) -> Result<Self, ClientError> {
        let err = |cause: String| ClientError::AuthFile {
            path: path.to_owned(),
            cause,
        };
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let Some(entry) = v["auths"].get(registry) else {
            return Ok(Self::Anonymous);
        };
        let Some(auth) = entry["auth"].as_str() else {
            return Ok(Self::Anonymous);
        };
        let auth = auth.trim();
        let decoded = STANDARD
            .decode(auth)
            .or_else(|_| STANDARD_NO_PAD.decode(auth.trim_end_matches('=')))
            .map_err(|_| err(format!("the auth for {registry} is not base64")))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| err(format!("the auth for {registry} is not UTF-8")))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| err(format!("the auth for {registry} is not user:password")))?;
        Ok(Self::Basic {
            username: u.to_owned(),
            password: p.to_owned(),
        })
    }

    fn basic_header(&self) -> Option<String> {
        match self {
            Self::Anonymous => None,
            Self::Basic { username, password } => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            )),
        }
    }
}

/// What a push reports as it goes (for progress bars).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEvent {
    /// The image's blobs total this many bytes.
    Planned(u64),
    /// This many bytes were sent.
    Sent(u64),
    /// A blob of this size needed no upload (present or mounted).
    Skipped(u64),
}

/// A receiver of [`PushEvent`]s, called from the upload threads.
#[derive(Clone)]
pub struct PushProgress(pub std::sync::Arc<dyn Fn(PushEvent) + Send + Sync>);

impl std::fmt::Debug for PushProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushProgress")
    }
}

/// How to talk to registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Use `http://` instead of `https://` (loopback hosts are tried over
    /// HTTPS first and fall back to it by themselves).
    pub plain_http: bool,
    /// Credentials.
    pub credentials: Credentials,
    /// Parallel blob uploads.
    pub parallel: usize,
    /// Attempts per request for transient failures.
    pub attempts: u32,
    /// A repository in the same registry to offer as the mount source.
    pub mount_from: Option<String>,
    /// Progress receiver, if any.
    pub progress: Option<PushProgress>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            plain_http: false,
            credentials: Credentials::Anonymous,
            parallel: 4,
            attempts: 4,
            mount_from: None,
            progress: None,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Blobs the repository already had.
    pub skipped: Vec<Digest>,
    /// Blobs mounted from another repository.
    pub mounted: Vec<Digest>,
    /// Blobs uploaded.
    pub uploaded: Vec<Digest>,
    /// Bytes uploaded (blobs and manifest).
    pub bytes: u64,
}

/// A registry client.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    opts: ClientOptions,
    /// Bearer tokens by scope.
    tokens: Mutex<BTreeMap<String, String>>,
    /// The scheme each loopback registry answered on (HTTPS or not).
    loopback_schemes: tokio::sync::Mutex<BTreeMap<String, &'static str>>,
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, _)| h);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

pub use crate::error::error_chain;

/// At most `max` bytes of a response body.
async fn read_body(
    mut r: reqwest::Response,
    max: u64,
    registry: &str,
) -> Result<Vec<u8>, ClientError> {
    let mut bytes = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => {
                let room = max.saturating_sub(bytes.len() as u64) as usize;
                bytes.extend_from_slice(&c[..c.len().min(room)]);
                if bytes.len() as u64 >= max {
                    return Ok(bytes);
                }
            }
            Ok(None) => return Ok(bytes),
            Err(e) => {
                return Err(ClientError::Unreachable {
                    registry: registry.to_owned(),
                    cause: error_chain(&e),
                });
            }
        }
    }
}

/// A response's media type, without parameters.
fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|t| t.split(';').next().unwrap_or(t).trim().to_owned())
        .unwrap_or_default()
}

/// One request's target and fixed headers.
#[derive(Clone)]
struct Call<'a> {
    method: reqwest::Method,
    registry: &'a str,
    url: &'a str,
    /// The token scope, `repository:<name>:pull,push`.
    scope: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a ImageLayout, &'a Digest, u64),
}

/// Bytes read from a layout blob per chunk of an upload body.
const UPLOAD_CHUNK: usize = 1 << 20;

/// What pushing one blob took.
#[derive(Debug, Clone, Copy)]
enum Sent {
    Skipped,
    Mounted,
    Uploaded,
}

/// The method's name, for errors.
fn static_method(m: &reqwest::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "request",
    }
}

/// The HTTP stack every client here runs on: reqwest with `builder`'s
/// settings plus berth's user agent and redirect limit, and a two-thread
/// runtime of its own (callers are synchronous).
fn stack(builder: reqwest::ClientBuilder) -> (reqwest::Client, tokio::runtime::Runtime) {
    let http = builder
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a reqwest client with static settings builds");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("berth-client")
        .enable_all()
        .build()
        .expect("a two-thread tokio runtime starts");
    (http, runtime)
}

/// An answer's body (at most 16 MiB) parsed as JSON, or its text as a
/// JSON string.
async fn json_answer(resp: reqwest::Response, url: &str) -> Result<serde_json::Value, ClientError> {
    let bytes = read_body(resp, 16 << 20, url).await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// A client for the JSON APIs next to registries — a forge's pull
/// requests — on the same stack as [`Client`]: synchronous, one request at
/// a time, bodies bounded (16 MiB), no retries (the caller decides).
#[derive(Debug)]
pub struct JsonClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl JsonClient {
    /// A client whose requests may take `timeout` each.
    pub fn new(timeout: Duration) -> Self {
        let (http, runtime) = stack(reqwest::Client::builder().timeout(timeout));
        Self { http, runtime }
    }

    /// Like [`JsonClient::new`], also trusting the CA certificates in the
    /// PEM `ca` (a registry with a private CA).
    pub fn with_ca(timeout: Duration, ca: &[u8]) -> Result<Self, ClientError> {
        let certs =
            reqwest::Certificate::from_pem_bundle(ca).map_err(|e| ClientError::Transport {
                url: String::new(),
                cause: format!("the CA file holds no PEM certificate: {e}"),
            })?;
        let mut builder = reqwest::Client::builder().timeout(timeout);
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
        let (http, runtime) = stack(builder);
        Ok(Self { http, runtime })
    }

    /// Send `method` to `url` with `headers` and, if any, the JSON `body`:
    /// the status and the answer (parsed as JSON, or its text as a JSON
    /// string). Only a transport failure is an error.
    pub fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let transport = |cause: String| ClientError::Transport {
            url: url.to_owned(),
            cause,
        };
        let mut req = self.request(method, url, headers)?;
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        self.runtime.block_on(async {
            let resp = req.send().await.map_err(|e| transport(error_chain(&e)))?;
            let status = resp.status().as_u16();
            Ok((status, json_answer(resp, url).await?))
        })
    }

    /// A request of `method` to `url` with `headers`.
    fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| ClientError::Transport {
                url: url.to_owned(),
                cause: format!("method {method:?}: {e}"),
            })?;
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Ok(req)
    }

    /// Like [`JsonClient::call`] without a body, for an answer of JSON
    /// lines (`application/x-ndjson`, as a long-running admin task streams
    /// its progress): a 2xx answer's lines go to `on_line` as they arrive
    /// (each bounded to 1 MiB; one that is not JSON arrives as a string)
    /// and `Null` is returned; any other answer is read whole as by `call`.
    pub fn call_lines(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        on_line: &mut dyn FnMut(serde_json::Value),
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let transport = |cause: String| ClientError::Transport {
            url: url.to_owned(),
            cause,
        };
        let req = self.request(method, url, headers)?;
        self.runtime.block_on(async {
            let mut resp = req.send().await.map_err(|e| transport(error_chain(&e)))?;
            let status = resp.status().as_u16();
            if !resp.status().is_success() {
                return Ok((status, json_answer(resp, url).await?));
            }
            let mut pending: Vec<u8> = Vec::new();
            let mut emit = |line: &[u8]| {
                let text = String::from_utf8_lossy(line);
                let text = text.trim();
                if !text.is_empty() {
                    on_line(
                        serde_json::from_str(text)
                            .unwrap_or_else(|_| serde_json::Value::String(text.to_owned())),
                    );
                }
            };
            while let Some(chunk) = resp.chunk().await.map_err(|e| transport(error_chain(&e)))? {
                pending.extend_from_slice(&chunk);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    emit(&line);
                }
                if pending.len() > 1 << 20 {
                    return Err(transport("an answer line is longer than 1 MiB".into()));
                }
            }
            emit(&pending);
            Ok((status, serde_json::Value::Null))
        })
    }
}

impl Client {
    /// A client with `opts`.
    pub fn new(opts: ClientOptions) -> Self {
        let (http, runtime) =
            stack(reqwest::Client::builder().read_timeout(Duration::from_secs(300)));
        Self {
            http,
            runtime,
            opts,
            tokens: Mutex::new(BTreeMap::new()),
            loopback_schemes: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    async fn base(&self, registry: &str) -> String {
        let scheme = if self.opts.plain_http {
            "http"
        } else if is_loopback(registry) {
            self.loopback_scheme(registry).await
        } else {
            "https"
        };
        // Docker Hub's API is not at its name.
        let host = if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        format!("{scheme}://{host}")
    }

    async fn absolute(&self, registry: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base(registry).await)
        }
    }

    /// How a loopback registry is spoken to: HTTPS when it answers
    /// HTTPS (a local registry with TLS), else plain HTTP (most local
    /// registries), as Docker treats `localhost`. Asked once per client. A
    /// certificate it does not trust keeps HTTPS, so that error is what
    /// the user sees.
    async fn loopback_scheme(&self, registry: &str) -> &'static str {
        let mut known = self.loopback_schemes.lock().await;
        if let Some(s) = known.get(registry) {
            return s;
        }
        let probe = self
            .http
            .get(format!("https://{registry}/v2/"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let scheme = match probe {
            Ok(_) => "https",
            Err(e) if error_chain(&e).contains("certificate") => "https",
            Err(_) => "http",
        };
        known.insert(registry.to_owned(), scheme);
        scheme
    }

    /// Fetch a Bearer token for a challenge.
    async fn token(
        &self,
        registry: &str,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<String, ClientError> {
        let realm = challenge.param("realm").unwrap_or_default().to_owned();
        let unreachable = |cause: String| ClientError::Unreachable {
            registry: realm.clone(),
            cause,
        };
        let mut url = reqwest::Url::parse(&realm)
            .map_err(|e| unreachable(format!("token realm {realm:?}: {e}")))?;
        url.query_pairs_mut().append_pair("scope", scope);
        if let Some(service) = challenge.param("service") {
            url.query_pairs_mut().append_pair("service", service);
        }
        let mut req = self.http.get(url);
        if let Some(h) = self.opts.credentials.basic_header() {
            req = req.header(AUTHORIZATION, h);
        }
        let resp = req.send().await.map_err(|e| unreachable(error_chain(&e)))?;
        if matches!(resp.status().as_u16(), 401 | 403) {
            return Err(ClientError::Unauthorized {
                registry: registry.to_owned(),
                scope: scope.to_owned(),
            });
        }
        if !resp.status().is_success() {
            return Err(unreachable(format!(
                "token endpoint answered {}",
                resp.status()
            )));
        }
        let body = read_body(resp, 1 << 20, &realm).await?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| unreachable(format!("token response: {e}")))?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Unauthorized {
                registry: registry.to_owned(),
                scope: scope.to_owned(),
            })
    }

    /// A layout blob as a streamed request body: read (and verified) in
    /// 1 MiB chunks on the blocking pool, counted into the progress.
    fn file_body(
        &self,
        layout: &ImageLayout,
        digest: &Digest,
    ) -> Result<reqwest::Body, ClientError> {
        let mut reader = layout.open_blob(digest)?;
        let progress = self.opts.progress.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
        tokio::task::spawn_blocking(move || {
            loop {
                let mut buf = vec![0u8; UPLOAD_CHUNK];
                let mut n = 0;
                let read = loop {
                    match reader.read(&mut buf[n..]) {
                        Ok(0) => break Ok(()),
                        Ok(k) => {
                            n += k;
                            if n == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                if let Err(e) = read {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
                if n == 0 {
                    return;
                }
                buf.truncate(n);
                if let Some(p) = &progress {
                    (p.0)(PushEvent::Sent(n as u64));
                }
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        Ok(reqwest::Body::wrap_stream(stream))
    }

    /// Send a request with retries and authentication; statuses in `ok` are
    /// returned, others become errors.
    async fn send(
        &self,
        call: &Call<'_>,
        body: Body<'_>,
        ok: &[u16],
    ) -> Result<reqwest::Response, ClientError> {
        let Call {
            method,
            registry,
            url,
            scope,
            headers,
        } = call.clone();
        let mut attempt = 0;
        let mut authed_once = false;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let token = self
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(scope)
                .cloned();
            if let Some(t) = token {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            } else if let Some(h) = self.opts.credentials.basic_header() {
                req = req.header(AUTHORIZATION, h);
            }
            req = match &body {
                Body::Empty if matches!(method.as_str(), "GET" | "HEAD" | "DELETE") => req,
                Body::Empty => req.header(CONTENT_LENGTH, 0),
                Body::Bytes(b) => req.body(b.to_vec()),
                Body::File(layout, digest, size) => req
                    .header(CONTENT_LENGTH, *size)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(self.file_body(layout, digest)?),
            };
            let transient = |a: u32| a < self.opts.attempts;
            match req.send().await {
                Ok(r) if ok.contains(&r.status().as_u16()) => return Ok(r),
                Ok(r) => {
                    let status = r.status().as_u16();
                    if status == 401 && !authed_once {
                        if let Some(ch) = r
                            .headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|h| h.to_str().ok())
                            .and_then(|h| distribution::challenge(h, "bearer"))
                        {
                            let t = self.token(registry, &ch, scope).await?;
                            self.tokens
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(scope.to_owned(), t);
                            authed_once = true;
                            continue;
                        }
                    }
                    if status == 401 || status == 403 {
                        return Err(ClientError::Unauthorized {
                            registry: registry.to_owned(),
                            scope: scope.to_owned(),
                        });
                    }
                    if (status == 429 || status >= 500) && transient(attempt) {
                        tokio::time::sleep(Backoff::REQUEST.delay(attempt)).await;
                        continue;
                    }
                    let text = read_body(r, 4096, registry).await.unwrap_or_default();
                    return Err(ClientError::Status {
                        status,
                        method: static_method(&method),
                        url: url.to_owned(),
                        body: String::from_utf8_lossy(&text).trim().to_owned(),
                    });
                }
                Err(e) => {
                    if transient(attempt) {
                        tokio::time::sleep(Backoff::REQUEST.delay(attempt)).await;
                        continue;
                    }
                    return Err(ClientError::Unreachable {
                        registry: registry.to_owned(),
                        cause: error_chain(&e),
                    });
                }
            }
        }
    }

    /// GET `/v2/<repo>/<path>` with pull rights: the response (its status
    /// one of `ok`) and the URL asked.
    async fn read(
        &self,
        registry: &str,
        repo: &str,
        path: &str,
        headers: &[(&str, &str)],
        ok: &[u16],
    ) -> Result<(reqwest::Response, String), ClientError> {
        let url = format!("{}/v2/{repo}/{path}", self.base(registry).await);
        let scope = format!("repository:{repo}:pull");
        let call = Call {
            method: reqwest::Method::GET,
            registry,
            url: &url,
            scope: &scope,
            headers,
        };
        let r = self.send(&call, Body::Empty, ok).await?;
        Ok((r, url))
    }

    /// The digest of the manifest `reference` (tag or digest) of `repo`,
    /// or `None` if the registry has no such manifest. The digest is
    /// computed from the bytes served, not taken from a header; for a
    /// multi-architecture image it is the index's digest.
    pub fn manifest_digest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, ClientError> {
        Ok(self.manifest(registry, repo, reference)?.map(|m| m.2))
    }

    /// The manifest `reference` (tag or digest) of `repo`: its media type,
    /// bytes and digest (computed; checked against `reference` when that
    /// is a digest), or `None` if the registry has no such manifest.
    pub fn manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(String, Vec<u8>, Digest)>, ClientError> {
        self.runtime.block_on(async {
            let path = format!("manifests/{reference}");
            let accept = [("Accept", distribution::MANIFEST_ACCEPT)];
            let (r, url) = self
                .read(registry, repo, &path, &accept, &[200, 404])
                .await?;
            if r.status() == 404 {
                return Ok(None);
            }
            let media_type = content_type(&r);
            let bytes = read_body(r, 16 << 20, registry).await?;
            let wanted = reference.parse::<Digest>().ok();
            let algorithm = wanted
                .as_ref()
                .map_or(crate::digest::Algorithm::Sha256, |d| d.algorithm());
            let digest = algorithm.digest(&bytes);
            if wanted.is_some_and(|w| w != digest) {
                return Err(ClientError::Status {
                    status: 200,
                    method: "GET",
                    url,
                    body: format!("the registry served a manifest whose digest is {digest}"),
                });
            }
            Ok(Some((media_type, bytes, digest)))
        })
    }

    /// Blob `digest` of `repo`, at most `max` bytes, verified.
    pub fn blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Vec<u8>, ClientError> {
        self.runtime.block_on(async {
            let path = format!("blobs/{digest}");
            let (r, url) = self.read(registry, repo, &path, &[], &[200]).await?;
            let bytes = read_body(r, max + 1, registry).await?;
            if bytes.len() as u64 > max || digest.algorithm().digest(&bytes) != *digest {
                return Err(ClientError::Status {
                    status: 200,
                    method: "GET",
                    url,
                    body: "the blob is larger than allowed or does not match its digest".into(),
                });
            }
            Ok(bytes)
        })
    }

    /// Blob `digest` of `repo` streamed into `layout`, verified before it
    /// is stored under its digest (a blob that does not match is never
    /// stored); its size. A blob the layout has is not fetched.
    pub fn blob_into(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        layout: &crate::ImageLayout,
    ) -> Result<u64, ClientError> {
        if let Ok(meta) = std::fs::metadata(layout.blob_path(digest)) {
            return Ok(meta.len());
        }
        self.runtime.block_on(async {
            use std::io::Write as _;
            let path = format!("blobs/{digest}");
            let (mut r, url) = self.read(registry, repo, &path, &[], &[200]).await?;
            let io = |e: std::io::Error| ClientError::Status {
                status: 200,
                method: "GET",
                url: url.clone(),
                body: format!("cannot store the blob: {e}"),
            };
            let dest = layout.blob_path(digest);
            let dir = dest.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir).map_err(io)?;
            let mut tmp = crate::layout::output_temp(dir).map_err(io)?;
            let mut hasher = digest.algorithm().hasher();
            let mut size = 0u64;
            loop {
                match r.chunk().await {
                    Ok(Some(c)) => {
                        hasher.update(&c);
                        tmp.write_all(&c).map_err(io)?;
                        size += c.len() as u64;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(ClientError::Unreachable {
                            registry: registry.to_owned(),
                            cause: error_chain(&e),
                        });
                    }
                }
            }
            let got = hasher.finish();
            if got != *digest {
                return Err(ClientError::Status {
                    status: 200,
                    method: "GET",
                    url,
                    body: format!("the blob's bytes hash to {got}"),
                });
            }
            tmp.persist(&dest).map_err(|e| io(e.error))?;
            Ok(size)
        })
    }

    /// Whether `repo` holds blob `digest`.
    pub fn blob_exists(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, ClientError> {
        self.runtime
            .block_on(self.blob_exists_async(registry, repo, digest))
    }

    async fn blob_exists_async(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, ClientError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base(registry).await);
        let scope = format!("repository:{repo}:pull,push");
        let call = Call {
            method: reqwest::Method::HEAD,
            registry,
            url: &url,
            scope: &scope,
            headers: &[],
        };
        let r = self.send(&call, Body::Empty, &[200, 404]).await?;
        Ok(r.status() == 200)
    }

    /// Put one blob into `repo`: mount if the registry can, else upload
    /// into the session the mount request opened. Returns whether it was
    /// mounted.
    async fn put_blob(
        &self,
        registry: &str,
        repo: &str,
        layout: &ImageLayout,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, ClientError> {
        let scope = format!("repository:{repo}:pull,push");
        let mut url = reqwest::Url::parse(&format!(
            "{}/v2/{repo}/blobs/uploads/",
            self.base(registry).await
        ))
        .map_err(|e| ClientError::Unreachable {
            registry: registry.to_owned(),
            cause: e.to_string(),
        })?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string());
        if let Some(from) = &self.opts.mount_from {
            url.query_pairs_mut().append_pair("from", from);
        }
        let url = url.to_string();
        let call = Call {
            method: reqwest::Method::POST,
            registry,
            url: &url,
            scope: &scope,
            headers: &[],
        };
        let r = self.send(&call, Body::Empty, &[201, 202]).await?;
        if r.status() == 201 {
            return Ok(true);
        }
        let location = r
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError::Status {
                status: 202,
                method: "POST",
                url: url.clone(),
                body: "no Location header for the upload session".into(),
            })?;
        let loc = self.absolute(registry, location).await;
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={digest}");
        let call = Call {
            method: reqwest::Method::PUT,
            url: &put,
            ..call
        };
        self.send(&call, Body::File(layout, digest, size), &[201])
            .await?;
        Ok(false)
    }

    /// Push the image `manifest` of `layout` to `dest` (tagged with its tag,
    /// or by digest), skipping what the registry has.
    pub fn push_image(
        &self,
        layout: &ImageLayout,
        manifest: &Digest,
        dest: &Reference,
    ) -> Result<PushReport, ClientError> {
        self.runtime.block_on(self.push(layout, manifest, dest))
    }

    /// [`Self::push_image`], on the client's runtime.
    async fn push(
        &self,
        layout: &ImageLayout,
        manifest: &Digest,
        dest: &Reference,
    ) -> Result<PushReport, ClientError> {
        let registry = dest.registry();
        let repo = dest.repository();
        let bytes = layout.read_blob(manifest)?;
        let parsed = Manifest::parse(&bytes, None)?;
        let blobs = parsed.blobs()?;
        if let Some(p) = &self.opts.progress {
            (p.0)(PushEvent::Planned(blobs.iter().map(|b| b.size).sum()));
        }
        // Each blob: skipped (present), mounted, or uploaded; the first
        // error stops the push.
        let mut outcomes = futures_util::stream::iter(blobs.iter())
            .map(|blob| async move {
                let outcome = if self.blob_exists_async(registry, repo, &blob.digest).await? {
                    Sent::Skipped
                } else if self
                    .put_blob(registry, repo, layout, &blob.digest, blob.size)
                    .await?
                {
                    Sent::Mounted
                } else {
                    Sent::Uploaded
                };
                if let (Some(p), Sent::Skipped | Sent::Mounted) = (&self.opts.progress, outcome) {
                    (p.0)(PushEvent::Skipped(blob.size));
                }
                Ok::<_, ClientError>((blob, outcome))
            })
            .buffer_unordered(self.opts.parallel.max(1));
        let mut report = PushReport::default();
        while let Some(done) = outcomes.next().await {
            let (blob, outcome) = done?;
            match outcome {
                Sent::Skipped => report.skipped.push(blob.digest.clone()),
                Sent::Mounted => report.mounted.push(blob.digest.clone()),
                Sent::Uploaded => {
                    report.uploaded.push(blob.digest.clone());
                    report.bytes += blob.size;
                }
            }
        }
        drop(outcomes);
        let reference = dest
            .tag()
            .map_or_else(|| manifest.to_string(), str::to_owned);
        let url = format!(
            "{}/v2/{repo}/manifests/{reference}",
            self.base(registry).await
        );
        let scope = format!("repository:{repo}:pull,push");
        let call = Call {
            method: reqwest::Method::PUT,
            registry,
            url: &url,
            scope: &scope,
            headers: &[("Content-Type", parsed.media_type())],
        };
        self.send(&call, Body::Bytes(&bytes), &[200, 201]).await?;
        report.bytes += bytes.len() as u64;
        for list in [
            &mut report.skipped,
            &mut report.mounted,
            &mut report.uploaded,
        ] {
            list.sort();
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_json_lookup() {
        let text = r#"{"auths":{"ghcr.io":{"auth":"dXNlcjpwYXNz"},"other":{}}}"#;
        assert_eq!(
            Credentials::from_auth_json(text, "ghcr.io", "auth.json").unwrap(),
            Credentials::Basic {
                username: "user".into(),
                password: "pass".into()
            }
        );
        assert_eq!(
            Credentials::from_auth_json(text, "other", "a").unwrap(),
            Credentials::Anonymous
        );
        assert_eq!(
            Credentials::from_auth_json(text, "nope", "a").unwrap(),
            Credentials::Anonymous
        );
        assert!(Credentials::from_auth_json("{", "x", "a").is_err());
    }

    #[test]
    fn schemes() {
        let c = Client::new(ClientOptions::default());
        // A loopback registry that does not answer HTTPS (here: nothing
        // listens) is spoken to over plain HTTP; HTTPS ones are tested
        // end to end (tests/e2e/walkthrough.rs).
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let local = format!("127.0.0.1:{closed}");
        assert_eq!(
            c.runtime.block_on(c.base(&local)),
            format!("http://{local}")
        );
        let local = format!("localhost:{closed}");
        assert_eq!(
            c.runtime.block_on(c.base(&local)),
            format!("http://{local}")
        );
        let rt = &c.runtime;
        assert_eq!(rt.block_on(c.base("ghcr.io")), "https://ghcr.io");
        assert_eq!(
            rt.block_on(c.absolute("ghcr.io", "/v2/x")),
            "https://ghcr.io/v2/x"
        );
        assert_eq!(
            rt.block_on(c.absolute("ghcr.io", "https://cdn/x")),
            "https://cdn/x"
        );
    }
}
