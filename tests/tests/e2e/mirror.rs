//! `berth mirror` with real containerd: pulls go through the mirror by
//! containerd's hosts.toml (`ctr --hosts-dir`), the mirror fetches from
//! `berth serve` once and then serves from its verified cache (the
//! registry's blob-byte counter proves it), tags are served stale when the
//! registry is down, a registry sending wrong bytes is caught and nothing
//! is cached, misses are quick 404s, and bad input is refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{
    Containerd, Server, berth_bin, http, put_blob, run, run_text, try_http, umoci_image,
};

use crate::clients::{layout_digest, skopeo_push};

pub(crate) struct Mirror {
    child: Child,
    addr: SocketAddr,
}

impl Mirror {
    fn start(data: &Path, registries: &[String]) -> Self {
        Self::start_with(data, registries, &[])
    }

    /// With a config file saying `extra` (TOML lines, e.g. peers).
    fn start_with(data: &Path, registries: &[String], extra: &[String]) -> Self {
        Self::start_at("127.0.0.1:0", data, registries, extra)
    }

    fn start_at(listen: &str, data: &Path, registries: &[String], extra: &[String]) -> Self {
        Self::start_env(listen, data, registries, extra, &[])
    }

    /// [`Mirror::start_at`] with more environment (`SSL_CERT_FILE` for a
    /// registry with a test CA).
    pub(crate) fn start_env(
        listen: &str,
        data: &Path,
        registries: &[String],
        extra: &[String],
        env: &[(&str, &Path)],
    ) -> Self {
        let config = data.with_extension("toml");
        std::fs::write(&config, extra.join("\n")).unwrap();
        let mut cmd = Command::new(berth_bin());
        cmd.args(["mirror", "--listen", listen, "--config"])
            .arg(&config)
            .arg("--data")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for r in registries {
            cmd.arg("--registry").arg(r);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn berth mirror");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("berth mirror printed no address: {line:?}"));
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn metrics(&self) -> String {
        String::from_utf8(http("GET", &format!("{}/metrics", self.url()), &[], b"").body).unwrap()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` free loopback addresses for nodes' mirrors, as `http://` URLs.
pub(crate) fn node_urls(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let addr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            format!("http://{addr}")
        })
        .collect()
}

/// Node `i`'s mirror config among `urls`: the other nodes as peers, its
/// own URL advertised (cold-pull claims), and patient peer probes.
pub(crate) fn peer_config(urls: &[String], i: usize) -> Vec<String> {
    let peers: Vec<String> = (0..urls.len())
        .filter(|&j| j != i)
        .map(|j| format!("\"{}\"", urls[j]))
        .collect();
    vec![
        format!("peers = [{}]", peers.join(", ")),
        format!("advertise_url = \"{}\"", urls[i]),
        "[upstream]\npeer_probe_ms = 3000".to_owned(),
    ]
}

/// Blob bytes the registry has sent, from its /metrics.
fn registry_blob_bytes(server: &Server) -> u64 {
    let text = String::from_utf8(http("GET", &format!("{}/metrics", server.url()), &[], b"").body)
        .unwrap();
    metric(&text, "berth_registry_blob_sent_bytes_total")
}

pub(crate) fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A `layers`-layer image of `size`-byte layers made with umoci, pushed
/// with skopeo to `server` as `e2e/<name>:v1`: (its reference, its digest).
fn pushed_image(
    dir: &Path,
    server: &Server,
    name: &str,
    layers: usize,
    size: usize,
) -> (String, String) {
    let layout = umoci_image(dir, "v1", layers, size);
    let image = format!("{}/e2e/{name}:v1", server.host());
    skopeo_push(&layout, "v1", &image);
    (image, layout_digest(&layout, "v1"))
}

/// containerd's hosts directory, written by `berth mirror hosts-config`:
/// pulls from `registry` go to `mirror` first, then to the registry.
fn hosts_dir(dir: &Path, registry: &str, mirror: &Mirror) -> PathBuf {
    let hosts = dir.join("certs.d");
    let written = run_text(
        Command::new(berth_bin())
            .args(["mirror", "hosts-config", "--registry"])
            .arg(format!("{registry}=http://{registry}"))
            .args(["--mirror-url", &mirror.url(), "--containerd-dir"])
            .arg(&hosts),
    );
    let file = hosts.join(registry).join("hosts.toml");
    assert_eq!(written.trim(), file.to_str().unwrap());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&format!("server = \"http://{registry}\"")),
        "{text}"
    );
    hosts
}

