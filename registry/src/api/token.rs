//! `/token`, the token endpoint of the distribution token spec: `GET` with
//! Basic credentials (or none, for an anonymous token) and `scope` query
//! parameters, as docker, podman, skopeo and oras ask; and the OAuth2
//! password-grant `POST` containerd tries first. Both answer `token`,
//! `access_token`, `expires_in` and `issued_at`; wrong credentials are a
//! 401 whatever the scope.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri, header};

use super::{Params, parse_query};
use crate::Registry;
use crate::auth::gate::{BadCredentials, Gate, TokenAnswer};
use crate::auth::model::Principal;

pub(crate) use crate::unix_now as now;

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response()
}

fn refused() -> Response {
    json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "wrong user name or password"}]}),
    )
}

fn answer(gate: &Gate, who: &Principal, params: &Params) -> Response {
    let scopes: Vec<String> = params
        .all("scope")
        .flat_map(|s| s.split(' '))
        .map(str::to_owned)
        .collect();
    let t: TokenAnswer = gate.issue(who, &scopes, now());
    json(StatusCode::OK, &t)
}

/// Check `user`'s `pass`: from the cache of recent successes, else by
/// hashing on the blocking pool, at most as many at once as the gate
/// allows. A client with repeated failures waits first; each failure is
/// logged and audited (the name tried, never the secret).
pub(crate) async fn login(
    r: &Arc<Registry>,
    gate: &Gate,
    user: String,
    pass: String,
    ext: &http::Extensions,
) -> Result<Principal, BadCredentials> {
    if let Some(who) = gate.login_cached(&user, &pass, now()) {
        return Ok(who);
    }
    use crate::auth::throttle::{WINDOW_SECS, delay};
    let ip = super::client_ip(ext);
    let client = ip.map(|ip| ip.to_string());
    // The count every replica keeps together; a database that cannot
    // answer slows no one down (the login itself then fails or not).
    let before = match &client {
        Some(c) => {
            let c = c.clone();
            super::db_read(r, move |m| m.login_failures(&c, now(), WINDOW_SECS))
                .await
                .unwrap_or(0)
        }
        None => 0,
    };
    let wait = delay(before);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let Ok(_permit) = gate.hashing.acquire().await else {
        return Err(BadCredentials);
    };
    let registry = r.clone();
    let name = user.clone();
    let result = tokio::task::spawn_blocking(move || {
        let gate = registry.gate.as_ref().ok_or(BadCredentials)?;
        gate.login(&user, &pass, now())
    })
    .await
    .unwrap_or(Err(BadCredentials));
    match (&result, client) {
        (Ok(_), Some(client)) if before > 0 => {
            let _ = super::db_write(r, move |m| m.login_succeeded(&client)).await;
        }
        (Err(_), client) => {
            let failures = match &client {
                Some(c) => {
                    let c = c.clone();
                    super::db_write(r, move |m| m.login_failed(&c, now(), WINDOW_SECS))
                        .await
                        .unwrap_or(0)
                }
                None => 0,
            };
            let client = client.unwrap_or_else(|| "unknown".to_owned());
            tracing::warn!(user = %name, %client, failures, "login failed");
            r.audit.record(
                &name,
                &client,
                "login.failure",
                &name,
                "denied",
                format!("{failures} failures from this client in 15 minutes"),
            );
        }
        _ => {}
    }
    result
}

/// `GET /token?service=…&scope=…`.
pub(super) async fn get(
    State(r): State<Arc<Registry>>,
    uri: Uri,
    ext: http::Extensions,
    headers: HeaderMap,
) -> Response {
    let Some(gate) = &r.gate else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let params = parse_query(uri.query().unwrap_or(""));
    let who = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        None => Ok(Principal::Anonymous),
        Some(value) => match Gate::basic(value) {
            Ok((user, pass)) => login(&r, gate, user, pass, &ext).await,
            Err(e) => Err(e),
        },
    };
    match who {
        Ok(who) => answer(gate, &who, &params),
        Err(_) => refused(),
    }
}

/// `POST /token` with `grant_type=password&username=…&password=…&scope=…`.
pub(super) async fn post(
    State(r): State<Arc<Registry>>,
    ext: http::Extensions,
    body: Body,
) -> Response {
    let Some(gate) = &r.gate else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let params = parse_query(&String::from_utf8_lossy(&bytes));
    if params.get("grant_type").map(String::as_str) != Some("password") {
        // containerd falls back to GET on 400.
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "unsupported_grant_type"}),
        );
    }
    let (user, pass) = (
        params.get("username").cloned().unwrap_or_default(),
        params.get("password").cloned().unwrap_or_default(),
    );
    let who = login(&r, gate, user, pass, &ext).await;
    match who {
        Ok(who) => answer(gate, &who, &params),
        Err(_) => refused(),
    }
}
