//! `berth build` on a real Nix closure: hand-written busybox derivations are
//! built with Debian's nix-bin, the spec comes from `nix path-info --json
//! --recursive`, and the image berth writes is read by skopeo and run by
//! podman. Building again elsewhere, with another thread count, gives the
//! same manifest digest.

use std::path::Path;
use std::process::Command;

use berth_tests::{berth_bin, require, run, run_text};
use serde_json::{Value, json};

const NIX_HINT: &str =
    "run ./scripts/test (it installs them), or: apt-get install -y nix-bin busybox-static";

fn nix(cmd: &str) -> Command {
    assert!(
        Path::new(&format!("/usr/bin/{cmd}")).exists(),
        "{cmd} is not installed: {NIX_HINT}"
    );
    let mut c = Command::new(cmd);
    // No binary cache is reachable here: do not wait for one.
    c.args(["--option", "substituters", ""]);
    c
}

/// Build the test closure and return (app store path, path-info JSON).
pub(crate) fn nix_closure(dir: &Path) -> (String, Value) {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "busybox is not installed: {NIX_HINT}");
    std::fs::create_dir_all(dir.join("bbdir/bin")).unwrap();
    std::fs::copy(busybox, dir.join("bbdir/bin/busybox")).unwrap();
    std::fs::write(
        dir.join("default.nix"),
        r#"
let
  bbdir = builtins.path { path = ./bbdir; name = "busybox-static"; };
  bb = "${bbdir}/bin/busybox";
  mk = name: script: builtins.derivation {
    inherit name; system = builtins.currentSystem;
    builder = bb; args = [ "sh" "-c" script ];
  };
in rec {
  liba = mk "berth-e2e-liba-1.0" ''${bb} mkdir -p $out/lib; ${bb} echo "liba says hi" > $out/lib/liba.txt'';
  app = mk "berth-e2e-app-1.0" ''
    ${bb} mkdir -p $out/bin
    ${bb} printf '#!${bb} sh\n${bb} cat ${liba}/lib/liba.txt\n${bb} echo app ran\n' > $out/bin/app
    ${bb} chmod 555 $out/bin/app
  '';
}
"#,
    )
    .unwrap();
    nix_closure_rebuild(dir)
}

/// `berth build` with its cache in the test's directory (beside the spec).
fn berth_build(spec: &Path, out: &str, extra: &[&str]) -> String {
    run_text(
        Command::new(berth_bin())
            .env("XDG_CACHE_HOME", spec.parent().unwrap().join("cache"))
            .arg("build")
            .arg(spec)
            .args(["-o", out])
            .args(extra),
    )
    .trim()
    .to_owned()
}

