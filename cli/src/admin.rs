//! `berth admin`: the registry's admin API (`/api/v1/`) from the command
//! line — projects, members, users, robots and the audit log. Each
//! subcommand is one request; the answer is printed as a table (or JSON
//! with `--json`), and a refusal is one line with the server's reason.
//! Credentials come from `--username` with `BERTH_PASSWORD` or
//! `--password-file`, never from a flag's value, so they stay out of shell
//! history and `ps`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use berth_oci::client::JsonClient;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The registry's base URL.
    #[arg(
        long,
        global = true,
        env = "BERTH_REGISTRY",
        default_value = "http://127.0.0.1:5000"
    )]
    registry: String,
    /// Your user name.
    #[arg(long, short, global = true, env = "BERTH_USERNAME")]
    username: Option<String>,
    /// A file holding your password (else $BERTH_PASSWORD).
    #[arg(long, global = true)]
    password_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust (a registry with a private CA).
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Who the credentials are, and your projects.
    Whoami,
    /// Projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Project members.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Users (system admins only).
    #[command(subcommand)]
    User(UserCommand),
    /// Robot accounts.
    #[command(subcommand)]
    Robot(RobotCommand),
    /// The audit log, newest first.
    Audit(AuditArgs),
    /// A project's policy: immutable tags, retention rules, quota.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Apply the retention rules now (a system admin for every project, a
    /// project admin with --project).
    Retention {
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// Only list what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Collect garbage now: untagged manifests past their age (if
    /// `[gc] untagged_after_hours` is set), unused links, and blobs nothing
    /// references that are older than the grace window (system admins; on a
    /// registry without `[auth]`, anyone, and no credentials are needed).
    Gc {
        /// Only list what would go, and how many bytes.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy a registry's metadata from SQLite to PostgreSQL, to run
    /// several replicas ([metadata] postgres). Stop the registry first;
    /// the target database must hold no registry yet. Local: no
    /// credentials, no server.
    MigrateMetadata {
        /// The registry's data directory (or its metadata.sqlite).
        #[arg(long)]
        from: PathBuf,
        /// postgres://user@host[:port]/database
        #[arg(long)]
        to: String,
        /// A file holding the database password.
        #[arg(long)]
        to_password_file: Option<PathBuf>,
    },
    /// Webhook targets and their recent deliveries (system admins).
    Webhooks {
        /// Only this target's deliveries.
        #[arg(long)]
        target: Option<String>,
        /// At most this many deliveries.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Show the policy, the quota and the project's usage.
    Show {
        /// The project.
        project: String,
    },
    /// Replace the policy with the one in FILE: the keys of a
    /// `[[policies]]` entry (immutable_tags, retention, remove_untagged,
    /// quota_mib) as TOML, or the same as JSON.
    Set {
        /// The project.
        project: String,
        /// The policy file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Forget the stored policy.
    Delete {
        /// The project.
        project: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// List the projects you can see.
    List,
    /// Create a project (system admins).
    Create {
        /// Its name: the first component of its repositories.
        name: String,
        /// Anyone may pull.
        #[arg(long)]
        public: bool,
    },
    /// Make a project public or private.
    Set {
        /// The project.
        name: String,
        /// Anyone may pull.
        #[arg(long, conflicts_with = "private", required_unless_present = "private")]
        public: bool,
        /// Only members and robots may pull.
        #[arg(long)]
        private: bool,
    },
    /// Delete a project with its members and robots (not its images).
    Delete {
        /// The project.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// Give a user a role in a project: guest, developer, maintainer or
    /// admin.
    Set {
        /// The project.
        project: String,
        /// The user.
        user: String,
        /// guest, developer, maintainer or admin.
        role: String,
    },
    /// Remove a user from a project.
    Remove {
        /// The project.
        project: String,
        /// The user.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// List users.
    List,
    /// Create a user; the password is read from stdin (one line).
    Create {
        /// Login name.
        name: String,
        /// A system admin.
        #[arg(long)]
        admin: bool,
    },
    /// Set a user's password (yours, or anyone's as a system admin), read
    /// from stdin.
    Passwd {
        /// Login name.
        name: String,
    },
    /// Delete a user.
    Delete {
        /// Login name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum RobotCommand {
    /// List the robots you manage.
    List {
        /// Only this project's.
        #[arg(long)]
        project: Option<String>,
    },
    /// Show one robot.
    Show {
        /// `project/name`, `robot$project+name`, or a system robot's name.
        robot: String,
    },
    /// Create a robot and print its secret (shown once).
    Create(RobotCreate),
    /// Switch a robot off (its tokens stop working at once).
    Disable {
        /// The robot.
        robot: String,
    },
    /// Switch a robot back on.
    Enable {
        /// The robot.
        robot: String,
    },
    /// Give a robot a new secret (printed once); older tokens stop working.
    Rotate {
        /// The robot.
        robot: String,
        /// A new lifetime: `90d`, or `never`.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Delete a robot.
    Delete {
        /// The robot.
        robot: String,
    },
}

#[derive(Debug, Args)]
struct RobotCreate {
    /// `project/name` (a project robot: `robot$project+name`), or a name
    /// with `--system` (`robot$name`, system admins only).
    robot: String,
    /// A robot spanning projects.
    #[arg(long)]
    system: bool,
    /// Repository patterns (`team/app`, `team/*`, `team/**`); default: the
    /// whole project (`<project>/**`).
    #[arg(long = "repository", value_name = "PATTERN")]
    repositories: Vec<String>,
    /// Allow pull (always on).
    #[arg(long)]
    pull: bool,
    /// Allow push.
    #[arg(long)]
    push: bool,
    /// Allow deleting manifests and tags.
    #[arg(long)]
    delete: bool,
    /// Lifetime: `30d` (default), `90d`, or `never`.
    #[arg(long)]
    expires: Option<String>,
    /// What it is for.
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// Only this actor.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action (`robot.` for every robot action).
    #[arg(long)]
    action: Option<String>,
    /// Only this project.
    #[arg(long)]
    project: Option<String>,
    /// Only `denied` (or `ok`).
    #[arg(long)]
    outcome: Option<String>,
    /// Only the last `1h`, `7d`, …
    #[arg(long)]
    since: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// `90d` → 90; `never` → -1.
fn days(s: &str) -> Result<i64> {
    if s == "never" {
        return Ok(-1);
    }
    s.strip_suffix('d')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .with_context(|| format!("--expires {s:?}: write a number of days like 90d, or never"))
}

/// `1h`, `30m`, `7d` → seconds.
fn duration(s: &str) -> Result<u64> {
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n
        .parse()
        .ok()
        .with_context(|| format!("--since {s:?}: write 30m, 1h or 7d"))?;
    Ok(n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--since {s:?}: write 30m, 1h or 7d"),
    })
}

/// `team/ci` → `robot$team+ci`; names already spelt out stay.
fn robot_name(s: &str, system: bool) -> Result<String> {
    if s.starts_with("robot$") {
        return Ok(s.to_owned());
    }
    match (s.split_once('/'), system) {
        (Some((p, n)), false) if !p.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok(format!("robot${p}+{n}"))
        }
        (None, true) => Ok(format!("robot${s}")),
        (None, false) => {
            bail!("{s:?}: name a project robot as <project>/<name>, or pass --system")
        }
        _ => bail!("{s:?} is not <project>/<name>"),
    }
}

/// Percent-encode a path segment (robot names hold `$` and `+`).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn read_stdin_line(what: &str) -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("reading {what} from stdin"))?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        bail!("no {what} on stdin: pipe it in, e.g. `cat pw | berth admin user create …`");
    }
    Ok(line)
}

struct Api {
    client: JsonClient,
    base: String,
    auth: String,
}

impl Api {
    fn headers(&self) -> Vec<(&str, &str)> {
        if self.auth.is_empty() {
            Vec::new()
        } else {
            vec![("Authorization", self.auth.as_str())]
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/api/v1/{path}", self.base);
        let answer = self
            .client
            .call(method, &url, &self.headers(), body.as_ref());
        self.answer(&url, answer)
    }

    /// A request whose answer streams as JSON lines, each given to
    /// `on_line`.
    fn stream(&self, method: &str, path: &str, on_line: &mut dyn FnMut(Value)) -> Result<()> {
        let url = format!("{}/api/v1/{path}", self.base);
        let answer = self
            .client
            .call_lines(method, &url, &self.headers(), on_line);
        self.answer(&url, answer).map(drop)
    }

    fn answer(
        &self,
        url: &str,
        answer: std::result::Result<(u16, Value), berth_oci::client::ClientError>,
    ) -> Result<Value> {
        let (status, answer) = answer.map_err(|e| {
                let text = e.to_string();
                let hint = if text.contains("certificate") {
                    "the registry's TLS certificate is not trusted: pass --ca-cert FILE with the CA that signed it (a self-signed certificate must be a leaf, CA:FALSE; see docs/auth.md)".to_owned()
                } else {
                    format!(
                        "is the registry running at {}? set --registry or BERTH_REGISTRY",
                        self.base
                    )
                };
                anyhow::anyhow!("{text} ({hint})")
            })?;
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        let message = answer["errors"][0]["message"]
            .as_str()
            .or(answer.as_str())
            .map(|m| m.trim().to_owned())
            .unwrap_or_else(|| answer.to_string());
        match status {
            401 if self.auth.is_empty() => bail!(
                "the registry wants credentials: pass --username (or set BERTH_USERNAME) and BERTH_PASSWORD"
            ),
            401 => bail!(
                "the registry refused the credentials: {message} (check --username and BERTH_PASSWORD)"
            ),
            404 if answer["errors"][0]["code"] == "UNSUPPORTED" => bail!("{message}"),
            404 if !answer["errors"].is_array() => bail!(
                "{url} is not berth's admin API (HTTP 404): is --registry the berth registry?"
            ),
            _ => bail!("{message} (HTTP {status})"),
        }
    }
}

fn print(json_out: bool, v: &Value, table: impl FnOnce(&Value)) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        table(v);
    }
}

fn print_secret(v: &Value) {
    let name = v["name"].as_str().unwrap_or_default();
    let secret = v["secret"].as_str().unwrap_or_default();
    println!("{name}");
    println!("{secret}");
    let expires = v["expires_at"].as_u64().map_or_else(
        || "never".to_owned(),
        |t| format!("at {}", berth_registry::auth::gate::rfc3339(t)),
    );
    eprintln!(
        "berth: the robot's secret (second line) is shown once; it expires {expires}.\n\
         berth: use it as the password with the robot's name, e.g. `podman login -u '{name}' --password-stdin`."
    );
}

pub(crate) fn run(args: AdminArgs) -> Result<()> {
    if let AdminCommand::MigrateMetadata {
        from,
        to,
        to_password_file,
    } = &args.command
    {
        return migrate_metadata(from, to, to_password_file.as_deref());
    }
    // `gc` works without credentials on a registry without `[auth]`.
    let anonymous_ok = matches!(args.command, AdminCommand::Gc { .. });
    let auth = match (&args.username, anonymous_ok) {
        (None, true) => String::new(),
        (username, _) => {
            let username = username
                .clone()
                .context("who are you? pass --username (or set BERTH_USERNAME)")?;
            let password = match &args.password_file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read --password-file {}", f.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                None => std::env::var("BERTH_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty())
                    .context("no password: set BERTH_PASSWORD or pass --password-file")?,
            };
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )
        }
    };
    // A collection answers when it is done.
    let timeout = Duration::from_secs(if anonymous_ok { 6 * 3600 } else { 30 });
    let client = match &args.ca_cert {
        Some(f) => {
            let pem = std::fs::read(f)
                .with_context(|| format!("cannot read --ca-cert {}", f.display()))?;
            JsonClient::with_ca(timeout, &pem).with_context(|| format!("in {}", f.display()))?
        }
        None => JsonClient::new(timeout),
    };
    let base = args.registry.trim_end_matches('/').to_owned();
    if !base.starts_with("http://") && !base.starts_with("https://") {
        bail!("--registry {base:?} needs a scheme: https://{base} (or http:// on loopback)");
    }
    let api = Api { client, base, auth };
    let j = args.json;
    match args.command {
        AdminCommand::MigrateMetadata { .. } => unreachable!("handled above, without a server"),
        AdminCommand::Whoami => {
            let v = api.call("GET", "whoami", None)?;
            print(j, &v, |v| {
                let admin = if v["admin"] == true {
                    " (system admin)"
                } else {
                    ""
                };
                println!(
                    "{} {}{admin}",
                    v["kind"].as_str().unwrap_or(""),
                    v["name"].as_str().unwrap_or("")
                );
                for p in v["projects"].as_array().into_iter().flatten() {
                    println!(
                        "  {}\t{}",
                        p["name"].as_str().unwrap_or(""),
                        p["role"].as_str().unwrap_or("-")
                    );
                }
            });
        }
        AdminCommand::Project(c) => match c {
            ProjectCommand::List => {
                let v = api.call("GET", "projects", None)?;
                print(j, &v, |v| {
                    println!("PROJECT\tVISIBILITY\tSOURCE\tMEMBERS");
                    for p in v["projects"].as_array().into_iter().flatten() {
                        let members: Vec<String> = p["members"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(u, r)| format!("{u}={}", r.as_str().unwrap_or("")))
                            .collect();
                        println!(
                            "{}\t{}\t{}\t{}",
                            p["name"].as_str().unwrap_or(""),
                            if p["public"] == true {
                                "public"
                            } else {
                                "private"
                            },
                            if p["declared"] == true {
                                "config"
                            } else {
                                "api"
                            },
                            members.join(",")
                        );
                    }
                });
            }
            ProjectCommand::Create { name, public } => {
                let v = api.call(
                    "POST",
                    "projects",
                    Some(json!({"name": name, "public": public})),
                )?;
                print(j, &v, |_| println!("project {name} created"));
            }
            ProjectCommand::Set { name, public, .. } => {
                let v = api.call(
                    "PATCH",
                    &format!("projects/{}", seg(&name)),
                    Some(json!({"public": public})),
                )?;
                print(j, &v, |_| {
                    println!(
                        "project {name} is {}",
                        if public { "public" } else { "private" }
                    );
                });
            }
            ProjectCommand::Delete { name } => {
                api.call("DELETE", &format!("projects/{}", seg(&name)), None)?;
                println!("project {name} deleted (its images stay)");
            }
        },
        AdminCommand::Member(c) => match c {
            MemberCommand::Set {
                project,
                user,
                role,
            } => {
                let v = api.call(
                    "PUT",
                    &format!("projects/{}/members/{}", seg(&project), seg(&user)),
                    Some(json!({"role": role})),
                )?;
                print(j, &v, |_| println!("{user} is {role} in {project}"));
            }
            MemberCommand::Remove { project, user } => {
                api.call(
                    "DELETE",
                    &format!("projects/{}/members/{}", seg(&project), seg(&user)),
                    None,
                )?;
                println!("{user} removed from {project}");
            }
        },
        AdminCommand::User(c) => match c {
            UserCommand::List => {
                let v = api.call("GET", "users", None)?;
                print(j, &v, |v| {
                    println!("USER\tADMIN\tSOURCE");
                    for u in v["users"].as_array().into_iter().flatten() {
                        println!(
                            "{}\t{}\t{}",
                            u["name"].as_str().unwrap_or(""),
                            u["admin"],
                            if u["declared"] == true {
                                "config"
                            } else {
                                "api"
                            }
                        );
                    }
                });
            }
            UserCommand::Create { name, admin } => {
                let password = read_stdin_line("the new user's password")?;
                let v = api.call(
                    "POST",
                    "users",
                    Some(json!({"name": name, "password": password, "admin": admin})),
                )?;
                print(j, &v, |_| println!("user {name} created"));
            }
            UserCommand::Passwd { name } => {
                let password = read_stdin_line("the new password")?;
                api.call(
                    "PUT",
                    &format!("users/{}/password", seg(&name)),
                    Some(json!({"password": password})),
                )?;
                println!("password of {name} changed");
            }
            UserCommand::Delete { name } => {
                api.call("DELETE", &format!("users/{}", seg(&name)), None)?;
                println!("user {name} deleted");
            }
        },
        AdminCommand::Robot(c) => match c {
            RobotCommand::List { project } => {
                let q = project
                    .map(|p| format!("?project={}", seg(&p)))
                    .unwrap_or_default();
                let v = api.call("GET", &format!("robots{q}"), None)?;
                print(j, &v, |v| {
                    println!("ROBOT\tSTATE\tEXPIRES\tPERMISSIONS");
                    for r in v["robots"].as_array().into_iter().flatten() {
                        println!("{}", robot_line(r));
                    }
                });
            }
            RobotCommand::Show { robot } => {
                let name = robot_name(&robot, !robot.contains('/'))?;
                let v = api.call("GET", &format!("robots/{}", seg(&name)), None)?;
                print(j, &v, |v| println!("{}", robot_line(v)));
            }
            RobotCommand::Create(c) => {
                let name = robot_name(&c.robot, c.system)?;
                let repositories = if c.repositories.is_empty() {
                    match c.robot.split_once('/') {
                        Some((p, _)) if !c.system => vec![format!("{p}/**")],
                        _ => bail!("a system robot needs --repository patterns (e.g. '*/**')"),
                    }
                } else {
                    c.repositories
                };
                // Pull is always granted (`--pull` only says so).
                let mut actions = vec!["pull"];
                if c.push {
                    actions.push("push");
                }
                if c.delete {
                    actions.push("delete");
                }
                let mut body = json!({
                    "name": name,
                    "permissions": [{"repositories": repositories, "actions": actions}],
                    "description": c.description,
                });
                if let Some(e) = &c.expires {
                    body["expires_in_days"] = days(e)?.into();
                }
                let v = api.call("POST", "robots", Some(body))?;
                print(j, &v, print_secret);
            }
            RobotCommand::Disable { robot } => switch(&api, j, &robot, true)?,
            RobotCommand::Enable { robot } => switch(&api, j, &robot, false)?,
            RobotCommand::Rotate { robot, expires } => {
                let name = robot_name(&robot, !robot.contains('/'))?;
                let body = match &expires {
                    Some(e) => json!({"expires_in_days": days(e)?}),
                    None => json!({}),
                };
                let v = api.call("POST", &format!("robots/{}/rotate", seg(&name)), Some(body))?;
                print(j, &v, print_secret);
            }
            RobotCommand::Delete { robot } => {
                let name = robot_name(&robot, !robot.contains('/'))?;
                api.call("DELETE", &format!("robots/{}", seg(&name)), None)?;
                println!("{name} deleted");
            }
        },
        AdminCommand::Gc { dry_run } => gc(&api, j, dry_run)?,
        AdminCommand::Webhooks { target, limit } => {
            let mut q = format!("webhooks?limit={limit}");
            if let Some(t) = &target {
                q.push_str(&format!("&target={}", seg(t)));
            }
            let v = api.call("GET", &q, None)?;
            print(j, &v, |v| {
                for t in v["targets"].as_array().into_iter().flatten() {
                    println!(
                        "target {}\t{}",
                        t["name"].as_str().unwrap_or(""),
                        t["url"].as_str().unwrap_or("")
                    );
                }
                println!("{} not yet delivered", v["backlog"]);
                println!("QUEUED (UTC)\tTARGET\tDELIVERY\tATTEMPTS\tSTATE\tLAST STATUS");
                for d in v["deliveries"].as_array().into_iter().flatten() {
                    let state = if d["delivered_at"].is_u64() {
                        "delivered"
                    } else if d["failed"] == true {
                        "failed"
                    } else {
                        "pending"
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{state}\t{}",
                        berth_registry::auth::gate::rfc3339(d["queued_at"].as_u64().unwrap_or(0)),
                        d["target"].as_str().unwrap_or(""),
                        d["delivery"].as_str().unwrap_or(""),
                        d["attempts"],
                        d["last_status"].as_str().unwrap_or(""),
                    );
                }
            });
        }
        AdminCommand::Policy(p) => policy(&api, j, p)?,
        AdminCommand::Retention { project, dry_run } => {
            let mut q = vec![];
            if let Some(p) = &project {
                q.push(format!("project={}", seg(p)));
            }
            if dry_run {
                q.push("dry_run=true".to_owned());
            }
            let v = api.call("POST", &format!("retention?{}", q.join("&")), None)?;
            print(j, &v, |v| {
                let verb = if dry_run { "would remove" } else { "removed" };
                for t in v["tags"].as_array().into_iter().flatten() {
                    println!("tag\t{}", t.as_str().unwrap_or(""));
                }
                for m in v["manifests"].as_array().into_iter().flatten() {
                    println!("manifest\t{}", m.as_str().unwrap_or(""));
                }
                for t in v["immutable"].as_array().into_iter().flatten() {
                    println!("kept (immutable)\t{}", t.as_str().unwrap_or(""));
                }
                println!(
                    "{verb} {} tags and {} untagged manifests; kept {} tags (berth admin gc frees the bytes)",
                    v["tags"].as_array().map_or(0, Vec::len),
                    v["manifests"].as_array().map_or(0, Vec::len),
                    v["kept"],
                );
            });
        }
        AdminCommand::Audit(a) => {
            let mut q: Vec<String> = vec![format!("limit={}", a.limit)];
            for (k, v) in [
                ("actor", &a.actor),
                ("action", &a.action),
                ("project", &a.project),
                ("outcome", &a.outcome),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", seg(v)));
                }
            }
            if let Some(s) = &a.since {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                q.push(format!("since={}", now.saturating_sub(duration(s)?)));
            }
            let v = api.call("GET", &format!("audit?{}", q.join("&")), None)?;
            print(j, &v, |v| {
                println!("WHEN (UTC)\tACTOR\tCLIENT\tACTION\tTARGET\tOUTCOME\tDETAIL");
                for e in v["events"].as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        berth_registry::auth::gate::rfc3339(e["at"].as_u64().unwrap_or(0)),
                        e["actor"].as_str().unwrap_or(""),
                        e["client"].as_str().unwrap_or(""),
                        e["action"].as_str().unwrap_or(""),
                        e["target"].as_str().unwrap_or(""),
                        e["outcome"].as_str().unwrap_or(""),
                        e["detail"].as_str().unwrap_or(""),
                    );
                }
            });
        }
    }
    Ok(())
}

