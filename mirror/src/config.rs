//! The `berth mirror` configuration (TOML; the NixOS module renders it):
//! where to listen, where the cache lives and how big it may grow, which
//! registries are mirrored and where each one's API is. Every field has a
//! default, and unknown keys are errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on (containerd on this node, and peers).
    pub listen: SocketAddr,
    /// The cache directory (verified blobs and manifests, last tags).
    pub data: PathBuf,
    /// Registries (host[:port], as containerd names them in `?ns=`) whose
    /// pulls go through the mirror. A request for any other is a miss.
    pub registries: Vec<String>,
    /// Where a mirrored registry's API is, when not `https://<host>`
    /// (`docker.io` is `https://registry-1.docker.io`), e.g.
    /// `"registry.lan:5000" = "http://10.0.0.2:5000"`.
    pub upstreams: BTreeMap<String, String>,
    /// Cache settings.
    pub cache: CacheConfig,
    /// Upstream request settings.
    pub upstream: UpstreamConfig,
    /// Logging.
    pub log: LogConfig,
    /// The node's containerd config, checked at start-up for settings that
    /// defeat the mirror (skipped when absent).
    pub containerd_config: PathBuf,
    /// The node's containerd content store
    /// (`/var/lib/containerd/io.containerd.content.v1.content`), read by
    /// digest as a source with no extra disk; none when unset.
    pub containerd_content: Option<PathBuf>,
    /// Other nodes' mirrors (`http://10.0.0.3:5001`), asked for blobs and
    /// manifests by digest before the registry.
    pub peers: Vec<String>,
    /// This mirror's URL as its peers list it. With it, a cold blob is
    /// fetched from the registry by one node (agreed by rendezvous hashing
    /// over the members) and by the others through that node.
    pub advertise_url: Option<String>,
    /// Peer discovery with libp2p Kademlia instead of the `peers` list.
    pub p2p: Option<P2pConfig>,
    /// Private repositories, as `registry/name` or `registry/prefix/*`:
    /// every request for them is checked with the registry using the
    /// caller's credentials (even when the content is cached), and their
    /// content is never served to peers.
    pub private: Vec<String>,
}

/// libp2p routing settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pConfig {
    /// The libp2p listen address, e.g. `/ip4/0.0.0.0/tcp/5003`.
    pub listen: String,
    /// Nodes to join through, e.g. `/ip4/10.0.0.2/tcp/5003` or
    /// `/dns4/berth-mirror.kube-system.svc.cluster.local/tcp/5003` (a
    /// headless Service).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// A file holding the cluster's private-network key (64 hex digits);
    /// nodes without it cannot connect. Without it the network is open.
    pub key_file: Option<PathBuf>,
}

impl P2pConfig {
    /// The key from `key_file`, if set.
    pub fn key(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        let Some(path) = &self.key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("p2p.key_file {}: {e}", path.display())))?;
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                ConfigError(format!(
                    "p2p.key_file {} must hold 64 hex digits (e.g. from: openssl rand -hex 32)",
                    path.display()
                ))
            })?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Some(key))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5001)),
            data: PathBuf::from("berth-mirror-data"),
            registries: Vec::new(),
            upstreams: BTreeMap::new(),
            cache: CacheConfig::default(),
            upstream: UpstreamConfig::default(),
            log: LogConfig::default(),
            containerd_config: PathBuf::from("/etc/containerd/config.toml"),
            containerd_content: None,
            peers: Vec::new(),
            advertise_url: None,
            p2p: None,
            private: Vec::new(),
        }
    }
}

/// Cache settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most bytes of blobs kept; the least recently used go first.
    pub max_bytes: u64,
    /// Largest manifest accepted from upstream.
    pub max_manifest_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 10 << 30,
            max_manifest_bytes: 4 << 20,
        }
    }
}

/// Upstream request settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Connect timeout, milliseconds: an unreachable registry is given up
    /// quickly (a tag is then served from the last verified answer).
    pub connect_timeout_ms: u64,
    /// How long a manifest request may take, milliseconds.
    pub manifest_timeout_ms: u64,
    /// A blob source that sends nothing for this long is abandoned and the
    /// rest fetched elsewhere, milliseconds.
    pub stall_timeout_ms: u64,
    /// How long peers are given to say whether they have a blob,
    /// milliseconds.
    pub peer_probe_ms: u64,
    /// A peer that has not sent a blob's first bytes this long after being
    /// asked is left for the next source, milliseconds (the registry gets
    /// the whole `stall_timeout_ms`: it may redirect to object storage).
    pub peer_first_byte_ms: u64,
    /// A peer that has not started sending this long after being asked is
    /// joined by a second request to the next peer; the first to send wins
    /// (a hedged request), milliseconds.
    pub peer_hedge_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 2_000,
            manifest_timeout_ms: 10_000,
            stall_timeout_ms: 2_000,
            peer_probe_ms: 300,
            peer_first_byte_ms: 500,
            peer_hedge_ms: 150,
        }
    }
}

