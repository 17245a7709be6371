#!/usr/bin/env bash
# Validates deploy/kubernetes offline; exits non-zero on any problem.
#
#  1. Every YAML document (secret.example.yaml included; kustomization.yaml is not a
#     Kubernetes object) against the Kubernetes JSON schemas bundled by
#     kubernetes-validate (PyPI), strictly (unknown fields and unknown kinds fail), for
#     the oldest Kubernetes we support and the newest one bundled.
#  2. kustomization.yaml lists every manifest except secret.example.yaml; when kubectl
#     (or kustomize) is installed, its rendered output is validated the same way.
#  3. What schemas cannot see: every variable of src/config.rs KEYS reaches the serving
#     pods (ConfigMap or Secret), secrets only come from Secrets, every secretKeyRef and
#     selector points at something that exists, the shutdown budget fits in
#     terminationGracePeriodSeconds, the ports agree with HTTP_ADDR/METRICS_ADDR.
#  4. When a built agents-api binary is at hand, `agents-api check-config` accepts the
#     ConfigMap's values (with stand-in secrets) under APP_ENV=production.
#
# Needs python3 with venv; installs kubernetes-validate into target/k8s-venv on first use
# (then reused, offline). Overrides: K8S_VALIDATE_VERSIONS="1.30.0 1.37.0",
# AGENTS_API_BIN=path/to/agents-api.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The kubernetes-validate release; it bundles the schemas of Kubernetes 1.25 to 1.37.
KV_VERSION=1.37.0
# 1.30: the oldest version that runs these manifests as written (the preStop `sleep`
# action exists from 1.29 but is enabled by default from 1.30); 1.37: the newest bundled.
read -r -a K8S_VERSIONS <<<"${K8S_VALIDATE_VERSIONS:-1.30.0 1.37.0}"
VENV=target/k8s-venv
DIR=deploy/kubernetes

die() {
  printf 'validate-k8s.sh: %s\n' "$*" >&2
  exit 1
}

# ---- kubernetes-validate in its own venv, reused when it has the pinned version ----------
if [[ $("$VENV/bin/kubernetes-validate" --version 2>/dev/null) != "$KV_VERSION" ]]; then
  command -v python3 >/dev/null || die "python3 is missing (apt-get install python3 python3-venv)"
  echo "validate-k8s.sh: installing kubernetes-validate==$KV_VERSION into $VENV" >&2
  python3 -m venv --clear "$VENV" ||
    die "cannot create a venv (Debian/Ubuntu: apt-get install python3-venv)"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install --quiet "kubernetes-validate==$KV_VERSION" ||
    die "cannot install kubernetes-validate==$KV_VERSION from PyPI (offline? a previous $VENV can be copied in)"
fi

# ---- render the kustomization when a tool for it exists ----------------------------------
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
render_tool=""
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  render_tool="kubectl kustomize"
  kubectl kustomize "$DIR" >"$rendered" || die "kubectl kustomize $DIR failed"
elif command -v kustomize >/dev/null; then
  render_tool="kustomize build"
  kustomize build "$DIR" >"$rendered" || die "kustomize build $DIR failed"
else
  echo "validate-k8s.sh: no kubectl (with kustomize) nor kustomize here: skipping the kustomize render" >&2
fi

