//! Pull requests on Forgejo/Gitea (`/api/v1`) and GitHub (`/repos`): find
//! the open one for a branch, create it or update its title and body, and
//! close the ones a newer bump supersedes, with a comment saying why.
//! Creating a pull request that already exists (409 on Gitea/Forgejo, 422
//! on GitHub: another run won the race) falls back to updating it.

use std::time::Duration;

use crate::BumpError;

/// Which API a forge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    /// Forgejo (Gitea's API).
    Forgejo,
    /// Gitea.
    Gitea,
    /// GitHub or GitHub Enterprise.
    GitHub,
}

impl std::str::FromStr for ForgeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "forgejo" => Ok(Self::Forgejo),
            "gitea" => Ok(Self::Gitea),
            "github" => Ok(Self::GitHub),
            _ => Err(format!("unknown forge {s:?} (forgejo, gitea or github)")),
        }
    }
}

/// An open pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// Its number.
    pub number: u64,
    /// Head branch.
    pub head: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Web address.
    pub url: String,
}

/// A forge's pull-request API for one repository.
#[derive(Debug, Clone)]
pub struct Forge {
    kind: ForgeKind,
    /// API root: `https://forgejo.lan/api/v1` or `https://api.github.com`.
    api: String,
    owner: String,
    repo: String,
    token: String,
    http: std::sync::Arc<berth_oci::client::JsonClient>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// Opened a new pull request.
    Created(u64),
    /// Changed the title or body of the open one.
    Updated(u64),
    /// The open one already said this.
    Unchanged(u64),
}

impl Upsert {
    /// The pull request's number.
    pub fn number(self) -> u64 {
        match self {
            Upsert::Created(n) | Upsert::Updated(n) | Upsert::Unchanged(n) => n,
        }
    }
}

