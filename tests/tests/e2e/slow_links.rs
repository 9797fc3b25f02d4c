//! The node mirror on slow links, in network namespaces this test creates
//! and deletes (the benchmark's set-up, smaller): a registry and three
//! nodes, each in its own namespace joined by a bridge, every link shaped
//! each way with tc. Each node's client pulls through its own mirror; the
//! mirrors list each other. Asserts the registry's egress and the bytes
//! the clients got — times belong in `bench/mirror.py`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{berth_bin, http, require, sha256};

/// Namespaces, veth pairs and a bridge named after `prefix`, on subnet
/// `10.98.<subnet>.0/24`; deleted on drop.
struct Net {
    prefix: String,
    subnet: u8,
    nodes: usize,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// `nodes` nodes and a registry, every link shaped to `rate` (tc's
    /// notation, e.g. `100mbit`).
    fn up(prefix: &str, subnet: u8, nodes: usize, rate: &str) -> Self {
        for p in ["ip", "tc"] {
            require(p);
        }
        assert!(
            Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"0")),
            "shaped links need root (network namespaces and tc): run the tests as root, as .ci/run does"
        );
        let net = Self {
            prefix: prefix.to_owned(),
            subnet,
            nodes,
        };
        net.down();
        let br = format!("{prefix}br");
        sh(&["ip", "link", "add", &br, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.98.{subnet}.1/24"),
            "dev",
            &br,
        ]);
        sh(&["ip", "link", "set", &br, "up"]);
        for name in net.names() {
            let ns = net.ns(&name);
            let (host, inner) = (format!("{prefix}{name}h"), format!("{prefix}{name}c"));
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &inner,
            ]);
            sh(&["ip", "link", "set", &inner, "netns", &ns]);
            sh(&["ip", "link", "set", &host, "master", &br]);
            sh(&["ip", "link", "set", &host, "up"]);
            let ip = format!("{}/24", net.ip(&name));
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &ip, "dev", &inner,
            ]);
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up",
            ]);
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            let tbf = ["tbf", "rate", rate, "burst", "256kb", "latency", "50ms"];
            let mut host_qdisc = vec!["tc", "qdisc", "replace", "dev", &host, "root"];
            host_qdisc.extend(tbf);
            sh(&host_qdisc);
            let mut inner_qdisc = vec![
                "ip", "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", &inner, "root",
            ];
            inner_qdisc.extend(tbf);
            sh(&inner_qdisc);
        }
        net
    }

    fn names(&self) -> Vec<String> {
        std::iter::once("reg".to_owned())
            .chain((0..self.nodes).map(|i| format!("n{i}")))
            .collect()
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn ip(&self, name: &str) -> String {
        let last = match name {
            "reg" => 2,
            n => 10 + n[1..].parse::<u8>().unwrap(),
        };
        format!("10.98.{}.{last}", self.subnet)
    }

    /// `program args…` inside `name`'s namespace.
    fn exec(&self, name: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(name)]).arg(program);
        cmd
    }

    fn down(&self) {
        for name in self.names() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(&name)])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{}{name}h", self.prefix)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}br", self.prefix)])
            .output();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.down();
    }
}

/// Children killed on drop (before the namespaces go).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if berth_tests::try_http("GET", url, &[], b"").is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not come up");
}

