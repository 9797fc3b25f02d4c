//! Several `berth serve` replicas (issue 18): three processes on
//! 127.0.0.1–3 sharing one PostgreSQL (started by the test) for their
//! metadata and one SeaweedFS bucket for their blobs, behind haproxy's
//! round robin — the deployment for a cluster that outgrew one registry
//! node. Real clients push and pull through the balancer, and a chunked
//! upload whose requests land on different replicas completes, because no
//! replica keeps a session in memory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::postgres::PgServer;
use berth_tests::s3::S3Server;
use berth_tests::{
    Containerd, Server, free_port, http, podman, require, run, run_text, sha256, umoci_image,
};

use crate::clients::layout_digest;
use crate::s3::s3_config_with;

/// haproxy in front of `backends`, round robin per request, each backend
/// checked at `/healthz` every 300 ms (a dead one leaves the rotation).
struct Haproxy {
    child: Child,
    port: u16,
}

impl Haproxy {
    fn start(dir: &Path, backends: &[SocketAddr]) -> Self {
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, a)| format!("  server r{i} {a} check inter 300ms fall 1 rise 1\n"))
            .collect();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 2000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n  option http-server-close\n  retries 3\n  option redispatch\nfrontend registry\n  bind 127.0.0.1:{port}\n  default_backend replicas\nbackend replicas\n  balance roundrobin\n  option httpchk GET /healthz\n{servers}"
            ),
        )
        .unwrap();
        let child = Command::new(require("haproxy"))
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let the first health checks pass.
        std::thread::sleep(Duration::from_millis(700));
        Self { child, port }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("http://{}", self.host())
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL, a SeaweedFS bucket, and the config every replica shares.
struct Cluster {
    pg: PgServer,
    _s3: S3Server,
    config: PathBuf,
    dir: tempfile::TempDir,
}

fn cluster() -> Cluster {
    cluster_with("")
}

/// [`cluster`] with more configuration (sections after `[metadata]`).
fn cluster_with(more: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgServer::start();
    let url = pg.database();
    let s3 = S3Server::seaweedfs();
    s3.create_bucket("registry");
    let more = more.replace("DIR", &dir.path().display().to_string());
    let extra = format!("\n[metadata]\npostgres = {url:?}\n{more}");
    // `extra` lands after [storage.s3]: a new table header ends it.
    let config = s3_config_with(dir.path(), &s3, "registry", "k", "s", &extra);
    Cluster {
        pg,
        _s3: s3,
        config,
        dir,
    }
}

/// Replica `i` of the cluster, on 127.0.0.`i+1`.
fn replica(c: &Cluster, i: usize) -> Server {
    let data = c.dir.path().join(format!("replica{i}"));
    Server::start_at(
        &format!("127.0.0.{}:0", i + 1),
        &data,
        &["--config", c.config.to_str().unwrap()],
    )
}

/// `n` replicas of the cluster and haproxy in front of them.
fn balanced(c: &Cluster, n: usize) -> (Vec<Server>, Haproxy) {
    let replicas: Vec<Server> = (0..n).map(|i| replica(c, i)).collect();
    let lb = Haproxy::start(
        c.dir.path(),
        &replicas.iter().map(|s| s.addr).collect::<Vec<_>>(),
    );
    (replicas, lb)
}

