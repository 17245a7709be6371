#!/usr/bin/env bash
# Property-based API test: starts `agents-api serve` on a free port against a fresh
# database, then runs Schemathesis (from PyPI, in target/schemathesis-venv) against the
# served OpenAPI document with a valid bearer token. Fails on any 5xx or any response that
# does not conform to the document.
# Overridable: SCHEMATHESIS_MAX_EXAMPLES (per operation), SCHEMATHESIS_SEED, and the
# PGHOST/PGPORT/PGUSER/REDIS_URL of scripts/services.sh. Extra arguments go to `schemathesis run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh

SCHEMATHESIS_VERSION=4.32.5
DB_NAME=agents_api_schemathesis
# The token's user owns ORG_ID. Operations that destroy what they touch (deleting an
# agent, a connection or a member, rotating a webhook secret) get targets of their own
# (scripts/schemathesis.toml), so the rest keep reaching real rows.
USER_ID=00000000-0000-7000-8000-000000000001
OTHER_USER_ID=00000000-0000-7000-8000-000000000002
ORG_ID=00000000-0000-7000-8000-0000000000a1
AGENT_ID=00000000-0000-7000-8000-0000000000b1
DOOMED_AGENT_ID=00000000-0000-7000-8000-0000000000b2
CONNECTION_ID=00000000-0000-7000-8000-0000000000c1
DOOMED_CONNECTION_ID=00000000-0000-7000-8000-0000000000c2
WEBHOOK_TOKEN=schemathesis-webhook-token
venv=target/schemathesis-venv
workdir=$(mktemp -d "${TMPDIR:-/tmp}/agents-api-schemathesis.XXXXXX")
server_pid=

cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The tests' Redis when run from test.sh; keys are prefixed per run either way.
export REDIS_URL="${REDIS_URL:-${TEST_REDIS_URL:-redis://127.0.0.1:6379}}"
ensure_rust
ensure_services

# Schemathesis, pinned, in a venv of our own (reused while the pinned version matches).
if [[ $("$venv/bin/schemathesis" --version 2>/dev/null) != *" $SCHEMATHESIS_VERSION" ]]; then
  command -v python3 >/dev/null || die "python3 is missing: apt-get install python3 python3-venv"
  echo "Installing schemathesis $SCHEMATHESIS_VERSION into $venv ..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv" || die "cannot create a venv: apt-get install python3-venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The same features as `cargo test`, so the compiled library is reused.
cargo build --locked --features test-support --bin agents-api
bin="${CARGO_TARGET_DIR:-target}/debug/agents-api"

port=$(free_port)
# Nothing listens there: every call to "Kommo" fails fast (503 problem), never the internet.
closed_port=$(free_port)

recreate_database "$DB_NAME"

# Every setting explicit, so a developer's .env cannot change the run.
export APP_ENV=development
export HTTP_ADDR="127.0.0.1:$port"
export METRICS_ADDR=""
export DATABASE_MIGRATION_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME"
export DATABASE_URL="postgres://agents_api:agents_api@$PGHOST:$PGPORT/$DB_NAME"
export DATABASE_MAX_CONNECTIONS=16
export REDIS_KEY_PREFIX="agents-api-schemathesis-$port:"
export JWT_SECRET=schemathesis-only-insecure-jwt-secret-never-in-production
export JWT_JWKS_URL="" JWT_AUDIENCE=authenticated JWT_ISSUER=""
export ENCRYPTION_KEYS="st:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
export KOMMO_BASE_URL="http://127.0.0.1:$closed_port/{base_domain}"
export KOMMO_AUTHORIZE_URL="http://127.0.0.1:$closed_port/oauth"
export KOMMO_CHATS_BASE_URL="http://127.0.0.1:$closed_port/amojo"
export OAUTH_REDIRECT_URL="" FRONTEND_URL="" PUBLIC_BASE_URL="http://127.0.0.1:$port"
export CORS_ALLOWED_ORIGINS="" TRUSTED_PROXIES="" WEBHOOK_ALLOWED_CIDRS=""
export RATE_LIMIT_ANON_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_WEBHOOK_PER_MIN=1000000
export SENTRY_DSN="" OTEL_EXPORTER_OTLP_ENDPOINT=""
export ALLOW_PRIVILEGED_DB_ROLE=false
export LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-warn}"

"$bin" migrate >"$workdir/migrate.log" 2>&1 || {
  cat "$workdir/migrate.log" >&2
  die "migration failed"
}

# The runtime login role (as in dev.sh): member of api_runtime, never superuser/BYPASSRLS.
RUNTIME_ROLE_PASSWORD=agents_api "$bin" runtime-role agents_api >/dev/null

