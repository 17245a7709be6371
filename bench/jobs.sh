#!/usr/bin/env bash
# The job rows of spec §9, in one command: bench/jobs.sh
#
# Against one replica (the release binary built with `test-support`, whose only addition
# is the no-op job type `test:sleep`) running its workers at the default JOB_CONCURRENCY:
#   1. idle CPU: the replica's CPU time over BENCH_JOBS_IDLE_SECS with nothing to do;
#   2. job start latency: BENCH_JOBS_LATENCY_COUNT no-op jobs enqueued one at a time,
#      BENCH_JOBS_LATENCY_GAP_MS apart, by examples/job_bench.rs (the typed enqueue);
#      enqueue -> claim, from the rows (enqueued_at -> started_at, PostgreSQL's clock);
#   3. throughput: BENCH_JOBS_COUNT no-op jobs enqueued in transactions of
#      BENCH_JOBS_BATCH while the replica works them off; jobs / (last finished_at -
#      first enqueued_at);
#   4. a webhook flood: wrk at BENCH_JOBS_FLOOD_CONNECTIONS connections for
#      BENCH_JOBS_FLOOD_SECS against the same replica, which parses what it accepts:
#      deliveries accepted and parsed per second during the flood, the backlog when it
#      ends, and (after it drains) that none was lost.
# Prints the table and writes it as the "Jobs" section of bench/results.md (the rest of
# the file is kept). See bench/README.md, "Jobs".
#
# Knobs (environment): BENCH_JOBS_IDLE_SECS (10), BENCH_JOBS_LATENCY_COUNT (300),
# BENCH_JOBS_LATENCY_GAP_MS (20), BENCH_JOBS_COUNT (20000), BENCH_JOBS_BATCH (200),
# BENCH_JOBS_FLOOD_SECS (30), BENCH_JOBS_FLOOD_CONNECTIONS (16), BENCH_JOBS_CONCURRENCY
# (JOB_CONCURRENCY; the default configuration's 32), BENCH_JOBS_DB_POOL (4 per core),
# BENCH_JOBS_PORT (18082).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/services.sh
. scripts/services.sh

IDLE_SECS=${BENCH_JOBS_IDLE_SECS:-10}
LATENCY_COUNT=${BENCH_JOBS_LATENCY_COUNT:-300}
LATENCY_GAP_MS=${BENCH_JOBS_LATENCY_GAP_MS:-20}
COUNT=${BENCH_JOBS_COUNT:-20000}
BATCH=${BENCH_JOBS_BATCH:-200}
FLOOD_SECS=${BENCH_JOBS_FLOOD_SECS:-30}
FLOOD_CONNECTIONS=${BENCH_JOBS_FLOOD_CONNECTIONS:-16}
CONCURRENCY=${BENCH_JOBS_CONCURRENCY:-32}
POOL=${BENCH_JOBS_DB_POOL:-$((4 * $(nproc)))}
PORT=${BENCH_JOBS_PORT:-18082}

DB_NAME=agents_api_bench_jobs
RT_ROLE=agents_api_bench_rt
RT_PASSWORD=agents_api_bench_rt
ORG_ID=00000000-0000-7000-8000-00000000be11
USER_ID=00000000-0000-7000-8000-00000000be12
CONNECTION_ID=00000000-0000-7000-8000-00000000be13
ACCOUNT_ID=31338
WEBHOOK_TOKEN=bench-jobs-webhook-token-0123456789abcdefgh

OUT=bench/out/jobs
RESULTS=bench/results.md
BASE=http://127.0.0.1:$PORT
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
REDIS_PREFIX="agents-api-bench-jobs-$$-$(date +%s):"
SERVER_PID=
declare -A R=()

log() { printf '\n==> %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"${2:-%.2f}\", ($1) }"; }

stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
}