#[test]
fn three_replicas_serve_real_clients_and_a_chunked_upload_spread_over_them() {
    let c = cluster();
    let (replicas, lb) = balanced(&c, 3);

    // skopeo pushes through the balancer (every request to the next
    // replica) and pulls back the same image.
    let layout = umoci_image(c.dir.path(), "v1", 2, 6_000_000);
    let want = layout_digest(&layout, "v1");
    let image = format!("{}/team/app:v1", lb.host());
    run(Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{image}")));
    let out = c.dir.path().join("out");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(layout_digest(&out, "v1"), want);
    // podman pushes another tag through the balancer and pulls it back;
    // containerd pulls through it too.
    let root = c.dir.path().join("podman");
    let pushed = format!("{}/team/app:podman", lb.host());
    run(&mut podman(
        &root,
        &["pull", "-q", "--tls-verify=false", &image],
    ));
    run(&mut podman(&root, &["tag", &image, &pushed]));
    run(&mut podman(
        &root,
        &["push", "-q", "--tls-verify=false", &pushed],
    ));
    let _ = podman(&root, &["rmi", "--all", "--force"]).output();
    run(&mut podman(
        &root,
        &["pull", "-q", "--tls-verify=false", &pushed],
    ));
    let _ = podman(&root, &["rmi", "--all", "--force"]).output();
    let cd = Containerd::start(&c.dir.path().join("containerd"));
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
    // Every replica answers for it.
    for r in &replicas {
        let tags = http(
            "GET",
            &format!("{}/v2/team/app/tags/list", r.url()),
            &[],
            b"",
        );
        assert_eq!(
            tags.json()["tags"],
            serde_json::json!(["podman", "v1"]),
            "replica {}",
            r.addr
        );
    }

    // A chunked upload started on replica 0, continued on 1, finished on
    // 2: 12 MB in three chunks, each bigger than an S3 part.
    let blob: Vec<u8> = (0..12_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let digest = sha256(&blob);
    let start = http(
        "POST",
        &format!("{}/v2/team/chunked/blobs/uploads/", replicas[0].url()),
        &[],
        b"",
    );
    assert_eq!(start.status, 202);
    let mut location = start.header("Location").unwrap().to_owned();
    let chunks: Vec<&[u8]> = blob.chunks(4_000_000).collect();
    let mut offset = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let r = &replicas[i % 3];
        let range = format!("{}-{}", offset, offset + chunk.len() - 1);
        let patch = http(
            "PATCH",
            &format!("{}{location}", r.url()),
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            chunk,
        );
        assert_eq!(
            patch.status,
            202,
            "chunk {i} on replica {i}: {}",
            String::from_utf8_lossy(&patch.body)
        );
        offset += chunk.len();
        assert_eq!(
            patch.header("Range"),
            Some(format!("0-{}", offset - 1).as_str())
        );
        location = patch.header("Location").unwrap().to_owned();
    }
    // Its status is known everywhere.
    let status = http("GET", &format!("{}{location}", replicas[1].url()), &[], b"");
    assert_eq!(status.status, 204);
    assert_eq!(
        status.header("Range"),
        Some(format!("0-{}", blob.len() - 1).as_str())
    );
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = http(
        "PUT",
        &format!("{}{location}{sep}digest={digest}", replicas[2].url()),
        &[],
        b"",
    );
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
    let got = http(
        "GET",
        &format!("{}/v2/team/chunked/blobs/{digest}", lb.url()),
        &[],
        b"",
    );
    assert_eq!(got.status, 200);
    assert_eq!(sha256(&got.body), digest, "the bytes verify");
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A token from replica `r` for pushing to team/app, if it gives one.
fn token(r: &Server, user: &str, pass: &str) -> Option<String> {
    let reply = http(
        "GET",
        &format!(
            "{}/token?service=berth-replicas&scope=repository:team/app:pull,push",
            r.url()
        ),
        &[("Authorization", &basic(user, pass))],
        b"",
    );
    (reply.status == 200).then(|| reply.json()["token"].as_str().unwrap().to_owned())
}

/// Poll `f` every 100 ms for up to `secs`; how long it took to hold.
fn within(secs: u64, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn accounts_changed_on_one_replica_hold_on_the_others_within_seconds() {
    let auth = r#"
[auth]
service = "berth-replicas"
token_key_file = "DIR/token.key"

[[auth.users]]
name = "root"
password_file = "DIR/root.pw"
admin = true

[[auth.projects]]
name = "team"
"#;
    let c = cluster_with(auth);
    std::fs::write(c.dir.path().join("root.pw"), "root-password").unwrap();
    std::fs::write(c.dir.path().join("token.key"), [7u8; 32]).unwrap();
    let replicas: Vec<Server> = (0..2).map(|i| replica(&c, i)).collect();
    // A robot made on replica 0...
    let made = http(
        "POST",
        &format!("{}/api/v1/robots", replicas[0].url()),
        &[
            ("Authorization", &basic("root", "root-password")),
            ("Content-Type", "application/json"),
        ],
        br#"{"name": "robot$team+ci", "permissions": [{"repositories": ["team/**"], "actions": ["pull", "push"]}]}"#,
    );
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let secret = made.json()["secret"].as_str().unwrap().to_owned();
    // ...logs in on replica 1 within the follow interval (2 s).
    let took = within(6, || {
        token(&replicas[1], "robot$team+ci", &secret).is_some()
    })
    .expect("replica 1 learns of the robot");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A token one replica signed is good on the other (the shared key).
    let t = token(&replicas[0], "robot$team+ci", &secret).unwrap();
    let on_other = http(
        "GET",
        &format!("{}/v2/team/app/tags/list", replicas[1].url()),
        &[("Authorization", &format!("Bearer {t}"))],
        b"",
    );
    assert_eq!(on_other.status, 404, "authorized (the repository is empty)");
    // Disabled on replica 1: refused on replica 0 within seconds, its
    // live token included.
    let disabled = http(
        "PATCH",
        &format!("{}/api/v1/robots/robot$team+ci", replicas[1].url()),
        &[
            ("Authorization", &basic("root", "root-password")),
            ("Content-Type", "application/json"),
        ],
        br#"{"disabled": true}"#,
    );
    assert_eq!(disabled.status, 200);
    within(6, || {
        http(
            "GET",
            &format!("{}/v2/team/app/tags/list", replicas[0].url()),
            &[("Authorization", &format!("Bearer {t}"))],
            b"",
        )
        .status
            == 401
    })
    .expect("replica 0 refuses the disabled robot's token");
    assert!(token(&replicas[0], "robot$team+ci", &secret).is_none());

    // One client's failed logins count together on every replica (the
    // throttle's counts are in PostgreSQL): six wrong passwords spread
    // over two replicas are six, not three and three.
    let failures_logged = || -> Vec<String> {
        let reply = http(
            "GET",
            &format!(
                "{}/api/v1/audit?action=login.failure&actor=mallory",
                replicas[0].url()
            ),
            &[("Authorization", &basic("root", "root-password"))],
            b"",
        );
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["detail"].as_str().unwrap().to_owned())
            .collect()
    };
    for i in 0..6 {
        assert!(token(&replicas[i % 2], "mallory", "guess").is_none());
    }
    let details = within(6, || failures_logged().len() == 6)
        .map(|_| failures_logged())
        .expect("six failures audited");
    // Each failure's count, as the replica that refused it saw it: six
    // numbers in a row (counted apart, they would come in pairs).
    let mut counts: Vec<u32> = details
        .iter()
        .map(|d| d.split(' ').next().unwrap().parse().unwrap())
        .collect();
    counts.sort_unstable();
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "{details:?}");
    // A success (root's, from the same address) starts the count again.
    assert!(token(&replicas[1], "root", "root-password").is_some());
    assert!(token(&replicas[0], "mallory", "guess").is_none());
    let details = within(6, || failures_logged().len() == 7)
        .map(|_| failures_logged())
        .expect("the seventh failure audited");
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("1 failures from this client")),
        "{details:?}"
    );
}

