#!/usr/bin/env python3
"""Renders the chart and prints, as JSON, how to run its StatefulSet's pods as plain
containers: the container command, each pod's environment with the downward API and Secret
references resolved the way the kubelet would, the ConfigMap files and where they are mounted,
the data volume's mount path, the security context, the memory limit, the ports and the probes.
`make cluster-test` (cluster-tests/src/containers/) starts the containers from this, so what
forms the cluster there is the chart's own configuration, not a copy of it.

Usage: pod-plan.py HELM CHART [--set key=value ...]
The release is named like the chart, so the pods are realmq-0, realmq-1, ... under the
headless Service realmq-headless.
"""
import base64
import json
import subprocess
import sys

import yaml


def fail(why):
    sys.exit(f"pod-plan: {why}")


def quantity(q):
    """A Kubernetes memory quantity in bytes (None when unset)."""
    if q is None:
        return None
    q = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * factor)
    return int(q)


def http_probe(probe):
    if not probe:
        return None
    get = probe.get("httpGet") or fail("only httpGet probes are supported")
    return {"path": get["path"], "port": get["port"]}


def main():
    if len(sys.argv) < 3:
        fail(__doc__)
    helm, chart, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
    out = subprocess.run([helm, "template", "realmq", chart, *sets],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"helm template failed: {out.stderr}")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    by_kind = lambda k: [d for d in docs if d["kind"] == k]
    (sts,) = by_kind("StatefulSet")
    secrets = {d["metadata"]["name"]: d for d in by_kind("Secret")}
    config_maps = {d["metadata"]["name"]: d for d in by_kind("ConfigMap")}
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

    def port_number(p):
        return ports[p] if isinstance(p, str) else p

    def secret_value(ref):
        s = secrets.get(ref["name"]) or fail(f"Secret {ref['name']} is not part of the render")
        if ref["key"] in s.get("stringData", {}):
            return s["stringData"][ref["key"]]
        return base64.b64decode(s["data"][ref["key"]]).decode()

    def env_for(pod_name):
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = str(e["value"])
                continue
            src = e.get("valueFrom") or {}
            if src.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = pod_name
            elif "secretKeyRef" in src:
                env[e["name"]] = secret_value(src["secretKeyRef"])
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                env[e["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
            else:
                fail(f"env {e['name']}: unsupported source {src}")
        return env

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    files, data_mount = [], None
    for m in c.get("volumeMounts", []):
        if m["name"] in claims:
            data_mount = m["mountPath"]
            continue
        v = volumes.get(m["name"]) or fail(f"volume {m['name']} is not defined")
        if "configMap" not in v:
            fail(f"volume {m['name']}: only ConfigMap volumes and claims are supported")
        cm = config_maps[v["configMap"]["name"]]
        for name, content in cm.get("data", {}).items():
            files.append({"dir": m["mountPath"], "name": name, "content": content})

    pod_sec, sec = pod.get("securityContext", {}), c.get("securityContext", {})
    replicas = spec["replicas"]
    name = sts["metadata"]["name"]
    plan = {
        "statefulset": name,
        "headless": spec["serviceName"],
        "replicas": replicas,
        "image": c["image"],
        "command": c.get("command", []) + c.get("args", []),
        "pods": [{"name": f"{name}-{i}", "env": env_for(f"{name}-{i}")} for i in range(replicas)],
        "files": files,
        "data_mount": data_mount or fail("no volume claim is mounted"),
        "user": sec.get("runAsUser", pod_sec.get("runAsUser")),
        "group": sec.get("runAsGroup", pod_sec.get("runAsGroup")),
        "read_only_root": bool(sec.get("readOnlyRootFilesystem")),
        "drop_all_capabilities": "ALL" in sec.get("capabilities", {}).get("drop", []),
        "no_new_privileges": sec.get("allowPrivilegeEscalation") is False,
        "memory_limit": quantity(c.get("resources", {}).get("limits", {}).get("memory")),
        "ports": ports,
        "readiness": http_probe(c.get("readinessProbe")),
        "liveness": http_probe(c.get("livenessProbe")),
        "termination_grace_seconds": pod.get("terminationGracePeriodSeconds", 30),
    }
    for probe in ("readiness", "liveness"):
        if plan[probe]:
            plan[probe]["port"] = port_number(plan[probe]["port"])
    json.dump(plan, sys.stdout, indent=1)
    print()


main()
