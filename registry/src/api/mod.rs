//! The HTTP edge of the registry: the axum router, the single `/v2/{*rest}`
//! handler that parses the path with [`berth_oci::distribution::route::parse`] and dispatches on
//! method and route, `/metrics`, `/healthz`, and the request-metrics layer.
//!
//! Layering: routes (here) → the endpoint handlers in [`manifests`] and
//! [`blobs`] → [`crate::metadata`] and [`crate::storage`]. Handlers return
//! `Result<Response, ApiError>`; the conversion to the OCI error JSON happens
//! once, in [`error::ApiError`]. Only this module knows axum routes.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use berth_oci::ErrorCode;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

use crate::Registry;

pub(crate) mod admin;
mod blobs;
pub mod error;
pub(crate) mod manifests;
pub(crate) mod token;

use berth_oci::distribution::{Route, route};
pub use error::ApiError;

/// What a handler's response asks the audit log to record (the actor and
/// client are added by [`dispatch`], which knows them).
#[derive(Debug, Clone)]
pub(crate) struct AuditNote {
    pub(crate) action: &'static str,
    pub(crate) target: String,
    pub(crate) detail: String,
}

/// The client's address as the audit log and the login throttle see it.
pub(crate) fn client_ip(ext: &http::Extensions) -> Option<std::net::IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

pub(crate) fn client_text(ext: &http::Extensions) -> String {
    client_ip(ext).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// The label a response carries for the request metrics.
#[derive(Debug, Clone, Copy)]
struct RouteLabel(&'static str);

/// A parsed query string; keys may repeat (`?tag=a&tag=b`).
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    /// The last value of `key`.
    fn get(&self, key: &str) -> Option<&String> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every value of `key`, in order.
    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v)
    }
}

/// `GET /readyz`: 200 when the metadata database and the blob store both
/// answer within 3 s, else 503 with the OCI error JSON naming which does
/// not — for a load balancer's or Kubernetes' readiness check. `/healthz`
/// only says the process serves.
async fn readyz(State(r): State<Arc<Registry>>) -> Response {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(3);
    let meta = r.meta.clone();
    let db = tokio::time::timeout(LIMIT, tokio::task::spawn_blocking(move || meta.ping())).await;
    let db = match db {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(format!("the metadata database does not answer: {e}")),
        Ok(Err(e)) => Some(format!("the metadata check failed: {e}")),
        Err(_) => Some("the metadata database did not answer within 3 s".to_owned()),
    };
    // A digest nobody stores: the store answers "not here" when it works.
    let probe = berth_oci::Digest::sha256(b"berth readiness probe");
    let store = match tokio::time::timeout(LIMIT, crate::storage::BlobStore::stat(&r.blobs, &probe))
        .await
    {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("the blob store does not answer: {e}")),
        Err(_) => Some("the blob store did not answer within 3 s".to_owned()),
    };
    match db.or(store) {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => {
            tracing::warn!(%why, "not ready");
            let body =
                berth_oci::ErrorResponse::single(berth_oci::ErrorCode::Unavailable, why, None);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&body).unwrap_or_default(),
            )
                .into_response()
        }
    }
}

/// Build the registry's router.
pub fn router(registry: Arc<Registry>) -> Router {
    #[cfg(feature = "ui")]
    let ui = if registry.ui_enabled() {
        crate::ui::router()
    } else {
        Router::new()
    };
    #[cfg(not(feature = "ui"))]
    let ui = Router::new();
    Router::new()
        .route("/v2", any(base_checked))
        .route("/v2/", any(base_checked))
        .route("/v2/{*rest}", any(dispatch))
        .route("/token", get(token::get).post(token::post))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(admin::router())
        .merge(ui)
        .layer(middleware::from_fn_with_state(registry.clone(), record))
        .with_state(registry)
}

