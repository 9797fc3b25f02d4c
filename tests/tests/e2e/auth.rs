//! `berth serve` with `[auth]` (issue 13, first part): the token flow with
//! real clients (skopeo with a robot and with a user, `berth build --push`
//! with a robot), refusals that change nothing (anonymous, wrong password,
//! another project, forged tokens), mounts that never reveal a blob the
//! caller cannot read, a filtered catalog, and a data directory made
//! without auth keeping its content when auth is switched on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use berth_tests::{Server, http, put_blob, require, umoci_image};

pub(crate) const ROBOT: &str = "robot$team+ci";
pub(crate) const ROBOT_SECRET: &str = "r0bot-secret";

/// Secrets and a config with projects `team` (private; alice developer,
/// bob guest), `pub` (public), `other` (private; nobody), a robot for
/// `team`, and `root` a system admin.
pub(crate) fn auth_config(dir: &Path) -> PathBuf {
    for (file, secret) in [
        ("robot.secret", ROBOT_SECRET),
        ("alice.pw", "alice-pw"),
        ("bob.pw", "bob-pw"),
        ("root.pw", "root-pw"),
    ] {
        std::fs::write(dir.join(file), secret).unwrap();
    }
    let d = dir.display();
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
service = "berth-test"

[[auth.users]]
name = "alice"
password_file = "{d}/alice.pw"

[[auth.users]]
name = "bob"
password_file = "{d}/bob.pw"

[[auth.users]]
name = "root"
password_file = "{d}/root.pw"
admin = true

[[auth.projects]]
name = "team"
members = {{ alice = "developer", bob = "guest" }}

[[auth.projects]]
name = "pub"
public = true

[[auth.projects]]
name = "other"

[[auth.robots]]
name = "{ROBOT}"
secret_file = "{d}/robot.secret"
permissions = [{{ repositories = ["team/*"], actions = ["pull", "push"] }}]
"#
        ),
    )
    .unwrap();
    config
}

fn skopeo(args: &[&str]) -> Output {
    Command::new(require("skopeo")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A token from `/token` for `scope` with Basic `user:pass` (or none).
fn token(server: &Server, creds: Option<(&str, &str)>, scope: &str) -> (u16, String) {
    let mut headers = Vec::new();
    let basic;
    if let Some((u, p)) = creds {
        basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        );
        headers.push(("Authorization", basic.as_str()));
    }
    let r = http(
        "GET",
        &format!("{}/token?service=berth-test&scope={scope}", server.url()),
        &headers,
        b"",
    );
    let t = r.json()["token"].as_str().unwrap_or_default().to_owned();
    (r.status, t)
}

#[test]
fn real_clients_push_and_pull_with_robots_and_users_and_the_rest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let host = server.host();
    let layout = umoci_image(dir.path(), "v1", 1, 4096);
    let src = format!("oci:{}:v1", layout.display());
    let robot_creds = format!("{ROBOT}:{ROBOT_SECRET}");

    // Anonymous: /v2/ answers with the challenge.
    let base = http("GET", &format!("{}/v2/", server.url()), &[], b"");
    assert_eq!(base.status, 401);
    let challenge = base
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"http://")
            && challenge.contains("service=\"berth-test\""),
        "{challenge}"
    );

    // The robot pushes into its project with skopeo.
    let dest = format!("docker://{host}/team/app:v1");
    let push = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &robot_creds,
        &src,
        &dest,
    ]);
    assert!(push.status.success(), "{}", text(&push.stderr));
    // …but not into another project, public or private.
    for other in ["pub/app:v1", "other/app:v1"] {
        let out = skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &robot_creds,
            &src,
            &format!("docker://{host}/{other}"),
        ]);
        assert!(!out.status.success(), "the team robot pushed {other}");
    }
    // Anonymous and wrong-password pulls of the private image fail; a
    // member's succeeds; a guest may pull but not push.
    let inspect = |creds: Option<&str>| {
        let mut args = vec!["inspect", "--tls-verify=false"];
        if let Some(c) = creds {
            args.extend(["--creds", c]);
        }
        args.push(&dest);
        skopeo(&args)
    };
    assert!(!inspect(None).status.success());
    assert!(!inspect(Some("alice:wrong")).status.success());
    assert!(!inspect(Some("mallory:alice-pw")).status.success());
    let ok = inspect(Some("alice:alice-pw"));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(inspect(Some("bob:bob-pw")).status.success());
    let guest_push = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "bob:bob-pw",
        &src,
        &format!("docker://{host}/team/app:v2"),
    ]);
    assert!(!guest_push.status.success(), "a guest pushed");
    // A public project: the admin pushes, anybody pulls.
    let pub_dest = format!("docker://{host}/pub/app:v1");
    let admin_push = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "root:root-pw",
        &src,
        &pub_dest,
    ]);
    assert!(admin_push.status.success(), "{}", text(&admin_push.stderr));
    let anon = skopeo(&["inspect", "--tls-verify=false", &pub_dest]);
    assert!(anon.status.success(), "{}", text(&anon.stderr));

    // berth build --push with the robot's secret (the client answers the
    // Bearer challenge with Basic credentials at /token).
    let (spec, root) = crate::newcomer::store_spec(dir.path());
    let push_as_robot = |dest: &str| {
        Command::new(berth_tests::berth_bin())
            .args([
                "build",
                spec.to_str().unwrap(),
                "--store-root",
                root.to_str().unwrap(),
            ])
            .args(["-q", "--no-cache", "--push", &format!("{host}/{dest}")])
            .args(["--username", ROBOT, "--password", ROBOT_SECRET])
            .output()
            .unwrap()
    };
    let built = push_as_robot("team/built:v1");
    assert!(built.status.success(), "{}", text(&built.stderr));
    let refused = push_as_robot("other/built:v1");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("refused the credentials"),
        "{}",
        text(&refused.stderr)
    );

    // The catalog shows each caller what it may pull.
    let catalog = |creds: Option<(&str, &str)>| {
        let (status, t) = token(&server, creds, "registry:catalog:*");
        assert_eq!(status, 200);
        let auth = format!("Bearer {t}");
        let r = http(
            "GET",
            &format!("{}/v2/_catalog", server.url()),
            &[("Authorization", &auth)],
            b"",
        );
        (r.status, r.json()["repositories"].clone())
    };
    assert_eq!(
        catalog(Some(("alice", "alice-pw"))).1,
        serde_json::json!(["pub/app", "team/app", "team/built"])
    );
    assert_eq!(
        catalog(Some((ROBOT, ROBOT_SECRET))).1,
        serde_json::json!(["pub/app", "team/app", "team/built"])
    );
    assert_eq!(catalog(None).0, 401, "anonymous callers get no catalog");
    assert_eq!(
        token(&server, Some(("alice", "nope")), "registry:catalog:*").0,
        401
    );
}