/// `berth admin policy …`.
fn policy(api: &Api, j: bool, cmd: PolicyCommand) -> Result<()> {
    let show = |v: &Value| {
        let project = v["project"].as_str().unwrap_or_default();
        let origin = if v["declared"] == true {
            " (declared in the configuration)"
        } else {
            ""
        };
        println!("project {project}{origin}");
        match v["quota_bytes"].as_u64() {
            Some(q) => println!(
                "usage {} of a {} quota",
                berth_oci::units::human_bytes(v["usage_bytes"].as_u64().unwrap_or(0)),
                berth_oci::units::human_bytes(q)
            ),
            None => println!(
                "usage {} (no quota)",
                berth_oci::units::human_bytes(v["usage_bytes"].as_u64().unwrap_or(0))
            ),
        }
        if v["policy"].is_null() {
            println!("no policy");
        } else {
            println!(
                "{}",
                serde_json::to_string_pretty(&v["policy"]).unwrap_or_default()
            );
        }
    };
    match cmd {
        PolicyCommand::Show { project } => {
            let v = api.call("GET", &format!("projects/{}/policy", seg(&project)), None)?;
            print(j, &v, show);
        }
        PolicyCommand::Set { project, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read --file {}", file.display()))?;
            let body: Value = if text.trim_start().starts_with('{') {
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not valid JSON", file.display()))?
            } else {
                let t: toml::Value = toml::from_str(&text).with_context(|| {
                    format!(
                        "{} is not valid TOML (the keys of a [[policies]] entry)",
                        file.display()
                    )
                })?;
                serde_json::to_value(t)?
            };
            let v = api.call(
                "PUT",
                &format!("projects/{}/policy", seg(&project)),
                Some(body),
            )?;
            print(j, &v, show);
        }
        PolicyCommand::Delete { project } => {
            api.call(
                "DELETE",
                &format!("projects/{}/policy", seg(&project)),
                None,
            )?;
            println!("the stored policy of {project} is gone");
        }
    }
    Ok(())
}

