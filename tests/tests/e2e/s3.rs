//! `berth serve` with its blobs in S3 (SeaweedFS, started by the test):
//! real clients push and pull through it (skopeo, podman, containerd, the
//! oras SDK with referrers) and every blob is one object, never a copy;
//! the object store stopped in the middle of a push gives a clean 503 and
//! the push resumes when it is back; a missing bucket, refused credentials
//! and an unreachable endpoint stop `--check-config` and start-up with one
//! line naming the cause.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::s3::S3Server;
use berth_tests::{
    Containerd, Server, berth_bin, http, podman, require, run, run_text, umoci_image,
};

use crate::clients::layout_digest;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `berth serve` config with blobs in `bucket` of `server`, 5 MiB parts,
/// keys `key`/`secret` in files.
fn s3_config(dir: &Path, server: &S3Server, bucket: &str, key: &str, secret: &str) -> PathBuf {
    s3_config_with(dir, server, bucket, key, secret, "")
}

/// [`s3_config`] with more `[storage.s3]` lines.
pub(crate) fn s3_config_with(
    dir: &Path,
    server: &S3Server,
    bucket: &str,
    key: &str,
    secret: &str,
    extra: &str,
) -> PathBuf {
    let name = format!("{bucket}-{key}-{secret}");
    let (key_file, secret_file) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.secret")),
    );
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&secret_file, secret).unwrap();
    let config = dir.join(format!("serve-{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[storage.s3]\nbucket = {bucket:?}\nendpoint = {:?}\npath_style = true\nprefix = \"registry/\"\npart_size_mib = 5\nmax_attempts = 2\nconnect_timeout_s = 2\naccess_key_id_file = {:?}\nsecret_access_key_file = {:?}\n{extra}\n",
            server.endpoint,
            key_file.display().to_string(),
            secret_file.display().to_string(),
        ),
    )
    .unwrap();
    config
}

/// The keys of the objects under `prefix` (SeaweedFS lists anonymously).
pub(crate) fn object_keys(server: &S3Server, bucket: &str) -> Vec<String> {
    let r = http(
        "GET",
        &format!("{}/{bucket}?list-type=2&prefix=registry/", server.endpoint),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", text(&r.body));
    text(&r.body)
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next().map(str::to_owned))
        .collect()
}

#[test]
fn real_clients_push_and_pull_through_berth_on_seaweedfs_and_each_blob_is_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::seaweedfs();
    s3.create_bucket("registry");
    let config = s3_config(dir.path(), &s3, "registry", "k", "s");
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let host = server.host();
    // Two layers of 6 MB of random bytes: each a multipart upload.
    let layout = umoci_image(dir.path(), "v1", 2, 6_000_000);
    let want = layout_digest(&layout, "v1");
    let image = format!("{host}/team/app:v1");
    run(Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{image}")));
    let out = dir.path().join("out");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(
        layout_digest(&out, "v1"),
        want,
        "the same manifest came back"
    );
    // Every blob the manifest names is one object, written once.
    let manifest = http(
        "GET",
        &format!("{}/v2/team/app/manifests/v1", server.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    )
    .json();
    let blobs = manifest["layers"].as_array().unwrap().len() + 1;
    let keys = object_keys(&s3, "registry");
    assert_eq!(keys.len(), blobs, "{keys:?}");
    assert!(
        keys.iter().all(|k| k.starts_with("registry/blobs/")),
        "{keys:?}"
    );

    // podman and containerd pull it.
    let root = dir.path().join("podman");
    run(&mut podman(
        &root,
        &["pull", "-q", "--tls-verify=false", &image],
    ));
    let digest = run_text(&mut podman(
        &root,
        &["image", "inspect", "--format", "{{.Digest}}", &image],
    ));
    assert_eq!(digest.trim(), want);
    let _ = podman(&root, &["rmi", "--all", "--force"]).output();
    let cd = Containerd::start(&dir.path().join("containerd"));
    run(cd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &image,
    ]));
    assert!(run_text(cd.ctr().args(["images", "ls"])).contains(&want));
    drop(cd);

    // The oras SDK pushes an artifact with this image as its subject; the
    // referrers API finds it.
    let python = std::env::var("BERTH_ORAS_PYTHON")
        .unwrap_or_else(|_| "/opt/berth-test/oras/bin/python".into());
    assert!(
        Path::new(&python).is_file(),
        "the oras Python SDK is not installed: run ./scripts/test"
    );
    std::fs::write(
        dir.path().join("sbom.json"),
        br#"{"bomFormat":"CycloneDX"}"#,
    )
    .unwrap();
    let script = format!(
        r#"
import os, oras.client, oras.oci
os.chdir({d:?})
c = oras.client.OrasClient(hostname={host:?}, insecure=True)
s = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json", digest={want:?}, size={size})
print(c.push(target="{host}/team/app:sbom", files=["sbom.json:application/vnd.cyclonedx+json"], subject=s).status_code)
"#,
        d = dir.path().display().to_string(),
        size = http(
            "GET",
            &format!("{}/v2/team/app/manifests/v1", server.url()),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            b"",
        )
        .body
        .len(),
    );
    let pushed = run_text(
        Command::new(&python)
            .arg("-c")
            .arg(&script)
            .env_remove("REQUESTS_CA_BUNDLE"),
    );
    assert!(pushed.starts_with("201"), "{pushed}");
    let refs = http(
        "GET",
        &format!("{}/v2/team/app/referrers/{want}", server.url()),
        &[],
        b"",
    )
    .json();
    assert_eq!(refs["manifests"].as_array().unwrap().len(), 1, "{refs}");
}

