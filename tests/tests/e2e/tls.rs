//! Real clients against `berth serve` with `[auth]`, over HTTPS (a test CA
//! made at test time) and over plain HTTP: podman login/push/pull, skopeo,
//! containerd's `ctr images pull --user`, the CRI `PullImage` with the
//! credentials kubelet passes from a pull secret, and the oras Python SDK
//! with Basic auth. Over HTTPS also: HTTP/2 by ALPN, the challenge's realm
//! in `https://`, plain HTTP on the HTTPS port answered with a 400 that
//! says so, and a renewed certificate picked up without a restart while a
//! broken one is not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_tests::{Containerd, Server, TestCa, podman, require, run, run_text, umoci_image};

use crate::auth::{ROBOT, ROBOT_SECRET, auth_config};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// How the clients reach the server: with a CA directory over HTTPS, or
/// plain HTTP.
struct Transport {
    /// A directory holding `ca.crt` (the layout skopeo, podman and
    /// containerd read), or `None` for plain HTTP.
    certs: Option<PathBuf>,
}

impl Transport {
    fn ca(&self) -> Option<PathBuf> {
        self.certs.as_ref().map(|d| d.join("ca.crt"))
    }

    /// podman/skopeo flags for this transport (`--cert-dir` or
    /// `--tls-verify=false`), with `prefix` (`""`, `src-`, `dest-`).
    fn containers_flags(&self, prefix: &str) -> Vec<String> {
        match &self.certs {
            Some(d) => vec![format!("--{prefix}cert-dir"), d.display().to_string()],
            None => vec![format!("--{prefix}tls-verify=false")],
        }
    }
}