/// `berth admin gc`: progress to stderr as it comes, then what went (or
/// would go).
fn gc(api: &Api, j: bool, dry_run: bool) -> Result<()> {
    let path = if dry_run { "gc?dry_run=true" } else { "gc" };
    let mut report = None;
    let mut failure = None;
    api.stream("POST", path, &mut |line| {
        if let Some(p) = line["progress"].as_str() {
            eprintln!("berth: {p}");
        } else if let Some(e) = line["error"].as_str() {
            failure = Some(e.to_owned());
        } else if !line["report"].is_null() {
            report = Some(line["report"].clone());
        }
    })?;
    if let Some(e) = failure {
        bail!("garbage collection failed: {e} (nothing half-done stays: run it again)");
    }
    let v = report.context(
        "the registry closed the answer before the report: see its log; running it again is safe",
    )?;
    print(j, &v, |v| {
        let verb = if dry_run { "would remove" } else { "removed" };
        for m in v["manifests"].as_array().into_iter().flatten() {
            println!("manifest\t{}", m.as_str().unwrap_or(""));
        }
        for b in v["blobs"].as_array().into_iter().flatten() {
            println!("blob\t{}", b.as_str().unwrap_or(""));
        }
        println!(
            "{verb} {} untagged manifests, {} links, {} blobs ({}), {} stray files; kept {} blobs; {} ms",
            v["manifests"].as_array().map_or(0, Vec::len),
            v["links"],
            v["blobs"].as_array().map_or(0, Vec::len),
            berth_oci::units::human_bytes(v["bytes"].as_u64().unwrap_or(0)),
            v["orphans"],
            v["blobs_kept"],
            v["millis"],
        );
    });
    Ok(())
}

