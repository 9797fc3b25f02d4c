//! A newcomer's first hour (issue 12): the commands a new user runs from
//! README and docs, with the usual mistakes, each driven through the real
//! binary as the user did. Every test here failed on the code before its
//! fix.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_tests::berth_bin;

/// Run `berth args…` under umask 022 (a shell sets it, as a login does).
fn berth_umask(args: &[&str], dir: &Path) -> Output {
    let mut script = String::from("umask 022; exec \"$0\"");
    for i in 1..=args.len() {
        // `${10}`, not `$10` (which is `$1` and a 0).
        script.push_str(&format!(" \"${{{i}}}\""));
    }
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(berth_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn berth(args: &[&str]) -> Output {
    Command::new(berth_bin()).args(args).output().unwrap()
}

/// `out` is a failure whose stderr says `says`.
fn refused(out: &Output, says: &str) {
    assert!(!out.status.success(), "it succeeded");
    let err = text(&out.stderr);
    assert!(err.contains(says), "{err}");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Point 1: the three writers keep the registry's scheme and refuse what
/// containerd would misread; point 5 for hosts.toml.
#[test]
fn hosts_config_keeps_the_registry_scheme_and_refuses_what_containerd_misreads() {
    let dir = tempfile::tempdir().unwrap();
    let hosts_config = |args: &[&str]| {
        let mut all = vec!["mirror", "hosts-config"];
        all.extend_from_slice(args);
        berth_umask(&all, dir.path())
    };
    let reg = "registry.lan:5000=http://registry.lan:5000";
    let mirror = "http://127.0.0.1:5001";
    let talos = hosts_config(&["--registry", reg, "--mirror-url", mirror, "--talos"]);
    assert!(talos.status.success(), "{}", text(&talos.stderr));
    let out = text(&talos.stdout);
    assert!(
        out.contains("          - http://127.0.0.1:5001\n          - http://registry.lan:5000\n"),
        "{out}"
    );
    let k3s = hosts_config(&["--registry", reg, "--mirror-url", mirror, "--k3s"]);
    let out = text(&k3s.stdout);
    assert!(
        out.contains("      - \"http://127.0.0.1:5001\"\n      - \"http://registry.lan:5000\"\n"),
        "the k3s mirror falls back to the registry: {out}"
    );
    let d = dir.path().join("certs.d");
    let written = hosts_config(&[
        "--registry",
        reg,
        "--mirror-url",
        mirror,
        "--containerd-dir",
        d.to_str().unwrap(),
    ]);
    assert!(written.status.success(), "{}", text(&written.stderr));
    let hosts = d.join("registry.lan:5000/hosts.toml");
    let toml = std::fs::read_to_string(&hosts).unwrap();
    assert!(
        toml.contains("server = \"http://registry.lan:5000\""),
        "{toml}"
    );
    assert_eq!(mode(&hosts), 0o644, "containerd (and others) can read it");
    // A mirror URL without a scheme: refused with the fix.
    let bad = hosts_config(&["--registry", reg, "--mirror-url", "127.0.0.1:5001"]);
    refused(&bad, "write http://127.0.0.1:5001");
    // A URL where the name belongs: the right form is named.
    let url = hosts_config(&["--registry", "http://registry.lan:5000"]);
    refused(&url, "registry.lan:5000=http://registry.lan:5000");
    // A bare name: HTTPS assumed, and said so with the plain-HTTP form.
    let bare = hosts_config(&["--registry", "registry.lan:5000", "--talos"]);
    assert!(bare.status.success());
    assert!(text(&bare.stdout).contains("- https://registry.lan:5000"));
    assert!(
        text(&bare.stderr).contains("--registry registry.lan:5000=http://registry.lan:5000"),
        "{}",
        text(&bare.stderr)
    );
}

/// A two-path closure under a store root of its own (no Nix needed), and
/// its spec.
pub(crate) fn store_spec(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    let mut closure = Vec::new();
    for (i, name) in ["lib", "app"].iter().enumerate() {
        let path = format!("/nix/store/{}{i}-{name}", "b".repeat(31));
        let d = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::write(
            d.join("bin").join(name),
            format!("#!/bin/sh\necho {name}\n"),
        )
        .unwrap();
        closure.push(serde_json::json!({
            "path": path, "narHash": format!("sha256:{i}"), "narSize": 100, "references": []
        }));
    }
    let spec = dir.join("spec.json");
    let roots: Vec<&str> = closure
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    std::fs::write(
        &spec,
        serde_json::json!({"version": 1, "name": "app", "closure": closure, "roots": roots})
            .to_string(),
    )
    .unwrap();
    (spec, root)
}

/// Point 5: what berth writes is readable as the umask allows, like what
/// other tools write.
#[test]
fn outputs_respect_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, root) = store_spec(dir.path());
    let layout = dir.path().join("layout");
    let archive = dir.path().join("app.tar");
    let out = berth_umask(
        &[
            "build",
            spec.to_str().unwrap(),
            "--store-root",
            root.to_str().unwrap(),
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
            "-q",
            "-o",
            &format!("oci:{}", layout.display()),
            "-o",
            &format!("docker-archive:{}:app:1", archive.display()),
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut checked = vec![
        layout.join("index.json"),
        layout.join("oci-layout"),
        archive.clone(),
    ];
    for blob in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        checked.push(blob.unwrap().path());
    }
    for p in &checked {
        assert_eq!(mode(p), 0o644, "{}", p.display());
    }
}

/// Points 8 and 9: a missing input names every alternative; a flag that
/// would be ignored is an error.
#[test]
fn missing_arguments_name_the_alternatives_and_ignored_flags_are_errors() {
    let build = berth(&["build"]);
    assert!(!build.status.success());
    let err = text(&build.stderr);
    assert!(err.contains("<SPEC|--nix <STOREPATH>...>"), "{err}");
    let bump = berth(&["bump", "--repo", "."]);
    assert!(!bump.status.success());
    let err = text(&bump.stderr);
    assert!(
        err.contains("--set") && err.contains("--resolve") && err.contains("--list"),
        "{err}"
    );
    for (flags, named) in [
        (
            &["--entrypoint", "/x"][..],
            "--entrypoint applies only with --nix",
        ),
        (&["--cmd", "x"][..], "--cmd applies only with --nix"),
        (
            &["--plain-http"][..],
            "--plain-http applies only with --push or --verify",
        ),
        (
            &["--label", "revision"][..],
            "--label \"revision\" is not KEY=VALUE",
        ),
    ] {
        let mut args = vec!["build", "spec.json"];
        args.extend_from_slice(flags);
        let out = berth(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out.stderr).contains(named), "{}", text(&out.stderr));
    }
}

/// Points 3 and 10: a bump that checked nothing fails (unless told to
/// accept that), and the registry's failure is said once, with a fix that
/// fits a loopback registry.
#[test]
fn a_bump_that_checked_nothing_fails_and_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        repo.join("app.yaml"),
        "spec:\n  containers:\n    - image: 127.0.0.1:1/apps/web:1.0\n",
    )
    .unwrap();
    let repo_s = repo.to_str().unwrap();
    let down = berth(&["bump", "--repo", repo_s, "--resolve"]);
    assert_eq!(down.status.code(), Some(1), "{}", text(&down.stderr));
    let err = text(&down.stderr);
    assert!(
        text(&down.stdout).contains("1 not resolved"),
        "{}",
        text(&down.stdout)
    );
    assert_eq!(
        err.matches("127.0.0.1:1:").count(),
        1,
        "the registry named once: {err}"
    );
    assert!(
        !err.contains("--plain-http"),
        "loopback is plain HTTP already: {err}"
    );
    assert!(
        !err.contains("--offline"),
        "--offline cannot go with --resolve: {err}"
    );
    let relaxed = berth(&["bump", "--repo", repo_s, "--resolve", "--allow-incomplete"]);
    assert!(relaxed.status.success(), "{}", text(&relaxed.stderr));
    // A --set that matches no reference.
    let digest = format!("sha256:{}", "a".repeat(64));
    let set = format!("127.0.0.1:1/apps/other={digest}");
    let unmatched = berth(&["bump", "--repo", repo_s, "--offline", "--set", &set]);
    assert_eq!(unmatched.status.code(), Some(1));
    assert!(
        text(&unmatched.stderr).contains("--set 127.0.0.1:1/apps/other: no reference"),
        "{}",
        text(&unmatched.stderr)
    );
    assert!(text(&unmatched.stdout).contains("1 target(s) matching nothing"));
}