/// The request with the client's address in place of a trusted proxy's
/// (`trusted_proxies`): `X-Forwarded-For` read from the right, past every
/// trusted hop; the first address that is not a trusted proxy is the
/// client. From any other peer the header is ignored, so a client cannot
/// pick its own address; an entry that is not an address stops the walk.
fn forwarded(registry: &Registry, mut req: Request) -> Request {
    use std::net::{IpAddr, SocketAddr};
    if registry.trusted_proxies.is_empty() {
        return req;
    }
    let trusted = |ip: IpAddr| registry.trusted_proxies.iter().any(|c| c.contains(ip));
    let Some(peer) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
    else {
        return req;
    };
    if !trusted(peer.ip()) {
        return req;
    }
    let hops: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_owned())
        .collect();
    let mut client = None;
    for hop in hops.iter().rev() {
        let ip = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()));
        match ip {
            Some(ip) if trusted(ip) => continue,
            Some(ip) => {
                client = Some(ip);
                break;
            }
            None => break,
        }
    }
    if let Some(ip) = client {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::new(ip, peer.port())));
    }
    req
}

async fn record(State(registry): State<Arc<Registry>>, req: Request, next: Next) -> Response {
    let req = forwarded(&registry, req);
    let start = Instant::now();
    let method = req.method().clone();
    // The endpoints outside /v2 are named by their path (a scrape is not
    // an API request of an unknown kind).
    let fixed = match req.uri().path() {
        "/metrics" => Some("metrics"),
        "/healthz" => Some("healthz"),
        "/readyz" => Some("readyz"),
        "/token" => Some("token"),
        p if p.starts_with("/api/") => Some("admin"),
        _ => None,
    };
    let resp = next.run(req).await;
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map(|l| l.0)
        .or(fixed)
        .unwrap_or("other");
    registry.metrics.request(
        route,
        method.as_str(),
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}

fn api_version(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// `/v2/`: with `[auth]`, any valid token (a 401 here is how clients
/// learn where to get one).
async fn base_checked(
    State(registry): State<Arc<Registry>>,
    method: Method,
    uri: Uri,
    ext: http::Extensions,
    headers: HeaderMap,
) -> Response {
    let resp = match admit(
        &registry,
        &method,
        &Route::Base,
        Params(Vec::new()),
        &headers,
        &uri,
        &ext,
    ) {
        Ok(_) => base().await,
        Err(refused) => api_version(*refused),
    };
    let mut resp = resp;
    resp.extensions_mut().insert(RouteLabel("base"));
    resp
}

async fn base() -> Response {
    let mut resp = api_version(
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    http::HeaderName::from_static("berth-pieces"),
                    crate::pieces::HEADER.1,
                ),
            ],
            "{}",
        )
            .into_response(),
    );
    resp.extensions_mut().insert(RouteLabel("base"));
    resp
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    // Counted in the database, so off the async worker when it is remote.
    let open = db_read(&registry, |m| m.upload_count()).await.unwrap_or(0);
    if let (crate::storage::Blobs::S3(_), Some(s3)) = (&registry.blobs, &registry.metrics.s3_gauge)
    {
        let multipart = db_read(&registry, |m| m.s3_open_multipart_count()).await;
        s3.set(multipart.unwrap_or(0) as i64);
    }
    if let Some(dir) = &registry.data_dir {
        registry
            .metrics
            .free_bytes(crate::storage::free_bytes(dir).ok());
    }
    let backlog = db_read(&registry, |m| m.outbox_backlog())
        .await
        .unwrap_or(0);
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        registry.metrics.render(open, backlog),
    )
        .into_response()
}

/// Decode `%XX` escapes in a path; malformed escapes are left as they are
/// (and then fail the name or digest grammar).
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse a query string (`a=1&b=x%3Ay`); never fails, so a malformed query
/// reaches the handlers as missing or odd values that they reject properly.
fn parse_query(q: &str) -> Params {
    Params(
        q.split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (
                    percent_decode(&k.replace('+', " ")),
                    percent_decode(&v.replace('+', " ")),
                )
            })
            .collect(),
    )
}

fn label(route: &Route) -> &'static str {
    match route {
        Route::Base => "base",
        Route::Catalog => "catalog",
        Route::Tags { .. } => "tags",
        Route::Manifest { .. } => "manifest",
        Route::Blob { .. } => "blob",
        Route::UploadStart { .. } | Route::Upload { .. } => "upload",
        Route::Referrers { .. } => "referrers",
    }
}

