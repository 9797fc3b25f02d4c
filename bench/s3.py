#!/usr/bin/env python3
"""S3 storage benchmark (the S3 section of the registry benchmark): berth
and docker-registry 2.8.2 (its `s3` storage driver), each on its own bucket
of the same SeaweedFS instance, side by side in one run on 127.0.0.1.

- 1 GiB push, monolithic (curl POST + PUT) and chunked (64 MiB PATCHes):
  wall time, bytes SeaweedFS stored per byte pushed (the growth of its
  volume files, which keep deleted data until vacuumed, so a copy shows),
  and berth's S3 requests per push (from its own metrics);
- 1 GiB pull: the registry's blob GET (no redirect) against a plain GET
  of the same object straight from SeaweedFS (the limit);
- manifest GET by tag (wrk, 64 connections);
- berth's peak RSS over the chunked push.

A benchmark, not a test: it asserts nothing. Writes its section of
docs/benchmarks.md.

    BERTH_BIN=target/release/berth python3 bench/s3.py

Needs: apt-get install -y wrk docker-registry curl; SeaweedFS in
/opt/berth-test/seaweedfs (./scripts/test installs it).
"""

import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdoc import write_section
from registry import GIB, ROOT, RUNS, Proc, blob_gets, free_port, need, rss_kib, start_berth, wait_http, wrk

WEED = os.environ.get("BERTH_WEED", "/opt/berth-test/seaweedfs/bin/weed")

# What the runs so far taught, kept with the table each run rewrites.
NOTES = """
Notes:

- docker-registry stores every pushed byte twice: its s3 driver writes an upload under `_uploads/` and copies it to the digest's key at the end (the copy is most of its push time); berth completes the multipart upload where it started and records which digest it holds, so nothing is copied.
- The proxied pull misses its target (first run, 2026-11-30: 0.70× a plain GET from SeaweedFS): on this 2-core machine the registry's extra hop takes CPU from SeaweedFS and curl, which the direct GET does not pay. Sending what the S3 client has already read as one larger chunk (up to 64 of its reads) was tried and measured at 0.69–0.79× in four runs of the pull alone, no better, so it was not kept. With `redirect = true` the client fetches from the object store itself (e2e `s3::blob_gets_redirect_to_presigned_urls_that_clients_follow`), so the limit is the direct GET.
"""
CHUNK = 64 << 20


def free_pair():
    """A free port whose +10000 is free too (SeaweedFS's gRPC)."""
    import socket
    while True:
        p = free_port()
        if p < 55000:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p + 10000))
                return p
            except OSError:
                pass
            finally:
                s.close()


def start_seaweedfs(work):
    data = work / "weed"
    data.mkdir()
    ports = set()
    while len(ports) < 4:
        p = free_pair()
        if all(abs(p - q) not in (0, 10000) for q in ports):
            ports.add(p)
    s3, master, volume, filer = sorted(ports)
    p = Proc("seaweedfs", [WEED, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
                           f"-dir={data}", f"-s3.port={s3}", f"-master.port={master}",
                           f"-volume.port={volume}", f"-filer.port={filer}", "-volume.max=40", "-master.volumeSizeLimitMB=512",
                           "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"],
             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{s3}"
    wait_http(endpoint + "/", timeout=90)
    return p, endpoint, data


def create_bucket(endpoint, bucket):
    for _ in range(120):
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                               f"{endpoint}/{bucket}"], capture_output=True, text=True).stdout
        if code == "200":
            return
        time.sleep(0.5)
    sys.exit(f"bench: cannot create bucket {bucket}")


def volume_bytes(data):
    """Bytes in SeaweedFS's volume data files (.dat)."""
    return sum(f.stat().st_size for f in data.rglob("*.dat"))


def start_berth_s3(work, binary, endpoint):
    (work / "s3-key").write_text("k")
    (work / "s3-secret").write_text("s")
    cfg = work / "berth-s3.toml"
    cfg.write_text(f"""[storage.s3]
bucket = "berth"
endpoint = "{endpoint}"
path_style = true
prefix = "registry/"
access_key_id_file = "{work / 's3-key'}"
secret_access_key_file = "{work / 's3-secret'}"
""")
    return start_berth(work, binary, "--config", str(cfg))