pub use berth_oci::log::{LogConfig, LogFormat};

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Parse a TOML file's text and validate it.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c = Self::parse_unchecked(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Parse without [`Config::validate`]: for a caller that overrides
    /// settings (command-line flags) and then validates the result.
    pub fn parse_unchecked(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for r in &self.registries {
            if !valid_host(r) {
                return Err(ConfigError(format!(
                    "registries entry {r:?} is not a registry host[:port] (e.g. registry.lan:5000)"
                )));
            }
        }
        for (host, url) in &self.upstreams {
            if !self.registries.contains(host) {
                return Err(ConfigError(format!(
                    "upstreams names {host:?}, which is not in registries"
                )));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "upstreams.{host:?} = {url:?} is not an http:// or https:// URL"
                )));
            }
        }
        for p in &self.peers {
            if !(p.starts_with("http://") || p.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "peers entry {p:?} is not an http:// or https:// URL"
                )));
            }
        }
        if let Some(a) = &self.advertise_url {
            if !(a.starts_with("http://") || a.starts_with("https://")) || a.ends_with('/') {
                return Err(ConfigError(format!(
                    "advertise_url {a:?} is not an http:// or https:// URL without a trailing slash, like http://10.0.0.2:5001"
                )));
            }
        }
        if let Some(p) = &self.p2p {
            if self.advertise_url.is_none() {
                return Err(ConfigError(
                    "p2p needs advertise_url: peers fetch from the URL this node announces".into(),
                ));
            }
            for a in std::iter::once(&p.listen).chain(&p.bootstrap) {
                if a.parse::<libp2p::Multiaddr>().is_err() {
                    return Err(ConfigError(format!(
                        "p2p address {a:?} is not a multiaddr like /ip4/10.0.0.2/tcp/5003"
                    )));
                }
            }
        }
        if self.cache.max_manifest_bytes == 0 {
            return Err(ConfigError(
                "cache.max_manifest_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Whether repository `name` of registry `ns` is private.
    pub fn is_private(&self, ns: &str, name: &str) -> bool {
        let full = format!("{ns}/{name}");
        self.private.iter().any(|p| match p.strip_suffix("/*") {
            Some(prefix) => full.starts_with(&format!("{prefix}/")),
            None => *p == full,
        })
    }

    /// The API base URL of mirrored registry `host`, if it is mirrored.
    pub fn upstream_url(&self, host: &str) -> Option<String> {
        if !self.registries.iter().any(|r| r == host) {
            return None;
        }
        Some(match self.upstreams.get(host) {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if host == "docker.io" => "https://registry-1.docker.io".to_owned(),
            None => format!("https://{host}"),
        })
    }
}

/// A registry host as containerd passes it in `?ns=`: a DNS name or IP
/// literal, optionally with a port.
pub fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => (host, Some(port)),
        _ => (h, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        }) || (host.starts_with('[')
            && host.ends_with(']')
            && host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.port(), 5001);
        let c = Config::parse(
            "registries = [\"registry.lan:5000\", \"docker.io\"]\n[upstreams]\n\"registry.lan:5000\" = \"http://10.0.0.2:5000/\"\n",
        )
        .unwrap();
        assert_eq!(
            c.upstream_url("registry.lan:5000").as_deref(),
            Some("http://10.0.0.2:5000")
        );
        assert_eq!(
            c.upstream_url("docker.io").as_deref(),
            Some("https://registry-1.docker.io")
        );
        assert_eq!(c.upstream_url("ghcr.io"), None, "not mirrored");
        for bad in [
            "registries = [\"a/b\"]",
            "registries = [\"x:0\"]",
            "[upstreams]\n\"x\" = \"http://x\"",
            "registries = [\"x\"]\n[upstreams]\nx = \"ftp://x\"",
            "lisen = \"x\"",
            "[log]\nformat = \"xml\"",
            "advertise_url = \"10.0.0.2:5001\"",
            "advertise_url = \"http://10.0.0.2:5001/\"",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn private_patterns() {
        let c = Config::parse(
            "registries = [\"r:5000\"]\nprivate = [\"r:5000/team/*\", \"r:5000/solo\"]",
        )
        .unwrap();
        assert!(c.is_private("r:5000", "team/app"));
        assert!(c.is_private("r:5000", "team/a/b"));
        assert!(c.is_private("r:5000", "solo"));
        assert!(!c.is_private("r:5000", "teams/app"));
        assert!(!c.is_private("r:5000", "solo/x"));
        assert!(!c.is_private("other:5000", "team/app"));
    }

    #[test]
    fn hosts() {
        for ok in [
            "docker.io",
            "registry.lan:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "a/b", "a..b", "x:", "x:99999", "../x", "a b", "[zz]:1"] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
