//! The web UI in a real browser (issue 17): headless Chromium driven over
//! WebDriver against `berth serve` with `[auth]`. The flows a person
//! walks — sign in, open a project, find a tag, copy its pull command,
//! open an image and its SBOM, make a robot and read its secret once,
//! delete a tag as a maintainer and fail to as a guest, sign out — plus
//! hostile content that must stay inert (no dialog, no script run), forms
//! posted without the CSRF token or from another origin, a session cookie
//! replayed after sign-out, the authorization matrix replayed through the
//! pages, and accessibility basics (labels, heading order, keyboard-only
//! use). With `BERTH_UI_SCREENSHOTS=<dir>` the main pages are saved there
//! (docs/ui/ holds the committed ones).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use berth_tests::webdriver::Browser;
use berth_tests::{Server, http, sha256};
use serde_json::{Value, json};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What every hostile value tries: a dialog, or setting `window.__pwned`.
const SCRIPT: &str = "<script>window.__pwned=1;alert(1)</script>";
const ATTR: &str = "\"onload=\"window.__pwned=2\" x=\"";
const IMG: &str = "<img src=x onerror=\"window.__pwned=3;alert(3)\">";
const JS_URL: &str = "javascript:window.__pwned=4;alert(4)";

/// Users: `root` (system admin), `padmin` (admin of team), `maint`
/// (maintainer of team), `guest` (guest of team), `alice` (no project).
/// Projects: `team` (private), `pub` (public), `vault` (private, no
/// members).
fn config(dir: &Path) -> PathBuf {
    let mut users = String::new();
    for u in ["root", "padmin", "maint", "guest", "alice"] {
        std::fs::write(dir.join(format!("{u}.pw")), format!("{u}-password")).unwrap();
        users.push_str(&format!(
            "[[auth.users]]\nname = \"{u}\"\npassword_file = \"{}/{u}.pw\"\nadmin = {}\n\n",
            dir.display(),
            u == "root"
        ));
    }
    let text = format!(
        r#"[auth]
service = "berth-ui-test"

{users}
[[auth.projects]]
name = "team"
members = {{ padmin = "admin", maint = "maintainer", guest = "guest" }}

[[auth.projects]]
name = "pub"
public = true

[[auth.projects]]
name = "vault"
"#
    );
    let path = dir.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A registry with content, and what was pushed.
struct Site {
    server: Server,
    _dir: tempfile::TempDir,
    /// team/app's image (tags v1.0.0 … v1.0.149, latest).
    image: String,
    /// Its SBOM referrer.
    sbom: String,
    /// vault/db's image.
    vault: String,
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn token(server: &Server, user: &str, pass: &str, repos: &[&str]) -> Option<String> {
    let scopes: String = repos
        .iter()
        .map(|r| format!("&scope=repository:{r}:pull,push,delete"))
        .collect();
    let r = http(
        "GET",
        &format!("{}/token?service=berth-ui-test{scopes}", server.url()),
        &[("Authorization", &basic(user, pass))],
        b"",
    );
    (r.status == 200).then(|| r.json()["token"].as_str().unwrap().to_owned())
}

fn push_blob(server: &Server, bearer: &str, repo: &str, blob: &[u8]) -> String {
    let digest = sha256(blob);
    let auth = [("Authorization", bearer)];
    let start = http(
        "POST",
        &format!("{}/v2/{repo}/blobs/uploads/", server.url()),
        &auth,
        b"",
    );
    assert_eq!(start.status, 202);
    let location = start.header("Location").unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http(
        "PUT",
        &format!("{}{location}{sep}digest={digest}", server.url()),
        &[auth[0], ("Content-Type", "application/octet-stream")],
        blob,
    );
    assert_eq!(put.status, 201);
    digest
}

fn push_manifest(
    server: &Server,
    bearer: &str,
    repo: &str,
    reference: &str,
    body: &Value,
) -> String {
    let bytes = serde_json::to_vec(body).unwrap();
    let r = http(
        "PUT",
        &format!("{}/v2/{repo}/manifests/{reference}", server.url()),
        &[("Authorization", bearer), ("Content-Type", MANIFEST)],
        &bytes,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    sha256(&bytes)
}

/// An image with hostile labels and annotations in `repo`.
fn push_image(server: &Server, bearer: &str, repo: &str, tag: &str) -> String {
    let config = json!({
        "architecture": "amd64", "os": "linux", "created": "2026-11-30T00:00:00Z",
        "config": {"Labels": {
            "org.opencontainers.image.source": "https://git.example/team/app",
            "org.opencontainers.image.revision": JS_URL,
            "org.opencontainers.image.title": SCRIPT,
            "org.opencontainers.image.description": ATTR,
        }}
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cd = push_blob(server, bearer, repo, &config);
    let layer = b"not really a tar, but bytes".to_vec();
    let ld = push_blob(server, bearer, repo, &layer);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len(),
                    "annotations": {"io.berth.store-paths": "/nix/store/0c3q-hello-2.12.1\n/nix/store/9x1m-glibc-2.40-66"}}],
        "annotations": {"org.example.note": IMG, "org.example.link": JS_URL},
    });
    push_manifest(server, bearer, repo, tag, &manifest)
}

/// A CycloneDX SBOM of `n` components (two real-looking, one hostile,
/// the rest generated) attached to `subject` in `repo`.
fn push_sbom(server: &Server, bearer: &str, repo: &str, subject: &str, n: usize) -> String {
    let mut components = vec![
        json!({"name": "hello", "version": "2.12.1", "licenses": [{"license": {"id": "GPL-3.0-or-later"}}],
               "properties": [{"name": "nix:store_path", "value": "/nix/store/0c3q-hello-2.12.1"}]}),
        json!({"name": "glibc", "version": "2.40-66", "licenses": [{"expression": "LGPL-2.1-or-later"}],
               "properties": [{"name": "nix:store_path", "value": "/nix/store/9x1m-glibc-2.40-66"}]}),
        json!({"name": SCRIPT, "version": ATTR, "licenses": [{"license": {"name": IMG}}],
               "properties": [{"name": "nix:store_path", "value": JS_URL}]}),
    ];
    for i in components.len()..n {
        components.push(json!({"name": format!("lib{i}"), "version": format!("1.{i}"),
            "properties": [{"name": "nix:store_path", "value": format!("/nix/store/{i:032}-lib{i}-1.{i}")}]}));
    }
    let doc = serde_json::to_vec(&json!({
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "metadata": {"component": {"type": "container", "name": "team-app"}},
        "components": components,
    }))
    .unwrap();
    let dd = push_blob(server, bearer, repo, &doc);
    let empty = push_blob(server, bearer, repo, b"{}");
    let subject_size = http(
        "HEAD",
        &format!("{}/v2/{repo}/manifests/{subject}", server.url()),
        &[("Authorization", bearer), ("Accept", MANIFEST)],
        b"",
    )
    .header("Content-Length")
    .unwrap()
    .parse::<u64>()
    .unwrap();
    let manifest = json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "artifactType": "application/vnd.cyclonedx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.cyclonedx+json", "digest": dd, "size": doc.len()}],
        "subject": {"mediaType": MANIFEST, "digest": subject, "size": subject_size},
    });
    let digest = sha256(&serde_json::to_vec(&manifest).unwrap());
    push_manifest(server, bearer, repo, &digest, &manifest)
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let t = token(
        &server,
        "root",
        "root-password",
        &["team/app", "pub/site", "vault/db"],
    )
    .expect("root's token");
    let bearer = format!("Bearer {t}");
    let image = push_image(&server, &bearer, "team/app", "latest");
    let manifest = http(
        "GET",
        &format!("{}/v2/team/app/manifests/latest", server.url()),
        &[("Authorization", &bearer), ("Accept", MANIFEST)],
        b"",
    );
    for i in 0..150 {
        let r = http(
            "PUT",
            &format!("{}/v2/team/app/manifests/v1.0.{i}", server.url()),
            &[("Authorization", &bearer), ("Content-Type", MANIFEST)],
            &manifest.body,
        );
        assert_eq!(r.status, 201);
    }
    let sbom = push_sbom(&server, &bearer, "team/app", &image, 40);
    push_image(&server, &bearer, "pub/site", "v1");
    let vault = push_image(&server, &bearer, "vault/db", "v1");
    Site {
        server,
        _dir: dir,
        image,
        sbom,
        vault,
    }
}

