//! The admin API through the real router, as a hostile caller would use
//! it: ids of another project's robots and members (Harbor
//! CVE-2022-31666…31671), privileged or unknown JSON fields (Harbor
//! CVE-2019-16097), roles and robot permissions beyond the caller's own,
//! declared accounts, and robots disabled or rotated while their tokens
//! are live. Every refusal changes nothing, and the audit log records the
//! changes and the failures without a secret in it.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::auth_tests::{Harness, call};

async fn admin(
    h: &Harness,
    method: Method,
    path: &str,
    creds: &str,
    body: Value,
) -> (StatusCode, Value) {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    call(&h.app, method, path, None, Some(creds), bytes).await
}

const ROOT: &str = "root:password";
const PADMIN: &str = "padmin:password";
const OTHERADMIN: &str = "otheradmin:password";
const MAINT: &str = "maint:password";

#[tokio::test]
async fn robots_made_through_the_api_work_and_stay_in_their_project() {
    let h = Harness::new();
    // The project admin makes a robot for CI in priv; the secret once.
    let (s, made) = admin(
        &h,
        Method::POST,
        "/api/v1/robots",
        PADMIN,
        json!({"name": "robot$priv+ci", "permissions": [{"repositories": ["priv/*"], "actions": ["pull", "push"]}], "expires_in_days": 90}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43);
    let creds = format!("robot$priv+ci:{secret}");
    let token = h.token(Some(&creds), &["priv/app"]).await.unwrap();
    let digest = h.admin_manifest(&token, "priv/app", "ci").await;
    assert!(digest.to_string().starts_with("sha256:"));
    // Shown once: listing never includes it.
    let (_, listed) = admin(&h, Method::GET, "/api/v1/robots", PADMIN, Value::Null).await;
    // padmin administers pub and priv: their 8 declared robots and this one.
    assert_eq!(listed["robots"].as_array().unwrap().len(), 9, "{listed}");
    assert!(!listed.to_string().contains(&secret));

    // Another project's admin: every id-taking endpoint is a 404.
    let id = "/api/v1/robots/robot$priv+ci";
    for (method, path, body) in [
        (Method::GET, id.to_owned(), Value::Null),
        (Method::PATCH, id.to_owned(), json!({"disabled": true})),
        (Method::DELETE, id.to_owned(), Value::Null),
        (Method::POST, format!("{id}/rotate"), Value::Null),
        (
            Method::PUT,
            "/api/v1/projects/priv/members/otheradmin".to_owned(),
            json!({"role": "admin"}),
        ),
        (
            Method::DELETE,
            "/api/v1/projects/priv/members/dev".to_owned(),
            Value::Null,
        ),
        (Method::GET, "/api/v1/projects/priv".to_owned(), Value::Null),
    ] {
        let (s, body) = admin(&h, method.clone(), &path, OTHERADMIN, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(body["errors"][0]["code"], "NOT_FOUND");
    }
    let (_, listed) = admin(&h, Method::GET, "/api/v1/robots", OTHERADMIN, Value::Null).await;
    assert!(
        !listed.to_string().contains("priv+ci"),
        "listed to another project's admin: {listed}"
    );
    // …and the robot still works.
    assert!(h.token(Some(&creds), &["priv/app"]).await.is_some());

    // Beyond one's own: a robot of priv reaching into other, a robot of a
    // project one does not administer, a system robot, a privileged field.
    for (body, want) in [
        (
            json!({"name": "robot$priv+wide", "permissions": [{"repositories": ["other/*"], "actions": ["pull"]}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "robot$priv+wide", "permissions": [{"repositories": ["*/*"], "actions": ["pull"]}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "robot$other+x", "permissions": [{"repositories": ["other/*"], "actions": ["pull"]}]}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"name": "robot$everything", "permissions": [{"repositories": ["**"], "actions": ["pull"]}]}),
            StatusCode::FORBIDDEN,
        ),
        (
            json!({"name": "robot$priv+sneaky", "admin": true, "permissions": [{"repositories": ["priv/*"], "actions": ["pull"]}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "robot$priv+bad", "permissions": [{"repositories": ["priv/*"], "actions": ["pull", "sudo"]}]}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, answer) = admin(&h, Method::POST, "/api/v1/robots", PADMIN, body.clone()).await;
        assert_eq!(s, want, "{body}: {answer}");
    }
    // Roles: a maintainer manages no members; nobody grants above their own.
    let (s, _) = admin(
        &h,
        Method::PUT,
        "/api/v1/projects/priv/members/guest",
        MAINT,
        json!({"role": "maintainer"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Declared things are the configuration's.
    let (s, body) = admin(
        &h,
        Method::PATCH,
        "/api/v1/robots/robot$priv+push",
        PADMIN,
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["errors"][0]["code"], "DECLARED");
    let (s, _) = admin(
        &h,
        Method::POST,
        "/api/v1/projects",
        PADMIN,
        json!({"name": "lab"}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "only a system admin makes projects"
    );
    let (s, _) = admin(
        &h,
        Method::POST,
        "/api/v1/projects",
        ROOT,
        json!({"name": "lab", "public": false, "quota": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown fields are refused");
}

#[tokio::test]
async fn disabling_or_rotating_a_robot_ends_its_live_tokens_at_once() {
    let h = Harness::new();
    let (_, made) = admin(
        &h,
        Method::POST,
        "/api/v1/robots",
        ROOT,
        json!({"name": "robot$priv+deploy", "permissions": [{"repositories": ["priv/**"], "actions": ["pull"]}]}),
    )
    .await;
    let secret = made["secret"].as_str().unwrap().to_owned();
    let creds = format!("robot$priv+deploy:{secret}");
    let admin_token = h.token(Some(ROOT), &["priv/app"]).await.unwrap();
    h.admin_manifest(&admin_token, "priv/app", "v1").await;
    let pull = |t: String| {
        let app = h.app.clone();
        async move {
            call(
                &app,
                Method::GET,
                "/v2/priv/app/manifests/v1",
                Some(&t),
                None,
                Vec::new(),
            )
            .await
            .0
        }
    };
    let live = h.token(Some(&creds), &["priv/app"]).await.unwrap();
    assert_eq!(pull(live.clone()).await, StatusCode::OK);
    let (s, _) = admin(
        &h,
        Method::PATCH,
        "/api/v1/robots/robot$priv+deploy",
        PADMIN,
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        pull(live.clone()).await,
        StatusCode::UNAUTHORIZED,
        "disabled"
    );
    assert!(h.token(Some(&creds), &["priv/app"]).await.is_none());
    admin(
        &h,
        Method::PATCH,
        "/api/v1/robots/robot$priv+deploy",
        PADMIN,
        json!({"disabled": false}),
    )
    .await;
    // Tokens are issued with whole-second times: the rotation must fall in
    // a later second than the token to tell them apart.
    let before = h.token(Some(&creds), &["priv/app"]).await.unwrap();
    assert_eq!(pull(before.clone()).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, rotated) = admin(
        &h,
        Method::POST,
        "/api/v1/robots/robot$priv+deploy/rotate",
        PADMIN,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(pull(before).await, StatusCode::UNAUTHORIZED, "rotated");
    assert!(
        h.token(Some(&creds), &["priv/app"]).await.is_none(),
        "old secret"
    );
    let fresh = h
        .token(
            Some(&format!("robot$priv+deploy:{new_secret}")),
            &["priv/app"],
        )
        .await
        .unwrap();
    assert_eq!(pull(fresh).await, StatusCode::OK);
}

#[tokio::test]
async fn users_members_and_the_audit_log() {
    let h = Harness::new();
    // The system admin makes a project, a user, and the project admin
    // adds her.
    let (s, _) = admin(
        &h,
        Method::POST,
        "/api/v1/projects",
        ROOT,
        json!({"name": "lab"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = admin(
        &h,
        Method::POST,
        "/api/v1/users",
        ROOT,
        json!({"name": "carol", "password": "short"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a too-short password");
    let (s, body) = admin(
        &h,
        Method::POST,
        "/api/v1/users",
        ROOT,
        json!({"name": "carol", "password": "carol-password-1"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, _) = admin(
        &h,
        Method::POST,
        "/api/v1/users",
        PADMIN,
        json!({"name": "eve", "password": "eve-password-12", "admin": true}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only a system admin makes users");
    let (s, _) = admin(
        &h,
        Method::PUT,
        "/api/v1/projects/lab/members/carol",
        ROOT,
        json!({"role": "developer"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Carol pushes to lab.
    let t = h
        .token(Some("carol:carol-password-1"), &["lab/app"])
        .await
        .unwrap();
    h.admin_manifest(&t, "lab/app", "v1").await;
    h.admin_manifest(&t, "lab/app", "v1").await;
    let (_, me) = admin(
        &h,
        Method::GET,
        "/api/v1/whoami",
        "carol:carol-password-1",
        Value::Null,
    )
    .await;
    assert_eq!(
        me["projects"],
        json!([{"name": "lab", "role": "developer"}])
    );
    // A failed login, then the log.
    assert!(h.token(Some("carol:wrong-password"), &[]).await.is_none());
    // The log is written in the background: on a loaded machine it can
    // take a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let events = loop {
        let (s, body) = admin(&h, Method::GET, "/api/v1/audit?limit=50", ROOT, Value::Null).await;
        assert_eq!(s, StatusCode::OK);
        let actions: Vec<String> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect();
        if actions.contains(&"login.failure".to_owned()) && actions.contains(&"tag.move".to_owned())
        {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let text = events.to_string();
    for secret in ["carol-password-1", "wrong-password", "password\""] {
        assert!(
            !text.contains(secret),
            "a secret in the audit log: {secret}"
        );
    }
    let find = |action: &str| {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} in {events}"))
    };
    assert_eq!(find("project.create")["actor"], "root");
    assert_eq!(find("user.create")["target"], "carol");
    assert_eq!(find("member.put")["detail"], "none -> developer");
    assert_eq!(find("manifest.push")["actor"], "carol");
    let moved = find("tag.move");
    assert_eq!(moved["target"], "lab/app:v1");
    assert_eq!(find("login.failure")["actor"], "carol");
    assert_eq!(find("login.failure")["outcome"], "denied");
    // Filters; a project admin sees their own project only.
    let (_, pushes) = admin(
        &h,
        Method::GET,
        "/api/v1/audit?action=manifest.push&actor=carol",
        ROOT,
        Value::Null,
    )
    .await;
    assert_eq!(pushes["events"].as_array().unwrap().len(), 2, "{pushes}");
    let (s, _) = admin(&h, Method::GET, "/api/v1/audit", PADMIN, Value::Null).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = admin(
        &h,
        Method::GET,
        "/api/v1/audit?project=lab",
        PADMIN,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "padmin does not see lab");
    let (s, _) = admin(
        &h,
        Method::GET,
        "/api/v1/audit?project=priv&nonsense=1",
        PADMIN,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown filters are refused");
    // Deleting the user ends her access.
    let (s, _) = admin(&h, Method::DELETE, "/api/v1/users/carol", ROOT, Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(h.token(Some("carol:carol-password-1"), &[]).await.is_none());
    // No credentials, wrong ones: 401 with the error JSON.
    let (s, body) = call(
        &h.app,
        Method::GET,
        "/api/v1/projects",
        None,
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    let (s, _) = admin(
        &h,
        Method::GET,
        "/api/v1/projects",
        "root:nope",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
