//! The gate every request passes when `[auth]` is configured: who presents
//! which credentials ([`Gate::authenticate`], Basic at `/token`), what a
//! token may carry ([`Gate::issue`]: the intersection of the scopes asked
//! and what [`Policy`] allows), and whether a `/v2` request's bearer token
//! covers what it does ([`Gate::check`]), with the `WWW-Authenticate`
//! challenge that sends a client to get one. Pure apart from the clock the
//! caller passes.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;

use super::credentials::RecentlyVerified;
use super::directory::{Declared, Directory};
use super::model::{Action, Principal};
use super::token::{self, Access, Claims, Keys};
use crate::metadata::AuthRows;

/// The registry's access control, loaded from `[auth]`.
#[derive(Debug)]
pub struct Gate {
    /// The service name (token `iss`/`aud`, challenge `service`).
    pub service: String,
    /// The token endpoint, if configured; else derived from the request.
    pub realm: Option<String>,
    /// Token lifetime.
    pub ttl: Duration,
    pub(crate) keys: Keys,
    /// What the configuration declares.
    pub declared: Declared,
    /// Declared and stored accounts, swapped whole on every change.
    dir: RwLock<Arc<Directory>>,
    pub(crate) recent: RecentlyVerified,
    /// Tokens whose signature was verified, by the hash of the token: a
    /// client's many requests with one token pay for Ed25519 once.
    pub(crate) verified:
        std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<Claims>>>,
    /// Password hashing at once is bounded (argon2id takes 19 MiB and tens
    /// of milliseconds each): a burst of logins, right or wrong, queues
    /// instead of exhausting memory.
    pub hashing: tokio::sync::Semaphore,
}

/// Most verified tokens remembered.
const VERIFIED_MAX: usize = 10_000;

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one that is invalid or does not cover the request:
    /// 401 with a challenge for `scope`.
    Unauthorized {
        /// The scope to ask for, if any.
        scope: Option<String>,
        /// Why, for the error message.
        why: String,
    },
    /// A valid token of a known user or robot that does not cover the
    /// request: 403 with a challenge for `scope` and
    /// `error="insufficient_scope"` (RFC 6750 §3.1), so a client holding a
    /// narrower token (oras asks for pull first, then pushes) fetches one
    /// for this scope.
    InsufficientScope {
        /// The scope to ask for.
        scope: Option<String>,
        /// Who the token is for.
        sub: String,
    },
}

/// Credentials that do not prove anyone: a wrong secret, an unknown
/// name, an expired or disabled robot, or a malformed header — one answer
/// for all, so none can be told from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("wrong user name or password")]
pub struct BadCredentials;

/// A `/token` answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenAnswer {
    /// The token.
    pub token: String,
    /// The same, under OAuth2's name.
    pub access_token: String,
    /// Seconds it is valid.
    pub expires_in: u64,
    /// When it was issued, RFC 3339.
    pub issued_at: String,
}

/// RFC 3339 for unix seconds (UTC), for `issued_at`.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `(type, name, actions)` of a token-spec scope
/// (`repository:team/app:pull,push`).
pub fn parse_scope(scope: &str) -> Option<(&str, &str, &str)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    (!name.is_empty()).then_some((kind, name, actions))
}

impl Gate {
    /// A gate over the declared accounts (stored ones come with
    /// [`Gate::reload`]).
    pub fn new(
        service: String,
        realm: Option<String>,
        ttl: Duration,
        keys: Keys,
        declared: Declared,
    ) -> Self {
        let dir = Directory::build(&declared, &AuthRows::default());
        Self {
            service,
            realm,
            ttl,
            keys,
            declared,
            dir: RwLock::new(Arc::new(dir)),
            recent: RecentlyVerified::new(Duration::from_secs(10)),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
            hashing: tokio::sync::Semaphore::new(2),
        }
    }