/// Pull `image` into `cd` with `hosts` as its hosts directory; it must
/// succeed.
fn pull_ok(cd: &Containerd, hosts: &Path, image: &str) {
    let out = cd
        .ctr()
        .args([
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "native",
            "--hosts-dir",
        ])
        .arg(hosts)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn containerd_pulls_through_the_mirror_and_its_cache_spares_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("registry"), &[]);
    let (image, want) = pushed_image(dir.path(), &server, "mirrored", 4, 300_000);
    let registry = server.host();
    let mirror = Mirror::start(
        &dir.path().join("mirror"),
        &[format!("{registry}=http://{registry}")],
    );
    let hosts = hosts_dir(dir.path(), &registry, &mirror);
    let sent = registry_blob_bytes;

    // Node 1: a cold pull; the mirror fetches every blob once.
    let before = sent(&server);
    let cd1 = Containerd::start(&dir.path().join("cd1"));
    pull_ok(&cd1, &hosts, &image);
    let first = sent(&server) - before;
    let m = mirror.metrics();
    assert!(
        first >= 4 * 300_000,
        "the registry sent the layers once: {first}"
    );
    assert_eq!(
        metric(&m, "berth_mirror_upstream_bytes_total"),
        first,
        "all of it went through the mirror:\n{m}"
    );
    assert!(run_text(cd1.ctr().args(["images", "ls"])).contains(&want));

    // Node 2: the same image, served from the mirror's cache.
    let cd2 = Containerd::start(&dir.path().join("cd2"));
    pull_ok(&cd2, &hosts, &image);
    assert_eq!(
        sent(&server) - before,
        first,
        "the registry sent no blob bytes for node 2"
    );
    let m = mirror.metrics();
    assert!(
        m.contains("berth_mirror_requests_total{kind=\"blob\",source=\"cache\",result=\"hit\"}"),
        "{m}"
    );
    assert!(run_text(cd2.ctr().args(["images", "ls"])).contains(&want));

    // Node 3, with the registry down: the tag is served from the last
    // verified answer, the blobs from the cache.
    server.kill9();
    let cd3 = Containerd::start(&dir.path().join("cd3"));
    pull_ok(&cd3, &hosts, &image);
    assert!(run_text(cd3.ctr().args(["images", "ls"])).contains(&want));
    let m = mirror.metrics();
    assert!(
        m.contains("berth_mirror_requests_total{kind=\"manifest\",source=\"stale\",result=\"ok\"}"),
        "{m}"
    );
    run(cd3.ctr().args(["images", "rm", &image]));
}

#[test]
fn a_node_pulls_from_its_peer_not_the_registry_even_when_the_registry_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("registry"), &[]);
    let (image, want) = pushed_image(dir.path(), &server, "peered", 3, 250_000);
    let registry = server.host();
    let up = [format!("{registry}=http://{registry}")];
    let a = Mirror::start(&dir.path().join("mirror-a"), &up);
    let peers = format!("peers = [\"{}\"]", a.url());
    let b = Mirror::start_with(
        &dir.path().join("mirror-b"),
        &up,
        std::slice::from_ref(&peers),
    );
    let sent = registry_blob_bytes;

    // Node A pulls from the registry through its mirror.
    let before = sent(&server);
    let cd_a = Containerd::start(&dir.path().join("cd-a"));
    pull_ok(
        &cd_a,
        &hosts_dir(&dir.path().join("a"), &registry, &a),
        &image,
    );
    let first = sent(&server) - before;
    assert!(first >= 3 * 250_000);

    // Node B: the tag from the registry, every blob from node A.
    let cd_b = Containerd::start(&dir.path().join("cd-b"));
    pull_ok(
        &cd_b,
        &hosts_dir(&dir.path().join("b"), &registry, &b),
        &image,
    );
    assert!(run_text(cd_b.ctr().args(["images", "ls"])).contains(&want));
    assert_eq!(
        sent(&server) - before,
        first,
        "the registry sent node B no blob bytes"
    );
    let mb = b.metrics();
    assert_eq!(metric(&mb, "berth_mirror_upstream_bytes_total"), 0, "{mb}");
    assert!(
        mb.contains("berth_mirror_served_bytes_total{source=\"peer\"}"),
        "{mb}"
    );

    // Node C, registry down, by digest: manifest and blobs from node A.
    server.kill9();
    let c = Mirror::start_with(&dir.path().join("mirror-c"), &up, &[peers]);
    let cd_c = Containerd::start(&dir.path().join("cd-c"));
    let by_digest = format!("{registry}/e2e/peered@{want}");
    pull_ok(
        &cd_c,
        &hosts_dir(&dir.path().join("c"), &registry, &c),
        &by_digest,
    );
    let mc = c.metrics();
    assert!(
        mc.contains("berth_mirror_requests_total{kind=\"manifest\",source=\"peer\",result=\"ok\"}"),
        "{mc}"
    );
}

