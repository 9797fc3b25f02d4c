//! A fake git forge for pull-request tests: no Forgejo, Gitea or GitHub
//! server can run here, so this serves the documented pull-request
//! endpoints of both APIs in front of a real bare repository — Gitea/
//! Forgejo `/api/v1/repos/{owner}/{repo}/pulls` (list, create, edit → 201,
//! duplicate → 409) and `/issues/{n}/comments`; GitHub
//! `/repos/{owner}/{repo}/pulls` (edit → 200, duplicate → 422 "A pull
//! request already exists") — and merging, as a person pressing the
//! button would (Gitea/Forgejo `POST …/pulls/{n}/merge`, GitHub `PUT
//! …/pulls/{n}/merge`: a merge commit on the base branch of the bare
//! repository), with token checks, the head branch checked against the
//! bare repository, and injectable failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Which API the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Gitea / Forgejo `/api/v1`.
    Gitea,
    /// GitHub `/repos`.
    GitHub,
}

/// A pull request as the fake stores it.
#[derive(Debug, Clone)]
pub struct Pr {
    /// Number.
    pub number: u64,
    /// Head branch.
    pub head: String,
    /// Base branch.
    pub base: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// "open" or "closed".
    pub state: String,
    /// Closed by a merge.
    pub merged: bool,
    /// The repository the head branch is in (`owner/name`; a fork's differs).
    pub head_repo: String,
    /// Comments, in order.
    pub comments: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    prs: Vec<Pr>,
    /// Answer the next request with this status.
    fail_next: Option<u16>,
    /// Answer every request with 503.
    down: bool,
    /// On the next create, pretend another client created it first.
    race_next_create: bool,
    /// Every request, "METHOD path".
    log: Vec<String>,
}

/// The running fake.
#[derive(Debug)]
pub struct FakeForge {
    /// Web root (Gitea) or API root (GitHub) to give the client.
    pub url: String,
    state: Arc<Mutex<State>>,
}

const OWNER: &str = "home";
const REPO: &str = "gitops";

impl FakeForge {
    /// Start a fake for repository `home/gitops` backed by `bare`,
    /// accepting `token`.
    pub fn start(flavor: Flavor, bare: PathBuf, token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let token = token.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                let token = token.clone();
                let bare = bare.clone();
                std::thread::spawn(move || serve(conn, flavor, &bare, &token, &st));
            }
        });
        Self { url, state }
    }

    /// The repository as the client names it.
    pub fn repo(&self) -> String {
        format!("{OWNER}/{REPO}")
    }

    /// All pull requests.
    pub fn prs(&self) -> Vec<Pr> {
        self.state.lock().unwrap().prs.clone()
    }

    /// Open pull requests.
    pub fn open(&self) -> Vec<Pr> {
        self.prs()
            .into_iter()
            .filter(|p| p.state == "open")
            .collect()
    }

    /// Add a pull request as if a user had opened it.
    pub fn add(&self, head: &str, body: &str) -> u64 {
        let mut s = self.state.lock().unwrap();
        let number = s.prs.len() as u64 + 1;
        s.prs.push(Pr {
            number,
            head: head.into(),
            base: "main".into(),
            title: "manual".into(),
            body: body.into(),
            state: "open".into(),
            merged: false,
            head_repo: format!("{OWNER}/{REPO}"),
            comments: vec![],
        });
        number
    }

    /// Add a pull request from a fork whose branch has `head`'s name.
    pub fn add_from_fork(&self, head: &str) -> u64 {
        let n = self.add(head, "from a fork");
        self.state.lock().unwrap().prs[n as usize - 1].head_repo = "someone/gitops".into();
        n
    }

    /// Answer the next request with `status`.
    pub fn fail_next(&self, status: u16) {
        self.state.lock().unwrap().fail_next = Some(status);
    }

    /// Take the forge down (every request 503) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// On the next create, another client "wins the race".
    pub fn race_next_create(&self) {
        self.state.lock().unwrap().race_next_create = true;
    }

    /// Requests seen, "METHOD path".
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn pr_json(p: &Pr, url: &str) -> Value {
    json!({
        "number": p.number, "title": p.title, "body": p.body, "state": p.state, "merged": p.merged,
        "html_url": format!("{url}/{OWNER}/{REPO}/pulls/{}", p.number),
        "head": {"ref": p.head, "label": format!("{OWNER}:{}", p.head), "repo": {"full_name": p.head_repo}},
        "base": {"ref": p.base},
    })
}