fn metric(base: &str, name: &str) -> u64 {
    let text = String::from_utf8(http("GET", &format!("{base}/metrics"), &[], b"").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// A blob of `len` bytes, pushed to `repo` on the registry at `base`.
fn push(base: &str, repo: &str, seed: u8, len: usize) -> (String, String) {
    let data: Vec<u8> = (0..len)
        .map(|i| ((i as u64 * 2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    let digest = sha256(&data);
    let r = http(
        "POST",
        &format!("{base}/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202, "{r:?}");
    let location = r.header("location").unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = format!("{base}{location}{sep}digest={digest}");
    let r = http(
        "PUT",
        &url,
        &[("content-type", "application/octet-stream")],
        &data,
    );
    assert_eq!(r.status, 201, "{r:?}");
    (digest, sha256(&data))
}

/// A registry and three mirrors on `net`; returns the registry's URL, the
/// mirrors' URLs and the processes.
fn cluster(net: &Net, dir: &Path) -> (String, Vec<String>, Procs) {
    let berth = berth_bin();
    let reg_host = format!("{}:5000", net.ip("reg"));
    let mut procs = Vec::new();
    procs.push(
        net.exec("reg", &berth)
            .args(["serve", "--listen", &reg_host, "--data"])
            .arg(dir.join("registry"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let reg = format!("http://{reg_host}");
    let mirrors: Vec<String> = (0..net.nodes)
        .map(|i| format!("http://{}:5001", net.ip(&format!("n{i}"))))
        .collect();
    for (i, url) in mirrors.iter().enumerate() {
        let peers: Vec<String> = mirrors
            .iter()
            .filter(|u| *u != url)
            .map(|u| format!("{u:?}"))
            .collect();
        let config: PathBuf = dir.join(format!("mirror{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"{}\"\ndata = \"{}\"\nregistries = [\"{reg_host}\"]\npeers = [{}]\n\
                 advertise_url = \"{url}\"\n[upstreams]\n\"{reg_host}\" = \"{reg}\"\n",
                url.trim_start_matches("http://"),
                dir.join(format!("mirror{i}")).display(),
                peers.join(", ")
            ),
        )
        .unwrap();
        procs.push(
            net.exec(&format!("n{i}"), &berth)
                .args(["mirror", "--config"])
                .arg(&config)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let procs = Procs(procs);
    wait_up(&format!("{reg}/v2/"));
    for m in &mirrors {
        wait_up(&format!("{m}/healthz"));
    }
    (reg, mirrors, procs)
}

/// Node `i`'s client (curl in its namespace) GETs blob `digest` through its
/// mirror into `out`.
fn pull(net: &Net, i: usize, reg_host: &str, digest: &str, out: &Path) -> Child {
    let url = format!(
        "http://{}:5001/v2/e2e/slow/blobs/{digest}?ns={reg_host}",
        net.ip(&format!("n{i}"))
    );
    net.exec(&format!("n{i}"), &require("curl"))
        .args(["-sSf", "--max-time", "120", "-o"])
        .arg(out)
        .arg(url)
        .spawn()
        .unwrap()
}

fn check_all(pulls: Vec<(Child, PathBuf, String)>) {
    for (mut child, out, want) in pulls {
        assert!(child.wait().unwrap().success(), "a pull failed");
        let got = sha256(&std::fs::read(&out).unwrap());
        assert_eq!(got, want, "{} holds the blob's bytes", out.display());
    }
}

/// Three nodes at once, then one after another, on links of `rate`, with
/// two blobs of `len` bytes per case: the registry sends each blob about
/// once either way.
fn registry_sends_each_blob_once(prefix: &str, subnet: u8, rate: &str, len: usize) {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::up(prefix, subnet, 3, rate);
    let (reg, mirrors, _procs) = cluster(&net, dir.path());
    let reg_host = reg.trim_start_matches("http://").to_owned();
    let sent = || metric(&reg, "berth_registry_blob_sent_bytes_total");

    for (case, rolling) in [("at once", false), ("rolling", true)] {
        let seed = if rolling { 2 } else { 0 };
        let blobs: Vec<(String, String)> = (0..2)
            .map(|k| push(&reg, "e2e/slow", seed + k, len))
            .collect();
        let before = sent();
        if rolling {
            for i in 0..3 {
                let pulls = blobs
                    .iter()
                    .enumerate()
                    .map(|(k, (d, want))| {
                        let out = dir.path().join(format!("r{i}-{k}"));
                        (pull(&net, i, &reg_host, d, &out), out, want.clone())
                    })
                    .collect();
                check_all(pulls);
            }
        } else {
            let mut pulls = Vec::new();
            for i in 0..3 {
                for (k, (d, want)) in blobs.iter().enumerate() {
                    let out = dir.path().join(format!("a{i}-{k}"));
                    pulls.push((pull(&net, i, &reg_host, d, &out), out, want.clone()));
                }
            }
            check_all(pulls);
        }
        let egress = (sent() - before) as f64 / (2 * len) as f64;
        let why: Vec<String> = mirrors
            .iter()
            .map(|m| {
                format!(
                    "{m}: fetched {} bytes, resumed {}",
                    metric(m, "berth_mirror_upstream_bytes_total"),
                    metric(m, "berth_mirror_resumed_total")
                )
            })
            .collect();
        assert!(
            egress <= 1.1,
            "{rate}, {case}: the registry sent {egress:.2}× the blobs' bytes (at most 1.1× wanted); {why:?}"
        );
    }
}

#[test]
fn on_100_mbit_links_the_registry_sends_each_blob_once() {
    registry_sends_each_blob_once("bsl1", 1, "100mbit", 12 << 20);
}

#[test]
fn on_20_mbit_links_the_registry_sends_each_blob_once() {
    registry_sends_each_blob_once("bsl2", 2, "20mbit", 4 << 20);
}
