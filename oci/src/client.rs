//! The registry client — the only part of `berth-oci` (and of the builder)
//! that opens sockets. It pushes an image from an OCI layout: blobs the
//! registry already has in the repository are skipped after a HEAD; others
//! are offered as a cross-repository mount (from a named repository, or
//! anonymously, which berth's registry answers from any repository holding
//! the blob) and, when the registry declines, uploaded into the session the
//! mount request opened. Blobs go up in parallel; transient failures are
//! retried with backoff; Basic credentials and the Docker Bearer token flow
//! (`WWW-Authenticate: Bearer realm=…`) are supported, with credentials from
//! a docker-style `auth.json` or given directly.
//!
//! Blocking I/O on threads: the builder that calls it is synchronous.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use crate::digest::Digest;
use crate::layout::ImageLayout;
use crate::manifest::Manifest;
use crate::reference::Reference;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached.
    #[error(
        "cannot reach registry {registry}: {cause} (check the address, and --plain-http for a registry without TLS)"
    )]
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
        let decoded = base64_decode(auth)
            .ok_or_else(|| err(format!("the auth for {registry} is not base64")))?;
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
                base64_encode(format!("{username}:{password}").as_bytes())
            )),
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
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

/// Counts the bytes read through it into a [`PushProgress`].
struct Counted<R> {
    inner: R,
    progress: Option<PushProgress>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            (p.0)(PushEvent::Sent(n as u64));
        }
        Ok(n)
    }
}

/// How to talk to registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Use `http://` instead of `https://` (always for loopback hosts).
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
    agent: ureq::Agent,
    opts: ClientOptions,
    /// Bearer tokens by scope.
    tokens: Mutex<BTreeMap<String, String>>,
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, _)| h);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// At most `max` bytes of a response body.
fn read_body(r: ureq::Response, max: u64, registry: &str) -> Result<Vec<u8>, ClientError> {
    let mut bytes = Vec::new();
    r.into_reader()
        .take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::Unreachable {
            registry: registry.to_owned(),
            cause: e.to_string(),
        })?;
    Ok(bytes)
}

/// One request's target and fixed headers.
#[derive(Clone, Copy)]
struct Call<'a> {
    method: &'static str,
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