#[test]
fn nodes_find_each_others_blobs_through_libp2p() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let (image, want) = pushed_image(dir.path(), &server, "p2p", 2, 300_000);
    let registry = server.host();
    let key = dir.path().join("p2p.key");
    std::fs::write(&key, "11".repeat(32)).unwrap();
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (http_a, http_b, p2p_a, p2p_b) = (free(), free(), free(), free());
    let up = [format!("{registry}=http://{registry}")];
    let config = |http: SocketAddr, p2p: SocketAddr, bootstrap: Option<SocketAddr>| {
        vec![
            format!("advertise_url = \"http://{http}\""),
            "[upstream]\npeer_probe_ms = 3000".to_owned(),
            format!(
                "[p2p]\nlisten = \"/ip4/127.0.0.1/tcp/{}\"\nkey_file = \"{}\"\nbootstrap = [{}]",
                p2p.port(),
                key.display(),
                bootstrap.map_or(String::new(), |b| format!(
                    "\"/ip4/127.0.0.1/tcp/{}\"",
                    b.port()
                ))
            ),
        ]
    };
    let a = Mirror::start_at(
        &http_a.to_string(),
        &dir.path().join("mirror-a"),
        &up,
        &config(http_a, p2p_a, None),
    );
    let b = Mirror::start_at(
        &http_b.to_string(),
        &dir.path().join("mirror-b"),
        &up,
        &config(http_b, p2p_b, Some(p2p_a)),
    );
    // They find each other.
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&b.metrics(), "berth_mirror_peers") != 1
        || metric(&a.metrics(), "berth_mirror_peers") != 1
    {
        assert!(
            Instant::now() < deadline,
            "the mirrors did not find each other"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Node A pulls through its mirror, which announces what it cached.
    let cd_a = Containerd::start(&dir.path().join("cd-a"));
    pull_ok(
        &cd_a,
        &hosts_dir(&dir.path().join("a"), &registry, &a),
        &image,
    );
    let sent = registry_blob_bytes;
    let after_a = sent(&server);
    // Node B: every blob found through the DHT at node A.
    let cd_b = Containerd::start(&dir.path().join("cd-b"));
    pull_ok(
        &cd_b,
        &hosts_dir(&dir.path().join("b"), &registry, &b),
        &image,
    );
    assert!(run_text(cd_b.ctr().args(["images", "ls"])).contains(&want));
    assert_eq!(
        sent(&server),
        after_a,
        "the registry sent node B no blob bytes"
    );
    // B has no peer list: what it read from node A, it found through the
    // DHT. (With advertise_url, B may also have fetched a blob it owns for
    // A during A's pull: that is cold-pull sharing, also through libp2p.)
    let mb = b.metrics();
    let from_peer: u64 = mb
        .lines()
        .find_map(|l| l.strip_prefix("berth_mirror_served_bytes_total{source=\"peer\"} "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let ma = a.metrics();
    let a_from_peer: u64 = ma
        .lines()
        .find_map(|l| l.strip_prefix("berth_mirror_served_bytes_total{source=\"peer\"} "))
        .map_or(0, |v| v.trim().parse().unwrap());
    assert!(
        from_peer + a_from_peer >= 300_000,
        "no blob went between the nodes:\n{mb}\n{ma}"
    );
}

#[test]
fn a_peer_sending_wrong_bytes_costs_no_failed_pull_and_is_penalised() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let blob = vec![b'y'; 100_000];
    let digest = put_blob(&server, "team/app", &blob);
    let liar = lying_registry(vec![b'x'; 100_000]);
    let registry = server.host();
    let mirror = Mirror::start_with(
        &dir.path().join("mirror"),
        &[format!("{registry}=http://{registry}")],
        &[
            format!("peers = [\"http://{liar}\"]"),
            "[upstream]\npeer_probe_ms = 3000".to_owned(),
        ],
    );
    let url = format!("{}/v2/team/app/blobs/{digest}?ns={registry}", mirror.url());
    // The first ask already gets the right blob: the lying peer's bytes
    // were never shown, and the registry's replaced them.
    let reply = http("GET", &url, &[], b"");
    assert_eq!(reply.status, 200);
    assert!(reply.body == blob, "the right bytes");
    let m = mirror.metrics();
    assert_eq!(metric(&m, "berth_mirror_verify_failures_total"), 1, "{m}");
    assert_eq!(
        metric(&m, "berth_mirror_upstream_bytes_total"),
        100_000,
        "the bytes came from the registry:\n{m}"
    );
    assert_eq!(metric(&m, "berth_mirror_peers_penalised"), 1, "{m}");
    // And it is cached now.
    let again = http("GET", &url, &[], b"");
    assert!(again.body == blob);
    assert!(mirror.metrics().contains("source=\"cache\",result=\"hit\""));
}

#[test]
fn three_nodes_pulling_a_cold_image_at_once_take_each_blob_from_the_registry_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let (image, want) = pushed_image(dir.path(), &server, "cold", 4, 400_000);
    let registry = server.host();
    let sent = || registry_blob_bytes(&server);
    // The image's blob bytes: config and layers, as the registry has them.
    let manifest = http(
        "GET",
        &format!("{}/v2/e2e/cold/manifests/v1", server.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    )
    .json();
    let image_bytes: u64 = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|d| d["size"].as_u64().unwrap())
        .sum();

    // Three nodes; each mirror lists the other two and names itself.
    let urls = node_urls(3);
    let up = [format!("{registry}=http://{registry}")];
    let mirrors: Vec<Mirror> = (0..3)
        .map(|i| {
            Mirror::start_at(
                urls[i].trim_start_matches("http://"),
                &dir.path().join(format!("mirror-{i}")),
                &up,
                &peer_config(&urls, i),
            )
        })
        .collect();
    let nodes: Vec<(Containerd, PathBuf)> = (0..3)
        .map(|i| {
            let cd = Containerd::start(&dir.path().join(format!("cd-{i}")));
            let hosts = hosts_dir(
                &dir.path().join(format!("node-{i}")),
                &registry,
                &mirrors[i],
            );
            (cd, hosts)
        })
        .collect();

    let before = sent();
    let barrier = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        for (cd, hosts) in &nodes {
            let (barrier, image) = (&barrier, &image);
            s.spawn(move || {
                barrier.wait();
                pull_ok(cd, hosts, image);
            });
        }
    });
    for (cd, _) in &nodes {
        assert!(run_text(cd.ctr().args(["images", "ls"])).contains(&want));
    }
    let registry_sent = sent() - before;
    eprintln!(
        "cold pull by three nodes: registry sent {registry_sent} bytes for a {image_bytes}-byte image"
    );
    assert!(
        registry_sent >= image_bytes,
        "every blob came from the registry once"
    );
    assert!(
        registry_sent as f64 <= 1.1 * image_bytes as f64,
        "the registry sent {registry_sent} bytes for a {image_bytes}-byte image to three nodes"
    );
    // Every node got every blob; two of three got them from peers.
    let from_peers: u64 = mirrors
        .iter()
        .map(|m| {
            let text = m.metrics();
            text.lines()
                .filter(|l| l.starts_with("berth_mirror_served_bytes_total{source=\"peer\"}"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert!(from_peers > 0, "no node read through another");
}

#[test]
fn kubelets_cri_pull_honours_the_written_hosts_toml() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let (image, want) = pushed_image(dir.path(), &server, "cri", 2, 300_000);
    let registry = server.host();
    let mirror = Mirror::start(
        &dir.path().join("mirror"),
        &[format!("{registry}=http://{registry}")],
    );
    let hosts = hosts_dir(dir.path(), &registry, &mirror);
    let cd = berth_tests::start_cri_containerd(&dir.path().join("cd"), &hosts);
    // The CRI ImageService.PullImage call kubelet makes.
    let image_ref = berth_tests::cri_pull_image(cd.socket(), &image)
        .unwrap_or_else(|e| panic!("CRI PullImage failed: {e}"));
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let listed = run_text(cd.ctr().args(["--namespace", "k8s.io", "images", "ls"]));
    assert!(listed.contains(&want), "{listed}");
    let m = mirror.metrics();
    assert!(
        metric(&m, "berth_mirror_upstream_bytes_total") >= 2 * 300_000,
        "the pull went through the mirror:\n{m}"
    );
}

/// A peer that says it has `blob`, sends its first half, then stalls.
fn stalling_peer(blob: Vec<u8>) -> SocketAddr {
    stalling_peer_after(blob.clone(), blob.len() / 2)
}

/// A peer that says it has `blob`, sends `sent` bytes of it, then stalls.
fn stalling_peer_after(blob: Vec<u8>, sent: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let blob = blob.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).unwrap_or(0);
                // One request per connection (so a client never reuses a
                // connection this thread has dropped).
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    blob.len()
                );
                let _ = conn.write_all(head.as_bytes());
                if buf[..n].starts_with(b"GET") {
                    let _ = conn.write_all(&blob[..sent]);
                    let _ = conn.flush();
                    std::thread::sleep(Duration::from_secs(30));
                }
            });
        }
    });
    addr
}

