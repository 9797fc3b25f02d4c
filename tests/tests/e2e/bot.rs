//! `berth bot` end to end: signed push webhooks (docs/webhooks.md, signed
//! here independently of berth with the sha2 crate) and tag polling turned
//! into one pull request per target on the fake forge, against a real bare
//! repository behind `git daemon` and digests in a real `berth serve`;
//! refusals (bad signature, stale timestamp, replay, malformed payload),
//! debouncing, retries through a forge outage and a restart of the bot.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::forge::{FakeForge, Flavor};
use berth_tests::{Server, berth_bin, run_text};

use crate::bump::{push_multiarch, remote_file, remote_with};

/// A running `berth bot`.
pub(crate) struct BotProc {
    child: std::process::Child,
    url: String,
}

impl BotProc {
    pub(crate) fn start(config: &Path) -> Self {
        Self::start_env(config, &[])
    }

    /// [`BotProc::start`] with more environment (`SSL_CERT_FILE` for a
    /// registry with a test CA).
    pub(crate) fn start_env(config: &Path, env: &[(&str, &Path)]) -> Self {
        let mut cmd = Command::new(berth_bin());
        cmd.args(["bot", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, line) = berth_tests::spawn_first_line(&mut cmd);
        assert!(
            line.trim().parse::<std::net::SocketAddr>().is_ok(),
            "berth bot printed {line:?}"
        );
        Self {
            child,
            url: format!("http://{}", line.trim()),
        }
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        berth_tests::http("GET", &format!("{}/status", self.url), &[], b"").json()
    }
}

impl Drop for BotProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// HMAC-SHA256 over `timestamp.body`, as docs/webhooks.md specifies
/// (computed here independently of berth, with the sha2 crate).
fn signature(secret: &[u8], ts: u64, body: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut key = [0u8; 64];
    key[..secret.len()].copy_from_slice(secret);
    let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(format!("{ts}."))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize();
    format!("sha256={}", hex::encode(outer))
}

fn push_event(host: &str, repo: &str, tag: &str, digest: &str, occur_at: u64) -> String {
    let (namespace, name) = repo.split_once('/').unwrap();
    serde_json::json!({
        "type": "PUSH_ARTIFACT", "occur_at": occur_at, "operator": "robot$ci",
        "event_data": {
            "resources": [{"digest": digest, "tag": tag, "resource_url": format!("{host}/{repo}:{tag}")}],
            "repository": {"name": name, "namespace": namespace, "repo_full_name": repo, "repo_type": "private", "date_created": occur_at}
        }
    })
    .to_string()
}

fn deliver(bot: &BotProc, id: &str, ts: u64, sig: &str, body: &str) -> berth_tests::Reply {
    berth_tests::http(
        "POST",
        &format!("{}/webhook", bot.url),
        &[
            ("Content-Type", "application/json"),
            ("X-Berth-Event", "PUSH_ARTIFACT"),
            ("X-Berth-Delivery", id),
            ("X-Berth-Timestamp", &ts.to_string()),
            ("X-Berth-Signature-256", sig),
        ],
        body.as_bytes(),
    )
}

pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Write a bot config in `dir` with webhooks on (secret file `dir/secret`)
/// for the remote `remote`, the fake forge `forge` (as `kind`) and the
/// given debounce and retry; its path.
fn webhook_bot_config(
    dir: &Path,
    remote: &str,
    forge: &FakeForge,
    kind: &str,
    debounce_ms: u64,
    retry_ms: u64,
) -> PathBuf {
    let config = dir.join("bot.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"{d}/state\"\nsecret_file = \"{d}/secret\"\ndebounce_ms = {debounce_ms}\nretry_ms = {retry_ms}\n\n[git]\nremote = \"{remote}\"\n\n[forge]\nkind = \"{kind}\"\nurl = \"{furl}\"\nrepo = \"{frepo}\"\ntoken_file = \"{d}/token\"\n",
            d = dir.display(),
            furl = forge.url,
            frepo = forge.repo()
        ),
    )
    .unwrap();
    config
}

