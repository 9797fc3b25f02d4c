//! Base images (`fromImage`, issue 20): a closure built on top of a base
//! made with umoci — a small root filesystem with `/etc/os-release` and a
//! busybox shell. The base's layers stay byte for byte what its manifest
//! lists, the image is reproducible, and podman runs the result with both
//! the base's files and the Nix paths.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::{berth_bin, podman, require, run, run_text};

use crate::deploy::LowerDir;

/// A base image in an OCI layout under `dir`: busybox as `/bin/sh`,
/// `/etc/os-release`, `PATH=/bin`, `Cmd ["/bin/sh"]`. Its layout and
/// manifest digest.
pub(crate) fn base_layout(dir: &Path) -> (PathBuf, String) {
    require("umoci");
    let layout = dir.join("base");
    let img = format!("{}:1", layout.display());
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &img]));
    let rootfs = dir.join("base-root");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    assert!(
        Path::new("/bin/busybox").exists(),
        "busybox is not installed: {}",
        crate::nix::NIX_HINT
    );
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat", "ls", "head", "id"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/os-release"),
        "NAME=\"berth test base\"\nID=berthbase\n",
    )
    .unwrap();
    run(Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&rootfs)
        .arg("/"));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.env",
        "PATH=/bin",
        "--config.env",
        "LANG=C.UTF-8",
        "--config.cmd",
        "/bin/sh",
        "--config.label",
        "vendor=base",
    ]));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    (layout, digest)
}

fn blob(layout: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.trim_start_matches("sha256:");
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// `berth build -q --store-root ROOT SPEC… ARGS…`, as it ended.
fn berth_build(specs: &[&Path], root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(berth_bin())
        .arg("build")
        .args(specs)
        .arg("--store-root")
        .arg(root)
        .arg("-q")
        .args(args)
        .output()
        .unwrap()
}

/// `berth build` of `spec` into `oci:out:v1`: the digest, or the error.
fn build(spec: &Path, root: &Path, out: &Path, extra: &[&str]) -> Result<String, String> {
    let oci = format!("oci:{}:v1", out.display());
    let mut args = vec!["-o", oci.as_str()];
    args.extend_from_slice(extra);
    let o = berth_build(&[spec], root, &args);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_owned())
    }
}

#[test]
fn a_closure_on_a_base_keeps_the_bases_layers_and_runs_with_both() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (base, base_digest) = base_layout(d);
    let (spec_path, root) = crate::newcomer::store_spec(d);
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    let app = spec["roots"][1].as_str().unwrap().to_owned();
    let script = root.join(app.trim_start_matches('/')).join("bin/app");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    spec["fromImage"] = serde_json::json!({
        "reference": format!("registry.local/base:1@{base_digest}"),
        "layout": base.display().to_string(),
    });
    spec["config"] = serde_json::json!({
        "Entrypoint": [format!("{app}/bin/app")],
        "Env": ["APP=1"],
    });
    std::fs::write(&spec_path, spec.to_string()).unwrap();

    // Reproducible: another directory, one thread, no cache.
    let out = LowerDir::new();
    // (The test store's narHashes are made up: a cache of its own.)
    let cache = d.join("cache");
    let cache_flag = ["--cache-dir", cache.to_str().unwrap()];
    let first = build(&spec_path, &root, &out.0.join("a"), &cache_flag).unwrap();
    let warm = build(&spec_path, &root, &out.0.join("c"), &cache_flag).unwrap();
    assert_eq!(first, warm, "a warm cache gives the same image");
    let again = build(
        &spec_path,
        &root,
        &out.0.join("b"),
        &["--threads", "1", "--no-cache"],
    )
    .unwrap();
    assert_eq!(first, again);

    // The base's layers first, exactly as its manifest lists them.
    let base_manifest = blob(&base, &base_digest);
    let manifest = blob(&out.0.join("a"), &first);
    let base_layers = base_manifest["layers"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert!(layers.len() > base_layers.len());
    for (b, l) in base_layers.iter().zip(layers) {
        assert_eq!(
            (&b["digest"], &b["size"], &b["mediaType"]),
            (&l["digest"], &l["size"], &l["mediaType"])
        );
        assert_eq!(
            l["annotations"]["dev.berth.base.digest"],
            base_digest.as_str()
        );
        // Its bytes are the base's bytes.
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert_eq!(
            std::fs::read(out.0.join("a/blobs/sha256").join(hex)).unwrap(),
            std::fs::read(base.join("blobs/sha256").join(hex)).unwrap()
        );
    }
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.digest"],
        base_digest.as_str()
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.name"],
        "registry.local/base:1"
    );
    // The config: the base's diff_ids and history first, its settings
    // under the spec's.
    let base_config = blob(&base, base_manifest["config"]["digest"].as_str().unwrap());
    let config = blob(
        &out.0.join("a"),
        manifest["config"]["digest"].as_str().unwrap(),
    );
    let base_ids = base_config["rootfs"]["diff_ids"].as_array().unwrap();
    let ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(&ids[..base_ids.len()], &base_ids[..]);
    assert_eq!(ids.len(), layers.len());
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["PATH=/bin", "LANG=C.UTF-8", "APP=1"])
    );
    assert_eq!(config["config"]["Labels"]["vendor"], "base");
    assert!(
        config["config"].get("Cmd").is_none(),
        "an Entrypoint of the spec drops the base's Cmd"
    );

    // podman runs the Nix path with the base's shell, and sees its files.
    let pm = dir.path().join("podman");
    let id = run_text(&mut podman(
        &pm,
        &[
            "pull",
            "-q",
            &format!("oci:{}:v1", out.0.join("a").display()),
        ],
    ))
    .trim()
    .to_owned();
    assert_eq!(berth_tests::podman_run(&pm, &id).trim(), "app");
    let os_release =
        berth_tests::podman_run_args(&pm, &["--entrypoint", "/bin/cat", &id, "/etc/os-release"]);
    assert!(os_release.contains("berth test base"));
    let _ = podman(&pm, &["rmi", "--all", "--force"]).output();
}

