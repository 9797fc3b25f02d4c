//! `berth bot`: the registry's push webhooks (Harbor-style `PUSH_ARTIFACT`
//! payloads, HMAC-SHA256 signed, timestamped, one delivery id each; see
//! docs/webhooks.md) and, for registries without webhooks, polling of
//! named tags, turned into bumps with pull requests.
//!
//! Accepted pushes are written to a pending file before the sender gets
//! 202, so nothing is lost to a crash or a forge outage: a worker waits
//! until pushes stop arriving for `debounce_ms` (or ten times that since
//! the oldest waiting push, under a steady stream), keeps the newest digest
//! per image, runs one bump for all of them, and removes them from the
//! pending file only when the bump (push and pull requests) succeeded;
//! failures are logged and retried with exponential backoff. Pushes that
//! can never succeed (a digest the registry lacks, a file berth refuses to
//! edit) are moved to `failed.json` instead, so they block nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_oci::distribution::webhook::{self, MAX_BODY, Payload, TOLERANCE_S};
use berth_oci::{Digest, Reference};
use serde::{Deserialize, Serialize};

use crate::bump::{self, Options, PrOptions};
use crate::forge::{Forge, ForgeKind};
use crate::git::Identity;
use crate::registry::Registries;
use crate::{BumpError, Target};

pub use berth_oci::distribution::webhook::sign;

/// The bot's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Pending pushes, seen deliveries, poll state, the git repository.
    pub state_dir: PathBuf,
    /// File holding the webhook HMAC secret.
    pub secret_file: Option<PathBuf>,
    /// Quiet time after the last push before a bump runs.
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    /// First retry delay after a failed bump (doubles, up to 10 minutes).
    #[serde(default = "default_retry")]
    pub retry_ms: u64,
    /// The GitOps repository.
    pub git: GitConfig,
    /// The forge; without it branches are pushed but no PR is opened.
    pub forge: Option<ForgeConfig>,
    /// The registry.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Polling, for registries without webhooks.
    pub poll: Option<PollConfig>,
    /// Logging (`[log]`, as in `berth serve`'s and `berth mirror`'s).
    #[serde(default)]
    pub log: berth_oci::log::LogConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}
fn default_debounce() -> u64 {
    5000
}
fn default_retry() -> u64 {
    30_000
}

/// The GitOps repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// Its URL (what `git fetch`/`git push` use, with the credentials
    /// git is configured with).
    pub remote: String,
    /// Branch pull requests target.
    #[serde(default = "default_base")]
    pub base: String,
    /// Bump branch prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// One branch and pull request for every image, named this.
    pub group: Option<String>,
    /// Commit author name.
    #[serde(default = "default_author")]
    pub author_name: String,
    /// Commit author e-mail.
    #[serde(default = "default_email")]
    pub author_email: String,
}

fn default_base() -> String {
    "main".into()
}
fn default_prefix() -> String {
    "berth/bump/".into()
}
fn default_author() -> String {
    Identity::default().name
}
fn default_email() -> String {
    Identity::default().email
}

/// The forge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeConfig {
    /// `forgejo`, `gitea` or `github`.
    pub kind: String,
    /// Web root (Forgejo/Gitea) or `https://github.com`.
    pub url: String,
    /// `owner/name`.
    pub repo: String,
    /// File holding the token; without it, `$BERTH_FORGE_TOKEN`.
    pub token_file: Option<PathBuf>,
}

/// The registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry as GitOps YAML names it (`registry.lan:5000`); replaces
    /// the host of each webhook's `resource_url`.
    pub name: Option<String>,
    /// Plain HTTP.
    #[serde(default)]
    pub plain_http: bool,
    /// Credentials (auth.json).
    pub auth_file: Option<PathBuf>,
    /// Do not check digests with the registry.
    #[serde(default)]
    pub offline: bool,
}

/// Polling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Seconds between polls.
    #[serde(default = "default_interval")]
    pub interval_s: u64,
    /// `registry/repository:tag` to watch.
    pub images: Vec<String>,
}

