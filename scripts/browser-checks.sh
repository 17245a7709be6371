#!/usr/bin/env bash
# Real-browser checks: starts `agents-api serve` on a free port against a fresh database,
# with CORS_ALLOWED_ORIGINS set to one local origin, then runs tests/browser/run.mjs, which
# serves a page from that origin and from a second one that is not allowed, and drives
# Debian's Chromium (headless) with playwright-core. The page uses the typed client
# (clients/typescript, built to dist/) to read /v1/me, list agents, and, with the client's
# `events` helper, receive one live event from GET /v1/orgs/{org_id}/events and one replayed
# after reconnecting with Last-Event-ID (an API without that endpoint fails); the other
# origin must be refused by the browser; /docs must render every operation without console
# errors.
# Installs on first use: Debian's `chromium` (apt-get, as root or through sudo) and the
# npm packages of tests/browser and clients/typescript (`npm ci`, pinned by their lock files).
# Overridable: AGENTS_API_BIN (a built agents-api instead of `cargo build`), CHROMIUM
# (default /usr/bin/chromium), and the PGHOST/PGPORT/PGUSER/REDIS_URL of scripts/services.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh

DB_NAME=agents_api_browser
USER_ID=00000000-0000-7000-8000-000000000001
USER_EMAIL=browser@example.com
ORG_ID=00000000-0000-7000-8000-0000000000a1
CONNECTION_ID=00000000-0000-7000-8000-0000000000c1
# Three, so that listing them two at a time takes two pages.
AGENT_NAMES="Browser SDR,Browser Support,Browser Draft"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
browser=tests/browser
client=clients/typescript
started=$SECONDS
workdir=$(mktemp -d "${TMPDIR:-/tmp}/agents-api-browser.XXXXXX")
server_pid=

cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  psql_admin postgres -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- what the checks need, installed when missing ---------------------------------------

apt_chromium() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
}

ensure_chromium() {
  [[ -x $CHROMIUM ]] && return 0
  [[ $CHROMIUM == /usr/bin/chromium ]] || die "CHROMIUM=$CHROMIUM is not an executable"
  command -v apt-get >/dev/null ||
    die "Chromium is missing and this machine has no apt-get: install Chromium and set CHROMIUM"
  echo "Installing Debian's chromium (apt-get install chromium) ..." >&2
  local log=$workdir/apt-chromium.log
  # A fresh machine's package lists may be missing or stale: update once, then try again.
  if ! apt_chromium >"$log" 2>&1; then
    if ! as_root apt-get update >>"$log" 2>&1 || ! apt_chromium >>"$log" 2>&1; then
      tail -n 20 "$log" >&2
      die "could not install Debian's chromium, which the browser checks need (apt-get install chromium, as root)"
    fi
  fi
  [[ -x $CHROMIUM ]] || die "apt-get installed chromium, but $CHROMIUM is missing"
}

# `npm ci` in $1 when its node_modules was installed from another package-lock.json (the
# lock file copied into node_modules marks what is installed, as in typescript-client.sh).
ensure_npm_deps() {
  local dir=$1 stamp=$1/node_modules/.agents-api-lock
  cmp -s "$dir/package-lock.json" "$stamp" && return 0
  echo "Installing the npm packages of $dir (npm ci) ..." >&2
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    die "npm ci failed in $dir (it needs the npm registry on first use)"
  cp "$dir/package-lock.json" "$stamp"
}

for tool in python3 curl; do
  command -v "$tool" >/dev/null || die "$tool is missing (the browser checks need Node 20+ with npm, python3 and curl)"
done
ensure_node "the browser checks"

ensure_chromium
ensure_npm_deps "$browser"
ensure_npm_deps "$client"
# The page loads the client as published: dist/, rebuilt when a source is newer.
if [[ ! -f $client/dist/index.js ]] ||
  [[ -n $(find "$client/src" "$client/package-lock.json" "$client/tsconfig.json" -newer "$client/dist/index.js" -print -quit) ]]; then
  echo "Building the TypeScript client (npm run build) ..." >&2
  (cd "$client" && npm run --silent build) || die "the TypeScript client does not build ($client)"
fi

# ---- the server, on a fresh database ----------------------------------------------------

export REDIS_URL="${REDIS_URL:-${TEST_REDIS_URL:-redis://127.0.0.1:6379}}"
ensure_services
if [[ -n ${AGENTS_API_BIN:-} ]]; then
  bin=$AGENTS_API_BIN
else
  ensure_rust
  # The same features as `cargo test`, so the compiled library is reused.
  cargo build --locked --features test-support --bin agents-api
  bin="${CARGO_TARGET_DIR:-target}/debug/agents-api"
fi

port=$(free_port)
allowed_port=$(free_port)
other_port=$(free_port)
closed_port=$(free_port)
[[ $allowed_port != "$other_port" && $port != "$allowed_port" && $port != "$other_port" ]] ||
  die "free_port gave the same port twice; run again"

