#!/usr/bin/env bash
# The compile-checked SQL's offline data (.sqlx/): with no argument, regenerates it
# after a query changed; with --check (the test command), fails when it is stale.
# Both describe every query against a fresh database migrated by this checkout, with
# sqlx-cli (pinned to our sqlx, installed into target/tools on first use).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh

SQLX_CLI_VERSION=0.9.0
tools="$PWD/target/tools"
ensure_rust
if [[ $("$tools/bin/sqlx" --version 2>/dev/null) != *" $SQLX_CLI_VERSION" ]]; then
  echo "Installing sqlx-cli $SQLX_CLI_VERSION into $tools ..." >&2
  cargo install sqlx-cli --version "$SQLX_CLI_VERSION" --locked --no-default-features \
    --features postgres --root "$tools" --quiet
fi
export PATH="$tools/bin:$PATH"
ensure_postgres

db=agents_api_sqlx_prepare
psql_admin postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
trap 'psql_admin postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
url="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
[[ -n ${PGPASSWORD:-} ]] && url="postgres://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$db"
sqlx migrate run --database-url "$url" >/dev/null

# Every target and feature, so test-only code's queries are covered too.
if [[ ${1:-} == --check ]]; then
  DATABASE_URL="$url" cargo sqlx prepare --check -- --all-targets --all-features ||
    die ".sqlx/ is stale: run ./scripts/sqlx-prepare.sh and commit .sqlx/"
else
  DATABASE_URL="$url" cargo sqlx prepare -- --all-targets --all-features
fi
