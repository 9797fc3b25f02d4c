#!/usr/bin/env python3
"""Registry benchmark: berth serve, Debian's docker-registry (CNCF
distribution 2.8.2) and nginx, side by side in one run on 127.0.0.1.

Measures manifest GET by tag (wrk, 64 connections: requests/s and p99),
1 GiB blob GET (MB/s, curl), 1 GiB push with skopeo (wall time), and
berth's idle and loaded RSS; writes the table with ratios to
docs/benchmarks.md. This is a benchmark, not a test: it asserts nothing.

    python3 bench/registry.py            # builds berth --release first
    BERTH_BIN=target/release/berth python3 bench/registry.py

Needs: apt-get install -y wrk nginx-light docker-registry skopeo curl
"""

import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdoc import write_section

ROOT = Path(__file__).resolve().parent.parent
GIB = 1 << 30
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def need(*programs):
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        sys.exit(
            f"bench: missing {' '.join(missing)}: "
            "apt-get install -y wrk nginx-light docker-registry skopeo curl"
        )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
                           capture_output=True, text=True)
        if r.stdout.strip() not in ("", "000"):
            return
        time.sleep(0.1)
    sys.exit(f"bench: {url} did not come up")


def rss_kib(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), os.path.getsize(path)


def make_layout(work):
    """An OCI layout whose one layer is 1 GiB of random bytes. It is labelled
    gzip so that skopeo copies it as it is instead of compressing it."""
    layout = work / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    big = work / "big.bin"
    # A real gzip stream (stored blocks around random bytes) of exactly
    # 1 GiB, so that skopeo, which sniffs the content, copies it as it is.
    payload = GIB - 18 - 5 * ((GIB - 18) // 65540 + 1)
    with open(big, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=0, mtime=0) as gz:
        left = payload
        while left:
            n = min(left, 64 << 20)
            gz.write(os.urandom(n))
            left -= n
    layer_digest, layer_size = sha256_file(big)
    os.rename(big, blobs / layer_digest.split(":")[1])
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest.split(":")[1]).write_bytes(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    }).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_digest.split(":")[1]).write_bytes(manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    }))
    return layout, layer_digest, manifest


class Proc:
    def __init__(self, name, argv, **kw):
        self.name = name
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()


def start_berth(work, binary, *extra):
    """berth serve on a free port with its data under `work`; `extra`
    arguments (e.g. --config FILE) appended."""
    data = work / "berth-data"
    p = Proc("berth", [binary, "serve", "--listen", "127.0.0.1:0", "--data", str(data), *extra],
             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
             env={**os.environ, "RUST_LOG": "warn"})
    line = p.p.stdout.readline()
    m = re.search(r"http://(\S+)", line)
    if not m:
        sys.exit(f"bench: berth printed {line!r}")
    return p, m.group(1)


