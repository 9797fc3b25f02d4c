//! The `berth serve` configuration: what the config file (TOML, rendered by
//! the NixOS module) may say, its defaults, and its validation. Every field
//! has a default, so an empty file — or none — is the embedded default:
//! filesystem blobs and SQLite under `./berth-data`, on `127.0.0.1:5000`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::Limits;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory (blobs, uploads, metadata).
    pub data: PathBuf,
    /// Blob storage settings.
    pub storage: StorageConfig,
    /// Where the metadata lives (`[metadata]`): SQLite under the data
    /// directory, or PostgreSQL shared by several replicas.
    pub metadata: MetadataConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Access control; without it the registry is open to anyone who can
    /// reach it.
    pub auth: Option<crate::auth::config::AuthConfig>,
    /// HTTPS; without it the registry speaks plain HTTP.
    pub tls: Option<TlsConfig>,
    /// The audit log.
    pub audit: AuditConfig,
    /// Push webhook targets (`[[webhooks]]`).
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// What webhook targets may reach (`[webhook] allow`).
    pub webhook: crate::webhooks::WebhookPolicy,
    /// Per-project policies (`[[policies]]`).
    pub policies: Vec<crate::policy::PolicyConfig>,
    /// Garbage collection (`[gc]`).
    pub gc: crate::gc::GcConfig,
    /// The web UI (`[ui]`).
    pub ui: UiConfig,
    /// Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` names
    /// the client: an Ingress or load balancer in front of the registry.
    /// The throttle and the audit log then see the client, not the proxy.
    pub trusted_proxies: Vec<String>,
}

/// `[metadata]`: the metadata database. Without `postgres`, SQLite at
/// `<data>/metadata.sqlite` (one process); with it, a PostgreSQL database
/// every replica shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// `postgres://user@host[:port]/database` (options such as
    /// `?connect_timeout=5` allowed; keep the password out of it).
    pub postgres: Option<String>,
    /// A file holding the database password (a Kubernetes or systemd
    /// secret), read at start-up.
    pub password_file: Option<PathBuf>,
    /// Connections each replica keeps at most.
    pub pool: usize,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            postgres: None,
            password_file: None,
            pool: 16,
        }
    }
}

