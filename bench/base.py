#!/usr/bin/env python3
"""Base-image benchmark (issue 20): `berth build` of a ~200 MB Nix closure
on a ~200 MB base image (`fromImage`, an OCI layout made with umoci from
host files) against the same closure without a base, and the push of the
image on a base to a `berth serve` that already holds the base: what it
sends against the image's own layers. Writes the table to
docs/benchmarks.md. A benchmark, not a test: it asserts nothing.

    python3 bench/base.py            # builds berth --release first
    BERTH_BIN=target/release/berth python3 bench/base.py

nixpkgs' `buildImage` with `fromImage` and `stream_layered_image.py` with
`from_image` need nixpkgs, which this machine cannot download; they are
not compared here.

Needs: apt-get install -y nix-bin busybox-static umoci skopeo
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchdoc import write_section

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
NIX = ["--option", "substituters", ""]


def need(*programs):
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        sys.exit(f"bench: missing {' '.join(missing)}: apt-get install -y nix-bin busybox-static umoci skopeo")


def tree_size(paths):
    return sum(f.stat().st_size for p in paths for f in Path(p).rglob("*")
               if f.is_file() and not f.is_symlink())


def pick(src, budget):
    """Entries of `src`, in name order, until their files reach `budget` bytes."""
    chosen, total = [], 0
    for e in sorted(Path(src).iterdir()):
        if total >= budget:
            break
        size = tree_size([e]) if e.is_dir() else (e.stat().st_size if e.is_file() and not e.is_symlink() else 0)
        if size == 0 or total + size > budget * 1.1:
            continue
        chosen.append(e)
        total += size
    return chosen, total


def make_base(work):
    """A ~200 MB base: shared libraries, as a distribution image has them."""
    entries, total = pick("/usr/lib/x86_64-linux-gnu", 200 << 20)
    root = work / "base-root" / "usr" / "lib"
    root.mkdir(parents=True)
    for e in entries:
        dest = root / e.name
        if e.is_dir():
            shutil.copytree(e, dest, symlinks=True)
        else:
            shutil.copy2(e, dest, follow_symlinks=False)
    layout = work / "base"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    img = f"{layout}:1"
    subprocess.run(["umoci", "new", "--image", img], check=True)
    subprocess.run(["umoci", "insert", "--image", img, str(work / "base-root"), "/"], check=True,
                   capture_output=True)
    index = json.loads((layout / "index.json").read_text())
    return layout, index["manifests"][0]["digest"], total


def make_closure(work):
    """A ~200 MB closure: /usr/share entries in four store paths."""
    entries, total = pick("/usr/share", 200 << 20)
    lists = [entries[i::4] for i in range(4)]
    drvs = "\n".join(
        f'''  part{i} = mk "bench-base-part{i}" \'\'
    ${{bb}} mkdir -p $out
    {" ".join(f'${{bb}} cp -a {e} $out/ 2>/dev/null || true;' for e in part)}
  \'\';'''
        for i, part in enumerate(lists))
    refs = " ".join(f"${{part{i}}}" for i in range(4))
    (work / "bbdir" / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", work / "bbdir" / "bin" / "busybox")
    (work / "default.nix").write_text(f'''
let
  bbdir = builtins.path {{ path = ./bbdir; name = "busybox-static"; }};
  bb = "${{bbdir}}/bin/busybox";
  mk = name: script: builtins.derivation {{
    inherit name; system = builtins.currentSystem;
    builder = bb; args = [ "sh" "-c" script ];
  }};
in rec {{
{drvs}
  app = mk "bench-base-app" \'\'
    ${{bb}} mkdir -p $out/bin
    ${{bb}} echo "{refs}" > $out/bin/manifest
  \'\';
}}
''')
    app = subprocess.run(["nix-build", *NIX, str(work), "-A", "app", "--no-out-link"],
                         check=True, capture_output=True, text=True).stdout.strip()
    info = subprocess.run(["nix", "--extra-experimental-features", "nix-command", *NIX,
                           "path-info", "--json", "--recursive", app],
                          check=True, capture_output=True, text=True).stdout
    closure = json.loads(info)
    if isinstance(closure, dict):
        closure = [dict(v, path=k) for k, v in closure.items()]
    return app, closure, total


def timed(cmd):
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, out.stdout.strip()


def metric(url, name):
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0


def main():
    need("nix-build", "nix", "busybox", "umoci", "skopeo")
    binary = os.environ.get("BERTH_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "berth"], cwd=ROOT, check=True)
        binary = str(ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "berth")
    work = Path(tempfile.mkdtemp(prefix="berth-bench-base-"))
    server = None
    try:
        print("bench: making the base with umoci and the closure with nix-build", file=sys.stderr)
        layout, base_digest, base_files = make_base(work)
        app, closure, closure_files = make_closure(work)
        base_manifest = json.loads((layout / "blobs/sha256" / base_digest.split(":")[1]).read_text())
        base_blob_bytes = sum(l["size"] for l in base_manifest["layers"])
        plain = {"version": 1, "closure": closure, "roots": [app]}
        on_base = dict(plain, fromImage={"reference": f"bench.local/base:1@{base_digest}",
                                         "layout": str(layout)})
        specs = {}
        for name, spec in (("closure", plain), ("base", on_base)):
            specs[name] = work / f"spec-{name}.json"
            specs[name].write_text(json.dumps(spec))
        # Warm the page cache for both.
        subprocess.run(["sh", "-c", f"cat {layout}/blobs/sha256/* > /dev/null; "
                        + " ".join(f"tar -cf /dev/null {p['path']};" for p in closure)], check=True)

        times = {"closure": [], "base": []}
        digests = {}
        for i in range(RUNS):
            for name in ("closure", "base"):
                out = work / f"out-{name}-{i}"
                t, digest = timed([binary, "build", str(specs[name]), "-q", "--no-cache",
                                   "-o", f"oci:{out}:v1"])
                times[name].append(t)
                digests.setdefault(name, digest)
                shutil.rmtree(out)
        closure_t = statistics.median(times["closure"])
        base_t = statistics.median(times["base"])

        # Push to a registry that already holds the base.
        data = work / "registry"
        server = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data", str(data)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = server.stdout.readline()
        url = "http://" + line.split("http://")[1].split()[0]
        host = url.removeprefix("http://")
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                        f"oci:{layout}:1", f"docker://{host}/library/base:1"], check=True)
        before = metric(url, "berth_registry_received_bytes_total")
        push_t, digest = timed([binary, "build", str(specs["base"]), "-q", "--no-cache", "--no-sbom",
                                "--push", f"{host}/apps/on-base:1"])
        sent = metric(url, "berth_registry_received_bytes_total") - before
        manifest = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{url}/v2/apps/on-base/manifests/{digest}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})).read())
        own = sum(l["size"] for l in manifest["layers"][len(base_manifest["layers"]):])
        own += manifest["config"]["size"]

        mib = 1 << 20
        section = f"""## Base images: a {closure_files / mib:.0f} MiB closure on a {base_files / mib:.0f} MiB base (`fromImage`)

Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores; berth release build; median of {RUNS}
runs each, interleaved, no layer cache (`--no-cache`), outputs to an OCI layout on the same disk. The base:
{base_files / mib:.0f} MiB of host shared libraries in one layer made with umoci ({base_blob_bytes / mib:.0f} MiB
compressed). The closure: {closure_files / mib:.0f} MiB of `/usr/share` in 4 store paths plus a root,
built with nix-bin.

| build | time | vs the closure alone | target |
|---|---|---|---|
| closure alone | {closure_t:.2f} s | 1.00× | |
| the same closure on the base | {base_t:.2f} s | **{base_t / closure_t:.2f}×** | ≤ 1.05× |

The base's layers are verified and hard-linked into the output, never unpacked or recompressed, so the
base adds the time to hash {base_blob_bytes / mib:.0f} MiB and nothing else.

| push to a registry that holds the base | bytes received | the image's own layers and config | base layers |
|---|---|---|---|
| `berth build --push` (mounted from `library/base`) | {sent:,} | {own:,} | {base_blob_bytes:,} (sent: none) |

The push took {push_t:.2f} s including the build. nixpkgs' `buildImage` with `fromImage` and
`stream_layered_image.py` with `from_image` need nixpkgs, which this machine cannot download, so they are
not in this table.

Reproduce: `python3 bench/base.py` (needs nix-bin, busybox-static, umoci, skopeo).
"""
        print(section)
        write_section("Base images:", section)
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
