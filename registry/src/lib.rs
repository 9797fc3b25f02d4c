//! `berth-registry` is berth's OCI registry: the distribution-spec v1.1 API
//! over a pluggable blob store (filesystem or S3) and SQLite metadata. `berth serve` builds a
//! [`Registry`] from a [`config::Config`] and hands it, with an already-bound
//! listener and a shutdown future, to [`serve`].
//!
//! # Layout
//! - [`api`]: the axum edge — one `/v2/{*rest}` handler, a pure path parser,
//!   endpoint handlers, and the one `ApiError` → OCI error JSON mapping.
//! - [`storage`]: the `BlobStore` trait, its filesystem and in-memory
//!   implementations, and their shared conformance suite.
//! - [`metadata`]: repositories, blobs per repository, manifests, tags and
//!   upload sessions in SQLite.
//! - [`metrics`]: Prometheus counters served at `/metrics`.
//! - [`policy`]: per-project policies (immutable tags, retention rules,
//!   quotas), declared or stored.
//! - [`replicas`]: following changes other replicas make to shared state.
//! - [`retention`]: tag retention, planned and applied.
//! - [`config`]: the `berth serve` configuration file.
//! - [`auth`]: projects, roles, robots and bearer tokens, enforced when
//!   `[auth]` is configured.
//! - [`audit`]: the audit log, written in the background.
//! - [`janitor`]: abandoned upload sessions (and S3 multipart uploads)
//!   freed in the background.
//! - [`webhooks`]: push webhooks from an outbox written with the push.
//! - [`gc`]: online garbage collection of manifests, links and blobs.
//! - [`pieces`]: per-piece digests of blobs, for node mirrors.
//! - [`tls`]: HTTPS with certificates reloaded from their files.
//!
//! It must never parse GitOps YAML or build images.

// Without the web UI, the operations only its pages call are unused;
// the default build (the one CI lints) has them all in use.
#![cfg_attr(not(feature = "ui"), allow(dead_code))]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_oci::Hasher;
use tokio::net::TcpListener;

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod gc;
pub mod janitor;
pub mod metadata;
pub mod metrics;
pub mod pieces;
pub mod policy;
pub mod replicas;
pub mod retention;
pub mod storage;
pub mod tls;
#[cfg(feature = "ui")]
pub mod ui;
pub mod webhooks;

use metadata::Metadata;
use storage::{Blobs, UploadId};

