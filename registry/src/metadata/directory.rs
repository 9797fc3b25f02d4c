//! The accounts made through the admin API — projects, users, members and
//! robots — as rows. Declared accounts (the `[auth]` configuration) are
//! never stored here; [`crate::auth::directory`] merges the two. Secrets
//! are stored as the credentials module writes them (an argon2id PHC
//! string, or `sha256:<hex>` of a random robot secret), never in clear.

use rusqlite::{OptionalExtension, params};

use super::{Result, Sqlite, now};

/// A project made through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProject {
    /// Its name.
    pub name: String,
    /// Anyone may pull.
    pub public: bool,
    /// Who made it.
    pub created_by: String,
}

/// A user made through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// Login name.
    pub name: String,
    /// The stored secret (argon2id PHC).
    pub secret: String,
    /// A system admin.
    pub admin: bool,
}

/// A robot made through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRobot {
    /// `robot$<project>+<name>` or `robot$<name>`.
    pub name: String,
    /// The stored secret (`sha256:<hex>`).
    pub secret: String,
    /// `[[pattern, [actions]]]` as JSON.
    pub permissions: String,
    /// Unix seconds after which it is refused.
    pub expires_at: Option<u64>,
    /// Switched off.
    pub disabled: bool,
    /// What it is for.
    pub description: String,
    /// When its secret was last set: tokens issued before are refused.
    pub secret_set_at: u64,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: u64,
}

/// Every stored account, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthRows {
    /// Projects.
    pub projects: Vec<StoredProject>,
    /// Users.
    pub users: Vec<StoredUser>,
    /// `(project, user, role)`.
    pub members: Vec<(String, String, String)>,
    /// Robots.
    pub robots: Vec<StoredRobot>,
}

/// Accounts made through the admin API: projects, users, members and
/// robots (secrets only as hashes), read whole to build the directory.
pub trait Accounts {
    /// Every stored account.
    fn auth_rows(&self) -> Result<AuthRows>;

    /// Create a project; `false` if one of that name exists.
    fn create_project(&self, p: &StoredProject) -> Result<bool>;

    /// Set a stored project's visibility; `false` if it is not stored.
    fn set_project_public(&self, name: &str, public: bool) -> Result<bool>;

    /// Delete a stored project with its members and robots; `false` if it
    /// is not stored.
    fn delete_project(&self, name: &str) -> Result<bool>;

    /// Create a user; `false` if one of that name exists.
    fn create_user(&self, u: &StoredUser, created_by: &str) -> Result<bool>;

    /// Set a stored user's secret; `false` if it is not stored.
    fn set_user_secret(&self, name: &str, secret: &str) -> Result<bool>;

    /// Delete a stored user and their memberships; `false` if not stored.
    fn delete_user(&self, name: &str) -> Result<bool>;

    /// Set `user`'s role in `project`; the role it had before, if any.
    fn put_member(&self, project: &str, user: &str, role: &str) -> Result<Option<String>>;

    /// Remove `user` from `project`; `false` if they were not a member.
    fn delete_member(&self, project: &str, user: &str) -> Result<bool>;

    /// Create a robot; `false` if one of that name exists.
    fn create_robot(&self, r: &StoredRobot) -> Result<bool>;

    /// Switch a stored robot off or on; `false` if it is not stored.
    fn set_robot_disabled(&self, name: &str, disabled: bool) -> Result<bool>;

    /// Give a stored robot a new secret (and, if given, a new expiry);
    /// `false` if it is not stored.
    fn rotate_robot(&self, name: &str, secret: &str, expires_at: Option<u64>) -> Result<bool>;

    /// Delete a stored robot; `false` if it is not stored.
    fn delete_robot(&self, name: &str) -> Result<bool>;

    /// Remove stored accounts that the configuration now declares (the
    /// declaration wins): the names removed.
    fn drop_shadowed(
        &self,
        projects: &[String],
        users: &[String],
        robots: &[String],
    ) -> Result<Vec<String>>;
}

