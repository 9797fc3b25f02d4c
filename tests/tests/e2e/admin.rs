//! `berth admin` against the real `berth serve` with `[auth]`, as a user
//! would run it: a robot for CI made, used by skopeo, disabled, enabled,
//! rotated (its old secret refused at once), the audit log read back with
//! filters; the usual mistakes (wrong password, wrong port, no scheme, a
//! project admin doing a system admin's job) each answered in one line;
//! and repeated wrong passwords from one client slowed down, with an
//! unknown user answered exactly like a wrong password.

use std::process::{Command, Output};
use std::time::Instant;

use berth_tests::{Server, berth_bin, http, require, umoci_image};

use crate::auth::auth_config;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `berth admin --registry <url> -u <user> <args>` with the password in
/// BERTH_PASSWORD.
pub(crate) fn admin(url: &str, user: &str, password: &str, args: &[&str]) -> Output {
    Command::new(berth_bin())
        .args(["admin", "--registry", url, "--username", user])
        .args(args)
        .env("BERTH_PASSWORD", password)
        .env_remove("BERTH_REGISTRY")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn berth_admin_manages_a_ci_robot_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(dir.path());
    let log = dir.path().join("serve.log");
    let server = Server::start_logging(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &log,
    );
    let url = server.url();
    let host = server.host();
    let layout = umoci_image(dir.path(), "v1", 1, 4096);
    let push = |creds: &str, tag: &str| {
        Command::new(require("skopeo"))
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-creds",
                creds,
            ])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/team/app:{tag}"))
            .output()
            .unwrap()
    };

    let me = ok(&admin(&url, "root", "root-pw", &["whoami"]));
    assert!(me.starts_with("user root (system admin)"), "{me}");
    // The example: a pushing robot for team, 90 days.
    let made = ok(&admin(
        &url,
        "root",
        "root-pw",
        &[
            "robot",
            "create",
            "team/deploy",
            "--push",
            "--expires",
            "90d",
        ],
    ));
    let mut lines = made.lines();
    assert_eq!(lines.next(), Some("robot$team+deploy"));
    let secret = lines.next().unwrap().to_owned();
    assert_eq!(secret.len(), 43, "{made}");
    let creds = format!("robot$team+deploy:{secret}");
    let pushed = push(&creds, "v1");
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    let list = ok(&admin(
        &url,
        "root",
        "root-pw",
        &["robot", "list", "--project", "team"],
    ));
    assert!(
        list.contains("robot$team+deploy\tactive") && list.contains("team/**:pull,push"),
        "{list}"
    );
    assert!(!list.contains(&secret), "the secret is shown once");

    ok(&admin(
        &url,
        "root",
        "root-pw",
        &["robot", "disable", "team/deploy"],
    ));
    assert!(
        !push(&creds, "v2").status.success(),
        "a disabled robot pushed"
    );
    ok(&admin(
        &url,
        "root",
        "root-pw",
        &["robot", "enable", "team/deploy"],
    ));
    assert!(push(&creds, "v2").status.success());
    let rotated = ok(&admin(
        &url,
        "root",
        "root-pw",
        &["robot", "rotate", "team/deploy"],
    ));
    let new_secret = rotated.lines().nth(1).unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(
        !push(&creds, "v3").status.success(),
        "the old secret still works"
    );
    assert!(
        push(&format!("robot$team+deploy:{new_secret}"), "v3")
            .status
            .success()
    );

    // The audit log: the robot's life and its pushes, filtered.
    let robot_events = ok(&admin(
        &url,
        "root",
        "root-pw",
        &["audit", "--action", "robot.", "--since", "1h"],
    ));
    for action in [
        "robot.create",
        "robot.disable",
        "robot.enable",
        "robot.rotate",
    ] {
        assert!(
            robot_events.contains(action),
            "{action} not in:\n{robot_events}"
        );
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pushes = ok(&admin(
            &url,
            "root",
            "root-pw",
            &["audit", "--actor", "robot$team+deploy", "--json"],
        ));
        let v: serde_json::Value = serde_json::from_str(&pushes).unwrap();
        let actions: Vec<&str> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        if actions.contains(&"manifest.push") {
            assert!(!pushes.contains(&new_secret) && !pushes.contains(&secret));
            break;
        }
        assert!(Instant::now() < deadline, "no push audited: {pushes}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // The usual mistakes, one line each.
    let e = one_line_error(&admin(&url, "root", "wrong", &["whoami"]));
    assert!(e.contains("refused the credentials"), "{e}");
    let e = one_line_error(&admin("http://127.0.0.1:1", "root", "root-pw", &["whoami"]));
    assert!(
        e.contains("is the registry running at http://127.0.0.1:1"),
        "{e}"
    );
    let e = one_line_error(&admin(&host, "root", "root-pw", &["whoami"]));
    assert!(e.contains("needs a scheme"), "{e}");
    let e = one_line_error(&admin(
        &url,
        "alice",
        "alice-pw",
        &["project", "create", "lab"],
    ));
    assert!(
        e.contains("only a system admin") && e.contains("403"),
        "{e}"
    );
    let e = one_line_error(&admin(
        &url,
        "root",
        "root-pw",
        &["robot", "create", "deploy"],
    ));
    assert!(e.contains("--system"), "{e}");
    let e = one_line_error(&admin(
        &url,
        "root",
        "root-pw",
        &["robot", "disable", "robot$team+ci"],
    ));
    assert!(e.contains("declared in the configuration"), "{e}");
    // Everything above is in the log, and no secret is.
    let logged = std::fs::read_to_string(&log).unwrap();
    for line in [
        "robot.create",
        "robot.rotate",
        "manifest.push",
        "login failed",
    ] {
        assert!(logged.contains(line), "no {line:?} in the log:\n{logged}");
    }
    for secret in [&secret, &new_secret, "root-pw", "alice-pw"] {
        assert!(!logged.contains(secret), "a secret in the server's log");
    }
    let no_pw = Command::new(berth_bin())
        .args(["admin", "--registry", &url, "-u", "root", "whoami"])
        .env_remove("BERTH_PASSWORD")
        .output()
        .unwrap();
    assert!(one_line_error(&no_pw).contains("BERTH_PASSWORD"));
}

#[test]
fn repeated_login_failures_are_slowed_and_unknown_users_look_like_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let login = |user: &str, pass: &str| {
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{pass}")
            )
        );
        let start = Instant::now();
        let r = http(
            "GET",
            &format!("{}/token?service=berth-test", server.url()),
            &[("Authorization", &basic)],
            b"",
        );
        (r.status, r.body, start.elapsed())
    };
    let (s1, b1, _) = login("alice", "wrong");
    let (s2, b2, _) = login("nobody-at-all", "wrong");
    assert_eq!((s1, &b1), (s2, &b2), "an unknown user answered differently");
    assert_eq!(s1, 401);
    // Three more free failures, then each waits longer.
    for _ in 0..3 {
        let (_, _, t) = login("alice", "wrong");
        assert!(t.as_millis() < 200, "slowed too early: {t:?}");
    }
    let (_, _, t6) = login("alice", "wrong");
    let (_, _, t7) = login("alice", "wrong");
    assert!(
        t6.as_millis() >= 250,
        "the sixth failure was not slowed: {t6:?}"
    );
    assert!(
        t7.as_millis() >= 500,
        "the seventh failure was not slowed more: {t7:?}"
    );
    // A success clears the record.
    let (s, _, _) = login("alice", "alice-pw");
    assert_eq!(s, 200);
    let (_, _, t) = login("alice", "wrong");
    assert!(t.as_millis() < 200, "still slowed after a success: {t:?}");
}
