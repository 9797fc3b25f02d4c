//! A real PostgreSQL server for tests: Debian's PostgreSQL (`initdb` and
//! `postgres` from `/usr/lib/postgresql/<version>/bin`), started in a
//! temporary directory on its own port of 127.0.0.1 with trust
//! authentication for the user `berth`, no system service. As root it
//! runs as the `postgres` user (PostgreSQL refuses root). Stopped and
//! deleted on drop; [`PgServer::restart`] stops and starts the same data
//! directory on the same port, as an outage would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The install step named when PostgreSQL is missing.
pub const PG_HINT: &str = "run ./scripts/test (it installs it), or: apt-get install -y postgresql";

/// A running PostgreSQL.
pub struct PgServer {
    running: bool,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("PostgreSQL is not installed: {PG_HINT}"))
}

/// Whether this process runs as root (`id -u` says 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program` with `args`, as the `postgres` user when root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PgServer {
    /// initdb a fresh cluster and start it.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("berth-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown to postgres failed");
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "berth", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Self {
            running: false,
            bin,
            dir,
            port: crate::free_port(),
        };
        server.launch();
        server
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl")
    }

    fn launch(&mut self) {
        let options = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.dir.path().display(),
            self.port
        );
        let log = self.dir.path().join("postgres.log");
        let out = self.pg_ctl(&[
            "-o",
            &options,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "start",
        ]);
        assert!(
            out.status.success(),
            "postgres did not start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "berth",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The connection URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://berth@127.0.0.1:{}/{db}", self.port)
    }

    /// Make a new empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!("t{}", rand::random::<u64>());
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "berth",
            ])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// Stop the server (fast shutdown: clients are disconnected) and wait
    /// until it has; if it will not within a minute (a loaded machine),
    /// stop it at once (immediate shutdown, recovered at the next start).
    pub fn stop(&mut self) {
        if self.running {
            let fast = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
            if !fast.status.success() {
                let now = self.pg_ctl(&["-m", "immediate", "-w", "-t", "60", "stop"]);
                assert!(
                    now.status.success(),
                    "postgres did not stop: {}{}",
                    String::from_utf8_lossy(&fast.stderr),
                    String::from_utf8_lossy(&now.stderr)
                );
            }
            self.running = false;
        }
    }

    /// Stop, then start the same cluster on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            // Never panic here: a test may already be unwinding.
            let fast = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
            if !fast.status.success() {
                let _ = self.pg_ctl(&["-m", "immediate", "-w", "-t", "60", "stop"]);
            }
            self.running = false;
        }
    }
}
