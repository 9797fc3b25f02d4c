//! The Nix side, with Debian's nix-bin and no nixpkgs: every `.nix` file
//! parses; `nix/lib`'s buildImage is evaluated and built for real on
//! hand-written busybox derivations and its spec gives an image podman
//! runs as the non-root user it declares; the real `flake.nix` is
//! evaluated with nixpkgs replaced by the stub flake in `tests/nix/`
//! (`nix flake show`, `nix run .#build-image`, every image's spec); and the
//! config the registry module renders is accepted by `berth serve
//! --check-config`.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::{berth_bin, podman, require, run, run_text};
use serde_json::Value;

pub(crate) const NIX_HINT: &str =
    "run ./scripts/test (it installs them), or: apt-get install -y nix-bin busybox-static";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A nix-bin command with no binary cache (none is reachable here) and
/// flakes enabled.
pub(crate) fn nix(cmd: &str) -> Command {
    assert!(
        Path::new(&format!("/usr/bin/{cmd}")).exists(),
        "{cmd} is not installed: {NIX_HINT}"
    );
    let mut c = Command::new(cmd);
    c.args([
        "--option",
        "substituters",
        "",
        "--extra-experimental-features",
        "nix-command flakes",
    ]);
    c
}

/// `nix-build DIR -A ATTR --no-out-link`: the output path.
fn nix_build(dir: &Path, attr: &str) -> String {
    run_text(
        nix("nix-build")
            .arg(dir)
            .args(["-A", attr, "--no-out-link"]),
    )
    .trim()
    .to_owned()
}

pub(crate) fn busybox_dir(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "busybox is not installed: {NIX_HINT}");
    let bbdir = dir.join("bbdir");
    std::fs::create_dir_all(bbdir.join("bin")).unwrap();
    std::fs::copy(busybox, bbdir.join("bin/busybox")).unwrap();
    bbdir
}

#[test]
fn every_nix_file_parses() {
    let mut files = vec![repo().join("flake.nix")];
    let mut dirs = vec![
        repo().join("nix"),
        repo().join("images"),
        repo().join("tests/nix"),
    ];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "nix") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 15, "the Nix files are missing: {files:?}");
    for f in &files {
        let out = nix("nix-instantiate")
            .arg("--parse")
            .arg(f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not parse: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn nix_lib_spec_is_the_closure_and_runs_as_its_user() {
    require("podman");
    let dir = tempfile::tempdir().unwrap();
    busybox_dir(dir.path());
    let lib = repo().join("nix/lib");
    std::fs::write(
        dir.path().join("default.nix"),
        format!(
            r#"
let
  busybox = builtins.path {{ path = ./bbdir; name = "busybox-static"; }};
  bb = "${{busybox}}/bin/busybox";
  system = builtins.currentSystem;
  mk = name: script: builtins.derivation {{
    inherit name system; builder = bb; args = [ "sh" "-c" script ];
  }};
  berthLib = import {lib} {{ inherit busybox system; }};
in rec {{
  liba = mk "berth-nixlib-liba-1.0" ''${{bb}} mkdir -p $out/lib; ${{bb}} echo "liba says hi" > $out/lib/liba.txt'';
  app = mk "berth-nixlib-app-1.0" ''
    ${{bb}} mkdir -p $out/bin
    ${{bb}} printf '#!${{bb}} sh\n${{bb}} cat ${{liba}}/lib/liba.txt\n${{bb}} id -u\n${{bb}} ls -ld /home/app\n${{bb}} echo app ran\n' > $out/bin/app
    ${{bb}} chmod 555 $out/bin/app
  '';
  image = berthLib.buildImage {{
    name = "nixlib-test";
    contents = [ app ];
    users = [ {{ name = "app"; uid = 1000; home = "/home/app"; }} ];
    config = {{
      Entrypoint = [ "/bin/app" ];
      User = "1000:1000";
      Env = [ "LIBA=${{liba}}/lib/liba.txt" ];
    }};
  }};
}}
"#,
            lib = lib.display()
        ),
    )
    .unwrap();
    let build = |attr: &str| nix_build(dir.path(), attr);
    let spec_path = build("image");
    let app = build("app");
    let liba = build("liba");

    // The spec's closure, without the carrier of the roots, is exactly
    // what Nix says the roots (app, and liba named in Env) need.
    let spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    assert!(spec["berthSpec"]["rootsFrom"].is_string(), "{spec}");
    let carrier = spec["berthSpec"]["rootsFrom"].as_str().unwrap();
    let mut in_spec: Vec<String> = spec["closure"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_owned())
        .filter(|p| p != carrier)
        .collect();
    in_spec.sort();
    let info: Value = serde_json::from_str(&run_text(
        nix("nix")
            .args(["path-info", "--json", "--recursive"])
            .args([&app, &liba]),
    ))
    .unwrap();
    let mut expected: Vec<String> = info
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    assert_eq!(in_spec, expected);
    assert!(
        !std::fs::read_dir("/nix/store").unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with("nixlib-test.tar")),
        "no image tarball in the store"
    );

    // berth builds it; podman runs it as uid 1000 with its home its own.
    let archive = dir.path().join("image.tar");
    run(Command::new(berth_bin())
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .arg("build")
        .arg(&spec_path)
        .arg("-o")
        .arg(format!(
            "docker-archive:{}:berth-e2e/nixlib:1",
            archive.display()
        )));
    let root = dir.path().join("podman");
    run(&mut podman(
        &root,
        &["load", "--quiet", "-i", archive.to_str().unwrap()],
    ));
    let printed = berth_tests::podman_run(&root, "berth-e2e/nixlib:1");
    run(&mut podman(&root, &["rmi", "--all", "--force"]));
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], "liba says hi", "{printed}");
    assert_eq!(lines[1], "1000", "runs as the declared user: {printed}");
    assert!(
        lines[2].starts_with("drwxr-x---") && lines[2].contains("app"),
        "the home belongs to the user: {printed}"
    );
    assert_eq!(lines[3], "app ran", "{printed}");
}