#[test]
fn a_nix_closure_becomes_an_image_that_podman_runs() {
    require("skopeo");
    require("podman");
    let dir = tempfile::tempdir().unwrap();
    let (app, closure) = nix_closure(dir.path());
    let paths = closure.as_array().unwrap().len();
    assert_eq!(paths, 3, "app, liba and busybox: {closure}");
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({
            "version": 1,
            "name": "e2e",
            "closure": closure,
            "roots": [app],
            "config": {"Entrypoint": [format!("{app}/bin/app")], "Env": ["LANG=C"]},
            "extraFiles": [{"type": "directory", "path": "/tmp", "mode": "1777"}],
            "annotations": {"org.opencontainers.image.revision": "e2e"},
        })
        .to_string(),
    )
    .unwrap();

    let out = dir.path().join("layout");
    let digest = berth_build(
        &spec,
        &format!("oci:{}:v1", out.display()),
        &["--threads", "2"],
    );
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "stdout is the digest: {digest:?}"
    );

    let inspect: Value = serde_json::from_str(&run_text(
        Command::new("skopeo").args(["inspect", &format!("oci:{}:v1", out.display())]),
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(
        inspect["Layers"].as_array().unwrap().len(),
        paths + 1,
        "a layer per path and the extra files"
    );
    let raw: Value = serde_json::from_str(&run_text(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:v1", out.display()),
    ])))
    .unwrap();
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.revision"],
        "e2e"
    );
    let annotated: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["annotations"]["io.berth.store-paths"].as_str())
        .collect();
    assert!(annotated.contains(&app.as_str()), "{annotated:?}");

    // podman runs it (runc with cgroupfs works in this sandbox).
    let root = dir.path().join("podman");
    let podman = |args: &[&str]| berth_tests::podman(&root, args);
    // The Docker archive loads with podman under the name it carries, and
    // the OCI archive reads back with skopeo.
    let docker = dir.path().join("image.tar");
    let oci = dir.path().join("oci.tar");
    let again = berth_build(
        &spec,
        &format!("docker-archive:{}:berth-e2e/app:v1", docker.display()),
        &["-o", &format!("oci-archive:{}:v2", oci.display())],
    );
    assert_eq!(again, digest, "archives come from the same image");
    let from_archive: Value = serde_json::from_str(&run_text(
        Command::new("skopeo").args(["inspect", &format!("oci-archive:{}:v2", oci.display())]),
    ))
    .unwrap();
    assert_eq!(from_archive["Digest"], digest.as_str());
    let loaded = run_text(&mut podman(&[
        "load",
        "--quiet",
        "-i",
        docker.to_str().unwrap(),
    ]));
    assert!(loaded.contains("berth-e2e/app:v1"), "{loaded}");
    let image = "berth-e2e/app:v1".to_owned();
    let printed = berth_tests::podman_run(&root, &image);
    assert!(printed.contains("liba says hi\napp ran"), "{printed}");
    run(&mut podman(&["rmi", "--all", "--force"]));

    // Uncompressed, the archive is streamed (no layout in between): podman
    // loads and runs it, and it is byte for byte the archive of the layout
    // build of the same image.
    let raw_tar = dir.path().join("raw.tar");
    let raw_digest = berth_build(
        &spec,
        &format!("docker-archive:{}:berth-e2e/app:raw", raw_tar.display()),
        &["--compression", "none", "--no-cache"],
    );
    let raw_layout = dir.path().join("raw-layout.tar");
    let via_layout = berth_build(
        &spec,
        &format!("docker-archive:{}:berth-e2e/app:raw", raw_layout.display()),
        &[
            "--compression",
            "none",
            "-o",
            &format!("oci:{}", dir.path().join("raw-oci").display()),
        ],
    );
    assert_eq!(raw_digest, via_layout);
    assert!(
        std::fs::read(&raw_tar).unwrap() == std::fs::read(&raw_layout).unwrap(),
        "the streamed archive differs from the layout's"
    );
    let loaded = run_text(&mut podman(&[
        "load",
        "--quiet",
        "-i",
        raw_tar.to_str().unwrap(),
    ]));
    assert!(loaded.contains("berth-e2e/app:raw"), "{loaded}");
    let printed = berth_tests::podman_run(&root, "berth-e2e/app:raw");
    assert!(printed.contains("liba says hi\napp ran"), "{printed}");
    run(&mut podman(&["rmi", "--all", "--force"]));

    // Same spec, another directory, one thread: same digest.
    let again = berth_build(
        &spec,
        &format!("oci:{}", dir.path().join("again").display()),
        &["--threads", "1"],
    );
    assert_eq!(again, digest);
}

#[test]
fn bad_specs_fail_with_one_line_and_tag_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (app, closure) = nix_closure(dir.path());
    let write = |name: &str, v: Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let mut dangling = closure.clone();
    dangling[0]["references"] = json!(["/nix/store/00000000000000000000000000000000-not-there"]);
    let mut missing = closure.clone();
    missing
        .as_array_mut()
        .unwrap()
        .push(json!({"path": "/nix/store/11111111111111111111111111111111-never-built", "narHash": "sha256:x", "narSize": 1, "references": []}));
    let cases = [
        (
            write(
                "v9.json",
                json!({"version": 9, "closure": closure, "roots": [app]}),
            ),
            "version 9 is not supported",
        ),
        (
            write(
                "dangling.json",
                json!({"version": 1, "closure": dangling, "roots": [app]}),
            ),
            "not in the closure",
        ),
        (
            write(
                "outside.json",
                json!({"version": 1, "closure": [{"path": "/usr/bin", "narHash": "x", "narSize": 1}], "roots": ["/usr/bin"]}),
            ),
            "not in the store",
        ),
        (
            write(
                "config.json",
                json!({"version": 1, "closure": closure, "roots": [app], "config": {"Env": ["oops"]}}),
            ),
            "NAME=value",
        ),
        (
            write(
                "missing.json",
                json!({"version": 1, "closure": missing, "roots": [app, "/nix/store/11111111111111111111111111111111-never-built"]}),
            ),
            "is not present",
        ),
    ];
    for (spec, want) in cases {
        let out = dir.path().join("out");
        let result = Command::new(berth_bin())
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .arg("build")
            .arg(&spec)
            .arg("-o")
            .arg(format!("oci:{}", out.display()))
            .output()
            .unwrap();
        assert!(!result.status.success(), "{} should fail", spec.display());
        assert!(result.stdout.is_empty(), "no digest on failure");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(want), "want {want:?} in {stderr}");
        // Nothing is tagged as if it were complete.
        if let Ok(index) = std::fs::read(out.join("index.json")) {
            let index: Value = serde_json::from_slice(&index).unwrap();
            assert_eq!(index["manifests"], json!([]), "{}", spec.display());
        }
    }
}