#[test]
fn postgres_restarting_during_pushes_loses_nothing_acknowledged() {
    let mut c = cluster();
    let r = replica(&c, 0);
    assert_eq!(
        http("GET", &format!("{}/readyz", r.url()), &[], b"").status,
        200
    );
    // Pushes, one after another, while PostgreSQL goes away and returns.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (acknowledged, refusals) = std::thread::scope(|s| {
        let pusher = s.spawn(|| {
            let mut acknowledged = Vec::new();
            let mut refusals = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                match push_small(&r, i) {
                    Ok(tag) => acknowledged.push(tag),
                    Err(status) => refusals.push(status),
                }
            }
            (acknowledged, refusals)
        });
        std::thread::sleep(Duration::from_millis(800));
        c.pg.stop();
        // While it is down: not ready, and requests are refused with 503.
        let ready = http("GET", &format!("{}/readyz", r.url()), &[], b"");
        assert_eq!(ready.status, 503);
        assert_eq!(ready.json()["errors"][0]["code"], "UNAVAILABLE");
        // --check-config says which part is down, in one line.
        let check = Command::new(berth_tests::berth_bin())
            .args(["serve", "--check-config", "--config"])
            .arg(&c.config)
            .output()
            .unwrap();
        assert!(!check.status.success());
        let why = String::from_utf8_lossy(&check.stderr);
        assert!(
            why.contains("in [metadata]: cannot use PostgreSQL 127.0.0.1:"),
            "{why}"
        );
        assert_eq!(why.trim().lines().count(), 1, "{why}");
        std::thread::sleep(Duration::from_millis(300));
        c.pg.restart();
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        pusher.join().unwrap()
    });
    assert!(!refusals.is_empty(), "some pushes met the outage");
    assert!(
        refusals.iter().all(|s| *s == 503),
        "only 503s: {refusals:?}"
    );
    assert!(acknowledged.len() > 5, "{}", acknowledged.len());
    // Recovered without a restart of berth; every acknowledged push holds.
    assert_eq!(
        http("GET", &format!("{}/readyz", r.url()), &[], b"").status,
        200
    );
    for tag in &acknowledged {
        let m = http(
            "GET",
            &format!("{}/v2/team/app/manifests/{tag}", r.url()),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            b"",
        );
        assert_eq!(m.status, 200, "{tag}");
    }
}

