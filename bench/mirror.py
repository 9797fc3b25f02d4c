#!/usr/bin/env python3
"""Mirror benchmark: five nodes pull one 512 MiB, 4-layer image, through
`berth mirror` (each node's containerd pulling via its own mirror, the
mirrors sharing with each other) and straight from the registry, side by
side in one run. Writes the table to docs/benchmarks.md. A benchmark, not a
test: it asserts nothing.

The cluster is built from network namespaces this script creates and
deletes: the registry (`berth serve`) in one, each node (its containerd,
its mirror) in its own, all joined by a bridge, and every link shaped to
1 Gbit/s each way with tc (so the registry's link is the bottleneck a real
registry node has, and peers cannot exceed their own links either).

Measures (a) registry egress bytes divided by the image size, (b) time
until all five nodes have the image, five pulling at once, mirror against
direct, (c) a rolling pull, node after node, each against a direct pull,
and the mirrors' peak RSS. Pulls are `ctr content fetch` (what a pull
transfers, without unpacking), run inside each node's namespace (ctr
fetches client-side in containerd 1.6).

    sudo python3 bench/mirror.py           # builds berth --release first
    BERTH_BIN=target/release/berth sudo python3 bench/mirror.py

Needs root, iproute2, containerd, skopeo.
"""

import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

from benchdoc import write_section

ROOT = Path(__file__).resolve().parent.parent
NODES = 5
LAYERS = 4
LAYER_MIB = 128
RATE = "1gbit"
PREFIX = "bbm"  # namespace and link names
REG_IP = "10.99.0.2"
BRIDGE_IP = "10.99.0.1"


def node_ip(i):
    return f"10.99.0.{10 + i}"


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


def need(*programs):
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        sys.exit(f"bench: missing {' '.join(missing)}: apt-get install -y iproute2 containerd skopeo")
    if os.geteuid() != 0:
        sys.exit("bench: needs root (network namespaces and tc)")


def shape(dev, ns=None, rate=RATE):
    cmd = ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "1mb", "latency", "50ms"]
    sh(*(["ip", "netns", "exec", ns] + cmd if ns else cmd))


def reshape(rate):
    """Every link to `rate` each way."""
    for name in ["reg"] + [f"n{i}" for i in range(NODES)]:
        shape(f"{PREFIX}{name}h", rate=rate)
        shape(f"{PREFIX}{name}c", f"{PREFIX}-{name}", rate=rate)


def net_up():
    net_down()
    sh("ip", "link", "add", f"{PREFIX}br", "type", "bridge")
    sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", f"{PREFIX}br")
    sh("ip", "link", "set", f"{PREFIX}br", "up")
    for name, ip in [("reg", REG_IP)] + [(f"n{i}", node_ip(i)) for i in range(NODES)]:
        ns = f"{PREFIX}-{name}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"{PREFIX}{name}h", "type", "veth", "peer", "name", f"{PREFIX}{name}c")
        sh("ip", "link", "set", f"{PREFIX}{name}c", "netns", ns)
        sh("ip", "link", "set", f"{PREFIX}{name}h", "master", f"{PREFIX}br")
        sh("ip", "link", "set", f"{PREFIX}{name}h", "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", f"{PREFIX}{name}c")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", f"{PREFIX}{name}c", "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        shape(f"{PREFIX}{name}h")
        shape(f"{PREFIX}{name}c", ns)


def net_down():
    for name in ["reg"] + [f"n{i}" for i in range(NODES)]:
        sh("ip", "netns", "del", f"{PREFIX}-{name}", check=False)
        sh("ip", "link", "del", f"{PREFIX}{name}h", check=False)
    sh("ip", "link", "del", f"{PREFIX}br", check=False)


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not come up")


