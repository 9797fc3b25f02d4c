//! In-process tests of every endpoint and error path, through the real
//! router on an in-memory registry (the stores pass the same conformance
//! suite as the filesystem one).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use berth_oci::{Algorithm, Digest, media_type::*};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{Limits, Registry};

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Assert an OCI error response with `status` and `code`.
    fn oci_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.json()["errors"][0]["code"], code);
    }
}

struct T {
    app: Router,
    reg: Arc<Registry>,
}

impl T {
    fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        let reg = Arc::new(Registry::in_memory(limits).unwrap());
        Self {
            app: super::router(reg.clone()),
            reg,
        }
    }

    async fn req(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(b.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Resp {
        self.req(Method::GET, uri, &[], Body::empty()).await
    }

    /// PUT a manifest of `media_type` at `uri`.
    async fn put_manifest(&self, uri: &str, media_type: &str, body: impl Into<Body>) -> Resp {
        self.req(Method::PUT, uri, &[("Content-Type", media_type)], body)
            .await
    }

    async fn head(&self, uri: &str) -> Resp {
        self.req(Method::HEAD, uri, &[], Body::empty()).await
    }

    async fn delete(&self, uri: &str) -> Resp {
        self.req(Method::DELETE, uri, &[], Body::empty()).await
    }

    /// Push a blob monolithically; returns its digest.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256(data);
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        d
    }

    /// Push an image manifest over `config` and `layers`; returns its digest.
    async fn push_image(
        &self,
        repo: &str,
        reference: &str,
        layers: &[&[u8]],
        extra: Value,
    ) -> (Digest, Vec<u8>) {
        let config = self.push_blob(repo, b"{}").await;
        let mut layer_descs = Vec::new();
        for l in layers {
            let d = self.push_blob(repo, l).await;
            layer_descs.push(
                json!({"mediaType": OCI_LAYER_GZIP, "digest": d.to_string(), "size": l.len()}),
            );
        }
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.to_string(), "size": 2},
            "layers": layer_descs,
        });
        if let (Some(obj), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            obj.extend(extra.clone());
        }
        let body = serde_json::to_vec(&m).unwrap();
        let r = self
            .put_manifest(
                &format!("/v2/{repo}/manifests/{reference}"),
                OCI_MANIFEST,
                body.clone(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{:?}",
            String::from_utf8_lossy(&r.body)
        );
        let d = Digest::sha256(&body);
        assert_eq!(r.header("Docker-Content-Digest"), d.to_string());
        assert_eq!(r.header("Location"), format!("/v2/{repo}/manifests/{d}"));
        (d, body)
    }

    async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert_eq!(r.header("Range"), "0-0");
        r.header("Location").to_owned()
    }
}

#[tokio::test]
async fn base_endpoint() {
    let t = T::new();
    for uri in ["/v2/", "/v2"] {
        let r = t.get(uri).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("Docker-Distribution-API-Version"), "registry/2.0");
        assert_eq!(r.json(), json!({}));
    }
}

