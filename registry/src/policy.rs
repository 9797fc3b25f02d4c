//! Per-project policies, declared in `[[policies]]` or stored through the
//! admin API (a declaration wins): immutable tags (patterns whose tags can
//! be neither moved nor deleted once pushed), tag retention (Harbor's rules:
//! keep the N most recently pushed, keep those pushed within D days, keep
//! always; tags no rule keeps go), removal of untagged manifests, and a
//! storage quota. Patterns are globs (`*` any run, `?` one character) or,
//! written `re:<regex>`, regular expressions that must match the whole
//! name. The immutability check runs inside the metadata transaction that
//! would move or delete the tag, so two racing pushes cannot slip past it;
//! retention is planned here and applied by [`crate::retention`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One project's policy: `[[policies]]` in the configuration, or the JSON
/// body of `PUT /api/v1/projects/<p>/policy` (without `project`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The project (first path component of its repositories).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    /// Tag patterns whose tags never move and are never deleted once
    /// pushed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable_tags: Vec<String>,
    /// Retention rules; with none, retention keeps everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<RetentionRule>,
    /// Retention also removes untagged manifests (older than the GC grace
    /// window, unless a kept index or subject holds them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_untagged: bool,
    /// Blob bytes the project may hold (a blob shared by its repositories
    /// counted once); absent: no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_mib: Option<u64>,
}

/// A retention rule: among the tags matching `tags` in repositories
/// matching `repositories`, keep the `latest` N most recently pushed, or
/// those pushed within `days` days, or (`always`) all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Repository pattern, matched against the path after the project
    /// (`app`, `tools/*`); `*` by default.
    #[serde(default = "any")]
    pub repositories: String,
    /// Tag pattern; `*` by default.
    #[serde(default = "any")]
    pub tags: String,
    /// Keep the N most recently pushed matching tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<usize>,
    /// Keep matching tags pushed within this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u64>,
    /// Keep every matching tag.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always: bool,
}

fn any() -> String {
    "*".to_owned()
}

/// A glob or (`re:`) a whole-name regular expression.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `*` any run of characters, `?` one.
    Glob(String),
    /// Must match the whole name.
    Regex(regex::Regex),
}

impl Pattern {
    /// Parse a tag pattern: a glob may hold only tag characters, `*` and
    /// `?` (a `/` is a mistake: tags have none).
    pub fn tag(text: &str, what: &str) -> Result<Self, String> {
        let p = Self::parse(text, what)?;
        if let Self::Glob(g) = &p {
            if !g
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-*?".contains(&b))
            {
                return Err(format!(
                    "{what} {text:?} may hold only tag characters, * and ? (or be re:<regex>)"
                ));
            }
        }
        Ok(p)
    }

    /// Parse `text`; `what` names it in the error.
    pub fn parse(text: &str, what: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 256 {
            return Err(format!("{what} {text:?} must be 1 to 256 characters"));
        }
        if let Some(re) = text.strip_prefix("re:") {
            let re = regex::RegexBuilder::new(&format!("^(?:{re})$"))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("{what} {text:?} is not a regular expression: {e}"))?;
            return Ok(Self::Regex(re));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "{what} {text:?} holds a space or control character"
            ));
        }
        Ok(Self::Glob(text.to_owned()))
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Glob(g) => glob(g, name),
            Self::Regex(re) => re.is_match(name),
        }
    }
}

/// Whether `name` matches the glob `pattern` (`*` any run, `?` one
/// character), in O(len(pattern) × len(name)) whatever the pattern.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Greedy with one backtrack point: the classic wildcard matcher.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A loaded retention rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Repository pattern.
    pub repositories: Pattern,
    /// Tag pattern.
    pub tags: Pattern,
    /// What it keeps.
    pub keep: Keep,
    /// The rule as written, for reports.
    pub text: String,
}

/// What a rule keeps of the tags it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The N most recently pushed.
    Latest(usize),
    /// Those pushed within this many days.
    Days(u64),
    /// All.
    Always,
}