def metric(url, name):
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    m = re.search(rf"^{re.escape(name)} (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def make_image(layout):
    """An OCI layout with LAYERS uncompressed layers of random bytes."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layers, diff_ids = [], []
    for i in range(LAYERS):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            info = tarfile.TarInfo(f"data/layer{i}.bin")
            info.size = LAYER_MIB << 20
            info.mtime = 1
            tar.addfile(info, io.BytesIO(os.urandom(info.size)))
        data = buf.getvalue()
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{d}",
                       "size": len(data)})
        diff_ids.append(f"sha256:{d}")
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                                                           "diff_ids": diff_ids}}).encode()
    cd = hashlib.sha256(config).hexdigest()
    (blobs / cd).write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": f"sha256:{cd}", "size": len(config)},
                           "layers": layers}).encode()
    md = hashlib.sha256(manifest).hexdigest()
    (blobs / md).write_bytes(manifest)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{md}",
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    return len(config) + sum(l["size"] for l in layers)


class Cluster:
    """Per-node containerds (and mirrors, if `mirrored`), started fresh."""

    def __init__(self, work, binary, mirrored):
        self.work, self.binary, self.mirrored = work, binary, mirrored
        self.procs, self.mirror_pids = [], []
        registry = f"{REG_IP}:5000"
        for i in range(NODES):
            ns = f"{PREFIX}-n{i}"
            d = work / f"node{i}"
            d.mkdir()
            hosts = d / "certs.d" / registry
            hosts.mkdir(parents=True)
            if mirrored:
                url = f"http://{node_ip(i)}:5001"
                peers = ", ".join(f'"http://{node_ip(j)}:5001"' for j in range(NODES) if j != i)
                (d / "mirror.toml").write_text(
                    f'listen = "{node_ip(i)}:5001"\ndata = "{d / "mirror"}"\nregistries = ["{registry}"]\n'
                    f'peers = [{peers}]\nadvertise_url = "{url}"\n'
                    f'[upstreams]\n"{registry}" = "http://{registry}"\n[log]\nlevel = "warn"\n')
                p = subprocess.Popen(["ip", "netns", "exec", ns, binary, "mirror", "--config", str(d / "mirror.toml")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.procs.append(p)
                self.mirror_pids.append(p.pid)
                (hosts / "hosts.toml").write_text(
                    f'server = "http://{registry}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n'
                    f'  dial_timeout = "200ms"\n')
            else:
                (hosts / "hosts.toml").write_text(f'server = "http://{registry}"\n')
            (d / "containerd.toml").write_text(
                f'version = 2\nroot = "{d / "root"}"\nstate = "{d / "state"}"\n'
                f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{d / "c.sock"}"\n[ttrpc]\n  address = "{d / "c.sock.ttrpc"}"\n'
                f'[debug]\n  address = ""\n[metrics]\n  address = ""\n')
            self.procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "containerd", "--config",
                                                str(d / "containerd.toml")],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for i in range(NODES):
            deadline = time.time() + 20
            while not (work / f"node{i}" / "c.sock").exists():
                if time.time() > deadline:
                    raise SystemExit("bench: containerd did not start")
                time.sleep(0.05)
            if mirrored:
                sh("ip", "netns", "exec", f"{PREFIX}-n{i}", "sh", "-c",
                   f"for t in $(seq 100); do curl -sf http://{node_ip(i)}:5001/healthz >/dev/null && exit 0; "
                   f"sleep 0.1; done; exit 1")

    def fetch(self, i, image):
        """Start node i's pull; returns the process."""
        d = self.work / f"node{i}"
        return subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-n{i}", "ctr", "--address", str(d / "c.sock"),
                                 "content", "fetch", "--plain-http", "--hosts-dir", str(d / "certs.d"), image],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def peak_rss_mib(self):
        peaks = []
        for pid in self.mirror_pids:
            # `ip netns exec` execs the mirror, so the pid is the mirror's.
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                peaks.append(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024)
            except (OSError, AttributeError):
                pass
        return max(peaks) if peaks else 0.0

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()


def wait_all(procs):
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"bench: a pull failed: {err}")


