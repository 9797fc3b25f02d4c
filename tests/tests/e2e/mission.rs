//! The mission's loop, end to end with real programs: CI builds and pushes
//! with a robot (`berth build --push`) → `berth serve` queues the push
//! webhook in the push's own transaction and delivers it, signed → a real
//! `berth bot` → a branch and one pull request on the fake forge, over a
//! real git repository, with the new digest. Then the bot is down and the
//! registry is killed between a push and its delivery: after both come
//! back the pull request is updated to the new digest, once.

use std::path::Path;
use std::process::Command;

use berth_tests::forge::{FakeForge, Flavor};
use berth_tests::{Server, berth_bin};

use crate::auth::{ROBOT, ROBOT_SECRET, auth_config};
use crate::bot::{BotProc, wait_for};
use crate::bump::{remote_file, remote_with};
use berth_tests::free_port;

/// `berth build --push` of the test store's image (with `marker` in its
/// config, so each build has its own digest) as the robot; the manifest
/// digest the registry now has.
fn build_and_push(dir: &Path, host: &str, reference: &str, marker: &str) -> String {
    let (spec, root) = crate::newcomer::store_spec(dir);
    // A distinct image each time: the marker in its environment.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec).unwrap()).unwrap();
    json["config"] = serde_json::json!({ "Env": [format!("BERTH_TEST_MARKER={marker}")] });
    std::fs::write(&spec, json.to_string()).unwrap();
    let out = Command::new(berth_bin())
        .args([
            "build",
            spec.to_str().unwrap(),
            "--store-root",
            root.to_str().unwrap(),
        ])
        .args(["-q", "--no-cache"])
        .args(["--push", &format!("{host}/{reference}")])
        .args(["--username", ROBOT, "--password", ROBOT_SECRET])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        digest.starts_with("sha256:"),
        "berth build printed {digest:?}"
    );
    digest
}

/// `berth admin --json <args>` as the system admin of [`auth_config`].
fn root_admin_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let out = Command::new(berth_bin())
        .args(["admin", "--registry", &server.url(), "-u", "root", "--json"])
        .args(args)
        .env("BERTH_PASSWORD", "root-pw")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn a_robot_push_becomes_a_pull_request_through_the_webhook_even_across_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The bot's address first: the registry's webhook names it.
    let bot_port = free_port();
    let secret = "a-webhook-secret-shared-by-both";
    std::fs::write(d.join("webhook.secret"), secret).unwrap();
    let config = auth_config(d);
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[[webhooks]]\nname = \"bot\"\nurl = \"http://127.0.0.1:{bot_port}/webhook\"\nsecret_file = \"{}\"\nprojects = [\"team\"]\n\n[webhook]\nallow = [\"127.0.0.1/32\"]\n",
        d.join("webhook.secret").display()
    ));
    std::fs::write(&config, toml).unwrap();
    let data = d.join("registry");
    let args = ["--config", config.to_str().unwrap()];
    let mut server = Server::start(&data, &args);
    let host = server.host();
    let listen = server.addr.to_string();

    // The GitOps repository, the forge, and the bot (with the robot's
    // credentials to check digests with the registry).
    let deploy = format!(
        "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {host}/team/app:1.0\n"
    );
    let r = remote_with(d, &[("apps/app.yaml", &deploy)]);
    let forge = FakeForge::start(Flavor::Gitea, r.bare.clone(), "tok");
    std::fs::write(d.join("token"), "tok").unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{ROBOT}:{ROBOT_SECRET}"),
    );
    std::fs::write(
        d.join("auth.json"),
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let bot_config = d.join("bot.toml");
    std::fs::write(
        &bot_config,
        format!(
            "listen = \"127.0.0.1:{bot_port}\"\nstate_dir = \"{d}/state\"\nsecret_file = \"{d}/webhook.secret\"\ndebounce_ms = 200\nretry_ms = 200\n\n[git]\nremote = \"{remote}\"\n\n[forge]\nkind = \"forgejo\"\nurl = \"{furl}\"\nrepo = \"{frepo}\"\ntoken_file = \"{d}/token\"\n\n[registry]\nauth_file = \"{d}/auth.json\"\n",
            d = d.display(),
            remote = r.url,
            furl = forge.url,
            frepo = forge.repo()
        ),
    )
    .unwrap();
    let bot = BotProc::start(&bot_config);

    // CI pushes with the robot; the registry tells the bot; one PR.
    let d1 = build_and_push(d, &host, "team/app:1.0", "one");
    wait_for("the pull request", || forge.open().len() == 1);
    let pr = forge.open()[0].clone();
    wait_for("the PR branch to name the pushed digest", || {
        remote_file(&r, &pr.head, "apps/app.yaml").contains(&d1)
    });
    assert_eq!(
        remote_file(&r, &pr.head, "apps/app.yaml"),
        deploy.replace(":1.0\n", &format!(":1.0@{d1}\n"))
    );
    let pushes = root_admin_json(&server, &["audit", "--action", "manifest.push"]);
    assert!(pushes.to_string().contains(&d1));

    // The bot is down; a new build is pushed and the registry dies before
    // it can deliver.
    drop(bot);
    let d2 = build_and_push(d, &host, "team/app:1.0", "two");
    assert_ne!(d1, d2);
    server.kill9();
    // Both come back; the delivery queued with the push goes out.
    let bot = BotProc::start(&bot_config);
    // On the same address: the queued payload and the bot's credentials
    // name it.
    let server = Server::start_at(&listen, &data, &args);
    assert_eq!(server.host(), host);
    wait_for("the pull request to name the new digest", || {
        remote_file(&r, &pr.head, "apps/app.yaml").contains(&d2)
    });
    wait_for("the bot to finish", || bot.status()["pending"] == 0);
    assert_eq!(forge.prs().len(), 1, "one pull request, updated");
    assert!(forge.open()[0].body.contains(&d2));
    // The registry lists every delivery (a build also pushes its SBOM as a
    // referrer, by digest, which the bot skips), all delivered.
    wait_for("both deliveries recorded as delivered", || {
        let v = root_admin_json(&server, &["webhooks"]);
        let list = v["deliveries"].as_array().cloned().unwrap_or_default();
        list.len() >= 2
            && list
                .iter()
                .all(|d| d["delivered_at"].is_u64() && d["target"] == "bot")
            && list.iter().all(|d| {
                d["last_status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with('2'))
            })
            && v["backlog"] == 0
    });
}