def start_docker_registry(work, htpasswd=None):
    """docker-registry on a free port; with `htpasswd`, Basic auth checked
    against that (bcrypt) file on every request."""
    port = free_port()
    auth = f"auth:\n  htpasswd:\n    realm: bench\n    path: {htpasswd}\n" if htpasswd else ""
    cfg = work / "docker-registry.yml"
    cfg.write_text(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {work / 'dreg-data'}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
{auth}""")
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    p = Proc("docker-registry", ["docker-registry", "serve", str(cfg)],
             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_http(f"http://127.0.0.1:{port}/v2/")
    return p, f"127.0.0.1:{port}"


def start_nginx(work, root):
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""worker_processes auto;
daemon off;
pid {work / 'nginx.pid'};
error_log {work / 'nginx-error.log'} error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  # On this loopback, read+write through 1 MiB buffers beats sendfile
  # (about 3.5 vs 1.8 GB/s): use nginx's faster setting as the limit.
  sendfile off;
  output_buffers 2 1m;
  keepalive_requests 1000000;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fastcgi;
  uwsgi_temp_path {work}/nginx-uwsgi;
  scgi_temp_path {work}/nginx-scgi;
  types {{ application/vnd.oci.image.manifest.v1+json json; }}
  server {{
    listen 127.0.0.1:{port};
    root {root};
  }}
}}
""")
    p = Proc("nginx", ["nginx", "-c", str(conf), "-p", str(work)],
             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/")
    return p, f"127.0.0.1:{port}"


def child_cpu():
    r = os.times()
    return r.children_user + r.children_system


def skopeo_push(layout, host, repo):
    """Wall time of a skopeo push, and the CPU time skopeo itself used."""
    cpu0, start = child_cpu(), time.perf_counter()
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                    f"oci:{layout}:latest", f"docker://{host}/{repo}:latest"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, child_cpu() - cpu0


def curl_push(path, digest, host, repo):
    """Wall time of POST + PUT of one blob with curl, which does no hashing."""
    start = time.perf_counter()
    out = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "-X", "POST",
                          f"http://{host}/v2/{repo}/blobs/uploads/"],
                         check=True, capture_output=True, text=True).stdout
    loc = re.search(r"(?im)^location:\s*(\S+)", out).group(1)
    if loc.startswith("/"):
        loc = f"http://{host}{loc}"
    sep = "&" if "?" in loc else "?"
    code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                           "-H", "Content-Type: application/octet-stream", "-T", str(path),
                           f"{loc}{sep}digest={digest}"],
                          check=True, capture_output=True, text=True).stdout
    if code != "201":
        sys.exit(f"bench: curl push to {host} answered {code}")
    return time.perf_counter() - start


def wrk(url, header=None):
    extra = ["-H", header] if header else []
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{WRK_SECONDS}s", "--latency",
         "-H", "Accept: application/vnd.oci.image.manifest.v1+json", *extra, url],
        check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"bench: {url} answered {errors.group(1)} errors:\n{out}\n" + subprocess.run(["curl", "-si", url], capture_output=True, text=True).stdout[:800])
    return rps, float(p99.group(1)) * scale


def cpu_seconds(pid):
    """CPU time (user + system) used so far by a process and its children."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    ticks = 0
    for p in [str(pid), *children]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pin(pid, cpu):
    """Pin a process, its threads and its children (nginx workers) to `cpu`."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for p in [str(pid), *children]:
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), p], check=True, stdout=subprocess.DEVNULL)


def blob_get_once(url, size):
    out = subprocess.run(["taskset", "-c", "1", "curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", url],
                         check=True, capture_output=True, text=True).stdout.split()
    if int(out[1]) != size:
        sys.exit(f"bench: {url} sent {out[1]} bytes, not {size}")
    return float(out[0]) / 1e6


def blob_gets(urls, size, runs):
    """Median MB/s per server, with the servers' GETs interleaved run by run
    (after one warm-up each) so that drift in the machine's speed falls on
    all of them alike."""
    speeds = {name: [] for name in urls}
    for url in urls.values():
        blob_get_once(url, size)
    for _ in range(runs):
        for name, url in urls.items():
            speeds[name].append(blob_get_once(url, size))
    return {name: statistics.median(v) for name, v in speeds.items()}


