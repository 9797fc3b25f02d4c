//! The deployment in `deploy/`, checked without a cluster (none runs
//! here): every overlay and part renders with `kubectl kustomize`, every
//! object validates against the Kubernetes 1.32 schemas
//! (`kubernetes-validate --strict`), the workloads keep the policy of
//! `tests/deploy/policy.py`, the configuration files the manifests carry
//! pass `berth … --check-config`, the alerts name metrics the binaries
//! export, the node configs are what `berth mirror hosts-config` prints,
//! berth's own image (`scripts/release-image`) is reproducible and serves
//! under podman, and `berth bump` moves the digest the deployment pins.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_tests::{berth_bin, http, podman, require, run, run_text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every directory of deploy/ that renders on its own: the two overlays
/// and the four parts Argo CD syncs.
const RENDERED: [&str; 6] = [
    "overlays/homelab",
    "overlays/replicas",
    "parts/registry",
    "parts/registry-replicas",
    "parts/mirror",
    "parts/bot",
];

/// The kinds without a schema in kubernetes-validate (Prometheus
/// Operator's); policy.py checks what they select.
const CRD_KINDS: [&str; 3] = ["ServiceMonitor", "PodMonitor", "PrometheusRule"];

fn python() -> String {
    std::env::var("BERTH_TEST_PYTHON")
        .or_else(|_| std::env::var("BERTH_ORAS_PYTHON"))
        .unwrap_or_else(|_| "python3".into())
}

fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("BERTH_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/berth-test/kubeval/bin/kubernetes-validate".into());
    assert!(
        path.is_file(),
        "kubernetes-validate is not installed: run ./scripts/test (it installs it), or: \
         python3 -m venv /opt/berth-test/kubeval && /opt/berth-test/kubeval/bin/pip install kubernetes-validate"
    );
    path
}

/// kubectl, which is not a Debian package.
fn kubectl() -> Command {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    Command::new(found.unwrap_or_else(|| {
        panic!(
            "kubectl is not installed (it is not a Debian package): install kubectl 1.32 \
             from https://dl.k8s.io/release/v1.32.0/bin/linux/amd64/kubectl into /usr/local/bin"
        )
    }))
}

/// `kubectl kustomize deploy/<dir>`, written to `out`.
fn render(dir: &str, out: &Path) -> String {
    let text = run_text(
        kubectl()
            .arg("kustomize")
            .arg(repo().join("deploy").join(dir)),
    );
    std::fs::write(out, &text).unwrap();
    text
}

/// policy.py over `files`: its output, and whether it passed.
fn policy(files: &[&Path]) -> (bool, String) {
    let out = Command::new(python())
        .arg(repo().join("tests/deploy/policy.py"))
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty() || out.status.code() == Some(1),
        "policy.py crashed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn every_overlay_renders_validates_and_keeps_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let validate = kubernetes_validate();
    for name in RENDERED {
        let file = dir.path().join(format!("{}.yaml", name.replace('/', "-")));
        let text = render(name, &file);
        assert!(text.contains("kind: "), "{name} rendered nothing");
        let out = Command::new(&validate)
            .args(["--strict", "-k", "1.32"])
            .arg(&file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} does not validate:\n{said}");
        for line in said.lines() {
            if line.starts_with("INFO") {
                continue;
            }
            assert!(
                CRD_KINDS
                    .iter()
                    .any(|k| line.contains(&format!("schema for kind {k} "))),
                "{name}: {line}"
            );
        }
        let (ok, said) = policy(&[&file]);
        assert!(ok, "{name} breaks the policy:\n{said}");
    }
    // The whole homelab: every part, three workloads.
    let homelab = dir.path().join("overlays-homelab.yaml");
    let (_, said) = policy(&[&homelab]);
    assert!(said.contains("3 containers in 3 workloads"), "{said}");
    // The policy does fail: a limit removed, an image by tag, the mirror's
    // content store writable, the registry as root.
    let text = std::fs::read_to_string(&homelab).unwrap();
    for (what, from, to, says) in [
        (
            "no memory limit",
            "memory: 512Mi",
            "ephemeral-storage: 1Gi",
            "limits.memory",
        ),
        ("a tag", "@sha256:", "-untagged:", "not pinned by digest"),
        (
            "root",
            "runAsNonRoot: true",
            "runAsNonRoot: false",
            "may run as root",
        ),
    ] {
        assert!(text.contains(from), "{what}: {from} is not in the render");
        let broken = dir.path().join("broken.yaml");
        std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
        let (ok, said) = policy(&[&broken]);
        assert!(!ok && said.contains(says), "{what}: {said}");
    }
    let content = "name: containerd-content\n          readOnly: true";
    assert!(text.contains(content), "the mirror's content store mount");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        text.replace(
            content,
            "name: containerd-content\n          readOnly: false",
        ),
    )
    .unwrap();
    let (ok, said) = policy(&[&broken]);
    assert!(!ok && said.contains("may run as root"), "{said}");
}