#[test]
fn forged_tokens_and_cross_project_probes_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = server.url();
    // A blob only in `other/secret` (pushed by the admin).
    let (_, admin) = token(
        &server,
        Some(("root", "root-pw")),
        "repository:other/secret:pull,push",
    );
    let admin_auth = format!("Bearer {admin}");
    let blob = b"only in other/secret";
    let start = http(
        "POST",
        &format!("{url}/v2/other/secret/blobs/uploads/"),
        &[("Authorization", &admin_auth)],
        b"",
    );
    assert_eq!(start.status, 202);
    let digest = berth_tests::sha256(blob);
    let loc = start.header("location").unwrap().to_owned();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let put = http(
        "PUT",
        &format!("{url}{loc}{sep}digest={digest}"),
        &[
            ("Authorization", &admin_auth),
            ("Content-Type", "application/octet-stream"),
        ],
        blob,
    );
    assert_eq!(put.status, 201, "{}", text(&put.body));

    // The robot's token for its own project.
    let (_, robot) = token(
        &server,
        Some((ROBOT, ROBOT_SECRET)),
        "repository:team/app:pull,push",
    );
    let robot_auth = format!("Bearer {robot}");
    let as_robot = |method: &str, path: &str| {
        http(
            method,
            &format!("{url}{path}"),
            &[("Authorization", &robot_auth)],
            b"",
        )
    };
    // It does not reach other/secret, nor does it learn the blob exists.
    let head = as_robot("HEAD", &format!("/v2/other/secret/blobs/{digest}"));
    assert_eq!(head.status, 403, "a valid token that does not cover it");
    let mine = as_robot("HEAD", &format!("/v2/team/app/blobs/{digest}"));
    assert_eq!(
        mine.status, 404,
        "a blob of another repository is not visible here"
    );
    // A mount from the unreadable repository is a plain upload session.
    let mount = as_robot(
        "POST",
        &format!("/v2/team/app/blobs/uploads/?mount={digest}&from=other/secret"),
    );
    assert_eq!(
        mount.status, 202,
        "a mount from an unreadable source must not succeed"
    );
    let anon_mount = as_robot(
        "POST",
        &format!("/v2/team/app/blobs/uploads/?mount={digest}"),
    );
    assert_eq!(anon_mount.status, 202);
    let still = as_robot("HEAD", &format!("/v2/team/app/blobs/{digest}"));
    assert_eq!(still.status, 404);

    // Forged and misused tokens: each a 401 with the OCI error JSON.
    let parts: Vec<&str> = robot.split('.').collect();
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let mut claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    claims["access"][0]["name"] = "other/secret".into();
    let widened = format!("{}.{}.{}", parts[0], b64(claims), parts[2]);
    for (what, t, status, code) in [
        ("alg none", none, 401, "UNAUTHORIZED"),
        (
            "claims edited to another repository",
            widened,
            401,
            "UNAUTHORIZED",
        ),
        ("a token for team/app", robot.clone(), 403, "DENIED"),
    ] {
        let r = http(
            "GET",
            &format!("{url}/v2/other/secret/blobs/{digest}"),
            &[("Authorization", &format!("Bearer {t}"))],
            b"",
        );
        assert_eq!(r.status, status, "{what}");
        assert_eq!(r.error_code(), code, "{what}");
        if status == 403 {
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.contains("error=\"insufficient_scope\"")
                    && challenge.contains("scope=\"repository:other/secret:pull\""),
                "{challenge}"
            );
        }
    }
    // Put a blob into other/secret with the robot's token: refused, nothing
    // stored.
    let r = http(
        "POST",
        &format!(
            "{url}/v2/other/secret/blobs/uploads/?digest={}",
            berth_tests::sha256(b"x")
        ),
        &[("Authorization", &robot_auth)],
        b"x",
    );
    assert_eq!(r.status, 403);
    let (_, admin_pull) = token(
        &server,
        Some(("root", "root-pw")),
        "repository:other/secret:pull",
    );
    let gone = http(
        "HEAD",
        &format!("{url}/v2/other/secret/blobs/{}", berth_tests::sha256(b"x")),
        &[("Authorization", &format!("Bearer {admin_pull}"))],
        b"",
    );
    assert_eq!(gone.status, 404);
}

