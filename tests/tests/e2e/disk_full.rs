//! A full disk is a fault `berth serve` survives: its data directory on a
//! 48 MiB tmpfs (mounted by the test, which needs root as `.ci/run` has), a
//! 64 MiB push with skopeo is refused with `507 INSUFFICIENT_STORAGE`
//! naming the cause, its bytes are released at once, a small push right
//! after succeeds, a chunked upload keeps what was acknowledged and
//! resumes, a restart is clean and everything acknowledged before pulls
//! intact. Then the free-space floor (`[storage] min_free_mib`) refuses
//! uploads before the disk is full, and once a collection frees space
//! pushes work again by themselves.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::{Server, berth_bin, http, require, umoci_image};

use crate::clients::layout_digest;

/// A tmpfs of `mib` MiB at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs at {} needs root (run the tests as root, as .ci/run does): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }

    fn free_mib(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1M"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn skopeo_push(layout: &Path, dest: &str) -> std::process::Output {
    Command::new(require("skopeo"))
        .args([
            "copy",
            "--quiet",
            "--retry-times=0",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:x", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .unwrap()
}

fn pulls_as(server: &Server, dir: &Path, repo_tag: &str, want: &str) {
    let out_dir = dir.join(format!("pull-{}", repo_tag.replace([':', '/'], "-")));
    let out = Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{repo_tag}", server.host()))
        .arg(format!("oci:{}:x", out_dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{repo_tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(layout_digest(&out_dir, "x"), want);
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn serve(data: &Path, config: &Path, body: &str) -> Server {
    std::fs::write(config, body).unwrap();
    Server::start(data, &["--config", config.to_str().unwrap()])
}

#[test]
fn a_full_disk_refuses_the_push_frees_its_bytes_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("mnt"), 48);
    let data = fs.0.join("data");
    let config = dir.path().join("serve.toml");
    let mut server = serve(
        &data,
        &config,
        "[storage]\nmin_free_mib = 0\n[gc]\ngrace_minutes = 0\n",
    );
    let host = server.host();

    let a = umoci_image(&dir.path().join("a"), "x", 1, 1_000_000);
    let out = skopeo_push(&a, &format!("{host}/team/app:a"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let free_before = fs.free_mib();

    // 64 MiB of random bytes into 48 MiB: refused, with the cause.
    let big = umoci_image(&dir.path().join("big"), "x", 1, 64 << 20);
    let out = skopeo_push(&big, &format!("{host}/team/app:big"));
    assert!(!out.status.success(), "a 64 MiB push fit in 48 MiB");
    let said = text(&out.stderr);
    assert!(
        said.contains("disk is full") || said.contains("507") || said.contains("INSUFFICIENT"),
        "skopeo shows the cause: {said}"
    );
    // Its bytes are released: the space is back, nothing in uploads/.
    let free_after = fs.free_mib();
    assert!(
        free_after + 2 >= free_before,
        "a failed push kept its bytes: {free_before} MiB free before, {free_after} after"
    );
    let held: u64 = std::fs::read_dir(data.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(held, 0, "unacknowledged bytes stay in uploads/");

    // A chunked upload keeps what was acknowledged and resumes after.
    let url = server.url();
    let start = http(
        "POST",
        &format!("{url}/v2/team/app/blobs/uploads/"),
        &[],
        b"",
    );
    let location = start.header("Location").unwrap().to_owned();
    let one = vec![1u8; 1 << 20];
    let patch = |from: usize, body: &[u8]| {
        http(
            "PATCH",
            &format!("{url}{location}"),
            &[
                ("Content-Type", "application/octet-stream"),
                (
                    "Content-Range",
                    &format!("{from}-{}", from + body.len() - 1),
                ),
            ],
            body,
        )
    };
    assert_eq!(patch(0, &one).status, 202);
    let too_big = vec![2u8; 60 << 20];
    let refused = patch(1 << 20, &too_big);
    assert_eq!(refused.status, 507, "{}", text(&refused.body));
    assert_eq!(refused.error_code(), "INSUFFICIENT_STORAGE");
    let message = refused.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("No space left"), "{message}");
    let status = http("GET", &format!("{url}{location}"), &[], b"");
    assert_eq!(
        status.header("Range"),
        Some("0-1048575"),
        "acknowledged bytes kept"
    );
    assert_eq!(patch(1 << 20, &one).status, 202, "the session resumes");
    assert_eq!(
        http("DELETE", &format!("{url}{location}"), &[], b"").status,
        204
    );

    // A small push right after succeeds, and a restart is clean.
    let b = umoci_image(&dir.path().join("b"), "x", 1, 1_000_000);
    let out = skopeo_push(&b, &format!("{host}/team/app:b"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(server.stop().success());
    let server = Server::start_at(&host, &data, &["--config", config.to_str().unwrap()]);
    pulls_as(&server, dir.path(), "team/app:a", &layout_digest(&a, "x"));
    pulls_as(&server, dir.path(), "team/app:b", &layout_digest(&b, "x"));
    drop(server);

    // The floor: 3 MiB below what is free now. A 4 MiB layer still goes in
    // (free space is checked when an upload starts), then the floor holds:
    // the rest of that push, and the next, are refused.
    let floor = fs.free_mib() - 3;
    let server = serve(
        &data,
        &config,
        &format!("[storage]\nmin_free_mib = {floor}\n[gc]\ngrace_minutes = 0\n"),
    );
    let host = server.host();
    let metrics = text(&http("GET", &format!("{}/metrics", server.url()), &[], b"").body);
    assert!(
        metrics.contains(&format!(
            "berth_registry_storage_floor_bytes {}",
            floor << 20
        )),
        "{metrics}"
    );
    assert!(metrics.contains("berth_registry_storage_free_bytes "));
    let c = umoci_image(&dir.path().join("c"), "x", 1, 4 << 20);
    let d = umoci_image(&dir.path().join("d"), "x", 1, 4 << 20);
    let out = skopeo_push(&c, &format!("{host}/team/app:c"));
    assert!(!out.status.success(), "the floor let a whole push below it");
    let out = skopeo_push(&d, &format!("{host}/team/app:d"));
    assert!(!out.status.success(), "pushed below the floor");
    assert!(
        text(&out.stderr).contains("507 Insufficient Storage"),
        "skopeo shows the status (not the body, for a refused POST): {}",
        text(&out.stderr)
    );
    let refused = http(
        "POST",
        &format!("{}/v2/team/app/blobs/uploads/", server.url()),
        &[],
        b"",
    );
    assert_eq!(refused.status, 507);
    assert_eq!(refused.error_code(), "INSUFFICIENT_STORAGE");
    assert!(
        text(&refused.body).contains("below its floor"),
        "{}",
        text(&refused.body)
    );
    // A collection frees the layer of the push that never finished, and
    // pushes work again with nothing else done.
    let gc = Command::new(berth_bin())
        .args(["admin", "gc", "--registry", &server.url()])
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", text(&gc.stderr));
    let out = skopeo_push(&b, &format!("{host}/team/app:again"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}