/// Unix seconds now: the one clock tokens, the audit log, the janitor,
/// webhooks and metadata rows read.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Run `f` on the metadata from the blocking pool (background tasks: GC,
/// retention), errors as text.
pub(crate) async fn on_meta<T: Send + 'static>(
    r: &Arc<Registry>,
    f: impl FnOnce(&Metadata) -> Result<T, metadata::MetadataError> + Send + 'static,
) -> Result<T, String> {
    let meta = r.meta.clone();
    tokio::task::spawn_blocking(move || f(meta.as_ref()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Record how a maintenance job (`retention` over `scope`, or `gc` over
/// `registry`) asked for by `by` ended, for the UI and API to show; a
/// failure to record is logged, never the job's failure.
pub(crate) async fn record_run<T: serde::Serialize>(
    r: &Arc<Registry>,
    job: &str,
    scope: &str,
    dry_run: bool,
    by: &str,
    result: &Result<T, String>,
) {
    // A replica standing down for another is not a failure.
    if matches!(result, Err(e) if e != gc::BUSY) {
        r.metrics.job_failed(job);
    }
    let run = metadata::JobRun {
        job: job.to_owned(),
        scope: scope.to_owned(),
        dry_run,
        finished_at: unix_now(),
        by: by.to_owned(),
        ok: result.is_ok(),
        report: match result {
            Ok(report) => serde_json::to_string(report).unwrap_or_default(),
            Err(e) => e.clone(),
        },
    };
    if let Err(e) = on_meta(r, move |m| m.record_run(&run)).await {
        tracing::warn!(error = %e, job, "could not record the job's run");
    }
}

/// Bounds on what a client may ask of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest manifest accepted (413 above).
    pub max_manifest_bytes: u64,
    /// Largest `n` for tag lists and the catalog (and the page size when
    /// `n` is absent).
    pub max_page_size: usize,
    /// How long an upload or manifest body may stall before the request is
    /// abandoned.
    pub body_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_page_size: 1000,
            body_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// In-process state of an upload session between requests.
#[derive(Debug, Default)]
struct SessionState {
    busy: bool,
    hasher: Option<(u64, Hasher)>,
}

/// A registry: blob store, metadata, limits and counters.
#[derive(Debug)]
pub struct Registry {
    blobs: Blobs,
    meta: Arc<Metadata>,
    limits: Limits,
    metrics: metrics::Metrics,
    sessions: Mutex<HashMap<UploadId, SessionState>>,
    /// Access control; `None`: open to anyone.
    gate: Option<auth::gate::Gate>,
    /// Served over TLS (the token realm it derives is `https://`).
    https: bool,
    /// Proxies whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<webhooks::Cidr>,
    /// Upload sessions idle for longer are freed.
    upload_expiry: Duration,
    /// Push webhook targets, if any.
    webhooks: Option<webhooks::Webhooks>,
    /// Per-project policies, declared and stored, swapped whole on change.
    policies: std::sync::RwLock<Arc<policy::Policies>>,
    /// The declared ones (`[[policies]]`), which win over stored ones.
    declared_policies: Vec<policy::PolicyConfig>,
    /// The audit log.
    audit: audit::Audit,
    /// Upload commits and mounts against garbage collection's deletes.
    gc_gate: gc::Gate,
    /// Held by the running garbage collection.
    gc_running: tokio::sync::Mutex<()>,
    /// Remote-store reads waiting for the blocking pool, at most (first
    /// come first served): more would only queue on the store's
    /// connections as runnable threads.
    db_reads: tokio::sync::Semaphore,
    /// Blobs whose piece digests are being computed.
    pieces_computing: pieces::Computing,
    /// Whether `/ui/` is served.
    ui: bool,
    /// How garbage collection runs.
    gc: gc::GcConfig,
    /// Uploads are refused while the file system holding this directory
    /// has fewer free bytes than this.
    space_floor: Option<(std::path::PathBuf, u64)>,
    /// The data directory, whose free space `/metrics` reports.
    data_dir: Option<std::path::PathBuf>,
}

/// Why a registry could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be prepared.
    #[error("preparing data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The metadata database could not be opened.
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    /// A secret file could not be read.
    #[error("reading {path}: {source}")]
    Secret {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The S3 configuration cannot work.
    #[error("in [storage.s3]: {0}")]
    S3(String),
}

impl Registry {
    /// A registry over the given parts (the S3 blob store shares `meta`:
    /// it keeps its index there).
    pub fn new(blobs: Blobs, meta: Arc<Metadata>, limits: Limits) -> Self {
        let mut metrics = metrics::Metrics::default();
        let blobs = match blobs {
            Blobs::S3(s3) => Blobs::S3(s3.with_metrics(metrics.s3())),
            other => other,
        };
        Self {
            audit: audit::Audit::new(meta.clone(), Duration::from_secs(90 * 86_400)),
            blobs,
            meta,
            limits,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            gate: None,
            https: false,
            trusted_proxies: Vec::new(),
            upload_expiry: Duration::from_secs(24 * 3600),
            webhooks: None,
            policies: std::sync::RwLock::default(),
            declared_policies: Vec::new(),
            gc_gate: gc::Gate::default(),
            gc_running: tokio::sync::Mutex::new(()),
            db_reads: tokio::sync::Semaphore::new(16),
            pieces_computing: pieces::Computing::default(),
            ui: true,
            gc: gc::GcConfig::default(),
            space_floor: None,
            data_dir: None,
        }
    }

    /// Report the free space of `data` in `/metrics`, and with
    /// `min_free` > 0 refuse uploads while less is free there.
    pub fn with_space_floor(mut self, data: &Path, min_free: u64) -> Self {
        self.data_dir = Some(data.to_owned());
        self.space_floor = (min_free > 0).then(|| (data.to_owned(), min_free));
        self.metrics.floor_bytes(min_free);
        self
    }

    /// Serve the web UI at `/ui/` or not (on by default).
    pub fn with_ui(mut self, enabled: bool) -> Self {
        self.ui = enabled;
        self
    }

    /// Whether the web UI is served.
    pub fn ui_enabled(&self) -> bool {
        self.ui
    }

    /// Collect garbage as `config` says.
    pub fn with_gc(mut self, config: gc::GcConfig) -> Self {
        self.gc = config;
        self
    }

    /// How garbage collection runs.
    pub fn gc_config(&self) -> &gc::GcConfig {
        &self.gc
    }

    /// Enforce the `declared` policies and those stored in the metadata
    /// database through the admin API.
    pub fn with_policies(mut self, declared: &[policy::PolicyConfig]) -> Result<Self, String> {
        self.declared_policies = declared.to_vec();
        self.reload_policies()?;
        Ok(self)
    }

    /// The policies in force now.
    pub fn policies(&self) -> Arc<policy::Policies> {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-read the stored policies after an admin change.
    pub(crate) fn reload_policies(&self) -> Result<(), String> {
        let stored = self.meta.stored_policies().map_err(|e| e.to_string())?;
        let merged = policy::Policies::merge(&self.declared_policies, &stored)?;
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(merged);
        Ok(())
    }

    /// Send push webhooks to `hooks`' targets.
    pub fn with_webhooks(mut self, hooks: webhooks::Webhooks) -> Self {
        self.webhooks = (!hooks.is_empty()).then_some(hooks);
        self
    }

    /// Free upload sessions idle for longer than `expiry`.
    pub fn with_upload_expiry(mut self, expiry: Duration) -> Self {
        self.upload_expiry = expiry;
        self
    }

    /// Keep audit events for `retention`.
    pub fn with_audit_retention(mut self, retention: Duration) -> Self {
        self.audit = audit::Audit::new(self.meta.clone(), retention);
        self
    }

    /// Take the client's address from `X-Forwarded-For` when the request
    /// comes from one of `proxies` (addresses or CIDRs, already
    /// validated by the configuration).
    pub fn with_trusted_proxies(mut self, proxies: &[String]) -> Self {
        self.trusted_proxies = proxies
            .iter()
            .filter_map(|p| webhooks::Cidr::parse(p))
            .collect();
        self
    }

    /// Say that clients reach this registry over HTTPS.
    pub fn with_https(mut self, https: bool) -> Self {
        self.https = https;
        self
    }

    /// Check every request with `gate`, over the declared accounts and the
    /// ones stored in the metadata database (stored accounts the
    /// configuration now declares are removed: the declaration wins).
    pub fn with_gate(mut self, gate: auth::gate::Gate) -> Result<Self, metadata::MetadataError> {
        let (projects, users, robots) = gate.declared.names();
        for name in self.meta.drop_shadowed(&projects, &users, &robots)? {
            tracing::warn!(
                %name,
                "an account made through the admin API is now declared in [auth]: the declaration wins, the stored one was removed"
            );
        }
        gate.reload(&self.meta.auth_rows()?);
        self.gate = Some(gate);
        Ok(self)
    }

    /// Re-read the stored accounts after an admin change.
    pub(crate) fn reload_accounts(&self) -> Result<(), metadata::MetadataError> {
        if let Some(gate) = &self.gate {
            gate.reload(&self.meta.auth_rows()?);
        }
        Ok(())
    }

    /// The metadata store `[metadata]` asks for: PostgreSQL when it names
    /// one (its password from `password_file`), else SQLite at
    /// `<data>/metadata.sqlite`.
    pub fn open_metadata(
        data: &Path,
        config: &config::MetadataConfig,
    ) -> Result<Arc<Metadata>, OpenError> {
        let Some(url) = &config.postgres else {
            std::fs::create_dir_all(data).map_err(|source| OpenError::DataDir {
                path: data.to_owned(),
                source,
            })?;
            return Ok(Arc::new(metadata::Sqlite::open(
                &data.join("metadata.sqlite"),
            )?));
        };
        let password = match &config.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| OpenError::Secret {
                        path: path.clone(),
                        source,
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Arc::new(metadata::Postgres::open_with(
            url,
            password.as_deref(),
            config.pool,
        )?))
    }

    /// Filesystem blobs under `data` (`<data>/blobs`, `<data>/uploads`)
    /// and the metadata store `meta` — the embedded default with SQLite.
    pub fn open_local(
        data: &Path,
        fsync: bool,
        meta: Arc<Metadata>,
        limits: Limits,
    ) -> Result<Self, OpenError> {
        let store =
            storage::FsBlobStore::open(data, fsync).map_err(|source| OpenError::DataDir {
                path: data.to_owned(),
                source,
            })?;
        Ok(Self::new(Blobs::Fs(store), meta, limits))
    }

    /// Blobs in an S3 bucket, their index in the metadata store `meta`.
    /// The bucket is not contacted here (see
    /// [`storage::S3BlobStore::probe`]).
    pub async fn open_s3(
        data: &Path,
        s3: &storage::s3::S3Config,
        meta: Arc<Metadata>,
        limits: Limits,
    ) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data).map_err(|source| OpenError::DataDir {
            path: data.to_owned(),
            source,
        })?;
        let store = storage::S3BlobStore::connect(s3, meta.clone())
            .await
            .map_err(OpenError::S3)?;
        Ok(Self::new(Blobs::S3(store), meta, limits))
    }

    /// The blob store (to probe it).
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// A registry for tests: blobs in memory, metadata in a throwaway
    /// SQLite file — or, when `BERTH_TEST_POSTGRES` names a PostgreSQL
    /// server, in a new database there, so every test that builds its
    /// registry here also checks the PostgreSQL store.
    pub fn in_memory(limits: Limits) -> Result<Self, OpenError> {
        let meta: Arc<Metadata> = match std::env::var("BERTH_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => Arc::new(metadata::Postgres::fresh_database(&url)?),
            _ => Arc::new(metadata::Sqlite::in_memory()?),
        };
        Ok(Self::new(
            Blobs::Memory(storage::MemoryBlobStore::new()),
            meta,
            limits,
        ))
    }
}

/// Serve the registry on `listener` until `shutdown` completes, then stop
/// accepting and wait for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use axum::serve::ListenerExt;
    let tasks = background(&registry);
    let app = api::router(registry);
    // As Go's net/http does: small responses go out without Nagle's delay.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    for task in tasks {
        task.abort();
    }
    result
}

/// The tasks a serving registry runs beside its requests: the upload
/// janitor, the webhook sender, scheduled collections, and following
/// other replicas' changes. Aborted when serving ends.
pub(crate) fn background(registry: &Arc<Registry>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![
        janitor::spawn(registry.clone(), registry.upload_expiry),
        replicas::spawn(registry.clone()),
    ];
    tasks.extend(webhooks::spawn(registry.clone()));
    tasks.extend(gc::spawn(registry.clone(), registry.gc.clone()));
    tasks
}