#[tokio::test]
async fn monolithic_push_and_pull() {
    let t = T::new();
    let data = b"hello world";
    let d = t.push_blob("a/b", data).await;
    let h = t.head(&format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.header("Content-Length"), "11");
    assert_eq!(h.header("Docker-Content-Digest"), d.to_string());
    assert!(h.body.is_empty());
    let g = t.get(&format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(g.body.as_ref(), data);
    // Blobs are scoped to repositories.
    t.get(&format!("/v2/other/blobs/{d}"))
        .await
        .oci_error(404, "BLOB_UNKNOWN");
    t.head(&format!("/v2/other/blobs/{d}")).await;
}

#[tokio::test]
async fn post_then_put() {
    let t = T::new();
    let loc = t.start_upload("r").await;
    let d = Digest::sha256(b"whole");
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            &b"whole"[..],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("Location"), format!("/v2/r/blobs/{d}"));
    assert_eq!(
        t.get(&format!("/v2/r/blobs/{d}")).await.body.as_ref(),
        b"whole"
    );
    // The session is gone.
    t.get(&loc).await.oci_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn chunked_upload_in_order_and_out_of_order() {
    let t = T::new();
    let loc = t.start_upload("r").await;
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("Content-Range", "0-4"), ("Content-Length", "5")],
            &b"01234"[..],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("Range"), "0-4");
    let loc = r.header("Location").to_owned();

    // Out of order: starts past the end, or overlaps.
    for range in ["10-14", "3-7"] {
        let r = t
            .req(
                Method::PATCH,
                &loc,
                &[("Content-Range", range)],
                &b"xxxxx"[..],
            )
            .await;
        r.oci_error(416, "BLOB_UPLOAD_INVALID");
        assert_eq!(r.header("Range"), "0-4");
    }
    // Malformed Content-Range.
    t.req(
        Method::PATCH,
        &loc,
        &[("Content-Range", "five-nine")],
        &b"x"[..],
    )
    .await
    .oci_error(416, "BLOB_UPLOAD_INVALID");

    let s = t.get(&loc).await;
    assert_eq!(s.status, StatusCode::NO_CONTENT);
    assert_eq!(s.header("Range"), "0-4");

    // A streamed chunk without Content-Range appends.
    let r = t.req(Method::PATCH, &loc, &[], &b"56789"[..]).await;
    assert_eq!(r.header("Range"), "0-9");

    // Finishing with the wrong digest discards the session.
    let wrong = Digest::sha256(b"nope");
    t.req(
        Method::PUT,
        &format!("{loc}?digest={wrong}"),
        &[],
        Body::empty(),
    )
    .await
    .oci_error(400, "DIGEST_INVALID");
    t.get(&loc).await.oci_error(404, "BLOB_UPLOAD_UNKNOWN");
    t.get(&format!("/v2/r/blobs/{wrong}"))
        .await
        .oci_error(404, "BLOB_UNKNOWN");

    // Again, finishing with a last chunk in the PUT.
    let loc = t.start_upload("r").await;
    t.req(
        Method::PATCH,
        &loc,
        &[("Content-Range", "0-4")],
        &b"01234"[..],
    )
    .await;
    let d = Digest::sha256(b"0123456789");
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[("Content-Range", "5-9")],
            &b"56789"[..],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        t.get(&format!("/v2/r/blobs/{d}")).await.body.as_ref(),
        b"0123456789"
    );
}