def main():
    need("wrk", "nginx", "docker-registry", "skopeo", "curl")
    binary = os.environ.get("BERTH_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "berth"], cwd=ROOT, check=True)
        binary = str(ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "berth")
    work = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    work.chmod(0o755)  # nginx workers run unprivileged
    procs = []
    try:
        print("bench: writing a 1 GiB layer", file=sys.stderr)
        layout, layer_digest, manifest = make_layout(work)
        layer_size = (layout / "blobs" / "sha256" / layer_digest.split(":")[1]).stat().st_size
        static = work / "static"
        (static / "v2" / "bench" / "big" / "manifests").mkdir(parents=True)
        (static / "v2" / "bench" / "big" / "manifests" / "latest").write_bytes(manifest)
        (static / "v2" / "bench" / "big" / "blobs").mkdir(parents=True)
        os.link(layout / "blobs" / "sha256" / layer_digest.split(":")[1],
                static / "v2" / "bench" / "big" / "blobs" / layer_digest)

        # Push: each run into a fresh registry on a new port, so neither the
        # registry nor skopeo's blob-info cache can skip the upload.
        push = {"berth": [], "docker-registry": []}
        push_cpu = {"berth": [], "docker-registry": []}
        raw_push = {"berth": [], "docker-registry": []}
        layer_path = layout / "blobs" / "sha256" / layer_digest.split(":")[1]
        for i in range(RUNS):
            for name, start in (("berth", lambda d: start_berth(d, binary)),
                                ("docker-registry", start_docker_registry)):
                for kind in ("skopeo", "curl"):
                    run_dir = work / f"push-{name}-{kind}-{i}"
                    run_dir.mkdir()
                    # Start each timed push with no dirty pages left from the
                    # previous one, so no run pays for another's writeback.
                    os.sync()
                    proc, host = start(run_dir)
                    try:
                        print(f"bench: {kind} push to {name} ({i + 1}/{RUNS})", file=sys.stderr)
                        if kind == "skopeo":
                            wall, cpu = skopeo_push(layout, host, "bench/push")
                            push[name].append(wall)
                            push_cpu[name].append(cpu)
                        else:
                            raw_push[name].append(curl_push(layer_path, layer_digest, host, "bench/raw"))
                    finally:
                        proc.stop()
                        shutil.rmtree(run_dir, ignore_errors=True)
        push = {k: statistics.median(v) for k, v in push.items()}
        push_cpu = {k: statistics.median(v) for k, v in push_cpu.items()}
        raw_push = {k: statistics.median(v) for k, v in raw_push.items()}

        berth, berth_host = start_berth(work, binary)
        procs.append(berth)
        dreg, dreg_host = start_docker_registry(work)
        procs.append(dreg)
        nginx, nginx_host = start_nginx(work, static)
        procs.append(nginx)
        skopeo_push(layout, berth_host, "bench/big")
        skopeo_push(layout, dreg_host, "bench/big")
        time.sleep(1)
        idle_rss = rss_kib(berth.p.pid)

        path = "/v2/bench/big/manifests/latest"
        manifest_get = {}
        for name, host in (("berth", berth_host), ("docker-registry", dreg_host), ("nginx", nginx_host)):
            print(f"bench: wrk manifest GET on {name}", file=sys.stderr)
            manifest_get[name] = wrk(f"http://{host}{path}")

        blob_path = f"/v2/bench/big/blobs/{layer_digest}"
        print("bench: 1 GiB blob GETs, interleaved", file=sys.stderr)
        # Each server on core 0 and curl on core 1, so the scheduler's
        # placement (the largest source of run-to-run noise here) is the same
        # for all three.
        for p in (berth, dreg, nginx):
            pin(p.p.pid, 0)
        cpu_before = {n: cpu_seconds(p.p.pid) for n, p in
                      (("berth", berth), ("docker-registry", dreg), ("nginx", nginx))}
        gets = 2 * RUNS + 1
        blob = blob_gets({name: f"http://{host}{blob_path}" for name, host in
                          (("berth", berth_host), ("docker-registry", dreg_host), ("nginx", nginx_host))},
                         layer_size, gets)
        blob_cpu = {n: (cpu_seconds(p.p.pid) - cpu_before[n]) / (gets + 1) / (layer_size / GIB)
                    for n, p in (("berth", berth), ("docker-registry", dreg), ("nginx", nginx))}
        loaded_rss = rss_kib(berth.p.pid, "VmHWM")
        dreg_rss = rss_kib(dreg.p.pid, "VmHWM")
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)

    b, d, n = manifest_get["berth"], manifest_get["docker-registry"], manifest_get["nginx"]
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rows = [
        ("manifest GET by tag, requests/s (wrk -c64)", f"{b[0]:,.0f}", f"{d[0]:,.0f}", f"{n[0]:,.0f}",
         f"{b[0] / d[0]:.1f}× docker-registry", "≥ 10×"),
        ("manifest GET by tag, p99 latency", f"{b[1]:.2f} ms", f"{d[1]:.2f} ms", f"{n[1]:.2f} ms",
         f"{b[1] / d[1]:.3f}× docker-registry", "< 10 ms"),
        ("1 GiB blob GET, MB/s (curl)", f"{blob['berth']:,.0f}", f"{blob['docker-registry']:,.0f}",
         f"{blob['nginx']:,.0f}", f"{blob['berth'] / blob['nginx']:.2f}× nginx", "≥ 0.8× nginx"),
        ("… server CPU time per GiB sent", f"{blob_cpu['berth']:.2f} s", f"{blob_cpu['docker-registry']:.2f} s",
         f"{blob_cpu['nginx']:.2f} s", f"{blob_cpu['berth'] / blob_cpu['nginx']:.2f}× nginx", ""),
        ("1 GiB push with skopeo, wall time", f"{push['berth']:.2f} s", f"{push['docker-registry']:.2f} s", "—",
         f"{push['berth'] / push['docker-registry']:.2f}× docker-registry", "≤ 0.5× (see note)"),
        ("… of which skopeo's own CPU time (user+sys)", f"{push_cpu['berth']:.2f} s",
         f"{push_cpu['docker-registry']:.2f} s", "—", "", ""),
        ("1 GiB blob push, POST + PUT with curl, wall time", f"{raw_push['berth']:.2f} s",
         f"{raw_push['docker-registry']:.2f} s", "—",
         f"{raw_push['berth'] / raw_push['docker-registry']:.2f}× docker-registry", "≤ 0.5×"),
        ("RSS idle", f"{idle_rss / 1024:.1f} MiB", "—", "—", "", "≤ 30 MiB"),
        ("RSS peak over the whole run", f"{loaded_rss / 1024:.1f} MiB", f"{dreg_rss / 1024:.1f} MiB", "—",
         f"{loaded_rss / dreg_rss:.2f}× docker-registry", "≤ 64 MiB"),
    ]
    table = ["| measure | berth | docker-registry 2.8.2 | nginx (static file) | ratio | target |",
             "|---|---|---|---|---|---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    section = "\n".join([
        "## Registry: berth serve vs docker-registry vs nginx",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"all three servers and the clients on 127.0.0.1 in one run; berth is a release build with "
        f"default settings (fsync on), docker-registry uses its filesystem driver, nginx serves the same "
        f"files (sendfile off with 1 MiB output buffers, its fastest setting here). wrk: 2 threads, 64 connections, {WRK_SECONDS} s; blob GET: median of "
        f"{2 * RUNS + 1} runs interleaved across the three servers after a warm-up, each server "
        f"pinned to core 0 and curl to core 1; push: median of {RUNS} runs. RSS is berth's VmRSS at rest after the image was pushed (idle) and its "
        f"VmHWM after every load below (peak).",
        "",
        "Reproduce: `python3 bench/registry.py` (needs `apt-get install -y wrk nginx-light "
        "docker-registry skopeo curl`).",
        "",
        *table,
        "",
        "Notes:",
        "",
        "- The skopeo push is bound by skopeo itself: skopeo 1.9.3 (Debian, Go 1.19) hashes and "
        "copies the layer on one core, and its own CPU time (the row below it) is nearly the whole "
        "wall time against either registry, so no server can make this push take half as long. "
        "The curl push sends the same 1 GiB blob with POST + PUT and hashes nothing, so it measures "
        "the registries: receive, hash, write and (berth) fsync before answering 201.",
        "- The blob GET ratio moves between runs on this shared 2-core machine: five runs on 2026-11-22 gave 0.74–0.87× nginx with the same GET code (server CPU per GiB 1.05–1.25× nginx's), so the 0.8× target is met in some runs and missed in others; it is not a settled pass.",
        "- berth keeps fsync on (each blob and its directory entry are on disk before the 201); "
        "docker-registry does not fsync.",
        "- Every timed push goes to a fresh registry after `sync`, so no run pays for another's "
        "writeback and nothing is skipped as already present.",
        "",
    ])
    write_section("Registry: berth serve", section)
    print("\n".join(table))


if __name__ == "__main__":
    main()