/// Disable or enable a robot.
fn switch(api: &Api, j: bool, robot: &str, disabled: bool) -> Result<()> {
    let name = robot_name(robot, !robot.contains('/'))?;
    let v = api.call(
        "PATCH",
        &format!("robots/{}", seg(&name)),
        Some(json!({"disabled": disabled})),
    )?;
    print(j, &v, |_| {
        println!("{name} {}", if disabled { "disabled" } else { "enabled" });
    });
    Ok(())
}

fn robot_line(r: &Value) -> String {
    let state = if r["disabled"] == true {
        "disabled"
    } else {
        "active"
    };
    let expires = r["expires_at"]
        .as_u64()
        .map_or_else(|| "never".to_owned(), berth_registry::auth::gate::rfc3339);
    let perms: Vec<String> = r["permissions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let repos: Vec<&str> = p["repositories"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let acts: Vec<&str> = p["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("{}:{}", repos.join(","), acts.join(","))
        })
        .collect();
    format!(
        "{}\t{state}\t{expires}\t{}",
        r["name"].as_str().unwrap_or(""),
        perms.join(" ")
    )
}

/// `berth admin migrate-metadata`.
fn migrate_metadata(from: &Path, to: &str, password_file: Option<&Path>) -> Result<()> {
    use berth_registry::metadata::{Postgres, migrate};
    let file = if from.is_dir() {
        from.join("metadata.sqlite")
    } else {
        from.to_owned()
    };
    if !file.is_file() {
        anyhow::bail!(
            "{} does not exist: give --from the registry's data directory (the one `berth serve --data` used)",
            file.display()
        );
    }
    let password = match password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --to-password-file {}", f.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        None => None,
    };
    let target = Postgres::open_with(to, password.as_deref(), 2).with_context(|| {
        format!(
            "cannot open {} (is PostgreSQL up, and the URL right?)",
            Postgres::describe(to)
        )
    })?;
    let copied = migrate::sqlite_to_postgres(&file, &target).with_context(|| {
        format!(
            "cannot copy {} into {}",
            file.display(),
            Postgres::describe(to)
        )
    })?;
    for (table, n) in &copied {
        println!("{table:<18} {n:>10}");
    }
    println!(
        "copied {} rows into {}; now set [metadata] postgres on every replica",
        copied.iter().map(|(_, n)| n).sum::<u64>(),
        Postgres::describe(to)
    );
    Ok(())
}
