//! The UI's pages through the real router: what each viewer sees, that
//! values are escaped, and that `[ui] enabled = false` turns it off.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::{Limits, Registry};

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, http::HeaderMap, String) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, http::HeaderMap) {
    let resp = app.clone().oneshot(req).await.unwrap();
    (resp.status(), resp.headers().clone())
}

/// Push a one-blob image to `repo` as `tag` through the API.
async fn push_image(app: &axum::Router, repo: &str, tag: &str) {
    push_image_as(app, repo, tag, None).await;
}

/// [`push_image`] with a bearer token.
async fn push_image_as(app: &axum::Router, repo: &str, tag: &str, token: Option<&str>) {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let digest = push_blob_as(app, repo, config, token).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.to_string(), "size": config.len()},
        "layers": []
    });
    let put = authorized(Request::put(format!("/v2/{repo}/manifests/{tag}")), token)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(Body::from(serde_json::to_vec(&manifest).unwrap()))
        .unwrap();
    assert_eq!(send(app, put).await.0, StatusCode::CREATED);
}

/// `b` with a bearer `token`, if any.
fn authorized(b: http::request::Builder, token: Option<&str>) -> http::request::Builder {
    match token {
        Some(t) => b.header("authorization", format!("Bearer {t}")),
        None => b,
    }
}

/// Push `blob` to `repo`.
async fn push_blob(app: &axum::Router, repo: &str, blob: &[u8]) -> berth_oci::Digest {
    push_blob_as(app, repo, blob, None).await
}

/// [`push_blob`] with a bearer token.
async fn push_blob_as(
    app: &axum::Router,
    repo: &str,
    blob: &[u8],
    token: Option<&str>,
) -> berth_oci::Digest {
    let digest = berth_oci::Digest::sha256(blob);
    let post = authorized(Request::post(format!("/v2/{repo}/blobs/uploads/")), token);
    let (status, h) = send(app, post.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let location = h["location"].to_str().unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = authorized(
        Request::put(format!("{location}{sep}digest={digest}")),
        token,
    )
    .header("content-type", "application/octet-stream")
    .body(Body::from(blob.to_vec()))
    .unwrap();
    assert_eq!(send(app, put).await.0, StatusCode::CREATED);
    digest
}

/// An open registry holding `repos`, each with one tagged image.
async fn open_registry_with(repos: &[&str]) -> axum::Router {
    let reg = Arc::new(Registry::in_memory(Limits::default()).unwrap());
    let app = crate::api::router(reg);
    for repo in repos {
        push_image(&app, repo, "v1").await;
    }
    app
}

#[tokio::test]
async fn an_open_registry_lists_every_project_with_its_repositories() {
    let app = open_registry_with(&["team/app", "team/tools", "infra/proxy"]).await;
    let (status, headers, body) = get(&app, "/ui/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    for (project, count) in [("team", 2), ("infra", 1)] {
        let row = format!(
            "<a href=\"/ui/projects/{project}\"><code>{project}</code></a></td><td><span class=\"badge\">open registry</span></td><td class=\"num\">{count}</td>"
        );
        assert!(body.contains(&row), "{project}: {body}");
    }
    // The stylesheet is served from the binary; /ui redirects to /ui/.
    let (status, headers, css) = get(&app, "/ui/static/berth.css").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    assert!(css.contains("prefers-color-scheme: dark"));
    let (status, headers, js) = get(&app, "/ui/static/berth.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert!(js.contains("clipboard"));
    assert!(
        body.contains("<script src=\"/ui/static/berth.js\" defer></script>"),
        "{body}"
    );
    let (status, headers, _) = get(&app, "/ui").await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "/ui/");
    // Any other /ui/ address is the UI's 404 page, not the admin API's.
    let (status, headers, body) = get(&app, "/ui/no/such/page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(body.contains("<h1>Not found</h1>"), "{body}");
}

#[tokio::test]
async fn anonymous_viewers_see_public_projects_only() {
    let h = crate::api::auth_tests::Harness::new();
    let (status, _, body) = get(&h.app, "/ui/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<code>pub</code>"), "{body}");
    assert!(body.contains("public"), "{body}");
    for hidden in ["priv", "other"] {
        assert!(
            !body.contains(&format!("<code>{hidden}</code>")),
            "{hidden}: {body}"
        );
    }
}

#[tokio::test]
async fn the_ui_can_be_turned_off() {
    let reg = Registry::in_memory(Limits::default())
        .unwrap()
        .with_ui(false);
    let app = crate::api::router(Arc::new(reg));
    for uri in ["/ui/", "/ui/static/berth.css"] {
        assert_eq!(get(&app, uri).await.0, StatusCode::NOT_FOUND, "{uri}");
    }
    // The API is unaffected.
    assert_eq!(get(&app, "/v2/").await.0, StatusCode::OK);
}

#[test]
fn the_config_turns_it_off_and_refuses_typos() {
    let off = crate::config::Config::parse("[ui]\nenabled = false\n").unwrap();
    assert!(!off.ui.enabled);
    assert!(crate::config::Config::parse("").unwrap().ui.enabled);
    let err = crate::config::Config::parse("[ui]\nenable = false\n").unwrap_err();
    assert!(err.to_string().contains("enable"), "{err}");
}

/// A request through `app` with `headers`, answering status, headers and
/// body.
async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(b.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// The `name=value` part of the `Set-Cookie` for `name`, and its attributes.
fn set_cookie(h: &http::HeaderMap, name: &str) -> Option<(String, String)> {
    h.get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
        pair.starts_with(&format!("{name}="))
            .then(|| (pair.to_owned(), attrs.to_owned()))
    })
}

