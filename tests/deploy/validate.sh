#!/usr/bin/env bash
# Checks the files under deploy/ without deploying them:
#  1. every YAML file parses (PyYAML, all documents), and the parts the
#     runbook relies on are there (k8s kinds and names, compose services and
#     flags, the cloud-init copy of the unit is identical to the unit);
#  2. `systemd-analyze verify` finds nothing to say about the unit (it only
#     warns about unknown keys and bad values, exit 0, so any output fails),
#     with ExecStart pointed at an executable that exists here;
#  3. no token is written into a deploy file;
#  4. every Kubernetes manifest under deploy/k8s/ (but the kustomization,
#     which is kustomize's file, not an API object) validates against the
#     API schemas of the Kubernetes release K8S_VERSION names, offline, in strict mode
#     (unknown fields are errors) with the PyPI package kubernetes-validate;
#     an object whose apiVersion/kind that version does not serve fails too.
# What it does not check: that the image builds, what a live API server
# would add (admission, quotas, webhooks), that cloud-init runs on a VM.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The Kubernetes release the manifests are checked against.
K8S_VERSION=1.35.0

python3 -c 'import yaml' 2>/dev/null || {
    echo "FAIL: python3 with PyYAML is needed (pip install pyyaml)" >&2
    exit 1
}

echo "== YAML under deploy/"
python3 - <<'PY'
import glob, sys, yaml

def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)

files = sorted(glob.glob("deploy/**/*.yaml", recursive=True) + glob.glob("deploy/**/*.yml", recursive=True))
if not files:
    fail("no YAML under deploy/")
