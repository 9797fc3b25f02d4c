#!/usr/bin/env python3
"""Garbage-collection benchmark: berth's online GC and Debian's
docker-registry 2.8.2 (CNCF distribution) offline `garbage-collect`, side by
side in one run on 127.0.0.1, on the same content pushed to each through
the API:

- 100 repositories × 100 manifests, each manifest a config and 9 layers of
  its own (10,000 manifests, 100,000 blobs), then 1,000 manifests deleted
  by digest (10,000 blobs become garbage);
- the time of one collection (berth: `berth admin gc` while the registry
  serves; docker-registry: `docker-registry garbage-collect`, which needs
  the registry stopped or read-only), and berth's peak RSS during it;
- the pushes per second berth sustains while collections run back to back,
  against idle (8 clients, each push 2 blobs and a manifest).

A benchmark, not a test: it asserts nothing. Writes its section of
docs/benchmarks.md.

    BERTH_BIN=target/release/berth python3 bench/gc.py

Needs: apt-get install -y docker-registry curl.
"""

import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchdoc import write_section
from registry import ROOT, need, rss_kib, start_berth, start_docker_registry, wait_http

REPOS = int(os.environ.get("BENCH_GC_REPOS", "100"))
PER_REPO = int(os.environ.get("BENCH_GC_MANIFESTS", "100"))
LAYERS = 9
DELETE_EVERY = 10  # one manifest in ten is deleted
CLIENTS = 8
PUSH_SECONDS = int(os.environ.get("BENCH_GC_PUSH_SECONDS", "10"))

NOTES = """
Notes:

- The pushes/s rows run on the same data after a restart with the default grace window (an hour): each collection looks at what the pushes marked (every new blob) and keeps it, as a scheduled collection does in production. With `grace_minutes = 0` (the first row's setting, so that the deleted images' blobs can go at once) pushes lose races with back-to-back collections and upload their blobs again (first runs: 0.69×; e2e `gc.rs` exercises exactly that).
- docker-registry's `garbage-collect` is offline: distribution's docs say to stop the registry or put it in read-only mode while it runs, since a blob uploaded during the mark is deleted by the sweep. berth collects while it serves: the sweep re-checks each blob in the transaction that forgets it, and uploads of the same digest wait on a per-digest gate (docs/lifecycle.md), so the pushes/s column is measured with collections running back to back.
- Both collect the same garbage. docker-registry's count is one blob per deleted manifest higher: it stores manifests as blobs, and counts them with the layers (`blob eligible for deletion`); berth keeps manifests in its metadata database, where the DELETE already removed them.
"""

local = threading.local()


def conn(host):
    c = getattr(local, "c", None)
    if c is None or getattr(local, "host", None) != host:
        c = http.client.HTTPConnection(host, timeout=60)
        local.c, local.host = c, host
    return c


def request(host, method, path, body=b"", headers=None):
    for attempt in range(3):
        c = conn(host)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, dict(r.getheaders()), data
        except (http.client.HTTPException, OSError):
            local.c = None
            if attempt == 2:
                raise
    raise RuntimeError("unreachable")


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def put_blob(host, repo, data):
    d = digest(data)
    status, hdrs, body = request(host, "POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data,
                              {"Content-Type": "application/octet-stream",
                               "Content-Length": str(len(data))})
    if status == 202:
        # A registry that opened a session instead (the single POST is
        # optional): PUT the bytes to it.
        loc = next(v for k, v in hdrs.items() if k.lower() == "location")
        if loc.startswith("http"):
            loc = "/" + loc.split("/", 3)[3]
        sep = "&" if "?" in loc else "?"
        status, _, body = request(host, "PUT", f"{loc}{sep}digest={d}", data,
                                  {"Content-Type": "application/octet-stream",
                                   "Content-Length": str(len(data))})
    if status != 201:
        raise RuntimeError(f"blob upload to {repo}: {status} {body[:200]!r}")
    return d


def manifest_bytes(repo, i, tag_salt=""):
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": f"{repo}-{i}{tag_salt}"}).encode()
    layers = [f"{repo}/{i}/{k}{tag_salt}".encode() * 4 for k in range(LAYERS)]
    return config, layers


