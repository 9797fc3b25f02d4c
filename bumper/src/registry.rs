//! What the bumper asks registries, through the one `berth-oci` client:
//! whether a digest exists before it is written into a repo, which digest
//! a tag points at now (the index digest for multi-architecture images),
//! and the `org.opencontainers.image.source`/`revision` labels that make a
//! pull request readable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_oci::client::{Client, ClientError, ClientOptions, Credentials};
use berth_oci::{Digest, Reference};

use crate::BumpError;

/// Source and revision of an image, from its labels or annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// `org.opencontainers.image.source`.
    pub source: Option<String>,
    /// `org.opencontainers.image.revision`.
    pub revision: Option<String>,
}

/// Clients for every registry a repo names, sharing one credentials file.
#[derive(Debug)]
pub struct Registries {
    plain_http: bool,
    auth: Option<(PathBuf, String)>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Registries that could not be reached: not asked again in this run
    /// (a repo naming fifty images on an unreachable registry must not
    /// wait out fifty connection timeouts).
    down: Mutex<HashMap<String, String>>,
}

impl Registries {
    /// Clients that read credentials from `auth_file` (docker/podman
    /// `auth.json`), if given; `plain_http` for registries without TLS
    /// (a loopback registry without TLS falls back to it by itself).
    pub fn new(auth_file: Option<&Path>, plain_http: bool) -> Result<Self, BumpError> {
        let auth = match auth_file {
            Some(p) => Some((
                p.to_owned(),
                std::fs::read_to_string(p).map_err(|e| BumpError::Io {
                    path: p.to_owned(),
                    cause: e,
                })?,
            )),
            None => None,
        };
        Ok(Self {
            plain_http,
            auth,
            clients: Mutex::new(HashMap::new()),
            down: Mutex::new(HashMap::new()),
        })
    }

    fn client(&self, registry: &str) -> Result<Arc<Client>, BumpError> {
        if let Some(why) = self
            .down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
        {
            return Err(BumpError::Registry {
                registry: registry.to_owned(),
                message: format!("registry {registry}: not asked again this run: {why}"),
            });
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(registry) {
            return Ok(c.clone());
        }
        let credentials = match &self.auth {
            Some((path, text)) => {
                Credentials::from_auth_json(text, registry, &path.display().to_string())
                    .map_err(|e| registry_error(registry, e))?
            }
            None => Credentials::Anonymous,
        };
        let c = Arc::new(Client::new(ClientOptions {
            plain_http: self.plain_http,
            credentials,
            attempts: 3,
            ..ClientOptions::default()
        }));
        clients.insert(registry.to_owned(), c.clone());
        Ok(c)
    }

    fn note(&self, registry: &str, e: ClientError) -> BumpError {
        if matches!(e, ClientError::Unreachable { .. }) {
            self.down
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(registry.to_owned(), e.to_string());
        }
        registry_error(registry, e)
    }

    /// Whether `image`'s repository has manifest `digest`.
    pub fn exists(&self, image: &Reference, digest: &Digest) -> Result<bool, BumpError> {
        let c = self.client(image.registry())?;
        c.manifest_digest(image.registry(), image.repository(), &digest.to_string())
            .map(|d| d.is_some())
            .map_err(|e| self.note(image.registry(), e))
    }

    /// The digest `image`'s tag points at, or `None` if there is no such
    /// tag.
    pub fn resolve(&self, image: &Reference) -> Result<Option<Digest>, BumpError> {
        let Some(tag) = image.tag() else {
            return Ok(None);
        };
        let c = self.client(image.registry())?;
        c.manifest_digest(image.registry(), image.repository(), tag)
            .map_err(|e| self.note(image.registry(), e))
    }

    /// The source/revision labels of `digest` (for an index, of its
    /// linux/amd64 image, or its first). Best effort: `Labels::default()`
    /// if the registry does not say.
    pub fn labels(&self, image: &Reference, digest: &Digest) -> Labels {
        self.try_labels(image, digest).unwrap_or_default()
    }

    fn try_labels(&self, image: &Reference, digest: &Digest) -> Option<Labels> {
        let (reg, repo) = (image.registry(), image.repository());
        let c = self.client(reg).ok()?;
        let (_, bytes, _) = c.manifest(reg, repo, &digest.to_string()).ok()??;
        let mut m: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let mut labels = Labels::default();
        annotate(&mut labels, &m["annotations"]);
        if let Some(list) = m["manifests"].as_array() {
            let pick = list
                .iter()
                .find(|d| {
                    d["platform"]["os"] == "linux" && d["platform"]["architecture"] == "amd64"
                })
                .or_else(|| list.first())?;
            let child = pick["digest"].as_str()?.to_owned();
            let (_, bytes, _) = c.manifest(reg, repo, &child).ok()??;
            m = serde_json::from_slice(&bytes).ok()?;
            annotate(&mut labels, &m["annotations"]);
        }
        let config: Digest = m["config"]["digest"].as_str()?.parse().ok()?;
        let bytes = c.blob(reg, repo, &config, 4 << 20).ok()?;
        let cfg: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        annotate(&mut labels, &cfg["config"]["Labels"]);
        Some(labels)
    }
}

fn annotate(labels: &mut Labels, map: &serde_json::Value) {
    let get = |k: &str| map[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    labels.source = labels
        .source
        .take()
        .or_else(|| get("org.opencontainers.image.source"));
    labels.revision = labels
        .revision
        .take()
        .or_else(|| get("org.opencontainers.image.revision"));
}

fn registry_error(registry: &str, e: ClientError) -> BumpError {
    BumpError::Registry {
        registry: registry.to_owned(),
        message: e.to_string(),
    }
}