def start_docker_registry_s3(work, endpoint):
    port = free_port()
    cfg = work / "dreg-s3.yml"
    cfg.write_text(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    region: us-east-1
    regionendpoint: {endpoint}
    bucket: dreg
    accesskey: k
    secretkey: s
    secure: false
    rootdirectory: /registry
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: 127.0.0.1:{port}
""")
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    log = open(work / "docker-registry.log", "w")
    p = Proc("docker-registry", ["docker-registry", "serve", str(cfg)],
             stdout=log, stderr=log, env=env)
    wait_http(f"http://127.0.0.1:{port}/v2/")
    return p, f"127.0.0.1:{port}"


def curl(*args):
    return subprocess.run(["curl", "-s", *args], check=True, capture_output=True, text=True).stdout


def location(headers, host):
    m = re.search(r"(?im)^location:\s*(\S+)", headers)
    if not m:
        sys.exit(f"bench: {host} answered without a Location:\n{headers}")
    loc = m.group(1)
    return f"http://{host}{loc}" if loc.startswith("/") else loc


def push_monolithic(path, digest, host, repo):
    start = time.perf_counter()
    loc = location(curl("-D", "-", "-o", "/dev/null", "-X", "POST", f"http://{host}/v2/{repo}/blobs/uploads/"), host)
    sep = "&" if "?" in loc else "?"
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                "-T", str(path), f"{loc}{sep}digest={digest}")
    if code != "201":
        sys.exit(f"bench: monolithic push to {host} answered {code}")
    return time.perf_counter() - start


def push_chunked(chunks, digest, host, repo, sample=None):
    """POST, one PATCH per chunk file, PUT; `sample()` is called between
    requests (RSS)."""
    start = time.perf_counter()
    loc = location(curl("-D", "-", "-o", "/dev/null", "-X", "POST", f"http://{host}/v2/{repo}/blobs/uploads/"), host)
    offset = 0
    for c in chunks:
        size = c.stat().st_size
        out = curl("-D", "-", "-o", "/dev/null", "-X", "PATCH", "-H", "Expect:", "-H", "Content-Type: application/octet-stream",
                   "-H", f"Content-Range: {offset}-{offset + size - 1}", "-T", str(c), loc)
        if not re.match(r"HTTP/1\.1 202", out):
            sys.exit(f"bench: PATCH to {host} answered {out.splitlines()[0]}")
        loc = location(out, host)
        offset += size
        if sample:
            sample()
    sep = "&" if "?" in loc else "?"
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", f"{loc}{sep}digest={digest}")
    if code != "201":
        sys.exit(f"bench: final PUT to {host} answered {code}")
    return time.perf_counter() - start


def s3_requests(host):
    text = curl(f"http://{host}/metrics")
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith("berth_registry_s3_requests_total{"))


def push_manifest(work, host, repo, digest, size):
    config = work / "config.json"
    config.write_bytes(b"{}")
    cdig = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    push_monolithic(config, cdig, host, repo)
    import json
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}],
    })
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-X", "PUT",
                          "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json",
                          "--data-binary", manifest, f"http://{host}/v2/{repo}/manifests/latest"],
                         check=True, capture_output=True, text=True).stdout
    body, code = out.rsplit("\n", 1)
    if code != "201":
        sys.exit(f"bench: manifest PUT to {host} answered {code}: {body}")


def object_key(work, digest):
    import sqlite3
    db = sqlite3.connect(work / "berth-data" / "metadata.sqlite")
    return db.execute("SELECT key FROM s3_blobs WHERE digest = ?", (digest,)).fetchone()[0]


def main():
    need("wrk", "docker-registry", "curl")
    if not Path(WEED).is_file():
        sys.exit(f"bench: {WEED} is missing: run ./scripts/test (it installs SeaweedFS)")
    binary = os.environ.get("BERTH_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "berth"], cwd=ROOT, check=True)
        binary = str(ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "berth")
    res = {k: [] for k in ("b_mono", "d_mono", "b_chunk", "d_chunk", "b_mono_w", "d_mono_w",
                            "b_chunk_w", "d_chunk_w", "b_mono_req", "b_chunk_req")}
    peak = [0]
    speeds = m_b = m_d = None
    # Each run in a fresh world (SeaweedFS keeps deleted bytes until it
    # vacuums, so the disk is bounded by one run's pushes).
    for run in range(RUNS):
        print(f"bench: run {run + 1}/{RUNS}", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix="berth-bench-s3-"))
        procs = []
        try:
            weed, endpoint, weed_data = start_seaweedfs(work)
            procs.append(weed)
            for b in ("berth", "dreg"):
                create_bucket(endpoint, b)
            berth, bhost = start_berth_s3(work, binary, endpoint)
            procs.append(berth)
            dreg, dhost = start_docker_registry_s3(work, endpoint)
            procs.append(dreg)

            # Two 1 GiB blobs (a registry stores a digest once): one pushed
            # whole, the other (the same but its first bytes) in chunks.
            path = work / "blob"
            mono, chunked = hashlib.sha256(), hashlib.sha256()
            chunks = []
            with open(path, "wb") as f:
                for j in range(GIB // CHUNK):
                    b = os.urandom(CHUNK)
                    mono.update(b)
                    f.write(b)
                    if j == 0:
                        b = b"chunked!" + b[8:]
                    chunked.update(b)
                    c = work / f"chunk{j:02}"
                    c.write_bytes(b)
                    chunks.append(c)
            digests = {"mono": "sha256:" + mono.hexdigest(), "chunk": "sha256:" + chunked.hexdigest()}

            def sample():
                peak[0] = max(peak[0], rss_kib(berth.p.pid, "VmRSS"))

            for name, host in (("b", bhost), ("d", dhost)):
                for mode in ("mono", "chunk"):
                    repo = f"bench/{mode}"
                    before = volume_bytes(weed_data)
                    reqs = s3_requests(bhost) if name == "b" else 0
                    if mode == "mono":
                        t = push_monolithic(path, digests[mode], host, repo)
                    else:
                        t = push_chunked(chunks, digests[mode], host, repo, sample if name == "b" else None)
                    res[f"{name}_{mode}"].append(t)
                    res[f"{name}_{mode}_w"].append((volume_bytes(weed_data) - before) / GIB)
                    if name == "b":
                        res[f"b_{mode}_req"].append(s3_requests(bhost) - reqs)

            if run == 0:
                digest = digests["mono"]
                key = object_key(work, digest)
                speeds = blob_gets({
                    "berth": f"http://{bhost}/v2/bench/mono/blobs/{digest}",
                    "dreg": f"http://{dhost}/v2/bench/mono/blobs/{digest}",
                    "direct": f"{endpoint}/berth/{key}",
                }, GIB, RUNS)
                push_manifest(work, bhost, "bench/mono", digest, GIB)
                push_manifest(work, dhost, "bench/mono", digest, GIB)
                m_b = wrk(f"http://{bhost}/v2/bench/mono/manifests/latest")
                m_d = wrk(f"http://{dhost}/v2/bench/mono/manifests/latest")
        finally:
            for p in reversed(procs):
                p.stop()
            if os.environ.get("BENCH_KEEP"):
                print(f"bench: kept {work}", file=sys.stderr)
            else:
                subprocess.run(["rm", "-rf", str(work)])

    med = {k: statistics.median(v) for k, v in res.items() if v}
    mib_s = lambda t: 1024 / t
    section = f"""## S3 storage: berth vs docker-registry's s3 driver

Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, everything on 127.0.0.1 in one run: SeaweedFS 4.48 (`weed server -s3`, one volume server), berth (`[storage.s3]`, 16 MiB parts) and docker-registry 2.8.2 (Debian, `s3` driver, redirects off) each on its own bucket; medians of {RUNS} runs, each on a fresh SeaweedFS, of pushes of 1 GiB random blobs (a different blob per mode: a registry stores a digest once). "Stored per byte" is the growth of SeaweedFS's volume files per byte pushed: they keep deleted data until vacuumed, so bytes written and then deleted (a temporary upload copied to its final key) still show.

Reproduce: `BERTH_BIN=target/release/berth python3 bench/s3.py` (needs `apt-get install -y wrk docker-registry curl` and SeaweedFS from `./scripts/test`).

| measure | berth | docker-registry (s3) | ratio | target |
|---|---|---|---|---|
| 1 GiB push, monolithic (curl POST + PUT), s | {med['b_mono']:.2f} ({mib_s(med['b_mono']):.0f} MiB/s) | {med['d_mono']:.2f} ({mib_s(med['d_mono']):.0f} MiB/s) | {med['b_mono'] / med['d_mono']:.2f}× | ≤ 0.5× |
| 1 GiB push, 16 × 64 MiB PATCH, s | {med['b_chunk']:.2f} ({mib_s(med['b_chunk']):.0f} MiB/s) | {med['d_chunk']:.2f} ({mib_s(med['d_chunk']):.0f} MiB/s) | {med['b_chunk'] / med['d_chunk']:.2f}× | ≤ 0.5× |
| bytes stored per byte pushed, monolithic | {med['b_mono_w']:.2f} | {med['d_mono_w']:.2f} | | 1.00 |
| bytes stored per byte pushed, chunked | {med['b_chunk_w']:.2f} | {med['d_chunk_w']:.2f} | | 1.00 |
| S3 requests per 1 GiB push (monolithic / chunked) | {med['b_mono_req']:.0f} / {med['b_chunk_req']:.0f} | — | | |
| 1 GiB pull, MB/s (vs a plain GET from SeaweedFS: {speeds['direct']:.0f} MB/s) | {speeds['berth']:.0f} ({speeds['berth'] / speeds['direct']:.2f}× the limit) | {speeds['dreg']:.0f} | {speeds['berth'] / speeds['dreg']:.2f}× | ≥ 0.9× the limit, ≥ 1× |
| manifest GET by tag, requests/s | {m_b[0]:,.0f} (p99 {m_b[1]:.2f} ms) | {m_d[0]:,.0f} (p99 {m_d[1]:.2f} ms) | {m_b[0] / m_d[0]:.1f}× | ≥ 10× |
| berth RSS, peak during the chunked pushes | {peak[0] / 1024:.1f} MiB | — | | ≤ 64 MiB |
{NOTES}"""
    print(section)
    write_section("S3 storage:", section)


if __name__ == "__main__":
    main()