#[test]
fn the_object_store_going_away_mid_push_is_a_503_and_the_push_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::seaweedfs();
    s3.create_bucket("registry");
    let config = s3_config(dir.path(), &s3, "registry", "k", "s");
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = server.url();
    let blob: Vec<u8> = (0..12_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let digest = berth_tests::sha256(&blob);
    let start = http(
        "POST",
        &format!("{url}/v2/team/app/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(start.status, 202);
    let loc = format!("{url}{}", start.header("location").unwrap());
    let patch = |from: usize, to: usize| {
        http(
            "PATCH",
            &loc,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &format!("{from}-{}", to - 1)),
            ],
            &blob[from..to],
        )
    };
    // 3 MB: staged below one part, acknowledged.
    assert_eq!(patch(0, 3_000_000).status, 202);
    s3.kill();
    // 6 MB more would fill a part: S3 is gone, so a 503 with the OCI error
    // JSON, and the session still stands at 3 MB.
    let failed = patch(3_000_000, 9_000_000);
    assert_eq!(failed.status, 503, "{}", text(&failed.body));
    assert!(
        failed.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("try again")
    );
    let status = http("GET", &loc, &[], b"");
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), Some("0-2999999"));
    // Back: the client resumes where the registry says, and finishes.
    s3.restart(&[]);
    assert_eq!(patch(3_000_000, 9_000_000).status, 202);
    let done = http(
        "PUT",
        &format!("{loc}&digest={digest}").replacen(
            "&digest",
            if loc.contains('?') {
                "&digest"
            } else {
                "?digest"
            },
            1,
        ),
        &[("Content-Type", "application/octet-stream")],
        &blob[9_000_000..],
    );
    assert_eq!(done.status, 201, "{}", text(&done.body));
    let got = http(
        "GET",
        &format!("{url}/v2/team/app/blobs/{digest}"),
        &[],
        b"",
    );
    assert_eq!(got.status, 200);
    assert!(got.body == blob, "the blob came back whole");
}

#[test]
fn wrong_s3_settings_stop_check_config_and_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::seaweedfs();
    s3.create_bucket("registry");
    // Credentials from now on: one identity.
    let identities = dir.path().join("identities.json");
    std::fs::write(
        &identities,
        r#"{"identities":[{"name":"berth","credentials":[{"accessKey":"berth-key","secretKey":"berth-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}"#,
    )
    .unwrap();
    s3.kill();
    s3.restart(&[format!("-s3.config={}", identities.display())]);
    let check = |config: &Path| {
        let out = Command::new(berth_bin())
            .args(["serve", "--check-config", "--config"])
            .arg(config)
            .output()
            .unwrap();
        (out.status.success(), text(&out.stderr))
    };
    let good = s3_config(dir.path(), &s3, "registry", "berth-key", "berth-secret");
    assert_eq!(check(&good), (true, String::new()));
    let cases = [
        (
            s3_config(dir.path(), &s3, "nothere", "berth-key", "berth-secret"),
            "does not exist",
        ),
        (
            s3_config(dir.path(), &s3, "registry", "berth-key", "wrong-secret"),
            "refused the credentials",
        ),
    ];
    for (config, cause) in &cases {
        let (ok, err) = check(config);
        assert!(
            !ok && err.contains(cause) && err.trim().lines().count() == 1,
            "{cause}: {err}"
        );
        // Start-up says the same and leaves no listener behind.
        let out = Command::new(berth_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(cause), "{}", text(&out.stderr));
    }
    s3.kill();
    let (ok, err) = check(&good);
    assert!(!ok && err.contains("cannot be reached"), "{err}");
}