/// The documents of `yaml` (a render) that are ConfigMaps, by their
/// generator's name (`berth-registry-config-<hash>` → its data).
fn config_maps(yaml: &str) -> Vec<(String, String, String)> {
    // kubectl renders `data:` of a generated ConfigMap as a block scalar
    // per file: `  serve.toml: |` followed by indented lines.
    let mut out = Vec::new();
    for doc in yaml.split("\n---\n") {
        if !doc.contains("kind: ConfigMap") {
            continue;
        }
        let name = doc
            .lines()
            .find_map(|l| l.strip_prefix("  name: "))
            .unwrap()
            .to_owned();
        let mut lines = doc.lines().peekable();
        while let Some(l) = lines.next() {
            if let Some(file) = l.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")) {
                let mut body = String::new();
                while let Some(next) = lines.peek() {
                    if let Some(b) = next.strip_prefix("    ") {
                        body.push_str(b);
                        body.push('\n');
                        lines.next();
                    } else if next.is_empty() {
                        body.push('\n');
                        lines.next();
                    } else {
                        break;
                    }
                }
                out.push((name.clone(), file.to_owned(), body));
            }
        }
    }
    out
}

/// The example Secrets' values of `yaml`, written as files under `dir`
/// (as the pods would see them).
fn secret_files(yaml: &str, dir: &Path) {
    for doc in yaml.split("\n---\n") {
        if !doc.contains("kind: Secret") {
            continue;
        }
        let mut in_data = false;
        for l in doc.lines() {
            if l == "stringData:" {
                in_data = true;
            } else if in_data {
                match l.strip_prefix("  ").and_then(|l| l.split_once(": ")) {
                    Some((k, v)) if !l.starts_with("   ") => {
                        std::fs::write(dir.join(k), v.trim_matches('"')).unwrap();
                    }
                    _ => in_data = false,
                }
            }
        }
    }
}

