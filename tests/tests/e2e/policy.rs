//! Project policies of `berth serve` with real clients: immutable tags
//! (`[[policies]] immutable_tags`) can be pushed once and re-pushed with
//! the same content, but never moved — by tag, or by digest with
//! `?tag=` (zot CVE-2026-31801's shape) — nor deleted, by tag or through
//! the manifest they point at; other tags and other projects move freely.

use std::process::Command;

use berth_tests::{Server, http, require, umoci_image};

use crate::clients::layout_digest;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn immutable_tags_never_move_nor_go() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "[[policies]]\nproject = \"team\"\nimmutable_tags = [\"v*\"]\n",
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let host = server.host();
    let a = umoci_image(&dir.path().join("a"), "x", 1, 1000);
    let b = umoci_image(&dir.path().join("b"), "x", 1, 2000);
    let (da, db) = (layout_digest(&a, "x"), layout_digest(&b, "x"));
    assert_ne!(da, db);
    let push = |layout: &std::path::Path, dest: &str| {
        Command::new(require("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:x", layout.display()))
            .arg(format!("docker://{host}/{dest}"))
            .output()
            .unwrap()
    };
    let ok = |layout: &std::path::Path, dest: &str| {
        let out = push(layout, dest);
        assert!(out.status.success(), "{dest}: {}", text(&out.stderr));
    };
    let digest_of = |repo_tag: &str| {
        let (repo, tag) = repo_tag.split_once(':').unwrap();
        http(
            "HEAD",
            &format!("{}/v2/{repo}/manifests/{tag}", server.url()),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            b"",
        )
        .header("docker-content-digest")
        .unwrap_or_default()
        .to_owned()
    };

    ok(&a, "team/app:v1");
    ok(&a, "team/app:v1"); // the same content again: nothing moves
    let moved = push(&b, "team/app:v1");
    assert!(!moved.status.success(), "an immutable tag moved");
    assert!(
        text(&moved.stderr).contains("immutable"),
        "skopeo shows the reason: {}",
        text(&moved.stderr)
    );
    assert_eq!(digest_of("team/app:v1"), da);
    // Mutable tags and other projects move freely.
    ok(&a, "team/app:latest");
    ok(&b, "team/app:latest");
    assert_eq!(digest_of("team/app:latest"), db);
    ok(&a, "other/app:v1");
    ok(&b, "other/app:v1");
    assert_eq!(digest_of("other/app:v1"), db);

    // By digest with ?tag=: the same rule.
    let manifest = http(
        "GET",
        &format!("{}/v2/team/app/manifests/{db}", server.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(manifest.status, 200);
    let put = http(
        "PUT",
        &format!("{}/v2/team/app/manifests/{db}?tag=v1", server.url()),
        &[("Content-Type", manifest.header("content-type").unwrap())],
        &manifest.body,
    );
    assert_eq!(put.status, 403, "{}", text(&put.body));
    assert_eq!(put.error_code(), "DENIED");
    assert!(
        put.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("\"v*\"")
    );
    assert_eq!(digest_of("team/app:v1"), da);

    // Deleting the tag, or the manifest it points at: refused.
    for reference in ["v1", da.as_str()] {
        let del = http(
            "DELETE",
            &format!("{}/v2/team/app/manifests/{reference}", server.url()),
            &[],
            b"",
        );
        assert_eq!(del.status, 403, "{reference}: {}", text(&del.body));
        assert_eq!(del.error_code(), "DENIED");
    }
    assert_eq!(digest_of("team/app:v1"), da);
    // A mutable tag can be deleted.
    let del = http(
        "DELETE",
        &format!("{}/v2/team/app/manifests/latest", server.url()),
        &[],
        b"",
    );
    assert_eq!(del.status, 202);
}

#[test]
fn policies_set_through_the_admin_api_hold_against_skopeo_and_report_by_cloudevents() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::auth::auth_config(dir.path());
    let receiver = berth_tests::Receiver::start();
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "a-cloudevents-secret-0123456789").unwrap();
    let mut text_config = std::fs::read_to_string(&config).unwrap();
    text_config.push_str(&format!(
        r#"
[[webhooks]]
name = "ce"
url = "{}"
secret_file = "{}"
events = ["push", "delete", "quota", "retention"]
format = "cloudevents"

[webhook]
allow = ["127.0.0.1/32"]

[gc]
grace_minutes = 0

[[policies]]
project = "other"
quota_mib = 100
"#,
        receiver.url,
        secret.display()
    ));
    std::fs::write(&config, text_config).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let (url, host) = (server.url(), server.host());
    let root = |args: &[&str]| {
        let out = crate::admin::admin(&url, "root", "root-pw", args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };

    // The project admin's policy, as TOML: release tags immutable (a
    // regex), the two newest main-* builds and every release kept, untagged
    // manifests removed, 12 MiB of blobs at most.
    let policy = dir.path().join("team-policy.toml");
    std::fs::write(
        &policy,
        r#"immutable_tags = ['re:v[0-9]+\.[0-9]+\.[0-9]+']
remove_untagged = true
quota_mib = 12

[[retention]]
tags = "main-*"
latest = 2

[[retention]]
tags = 're:v.*'
always = true
"#,
    )
    .unwrap();
    let shown = root(&["policy", "set", "team", "--file", policy.to_str().unwrap()]);
    assert!(shown.contains("of a 12.0 MiB quota"), "{shown}");
    // A declared policy is read-only here, in one line.
    let out = crate::admin::admin(
        &url,
        "root",
        "root-pw",
        &["policy", "set", "other", "--file", policy.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("configuration"),
        "{}",
        text(&out.stderr)
    );
    // A typo in a key is refused with the key named.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "quota_mb = 3\n").unwrap();
    let out = crate::admin::admin(
        &url,
        "root",
        "root-pw",
        &["policy", "set", "team", "--file", typo.to_str().unwrap()],
    );
    assert!(
        text(&out.stderr).contains("quota_mb"),
        "{}",
        text(&out.stderr)
    );

    let push = |layout: &std::path::Path, dest: &str| {
        Command::new(require("skopeo"))
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-creds",
                "alice:alice-pw",
            ])
            .arg(format!("oci:{}:x", layout.display()))
            .arg(format!("docker://{host}/{dest}"))
            .output()
            .unwrap()
    };
    let mut layouts = Vec::new();
    for (i, tag) in ["main-1", "main-2", "main-3", "main-4", "v1.0.0"]
        .iter()
        .enumerate()
    {
        let l = umoci_image(
            &dir.path().join(format!("img{i}")),
            "x",
            1,
            500_000 + i * 1000,
        );
        let out = push(&l, &format!("team/app:{tag}"));
        assert!(out.status.success(), "{tag}: {}", text(&out.stderr));
        layouts.push(l);
        // Pushed in order, a second apart: retention orders by push time.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // Immutable by the regex rule: the release tag does not move.
    let out = push(&layouts[0], "team/app:v1.0.0");
    assert!(!out.status.success(), "an immutable tag moved");
    assert!(
        text(&out.stderr).contains("immutable"),
        "{}",
        text(&out.stderr)
    );
    receiver.wait_for("harbor.artifact.pushed", 10);

    // Retention: the dry run names what the run removes.
    let dry = root(&["retention", "--project", "team", "--dry-run", "--json"]);
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    let run = root(&["retention", "--project", "team", "--json"]);
    let run: serde_json::Value = serde_json::from_str(&run).unwrap();
    assert_eq!(dry["tags"], run["tags"]);
    assert_eq!(dry["manifests"], run["manifests"]);
    assert_eq!(
        run["tags"],
        serde_json::json!(["team/app:main-1", "team/app:main-2"])
    );
    assert_eq!(run["manifests"].as_array().unwrap().len(), 2, "{run}");
    let tags = http("GET", &format!("{url}/v2/team/app/tags/list"), &[], b"");
    // Anonymous reads of a private project are refused; read as root.
    assert_ne!(tags.status, 200);
    let (_, event) = receiver.wait_for("harbor.tag_retention.finished", 10);
    let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["source"], "/projects/team/webhook/policies/ce");
    assert_eq!(event["data"]["repository"]["repo_full_name"], "team/app");
    // The kept tags still pull; the removed do not.
    for (tag, pulls) in [
        ("main-3", true),
        ("main-4", true),
        ("v1.0.0", true),
        ("main-1", false),
    ] {
        let out = Command::new(require("skopeo"))
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                "alice:alice-pw",
            ])
            .arg(format!("docker://{host}/team/app:{tag}"))
            .output()
            .unwrap();
        assert_eq!(out.status.success(), pulls, "{tag}: {}", text(&out.stderr));
    }
    // And a collection frees their bytes.
    let gc = root(&["gc", "--json"]);
    let gc: serde_json::Value = serde_json::from_str(&gc).unwrap();
    assert!(gc["blobs"].as_array().unwrap().len() >= 4, "{gc}");

    // Quota: 12 MiB; a 16 MB layer is refused before it is stored, and
    // nothing of it stays.
    let before = root(&["policy", "show", "team", "--json"]);
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    let big = umoci_image(&dir.path().join("big"), "x", 1, 16_000_000);
    let out = push(&big, "team/app:big");
    assert!(!out.status.success(), "a push past the quota went in");
    assert!(text(&out.stderr).contains("quota"), "{}", text(&out.stderr));
    let after = root(&["policy", "show", "team", "--json"]);
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        before["usage_bytes"], after["usage_bytes"],
        "nothing partial stays"
    );
    let (headers, body) = receiver.wait_for("harbor.quota.exceeded", 10);
    assert_eq!(headers["content-type"], "application/cloudevents+json");
    // Signed like every delivery: the bot's check accepts it.
    let t = &headers["x-berth-timestamp"];
    berth_oci::distribution::webhook::verify(
        b"a-cloudevents-secret-0123456789",
        t,
        &headers["x-berth-signature-256"],
        &body,
        t.parse().unwrap(),
    )
    .unwrap();
    // A shared blob counts once: the same image under another tag adds
    // nothing.
    let out = push(&layouts[2], "team/app:again");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = root(&["policy", "show", "team", "--json"]);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["usage_bytes"], after["usage_bytes"]);

    // A delete through the API is an event too.
    let out = Command::new(require("skopeo"))
        .args(["delete", "--tls-verify=false", "--creds", "root:root-pw"])
        .arg(format!("docker://{host}/team/app:main-4"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    receiver.wait_for("harbor.artifact.deleted", 10);
}