/// `redirect = true`: blob GETs are 307s to presigned URLs of the objects,
/// and containerd and skopeo pull through them; HEAD still answers here.
#[test]
fn blob_gets_redirect_to_presigned_urls_that_clients_follow() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::seaweedfs();
    s3.create_bucket("registry");
    let config = s3_config_with(dir.path(), &s3, "registry", "k", "s", "redirect = true");
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let host = server.host();
    let layout = umoci_image(dir.path(), "v1", 1, 3_000_000);
    let want = layout_digest(&layout, "v1");
    let image = format!("{host}/team/app:v1");
    run(Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{image}")));
    let manifest = http(
        "GET",
        &format!("{}/v2/team/app/manifests/v1", server.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    )
    .json();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let blob_url = format!("{}/v2/team/app/blobs/{layer}", server.url());
    let get = http("GET", &blob_url, &[], b"");
    assert_eq!(get.status, 307);
    let location = get.header("location").unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/registry/registry/blobs/", s3.endpoint)),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let direct = http("GET", &location, &[("Range", "bytes=0-9")], b"");
    assert_eq!(direct.status, 206);
    assert_eq!(direct.body.len(), 10);
    assert_eq!(http("HEAD", &blob_url, &[], b"").status, 200);

    let cd = Containerd::start(&dir.path().join("containerd"));
    run(cd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &image,
    ]));
    assert!(run_text(cd.ctr().args(["images", "ls"])).contains(&want));
    let out = dir.path().join("out");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(layout_digest(&out, "v1"), want);
    let metrics = text(&http("GET", &format!("{}/metrics", server.url()), &[], b"").body);
    let redirects: u64 = metrics
        .lines()
        .find(|l| l.starts_with("berth_registry_blob_redirects_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(redirects >= 3, "{metrics}");
    assert!(
        metrics
            .contains("berth_registry_s3_requests_total{operation=\"UploadPart\",result=\"ok\"}")
            || metrics.contains(
                "berth_registry_s3_requests_total{operation=\"PutObject\",result=\"ok\"}"
            ),
        "{metrics}"
    );
}

/// Cheap pseudo-random bytes (the blobs only need to differ).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `kill -9` of `berth serve` on S3 while 20 clients push chunked and
/// monolithic blobs up to 12 MB (5 MiB parts: many are multipart): after a
/// restart every acknowledged blob is whole, nothing partial is visible,
/// a session acknowledged before the crash resumes and completes, and the
/// only multipart uploads left open belong to sessions the registry still
/// has (the janitor frees them when they expire).
#[test]
fn kill_9_on_s3_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::seaweedfs();
    s3.create_bucket("registry");
    let config = s3_config(dir.path(), &s3, "registry", "k", "s");
    let data_dir = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap()];
    let mut server = Server::start(&data_dir, &args);
    let url = server.url();

    // A session with 6 MB acknowledged (a part and a staged tail).
    let resume = noise(9_000_000, 99);
    let r = http(
        "POST",
        &format!("{url}/v2/crash/resume/blobs/uploads/"),
        &[],
        b"",
    );
    let loc = r.header("location").unwrap().to_owned();
    let r = http(
        "PATCH",
        &format!("{url}{loc}"),
        &[("Content-Range", "0-5999999")],
        &resume[..6_000_000],
    );
    assert_eq!(r.status, 202);

    let (acked, attempted) =
        crate::crash::push_until_killed(&mut server, std::time::Duration::from_secs(4), || {
            let seed = rand::random::<u64>();
            noise(64 * 1024 + (seed % 12_000_000) as usize, seed)
        });
    assert!(
        acked.len() >= 3,
        "too few uploads finished: {}",
        acked.len()
    );
    assert!(
        attempted.len() > acked.len(),
        "nothing was in flight at the crash"
    );

    let server = Server::start(&data_dir, &args);
    let url = server.url();
    crate::crash::check_after_crash(&url, &acked, &attempted);
    // The session from before the crash resumes where it was acknowledged.
    let r = http("GET", &format!("{url}{loc}"), &[], b"");
    assert_eq!(r.header("range"), Some("0-5999999"));
    let d = berth_tests::sha256(&resume);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = http(
        "PUT",
        &format!("{url}{loc}{sep}digest={d}"),
        &[("Content-Range", "6000000-8999999")],
        &resume[6_000_000..],
    );
    assert_eq!(r.status, 201, "{}", text(&r.body));
    let r = http("GET", &format!("{url}/v2/crash/resume/blobs/{d}"), &[], b"");
    assert_eq!(berth_tests::sha256(&r.body), d);
    // Open multipart uploads in the bucket: only the registry's sessions'.
    let listed = http(
        "GET",
        &format!("{}/registry?uploads&prefix=registry/", s3.endpoint),
        &[],
        b"",
    );
    let in_bucket = text(&listed.body).matches("<UploadId>").count() as u64;
    let metrics = text(&http("GET", &format!("{url}/metrics"), &[], b"").body);
    let recorded: u64 = metrics
        .lines()
        .find(|l| l.starts_with("berth_registry_s3_multipart_uploads "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no multipart gauge in {metrics}"));
    // Open in the bucket but recorded nowhere: only what a crash between
    // starting a multipart upload and recording it leaves, at most one per
    // request in flight, for the janitor. (Recorded but no longer open: a
    // crash between completing one and recording that; the next commit
    // finds the object whole.)
    assert!(
        in_bucket <= recorded + 20,
        "{in_bucket} open in the bucket, {recorded} recorded"
    );
}