#[test]
fn bot_turns_signed_webhooks_into_one_pull_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let host = server.host();
    let (d1, _) = push_multiarch(&server, "apps/web", "1.4", "rev1");
    let deploy = format!(
        "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: {host}/apps/web:1.4\n"
    );
    let r = remote_with(dir.path(), &[("apps/web.yaml", &deploy)]);
    let forge = FakeForge::start(Flavor::Gitea, r.bare.clone(), "tok");
    let secret = b"webhook-secret";
    std::fs::write(dir.path().join("secret"), secret).unwrap();
    std::fs::write(dir.path().join("token"), "tok").unwrap();
    let config = webhook_bot_config(dir.path(), &r.url, &forge, "forgejo", 300, 200);
    let check = run_text(
        Command::new(berth_bin())
            .args(["bot", "--check-config", "--config"])
            .arg(&config),
    );
    assert!(check.contains(": configuration is valid"), "{check}");
    let bot = BotProc::start(&config);
    let now = unix_now();
    let body = push_event(&host, "apps/web", "1.4", &d1, now);

    // Refused: a bad signature, a stale timestamp, a malformed payload.
    let r401 = deliver(
        &bot,
        "d-0",
        now,
        &signature(b"wrong", now, body.as_bytes()),
        &body,
    );
    assert_eq!(r401.status, 401);
    assert!(r401.json()["error"].as_str().unwrap().contains("signature"));
    let old = now - 3600;
    assert_eq!(
        deliver(
            &bot,
            "d-0",
            old,
            &signature(secret, old, body.as_bytes()),
            &body
        )
        .status,
        401
    );
    let junk = "{\"type\": \"PUSH_ARTIFACT\", \"occur_at\": 1";
    assert_eq!(
        deliver(
            &bot,
            "d-0",
            now,
            &signature(secret, now, junk.as_bytes()),
            junk
        )
        .status,
        400
    );
    let no_digest = body.replace(&d1, "sha256:nothex");
    let r400 = deliver(
        &bot,
        "d-0",
        now,
        &signature(secret, now, no_digest.as_bytes()),
        &no_digest,
    );
    assert_eq!(r400.status, 400);
    assert!(
        r400.json()["error"].as_str().unwrap().contains("digest"),
        "{:?}",
        r400.json()
    );
    assert_eq!(bot.status()["pending"], 0);

    // The forge is down for the first attempt: the push waits on disk and
    // is retried until the pull request exists.
    forge.fail_next(502);
    let good = deliver(
        &bot,
        "d-1",
        now,
        &signature(secret, now, body.as_bytes()),
        &body,
    );
    assert_eq!(good.status, 202, "{:?}", good.json());
    assert_eq!(good.json()["queued"], 1);
    wait_for("the pull request", || forge.open().len() == 1);
    let pr = &forge.open()[0];
    assert_eq!(
        pr.head,
        format!("berth/bump/{}/apps/web-1.4", host.replace(':', "-"))
    );
    assert!(pr.body.contains(&format!("`{d1}`")), "{}", pr.body);
    assert!(
        pr.body.contains("[source](https://forge.lan/home/app)") && pr.body.contains("`rev1`"),
        "{}",
        pr.body
    );
    assert_eq!(
        remote_file(&r, &pr.head, "apps/web.yaml"),
        deploy.replace(":1.4\n", &format!(":1.4@{d1}\n"))
    );
    wait_for("the retry to be counted", || bot.status()["pending"] == 0);
    let status = bot.status();
    assert!(status["failures"].as_u64().unwrap() >= 1, "{status}");

    // A replay of an accepted delivery is refused.
    assert_eq!(
        deliver(
            &bot,
            "d-1",
            now,
            &signature(secret, now, body.as_bytes()),
            &body
        )
        .status,
        409
    );

    // Two pushes in quick succession: one bump, the newest digest, the
    // same pull request updated.
    let runs = bot.status()["runs"].as_u64().unwrap();
    let (d2, _) = push_multiarch(&server, "apps/web", "1.4", "rev2");
    let (d3, _) = push_multiarch(&server, "apps/web", "1.4", "rev3");
    for (id, d, at) in [("d-2", &d2, now + 1), ("d-3", &d3, now + 2)] {
        let b = push_event(&host, "apps/web", "1.4", d, at);
        assert_eq!(
            deliver(&bot, id, now, &signature(secret, now, b.as_bytes()), &b).status,
            202
        );
    }
    wait_for("the update", || forge.prs()[0].body.contains(&d3));
    wait_for("the batch to finish", || bot.status()["pending"] == 0);
    assert_eq!(
        bot.status()["runs"].as_u64().unwrap(),
        runs + 1,
        "two pushes, one bump"
    );
    assert!(!forge.prs()[0].body.contains(&d2));
    assert_eq!(forge.prs().len(), 1, "never a duplicate");

    // A digest the registry does not have can never be bumped: it is set
    // aside in failed.json instead of blocking the queue forever.
    let missing = format!("sha256:{}", "e".repeat(64));
    let b = push_event(&host, "apps/web", "1.4", &missing, now + 3);
    assert_eq!(
        deliver(&bot, "d-4", now, &signature(secret, now, b.as_bytes()), &b).status,
        202
    );
    wait_for("the push to be set aside", || {
        std::fs::read_to_string(dir.path().join("state/failed.json"))
            .is_ok_and(|f| f.contains(&missing))
    });
    wait_for("the queue to empty", || bot.status()["pending"] == 0);
    let failed = std::fs::read_to_string(dir.path().join("state/failed.json")).unwrap();
    assert!(failed.contains("is not in the registry"), "{failed}");
    assert!(
        forge.prs()[0].body.contains(&d3),
        "the pull request keeps the last good digest"
    );
}