/// One project's loaded policy.
#[derive(Debug, Clone, Default)]
pub struct ProjectPolicy {
    /// Immutable tag patterns with their text.
    pub immutable: Vec<(Pattern, String)>,
    /// Retention rules.
    pub retention: Vec<Rule>,
    /// Remove untagged manifests at retention time.
    pub remove_untagged: bool,
    /// Quota in bytes.
    pub quota: Option<u64>,
    /// Declared in the configuration (read-only through the API).
    pub declared: bool,
    /// The policy as given.
    pub source: PolicyConfig,
}

/// The loaded policies.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    projects: BTreeMap<String, ProjectPolicy>,
}

impl PolicyConfig {
    /// Load one project's policy; every error names the key.
    pub fn load(&self, declared: bool) -> Result<ProjectPolicy, String> {
        let c = self;
        if berth_oci::validate_name(&c.project).is_err() || c.project.contains('/') {
            return Err(format!("policies: {:?} is not a project name", c.project));
        }
        let what = |k: &str| format!("policies {:?}: {k}", c.project);
        let mut immutable = Vec::new();
        for p in &c.immutable_tags {
            immutable.push((Pattern::tag(p, &what("immutable_tags pattern"))?, p.clone()));
        }
        let mut retention = Vec::new();
        for (i, r) in c.retention.iter().enumerate() {
            let key = what(&format!("retention[{i}]"));
            let keep = match (r.latest, r.days, r.always) {
                (Some(n), None, false) if n > 0 => Keep::Latest(n),
                (None, Some(d), false) if d > 0 => Keep::Days(d),
                (None, None, true) => Keep::Always,
                _ => {
                    return Err(format!(
                        "{key}: give exactly one of latest = N (N ≥ 1), days = D (D ≥ 1) or always = true"
                    ));
                }
            };
            let text = match keep {
                Keep::Latest(n) => format!("latest {n} of {}:{}", r.repositories, r.tags),
                Keep::Days(d) => format!("{d} days of {}:{}", r.repositories, r.tags),
                Keep::Always => format!("always {}:{}", r.repositories, r.tags),
            };
            retention.push(Rule {
                repositories: Pattern::parse(&r.repositories, &format!("{key}: repositories"))?,
                tags: Pattern::tag(&r.tags, &format!("{key}: tags"))?,
                keep,
                text,
            });
        }
        if c.remove_untagged && retention.is_empty() {
            return Err(format!(
                "{}: remove_untagged needs retention rules (they say which tags stay)",
                what("remove_untagged")
            ));
        }
        let quota = match c.quota_mib {
            Some(0) => return Err(format!("{} must be at least 1", what("quota_mib"))),
            Some(m) if m > 1 << 30 => return Err(format!("{} is too large", what("quota_mib"))),
            q => q.map(|m| m << 20),
        };
        Ok(ProjectPolicy {
            immutable,
            retention,
            remove_untagged: c.remove_untagged,
            quota,
            declared,
            source: c.clone(),
        })
    }
}

impl Policies {
    /// From `[[policies]]` (one entry per project).
    pub fn load(configs: &[PolicyConfig]) -> Result<Self, String> {
        Self::merge(configs, &[])
    }

    /// The declared policies and those stored through the admin API; a
    /// project declared in the configuration ignores its stored policy.
    pub fn merge(declared: &[PolicyConfig], stored: &[PolicyConfig]) -> Result<Self, String> {
        let mut projects = BTreeMap::new();
        for c in declared {
            if projects.insert(c.project.clone(), c.load(true)?).is_some() {
                return Err(format!(
                    "policies: project {:?} has two entries; merge them",
                    c.project
                ));
            }
        }
        for c in stored {
            if projects.contains_key(&c.project) {
                continue;
            }
            match c.load(false) {
                Ok(p) => {
                    projects.insert(c.project.clone(), p);
                }
                Err(e) => tracing::error!(error = %e, "a stored policy no longer loads; ignored"),
            }
        }
        Ok(Self { projects })
    }

