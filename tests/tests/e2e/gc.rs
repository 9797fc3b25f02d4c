//! Online garbage collection of `berth serve`, on the filesystem and on S3
//! (SeaweedFS): twenty clients push random images — some multi-arch
//! indexes, some with an SBOM referrer — and delete some again, while
//! `berth admin gc` runs over and over with no grace window, so manifest
//! PUTs race the sweep of their blobs as hard as they can. A push that
//! loses the race is refused cleanly (`MANIFEST_BLOB_UNKNOWN`) and retried;
//! afterwards every acknowledged tag pulls completely with skopeo (which
//! verifies every digest), the next dry run names none of their blobs, the
//! dry run's list is exactly what the next run removes, and the bytes of
//! what went are gone from the store.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use berth_tests::s3::S3Server;
use berth_tests::{Server, berth_bin, require, sha256, try_http};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What a client pushed and the registry acknowledged.
#[derive(Debug, Clone)]
struct Pushed {
    repo: String,
    tag: String,
    /// Every blob the tag's image (children and referrer included) uses.
    blobs: Vec<String>,
    multi: bool,
}

/// Why a push failed: the registry's error code, or a transport error.
type PushError = String;

fn upload(url: &str, repo: &str, blob: &[u8]) -> Result<String, PushError> {
    let digest = sha256(blob);
    let r = try_http(
        "POST",
        &format!("{url}/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        blob,
    )?;
    if r.status != 201 {
        return Err(format!("blob upload: {} {}", r.status, r.error_code()));
    }
    Ok(digest)
}

fn put(
    url: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &Value,
) -> Result<String, PushError> {
    let bytes = serde_json::to_vec(body).unwrap();
    let r = try_http(
        "PUT",
        &format!("{url}/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        &bytes,
    )?;
    if r.status != 201 {
        return Err(r.error_code());
    }
    Ok(sha256(&bytes))
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// One single-platform image: a config and two random layers; its manifest
/// is pushed under `tag`, or by its digest without one. Returns (manifest
/// digest, size, blobs).
fn image(
    url: &str,
    repo: &str,
    tag: Option<&str>,
    rng: &mut impl Rng,
    arch: &str,
) -> Result<(String, usize, Vec<String>), PushError> {
    let mut layers = Vec::new();
    let mut blobs = Vec::new();
    for _ in 0..2 {
        let len = rng.random_range(1_000..40_000);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let d = upload(url, repo, &data)?;
        layers.push(descriptor(
            "application/vnd.oci.image.layer.v1.tar",
            &d,
            len,
        ));
        blobs.push(d);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": blobs},
    }))
    .unwrap();
    let c = upload(url, repo, &config)?;
    blobs.push(c.clone());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &c, config.len()),
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let reference = tag.map_or_else(|| sha256(&bytes), str::to_owned);
    let digest = put(url, repo, &reference, OCI_MANIFEST, &manifest)?;
    Ok((digest, bytes.len(), blobs))
}

/// An SBOM referrer of `subject`, pushed by digest.
fn sbom(
    url: &str,
    repo: &str,
    subject: (&str, usize),
    rng: &mut impl Rng,
) -> Result<Vec<String>, PushError> {
    let doc = format!(
        "{{\"spdxVersion\":\"SPDX-2.3\",\"n\":{}}}",
        rng.random::<u64>()
    );
    let d = upload(url, repo, doc.as_bytes())?;
    let empty = upload(url, repo, b"{}")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": descriptor("application/vnd.oci.empty.v1+json", &empty, 2),
        "layers": [descriptor("application/spdx+json", &d, doc.len())],
        "subject": descriptor(OCI_MANIFEST, subject.0, subject.1),
    });
    let digest = sha256(&serde_json::to_vec(&manifest).unwrap());
    put(url, repo, &digest, OCI_MANIFEST, &manifest)?;
    Ok(vec![d, empty])
}