/// `len` bytes of a pattern that differs with `step` (each test its own
/// blob, so nothing is shared through a cache by accident).
fn pattern(len: u32, step: u32) -> Vec<u8> {
    (0..len).map(|i| (i * step % 251) as u8).collect()
}

/// A registry holding `blob` as a blob of `team/app`: (registry, digest,
/// the mirrors' upstream argument).
fn registry_with(dir: &Path, blob: &[u8]) -> (Server, String, [String; 1]) {
    let server = Server::start(&dir.join("registry"), &[]);
    let digest = put_blob(&server, "team/app", blob);
    let registry = server.host();
    (server, digest, [format!("{registry}=http://{registry}")])
}

/// Node A, which has pulled `blob` through its mirror, after the registry
/// is killed: (node A, digest, registry host, upstream argument).
fn cached_on_a_with_the_registry_gone(
    dir: &Path,
    blob: &[u8],
) -> (Mirror, String, String, [String; 1]) {
    let (mut server, digest, up) = registry_with(dir, blob);
    let registry = server.host();
    let a = Mirror::start(&dir.join("mirror-a"), &up);
    assert!(http("GET", &blob_url(&a, &digest, &registry), &[], b"").body == blob);
    server.kill9();
    (a, digest, registry, up)
}

fn blob_url(m: &Mirror, digest: &str, registry: &str) -> String {
    format!("{}/v2/team/app/blobs/{digest}?ns={registry}", m.url())
}