def run_case(work, binary, reg_url, image, mirrored, rolling):
    """Fresh nodes; all pull at once, or one after another. Returns
    (total seconds, per-node seconds, registry blob bytes, mirror peak RSS)."""
    case = work / f"case-{'mirror' if mirrored else 'direct'}-{'rolling' if rolling else 'burst'}"
    case.mkdir()
    cluster = Cluster(case, binary, mirrored)
    try:
        before = metric(reg_url, "berth_registry_blob_sent_bytes_total")
        start = time.perf_counter()
        per_node = []
        if os.environ.get("BENCH_DEBUG"):
            print(f"case mirrored={mirrored} rolling={rolling}", file=sys.stderr)
        if rolling:
            for i in range(NODES):
                t = time.perf_counter()
                wait_all([cluster.fetch(i, image)])
                per_node.append(time.perf_counter() - t)
        else:
            wait_all([cluster.fetch(i, image) for i in range(NODES)])
        total = time.perf_counter() - start
        sent = metric(reg_url, "berth_registry_blob_sent_bytes_total") - before
        if os.environ.get("BENCH_DEBUG") and mirrored:
            for i in range(NODES):
                text = sh("ip", "netns", "exec", f"{PREFIX}-n{i}", "curl", "-s",
                          f"http://{node_ip(i)}:5001/metrics").stdout
                print(f"node {i}:", [l for l in text.splitlines() if l.startswith("berth_mirror_served")
                                     or "upstream_bytes_total " in l or "resumed_total " in l], file=sys.stderr)
        rss = cluster.peak_rss_mib() if mirrored else 0.0
    finally:
        cluster.stop()
        shutil.rmtree(case, ignore_errors=True)
    return total, per_node, sent, rss


# What the runs so far taught, kept with the table each run rewrites.
NOTES = """
Notes:

- Since issue 16's first steps (2026-11-30), no byte from another node reaches containerd before it verifies (a lying peer's bytes used to reach containerd, which resumed with a Range request, kept the bad prefix and failed the pull). Without piece digests a peer's blob is shown only once whole: the run after that change measured the rolling pull's later nodes at 1.15× a direct pull (0.76× before), the first node at 1.19× (1.00×), all five at once 0.55× (0.51×). With `berth serve`'s piece digests (4 MiB pieces, shown as each verifies, the whole-blob hash skipped) this table's run: later nodes 0.88×, first node 0.90×. All five at once is slower than before these changes (0.65×, and 12.6 s unshaped against 10.2–11.4 s): each node asks the registry for the pieces before it reads from a peer, and the registry hashes a cold blob's pieces on that first ask, on the same 2 cores — computing them at push time, or fetching them while the peer's bytes already flow, is the next step.
"""