#[test]
fn the_configuration_the_manifests_carry_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secrets = d.join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let homelab = render("overlays/homelab", &d.join("homelab.yaml"));
    let replicas = render("overlays/replicas", &d.join("replicas.yaml"));
    secret_files(&homelab, &secrets);
    secret_files(&replicas, &secrets);
    // The mirror's key must be 64 hex digits; the example says CHANGE-ME.
    std::fs::write(secrets.join("p2p-key"), "ab".repeat(32)).unwrap();
    // What the pods mount, moved under the test's directory.
    let relocate = |text: &str| {
        text.replace(
            "/run/secrets/berth-mirror/",
            &format!("{}/", secrets.display()),
        )
        .replace(
            "/run/secrets/berth-bot/",
            &format!("{}/", secrets.display()),
        )
        .replace("/run/secrets/berth/", &format!("{}/", secrets.display()))
        .replace("/var/lib/", &format!("{}/var-lib-", d.display()))
    };
    // The replicas' PostgreSQL and bucket, real ones started here.
    let pg = berth_tests::postgres::PgServer::start();
    let s3 = berth_tests::s3::S3Server::seaweedfs();
    s3.create_bucket("registry");
    std::fs::write(secrets.join("s3-access-key-id"), "k").unwrap();
    std::fs::write(secrets.join("s3-secret-access-key"), "s").unwrap();
    let mut checked = BTreeSet::new();
    for (yaml, which) in [(&homelab, "homelab"), (&replicas, "replicas")] {
        for (map, file, body) in config_maps(yaml) {
            let subcommand = match file.as_str() {
                "serve.toml" => "serve",
                "mirror.toml" => "mirror",
                "bot.toml" => "bot",
                other => panic!("{map} carries {other}, which no test checks"),
            };
            let mut text = relocate(&body);
            if which == "replicas" && subcommand == "serve" {
                text = text
                    .replace(
                        "postgres://berth@postgres.databases.svc.cluster.local:5432/berth",
                        &pg.database(),
                    )
                    .replace(
                        "http://seaweedfs-s3.storage.svc.cluster.local:8333",
                        &s3.endpoint,
                    );
                assert!(text.contains("[metadata]") && text.contains(&s3.endpoint));
            }
            let path = d.join(format!("{which}-{file}"));
            std::fs::write(&path, &text).unwrap();
            let mut cmd = Command::new(berth_bin());
            cmd.args([subcommand, "--check-config", "--config"])
                .arg(&path);
            if subcommand == "mirror" {
                // As the DaemonSet passes it, with the node's address.
                cmd.args(["--advertise-url", "http://10.0.0.2:5001"]);
            }
            let out = cmd.env_remove("BERTH_CONFIG").output().unwrap();
            assert!(
                out.status.success(),
                "{which} {file}: {}\n{text}",
                String::from_utf8_lossy(&out.stderr)
            );
            checked.insert(format!("{which}/{file}"));
        }
    }
    assert_eq!(
        checked.into_iter().collect::<Vec<_>>(),
        [
            "homelab/bot.toml",
            "homelab/mirror.toml",
            "homelab/serve.toml",
            "replicas/bot.toml",
            "replicas/mirror.toml",
            "replicas/serve.toml"
        ]
    );
}

/// The `berth_…` metric names a scrape of `url` shows (after a request,
/// so the per-request series exist, as they do on any running server).
fn exported(url: &str) -> BTreeSet<String> {
    http("GET", &format!("{url}/v2/"), &[], b"");
    let text = String::from_utf8(http("GET", &format!("{url}/metrics"), &[], b"").body).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| n.starts_with("berth_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_alerts_name_metrics_the_binaries_export() {
    let dir = tempfile::tempdir().unwrap();
    let server = berth_tests::Server::start(&dir.path().join("registry"), &[]);
    let mut mirror = Command::new(berth_bin())
        .args(["mirror", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("mirror"))
        .args(["--registry", &format!("{0}=http://{0}", server.host())])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(mirror.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mirror_url = format!(
        "http://{}",
        line.split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("berth mirror printed no address: {line:?}"))
    );
    let mut names = exported(&server.url());
    names.extend(exported(&mirror_url));
    let _ = mirror.kill();
    let _ = mirror.wait();
    let rules =
        std::fs::read_to_string(repo().join("deploy/monitoring/registry/prometheusrule.yaml"))
            .unwrap();
    let mut used = BTreeSet::new();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("berth_") {
            used.insert(word.to_owned());
        }
    }
    assert!(used.len() >= 5, "{used:?}");
    for name in &used {
        assert!(
            names.contains(name),
            "the alerts use {name}, which neither berth serve nor berth mirror exports:\n{names:?}"
        );
    }
}

#[test]
fn the_node_configs_are_what_hosts_config_prints() {
    for (file, flag) in [
        ("talos-mirror-patch.yaml", "--talos"),
        ("k3s-registries.yaml", "--k3s"),
    ] {
        let printed = run_text(Command::new(berth_bin()).args([
            "mirror",
            "hosts-config",
            flag,
            "--registry",
            "registry.lan",
            "--registry",
            "docker.io",
            "--registry",
            "ghcr.io",
        ]));
        let committed = std::fs::read_to_string(repo().join("deploy/nodes").join(file)).unwrap();
        assert_eq!(
            committed, printed,
            "deploy/nodes/{file} is not what `berth mirror hosts-config {flag}` prints: regenerate it (docs/deploy.md)"
        );
    }
}

#[test]
fn the_argo_cd_applications_point_at_parts_that_render() {
    let apps = std::fs::read_to_string(repo().join("deploy/argocd/berth.yaml")).unwrap();
    let paths: Vec<&str> = apps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path: "))
        .collect();
    assert_eq!(
        paths,
        [
            "deploy/parts/registry",
            "deploy/parts/mirror",
            "deploy/parts/bot"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    for p in paths {
        let text = render(p.trim_start_matches("deploy/"), &dir.path().join("x.yaml"));
        assert!(text.contains("namespace: berth"), "{p}");
    }
    assert_eq!(apps.matches("kind: Application").count(), 3);
}

/// `scripts/release-image <berth> -q -o oci:<dir>:0.1.0`: the digest.
fn release_image(out: &Path) -> String {
    let o = Command::new("bash")
        .arg(repo().join("scripts/release-image"))
        .arg(berth_bin())
        .args(["-q", "-o", &format!("oci:{}:0.1.0", out.display())])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "release-image: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let digest = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    digest
}

/// A directory with a lower-case path, removed when dropped.
pub(crate) struct LowerDir(pub(crate) PathBuf);

impl LowerDir {
    pub(crate) fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "berth-image-{}-{}",
            std::process::id(),
            berth_tests::free_port()
        ));
        std::fs::create_dir(&path).unwrap();
        Self(path)
    }
}