/// Push a one-blob image tagged `t<i>`: its tag, or the status that
/// refused it.
fn push_small(r: &Server, i: usize) -> Result<String, u16> {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{i}}}");
    let digest = sha256(config.as_bytes());
    let start = http(
        "POST",
        &format!("{}/v2/team/app/blobs/uploads/", r.url()),
        &[],
        b"",
    );
    if start.status != 202 {
        return Err(start.status);
    }
    let location = start.header("Location").unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http(
        "PUT",
        &format!("{}{location}{sep}digest={digest}", r.url()),
        &[("Content-Type", "application/octet-stream")],
        config.as_bytes(),
    );
    if put.status != 201 {
        return Err(put.status);
    }
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{digest}\",\"size\":{}}},\"layers\":[]}}",
        config.len()
    );
    let tag = format!("t{i}");
    let m = http(
        "PUT",
        &format!("{}/v2/team/app/manifests/{tag}", r.url()),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        manifest.as_bytes(),
    );
    if m.status != 201 {
        return Err(m.status);
    }
    Ok(tag)
}

#[test]
fn a_sqlite_registry_moves_to_postgres_and_serves_everything_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layout = umoci_image(dir.path(), "v1", 2, 300_000);
    let want = layout_digest(&layout, "v1");
    {
        let mut sqlite = Server::start(&data, &[]);
        for repo in ["team/app", "team/tools"] {
            run(Command::new(require("skopeo"))
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:v1", layout.display()))
                .arg(format!("docker://{}/{repo}:v1", sqlite.host())));
        }
        sqlite.stop();
    }
    let pg = PgServer::start();
    let url = pg.database();
    let out = run(Command::new(berth_tests::berth_bin())
        .args(["admin", "migrate-metadata", "--from"])
        .arg(&data)
        .args(["--to", &url]));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.contains("copied"), "{report}");
    assert!(report.contains("now set [metadata] postgres"), "{report}");
    // Again: refused, the target holds a registry now.
    let again = Command::new(berth_tests::berth_bin())
        .args(["admin", "migrate-metadata", "--from"])
        .arg(&data)
        .args(["--to", &url])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));
    // Served from PostgreSQL (same blobs on disk): everything pulls.
    let config = dir.path().join("pg.toml");
    std::fs::write(&config, format!("[metadata]\npostgres = {url:?}\n")).unwrap();
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let catalog = http("GET", &format!("{}/v2/_catalog", server.url()), &[], b"");
    assert_eq!(
        catalog.json()["repositories"],
        serde_json::json!(["team/app", "team/tools"])
    );
    for repo in ["team/app", "team/tools"] {
        let out = dir.path().join(repo.replace('/', "-"));
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{}/{repo}:v1", server.host()))
            .arg(format!("oci:{}:v1", out.display())));
        assert_eq!(layout_digest(&out, "v1"), want, "{repo}");
    }
}