/// GET `url`; the reply and how long it took.
fn timed_get(url: &str) -> (berth_tests::Reply, Duration) {
    let began = Instant::now();
    let reply = http("GET", url, &[], b"");
    (reply, began.elapsed())
}

#[test]
fn a_peer_stalling_mid_blob_is_left_and_the_rest_comes_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let blob = pattern(2_000_000, 7);
    let (server, digest, up) = registry_with(dir.path(), &blob);
    let staller = stalling_peer(blob.clone());
    let mirror = Mirror::start_with(
        &dir.path().join("mirror"),
        &up,
        &[
            format!("peers = [\"http://{staller}\"]"),
            // A generous probe: under a loaded test run the staller must
            // still be found, or the stall is never exercised.
            "[upstream]\nstall_timeout_ms = 1000\npeer_probe_ms = 3000".to_owned(),
        ],
    );
    let (reply, took) = timed_get(&blob_url(&mirror, &digest, &server.host()));
    assert_eq!(reply.status, 200);
    assert!(reply.body == blob, "the whole, right blob");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let m = mirror.metrics();
    assert_eq!(metric(&m, "berth_mirror_resumed_total"), 1, "{m}");
    // Only the rest came from the registry.
    let upstream = metric(&m, "berth_mirror_upstream_bytes_total");
    assert!(
        upstream <= 1_000_000 + 65_536,
        "resumed with a range: {upstream} bytes from the registry"
    );
}

#[test]
fn a_peer_that_never_starts_sending_is_left_within_its_first_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let blob = pattern(1_000_000, 17);
    let (server, digest, up) = registry_with(dir.path(), &blob);
    let silent = stalling_peer_after(blob.clone(), 0);
    let mirror = Mirror::start_with(
        &dir.path().join("mirror"),
        &up,
        &[
            format!("peers = [\"http://{silent}\"]"),
            // The general stall limit is long: only the first-byte limit
            // can make this quick.
            "[upstream]\nstall_timeout_ms = 10000\npeer_probe_ms = 3000\npeer_first_byte_ms = 300"
                .to_owned(),
        ],
    );
    let (reply, took) = timed_get(&blob_url(&mirror, &digest, &server.host()));
    assert_eq!(reply.status, 200);
    assert!(reply.body == blob);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(metric(&mirror.metrics(), "berth_mirror_resumed_total"), 1);
}

#[test]
fn a_slow_peer_is_hedged_with_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let blob = pattern(1_000_000, 19);
    let (a, digest, registry, up) = cached_on_a_with_the_registry_gone(dir.path(), &blob);
    let silent = stalling_peer_after(blob.clone(), 0);
    let b = Mirror::start_with(
        &dir.path().join("mirror-b"),
        &up,
        &[
            format!("peers = [\"http://{silent}\", \"{}\"]", a.url()),
            // Only the hedge can make this quick: the other limits are long.
            "[upstream]\nstall_timeout_ms = 10000\npeer_first_byte_ms = 10000\npeer_probe_ms = 3000\npeer_hedge_ms = 100"
                .to_owned(),
        ],
    );
    let (reply, took) = timed_get(&blob_url(&b, &digest, &registry));
    assert_eq!(reply.status, 200);
    assert!(reply.body == blob);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let m = b.metrics();
    assert_eq!(metric(&m, "berth_mirror_hedged_total"), 1, "{m}");
    assert_eq!(metric(&m, "berth_mirror_resumed_total"), 0, "{m}");
}

#[test]
fn with_the_registry_down_a_stalled_peer_is_finished_by_another_peer() {
    let dir = tempfile::tempdir().unwrap();
    let blob = pattern(2_000_000, 13);
    // Node A has the blob cached; the registry is gone.
    let (a, digest, registry, up) = cached_on_a_with_the_registry_gone(dir.path(), &blob);
    // Node B knows a stalling peer and node A.
    let staller = stalling_peer(blob.clone());
    let b = Mirror::start_with(
        &dir.path().join("mirror-b"),
        &up,
        &[
            format!("peers = [\"http://{staller}\", \"{}\"]", a.url()),
            "[upstream]\nstall_timeout_ms = 1000\npeer_probe_ms = 3000".to_owned(),
        ],
    );
    let (reply, took) = timed_get(&blob_url(&b, &digest, &registry));
    assert_eq!(reply.status, 200);
    assert!(
        reply.body == blob,
        "the whole, right blob, with no registry"
    );
    assert!(took < Duration::from_secs(5));
    let m = b.metrics();
    // The staller is listed first, so it is asked first; the rest came from
    // node A by a Range request.
    assert_eq!(metric(&m, "berth_mirror_resumed_total"), 1, "{m}");
    assert_eq!(metric(&m, "berth_mirror_upstream_bytes_total"), 0, "{m}");
}