async fn dispatch(
    State(registry): State<Arc<Registry>>,
    method: Method,
    uri: Uri,
    ext: http::Extensions,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let rest = percent_decode(uri.path().strip_prefix("/v2/").unwrap_or(""));
    let params = parse_query(uri.query().unwrap_or(""));
    let (result, label) = match route::parse(&rest) {
        Ok(route) => {
            let label = label(&route);
            match admit(&registry, &method, &route, params, &headers, &uri, &ext) {
                Ok((params, sub)) => {
                    let catalog = matches!(route, Route::Catalog);
                    let result = handle(
                        &registry,
                        method,
                        route,
                        params,
                        headers,
                        body,
                        sub.as_deref(),
                    )
                    .await;
                    if let Ok(resp) = &result {
                        if let Some(notes) = resp.extensions().get::<Vec<AuditNote>>() {
                            let actor = sub.as_deref().unwrap_or("anonymous");
                            let actor = if actor.is_empty() { "anonymous" } else { actor };
                            let client = client_text(&ext);
                            for n in notes {
                                registry.audit.record(
                                    actor,
                                    &client,
                                    n.action,
                                    &n.target,
                                    "ok",
                                    n.detail.clone(),
                                );
                            }
                        }
                    }
                    match (catalog, &registry.gate, sub, result) {
                        (true, Some(gate), Some(sub), Ok(resp)) => {
                            let who = gate.principal_of(&sub);
                            (Ok(filter_catalog(&registry, &who, resp).await), label)
                        }
                        (_, _, _, result) => (result, label),
                    }
                }
                Err(refused) => (Ok(*refused), label),
            }
        }
        Err(e) => (Err(e.into()), "invalid"),
    };
    let mut resp = api_version(result.unwrap_or_else(IntoResponse::into_response));
    resp.extensions_mut().insert(RouteLabel(label));
    resp
}

/// The catalog page as `who` may see it: only repositories it may pull.
async fn filter_catalog(
    r: &Registry,
    who: &crate::auth::model::Principal,
    resp: Response,
) -> Response {
    let Some(gate) = &r.gate else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let now = token::now();
    let dir = gate.directory();
    if let Some(list) = v.get_mut("repositories").and_then(|l| l.as_array_mut()) {
        list.retain(|name| {
            name.as_str().is_some_and(|n| {
                dir.policy
                    .allows(who, n, crate::auth::model::Action::Pull, now)
            })
        });
    }
    let body = serde_json::to_vec(&v).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::from(body))
}

/// What a refused request was aimed at, for the audit log.
fn scope_target(route: &Route) -> String {
    match route {
        Route::Base => String::new(),
        Route::Catalog => "_catalog".to_owned(),
        Route::Tags { name }
        | Route::Referrers { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. }
        | Route::Manifest { name, .. }
        | Route::Blob { name, .. } => name.clone(),
    }
}

/// What `method` on `route` needs from the access policy.
fn resource<'a>(method: &Method, route: &'a Route) -> crate::auth::gate::Resource<'a> {
    use crate::auth::gate::Resource;
    use crate::auth::model::Action;
    match route {
        Route::Base => Resource::Any,
        Route::Catalog => Resource::Catalog,
        Route::Tags { name } | Route::Referrers { name, .. } => {
            Resource::Repository(name, Action::Pull)
        }
        // Upload sessions belong to pushes; reading a session's progress
        // (GET) is a pull, as in distribution, so a client holding a pull
        // token may ask where its upload stands.
        Route::Upload { name, .. } if matches!(*method, Method::GET | Method::HEAD) => {
            Resource::Repository(name, Action::Pull)
        }
        Route::Upload { name, .. } if *method == Method::DELETE => Resource::UploadCancel(name),
        Route::UploadStart { name } | Route::Upload { name, .. } => {
            Resource::Repository(name, Action::Push)
        }
        Route::Manifest { name, .. } | Route::Blob { name, .. } => Resource::Repository(
            name,
            match *method {
                Method::GET | Method::HEAD => Action::Pull,
                Method::DELETE => Action::Delete,
                _ => Action::Push,
            },
        ),
    }
}

