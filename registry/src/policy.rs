//! Per-project policies declared in `[[policies]]`: today immutable tags
//! (tag patterns whose tags can be neither moved nor deleted once pushed,
//! Harbor's immutability rules). The check itself runs inside the metadata
//! transaction that would move or delete the tag, so two racing pushes
//! cannot slip past it.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[[policies]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The project (first path component of its repositories).
    pub project: String,
    /// Tag patterns (`v*`, `release-?.*`, `*`) whose tags never move and
    /// are never deleted once pushed: `*` any run of characters, `?` one.
    #[serde(default)]
    pub immutable_tags: Vec<String>,
}

/// The loaded policies.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    immutable: BTreeMap<String, Vec<String>>,
}

/// Whether `tag` matches the glob `pattern` (`*` any run, `?` one char).
pub fn glob(pattern: &str, tag: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), tag.as_bytes())
}

impl Policies {
    /// From `[[policies]]`; every error names the key.
    pub fn load(configs: &[PolicyConfig]) -> Result<Self, String> {
        let mut immutable: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in configs {
            if berth_oci::validate_name(&c.project).is_err() || c.project.contains('/') {
                return Err(format!("policies: {:?} is not a project name", c.project));
            }
            for p in &c.immutable_tags {
                let ok = !p.is_empty()
                    && p.len() <= 128
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-*?".contains(&b));
                if !ok {
                    return Err(format!(
                        "policies {:?}: immutable_tags pattern {p:?} may hold only tag characters, * and ?",
                        c.project
                    ));
                }
            }
            immutable
                .entry(c.project.clone())
                .or_default()
                .extend(c.immutable_tags.iter().cloned());
        }
        Ok(Self { immutable })
    }

    /// The rule that makes `tag` of `repo` immutable, if any.
    pub fn immutable(&self, repo: &str, tag: &str) -> Option<String> {
        self.immutable
            .get(crate::auth::model::project_of(repo))?
            .iter()
            .find(|p| glob(p, tag))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_rules() {
        for (p, t, want) in [
            ("v*", "v1.2", true),
            ("v*", "latest", false),
            ("release-?", "release-1", true),
            ("release-?", "release-10", false),
            ("*", "anything", true),
            ("*-stable", "1.4-stable", true),
            ("*-stable", "1.4-stable-rc", false),
        ] {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
        let p = Policies::load(&[PolicyConfig {
            project: "team".into(),
            immutable_tags: vec!["v*".into()],
        }])
        .unwrap();
        assert_eq!(p.immutable("team/app", "v1").as_deref(), Some("v*"));
        assert_eq!(p.immutable("team/app", "latest"), None);
        assert_eq!(p.immutable("other/app", "v1"), None);
        assert!(
            Policies::load(&[PolicyConfig {
                project: "team".into(),
                immutable_tags: vec!["v/*".into()],
            }])
            .is_err()
        );
    }
}