recreate_database "$DB_NAME"

# Every setting explicit, so a developer's .env cannot change the run.
export APP_ENV=development
export HTTP_ADDR="127.0.0.1:$port"
export METRICS_ADDR=""
export DATABASE_MIGRATION_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME"
export DATABASE_URL="postgres://agents_api:agents_api@$PGHOST:$PGPORT/$DB_NAME"
export DATABASE_MAX_CONNECTIONS=8
export REDIS_KEY_PREFIX="agents-api-browser-$port:"
export JWT_SECRET=browser-checks-only-insecure-jwt-secret-never-in-production
export JWT_JWKS_URL="" JWT_AUDIENCE=authenticated JWT_ISSUER=""
export ENCRYPTION_KEYS="bc:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
# Nothing listens there: a job that calls "Kommo" fails fast, never the internet.
export KOMMO_BASE_URL="http://127.0.0.1:$closed_port/{base_domain}"
export KOMMO_AUTHORIZE_URL="http://127.0.0.1:$closed_port/oauth"
export KOMMO_CHATS_BASE_URL="http://127.0.0.1:$closed_port/amojo"
export OAUTH_REDIRECT_URL="" FRONTEND_URL="" PUBLIC_BASE_URL="http://127.0.0.1:$port"
# Only the first page origin; the second (other_port) must be refused.
export CORS_ALLOWED_ORIGINS="http://127.0.0.1:$allowed_port"
export TRUSTED_PROXIES="" WEBHOOK_ALLOWED_CIDRS=""
# An API-only server: jobs the page queues stay queued, so the only events of the org are
# the `queued` of each, and the replay check can tell which event must come first.
export JOB_CONCURRENCY=0
export RATE_LIMIT_ANON_PER_MIN=100000 RATE_LIMIT_USER_PER_MIN=100000 RATE_LIMIT_WEBHOOK_PER_MIN=100000
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

# Seeded as the admin, past RLS: the token's user owns the org, which has three agents and
# a CRM connection without Kommo tokens (jobs for it are queued, and stay so: see
# JOB_CONCURRENCY).
IFS=, read -r agent1 agent2 agent3 <<<"$AGENT_NAMES"
psql_admin "$DB_NAME" -q <<SQL
INSERT INTO organizations (id, name, slug, created_by)
VALUES ('$ORG_ID', 'Browser Org', 'browser', '$USER_ID');
INSERT INTO organization_members (org_id, user_id, role) VALUES ('$ORG_ID', '$USER_ID', 'owner');
INSERT INTO agents (org_id, name, status, model, instructions, channels)
VALUES ('$ORG_ID', '$agent1', 'active', 'gpt-4o-mini', 'Qualify inbound leads.', ARRAY['chat']),
       ('$ORG_ID', '$agent2', 'inactive', 'gpt-4o-mini', 'Answer questions.', ARRAY['chat', 'email']),
       ('$ORG_ID', '$agent3', 'draft', 'gpt-4o-mini', '', ARRAY['chat']);
INSERT INTO crm_connections (id, org_id, provider, base_domain, account_id, status, webhook_token_hash, created_by)
VALUES ('$CONNECTION_ID', '$ORG_ID', 'kommo', 'browser.kommo.com', 1001, 'connected',
        sha256('browser-webhook-token'::bytea), '$USER_ID');
SQL

TOKEN=$("$bin" dev-token --user "$USER_ID" --email "$USER_EMAIL" --ttl 30m)

server_log=target/browser-checks-server.log
mkdir -p target
"$bin" serve >"$server_log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
server_ready() { curl -fsS "$base/health/ready" >/dev/null; }
if ! wait_for 60 server_ready; then
  tail -n 50 "$server_log" >&2
  die "agents-api did not become ready on $base (log: $server_log)"
fi

# ---- the browser ------------------------------------------------------------------------

echo "Running the browser checks (Chromium, pages on :$allowed_port allowed and :$other_port not) ..." >&2
status=0
API_BASE=$base TOKEN=$TOKEN USER_ID=$USER_ID USER_EMAIL=$USER_EMAIL ORG_ID=$ORG_ID \
  CONNECTION_ID=$CONNECTION_ID AGENT_NAMES=$AGENT_NAMES \
  ALLOWED_PORT=$allowed_port OTHER_PORT=$other_port CHROMIUM=$CHROMIUM \
  CLIENT_DIST="$PWD/$client/dist" OPENAPI_FETCH_DIST="$PWD/$client/node_modules/openapi-fetch/dist" \
  timeout 120 node "$browser/run.mjs" || status=$?

if ((status != 0)); then
  echo "browser-checks.sh: the server's warnings and errors ($server_log):" >&2
  grep '"level":"\(WARN\|ERROR\)"\|panicked' "$server_log" | tail -n 20 >&2 || true
  die "the browser checks failed (exit $status); server log: $server_log"
fi
echo "browser-checks.sh: OK in $((SECONDS - started))s" >&2