#[test]
fn a_base_by_tag_or_missing_from_its_layout_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (base, base_digest) = base_layout(d);
    let (spec_path, root) = crate::newcomer::store_spec(d);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    // An artifact is not a base: the SBOM berth writes beside an image.
    let plain = d.join("plain");
    build(&spec_path, &root, &plain, &["--no-cache"]).unwrap();
    let plain_index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plain.join("index.json")).unwrap()).unwrap();
    let sbom = plain_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"].is_string())
        .expect("the SBOM is in the layout")["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let base_config = blob(&base, &base_digest)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = d.join("out");
    let missing = format!("sha256:{}", "0".repeat(64));
    for (from, says) in [
        (
            serde_json::json!({"reference": "registry.local/base:1", "layout": base}),
            "is not pinned by digest",
        ),
        (
            serde_json::json!({"reference": format!("registry.local/base:1@{missing}"), "layout": base}),
            "is not in the layout",
        ),
        (
            serde_json::json!({"reference": format!("registry.local/sbom:1@{sbom}"), "layout": plain}),
            "an artifact cannot be a base",
        ),
        // A config blob's digest is not an image either.
        (
            serde_json::json!({"reference": format!("registry.local/base:1@{base_config}"), "layout": base}),
            "not an image",
        ),
        // No layout and a registry that is down.
        (
            serde_json::json!({"reference": format!("127.0.0.1:1/base:1@{base_digest}")}),
            "cannot reach registry 127.0.0.1:1",
        ),
    ] {
        let mut s = spec.clone();
        s["fromImage"] = from;
        std::fs::write(&spec_path, s.to_string()).unwrap();
        let err = build(&spec_path, &root, &out, &[]).unwrap_err();
        assert!(err.contains(says), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!out.join("index.json").exists(), "nothing written");
    }
    // A layout whose layer bytes were changed: refused, nothing tagged.
    let tampered = d.join("tampered");
    run(Command::new("cp").arg("-r").arg(&base).arg(&tampered));
    let layer = blob(&base, &base_digest)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let file = tampered.join("blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let mut s = spec.clone();
    s["fromImage"] = serde_json::json!({
        "reference": format!("registry.local/base:1@{base_digest}"),
        "layout": tampered,
    });
    std::fs::write(&spec_path, s.to_string()).unwrap();
    let err = build(&spec_path, &root, &out, &["--no-cache"]).unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
    let tagged = std::fs::read_to_string(out.join("index.json")).unwrap_or_default();
    assert!(!tagged.contains("ref.name"), "nothing tagged: {tagged}");
}

/// `berth_registry_received_bytes_total` of `server`.
fn received(server: &berth_tests::Server) -> u64 {
    let text = String::from_utf8(
        berth_tests::http("GET", &format!("{}/metrics", server.url()), &[], b"").body,
    )
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("berth_registry_received_bytes_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn an_image_on_a_base_pushes_once_and_again_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (base, base_digest) = base_layout(d);
    let (spec_path, root) = crate::newcomer::store_spec(d);
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    spec["fromImage"] = serde_json::json!({
        "reference": format!("registry.local/base:1@{base_digest}"),
        "layout": base.display().to_string(),
    });
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let server = berth_tests::Server::start(&d.join("registry"), &[]);
    let push = || {
        let o = berth_build(
            &[&spec_path],
            &root,
            &[
                "--cache-dir",
                d.join("cache").to_str().unwrap(),
                "--no-sbom",
                "--push",
                &format!("{}/apps/on-base:1", server.host()),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let before = received(&server);
    let digest = push();
    let sent = received(&server) - before;
    // Every blob once: the base's layers (as its manifest sizes them),
    // berth's layers, the config and the manifest.
    let manifest = blob_from(&server, &digest);
    let blobs: u64 = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    assert!(sent >= blobs, "sent {sent} for {blobs} bytes of blobs");
    assert!(
        sent < blobs + 64 * 1024,
        "sent {sent} for {blobs} bytes of blobs"
    );
    let base_bytes: u64 = blob(&base, &base_digest)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(blobs > base_bytes, "the base's layers are among them");
    // Again: the registry has every blob; nothing but the manifest moves.
    let before = received(&server);
    assert_eq!(push(), digest);
    let again = received(&server) - before;
    assert!(again < 64 * 1024, "a re-push sent {again} bytes");
}

/// The manifest `digest` of apps/on-base from `server`, parsed.
fn blob_from(server: &berth_tests::Server, digest: &str) -> serde_json::Value {
    berth_tests::http(
        "GET",
        &format!("{}/v2/apps/on-base/manifests/{digest}", server.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    )
    .json()
}

#[test]
fn a_base_named_by_reference_is_fetched_from_its_registry_and_copied_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (base, _) = base_layout(d);
    // The base in a registry (the one a team would pull alpine from).
    let upstream = berth_tests::Server::start(&d.join("upstream"), &[]);
    crate::clients::skopeo_push(&base, "1", &format!("{}/library/base:1", upstream.host()));
    let served = berth_tests::http(
        "GET",
        &format!("{}/v2/library/base/manifests/1", upstream.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    let base_digest = berth_tests::sha256(&served.body);
    let (spec_path, root) = crate::newcomer::store_spec(d);
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    spec["fromImage"] = serde_json::json!({
        "reference": format!("{}/library/base:1@{base_digest}", upstream.host()),
    });
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    // Into a layout, and pushed to another registry.
    let target = berth_tests::Server::start(&d.join("target"), &[]);
    let out = d.join("out");
    let before = received(&target);
    let o = berth_build(
        &[&spec_path],
        &root,
        &[
            "--no-sbom",
            "--cache-dir",
            d.join("cache").to_str().unwrap(),
            "-o",
            &format!("oci:{}:v1", out.display()),
            "--push",
            &format!("{}/apps/on-base:1", target.host()),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let digest = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let sent = received(&target) - before;
    let manifest = blob(&out, &digest);
    let base_manifest: serde_json::Value = serde_json::from_slice(&served.body).unwrap();
    let base_layers = base_manifest["layers"].as_array().unwrap();
    assert_eq!(
        &manifest["layers"].as_array().unwrap()[..base_layers.len()],
        &base_layers
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l["annotations"] =
                    serde_json::json!({"dev.berth.base.digest": base_digest.as_str()});
                l
            })
            .collect::<Vec<_>>()[..]
    );
    let blobs: u64 = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    assert!(
        sent >= blobs && sent < blobs + 64 * 1024,
        "the target received {sent} bytes for {blobs} bytes of blobs: each once"
    );
    // A digest the registry does not have: one line, nothing written.
    let missing = format!("sha256:{}", "1".repeat(64));
    spec["fromImage"]["reference"] =
        serde_json::json!(format!("{}/library/base:1@{missing}", upstream.host()));
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let none = d.join("none");
    let err = build(&spec_path, &root, &none, &["--no-cache"]).unwrap_err();
    assert!(
        err.contains("has no manifest") && err.contains("check the digest"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!none.exists(), "nothing written");
}

#[test]
fn a_push_into_the_bases_own_registry_mounts_the_base_layers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (base, _) = base_layout(d);
    let server = berth_tests::Server::start(&d.join("registry"), &[]);
    crate::clients::skopeo_push(&base, "1", &format!("{}/library/base:1", server.host()));
    let served = berth_tests::http(
        "GET",
        &format!("{}/v2/library/base/manifests/1", server.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    let base_digest = berth_tests::sha256(&served.body);
    let base_manifest: serde_json::Value = serde_json::from_slice(&served.body).unwrap();
    let base_bytes: u64 = base_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    let (spec_path, root) = crate::newcomer::store_spec(d);
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    spec["fromImage"] = serde_json::json!({
        "reference": format!("{}/library/base:1@{base_digest}", server.host()),
    });
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let before = received(&server);
    let o = berth_build(
        &[&spec_path],
        &root,
        &[
            "--no-sbom",
            "--no-cache",
            "--push",
            &format!("{}/apps/on-base:1", server.host()),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stderr);
    let sent = received(&server) - before;
    let layers = base_manifest["layers"].as_array().unwrap().len();
    assert!(
        said.contains(&format!("{layers} mounted")),
        "the base's {layers} layers are mounted: {said}"
    );
    assert!(
        sent < base_bytes,
        "the registry received {sent} bytes; the base's layers ({base_bytes} bytes) were mounted, not sent"
    );
    // --verify rebuilds the whole image, base included, and finds it.
    let dest = format!("{}/apps/on-base:1", server.host());
    let verify = |spec: &Path| {
        berth_build(
            &[spec],
            &root,
            &["--no-sbom", "--no-cache", "--verify", &dest],
        )
    };
    let ok = verify(&spec_path);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The same closure on another base is not that image.
    std::fs::create_dir_all(d.join("other")).unwrap();
    let (other, other_digest) = base_layout(&d.join("other"));
    assert_ne!(other_digest, base_digest, "umoci stamps each base apart");
    spec["fromImage"] = serde_json::json!({
        "reference": format!("registry.local/other:1@{other_digest}"),
        "layout": other,
    });
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let differs = verify(&spec_path);
    assert_eq!(
        differs.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&differs.stderr)
    );
}

/// A two-platform base: an OCI index over an amd64 and an arm64 image
/// (each with a file naming its platform) in one layout. The layout and
/// the index digest, and each platform's manifest.
fn two_platform_base(dir: &Path) -> (PathBuf, String, [serde_json::Value; 2]) {
    require("umoci");
    let layout = dir.join("multi");
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout));
    let mut entries = Vec::new();
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let img = format!("{}:{arch}", layout.display());
        run(Command::new("umoci").args(["new", "--image", &img]));
        let rootfs = dir.join(format!("root-{arch}"));
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/platform"), arch).unwrap();
        run(Command::new("umoci")
            .args(["insert", "--image", &img])
            .arg(&rootfs)
            .arg("/"));
        run(Command::new("umoci").args(["config", "--image", &img, "--architecture", arch]));
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let entry = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == arch)
            .unwrap()
            .clone();
        manifests.push(blob(&layout, entry["digest"].as_str().unwrap()));
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": entry["digest"],
            "size": entry["size"],
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = berth_tests::sha256(&bytes);
    std::fs::write(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
        &bytes,
    )
    .unwrap();
    let [a, b]: [serde_json::Value; 2] = manifests.try_into().unwrap();
    (layout, digest, [a, b])
}

#[test]
fn a_two_platform_base_gives_each_image_its_platforms_layers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (layout, index_digest, [amd, arm]) = two_platform_base(d);
    let (spec_path, root) = crate::newcomer::store_spec(d);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    let from = serde_json::json!({
        "reference": format!("registry.local/multi:1@{index_digest}"),
        "layout": layout.display().to_string(),
    });
    let mut specs = Vec::new();
    for arch in ["amd64", "arm64"] {
        let mut s = spec.clone();
        s["architecture"] = arch.into();
        s["fromImage"] = from.clone();
        let p = d.join(format!("spec-{arch}.json"));
        std::fs::write(&p, s.to_string()).unwrap();
        specs.push(p);
    }
    let out = d.join("out");
    let o = berth_build(
        &specs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &root,
        &[
            "--index",
            "--no-cache",
            "-o",
            &format!("oci:{}:v1", out.display()),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let top = blob(&out, String::from_utf8_lossy(&o.stdout).trim());
    let children = top["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    for (child, base) in children.iter().zip([&amd, &arm]) {
        let m = blob(&out, child["digest"].as_str().unwrap());
        let want = &base["layers"][0]["digest"];
        assert_eq!(&m["layers"][0]["digest"], want, "{}", child["platform"]);
        let config = blob(&out, m["config"]["digest"].as_str().unwrap());
        assert_eq!(config["architecture"], child["platform"]["architecture"]);
    }
    assert_ne!(amd["layers"][0]["digest"], arm["layers"][0]["digest"]);
    // A platform the index lacks, and a base for another platform.
    let mut s = spec.clone();
    s["architecture"] = "riscv64".into();
    s["fromImage"] = from.clone();
    std::fs::write(&spec_path, s.to_string()).unwrap();
    let err = build(&spec_path, &root, &d.join("none"), &["--no-cache"]).unwrap_err();
    assert!(
        err.contains("no image for linux/riscv64") && err.contains("linux/amd64, linux/arm64"),
        "{err}"
    );
    let arm_in_layout = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(layout.join("index.json")).unwrap(),
    )
    .unwrap()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    s["architecture"] = "amd64".into();
    s["fromImage"]["reference"] = format!("registry.local/multi:arm@{arm_in_layout}").into();
    std::fs::write(&spec_path, s.to_string()).unwrap();
    let err = build(&spec_path, &root, &d.join("none"), &["--no-cache"]).unwrap_err();
    assert!(
        err.contains("it is for linux/arm64, the spec for linux/amd64"),
        "{err}"
    );
    assert!(!d.join("none").exists(), "nothing written");
}

#[test]
fn files_of_the_base_that_the_image_replaces_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (base, base_digest) = base_layout(d);
    let (spec_path, root) = crate::newcomer::store_spec(d);
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    spec["fromImage"] = serde_json::json!({
        "reference": format!("registry.local/base:1@{base_digest}"),
        "layout": base.display().to_string(),
    });
    let run_build = |spec: &serde_json::Value, out: &str| {
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        let o = berth_build(
            &[&spec_path],
            &root,
            &[
                "--cache-dir",
                d.join("cache").to_str().unwrap(),
                "-o",
                &format!("oci:{}:v1", d.join(out).display()),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // Nothing collides: nothing said.
    spec["extraFiles"] =
        serde_json::json!([{"type": "file", "path": "/etc/app.conf", "contents": "x"}]);
    let said = run_build(&spec, "a");
    assert!(!said.contains("replaced"), "{said}");
    // The image's own /etc/os-release hides the base's: said, twice the
    // same (the second time from the cached list), and built anyway.
    spec["extraFiles"] = serde_json::json!([
        {"type": "file", "path": "/etc/os-release", "contents": "NAME=mine\n"},
        {"type": "symlink", "path": "/bin/cat", "target": "/bin/busybox"},
    ]);
    for out in ["b", "c"] {
        let said = run_build(&spec, out);
        for path in ["/etc/os-release", "/bin/cat"] {
            assert!(
                said.contains(&format!(
                    "{path} of the base registry.local/base:1 is replaced by the image's own"
                )),
                "{said}"
            );
        }
        assert!(!said.contains("/bin/sh"), "{said}");
    }
    assert!(
        d.join("cache/base-files").read_dir().unwrap().count() == 1,
        "the base's file list is kept in the cache"
    );
}
