"""The policy deploy/'s rendered manifests keep (run by tests/tests/e2e/deploy.rs).

Usage: policy.py RENDERED.yaml...  — prints each violation and exits 1, or
prints what it checked and exits 0. Every workload container: image pinned
by digest (never `latest`), requests and limits for CPU and memory,
liveness and readiness probes, no privilege escalation, a read-only root
filesystem, every capability dropped and none added, and not root — except
the documented one: the node mirror, root only to read containerd's
content store, which it must mount read-only. Only the mirror uses the
host network or hostPath volumes. Prometheus Operator objects (no schema
here) must select something that exists in the same render.
"""
import re
import sys

import yaml

DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_spec(d):
    kind = d.get("kind")
    if kind in POD_KINDS:
        return d["spec"]["template"]["spec"], d["spec"]["template"]["metadata"].get("labels", {})
    if kind == "CronJob":
        t = d["spec"]["jobTemplate"]["spec"]["template"]
        return t["spec"], t["metadata"].get("labels", {})
    if kind == "Pod":
        return d["spec"], d["metadata"].get("labels", {})
    return None, None


def selects(match, labels):
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def main(files):
    docs = [d for f in files for d in yaml.safe_load_all(open(f)) if d]
    problems = []
    containers = 0
    pods = []  # (labels, container port names)
    for d in docs:
        spec, labels = pod_spec(d)
        if spec is None:
            continue
        name = f"{d['kind']}/{d['metadata']['name']}"
        is_mirror = d["kind"] == "DaemonSet" and d["metadata"]["name"] == "berth-mirror"
        host_paths = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
        if (host_paths or spec.get("hostNetwork")) and not is_mirror:
            problems.append(f"{name}: only the node mirror may use the host network or hostPath volumes")
        if spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{name}: shares the host's PID or IPC namespace")
        pod_sc = spec.get("securityContext", {})
        ports = set()
        for c in spec.get("initContainers", []) + spec["containers"]:
            containers += 1
            where = f"{name} container {c['name']}"
            ports |= {p.get("name") for p in c.get("ports", [])}
            image = c.get("image", "")
            if not DIGEST.match(image):
                problems.append(f"{where}: image {image!r} is not pinned by digest")
            repo_tag = image.split("@")[0]
            if repo_tag.rsplit("/", 1)[-1].endswith(":latest"):
                problems.append(f"{where}: image {image!r} names the tag latest")
            res = c.get("resources", {})
            for k in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(k, {}):
                        problems.append(f"{where}: no {k}.{r}")
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    problems.append(f"{where}: no {probe}")
            sc = c.get("securityContext", {})
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: the root filesystem is writable")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []):
                problems.append(f"{where}: capabilities are not all dropped")
            if caps.get("add"):
                problems.append(f"{where}: adds capabilities {caps['add']}")
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            if non_root is not True:
                mounts = [m for m in c.get("volumeMounts", []) if "io.containerd.content" in host_paths.get(m["name"], "")]
                if not (is_mirror and mounts and all(m.get("readOnly") for m in mounts)):
                    problems.append(f"{where}: may run as root (only the mirror may, to read containerd's content store read-only)")
        pods.append((labels, ports))
    services = [d for d in docs if d.get("kind") == "Service"]
    for d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        if kind == "ServiceMonitor":
            match = d["spec"]["selector"].get("matchLabels", {})
            wanted = {e["port"] for e in d["spec"]["endpoints"]}
            hits = [s for s in services if selects(match, s["metadata"].get("labels", {}))
                    and wanted <= {p.get("name") for p in s["spec"]["ports"]}]
            if not hits:
                problems.append(f"ServiceMonitor/{name}: selects no Service with ports {sorted(wanted)}")
        elif kind == "PodMonitor":
            match = d["spec"]["selector"].get("matchLabels", {})
            wanted = {e["port"] for e in d["spec"]["podMetricsEndpoints"]}
            if not any(selects(match, labels) and wanted <= ports for labels, ports in pods):
                problems.append(f"PodMonitor/{name}: selects no pod with ports {sorted(wanted)}")
        elif kind == "PrometheusRule":
            for g in d["spec"]["groups"]:
                for r in g["rules"]:
                    if not r.get("alert") or not r.get("expr") or "severity" not in r.get("labels", {}):
                        problems.append(f"PrometheusRule/{name}: rule {r.get('alert')!r} lacks alert, expr or a severity")
    if problems:
        print("\n".join(problems))
        return 1
    print(f"policy: {containers} containers in {len(pods)} workloads comply")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