docs = {}
for f in files:
    try:
        docs[f] = [d for d in yaml.safe_load_all(open(f)) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{f}: {e}")
    print(f"ok  {f}: {len(docs[f])} document(s)")

# Kubernetes: every manifest names its kind, and the pieces fit together.
kinds = {}
for f in files:
    if not f.startswith("deploy/k8s/"):
        continue
    for d in docs[f]:
        for k in ("apiVersion", "kind"):
            if k not in d:
                fail(f"{f}: a document has no {k}")
        if d["kind"] != "Kustomization":
            kinds[(d["kind"], d["metadata"]["name"])] = d
for want in [("Namespace", "cwbench"), ("Secret", "cwbench-token"), ("Service", "cwbench-agent"),
             ("StatefulSet", "cwbench-agent"), ("Job", "cwbench-coordinator")]:
    if want not in kinds:
        fail(f"deploy/k8s: no {want[0]} {want[1]}")
svc = kinds[("Service", "cwbench-agent")]
if svc["spec"].get("clusterIP") != "None":
    fail("the agent Service must be headless (clusterIP: None)")
sts = kinds[("StatefulSet", "cwbench-agent")]
if sts["spec"]["serviceName"] != "cwbench-agent":
    fail("StatefulSet serviceName must be the headless Service")
agent = sts["spec"]["template"]["spec"]["containers"][0]
if not agent["resources"].get("requests") or not agent["resources"].get("limits"):
    fail("the agent container needs resource requests and limits")
job = kinds[("Job", "cwbench-coordinator")]["spec"]["template"]["spec"]["containers"][0]
if "dns:cwbench-agent.cwbench.svc.cluster.local:7070" not in job["args"]:
    fail("the coordinator Job must use --agents dns:cwbench-agent.cwbench.svc.cluster.local:7070")
for c in (agent, job):
    env = {e["name"]: e for e in c["env"]}
    if env["CWBENCH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] != "cwbench-token":
        fail(f"{c['name']}: CWBENCH_TOKEN must come from the Secret")

# Compose: three agents with different CPU limits, the coordinator names them.
compose = docs["deploy/compose.yaml"][0]
services = compose["services"]
cpus = sorted(float(services[a]["cpus"]) for a in ("agent1", "agent2", "agent3"))
if cpus != [1.0, 2.0, 4.0]:
    fail(f"compose: agent cpus limits are {cpus}, want 1, 2, 4")
cmd = services["coordinator"]["command"]
for a in ("agent1:7070", "agent2:7070", "agent3:7070"):
    if a not in cmd:
        fail(f"compose: the coordinator does not name {a}")
for name, s in services.items():
    tok = s["environment"]["CWBENCH_TOKEN"]
    if not tok.startswith("${CWBENCH_TOKEN"):
        fail(f"compose: {name} must take CWBENCH_TOKEN from the environment")

# cloud-init: a cloud-config whose unit is the unit.
ci_path = "deploy/cloud-init/user-data.yaml"
if not open(ci_path).read().startswith("#cloud-config\n"):
    fail(f"{ci_path}: must start with #cloud-config")
ci = docs[ci_path][0]
wf = {w["path"]: w for w in ci["write_files"]}
unit = open("deploy/systemd/cwbench-agent.service").read()
if wf["/etc/systemd/system/cwbench-agent.service"]["content"] != unit:
    fail(f"{ci_path}: its copy of the unit differs from deploy/systemd/cwbench-agent.service")
if wf["/etc/cwbench/agent.env"]["permissions"] != "0600":
    fail(f"{ci_path}: agent.env must be 0600")
if ["systemctl", "enable", "--now", "cwbench-agent.service"] not in ci["runcmd"]:
    fail(f"{ci_path}: must enable the unit")
print("ok  k8s, compose and cloud-init fit together")
PY

echo "== deploy/k8s/ against the Kubernetes $K8S_VERSION API schemas (kubernetes-validate --strict)"
python3 -c 'import kubernetes_validate' 2>/dev/null || {
    echo "FAIL: python3 with kubernetes-validate is needed (pip install kubernetes-validate)" >&2
    exit 1
}
# Prints every problem; fails on an error, and on a warning (it only warns,
# exit 0, when it has no schema for an object's apiVersion and kind).
k8s_validate() {
    local out rc=0
    out=$(python3 -m kubernetes_validate --strict --kubernetes-version "$K8S_VERSION" "$@" 2>&1) || rc=$?
    echo "$out"
    [ "$rc" -eq 0 ] && ! grep -q '^WARN' <<<"$out"
}
manifests=()
for f in deploy/k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
k8s_validate "${manifests[@]}" || {
    echo "FAIL: a manifest under deploy/k8s/ is not a valid Kubernetes $K8S_VERSION object (above)" >&2
    exit 1
}
# The checker must catch what it claims to: a misspelt field and an API
# version this Kubernetes does not serve.
k8s_tmp=$(mktemp -d)
sed 's/^\( *\)serviceName:/\1serviceNme:/' deploy/k8s/agents.yaml >"$k8s_tmp/misspelt.yaml"
sed 's#^apiVersion: apps/v1$#apiVersion: apps/v1beta1#' deploy/k8s/agents.yaml >"$k8s_tmp/old-api.yaml"
for broken in misspelt old-api; do
    if k8s_validate "$k8s_tmp/$broken.yaml" >/dev/null; then
        rm -rf "$k8s_tmp"
        echo "FAIL: kubernetes-validate passed a broken copy ($broken) of agents.yaml; this check proves nothing" >&2
        exit 1
    fi
done
rm -rf "$k8s_tmp"
echo "ok  kubernetes-validate $(python3 -m kubernetes_validate --version 2>&1 | awk '{print $NF}'), Kubernetes $K8S_VERSION, strict"

echo "== no token in deploy/"
# Tokens are 64 hex digits from `openssl rand -hex 32`; none may be committed.
if grep -rEn '[0-9a-f]{32,}' deploy/; then
    echo "FAIL: deploy/ holds something that looks like a token" >&2
    exit 1
fi
echo "ok"

echo "== systemd unit"
unit=deploy/systemd/cwbench-agent.service
grep -qx 'ExecStart=/usr/local/bin/cwbench-agent --listen 0.0.0.0:7070' "$unit"
grep -qx 'EnvironmentFile=/etc/cwbench/agent.env' "$unit"
grep -q '^CWBENCH_TOKEN=' deploy/systemd/agent.env.example
if ! command -v systemd-analyze >/dev/null; then
    echo "SKIP: systemd-analyze not installed; the unit was not verified"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# verify checks that ExecStart's binary exists: point it at one that does.
sed 's#^ExecStart=/usr/local/bin/cwbench-agent #ExecStart=/bin/true #' "$unit" >"$tmp/cwbench-agent.service"
out=$(systemd-analyze verify "$tmp/cwbench-agent.service" 2>&1) || {
    echo "FAIL: systemd-analyze verify: $out" >&2
    exit 1
}
if [ -n "$out" ]; then
    echo "FAIL: systemd-analyze verify has warnings:" >&2
    echo "$out" >&2
    exit 1
fi
# The checker must catch what it claims to: a misspelt key and a bad value.
printf 'ProtectSytem=strict\nProtectHome=sideways\n' >>"$tmp/cwbench-agent.service"
out=$(systemd-analyze verify "$tmp/cwbench-agent.service" 2>&1 || true)
if [ -z "$out" ]; then
    echo "FAIL: systemd-analyze did not flag a broken copy of the unit; this check proves nothing" >&2
    exit 1
fi
echo "ok  $(systemd-analyze --version | head -1): no warnings"
