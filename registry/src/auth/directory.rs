//! Who exists right now: the accounts the `[auth]` configuration declares
//! merged with the ones made through the admin API (stored in the metadata
//! database). A declaration wins over a stored account of the same name
//! (start-up removes such shadowed rows), and declared accounts cannot be
//! changed through the API — the configuration is their source. The
//! [`Directory`] is rebuilt from both after every admin change and
//! swapped in whole, so a request sees either the old or the new one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::credentials::{Secret, Store};
use super::model::{Action, Policy, Project, Robot, Role};
use crate::metadata::AuthRows;

/// What the configuration declares.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// Projects.
    pub projects: BTreeMap<String, Project>,
    /// Users and their secrets.
    pub users: Vec<(String, Secret)>,
    /// System admins.
    pub admins: Vec<String>,
    /// Robots.
    pub robots: BTreeMap<String, Robot>,
    /// Robot secrets.
    pub robot_secrets: Vec<(String, Secret)>,
    /// A system admin may push into an undeclared project.
    pub auto_create_projects: bool,
}

impl Declared {
    /// The names of declared projects, users and robots.
    pub fn names(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        (
            self.projects.keys().cloned().collect(),
            self.users.iter().map(|(n, _)| n.clone()).collect(),
            self.robots.keys().cloned().collect(),
        )
    }
}

/// Every account, declared and stored.
#[derive(Debug)]
pub struct Directory {
    /// Projects and what they allow.
    pub policy: Policy,
    /// User secrets.
    pub users: Store,
    /// System admins.
    pub admins: BTreeSet<String>,
    /// Robots.
    pub robots: BTreeMap<String, Robot>,
    /// Robot secrets.
    pub robot_secrets: Store,
    /// Names of declared projects, users and robots (read-only through
    /// the API).
    pub declared: BTreeSet<String>,
    /// Names of users (declared or stored).
    pub user_names: BTreeSet<String>,
    /// When a stored robot's secret was last set: its tokens issued
    /// before are refused.
    pub secret_set_at: HashMap<String, u64>,
    /// Stored robots' descriptions and creators, for listing.
    pub robot_info: HashMap<String, (String, String, u64)>,
}

/// A role's name as the configuration and the API spell it.
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Guest => "guest",
        Role::Developer => "developer",
        Role::Maintainer => "maintainer",
        Role::ProjectAdmin => "admin",
    }
}

/// A role from its name.
pub fn parse_role(name: &str) -> Result<Role, String> {
    match name {
        "guest" => Ok(Role::Guest),
        "developer" => Ok(Role::Developer),
        "maintainer" => Ok(Role::Maintainer),
        "admin" => Ok(Role::ProjectAdmin),
        other => Err(format!(
            "role {other:?} is not guest, developer, maintainer or admin"
        )),
    }
}