/// The value of the hidden `csrf` field in a page.
fn csrf_field(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn signing_in_and_out_with_a_session_cookie_and_csrf_tokens() {
    let h = crate::api::auth_tests::Harness::new();
    let app = &h.app;
    // The sign-in form, with its double-submitted CSRF cookie.
    let (status, headers, body) = call(app, "GET", "/ui/login", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let (login_cookie, attrs) = set_cookie(&headers, "berth_login_csrf").unwrap();
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"),
        "{attrs}"
    );
    let csrf = csrf_field(&body);
    assert_eq!(login_cookie, format!("berth_login_csrf={csrf}"));
    let form =
        |user: &str, pass: &str, token: &str| format!("csrf={token}&user={user}&password={pass}");
    let form_ct = ("content-type", "application/x-www-form-urlencoded");
    // Without the token, with another, or from another site: refused.
    for (cookie, token, origin) in [
        ("", csrf.as_str(), None),
        (login_cookie.as_str(), "forged", None),
        (
            login_cookie.as_str(),
            csrf.as_str(),
            Some("http://evil.example"),
        ),
    ] {
        let mut hs = vec![form_ct, ("cookie", cookie), ("host", "registry.test")];
        if let Some(o) = origin {
            hs.push(("origin", o));
        }
        let (status, headers, _) = call(
            app,
            "POST",
            "/ui/login",
            &hs,
            &form("dev", "password", token),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{cookie} {token} {origin:?}");
        assert!(set_cookie(&headers, "berth_session").is_none());
    }
    // A wrong password: the form again, no session.
    let hs = [
        form_ct,
        ("cookie", login_cookie.as_str()),
        ("host", "registry.test"),
        ("origin", "http://registry.test"),
    ];
    let (status, headers, body) =
        call(app, "POST", "/ui/login", &hs, &form("dev", "wrong", &csrf)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Wrong user or password."));
    assert!(set_cookie(&headers, "berth_session").is_none());
    // The right one: a session cookie and back to the projects.
    let (status, headers, _) = call(
        app,
        "POST",
        "/ui/login",
        &hs,
        &form("dev", "password", &csrf),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/");
    let (session, attrs) = set_cookie(&headers, "berth_session").unwrap();
    for a in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(attrs.contains(a), "{a}: {attrs}");
    }
    assert!(!attrs.contains("Secure"), "plain HTTP: {attrs}");
    // Signed in, dev sees the private project it is a member of.
    let (_, _, body) = call(app, "GET", "/ui/", &[("cookie", &session)], "").await;
    assert!(body.contains("<code>priv</code>"), "{body}");
    assert!(body.contains("Sign out"), "{body}");
    let session_csrf = csrf_field(&body);
    // Signing out needs the session's token.
    let (status, _, _) = call(
        app,
        "POST",
        "/ui/logout",
        &[form_ct, ("cookie", &session)],
        "csrf=nope",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, _, body) = call(app, "GET", "/ui/", &[("cookie", &session)], "").await;
    assert!(body.contains("<code>priv</code>"), "still signed in");
    let (status, headers, _) = call(
        app,
        "POST",
        "/ui/logout",
        &[form_ct, ("cookie", &session)],
        &format!("csrf={session_csrf}"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        set_cookie(&headers, "berth_session")
            .unwrap()
            .1
            .contains("Max-Age=0")
    );
    // The old cookie is worth nothing now.
    let (_, _, body) = call(app, "GET", "/ui/", &[("cookie", &session)], "").await;
    assert!(!body.contains("<code>priv</code>"), "{body}");
    assert!(body.contains("Sign in"), "{body}");
}

#[tokio::test]
async fn a_project_lists_its_repositories_and_a_repository_its_tags() {
    let app = open_registry_with(&["team/app", "team/tools"]).await;
    for tag in ["v2", "latest"] {
        push_image(&app, "team/app", tag).await;
    }
    let (status, _, body) = get(&app, "/ui/projects/team").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(
            "<a href=\"/ui/repo/team/app\"><code>team/app</code></a></td><td class=\"num\">3</td>"
        ),
        "{body}"
    );
    assert!(
        body.contains("<code>team/tools</code></a></td><td class=\"num\">1</td>"),
        "{body}"
    );
    let (status, _, body) = call(
        &app,
        "GET",
        "/ui/repo/team/app",
        &[("host", "registry.lan:5000")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("docker pull registry.lan:5000/team/app:latest"),
        "{body}"
    );
    assert!(
        body.contains("docker pull registry.lan:5000/team/app@sha256:"),
        "{body}"
    );
    assert!(body.contains("3 tags"), "{body}");
    for tag in ["v1", "v2", "latest"] {
        assert!(
            body.contains(&format!("<td><code>{tag}</code></td>")),
            "{tag}: {body}"
        );
    }
    assert!(body.contains("image"), "{body}");
    // A filter: only the tags containing it.
    let (_, _, body) = get(&app, "/ui/repo/team/app?q=v").await;
    assert!(body.contains("2 tags containing"), "{body}");
    assert!(!body.contains("<td><code>latest</code></td>"), "{body}");
    // What the viewer typed comes back inert.
    let (_, _, body) = get(
        &app,
        "/ui/repo/team/app?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    )
    .await;
    assert!(!body.contains("<script>"), "{body}");
    assert!(body.contains("&lt;script&gt;"), "{body}");
    // Unknown or invalid names: not found.
    assert_eq!(get(&app, "/ui/repo/Team/..").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "/ui/repo/team/nope").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn tags_come_a_hundred_a_page() {
    let app = open_registry_with(&[]).await;
    for i in 0..150 {
        push_image(&app, "big/repo", &format!("t{i:03}")).await;
    }
    let (_, _, body) = get(&app, "/ui/repo/big/repo").await;
    assert!(body.contains("150 tags"), "{body}");
    assert_eq!(body.matches("<td><code>t").count(), 100);
    assert!(
        body.contains("href=\"/ui/repo/big/repo?q=&amp;after=t099\""),
        "{body}"
    );
    let (_, _, body) = get(&app, "/ui/repo/big/repo?q=&after=t099").await;
    assert_eq!(body.matches("<td><code>t").count(), 50);
    assert!(
        body.contains("<td><code>t100</code></td>") && body.contains("<td><code>t149</code></td>")
    );
    assert!(!body.contains("Next page"));
}

#[tokio::test]
async fn pages_of_projects_a_viewer_cannot_pull_do_not_exist_for_them() {
    let h = crate::api::auth_tests::Harness::new();
    for uri in [
        "/ui/projects/priv",
        "/ui/projects/other",
        "/ui/repo/priv/app",
    ] {
        assert_eq!(get(&h.app, uri).await.0, StatusCode::NOT_FOUND, "{uri}");
    }
    assert_eq!(get(&h.app, "/ui/projects/pub").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_tag_says_who_pushed_it() {
    let app = open_registry_with(&["team/app"]).await;
    // The audit log is written in the background: wait for the push.
    let mut body = String::new();
    for _ in 0..100 {
        body = get(&app, "/ui/repo/team/app").await.2;
        if body.contains("<td class=\"wide\">anonymous</td>") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no pusher shown: {body}");
}

/// Sign `user` in on `app`: its session cookie and the session's CSRF token.
async fn sign_in(app: &axum::Router, user: &str) -> (String, String) {
    let (_, headers, body) = call(app, "GET", "/ui/login", &[], "").await;
    let (cookie, _) = set_cookie(&headers, "berth_login_csrf").unwrap();
    let csrf = csrf_field(&body);
    let (status, headers, _) = call(
        app,
        "POST",
        "/ui/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookie),
        ],
        &format!("csrf={csrf}&user={user}&password=password"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{user} signs in");
    let (session, _) = set_cookie(&headers, "berth_session").unwrap();
    let (_, _, body) = call(app, "GET", "/ui/", &[("cookie", &session)], "").await;
    (session, csrf_field(&body))
}

/// POST the tag-deletion form of `priv/app` with `cookie` and `fields`.
async fn post_delete(
    app: &axum::Router,
    cookie: &str,
    fields: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let form = ("content-type", "application/x-www-form-urlencoded");
    call(
        app,
        "POST",
        "/ui/delete-tag/priv/app",
        &[form, ("cookie", cookie)],
        fields,
    )
    .await
}

#[tokio::test]
async fn a_maintainer_deletes_a_tag_after_confirming_and_a_guest_cannot() {
    let h = crate::api::auth_tests::Harness::new();
    let app = &h.app;
    let root = h.token(Some("root:password"), &["priv/app"]).await.unwrap();
    for tag in ["v1", "v2"] {
        push_image_as(app, "priv/app", tag, Some(&root)).await;
    }

    // A guest sees the tags but no way to delete them, and is refused.
    let (guest, guest_csrf) = sign_in(app, "guest").await;
    let (_, _, body) = call(app, "GET", "/ui/repo/priv/app", &[("cookie", &guest)], "").await;
    assert!(body.contains("<td><code>v1</code></td>"), "{body}");
    assert!(!body.contains("/ui/delete-tag/"), "{body}");
    let (status, _, _) = call(
        app,
        "GET",
        "/ui/delete-tag/priv/app?tag=v1",
        &[("cookie", &guest)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = post_delete(app, &guest, &format!("csrf={guest_csrf}&tag=v1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A maintainer confirms, then deletes; without the token, nothing.
    let (maint, csrf) = sign_in(app, "maint").await;
    let (_, _, body) = call(app, "GET", "/ui/repo/priv/app", &[("cookie", &maint)], "").await;
    assert!(
        body.contains("href=\"/ui/delete-tag/priv/app?tag=v1\""),
        "{body}"
    );
    let (status, _, body) = call(
        app,
        "GET",
        "/ui/delete-tag/priv/app?tag=v1",
        &[("cookie", &maint)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Delete the tag"), "{body}");
    let (status, _, _) = post_delete(app, &maint, "tag=v1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = post_delete(app, &maint, &format!("csrf={csrf}&tag=v1")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/repo/priv/app");
    let (_, _, body) = call(app, "GET", "/ui/repo/priv/app", &[("cookie", &maint)], "").await;
    assert!(
        !body.contains("<td><code>v1</code></td>"),
        "v1 is gone: {body}"
    );
    assert!(
        body.contains("<td><code>v2</code></td>"),
        "v2 stays: {body}"
    );
    // Gone for the API too.
    let (status, _) = send(
        app,
        Request::get("/v2/priv/app/manifests/v1")
            .header("authorization", format!("Bearer {root}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_image_page_shows_labels_layers_store_paths_and_nothing_runs() {
    let app = open_registry_with(&[]).await;
    let repo = "team/app";
    let config = serde_json::json!({
        "architecture": "arm64", "os": "linux", "created": "2026-11-30T00:00:00Z",
        "config": {"Labels": {
            "org.opencontainers.image.source": "https://git.lan/team/app",
            "org.opencontainers.image.revision": "javascript:alert(1)",
            "evil": "<script>alert(2)</script>\"onload=alert(3)"
        }}
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cd = push_blob(&app, repo, &config).await;
    let layer = b"layer bytes".to_vec();
    let ld = push_blob(&app, repo, &layer).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.to_string(), "size": layer.len(),
                    "annotations": {"io.berth.store-paths": "/nix/store/abc-hello-2.12\n/nix/store/def-glibc-2.40"}}],
        "annotations": {"note": "<img src=x onerror=alert(4)>"}
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let md = berth_oci::Digest::sha256(&bytes);
    let put = Request::put(format!("/v2/{repo}/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(Body::from(bytes))
        .unwrap();
    assert_eq!(send(&app, put).await.0, StatusCode::CREATED);

    let (_, _, repo_page) = get(&app, "/ui/repo/team/app").await;
    assert!(
        repo_page.contains(&format!("href=\"/ui/image/team/app?digest={md}\"")),
        "{repo_page}"
    );
    let (status, _, body) = get(&app, &format!("/ui/image/team/app?digest={md}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("linux/arm64"), "{body}");
    assert!(
        body.contains("<code>/nix/store/abc-hello-2.12</code>"),
        "{body}"
    );
    assert!(
        body.contains("<code>/nix/store/def-glibc-2.40</code>"),
        "{body}"
    );
    // An https source is a link; a javascript: value is text.
    assert!(
        body.contains("<a href=\"https://git.lan/team/app\""),
        "{body}"
    );
    assert!(!body.contains("href=\"javascript:"), "{body}");
    assert!(body.contains("javascript:alert(1)"), "{body}");
    // Markup from pushed content arrives escaped, never as elements.
    for bad in ["<script>alert(2)", "<img src=x", "\"onload=alert(3)"] {
        assert!(!body.contains(bad), "{bad}: {body}");
    }
    assert!(body.contains("&lt;script&gt;alert(2)"), "{body}");
    assert!(
        body.contains("&lt;img src=x onerror=alert(4)&gt;"),
        "{body}"
    );
    // Unknown digests and bad ones: not found.
    let other = berth_oci::Digest::sha256(b"nothing");
    assert_eq!(
        get(&app, &format!("/ui/image/team/app?digest={other}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/ui/image/team/app?digest=sha256:zz").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn immutable_tags_are_marked() {
    let policy: crate::policy::PolicyConfig =
        toml::from_str("project = \"team\"\nimmutable_tags = [\"v*\"]\n").unwrap();
    let reg = Registry::in_memory(Limits::default())
        .unwrap()
        .with_policies(&[policy])
        .unwrap();
    let app = crate::api::router(Arc::new(reg));
    for tag in ["v1", "latest"] {
        push_image(&app, "team/app", tag).await;
    }
    let (_, _, body) = get(&app, "/ui/repo/team/app").await;
    assert!(
        body.contains(
            "<code>v1</code> <span class=\"badge\" title=\"immutable: matches v*\">immutable</span>"
        ),
        "{body}"
    );
    assert!(body.contains("<td><code>latest</code></td>"), "{body}");
}

/// Push a CycloneDX SBOM of `components` as a referrer of `subject` (a
/// manifest of `subject_size` bytes) in `repo`; its manifest's digest.
async fn push_sbom(
    app: &axum::Router,
    repo: &str,
    subject: &berth_oci::Digest,
    subject_size: usize,
    components: serde_json::Value,
) -> berth_oci::Digest {
    let doc = serde_json::json!({
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "metadata": {"component": {"type": "container", "name": "app-image"}},
        "components": components,
    });
    let doc = serde_json::to_vec(&doc).unwrap();
    let dd = push_blob(app, repo, &doc).await;
    let empty = push_blob(app, repo, b"{}").await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cyclonedx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.cyclonedx+json", "digest": dd.to_string(), "size": doc.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject.to_string(), "size": subject_size},
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let md = berth_oci::Digest::sha256(&bytes);
    let put = Request::put(format!("/v2/{repo}/manifests/{md}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(Body::from(bytes))
        .unwrap();
    assert_eq!(send(app, put).await.0, StatusCode::CREATED);
    md
}

#[tokio::test]
async fn an_sbom_lists_its_components_searchably_and_escaped() {
    let app = open_registry_with(&["team/app"]).await;
    let (_, h) = send(
        &app,
        Request::head("/v2/team/app/manifests/v1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let subject: berth_oci::Digest = h["docker-content-digest"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let size: usize = h["content-length"].to_str().unwrap().parse().unwrap();
    let components = serde_json::json!([
        {"name": "hello", "version": "2.12", "licenses": [{"license": {"id": "GPL-3.0-or-later"}}],
         "properties": [{"name": "nix:store_path", "value": "/nix/store/abc-hello-2.12"}]},
        {"name": "glibc", "version": "2.40", "licenses": [{"expression": "LGPL-2.1-or-later AND GPL-2.0"}],
         "properties": [{"name": "nix:store_path", "value": "/nix/store/def-glibc-2.40"}],
         "components": [{"name": "glibc-locales", "version": "2.40"}]},
        {"name": "<script>alert(1)</script>", "version": "\"onload=alert(2)",
         "licenses": [{"license": {"name": "<img src=x onerror=alert(3)>"}}]}
    ]);
    let sbom = push_sbom(&app, "team/app", &subject, size, components).await;

    // The image page links to it.
    let (_, _, image) = get(&app, &format!("/ui/image/team/app?digest={subject}")).await;
    let link = format!("href=\"/ui/sbom/team/app?digest={sbom}\"");
    assert!(image.contains(&link), "{image}");

    let (status, _, body) = get(&app, &format!("/ui/sbom/team/app?digest={sbom}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("SBOM of app-image"), "{body}");
    assert!(body.contains("4 components"), "{body}");
    assert!(
        body.contains("<td>hello</td><td>2.12</td><td><code>/nix/store/abc-hello-2.12</code></td><td>GPL-3.0-or-later</td>"),
        "{body}"
    );
    assert!(body.contains("LGPL-2.1-or-later AND GPL-2.0"), "{body}");
    // A nested component is listed; one without a licence says so.
    assert!(
        body.contains("<td>glibc-locales</td><td>2.40</td><td><span class=\"muted\">—</span></td><td><span class=\"muted\">unknown</span></td>"),
        "{body}"
    );
    for bad in ["<script>alert(1)", "<img src=x", "\"onload=alert(2)"] {
        assert!(!body.contains(bad), "{bad}: {body}");
    }
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );

    // Searching on the server: any column, case-insensitively.
    let (_, _, found) = get(&app, &format!("/ui/sbom/team/app?digest={sbom}&q=GLIBC")).await;
    assert!(found.contains("2 containing “GLIBC”"), "{found}");
    assert!(found.contains("<td>glibc-locales</td>"), "{found}");
    assert!(!found.contains("<td>hello</td>"), "{found}");
    let (_, _, by_licence) = get(&app, &format!("/ui/sbom/team/app?digest={sbom}&q=gpl-3.0")).await;
    assert!(by_licence.contains("1 containing"), "{by_licence}");
    assert!(by_licence.contains("<td>hello</td>"), "{by_licence}");

    // The image itself is no SBOM; an unknown digest is not found.
    assert_eq!(
        get(&app, &format!("/ui/sbom/team/app?digest={subject}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let other = berth_oci::Digest::sha256(b"nothing");
    assert_eq!(
        get(&app, &format!("/ui/sbom/team/app?digest={other}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

/// POST a form to `uri` as the session `cookie`.
async fn post_form(
    app: &axum::Router,
    uri: &str,
    cookie: &str,
    fields: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let form = ("content-type", "application/x-www-form-urlencoded");
    call(
        app,
        "POST",
        uri,
        &[form, ("cookie", cookie), ("host", "registry.test")],
        fields,
    )
    .await
}

/// The text of the element with `id` in a page.
fn by_id(body: &str, id: &str) -> String {
    let at = body.find(&format!("id=\"{id}\"")).expect(id);
    let start = at + body[at..].find('>').unwrap() + 1;
    body[start..start + body[start..].find('<').unwrap()].to_owned()
}

/// An admin API call with Basic `creds`.
async fn admin_api(
    app: &axum::Router,
    method: http::Method,
    uri: &str,
    creds: &str,
    body: serde_json::Value,
) -> StatusCode {
    crate::api::auth_tests::call(
        app,
        method,
        uri,
        None,
        Some(creds),
        serde_json::to_vec(&body).unwrap(),
    )
    .await
    .0
}

#[tokio::test]
async fn robots_are_made_with_the_secret_shown_once_then_rotated_and_disabled() {
    let h = crate::api::auth_tests::Harness::new();
    let app = &h.app;
    let (cookie, csrf) = sign_in(app, "padmin").await;
    let (status, _, page) = call(app, "GET", "/ui/robots", &[("cookie", &cookie)], "").await;
    assert_eq!(status, StatusCode::OK);
    // padmin administers pub and priv, not other; declared robots are
    // listed read-only.
    assert!(page.contains("<option value=\"priv\">"), "{page}");
    assert!(!page.contains("<option value=\"other\">"), "{page}");
    assert!(!page.contains("(system robot"), "{page}");
    assert!(page.contains("robot$priv+pull"), "{page}");
    assert!(page.contains("declared in the configuration"), "{page}");

    let create = format!("csrf={csrf}&op=create&scope=priv&name=ci&pull=on&push=on&days=7");
    let (status, _, shown) = post_form(app, "/ui/robots", &cookie, &create).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let secret = by_id(&shown, "robot-secret");
    assert!(secret.len() >= 32, "{shown}");
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("robot$priv+ci:{secret}"),
    );
    assert!(by_id(&shown, "auth-json").contains(&auth), "{shown}");
    assert!(shown.contains("registry.test"), "{shown}");
    let creds = format!("robot$priv+ci:{secret}");
    assert!(h.token(Some(&creds), &["priv/app"]).await.is_some());
    // The list shows the robot, never its secret again.
    let (_, _, page) = call(app, "GET", "/ui/robots", &[("cookie", &cookie)], "").await;
    assert!(page.contains("robot$priv+ci"), "{page}");
    assert!(page.contains("priv/** (pull, push)"), "{page}");
    assert!(!page.contains(&secret), "the secret is shown once");

    // Rotating: a new secret; the old one stops working.
    let rotate = format!("csrf={csrf}&op=rotate&robot=robot%24priv%2Bci");
    let (status, _, shown) = post_form(app, "/ui/robots", &cookie, &rotate).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let fresh = by_id(&shown, "robot-secret");
    assert_ne!(fresh, secret);
    assert!(h.token(Some(&creds), &["priv/app"]).await.is_none());
    let creds = format!("robot$priv+ci:{fresh}");
    assert!(h.token(Some(&creds), &["priv/app"]).await.is_some());
    // Disabling: refused from then on.
    let disable = format!("csrf={csrf}&op=disable&robot=robot%24priv%2Bci");
    let (status, _, _) = post_form(app, "/ui/robots", &cookie, &disable).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(h.token(Some(&creds), &["priv/app"]).await.is_none());
    let (_, _, page) = call(app, "GET", "/ui/robots", &[("cookie", &cookie)], "").await;
    assert!(page.contains("disabled"), "{page}");

    // Another project's robot: the API's 404, shown with its reason.
    let elsewhere = format!("csrf={csrf}&op=create&scope=other&name=ci&pull=on");
    let (status, _, shown) = post_form(app, "/ui/robots", &cookie, &elsewhere).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{shown}");
    assert!(shown.contains("role=\"alert\""), "{shown}");
    // No CSRF token, or a declared robot: refused, nothing changes.
    let forged = "op=create&scope=priv&name=ci2&pull=on";
    assert_eq!(
        post_form(app, "/ui/robots", &cookie, forged).await.0,
        StatusCode::FORBIDDEN
    );
    let declared = format!("csrf={csrf}&op=disable&robot=robot%24priv%2Bpull");
    assert_eq!(
        post_form(app, "/ui/robots", &cookie, &declared).await.0,
        StatusCode::CONFLICT
    );
    // A guest manages no robot and gets no form; anonymous is sent to sign in.
    let (guest, _) = sign_in(app, "guest").await;
    let (_, _, page) = call(app, "GET", "/ui/robots", &[("cookie", &guest)], "").await;
    assert!(page.contains("No robot you manage yet."), "{page}");
    assert!(!page.contains("New robot"), "{page}");
    let (status, headers, _) = call(app, "GET", "/ui/robots", &[], "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/login?next=%2Fui%2Frobots");
}

#[tokio::test]
async fn signing_in_returns_to_the_page_that_asked_and_never_to_another_site() {
    let h = crate::api::auth_tests::Harness::new();
    let app = &h.app;
    for (next, landing) in [
        (
            "%2Fui%2Fprojects%2Fpriv%2Fpolicy",
            "/ui/projects/priv/policy",
        ),
        ("%2F%2Fevil.example%2Fui%2F", "/ui/"),
        ("https%3A%2F%2Fevil.example%2F", "/ui/"),
        ("%2Fui%2F%5C%5Cevil.example", "/ui/"),
    ] {
        let (_, headers, body) = call(app, "GET", &format!("/ui/login?next={next}"), &[], "").await;
        let (cookie, _) = set_cookie(&headers, "berth_login_csrf").unwrap();
        let csrf = csrf_field(&body);
        let (status, headers, _) = call(
            app,
            "POST",
            "/ui/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &cookie),
            ],
            &format!("csrf={csrf}&user=padmin&password=password&next={next}"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{next}");
        assert_eq!(headers["location"], landing, "{next}");
    }
}

#[tokio::test]
async fn members_are_managed_by_project_admins_only() {
    let h = crate::api::auth_tests::Harness::new();
    let app = &h.app;
    let root = "root:password";
    let made = admin_api(
        app,
        http::Method::POST,
        "/api/v1/projects",
        root,
        serde_json::json!({"name": "lab"}),
    )
    .await;
    assert_eq!(made, StatusCode::CREATED);
    let (cookie, csrf) = sign_in(app, "root").await;
    let put = format!("csrf={csrf}&op=put&user=dev&role=developer");
    let (status, headers, _) = post_form(app, "/ui/projects/lab/members", &cookie, &put).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/projects/lab/members");
    let (_, _, page) = call(
        app,
        "GET",
        "/ui/projects/lab/members",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert!(page.contains("<td>dev</td><td>developer</td>"), "{page}");
    // The developer sees the members, without forms, and cannot change them.
    let (dev, dev_csrf) = sign_in(app, "dev").await;
    let (status, _, page) = call(
        app,
        "GET",
        "/ui/projects/lab/members",
        &[("cookie", &dev)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("<form class=\"inline\""), "{page}");
    let promote = format!("csrf={dev_csrf}&op=put&user=dev&role=admin");
    let (status, _, page) = post_form(app, "/ui/projects/lab/members", &dev, &promote).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("you do not administer"), "{page}");
    // Someone outside the project: it does not exist for them.
    let (guest, _) = sign_in(app, "otheradmin").await;
    assert_eq!(
        call(
            app,
            "GET",
            "/ui/projects/lab/members",
            &[("cookie", &guest)],
            ""
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // Removing.
    let remove = format!("csrf={csrf}&op=remove&user=dev");
    assert_eq!(
        post_form(app, "/ui/projects/lab/members", &cookie, &remove)
            .await
            .0,
        StatusCode::SEE_OTHER
    );
    let (_, _, page) = call(
        app,
        "GET",
        "/ui/projects/lab/members",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert!(!page.contains("<td>dev</td>"), "{page}");
    // A declared project's members are read-only here.
    let (_, _, page) = call(
        app,
        "GET",
        "/ui/projects/priv/members",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert!(page.contains("declared in the configuration"), "{page}");
    assert!(page.contains("<td>maint</td><td>maintainer</td>"), "{page}");
    assert!(!page.contains("Add a member"), "{page}");
}

#[tokio::test]
async fn retention_gc_webhooks_and_the_audit_log_have_pages() {
    let h = crate::api::auth_tests::Harness::new();
    let app = &h.app;
    let root = "root:password";
    let made = admin_api(
        app,
        http::Method::POST,
        "/api/v1/projects",
        root,
        serde_json::json!({"name": "lab"}),
    )
    .await;
    assert_eq!(made, StatusCode::CREATED);
    let policy = serde_json::json!({"immutable_tags": ["release-*"], "retention": [{"tags": "*", "latest": 1}], "quota_mib": 100});
    assert_eq!(
        admin_api(
            app,
            http::Method::PUT,
            "/api/v1/projects/lab/policy",
            root,
            policy
        )
        .await,
        StatusCode::OK
    );
    let token = h.token(Some(root), &["lab/app"]).await.unwrap();
    for tag in ["a", "b", "c"] {
        push_image_as(app, "lab/app", tag, Some(&token)).await;
    }
    let (cookie, csrf) = sign_in(app, "root").await;
    let get_page = |uri: &'static str, cookie: String| async move {
        call(app, "GET", uri, &[("cookie", &cookie)], "").await
    };
    let (status, _, page) = get_page("/ui/projects/lab/policy", cookie.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<code>release-*</code>"), "{page}");
    assert!(page.contains("the latest 1"), "{page}");
    assert!(page.contains("of a 100.0 MiB quota"), "{page}");
    assert!(page.contains("No retention has run yet."), "{page}");
    // A preview changes nothing and is shown as the last preview.
    let preview = format!("csrf={csrf}&op=preview");
    let (status, _, _) = post_form(app, "/ui/projects/lab/policy", &cookie, &preview).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, page) = get_page("/ui/projects/lab/policy", cookie.clone()).await;
    assert!(page.contains("Tags that would go (2)"), "{page}");
    assert!(page.contains("by root"), "{page}");
    let (_, _, tags) = get_page("/ui/repo/lab/app", cookie.clone()).await;
    assert!(tags.contains("3 tags"), "{tags}");
    let apply = format!("csrf={csrf}&op=apply");
    post_form(app, "/ui/projects/lab/policy", &cookie, &apply).await;
    let (_, _, page) = get_page("/ui/projects/lab/policy", cookie.clone()).await;
    assert!(page.contains("Tags removed (2)"), "{page}");
    let (_, _, tags) = get_page("/ui/repo/lab/app", cookie.clone()).await;
    assert!(tags.contains("1 tag"), "{tags}");

    // GC: a system admin's page; a dry run is recorded as the last.
    let (_, _, page) = get_page("/ui/gc", cookie.clone()).await;
    assert!(page.contains("No collection has run yet."), "{page}");
    let dry = format!("csrf={csrf}&op=dry-run");
    assert_eq!(
        post_form(app, "/ui/gc", &cookie, &dry).await.0,
        StatusCode::SEE_OTHER
    );
    let (_, _, page) = get_page("/ui/gc", cookie.clone()).await;
    assert!(page.contains("Last dry run"), "{page}");
    assert!(page.contains("Blobs that would go"), "{page}");
    let (_, _, page) = get_page("/ui/webhooks", cookie.clone()).await;
    assert!(page.contains("None: add [[webhooks]]"), "{page}");

    // The audit log, filtered (its writer is a background task: wait for
    // the last event to land).
    let mut page = String::new();
    for _ in 0..100 {
        page = get_page("/ui/audit?action=retention.", cookie.clone())
            .await
            .2;
        if page.contains("<code>retention.request</code>") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(page.contains("<code>retention.dry_run</code>"), "{page}");
    assert!(page.contains("<code>retention.request</code>"), "{page}");
    assert!(!page.contains("<code>manifest.push</code>"), "{page}");

    // A project admin: their project's log only; no GC or webhooks pages.
    let (padmin, _) = sign_in(app, "padmin").await;
    for uri in ["/ui/gc", "/ui/webhooks"] {
        assert_eq!(get_page(uri, padmin.clone()).await.0, StatusCode::NOT_FOUND);
    }
    let (_, _, page) = get_page("/ui/audit", padmin.clone()).await;
    assert!(
        page.contains("only a system admin lists the whole audit log"),
        "{page}"
    );
    let (_, _, page) = get_page("/ui/audit?project=lab", padmin.clone()).await;
    assert!(!page.contains("retention.request"), "{page}");
    assert!(page.contains("role=\"alert\""), "{page}");
    // Policy of a project padmin is not in: not found.
    assert_eq!(
        get_page("/ui/projects/lab/policy", padmin).await.0,
        StatusCode::NOT_FOUND
    );
}