def main():
    need("ip", "tc", "containerd", "ctr", "skopeo", "curl")
    binary = os.environ.get("BERTH_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "berth"], cwd=ROOT, check=True)
        binary = str(ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "berth")
    work = Path(tempfile.mkdtemp(prefix="berth-bench-mirror-"))
    registry = None
    try:
        net_up()
        size = make_image(work / "layout")
        registry = subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-reg", binary, "serve", "--listen",
                                     f"{REG_IP}:5000", "--data", str(work / "registry")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "RUST_LOG": "warn"})
        reg_url = f"http://{REG_IP}:5000"
        wait_http(f"{reg_url}/v2/")
        image = f"{REG_IP}:5000/bench/big:v1"
        print("bench: pushing the image", file=sys.stderr)
        sh("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{work / 'layout'}:v1", f"docker://{image}")
        shutil.rmtree(work / "layout")

        print("bench: five nodes at once, direct and through the mirrors", file=sys.stderr)
        d_total, _, d_sent, _ = run_case(work, binary, reg_url, image, mirrored=False, rolling=False)
        m_total, _, m_sent, m_rss = run_case(work, binary, reg_url, image, mirrored=True, rolling=False)
        print("bench: rolling pulls", file=sys.stderr)
        _, d_roll, _, _ = run_case(work, binary, reg_url, image, mirrored=False, rolling=True)
        _, m_roll, mr_sent, mr_rss = run_case(work, binary, reg_url, image, mirrored=True, rolling=True)
        print("bench: five nodes at once, links unshaped (what the CPU allows)", file=sys.stderr)
        reshape("40gbit")
        du_total, _, _, _ = run_case(work, binary, reg_url, image, mirrored=False, rolling=False)
        mu_total, _, _, _ = run_case(work, binary, reg_url, image, mirrored=True, rolling=False)
    finally:
        if registry:
            registry.terminate()
            registry.wait()
        net_down()
        shutil.rmtree(work, ignore_errors=True)

    mib = size / (1 << 20)
    rss = max(m_rss, mr_rss)
    table = [
        "| measure | through berth mirror | straight from the registry | ratio | target |",
        "|---|---|---|---|---|",
        f"| five nodes at once: registry egress / image size | {m_sent / size:.2f} | {d_sent / size:.2f} | | ≤ 1.1 |",
        f"| five nodes at once: time until all have the image | {m_total:.1f} s | {d_total:.1f} s | "
        f"{m_total / d_total:.2f}× | ≤ 0.4× |",
        f"| rolling, first node | {m_roll[0]:.1f} s | {d_roll[0]:.1f} s | {m_roll[0] / d_roll[0]:.2f}× | |",
        f"| rolling, later nodes (median) | {statistics.median(m_roll[1:]):.1f} s | "
        f"{statistics.median(d_roll[1:]):.1f} s | {statistics.median(m_roll[1:]) / statistics.median(d_roll[1:]):.2f}× | |",
        f"| rolling: registry egress / image size | {mr_sent / size:.2f} | {NODES:.2f} | | |",
        f"| mirror peak RSS (max over nodes) | {rss:.1f} MiB | | | ≤ 64 MiB |",
        f"| five nodes at once, links unshaped: time (CPU-bound on this machine) | {mu_total:.1f} s | "
        f"{du_total:.1f} s | {mu_total / du_total:.2f}× | |",
    ]
    ideal = (size * 8 / 1e9) * NODES
    misses = []
    if m_sent / size > 1.1:
        misses.append(f"registry egress is {m_sent / size:.2f}× the image, not ≤ 1.1×")
    if m_total / d_total > 0.4:
        misses.append(
            f"all five nodes take {m_total / d_total:.2f}× the direct time, not ≤ 0.4×: the five 'nodes' here "
            f"share {os.cpu_count()} cores, and with the links unshaped the direct pulls alone take "
            f"{du_total:.1f} s of this machine's CPU (containerd hashing and writing {NODES} × {mib:,.0f} MiB) — "
            f"{du_total / d_total:.0%} of the {d_total:.1f} s the shaped registry link needs (ideal "
            f"{ideal:.1f} s), so no mirror can show 0.4× on this machine; the mirror's own work (hashing, its "
            f"cache, serving peers) adds {mu_total - du_total:.1f} s of it")
    if rss > 64:
        misses.append(f"peak RSS {rss:.1f} MiB exceeds 64 MiB")
    section = "\n".join([
        "## Mirror: five nodes pulling through berth mirror",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores. A {mib:,.0f} MiB image of {LAYERS} "
        f"uncompressed layers of random bytes in `berth serve`; {NODES} nodes, each a network namespace with its "
        f"own containerd and (through the mirror) its own `berth mirror` listing the other four as peers; the "
        f"registry in its own namespace; every link shaped to {RATE}/s each way with tc. A pull is "
        f"`ctr content fetch` inside the node's namespace (the transfer, without unpacking). Fresh containerd "
        f"stores and mirror caches for every case.",
        "",
        "Reproduce: `sudo python3 bench/mirror.py` (needs iproute2, containerd, skopeo).",
        "",
        *table,
        "",
        "A rolling pull cannot beat a direct one here: each node's own link is as fast as the registry's; "
        "what the mirror saves is the registry's egress. The last row reruns the first case with every link "
        "unshaped, to show where this 2-core machine's CPU, not the network, sets the time.",
        "",
        ("Targets missed: " + "; ".join(misses) + "." if misses else "Every target is met in this run."),
        "",
        NOTES.strip(),
        "",
    ])
    write_section("Mirror: five nodes pulling", section)
    print("\n".join(table))


if __name__ == "__main__":
    main()
