//! `berth-tests` holds the end-to-end suites (in `tests/e2e/`) that start the
//! real `berth` binary and real third-party programs — skopeo, umoci, podman,
//! containerd, the oras Python SDK — against it. This library part owns the
//! harness those suites share: finding the binary, starting a server on
//! `127.0.0.1:0` and reading the address it printed, locating peer programs
//! with a failure message that names their install step, and a small HTTP
//! client for asserting on the wire.
//!
//! Tests here reach nothing but 127.0.0.0/8 and network namespaces they
//! create and delete themselves.

pub mod forge;
pub mod postgres;
pub mod s3;
pub mod webdriver;

/// A certificate authority made at test time, and server certificates it
/// signs, for tests over TLS.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA.
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses):
    /// `(certificate PEM, key PEM)`.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth test server");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The install step printed when a peer program is missing.
pub const INSTALL_HINT: &str = "run ./scripts/test (it installs the test programs), or: apt-get install -y skopeo umoci podman containerd";

/// Path to the `berth` binary under test: `$BERTH_BIN`, or the one cargo
/// built next to this test executable.
pub fn berth_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/berth
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("berth"))
        .expect("test executable lives in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first with `cargo build -p berth` (./scripts/test does)",
        bin.display()
    );
    bin
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Find `program` on PATH, or fail the test with the install step.
pub fn require(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{program} is not installed: {INSTALL_HINT}");
}

/// Run a command to completion; fail the test with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Spawn `cmd` (stdin closed, stdout piped; stderr as the caller set it)
/// and wait for the first line it prints on stdout, as the servers print
/// the address they bound: the child and that line.
pub fn spawn_first_line(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{cmd:?} printed nothing: {e}"));
    (child, line)
}

/// Run a command and return its stdout as text.
pub fn run_text(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("utf-8 output")
}

/// A running `berth serve` process.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    /// `http` or `https`, as it said.
    pub scheme: String,
    /// The address it bound.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data: PathBuf,
}

impl Server {
    /// Start `berth serve --listen 127.0.0.1:0 --data <data>` with extra
    /// arguments and wait for it to print its address.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        Self::start_with_stderr("127.0.0.1:0", data, extra, "warn", Stdio::inherit())
    }

    /// [`Server::start`] on a given address (a restart on the same one).
    pub fn start_at(listen: &str, data: &Path, extra: &[&str]) -> Self {
        Self::start_with_stderr(listen, data, extra, "warn", Stdio::inherit())
    }

    /// [`Server::start`] logging at `info` (the audit lines included) into
    /// the file `log`.
    pub fn start_logging(data: &Path, extra: &[&str], log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        Self::start_with_stderr("127.0.0.1:0", data, extra, "info", Stdio::from(file))
    }

    fn start_with_stderr(
        listen: &str,
        data: &Path,
        extra: &[&str],
        level: &str,
        stderr: Stdio,
    ) -> Self {
        let (child, line) = spawn_first_line(
            Command::new(berth_bin())
                .arg("serve")
                .arg("--listen")
                .arg(listen)
                .arg("--data")
                .arg(data)
                .args(extra)
                .env("RUST_LOG", level)
                .stderr(stderr),
        );
        let (scheme, rest) = line
            .split_once("listening on ")
            .and_then(|(_, r)| r.split_once("://"))
            .unwrap_or_else(|| panic!("berth serve printed no address: {line:?}"));
        let addr = rest
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("berth serve printed no address: {line:?}"));
        Self {
            child: Some(child),
            scheme: scheme.to_owned(),
            addr,
            data: data.to_owned(),
        }
    }

    /// `http://<addr>` (or `https://`).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `<addr>` as registry host for clients (`127.0.0.1:PORT`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Kill the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop with SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.terminate();
        self.wait()
    }

    /// Send SIGTERM without waiting.
    pub fn terminate(&self) {
        let c = self.child.as_ref().expect("server is running");
        run(Command::new("kill").arg("-TERM").arg(c.id().to_string()));
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("poll berth serve").is_none())
    }

    /// Wait for the process to exit; returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server is running");
        c.wait().expect("wait for berth serve")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP response for assertions.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The first OCI error code in the body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Send one HTTP request to a loopback server; non-2xx statuses are