fn default_interval() -> u64 {
    300
}

impl BotConfig {
    /// Parse and check a configuration.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let c: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if c.secret_file.is_none() && c.poll.is_none() {
            return Err("set secret_file (webhooks) or [poll] (polling), or both".into());
        }
        if let Some(f) = &c.forge {
            f.kind.parse::<ForgeKind>()?;
        }
        if let Some(p) = &c.poll {
            for i in &p.images {
                let r: Reference = i.parse().map_err(|e| format!("poll image {i:?}: {e}"))?;
                if r.tag().is_none() {
                    return Err(format!("poll image {i:?} needs a tag"));
                }
            }
        }
        Ok(c)
    }

    /// What start-up needs beyond the file's syntax: every secret file it
    /// names readable and not empty, each error naming its key. Run by
    /// `--check-config` and by [`Bot::open`] before it touches the disk.
    pub fn check_files(&self) -> Result<(), String> {
        let mut files = vec![("secret_file", self.secret_file.as_ref())];
        if let Some(f) = &self.forge {
            files.push(("forge.token_file", f.token_file.as_ref()));
            if f.token_file.is_none() && std::env::var_os("BERTH_FORGE_TOKEN").is_none() {
                return Err(
                    "[forge] needs a token: set forge.token_file or BERTH_FORGE_TOKEN".into(),
                );
            }
        }
        files.push(("registry.auth_file", self.registry.auth_file.as_ref()));
        for (key, path) in files {
            let Some(path) = path else { continue };
            match std::fs::read_to_string(path) {
                Ok(text) if text.trim().is_empty() => {
                    return Err(format!("{key} = {:?}: the file is empty", path.display()));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!("{key} = {:?}: cannot read it: {e}", path.display()));
                }
            }
        }
        Ok(())
    }
}

/// One push waiting to be bumped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// `registry/repository:tag`.
    pub image: String,
    /// The pushed digest.
    pub digest: String,
    /// When it was pushed (unix seconds).
    pub occur_at: u64,
}

/// What `/status` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Pushes waiting.
    pub pending: usize,
    /// Bumps run (successful or not).
    pub runs: u64,
    /// Bumps that failed.
    pub failures: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

struct Inner {
    pending: Vec<Pending>,
    /// Delivery id → when it was seen.
    seen: HashMap<String, u64>,
    last_push: Option<Instant>,
    /// When the oldest waiting push arrived: a steady stream of pushes
    /// delays a bump by at most ten debounce periods.
    first_push: Option<Instant>,
    status: Status,
}