/// The mission's pull path with a private project: `berth serve` with
/// `[auth]`, the node's mirror marking the project private, and kubelet's
/// CRI `PullImage` with a robot's credentials from a pull secret. The
/// mirror passes the registry's Bearer challenge on; containerd gets a
/// token from the registry and the mirror checks it with the registry for
/// every object; without credentials, or with another project's robot, the
/// pull fails although the mirror holds the content.
#[test]
fn a_private_image_is_pulled_through_the_mirror_with_a_robot_of_berth_serve() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::auth::auth_config(dir.path());
    let server = Server::start(
        &dir.path().join("registry"),
        &["--config", config.to_str().unwrap()],
    );
    let registry = server.host();
    let layout = umoci_image(dir.path(), "v1", 2, 200_000);
    let want = layout_digest(&layout, "v1");
    let image = format!("{registry}/team/private:v1");
    let robot = format!("{}:{}", crate::auth::ROBOT, crate::auth::ROBOT_SECRET);
    run(Command::new(berth_tests::require("skopeo"))
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            &robot,
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{image}")));
    let mirror = Mirror::start_with(
        &dir.path().join("mirror"),
        &[format!("{registry}=http://{registry}")],
        &[format!("private = [\"{registry}/team/*\"]")],
    );
    let hosts = hosts_dir(dir.path(), &registry, &mirror);
    let cd = berth_tests::start_cri_containerd(&dir.path().join("cd"), &hosts);
    let anonymous = berth_tests::cri_pull_image_with_auth(cd.socket(), &image, None);
    assert!(anonymous.is_err(), "pulled a private image anonymously");
    let pulled = berth_tests::cri_pull_image_with_auth(
        cd.socket(),
        &image,
        Some((crate::auth::ROBOT, crate::auth::ROBOT_SECRET)),
    )
    .unwrap_or_else(|e| panic!("CRI PullImage with the robot: {e}"));
    assert!(pulled.starts_with("sha256:"), "{pulled}");
    let listed = run_text(cd.ctr().args(["--namespace", "k8s.io", "images", "ls"]));
    assert!(listed.contains(&want), "{listed}");
    let m = mirror.metrics();
    assert!(
        metric(&m, "berth_mirror_upstream_bytes_total") >= 2 * 200_000,
        "the pull went through the mirror:\n{m}"
    );
    // The mirror now holds every blob; a user without access still gets
    // nothing from it.
    let layers: Vec<String> = std::fs::read_dir(dir.path().join("mirror/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|n| format!("sha256:{n}"))
        .collect();
    assert!(layers.len() >= 3, "{layers:?}");
    let (status, token) = {
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:wrong")
        );
        let r = http(
            "GET",
            &format!(
                "{}/token?service=berth-test&scope=repository:team/private:pull",
                server.url()
            ),
            &[("Authorization", &basic)],
            b"",
        );
        (r.status, r.json()["token"].clone())
    };
    assert_eq!((status, token), (401, serde_json::Value::Null));
    for d in &layers {
        let url = format!("{}/v2/team/private/blobs/{d}?ns={registry}", mirror.url());
        let r = http("GET", &url, &[], b"");
        assert_eq!(r.status, 401, "{d} served without credentials");
        assert!(
            r.header("www-authenticate")
                .unwrap_or_default()
                .starts_with("Bearer realm="),
            "the registry's challenge is passed on"
        );
    }
}

/// A registry whose every repository is private: without the Basic
/// credentials `user:pass` it answers 401 with a challenge; with them, any
/// blob request gets `blob`.
fn private_registry(blob: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let blob = blob.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let n = conn.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                // "user:pass" in base64.
                let allowed = req.contains("authorization: basic dxnlcjpwyxnz");
                let head = req.starts_with("head");
                let reply = if allowed {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                        blob.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"berth-test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
                };
                let _ = conn.write_all(reply.as_bytes());
                if allowed && !head {
                    let _ = conn.write_all(&blob);
                }
            });
        }
    });
    addr
}

#[test]
fn private_content_goes_only_to_callers_the_registry_would_serve() {
    let dir = tempfile::tempdir().unwrap();
    let blob = vec![b'p'; 200_000];
    let digest = berth_tests::sha256(&blob);
    let registry = private_registry(blob.clone()).to_string();
    let mirror = Mirror::start_with(
        &dir.path().join("mirror"),
        &[format!("{registry}=http://{registry}")],
        &[format!("private = [\"{registry}/team/*\"]")],
    );
    let url = format!(
        "{}/v2/team/secret/blobs/{digest}?ns={registry}",
        mirror.url()
    );
    let good = [("Authorization", "Basic dXNlcjpwYXNz")];
    let bad = [("Authorization", "Basic bm9ib2R5Om5vcGU=")];
    // With credentials the registry accepts: served (and now cached).
    let reply = http("GET", &url, &good, b"");
    assert_eq!(reply.status, 200);
    assert!(reply.body == blob);
    assert!(http("GET", &url, &good, b"").body == blob);
    // Without, or with wrong ones: refused although the mirror has it, with
    // the registry's challenge so the client can authenticate.
    for headers in [&[][..], &bad[..]] {
        let reply = http("GET", &url, headers, b"");
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.json()["errors"][0]["code"], "UNAUTHORIZED");
        assert_eq!(
            reply.header("WWW-Authenticate"),
            Some("Basic realm=\"berth-test\"")
        );
        assert!(reply.body.len() < 1000, "no content in the refusal");
    }
    // Peers never get it, whatever they ask.
    let peer = http(
        "GET",
        &format!("{}/v2/berth/peer/blobs/{digest}?local=1", mirror.url()),
        &[],
        b"",
    );
    assert_eq!(peer.status, 404);
    // It was cached all along: the refusals were not misses.
    assert!(
        std::fs::read_dir(dir.path().join("mirror/blobs/sha256"))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy()
                == digest.trim_start_matches("sha256:"))
    );
}