/// returned, not raised.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    try_http(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Like [`http`], but a transport failure (the server is gone) is an `Err`.
pub fn try_http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    // Loopback, or the network namespaces a test creates itself on
    // 10.98.0.0/16 (tests/tests/e2e/slow_links.rs).
    assert!(
        url.starts_with("http://127.") || url.starts_with("http://10.98."),
        "tests talk to loopback and their own namespaces only: {url}"
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client.request(method.clone(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !(body.is_empty() && matches!(method.as_str(), "GET" | "HEAD" | "DELETE")) {
        req = req.body(body.to_vec());
    }
    let resp = req.send().map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    })?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = if method == reqwest::Method::HEAD {
        Vec::new()
    } else {
        resp.bytes()
            .map_err(|e| format!("reading the body: {e}"))?
            .to_vec()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    berth_oci::Digest::sha256(data).to_string()
}

/// Make an OCI layout at `dir` with image `tag` of `layers` files (each a
/// separate layer, `size` random bytes), using umoci. Returns the layout
/// path.
pub fn umoci_image(dir: &Path, tag: &str, layers: usize, size: usize) -> PathBuf {
    require("umoci");
    let layout = dir.join("layout");
    let img = format!("{}:{tag}", layout.display());
    if !layout.exists() {
        run(Command::new("umoci")
            .arg("init")
            .arg("--layout")
            .arg(&layout));
    }
    run(Command::new("umoci").args(["new", "--image", &img]));
    for i in 0..layers {
        let root = dir.join(format!("layer{i}"));
        std::fs::create_dir_all(root.join("data")).expect("mkdir");
        let content: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
        std::fs::write(root.join("data").join(format!("file{i}")), content).expect("write");
        run(Command::new("umoci")
            .args(["insert", "--image", &img])
            .arg(root.join("data"))
            .arg(format!("/data{i}")));
    }
    run(Command::new("umoci").args(["config", "--image", &img, "--config.cmd", "/bin/true"]));
    layout
}

/// Send raw request bytes over TCP and return (status, body): for paths that
/// an HTTP client would normalise (`/v2/../x`) or headers it would fix.
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    use std::io::Write;
    assert!(addr.ip().is_loopback(), "tests talk to loopback only");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(request).expect("send");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = match text.find("\r\n\r\n") {
        Some(i) => resp[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

/// A `podman` command with its storage under `root` (vfs; runc with
/// cgroupfs, which work in this sandbox).
pub fn podman(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(require("podman"));
    c.arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
        ])
        .args(args);
    c
}

/// The limits every container started here needs: this machine's hard
/// limits are below podman's defaults.
pub const PODMAN_LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Run `image` once with podman (storage under `root`, no network) and
/// return what it printed.
pub fn podman_run(root: &Path, image: &str) -> String {
    podman_run_args(root, &[image])
}

/// [`podman_run`] with `args` (run flags, the image, its command).
pub fn podman_run_args(root: &Path, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm", "--network", "none"];
    all.extend(PODMAN_LIMITS);
    all.extend_from_slice(args);
    run_text(&mut podman(root, &all))
}

/// A containerd of the test's own: own root, state, socket, native
/// snapshotter, no CRI.
pub struct Containerd {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl Containerd {
    /// Start one with its files under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "", true)
    }

    /// Start one with `extra` config appended; `no_cri` disables the CRI
    /// plugin.
    pub fn start_with(dir: &Path, extra: &str, no_cri: bool) -> Self {
        require("containerd");
        require("ctr");
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
{disabled}
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
{extra}"#,
                disabled = if no_cri {
                    r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#
                } else {
                    ""
                },
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = socket.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not create its socket; log: {}",
                std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, socket }
    }

    /// Its gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A `ctr` command talking to it.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.socket);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Call CRI's `ImageService.PullImage` — what kubelet calls — on the
/// containerd socket `socket`, by hand-encoded gRPC over HTTP/2 (the
/// request is `PullImageRequest{image: ImageSpec{image}}`, field 1 in
/// both, as the CRI API defines it). Returns the image ref containerd
/// reports, or the gRPC error.
pub fn cri_pull_image(socket: &Path, image: &str) -> Result<String, String> {
    cri_pull_image_with_auth(socket, image, None)
}

/// [`cri_pull_image`] with the credentials kubelet passes from an image
/// pull secret (`PullImageRequest.auth`, field 2: `AuthConfig{username = 1,
/// password = 2}`).
pub fn cri_pull_image_with_auth(
    socket: &Path,
    image: &str,
    auth: Option<(&str, &str)>,
) -> Result<String, String> {
    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        varint(bytes.len(), out);
        out.extend_from_slice(bytes);
    }
    let mut spec = Vec::new();
    field(0x0a, image.as_bytes(), &mut spec);
    let mut msg = Vec::new();
    field(0x0a, &spec, &mut msg);
    if let Some((user, pass)) = auth {
        let mut config = Vec::new();
        field(0x0a, user.as_bytes(), &mut config);
        field(0x12, pass.as_bytes(), &mut config);
        field(0x12, &config, &mut msg);
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        // A containerd still busy starting its plugins on a loaded machine
        // can refuse for a moment: a few tries over ten seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match tokio::net::UnixStream::connect(socket).await {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("{} ({})", err(&e), socket.display())),
            }
        };
        let (client, conn) = h2::client::handshake(stream).await.map_err(|e| err(&e))?;
        tokio::spawn(conn);
        let mut client = client.ready().await.map_err(|e| err(&e))?;
        let req = http::Request::builder()
            .method("POST")
            .uri("http://localhost/runtime.v1.ImageService/PullImage")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| err(&e))?;
        let (resp, mut send) = client.send_request(req, false).map_err(|e| err(&e))?;
        send.send_data(bytes::Bytes::from(frame), true)
            .map_err(|e| err(&e))?;
        let resp = resp.await.map_err(|e| err(&e))?;
        let mut body = resp.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| err(&e))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|e| err(&e))?
            .unwrap_or_default();
        let status = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        if status != "0" {
            let message = trailers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            return Err(format!("grpc-status {status}: {message}"));
        }
        // PullImageResponse{image_ref = 1}: skip the 5-byte frame header,
        // the tag and the (one-byte, for a digest ref) length.
        let msg = data.get(5..).ok_or("empty response")?;
        match msg {
            [0x0a, len, rest @ ..] if (*len as usize) <= rest.len() => {
                Ok(String::from_utf8_lossy(&rest[..*len as usize]).into_owned())
            }
            _ => Err(format!("unexpected response {msg:?}")),
        }
    })
}