/// A metric's value from berth serve's /metrics.
fn metric(server: &berth_tests::Server, name: &str) -> u64 {
    let text = String::from_utf8(
        berth_tests::http("GET", &format!("{}/metrics", server.url()), &[], b"").body,
    )
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn push_uploads_only_what_the_registry_lacks() {
    require("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let (app, closure) = nix_closure(dir.path());
    let spec_for = |closure: &Value, app: &str, name: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            json!({"version": 1, "closure": closure, "roots": [app], "config": {"Entrypoint": [format!("{app}/bin/app")]}})
                .to_string(),
        )
        .unwrap();
        p
    };
    let spec = spec_for(&closure, &app, "spec.json");
    let server = berth_tests::Server::start(&dir.path().join("registry"), &[]);
    let dest = format!("{}/e2e/pushed:v1", server.host());

    let digest = berth_build(
        &spec,
        &format!("oci:{}", dir.path().join("l1").display()),
        &["--push", &dest, "--no-sbom"],
    );
    let inspect: Value = serde_json::from_str(&run_text(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ])))
    .unwrap();
    assert_eq!(
        inspect["Digest"],
        digest.as_str(),
        "the registry serves the built manifest"
    );

    // No change: HEADs only, nothing uploaded but the manifest.
    let (uploads, received) = (
        metric(&server, "berth_registry_uploads_started_total"),
        metric(&server, "berth_registry_received_bytes_total"),
    );
    let again = berth_build(
        &spec,
        &format!("oci:{}", dir.path().join("l2").display()),
        &["--push", &dest, "--no-sbom"],
    );
    assert_eq!(again, digest);
    assert_eq!(
        metric(&server, "berth_registry_uploads_started_total"),
        uploads,
        "no upload session opened"
    );
    let manifest_len = std::fs::read(dir.path().join("l1/blobs/sha256").join(&digest[7..]))
        .unwrap()
        .len() as u64;
    assert_eq!(
        metric(&server, "berth_registry_received_bytes_total") - received,
        manifest_len
    );

    // Another repository of the same registry: blobs are mounted, not sent.
    let received = metric(&server, "berth_registry_received_bytes_total");
    berth_build(
        &spec,
        &format!("oci:{}", dir.path().join("l3").display()),
        &[
            "--push",
            &format!("{}/e2e/copy:v1", server.host()),
            "--no-sbom",
        ],
    );
    assert_eq!(
        metric(&server, "berth_registry_received_bytes_total") - received,
        manifest_len
    );

    // Change liba (and so app, which references it): only their layers and
    // the config go up.
    let default_nix = std::fs::read_to_string(dir.path().join("default.nix")).unwrap();
    std::fs::write(
        dir.path().join("default.nix"),
        default_nix.replace("liba says hi", "liba says hello"),
    )
    .unwrap();
    let (app2, closure2) = nix_closure_rebuild(dir.path());
    let spec2 = spec_for(&closure2, &app2, "spec2.json");
    let out2 = dir.path().join("l4");
    let received = metric(&server, "berth_registry_received_bytes_total");
    let digest2 = berth_build(
        &spec2,
        &format!("oci:{}", out2.display()),
        &["--push", &dest, "--no-sbom"],
    );
    let m: Value = serde_json::from_slice(
        &std::fs::read(out2.join("blobs/sha256").join(&digest2[7..])).unwrap(),
    )
    .unwrap();
    let old: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("l1/blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    let old_layers: Vec<&Value> = old["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    let new_bytes: u64 = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !old_layers.contains(&&l["digest"]))
        .map(|l| l["size"].as_u64().unwrap())
        .sum::<u64>()
        + m["config"]["size"].as_u64().unwrap();
    let changed = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !old_layers.contains(&&l["digest"]))
        .count();
    assert_eq!(
        changed, 2,
        "liba's and app's layers changed, busybox's did not"
    );
    let manifest2_len = std::fs::read(out2.join("blobs/sha256").join(&digest2[7..]))
        .unwrap()
        .len() as u64;
    assert_eq!(
        metric(&server, "berth_registry_received_bytes_total") - received,
        new_bytes + manifest2_len,
        "exactly the changed layers, the config and the manifest were sent"
    );
}

