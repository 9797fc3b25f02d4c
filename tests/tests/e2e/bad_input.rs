//! Bad input against the real binary: path traversal and invalid names (sent
//! raw, so no client normalises them), malformed and mismatched digests, a
//! manifest that references a missing blob, an oversized manifest, a bad
//! Content-Range, a huge catalog `n`. Each gets its OCI error and status,
//! and the stored state — catalog, tags, manifests and blob files — is
//! exactly what it was before.

use std::collections::BTreeMap;
use std::path::Path;

use berth_tests::{Server, http, raw_http, sha256};
use serde_json::json;

/// Everything a client or the disk can see of the registry's content.
fn snapshot(server: &Server) -> BTreeMap<String, String> {
    let url = server.url();
    let mut s = BTreeMap::new();
    let catalog = http("GET", &format!("{url}/v2/_catalog"), &[], b"").json();
    s.insert("catalog".into(), catalog.to_string());
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags = http("GET", &format!("{url}/v2/{repo}/tags/list"), &[], b"").json();
        for tag in tags["tags"].as_array().unwrap() {
            let m = http(
                "GET",
                &format!("{url}/v2/{repo}/manifests/{}", tag.as_str().unwrap()),
                &[],
                b"",
            );
            s.insert(format!("{repo}:{tag}"), sha256(&m.body));
        }
    }
    fn walk(dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.display().to_string(), sha256(&std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(&server.data.join("blobs"), &mut s);
    s
}

fn raw_get(server: &Server, path: &str) -> (u16, String) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.host()
    );
    let (status, body) = raw_http(server.addr, req.as_bytes());
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

#[test]
fn bad_input_gets_oci_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let url = server.url();

    // Some real content to protect.
    let layer = b"precious layer";
    let config = b"{}";
    let (ld, cd) = (sha256(layer), sha256(config));
    for (data, d) in [(&layer[..], &ld), (&config[..], &cd)] {
        let r = http(
            "POST",
            &format!("{url}/v2/good/app/blobs/uploads/?digest={d}"),
            &[],
            data,
        );
        assert_eq!(r.status, 201);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    }))
    .unwrap();
    let ct = [("Content-Type", "application/vnd.oci.image.manifest.v1+json")];
    assert_eq!(
        http(
            "PUT",
            &format!("{url}/v2/good/app/manifests/v1"),
            &ct,
            &manifest
        )
        .status,
        201
    );
    let session = http(
        "POST",
        &format!("{url}/v2/good/app/blobs/uploads/"),
        &[],
        b"",
    );
    let loc = session.header("location").unwrap().to_owned();
    let before = snapshot(&server);

    // Traversal and invalid names, sent byte for byte.
    for (path, status, code) in [
        ("/v2/../../etc/passwd/tags/list", 400, "NAME_INVALID"),
        ("/v2/good/../../../etc/manifests/v1", 400, "NAME_INVALID"),
        (
            "/v2/good/app/blobs/../../../../etc/passwd",
            400,
            "NAME_INVALID",
        ),
        ("/v2/..%2F..%2Fetc/tags/list", 400, "NAME_INVALID"),
        ("/v2/%2e%2e/%2e%2e/tags/list", 400, "NAME_INVALID"),
        ("/v2/Good/App/tags/list", 400, "NAME_INVALID"),
        ("/v2/good//app/tags/list", 400, "NAME_INVALID"),
        ("/v2/good/app%00/tags/list", 400, "NAME_INVALID"),
        ("/v2/good/app/manifests/..", 400, "NAME_INVALID"),
        ("/v2/good/app/manifests/v1%2F..", 400, "NAME_INVALID"),
        ("/v2/good/app/manifests/v1%20x", 400, "TAG_INVALID"),
    ] {
        assert_eq!(raw_get(&server, path), (status, code.to_owned()), "{path}");
    }
    let long = format!("/v2/{}/tags/list", "a".repeat(300));
    assert_eq!(raw_get(&server, &long), (400, "NAME_INVALID".into()));

    // Malformed and mismatched digests.
    for d in [
        "sha256:abc",
        "sha256:../../etc/passwd",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nodigest",
    ] {
        let (status, code) = raw_get(&server, &format!("/v2/good/app/blobs/{d}"));
        assert_eq!(status, 400, "{d}");
        assert!(
            code == "DIGEST_INVALID" || code == "NAME_INVALID",
            "{d}: {code}"
        );
    }
    let wrong = sha256(b"something else");
    let r = http(
        "POST",
        &format!("{url}/v2/good/app/blobs/uploads/?digest={wrong}"),
        &[],
        b"the real bytes",
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    let r = http(
        "PUT",
        &format!("{url}/v2/good/app/manifests/{wrong}"),
        &ct,
        &manifest,
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));

    // A manifest referencing a missing blob, under an existing tag.
    let missing = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": wrong, "size": 5}],
    }))
    .unwrap();
    let r = http(
        "PUT",
        &format!("{url}/v2/good/app/manifests/v1"),
        &ct,
        &missing,
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );

    // An oversized manifest (default limit 4 MiB).
    let huge = format!(
        r#"{{"schemaVersion":2,"annotations":{{"x":"{}"}}}}"#,
        "a".repeat(5 << 20)
    );
    let r = http(
        "PUT",
        &format!("{url}/v2/good/app/manifests/v1"),
        &ct,
        huge.as_bytes(),
    );
    assert_eq!((r.status, r.error_code().as_str()), (413, "SIZE_INVALID"));

    // Bad and out-of-order Content-Range.
    for range in ["bogus", "5-2", "100-200"] {
        let r = http(
            "PATCH",
            &format!("{url}{loc}"),
            &[("Content-Range", range)],
            b"abc",
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (416, "BLOB_UPLOAD_INVALID"),
            "{range}"
        );
    }
    let r = http("GET", &format!("{url}{loc}"), &[], b"");
    assert_eq!(r.header("range"), Some("0-0"), "no bytes were acknowledged");

    // Huge page sizes.
    for q in ["n=1000000", "n=18446744073709551616", "n=-5", "n=abc"] {
        let r = http("GET", &format!("{url}/v2/_catalog?{q}"), &[], b"");
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "PAGINATION_NUMBER_INVALID"),
            "{q}"
        );
    }

    assert_eq!(snapshot(&server), before, "bad input changed stored state");
    // The good content still verifies.
    let r = http("GET", &format!("{url}/v2/good/app/blobs/{ld}"), &[], b"");
    assert_eq!(r.body, layer);
}
