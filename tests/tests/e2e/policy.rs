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