#[test]
fn bot_polls_registries_without_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let host = server.host();
    let values = format!("image:\n  repository: {host}/apps/api\n  tag: \"2.0\"\n");
    let r = remote_with(dir.path(), &[("values.yaml", &values)]);
    let config = dir.path().join("bot.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"{d}/state\"\ndebounce_ms = 100\nretry_ms = 200\n\n[git]\nremote = \"{url}\"\n\n[poll]\ninterval_s = 1\nimages = [\"{host}/apps/api:2.0\"]\n",
            d = dir.path().display(),
            url = r.url,
        ),
    )
    .unwrap();
    let _bot = BotProc::start(&config);
    // Nothing pushed yet: nothing happens. Then the tag appears.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (d, _) = push_multiarch(&server, "apps/api", "2.0", "rev1");
    let branch = format!("berth/bump/{}/apps/api-2.0", host.replace(':', "-"));
    wait_for("the bump branch", || {
        Command::new("git")
            .arg("--git-dir")
            .arg(&r.bare)
            .args(["rev-parse", "--verify", "--quiet", &branch])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert_eq!(
        remote_file(&r, &branch, "values.yaml"),
        values.replace("\"2.0\"", &format!("\"2.0@{d}\""))
    );
}

#[test]
fn bot_loses_no_push_when_the_forge_is_down_and_the_bot_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let host = server.host();
    let (d1, _) = push_multiarch(&server, "apps/web", "1.4", "rev1");
    let deploy = format!("image: {host}/apps/web:1.4\n");
    let r = remote_with(dir.path(), &[("web.yaml", &deploy)]);
    let forge = FakeForge::start(Flavor::Gitea, r.bare.clone(), "tok");
    std::fs::write(dir.path().join("secret"), "s").unwrap();
    std::fs::write(dir.path().join("token"), "tok").unwrap();
    let config = webhook_bot_config(dir.path(), &r.url, &forge, "gitea", 100, 100);
    forge.set_down(true);
    let bot = BotProc::start(&config);
    let now = unix_now();
    let body = push_event(&host, "apps/web", "1.4", &d1, now);
    let reply = deliver(
        &bot,
        "x-1",
        now,
        &signature(b"s", now, body.as_bytes()),
        &body,
    );
    assert_eq!(reply.status, 202);
    wait_for("two failed attempts", || {
        bot.status()["failures"].as_u64().unwrap() >= 2
    });
    let status = bot.status();
    assert_eq!(status["pending"], 1, "{status}");
    assert!(
        status["last_error"].as_str().unwrap().contains("HTTP 503"),
        "{status}"
    );
    // Killed while the push is still pending: it is on disk.
    drop(bot);
    let pending = std::fs::read_to_string(dir.path().join("state/pending.json")).unwrap();
    assert!(pending.contains(&d1), "{pending}");
    // Back up, restarted: the push becomes its pull request.
    forge.set_down(false);
    let bot = BotProc::start(&config);
    wait_for("the pull request", || forge.open().len() == 1);
    wait_for("the queue to empty", || bot.status()["pending"] == 0);
    assert!(forge.open()[0].body.contains(&d1));
    // The replayed delivery is still refused after the restart.
    assert_eq!(
        deliver(
            &bot,
            "x-1",
            now,
            &signature(b"s", now, body.as_bytes()),
            &body
        )
        .status,
        409
    );
}