/// Tab, Enter.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// Sign in through the form, by clicking.
fn sign_in(b: &Browser, site: &Site, user: &str) {
    b.goto(&format!("{}/ui/login", site.server.url()));
    b.type_into(&b.find("#user"), user);
    b.type_into(&b.find("#password"), &format!("{user}-password"));
    b.click_to_load(&b.find("main form button[type=submit]"));
    wait_for(b, "Sign out", &format!("{user} is signed in"));
}

/// Wait (up to 10 s) until the page's source contains `needle`: a click
/// that submits a form returns before the next page has loaded.
fn wait_for(b: &Browser, needle: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.source().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {} has no {needle:?}:\n{}",
            b.url(),
            b.source()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn sign_out(b: &Browser, site: &Site) {
    b.goto(&format!("{}/ui/", site.server.url()));
    b.click_to_load(&b.find("form.who button"));
    assert!(b.url().ends_with("/ui/"), "{}", b.url());
    assert!(b.source().contains("Sign in"));
}

/// Nothing hostile ran on the current page: no dialog, no flag set, no
/// element the content tried to make, no `javascript:` link.
fn inert(b: &Browser) {
    assert_eq!(b.alert(), None, "a dialog opened on {}", b.url());
    let probe = b.execute(
        "return {pwned: window.__pwned === undefined ? null : window.__pwned, \
         scripts: document.querySelectorAll('script').length, \
         imgs: document.querySelectorAll('main img').length, \
         jsLinks: Array.from(document.querySelectorAll('a')).filter(a => a.protocol === 'javascript:').length, \
         onload: document.querySelectorAll('[onload],[onerror]').length};",
        vec![],
    );
    assert_eq!(
        probe,
        json!({"pwned": null, "scripts": 1, "imgs": 0, "jsLinks": 0, "onload": 0}),
        "on {}",
        b.url()
    );
}

/// Accessibility basics on the current page: one h1 first, no heading
/// level skipped, every visible control named (a label, aria-label, or a
/// button's text).
fn accessible(b: &Browser) {
    let report = b.execute(
        r#"
const problems = [];
const hs = Array.from(document.querySelectorAll('h1,h2,h3,h4,h5,h6')).map(h => +h.tagName[1]);
if (hs.length === 0 || hs[0] !== 1) problems.push('the first heading is not h1: ' + hs);
if (hs.filter(l => l === 1).length !== 1) problems.push('not exactly one h1: ' + hs);
for (let i = 1; i < hs.length; i++) if (hs[i] > hs[i-1] + 1) problems.push('heading h' + hs[i-1] + ' then h' + hs[i]);
for (const el of document.querySelectorAll('input,select,textarea,button')) {
  if (el.type === 'hidden') continue;
  const labelled = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label') ||
    (el.tagName === 'BUTTON' && el.textContent.trim() !== '');
  if (!labelled) problems.push('unlabelled ' + el.outerHTML);
}
if (!document.documentElement.lang) problems.push('no lang');
return problems;"#,
        vec![],
    );
    assert_eq!(report, json!([]), "on {}", b.url());
}

/// Every element a keyboard should reach on the page, and whether Tab
/// reaches each, in order, from the top.
fn keyboard_reaches_everything(b: &Browser) {
    let wanted = b.execute(
        "return Array.from(document.querySelectorAll('a[href],button,input:not([type=hidden]),select,textarea')).filter(e => e.offsetParent !== null).length;",
        vec![],
    );
    let wanted = wanted.as_u64().unwrap();
    b.execute("document.activeElement && document.activeElement.blur(); window.__seen = new Set(); document.addEventListener('focusin', e => window.__seen.add(e.target));", vec![]);
    for _ in 0..wanted + 2 {
        b.keys(TAB);
    }
    let seen = b
        .execute("return window.__seen.size;", vec![])
        .as_u64()
        .unwrap();
    assert!(
        seen >= wanted,
        "Tab reached {seen} of {wanted} controls on {}",
        b.url()
    );
}

/// Save a screenshot as `name` when asked to.
fn shot(b: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("BERTH_UI_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        b.screenshot(&Path::new(&dir).join(format!("{name}.png")));
    }
}

#[test]
fn a_maintainer_browses_finds_a_tag_copies_its_pull_command_and_reads_the_sbom() {
    let site = site();
    let base = site.server.url();
    let b = Browser::start(1280, 900);

    // Anonymous: only the public project.
    b.goto(&format!("{base}/ui/"));
    let page = b.source();
    assert!(page.contains("/ui/projects/pub"), "{page}");
    assert!(!page.contains("/ui/projects/team"), "{page}");
    accessible(&b);

    // Signing in by keyboard alone: Tab to the fields, type, Enter.
    b.goto(&format!("{base}/ui/login"));
    accessible(&b);
    b.execute(
        "document.activeElement && document.activeElement.blur();",
        vec![],
    );
    let user = b.find("#user");
    for _ in 0..10 {
        b.keys(TAB);
        if b.active() == user {
            break;
        }
    }
    assert_eq!(b.active(), user, "Tab reaches the user field");
    b.keys("maint");
    b.keys(TAB);
    b.keys("maint-password");
    b.keys_to_load(ENTER);
    wait_for(&b, "Sign out", "maint signs in by keyboard");
    assert!(b.url().ends_with("/ui/"), "{}", b.url());

    // Projects → team → team/app.
    let page = b.source();
    assert!(page.contains("/ui/projects/team"), "{page}");
    assert!(!page.contains("/ui/projects/vault"), "{page}");
    shot(&b, "projects");
    b.click_to_load(&b.find("a[href='/ui/projects/team']"));
    assert_eq!(b.title(), "team · berth");
    accessible(&b);
    b.click_to_load(&b.find("a[href='/ui/repo/team/app']"));
    assert!(b.source().contains("151 tags"), "{}", b.source());
    accessible(&b);
    keyboard_reaches_everything(&b);
    inert(&b);

    // Find a tag (a server-side search: works without JavaScript).
    let q = b.find("#q");
    b.type_into(&q, "v1.0.14");
    b.keys_to_load(ENTER);
    wait_for(&b, "containing “v1.0.14”", "the search");
    let rows: Vec<String> = b
        .find_all("main table tbody tr td:first-child code")
        .iter()
        .map(|e| b.text(e))
        .collect();
    let mut expected: Vec<String> = std::iter::once("v1.0.14".to_owned())
        .chain((140..150).map(|i| format!("v1.0.{i}")))
        .collect();
    expected.sort();
    let mut got = rows.clone();
    got.sort();
    assert_eq!(got, expected);
    shot(&b, "repository");

    // Copy the pull command: the clipboard holds exactly the command.
    b.grant("clipboard-read");
    b.grant("clipboard-write");
    let code = b.find("code.pull");
    let command = b.text(&code);
    assert_eq!(
        command,
        format!("docker pull {}/team/app:{}", site.server.host(), rows[0])
    );
    let copy = b.find("button.copy");
    assert_eq!(
        b.attr(&copy, "aria-label").unwrap(),
        format!("Copy: {command}")
    );
    b.click(&copy);
    let clip = b.execute_async(
        "const done = arguments[arguments.length - 1]; navigator.clipboard.readText().then(done, e => done('error: ' + e));",
    );
    assert_eq!(clip, json!(command));
    assert_eq!(b.text(&copy), "Copied");

    // The image: labels, store paths, hostile values inert.
    b.click_to_load(&b.find(&format!(
        "a[href='/ui/image/team/app?digest={}']",
        site.image
    )));
    inert(&b);
    accessible(&b);
    let page = b.source();
    assert!(page.contains("/nix/store/0c3q-hello-2.12.1"), "{page}");
    let source = b.find("a[href='https://git.example/team/app']");
    assert_eq!(b.text(&source), "https://git.example/team/app");
    let body_text = b.text(&b.find("main"));
    for shown in [SCRIPT, JS_URL, IMG] {
        assert!(
            body_text.contains(shown),
            "{shown} shown as text: {body_text}"
        );
    }
    shot(&b, "image");

    // The SBOM: listed, hostile fields inert, filtered as one types.
    b.click_to_load(&b.link("Software bill of materials (SBOM)"));
    assert!(b.url().contains(&format!("digest={}", site.sbom)));
    inert(&b);
    accessible(&b);
    assert!(b.source().contains("40 components"));
    assert_eq!(b.find_all("#components tbody tr").len(), 40);
    let filter = b.find("#q");
    b.type_into(&filter, "glibc");
    let visible = b.execute(
        "return Array.from(document.querySelectorAll('#components tbody tr')).filter(r => !r.hidden).map(r => r.cells[0].textContent);",
        vec![],
    );
    assert_eq!(visible, json!(["glibc"]));
    b.clear(&filter);
    b.type_into(&filter, "lib1");
    let count = b.execute(
        "return Array.from(document.querySelectorAll('#components tbody tr')).filter(r => !r.hidden).length;",
        vec![],
    );
    // lib10 … lib19, and lib1 is not generated (index 1 is glibc).
    assert_eq!(count, json!(10));
    b.clear(&filter);
    b.type_into(&filter, "hello");
    shot(&b, "sbom");
    inert(&b);

    // Signing out ends the session: its cookie replayed is nobody.
    let session = b
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "berth_session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    let value = session["value"].as_str().unwrap().to_owned();
    sign_out(&b, &site);
    b.add_cookie("berth_session", &value);
    b.goto(&format!("{base}/ui/repo/team/app"));
    assert_eq!(b.title(), "Not found · berth", "{}", b.source());
    b.goto(&format!("{base}/ui/robots"));
    assert!(
        b.url().ends_with("/ui/login?next=%2Fui%2Frobots"),
        "{}",
        b.url()
    );
}

#[test]
fn a_maintainer_deletes_a_tag_a_guest_cannot_and_forged_posts_are_refused() {
    let site = site();
    let base = site.server.url();
    let b = Browser::start(1280, 900);
    let tag_exists = |tag: &str| {
        let t = token(&site.server, "root", "root-password", &["team/app"]).unwrap();
        http(
            "HEAD",
            &format!("{base}/v2/team/app/manifests/{tag}"),
            &[
                ("Authorization", &format!("Bearer {t}")),
                ("Accept", MANIFEST),
            ],
            b"",
        )
        .status
            == 200
    };

    // A guest sees no delete action, and the confirmation and the post
    // are refused even with the guest's own valid CSRF token.
    sign_in(&b, &site, "guest");
    b.goto(&format!("{base}/ui/repo/team/app?q=v1.0.1"));
    assert!(b.try_find("a[href^='/ui/delete-tag/']").is_none());
    let csrf = b
        .attr(&b.find("form.who input[name=csrf]"), "value")
        .unwrap();
    b.goto(&format!("{base}/ui/delete-tag/team/app?tag=v1.0.1"));
    assert!(b.source().contains("You may not delete tags here."));
    let status = b.execute_async(&format!(
        "const done = arguments[arguments.length - 1]; fetch('/ui/delete-tag/team/app', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: 'csrf={csrf}&tag=v1.0.1'}}).then(r => done(r.status));"
    ));
    assert_eq!(status, json!(403));
    assert!(tag_exists("v1.0.1"));
    sign_out(&b, &site);

    // A maintainer: confirm, delete; the tag is gone from the registry.
    sign_in(&b, &site, "maint");
    b.goto(&format!("{base}/ui/repo/team/app?q=v1.0.1"));
    b.click_to_load(&b.find("a[aria-label='Delete tag v1.0.1']"));
    assert!(b.source().contains("Delete team/app:v1.0.1?"));
    accessible(&b);
    b.click_to_load(&b.find("main form button[type=submit]"));
    assert!(b.url().ends_with("/ui/repo/team/app"), "{}", b.url());
    assert!(!tag_exists("v1.0.1"));
    assert!(b.source().contains("150 tags"), "{}", b.source());

    // Without the token (a script on the page posting), refused.
    let status = b.execute_async(
        "const done = arguments[arguments.length - 1]; fetch('/ui/delete-tag/team/app', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'tag=v1.0.2'}).then(r => done(r.status));",
    );
    assert_eq!(status, json!(403));
    // From another origin, even with the stolen token: the browser's post
    // carries `Origin: null` and no SameSite=Strict cookie.
    let csrf = b
        .attr(&b.find("form.who input[name=csrf]"), "value")
        .unwrap();
    let attack = format!(
        "<form method=post action='{base}/ui/delete-tag/team/app'><input name=csrf value='{csrf}'><input name=tag value='v1.0.2'></form><script>document.forms[0].submit()</script>"
    );
    let url = format!(
        "data:text/html;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(attack)
    );
    b.goto(&url);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(b.source().contains("Refused"), "{}", b.source());
    assert!(tag_exists("v1.0.2"));
}

#[test]
fn a_project_admin_makes_a_robot_and_reads_its_secret_once() {
    let site = site();
    let base = site.server.url();
    let b = Browser::start(1280, 900);
    sign_in(&b, &site, "padmin");
    b.click_to_load(&b.link("Robots"));
    accessible(&b);
    keyboard_reaches_everything(&b);
    b.type_into(&b.find("#robot-name"), "ci");
    b.click(&b.find("input[name=push]"));
    b.type_into(&b.find("#description"), SCRIPT);
    b.click_to_load(&b.find("#new ~ form button[type=submit]"));
    assert!(b.source().contains("This secret is shown once"));
    accessible(&b);
    let name = b.text(&b.find("#robot-name-out"));
    assert_eq!(name, "robot$team+ci");
    let secret = b.text(&b.find("#robot-secret"));
    let auth_json: Value = serde_json::from_str(&b.text(&b.find("#auth-json"))).unwrap();
    let auth = auth_json["auths"][site.server.host()]["auth"]
        .as_str()
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap(),
        format!("{name}:{secret}").into_bytes()
    );
    shot(&b, "robot-secret");
    // The secret works for pushing to team, and only there.
    assert!(token(&site.server, &name, &secret, &["team/app"]).is_some());
    // Shown once: the list never has it.
    b.goto(&format!("{base}/ui/robots"));
    inert(&b);
    assert!(b.source().contains("robot$team+ci"));
    assert!(!b.source().contains(&secret));
    shot(&b, "robots");
    // Disable it from the list: its credentials stop working.
    b.click_to_load(&b.find("button[aria-label='Disable robot$team+ci']"));
    assert!(token(&site.server, &name, &secret, &["team/app"]).is_none());
    assert!(b.source().contains("Enable"));
}