cleanup() {
  local status=$?
  stop_server
  redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null |
    xargs -r redis-cli -u "$REDIS_URL" unlink >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT
set -E
trap 'echo "${0##*/}: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

mkdir -p "$OUT"
if [[ -n ${BENCH_JOBS_BINARIES:-} ]]; then
  cp "$BENCH_JOBS_BINARIES"/agents-api "$BENCH_JOBS_BINARIES"/job_bench "$OUT/"
else
  ensure_rust
  log "Building the release binary and examples/job_bench.rs with test-support"
  cargo build --release --locked --features test-support --bin agents-api --example job_bench
  # Copied, so that a concurrent rebuild cannot swap them mid-run.
  cp target/release/agents-api target/release/examples/job_bench "$OUT/"
fi
ensure_services
command -v wrk >/dev/null || as_root apt-get install -y wrk >"$OUT/apt-wrk.log" 2>&1 ||
  die "wrk is missing and could not be installed (see $OUT/apt-wrk.log)"

RT_URL="postgres://$RT_ROLE:$RT_PASSWORD@$PGHOST:$PGPORT/$DB_NAME"
SERVER_ENV=(
  PATH="$PATH" HOME="$HOME"
  APP_ENV=test APP_CONFIG_DIR="$ROOT/config"
  HTTP_ADDR="127.0.0.1:$PORT" METRICS_ADDR=
  DATABASE_URL="$RT_URL" DATABASE_MAX_CONNECTIONS="$POOL"
  DATABASE_MIGRATION_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME"
  REDIS_URL="$REDIS_URL" REDIS_KEY_PREFIX="$REDIS_PREFIX"
  JWT_SECRET=bench-only-insecure-jwt-secret-never-in-production
  ENCRYPTION_KEYS=bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
  LOG_FORMAT=json RUST_LOG=warn
  RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_ANON_PER_MIN=1000000
  RATE_LIMIT_WEBHOOK_PER_MIN=1000000
  SHUTDOWN_GRACE_SECS=5
  JOB_CONCURRENCY="$CONCURRENCY"
)
if [[ -n ${PGPASSWORD:-} ]]; then SERVER_ENV+=(PGPASSWORD="$PGPASSWORD"); fi
run_in_env() { (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" BENCH_ORG_ID="$ORG_ID" "$@"); }

log "Fresh database $DB_NAME"
psql_admin postgres -q <<SQL
SET client_min_messages = warning;
DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE);
CREATE DATABASE $DB_NAME;
SQL
run_in_env ./agents-api migrate
psql_admin "$DB_NAME" -q <<SQL
SET client_min_messages = warning;
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$RT_ROLE') THEN
    CREATE ROLE $RT_ROLE LOGIN PASSWORD '$RT_PASSWORD' IN ROLE api_runtime;
  ELSE
    ALTER ROLE $RT_ROLE LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '$RT_PASSWORD';
    GRANT api_runtime TO $RT_ROLE;
  END IF;
END \$\$;
INSERT INTO organizations (id, name, slug, created_by)
VALUES ('$ORG_ID', 'Bench Jobs Org', 'bench-jobs', '$USER_ID');
INSERT INTO organization_members (org_id, user_id, role) VALUES ('$ORG_ID', '$USER_ID', 'owner');
INSERT INTO crm_connections (id, org_id, provider, base_domain, account_id, status,
                             webhook_token_hash, created_by)
VALUES ('$CONNECTION_ID', '$ORG_ID', 'kommo', 'bench.kommo.com', $ACCOUNT_ID, 'connected',
        decode('$(printf '%s' "$WEBHOOK_TOKEN" | sha256sum | cut -d' ' -f1)', 'hex'), '$USER_ID');
VACUUM ANALYZE;
SQL

log "Starting the replica (JOB_CONCURRENCY=$CONCURRENCY)"
(cd "$OUT" && exec env -i "${SERVER_ENV[@]}" ./agents-api serve) >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
wait_for 30 curl -fsS "$BASE/health/ready" >/dev/null ||
  { tail -n 30 "$OUT/server.log" >&2; die "agents-api did not become ready"; }

CLK_TCK=$(getconf CLK_TCK)
server_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }

log "Idle CPU over ${IDLE_SECS}s"
sleep 3
t0=$(server_ticks)
sleep "$IDLE_SECS"
t1=$(server_ticks)
R[idle_cpu_pct]=$(calc "100 * ($t1 - $t0) / $CLK_TCK / $IDLE_SECS" %.2f)

log "Job start latency: $LATENCY_COUNT jobs, ${LATENCY_GAP_MS} ms apart"
run_in_env ./job_bench latency "$LATENCY_COUNT" "$LATENCY_GAP_MS" | tee "$OUT/latency.json"
log "Throughput: $COUNT no-op jobs in transactions of $BATCH"
run_in_env ./job_bench throughput "$COUNT" "$BATCH" | tee "$OUT/throughput.json"
read_json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
R[lat_p50]=$(read_json "$OUT/latency.json" p50_ms)
R[lat_p99]=$(read_json "$OUT/latency.json" p99_ms)
R[tput]=$(read_json "$OUT/throughput.json" jobs_per_s)
R[tput_span]=$(read_json "$OUT/throughput.json" span_s)

log "Webhook flood: ${FLOOD_SECS}s at $FLOOD_CONNECTIONS connections"
q() { psql_admin "$DB_NAME" -Atc "$1"; }
WEBHOOK_URL="$BASE/v1/kommo/webhooks/$CONNECTION_ID/$WEBHOOK_TOKEN"
curl -sS -o "$OUT/check.txt" -w '%{http_code}' -H 'Content-Type: application/x-www-form-urlencoded' \
  --data "leads%5Bstatus%5D%5B0%5D%5Bid%5D=1&account%5Bid%5D=$ACCOUNT_ID" "$WEBHOOK_URL" |
  grep -q '^2' || { cat "$OUT/check.txt" >&2; die "the webhook check request failed"; }
flood_start=$(q "SELECT clock_timestamp()")
wrk -t 2 -c "$FLOOD_CONNECTIONS" -d "${FLOOD_SECS}s" --timeout 2s -s bench/wrk/webhook.lua \
  "$WEBHOOK_URL" -- "jobs$$" "$ACCOUNT_ID" >"$OUT/flood.txt" 2>&1 ||
  { cat "$OUT/flood.txt" >&2; die "wrk failed"; }
flood_end=$(q "SELECT clock_timestamp()")
R[accepted]=$(q "SELECT count(*) FROM webhook_events WHERE kind = 'delivery'")
R[parsed_in_flood]=$(q "SELECT count(*) FROM webhook_events WHERE kind = 'delivery'
                        AND status <> 'received' AND processed_at <= '$flood_end'")
R[backlog]=$(q "SELECT count(*) FROM webhook_events WHERE kind = 'delivery' AND status = 'received'")
R[flood_secs]=$(calc "$(q "SELECT extract(epoch FROM '$flood_end'::timestamptz - '$flood_start'::timestamptz)")" %.3f)
R[non2xx]=$(grep -oE 'Non-2xx or 3xx responses: [0-9]+' "$OUT/flood.txt" | grep -oE '[0-9]+$' || echo 0)
R[socket_errors]=$(grep -oE 'Socket errors: .*' "$OUT/flood.txt" || echo none)
drain_start=$(date +%s.%N)
no_backlog() { [[ $(q "SELECT count(*) FROM webhook_events WHERE kind = 'delivery' AND status = 'received'") == 0 ]]; }
wait_for 300 no_backlog ||
  die "the backlog did not drain within 300 s"
R[drain_secs]=$(calc "$(date +%s.%N) - $drain_start" %.1f)
R[lost]=$(q "SELECT count(*) FROM webhook_events WHERE kind = 'delivery' AND status <> 'processed'")
R[jobs_left]=$(q "SELECT count(*) FROM jobs WHERE type = 'kommo:webhook' AND status <> 'succeeded'")
R[events]=$(q "SELECT count(*) FROM webhook_events WHERE kind = 'event'")
R[accepted_rate]=$(calc "${R[accepted]} / ${R[flood_secs]}" %.1f)
R[parsed_rate]=$(calc "${R[parsed_in_flood]} / ${R[flood_secs]}" %.1f)
R[ratio]=$(calc "${R[parsed_rate]} / ${R[accepted_rate]}" %.2f)

pass() { if awk "BEGIN { exit !($1) }"; then echo pass; else echo FAIL; fi; }
table() {
  cat <<TABLE
| Measure | Measured | Target |
|---|---:|---|
| Idle CPU of the replica (% of one core, ${IDLE_SECS} s, workers waiting) | ${R[idle_cpu_pct]} | near zero: $(pass "${R[idle_cpu_pct]} < 1") |
| Job start latency p50 (ms; $LATENCY_COUNT jobs, ${LATENCY_GAP_MS} ms apart) | ${R[lat_p50]} | ≤ 5: $(pass "${R[lat_p50]} <= 5") |
| Job start latency p99 (ms) | ${R[lat_p99]} | ≤ 50: $(pass "${R[lat_p99]} <= 50") |
| No-op jobs per second ($COUNT, enqueue → succeeded, ${R[tput_span]} s) | ${R[tput]} | ≥ 2,000: $(pass "${R[tput]} >= 2000") |
| Webhook flood: deliveries accepted per second (${R[accepted]} in ${R[flood_secs]} s, $FLOOD_CONNECTIONS conn.) | ${R[accepted_rate]} |  |
| Webhook flood: deliveries parsed per second during it | ${R[parsed_rate]} |  |
| **ratio parsed / accepted** | **${R[ratio]}** | ≥ 0.8: $(pass "${R[ratio]} >= 0.8") |
| Backlog when the flood ended (deliveries) / drained in (s) | ${R[backlog]} / ${R[drain_secs]} |  |
| Deliveries lost (not processed after the drain) / parse jobs not succeeded / non-2xx | ${R[lost]} / ${R[jobs_left]} / ${R[non2xx]} | 0: $(pass "${R[lost]} == 0 && ${R[jobs_left]} == 0 && ${R[non2xx]} == 0") |
| Events stored | ${R[events]} |  |
TABLE
}
log "Results"
table | tee "$OUT/table.md"

section() {
  cat <<SECTION
## Jobs

Produced by \`bench/jobs.sh\` (see bench/README.md, "Jobs"); raw outputs in bench/out/jobs/.

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src migrations || echo ' (with uncommitted changes)')
- CPU: $(nproc) × $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); load average before: $(cut -d' ' -f1-3 /proc/loadavg)
- PostgreSQL: $(psql_admin postgres -Atc 'SHOW server_version'); Redis $(redis-cli -u "$REDIS_URL" info server | awk -F: '/redis_version/ { print $2 }' | tr -d '\r')
- Replica: JOB_CONCURRENCY=$CONCURRENCY, DATABASE_MAX_CONNECTIONS=$POOL, RUST_LOG=warn; everything shares the machine's cores.

$(table)
SECTION
}
python3 - "$RESULTS" "$(section)" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2].rstrip() + "\n"
text = open(path).read()
pattern = re.compile(r"^## Jobs\n.*?(?=^## |\Z)", re.S | re.M)
text = pattern.sub(lambda m: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
open(path, "w").write(text)
PY
echo "Written to $RESULTS (section \"Jobs\")." >&2