/// A robot's permissions as stored (JSON `[[pattern, ["pull", …]], …]`).
pub fn permissions_json(p: &[(String, Vec<Action>)]) -> String {
    let v: Vec<(String, Vec<&str>)> = p
        .iter()
        .map(|(pat, a)| (pat.clone(), a.iter().map(|a| a.as_str()).collect()))
        .collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

fn parse_permissions(s: &str) -> Vec<(String, Vec<Action>)> {
    let v: Vec<(String, Vec<String>)> = serde_json::from_str(s).unwrap_or_default();
    v.into_iter()
        .map(|(pat, a)| (pat, Action::parse_list(&a.join(","))))
        .collect()
}

impl Directory {
    /// The declared accounts with the stored ones that are not shadowed.
    pub fn build(declared: &Declared, rows: &AuthRows) -> Self {
        let mut names: BTreeSet<String> = BTreeSet::new();
        let (dp, du, dr) = declared.names();
        names.extend(dp);
        names.extend(du);
        names.extend(dr);
        let mut projects = declared.projects.clone();
        for p in &rows.projects {
            projects.entry(p.name.clone()).or_insert(Project {
                public: p.public,
                members: BTreeMap::new(),
            });
        }
        for (project, user, role) in &rows.members {
            // Members of declared projects are declared too.
            if declared.projects.contains_key(project) {
                continue;
            }
            if let (Some(p), Ok(role)) = (projects.get_mut(project), parse_role(role)) {
                p.members.insert(user.clone(), role);
            }
        }
        let mut users = declared.users.clone();
        let mut admins: BTreeSet<String> = declared.admins.iter().cloned().collect();
        for u in &rows.users {
            if names.contains(&u.name) {
                continue;
            }
            if let Some(secret) = Secret::from_stored(&u.secret) {
                users.push((u.name.clone(), secret));
                if u.admin {
                    admins.insert(u.name.clone());
                }
            }
        }
        let mut robots = declared.robots.clone();
        let mut robot_secrets = declared.robot_secrets.clone();
        let mut secret_set_at = HashMap::new();
        let mut robot_info = HashMap::new();
        for r in &rows.robots {
            if names.contains(&r.name) {
                continue;
            }
            let Some(secret) = Secret::from_stored(&r.secret) else {
                continue;
            };
            robot_secrets.push((r.name.clone(), secret));
            secret_set_at.insert(r.name.clone(), r.secret_set_at);
            robot_info.insert(
                r.name.clone(),
                (r.description.clone(), r.created_by.clone(), r.created_at),
            );
            robots.insert(
                r.name.clone(),
                Robot {
                    name: r.name.clone(),
                    permissions: parse_permissions(&r.permissions),
                    expires_at: r.expires_at,
                    disabled: r.disabled,
                },
            );
        }
        let user_names = users.iter().map(|(n, _)| n.clone()).collect();
        Self {
            policy: Policy {
                projects,
                auto_create_projects: declared.auto_create_projects,
            },
            users: Store::new(users),
            admins,
            robots,
            robot_secrets: Store::new(robot_secrets),
            declared: names,
            user_names,
            secret_set_at,
            robot_info,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{StoredProject, StoredRobot, StoredUser};

    #[test]
    fn declarations_win_over_stored_accounts_of_the_same_name() {
        let mut declared = Declared::default();
        declared.projects.insert(
            "team".into(),
            Project {
                public: false,
                members: [("alice".to_owned(), Role::Developer)].into(),
            },
        );
        declared
            .users
            .push(("alice".into(), Secret::from_file("alice-pw")));
        let rows = AuthRows {
            projects: vec![
                StoredProject {
                    name: "team".into(),
                    public: true,
                    created_by: "root".into(),
                },
                StoredProject {
                    name: "lab".into(),
                    public: false,
                    created_by: "root".into(),
                },
            ],
            users: vec![
                StoredUser {
                    name: "alice".into(),
                    secret: Secret::from_file("other").stored(),
                    admin: true,
                },
                StoredUser {
                    name: "carol".into(),
                    secret: Secret::of_random("carol-pw").stored(),
                    admin: false,
                },
            ],
            members: vec![
                ("team".into(), "carol".into(), "admin".into()),
                ("lab".into(), "carol".into(), "maintainer".into()),
            ],
            robots: vec![StoredRobot {
                name: "robot$lab+ci".into(),
                secret: Secret::of_random("s").stored(),
                permissions: permissions_json(&[("lab/*".into(), vec![Action::Pull])]),
                expires_at: None,
                disabled: false,
                description: String::new(),
                secret_set_at: 7,
                created_by: "carol".into(),
                created_at: 7,
            }],
        };
        let d = Directory::build(&declared, &rows);
        assert!(!d.policy.projects["team"].public, "the declared project");
        assert!(
            !d.policy.projects["team"].members.contains_key("carol"),
            "members of declared projects are declared"
        );
        assert_eq!(d.policy.projects["lab"].members["carol"], Role::Maintainer);
        assert!(d.users.check("alice", "alice-pw"));
        assert!(!d.users.check("alice", "other"));
        assert!(
            !d.admins.contains("alice"),
            "the stored admin flag is shadowed"
        );
        assert!(d.users.check("carol", "carol-pw"));
        assert!(d.robot_secrets.check("robot$lab+ci", "s"));
        assert_eq!(d.robots["robot$lab+ci"].permissions[0].1, [Action::Pull]);
        assert_eq!(d.secret_set_at["robot$lab+ci"], 7);
    }
}
