//! Accounts made through the admin API ([`Accounts`]) on PostgreSQL: the
//! same rows and rules as SQLite's, each change one transaction.

use super::client::Statements;
use super::{Postgres, bump};
use crate::metadata::Versioned;
use crate::metadata::audit::like_escape;
use crate::metadata::{Accounts, AuthRows, Result, StoredProject, StoredRobot, StoredUser, now};

impl Accounts for Postgres {
    fn auth_rows(&self) -> Result<AuthRows> {
        // One snapshot of all four tables.
        self.write(|tx| {
            let projects = tx
                .query(
                    "SELECT name, public, created_by FROM auth_projects ORDER BY name",
                    &[],
                )?
                .iter()
                .map(|r| StoredProject {
                    name: r.get(0),
                    public: r.get(1),
                    created_by: r.get(2),
                })
                .collect();
            let users = tx
                .query(
                    "SELECT name, secret, admin FROM auth_users ORDER BY name",
                    &[],
                )?
                .iter()
                .map(|r| StoredUser {
                    name: r.get(0),
                    secret: r.get(1),
                    admin: r.get(2),
                })
                .collect();
            let members = tx
                .query(
                    "SELECT project, username, role FROM auth_members ORDER BY project, username",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let robots = tx
                .query(
                    "SELECT name, secret, permissions, expires_at, disabled, description,
                            secret_set_at, created_by, created_at
                     FROM auth_robots ORDER BY name",
                    &[],
                )?
                .iter()
                .map(|r| StoredRobot {
                    name: r.get(0),
                    secret: r.get(1),
                    permissions: r.get(2),
                    expires_at: r.get::<_, Option<i64>>(3).map(|t| t as u64),
                    disabled: r.get(4),
                    description: r.get(5),
                    secret_set_at: r.get::<_, i64>(6) as u64,
                    created_by: r.get(7),
                    created_at: r.get::<_, i64>(8) as u64,
                })
                .collect();
            Ok(AuthRows {
                projects,
                users,
                members,
                robots,
            })
        })
    }

    fn create_project(&self, p: &StoredProject) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            Ok(tx.execute(
                "INSERT INTO auth_projects (name, public, created_by, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                &[&p.name, &p.public, &p.created_by, &now()],
            )? == 1)
        })
    }

    fn set_project_public(&self, name: &str, public: bool) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            Ok(tx.execute(
                "UPDATE auth_projects SET public = $2 WHERE name = $1",
                &[&name, &public],
            )? == 1)
        })
    }

    fn delete_project(&self, name: &str) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            let n = tx.execute("DELETE FROM auth_projects WHERE name = $1", &[&name])?;
            tx.execute("DELETE FROM auth_members WHERE project = $1", &[&name])?;
            tx.execute(
                "DELETE FROM auth_robots WHERE name LIKE $1 ESCAPE '\\'",
                &[&format!("robot${}+%", like_escape(name))],
            )?;
            Ok(n == 1)
        })
    }

    fn create_user(&self, u: &StoredUser, created_by: &str) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            Ok(tx.execute(
                "INSERT INTO auth_users (name, secret, admin, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                &[&u.name, &u.secret, &u.admin, &created_by, &now()],
            )? == 1)
        })
    }

    fn set_user_secret(&self, name: &str, secret: &str) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            Ok(tx.execute(
                "UPDATE auth_users SET secret = $2 WHERE name = $1",
                &[&name, &secret],
            )? == 1)
        })
    }

    fn delete_user(&self, name: &str) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            let n = tx.execute("DELETE FROM auth_users WHERE name = $1", &[&name])?;
            tx.execute("DELETE FROM auth_members WHERE username = $1", &[&name])?;
            Ok(n == 1)
        })
    }

    fn put_member(&self, project: &str, user: &str, role: &str) -> Result<Option<String>> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            let before = tx
                .query_opt(
                    "SELECT role FROM auth_members WHERE project = $1 AND username = $2",
                    &[&project, &user],
                )?
                .map(|r| r.get(0));
            tx.execute(
                "INSERT INTO auth_members (project, username, role) VALUES ($1, $2, $3)
                 ON CONFLICT (project, username) DO UPDATE SET role = EXCLUDED.role",
                &[&project, &user, &role],
            )?;
            Ok(before)
        })
    }

    fn delete_member(&self, project: &str, user: &str) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            Ok(tx.execute(
                "DELETE FROM auth_members WHERE project = $1 AND username = $2",
                &[&project, &user],
            )? == 1)
        })
    }

    fn create_robot(&self, r: &StoredRobot) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            Ok(tx.execute(
                "INSERT INTO auth_robots (name, secret, permissions, expires_at, disabled,
                    description, secret_set_at, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING",
                &[
                    &r.name,
                    &r.secret,
                    &r.permissions,
                    &r.expires_at.map(|t| t as i64),
                    &r.disabled,
                    &r.description,
                    &(r.secret_set_at as i64),
                    &r.created_by,
                    &(r.created_at as i64),
                ],
            )? == 1)
        })
    }

    fn set_robot_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            Ok(tx.execute(
                "UPDATE auth_robots SET disabled = $2 WHERE name = $1",
                &[&name, &disabled],
            )? == 1)
        })
    }

    fn rotate_robot(&self, name: &str, secret: &str, expires_at: Option<u64>) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            Ok(tx.execute(
                "UPDATE auth_robots SET secret = $2, secret_set_at = $3,
                    expires_at = COALESCE($4, expires_at) WHERE name = $1",
                &[&name, &secret, &now(), &expires_at.map(|t| t as i64)],
            )? == 1)
        })
    }

    fn delete_robot(&self, name: &str) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            Ok(tx.execute("DELETE FROM auth_robots WHERE name = $1", &[&name])? == 1)
        })
    }

    fn drop_shadowed(
        &self,
        projects: &[String],
        users: &[String],
        robots: &[String],
    ) -> Result<Vec<String>> {
        self.write(|tx| {
            bump(tx, Versioned::Accounts)?;
            let mut dropped = Vec::new();
            for (table, names) in [
                ("auth_projects", projects),
                ("auth_users", users),
                ("auth_robots", robots),
            ] {
                for n in names {
                    if tx.execute(&format!("DELETE FROM {table} WHERE name = $1"), &[n])? == 1 {
                        dropped.push(n.clone());
                    }
                }
            }
            Ok(dropped)
        })
    }
}