impl Drop for LowerDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn berths_image_is_reproducible_and_serves_under_podman() {
    require("podman");
    require("patchelf");
    require("nix-store");
    let dir = tempfile::tempdir().unwrap();
    // podman names an image pulled from a layout after its path, which
    // must then be lower case (a temporary directory's name is not).
    let layouts = LowerDir::new();
    let first = release_image(&layouts.0.join("a"));
    let second = release_image(&layouts.0.join("b"));
    assert_eq!(first, second, "the same binary gives the same image");
    let root = dir.path().join("podman");
    let id = run_text(&mut podman(
        &root,
        &[
            "pull",
            "-q",
            &format!("oci:{}:0.1.0", layouts.0.join("a").display()),
        ],
    ))
    .trim()
    .to_owned();
    let limits = berth_tests::PODMAN_LIMITS;
    // As the Deployment runs it: non-root, read-only root filesystem.
    let port = berth_tests::free_port();
    let listen = format!("127.0.0.1:{port}");
    let name = format!("berth-image-{port}");
    let mut args = vec!["run", "-d", "--name", &name, "--network", "host"];
    args.extend(limits);
    args.extend([
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--user",
        "1000:1000",
        &id,
        "serve",
        "--listen",
        &listen,
        "--data",
        "/tmp/data",
    ]);
    run(&mut podman(&root, &args));
    let url = format!("http://{listen}");
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(r) = berth_tests::try_http("GET", &format!("{url}/healthz"), &[], b"") {
            answered = Some(r);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let logs = || run_text(&mut podman(&root, &["logs", &name]));
    let health = answered.unwrap_or_else(|| panic!("no answer from the container: {}", logs()));
    assert_eq!(health.status, 200);
    let v2 = http("GET", &format!("{url}/v2/"), &[], b"");
    assert_eq!(v2.status, 200, "{}", logs());
    assert!(logs().contains(&format!("listening on http://{listen}")));
    let _ = podman(&root, &["rm", "-f", &name]).output();
    // The bot's git is there and finds its helpers and libraries.
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend(limits);
    args.extend([
        "--entrypoint",
        "git",
        &id,
        "ls-remote",
        "https://127.0.0.1:1/x",
    ]);
    let out = podman(&root, &args).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("unable to access") && !said.contains("error while loading"),
        "{said}"
    );
    let _ = podman(&root, &["rmi", "--all", "--force"]).output();
}

