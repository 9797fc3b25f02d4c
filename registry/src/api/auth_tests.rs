//! The authorization matrix of docs/auth.md through the real router: every
//! principal (with the token `/token` gives it, or none when its
//! credentials are refused) × every kind of request × a public and a
//! private project. Each cell is an HTTP request whose status is asserted;
//! refused requests change nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use berth_oci::Digest;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::auth::config::AuthConfig;
use crate::{Limits, Registry};

pub(crate) struct Harness {
    pub(crate) app: Router,
    _dir: tempfile::TempDir,
}

pub(crate) async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    basic: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(c) = basic {
        let enc = base64::engine::general_purpose::STANDARD.encode(c);
        b = b.header("authorization", format!("Basic {enc}"));
    }
    if uri.contains("/manifests/") {
        b = b.header("content-type", "application/vnd.oci.image.manifest.v1+json");
    }
    let resp = app
        .clone()
        .oneshot(b.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

impl Harness {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (f, s) in [("robot", "robot-secret"), ("pw", "password")] {
            std::fs::write(d.join(f), s).unwrap();
        }
        let users = [
            "guest",
            "dev",
            "both",
            "maint",
            "padmin",
            "otheradmin",
            "root",
        ]
        .iter()
        .map(|u| {
            format!(
                "[[auth.users]]\nname = \"{u}\"\npassword_file = \"{}/pw\"\nadmin = {}\n",
                d.display(),
                *u == "root"
            )
        })
        .collect::<String>();
        let team = r#"{ guest = "guest", dev = "developer", both = "developer", maint = "maintainer", padmin = "admin" }"#;
        let mut robots = String::new();
        for project in ["pub", "priv"] {
            for (name, actions, extra) in [
                ("pull", r#"["pull"]"#, ""),
                ("push", r#"["pull", "push"]"#, ""),
                (
                    "expired",
                    r#"["pull", "push", "delete"]"#,
                    "expires_at = 1\n",
                ),
                (
                    "disabled",
                    r#"["pull", "push", "delete"]"#,
                    "disabled = true\n",
                ),
            ] {
                robots.push_str(&format!(
                    "[[auth.robots]]\nname = \"robot${project}+{name}\"\nsecret_file = \"{}/robot\"\npermissions = [{{ repositories = [\"{project}/*\"], actions = {actions} }}]\n{extra}",
                    d.display()
                ));
            }
        }
        let text = format!(
            "service = \"test\"\ntoken_key_file = \"{d}/key\"\n{users}\n[[auth.projects]]\nname = \"pub\"\npublic = true\nmembers = {team}\n[[auth.projects]]\nname = \"priv\"\nmembers = {team}\n[[auth.projects]]\nname = \"other\"\nmembers = {{ otheradmin = \"admin\", both = \"developer\" }}\n{robots}",
            d = d.display()
        );
        // `[auth]`'s keys, parsed as the config file's section would be.
        let text = text.replace("[[auth.", "[[");
        let config: AuthConfig = toml::from_str(&text).unwrap();
        let gate = config.load(d).unwrap();
        let registry = Registry::in_memory(Limits::default())
            .unwrap()
            .with_gate(gate)
            .unwrap();
        Self {
            app: super::router(Arc::new(registry)),
            _dir: dir,
        }
    }

    /// A token for `creds` (`None`: anonymous) asking for everything on
    /// `repos` and the catalog; `None` when the credentials are refused.
    pub(crate) async fn token(&self, creds: Option<&str>, repos: &[&str]) -> Option<String> {
        let mut uri = "/token?service=test&scope=registry:catalog:*".to_owned();
        for r in repos {
            uri.push_str(&format!("&scope=repository:{r}:pull,push,delete"));
        }
        let (status, body) = call(&self.app, Method::GET, &uri, None, creds, Vec::new()).await;
        if status == StatusCode::UNAUTHORIZED {
            return None;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        Some(body["token"].as_str().unwrap().to_owned())
    }

    /// Push `blob` to `repo` as the admin; its digest.
    async fn admin_blob(&self, admin: &str, repo: &str, blob: &[u8]) -> Digest {
        let d = Digest::sha256(blob);
        let (s, body) = call(
            &self.app,
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            Some(admin),
            None,
            blob.to_vec(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        d
    }

    /// A manifest with a unique annotation pushed to `repo:tag`; its digest.
    pub(super) async fn admin_manifest(&self, admin: &str, repo: &str, tag: &str) -> Digest {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let config = self.admin_blob(admin, repo, b"{}").await;
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [],
            // Unique per call: pushing a tag twice moves it.
            "annotations": {"n": format!("{repo}:{tag}:{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))},
        });
        let bytes = serde_json::to_vec(&m).unwrap();
        let (s, body) = call(
            &self.app,
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            Some(admin),
            None,
            bytes.clone(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        Digest::sha256(&bytes)
    }
}

#[tokio::test]
async fn the_authorization_matrix_over_http() {
    let h = Harness::new();
    let all = ["pub/app", "priv/app", "other/lib"];
    let admin = h.token(Some("root:password"), &all).await.unwrap();
    let lib_blob = h
        .admin_blob(&admin, "other/lib", b"a layer in other/lib")
        .await;
    // (label, credentials, public cells, private cells), as in
    // auth::model's matrix: P pull, U push, D delete, M mount from other/lib.
    let rows: [(&str, Option<&str>, &str, &str); 12] = [
        ("anonymous", None, "P---", "----"),
        (
            "robot with pull",
            Some("robot${p}+pull:robot-secret"),
            "P---",
            "P---",
        ),
        (
            "robot with push",
            Some("robot${p}+push:robot-secret"),
            "PU--",
            "PU--",
        ),
        ("guest", Some("guest:password"), "P---", "P---"),
        ("developer", Some("dev:password"), "PU--", "PU--"),
        (
            "developer here and in other",
            Some("both:password"),
            "PU-M",
            "PU-M",
        ),
        ("maintainer", Some("maint:password"), "PUD-", "PUD-"),
        ("project admin", Some("padmin:password"), "PUD-", "PUD-"),
        (
            "other project's admin",
            Some("otheradmin:password"),
            "P---",
            "----",
        ),
        ("system admin", Some("root:password"), "PUDM", "PUDM"),
        (
            "expired robot",
            Some("robot${p}+expired:robot-secret"),
            "----",
            "----",
        ),
        (
            "disabled robot",
            Some("robot${p}+disabled:robot-secret"),
            "----",
            "----",
        ),
    ];
    for (i, (label, creds, public, private)) in rows.iter().enumerate() {
        for (project, cells) in [("pub", public), ("priv", private)] {
            let repo = format!("{project}/app");
            let cell = |c: char| cells.contains(c);
            // Fresh content for this row: a manifest to read, one to
            // delete by tag, one to delete by digest.
            let read_tag = format!("r{i}");
            let read = h.admin_manifest(&admin, &repo, &read_tag).await;
            let del_tag = format!("t{i}");
            h.admin_manifest(&admin, &repo, &del_tag).await;
            let del_digest = h.admin_manifest(&admin, &repo, &format!("d{i}")).await;
            let creds = creds.map(|c| c.replace("{p}", project));
            let token = h.token(creds.as_deref(), &[&repo, "other/lib"]).await;
            let t = token.as_deref();
            let app = &h.app;
            let status = |s: StatusCode| s.as_u16();
            // Refused: 401 without a valid token, 403 (insufficient
            // scope) with one that does not cover the request.
            // (An anonymous token is no token: 401.)
            let refused = if t.is_some() && creds.is_some() {
                403
            } else {
                401
            };
            let ok_or_refused = |allowed: bool, got: StatusCode, ok: u16, what: &str| {
                let want = if allowed { ok } else { refused };
                assert_eq!(status(got), want, "{label} on {project}: {what}");
            };
            // Pull: manifest, blob, tag list, referrers.
            let (s, _) = call(
                app,
                Method::GET,
                &format!("/v2/{repo}/manifests/{read_tag}"),
                t,
                None,
                vec![],
            )
            .await;
            ok_or_refused(cell('P'), s, 200, "pull manifest");
            let config = Digest::sha256(b"{}");
            let (s, _) = call(
                app,
                Method::GET,
                &format!("/v2/{repo}/blobs/{config}"),
                t,
                None,
                vec![],
            )
            .await;
            ok_or_refused(cell('P'), s, 200, "pull blob");
            let (s, _) = call(
                app,
                Method::GET,
                &format!("/v2/{repo}/tags/list"),
                t,
                None,
                vec![],
            )
            .await;
            ok_or_refused(cell('P'), s, 200, "tag list");
            let (s, _) = call(
                app,
                Method::GET,
                &format!("/v2/{repo}/referrers/{read}"),
                t,
                None,
                vec![],
            )
            .await;
            ok_or_refused(cell('P'), s, 200, "referrers");
            // Push a blob.
            let blob = format!("{label} was here").into_bytes();
            let d = Digest::sha256(&blob);
            let (s, _) = call(
                app,
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                t,
                None,
                blob,
            )
            .await;
            ok_or_refused(cell('U'), s, 201, "push");
            // Delete a tag, then a manifest by digest.
            let (s, _) = call(
                app,
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{del_tag}"),
                t,
                None,
                vec![],
            )
            .await;
            ok_or_refused(cell('D'), s, 202, "delete tag");
            let (s, _) = call(
                app,
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{del_digest}"),
                t,
                None,
                vec![],
            )
            .await;
            ok_or_refused(cell('D'), s, 202, "delete manifest");
            // What a refused delete left alone is still there.
            let (s, _) = call(
                app,
                Method::GET,
                &format!("/v2/{repo}/manifests/{del_tag}"),
                Some(&admin),
                None,
                vec![],
            )
            .await;
            assert_eq!(
                status(s),
                if cell('D') { 404 } else { 200 },
                "{label} on {project}: tag after delete"
            );
            // Mount from other/lib: 201 with read access there, otherwise
            // a plain upload session (202); 401 without push here.
            let (s, _) = call(
                app,
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?mount={lib_blob}&from=other/lib"),
                t,
                None,
                vec![],
            )
            .await;
            let want = if !cell('U') {
                refused
            } else if cell('M') {
                201
            } else {
                202
            };
            assert_eq!(status(s), want, "{label} on {project}: mount");
            // The catalog lists this repository exactly when it may pull.
            let (s, body) = call(app, Method::GET, "/v2/_catalog", t, None, vec![]).await;
            if token.is_none() || creds.is_none() {
                assert_eq!(status(s), refused, "{label}: catalog");
            } else {
                assert_eq!(status(s), 200, "{label}: catalog");
                let listed = body["repositories"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == repo.as_str());
                assert_eq!(listed, cell('P'), "{label} on {project}: catalog entry");
            }
        }
    }
}

/// Spellings of a path that reach another repository never carry the
/// permission of the one the token names (Harbor CVE-2020-29662 was a
/// route variant that skipped the check).
#[tokio::test]
async fn route_variants_reach_the_same_check() {
    let h = Harness::new();
    let admin = h
        .token(Some("root:password"), &["priv/app", "pub/app"])
        .await
        .unwrap();
    h.admin_manifest(&admin, "priv/app", "v1").await;
    h.admin_manifest(&admin, "pub/app", "v1").await;
    // The public project's pull-only robot: its token covers pub/app.
    let t = h
        .token(
            Some("robot$pub+pull:robot-secret"),
            &["pub/app", "priv/app"],
        )
        .await
        .unwrap();
    for path in [
        "/v2/priv/app/manifests/v1",
        "/v2/priv%2Fapp/manifests/v1",
        "/v2/priv%2fapp/manifests/v1",
        "/v2//priv/app/manifests/v1",
        "/v2/priv//app/manifests/v1",
        "/v2/PRIV/app/manifests/v1",
        "/v2/Priv/app/manifests/v1",
        "/v2/pub/../priv/app/manifests/v1",
        "/v2/pub/%2e%2e/priv/app/manifests/v1",
        "/v2/priv/app/manifests/v1/",
    ] {
        let (s, _) = call(&h.app, Method::GET, path, Some(&t), None, vec![]).await;
        assert!(s.is_client_error(), "{path}: {s}");
    }
    // The same token does read what it covers.
    let (s, _) = call(
        &h.app,
        Method::GET,
        "/v2/pub/app/tags/list",
        Some(&t),
        None,
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn hostile_scopes_and_catalog_pages_with_auth_on() {
    let h = Harness::new();
    // Header injection through `scope`: CR/LF never reach a header, and a
    // mangled scope grants nothing.
    for scope in [
        "repository:priv/app:pull%0d%0aX-Evil:%201",
        "repository:priv/app%0d%0aX-Evil:%201:pull",
        "repository:priv/app:pull%0aSet-Cookie:%20a=b",
    ] {
        let req = http::Request::builder()
            .uri(format!("/token?service=test&scope={scope}"))
            .header(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("dev:password")
                ),
            )
            .body(Body::empty())
            .unwrap();
        let resp = h.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scope}");
        assert!(resp.headers().get("x-evil").is_none());
        assert!(resp.headers().get("set-cookie").is_none());
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let claims = body["token"].as_str().unwrap().split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["access"], json!([]), "{scope} granted {claims}");
    }
    // The catalog's `n` with auth on: garbage is the OCI error, not a
    // panic or an unfiltered page.
    let t = h.token(Some("dev:password"), &[]).await.unwrap();
    for n in ["-1", "abc", "99999999999999999999999", "1e3", ""] {
        let (s, body) = call(
            &h.app,
            Method::GET,
            &format!("/v2/_catalog?n={n}"),
            Some(&t),
            None,
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "n={n}: {body}");
        assert_eq!(body["errors"][0]["code"], "PAGINATION_NUMBER_INVALID");
    }
}

/// Upload sessions as distribution's clients (the conformance suite's
/// among them) authorize them: a session's progress (GET) is a pull, and
/// cancelling it (DELETE) takes push or delete.
#[tokio::test]
async fn upload_status_is_a_pull_and_cancel_takes_push_or_delete() {
    let h = Harness::new();
    let push = h
        .token(Some("robot$priv+push:robot-secret"), &["priv/app"])
        .await
        .unwrap();
    let session = |t: String| {
        let app = h.app.clone();
        async move {
            let req = http::Request::builder()
                .method(Method::POST)
                .uri("/v2/priv/app/blobs/uploads/")
                .header("authorization", format!("Bearer {t}"))
                .body(Body::empty())
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            resp.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    let pull = h
        .token(Some("robot$priv+pull:robot-secret"), &["priv/app"])
        .await
        .unwrap();
    let maint = h
        .token(Some("maint:password"), &["priv/app"])
        .await
        .unwrap();
    // `maint`'s token was asked for everything; a delete-only one:
    let (_, delete_only) = call(
        &h.app,
        Method::GET,
        "/token?service=test&scope=repository:priv/app:delete",
        None,
        Some("maint:password"),
        Vec::new(),
    )
    .await;
    let delete_only = delete_only["token"].as_str().unwrap().to_owned();
    let loc = session(push.clone()).await;
    let (s, _) = call(&h.app, Method::GET, &loc, Some(&pull), None, vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "progress with a pull token");
    let (s, _) = call(&h.app, Method::DELETE, &loc, Some(&pull), None, vec![]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "cancel with a pull token");
    let (s, _) = call(
        &h.app,
        Method::DELETE,
        &loc,
        Some(&delete_only),
        None,
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "cancel with a delete token");
    let loc = session(maint).await;
    let (s, _) = call(&h.app, Method::DELETE, &loc, Some(&push), None, vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "cancel with a push token");
}