    /// The accounts as they are now.
    pub fn directory(&self) -> Arc<Directory> {
        Arc::clone(&self.dir.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Rebuild the accounts from the declared ones and `rows` (every
    /// stored account), and forget cached logins so a changed or removed
    /// secret is checked again.
    pub fn reload(&self, rows: &AuthRows) {
        let dir = Arc::new(Directory::build(&self.declared, rows));
        *self.dir.write().unwrap_or_else(|e| e.into_inner()) = dir;
        self.recent.clear();
    }

    /// Who `authorization` (a `Basic` header value, or none) names:
    /// anonymous without one, `Err` when the credentials are wrong, the
    /// robot is expired or disabled, or the header is malformed. The same
    /// answer, and the same work, for an unknown name as for a wrong
    /// secret.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        now: u64,
    ) -> Result<Principal, BadCredentials> {
        let Some(value) = authorization else {
            return Ok(Principal::Anonymous);
        };
        let (name, secret) = Self::basic(value)?;
        self.login(&name, &secret, now)
    }

    /// `name`'s principal if it proved `secret` moments ago (no hashing).
    pub fn login_cached(&self, name: &str, secret: &str, now: u64) -> Option<Principal> {
        if !self.recent.contains(name, secret) {
            return None;
        }
        let dir = self.directory();
        match dir.robots.get(name) {
            Some(r) if r.active(now) => Some(Principal::Robot(r.clone())),
            Some(_) => None,
            None => Some(Self::principal_in(&dir, name)),
        }
    }

    /// The `name:secret` of a `Basic` header value.
    pub fn basic(authorization: &str) -> Result<(String, String), BadCredentials> {
        let encoded = authorization.strip_prefix("Basic ").ok_or(BadCredentials)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| BadCredentials)?;
        let text = String::from_utf8(decoded).map_err(|_| BadCredentials)?;
        let (name, secret) = text.split_once(':').ok_or(BadCredentials)?;
        Ok((name.to_owned(), secret.to_owned()))
    }

    /// Check `name`'s `secret`: from the cache of recent successes, else
    /// against its stored secret (robots in their own store, so an unknown
    /// `robot$…` costs what a wrong robot secret costs).
    pub fn login(&self, name: &str, secret: &str, now: u64) -> Result<Principal, BadCredentials> {
        if let Some(who) = self.login_cached(name, secret, now) {
            return Ok(who);
        }
        let dir = self.directory();
        let store = if name.starts_with("robot$") {
            &dir.robot_secrets
        } else {
            &dir.users
        };
        if !store.check(name, secret) {
            return Err(BadCredentials);
        }
        match dir.robots.get(name) {
            Some(r) if !r.active(now) => return Err(BadCredentials),
            _ => {}
        }
        self.recent.insert(name, secret);
        Ok(Self::principal_in(&dir, name))
    }

    /// The principal a token's `sub` names.
    pub fn principal_of(&self, sub: &str) -> Principal {
        Self::principal_in(&self.directory(), sub)
    }

    fn principal_in(dir: &Directory, sub: &str) -> Principal {
        if sub.is_empty() {
            return Principal::Anonymous;
        }
        if let Some(r) = dir.robots.get(sub) {
            return Principal::Robot(r.clone());
        }
        Principal::User {
            name: sub.to_owned(),
            admin: dir.admins.contains(sub),
        }
    }

    fn subject(who: &Principal) -> String {
        match who {
            Principal::Anonymous => String::new(),
            Principal::User { name, .. } => name.clone(),
            Principal::Robot(r) => r.name.clone(),
        }
    }

    /// A token for `who` covering what it may do of `scopes` at `now`.
    pub fn issue(&self, who: &Principal, scopes: &[String], now: u64) -> TokenAnswer {
        let dir = self.directory();
        let mut access = Vec::new();
        for scope in scopes {
            let Some((kind, name, actions)) = parse_scope(scope) else {
                continue;
            };
            let granted: Vec<String> = match kind {
                "repository" => dir
                    .policy
                    .grant(who, name, &Action::parse_list(actions), now)
                    .into_iter()
                    .map(|a| a.as_str().to_owned())
                    .collect(),
                // The catalog is filtered per repository: anyone known may
                // ask for it.
                "registry" if name == "catalog" && !matches!(who, Principal::Anonymous) => {
                    vec!["*".to_owned()]
                }
                _ => Vec::new(),
            };
            if !granted.is_empty() {
                access.push(Access {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    actions: granted,
                });
            }
        }
        let ttl = self.ttl.as_secs();
        let claims = Claims {
            iss: self.service.clone(),
            sub: Self::subject(who),
            aud: self.service.clone(),
            exp: now + ttl,
            nbf: now.saturating_sub(1),
            iat: now,
            jti: super::credentials::new_secret(),
            access,
        };
        let token = token::issue(&self.keys, &claims);
        TokenAnswer {
            access_token: token.clone(),
            token,
            expires_in: ttl,
            issued_at: rfc3339(now),
        }
    }

    /// Whether `authorization` (a `Bearer` header value) covers `action`
    /// on `repository` (`None`: any valid token, as `/v2/` asks; the
    /// catalog asks for `registry:catalog:*`). The token's claims on
    /// success ([`Gate::principal_of`] their `sub` for who it is).
    pub fn check(
        &self,
        authorization: Option<&str>,
        resource: Resource<'_>,
        now: u64,
    ) -> Result<std::sync::Arc<Claims>, Refusal> {
        let scope = resource.scope();
        let refuse = |why: &str| Refusal::Unauthorized {
            scope: scope.clone(),
            why: why.to_owned(),
        };
        let Some(bearer) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return Err(refuse("authentication required"));
        };
        let claims = self
            .verify(bearer.trim(), now)
            .map_err(|e| refuse(&e.to_string()))?;
        // A robot deleted, disabled or expired since, or whose secret was
        // rotated after the token was issued, loses its tokens at once.
        if claims.sub.starts_with("robot$") {
            let dir = self.directory();
            let valid = dir.robots.get(&claims.sub).is_some_and(|r| {
                r.active(now)
                    && dir
                        .secret_set_at
                        .get(&claims.sub)
                        .is_none_or(|set| claims.iat >= *set)
            });
            if !valid {
                return Err(refuse(
                    "the robot was removed, disabled or rotated after this token was issued",
                ));
            }
        }
        let covered = match resource {
            Resource::Any => true,
            Resource::Catalog => claims
                .access
                .iter()
                .any(|a| a.kind == "registry" && a.name == "catalog"),
            Resource::Repository(name, action) => claims
                .access
                .iter()
                .any(|a| a.kind == "repository" && a.name == name && a.granted().contains(&action)),
            Resource::UploadCancel(name) => claims.access.iter().any(|a| {
                a.kind == "repository"
                    && a.name == name
                    && a.granted()
                        .iter()
                        .any(|g| matches!(g, Action::Push | Action::Delete))
            }),
        };
        // An anonymous token that does not cover the request asks for
        // credentials (401, as if there were no token): that is what makes
        // a client log in, and what a mirror checking for its caller must
        // pass on.
        if !covered && claims.sub.is_empty() {
            return Err(refuse("authentication required"));
        }
        if !covered {
            return Err(Refusal::InsufficientScope {
                scope,
                sub: claims.sub.clone(),
            });
        }
        Ok(claims)
    }