/// The test closure and a spec with just its closure and root, written
/// to `dir/spec.json`.
fn minimal_spec(dir: &Path) -> std::path::PathBuf {
    let (app, closure) = nix_closure(dir);
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        json!({"version": 1, "closure": closure, "roots": [app]}).to_string(),
    )
    .unwrap();
    spec
}

/// Build `app` from `dir/default.nix` and return (its store path, its
/// path-info JSON).
fn nix_closure_rebuild(dir: &Path) -> (String, Value) {
    let app = run_text(
        nix("nix-build")
            .arg(dir)
            .args(["-A", "app", "--no-out-link"]),
    )
    .trim()
    .to_owned();
    let info = run_text(
        nix("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "--json",
                "--recursive",
            ])
            .arg(&app),
    );
    (app, serde_json::from_str(&info).unwrap())
}

#[test]
fn an_unreachable_registry_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = minimal_spec(dir.path());
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(berth_bin())
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .arg("build")
        .arg(&spec)
        .args(["--push", &format!("127.0.0.1:{port}/x/y:z")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach registry"), "{stderr}");
}

#[test]
fn nix_paths_push_verify_and_pull_with_containerd() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = nix_closure(dir.path());
    let server = berth_tests::Server::start(&dir.path().join("registry"), &[]);
    let dest = format!("{}/e2e/from-nix:v1", server.host());
    let berth = |extra: &[&str]| {
        let mut c = Command::new(berth_bin());
        c.env("XDG_CACHE_HOME", dir.path().join("cache"))
            .args([
                "build",
                "--nix",
                &app,
                "--entrypoint",
                &format!("{app}/bin/app"),
            ])
            .args(extra);
        c
    };
    let digest = run_text(&mut berth(&["--push", &dest])).trim().to_owned();
    // Without -o, the push staged in the cache's layout (so a no-op rebuild
    // reads nothing), and the layer cache has an entry per layer.
    let cache = dir.path().join("cache/berth");
    assert!(
        cache
            .join("staging/blobs/sha256")
            .join(&digest[7..])
            .is_file(),
        "staged manifest"
    );
    assert!(std::fs::read_dir(cache.join("layers")).unwrap().count() >= 3);

    // The SBOM is attached as a referrer, one component per store path.
    let refs = berth_tests::http(
        "GET",
        &format!("{}/v2/e2e/from-nix/referrers/{digest}", server.url()),
        &[],
        b"",
    )
    .json();
    let list = refs["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{refs}");
    assert_eq!(list[0]["artifactType"], "application/vnd.cyclonedx+json");
    let sbom_manifest = berth_tests::http(
        "GET",
        &format!(
            "{}/v2/e2e/from-nix/manifests/{}",
            server.url(),
            list[0]["digest"].as_str().unwrap()
        ),
        &[],
        b"",
    )
    .json();
    let sbom = berth_tests::http(
        "GET",
        &format!(
            "{}/v2/e2e/from-nix/blobs/{}",
            server.url(),
            sbom_manifest["layers"][0]["digest"].as_str().unwrap()
        ),
        &[],
        b"",
    )
    .json();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["components"].as_array().unwrap().len(), 3);
    assert!(
        sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "berth-e2e-app" && c["version"] == "1.0")
    );

    // The registry holds exactly what the inputs build.
    let verified = run_text(&mut berth(&["--verify", &dest]));
    assert_eq!(verified.trim(), digest);
    let differs = berth(&["--env", "EXTRA=1", "--verify", &dest])
        .output()
        .unwrap();
    assert_eq!(differs.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&differs.stderr).contains("differs from its inputs"));

    // containerd pulls and unpacks it (native snapshotter, its own root).
    let cd = berth_tests::Containerd::start(&dir.path().join("containerd"));
    run(cd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &dest,
    ]));
    let list = run_text(cd.ctr().args(["images", "ls"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with(&dest) && l.contains(&digest)),
        "{list}"
    );
}

