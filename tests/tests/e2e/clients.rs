//! Real OCI clients against `berth serve`: skopeo (copy in and out, inspect,
//! list-tags, delete), podman (pull into vfs storage), containerd (`ctr
//! images pull`, the kubelet's pull path) and the oras Python SDK (an
//! artifact with a `subject`, found again through the referrers API).

use std::path::Path;
use std::process::Command;

use berth_tests::{Containerd, Server, http, require, run, run_text, umoci_image};
use serde_json::Value;

/// The manifest digest that `index.json` of a layout names `tag`.
pub(crate) fn layout_digest(layout: &Path, tag: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn skopeo_push(layout: &Path, tag: &str, dest: &str) {
    require("skopeo");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{dest}"),
    ]));
}

#[test]
fn skopeo_copies_in_and_out_with_digests_preserved() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let layout = umoci_image(dir.path(), "v1", 3, 200_000);
    let want = layout_digest(&layout, "v1");
    let host = server.host();

    skopeo_push(&layout, "v1", &format!("{host}/e2e/skopeo:v1"));
    skopeo_push(&layout, "v1", &format!("{host}/e2e/skopeo:v2"));

    let inspect: Value = serde_json::from_str(&run_text(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{host}/e2e/skopeo:v1"),
    ])))
    .unwrap();
    assert_eq!(
        inspect["Digest"], want,
        "the pushed manifest digest is the layout's"
    );
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);

    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{host}/e2e/skopeo:v1"),
    ]))
    .stdout;
    assert_eq!(
        berth_tests::sha256(&raw),
        want,
        "served bytes hash to the digest"
    );

    let tags: Value = serde_json::from_str(&run_text(Command::new("skopeo").args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{host}/e2e/skopeo"),
    ])))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1", "v2"]));

    // Out again into a fresh layout: same manifest digest, same blobs.
    let out = dir.path().join("out");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{host}/e2e/skopeo:v1"),
        &format!("oci:{}:copied", out.display()),
    ]));
    assert_eq!(layout_digest(&out, "copied"), want);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap().replace(':', "/");
        let a = std::fs::read(layout.join("blobs").join(&d)).unwrap();
        let b = std::fs::read(out.join("blobs").join(&d)).unwrap();
        assert!(a == b, "layer {d} differs after the round trip");
    }

    // skopeo delete removes the manifest (and so both tags).
    run(Command::new("skopeo").args([
        "delete",
        "--tls-verify=false",
        &format!("docker://{host}/e2e/skopeo:v1"),
    ]));
    let r = http(
        "GET",
        &format!("{}/v2/e2e/skopeo/manifests/{want}", server.url()),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "MANIFEST_UNKNOWN");
    let r = http(
        "GET",
        &format!("{}/v2/e2e/skopeo/tags/list", server.url()),
        &[],
        b"",
    );
    assert_eq!(r.json()["tags"], serde_json::json!([]));
}

#[test]
fn podman_pulls_into_vfs_storage() {
    require("podman");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let layout = umoci_image(dir.path(), "v1", 2, 100_000);
    let want = layout_digest(&layout, "v1");
    let image = format!("{}/e2e/podman:v1", server.host());
    skopeo_push(&layout, "v1", &image);

    let root = dir.path().join("podman-root");
    let runroot = dir.path().join("podman-run");
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    run(&mut podman(&[
        "pull",
        "--quiet",
        "--tls-verify=false",
        &image,
    ]));
    let digest = run_text(&mut podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Digest}}",
        &image,
    ]));
    assert_eq!(digest.trim(), want);
    run(&mut podman(&["rmi", "--all", "--force"]));
}

#[test]
fn containerd_pulls_a_multi_layer_image() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let layout = umoci_image(dir.path(), "v1", 4, 300_000);
    let want = layout_digest(&layout, "v1");
    let image = format!("{}/e2e/containerd:v1", server.host());
    skopeo_push(&layout, "v1", &image);

    let cd = Containerd::start(&dir.path().join("containerd"));
    run(cd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &image,
    ]));
    let list = run_text(cd.ctr().args(["images", "ls"]));
    let line = list
        .lines()
        .find(|l| l.starts_with(&image))
        .unwrap_or_else(|| panic!("{image} not in:\n{list}"));
    assert!(line.contains(&want), "{line} should name {want}");
    // Every layer was fetched and verified by containerd's content store.
    let content = run_text(cd.ctr().args(["content", "ls"]));
    let manifest: Value = serde_json::from_slice(
        &http(
            "GET",
            &format!("{}/v2/e2e/containerd/manifests/v1", server.url()),
            &[],
            b"",
        )
        .body,
    )
    .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        assert!(
            content.contains(d),
            "layer {d} missing from containerd's content store"
        );
    }
}