#[tokio::test]
async fn chunk_shorter_than_its_content_range_is_not_acknowledged() {
    let t = T::new();
    let loc = t.start_upload("r").await;
    t.req(
        Method::PATCH,
        &loc,
        &[("Content-Range", "0-9")],
        &b"01234"[..],
    )
    .await
    .oci_error(416, "SIZE_INVALID");
    assert_eq!(t.get(&loc).await.header("Range"), "0-0");
    // The client resends from 0 and the stray bytes are gone.
    t.req(
        Method::PATCH,
        &loc,
        &[("Content-Range", "0-2")],
        &b"abc"[..],
    )
    .await;
    let d = Digest::sha256(b"abc");
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn upload_sessions_are_bound_to_their_repository_and_cancellable() {
    let t = T::new();
    let loc = t.start_upload("one").await;
    let id = loc.rsplit('/').next().unwrap();
    t.get(&format!("/v2/two/blobs/uploads/{id}"))
        .await
        .oci_error(404, "BLOB_UPLOAD_UNKNOWN");
    t.get("/v2/one/blobs/uploads/not-a-uuid")
        .await
        .oci_error(404, "BLOB_UPLOAD_UNKNOWN");
    t.req(
        Method::PATCH,
        "/v2/one/blobs/uploads/00000000-0000-4000-8000-000000000000",
        &[],
        &b"x"[..],
    )
    .await
    .oci_error(404, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(t.delete(&loc).await.status, StatusCode::NO_CONTENT);
    t.get(&loc).await.oci_error(404, "BLOB_UPLOAD_UNKNOWN");
    t.delete(&loc).await.oci_error(404, "BLOB_UPLOAD_UNKNOWN");
    let d = Digest::sha256(b"");
    t.req(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .oci_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn finishing_needs_a_valid_digest() {
    let t = T::new();
    let loc = t.start_upload("r").await;
    t.req(Method::PUT, &loc, &[], Body::empty())
        .await
        .oci_error(400, "DIGEST_INVALID");
    t.req(
        Method::PUT,
        &format!("{loc}?digest=sha256:xyz"),
        &[],
        Body::empty(),
    )
    .await
    .oci_error(400, "DIGEST_INVALID");
    t.req(
        Method::POST,
        "/v2/r/blobs/uploads/?digest=md5:abc",
        &[],
        &b"x"[..],
    )
    .await
    .oci_error(400, "DIGEST_INVALID");
    // A monolithic upload whose content does not match stores nothing.
    let d = Digest::sha256(b"claimed");
    t.req(
        Method::POST,
        &format!("/v2/r/blobs/uploads/?digest={d}"),
        &[],
        &b"actual"[..],
    )
    .await
    .oci_error(400, "DIGEST_INVALID");
    t.head(&format!("/v2/r/blobs/{d}")).await;
    assert_eq!(
        t.head(&format!("/v2/r/blobs/{d}")).await.status,
        StatusCode::NOT_FOUND
    );
    // A declared Content-Length that does not match is refused.
    let d = Digest::sha256(b"abc");
    let r = t
        .req(
            Method::POST,
            &format!("/v2/r/blobs/uploads/?digest={d}"),
            &[("Content-Length", "3")],
            &b"abc"[..],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn cross_repository_mount() {
    let t = T::new();
    let d = t.push_blob("src", b"shared layer").await;
    let r = t
        .req(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("Location"), format!("/v2/dst/blobs/{d}"));
    assert_eq!(
        t.get(&format!("/v2/dst/blobs/{d}")).await.body.as_ref(),
        b"shared layer"
    );
    // From a repository without the blob (or a malformed one): a new session.
    for q in [
        format!("mount={d}&from=elsewhere"),
        format!("mount={d}&from=BAD"),
    ] {
        let r = t
            .req(
                Method::POST,
                &format!("/v2/third/blobs/uploads/?{q}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{q}");
    }
    t.get(&format!("/v2/third/blobs/{d}"))
        .await
        .oci_error(404, "BLOB_UNKNOWN");
    // Without `from`, from any repository holding it; or a session if none does.
    let r = t
        .req(
            Method::POST,
            &format!("/v2/fourth/blobs/uploads/?mount={d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let absent = Digest::sha256(b"held by nobody");
    let r = t
        .req(
            Method::POST,
            &format!("/v2/fourth/blobs/uploads/?mount={absent}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    t.req(
        Method::POST,
        "/v2/third/blobs/uploads/?mount=bogus&from=src",
        &[],
        Body::empty(),
    )
    .await
    .oci_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn range_requests() {
    let t = T::new();
    let d = t.push_blob("r", b"0123456789").await;
    let uri = format!("/v2/r/blobs/{d}");
    let r = t
        .req(Method::GET, &uri, &[("Range", "bytes=2-5")], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body.as_ref(), b"2345");
    assert_eq!(r.header("Content-Range"), "bytes 2-5/10");
    assert_eq!(r.header("Content-Length"), "4");
    let r = t
        .req(Method::GET, &uri, &[("Range", "bytes=-3")], Body::empty())
        .await;
    assert_eq!(r.body.as_ref(), b"789");
    let r = t
        .req(Method::GET, &uri, &[("Range", "bytes=10-")], Body::empty())
        .await;
    r.oci_error(416, "SIZE_INVALID");
    assert_eq!(r.header("Content-Range"), "bytes */10");
    let r = t
        .req(
            Method::GET,
            &uri,
            &[("Range", "bytes=0-1,4-5")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "multiple ranges are served whole");
    assert_eq!(r.body.len(), 10);
}

#[tokio::test]
async fn manifests_by_tag_and_digest() {
    let t = T::new();
    let (d, body) = t
        .push_image("lib/app", "v1", &[b"layer one", b"layer two"], json!({}))
        .await;
    for reference in ["v1".to_owned(), d.to_string()] {
        let uri = format!("/v2/lib/app/manifests/{reference}");
        let g = t.get(&uri).await;
        assert_eq!(g.status, StatusCode::OK);
        assert_eq!(g.body.as_ref(), body.as_slice());
        assert_eq!(g.header("Content-Type"), OCI_MANIFEST);
        assert_eq!(g.header("Docker-Content-Digest"), d.to_string());
        let h = t.head(&uri).await;
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.header("Content-Length"), body.len().to_string());
        assert!(h.body.is_empty());
    }
    t.get("/v2/lib/app/manifests/v2")
        .await
        .oci_error(404, "MANIFEST_UNKNOWN");
    t.get("/v2/lib/other/manifests/v1")
        .await
        .oci_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        t.head("/v2/lib/app/manifests/v2").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn docker_schema2_manifest_keeps_its_media_type() {
    let t = T::new();
    let c = t.push_blob("d", b"{\"x\":1}").await;
    let l = t.push_blob("d", b"layer").await;
    let m = json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": c.to_string(), "size": 7},
        "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": l.to_string(), "size": 5}],
    });
    let r = t
        .put_manifest(
            "/v2/d/manifests/latest",
            DOCKER_MANIFEST,
            serde_json::to_vec(&m).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        t.get("/v2/d/manifests/latest").await.header("Content-Type"),
        DOCKER_MANIFEST
    );
    // Schema 1 is refused.
    t.put_manifest(
        "/v2/d/manifests/old",
        DOCKER_SCHEMA1_SIGNED,
        r#"{"schemaVersion":1,"name":"d","tag":"old","fsLayers":[]}"#,
    )
    .await
    .oci_error(400, "MANIFEST_INVALID");
}

#[tokio::test]
async fn manifest_validation() {
    let t = T::new();
    let c = t.push_blob("v", b"{}").await;
    let missing = Digest::sha256(b"never pushed");
    let m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c.to_string(), "size": 2},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": missing.to_string(), "size": 12}],
    });
    let r = t
        .put_manifest(
            "/v2/v/manifests/t",
            OCI_MANIFEST,
            serde_json::to_vec(&m).unwrap(),
        )
        .await;
    r.oci_error(400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        r.json()["errors"][0]["detail"]["digest"],
        missing.to_string()
    );
    t.get("/v2/v/manifests/t")
        .await
        .oci_error(404, "MANIFEST_UNKNOWN");

    // Declared size must match the stored blob.
    let wrong_size = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c.to_string(), "size": 3},
        "layers": [],
    });
    t.put_manifest(
        "/v2/v/manifests/t",
        OCI_MANIFEST,
        serde_json::to_vec(&wrong_size).unwrap(),
    )
    .await
    .oci_error(400, "MANIFEST_BLOB_UNKNOWN");

    // A foreign layer (with urls) need not be pushed.
    let foreign = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                    "digest": missing.to_string(), "size": 12, "urls": ["https://example.invalid/l"]}],
    });
    let r = t
        .put_manifest(
            "/v2/v/manifests/foreign",
            OCI_MANIFEST,
            serde_json::to_vec(&foreign).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    for (ct, body, code) in [
        (OCI_MANIFEST, "not json".to_owned(), "MANIFEST_INVALID"),
        (
            OCI_MANIFEST,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                .to_owned(),
            "MANIFEST_INVALID",
        ),
        (
            OCI_INDEX,
            serde_json::to_string(&wrong_size).unwrap(),
            "MANIFEST_INVALID",
        ),
    ] {
        t.put_manifest("/v2/v/manifests/bad", ct, body)
            .await
            .oci_error(400, code);
    }
    // By digest: the body must hash to it.
    let body = serde_json::to_vec(&foreign).unwrap();
    t.put_manifest(
        &format!("/v2/v/manifests/{missing}"),
        OCI_MANIFEST,
        body.clone(),
    )
    .await
    .oci_error(400, "DIGEST_INVALID");
    let d = Digest::sha256(&body);
    let r = t
        .put_manifest(&format!("/v2/v/manifests/{d}"), OCI_MANIFEST, body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn push_by_digest_with_tag_parameters() {
    let t = T::new();
    let cfg = t.push_blob("tp", b"{}").await;
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg.to_string(), "size": 2}, "layers": []}))
    .unwrap();
    let d = Digest::sha256(&m);
    let r = t
        .put_manifest(
            &format!("/v2/tp/manifests/{d}?tag=1.2.3&tag=1.2&tag=latest"),
            OCI_MANIFEST,
            m.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("OCI-Tag"), "1.2.3, 1.2, latest");
    assert_eq!(
        t.get("/v2/tp/tags/list").await.json()["tags"],
        json!(["1.2", "1.2.3", "latest"])
    );
    t.put_manifest(
        &format!("/v2/tp/manifests/{d}?tag=ok&tag=-bad"),
        OCI_MANIFEST,
        m.clone(),
    )
    .await
    .oci_error(400, "TAG_INVALID");
    let many: String = (0..101).map(|i| format!("tag=t{i}&")).collect();
    t.put_manifest(&format!("/v2/tp/manifests/{d}?{many}"), OCI_MANIFEST, m)
        .await
        .oci_error(414, "TAG_INVALID");
    assert_eq!(
        t.get("/v2/tp/tags/list").await.json()["tags"],
        json!(["1.2", "1.2.3", "latest"])
    );
}