#[test]
fn berth_bump_moves_the_digest_the_deployment_pins() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("gitops");
    run(Command::new("cp")
        .arg("-r")
        .arg(repo().join("deploy"))
        .arg(&copy));
    let new = format!("sha256:{}", "5e".repeat(32));
    let out = run_text(
        Command::new(berth_bin())
            .args(["bump", "--repo"])
            .arg(&copy)
            .args([
                "--offline",
                "--set",
                &format!("registry.lan/berth/berth:0.1.0={new}"),
            ]),
    );
    assert!(out.contains("berth-image"), "{out}");
    // One line changed, in the component every part includes.
    let diff = Command::new("diff")
        .arg("-r")
        .arg(repo().join("deploy"))
        .arg(&copy)
        .output()
        .unwrap();
    let diff = String::from_utf8_lossy(&diff.stdout);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with('<') || l.starts_with('>'))
        .collect();
    assert_eq!(changed.len(), 2, "{diff}");
    assert!(changed[1].ends_with(&format!("digest: {new}")), "{diff}");
    assert!(
        diff.contains("components/berth-image/kustomization.yaml"),
        "{diff}"
    );
    // The rendered manifests (what a repository of plain YAML would hold)
    // are bumped the same way: only the image lines change.
    let rendered = dir.path().join("rendered");
    std::fs::create_dir(&rendered).unwrap();
    let before = render("overlays/homelab", &rendered.join("homelab.yaml"));
    let pin =
        std::fs::read_to_string(repo().join("deploy/components/berth-image/kustomization.yaml"))
            .unwrap();
    let pinned = pin
        .lines()
        .find_map(|l| l.trim().strip_prefix("digest: "))
        .expect("the component pins a digest");
    let old = format!("registry.lan/berth/berth:0.1.0@{pinned}");
    assert!(
        before.contains(&old),
        "the render pins the committed digest"
    );
    run_text(
        Command::new(berth_bin())
            .args(["bump", "--repo"])
            .arg(&rendered)
            .args([
                "--offline",
                "--set",
                &format!("registry.lan/berth/berth:0.1.0={new}"),
            ]),
    );
    let after = std::fs::read_to_string(rendered.join("homelab.yaml")).unwrap();
    assert_eq!(
        after,
        before.replace(&old, &format!("registry.lan/berth/berth:0.1.0@{new}")),
        "only the digests changed"
    );
    assert_eq!(after.matches(&new).count(), 3, "registry, mirror and bot");
    // Every workload of every overlay now runs the new digest.
    for o in ["overlays/homelab", "overlays/replicas"] {
        let text = run_text(kubectl().arg("kustomize").arg(copy.join(o)));
        let images: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .collect();
        assert_eq!(
            images.into_iter().collect::<Vec<_>>(),
            [format!("registry.lan/berth/berth:0.1.0@{new}").as_str()],
            "{o}"
        );
    }
}

#[test]
fn the_ci_examples_call_commands_and_flags_that_exist() {
    let help = |args: &[&str]| run_text(Command::new(berth_bin()).args(args).arg("--help"));
    let build = help(&["build"]);
    let bump = help(&["bump"]);
    for file in ["forgejo-actions.yaml", "github-actions.yaml"] {
        let text = std::fs::read_to_string(repo().join("deploy/ci").join(file)).unwrap();
        // Each `berth` command line (joined over its `\` continuations).
        let joined = text.replace("\\\n", " ");
        let mut commands = 0;
        for line in joined.lines() {
            let (help_text, rest) = if let Some(i) = line.find("#build-image -- ") {
                (&build, &line[i + "#build-image -- ".len()..])
            } else if let Some(i) = line.find("#berth -- bump ") {
                (&bump, &line[i + "#berth -- bump ".len()..])
            } else {
                continue;
            };
            commands += 1;
            // The command's own words: up to a pipe or the end of `$(…)`.
            let own = rest.split(['|', ')', ';']).next().unwrap();
            for flag in own
                .split_whitespace()
                .filter(|w| w.starts_with('-'))
                .map(|w| w.split('=').next().unwrap())
            {
                assert!(
                    help_text.contains(&format!("{flag} "))
                        || help_text.contains(&format!("{flag},")),
                    "{file}: {flag} is not a flag of that command"
                );
            }
        }
        assert!(commands >= 1, "{file} runs no berth command");
        assert!(text.contains("robot$apps+ci"), "{file} pushes as the robot");
    }
}