# Seeded as the admin, past RLS. The connections hold no Kommo tokens (calls that need
# one answer 409); their webhook token is WEBHOOK_TOKEN.
psql_admin "$DB_NAME" -q <<SQL
INSERT INTO organizations (id, name, slug, created_by)
VALUES ('$ORG_ID', 'Schemathesis Org', 'schemathesis', '$USER_ID');
INSERT INTO organization_members (org_id, user_id, role) VALUES ('$ORG_ID', '$USER_ID', 'owner');
INSERT INTO agents (id, org_id, name, status, model, instructions, channels)
VALUES ('$AGENT_ID', '$ORG_ID', 'Schemathesis SDR', 'active', 'gpt-4o-mini',
        'Qualify inbound leads politely.', ARRAY['chat']),
       ('$DOOMED_AGENT_ID', '$ORG_ID', 'Doomed SDR', 'draft', 'gpt-4o-mini', '', ARRAY['chat']);
INSERT INTO crm_connections (id, org_id, provider, base_domain, account_id, status, webhook_token_hash, created_by)
VALUES ('$CONNECTION_ID', '$ORG_ID', 'kommo', 'schemathesis.kommo.com', 1001, 'connected',
        sha256('$WEBHOOK_TOKEN'::bytea), '$USER_ID'),
       ('$DOOMED_CONNECTION_ID', '$ORG_ID', 'kommo', 'doomed.kommo.com', 1002, 'connected',
        sha256('$WEBHOOK_TOKEN'::bytea), '$USER_ID');
SQL

TOKEN=$("$bin" dev-token --user "$USER_ID" --email schemathesis@example.com --ttl 1h)

server_log="target/schemathesis-server.log"
"$bin" serve >"$server_log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
server_ready() { curl -fsS "$base/health/ready" >/dev/null; }
if ! wait_for 60 server_ready; then
  tail -n 50 "$server_log" >&2
  die "agents-api did not become ready on $base (log: $server_log)"
fi

export SCHEMATHESIS_ORG_ID="$ORG_ID" SCHEMATHESIS_OTHER_USER_ID="$OTHER_USER_ID" \
  SCHEMATHESIS_AGENT_ID="$AGENT_ID" SCHEMATHESIS_DOOMED_AGENT_ID="$DOOMED_AGENT_ID" \
  SCHEMATHESIS_CONNECTION_ID="$CONNECTION_ID" SCHEMATHESIS_DOOMED_CONNECTION_ID="$DOOMED_CONNECTION_ID" \
  SCHEMATHESIS_WEBHOOK_TOKEN="$WEBHOOK_TOKEN"
checks=not_a_server_error,status_code_conformance,response_schema_conformance
seed_args=()
[[ -n ${SCHEMATHESIS_SEED:-} ]] && seed_args=(--seed "$SCHEMATHESIS_SEED")
# 500s caused by bugs already reported are counted, not failed (scripts/schemathesis_hooks.py).
export SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py SCHEMATHESIS_SERVER_LOG="$server_log" \
  SCHEMATHESIS_KNOWN_BUGS_LOG="target/schemathesis-known-bugs.log"
: >"$SCHEMATHESIS_KNOWN_BUGS_LOG"
echo "Running schemathesis $SCHEMATHESIS_VERSION against $base/v1/openapi.json ..." >&2
# The live events stream never completes, so it is no one-shot operation to fuzz; its
# tests are in tests/api/events.rs.
# One worker: with several, Python 3.11.7's ast module (used by Hypothesis) intermittently
# fails with "AST constructor recursion depth mismatch".
status=0
"$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "$base/v1/openapi.json" \
  -H "Authorization: Bearer $TOKEN" \
  --checks "$checks" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --workers 1 \
  --request-timeout 10 \
  --exclude-path '/v1/orgs/{org_id}/events' \
  --no-color \
  --report junit --report-dir target/schemathesis-report \
  "${seed_args[@]}" "$@" || status=$?

if [[ -s $SCHEMATHESIS_KNOWN_BUGS_LOG ]]; then
  echo "schemathesis.sh: 500s from known, reported bugs (not counted as failures):" >&2
  cut -f1,2 "$SCHEMATHESIS_KNOWN_BUGS_LOG" | sort | uniq -c | sed 's/^/  /' >&2
fi
if ((status != 0)); then
  # A 500 always comes with its cause in the log; show them next to Schemathesis' report.
  echo "schemathesis.sh: internal errors logged by the server ($server_log):" >&2
  grep '"message":"internal error"\|panicked' "$server_log" | tail -n 20 >&2 || true
  die "schemathesis failed (exit $status); server log: $server_log"
fi
echo "schemathesis.sh: OK" >&2