/// The running bot.
pub struct Bot {
    config: BotConfig,
    secret: Option<Vec<u8>>,
    inner: Mutex<Inner>,
    wake: Condvar,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("listen", &self.config.listen)
            .finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> T {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).unwrap_or_default())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Bot {
    /// Open the state directory (creating it) and load what is pending.
    pub fn open(config: BotConfig) -> Result<Arc<Self>, BumpError> {
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e| BumpError::Io { path: p, cause: e }
        };
        config
            .check_files()
            .map_err(|message| BumpError::Config { message })?;
        std::fs::create_dir_all(&config.state_dir).map_err(io(&config.state_dir))?;
        let secret = match &config.secret_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(io(p))?
                    .trim()
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        let pending: Vec<Pending> = read_json(&config.state_dir.join("pending.json"));
        let seen: HashMap<String, u64> = read_json(&config.state_dir.join("deliveries.json"));
        let status = Status {
            pending: pending.len(),
            ..Status::default()
        };
        Ok(Arc::new(Self {
            config,
            secret,
            inner: Mutex::new(Inner {
                last_push: (!pending.is_empty()).then(Instant::now),
                first_push: (!pending.is_empty()).then(Instant::now),
                pending,
                seen,
                status,
            }),
            wake: Condvar::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, inner: &Inner) -> std::io::Result<()> {
        write_json(&self.config.state_dir.join("pending.json"), &inner.pending)
    }

    /// Queue pushes (persisted before this returns).
    pub fn enqueue(&self, pushes: Vec<Pending>) -> std::io::Result<()> {
        let mut inner = self.lock();
        if inner.pending.is_empty() {
            inner.first_push = Some(Instant::now());
        }
        inner.pending.extend(pushes);
        self.save(&inner)?;
        inner.status.pending = inner.pending.len();
        inner.last_push = Some(Instant::now());
        self.wake.notify_all();
        Ok(())
    }

    /// The `/status` numbers.
    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    /// The HTTP routes: `POST /webhook`, `GET /healthz`, `GET /status`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/webhook", post(webhook))
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/status",
                get(|State(bot): State<Arc<Bot>>| async move {
                    json(
                        StatusCode::OK,
                        serde_json::to_value(bot.status()).unwrap_or_default(),
                    )
                }),
            )
            .with_state(self.clone())
    }

    /// Run the worker (and the poller, if configured) on their own threads.
    pub fn spawn_workers(self: &Arc<Self>) {
        let bot = self.clone();
        std::thread::Builder::new()
            .name("bump-worker".into())
            .spawn(move || bot.work())
            .ok();
        if self.config.poll.is_some() {
            let bot = self.clone();
            std::thread::Builder::new()
                .name("bump-poll".into())
                .spawn(move || bot.poll())
                .ok();
        }
    }

    fn work(&self) {
        let debounce = Duration::from_millis(self.config.debounce_ms);
        let policy = berth_oci::retry::Backoff {
            initial: Duration::from_millis(self.config.retry_ms),
            factor: 2,
            max: Duration::from_secs(600),
        };
        // Failed runs in a row.
        let mut failures = 0;
        let mut not_before = Instant::now();
        loop {
            let batch = {
                let mut inner = self.lock();
                loop {
                    let ready = inner
                        .last_push
                        .map(|t| t + debounce)
                        .map(|t| inner.first_push.map_or(t, |f| t.min(f + debounce * 10)))
                        .filter(|_| !inner.pending.is_empty());
                    match ready {
                        Some(at) if Instant::now() >= at.max(not_before) => break,
                        Some(at) => {
                            let wait = at.max(not_before).saturating_duration_since(Instant::now());
                            inner = self
                                .wake
                                .wait_timeout(inner, wait)
                                .map_or_else(|p| p.into_inner().0, |r| r.0);
                        }
                        None => inner = self.wake.wait(inner).unwrap_or_else(|p| p.into_inner()),
                    }
                }
                inner.pending.clone()
            };
            let result = self.run_batch(&batch);
            let mut inner = self.lock();
            inner.status.runs += 1;
            match result {
                Ok(summary) => {
                    tracing::info!(pushes = batch.len(), %summary, "bump done");
                    inner.pending.retain(|p| !batch.contains(p));
                    inner.first_push = (!inner.pending.is_empty()).then(Instant::now);
                    if let Err(e) = self.save(&inner) {
                        tracing::error!(error = %e, "cannot save the pending pushes");
                    }
                    inner.status.pending = inner.pending.len();
                    failures = 0;
                    not_before = Instant::now();
                }
                Err(e) if e.is_permanent() => {
                    // Retrying cannot help (a digest the registry lacks, a
                    // file berth refuses to edit): set those pushes aside
                    // so they do not block the ones behind them.
                    let dead: Vec<Pending> = match &e {
                        BumpError::Missing { image, .. } => batch
                            .iter()
                            .filter(|p| &p.image == image)
                            .cloned()
                            .collect(),
                        _ => batch.clone(),
                    };
                    tracing::error!(error = %e, pushes = dead.len(), "bump cannot succeed; set aside in failed.json");
                    if let Err(io) = self.set_aside(&dead, &e) {
                        tracing::error!(error = %io, "cannot write failed.json");
                    }
                    inner.pending.retain(|p| !dead.contains(p));
                    inner.first_push = (!inner.pending.is_empty()).then(Instant::now);
                    if let Err(io) = self.save(&inner) {
                        tracing::error!(error = %io, "cannot save the pending pushes");
                    }
                    inner.status.pending = inner.pending.len();
                    inner.status.failures += 1;
                    inner.status.last_error = Some(e.to_string());
                    not_before = Instant::now();
                }
                Err(e) => {
                    failures += 1;
                    let backoff = policy.delay(failures);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "bump failed; will retry");
                    inner.status.failures += 1;
                    inner.status.last_error = Some(e.to_string());
                    not_before = Instant::now() + backoff;
                }
            }
        }
    }

    /// Append pushes that cannot succeed, with why, to `failed.json`.
    fn set_aside(&self, pushes: &[Pending], why: &BumpError) -> std::io::Result<()> {
        let path = self.config.state_dir.join("failed.json");
        let mut failed: Vec<serde_json::Value> = read_json(&path);
        for p in pushes {
            failed.push(serde_json::json!({"push": p, "error": why.to_string(), "at": now()}));
        }
        write_json(&path, &failed)
    }

    /// One bump for a batch: the newest digest per image.
    fn run_batch(&self, batch: &[Pending]) -> Result<String, BumpError> {
        let mut newest: BTreeMap<&str, &Pending> = BTreeMap::new();
        for p in batch {
            match newest.get(p.image.as_str()) {
                Some(q) if q.occur_at > p.occur_at => {}
                _ => {
                    newest.insert(&p.image, p);
                }
            }
        }
        let mut sets = Vec::new();
        for p in newest.values() {
            let digest: Digest = p.digest.parse().map_err(|e| BumpError::Target {
                image: p.image.clone(),
                message: format!("{e}"),
            })?;
            sets.push((Target::parse(&p.image)?, digest));
        }
        let repo = self.config.state_dir.join("repo");
        if !repo.join("HEAD").exists() && !repo.join(".git").exists() {
            std::fs::create_dir_all(&repo).map_err(|e| BumpError::Io {
                path: repo.clone(),
                cause: e,
            })?;
            crate::git::git(&repo, &["init", "--quiet"])?;
        }
        let forge = match &self.config.forge {
            Some(f) => {
                let token = match &f.token_file {
                    Some(path) => std::fs::read_to_string(path).map_err(|e| BumpError::Io {
                        path: path.clone(),
                        cause: e,
                    })?,
                    None => std::env::var("BERTH_FORGE_TOKEN").map_err(|_| BumpError::Forge {
                        message: "no forge token: set forge.token_file or BERTH_FORGE_TOKEN".into(),
                    })?,
                };
                let kind = f
                    .kind
                    .parse()
                    .map_err(|m| BumpError::Forge { message: m })?;
                Some(Forge::new(kind, &f.url, &f.repo, token.trim().to_owned())?)
            }
            None => None,
        };
        let g = &self.config.git;
        let opts = Options {
            repo,
            sets,
            resolve: false,
            registries: self.registries()?,
            dry_run: false,
            pr: Some(PrOptions {
                remote: g.remote.clone(),
                base: g.base.clone(),
                prefix: g.prefix.clone(),
                group: g.group.clone(),
                forge,
                identity: Identity {
                    name: g.author_name.clone(),
                    email: g.author_email.clone(),
                },
            }),
        };
        let report = bump::run(&opts)?;
        let branches: Vec<String> = report
            .branches
            .iter()
            .map(|b| {
                format!(
                    "{}{}",
                    b.branch,
                    b.pr.map(|p| format!(" #{}", p.number()))
                        .unwrap_or_default()
                )
            })
            .collect();
        Ok(format!(
            "{} reference(s) changed; {}",
            report.changes.len(),
            branches.join(", ")
        ))
    }

    fn registries(&self) -> Result<Option<Registries>, BumpError> {
        let r = &self.config.registry;
        if r.offline {
            return Ok(None);
        }
        Registries::new(r.auth_file.as_deref(), r.plain_http).map(Some)
    }

    fn poll(&self) {
        let Some(poll) = self.config.poll.clone() else {
            return;
        };
        let path = self.config.state_dir.join("poll.json");
        let mut last: BTreeMap<String, String> = read_json(&path);
        loop {
            match self.registries() {
                Ok(regs) => {
                    let regs = match regs {
                        Some(r) => r,
                        None => match Registries::new(None, self.config.registry.plain_http) {
                            Ok(r) => r,
                            Err(_) => return,
                        },
                    };
                    let mut found = Vec::new();
                    for image in &poll.images {
                        let Ok(r) = image.parse::<Reference>() else {
                            continue;
                        };
                        match regs.resolve(&r) {
                            Ok(Some(d)) if last.get(image) != Some(&d.to_string()) => {
                                last.insert(image.clone(), d.to_string());
                                found.push(Pending {
                                    image: image.clone(),
                                    digest: d.to_string(),
                                    occur_at: now(),
                                });
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(%image, error = %e, "poll failed"),
                        }
                    }
                    if !found.is_empty() {
                        tracing::info!(images = found.len(), "poll found new digests");
                        if let Err(e) = self.enqueue(found) {
                            tracing::error!(error = %e, "cannot save the pending pushes");
                        } else if let Err(e) = write_json(&path, &last) {
                            tracing::error!(error = %e, "cannot save the poll state");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "poll cannot reach the registry"),
            }
            std::thread::sleep(Duration::from_secs(poll.interval_s.max(1)));
        }
    }

    /// Check a delivery's signature, timestamp and id; parse it.
    fn accept(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<Pending>, (StatusCode, String)> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let Some(secret) = &self.secret else {
            return Err((
                StatusCode::NOT_FOUND,
                "webhooks are not enabled (no secret_file)".into(),
            ));
        };
        let id = header(webhook::HEADER_DELIVERY);
        webhook::verify(
            secret,
            header(webhook::HEADER_TIMESTAMP),
            header(webhook::HEADER_SIGNATURE),
            body,
            now(),
        )
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
        if id.is_empty() || id.len() > webhook::MAX_DELIVERY_ID {
            return Err((StatusCode::BAD_REQUEST, "missing X-Berth-Delivery".into()));
        }
        let payload: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("payload is not JSON: {e}")))?;
        let pushes = self
            .parse(&payload)
            .map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        let mut inner = self.lock();
        let cutoff = now().saturating_sub(2 * TOLERANCE_S);
        inner.seen.retain(|_, t| *t >= cutoff);
        if inner.seen.contains_key(id) {
            return Err((
                StatusCode::CONFLICT,
                format!("delivery {id} was already received (replay)"),
            ));
        }
        inner.seen.insert(id.to_owned(), now());
        write_json(&self.config.state_dir.join("deliveries.json"), &inner.seen)
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        Ok(pushes)
    }

    fn parse(&self, v: &serde_json::Value) -> Result<Vec<Pending>, String> {
        let Some(payload) = Payload::from_value(v.clone())? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for push in payload.pushes()? {
            let host = match &self.config.registry.name {
                Some(n) => n.clone(),
                None => {
                    let url = push
                        .resource_url
                        .as_deref()
                        .ok_or("a resource has no resource_url")?;
                    url.split('/').next().unwrap_or_default().to_owned()
                }
            };
            let image = format!("{host}/{}:{}", push.repository, push.tag);
            image
                .parse::<Reference>()
                .map_err(|e| format!("{image}: {e}"))?;
            out.push(Pending {
                image,
                digest: push.digest.to_string(),
                occur_at: push.occur_at,
            });
        }
        Ok(out)
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    json(status, serde_json::json!({"error": message}))
}

async fn webhook(State(bot): State<Arc<Bot>>, headers: HeaderMap, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_BODY} bytes"),
        );
    }
    let b = bot.clone();
    let res = tokio::task::spawn_blocking(move || {
        let pushes = b.accept(&headers, &body)?;
        let n = pushes.len();
        if n > 0 {
            b.enqueue(pushes)
                .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        }
        Ok::<usize, (StatusCode, String)>(n)
    })
    .await;
    match res {
        Ok(Ok(n)) => {
            tracing::info!(pushes = n, "webhook accepted");
            json(StatusCode::ACCEPTED, serde_json::json!({"queued": n}))
        }
        Ok(Err((status, message))) => {
            tracing::warn!(%status, %message, "webhook refused");
            error(status, message)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Serve `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot(extra: &str) -> Arc<Bot> {
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::write(dir.join("secret"), "k").unwrap();
        let text = format!(
            "state_dir = \"{d}/state\"\nsecret_file = \"{d}/secret\"\n{extra}\n[git]\nremote = \"r\"\n",
            d = dir.display()
        );
        Bot::open(BotConfig::from_toml(&text).unwrap()).unwrap()
    }

    fn event(tag: &str) -> serde_json::Value {
        serde_json::json!({"type": "PUSH_ARTIFACT", "occur_at": 7, "event_data": {
            "resources": [{"digest": format!("sha256:{}", "a".repeat(64)), "tag": tag, "resource_url": "reg.lan:5000/apps/web:x"}],
            "repository": {"repo_full_name": "apps/web"}}})
    }

    #[test]
    fn payloads_become_pending_pushes() {
        let b = bot("");
        let p = b.parse(&event("1.4")).unwrap();
        assert_eq!(p[0].image, "reg.lan:5000/apps/web:1.4");
        // A push by digest only has no tag to bump by.
        assert!(b.parse(&event("")).unwrap().is_empty());
        // Other event types are ignored, not refused.
        assert!(
            b.parse(&serde_json::json!({"type": "DELETE_ARTIFACT"}))
                .unwrap()
                .is_empty()
        );
        // The YAML's name for the registry replaces the webhook's host.
        let b = bot("[registry]\nname = \"registry.lan\"");
        assert_eq!(
            b.parse(&event("1.4")).unwrap()[0].image,
            "registry.lan/apps/web:1.4"
        );
        // Bad names and tags are refused.
        let mut bad = event("1.4");
        bad["event_data"]["repository"]["repo_full_name"] = "../etc".into();
        assert!(b.parse(&bad).is_err());
        assert!(b.parse(&event("-x")).is_err());
    }

    #[test]
    fn signatures_are_checked_before_anything_else() {
        let b = bot("");
        let body = event("1.4").to_string();
        let ts = now();
        let mut h = HeaderMap::new();
        h.insert("x-berth-timestamp", ts.to_string().parse().unwrap());
        h.insert("x-berth-delivery", "id-1".parse().unwrap());
        h.insert(
            "x-berth-signature-256",
            sign(b"k", ts, body.as_bytes()).parse().unwrap(),
        );
        assert_eq!(b.accept(&h, body.as_bytes()).unwrap().len(), 1);
        assert_eq!(
            b.accept(&h, body.as_bytes()).unwrap_err().0,
            StatusCode::CONFLICT
        );
        h.insert(
            "x-berth-signature-256",
            sign(b"other", ts, body.as_bytes()).parse().unwrap(),
        );
        assert_eq!(
            b.accept(&h, body.as_bytes()).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn config_errors_name_the_problem() {
        let err = |t: &str| BotConfig::from_toml(t).unwrap_err();
        assert!(err("state_dir = \"/s\"\n[git]\nremote = \"r\"\n").contains("poll"));
        assert!(
            err("state_dir = \"/s\"\nsecret_file = \"/k\"\nfoo = 1\n[git]\nremote = \"r\"\n")
                .contains("foo")
        );
        assert!(
            err("state_dir = \"/s\"\n[git]\nremote = \"r\"\n[poll]\nimages = [\"reg.lan/app\"]\n")
                .contains("needs a tag")
        );
    }
}
