//! The `[auth]` section of `berth serve`'s configuration: the service name
//! tokens are issued for, the token key, projects with their members,
//! users and robots — secrets always through files (so the NixOS module can
//! pass them as systemd credentials), never inline. [`AuthConfig::load`]
//! reads those files and builds the [`Gate`] the API checks requests with;
//! every error names the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::credentials::{self, Secret};
use super::directory::{Declared, parse_role};
use super::gate::Gate;
use super::model::{Action, Project, Robot};
use super::token::Keys;

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The name tokens are issued for (`iss`, `aud`) and the challenge's
    /// `service`: the registry's host as clients name it.
    pub service: String,
    /// The token endpoint clients are sent to; default
    /// `http(s)://<the request's Host>/token`.
    pub realm: Option<String>,
    /// The Ed25519 seed signing tokens (32 bytes); default
    /// `<data>/token.key`, generated on first start.
    pub token_key_file: Option<PathBuf>,
    /// Token lifetime, seconds (60–3600): also how long a disabled or
    /// rotated robot's last token keeps working.
    #[serde(default = "default_ttl")]
    pub token_ttl_s: u64,
    /// A system admin may push into an undeclared project (creating it).
    #[serde(default)]
    pub auto_create_projects: bool,
    /// An htpasswd file whose bcrypt entries are users too.
    pub htpasswd_file: Option<PathBuf>,
    /// Users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Projects.
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    /// Robot accounts.
    #[serde(default)]
    pub robots: Vec<RobotConfig>,
}

fn default_ttl() -> u64 {
    300
}

/// `[[auth.users]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// A file holding the password, or its argon2/bcrypt hash.
    pub password_file: PathBuf,
    /// A system admin.
    #[serde(default)]
    pub admin: bool,
}

/// `[[auth.projects]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The first path component of its repositories.
    pub name: String,
    /// Anyone may pull.
    #[serde(default)]
    pub public: bool,
    /// User name → `guest`, `developer`, `maintainer` or `admin`.
    #[serde(default)]
    pub members: BTreeMap<String, String>,
}

/// `[[auth.robots]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    /// `robot$<project>+<name>` or `robot$<name>`.
    pub name: String,
    /// A file holding the secret, or its argon2 hash.
    pub secret_file: PathBuf,
    /// What it may do.
    pub permissions: Vec<PermissionConfig>,
    /// Unix seconds after which it is refused.
    pub expires_at: Option<u64>,
    /// Switched off.
    #[serde(default)]
    pub disabled: bool,
}

/// One robot permission.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionConfig {
    /// Repository patterns.
    pub repositories: Vec<String>,
    /// `pull`, `push`, `delete`.
    pub actions: Vec<String>,
}

use crate::config::read_secret_file as read;