impl Client {
    /// A client with `opts`.
    pub fn new(opts: ClientOptions) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(300))
            .redirects(5)
            .build();
        Self {
            agent,
            opts,
            tokens: Mutex::new(BTreeMap::new()),
        }
    }

    fn base(&self, registry: &str) -> String {
        let scheme = if self.opts.plain_http || is_loopback(registry) {
            "http"
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

    fn absolute(&self, registry: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base(registry))
        }
    }

    /// Fetch a Bearer token for a challenge.
    fn token(
        &self,
        registry: &str,
        challenge: &crate::distribution::Challenge,
        scope: &str,
    ) -> Result<String, ClientError> {
        let realm = challenge.param("realm").unwrap_or_default().to_owned();
        let mut url = format!("{realm}?scope={}", url_encode(scope));
        if let Some(service) = challenge.param("service") {
            url.push_str(&format!("&service={}", url_encode(service)));
        }
        let mut req = self.agent.get(&url);
        if let Some(h) = self.opts.credentials.basic_header() {
            req = req.set("Authorization", &h);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(401 | 403, _)) => {
                return Err(ClientError::Unauthorized {
                    registry: registry.to_owned(),
                    scope: scope.to_owned(),
                });
            }
            Err(e) => {
                return Err(ClientError::Unreachable {
                    registry: realm,
                    cause: e.to_string(),
                });
            }
        };
        let v: serde_json::Value = serde_json::from_reader(resp.into_reader().take(1 << 20))
            .map_err(|e| ClientError::Unreachable {
                registry: realm.clone(),
                cause: format!("token response: {e}"),
            })?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Unauthorized {
                registry: registry.to_owned(),
                scope: scope.to_owned(),
            })
    }

    /// Send a request with retries and authentication; statuses in `ok` are
    /// returned, others become errors.
    fn send(
        &self,
        call: &Call<'_>,
        body: Body<'_>,
        ok: &[u16],
    ) -> Result<ureq::Response, ClientError> {
        let Call {
            method,
            registry,
            url,
            scope,
            headers,
        } = *call;
        let mut attempt = 0;
        let mut authed_once = false;
        loop {
            attempt += 1;
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let token = self
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(scope)
                .cloned();
            if let Some(t) = token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            } else if let Some(h) = self.opts.credentials.basic_header() {
                req = req.set("Authorization", &h);
            }
            let result = match &body {
                Body::Empty if matches!(method, "GET" | "HEAD" | "DELETE") => req.call(),
                Body::Empty => req.set("Content-Length", "0").send_bytes(&[]),
                Body::Bytes(b) => req.send_bytes(b),
                Body::File(layout, digest, size) => match layout.open_blob(digest) {
                    Ok(f) => req
                        .set("Content-Length", &size.to_string())
                        .set("Content-Type", "application/octet-stream")
                        .send(Counted {
                            inner: f,
                            progress: self.opts.progress.clone(),
                        }),
                    Err(e) => return Err(e.into()),
                },
            };
            let transient = |a: u32| a < self.opts.attempts;
            match result {
                Ok(r) if ok.contains(&r.status()) => return Ok(r),
                Ok(r) | Err(ureq::Error::Status(_, r)) => {
                    let status = r.status();
                    if status == 401 && !authed_once {
                        if let Some(ch) = r
                            .header("WWW-Authenticate")
                            .and_then(|h| crate::distribution::challenge(h, "bearer"))
                        {
                            let t = self.token(registry, &ch, scope)?;
                            self.tokens
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(scope.to_owned(), t);
                            authed_once = true;
                            continue;
                        }
                    }
                    if ok.contains(&status) {
                        return Ok(r);
                    }
                    if status == 401 || status == 403 {
                        return Err(ClientError::Unauthorized {
                            registry: registry.to_owned(),
                            scope: scope.to_owned(),
                        });
                    }
                    if (status == 429 || status >= 500) && transient(attempt) {
                        std::thread::sleep(backoff(attempt));
                        continue;
                    }
                    let mut text = String::new();
                    let _ = r.into_reader().take(4096).read_to_string(&mut text);
                    return Err(ClientError::Status {
                        status,
                        method,
                        url: url.to_owned(),
                        body: text.trim().to_owned(),
                    });
                }
                Err(e) => {
                    if transient(attempt) {
                        std::thread::sleep(backoff(attempt));
                        continue;
                    }
                    return Err(ClientError::Unreachable {
                        registry: registry.to_owned(),
                        cause: e.to_string(),
                    });
                }
            }
        }
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
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base(registry));
        let scope = format!("repository:{repo}:pull");
        let call = Call {
            method: "GET",
            registry,
            url: &url,
            scope: &scope,
            headers: &[("Accept", crate::distribution::MANIFEST_ACCEPT)],
        };
        let r = self.send(&call, Body::Empty, &[200, 404])?;
        if r.status() == 404 {
            return Ok(None);
        }
        let media_type = r.content_type().to_owned();
        let bytes = read_body(r, 16 << 20, registry)?;
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
    }

    /// Blob `digest` of `repo`, at most `max` bytes, verified.
    pub fn blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base(registry));
        let scope = format!("repository:{repo}:pull");
        let call = Call {
            method: "GET",
            registry,
            url: &url,
            scope: &scope,
            headers: &[],
        };
        let r = self.send(&call, Body::Empty, &[200])?;
        let bytes = read_body(r, max + 1, registry)?;
        if bytes.len() as u64 > max || digest.algorithm().digest(&bytes) != *digest {
            return Err(ClientError::Status {
                status: 200,
                method: "GET",
                url,
                body: "the blob is larger than allowed or does not match its digest".into(),
            });
        }
        Ok(bytes)
    }

    /// Whether `repo` holds blob `digest`.
    pub fn blob_exists(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, ClientError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base(registry));
        let scope = format!("repository:{repo}:pull,push");
        let call = Call {
            method: "HEAD",
            registry,
            url: &url,
            scope: &scope,
            headers: &[],
        };
        let r = self.send(&call, Body::Empty, &[200, 404])?;
        Ok(r.status() == 200)
    }

    /// Put one blob into `repo`: mount if the registry can, else upload
    /// into the session the mount request opened. Returns whether it was
    /// mounted.
    fn put_blob(
        &self,
        registry: &str,
        repo: &str,
        layout: &ImageLayout,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, ClientError> {
        let scope = format!("repository:{repo}:pull,push");
        let mut url = format!(
            "{}/v2/{repo}/blobs/uploads/?mount={digest}",
            self.base(registry)
        );
        if let Some(from) = &self.opts.mount_from {
            url.push_str(&format!("&from={}", url_encode(from)));
        }
        let call = Call {
            method: "POST",
            registry,
            url: &url,
            scope: &scope,
            headers: &[],
        };
        let r = self.send(&call, Body::Empty, &[201, 202])?;
        if r.status() == 201 {
            return Ok(true);
        }
        let location = r.header("Location").ok_or_else(|| ClientError::Status {
            status: 202,
            method: "POST",
            url: url.clone(),
            body: "no Location header for the upload session".into(),
        })?;
        let loc = self.absolute(registry, location);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={digest}");
        let call = Call {
            method: "PUT",
            url: &put,
            ..call
        };
        self.send(&call, Body::File(layout, digest, size), &[201])?;
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
        let registry = dest.registry();
        let repo = dest.repository();
        let bytes = layout.read_blob(manifest)?;
        let parsed = Manifest::parse(&bytes, None)?;
        let blobs = parsed.blobs()?;
        if let Some(p) = &self.opts.progress {
            (p.0)(PushEvent::Planned(blobs.iter().map(|b| b.size).sum()));
        }
        let report = Mutex::new(PushReport::default());
        let next = Mutex::new(blobs.iter());
        let first_error: Mutex<Option<ClientError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..self.opts.parallel.max(1) {
                s.spawn(|| {
                    loop {
                        let Some(blob) = next.lock().unwrap_or_else(|e| e.into_inner()).next()
                        else {
                            return;
                        };
                        if first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .is_some()
                        {
                            return;
                        }
                        let outcome =
                            self.blob_exists(registry, repo, &blob.digest)
                                .and_then(|exists| {
                                    if exists {
                                        return Ok((0, 0));
                                    }
                                    self.put_blob(registry, repo, layout, &blob.digest, blob.size)
                                        .map(
                                            |mounted| if mounted { (1, 0) } else { (2, blob.size) },
                                        )
                                });
                        let mut rep = report.lock().unwrap_or_else(|e| e.into_inner());
                        if let (Some(p), Ok((0 | 1, _))) = (&self.opts.progress, &outcome) {
                            (p.0)(PushEvent::Skipped(blob.size));
                        }
                        match outcome {
                            Ok((0, _)) => rep.skipped.push(blob.digest.clone()),
                            Ok((1, _)) => rep.mounted.push(blob.digest.clone()),
                            Ok((_, n)) => {
                                rep.uploaded.push(blob.digest.clone());
                                rep.bytes += n;
                            }
                            Err(e) => {
                                first_error
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
        let reference = dest
            .tag()
            .map_or_else(|| manifest.to_string(), str::to_owned);
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base(registry));
        let scope = format!("repository:{repo}:pull,push");
        let call = Call {
            method: "PUT",
            registry,
            url: &url,
            scope: &scope,
            headers: &[("Content-Type", parsed.media_type())],
        };
        self.send(&call, Body::Bytes(&bytes), &[200, 201])?;
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

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * 4u64.pow(attempt.saturating_sub(1).min(4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "user:pa:ss", "robot$ci:tok3n/+="] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert!(base64_decode("not*base64").is_none());
    }

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
        assert_eq!(c.base("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(c.base("localhost:5000"), "http://localhost:5000");
        assert_eq!(c.base("ghcr.io"), "https://ghcr.io");
        assert_eq!(c.absolute("ghcr.io", "/v2/x"), "https://ghcr.io/v2/x");
        assert_eq!(c.absolute("ghcr.io", "https://cdn/x"), "https://cdn/x");
    }
}