/// Point 7: `--check-config` checks what start-up needs, and start-up
/// fails before it creates anything; errors name the key. Point 16: one
/// answer style for every server's check.
#[test]
fn the_bot_config_check_reads_the_secret_files_start_up_needs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("bot.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\nsecret_file = \"{}/missing-secret\"\n[git]\nremote = \"r\"\n",
            state.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let config_s = config.to_str().unwrap();
    let check = berth(&["bot", "--check-config", "--config", config_s]);
    assert!(!check.status.success(), "a missing secret passed the check");
    let err = text(&check.stderr);
    assert!(
        err.contains("secret_file = ") && err.contains("missing-secret"),
        "{err}"
    );
    let start = berth(&["bot", "--config", config_s, "--listen", "127.0.0.1:0"]);
    refused(&start, "secret_file = ");
    assert!(
        !state.exists(),
        "start-up created the state directory before failing"
    );
    std::fs::write(dir.path().join("missing-secret"), "s\n").unwrap();
    let ok = berth(&["bot", "--check-config", "--config", config_s]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(
        text(&ok.stdout),
        format!("{config_s}: configuration is valid\n")
    );
    let serve = berth(&["serve", "--check-config"]);
    assert_eq!(
        text(&serve.stdout),
        "configuration is valid (built-in defaults)\n"
    );
    let mirror = berth(&["mirror", "--check-config"]);
    assert_eq!(
        text(&mirror.stdout),
        "configuration is valid (built-in defaults)\n"
    );
}

/// Point 17: a busy port leaves no data directory behind, and scrapes are
/// counted under their own route. Point 15: a registry listening beyond
/// loopback without authentication says so.
#[test]
fn serve_binds_before_it_creates_anything_and_names_its_own_routes() {
    let dir = tempfile::tempdir().unwrap();
    let server = berth_tests::Server::start(&dir.path().join("one"), &[]);
    let second = dir.path().join("two");
    let busy = berth(&[
        "serve",
        "--listen",
        &server.addr.to_string(),
        "--data",
        second.to_str().unwrap(),
    ]);
    assert!(!busy.status.success());
    assert!(text(&busy.stderr).contains("--listen 127.0.0.1:0"));
    assert!(
        !second.exists(),
        "a failed start created {}",
        second.display()
    );
    berth_tests::http("GET", &format!("{}/healthz", server.url()), &[], b"");
    let metrics = berth_tests::http("GET", &format!("{}/metrics", server.url()), &[], b"");
    let metrics = text(&metrics.body);
    assert!(
        metrics.contains(
            r#"berth_registry_requests_total{route="healthz",method="GET",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"route="other""#), "{metrics}");
}

/// Point 12: URL-shaped input and the usual address forms are accepted or
/// answered with the form to write.
#[test]
fn urls_and_addresses_are_accepted_or_answered_with_the_right_form() {
    let push = berth(&[
        "build",
        "spec.json",
        "--push",
        "http://127.0.0.1:5000/team/app:v1",
    ]);
    refused(&push, "write 127.0.0.1:5000/team/app:v1");
    let mirror = berth(&[
        "mirror",
        "--registry",
        "http://r.lan:5000",
        "--check-config",
    ]);
    refused(&mirror, "r.lan:5000=http://r.lan:5000");
    let colon = berth(&["serve", "--listen", ":5000", "--check-config"]);
    refused(&colon, "127.0.0.1:5000");
    let localhost = berth(&["serve", "--listen", "localhost:0", "--check-config"]);
    assert!(localhost.status.success(), "{}", text(&localhost.stderr));
    let garbage = berth(&["mirror", "--listen", "five-thousand", "--check-config"]);
    assert!(
        text(&garbage.stderr).contains("e.g. 127.0.0.1:5000"),
        "{}",
        text(&garbage.stderr)
    );
}

/// Point 13: what `hosts-config --help` promises, a flag does; the
/// mirror's containerd warning is printed once and names the file it read.
#[test]
fn the_containerd_check_is_a_flag_and_its_warning_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("k3s-containerd.toml");
    std::fs::write(&bad, "version = 2\n").unwrap();
    let bad_s = bad.to_str().unwrap();
    let check = berth(&["mirror", "hosts-config", "--check-containerd", bad_s]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        text(&check.stderr).contains("config_path"),
        "{}",
        text(&check.stderr)
    );
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
    )
    .unwrap();
    let ok = berth(&[
        "mirror",
        "hosts-config",
        "--check-containerd",
        good.to_str().unwrap(),
    ]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    // The mirror reads the file its config names, and says so once.
    let config = dir.path().join("mirror.toml");
    std::fs::write(
        &config,
        format!(
            "registries = [\"r.lan:5000\"]\ndata = \"{}/cache\"\ncontainerd_config = \"{bad_s}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (mut child, line) = berth_tests::spawn_first_line(
        Command::new(berth_bin())
            .args(["mirror", "--config", config.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::piped()),
    );
    assert!(line.contains("listening"), "{line}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("no registry config_path").count(),
        1,
        "said once: {err}"
    );
    assert!(err.contains(bad_s), "{err}");
}

/// Point 16: README's synopses name every flag the binary has (so they
/// cannot fall behind again).
#[test]
fn readme_synopses_name_every_flag_the_binary_has() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    // The fenced lines of a synopsis: from `berth <command>` up to the
    // next line that does not continue it.
    let synopsis = |command: &str| -> String {
        let mut out = String::new();
        let mut inside = false;
        for line in readme.lines() {
            if line.starts_with(&format!("berth {command} "))
                && !line.starts_with(&format!("berth {command} hosts-config"))
            {
                inside = true;
            } else if inside && !line.starts_with(' ') {
                inside = false;
            }
            if inside {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    };
    for command in [
        "serve",
        "build",
        "mirror",
        "mirror hosts-config",
        "bump",
        "bot",
    ] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let help = text(&berth(&args).stdout);
        let text = synopsis(command);
        assert!(
            !text.is_empty(),
            "no synopsis of berth {command} in README.md"
        );
        // Option lines start with `-x, --flag` or `--flag`.
        for flag in help
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with('-'))
            .filter_map(|l| l.split([' ', ',']).find(|w| w.starts_with("--")))
            .filter(|f| *f != "--help" && *f != "--version")
        {
            assert!(
                text.contains(flag),
                "README's synopsis of berth {command} lacks {flag}:\n{text}"
            );
        }
    }
}

/// Point 6: a docker archive is tagged as the help says, and a bad name
/// is reported as typed. Point 11: a spec error is one line with its line
/// and column, said once.
#[test]
fn docker_archives_are_tagged_and_spec_errors_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, root) = store_spec(dir.path());
    let archive = dir.path().join("app.tar");
    let build = |output: &str| {
        berth(&[
            "build",
            spec.to_str().unwrap(),
            "--store-root",
            root.to_str().unwrap(),
            "--no-cache",
            "-q",
            "-o",
            output,
        ])
    };
    let out = build(&format!("docker-archive:{}", archive.display()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("manifest.json")
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["app:latest"]));
    let bad = build(&format!("docker-archive:{}:noTag", archive.display()));
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(
        err.contains("\"noTag\"") && !err.contains("library/"),
        "{err}"
    );
    // Spec errors.
    let unknown = dir.path().join("unknown.json");
    std::fs::write(&unknown, "{\"version\": 1,\n \"entrypoint\": [\"/x\"]}").unwrap();
    let out = berth(&["build", unknown.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown.json") && err.contains("line 2, column"),
        "{err}"
    );
    assert_eq!(
        err.matches("unknown field `entrypoint`").count(),
        1,
        "{err}"
    );
    let cut = dir.path().join("cut.json");
    std::fs::write(&cut, "{\"version\": 1,\n").unwrap();
    let err = text(&berth(&["build", cut.to_str().unwrap()]).stderr);
    assert_eq!(err.matches("EOF while parsing").count(), 1, "{err}");
    assert!(err.contains("line 2, column 0"), "{err}");
}

/// Point 2: `--nix` takes the out-link `nix-build` leaves, relative or
/// not, and gives the image of the store path it points at.
#[test]
fn nix_out_links_and_relative_paths_name_their_store_path() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = crate::build::nix_closure(dir.path());
    std::os::unix::fs::symlink(&app, dir.path().join("result")).unwrap();
    let build = |arg: &str| {
        let out = Command::new(berth_bin())
            .current_dir(dir.path())
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .args(["build", "--nix", arg, "-q"])
            .output()
            .unwrap();
        assert!(out.status.success(), "--nix {arg}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let direct = build(&app);
    assert!(direct.starts_with("sha256:"), "{direct}");
    assert_eq!(build("./result"), direct);
    assert_eq!(build("result"), direct);
    let nowhere = berth(&["build", "--nix", "/tmp", "-q"]);
    refused(&nowhere, "out-link");
}

/// Point 4: a Helm image block without `tag` is reported as the docs say,
/// not skipped in silence; a `repository` key elsewhere is not an image.
#[test]
fn a_helm_block_without_a_tag_is_reported_as_unpinnable() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let values = "image:\n  repository: ghcr.io/org/app\n  pullPolicy: IfNotPresent\nchart:\n  repository: ghcr.io/org/charts\n";
    std::fs::write(repo.join("values.yaml"), values).unwrap();
    let repo_s = repo.to_str().unwrap();
    let list = berth(&["bump", "--repo", repo_s, "--list"]);
    let out = text(&list.stdout);
    assert!(
        out.contains("values.yaml:2\thelm\tghcr.io/org/app\tno `tag` key"),
        "{out}"
    );
    assert!(!out.contains("charts"), "{out}");
    let digest = format!("sha256:{}", "c".repeat(64));
    let set = format!("ghcr.io/org/app={digest}");
    let bump = berth(&["bump", "--repo", repo_s, "--offline", "--set", &set]);
    assert!(
        text(&bump.stderr).contains("ghcr.io/org/app cannot be pinned: no `tag` key"),
        "{}",
        text(&bump.stderr)
    );
    assert!(
        text(&bump.stdout).contains("1 cannot be pinned"),
        "{}",
        text(&bump.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("values.yaml")).unwrap(),
        values
    );
}

/// Point 14: with its registry down, the mirror is not ready and says
/// why, logs the outage once at info level, and shows it as a gauge.
#[test]
fn a_mirror_tells_when_its_registry_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = berth_tests::Server::start(&dir.path().join("reg"), &[]);
    let host = server.host();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = berth_tests::put_blob(&server, "team/app", config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": []
    })
    .to_string();
    berth_tests::put_manifest(
        &server,
        "team/app",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    );
    let registry = format!("{host}={}", server.url());
    let (mut mirror, line) = berth_tests::spawn_first_line(
        Command::new(berth_bin())
            .args([
                "mirror",
                "--listen",
                "127.0.0.1:0",
                "--registry",
                &registry,
                "--data",
            ])
            .arg(dir.path().join("cache"))
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped()),
    );
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let get = |path: &str| berth_tests::http("GET", &format!("{url}{path}"), &[], b"");
    assert_eq!(get("/readyz").status, 200);
    let tag = format!("/v2/team/app/manifests/v1?ns={host}");
    assert_eq!(get(&tag).status, 200);
    server.kill9();
    // The last verified tag is still served; readiness and metrics say why.
    assert_eq!(get(&tag).status, 200);
    let ready = get("/readyz");
    assert_eq!(ready.status, 503);
    let body = text(&ready.body);
    assert!(
        body.contains(&format!("registry {host} unreachable")),
        "{body}"
    );
    let metrics = text(&get("/metrics").body);
    assert!(
        metrics.contains(&format!(
            "berth_mirror_registry_up{{registry=\"{host}\"}} 0"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"berth_mirror_requests_total{kind="manifest",source="stale",result="ok"} 1"#
        ),
        "{metrics}"
    );
    mirror.kill().unwrap();
    let out = mirror.wait_with_output().unwrap();
    let log = text(&out.stderr);
    assert_eq!(
        log.matches("registry unreachable: serving cached content")
            .count(),
        1,
        "the outage is logged once, at info level: {log}"
    );
}

/// Point 15: a registry without authentication that listens beyond
/// loopback says so at start-up. (It binds the wildcard address for a
/// moment and is sent nothing.)
#[test]
fn serve_warns_when_it_listens_beyond_loopback_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    // berth serve on `listen`: its first line and what it said on stderr.
    let start = |listen: &str, data: &str| {
        let (mut child, line) = berth_tests::spawn_first_line(
            Command::new(berth_bin())
                .args(["serve", "--listen", listen, "--data"])
                .arg(dir.path().join(data))
                .stderr(std::process::Stdio::piped()),
        );
        child.kill().unwrap();
        (line, text(&child.wait_with_output().unwrap().stderr))
    };
    let (line, err) = start("0.0.0.0:0", "data");
    assert!(line.contains("listening on http://0.0.0.0:"), "{line}");
    assert!(err.contains("has no [auth]: anyone"), "{err}");
    // On loopback it stays quiet.
    let (_, err) = start("127.0.0.1:0", "data2");
    assert!(!err.contains("warning"), "{err}");
}
