//! The mission's loop on one machine, as docs/walkthrough.md tells it and
//! with real programs only: nix-bin builds an application's closure → CI
//! runs `berth build --nix --push` as the project's robot into `berth
//! serve` (auth on, HTTPS from a test CA) → the registry's signed push
//! webhook → `berth bot` → a branch and pull request on the fake forge
//! over a real git repository holding an Argo CD Application and a
//! kustomization → the test merges it as the forge's button does → three
//! containerd "nodes", each with its own `berth mirror` and the hosts.toml
//! `hosts-config` writes, pull the digest the merged manifests now name,
//! at once, through the CRI `PullImage` call kubelet makes. The registry
//! sends the image's bytes about once, every node holds that digest, and
//! the pull request names the source revision from the image's labels.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::forge::{FakeForge, Flavor};
use berth_tests::{Containerd, Server, TestCa, berth_bin, free_port, require, run, run_text};

use crate::bot::{BotProc, wait_for};
use crate::bump::{git, remote_with};
use crate::nix::{busybox_dir, nix};

const ROBOT: &str = "robot$apps+ci";
const ROBOT_SECRET: &str = "robot-secret-of-the-apps-project";

/// `curl --cacert ca` of `url`: the body.
fn curl(ca: &Path, url: &str) -> String {
    run_text(
        Command::new(require("curl"))
            .args(["-sSf", "--cacert"])
            .arg(ca)
            .arg(url),
    )
}