/// With `[auth]`: let the request through (its query, a mount the caller
/// may not read the source of turned into a plain upload) or answer 401
/// with the challenge for the scope it needs.
fn admit(
    r: &Registry,
    method: &Method,
    route: &Route,
    params: Params,
    headers: &HeaderMap,
    uri: &Uri,
    ext: &http::Extensions,
) -> Result<(Params, Option<String>), Box<Response>> {
    let Some(gate) = &r.gate else {
        return Ok((params, None));
    };
    let now = token::now();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match gate.check(auth, resource(method, route), now) {
        Ok(claims) => {
            // Who it is matters for a mount's source and the catalog only.
            let who = || gate.principal_of(&claims.sub);
            // A mount needs pull on its source; an anonymous mount
            // (without `from`) cannot be checked. Either way the client
            // gets a normal upload session, which never tells whether the
            // blob exists elsewhere.
            if let Route::UploadStart { .. } = route {
                if params.get("mount").is_some() {
                    let readable = params.get("from").is_some_and(|from| {
                        gate.directory().policy.allows(
                            &who(),
                            from,
                            crate::auth::model::Action::Pull,
                            now,
                        )
                    });
                    if !readable {
                        let plain = params
                            .0
                            .into_iter()
                            .filter(|(k, _)| k != "mount" && k != "from")
                            .collect();
                        return Ok((Params(plain), Some(claims.sub.clone())));
                    }
                }
            }
            Ok((params, Some(claims.sub.clone())))
        }
        Err(refusal) => {
            use crate::auth::gate::Refusal;
            let target = scope_target(route);
            let (error, insufficient, scope) = match refusal {
                Refusal::Unauthorized { scope, why } => {
                    // No token is how every client starts: not an event.
                    if auth.is_some() {
                        r.audit.record(
                            "unknown",
                            &client_text(ext),
                            "token.invalid",
                            &target,
                            "denied",
                            why.clone(),
                        );
                    }
                    (
                        ApiError::new(ErrorCode::Unauthorized, why)
                            .with_status(StatusCode::UNAUTHORIZED),
                        false,
                        scope,
                    )
                }
                Refusal::InsufficientScope { scope, sub } => {
                    r.audit.record(
                        if sub.is_empty() { "anonymous" } else { &sub },
                        &client_text(ext),
                        "access.denied",
                        &target,
                        "denied",
                        format!("{method} needs {}", scope.as_deref().unwrap_or("a token")),
                    );
                    (
                    ApiError::new(
                        ErrorCode::Denied,
                        "the token does not cover this request; ask /token for the scope in WWW-Authenticate",
                    )
                    .with_status(StatusCode::FORBIDDEN),
                    true,
                    scope,
                )
                }
            };
            // HTTP/1.1 names the host in `Host`, HTTP/2 in `:authority`.
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| uri.authority().map(|a| a.as_str()));
            let scheme = if r.https { "https" } else { "http" };
            let mut challenge = gate.challenge(host, scheme, scope.as_deref());
            if insufficient {
                challenge.push_str(",error=\"insufficient_scope\"");
            }
            let mut resp = error.into_response();
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            Err(Box::new(resp))
        }
    }
}

async fn handle(
    r: &Arc<Registry>,
    method: Method,
    route: Route,
    params: Params,
    headers: HeaderMap,
    body: Body,
    actor: Option<&str>,
) -> Result<Response, ApiError> {
    let head = method == Method::HEAD;
    match (method, route) {
        (Method::GET | Method::HEAD, Route::Base) => Ok(base().await),
        (Method::GET, Route::Catalog) => manifests::catalog(r, &params).await,
        (Method::GET, Route::Tags { name }) => manifests::tags(r, &name, &params).await,
        (Method::GET | Method::HEAD, Route::Manifest { name, reference }) => {
            manifests::get(r, &name, &reference, head).await
        }
        (Method::PUT, Route::Manifest { name, reference }) => {
            manifests::put(r, &name, &reference, &params, &headers, body, actor).await
        }
        (Method::DELETE, Route::Manifest { name, reference }) => {
            manifests::delete(r, &name, &reference, &headers, actor).await
        }
        (Method::GET, Route::Referrers { name, digest }) => {
            manifests::referrers(r, &name, &digest, &params)
        }
        (Method::GET | Method::HEAD, Route::Blob { name, digest }) => {
            blobs::get(r, &name, &digest, &headers, &params, head).await
        }
        (Method::DELETE, Route::Blob { name, digest }) => blobs::delete(r, &name, &digest).await,
        (Method::POST, Route::UploadStart { name }) => {
            blobs::start(r, &name, &params, &headers, body, actor).await
        }
        (Method::GET, Route::Upload { name, id }) => blobs::status(r, &name, &id).await,
        (Method::PATCH, Route::Upload { name, id }) => {
            blobs::patch(r, &name, &id, &headers, body, actor).await
        }
        (Method::PUT, Route::Upload { name, id }) => {
            blobs::finish(r, &name, &id, &params, &headers, body, actor).await
        }
        (Method::DELETE, Route::Upload { name, id }) => blobs::cancel(r, &name, &id).await,
        (method, route) => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "{method} is not supported on the {} endpoint",
                label(&route)
            ),
        )
        .with_status(StatusCode::METHOD_NOT_ALLOWED)),
    }
}