impl Forge {
    /// A client for `owner/repo` on the forge at `url` (the web root; the
    /// API path is added: `/api/v1` for Forgejo/Gitea; for GitHub
    /// `https://github.com` means `https://api.github.com`, anything else
    /// is taken as the API root of GitHub Enterprise or a test server).
    pub fn new(kind: ForgeKind, url: &str, repo: &str, token: String) -> Result<Self, BumpError> {
        let (owner, name) = repo
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| BumpError::Forge {
                message: format!("forge repository {repo:?} is not owner/name"),
            })?;
        let url = url.trim_end_matches('/');
        let api = match kind {
            ForgeKind::GitHub if url == "https://github.com" => "https://api.github.com".to_owned(),
            ForgeKind::GitHub => url.to_owned(),
            _ => format!("{url}/api/v1"),
        };
        let http = std::sync::Arc::new(berth_oci::client::JsonClient::new(Duration::from_secs(60)));
        Ok(Self {
            kind,
            api,
            owner: owner.to_owned(),
            repo: name.to_owned(),
            token,
            http,
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), BumpError> {
        let url = format!("{}/repos/{}/{}{path}", self.api, self.owner, self.repo);
        let (bearer, token) = (
            format!("Bearer {}", self.token),
            format!("token {}", self.token),
        );
        let headers: &[(&str, &str)] = match self.kind {
            ForgeKind::GitHub => &[
                ("Authorization", &bearer),
                ("Accept", "application/vnd.github+json"),
                ("X-GitHub-Api-Version", "2022-11-28"),
            ],
            _ => &[("Authorization", &token), ("Accept", "application/json")],
        };
        self.http
            .call(method, &url, headers, body.as_ref())
            .map_err(|e| BumpError::Forge {
                message: format!("{method} {path}: {e}"),
            })
    }

    fn fail(method: &str, path: &str, status: u16, body: &serde_json::Value) -> BumpError {
        let message = body["message"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_owned);
        let hint = match status {
            401 | 403 => " (check the forge token and its repository permissions)",
            404 => " (check the forge URL and owner/name)",
            _ => "",
        };
        BumpError::Forge {
            message: format!("{method} {path}: HTTP {status}: {message}{hint}"),
        }
    }

    /// A pull request of this repository's own branches (one from a fork
    /// with a branch of the same name is not ours to edit).
    fn parse_pr(&self, v: &serde_json::Value) -> Option<PullRequest> {
        if let Some(full) = v["head"]["repo"]["full_name"].as_str() {
            if !full.eq_ignore_ascii_case(&format!("{}/{}", self.owner, self.repo)) {
                return None;
            }
        }
        Some(PullRequest {
            number: v["number"].as_u64()?,
            head: v["head"]["ref"].as_str()?.to_owned(),
            title: v["title"].as_str().unwrap_or_default().to_owned(),
            body: v["body"].as_str().unwrap_or_default().to_owned(),
            url: v["html_url"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Open pull requests (all pages).
    pub fn open_pulls(&self) -> Result<Vec<PullRequest>, BumpError> {
        let mut out = Vec::new();
        for page in 1..=100 {
            let path = match self.kind {
                ForgeKind::GitHub => format!("/pulls?state=open&per_page=100&page={page}"),
                _ => format!("/pulls?state=open&limit=50&page={page}"),
            };
            let (status, body) = self.call("GET", &path, None)?;
            if status != 200 {
                return Err(Self::fail("GET", &path, status, &body));
            }
            let list = body.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                break;
            }
            out.extend(list.iter().filter_map(|v| self.parse_pr(v)));
        }
        Ok(out)
    }

    /// Open or update the one pull request from `head` into `base`, given
    /// the open pull requests (`open_pulls`, listed once by the caller).
    pub fn upsert(
        &self,
        open: &[PullRequest],
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<Upsert, BumpError> {
        if let Some(pr) = open.iter().find(|p| p.head == head) {
            return self.update(pr, title, body);
        }
        let payload = serde_json::json!({"head": head, "base": base, "title": title, "body": body});
        let (status, resp) = self.call("POST", "/pulls", Some(payload))?;
        match status {
            200 | 201 => {
                resp["number"]
                    .as_u64()
                    .map(Upsert::Created)
                    .ok_or_else(|| BumpError::Forge {
                        message: "the forge created a pull request but did not say its number"
                            .into(),
                    })
            }
            // Someone opened it since we looked: update that one.
            409 | 422 => match self.open_pulls()?.into_iter().find(|p| p.head == head) {
                Some(pr) => self.update(&pr, title, body),
                None => Err(Self::fail("POST", "/pulls", status, &resp)),
            },
            _ => Err(Self::fail("POST", "/pulls", status, &resp)),
        }
    }

    fn update(&self, pr: &PullRequest, title: &str, body: &str) -> Result<Upsert, BumpError> {
        if pr.title == title && pr.body == body {
            return Ok(Upsert::Unchanged(pr.number));
        }
        let path = format!("/pulls/{}", pr.number);
        let (status, resp) = self.call(
            "PATCH",
            &path,
            Some(serde_json::json!({"title": title, "body": body})),
        )?;
        // Gitea and Forgejo answer an edit with 201.
        if status == 200 || status == 201 {
            Ok(Upsert::Updated(pr.number))
        } else {
            Err(Self::fail("PATCH", &path, status, &resp))
        }
    }

    /// Comment on pull request `number`, then close it.
    pub fn close(&self, number: u64, comment: &str) -> Result<(), BumpError> {
        let path = format!("/issues/{number}/comments");
        let (status, resp) =
            self.call("POST", &path, Some(serde_json::json!({"body": comment})))?;
        if status != 201 && status != 200 {
            return Err(Self::fail("POST", &path, status, &resp));
        }
        let path = format!("/pulls/{number}");
        let (status, resp) =
            self.call("PATCH", &path, Some(serde_json::json!({"state": "closed"})))?;
        if status == 200 || status == 201 {
            Ok(())
        } else {
            Err(Self::fail("PATCH", &path, status, &resp))
        }
    }
}