impl Accounts for Sqlite {
    fn auth_rows(&self) -> Result<AuthRows> {
        let conn = self.reader();
        let projects = conn
            .prepare_cached("SELECT name, public, created_by FROM auth_projects ORDER BY name")?
            .query_map([], |r| {
                Ok(StoredProject {
                    name: r.get(0)?,
                    public: r.get(1)?,
                    created_by: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let users = conn
            .prepare_cached("SELECT name, secret, admin FROM auth_users ORDER BY name")?
            .query_map([], |r| {
                Ok(StoredUser {
                    name: r.get(0)?,
                    secret: r.get(1)?,
                    admin: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let members = conn
            .prepare_cached("SELECT project, user, role FROM auth_members ORDER BY project, user")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let robots = conn
            .prepare_cached(
                "SELECT name, secret, permissions, expires_at, disabled, description,
                        secret_set_at, created_by, created_at
                 FROM auth_robots ORDER BY name",
            )?
            .query_map([], |r| {
                Ok(StoredRobot {
                    name: r.get(0)?,
                    secret: r.get(1)?,
                    permissions: r.get(2)?,
                    expires_at: r.get::<_, Option<i64>>(3)?.map(|t| t as u64),
                    disabled: r.get(4)?,
                    description: r.get(5)?,
                    secret_set_at: r.get::<_, i64>(6)? as u64,
                    created_by: r.get(7)?,
                    created_at: r.get::<_, i64>(8)? as u64,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(AuthRows {
            projects,
            users,
            members,
            robots,
        })
    }

    fn create_project(&self, p: &StoredProject) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached(
                "INSERT INTO auth_projects (name, public, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO NOTHING",
            )?
            .execute(params![p.name, p.public, p.created_by, now()])?;
        Ok(n == 1)
    }

    fn set_project_public(&self, name: &str, public: bool) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached("UPDATE auth_projects SET public = ?2 WHERE name = ?1")?
            .execute(params![name, public])?;
        Ok(n == 1)
    }

    fn delete_project(&self, name: &str) -> Result<bool> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM auth_projects WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM auth_members WHERE project = ?1", [name])?;
        tx.execute(
            "DELETE FROM auth_robots WHERE name LIKE ?1 ESCAPE '\\'",
            [format!("robot${}+%", super::audit::like_escape(name))],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn create_user(&self, u: &StoredUser, created_by: &str) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached(
                "INSERT INTO auth_users (name, secret, admin, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO NOTHING",
            )?
            .execute(params![u.name, u.secret, u.admin, created_by, now()])?;
        Ok(n == 1)
    }

    fn set_user_secret(&self, name: &str, secret: &str) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached("UPDATE auth_users SET secret = ?2 WHERE name = ?1")?
            .execute(params![name, secret])?;
        Ok(n == 1)
    }

    fn delete_user(&self, name: &str) -> Result<bool> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM auth_users WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM auth_members WHERE user = ?1", [name])?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn put_member(&self, project: &str, user: &str, role: &str) -> Result<Option<String>> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let before: Option<String> = tx
            .query_row(
                "SELECT role FROM auth_members WHERE project = ?1 AND user = ?2",
                [project, user],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO auth_members (project, user, role) VALUES (?1, ?2, ?3)
             ON CONFLICT(project, user) DO UPDATE SET role = excluded.role",
            [project, user, role],
        )?;
        tx.commit()?;
        Ok(before)
    }

    fn delete_member(&self, project: &str, user: &str) -> Result<bool> {
        let n = self.writer().execute(
            "DELETE FROM auth_members WHERE project = ?1 AND user = ?2",
            [project, user],
        )?;
        Ok(n == 1)
    }

    fn create_robot(&self, r: &StoredRobot) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached(
                "INSERT INTO auth_robots (name, secret, permissions, expires_at, disabled,
                    description, secret_set_at, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(name) DO NOTHING",
            )?
            .execute(params![
                r.name,
                r.secret,
                r.permissions,
                r.expires_at.map(|t| t as i64),
                r.disabled,
                r.description,
                r.secret_set_at as i64,
                r.created_by,
                r.created_at as i64
            ])?;
        Ok(n == 1)
    }

    fn set_robot_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached("UPDATE auth_robots SET disabled = ?2 WHERE name = ?1")?
            .execute(params![name, disabled])?;
        Ok(n == 1)
    }

    fn rotate_robot(&self, name: &str, secret: &str, expires_at: Option<u64>) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached(
                "UPDATE auth_robots SET secret = ?2, secret_set_at = ?3,
                    expires_at = COALESCE(?4, expires_at) WHERE name = ?1",
            )?
            .execute(params![name, secret, now(), expires_at.map(|t| t as i64)])?;
        Ok(n == 1)
    }

    fn delete_robot(&self, name: &str) -> Result<bool> {
        let n = self
            .writer()
            .execute("DELETE FROM auth_robots WHERE name = ?1", [name])?;
        Ok(n == 1)
    }

    fn drop_shadowed(
        &self,
        projects: &[String],
        users: &[String],
        robots: &[String],
    ) -> Result<Vec<String>> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let mut dropped = Vec::new();
        for (table, names) in [
            ("auth_projects", projects),
            ("auth_users", users),
            ("auth_robots", robots),
        ] {
            for n in names {
                if tx.execute(&format!("DELETE FROM {table} WHERE name = ?1"), [n])? == 1 {
                    dropped.push(n.clone());
                }
            }
        }
        tx.commit()?;
        Ok(dropped)
    }
}