#[test]
fn several_specs_make_one_multi_architecture_index() {
    require("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let (app, closure) = nix_closure(dir.path());
    let spec_for = |arch: &str| {
        let p = dir.path().join(format!("{arch}.json"));
        std::fs::write(
            &p,
            json!({"version": 1, "closure": closure, "roots": [app], "architecture": arch})
                .to_string(),
        )
        .unwrap();
        p
    };
    let (amd, arm) = (spec_for("amd64"), spec_for("arm64"));
    let server = berth_tests::Server::start(&dir.path().join("registry"), &[]);
    let dest = format!("{}/e2e/multi:v1", server.host());
    let out = dir.path().join("layout");
    let digest = run_text(
        Command::new(berth_bin())
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .arg("build")
            .arg(&amd)
            .arg(&arm)
            .args([
                "--index",
                "-o",
                &format!("oci:{}:multi", out.display()),
                "--push",
                &dest,
            ]),
    )
    .trim()
    .to_owned();

    let raw: Value = serde_json::from_str(&run_text(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ])))
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let archs: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    for arch in ["amd64", "arm64"] {
        let inspect: Value = serde_json::from_str(&run_text(Command::new("skopeo").args([
            "--override-arch",
            arch,
            "inspect",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ])))
        .unwrap();
        assert_eq!(inspect["Architecture"], arch);
    }
    // The layout output holds the same index under its tag.
    let from_layout: Value = serde_json::from_str(&run_text(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:multi", out.display()),
    ])))
    .unwrap();
    assert_eq!(from_layout, raw);
    let registry_digest = berth_tests::http(
        "HEAD",
        &format!("{}/v2/e2e/multi/manifests/v1", server.url()),
        &[],
        b"",
    );
    assert_eq!(
        registry_digest.header("docker-content-digest"),
        Some(digest.as_str())
    );

    // Two images for one platform cannot share an index.
    let dup = Command::new(berth_bin())
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .arg("build")
        .arg(&amd)
        .arg(&amd)
        .args([
            "--index",
            "-o",
            &format!("oci:{}", dir.path().join("dup").display()),
        ])
        .output()
        .unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("one image per platform"));
}

#[test]
fn progress_bars_on_a_terminal_and_silence_without_one() {
    let script = require("script");
    let dir = tempfile::tempdir().unwrap();
    let spec = minimal_spec(dir.path());
    let cmd = format!(
        "{} build {} -o oci:{} --no-cache",
        berth_bin().display(),
        spec.display(),
        dir.path().join("tty").display()
    );
    // script(1) gives berth a pseudo-terminal and records what it drew.
    let typescript = dir.path().join("typescript");
    run(Command::new(&script).arg("-qc").arg(&cmd).arg(&typescript));
    let drawn = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(
        drawn.contains("layers") && drawn.contains("tarred, hashed, compressed"),
        "{drawn}"
    );

    // And a push draws its own bar.
    let server = berth_tests::Server::start(&dir.path().join("registry"), &[]);
    let push = format!(
        "{} build {} --push {}/e2e/bars:v1 --no-cache --cache-dir {}",
        berth_bin().display(),
        spec.display(),
        server.host(),
        dir.path().join("cache").display()
    );
    let pushed = dir.path().join("push-typescript");
    run(Command::new(&script).arg("-qc").arg(&push).arg(&pushed));
    let drawn = String::from_utf8_lossy(&std::fs::read(&pushed).unwrap()).into_owned();
    assert!(drawn.contains("present blobs count as done"), "{drawn}");

    let piped = Command::new(berth_bin())
        .arg("build")
        .arg(&spec)
        .args([
            "-o",
            &format!("oci:{}", dir.path().join("pipe").display()),
            "--no-cache",
        ])
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(
        piped.stderr.is_empty(),
        "no bars without a terminal: {:?}",
        String::from_utf8_lossy(&piped.stderr)
    );
}