/// Run a metadata read: here on the async worker when the store is local
/// (a SQLite read from the page cache is faster than a hop to the
/// blocking pool), from the blocking pool when it waits on the network.
pub(crate) async fn db_read<T: Send + 'static>(
    r: &Arc<Registry>,
    f: impl FnOnce(&crate::metadata::Metadata) -> Result<T, crate::metadata::MetadataError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    if r.meta.remote() {
        // Waiting here is an async wait in arrival order, not a thread.
        let _turn = r
            .db_reads
            .acquire()
            .await
            .map_err(|e| crate::storage::StorageError::Io(std::io::Error::other(e)))?;
        db_write(r, f).await
    } else {
        f(r.meta.as_ref()).map_err(Into::into)
    }
}

/// Run a metadata write on the blocking pool (commits may wait on the disk).
pub(crate) async fn db_write<T: Send + 'static>(
    r: &Arc<Registry>,
    f: impl FnOnce(&crate::metadata::Metadata) -> Result<T, crate::metadata::MetadataError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    let meta = r.meta.clone();
    tokio::task::spawn_blocking(move || f(meta.as_ref()))
        .await
        .map_err(|e| crate::storage::StorageError::Io(std::io::Error::other(e)))?
        .map_err(Into::into)
}

/// The next chunk of a request body, or `None` at its end. A body that
/// stalls for longer than `limits.body_idle_timeout`, or breaks off, is an
/// error with `code`; `what` names the body in the message.
async fn next_chunk(
    r: &Registry,
    stream: &mut axum::body::BodyDataStream,
    code: ErrorCode,
    what: &str,
) -> Result<Option<bytes::Bytes>, ApiError> {
    use futures_util::StreamExt;
    let idle = r.limits.body_idle_timeout;
    match tokio::time::timeout(idle, stream.next()).await {
        Err(_) => Err(ApiError::new(
            code,
            format!(
                "no {what} data for {}s; the request was abandoned",
                idle.as_secs()
            ),
        )),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(ApiError::new(code, format!("reading the {what}: {e}"))),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
    }
}

/// Bytes of a request body read and dropped before answering an error, so
/// that a client still sending gets the answer rather than a broken pipe.
pub(super) const DRAIN_LIMIT: u64 = 64 << 20;

/// Read and drop the rest of a request body, up to `limit` bytes (or until
/// it stalls or fails).
async fn drain(r: &Registry, stream: &mut axum::body::BodyDataStream, limit: u64) {
    let mut seen = 0u64;
    while let Ok(Some(chunk)) = next_chunk(r, stream, ErrorCode::BlobUploadInvalid, "body").await {
        seen += chunk.len() as u64;
        if seen > limit {
            break;
        }
    }
}

/// A response with no body and the given headers.
fn empty(status: StatusCode, headers: &[(&str, String)]) -> Response {
    let mut resp = Response::builder().status(status);
    for (k, v) in headers {
        resp = resp.header(*k, v);
    }
    resp.header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .expect("static headers are valid")
}

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
pub(crate) mod auth_tests;
#[cfg(test)]
mod tests;
