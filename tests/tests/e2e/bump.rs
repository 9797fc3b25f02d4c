//! `berth bump` end to end: the real-world GitOps corpus bumped in full and
//! checked byte by byte, structurally with an independent parser (PyYAML's
//! libyaml), and by rendering its kustomizations with `kubectl kustomize`;
//! digests checked and tags resolved against `berth serve`; branches pushed
//! to a real bare repository served by `git daemon`, and pull requests
//! upserted on a fake forge (Gitea/Forgejo and GitHub API shapes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_tests::forge::{FakeForge, Flavor};
use berth_tests::{
    GitDaemon, Server, berth_bin, put_blob, put_manifest, require, run, run_text, sha256,
};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/gitops")
}

fn copy_dir(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn bump(args: &[&str]) -> Output {
    Command::new(berth_bin())
        .arg("bump")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth bump failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name:tag@digest` → `name`.
fn bare_name(r: &str) -> String {
    let r = r.split('@').next().unwrap();
    let slash = r.rfind('/').map_or(0, |i| i + 1);
    match r[slash..].rfind(':') {
        Some(i) => r[..slash + i].to_owned(),
        None => r.to_owned(),
    }
}

/// The hex of the digest each image is bumped to (by its normalised name:
/// `nginx` and `docker.io/library/nginx` are one image).
fn digest_for(name: &str) -> String {
    let first = name.split('/').next().unwrap();
    let host = name.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    let full = match (host, name.contains('/')) {
        (true, _) => name.to_owned(),
        (false, true) => format!("docker.io/{name}"),
        (false, false) => format!("docker.io/library/{name}"),
    };
    sha256(full.as_bytes())
        .trim_start_matches("sha256:")
        .to_owned()
}

/// Every `*.yaml` under `dir`, relative.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let out = run_text(Command::new("find").arg(dir).args([
        "-type", "f", "(", "-name", "*.yaml", "-o", "-name", "*.yml", ")",
    ]));
    let mut v: Vec<PathBuf> = out
        .lines()
        .map(|l| Path::new(l).strip_prefix(dir).unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// The corpus, bumped: (copy dir, listed refs "file:line" → name).
fn bumped_corpus(dir: &Path) -> (PathBuf, BTreeMap<String, String>) {
    let copy = dir.join("corpus");
    copy_dir(&corpus(), &copy);
    let list = ok(&bump(&["--repo", copy.to_str().unwrap(), "--list"]));
    let mut refs = BTreeMap::new();
    let mut tagless = 0;
    for line in list.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "{line}");
        // Helm image blocks that leave the tag to the chart are listed as
        // such (issue 12, point 4); every other reference is pinnable.
        if cols[1] == "helm" && cols[3].starts_with("no `tag` key") {
            tagless += 1;
            continue;
        }
        assert_eq!(cols[3], "pinnable", "{line}");
        refs.insert(cols[0].to_owned(), bare_name(cols[2]));
    }
    assert!(tagless >= 1, "the corpus has a Helm block without a tag");
    let names: BTreeSet<&String> = refs.values().collect();
    let mut args = vec![
        "--repo".to_owned(),
        copy.to_str().unwrap().to_owned(),
        "--offline".to_owned(),
    ];
    for n in &names {
        args.push("--set".into());
        args.push(format!("{n}=sha256:{}", digest_for(n)));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(&bump(&args));
    let summary = out.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!("{} reference(s) in ", refs.len())),
        "every listed reference is changed: {summary}"
    );
    (copy, refs)
}

#[test]
fn corpus_every_reference_pinned_and_nothing_else_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (copy, refs) = bumped_corpus(dir.path());
    // An independent, line-based census of `image:` scalars: each must be
    // among the references berth found.
    let grep = run_text(
        Command::new("grep")
            .args([
                "-rnE",
                r"^\s*(- )?([A-Za-z]*Image|image):\s+[^ {|>&*]",
                "--include=*.yaml",
                "--include=*.yml",
                ".",
            ])
            .current_dir(corpus()),
    );
    let mut census = 0;
    for line in grep
        .lines()
        .filter(|l| !l.contains("{{") && !l.contains("${"))
    {
        let mut p = line.trim_start_matches("./").splitn(3, ':');
        let key = format!("{}:{}", p.next().unwrap(), p.next().unwrap());
        assert!(refs.contains_key(&key), "berth missed the image at {key}");
        census += 1;
    }
    assert!(census >= 170, "census found {census}");
    assert!(refs.len() >= 230, "{} references", refs.len());

    // Byte check: only listed lines differ, and on them only digest
    // characters were removed or inserted; the new digest is there.
    let mut changed_lines = 0;
    for rel in yaml_files(&corpus()) {
        let old = std::fs::read(corpus().join(&rel)).unwrap();
        let new = std::fs::read(copy.join(&rel)).unwrap();
        let (old, new) = (String::from_utf8_lossy(&old), String::from_utf8_lossy(&new));
        let (a, b): (Vec<&str>, Vec<&str>) = (
            old.split_inclusive('\n').collect(),
            new.split_inclusive('\n').collect(),
        );
        assert_eq!(a.len(), b.len(), "{} changed its line count", rel.display());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if x == y {
                continue;
            }
            changed_lines += 1;
            let key = format!("{}:{}", rel.display(), i + 1);
            let name = refs
                .get(&key)
                .unwrap_or_else(|| panic!("{key} changed but holds no reference:\n-{x}+{y}"));
            let pre = x.bytes().zip(y.bytes()).take_while(|(p, q)| p == q).count();
            let suf = x[pre..]
                .bytes()
                .rev()
                .zip(y[pre..].bytes().rev())
                .take_while(|(p, q)| p == q)
                .count();
            let (removed, inserted) = (&x[pre..x.len() - suf], &y[pre..y.len() - suf]);
            let digesty = |s: &str| s.bytes().all(|c| b"@:sha0123456789abcdef".contains(&c));
            assert!(
                digesty(removed) && digesty(inserted),
                "{key}: -{removed:?} +{inserted:?}"
            );
            assert!(
                y.contains(&digest_for(name)),
                "{key}: the new digest of {name} is missing: {y}"
            );
        }
    }
    assert_eq!(changed_lines, refs.len(), "one changed line per reference");

    // Structure check with an independent parser: the same node tree,
    // scalars differing only by digests, one difference per reference.
    let python = std::env::var("BERTH_TEST_PYTHON")
        .or_else(|_| std::env::var("BERTH_ORAS_PYTHON"))
        .unwrap_or_else(|_| "python3".into());
    let script = dir.path().join("same.py");
    std::fs::write(&script, SAME_STRUCTURE).unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .arg(corpus())
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "structure check failed (PyYAML missing? run ./scripts/test, which installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diffs: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(diffs, refs.len(), "scalars that differ = references bumped");
}

/// Compares every file of two trees node by node with PyYAML (libyaml).
const SAME_STRUCTURE: &str = r#"
import os, re, sys, yaml
DIG = re.compile(r'@?sha256:[0-9a-f]{64}|[0-9a-f]{64}')
diffs = 0
def compose(text):
    return list(yaml.compose_all(text, Loader=yaml.SafeLoader))
def cmp(a, b, where):
    global diffs
    if a is None or b is None:
        assert a is b, where
        return
    assert type(a) is type(b), where
    if isinstance(a, yaml.ScalarNode):
        if a.value == b.value:
            assert a.tag == b.tag, where
            return
        if '\n' in a.value:
            try:
                ia, ib = compose(a.value), compose(b.value)
            except yaml.YAMLError:
                ia = ib = None
            if ia is not None and len(ia) == len(ib) and any(isinstance(n, (yaml.MappingNode, yaml.SequenceNode)) for n in ia):
                for x, y in zip(ia, ib):
                    cmp(x, y, where)
                return
        assert DIG.sub('', a.value) == DIG.sub('', b.value), (where, a.value, b.value)
        diffs += 1
        return
    assert a.tag == b.tag and len(a.value) == len(b.value), where
    if isinstance(a, yaml.SequenceNode):
        for x, y in zip(a.value, b.value):
            cmp(x, y, where)
    else:
        for (ka, va), (kb, vb) in zip(a.value, b.value):
            cmp(ka, kb, where)
            cmp(va, vb, where)
old, new = sys.argv[1], sys.argv[2]
for root, dirs, files in os.walk(old):
    for f in files:
        if not f.endswith(('.yaml', '.yml')):
            continue
        p = os.path.join(root, f)
        rel = os.path.relpath(p, old)
        a = open(p, encoding='utf-8').read()
        b = open(os.path.join(new, rel), encoding='utf-8').read()
        try:
            na = compose(a)
        except yaml.YAMLError:
            assert a == b, rel
            continue
        nb = compose(b)
        assert len(na) == len(nb), rel
        for x, y in zip(na, nb):
            cmp(x, y, rel)
print(diffs)
"#;

/// The top-level `key:` block of a YAML file, verbatim.
fn top_level_block(text: &str, key: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        if !line.starts_with([' ', '-', '#', '\n', '\r']) {
            inside = line.starts_with(&format!("{key}:"));
        }
        if inside {
            out.push_str(line);
        }
    }
    out
}

#[test]
fn kubectl_kustomize_renders_the_new_digests() {
    let kubectl = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("kubectl")).find(|c| c.is_file()))
        .expect("kubectl is not installed: it comes with the machine image (see peers.md), or install kubectl 1.32 from https://dl.k8s.io");
    let dir = tempfile::tempdir().unwrap();
    let (copy, refs) = bumped_corpus(dir.path());
    let mut rendered = 0;
    for rel in yaml_files(&copy)
        .into_iter()
        .filter(|p| p.ends_with("kustomization.yaml"))
    {
        let text = std::fs::read_to_string(copy.join(&rel)).unwrap();
        if !text.contains("\nimages:") {
            continue;
        }
        // The corpus holds only the files that mention images, and no
        // chart can be downloaded here: render the kustomization's own
        // `images:` block (bytes as bumped) over a Deployment that uses
        // each name.
        let k = top_level_block(&text, "images");
        let test_dir = dir.path().join(format!("k{rendered}"));
        std::fs::create_dir_all(&test_dir).unwrap();
        std::fs::write(
            test_dir.join("kustomization.yaml"),
            format!("{k}\nresources:\n- berth-stub.yaml\n"),
        )
        .unwrap();
        let names: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("- name: "))
            .map(|n| n.trim().to_owned())
            .collect();
        let containers: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("      - name: c{i}\n        image: {n}\n"))
            .collect();
        std::fs::write(
            test_dir.join("berth-stub.yaml"),
            format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: stub\nspec:\n  template:\n    spec:\n      containers:\n{containers}"),
        )
        .unwrap();
        let out = run_text(Command::new(&kubectl).arg("kustomize").arg(&test_dir));
        // Each entry's reference, with its new digest, is in the output.
        let mut expected = 0;
        for (key, name) in refs
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{}:", rel.display())))
        {
            let hex = digest_for(name);
            let image_lines: Vec<&str> = out.lines().filter(|l| l.contains("image: ")).collect();
            assert!(
                image_lines
                    .iter()
                    .any(|l| l.contains(name.as_str()) && l.contains(&format!("sha256:{hex}"))),
                "{key}: kustomize did not render {name}@sha256:{hex}:\n{out}"
            );
            expected += 1;
        }
        assert!(expected > 0, "{}", rel.display());
        rendered += 1;
    }
    assert!(rendered >= 10, "rendered {rendered} kustomizations");
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Push a small two-platform image to `repo:tag`; (index digest, amd64
/// manifest digest).
pub(crate) fn push_multiarch(
    server: &Server,
    repo: &str,
    tag: &str,
    revision: &str,
) -> (String, String) {
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Labels":{{"org.opencontainers.image.source":"https://forge.lan/home/app","org.opencontainers.image.revision":"{revision}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let cd = put_blob(server, repo, config.as_bytes());
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[]}}"#,
            config.len()
        );
        let md = put_manifest(server, repo, &sha256(m.as_bytes()), MANIFEST, m.as_bytes());
        children.push(format!(
            r#"{{"mediaType":"{MANIFEST}","digest":"sha256:{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            md.trim_start_matches("sha256:"),
            m.len()
        ));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{}]}}"#,
        children.join(",")
    );
    let d = put_manifest(server, repo, tag, INDEX, index.as_bytes());
    let amd = children[0]
        .split("\"digest\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    (d, amd)
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn digests_are_checked_and_tags_resolved_against_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let host = server.host();
    let (index, amd64) = push_multiarch(&server, "apps/web", "1.4", "abc123");
    let repo = dir.path().join("gitops");
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: web # the site\n          image: {host}/apps/web:1.4\n"
    );
    write(&repo, "apps/web.yaml", &deploy);
    // Two images on a registry nobody listens on.
    let gone = "a:\n  image: 127.0.0.1:1/x/a:1\nb:\n  image: 127.0.0.1:1/x/b:1\n";
    write(&repo, "apps/gone.yaml", gone);
    let repo_s = repo.to_str().unwrap();

    // A digest the registry does not have: refused, nothing written.
    let missing = format!("sha256:{}", "9".repeat(64));
    let out = bump(&[
        "--repo",
        repo_s,
        "--set",
        &format!("{host}/apps/web={missing}"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not in the registry") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("apps/web.yaml")).unwrap(),
        deploy
    );

    // --offline skips the check; --dry-run writes nothing.
    let out = ok(&bump(&[
        "--repo",
        repo_s,
        "--offline",
        "--dry-run",
        "--set",
        &format!("{host}/apps/web={missing}"),
    ]));
    assert!(
        out.contains(&format!("  + {missing}")) && out.contains("would change"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("apps/web.yaml")).unwrap(),
        deploy
    );

    // --resolve: the tag's digest is the index digest, not a platform's;
    // references on an unreachable registry are reported and left alone,
    // and that registry is asked once.
    // (Unresolved references fail the run unless --allow-incomplete:
    // newcomer.rs checks that.)
    let resolved = bump(&["--repo", repo_s, "--resolve", "--allow-incomplete"]);
    let out = ok(&resolved);
    let err = String::from_utf8_lossy(&resolved.stderr);
    assert!(err.contains("127.0.0.1:1/x/a:1: not resolved"), "{err}");
    assert!(
        err.contains("127.0.0.1:1/x/b:1: not resolved") && err.contains("not asked again"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("apps/gone.yaml")).unwrap(),
        gone
    );
    assert!(
        out.contains(&format!("apps/web.yaml:8: {host}/apps/web:1.4 (image)")),
        "{out}"
    );
    let want = deploy.replace(":1.4\n", &format!(":1.4@{index}\n"));
    assert_eq!(
        std::fs::read_to_string(repo.join("apps/web.yaml")).unwrap(),
        want
    );
    assert_ne!(index, amd64);

    // A second run changes nothing.
    let out = ok(&bump(&[
        "--repo",
        repo_s,
        "--resolve",
        "--allow-incomplete",
    ]));
    assert!(
        out.starts_with("0 reference(s) in 0 file(s) changed; 1 already pinned"),
        "{out}"
    );

    // --set with an existing digest (the amd64 child) is accepted.
    ok(&bump(&[
        "--repo",
        repo_s,
        "--set",
        &format!("{host}/apps/web:1.4={amd64}"),
    ]));
    assert!(
        std::fs::read_to_string(repo.join("apps/web.yaml"))
            .unwrap()
            .contains(&format!(":1.4@{amd64}\n"))
    );

    // Bad input: one line with the fix.
    let out = bump(&["--repo", repo_s, "--set", "ghcr.io/org/app:1.4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("write IMAGE=DIGEST"));
    let out = bump(&[
        "--repo",
        repo_s,
        "--set",
        "ghcr.io/org/app@sha256:00=sha256:00",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a digest") || !out.status.success());
}

/// A GitOps repo: a bare remote served by git daemon, and a checkout.
pub(crate) struct Remote {
    _daemon: GitDaemon,
    pub(crate) bare: PathBuf,
    pub(crate) url: String,
    pub(crate) checkout: PathBuf,
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    run_text(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Human")
            .env("GIT_AUTHOR_EMAIL", "human@home.lan")
            .env("GIT_COMMITTER_NAME", "Human")
            .env("GIT_COMMITTER_EMAIL", "human@home.lan"),
    )
    .trim()
    .to_owned()
}

pub(crate) fn remote_with(dir: &Path, files: &[(&str, &str)]) -> Remote {
    require("git");
    let base = dir.join("srv");
    let bare = base.join("gitops.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(
        &bare,
        &["init", "--quiet", "--bare", "--initial-branch=main"],
    );
    let daemon = GitDaemon::start(&base);
    let url = format!("{}/gitops.git", daemon.url);
    let seed = dir.join("seed");
    git(
        dir,
        &[
            "init",
            "--quiet",
            "--initial-branch=main",
            seed.to_str().unwrap(),
        ],
    );
    for (rel, text) in files {
        write(&seed, rel, text);
    }
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "--quiet", "-m", "seed"]);
    git(&seed, &["push", "--quiet", &url, "main"]);
    let checkout = dir.join("checkout");
    git(dir, &["clone", "--quiet", &url, checkout.to_str().unwrap()]);
    Remote {
        _daemon: daemon,
        bare,
        url,
        checkout,
    }
}

pub(crate) fn remote_file(r: &Remote, branch: &str, rel: &str) -> String {
    run_text(
        Command::new("git")
            .arg("--git-dir")
            .arg(&r.bare)
            .args(["show", &format!("{branch}:{rel}")]),
    )
}

fn remote_sha(r: &Remote, branch: &str) -> String {
    run_text(
        Command::new("git")
            .arg("--git-dir")
            .arg(&r.bare)
            .args(["rev-parse", branch]),
    )
    .trim()
    .to_owned()
}

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

fn pr_args<'a>(r: &'a Remote, forge: &'a FakeForge, flavor: &str, token: &'a Path) -> Vec<String> {
    vec![
        "--repo".into(),
        r.checkout.to_str().unwrap().into(),
        "--offline".into(),
        "--pr".into(),
        "--forge".into(),
        flavor.into(),
        "--forge-url".into(),
        forge.url.clone(),
        "--forge-repo".into(),
        forge.repo(),
        "--forge-token-file".into(),
        token.to_str().unwrap().into(),
    ]
}

fn bump_pr(base: &[String], sets: &[&str]) -> Output {
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    bump(&args)
}

#[test]
fn pull_requests_on_gitea_branch_per_target_idempotent_lease_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let app = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: ghcr.io/home/app:1.4 # pinned by berth\n";
    let values = "image:\n  repository: ghcr.io/home/api\n  tag: \"2.0\"\n";
    let r = remote_with(
        dir.path(),
        &[("apps/app.yaml", app), ("apps/api/values.yaml", values)],
    );
    let forge = FakeForge::start(Flavor::Gitea, r.bare.clone(), "s3cret");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let base = pr_args(&r, &forge, "forgejo", &token);

    // Two targets: two branches, two pull requests.
    let out = ok(&bump_pr(
        &base,
        &[
            &format!("ghcr.io/home/app={D1}"),
            &format!("ghcr.io/home/api:2.0={D1}"),
        ],
    ));
    assert!(
        out.contains("branch berth/bump/ghcr.io/home/app: pushed, opened #1"),
        "{out}"
    );
    assert!(
        out.contains("branch berth/bump/ghcr.io/home/api-2.0: pushed, opened #2"),
        "{out}"
    );
    assert_eq!(
        remote_file(&r, "berth/bump/ghcr.io/home/app", "apps/app.yaml"),
        app.replace(":1.4 #", &format!(":1.4@{D1} #"))
    );
    assert_eq!(
        remote_file(&r, "berth/bump/ghcr.io/home/app", "apps/api/values.yaml"),
        values,
        "one target per branch"
    );
    // The user's checkout is untouched.
    assert_eq!(
        std::fs::read_to_string(r.checkout.join("apps/app.yaml")).unwrap(),
        app
    );
    let prs = forge.open();
    assert_eq!(prs.len(), 2);
    assert_eq!(
        prs[0].title,
        format!("Bump ghcr.io/home/app to {}", &D1[..19])
    );
    assert!(
        prs[0]
            .body
            .contains(&format!("| `ghcr.io/home/app` | `1.4` | (none) | `{D1}` |")),
        "{}",
        prs[0].body
    );
    assert!(
        prs[0].body.contains("- `apps/app.yaml` line 8"),
        "{}",
        prs[0].body
    );

    // Same again: nothing pushed, nothing edited, no duplicate.
    let head = remote_sha(&r, "berth/bump/ghcr.io/home/app");
    let out = ok(&bump_pr(&base, &[&format!("ghcr.io/home/app={D1}")]));
    assert!(
        out.contains("branch berth/bump/ghcr.io/home/app: up to date, #1 up to date"),
        "{out}"
    );
    assert_eq!(remote_sha(&r, "berth/bump/ghcr.io/home/app"), head);
    assert_eq!(forge.prs().len(), 2);

    // A newer digest: the branch is replaced (force, with lease), the same
    // pull request is updated.
    let out = ok(&bump_pr(&base, &[&format!("ghcr.io/home/app={D2}")]));
    assert!(
        out.contains("branch berth/bump/ghcr.io/home/app: pushed, updated #1"),
        "{out}"
    );
    assert!(
        remote_file(&r, "berth/bump/ghcr.io/home/app", "apps/app.yaml")
            .contains(&format!("@{D2} #"))
    );
    assert!(forge.prs()[0].body.contains(D2) && forge.prs().len() == 2);
    let parent = run_text(
        Command::new("git")
            .arg("--git-dir")
            .arg(&r.bare)
            .args(["rev-parse", "berth/bump/ghcr.io/home/app^"]),
    );
    assert_eq!(
        parent.trim(),
        remote_sha(&r, "main"),
        "the bump is one commit on main"
    );

    // Someone else pushes while berth pushes (a pre-push hook moves the
    // branch): the lease fails and their commit stays.
    let hook = r.checkout.join(".git/hooks/pre-push");
    let racer = dir.path().join("racer");
    git(
        dir.path(),
        &[
            "clone",
            "--quiet",
            "--branch",
            "berth/bump/ghcr.io/home/app",
            &r.url,
            racer.to_str().unwrap(),
        ],
    );
    write(&racer, "NOTE", "mine\n");
    git(&racer, &["add", "NOTE"]);
    git(&racer, &["commit", "--quiet", "-m", "race"]);
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nunset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_PREFIX\ncd {} && git push --quiet --no-verify origin HEAD:berth/bump/ghcr.io/home/app\n",
            racer.display()
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(&hook));
    let out = bump_pr(&base, &[&format!("ghcr.io/home/app={D3}")]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the branch moved"), "{err}");
    std::fs::remove_file(&hook).unwrap();
    assert_eq!(
        remote_file(&r, "berth/bump/ghcr.io/home/app", "NOTE"),
        "mine\n"
    );

    // Now the branch has a human commit on top: berth leaves it alone.
    let out = ok(&bump_pr(&base, &[&format!("ghcr.io/home/app={D3}")]));
    assert!(
        out.contains("has a commit by human@home.lan on top; not overwriting"),
        "{out}"
    );
    assert_eq!(
        remote_file(&r, "berth/bump/ghcr.io/home/app", "NOTE"),
        "mine\n"
    );

    // main gets the api digest by hand: the api pull request is stale
    // and is closed with a comment.
    let seed = dir.path().join("seed");
    git(&seed, &["pull", "--quiet", &r.url, "main"]);
    write(
        &seed,
        "apps/api/values.yaml",
        &values.replace("\"2.0\"", &format!("\"2.0@{D1}\"")),
    );
    git(&seed, &["commit", "--quiet", "-am", "pin api"]);
    git(&seed, &["push", "--quiet", &r.url, "main"]);
    let out = ok(&bump_pr(&base, &[&format!("ghcr.io/home/api:2.0={D1}")]));
    assert!(
        out.contains("branch berth/bump/ghcr.io/home/api-2.0: nothing to change, closed #2"),
        "{out}"
    );
    let api = &forge.prs()[1];
    assert_eq!(api.state, "closed");
    assert!(
        api.comments[0].contains("already pins"),
        "{:?}",
        api.comments
    );
}

#[test]
fn pull_requests_on_github_race_supersede_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let app = "image: ghcr.io/home/app:1.4\nworker:\n  image: ghcr.io/home/worker:1.4\n";
    let r = remote_with(dir.path(), &[("values.yaml", app)]);
    let forge = FakeForge::start(Flavor::GitHub, r.bare.clone(), "ghp_x");
    let token = dir.path().join("token");
    std::fs::write(&token, "ghp_x").unwrap();
    let base = pr_args(&r, &forge, "github", &token);

    // A fork's pull request from a branch of the same name is not ours.
    let fork = forge.add_from_fork("berth/bump/ghcr.io/home/app");
    // Another run opens the same pull request between our list and our
    // create (GitHub answers 422): berth updates that one.
    forge.race_next_create();
    let out = ok(&bump_pr(&base, &[&format!("ghcr.io/home/app={D1}")]));
    assert!(out.contains("pushed, updated #2"), "{out}");
    assert_eq!(forge.prs().len(), 2);
    assert!(forge.prs()[1].body.contains(D1));
    let fork_pr = &forge.prs()[fork as usize - 1];
    assert_eq!(
        (fork_pr.body.as_str(), fork_pr.state.as_str()),
        ("from a fork", "open")
    );
    ok(&bump_pr(&base, &[&format!("ghcr.io/home/worker={D1}")]));
    assert_eq!(forge.open().len(), 3);

    // A grouped bump covering both supersedes both.
    let mut grouped = base.clone();
    grouped.extend(["--group".into(), "apps".into()]);
    let out = ok(&bump_pr(
        &grouped,
        &[
            &format!("ghcr.io/home/app={D2}"),
            &format!("ghcr.io/home/worker={D2}"),
        ],
    ));
    assert!(
        out.contains("branch berth/bump/group/apps: pushed, opened #4, closed #2 #3"),
        "{out}"
    );
    let open: Vec<_> = forge
        .open()
        .into_iter()
        .filter(|p| p.number != fork)
        .collect();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].title, "Bump 2 images");
    assert!(forge.prs()[1].comments[0].contains("Superseded by #4"));
    assert_eq!(
        remote_file(&r, "berth/bump/group/apps", "values.yaml"),
        format!(
            "image: ghcr.io/home/app:1.4@{D2}\nworker:\n  image: ghcr.io/home/worker:1.4@{D2}\n"
        )
    );

    // A wrong token: a one-line error naming the fix.
    std::fs::write(&token, "wrong").unwrap();
    let out = bump_pr(&base, &[&format!("ghcr.io/home/app={D3}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 401") && err.contains("check the forge token"),
        "{err}"
    );
    // The forge failing: an error, and the next run completes the job.
    std::fs::write(&token, "ghp_x").unwrap();
    forge.fail_next(502);
    let out = bump_pr(&base, &[&format!("ghcr.io/home/app={D3}")]);
    assert_eq!(out.status.code(), Some(1));
    let out = ok(&bump_pr(&base, &[&format!("ghcr.io/home/app={D3}")]));
    assert!(
        out.contains("branch berth/bump/ghcr.io/home/app: up to date, opened #5"),
        "{out}"
    );
}

/// `berth bump --resolve` against `berth serve` with `[auth]`: a private
/// project's tag is resolved with a robot's credentials from an
/// `auth.json` (as `podman login` writes it), and not without them.
#[test]
fn tags_in_a_private_project_are_resolved_with_a_robots_auth_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::auth::auth_config(dir.path());
    let server = berth_tests::Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let host = server.host();
    let layout = berth_tests::umoci_image(dir.path(), "v1", 1, 4096);
    let want = crate::clients::layout_digest(&layout, "v1");
    let robot = format!("{}:{}", crate::auth::ROBOT, crate::auth::ROBOT_SECRET);
    berth_tests::run(
        Command::new(berth_tests::require("skopeo"))
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-creds",
                &robot,
            ])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/team/app:v1")),
    );
    let repo = dir.path().join("gitops");
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {host}/team/app:v1\n"
    );
    write(&repo, "apps/app.yaml", &deploy);
    let repo_s = repo.to_str().unwrap();
    let refused = bump(&["--repo", repo_s, "--resolve"]);
    assert!(
        !refused.status.success(),
        "resolved a private tag anonymously"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("apps/app.yaml")).unwrap(),
        deploy
    );
    let auth = dir.path().join("auth.json");
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &robot);
    std::fs::write(
        &auth,
        format!(r#"{{"auths": {{"{host}": {{"auth": "{encoded}"}}}}}}"#),
    )
    .unwrap();
    ok(&bump(&[
        "--repo",
        repo_s,
        "--resolve",
        "--registry-auth",
        auth.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read_to_string(repo.join("apps/app.yaml")).unwrap(),
        deploy.replace(":v1\n", &format!(":v1@{want}\n"))
    );
}
