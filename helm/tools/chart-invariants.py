#!/usr/bin/env python3
"""The chart's cluster invariants, over several replicas / voters settings (the schema and
helm-check cover the manifests' shape; these are RealMQ's own rules):

- the PodDisruptionBudget never lets a raft majority of the voters go down at once, yet always
  lets one pod go (a drain must be possible);
- the StatefulSet's serviceName is the headless Service (clusterIP None, publishNotReadyAddresses)
  selecting its pods, pods start in parallel, and the node's Kubernetes mode gets the
  StatefulSet name, the headless Service and the voter count;
- the probes use the node's health and readiness endpoints on a declared port;
- a ServiceMonitor (the Prometheus Operator's, not schema-checked) selects exactly the
  headless Service and scrapes /metrics on a port it declares, over HTTPS when the API is;
- with a TLS Secret, the Secret is mounted as a directory (so renewals reach the pod), the node
  gets the certificate paths and its TLS listeners, the Services and ports expose them, and the
  probes speak HTTPS when the API does.

Usage: chart-invariants.py HELM CHART_DIR
"""
import subprocess
import sys

import yaml

helm, chart = sys.argv[1], sys.argv[2]
failures = []


def render(replicas, voters, *sets):
    args = ["--set", f"replicas={replicas}", "--set", f"voters={voters}"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(
        [helm, "template", "rel", chart, *args],
        check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def check(case, cond, what):
    if not cond:
        failures.append(f"{case}: {what}")


for replicas, voters in [(1, 1), (3, 3), (5, 3), (5, 5), (7, 5), (7, 7)]:
    case = f"replicas={replicas} voters={voters}"
    docs = render(replicas, voters)
    kind = lambda k: [d for d in docs if d["kind"] == k]
    (sts,), (pdb,) = kind("StatefulSet"), kind("PodDisruptionBudget")
    majority = voters // 2 + 1
    down = pdb["spec"]["maxUnavailable"]
    check(case, down >= 1, f"the PDB blocks every drain (maxUnavailable {down})")
    check(case, voters == 1 or voters - down >= majority,
          f"the PDB lets {down} of {voters} voters go, below a majority of {majority}")
    spec = sts["spec"]
    check(case, spec["podManagementPolicy"] == "Parallel", "pods must start in parallel")
    headless = [s for s in kind("Service") if s["metadata"]["name"] == spec["serviceName"]]
    check(case, len(headless) == 1, "serviceName names no Service in the render")
    if headless:
        hs = headless[0]["spec"]
        check(case, hs.get("clusterIP") == "None", "the serviceName Service is not headless")
        check(case, hs.get("publishNotReadyAddresses") is True,
              "peers cannot resolve each other before they are ready")
        labels = spec["template"]["metadata"]["labels"]
        check(case, all(labels.get(k) == v for k, v in hs["selector"].items()),
              "the headless Service does not select the pods")
    (c,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(case, env.get("REALMQ_K8S_STATEFULSET") == sts["metadata"]["name"], "wrong StatefulSet name")
    check(case, env.get("REALMQ_K8S_HEADLESS_SERVICE") == spec["serviceName"], "wrong headless Service")
    check(case, env.get("REALMQ_VOTERS") == str(min(voters, replicas)), "wrong voter count")
    # Scaling changes only spec.replicas: a pod template that depends on it would restart
    # every running pod on each scale-out or scale-in.
    if replicas > voters:
        (base,) = [d for d in render(voters, voters) if d["kind"] == "StatefulSet"]
        check(case, spec["template"] == base["spec"]["template"],
              f"the pod template differs from replicas={voters}'s: scaling would roll the pods")
    ports = {p["name"] for p in c["ports"]}
    for probe, path in [("livenessProbe", "/api/v1/health"), ("readinessProbe", "/api/v1/ready")]:
        get = c[probe]["httpGet"]
        check(case, get["path"] == path and get["port"] in ports, f"{probe} is not {path} on a declared port")

for api in [False, True]:
    case = f"tls api={api}"
    docs = render(3, 3, "tls.existingSecret=realmq-tls", "tls.clientCertificates=true",
                  f"tls.api={str(api).lower()}")
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    tls_dir = mounts.get("tls", {}).get("mountPath", "")
    check(case, tls_dir and "subPath" not in mounts["tls"],
          "the TLS Secret is not mounted as a directory (renewals would not reach the pod)")
    check(case, volumes.get("tls", {}).get("secret", {}).get("secretName") == "realmq-tls",
          "the tls volume is not the Secret")
    for key, file in [("REALMQ_TLS_CERT", "tls.crt"), ("REALMQ_TLS_KEY", "tls.key"),
                      ("REALMQ_TLS_CLIENT_CA", "ca.crt")]:
        check(case, env.get(key) == f"{tls_dir}/{file}", f"{key} is not the mounted {file}")
    check(case, env.get("REALMQ_API_TLS") == str(api).lower(), "REALMQ_API_TLS does not follow tls.api")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for name, key in [("mqtts", "REALMQ_MQTTS_ADDR"), ("wss", "REALMQ_WSS_ADDR"), ("ws", "REALMQ_WS_ADDR")]:
        check(case, name in ports and env.get(key) == f"0.0.0.0:{ports[name]}",
              f"{key} and the {name} port disagree")
    (client,) = [d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") != "None"]
    exposed = {p["targetPort"] for p in client["spec"]["ports"]}
    check(case, {"mqtt", "ws", "mqtts", "wss", "api"} <= exposed, f"the client Service exposes only {exposed}")
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"]:
        scheme = c[probe]["httpGet"].get("scheme", "HTTP")
        check(case, scheme == ("HTTPS" if api else "HTTP"), f"{probe} speaks {scheme}")

for api in [False, True]:
    case = f"serviceMonitor api-tls={api}"
    docs = render(3, 3, "metrics.serviceMonitor.enabled=true", "tls.existingSecret=realmq-tls",
                  f"tls.api={str(api).lower()}")
    (sm,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    services = [d for d in docs if d["kind"] == "Service"]
    want = sm["spec"]["selector"]["matchLabels"]
    picked = [s for s in services if all(s["metadata"]["labels"].get(k) == v for k, v in want.items())]
    check(case, len(picked) == 1 and picked[0]["spec"].get("clusterIP") == "None",
          f"the ServiceMonitor selects {[s['metadata']['name'] for s in picked]}, not only the headless Service")
    (ep,) = sm["spec"]["endpoints"]
    if picked:
        check(case, ep["port"] in {p["name"] for p in picked[0]["spec"]["ports"]},
              f"port {ep['port']} is not on the headless Service")
    check(case, ep.get("path") == "/metrics", "the ServiceMonitor does not scrape /metrics")
    check(case, ep.get("scheme", "http") == ("https" if api else "http"), f"scheme {ep.get('scheme')}")

for f in failures:
    print("FAIL", f)
print(f"chart-invariants: {'FAIL' if failures else 'PASS'} ({len(failures)} problems)")
sys.exit(1 if failures else 0)