#[test]
fn a_ci_push_reaches_every_node_through_the_bots_pull_request_and_the_mirrors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // --- The registry: accounts, HTTPS, and a webhook to the bot. -------
    let ca = TestCa::new();
    let ca_file = d.join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (cert, key) = ca.leaf(&["127.0.0.1", "localhost"]);
    std::fs::write(d.join("tls.crt"), cert).unwrap();
    std::fs::write(d.join("tls.key"), key).unwrap();
    std::fs::write(d.join("root.pw"), "root-password").unwrap();
    std::fs::write(d.join("robot.secret"), ROBOT_SECRET).unwrap();
    std::fs::write(d.join("webhook.secret"), "a-webhook-secret-shared-by-both").unwrap();
    let bot_port = free_port();
    let serve = d.join("serve.toml");
    std::fs::write(
        &serve,
        format!(
            r#"[auth]
service = "registry.walkthrough"

[[auth.users]]
name = "root"
password_file = "{d}/root.pw"
admin = true

[[auth.projects]]
name = "apps"
public = true

[[auth.robots]]
name = "{ROBOT}"
secret_file = "{d}/robot.secret"
permissions = [{{ repositories = ["apps/**"], actions = ["pull", "push"] }}]

[tls]
cert_file = "{d}/tls.crt"
key_file = "{d}/tls.key"

[[webhooks]]
name = "bot"
url = "http://127.0.0.1:{bot_port}/webhook"
secret_file = "{d}/webhook.secret"
projects = ["apps"]

[webhook]
allow = ["127.0.0.1/32"]
"#,
            d = d.display()
        ),
    )
    .unwrap();
    let server = Server::start(&d.join("registry"), &["--config", serve.to_str().unwrap()]);
    assert_eq!(server.scheme, "https");
    let host = server.host();
    let metrics = || curl(&ca_file, &format!("{}/metrics", server.url()));

    // --- The GitOps repository: an Argo CD Application and its app. ----
    let application = String::from(
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: web\n  namespace: argocd\nspec:\n  project: default\n  source:\n    repoURL: https://forgejo.lan/infra/gitops.git\n    targetRevision: main\n    path: apps/web\n  destination:\n    server: https://kubernetes.default.svc\n    namespace: web\n  syncPolicy:\n    automated: { prune: true, selfHeal: true }\n",
    );
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {{ app: web }}\n  template:\n    metadata:\n      labels: {{ app: web }}\n    spec:\n      containers:\n        - name: web\n          image: {host}/apps/web:main # the bot pins the digest here\n"
    );
    let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: web\nresources:\n  - deployment.yaml\n";
    let gitops = remote_with(
        d,
        &[
            ("argocd/web.yaml", &application),
            ("apps/web/deployment.yaml", &deployment),
            ("apps/web/kustomization.yaml", kustomization),
        ],
    );
    let forge = FakeForge::start(Flavor::Gitea, gitops.bare.clone(), "forge-token");
    std::fs::write(d.join("forge.token"), "forge-token").unwrap();

    // --- The bot. -------------------------------------------------------
    let bot_config = d.join("bot.toml");
    std::fs::write(
        &bot_config,
        format!(
            "listen = \"127.0.0.1:{bot_port}\"\nstate_dir = \"{d}/bot\"\nsecret_file = \"{d}/webhook.secret\"\ndebounce_ms = 300\nretry_ms = 300\n\n[git]\nremote = \"{remote}\"\n\n[forge]\nkind = \"forgejo\"\nurl = \"{furl}\"\nrepo = \"{frepo}\"\ntoken_file = \"{d}/forge.token\"\n",
            d = d.display(),
            remote = gitops.url,
            furl = forge.url,
            frepo = forge.repo()
        ),
    )
    .unwrap();
    let bot = BotProc::start_env(&bot_config, &[("SSL_CERT_FILE", &ca_file)]);

    // --- The application's repository and its closure, built by Nix. ---
    let src = d.join("web-src");
    std::fs::create_dir_all(&src).unwrap();
    git(&src, &["init", "-q", "--initial-branch=main"]);
    std::fs::write(src.join("greeting"), "hello from web\n").unwrap();
    git(&src, &["add", "."]);
    git(
        &src,
        &[
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.invalid",
            "commit",
            "-q",
            "-m",
            "web: greet",
        ],
    );
    let revision = git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
    busybox_dir(&src);
    std::fs::write(
        src.join("default.nix"),
        r#"
let
  busybox = builtins.path { path = ./bbdir; name = "busybox-static"; };
  bb = "${busybox}/bin/busybox";
in builtins.derivation {
  name = "web-1.0";
  system = builtins.currentSystem;
  builder = bb;
  args = [ "sh" "-c" ''
    ${bb} mkdir -p $out/bin $out/share
    ${bb} cp ${./greeting} $out/share/greeting
    ${bb} printf '#!${bb} sh\n${bb} cat '$out'/share/greeting\n' > $out/bin/web
    ${bb} chmod 555 $out/bin/web
  '' ];
}
"#,
    )
    .unwrap();
    let app = run_text(nix("nix-build").arg(&src).arg("--no-out-link"))
        .trim()
        .to_owned();
    assert!(app.starts_with("/nix/store/"), "{app}");

    // --- CI: build and push as the robot, over HTTPS. -------------------
    let image = format!("{host}/apps/web:main");
    let out = Command::new(berth_bin())
        .args(["build", "--nix", &app])
        .args(["--entrypoint", &format!("{app}/bin/web"), "--name", "web"])
        .args([
            "--label",
            &format!("org.opencontainers.image.revision={revision}"),
            "--label",
            "org.opencontainers.image.source=https://forgejo.lan/apps/web",
        ])
        .args(["-q", "--no-cache", "--push", &image, "--username", ROBOT])
        .env("BERTH_PASSWORD", ROBOT_SECRET)
        .env("SSL_CERT_FILE", &ca_file)
        .env("XDG_CACHE_HOME", d.join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berth build --push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");

    // --- The registry told the bot; the bot opened the pull request. ----
    wait_for("the bot's pull request", || forge.open().len() == 1);
    let pr = forge.open()[0].clone();
    wait_for("the pull request to name the pushed digest", || {
        crate::bump::remote_file(&gitops, &pr.head, "apps/web/deployment.yaml").contains(&digest)
    });
    wait_for("the bot to finish", || bot.status()["pending"] == 0);
    let pr = forge.open()[0].clone();
    assert!(pr.body.contains(&digest), "{}", pr.body);
    assert!(
        pr.body.contains(&revision),
        "the pull request names the source revision: {}",
        pr.body
    );

    // --- Someone presses Merge. -----------------------------------------
    let merged = berth_tests::http(
        "POST",
        &format!(
            "{}/api/v1/repos/{}/pulls/{}/merge",
            forge.url,
            forge.repo(),
            pr.number
        ),
        &[
            ("Authorization", "token forge-token"),
            ("Content-Type", "application/json"),
        ],
        br#"{"Do": "merge"}"#,
    );
    assert_eq!(merged.status, 200);
    assert!(forge.prs()[0].merged);

    // --- What Argo CD would apply: main, rendered. ----------------------
    let main = d.join("main");
    run(Command::new("git")
        .args(["clone", "-q", "--branch", "main"])
        .arg(&gitops.bare)
        .arg(&main));
    let rendered = run_text(
        Command::new(require("kubectl"))
            .arg("kustomize")
            .arg(main.join("apps/web")),
    );
    let pinned = rendered
        .lines()
        .find_map(|l| l.trim().trim_start_matches("- ").strip_prefix("image: "))
        .unwrap_or_else(|| panic!("no image in the rendered app:\n{rendered}"))
        .to_owned();
    assert_eq!(pinned, format!("{image}@{digest}"));
    let unchanged = std::fs::read_to_string(main.join("argocd/web.yaml")).unwrap();
    assert_eq!(unchanged, application, "nothing else changed");

    // --- Three nodes pull it at once through their mirrors. -------------
    // (An anonymous pull token, as any client of a public project gets.)
    let token: serde_json::Value = serde_json::from_str(&curl(
        &ca_file,
        &format!(
            "{}/token?service=registry.walkthrough&scope=repository:apps/web:pull",
            server.url()
        ),
    ))
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&run_text(
        Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(&ca_file)
            .args([
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
                "-H",
                &format!("Authorization: Bearer {}", token["token"].as_str().unwrap()),
            ])
            .arg(format!("{}/v2/apps/web/manifests/{digest}", server.url())),
    ))
    .unwrap();
    let image_bytes: u64 = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    let urls = crate::mirror::node_urls(3);
    let mut mirrors = Vec::new();
    let mut nodes: Vec<(Containerd, PathBuf)> = Vec::new();
    for i in 0..3 {
        mirrors.push(crate::mirror::Mirror::start_env(
            urls[i].trim_start_matches("http://"),
            &d.join(format!("mirror-{i}")),
            &[format!("{host}=https://{host}")],
            &crate::mirror::peer_config(&urls, i),
            &[("SSL_CERT_FILE", &ca_file)],
        ));
        // As the node's setup step writes it.
        let hosts = d.join(format!("node-{i}/certs.d"));
        run(Command::new(berth_bin())
            .args(["mirror", "hosts-config", "--registry"])
            .arg(format!("{host}=https://{host}"))
            .args(["--mirror-url", &urls[i], "--containerd-dir"])
            .arg(&hosts));
        let cd = berth_tests::start_cri_containerd(&d.join(format!("cd-{i}")), &hosts);
        nodes.push((cd, hosts));
    }
    let sent = || crate::mirror::metric(&metrics(), "berth_registry_blob_sent_bytes_total");
    let before = sent();
    let barrier = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        for (cd, _) in &nodes {
            let (barrier, pinned) = (&barrier, &pinned);
            s.spawn(move || {
                barrier.wait();
                berth_tests::cri_pull_image(cd.socket(), pinned)
                    .unwrap_or_else(|e| panic!("CRI PullImage of {pinned}: {e}"));
            });
        }
    });
    for (cd, _) in &nodes {
        let listed = run_text(cd.ctr().args(["--namespace", "k8s.io", "images", "ls"]));
        assert!(listed.contains(&digest), "{listed}");
    }
    let registry_sent = sent() - before;
    eprintln!(
        "walkthrough: three nodes pulled a {image_bytes}-byte image; the registry sent {registry_sent} blob bytes"
    );
    assert!(
        registry_sent >= image_bytes,
        "the bytes came from the registry once"
    );
    assert!(
        registry_sent as f64 <= 1.1 * image_bytes as f64,
        "the registry sent {registry_sent} bytes for a {image_bytes}-byte image to three nodes"
    );
    drop(mirrors);
    drop(bot);
}