/// `[ui]`: the web UI (served when berth is built with the `ui` feature,
/// the default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve `/ui/`.
    pub enabled: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[audit]`: how long audit events are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days an event is kept (pruned hourly).
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

/// `[tls]`: the certificate and key `berth serve` answers HTTPS with,
/// re-read when they change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// The files.
    pub fn files(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data: PathBuf::from("berth-data"),
            storage: StorageConfig::default(),
            metadata: MetadataConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            auth: None,
            tls: None,
            audit: AuditConfig::default(),
            webhooks: Vec::new(),
            webhook: crate::webhooks::WebhookPolicy::default(),
            policies: Vec::new(),
            gc: crate::gc::GcConfig::default(),
            ui: UiConfig::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Blob storage settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Flush each blob and its directory entry to disk before it is
    /// published, so acknowledged blobs survive power loss (filesystem).
    pub fsync: bool,
    /// Blobs in an S3 bucket instead of under the data directory.
    pub s3: Option<crate::storage::s3::S3Config>,
    /// Upload sessions idle this long are freed (their bytes, staged
    /// tails and S3 multipart uploads).
    pub upload_expiry_hours: u64,
    /// Refuse uploads (507) while the data directory's file system has
    /// less than this many MiB free (filesystem blobs; 0: no floor).
    pub min_free_mib: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            fsync: true,
            s3: None,
            upload_expiry_hours: 24,
            min_free_mib: 64,
        }
    }
}

/// Request limits, in config-file units.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest page of tags or repositories.
    pub max_page_size: usize,
    /// Seconds an upload body may stall.
    pub body_idle_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_manifest_bytes: l.max_manifest_bytes,
            max_page_size: l.max_page_size,
            body_idle_timeout_secs: l.body_idle_timeout.as_secs(),
        }
    }
}

pub use berth_oci::log::{LogConfig, LogFormat};

/// The trimmed content of a secret file the configuration names under
/// `key` (every secret — passwords, robot secrets, S3 keys, webhook
/// secrets — comes from a file, never inline); the error names the key.
pub fn read_secret_file(key: &str, path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{key} = {:?}: cannot read it: {e}", path.display()))?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(format!("{key} = {:?}: the file is empty", path.display()));
    }
    Ok(text)
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Parse a TOML configuration file's text and validate it.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for p in &self.trusted_proxies {
            if crate::webhooks::Cidr::parse(p).is_none() {
                return Err(ConfigError(format!(
                    "trusted_proxies entry {p:?} is not an address or a network like 10.42.0.0/16"
                )));
            }
        }
        if let Some(a) = &self.auth {
            a.validate().map_err(ConfigError)?;
        }
        if let Some(s3) = &self.storage.s3 {
            s3.validate().map_err(ConfigError)?;
        }
        if let Some(url) = &self.metadata.postgres {
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return Err(ConfigError(format!(
                    "metadata.postgres = {url:?}: give a URL such as postgres://berth@db.lan:5432/berth"
                )));
            }
            if self.metadata.pool == 0 {
                return Err(ConfigError("metadata.pool must be at least 1".into()));
            }
            // Replicas share the metadata: each must sign and check tokens
            // with the same key, which a per-replica data directory would
            // not give.
            if self
                .auth
                .as_ref()
                .is_some_and(|a| a.token_key_file.is_none())
            {
                return Err(ConfigError(
                    "with metadata.postgres, set auth.token_key_file to a key file every replica reads (replicas signing with keys of their own refuse each other's tokens)".into(),
                ));
            }
        }
        crate::policy::Policies::load(&self.policies).map_err(ConfigError)?;
        self.gc.validate().map_err(ConfigError)?;
        if !(1..=720).contains(&self.storage.upload_expiry_hours) {
            return Err(ConfigError(format!(
                "storage.upload_expiry_hours = {} must be between 1 and 720",
                self.storage.upload_expiry_hours
            )));
        }
        let l = &self.limits;
        if l.max_manifest_bytes < 1024 {
            return Err(ConfigError(format!(
                "limits.max_manifest_bytes = {} is too small (at least 1024)",
                l.max_manifest_bytes
            )));
        }
        if l.max_page_size == 0 {
            return Err(ConfigError(
                "limits.max_page_size must be at least 1".into(),
            ));
        }
        if l.body_idle_timeout_secs == 0 {
            return Err(ConfigError(
                "limits.body_idle_timeout_secs must be at least 1".into(),
            ));
        }
        if !(1..=3650).contains(&self.audit.retention_days) {
            return Err(ConfigError(format!(
                "audit.retention_days = {} must be between 1 and 3650",
                self.audit.retention_days
            )));
        }
        if self.data.as_os_str().is_empty() {
            return Err(ConfigError("data must name a directory".into()));
        }
        Ok(())
    }

    /// The runtime limits this configuration describes.
    pub fn limits(&self) -> Limits {
        Limits {
            max_manifest_bytes: self.limits.max_manifest_bytes,
            max_page_size: self.limits.max_page_size,
            body_idle_timeout: Duration::from_secs(self.limits.body_idle_timeout_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:5000");
        assert_eq!(c.data, PathBuf::from("berth-data"));
        assert!(c.storage.fsync);
        c.validate().unwrap();
    }

    #[test]
    fn full_file_and_errors() {
        let c: Config = toml::from_str(
            r#"
            listen = "0.0.0.0:5001"
            data = "/var/lib/berth"
            [storage]
            fsync = false
            [limits]
            max_manifest_bytes = 1048576
            max_page_size = 50
            body_idle_timeout_secs = 5
            [log]
            format = "json"
            level = "debug"
            "#,
        )
        .unwrap();
        assert_eq!(c.limits().max_page_size, 50);
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(
            toml::from_str::<Config>("lisen = \"x\"").is_err(),
            "unknown keys are refused"
        );
        let bad: Config = toml::from_str("[limits]\nmax_page_size = 0").unwrap();
        assert!(bad.validate().is_err());
    }
}
