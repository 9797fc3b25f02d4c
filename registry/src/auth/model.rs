//! The access model, Harbor's vocabulary: a repository's **project** is its
//! first path component; a project is public (anyone may pull) or private;
//! **users** are members of projects with a **role** (guest: pull;
//! developer: pull and push; maintainer: also delete manifests and tags;
//! project admin: also members, robots and policies), and a system admin
//! may do anything; **robot accounts** carry their own scoped permissions
//! (repository patterns × actions), an expiry and a disabled flag, and are
//! bound to one project (`robot$<project>+<name>`) or span projects
//! (`robot$<name>`). [`Policy::grant`] answers one question — which of the
//! asked actions may this principal take on this repository now — and is
//! the only place that answers it.
//!
//! Pure: no I/O, no clock (the caller passes `now`), no credentials (who
//! the principal is was settled before).

use std::collections::BTreeMap;

/// What can be done to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload blobs and manifests, move tags.
    Push,
    /// Delete manifests and tags.
    Delete,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// As the token spec spells it (`pull`, `push`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Delete => "delete",
        }
    }

    /// From the token spec's spelling; `*` is every action.
    pub fn parse_list(s: &str) -> Vec<Action> {
        let mut out = Vec::new();
        for a in s.split(',') {
            match a.trim() {
                "pull" => out.push(Self::Pull),
                "push" => out.push(Self::Push),
                "delete" => out.push(Self::Delete),
                "*" => out.extend(Self::ALL),
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// A member's role in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Pull.
    Guest,
    /// Pull and push.
    Developer,
    /// Pull, push, delete manifests and tags.
    Maintainer,
    /// Everything in the project, and its members, robots and policies.
    ProjectAdmin,
}

impl Role {
    /// Whether this role may take `action` on the project's repositories.
    pub fn allows(self, action: Action) -> bool {
        match action {
            Action::Pull => true,
            Action::Push => self >= Role::Developer,
            Action::Delete => self >= Role::Maintainer,
        }
    }
}

/// A project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Project {
    /// Anyone, even anonymous, may pull.
    pub public: bool,
    /// Users and their roles.
    pub members: BTreeMap<String, Role>,
}

/// A robot account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Robot {
    /// `robot$<project>+<name>` or, spanning projects, `robot$<name>`.
    pub name: String,
    /// Repository patterns (`team/app`, `team/*`, `*/tools/*`; `*` stands
    /// for one or more characters within one path component, a trailing
    /// `/**` for any depth) and the actions allowed on them.
    pub permissions: Vec<(String, Vec<Action>)>,
    /// Unix seconds after which it is refused; `None`: never expires.
    pub expires_at: Option<u64>,
    /// Switched off.
    pub disabled: bool,
}

impl Robot {
    /// The project a project robot belongs to; `None` for a system robot.
    pub fn project(&self) -> Option<&str> {
        let rest = self.name.strip_prefix("robot$")?;
        rest.split_once('+').map(|(p, _)| p)
    }

    /// Whether it may act at `now`.
    pub fn active(&self, now: u64) -> bool {
        !self.disabled && self.expires_at.is_none_or(|t| now < t)
    }
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Nobody in particular.
    Anonymous,
    /// A local user.
    User {
        /// Its name.
        name: String,
        /// A system admin.
        admin: bool,
    },
    /// A robot account.
    Robot(Robot),
}

/// Whether `pattern` matches repository `repo`.
pub fn pattern_matches(pattern: &str, repo: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix("/**") {
        let depth = prefix.split('/').count();
        let parts: Vec<&str> = repo.split('/').collect();
        return parts.len() > depth && pattern_matches(prefix, &parts[..depth].join("/"));
    }
    let (p, r): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), repo.split('/').collect());
    p.len() == r.len() && p.iter().zip(&r).all(|(p, r)| component_matches(p, r))
}

/// One path component against a pattern where `*` is one or more
/// characters.
fn component_matches(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (1..=rest.len())
                .any(|i| rest.is_char_boundary(i) && component_matches(tail, &rest[i..]))
        }
    }
}

/// The declared projects and what they allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Projects by name.
    pub projects: BTreeMap<String, Project>,
    /// A system admin may push into a project nobody declared (it is then
    /// created). Off: repositories outside declared projects are refused.
    pub auto_create_projects: bool,
}