/// Every client in turn against `server` (with `[auth]` from
/// [`auth_config`]): push as the robot, pull as a member, refusals for the
/// rest.
fn clients_against(server: &Server, t: &Transport, dir: &Path) {
    let host = server.host();
    let layout = umoci_image(dir, "v1", 2, 20_000);
    let robot = format!("{ROBOT}:{ROBOT_SECRET}");

    // skopeo pushes with the robot.
    let mut copy = Command::new(require("skopeo"));
    copy.arg("copy")
        .args(t.containers_flags("dest-"))
        .args(["--dest-creds", &robot])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{host}/team/app:v1"));
    ok(copy.output().unwrap(), "skopeo copy with the robot");

    // podman: login (auth.json), pull, tag, push, and a refused login.
    let root = dir.join("podman");
    let authfile = dir.join("auth.json");
    let pm = |args: &[&str]| {
        let mut c = podman(&root, args);
        c.env("REGISTRY_AUTH_FILE", &authfile);
        c
    };
    let mut bad = pm(&["login", "--username", "alice", "--password", "wrong"]);
    bad.args(t.containers_flags("")).arg(&host);
    let out = bad.output().unwrap();
    assert!(!out.status.success(), "podman login with a wrong password");
    let mut login = pm(&["login", "--username", ROBOT, "--password", ROBOT_SECRET]);
    login.args(t.containers_flags("")).arg(&host);
    ok(login.output().unwrap(), "podman login with the robot");
    let image = format!("{host}/team/app:v1");
    let mut pull = pm(&["pull", "-q"]);
    pull.args(t.containers_flags("")).arg(&image);
    ok(pull.output().unwrap(), "podman pull after login");
    run(&mut pm(&[
        "tag",
        &image,
        &format!("{host}/team/app:podman"),
    ]));
    let mut push = pm(&["push", "-q"]);
    push.args(t.containers_flags(""))
        .arg(format!("{host}/team/app:podman"));
    ok(push.output().unwrap(), "podman push after login");
    let mut stray = pm(&["push", "-q"]);
    run(&mut pm(&[
        "tag",
        &image,
        &format!("{host}/other/app:podman"),
    ]));
    stray
        .args(t.containers_flags(""))
        .arg(format!("{host}/other/app:podman"));
    let out = stray.output().unwrap();
    assert!(
        !out.status.success(),
        "the team robot pushed into another project"
    );
    let _ = pm(&["rmi", "--all", "--force"]).output();

    // containerd finds the CA (or plain HTTP) in hosts.toml, as a node
    // is configured (containerd 1.6 speaks plain HTTP to a loopback host
    // without one, whatever --tlscacert says).
    let hosts = dir.join("hosts");
    let host_dir = hosts.join(&host);
    std::fs::create_dir_all(&host_dir).unwrap();
    let hosts_toml = match t.ca() {
        Some(ca) => format!(
            "server = \"https://{host}\"\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
            ca.display()
        ),
        None => format!(
            "server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    };
    std::fs::write(host_dir.join("hosts.toml"), hosts_toml).unwrap();
    // containerd: `ctr images pull --user`, as a member.
    let cd = Containerd::start(&dir.join("containerd"));
    let mut ctr = cd.ctr();
    ctr.args([
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--user",
        "alice:alice-pw",
    ]);
    ctr.arg("--hosts-dir").arg(&hosts);
    ok(
        ctr.arg(format!("{host}/team/app:podman")).output().unwrap(),
        "ctr images pull --user",
    );
    let mut anon = cd.ctr();
    anon.args(["images", "pull", "--snapshotter", "native"]);
    anon.arg("--hosts-dir").arg(&hosts);
    let out = anon.arg(&image).output().unwrap();
    assert!(
        !out.status.success(),
        "ctr pulled a private image anonymously"
    );
    drop(cd);

    // The CRI PullImage with the credentials of a pull secret, as kubelet
    // sends it.

    let cri = berth_tests::start_cri_containerd(&dir.join("cri"), &hosts);
    let refused = berth_tests::cri_pull_image_with_auth(cri.socket(), &image, None);
    assert!(refused.is_err(), "CRI pulled a private image without auth");
    let wrong = berth_tests::cri_pull_image_with_auth(cri.socket(), &image, Some((ROBOT, "nope")));
    assert!(wrong.is_err(), "CRI pulled with a wrong secret");
    let pulled =
        berth_tests::cri_pull_image_with_auth(cri.socket(), &image, Some((ROBOT, ROBOT_SECRET)))
            .unwrap_or_else(|e| panic!("CRI PullImage with the robot: {e}"));
    assert!(pulled.starts_with("sha256:"), "{pulled}");
    drop(cri);

    // The oras Python SDK with Basic auth: push an artifact, pull it back.
    let python = std::env::var("BERTH_ORAS_PYTHON")
        .unwrap_or_else(|_| "/opt/berth-test/oras/bin/python".into());
    assert!(
        Path::new(&python).is_file(),
        "the oras Python SDK is not installed at {python}: run ./scripts/test"
    );
    std::fs::write(dir.join("notes.txt"), b"release notes").unwrap();
    let script = format!(
        r#"
import os, oras.client
os.chdir({dir:?})
c = oras.client.OrasClient(hostname={host:?}, insecure={insecure})
c.login(username={user:?}, password={pw:?}, hostname={host:?})
r = c.push(target="{host}/team/notes:v1", files=["notes.txt:text/plain"])
print(r.status_code)
os.makedirs("pulled", exist_ok=True)
c.pull(target="{host}/team/notes:v1", outdir="pulled")
"#,
        dir = dir.display().to_string(),
        insecure = if t.certs.is_some() { "False" } else { "True" },
        user = ROBOT,
        pw = ROBOT_SECRET,
    );
    let mut py = Command::new(&python);
    py.arg("-c").arg(&script).env_remove("CURL_CA_BUNDLE");
    match t.ca() {
        Some(ca) => py.env("REQUESTS_CA_BUNDLE", ca),
        None => py.env_remove("REQUESTS_CA_BUNDLE"),
    };
    let out = ok(py.output().unwrap(), "oras push/pull with Basic auth");
    assert!(out.starts_with("201"), "{out}");
    assert_eq!(
        std::fs::read(dir.join("pulled/notes.txt")).unwrap(),
        b"release notes"
    );
}

/// `curl` over HTTPS with the test CA; `(http version, status)` or the
/// error.
fn curl(ca: &Path, args: &[&str], url: &str) -> Result<(String, u16), String> {
    let out = Command::new(require("curl"))
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    let s = text(&out.stdout);
    let (v, code) = s.split_once(' ').ok_or_else(|| s.clone())?;
    Ok((v.to_owned(), code.parse().map_err(|_| s.clone())?))
}

#[test]
fn real_clients_authenticate_over_tls_and_a_renewed_certificate_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), ca.pem()).unwrap();
    let (cert, key) = ca.leaf(&["127.0.0.1", "localhost"]);
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let config = auth_config(dir.path());
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert_file.display().to_string(),
        key_file.display().to_string()
    ));
    std::fs::write(&config, toml).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(server.scheme, "https");
    let ca_file = certs.join("ca.crt");
    let base = format!("{}/v2/", server.url());

    // HTTP/2 by ALPN, HTTP/1.1 too; the challenge sends clients to https.
    assert_eq!(curl(&ca_file, &["--http2"], &base), Ok(("2".into(), 401)));
    assert_eq!(
        curl(&ca_file, &["--http1.1"], &base),
        Ok(("1.1".into(), 401))
    );
    let headers = run_text(
        Command::new("curl")
            .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
            .arg(&ca_file)
            .arg(&base),
    );
    let realm = format!("realm=\"https://{}/token\"", server.host());
    assert!(headers.contains(&realm), "{headers}");
    // Plain HTTP on the HTTPS port: a 400 that says what to do.
    let plain = Command::new("curl")
        .args(["-sS", &format!("http://{}/v2/", server.host())])
        .output()
        .unwrap();
    assert!(
        text(&plain.stdout).contains("use https://"),
        "{}{}",
        text(&plain.stdout),
        text(&plain.stderr)
    );

    clients_against(
        &server,
        &Transport {
            certs: Some(certs.clone()),
        },
        dir.path(),
    );

    // A renewal: the new certificate also names renewed.test; it is served
    // within a few seconds, without a restart.
    let renewed_url = format!("https://renewed.test:{}/v2/", server.addr.port());
    let resolve = format!("renewed.test:{}:127.0.0.1", server.addr.port());
    assert!(
        curl(&ca_file, &["--resolve", &resolve], &renewed_url).is_err(),
        "the first certificate does not name renewed.test"
    );
    let (cert, key) = ca.leaf(&["127.0.0.1", "renewed.test"]);
    for (file, pem) in [(&key_file, key), (&cert_file, cert)] {
        let tmp = file.with_extension("new");
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, file).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(&ca_file, &["--resolve", &resolve], &renewed_url).is_err() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken renewal is not: the last good certificate stays.
    std::fs::write(&cert_file, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        curl(&ca_file, &["--resolve", &resolve], &renewed_url),
        Ok(("2".into(), 401)),
        "a broken certificate file must not replace the good one"
    );
}

#[test]
fn real_clients_authenticate_over_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(server.scheme, "http");
    clients_against(&server, &Transport { certs: None }, dir.path());
}