impl AuthConfig {
    /// Check what can be checked without reading files.
    pub fn validate(&self) -> Result<(), String> {
        if self.service.is_empty() {
            return Err("auth.service must name the registry (e.g. registry.lan:5000)".into());
        }
        if !(60..=3600).contains(&self.token_ttl_s) {
            return Err(format!(
                "auth.token_ttl_s = {} must be between 60 and 3600",
                self.token_ttl_s
            ));
        }
        for p in &self.projects {
            berth_oci::validate_name(&p.name)
                .ok()
                .filter(|()| !p.name.contains('/'))
                .ok_or_else(|| format!("auth.projects: {:?} is not a project name", p.name))?;
            for (user, r) in &p.members {
                parse_role(r)
                    .map_err(|e| format!("auth.projects {:?} member {user:?}: {e}", p.name))?;
            }
        }
        for r in &self.robots {
            let Some(rest) = r.name.strip_prefix("robot$").filter(|s| !s.is_empty()) else {
                return Err(format!(
                    "auth.robots: {:?} must be robot$<project>+<name> or robot$<name>",
                    r.name
                ));
            };
            if let Some((project, _)) = rest.split_once('+') {
                if !self.projects.iter().any(|p| p.name == project) {
                    return Err(format!(
                        "auth.robots {:?}: project {project:?} is not declared",
                        r.name
                    ));
                }
            }
            for p in &r.permissions {
                for a in &p.actions {
                    if Action::parse_list(a).is_empty() {
                        return Err(format!(
                            "auth.robots {:?}: action {a:?} is not pull, push or delete",
                            r.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Read every secret file start-up reads (not the token key, which
    /// start-up may create): what `--check-config` checks.
    pub fn check_files(&self) -> Result<(), String> {
        self.validate()?;
        if let Some(h) = &self.htpasswd_file {
            credentials::parse_htpasswd(&read("auth.htpasswd_file", h)?)?;
        }
        for u in &self.users {
            read("auth.users.password_file", &u.password_file)?;
        }
        for r in &self.robots {
            read("auth.robots.secret_file", &r.secret_file)?;
        }
        Ok(())
    }

    /// Read the secret files and the token key (generating it under `data`
    /// on first start) and build the gate.
    pub fn load(&self, data: &Path) -> Result<Gate, String> {
        self.validate()?;
        let mut users: Vec<(String, Secret)> = Vec::new();
        if let Some(h) = &self.htpasswd_file {
            let entries = credentials::parse_htpasswd(&read("auth.htpasswd_file", h)?)?;
            users.extend(entries.into_iter().map(|(u, h)| (u, Secret::Hashed(h))));
        }
        let mut admins = Vec::new();
        for u in &self.users {
            let secret = Secret::from_file(&read("auth.users.password_file", &u.password_file)?);
            users.push((u.name.clone(), secret));
            if u.admin {
                admins.push(u.name.clone());
            }
        }
        let mut robots = BTreeMap::new();
        let mut robot_secrets = Vec::new();
        for r in &self.robots {
            robot_secrets.push((
                r.name.clone(),
                Secret::from_file(&read("auth.robots.secret_file", &r.secret_file)?),
            ));
            robots.insert(
                r.name.clone(),
                Robot {
                    name: r.name.clone(),
                    permissions: r
                        .permissions
                        .iter()
                        .flat_map(|p| {
                            let actions = Action::parse_list(&p.actions.join(","));
                            p.repositories
                                .iter()
                                .map(move |repo| (repo.clone(), actions.clone()))
                        })
                        .collect(),
                    expires_at: r.expires_at,
                    disabled: r.disabled,
                },
            );
        }
        let mut projects = BTreeMap::new();
        for p in &self.projects {
            let mut members = BTreeMap::new();
            for (user, r) in &p.members {
                members.insert(user.clone(), parse_role(r)?);
            }
            projects.insert(
                p.name.clone(),
                Project {
                    public: p.public,
                    members,
                },
            );
        }
        let key_file = self
            .token_key_file
            .clone()
            .unwrap_or_else(|| data.join("token.key"));
        let keys = load_or_create_key(&key_file)?;
        Ok(Gate::new(
            self.service.clone(),
            self.realm.clone(),
            Duration::from_secs(self.token_ttl_s),
            keys,
            Declared {
                projects,
                users,
                admins,
                robots,
                robot_secrets,
                auto_create_projects: self.auto_create_projects,
            },
        ))
    }
}

/// The token key in `path` (32 bytes, or 64 hex digits), created with mode
/// 0600 when it does not exist.
fn load_or_create_key(path: &Path) -> Result<Keys, String> {
    let what = |e: std::io::Error| format!("auth.token_key_file = {:?}: {e}", path.display());
    match std::fs::read(path) {
        Ok(bytes) => {
            let seed: [u8; 32] = if bytes.len() == 32 {
                bytes.try_into().unwrap_or([0; 32])
            } else {
                let text = String::from_utf8_lossy(&bytes);
                hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        format!(
                            "auth.token_key_file = {:?}: not 32 bytes nor 64 hex digits",
                            path.display()
                        )
                    })?
            };
            Ok(Keys::from_seed(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let keys = Keys::generate();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(what)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(what)?;
            f.write_all(hex::encode(keys.seed()).as_bytes())
                .map_err(what)?;
            Ok(keys)
        }
        Err(e) => Err(what(e)),
    }
}
