//! Crash safety: `kill -9` the server while 20 clients upload random blobs
//! (chunked and monolithic). After a restart on the same data directory,
//! every acknowledged blob is intact, nothing partial is visible (on the
//! wire or on disk), an upload session acknowledged before the crash can be
//! resumed, and the server starts cleanly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_tests::{Server, http, sha256, try_http};

/// Upload `data` to `repo`; `chunked` uses POST + 2 PATCH + PUT. Returns
/// Ok(true) when the registry acknowledged it (201).
pub(crate) fn upload(url: &str, repo: &str, data: &[u8], chunked: bool) -> Result<bool, String> {
    let d = sha256(data);
    if !chunked {
        let r = try_http(
            "POST",
            &format!("{url}/v2/{repo}/blobs/uploads/?digest={d}"),
            &[],
            data,
        )?;
        return Ok(r.status == 201);
    }
    let r = try_http("POST", &format!("{url}/v2/{repo}/blobs/uploads/"), &[], b"")?;
    let mut loc = r.header("location").ok_or("no location")?.to_owned();
    let half = data.len() / 2;
    for (start, part) in [(0, &data[..half]), (half, &data[half..])] {
        let range = format!("{}-{}", start, start + part.len() - 1);
        let r = try_http(
            "PATCH",
            &format!("{url}{loc}"),
            &[("Content-Range", &range)],
            part,
        )?;
        if r.status != 202 {
            return Err(format!("PATCH answered {}", r.status));
        }
        loc = r.header("location").ok_or("no location")?.to_owned();
    }
    let r = try_http("PUT", &format!("{url}{loc}?digest={d}"), &[], b"")?;
    Ok(r.status == 201)
}

/// A blob pushed: `(repository, digest)`.
pub(crate) type Pushed = (String, String);

/// 20 clients push blobs made by `blob` to `crash/w<i>` (chunked and
/// monolithic in turn) until `server` is killed with SIGKILL after
/// `run_for`: the `(repo, digest)`s acknowledged, and all attempted.
pub(crate) fn push_until_killed(
    server: &mut Server,
    run_for: Duration,
    blob: fn() -> Vec<u8>,
) -> (Vec<Pushed>, Vec<Pushed>) {
    let url = server.url();
    let acked: Arc<Mutex<Vec<Pushed>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<Pushed>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..20)
        .map(|i| {
            let (acked, attempted, stop, url) =
                (acked.clone(), attempted.clone(), stop.clone(), url.clone());
            std::thread::spawn(move || {
                let repo = format!("crash/w{i}");
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let data = blob();
                    let d = sha256(&data);
                    attempted.lock().unwrap().push((repo.clone(), d.clone()));
                    match upload(&url, &repo, &data, (i + n) % 2 == 0) {
                        Ok(true) => acked.lock().unwrap().push((repo.clone(), d)),
                        Ok(false) => panic!("upload refused before the crash"),
                        Err(_) => return, // the server is gone
                    }
                    n += 1;
                }
            })
        })
        .collect();
    // Let uploads get going, then crash the server mid-flight.
    std::thread::sleep(run_for);
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker thread");
    }
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    (acked, attempted)
}

/// After a crash and restart: every acknowledged `(repo, digest)` is
/// served whole, and every attempted one is either whole or absent.
pub(crate) fn check_after_crash(url: &str, acked: &[Pushed], attempted: &[Pushed]) {
    for (repo, d) in acked {
        let r = http("GET", &format!("{url}/v2/{repo}/blobs/{d}"), &[], b"");
        assert_eq!(r.status, 200, "acknowledged blob {repo}@{d} is gone");
        assert_eq!(
            &sha256(&r.body),
            d,
            "acknowledged blob {repo}@{d} is corrupt"
        );
    }
    for (repo, d) in attempted {
        let r = http("GET", &format!("{url}/v2/{repo}/blobs/{d}"), &[], b"");
        assert!(
            r.status == 200 || r.status == 404,
            "{repo}@{d}: {}",
            r.status
        );
        if r.status == 200 {
            assert_eq!(
                &sha256(&r.body),
                d,
                "a partial blob is visible at {repo}@{d}"
            );
        }
    }
}