#[test]
fn oras_pushes_an_artifact_with_a_subject_found_by_referrers() {
    let python = std::env::var("BERTH_ORAS_PYTHON")
        .unwrap_or_else(|_| "/opt/berth-test/oras/bin/python".into());
    assert!(
        Path::new(&python).is_file(),
        "the oras Python SDK is not installed at {python}: run ./scripts/test, or \
         python3 -m venv /opt/berth-test/oras && /opt/berth-test/oras/bin/pip install oras"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let layout = umoci_image(dir.path(), "v1", 1, 10_000);
    let subject = layout_digest(&layout, "v1");
    let host = server.host();
    skopeo_push(&layout, "v1", &format!("{host}/e2e/oras:v1"));
    let subject_reply = http(
        "GET",
        &format!("{}/v2/e2e/oras/manifests/v1", server.url()),
        &[],
        b"",
    );

    std::fs::write(
        dir.path().join("sbom.json"),
        br#"{"bomFormat":"CycloneDX"}"#,
    )
    .unwrap();
    let script = format!(
        r#"
import json, os, sys
import oras.client, oras.oci
os.chdir({dir:?})
client = oras.client.OrasClient(hostname={host:?}, insecure=True)
subject = oras.oci.Subject(mediaType={mt:?}, digest={subject:?}, size={size})
resp = client.push(target="{host}/e2e/oras:sbom", files=["sbom.json:application/vnd.cyclonedx+json"],
                   subject=subject, manifest_annotations={{"org.example.kind": "sbom"}})
print(resp.status_code)
os.makedirs("pulled", exist_ok=True)
files = client.pull(target="{host}/e2e/oras:sbom", outdir="pulled")
print(json.dumps(files))
"#,
        dir = dir.path().display().to_string(),
        mt = subject_reply.header("content-type").unwrap(),
        size = subject_reply.body.len(),
    );
    let out = run_text(
        Command::new(&python)
            .arg("-c")
            .arg(&script)
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE"),
    );
    assert!(out.starts_with("201"), "oras push: {out}");
    assert_eq!(
        std::fs::read(dir.path().join("pulled/sbom.json")).unwrap(),
        br#"{"bomFormat":"CycloneDX"}"#,
        "oras pulled the artifact back"
    );

    let artifact = http(
        "GET",
        &format!("{}/v2/e2e/oras/manifests/sbom", server.url()),
        &[],
        b"",
    );
    let manifest = artifact.json();
    assert_eq!(manifest["subject"]["digest"], subject.as_str());
    let artifact_digest = artifact.header("docker-content-digest").unwrap().to_owned();
    let artifact_type = manifest["artifactType"]
        .as_str()
        .or(manifest["config"]["mediaType"].as_str())
        .unwrap()
        .to_owned();

    let refs = http(
        "GET",
        &format!("{}/v2/e2e/oras/referrers/{subject}", server.url()),
        &[],
        b"",
    );
    assert_eq!(refs.status, 200);
    let list = refs.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], artifact_digest.as_str());
    assert_eq!(list[0]["artifactType"], artifact_type.as_str());
    assert_eq!(list[0]["annotations"]["org.example.kind"], "sbom");

    let filtered = http(
        "GET",
        &format!(
            "{}/v2/e2e/oras/referrers/{subject}?artifactType={}",
            server.url(),
            artifact_type.replace('+', "%2B")
        ),
        &[],
        b"",
    );
    assert_eq!(filtered.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(filtered.json()["manifests"].as_array().unwrap().len(), 1);
    let none = http(
        "GET",
        &format!(
            "{}/v2/e2e/oras/referrers/{subject}?artifactType=application/x.none",
            server.url()
        ),
        &[],
        b"",
    );
    assert_eq!(none.json()["manifests"], serde_json::json!([]));
}