/// A repository's project: its first path component.
pub fn project_of(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

impl Policy {
    /// Which of `asked` `who` may take on repository `repo` at `now`, in
    /// [`Action`] order: the intersection of what was asked and what is
    /// allowed, never more.
    pub fn grant(&self, who: &Principal, repo: &str, asked: &[Action], now: u64) -> Vec<Action> {
        let mut out: Vec<Action> = asked
            .iter()
            .copied()
            .filter(|a| self.allows(who, repo, *a, now))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether `who` may take `action` on repository `repo` at `now`.
    pub fn allows(&self, who: &Principal, repo: &str, action: Action, now: u64) -> bool {
        let project_name = project_of(repo);
        let Some(project) = self.projects.get(project_name) else {
            // Outside every project: only a system admin, and only when
            // projects are created on first push.
            return self.auto_create_projects && matches!(who, Principal::User { admin: true, .. });
        };
        match who {
            Principal::Anonymous => project.public && action == Action::Pull,
            Principal::User { admin: true, .. } => true,
            Principal::User { name, .. } => {
                (project.public && action == Action::Pull)
                    || project.members.get(name).is_some_and(|r| r.allows(action))
            }
            Principal::Robot(robot) => {
                if !robot.active(now) {
                    return false;
                }
                if project.public && action == Action::Pull {
                    return true;
                }
                if robot.project().is_some_and(|p| p != project_name) {
                    return false;
                }
                robot.permissions.iter().any(|(pattern, actions)| {
                    actions.contains(&action) && pattern_matches(pattern, repo)
                })
            }
        }
    }

    /// Whether `who` administers `project` (members, robots, policies).
    pub fn administers(&self, who: &Principal, project: &str) -> bool {
        match who {
            Principal::User { admin: true, .. } => true,
            Principal::User { name, .. } => self
                .projects
                .get(project)
                .and_then(|p| p.members.get(name))
                .is_some_and(|r| *r == Role::ProjectAdmin),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn policy() -> Policy {
        let members = |pairs: &[(&str, Role)]| {
            pairs
                .iter()
                .map(|(n, r)| ((*n).to_owned(), *r))
                .collect::<BTreeMap<_, _>>()
        };
        let team = [
            ("guest", Role::Guest),
            ("dev", Role::Developer),
            ("both", Role::Developer),
            ("maint", Role::Maintainer),
            ("padmin", Role::ProjectAdmin),
        ];
        let mut projects = BTreeMap::new();
        projects.insert(
            "pub".to_owned(),
            Project {
                public: true,
                members: members(&team),
            },
        );
        projects.insert(
            "priv".to_owned(),
            Project {
                public: false,
                members: members(&team),
            },
        );
        projects.insert(
            "other".to_owned(),
            Project {
                public: false,
                members: members(&[
                    ("otheradmin", Role::ProjectAdmin),
                    ("both", Role::Developer),
                ]),
            },
        );
        Policy {
            projects,
            auto_create_projects: false,
        }
    }

    fn user(name: &str) -> Principal {
        Principal::User {
            name: name.into(),
            admin: false,
        }
    }

    fn robot(
        project: &str,
        actions: &[Action],
        expires_at: Option<u64>,
        disabled: bool,
    ) -> Principal {
        Principal::Robot(Robot {
            name: format!("robot${project}+ci"),
            permissions: vec![(format!("{project}/*"), actions.to_vec())],
            expires_at,
            disabled,
        })
    }

    /// The authorization matrix of docs/auth.md: every principal × action
    /// × public/private project, each cell written out. `P` pull (manifest,
    /// blob, tag list, referrers, catalog entry), `U` push, `D` delete
    /// (manifest or tag), `M` mount `other/lib` (another private project)
    /// into this one: pull there and push here, else a normal upload.
    #[test]
    fn the_authorization_matrix() {
        let p = policy();
        let admin = Principal::User {
            name: "root".into(),
            admin: true,
        };
        // (principal, public project, private project)
        let matrix: Vec<(&str, Principal, &str, &str)> = vec![
            ("anonymous", Principal::Anonymous, "P---", "----"),
            (
                "robot with pull",
                robot("{p}", &[Action::Pull], None, false),
                "P---",
                "P---",
            ),
            (
                "robot with push",
                robot("{p}", &[Action::Pull, Action::Push], None, false),
                "PU--",
                "PU--",
            ),
            ("guest", user("guest"), "P---", "P---"),
            ("developer", user("dev"), "PU--", "PU--"),
            ("developer here and in other", user("both"), "PU-M", "PU-M"),
            ("maintainer", user("maint"), "PUD-", "PUD-"),
            ("project admin", user("padmin"), "PUD-", "PUD-"),
            ("other project's admin", user("otheradmin"), "P---", "----"),
            ("system admin", admin, "PUDM", "PUDM"),
            (
                "expired robot",
                robot("{p}", &Action::ALL, Some(NOW), false),
                "----",
                "----",
            ),
            (
                "disabled robot",
                robot("{p}", &Action::ALL, None, true),
                "----",
                "----",
            ),
        ];
        for (label, principal, public, private) in &matrix {
            for (project, want) in [("pub", public), ("priv", private)] {
                // Robots belong to the project under test.
                let principal = match principal {
                    Principal::Robot(r) => Principal::Robot(Robot {
                        name: r.name.replace("{p}", project),
                        permissions: r
                            .permissions
                            .iter()
                            .map(|(pat, a)| (pat.replace("{p}", project), a.clone()))
                            .collect(),
                        ..r.clone()
                    }),
                    other => other.clone(),
                };
                let repo = format!("{project}/app");
                let can = |a| p.allows(&principal, &repo, a, NOW);
                let mount =
                    p.allows(&principal, "other/lib", Action::Pull, NOW) && can(Action::Push);
                let got: String = [
                    (can(Action::Pull), 'P'),
                    (can(Action::Push), 'U'),
                    (can(Action::Delete), 'D'),
                    (mount, 'M'),
                ]
                .iter()
                .map(|(yes, c)| if *yes { *c } else { '-' })
                .collect();
                assert_eq!(&got, want, "{label} on the {project} project");
            }
        }
    }

    #[test]
    fn grants_are_the_intersection_of_asked_and_allowed() {
        let p = policy();
        let dev = user("dev");
        assert_eq!(
            p.grant(&dev, "priv/app", &Action::ALL, NOW),
            [Action::Pull, Action::Push]
        );
        assert_eq!(
            p.grant(&dev, "priv/app", &[Action::Pull], NOW),
            [Action::Pull]
        );
        assert!(p.grant(&dev, "other/app", &Action::ALL, NOW).is_empty());
        // A project robot never reaches another project, whatever its
        // patterns say.
        let stray = Principal::Robot(Robot {
            name: "robot$priv+ci".into(),
            permissions: vec![("*/**".into(), Action::ALL.to_vec())],
            expires_at: None,
            disabled: false,
        });
        assert!(p.grant(&stray, "other/app", &Action::ALL, NOW).is_empty());
        assert_eq!(p.grant(&stray, "priv/a/b", &Action::ALL, NOW), Action::ALL);
        // Outside every project: refused, unless projects are created on
        // first push, and then only for a system admin.
        let admin = Principal::User {
            name: "root".into(),
            admin: true,
        };
        assert!(!p.allows(&admin, "new/app", Action::Push, NOW));
        let auto = Policy {
            auto_create_projects: true,
            ..policy()
        };
        assert!(auto.allows(&admin, "new/app", Action::Push, NOW));
        assert!(!auto.allows(&dev, "new/app", Action::Push, NOW));
        assert!(auto.administers(&admin, "priv"));
        assert!(auto.administers(&user("padmin"), "priv"));
        assert!(!auto.administers(&user("padmin"), "other"));
        assert!(!auto.administers(&user("maint"), "priv"));
    }

    #[test]
    fn patterns_and_action_lists() {
        for (pattern, repo, want) in [
            ("team/app", "team/app", true),
            ("team/*", "team/app", true),
            ("team/*", "team/a/b", false),
            ("team/**", "team/a/b", true),
            ("team/**", "team", false),
            ("team/app-*", "team/app-web", true),
            ("team/app-*", "team/app-", false),
            ("*/tools/*", "x/tools/y", true),
            ("team/*", "other/app", false),
        ] {
            assert_eq!(pattern_matches(pattern, repo), want, "{pattern} ~ {repo}");
        }
        assert_eq!(
            Action::parse_list("push,pull,pull,bogus"),
            [Action::Pull, Action::Push]
        );
        assert_eq!(Action::parse_list("*"), Action::ALL);
        assert!(Action::parse_list("").is_empty());
    }
}