/// A registry that answers every blob GET with `body` (whatever was asked).
fn lying_registry(body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    addr
}

#[test]
fn wrong_bytes_from_the_registry_are_never_served_whole_or_cached() {
    let dir = tempfile::tempdir().unwrap();
    let liar = lying_registry(vec![b'x'; 100_000]);
    let ns = liar.to_string();
    let mirror = Mirror::start(&dir.path().join("mirror"), &[format!("{ns}=http://{ns}")]);
    let wanted = berth_tests::sha256(&vec![b'y'; 100_000]);
    let url = format!("{}/v2/team/app/blobs/{wanted}?ns={ns}", mirror.url());
    for _ in 0..2 {
        // The body is cut short: a client never gets the full wrong blob.
        // (A transport error, the connection cut mid-body, is fine too.)
        if let Ok(reply) = try_http("GET", &url, &[], b"") {
            assert!(
                reply.body.len() < 100_000 || reply.status != 200,
                "the whole wrong blob was served"
            );
        }
    }
    let m = mirror.metrics();
    assert_eq!(metric(&m, "berth_mirror_verify_failures_total"), 2, "{m}");
    assert!(
        !m.contains("source=\"cache\""),
        "nothing was cached, so nothing came from the cache:\n{m}"
    );
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("mirror/blobs/sha256"))
        .unwrap()
        .collect();
    assert!(cached.is_empty(), "{cached:?}");
}

#[test]
fn misses_are_quick_404s_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A registry nobody listens on: connections are refused at once.
    let gone = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ns = gone.to_string();
    let mirror = Mirror::start(&dir.path().join("mirror"), &[format!("{ns}=http://{ns}")]);
    let digest = berth_tests::sha256(b"nothing");
    for path in [
        "/v2/team/app/manifests/v1?ns=other.registry:5000".to_owned(),
        format!("/v2/team/app/manifests/v1?ns={ns}"),
        format!("/v2/team/app/blobs/{digest}?ns={ns}"),
    ] {
        let start = Instant::now();
        let reply = http("GET", &format!("{}{path}", mirror.url()), &[], b"");
        let took = start.elapsed();
        assert_eq!(reply.status, 404, "{path}");
        assert!(took < Duration::from_millis(50), "{path} took {took:?}");
        assert!(
            reply.json()["errors"][0]["code"].is_string(),
            "{path}: OCI error JSON"
        );
    }
    for (method, path, status) in [
        ("GET", format!("/v2/Team/App/manifests/v1?ns={ns}"), 400),
        (
            "GET",
            format!("/v2/team/app/blobs/sha256:1234?ns={ns}"),
            400,
        ),
        (
            "GET",
            format!("/v2/team/app/manifests/bad!tag?ns={ns}"),
            400,
        ),
        ("GET", format!("/v2/team/app/tags/list?ns={ns}"), 404),
        (
            "GET",
            "/v2/team/app/manifests/v1?ns=../../etc".to_owned(),
            404,
        ),
        ("PUT", format!("/v2/team/app/manifests/v1?ns={ns}"), 405),
        (
            "DELETE",
            format!("/v2/team/app/blobs/{digest}?ns={ns}"),
            405,
        ),
    ] {
        let reply = http(method, &format!("{}{path}", mirror.url()), &[], b"");
        assert_eq!(reply.status, status, "{method} {path}");
        assert!(
            reply.json()["errors"][0]["code"].is_string(),
            "{method} {path}"
        );
    }
    // Oversized requests: a long name, a path past what HTTP allows, a huge
    // header. Refused, and the mirror keeps serving.
    let long_name = "a".repeat(10_000);
    let reply = http(
        "GET",
        &format!("{}/v2/{long_name}/manifests/v1?ns={ns}", mirror.url()),
        &[],
        b"",
    );
    assert_eq!(reply.status, 400);
    let (status, _) = berth_tests::raw_http(
        mirror.addr,
        format!(
            "GET /v2/{}/manifests/x HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(70_000)
        )
        .as_bytes(),
    );
    assert!(
        status == 0 || (400..500).contains(&status),
        "a 70 kB path: {status}"
    );
    let (status, _) = berth_tests::raw_http(
        mirror.addr,
        format!(
            "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(1 << 20)
        )
        .as_bytes(),
    );
    assert!(
        status == 0 || (400..500).contains(&status),
        "a 1 MiB header: {status}"
    );
    assert_eq!(
        http("GET", &format!("{}/healthz", mirror.url()), &[], b"").status,
        200
    );

    // Nothing was written for any of it.
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("mirror/blobs/sha256"))
        .unwrap()
        .collect();
    assert!(cached.is_empty());
}

