//! Requests to a mirrored registry: manifests (read whole, bounded, and
//! checked against their digest), blobs (streamed; the caller verifies
//! while streaming) and blob sizes. The caller's `Authorization` is
//! forwarded as is; without one, a registry's anonymous Bearer challenge
//! (Docker Hub's) is answered by fetching an anonymous pull token. Failures
//! are sorted into "not there", "denied" and "unreachable", because the
//! mirror answers each differently.

use std::time::Duration;

use berth_oci::Digest;
use berth_oci::distribution::{self, MANIFEST_ACCEPT};
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};

use crate::config::UpstreamConfig;

/// Why an upstream request did not give content.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The registry says it does not have it.
    #[error("not found upstream")]
    NotFound,
    /// The registry refused the caller.
    #[error("upstream refused: HTTP {0}")]
    Denied(u16),
    /// The registry could not be reached or failed.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// It answered with something that cannot be right.
    #[error("upstream sent bad content: {0}")]
    Bad(String),
}

/// A manifest fetched and checked.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its media type (from `Content-Type`, else its `mediaType` field).
    pub media_type: String,
    /// Its digest, computed here.
    pub digest: Digest,
}

/// A client for mirrored registries.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    manifest_timeout: Duration,
    max_manifest: u64,
    /// Registries (by base URL) and whether they serve piece digests.
    pieces_support: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, bool>>>,
}

/// A blob's piece digests, from a registry that serves them (`berth serve`:
/// `?pieces=v1`): bytes per piece and each piece's sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces {
    /// Bytes per piece (the last may be shorter).
    pub piece_size: u64,
    /// Each piece's sha256.
    pub hashes: Vec<[u8; 32]>,
}

impl Upstream {
    /// A client with `config`'s timeouts.
    pub fn new(config: &UpstreamConfig, max_manifest: u64) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .user_agent(concat!("berth-mirror/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with static settings builds");
        Self {
            client,
            manifest_timeout: Duration::from_millis(config.manifest_timeout_ms),
            max_manifest,
            pieces_support: Default::default(),
        }
    }