fn respond(mut conn: TcpStream, status: u16, body: &Value) {
    let text = body.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn serve(conn: TcpStream, flavor: Flavor, bare: &PathBuf, token: &str, st: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut len = 0;
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().unwrap_or(0),
            "authorization" => auth = v.trim().to_owned(),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut s = st.lock().unwrap();
    s.log.push(format!("{method} {path}"));
    if s.down {
        return respond(conn, 503, &json!({"message": "down for maintenance"}));
    }
    if let Some(code) = s.fail_next.take() {
        return respond(conn, code, &json!({"message": "injected failure"}));
    }
    let want_auth = match flavor {
        Flavor::Gitea => format!("token {token}"),
        Flavor::GitHub => format!("Bearer {token}"),
    };
    if auth != want_auth {
        return respond(conn, 401, &json!({"message": "Bad credentials"}));
    }
    let prefix = match flavor {
        Flavor::Gitea => format!("/api/v1/repos/{OWNER}/{REPO}"),
        Flavor::GitHub => format!("/repos/{OWNER}/{REPO}"),
    };
    let Some(rest) = path.strip_prefix(&prefix) else {
        return respond(conn, 404, &json!({"message": "Not Found"}));
    };
    let url = "http://forge.invalid";
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["pulls"]) => {
            let q = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(str::to_owned)
            };
            let per = q(if flavor == Flavor::GitHub {
                "per_page"
            } else {
                "limit"
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(30usize);
            let page: usize = q("page").and_then(|v| v.parse().ok()).unwrap_or(1);
            let state = q("state").unwrap_or_else(|| "open".into());
            let list: Vec<Value> = s
                .prs
                .iter()
                .filter(|p| state == "all" || p.state == state)
                .skip((page - 1) * per)
                .take(per)
                .map(|p| pr_json(p, url))
                .collect();
            respond(conn, 200, &Value::Array(list))
        }
        ("POST", ["pulls"]) => {
            let head = body["head"].as_str().unwrap_or_default().to_owned();
            let base = body["base"].as_str().unwrap_or_default().to_owned();
            let exists = Command::new("git")
                .arg("--git-dir")
                .arg(bare)
                .args([
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("refs/heads/{head}"),
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if !exists {
                return respond(conn, 404, &json!({"message": "head branch does not exist"}));
            }
            if std::mem::take(&mut s.race_next_create) {
                let number = s.prs.len() as u64 + 1;
                s.prs.push(Pr {
                    number,
                    head: head.clone(),
                    base: base.clone(),
                    title: "raced".into(),
                    body: String::new(),
                    state: "open".into(),
                    merged: false,
                    head_repo: format!("{OWNER}/{REPO}"),
                    comments: vec![],
                });
            }
            // A fork's branch of the same name is another head.
            let own = format!("{OWNER}/{REPO}");
            if s.prs.iter().any(|p| {
                p.state == "open" && p.head == head && p.base == base && p.head_repo == own
            }) {
                return match flavor {
                    Flavor::Gitea => respond(
                        conn,
                        409,
                        &json!({"message": "pull request already exists for these targets"}),
                    ),
                    Flavor::GitHub => respond(
                        conn,
                        422,
                        &json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {OWNER}:{head}.")}]}),
                    ),
                };
            }
            let number = s.prs.len() as u64 + 1;
            let pr = Pr {
                number,
                head,
                base,
                title: body["title"].as_str().unwrap_or_default().into(),
                body: body["body"].as_str().unwrap_or_default().into(),
                state: "open".into(),
                merged: false,
                head_repo: format!("{OWNER}/{REPO}"),
                comments: vec![],
            };
            let j = pr_json(&pr, url);
            s.prs.push(pr);
            respond(conn, 201, &j)
        }
        ("PATCH", ["pulls", n]) => {
            let Some(p) = s.prs.iter_mut().find(|p| p.number.to_string() == *n) else {
                return respond(conn, 404, &json!({"message": "Not Found"}));
            };
            if let Some(t) = body["title"].as_str() {
                p.title = t.into();
            }
            if let Some(b) = body["body"].as_str() {
                p.body = b.into();
            }
            if let Some(st) = body["state"].as_str() {
                p.state = st.into();
            }
            let j = pr_json(p, url);
            respond(conn, if flavor == Flavor::Gitea { 201 } else { 200 }, &j)
        }
        ("POST", ["pulls", n, "merge"]) | ("PUT", ["pulls", n, "merge"])
            if (method == "POST") == (flavor == Flavor::Gitea) =>
        {
            let Some(p) = s.prs.iter_mut().find(|p| p.number.to_string() == *n) else {
                return respond(conn, 404, &json!({"message": "Not Found"}));
            };
            if p.state != "open" {
                return respond(
                    conn,
                    405,
                    &json!({"message": "Pull Request is not mergeable"}),
                );
            }
            let sha = match merge(bare, &p.base, &p.head, p.number) {
                Ok(sha) => sha,
                Err(e) => return respond(conn, 409, &json!({"message": e})),
            };
            p.state = "closed".into();
            p.merged = true;
            match flavor {
                // Gitea answers an empty 200.
                Flavor::Gitea => respond(conn, 200, &Value::Null),
                Flavor::GitHub => respond(
                    conn,
                    200,
                    &json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"}),
                ),
            }
        }
        ("POST", ["issues", n, "comments"]) => {
            let Some(p) = s.prs.iter_mut().find(|p| p.number.to_string() == *n) else {
                return respond(conn, 404, &json!({"message": "Not Found"}));
            };
            p.comments
                .push(body["body"].as_str().unwrap_or_default().into());
            respond(
                conn,
                201,
                &json!({"id": p.comments.len(), "body": body["body"]}),
            )
        }
        _ => respond(conn, 404, &json!({"message": "Not Found"})),
    }
}

/// Merge `head` into `base` in the bare repository with a merge commit,
/// as the forge's button does; the new base commit, or why not.
fn merge(bare: &std::path::Path, base: &str, head: &str, number: u64) -> Result<String, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let git = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(work.path())
            .args([
                "-c",
                "user.name=Forge",
                "-c",
                "user.email=forge@forge.invalid",
            ])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    git(&["init", "-q"])?;
    git(&[
        "fetch",
        "-q",
        &bare.display().to_string(),
        &format!("{base}:{base}"),
        &format!("{head}:pr"),
    ])?;
    git(&["checkout", "-q", base])?;
    git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        &format!("Merge pull request #{number} from {head}"),
        "pr",
    ])?;
    git(&[
        "push",
        "-q",
        &bare.display().to_string(),
        &format!("{base}:{base}"),
    ])?;
    git(&["rev-parse", "HEAD"])
}
