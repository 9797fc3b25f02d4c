#!/usr/bin/env python3
"""Auth benchmark: what token auth costs `berth serve`, side by side in one
run on 127.0.0.1 — manifest GET by tag with a bearer token vs berth without
auth vs Debian's docker-registry 2.8.2 with htpasswd (bcrypt) auth, which
checks the password on every request; and `/token` issuance for a robot
(warm credential cache, and the first, argon2-verified one). Writes the
table to docs/benchmarks.md. A benchmark, not a test: it asserts nothing.

    python3 bench/auth.py            # builds berth --release first
    BERTH_BIN=target/release/berth python3 bench/auth.py

Needs: apt-get install -y wrk docker-registry apache2-utils curl
"""

import base64
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchdoc import write_section
from registry import start_docker_registry, wrk

ROOT = Path(__file__).resolve().parent.parent
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
ROBOT, SECRET = "robot$team+ci", "bench-secret"


# What the runs so far taught, kept with the table each run rewrites.
NOTES = """
Notes:

- A token's signature is verified once and remembered until it expires, and a login the credential cache has seen skips hashing: the first version of this run (every request verifying Ed25519, every login hashing) gave 0.48× the unauthenticated rate and 1 GiB RSS after a burst of 64 concurrent first logins (argon2id, 19 MiB each); now at most two hashes run at once.
- Since 2026-11-30 every request with a robot's token also re-checks the robot against the current accounts (so disabling, deleting or rotating it ends its tokens at once): one `RwLock` read and a map lookup. The first run with it gave 0.99×, against 0.94× on 2026-11-29 without it.
- Cold tokens: a secret stored as an argon2id hash (PHC string, m = 19 MiB, t = 2) took 19.0–21.9 ms for its first token in the 2026-11-29 runs; a secret given in plain text in its file is kept as a sha256 digest (under 1 ms, the HTTP round trip included).
- The ratio to berth without auth moves with this machine's noise: 0.94×, 1.11× and 0.69× in three runs of the same code on 2026-11-29.
"""


def need(*programs):
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        sys.exit(f"bench: missing {' '.join(missing)}: apt-get install -y wrk docker-registry apache2-utils curl")