    /// The policy of `project`, if any.
    pub fn project(&self, project: &str) -> Option<&ProjectPolicy> {
        self.projects.get(project)
    }

    /// Every project with a policy.
    pub fn projects(&self) -> impl Iterator<Item = (&String, &ProjectPolicy)> {
        self.projects.iter()
    }

    /// The rule that makes `tag` of `repo` immutable, if any.
    pub fn immutable(&self, repo: &str, tag: &str) -> Option<String> {
        self.projects
            .get(crate::auth::model::project_of(repo))?
            .immutable
            .iter()
            .find(|(p, _)| p.matches(tag))
            .map(|(_, text)| text.clone())
    }

    /// The quota of `repo`'s project in bytes, if any.
    pub fn quota(&self, repo: &str) -> Option<u64> {
        self.projects
            .get(crate::auth::model::project_of(repo))?
            .quota
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_regexes() {
        for (p, t, want) in [
            ("v*", "v1.2", true),
            ("v*", "latest", false),
            ("release-?", "release-1", true),
            ("release-?", "release-10", false),
            ("*", "anything", true),
            ("*-stable", "1.4-stable", true),
            ("*-stable", "1.4-stable-rc", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("re:v[0-9]+\\.[0-9]+", "v1.22", true),
            ("re:v[0-9]+\\.[0-9]+", "v1.22-rc", false),
            ("re:main-[0-9a-f]{7}", "main-0abc123", true),
        ] {
            assert_eq!(
                Pattern::parse(p, "t").unwrap().matches(t),
                want,
                "{p} ~ {t}"
            );
        }
        assert!(
            Pattern::tag("v/*", "tags")
                .unwrap_err()
                .contains("tag characters")
        );
        assert!(Pattern::parse("tools/*", "repositories").is_ok());
        // No exponential blow-up on a hostile glob.
        let hostile = "*a".repeat(60);
        let started = std::time::Instant::now();
        assert!(!glob(&hostile, &"a".repeat(59)));
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert!(
            Pattern::parse("re:(", "tags")
                .unwrap_err()
                .contains("regular expression")
        );
    }

    #[test]
    fn rules_load_and_errors_name_the_key() {
        let p = Policies::load(&[PolicyConfig {
            project: "team".into(),
            immutable_tags: vec!["v*".into(), "re:release-[0-9]+".into()],
            ..PolicyConfig::default()
        }])
        .unwrap();
        assert_eq!(p.immutable("team/app", "v1").as_deref(), Some("v*"));
        assert_eq!(
            p.immutable("team/app", "release-12").as_deref(),
            Some("re:release-[0-9]+")
        );
        assert_eq!(p.immutable("team/app", "latest"), None);
        assert_eq!(p.immutable("other/app", "v1"), None);
        let two = |latest, days| PolicyConfig {
            project: "team".into(),
            retention: vec![RetentionRule {
                repositories: any(),
                tags: any(),
                latest,
                days,
                always: false,
            }],
            ..PolicyConfig::default()
        };
        let err = Policies::load(&[two(Some(3), Some(2))]).unwrap_err();
        assert!(
            err.contains("retention[0]") && err.contains("exactly one"),
            "{err}"
        );
        Policies::load(&[two(Some(3), None)]).unwrap();
        let err = Policies::load(&[PolicyConfig {
            project: "team".into(),
            quota_mib: Some(0),
            ..PolicyConfig::default()
        }])
        .unwrap_err();
        assert!(err.contains("quota_mib"), "{err}");
        // A declaration wins over a stored policy.
        let merged = Policies::merge(
            &[PolicyConfig {
                project: "team".into(),
                quota_mib: Some(5),
                ..PolicyConfig::default()
            }],
            &[PolicyConfig {
                project: "team".into(),
                quota_mib: Some(1),
                ..PolicyConfig::default()
            }],
        )
        .unwrap();
        assert_eq!(merged.quota("team/app"), Some(5 << 20));
        assert!(merged.project("team").unwrap().declared);
    }
}