/// A containerd with its CRI plugin (as kubelet talks to it): own root,
/// state and socket, native snapshotter, registry hosts from `hosts_dir`.
pub fn start_cri_containerd(dir: &Path, hosts_dir: &Path) -> Containerd {
    Containerd::start_with(
        dir,
        &format!(
            r#"[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{hosts}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}/bin"
    conf_dir = "{cni}/conf"
"#,
            hosts = hosts_dir.display(),
            cni = dir.join("cni").display()
        ),
        false,
    )
}

#[cfg(test)]
mod tidy {
    //! Repository-wide checks that are cheaper as a test than as review.

    use std::path::Path;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn every_module_opens_with_a_doc_paragraph() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let mut files = Vec::new();
        for krate in [
            "oci", "builder", "registry", "mirror", "bumper", "cli", "tests",
        ] {
            rust_files(&root.join(krate).join("src"), &mut files);
            rust_files(&root.join(krate).join("tests"), &mut files);
            rust_files(
                &root.join(krate).join("fuzz").join("fuzz_targets"),
                &mut files,
            );
        }
        assert!(
            files.len() > 20,
            "found only {} Rust files under {}",
            files.len(),
            root.display()
        );
        let undocumented: Vec<String> = files
            .iter()
            .filter(|f| {
                let text = std::fs::read_to_string(f).expect("read source");
                !text
                    .lines()
                    .find(|l| !l.trim().is_empty() && !l.starts_with("#!["))
                    .is_some_and(|l| l.starts_with("//!"))
            })
            .map(|f| f.display().to_string())
            .collect();
        assert!(
            undocumented.is_empty(),
            "these modules do not open with a `//!` paragraph saying what they own: {undocumented:#?}"
        );
    }
}

/// Upload `blob` to `server` as a blob of `repo`; its digest.
pub fn put_blob(server: &Server, repo: &str, blob: &[u8]) -> String {
    let digest = sha256(blob);
    let start = http(
        "POST",
        &format!("{}/v2/{repo}/blobs/uploads/", server.url()),
        &[],
        b"",
    );
    let location = start.header("Location").unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http(
        "PUT",
        &format!("{}{location}{sep}digest={digest}", server.url()),
        &[("Content-Type", "application/octet-stream")],
        blob,
    );
    assert_eq!(put.status, 201);
    digest
}

/// Put manifest `body` (of `media_type`) as `reference` of `repo`; its digest.
pub fn put_manifest(
    server: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let r = http(
        "PUT",
        &format!("{}/v2/{repo}/manifests/{reference}", server.url()),
        &[("Content-Type", media_type)],
        body,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    sha256(body)
}

/// A `git daemon` serving the bare repositories under a directory, with
/// pushes enabled; killed on drop.
#[derive(Debug)]
pub struct GitDaemon {
    child: Child,
    /// `git://127.0.0.1:PORT`.
    pub url: String,
}

impl GitDaemon {
    /// Serve the repositories under `base`.
    pub fn start(base: &Path) -> Self {
        require("git");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .arg("daemon")
            .arg(format!("--base-path={}", base.display()))
            .args([
                "--export-all",
                "--enable=receive-pack",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("git://127.0.0.1:{port}"),
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request a [`Receiver`] got: headers (names lowercased) and body.
pub type Received = (std::collections::BTreeMap<String, String>, Vec<u8>);

/// A webhook receiver on loopback that records each request it gets (its
/// headers, lowercased, and body) and answers 200.
#[derive(Debug)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Start one.
    pub fn start() -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = std::collections::BTreeMap::new();
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                sink.lock().unwrap().push((headers, body));
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Self { url, got }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Wait up to `secs` for a request whose body contains `needle`.
    pub fn wait_for(&self, needle: &str, secs: u64) -> Received {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(hit) = self
                .received()
                .into_iter()
                .find(|(_, b)| String::from_utf8_lossy(b).contains(needle))
            {
                return hit;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no webhook with {needle:?} within {secs} s; got {:?}",
                self.received()
                    .iter()
                    .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