def request(method, url, data=b"", headers=None):
    req = urllib.request.Request(url, data=data if method in ("POST", "PUT") else None,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def push_manifest(base, repo, headers):
    """A config blob and a manifest tagged `latest` in `repo`; headers
    (authorization) for every request."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    d = "sha256:" + hashlib.sha256(config).hexdigest()
    s, h, b = request("POST", f"{base}/v2/{repo}/blobs/uploads/", b"", headers)
    assert s == 202, (s, b)
    loc = h.get("Location") or h.get("location")
    loc = loc if loc.startswith("http") else base + loc
    sep = "&" if "?" in loc else "?"
    s, _, b = request("PUT", f"{loc}{sep}digest={d}", config,
                      {**headers, "Content-Type": "application/octet-stream"})
    assert s == 201, (s, b)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": len(config)},
        "layers": []}).encode()
    s, _, b = request("PUT", f"{base}/v2/{repo}/manifests/latest", manifest,
                      {**headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert s == 201, (s, b)


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_berth(binary, work, config=None):
    args = [binary, "serve", "--listen", "127.0.0.1:0", "--data", str(work / "data")]
    if config:
        args += ["--config", str(config)]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "RUST_LOG": "warn"})
    m = re.search(r"http://(\S+)", p.stdout.readline())
    return p, "http://" + m.group(1)


def main():
    need("wrk", "docker-registry", "htpasswd", "curl")
    binary = os.environ.get("BERTH_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "berth"], cwd=ROOT, check=True)
        binary = str(ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "berth")
    work = Path(tempfile.mkdtemp(prefix="berth-bench-auth-"))
    procs = []
    try:
        (work / "robot").write_text(SECRET)
        config = work / "serve.toml"
        config.write_text(f"""[auth]
service = "bench"

[[auth.projects]]
name = "team"

[[auth.robots]]
name = "{ROBOT}"
secret_file = "{work / 'robot'}"
permissions = [{{ repositories = ["team/*"], actions = ["pull", "push"] }}]
""")
        # berth without auth.
        open_dir = work / "open"
        open_dir.mkdir()
        p, open_base = start_berth(binary, open_dir)
        procs.append(p)
        push_manifest(open_base, "team/app", {})
        # berth with auth: the first token pays argon2; later ones hit the
        # credential cache.
        auth_dir = work / "auth"
        auth_dir.mkdir()
        p, auth_base = start_berth(binary, auth_dir, config)
        procs.append(p)
        token_url = f"{auth_base}/token?service=bench&scope=repository:team/app:pull,push"
        t0 = time.perf_counter()
        s, _, body = request("GET", token_url, headers={"Authorization": basic(ROBOT, SECRET)})
        first_token_ms = (time.perf_counter() - t0) * 1000
        assert s == 200, body
        push_token = json.loads(body)["token"]
        push_manifest(auth_base, "team/app", {"Authorization": f"Bearer {push_token}"})
        s, _, body = request("GET", token_url.replace("pull,push", "pull"),
                             headers={"Authorization": basic(ROBOT, SECRET)})
        pull_token = json.loads(body)["token"]
        # docker-registry with htpasswd.
        htpasswd = work / "htpasswd"
        subprocess.run(["htpasswd", "-Bbc", str(htpasswd), "bench", "bench-pw"], check=True,
                       capture_output=True)
        dr, dr_host = start_docker_registry(work, htpasswd)
        dr_base = f"http://{dr_host}"
        procs.append(dr.p)
        push_manifest(dr_base, "team/app", {"Authorization": basic("bench", "bench-pw")})

        rows = {"open": [], "auth": [], "dr": [], "token": []}
        for i in range(RUNS):
            print(f"bench: run {i + 1}/{RUNS}", file=sys.stderr)
            rows["open"].append(wrk(f"{open_base}/v2/team/app/manifests/latest"))
            rows["auth"].append(wrk(f"{auth_base}/v2/team/app/manifests/latest",
                                    f"Authorization: Bearer {pull_token}"))
            rows["dr"].append(wrk(f"{dr_base}/v2/team/app/manifests/latest",
                                  f"Authorization: {basic('bench', 'bench-pw')}"))
            rows["token"].append(wrk(token_url, f"Authorization: {basic(ROBOT, SECRET)}"))
        med = {k: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v))
               for k, v in rows.items()}
        rss = rss_kib(procs[1].pid) / 1024
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    (o_rps, o_p99), (a_rps, a_p99) = med["open"], med["auth"]
    (d_rps, d_p99), (t_rps, t_p99) = med["dr"], med["token"]
    section = f"""## Auth: what token auth costs berth serve

Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, everything on 127.0.0.1 in one run: wrk 2 threads, 64 connections, {WRK_SECONDS} s, median of {RUNS} runs. berth with `[auth]` (one project, one robot) is asked with a pull token from its `/token`; docker-registry 2.8.2 (Debian) with htpasswd auth is asked with Basic credentials, which it checks with bcrypt (cost 5, `htpasswd -B`) on every request, as it has no tokens of its own.

Reproduce: `python3 bench/auth.py` (needs `apt-get install -y wrk docker-registry apache2-utils curl`).

| measure | berth with auth | peer | ratio | target |
|---|---|---|---|---|
| manifest GET by tag, requests/s | {a_rps:,.0f} | {o_rps:,.0f}, berth without auth | {a_rps / o_rps:.2f}× | ≥ 0.9× |
| … p99 latency | {a_p99:.2f} ms | {o_p99:.2f} ms, berth without auth | | < 10 ms |
| manifest GET by tag, requests/s | {a_rps:,.0f} | {d_rps:,.0f}, docker-registry + htpasswd (p99 {d_p99:.1f} ms) | {a_rps / d_rps:.1f}× | |
| `/token` for a robot, warm credential cache, tokens/s | {t_rps:,.0f} (p99 {t_p99:.2f} ms) | — | | ≥ 5,000 |
| first token (the robot's secret checked, then cached) | {first_token_ms:.1f} ms | — | | |
| RSS after the run, with auth | {rss:.1f} MiB | — | | ≤ 30 MiB |
{NOTES}"""
    print(section)
    write_section("Auth:", section)


if __name__ == "__main__":
    main()