#[test]
fn pages_show_a_private_project_only_to_those_who_may_pull_it() {
    let site = site();
    let base = site.server.url();
    let b = Browser::start(1024, 768);
    let pages = [
        ("/ui/projects/team".to_owned(), "team"),
        ("/ui/repo/team/app".to_owned(), "team"),
        (format!("/ui/image/team/app?digest={}", site.image), "team"),
        (format!("/ui/sbom/team/app?digest={}", site.sbom), "team"),
        ("/ui/projects/vault".to_owned(), "vault"),
        ("/ui/repo/vault/db".to_owned(), "vault"),
        (format!("/ui/image/vault/db?digest={}", site.vault), "vault"),
        ("/ui/projects/pub".to_owned(), "pub"),
        ("/ui/repo/pub/site".to_owned(), "pub"),
    ];
    // Who may pull which project (docs/auth.md): members and system
    // admins a private one, anyone a public one.
    let may = |user: Option<&str>, project: &str| {
        matches!(
            (user, project),
            (_, "pub") | (Some("root"), _) | (Some("padmin" | "maint" | "guest"), "team")
        )
    };
    for user in [
        None,
        Some("alice"),
        Some("guest"),
        Some("maint"),
        Some("padmin"),
        Some("root"),
    ] {
        b.delete_cookies();
        if let Some(u) = user {
            sign_in(&b, &site, u);
        }
        b.goto(&format!("{base}/ui/"));
        let listing = b.source();
        for project in ["team", "vault", "pub"] {
            assert_eq!(
                listing.contains(&format!("href=\"/ui/projects/{project}\"")),
                may(user, project),
                "{user:?} listing {project}"
            );
        }
        for (path, project) in &pages {
            b.goto(&format!("{base}{path}"));
            let text = b.text(&b.find("main"));
            let shown = b.title() != "Not found · berth";
            assert_eq!(shown, may(user, project), "{user:?} on {path}: {text}");
            if shown {
                inert(&b);
            }
        }
    }
    // Names that cannot be repositories are refused at push and are not
    // pages; their text in a URL comes back inert.
    let t = token(&site.server, "root", "root-password", &["team/app"]).unwrap();
    let r = http(
        "PUT",
        &format!("{base}/v2/team/%3Cscript%3E/manifests/v1"),
        &[
            ("Authorization", &format!("Bearer {t}")),
            ("Content-Type", MANIFEST),
        ],
        b"{}",
    );
    assert!(r.status >= 400, "{}", r.status);
    b.goto(&format!(
        "{base}/ui/repo/team/app?q=%3Cscript%3Ewindow.__pwned%3D1%3C%2Fscript%3E"
    ));
    inert(&b);
    b.goto(&format!(
        "{base}/ui/repo/%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    ));
    assert_eq!(b.alert(), None);
}

#[test]
fn an_admin_sees_policies_gc_webhooks_and_the_audit_log_on_a_phone() {
    let site = site();
    let base = site.server.url();
    let b = Browser::start(390, 844);
    sign_in(&b, &site, "root");
    for path in [
        "/ui/",
        "/ui/repo/team/app",
        "/ui/gc",
        "/ui/webhooks",
        "/ui/audit",
        "/ui/projects/team/members",
        "/ui/projects/team/policy",
    ] {
        b.goto(&format!("{base}{path}"));
        accessible(&b);
        inert(&b);
        // Readable on a phone: nothing wider than the screen.
        let overflow = b.execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        );
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{path} scrolls sideways by {overflow} px"
        );
    }
    b.goto(&format!("{base}/ui/gc"));
    b.click_to_load(&b.find("button[value=dry-run]"));
    assert!(b.source().contains("Last dry run"), "{}", b.source());
    b.goto(&format!("{base}/ui/audit"));
    b.click(&b.find("#action"));
    b.type_into(&b.find("#action"), "gc.");
    b.click_to_load(&b.find("form.filter button[type=submit]"));
    let actions: Vec<String> = b
        .find_all("#audit tbody tr td:nth-child(4)")
        .iter()
        .map(|e| b.text(e))
        .collect();
    assert_eq!(actions, ["gc.dry_run"]);
    b.goto(&format!("{base}/ui/repo/team/app"));
    shot(&b, "phone-repository");
}