/// Push one random image as `repo:tag` (multi-arch, and with an SBOM, at
/// random); retried from scratch when a collection won the race.
fn push_one(url: &str, repo: &str, tag: &str, rng: &mut impl Rng, lost: &AtomicUsize) -> Pushed {
    for _ in 0..200 {
        let multi = rng.random_bool(0.3);
        let with_sbom = rng.random_bool(0.4);
        let attempt = || -> Result<Vec<String>, PushError> {
            let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed(tag));
            let mut blobs = Vec::new();
            let top = if multi {
                let mut entries = Vec::new();
                for arch in ["amd64", "arm64"] {
                    let (d, size, b) = image(url, repo, None, &mut rng, arch)?;
                    blobs.extend(b);
                    entries.push((d, size, arch));
                }
                let index = json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": entries.iter().map(|(d, s, a)| json!({
                        "mediaType": OCI_MANIFEST, "digest": d, "size": s,
                        "platform": {"architecture": a, "os": "linux"},
                    })).collect::<Vec<_>>(),
                });
                let size = serde_json::to_vec(&index).unwrap().len();
                (put(url, repo, tag, OCI_INDEX, &index)?, size)
            } else {
                let (d, size, b) = image(url, repo, Some(tag), &mut rng, "amd64")?;
                blobs.extend(b);
                (d, size)
            };
            if with_sbom && !multi {
                blobs.extend(sbom(url, repo, (&top.0, top.1), &mut rng)?);
            }
            Ok(blobs)
        };
        match attempt() {
            Ok(blobs) => {
                return Pushed {
                    repo: repo.to_owned(),
                    tag: tag.to_owned(),
                    blobs,
                    multi,
                };
            }
            Err(e) if e == "MANIFEST_BLOB_UNKNOWN" => {
                lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("pushing {repo}:{tag}: {e}"),
        }
    }
    panic!("{repo}:{tag} lost the race 200 times in a row");
}

fn rng_seed(tag: &str) -> u64 {
    tag.bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        ^ rand::random::<u64>()
}