    /// The piece digests of the blob at `url` (a registry's
    /// `<base>/v2/<name>/blobs/<digest>`), if that registry serves them:
    /// asked once per registry whether it does (its `/v2/` says
    /// `Berth-Pieces: v1`), so others never get the unknown parameter.
    pub async fn pieces(&self, url: &str, auth: Option<&HeaderValue>) -> Option<Pieces> {
        let base = url.split("/v2/").next()?.to_owned();
        let known = self
            .pieces_support
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&base)
            .copied();
        let supported = match known {
            Some(s) => s,
            None => {
                let resp = self
                    .send(
                        reqwest::Method::GET,
                        &format!("{base}/v2/"),
                        None,
                        auth,
                        Some(self.manifest_timeout),
                    )
                    .await
                    .ok()?;
                let s = resp
                    .headers()
                    .get("berth-pieces")
                    .is_some_and(|v| v.as_bytes() == b"v1");
                if resp.status().is_success() {
                    self.pieces_support
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(base, s);
                }
                s
            }
        };
        if !supported {
            return None;
        }
        let resp = self
            .send(
                reqwest::Method::GET,
                &format!("{url}?pieces=v1"),
                None,
                auth,
                Some(self.manifest_timeout),
            )
            .await
            .ok()?;
        let json = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == b"application/vnd.berth.pieces.v1+json");
        if !resp.status().is_success() || !json {
            return None;
        }
        let body = resp.bytes().await.ok()?;
        if body.len() > 16 << 20 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let piece_size = v["piece_size"].as_u64().filter(|&p| p >= 64 << 10)?;
        let hashes = v["pieces"]
            .as_array()?
            .iter()
            .map(|h| {
                let b = hex::decode(h.as_str()?).ok()?;
                <[u8; 32]>::try_from(b.as_slice()).ok()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Pieces { piece_size, hashes })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        accept: Option<&HeaderValue>,
        auth: Option<&HeaderValue>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.send_from(method, url, accept, auth, timeout, 0).await
    }

    /// [`Self::send`] asking for the bytes from `offset` on (a Range
    /// request) when it is not 0.
    async fn send_from(
        &self,
        method: reqwest::Method,
        url: &str,
        accept: Option<&HeaderValue>,
        auth: Option<&HeaderValue>,
        timeout: Option<Duration>,
        offset: u64,
    ) -> Result<reqwest::Response, UpstreamError> {
        let build = |auth: Option<&HeaderValue>| {
            let mut r = self.client.request(method.clone(), url);
            if offset > 0 {
                r = r.header(http::header::RANGE, format!("bytes={offset}-"));
            }
            if let Some(a) = accept {
                r = r.header(ACCEPT, a);
            }
            if let Some(a) = auth {
                r = r.header(AUTHORIZATION, a);
            }
            if let Some(t) = timeout {
                r = r.timeout(t);
            }
            r
        };
        let unreachable = |e: reqwest::Error| UpstreamError::Unreachable(e.to_string());
        let resp = build(auth).send().await.map_err(unreachable)?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED && auth.is_none() {
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(token) = match challenge {
                Some(c) => self.anonymous_token(&c).await,
                None => None,
            } {
                let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|e| UpstreamError::Bad(e.to_string()))?;
                return build(Some(&bearer)).send().await.map_err(unreachable);
            }
        }
        Ok(resp)
    }

    /// Answer a `Bearer realm=…,service=…,scope=…` challenge anonymously.
    async fn anonymous_token(&self, header: &str) -> Option<String> {
        let challenge = distribution::challenge(header, "bearer")?;
        let realm = challenge.param("realm")?;
        let query = challenge.token_query();
        let resp = self
            .client
            .get(realm)
            .query(&query)
            .timeout(self.manifest_timeout)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
    }

    fn classify(status: reqwest::StatusCode) -> Result<(), UpstreamError> {
        match status.as_u16() {
            200..=299 => Ok(()),
            404 => Err(UpstreamError::NotFound),
            401 | 403 => Err(UpstreamError::Denied(status.as_u16())),
            s => Err(UpstreamError::Unreachable(format!("HTTP {s}"))),
        }
    }

    /// GET manifest `reference` (a tag or digest) of `name` at `base`.
    pub async fn manifest(
        &self,
        base: &str,
        name: &str,
        reference: &str,
        accept: Option<&HeaderValue>,
        auth: Option<&HeaderValue>,
    ) -> Result<FetchedManifest, UpstreamError> {
        let default_accept = HeaderValue::from_static(MANIFEST_ACCEPT);
        let url = format!("{base}/v2/{name}/manifests/{reference}");
        let resp = self
            .send(
                reqwest::Method::GET,
                &url,
                Some(accept.unwrap_or(&default_accept)),
                auth,
                Some(self.manifest_timeout),
            )
            .await?;
        Self::classify(resp.status())?;
        if resp.content_length().is_some_and(|n| n > self.max_manifest) {
            return Err(UpstreamError::Bad(format!(
                "manifest larger than {} bytes",
                self.max_manifest
            )));
        }
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
        let mut bytes = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?
        {
            if bytes.len() as u64 + chunk.len() as u64 > self.max_manifest {
                return Err(UpstreamError::Bad(format!(
                    "manifest larger than {} bytes",
                    self.max_manifest
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let digest = Digest::sha256(&bytes);
        if let Ok(asked) = reference.parse::<Digest>() {
            asked.verify(&bytes).map_err(|_| {
                UpstreamError::Bad(format!("manifest {asked} does not match its digest"))
            })?;
        }
        let media_type = match header_type {
            Some(t) if !t.is_empty() && t != "application/json" && t != "text/plain" => t,
            _ => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| berth_oci::media_type::OCI_MANIFEST.to_owned()),
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest: match reference.parse::<Digest>() {
                Ok(d) => d,
                Err(_) => digest,
            },
        })
    }

    /// GET blob `digest` of `name` at `base`: the response, to be streamed
    /// and verified by the caller.
    pub async fn blob(
        &self,
        base: &str,
        name: &str,
        digest: &Digest,
        auth: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.blob_from(&format!("{base}/v2/{name}/blobs/{digest}"), auth, 0)
            .await
    }

    /// GET blob bytes from `offset` on: from a registry (`registry` true:
    /// with its token dance) or a peer mirror's `url`. A 206 is the rest; a
    /// 200 is the whole blob, which the caller must skip into.
    pub async fn blob_from(
        &self,
        url: &str,
        auth: Option<&HeaderValue>,
        offset: u64,
    ) -> Result<reqwest::Response, UpstreamError> {
        let resp = self
            .send_from(reqwest::Method::GET, url, None, auth, None, offset)
            .await?;
        Self::classify(resp.status())?;
        Ok(resp)
    }

    /// HEAD `url` on a peer mirror within `timeout`: its Content-Length if
    /// it answers 200, and whether it is still downloading the blob.
    pub async fn peer_has(&self, url: &str, timeout: Duration) -> Option<(u64, bool)> {
        let resp = self.client.head(url).timeout(timeout).send().await.ok()?;
        if resp.status() != reqwest::StatusCode::OK {
            return None;
        }
        let size = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())?;
        Some((size, resp.headers().contains_key(crate::render::IN_FLIGHT)))
    }

    /// Ask the coordinator at `url` (`…/berth/v1/claims/<digest>`), as
    /// node `me`, who fetches a cold blob: the node it names, or `None` if
    /// it does not answer within `timeout`.
    pub async fn claim(
        &self,
        url: &str,
        me: &str,
        timeout: Duration,
    ) -> Option<crate::claims::Named> {
        let url = reqwest::Url::parse_with_params(url, [("by", me)]).ok()?;
        let resp = self
            .client
            .post(url.clone())
            .timeout(timeout)
            .send()
            .await
            .ok()?;
        if resp.status() == reqwest::StatusCode::FORBIDDEN {
            // Said once: every cold pull would otherwise go to the registry
            // without a word.
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(coordinator = %url, advertise_url = %me, "a peer does not list this node as a member, so it fetches cold blobs from the registry itself: list it in every peer's `peers` exactly as its advertise_url says");
            }
        }
        if resp.status() != reqwest::StatusCode::OK {
            return None;
        }
        #[derive(serde::Deserialize)]
        struct Named {
            fetcher: String,
            #[serde(default)]
            depth: u32,
        }
        let body = tokio::time::timeout(timeout, resp.bytes())
            .await
            .ok()?
            .ok()?;
        if body.len() > 4096 {
            return None;
        }
        let named: Named = serde_json::from_slice(&body).ok()?;
        Some(crate::claims::Named {
            url: named.fetcher,
            depth: named.depth.min(1000),
        })
    }

    /// GET `url` from a peer mirror. Credentials go only to the node asked
    /// to fetch from the registry on the caller's behalf.
    pub async fn peer_get(
        &self,
        url: &str,
        auth: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut r = self.client.get(url);
        if let Some(a) = auth {
            r = r.header(AUTHORIZATION, a);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Self::classify(resp.status())?;
        Ok(resp)
    }

    /// Whether the registry at `base` answers at all (`GET /v2/`, any
    /// status): `Err` with the transport error if not.
    pub async fn ping(&self, base: &str) -> Result<(), String> {
        self.client
            .get(format!("{base}/v2/"))
            .timeout(self.manifest_timeout.min(Duration::from_secs(2)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Whether the registry lets the caller (`auth`) read `url` (a HEAD):
    /// `Ok(())`, or the refusal with the registry's challenge to pass on.
    pub async fn authorize(
        &self,
        url: &str,
        auth: Option<&HeaderValue>,
    ) -> Result<(), (u16, Option<HeaderValue>)> {
        let resp = match self
            .send(
                reqwest::Method::HEAD,
                url,
                Some(&HeaderValue::from_static(MANIFEST_ACCEPT)),
                auth,
                Some(self.manifest_timeout),
            )
            .await
        {
            Ok(r) => r,
            // Private content fails closed.
            Err(_) => return Err((503, None)),
        };
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            s @ (401 | 403) => Err((s, resp.headers().get(WWW_AUTHENTICATE).cloned())),
            404 => Err((404, None)),
            _ => Err((503, None)),
        }
    }

    /// HEAD blob `digest`: its size.
    pub async fn blob_size(
        &self,
        base: &str,
        name: &str,
        digest: &Digest,
        auth: Option<&HeaderValue>,
    ) -> Result<Option<u64>, UpstreamError> {
        let url = format!("{base}/v2/{name}/blobs/{digest}");
        let resp = self
            .send(
                reqwest::Method::HEAD,
                &url,
                None,
                auth,
                Some(self.manifest_timeout),
            )
            .await?;
        Self::classify(resp.status())?;
        Ok(resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use std::collections::BTreeMap;

    /// A registry whose token endpoint grants a token only for the exact
    /// scope of its challenge, `repository:a/b:pull,push`: a client that
    /// splits the challenge on every comma never gets the manifest.
    #[tokio::test]
    async fn a_bearer_challenge_with_a_comma_in_its_scope_is_answered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let realm = format!("{base}/token");
        const MANIFEST: &[u8] =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        let app = axum::Router::new()
            .route(
                "/token",
                axum::routing::get(|Query(q): Query<BTreeMap<String, String>>| async move {
                    let ok = q.get("scope").map(String::as_str) == Some("repository:a/b:pull,push")
                        && q.get("service").map(String::as_str) == Some("reg, with comma");
                    if ok {
                        (StatusCode::OK, r#"{"token":"granted"}"#).into_response()
                    } else {
                        (StatusCode::FORBIDDEN, format!("{q:?}")).into_response()
                    }
                }),
            )
            .route(
                "/v2/a/b/manifests/1",
                axum::routing::get(|State(realm): State<String>, h: HeaderMap| async move {
                    if h.get("authorization").is_some_and(|v| v == "Bearer granted") {
                        (
                            StatusCode::OK,
                            [("content-type", "application/vnd.oci.image.manifest.v1+json")],
                            MANIFEST,
                        )
                            .into_response()
                    } else {
                        let challenge = format!(
                            r#"Bearer realm="{realm}",service="reg, with comma",scope="repository:a/b:pull,push""#
                        );
                        (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)], "")
                            .into_response()
                    }
                }),
            )
            .with_state(realm);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let up = Upstream::new(&UpstreamConfig::default(), 1 << 20);
        let got = up.manifest(&base, "a/b", "1", None, None).await.unwrap();
        assert_eq!(got.bytes, MANIFEST);
        assert_eq!(got.digest, Digest::sha256(MANIFEST));
    }
}