#[test]
fn a_registry_made_without_auth_keeps_its_content_when_auth_is_switched_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let digest = {
        let open = Server::start(&data, &[]);
        put_blob(&open, "team/app", b"made before auth")
    };
    let config = auth_config(dir.path());
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let url = format!("{}/v2/team/app/blobs/{digest}", server.url());
    assert_eq!(http("GET", &url, &[], b"").status, 401);
    let (_, t) = token(
        &server,
        Some(("alice", "alice-pw")),
        "repository:team/app:pull",
    );
    let r = http(
        "GET",
        &url,
        &[("Authorization", &format!("Bearer {t}"))],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"made before auth");
}

/// Failed logins through a trusted proxy (`trusted_proxies`): the audit
/// log and the throttle see the client `X-Forwarded-For` names; without
/// the setting the header is ignored, so a client cannot choose its own
/// address.
#[test]
fn a_trusted_proxys_forwarded_address_is_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.insert_str(0, "trusted_proxies = [\"127.0.0.1/32\"]\n");
    let behind = dir.path().join("behind.toml");
    std::fs::write(&behind, &text).unwrap();
    let login = |server: &Server, forwarded: &str| {
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("mallory:guess")
        );
        let r = http(
            "GET",
            &format!("{}/token?service=berth-test", server.url()),
            &[("Authorization", &bad), ("X-Forwarded-For", forwarded)],
            b"",
        );
        assert_eq!(r.status, 401);
    };
    let failures = |server: &Server| -> Vec<(String, String)> {
        let root = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("root:root-pw")
        );
        let mut events = Vec::new();
        for _ in 0..50 {
            let r = http(
                "GET",
                &format!("{}/api/v1/audit?action=login.failure", server.url()),
                &[("Authorization", &root)],
                b"",
            );
            events = r.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["client"].as_str().unwrap().to_owned(),
                        e["detail"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            if !events.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        events
    };
    let server = Server::start(
        &dir.path().join("data-behind"),
        &["--config", behind.to_str().unwrap()],
    );
    // The proxy appended what it saw (198.51.100.7) after what the client
    // claimed (203.0.113.9); only the proxy's own entry is believed, and
    // trusted hops (127.0.0.1) are walked past.
    login(&server, "203.0.113.9, 198.51.100.7, 127.0.0.1");
    login(&server, "198.51.100.7");
    login(&server, "192.0.2.44");
    let mut seen = failures(&server);
    for _ in 0..50 {
        if seen.len() == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen = failures(&server);
    }
    let mut clients: Vec<(String, String)> = seen
        .into_iter()
        .map(|(c, d)| (c, d.split(' ').next().unwrap().to_owned()))
        .collect();
    clients.sort();
    assert_eq!(
        clients,
        [
            ("192.0.2.44".to_owned(), "1".to_owned()),
            ("198.51.100.7".to_owned(), "1".to_owned()),
            ("198.51.100.7".to_owned(), "2".to_owned()),
        ],
        "each forwarded client counted on its own"
    );
    drop(server);
    // Without trusted_proxies the header means nothing.
    let server = Server::start(
        &dir.path().join("data-direct"),
        &["--config", config.to_str().unwrap()],
    );
    login(&server, "198.51.100.7");
    let seen = failures(&server);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "127.0.0.1");
}