#[test]
fn kill_9_during_concurrent_uploads_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = Server::start(&data_dir, &[]);
    let url = server.url();

    // A session with one acknowledged chunk, to resume after the crash.
    let r = http(
        "POST",
        &format!("{url}/v2/crash/resume/blobs/uploads/"),
        &[],
        b"",
    );
    let loc = r.header("location").unwrap().to_owned();
    let resume_data: Vec<u8> = (0..100_000).map(|_| rand::random::<u8>()).collect();
    let r = http(
        "PATCH",
        &format!("{url}{loc}"),
        &[("Content-Range", "0-49999")],
        &resume_data[..50_000],
    );
    assert_eq!(r.status, 202);

    let (acked, attempted) = push_until_killed(&mut server, Duration::from_millis(1500), || {
        let size = 64 * 1024 + (rand::random::<u32>() as usize % (2 << 20));
        (0..size).map(|_| rand::random::<u8>()).collect()
    });
    assert!(
        acked.len() >= 5,
        "too few uploads finished before the crash: {}",
        acked.len()
    );
    assert!(
        attempted.len() > acked.len(),
        "no upload was in flight at the crash"
    );

    // It restarts cleanly on the same data.
    let server = Server::start(&data_dir, &[]);
    let url = server.url();
    check_after_crash(&url, &acked, &attempted);
    // On disk, every published blob hashes to its name.
    let mut published = 0;
    for alg_dir in std::fs::read_dir(data_dir.join("blobs/sha256")).unwrap() {
        for f in std::fs::read_dir(alg_dir.unwrap().path()).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().into_string().unwrap();
            let bytes = std::fs::read(f.path()).unwrap();
            assert_eq!(
                sha256(&bytes),
                format!("sha256:{name}"),
                "partial blob file {name}"
            );
            published += 1;
        }
    }
    assert!(published >= acked.len());

    // The acknowledged part of the earlier session survived; finish it.
    let r = http("GET", &format!("{url}{loc}"), &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), Some("0-49999"));
    let d = sha256(&resume_data);
    let r = http(
        "PUT",
        &format!("{url}{loc}?digest={d}"),
        &[("Content-Range", "50000-99999")],
        &resume_data[50_000..],
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = http("GET", &format!("{url}/v2/crash/resume/blobs/{d}"), &[], b"");
    assert_eq!(sha256(&r.body), d);
}

#[test]
fn sigterm_drains_an_in_flight_upload_then_exits_cleanly() {
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = Server::start(&data_dir, &[]);
    let r = http(
        "POST",
        &format!("{}/v2/drain/blobs/uploads/", server.url()),
        &[],
        b"",
    );
    let loc = r.header("location").unwrap().to_owned();
    let body: Vec<u8> = (0..1_000_000).map(|_| rand::random::<u8>()).collect();
    let d = sha256(&body);

    // Half the body is in flight when SIGTERM arrives.
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "PUT {loc}?digest={d} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.host(),
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&body[..500_000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.terminate();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.is_running(),
        "the server quit with a request in flight"
    );
    // It no longer accepts new connections.
    assert!(try_http("GET", &format!("{}/v2/", server.url()), &[], b"").is_err());

    conn.write_all(&body[500_000..]).unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let status = server.wait();
    assert!(status.success(), "berth serve exited with {status}");

    // The drained upload was published.
    let server = Server::start(&data_dir, &[]);
    let r = http(
        "GET",
        &format!("{}/v2/drain/blobs/{d}", server.url()),
        &[],
        b"",
    );
    assert_eq!(sha256(&r.body), d);
}