/// One chunked upload of `blob` to `repo` through `base`, resuming from
/// the acknowledged offset after any failure (a replica killed under it,
/// a balancer retrying elsewhere): its digest once the registry said 201.
fn resilient_chunked_push(
    base: &str,
    repo: &str,
    blob: &[u8],
    chunk: usize,
    retries: &std::sync::atomic::AtomicUsize,
) -> String {
    use berth_tests::try_http;
    let digest = sha256(blob);
    let deadline = Instant::now() + Duration::from_secs(120);
    let retry = |what: &str| {
        retries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(Instant::now() < deadline, "{what}: gave up after 120 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Start a session (retried until a replica answers).
    let mut location = loop {
        match try_http(
            "POST",
            &format!("{base}/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
        ) {
            Ok(r) if r.status == 202 => break r.header("Location").unwrap().to_owned(),
            other => retry(&format!("POST {other:?}")),
        }
    };
    let mut offset = 0usize;
    while offset < blob.len() {
        let end = (offset + chunk).min(blob.len());
        let range = format!("{}-{}", offset, end - 1);
        let sent = try_http(
            "PATCH",
            &format!("{base}{location}"),
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            &blob[offset..end],
        );
        match sent {
            Ok(r) if r.status == 202 => {
                location = r.header("Location").unwrap().to_owned();
                offset = end;
                continue;
            }
            other => retry(&format!("PATCH {range}: {:?}", other.map(|r| r.status))),
        }
        // Ask where the session stands and resume from there.
        if let Ok(r) = try_http("GET", &format!("{base}{location}"), &[], b"") {
            if r.status == 204 {
                offset = r
                    .header("Range")
                    .and_then(|v| v.split('-').nth(1))
                    .and_then(|e| e.parse::<usize>().ok())
                    .map_or(0, |e| e + 1);
                location = r.header("Location").unwrap_or(&location).to_owned();
            }
        }
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    loop {
        match try_http(
            "PUT",
            &format!("{base}{location}{sep}digest={digest}"),
            &[],
            b"",
        ) {
            Ok(r) if r.status == 201 => return digest,
            // Finished by an attempt whose answer was lost: the blob is there.
            Ok(r) if r.status == 404 => {
                let head = try_http(
                    "HEAD",
                    &format!("{base}/v2/{repo}/blobs/{digest}"),
                    &[],
                    b"",
                );
                if head.is_ok_and(|h| h.status == 200) {
                    return digest;
                }
                panic!("the session is gone and the blob is not there: {r:?}");
            }
            other => retry(&format!("PUT {:?}", other.map(|r| r.status))),
        }
    }
}

#[test]
fn a_replica_killed_during_twenty_chunked_pushes_loses_none() {
    let c = cluster();
    let (mut replicas, lb) = balanced(&c, 3);
    let base = lb.url();
    let blobs: Vec<Vec<u8>> = (0..20u8)
        .map(|i| {
            (0..3_000_000u32)
                .map(|j| (j.wrapping_mul(31) as u8) ^ i)
                .collect()
        })
        .collect();
    let retries = std::sync::atomic::AtomicUsize::new(0);
    let digests: Vec<String> = std::thread::scope(|s| {
        let pushes: Vec<_> = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (base, retries) = (base.clone(), &retries);
                s.spawn(move || {
                    resilient_chunked_push(&base, &format!("team/p{i}"), b, 500_000, retries)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        replicas[1].kill9();
        pushes.into_iter().map(|p| p.join().unwrap()).collect()
    });
    // The kill interrupted pushes (they had to retry), and yet every
    // upload is whole, from either surviving replica.
    let retries = retries.into_inner();
    eprintln!("pushes retried {retries} requests");
    assert!(
        retries > 0,
        "the kill interrupted nothing: make the pushes longer"
    );
    for (i, d) in digests.iter().enumerate() {
        assert_eq!(*d, sha256(&blobs[i]));
        for r in [&replicas[0], &replicas[2]] {
            let got = http(
                "GET",
                &format!("{}/v2/team/p{i}/blobs/{d}", r.url()),
                &[],
                b"",
            );
            assert_eq!(got.status, 200, "p{i} on {}", r.addr);
            assert_eq!(sha256(&got.body), *d);
        }
    }
}

/// The last line of a `POST /api/v1/gc` answer (JSON lines).
fn collect_on(r: &Server) -> serde_json::Value {
    let reply = http("POST", &format!("{}/api/v1/gc", r.url()), &[], b"");
    assert_eq!(reply.status, 200);
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn replicas_collecting_at_once_take_turns_and_keep_what_is_referenced() {
    let c = cluster_with("\n[gc]\ngrace_minutes = 0\n");
    let replicas: Vec<Server> = (0..2).map(|i| replica(&c, i)).collect();
    let layout = umoci_image(c.dir.path(), "v1", 3, 200_000);
    let want = layout_digest(&layout, "v1");
    for tag in ["keep", "drop"] {
        run(Command::new(require("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{}/team/{tag}:v1", replicas[0].host())));
    }
    // team/drop's manifest goes; its blobs are also team/keep's, so they
    // stay referenced. A blob only team/drop linked becomes garbage.
    let lone = sha256(b"only team/drop had this");
    let start = http(
        "POST",
        &format!(
            "{}/v2/team/drop/blobs/uploads/?digest={lone}",
            replicas[1].url()
        ),
        &[("Content-Type", "application/octet-stream")],
        b"only team/drop had this",
    );
    assert_eq!(start.status, 201);
    let m = http(
        "HEAD",
        &format!("{}/v2/team/drop/manifests/v1", replicas[0].url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    let digest = m.header("Docker-Content-Digest").unwrap().to_owned();
    assert_eq!(
        http(
            "DELETE",
            &format!("{}/v2/team/drop/manifests/{digest}", replicas[1].url()),
            &[],
            b""
        )
        .status,
        202
    );
    // Both replicas collect at the same moment, three times over.
    let mut ran = 0;
    let mut stood_down = 0;
    for _ in 0..3 {
        let answers: Vec<serde_json::Value> = std::thread::scope(|s| {
            let a = s.spawn(|| collect_on(&replicas[0]));
            let b = s.spawn(|| collect_on(&replicas[1]));
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        for a in answers {
            if a["report"].is_object() {
                ran += 1;
            } else {
                let e = a["error"].as_str().unwrap_or_default();
                assert!(e.contains("another replica"), "{a}");
                stood_down += 1;
            }
        }
    }
    eprintln!("{ran} collections ran, {stood_down} stood down");
    assert!(
        ran >= 3,
        "each round at least one collects: {ran} ran, {stood_down} stood down"
    );
    // The lone blob is gone; everything team/keep references pulls whole.
    let gone = http(
        "HEAD",
        &format!("{}/v2/team/drop/blobs/{lone}", replicas[0].url()),
        &[],
        b"",
    );
    assert_eq!(gone.status, 404);
    let out = c.dir.path().join("out");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/keep:v1", replicas[1].host()))
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(layout_digest(&out, "v1"), want);
}

#[test]
fn replicas_sharing_one_data_directory_continue_each_others_uploads() {
    // Filesystem blobs: every replica mounts the same --data.
    let dir = tempfile::tempdir().unwrap();
    let pg = PgServer::start();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!("[metadata]\npostgres = {:?}\n", pg.database()),
    )
    .unwrap();
    let data = dir.path().join("shared");
    let replicas: Vec<Server> = (0..2)
        .map(|i| {
            Server::start_at(
                &format!("127.0.0.{}:0", i + 1),
                &data,
                &["--config", config.to_str().unwrap()],
            )
        })
        .collect();
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let start = http(
        "POST",
        &format!("{}/v2/team/fs/blobs/uploads/", replicas[0].url()),
        &[],
        b"",
    );
    assert_eq!(start.status, 202);
    let mut location = start.header("Location").unwrap().to_owned();
    for (i, chunk) in blob.chunks(1_000_000).enumerate() {
        let r = &replicas[i % 2];
        let range = format!("{}-{}", i * 1_000_000, i * 1_000_000 + chunk.len() - 1);
        let patch = http(
            "PATCH",
            &format!("{}{location}", r.url()),
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            chunk,
        );
        assert_eq!(
            patch.status,
            202,
            "chunk {i}: {}",
            String::from_utf8_lossy(&patch.body)
        );
        location = patch.header("Location").unwrap().to_owned();
    }
    // Two writers at one instant on two replicas: while replica 0 streams
    // a chunk of the session (its body still arriving), replica 1 refuses
    // another with 409 instead of writing the same bytes under it.
    let tail = b"one more chunk, sent slowly";
    let slow = slow_patch(&replicas[0], &location, blob.len(), tail);
    let racing = http(
        "PATCH",
        &format!("{}{location}", replicas[1].url()),
        &[
            ("Content-Type", "application/octet-stream"),
            (
                "Content-Range",
                &format!("{}-{}", blob.len(), blob.len() + 2),
            ),
        ],
        b"abc",
    );
    assert_eq!(
        racing.status,
        409,
        "{}",
        String::from_utf8_lossy(&racing.body)
    );
    assert!(
        racing.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("in use")
    );
    location = slow.finish();
    let mut whole = blob.clone();
    whole.extend_from_slice(tail);
    let digest = sha256(&whole);
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = http(
        "PUT",
        &format!("{}{location}{sep}digest={digest}", replicas[1].url()),
        &[],
        b"",
    );
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
    for r in &replicas {
        let got = http(
            "GET",
            &format!("{}/v2/team/fs/blobs/{digest}", r.url()),
            &[],
            b"",
        );
        assert_eq!(got.status, 200);
        assert_eq!(sha256(&got.body), digest);
    }
}

/// A PATCH of `chunk` at `offset` whose body is held back after its
/// first byte until [`SlowPatch::finish`].
struct SlowPatch {
    stream: std::net::TcpStream,
    rest: Vec<u8>,
}

fn slow_patch(r: &Server, location: &str, offset: usize, chunk: &[u8]) -> SlowPatch {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(r.addr).unwrap();
    write!(
        stream,
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: {offset}-{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.addr,
        offset + chunk.len() - 1,
        chunk.len()
    )
    .unwrap();
    stream.write_all(&chunk[..1]).unwrap();
    stream.flush().unwrap();
    // Let the replica take the session.
    std::thread::sleep(Duration::from_millis(500));
    SlowPatch {
        stream,
        rest: chunk[1..].to_vec(),
    }
}

impl SlowPatch {
    /// Send the rest; the new `Location` of the 202.
    fn finish(mut self) -> String {
        use std::io::{Read as _, Write as _};
        self.stream.write_all(&self.rest).unwrap();
        let mut answer = String::new();
        self.stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        answer
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("location:")
                    .then(|| l[9..].trim().to_owned())
            })
            .expect("a Location")
    }
}

/// The value of attribute `name` in the first `<tag …>` of `xml`.
fn xml_attr(xml: &str, tag: &str, name: &str) -> Option<u64> {
    let start = xml.find(&format!("<{tag} "))?;
    let head = &xml[start..start + xml[start..].find('>')?];
    let at = head.find(&format!(" {name}=\""))? + name.len() + 3;
    head[at..at + head[at..].find('"')?].parse().ok()
}

/// The OCI distribution-spec conformance suite, every optional API on,
/// through haproxy in front of three replicas on PostgreSQL and SeaweedFS.
/// The suite is never part of this repository, so this runs only when
/// asked for (`cargo test -p berth-tests --test e2e -- --ignored
/// conformance`) with `BERTH_CONFORMANCE` naming a locally built suite
/// (docs/conformance.md says how to build one).
#[test]
#[ignore = "needs the OCI conformance suite built locally: BERTH_CONFORMANCE=<path> (docs/conformance.md)"]
fn the_conformance_suite_passes_through_the_balancer() {
    let suite = std::env::var_os("BERTH_CONFORMANCE").unwrap_or_else(|| {
        panic!(
            "BERTH_CONFORMANCE is not set: build the suite (`go test -c` in \
             distribution-spec/conformance, docs/conformance.md) and set it to the binary"
        )
    });
    let c = cluster();
    let (_replicas, lb) = balanced(&c, 3);
    let work = c.dir.path().join("conformance");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new(&suite)
        .current_dir(&work)
        .env("OCI_REGISTRY", lb.host())
        .env("OCI_TLS", "disabled")
        .env("OCI_VERSION", "1.1")
        .env("OCI_API_BLOBS_UPLOAD_CANCEL", "true")
        .env("OCI_API_MANIFESTS_TAG_PARAM", "true")
        .env("OCI_API_BLOBS_DIGEST_HEADER", "true")
        .env("OCI_API_MANIFESTS_DIGEST_HEADER", "true")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&suite).display()));
    let junit = std::fs::read_to_string(work.join("results/junit.xml")).unwrap_or_else(|e| {
        panic!(
            "the suite wrote no results/junit.xml ({e}); its output:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let count = |name| xml_attr(&junit, "testsuite", name).unwrap_or(0);
    let (tests, failures, errors) = (count("tests"), count("failures"), count("errors"));
    eprintln!(
        "conformance through haproxy and 3 replicas: {tests} tests, {failures} failures, \
         {errors} errors, {} skipped, {} disabled",
        count("skipped"),
        count("disabled")
    );
    assert!(tests > 900, "only {tests} tests ran");
    assert_eq!(
        (failures, errors),
        (0, 0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.status.success(), "the suite exited {}", out.status);
}