/// How a fake peer misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Misbehaves {
    /// Wrong bytes, of the right length.
    WrongBytes,
    /// The right first half, then garbage.
    RightPrefixThenGarbage,
    /// The right first half, then nothing (the connection held open).
    StallsMidBlob,
    /// Says it has every blob, then answers 404.
    LiesAboutHaving,
}

/// A peer that answers blob requests from `registry`'s `repo` (it has the
/// bytes), misbehaving as `how`.
fn bad_peer(registry: String, repo: &'static str, how: Misbehaves) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let registry = registry.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let n = conn.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let digest = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.split("/blobs/").nth(1))
                    .map(|d| d.split('?').next().unwrap_or(d).to_owned());
                let real = digest.and_then(|d| {
                    try_http(
                        "GET",
                        &format!("http://{registry}/v2/{repo}/blobs/{d}"),
                        &[],
                        b"",
                    )
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|r| r.body)
                });
                let Some(mut body) = real else {
                    let _ = conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                };
                let half = body.len() / 2;
                match how {
                    Misbehaves::WrongBytes => body.iter_mut().for_each(|b| *b ^= 0x5a),
                    Misbehaves::RightPrefixThenGarbage => {
                        body[half..].iter_mut().for_each(|b| *b ^= 0x5a);
                    }
                    Misbehaves::LiesAboutHaving => {
                        // Yes to the probe (HEAD), then nothing to the GET.
                        let answer = if head.starts_with("HEAD") {
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                        } else {
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
                        };
                        let _ = conn.write_all(answer.as_bytes());
                        return;
                    }
                    Misbehaves::StallsMidBlob => {}
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                if how == Misbehaves::StallsMidBlob {
                    let _ = conn.write_all(&body[..half]);
                    std::thread::sleep(Duration::from_secs(60));
                    return;
                }
                let _ = conn.write_all(&body);
            });
        }
    });
    addr
}

#[test]
fn containerd_pulls_succeed_the_first_time_whatever_a_peer_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("registry"), &[]);
    let (image, want) = pushed_image(dir.path(), &server, "peered", 3, 700_000);
    let registry = server.host();
    let hows = [
        Misbehaves::WrongBytes,
        Misbehaves::RightPrefixThenGarbage,
        Misbehaves::StallsMidBlob,
        Misbehaves::LiesAboutHaving,
    ];
    // Each misbehaviour against `ctr pull` and against kubelet's CRI
    // PullImage, each with a fresh mirror (a penalty would hide the peer
    // from the second).
    for (how, cri) in hows.iter().flat_map(|h| [(*h, false), (*h, true)]) {
        let name = format!("{how:?}-{}", if cri { "cri" } else { "ctr" });
        let peer = bad_peer(registry.clone(), "e2e/peered", how);
        let mirror = Mirror::start_with(
            &dir.path().join(format!("mirror-{name}")),
            &[format!("{registry}=http://{registry}")],
            &[format!("peers = [\"http://{peer}\"]")],
        );
        let hosts = hosts_dir(&dir.path().join(&name), &registry, &mirror);
        // The first attempt succeeds: containerd checks every digest.
        if cri {
            let cd =
                berth_tests::start_cri_containerd(&dir.path().join(format!("cd-{name}")), &hosts);
            berth_tests::cri_pull_image(cd.socket(), &image)
                .unwrap_or_else(|e| panic!("{name}: CRI PullImage failed: {e}"));
            let listed = run_text(cd.ctr().args(["--namespace", "k8s.io", "images", "ls"]));
            assert!(listed.contains(&want), "{name}: {listed}");
        } else {
            let cd = Containerd::start(&dir.path().join(format!("cd-{name}")));
            pull_ok(&cd, &hosts, &image);
            assert!(
                run_text(cd.ctr().args(["images", "ls"])).contains(&want),
                "{name}"
            );
        }
        let m = mirror.metrics();
        if matches!(
            how,
            Misbehaves::WrongBytes | Misbehaves::RightPrefixThenGarbage
        ) {
            assert!(
                metric(&m, "berth_mirror_verify_failures_total") >= 1,
                "{name}: the lie was caught\n{m}"
            );
        }
        assert!(
            metric(&m, "berth_mirror_peers_penalised") >= 1,
            "{name}: the liar is penalised\n{m}"
        );
        assert!(
            metric(&m, "berth_mirror_served_bytes_total{source=\"peer\"}") == 0
                || !matches!(how, Misbehaves::LiesAboutHaving),
            "{name}: nothing came from a peer that has nothing\n{m}"
        );
    }
}