#[tokio::test]
async fn oversized_manifest_is_refused() {
    let t = T::with_limits(Limits {
        max_manifest_bytes: 2048,
        ..Limits::default()
    });
    let big = format!(
        r#"{{"schemaVersion":2,"annotations":{{"x":"{}"}}}}"#,
        "a".repeat(4096)
    );
    t.put_manifest("/v2/big/manifests/t", OCI_MANIFEST, big.clone())
        .await
        .oci_error(413, "SIZE_INVALID");
    // Also when the length is not declared up front.
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    t.put_manifest(
        "/v2/big/manifests/t",
        OCI_MANIFEST,
        Body::from_stream(stream),
    )
    .await
    .oci_error(413, "SIZE_INVALID");
    t.get("/v2/big/tags/list")
        .await
        .oci_error(404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn index_needs_its_children() {
    let t = T::new();
    let (child, body) = t.push_image("multi", "amd64", &[b"l"], json!({})).await;
    let index = |d: &Digest| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": body.len(),
                           "platform": {"architecture": "amd64", "os": "linux"}}],
        }))
        .unwrap()
    };
    let absent = Digest::sha256(b"absent child");
    t.put_manifest("/v2/multi/manifests/latest", OCI_INDEX, index(&absent))
        .await
        .oci_error(400, "MANIFEST_BLOB_UNKNOWN");
    let r = t
        .put_manifest("/v2/multi/manifests/latest", OCI_INDEX, index(&child))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        t.get("/v2/multi/manifests/latest")
            .await
            .header("Content-Type"),
        OCI_INDEX
    );
}