/// A copy of the stub nixpkgs flake with busybox and the path of the
/// berth binary cargo built.
fn stub_nixpkgs(dir: &Path) -> String {
    let stub = dir.join("stub-nixpkgs");
    std::fs::create_dir_all(&stub).unwrap();
    std::fs::copy(
        repo().join("tests/nix/stub-nixpkgs/flake.nix"),
        stub.join("flake.nix"),
    )
    .unwrap();
    busybox_dir(&stub);
    std::fs::write(stub.join("berth-bin"), berth_bin().to_str().unwrap()).unwrap();
    format!("path:{}", stub.display())
}

/// `nix <args>` on this repository's flake with nixpkgs replaced by `stub`.
fn flake(stub: &str, cache: &Path, args: &[&str]) -> Command {
    require("git");
    let mut c = nix("nix");
    let mut args = args.to_vec();
    let tail = args
        .iter()
        .position(|a| *a == "--")
        .map(|i| args.split_off(i))
        .unwrap_or_default();
    c.current_dir(repo())
        .env("XDG_CACHE_HOME", cache)
        .args(&args)
        .args(["--override-input", "nixpkgs", stub, "--no-write-lock-file"])
        .args(&tail);
    c
}

#[test]
fn the_flake_builds_images_with_the_build_image_app() {
    let dir = tempfile::tempdir().unwrap();
    let stub = stub_nixpkgs(dir.path());
    let cache = dir.path().join("cache");
    let system = "x86_64-linux";

    let show: Value = serde_json::from_str(&run_text(&mut flake(
        &stub,
        &cache,
        &["flake", "show", "--json", "."],
    )))
    .unwrap();
    let images = [
        "ollama",
        "forgejo",
        "nextcloud",
        "calibre-web",
        "jellyfin",
        "berth",
    ];
    let packages = &show["packages"][system];
    assert!(packages["berth"].is_object(), "{show}");
    for i in images {
        assert!(
            packages[format!("image-{i}")].is_object(),
            "image-{i}: {show}"
        );
    }
    assert!(show["apps"][system]["build-image"].is_object(), "{show}");
    for m in ["registry", "mirror", "bot"] {
        assert!(show["nixosModules"][m].is_object(), "module {m}: {show}");
    }
    assert!(show["lib"].is_object(), "{show}");

    // Every image's spec builds, and berth builds an image from each.
    let mut specs = std::collections::BTreeMap::new();
    for i in images {
        let out: Value = serde_json::from_str(&run_text(&mut flake(
            &stub,
            &cache,
            &["build", "--json", "--no-link", &format!(".#image-{i}")],
        )))
        .unwrap();
        let spec = out[0]["outputs"]["out"].as_str().unwrap().to_owned();
        let digest = run_text(
            Command::new(berth_bin())
                .env("XDG_CACHE_HOME", &cache)
                .args(["build", &spec, "--quiet"]),
        );
        assert!(digest.trim().starts_with("sha256:"), "{i}: {digest}");
        specs.insert(i, (spec, digest.trim().to_owned()));
    }

    // nix run .#build-image -- ollama -o oci:DIR gives the digest berth
    // build gives on the same spec.
    let layout = dir.path().join("ollama-oci");
    let via_app = run_text(&mut flake(
        &stub,
        &cache,
        &[
            "run",
            ".#build-image",
            "--",
            "ollama",
            "-o",
            &format!("oci:{}", layout.display()),
        ],
    ));
    assert_eq!(via_app.trim(), specs["ollama"].1);
    let direct = run_text(
        Command::new(berth_bin())
            .env("XDG_CACHE_HOME", &cache)
            .arg("build")
            .arg(&specs["ollama"].0)
            .arg("-o")
            .arg(format!("oci:{}", dir.path().join("direct").display())),
    );
    assert_eq!(via_app.trim(), direct.trim());
    assert!(layout.join("index.json").exists());

    // With no flags it says what it would push, and pushes nothing.
    let out = flake(&stub, &cache, &["run", ".#build-image", "--", "forgejo"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("forgejo:latest {}", specs["forgejo"].1),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing pushed"));

    // An unknown image: exit status 2 and the list of images.
    let out = flake(&stub, &cache, &["run", ".#build-image", "--", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no image named 'nope'") && stderr.contains("jellyfin"),
        "{stderr}"
    );
}

/// Render `nix/modules/<module>` applied to `args` (a Nix attribute set)
/// into a TOML file, as the NixOS module does.
fn render_settings(dir: &Path, module: &str, args: &str) -> PathBuf {
    let expr = format!("import {}/nix/modules/{module} {args}", repo().display());
    let text: String = serde_json::from_str(&run_text(
        nix("nix-instantiate").args(["--eval", "--strict", "--json", "-E", &expr]),
    ))
    .unwrap();
    let path = dir.join(format!(
        "{module}-{}.toml",
        berth_tests::sha256(args.as_bytes())
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// `berth <subcommand> --check-config --config <config>`.
fn check_config(subcommand: &str, config: &Path) -> std::process::Output {
    Command::new(berth_bin())
        .args([subcommand, "--check-config", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// `config` (rendered from `what`) passes `berth <subcommand> --check-config`.
fn assert_accepted(subcommand: &str, config: &Path, what: &str) {
    let out = check_config(subcommand, config);
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(config).unwrap()
    );
}

/// `config` (rendered from `what`) is refused, and the error says `reason`.
fn assert_refused(subcommand: &str, config: &Path, what: &str, reason: &str) {
    let out = check_config(subcommand, config);
    assert!(!out.status.success(), "{what} was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(reason), "{what}: {stderr}");
}

/// Render the registry module's config file, as the module does.
fn registry_config(dir: &Path, settings: &str) -> PathBuf {
    render_settings(
        dir,
        "registry-settings.nix",
        &format!("{{ port = 5123; dataDir = \"/var/lib/berth\"; settings = {settings}; }}"),
    )
}

#[test]
fn the_registry_module_renders_a_config_berth_serve_accepts() {
    let dir = tempfile::tempdir().unwrap();
    // The defaults, and every documented key set.
    for settings in [
        "{ }",
        r#"{ storage.fsync = false; limits = { max_manifest_bytes = 8388608; max_page_size = 500; body_idle_timeout_secs = 60; }; log = { format = "human"; level = "info,berth_registry=debug"; }; }"#,
    ] {
        let config = registry_config(dir.path(), settings);
        assert_accepted("serve", &config, settings);
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("listen = \"0.0.0.0:5123\""), "{text}");
    }
    // A value the binary refuses is refused at --check-config (which the
    // module runs before starting), with the reason.
    for (settings, reason) in [
        ("{ limits.max_page_size = 0; }", "max_page_size"),
        ("{ storage.fsnyc = true; }", "fsnyc"),
    ] {
        assert_refused(
            "serve",
            &registry_config(dir.path(), settings),
            settings,
            reason,
        );
    }
    // [auth] through `settings`: arrays of tables ([[auth.robots]]) with
    // inline tables inside render, and the secrets systemd would hand over
    // (here in the test's directory) are read by the check.
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("robot-ci"), "s3cret\n").unwrap();
    let auth = |secret: &str| {
        format!(
            r#"{{ auth = {{ service = "registry.lan:5000"; projects = [ {{ name = "team"; members = {{ alice = "developer"; }}; }} {{ name = "pub"; public = true; }} ]; robots = [ {{ name = "robot$team+ci"; secret_file = "{}/{secret}"; permissions = [ {{ repositories = [ "team/*" ]; actions = [ "pull" "push" ]; }} ]; }} ]; }}; }}"#,
            creds.display()
        )
    };
    let config = registry_config(dir.path(), &auth("robot-ci"));
    assert_accepted("serve", &config, "auth");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("[[auth.robots]]") && text.contains("[[auth.projects]]"),
        "{text}"
    );
    assert_refused(
        "serve",
        &registry_config(dir.path(), &auth("missing")),
        "auth without its secret",
        "secret_file",
    );
    // [tls] and [audit]: the certificate and key are loaded by the check,
    // so a swapped pair fails the service's ExecStartPre, not a client.
    let (cert, key) = berth_tests::TestCa::new().leaf(&["registry.lan"]);
    std::fs::write(creds.join("tls.crt"), cert).unwrap();
    std::fs::write(creds.join("tls.key"), key).unwrap();
    let tls = |c: &str, k: &str| {
        format!(
            r#"{{ tls = {{ cert_file = "{d}/{c}"; key_file = "{d}/{k}"; }}; audit.retention_days = 30; }}"#,
            d = creds.display()
        )
    };
    assert_accepted(
        "serve",
        &registry_config(dir.path(), &tls("tls.crt", "tls.key")),
        "tls",
    );
    // [storage.s3]: --check-config (the unit's ExecStartPre) probes the
    // bucket, here on moto's S3 server.
    let s3 = berth_tests::s3::S3Server::moto();
    s3.create_bucket("registry");
    std::fs::write(creds.join("s3-key"), "k").unwrap();
    std::fs::write(creds.join("s3-secret"), "s").unwrap();
    let storage = |bucket: &str| {
        format!(
            r#"{{ storage = {{ upload_expiry_hours = 12; s3 = {{ bucket = "{bucket}"; endpoint = "{}"; path_style = true; prefix = "berth/"; part_size_mib = 8; redirect = true; access_key_id_file = "{d}/s3-key"; secret_access_key_file = "{d}/s3-secret"; }}; }}; }}"#,
            s3.endpoint,
            d = creds.display()
        )
    };
    assert_accepted(
        "serve",
        &registry_config(dir.path(), &storage("registry")),
        "s3",
    );
    assert_refused(
        "serve",
        &registry_config(dir.path(), &storage("missing")),
        "s3 with a bucket that does not exist",
        "does not exist",
    );
    // [metadata] on PostgreSQL, as every replica of docs/scaling.md has
    // it: the check connects and reads the schema version, and with
    // [auth] the shared token key is required.
    let mut pg = berth_tests::postgres::PgServer::start();
    std::fs::write(creds.join("token-key"), "a-shared-token-key-of-length-32+").unwrap();
    let metadata = |url: &str| {
        format!(
            r#"{{ metadata = {{ postgres = "{url}"; pool = 8; }}; auth = {{ service = "registry.lan:5000"; token_key_file = "{}/token-key"; projects = [ {{ name = "team"; }} ]; }}; }}"#,
            creds.display()
        )
    };
    assert_accepted(
        "serve",
        &registry_config(dir.path(), &metadata(&pg.database())),
        "postgres",
    );
    assert_refused(
        "serve",
        &registry_config(
            dir.path(),
            &format!(
                r#"{{ metadata.postgres = "{}"; auth = {{ service = "r"; projects = [ {{ name = "team"; }} ]; }}; }}"#,
                pg.database()
            ),
        ),
        "replicas with auth but no shared token key",
        "token_key_file",
    );
    let url = pg.database();
    pg.stop();
    assert_refused(
        "serve",
        &registry_config(dir.path(), &metadata(&url)),
        "postgres that is down",
        "PostgreSQL",
    );
    // [[webhooks]] and [webhook]: a target inside the network only with
    // an allow rule; cloud metadata never without one.
    std::fs::write(creds.join("webhook"), "a-webhook-secret-of-length").unwrap();
    let hooks = |url: &str, allow: &str| {
        format!(
            r#"{{ webhooks = [ {{ name = "bot"; url = "{url}"; secret_file = "{}/webhook"; projects = [ "team" ]; }} ]; webhook.allow = [ {allow} ]; }}"#,
            creds.display()
        )
    };
    assert_accepted(
        "serve",
        &registry_config(
            dir.path(),
            &hooks("http://10.42.0.7:5002/webhook", r#""10.42.0.0/16""#),
        ),
        "webhooks",
    );
    assert_refused(
        "serve",
        &registry_config(dir.path(), &hooks("http://169.254.169.254/latest", "")),
        "a webhook to cloud metadata",
        "may not reach",
    );
    // [[policies]]: immutable tags (globs and a regex), retention rules,
    // untagged removal and a quota per project; [gc] and the free-space
    // floor.
    let policies = r#"{ policies = [ { project = "team"; immutable_tags = [ "v*" "release-?" "re:rc-[0-9]+" ]; retention = [ { tags = "main-*"; latest = 10; } { repositories = "tools/*"; days = 30; } { tags = "v*"; always = true; } ]; remove_untagged = true; quota_mib = 20480; } ]; gc = { grace_minutes = 60; untagged_after_hours = 168; every_hours = 24; }; storage.min_free_mib = 1024; }"#;
    assert_accepted("serve", &registry_config(dir.path(), policies), "policies");
    let two_keeps =
        r#"{ policies = [ { project = "team"; retention = [ { latest = 3; days = 2; } ]; } ]; }"#;
    assert_refused(
        "serve",
        &registry_config(dir.path(), two_keeps),
        "a retention rule keeping two ways",
        "exactly one",
    );
    // A CloudEvents target for every event kind.
    assert_accepted(
        "serve",
        &registry_config(
            dir.path(),
            &format!(
                r#"{{ webhooks = [ {{ name = "ce"; url = "https://events.example.org/harbor"; secret_file = "{}/webhook"; events = [ "push" "delete" "quota" "retention" ]; format = "cloudevents"; }} ]; }}"#,
                creds.display()
            ),
        ),
        "a cloudevents webhook",
    );
    let bad = r#"{ policies = [ { project = "team"; immutable_tags = [ "v/*" ]; } ]; }"#;
    assert_refused(
        "serve",
        &registry_config(dir.path(), bad),
        "a tag pattern with a slash",
        "immutable_tags",
    );
    assert_refused(
        "serve",
        &registry_config(dir.path(), &tls("tls.key", "tls.crt")),
        "tls with cert and key swapped",
        "tls.cert_file",
    );
}

#[test]
fn the_mirror_module_renders_a_config_berth_mirror_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let render = |args: &str| render_settings(dir.path(), "mirror-settings.nix", args);
    for args in [
        "{ }",
        r#"{ registries = [ "registry.lan:5000" "docker.io" ]; extra = { peers = [ "http://10.0.0.3:5001" ]; advertise_url = "http://10.0.0.2:5001"; p2p = { listen = "/ip4/0.0.0.0/tcp/5003"; bootstrap = [ "/dns4/node1.lan/tcp/5003" ]; key_file = "/run/credentials/berth-mirror.service/p2p-key"; }; containerd_content = "/var/lib/containerd/io.containerd.content.v1.content"; }; settings = { upstreams."registry.lan:5000" = "http://10.0.0.2:5000"; cache.max_bytes = 1073741824; upstream.connect_timeout_ms = 500; }; }"#,
    ] {
        assert_accepted("mirror", &render(args), args);
    }
    let bad = r#"{ registries = [ "not a host" ]; }"#;
    assert_refused("mirror", &render(bad), bad, "not a host");
}

#[test]
fn the_bot_module_renders_a_config_berth_bot_accepts() {
    let dir = tempfile::tempdir().unwrap();
    // The credentials systemd would hand the service, where the check can
    // read them (the check reads every secret file start-up needs).
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("webhook-secret"), "s3cret\n").unwrap();
    std::fs::write(creds.join("forge-token"), "tok\n").unwrap();
    let with_creds = |args: &str| {
        args.replacen(
            "{ ",
            &format!("{{ credentials = \"{}\"; ", creds.display()),
            1,
        )
    };
    let render = |args: &str| render_settings(dir.path(), "bot-settings.nix", &with_creds(args));
    for args in [
        r#"{ remote = "https://forgejo.lan/infra/gitops.git"; forge = { kind = "forgejo"; url = "https://forgejo.lan"; repo = "infra/gitops"; }; }"#,
        r#"{ remote = "https://github.com/me/gitops.git"; webhooks = false; forge = { kind = "github"; url = "https://github.com"; repo = "me/gitops"; }; settings = { debounce_ms = 10000; git.group = "apps"; registry = { name = "registry.lan:5000"; plain_http = true; }; poll = { interval_s = 60; images = [ "registry.lan:5000/apps/web:main" ]; }; }; }"#,
    ] {
        assert_accepted("bot", &render(args), args);
    }
    for (args, reason) in [
        (
            r#"{ remote = "r"; settings = { debounce_ms = "soon"; }; }"#,
            "debounce_ms",
        ),
        (
            r#"{ remote = "r"; forge = { kind = "gitlab"; url = "u"; repo = "a/b"; }; }"#,
            "gitlab",
        ),
        (r#"{ remote = "r"; webhooks = false; }"#, "poll"),
    ] {
        assert_refused("bot", &render(args), args, reason);
    }
    // Without the credentials the service would get, the check fails and
    // names the key.
    let missing = render_settings(
        dir.path(),
        "bot-settings.nix",
        r#"{ remote = "r"; credentials = "/nonexistent"; }"#,
    );
    assert_refused("bot", &missing, "no credentials", "secret_file");
}

/// `berth.lib.pullImage` fetches a base from a registry as a fixed-output
/// derivation (a wrong `hash` fails with Nix's own message), and
/// `buildImage { fromImage = …; }` puts a Nix closure on it: the base
/// stays out of the closure, and podman runs the result with both.
#[test]
fn pull_image_is_a_fixed_output_base_for_build_image() {
    require("podman");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    busybox_dir(d);
    let (layout, _) = crate::base::base_layout(d);
    let server = berth_tests::Server::start(&d.join("registry"), &[]);
    crate::clients::skopeo_push(&layout, "1", &format!("{}/library/base:1", server.host()));
    let served = berth_tests::http(
        "GET",
        &format!("{}/v2/library/base/manifests/1", server.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    let digest = berth_tests::sha256(&served.body);
    let write = |hash: &str| {
        std::fs::write(
            d.join("default.nix"),
            format!(
                r#"
let
  busybox = builtins.path {{ path = ./bbdir; name = "busybox-static"; }};
  bb = "${{busybox}}/bin/busybox";
  system = builtins.currentSystem;
  mk = name: script: builtins.derivation {{
    inherit name system; builder = bb; args = [ "sh" "-c" script ];
  }};
  # The berth under test (the sandbox is off on Debian's nix-bin).
  berth = mk "berth-under-test" ''
    ${{bb}} mkdir -p $out/bin
    ${{bb}} printf '#!${{bb}} sh\nexec {bin} "$@"\n' > $out/bin/berth
    ${{bb}} chmod 555 $out/bin/berth
  '';
  berthLib = import {lib} {{ inherit busybox berth system; }};
in rec {{
  base = berthLib.pullImage {{
    imageName = "{host}/library/base";
    imageDigest = "{digest}";
    hash = "{hash}";
    finalImageTag = "1";
  }};
  app = mk "on-base-app-1.0" ''
    ${{bb}} mkdir -p $out/bin
    ${{bb}} printf '#!/bin/sh\ncat /etc/os-release\necho app ran\n' > $out/bin/app
    ${{bb}} chmod 555 $out/bin/app
  '';
  image = berthLib.buildImage {{
    name = "on-base";
    fromImage = base;
    config.Entrypoint = [ "${{app}}/bin/app" ];
  }};
  # The seed's shapes: Ollama on a pinned Alpine, Forgejo on the Gitea
  # image (here both on the local base), each a Nix closure and a config.
  ollama-bin = mk "ollama-0.6.2" ''
    ${{bb}} mkdir -p $out/bin
    ${{bb}} printf '#!/bin/sh\necho "ollama $* on $(cat /etc/os-release | head -n 1) at $OLLAMA_HOST"\n' > $out/bin/ollama
    ${{bb}} chmod 555 $out/bin/ollama
  '';
  ollama = berthLib.buildImage {{
    name = "ollama";
    fromImage = base;
    contents = [ ollama-bin ];
    config = {{
      Entrypoint = [ "/bin/ollama" ];
      Cmd = [ "serve" ];
      Env = [ "OLLAMA_HOST=0.0.0.0:11434" ];
      ExposedPorts."11434/tcp" = {{ }};
    }};
  }};
  forgejo-bin = mk "forgejo-11.0.1" ''
    ${{bb}} mkdir -p $out/bin
    ${{bb}} printf '#!/bin/sh\necho "forgejo $* as $(id -u) in $GITEA_WORK_DIR"\n' > $out/bin/forgejo
    ${{bb}} chmod 555 $out/bin/forgejo
  '';
  forgejo = berthLib.buildImage {{
    name = "forgejo";
    fromImage = base;
    contents = [ forgejo-bin ];
    users = [ {{ name = "git"; uid = 1000; home = "/data/git"; }} ];
    config = {{
      Entrypoint = [ "/bin/forgejo" ];
      Cmd = [ "web" ];
      Env = [ "USER=git" "GITEA_WORK_DIR=/data/gitea" ];
      User = "1000:1000";
      ExposedPorts = {{ "3000/tcp" = {{ }}; "22/tcp" = {{ }}; }};
    }};
  }};
}}
"#,
                bin = berth_bin().display(),
                lib = repo().join("nix/lib").display(),
                host = server.host(),
            ),
        )
        .unwrap();
    };
    // A wrong hash: Nix refuses the output and says what it got.
    write("sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let wrong = nix("nix-build")
        .arg(d)
        .args(["-A", "base", "--no-out-link"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("hash mismatch"), "{said}");
    let got = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("got:"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| panic!("no hash in Nix's message: {said}"));
    // The right hash: the store path is an OCI layout of the base.
    write(&got);
    let base = nix_build(d, "base");
    let index: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&base).join("index.json")).unwrap())
            .unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    // buildImage on it: the base is not in the closure.
    let spec_path = nix_build(d, "image");
    let spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    assert_eq!(spec["berthSpec"]["fromImage"]["layout"], base.as_str());
    assert!(
        !spec["closure"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == base.as_str()),
        "the base's layout is not part of the image's closure"
    );
    let archive = d.join("image.tar");
    run(Command::new(berth_bin())
        .env("XDG_CACHE_HOME", d.join("cache"))
        .arg("build")
        .arg(&spec_path)
        .arg("-o")
        .arg(format!(
            "docker-archive:{}:berth-e2e/on-base:1",
            archive.display()
        )));
    let root = d.join("podman");
    run(&mut podman(
        &root,
        &["load", "--quiet", "-i", archive.to_str().unwrap()],
    ));
    let printed = berth_tests::podman_run(&root, "berth-e2e/on-base:1");
    assert!(printed.contains("berth test base"), "{printed}");
    assert!(printed.contains("app ran"), "{printed}");
    // The seed's Ollama and Forgejo shapes: base + closure + config.
    for (attr, says) in [
        (
            "ollama",
            "ollama serve on NAME=\"berth test base\" at 0.0.0.0:11434",
        ),
        ("forgejo", "forgejo web as 1000 in /data/gitea"),
    ] {
        let spec = nix_build(d, attr);
        let archive = d.join(format!("{attr}.tar"));
        run(Command::new(berth_bin())
            .env("XDG_CACHE_HOME", d.join("cache"))
            .arg("build")
            .arg(&spec)
            .arg("-o")
            .arg(format!(
                "docker-archive:{}:berth-e2e/{attr}:1",
                archive.display()
            )));
        run(&mut podman(
            &root,
            &["load", "--quiet", "-i", archive.to_str().unwrap()],
        ));
        let image = format!("berth-e2e/{attr}:1");
        let printed = berth_tests::podman_run(&root, &image);
        assert_eq!(printed.trim(), says, "{attr}");
        let config: Value = serde_json::from_str(&run_text(&mut podman(
            &root,
            &["image", "inspect", "--format", "{{json .Config}}", &image],
        )))
        .unwrap();
        let env = config["Env"].to_string();
        assert!(
            env.contains("PATH=/bin") && env.contains("LANG=C.UTF-8"),
            "{attr} keeps the base's environment: {env}"
        );
    }
    run(&mut podman(&root, &["rmi", "--all", "--force"]));
}