def push_image(host, repo, i, tag, salt=""):
    config, layers = manifest_bytes(repo, i, salt)
    c = put_blob(host, repo, config)
    ls = [put_blob(host, repo, l) for l in layers]
    m = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(l)}
                   for d, l in zip(ls, layers)],
    }).encode()
    status, _, body = request(host, "PUT", f"/v2/{repo}/manifests/{tag}", m,
                              {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    if status != 201:
        return None
    return digest(m)


def populate(host, name):
    """Push REPOS × PER_REPO images, then delete one in DELETE_EVERY by
    digest. Returns (seconds, deleted count)."""
    started = time.time()
    jobs = [(f"bench/r{r:03}", i) for r in range(REPOS) for i in range(PER_REPO)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        digests = list(pool.map(lambda j: (j, push_image(host, j[0], j[1], f"t{j[1]}")), jobs))
    doomed = [(repo, d) for (repo, i), d in digests if i % DELETE_EVERY == 0]

    def delete(job):
        repo, d = job
        status, _, body = request(host, "DELETE", f"/v2/{repo}/manifests/{d}")
        if status != 202:
            raise RuntimeError(f"{name}: DELETE {repo}@{d}: {status} {body[:200]!r}")

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(delete, doomed))
    took = time.time() - started
    print(f"bench: {name}: {len(jobs)} manifests, {len(jobs) * (LAYERS + 1)} blobs pushed, "
          f"{len(doomed)} deleted, in {took:.0f} s", file=sys.stderr)
    return took, len(doomed)


def berth_gc(binary, host, pid):
    """One `berth admin gc` with berth's RSS sampled meanwhile: (wall s,
    report, peak RSS KiB, RSS before KiB)."""
    before = rss_kib(pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.01)

    t = threading.Thread(target=sample)
    t.start()
    started = time.time()
    out = subprocess.run([binary, "admin", "gc", "--json", "--registry", f"http://{host}"],
                         capture_output=True, text=True, check=True)
    wall = time.time() - started
    done.set()
    t.join()
    return wall, json.loads(out.stdout), peak[0], before


def pushes_per_second(host, seconds, tag):
    """Acknowledged pushes per second by CLIENTS clients over `seconds`
    (a push that lost a race with a collection counts only when retried
    and acknowledged)."""
    stop = time.time() + seconds
    counts = [0] * CLIENTS

    def client(k):
        n = 0
        while time.time() < stop:
            if push_image(host, f"load/c{k}", n, f"{tag}-{n}", salt=f"-{tag}-{k}-{n}"):
                counts[k] += 1
            n += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main():
    need("docker-registry", "curl")
    binary = os.environ.get("BERTH_BIN", str(ROOT / "target" / "release" / "berth"))
    with tempfile.TemporaryDirectory(prefix="berth-bench-gc-") as tmp:
        work = Path(tmp)
        cfg = work / "berth.toml"
        cfg.write_text("[storage]\nfsync = false\nmin_free_mib = 0\n[gc]\ngrace_minutes = 0\n")
        berth, bhost = start_berth(work, binary, "--config", str(cfg))
        dreg, dhost = start_docker_registry(work)
        try:
            b_pop, b_del = populate(bhost, "berth")
            d_pop, d_del = populate(dhost, "docker-registry")

            b_wall, report, b_peak, b_before = berth_gc(binary, bhost, berth.p.pid)
            print(f"bench: berth gc: {b_wall:.2f} s, removed {len(report['blobs'])} blobs, "
                  f"peak RSS {b_peak / 1024:.1f} MiB", file=sys.stderr)

            # docker-registry: stopped for its offline collection.
            dreg.stop()
            started = time.time()
            out = subprocess.run(["docker-registry", "garbage-collect", str(work / "docker-registry.yml")],
                                 capture_output=True, text=True)
            d_wall = time.time() - started
            d_removed = out.stdout.count("blob eligible for deletion") + out.stderr.count("blob eligible for deletion")
            if out.returncode != 0:
                sys.exit(f"bench: docker-registry garbage-collect failed: {out.stderr[-500:]}")
            print(f"bench: docker-registry garbage-collect: {d_wall:.2f} s, {d_removed} blobs", file=sys.stderr)

            # Pushes while collections run, on the same data with the
            # default grace window (a push's blobs are young, so the
            # collections look at them and keep them, as in production;
            # with no grace, pushes would lose races and retry).
            berth.stop()
            cfg.write_text("[storage]\nfsync = false\nmin_free_mib = 0\n")
            berth, bhost = start_berth(work, binary, "--config", str(cfg))
            idle = pushes_per_second(bhost, PUSH_SECONDS, "idle")
            running = threading.Event()
            runs = [0]
            gc_ms = []

            def collect():
                # Straight to the API (no process per run), back to back.
                c = http.client.HTTPConnection(bhost, timeout=600)
                while not running.is_set():
                    c.request("POST", "/api/v1/gc")
                    lines = c.getresponse().read().decode().splitlines()
                    report = json.loads(lines[-1])["report"]
                    gc_ms.append(report["millis"])
                    runs[0] += 1

            g = threading.Thread(target=collect)
            g.start()
            busy = pushes_per_second(bhost, PUSH_SECONDS, "busy")
            running.set()
            g.join()
            print(f"bench: pushes/s idle {idle:.0f}, during {runs[0]} collections {busy:.0f}", file=sys.stderr)
        finally:
            berth.stop()
            dreg.stop()

    blobs = REPOS * PER_REPO * (LAYERS + 1)
    section = f"""## Garbage collection

`python3 bench/gc.py` (release build; {REPOS * PER_REPO:,} manifests and {blobs:,} blobs pushed to each registry through the API, {b_del:,} manifests then deleted by digest; one run, {time.strftime('%Y-%m-%d')}).

| | berth (online) | docker-registry 2.8.2 (offline) | ratio |
|---|---|---|---|
| one collection, wall time (target < 10 s) | {b_wall:.2f} s | {d_wall:.2f} s | berth takes {b_wall / d_wall:.2f}× docker-registry's time |
| blobs removed | {len(report['blobs']):,} | {d_removed:,} | |
| registry available meanwhile | yes (reads and pushes) | no (stopped or read-only) | |
| berth RSS during the collection | {b_peak / 1024:.1f} MiB peak ({b_before / 1024:.1f} MiB before) | | target < 100 MiB |
| acknowledged pushes/s, 8 clients, idle | {idle:.0f} | | |
| … with collections back to back ({runs[0]} runs, {sum(gc_ms) / max(len(gc_ms), 1):.0f} ms each) | {busy:.0f} | | {busy / idle:.2f}× idle (target ≥ 0.8×) |

Populating took {b_pop:.0f} s (berth) and {d_pop:.0f} s (docker-registry) from one Python client with {CLIENTS} connections.
{NOTES}"""
    write_section("Garbage collection", section)


if __name__ == "__main__":
    main()