# ---- a binary to run check-config with: only when newer than the configuration code ------
bin="${AGENTS_API_BIN:-}"
if [[ -z $bin ]]; then
  for candidate in target/debug/agents-api target/release/agents-api; do
    [[ -x $candidate && (-z $bin || $candidate -nt $bin) ]] && bin=$candidate
  done
  if [[ -n $bin ]]; then
    for source in src/config.rs config/*.toml; do
      if [[ $source -nt $bin ]]; then
        echo "validate-k8s.sh: $bin is older than $source: skipping check-config (build first)" >&2
        bin=""
        break
      fi
    done
  fi
fi

exec "$VENV/bin/python" - "$DIR" "$KV_VERSION" "$render_tool" "$rendered" "$bin" "${K8S_VERSIONS[@]}" <<'PY'
import glob, os, re, subprocess, sys, tempfile
import yaml
import kubernetes_validate as kv
from kubernetes_validate.utils import SchemaNotFoundError, VersionNotSupportedError

directory, kv_version, render_tool, rendered_path, binary, *versions = sys.argv[1:]
errors = []

def error(msg):
    errors.append(msg)
    print(f"ERROR {msg}")

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]

def validate(where, docs):
    for doc in docs:
        if not isinstance(doc, dict):
            error(f"{where}: a document is not a mapping")
            continue
        name = f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
        ok = True
        for v in versions:
            try:
                kv.validate(doc, v, strict=True)
            except SchemaNotFoundError:
                ok = False
                error(f"{where}: {name}: no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {v}")
            except VersionNotSupportedError:
                sys.exit(f"validate-k8s.sh: kubernetes-validate {kv_version} has no schemas for Kubernetes {v}")
            except kv.ValidationError as e:
                ok = False
                path = ".".join(str(p) for p in e.path) or "(top)"
                error(f"{where}: {name} invalid for Kubernetes {v}: {path}: {e.message}")
        if ok:
            print(f"ok    {where}: {name} (Kubernetes {', '.join(v.rsplit('.', 1)[0] for v in versions)})")

# 1. Every manifest, schema-validated.
files = sorted(glob.glob(os.path.join(directory, "*.yaml")) + glob.glob(os.path.join(directory, "*.yml")))
manifests = {}
for path in files:
    base = os.path.basename(path)
    try:
        docs = load(path)
    except yaml.YAMLError as e:
        error(f"{path}: not YAML: {e}")
        continue
    if base == "kustomization.yaml":
        continue
    manifests[base] = docs
    validate(path, docs)

# 2. The kustomization lists every manifest but the example Secret.
kustomization = load(os.path.join(directory, "kustomization.yaml"))[0]
listed = kustomization.get("resources", [])
for r in listed:
    if r not in manifests:
        error(f"kustomization.yaml: resource {r} does not exist in {directory}")
for base in manifests:
    if base == "secret.example.yaml":
        if base in listed:
            error("kustomization.yaml: secret.example.yaml must not be a resource (placeholder credentials)")
    elif base not in listed:
        error(f"kustomization.yaml: {base} is not listed in resources")
if render_tool:
    try:
        docs = load(rendered_path)
    except yaml.YAMLError as e:
        docs = []
        error(f"{render_tool} output is not YAML: {e}")
    expected = sum(len(manifests[r]) for r in listed if r in manifests)
    if len(docs) != expected:
        error(f"{render_tool}: rendered {len(docs)} objects, the listed files hold {expected}")
    validate(f"{render_tool} {directory}", docs)

# 3. Consistency the schemas cannot check.
objects = [d for docs in manifests.values() for d in docs]
def find(kind, name=None):
    return [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]

config_rs = open("src/config.rs").read()
m = re.search(r"pub const KEYS: &\[&str\] = &\[(.*?)\];", config_rs, re.S)
keys = set(re.findall(r'"([A-Z0-9_]+)"', m.group(1))) if m else set()
if not keys:
    error("src/config.rs: KEYS not found")
# Only the migration Job holds the owner credentials.
OWNER_ONLY = {"DATABASE_MIGRATION_URL"}
SECRETS = {"DATABASE_URL", "DATABASE_MIGRATION_URL", "REDIS_URL", "JWT_SECRET", "ENCRYPTION_KEYS", "SENTRY_DSN"}
EXTRA = {"RUST_LOG"}  # read by the logging set-up, not by Config

secrets = {s["metadata"]["name"]: set((s.get("stringData") or {}) | (s.get("data") or {}))
           for s in manifests.get("secret.example.yaml", []) if s.get("kind") == "Secret"}
configmaps = {c["metadata"]["name"]: c.get("data") or {} for c in find("ConfigMap")}
cm = configmaps.get("agents-api-config")
if cm is None:
    error("configmap.yaml: ConfigMap agents-api-config missing")
    cm = {}
for k in sorted(set(cm) - keys - EXTRA):
    error(f"ConfigMap agents-api-config: {k} is not a configuration key (src/config.rs KEYS)")
for k in sorted(set(cm) & SECRETS):
    error(f"ConfigMap agents-api-config: {k} is a secret; reference it from a Secret")

def env_of(container, where):
    """Names the container receives, checking that every reference resolves."""
    names = {}
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef", {}).get("name")
        if ref not in configmaps:
            error(f"{where}: envFrom ConfigMap {ref} is not defined here")
        for k in configmaps.get(ref, {}):
            names[k] = ("configmap", ref)
    for e in container.get("env", []):
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            if ref["key"] not in secrets.get(ref["name"], set()):
                error(f"{where}: {e['name']} -> Secret {ref['name']} key {ref['key']} is not in secret.example.yaml")
            names[e["name"]] = ("secret", ref["name"])
        else:
            names[e["name"]] = ("value", None)
    for k in sorted(SECRETS & set(names)):
        if names[k][0] != "secret":
            error(f"{where}: {k} must come from a Secret")
    return names

pod_templates = [o["spec"]["template"] for kind in ("Deployment", "Job") for o in find(kind)]
deployments = find("Deployment", "agents-api")
if not deployments:
    error("deployment.yaml: Deployment agents-api missing")
else:
    dep = deployments[0]
    pod = dep["spec"]["template"]
    ctr = pod["spec"]["containers"][0]
    names = env_of(ctr, "Deployment agents-api")
    for k in sorted(keys - OWNER_ONLY - set(names)):
        error(f"Deployment agents-api: {k} (src/config.rs KEYS) is neither in the ConfigMap nor in env")
    for k in sorted(OWNER_ONLY & set(names)):
        error(f"Deployment agents-api: {k} must not reach the serving pods (owner credentials)")
    # Shutdown budget: preStop sleep + drain delay + grace < terminationGracePeriodSeconds.
    sleep = ((ctr.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    drain, grace = int(cm.get("SHUTDOWN_DRAIN_DELAY_SECS", 0)), int(cm.get("SHUTDOWN_GRACE_SECS", 25))
    tgps = pod["spec"].get("terminationGracePeriodSeconds", 30)
    if not sleep + drain + grace < tgps:
        error(f"Deployment agents-api: terminationGracePeriodSeconds {tgps} <= preStop {sleep} + "
              f"SHUTDOWN_DRAIN_DELAY_SECS {drain} + SHUTDOWN_GRACE_SECS {grace}")
    else:
        print(f"ok    shutdown budget: preStop {sleep} + drain {drain} + grace {grace} = {sleep + drain + grace} s "
              f"< terminationGracePeriodSeconds {tgps} s")
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
    for var, port_name in (("HTTP_ADDR", "http"), ("METRICS_ADDR", "metrics")):
        addr_port = int(cm.get(var, ":0").rsplit(":", 1)[1] or 0)
        if ports.get(port_name) != addr_port:
            error(f"Deployment agents-api: containerPort {port_name} {ports.get(port_name)} != {var} port {addr_port}")
    annotation = (pod["metadata"].get("annotations") or {}).get("prometheus.io/port")
    if annotation != str(ports.get("metrics")):
        error(f"Deployment agents-api: prometheus.io/port {annotation} != metrics port {ports.get('metrics')}")
jobs = find("Job", "agents-api-migrate")
if not jobs:
    error("migration-job.yaml: Job agents-api-migrate missing")
else:
    names = env_of(jobs[0]["spec"]["template"]["spec"]["containers"][0], "Job agents-api-migrate")
    if names.get("DATABASE_MIGRATION_URL") != ("secret", "agents-api-owner"):
        error("Job agents-api-migrate: DATABASE_MIGRATION_URL must come from Secret agents-api-owner")
    # `migrate` validates the whole configuration: the required secrets must be there too.
    for k in sorted(SECRETS - {"SENTRY_DSN"} - set(names)):
        error(f"Job agents-api-migrate: {k} is missing (migrate validates the whole configuration)")

# Selectors select something.
def selects(selector):
    return any(all(t["metadata"].get("labels", {}).get(k) == v for k, v in selector.items()) for t in pod_templates)
for o in objects:
    kind, name = o["kind"], o["metadata"]["name"]
    selector = {"Service": lambda: o["spec"].get("selector"),
                "PodDisruptionBudget": lambda: o["spec"]["selector"].get("matchLabels"),
                "NetworkPolicy": lambda: o["spec"]["podSelector"].get("matchLabels")}.get(kind, lambda: None)()
    if selector and not selects(selector):
        error(f"{kind} {name}: selector {selector} matches no pod template")
    if kind == "HorizontalPodAutoscaler":
        ref = o["spec"]["scaleTargetRef"]
        if not find(ref["kind"], ref["name"]):
            error(f"HorizontalPodAutoscaler {name}: target {ref['kind']}/{ref['name']} is not defined here")
if not errors:
    print(f"ok    consistency: {len(keys)} configuration keys covered, references and selectors resolve")

# 4. The application's own validation of the ConfigMap, under production rules.
if binary:
    env = {"PATH": "/usr/bin:/bin", "APP_CONFIG_DIR": os.path.abspath("config"), **cm,
           # Stand-ins of the right shape for the Secrets (never the example's placeholders).
           "DATABASE_URL": "postgres://runtime:x@db.invalid:5432/agents_api",
           "REDIS_URL": "rediss://:x@redis.invalid:6379/0",
           "JWT_SECRET": "x" * 48,
           "ENCRYPTION_KEYS": "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
    with tempfile.TemporaryDirectory() as cwd:  # no stray .env in the working directory
        run = subprocess.run([os.path.abspath(binary), "check-config"], env=env, cwd=cwd,
                             capture_output=True, text=True)
    if run.returncode == 0:
        print(f"ok    {binary} check-config with the ConfigMap: {run.stdout.strip()}")
    else:
        error(f"{binary} check-config rejects the ConfigMap:\n{run.stdout}{run.stderr}")
else:
    print("skip  check-config: no up-to-date agents-api binary (cargo build, or AGENTS_API_BIN)")

if errors:
    print(f"validate-k8s.sh: FAILED, {len(errors)} problem(s)")
    sys.exit(1)
print(f"validate-k8s.sh: OK ({len(files)} files, kubernetes-validate {kv_version}, "
      f"Kubernetes {' and '.join(versions)}{', rendered with ' + render_tool if render_tool else ''})")
PY