#[tokio::test]
async fn referrers_and_subject() {
    let t = T::new();
    let (subject, body) = t.push_image("ref", "v1", &[b"l"], json!({})).await;
    let subj = json!({"subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": body.len()}});
    let mut sig = subj.clone();
    sig["artifactType"] = json!("application/vnd.example.sig");
    sig["annotations"] = json!({"org.example": "yes"});
    let cfg = t.push_blob("ref", b"{}").await;
    let put = |extra: Value| {
        let mut m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_EMPTY, "digest": cfg.to_string(), "size": 2}, "layers": []});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::to_vec(&m).unwrap()
    };
    let sig_body = put(sig);
    let r = t
        .put_manifest(
            &format!("/v2/ref/manifests/{}", Digest::sha256(&sig_body)),
            OCI_MANIFEST,
            sig_body.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("OCI-Subject"), subject.to_string());
    let mut sbom = subj.clone();
    sbom["artifactType"] = json!("application/spdx+json");
    let sbom_body = put(sbom);
    t.put_manifest("/v2/ref/manifests/sbom", OCI_MANIFEST, sbom_body)
        .await;

    let r = t.get(&format!("/v2/ref/referrers/{subject}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("Content-Type"), OCI_INDEX);
    let idx = r.json();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
    let r = t
        .get(&format!(
            "/v2/ref/referrers/{subject}?artifactType=application/vnd.example.sig"
        ))
        .await;
    assert_eq!(r.header("OCI-Filters-Applied"), "artifactType");
    let idx = r.json();
    let list = idx["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], Digest::sha256(&sig_body).to_string());
    assert_eq!(list[0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(list[0]["annotations"]["org.example"], "yes");
    assert_eq!(list[0]["size"], sig_body.len());
    // Unknown subjects have no referrers, not an error.
    let r = t
        .get(&format!("/v2/ref/referrers/{}", Digest::sha256(b"x")))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["manifests"], json!([]));
}

#[tokio::test]
async fn tag_list_and_catalog_paging() {
    let t = T::new();
    for tag in ["c", "a", "b", "d"] {
        t.push_image("pg/x", tag, &[], json!({})).await;
    }
    t.push_image("pg/y", "v", &[], json!({})).await;
    t.push_blob("pg/blob-only", b"z").await;

    let r = t.get("/v2/pg/x/tags/list").await;
    assert_eq!(
        r.json(),
        json!({"name": "pg/x", "tags": ["a", "b", "c", "d"]})
    );
    assert!(r.headers.get("Link").is_none());
    let r = t.get("/v2/pg/x/tags/list?n=2").await;
    assert_eq!(r.json()["tags"], json!(["a", "b"]));
    assert_eq!(
        r.header("Link"),
        "</v2/pg/x/tags/list?n=2&last=b>; rel=\"next\""
    );
    let r = t.get("/v2/pg/x/tags/list?n=2&last=b").await;
    assert_eq!(r.json()["tags"], json!(["c", "d"]));
    assert!(r.headers.get("Link").is_none());
    let r = t.get("/v2/pg/x/tags/list?n=0").await;
    assert_eq!(r.json()["tags"], json!([]));
    t.get("/v2/pg/x/tags/list?n=100000")
        .await
        .oci_error(400, "PAGINATION_NUMBER_INVALID");
    t.get("/v2/pg/x/tags/list?n=-1")
        .await
        .oci_error(400, "PAGINATION_NUMBER_INVALID");
    t.get("/v2/pg/none/tags/list")
        .await
        .oci_error(404, "NAME_UNKNOWN");

    let r = t.get("/v2/_catalog").await;
    assert_eq!(r.json(), json!({"repositories": ["pg/x", "pg/y"]}));
    let r = t.get("/v2/_catalog?n=1").await;
    assert_eq!(r.json()["repositories"], json!(["pg/x"]));
    assert_eq!(
        r.header("Link"),
        "</v2/_catalog?n=1&last=pg/x>; rel=\"next\""
    );
    t.get("/v2/_catalog?n=99999999999999999999")
        .await
        .oci_error(400, "PAGINATION_NUMBER_INVALID");
}

#[tokio::test]
async fn deletes() {
    let t = T::new();
    let (d, _) = t.push_image("del", "v1", &[b"layer"], json!({})).await;
    t.push_image("del", "v2", &[b"layer"], json!({})).await;
    // Deleting a tag leaves the manifest.
    assert_eq!(
        t.delete("/v2/del/manifests/v2").await.status,
        StatusCode::ACCEPTED
    );
    t.get("/v2/del/manifests/v2")
        .await
        .oci_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        t.get(&format!("/v2/del/manifests/{d}")).await.status,
        StatusCode::OK
    );
    t.delete("/v2/del/manifests/v2")
        .await
        .oci_error(404, "MANIFEST_UNKNOWN");
    // Deleting by digest removes the manifest and its tags.
    assert_eq!(
        t.delete(&format!("/v2/del/manifests/{d}")).await.status,
        StatusCode::ACCEPTED
    );
    t.get("/v2/del/manifests/v1")
        .await
        .oci_error(404, "MANIFEST_UNKNOWN");
    t.get(&format!("/v2/del/manifests/{d}"))
        .await
        .oci_error(404, "MANIFEST_UNKNOWN");
    t.delete(&format!("/v2/del/manifests/{d}"))
        .await
        .oci_error(404, "MANIFEST_UNKNOWN");
    // Blobs.
    let l = Digest::sha256(b"layer");
    assert_eq!(
        t.delete(&format!("/v2/del/blobs/{l}")).await.status,
        StatusCode::ACCEPTED
    );
    t.get(&format!("/v2/del/blobs/{l}"))
        .await
        .oci_error(404, "BLOB_UNKNOWN");
    t.delete(&format!("/v2/del/blobs/{l}"))
        .await
        .oci_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn sha512_blobs_and_manifests() {
    let t = T::new();
    let data = b"sha512 content";
    let d = Algorithm::Sha512.digest(data);
    let r = t
        .req(
            Method::POST,
            &format!("/v2/s/blobs/uploads/?digest={d}"),
            &[],
            &data[..],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Chunked too, where the streaming sha256 cannot be reused.
    let data2 = b"chunked sha512";
    let d2 = Algorithm::Sha512.digest(data2);
    let loc = t.start_upload("s").await;
    t.req(
        Method::PATCH,
        &loc,
        &[("Content-Range", "0-6")],
        &data2[..7],
    )
    .await;
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d2}"),
            &[("Content-Range", "7-13")],
            &data2[7..],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        t.get(&format!("/v2/s/blobs/{d2}")).await.body.as_ref(),
        data2
    );

    let cfg = t.push_blob("s", b"{}").await;
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg.to_string(), "size": 2},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": d.to_string(), "size": data.len()}]}))
    .unwrap();
    let md = Algorithm::Sha512.digest(&m);
    let r = t
        .put_manifest(&format!("/v2/s/manifests/{md}"), OCI_MANIFEST, m.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("Docker-Content-Digest"), md.to_string());
    assert_eq!(
        t.get(&format!("/v2/s/manifests/{md}")).await.body.as_ref(),
        m.as_slice()
    );
}

#[tokio::test]
async fn invalid_names_and_references() {
    let t = T::new();
    let d = Digest::sha256(b"x");
    for (uri, status, code) in [
        ("/v2/UPPER/tags/list".to_owned(), 400, "NAME_INVALID"),
        ("/v2/a/../b/tags/list".to_owned(), 400, "NAME_INVALID"),
        (
            "/v2/..%2f..%2fetc/tags/list".to_owned(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/a%2F..%2Fb/manifests/latest".to_owned(),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/{}/tags/list", "a".repeat(256)),
            400,
            "NAME_INVALID",
        ),
        ("/v2/a/manifests/-bad".to_owned(), 400, "TAG_INVALID"),
        ("/v2/a/blobs/sha256:1234".to_owned(), 400, "DIGEST_INVALID"),
        (
            "/v2/a/blobs/sha256%3A..%2F..".to_owned(),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/a/blobs/{}", d.to_string().to_uppercase()),
            400,
            "DIGEST_INVALID",
        ),
        ("/v2/nothing".to_owned(), 404, "NAME_UNKNOWN"),
    ] {
        t.get(&uri).await.oci_error(status, code);
    }
    t.req(Method::POST, "/v2/Bad/blobs/uploads/", &[], Body::empty())
        .await
        .oci_error(400, "NAME_INVALID");
    // A digest in the path may arrive percent-encoded.
    let pushed = t.push_blob("enc", b"x").await;
    let r = t
        .get(&format!(
            "/v2/enc/blobs/{}",
            pushed.to_string().replace(':', "%3A")
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn unsupported_methods() {
    let t = T::new();
    t.req(Method::POST, "/v2/a/manifests/latest", &[], Body::empty())
        .await
        .oci_error(405, "UNSUPPORTED");
    t.req(Method::PUT, "/v2/a/tags/list", &[], Body::empty())
        .await
        .oci_error(405, "UNSUPPORTED");
}

#[tokio::test]
async fn head_is_never_ok_where_get_is_not() {
    let t = T::new();
    let (d, _) = t.push_image("hg", "v1", &[b"layer"], json!({})).await;
    let l = Digest::sha256(b"layer");
    let absent = Digest::sha256(b"absent");
    for uri in [
        "/v2/".to_owned(),
        "/v2/hg/manifests/v1".to_owned(),
        format!("/v2/hg/manifests/{d}"),
        "/v2/hg/manifests/v9".to_owned(),
        format!("/v2/hg/manifests/{absent}"),
        format!("/v2/hg/blobs/{l}"),
        format!("/v2/hg/blobs/{absent}"),
        format!("/v2/other/blobs/{l}"),
        format!("/v2/other/manifests/{d}"),
        "/v2/BAD/manifests/v1".to_owned(),
    ] {
        let g = t.get(&uri).await;
        let h = t.head(&uri).await;
        assert_eq!(g.status, h.status, "{uri}");
        if g.status == StatusCode::OK {
            assert_eq!(
                h.headers.get("Content-Length"),
                Some(&http::HeaderValue::from(g.body.len())),
                "{uri}"
            );
            assert!(h.body.is_empty());
        }
    }
}

#[tokio::test]
async fn metrics_count_requests_and_bytes() {
    let t = T::new();
    let d = t.push_blob("m", b"12345").await;
    t.get(&format!("/v2/m/blobs/{d}")).await;
    t.start_upload("m").await;
    let text = String::from_utf8(t.get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        text.contains(
            r#"berth_registry_requests_total{route="upload",method="POST",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"berth_registry_requests_total{route="blob",method="GET",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("berth_registry_blob_sent_bytes_total 5"),
        "{text}"
    );
    assert!(
        text.contains("berth_registry_received_bytes_total 5"),
        "{text}"
    );
    assert!(text.contains("berth_registry_upload_sessions 1"), "{text}");
    assert!(
        text.contains("berth_registry_uploads_completed_total 1"),
        "{text}"
    );
}

#[tokio::test]
async fn piece_digests_of_a_blob_are_served_to_pullers() {
    let t = T::new();
    // 9 MiB + 5 bytes: nine whole pieces and a short one.
    let data: Vec<u8> = (0..(9u32 << 20) + 5).map(|i| (i % 251) as u8).collect();
    let d = t.push_blob("team/app", &data).await;
    let base = t.get("/v2/").await;
    assert_eq!(base.header("berth-pieces"), "v1");
    // Computed in the background once the push committed, before anyone
    // asks.
    let ready = async {
        while t.reg.meta.blob_pieces(&d.to_string()).unwrap().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), ready)
        .await
        .expect("the pieces are computed at push");
    for _ in 0..2 {
        let r = t.get(&format!("/v2/team/app/blobs/{d}?pieces=v1")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), crate::pieces::MEDIA_TYPE);
        let v = r.json();
        assert_eq!(v["size"], data.len() as u64);
        assert_eq!(v["piece_size"], 1 << 20);
        let want: Vec<String> = data
            .chunks(1 << 20)
            .map(|c| Digest::sha256(c).hex().to_owned())
            .collect();
        assert_eq!(want.len(), 10);
        assert_eq!(v["pieces"], serde_json::json!(want));
    }
    // Scoped like the blob: not from another repository.
    t.get(&format!("/v2/team/other/blobs/{d}?pieces=v1"))
        .await
        .oci_error(404, "BLOB_UNKNOWN");
    // Without the parameter, the bytes as always.
    let r = t.get(&format!("/v2/team/app/blobs/{d}")).await;
    assert_eq!(r.body.len(), data.len());
}

#[tokio::test]
async fn a_blob_of_one_piece_is_its_own_piece_digest() {
    let t = T::new();
    let d = t.push_blob("team/app", b"small").await;
    let v = t
        .get(&format!("/v2/team/app/blobs/{d}?pieces=v1"))
        .await
        .json();
    assert_eq!(v["pieces"], serde_json::json!([d.hex()]));
    assert_eq!(v["size"], 5);
    // Nothing was stored for it: it needs no reading.
    assert!(t.reg.meta.blob_pieces(&d.to_string()).unwrap().is_none());
}