    /// A token's claims: from the cache of verified tokens while they are
    /// valid, else verified (and remembered).
    fn verify(&self, bearer: &str, now: u64) -> Result<std::sync::Arc<Claims>, token::TokenError> {
        let key: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(bearer.as_bytes()).into()
        };
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = verified.get(&key) {
            if now < c.exp && now >= c.nbf {
                return Ok(std::sync::Arc::clone(c));
            }
        }
        drop(verified);
        let claims = std::sync::Arc::new(token::verify(&self.keys, bearer, &self.service, now)?);
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.retain(|_, c| now < c.exp);
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
        }
        verified.insert(key, std::sync::Arc::clone(&claims));
        Ok(claims)
    }

    /// The `WWW-Authenticate` value sending a client to the token endpoint
    /// (`realm`, else `<scheme>://<host>/token`) for `scope`.
    pub fn challenge(&self, host: Option<&str>, scheme: &str, scope: Option<&str>) -> String {
        let realm = self
            .realm
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}/token", host.unwrap_or(&self.service)));
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut v = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            quote(&realm),
            quote(&self.service)
        );
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{}\"", quote(s)));
        }
        v
    }
}

/// What a `/v2` request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// Any valid token (`/v2/`).
    Any,
    /// The catalog.
    Catalog,
    /// An action on a repository.
    Repository(&'a str, Action),
    /// Cancelling an upload session (`DELETE` on it): push or delete —
    /// the uploader holds push, and distribution's clients ask for
    /// delete for every `DELETE`.
    UploadCancel(&'a str),
}

impl Resource<'_> {
    /// The scope a client should ask for.
    pub fn scope(&self) -> Option<String> {
        match self {
            Resource::Any => None,
            Resource::Catalog => Some("registry:catalog:*".to_owned()),
            Resource::Repository(name, Action::Pull) => Some(format!("repository:{name}:pull")),
            Resource::Repository(name, Action::Push) => {
                Some(format!("repository:{name}:pull,push"))
            }
            Resource::Repository(name, Action::Delete) => Some(format!("repository:{name}:delete")),
            Resource::UploadCancel(name) => Some(format!("repository:{name}:pull,push")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_scopes() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            parse_scope("repository:team/app:pull,push"),
            Some(("repository", "team/app", "pull,push"))
        );
        assert_eq!(
            parse_scope("registry:catalog:*"),
            Some(("registry", "catalog", "*"))
        );
        assert_eq!(parse_scope("repository::pull"), None);
        assert_eq!(parse_scope("nonsense"), None);
    }
}
