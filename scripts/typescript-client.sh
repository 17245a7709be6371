#!/usr/bin/env bash
# The typed TypeScript client in clients/typescript: regenerates src/schema.ts from the
# OpenAPI document that `agents-api openapi` prints (openapi-typescript, through
# clients/typescript/scripts/generate.mjs), then builds the package (tsc → dist/) and
# type-checks the example program against the built package, as a user imports it.
# With no argument it rewrites the committed schema.ts; with --check (the test command)
# it fails, showing a diff excerpt, when the committed file is not what the code generates.
# Needs Node 20+ and npm; `npm ci` (pinned by package-lock.json) runs when
# clients/typescript/node_modules is missing or older than the lock file.
# Overridable: AGENTS_API_BIN, a built agents-api to ask instead of `cargo run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh

check=false
case ${1:-} in
  --check) check=true ;;
  "") ;;
  *) die "usage: $0 [--check]" ;;
esac

client=clients/typescript
schema=$client/src/schema.ts
started=$SECONDS

ensure_node "the TypeScript client"

# The lock file copied into node_modules after a successful `npm ci` marks what is
# installed; any change to package-lock.json installs again.
stamp=$client/node_modules/.agents-api-lock
if ! cmp -s "$client/package-lock.json" "$stamp"; then
  echo "Installing the TypeScript client's dependencies (npm ci) ..." >&2
  # --ignore-scripts: `prepare` would build before the schema is checked; we build below.
  (cd "$client" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    die "npm ci failed in $client (it needs the npm registry on first use)"
  cp "$client/package-lock.json" "$stamp"
fi

workdir=$(mktemp -d "${TMPDIR:-/tmp}/agents-api-ts-client.XXXXXX")
trap 'rm -rf "$workdir"' EXIT

# The document needs no database or configuration. The features are those of
# `cargo test` in test.sh, so its binary is reused there; test-support adds no documented
# route, so the document is the production one.
openapi() {
  if [[ -n ${AGENTS_API_BIN:-} ]]; then
    "$AGENTS_API_BIN" openapi
  else
    cargo run --locked --quiet --features test-support --bin agents-api -- openapi
  fi
}
[[ -n ${AGENTS_API_BIN:-} ]] || ensure_rust
echo "Printing the OpenAPI document (${AGENTS_API_BIN:-cargo run, which builds if needed}) ..." >&2
openapi >"$workdir/openapi.json"
openapi >"$workdir/openapi.again.json"

# Generated twice, from two runs of the binary: the output must not depend on the run.
for run in "" .again; do
  (cd "$client" && node scripts/generate.mjs "$workdir/openapi$run.json" "$workdir/schema$run.ts")
done
cmp -s "$workdir/schema.ts" "$workdir/schema.again.ts" ||
  die "generating $schema is not deterministic: two runs differ:
$(diff -u "$workdir/schema.ts" "$workdir/schema.again.ts" | head -n 40)"

if cmp -s "$workdir/schema.ts" "$schema"; then
  echo "$schema is current" >&2
elif $check; then
  {
    echo "--- diff (committed → generated), first 60 lines:"
    diff -u "$schema" "$workdir/schema.ts" | head -n 60 || true
  } >&2
  die "$schema is stale: the OpenAPI document changed. Run ./scripts/typescript-client.sh and commit $schema"
else
  cp "$workdir/schema.ts" "$schema"
  echo "regenerated $schema" >&2
fi

# The package as it is published (dist/), then the example against it.
(cd "$client" && npm run --silent build) || die "the TypeScript client does not build (tsc, $client)"
(cd "$client" && npx --no-install tsc -p examples/tsconfig.json) ||
  die "the TypeScript client's example does not type-check ($client/examples)"

echo "typescript-client.sh: OK (schema current, package built, example type-checked) in $((SECONDS - started))s"
