#!/usr/bin/env bash
# Runs agents-api locally with a migrated, seeded database and prints a dev token.
# Safe to re-run. Any variable already exported wins over the defaults below.
# DEV_PROFILE=debug builds the faster-to-compile debug binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh

ensure_rust
ensure_services

DB_NAME=agents_api
DEMO_USER=00000000-0000-7000-8000-000000000001
DEMO_ORG=00000000-0000-7000-8000-0000000000a1
DEMO_AGENT=00000000-0000-7000-8000-0000000000b1

# CREATE DATABASE has no IF NOT EXISTS; the admin creating it also owns it, so the
# migration (run as the same admin) owns the tables and the runtime role does not.
if [[ -z $(psql_admin postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ]]; then
  psql_admin postgres -qc "CREATE DATABASE $DB_NAME"
fi

if [[ ${DEV_PROFILE:-release} == debug ]]; then
  cargo build --bin agents-api
  bin="${CARGO_TARGET_DIR:-target}/debug/agents-api"
else
  cargo build --release --bin agents-api
  bin="${CARGO_TARGET_DIR:-target}/release/agents-api"
fi

export APP_ENV="${APP_ENV:-development}"
export DATABASE_MIGRATION_URL="${DATABASE_MIGRATION_URL:-postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME}"
export DATABASE_URL="${DATABASE_URL:-postgres://agents_api:agents_api@$PGHOST:$PGPORT/$DB_NAME}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
# Local-only secrets: public in this repository, so never valid outside development.
export JWT_SECRET="${JWT_SECRET:-dev-only-insecure-jwt-secret-never-in-production}"
export ENCRYPTION_KEYS="${ENCRYPTION_KEYS:-dev:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
export HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:8080}"

"$bin" migrate

# The runtime login role can only be created after the migration made its group
# api_runtime; re-running converges on a role that is neither superuser nor BYPASSRLS.
RUNTIME_ROLE_PASSWORD=agents_api "$bin" runtime-role agents_api >/dev/null

# Seeded as the superuser admin, to whom row-level security does not apply.
psql_admin "$DB_NAME" -q <<SQL
INSERT INTO organizations (id, name, slug, created_by)
VALUES ('$DEMO_ORG', 'Demo Org', 'demo', '$DEMO_USER') ON CONFLICT (id) DO NOTHING;
INSERT INTO organization_members (org_id, user_id, role)
VALUES ('$DEMO_ORG', '$DEMO_USER', 'owner') ON CONFLICT DO NOTHING;
INSERT INTO agents (id, org_id, name, status, model, instructions, channels)
VALUES ('$DEMO_AGENT', '$DEMO_ORG', 'Demo SDR', 'active', 'gpt-4o-mini',
        'Qualify inbound leads politely.', ARRAY['chat'])
ON CONFLICT (id) DO NOTHING;
SQL

TOKEN=$("$bin" dev-token --user "$DEMO_USER" --email demo@example.com --ttl 12h)
base="http://${HTTP_ADDR/0.0.0.0/127.0.0.1}"
cat <<EOF

Demo user demo@example.com ($DEMO_USER), owner of org "Demo Org" ($DEMO_ORG).
Dev token (12 h), paste into another shell:

export TOKEN=$TOKEN

curl -s $base/health/ready
curl -s -H "Authorization: Bearer \$TOKEN" $base/v1/me
curl -s -H "Authorization: Bearer \$TOKEN" $base/v1/orgs/$DEMO_ORG/agents
curl -s -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
  -d '{"name":"Follow-up bot","model":"gpt-4o-mini","instructions":"Follow up on stale deals.","channels":["chat"]}' \\
  $base/v1/orgs/$DEMO_ORG/agents

Starting agents-api on $base (Ctrl-C to stop) ...
EOF

exec "$bin" serve