/// `berth admin gc` against `url`; its JSON report.
fn gc(url: &str, dry_run: bool) -> Value {
    let mut cmd = Command::new(berth_bin());
    cmd.args(["admin", "gc", "--json", "--registry", url]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "berth admin gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Twenty clients push (and delete) while collections run; then check.
fn collect_while_pushing(
    server: &Server,
    dir: &Path,
    clients: usize,
    images: usize,
) -> BTreeSet<String> {
    let url = server.url();
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let removed = Arc::new(AtomicUsize::new(0));
    let collector = {
        let (url, stop, runs, removed) = (url.clone(), stop.clone(), runs.clone(), removed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let report = gc(&url, false);
                runs.fetch_add(1, Ordering::Relaxed);
                removed.fetch_add(strings(&report["blobs"]).len(), Ordering::Relaxed);
                // A pause, so a push (slower on S3) can win sometimes.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    let pushers: Vec<_> = (0..clients)
        .map(|c| {
            let (url, lost) = (url.clone(), lost.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
                let repo = format!("team/app{}", c % 4);
                let mut kept = Vec::new();
                for i in 0..images {
                    kept.push(push_one(&url, &repo, &format!("c{c}-{i}"), &mut rng, &lost));
                    // Garbage: an image pushed, then deleted.
                    let scratch =
                        push_one(&url, &repo, &format!("scratch-{c}-{i}"), &mut rng, &lost);
                    let head = try_http(
                        "HEAD",
                        &format!("{url}/v2/{repo}/manifests/{}", scratch.tag),
                        &[("Accept", &format!("{OCI_MANIFEST}, {OCI_INDEX}"))],
                        b"",
                    )
                    .unwrap();
                    let digest = head.header("docker-content-digest").unwrap().to_owned();
                    let del = try_http(
                        "DELETE",
                        &format!("{url}/v2/{repo}/manifests/{digest}"),
                        &[],
                        b"",
                    )
                    .unwrap();
                    assert_eq!(del.status, 202, "deleting {repo}@{digest}");
                }
                kept
            })
        })
        .collect();
    let pushed: Vec<Pushed> = pushers
        .into_iter()
        .flat_map(|p| p.join().expect("a pusher panicked"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    eprintln!(
        "{} images acknowledged, {} pushes lost a race and were retried, {} collections removed {} blobs meanwhile",
        pushed.len(),
        lost.load(Ordering::Relaxed),
        runs.load(Ordering::Relaxed),
        removed.load(Ordering::Relaxed)
    );
    assert!(
        runs.load(Ordering::Relaxed) >= 2,
        "collections ran while clients pushed"
    );

    // Nothing anyone uses is planned to go.
    let used: BTreeSet<String> = pushed.iter().flat_map(|p| p.blobs.clone()).collect();
    let preview = gc(&url, true);
    let planned = strings(&preview["blobs"]);
    let wrongly: Vec<_> = planned.intersection(&used).collect();
    assert!(
        wrongly.is_empty(),
        "the dry run would remove used blobs: {wrongly:?}"
    );
    // The dry run is what the run does (nothing pushes now).
    let done = gc(&url, false);
    assert_eq!(strings(&done["blobs"]), planned);
    assert_eq!(done["bytes"], preview["bytes"]);
    assert_eq!(strings(&done["manifests"]), strings(&preview["manifests"]));
    assert!(
        strings(&gc(&url, true)["blobs"]).is_empty(),
        "a second run finds nothing"
    );

    // Every acknowledged tag pulls completely; skopeo checks each digest.
    let skopeo = require("skopeo");
    for (i, p) in pushed.iter().enumerate() {
        let out_dir = dir.join(format!("pull-{i}"));
        let mut cmd = Command::new(&skopeo);
        cmd.args(["copy", "--quiet", "--src-tls-verify=false"]);
        if p.multi {
            cmd.arg("--all");
        }
        let out = cmd
            .arg(format!("docker://{}/{}:{}", server.host(), p.repo, p.tag))
            .arg(format!("oci:{}:x", out_dir.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}:{} does not pull after collections: {}",
            p.repo,
            p.tag,
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&out_dir);
    }
    planned
}

#[test]
fn collections_run_while_twenty_clients_push_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, "[gc]\ngrace_minutes = 0\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let removed = collect_while_pushing(&server, dir.path(), 20, 3);
    // What the last run removed is gone from the disk too.
    for d in &removed {
        let hex = d.strip_prefix("sha256:").unwrap();
        let path = data.join("blobs/sha256").join(&hex[..2]).join(hex);
        assert!(!path.exists(), "{} is still on disk", path.display());
    }
    // A stray file nobody knows (a crash between publish and link, long
    // ago) is found by the orphan pass, and only once old enough.
    let stray = b"stray bytes";
    let hex = sha256(stray).trim_start_matches("sha256:").to_owned();
    let shard = data.join("blobs/sha256").join(&hex[..2]);
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join(&hex), stray).unwrap();
    let report = gc(&server.url(), false);
    assert_eq!(report["orphans"], 1, "{report}");
    assert!(!shard.join(&hex).exists());
}

#[test]
fn collections_run_while_clients_push_on_seaweedfs() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::seaweedfs();
    s3.create_bucket("registry");
    let config = crate::s3::s3_config_with(dir.path(), &s3, "registry", "k", "s", "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[gc]\ngrace_minutes = 0\n");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    collect_while_pushing(&server, dir.path(), 8, 2);
    // Each blob the metadata still knows is one object; nothing else is
    // left in the bucket.
    let objects = crate::s3::object_keys(&s3, "registry");
    let known = gc(&server.url(), true)["blobs_kept"].as_u64().unwrap();
    assert_eq!(objects.len() as u64, known, "{objects:?}");
}
