#!/usr/bin/env bash
# The agent-runtime rows of spec §9, in one command: bench/agent.sh
#
# On the ordinary PostgreSQL (no pgvector needed: the agent's knowledge search then runs
# full-text only) and Redis, with the release binary, a fake Kommo
# (bench/agent/fake_kommo.py) and a fake model (bench/agent/fake_ai.py), both stdlib
# Python on loopback that record when they are asked:
#   1. runtime overhead: BENCH_AGENT_MESSAGES incoming-message webhooks, one every
#      BENCH_AGENT_INTERVAL_MS, each a new chat on a new lead routed to an active agent
#      with response_delay_secs 0; overhead = the model request's arrival at the fake −
#      the webhook's 200 at the client (one clock: time.time_ns() on this machine);
#   2. test chat: BENCH_AGENT_CHATS streamed test chats; the fake model waits
#      BENCH_AGENT_FIRST_TOKEN_MS before its first token; gap = the first `delta` event at
#      the client − the fake's first token.
# Prints the table and writes it, with the method and the machine, as the "Agent
# runtime" section of bench/results.md (the rest of the file is kept). See bench/README.md.
#
# Knobs (environment): BENCH_AGENT_MESSAGES (300), BENCH_AGENT_INTERVAL_MS (500; each
# reply makes two Kommo calls and Kommo allows 7/s per account), BENCH_AGENT_CHATS (200),
# BENCH_AGENT_FIRST_TOKEN_MS (50), BENCH_AGENT_WARMUP (messages and chats before each
# measurement, 10), BENCH_AGENT_HANDBOOK (1: the agent gets a small document, so the
# prompt has knowledge), BENCH_AGENT_JOB_CONCURRENCY (2), BENCH_AGENT_DB_POOL (4 per
# core), BENCH_AGENT_RUST_LOG (the server's RUST_LOG; default: production's, info),
# BENCH_AGENT_PORT (18082), BENCH_AGENT_AI_PORT (18092), BENCH_AGENT_KOMMO_PORT (18093),
# BENCH_AGENT_BINARY (a release binary to use instead of building one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/services.sh
. scripts/services.sh

MESSAGES=${BENCH_AGENT_MESSAGES:-300}
INTERVAL_MS=${BENCH_AGENT_INTERVAL_MS:-500}
CHATS=${BENCH_AGENT_CHATS:-200}
FIRST_TOKEN_MS=${BENCH_AGENT_FIRST_TOKEN_MS:-50}
WARMUP=${BENCH_AGENT_WARMUP:-10}
HANDBOOK=${BENCH_AGENT_HANDBOOK:-1}
JOB_CONCURRENCY=${BENCH_AGENT_JOB_CONCURRENCY:-2}
POOL=${BENCH_AGENT_DB_POOL:-$((4 * $(nproc)))}
RUST_LOG_LEVEL=${BENCH_AGENT_RUST_LOG:-info,sqlx=warn,tower_http=warn,opentelemetry=warn}
PORT=${BENCH_AGENT_PORT:-18082}
AI_PORT=${BENCH_AGENT_AI_PORT:-18092}
KOMMO_PORT=${BENCH_AGENT_KOMMO_PORT:-18093}
BINARY=${BENCH_AGENT_BINARY:-}

DB_NAME=agents_api_agent_bench
RT_ROLE=agents_api_agent_bench_rt
RT_PASSWORD=agents_api_agent_bench_rt
USER_ID=00000000-0000-7000-8000-0000000000a1
ACCOUNT_ID=31000001
PIPELINE=3104455
STAGE=36341584
DOMAIN=bench.kommo.com
KOMMO_TOKEN=bench-kommo-access-token-0123456789abcdef

OUT=bench/out/agent # raw outputs of this run (ignored by git)
RESULTS=bench/results.md
BASE=http://127.0.0.1:$PORT
AI_BASE=http://127.0.0.1:$AI_PORT
KOMMO_BASE=http://127.0.0.1:$KOMMO_PORT
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
REDIS_PREFIX="agents-api-agent-bench-$$-$(date +%s):"

SERVER_PID=
AI_PID=
KOMMO_PID=
TOKEN=
ORG_ID=
AGENT_ID=
declare -A R=() # every measured number

log() { printf '\n==> %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"${2:-%.2f}\", ($1) }"; }
# json FILE EXPRESSION: a value of the JSON in FILE (python expression over `d`).
json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

stop_pid() { # stop_pid PID NAME: TERM, up to 10 s, then KILL
  local pid=$1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  echo "Stopping $2 (pid $pid) ..." >&2
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  stop_pid "$SERVER_PID" agents-api
  stop_pid "$AI_PID" fake_ai.py
  stop_pid "$KOMMO_PID" fake_kommo.py
  redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null |
    xargs -r redis-cli -u "$REDIS_URL" unlink >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT
set -E
trap 'echo "${0##*/}: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# --- the database, the fakes and the server -----------------------------------------

SERVER_ENV=(
  PATH="$PATH" HOME="$HOME"
  APP_ENV=test APP_CONFIG_DIR="$ROOT/config"
  HTTP_ADDR="127.0.0.1:$PORT" METRICS_ADDR= PUBLIC_BASE_URL="$BASE"
  DATABASE_URL="postgres://$RT_ROLE:$RT_PASSWORD@$PGHOST:$PGPORT/$DB_NAME"
  DATABASE_MAX_CONNECTIONS="$POOL"
  DATABASE_MIGRATION_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME"
  REDIS_URL="$REDIS_URL" REDIS_KEY_PREFIX="$REDIS_PREFIX"
  JWT_SECRET=bench-only-insecure-jwt-secret-never-in-production
  ENCRYPTION_KEYS=bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
  LOG_FORMAT=json RUST_LOG="$RUST_LOG_LEVEL"
  RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_ANON_PER_MIN=1000000
  RATE_LIMIT_WEBHOOK_PER_MIN=1000000
  SHUTDOWN_GRACE_SECS=5
  # The webhook and reply jobs run in this process.
  JOB_CONCURRENCY="$JOB_CONCURRENCY"
  KOMMO_BASE_URL="$KOMMO_BASE/{base_domain}"
  AI_BASE_URL="$AI_BASE/v1" AI_API_KEY=bench-key AI_REQUESTS_PER_MIN=1000000
)
if [[ -n ${PGPASSWORD:-} ]]; then SERVER_ENV+=(PGPASSWORD="$PGPASSWORD"); fi

# agents-api COMMAND...: the copied binary, with the server's environment, in $OUT.
agents_api() { (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" ./agents-api "$@"); }

fresh_database() {
  psql_admin postgres -q <<SQL
SET client_min_messages = warning;
DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE);
CREATE DATABASE $DB_NAME;
SQL
  agents_api migrate >"$OUT/migrate.log" 2>&1 || { cat "$OUT/migrate.log" >&2; die "migrate failed"; }
  # The unprivileged login role the server runs as (in api_runtime; neither superuser
  # nor BYPASSRLS), as scripts/dev.sh makes it.
  (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" RUNTIME_ROLE_PASSWORD="$RT_PASSWORD" \
    ./agents-api runtime-role "$RT_ROLE") >/dev/null
}

start_fakes() {
  python3 bench/agent/fake_ai.py --port "$AI_PORT" --first-token-ms "$FIRST_TOKEN_MS" \
    >"$OUT/fake_ai.log" 2>&1 &
  AI_PID=$!
  python3 bench/agent/fake_kommo.py --port "$KOMMO_PORT" --token "$KOMMO_TOKEN" \
    --account-id "$ACCOUNT_ID" --pipeline "$PIPELINE" --stage "$STAGE" >"$OUT/fake_kommo.log" 2>&1 &
  KOMMO_PID=$!
  wait_for 30 curl -fsS "$AI_BASE/records" ||
    { cat "$OUT/fake_ai.log" >&2; die "fake_ai.py did not start on port $AI_PORT"; }
  wait_for 30 curl -fsS "$KOMMO_BASE/records" ||
    { cat "$OUT/fake_kommo.log" >&2; die "fake_kommo.py did not start on port $KOMMO_PORT"; }
}

start_server() {
  (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" ./agents-api serve) >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  if ! wait_for 30 curl -fsS "$BASE/health/ready"; then
    tail -n 30 "$OUT/server.log" >&2
    die "agents-api did not become ready on $BASE"
  fi
}

# api METHOD PATH [curl arguments...]: the JSON answer, failing on an HTTP error.
api() {
  local method=$1 path=$2
  shift 2
  curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $TOKEN" "$@" "$BASE$path"
}
# api_json METHOD PATH FILE BODY: a JSON request, its answer kept in $OUT/FILE.
api_json() {
  api "$1" "$2" -H 'Content-Type: application/json' --data "$4" >"$OUT/$3" ||
    die "$1 $2 failed: $(cat "$OUT/$3")"
}

# Waits until no job is queued or running (the syncs, the upload, the replies).
wait_jobs_idle() {
  local deadline=$((SECONDS + 300)) n
  while :; do
    n=$(psql_admin "$DB_NAME" -Atc "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
    ((n == 0)) && return 0
    ((SECONDS < deadline)) || die "$n jobs still queued or running after 5 minutes"
    sleep 0.5
  done
}

# An org with the integration's credentials, a connection from a pasted token, an active
# agent with response_delay_secs 0 routed to the stage every lead of the fake is in, and
# (BENCH_AGENT_HANDBOOK) a small document of its own.
set_up() {
  TOKEN=$(agents_api dev-token --user "$USER_ID" --email agent-bench@example.com --ttl 2h)
  api_json POST /v1/orgs org.json '{"name": "Agent Bench", "slug": "agent-bench"}'
  ORG_ID=$(json "$OUT/org.json" 'd["id"]')
  api_json PUT "/v1/orgs/$ORG_ID/crm/credentials/kommo" credentials.json \
    '{"client_id": "bench-client", "client_secret": "bench-client-secret-value"}'
  api_json POST "/v1/orgs/$ORG_ID/crm/connections" connection.json \
    "{\"base_domain\": \"$DOMAIN\", \"access_token\": \"$KOMMO_TOKEN\"}"
  R[connection]=$(json "$OUT/connection.json" 'd["id"]')
  R[webhook_url]=$(json "$OUT/connection.json" 'd["webhook_url"]')
  [[ ${R[webhook_url]} == "$BASE"/* ]] || die "unexpected webhook_url ${R[webhook_url]}"
  local instructions
  instructions="You sell delivery services for Acme Logistics. Greet the lead by name, answer \
questions about prices, delivery times and returns from the context, ask about the size and \
destination of the shipment, and offer to book a call with a manager when the lead is ready \
to order. Keep answers under three sentences."
  api_json POST "/v1/orgs/$ORG_ID/agents" agent.json "{\"name\": \"Anna\", \"model\": \"gpt-4o-mini\",
    \"instructions\": \"$instructions\", \"status\": \"active\", \"connection_id\": \"${R[connection]}\",
    \"response_delay_secs\": 0}"
  AGENT_ID=$(json "$OUT/agent.json" 'd["id"]')
  R[instructions]=$(json "$OUT/agent.json" 'len(d["instructions"])')
  [[ $(json "$OUT/agent.json" 'd["response_delay_secs"]') == 0 ]] || die "the agent's response delay is not 0"
  api_json PUT "/v1/orgs/$ORG_ID/agents/$AGENT_ID/routes" routes.json \
    "[{\"connection_id\": \"${R[connection]}\", \"pipeline_id\": $PIPELINE, \"stage_ids\": [$STAGE]}]"
  if ((HANDBOOK)); then
    cat >"$OUT/handbook.txt" <<'EOF'
Delivery to Berlin costs 5 euros and takes two days. Delivery within Germany costs 9 euros and
takes three days; to the rest of the European Union 19 euros and five days.
Orders above 100 euros ship free of charge. Returns are accepted within 30 days; the lead pays
the return shipping unless the goods arrived damaged.
Pallets and parcels over 30 kg are quoted by a manager: offer a call.
EOF
    api POST "/v1/orgs/$ORG_ID/knowledge/assets" -F "file=@$OUT/handbook.txt;type=text/plain" \
      -F "agent_id=$AGENT_ID" >"$OUT/asset.json" || die "the upload failed: $(cat "$OUT/asset.json")"
  fi
  wait_jobs_idle
  if ((HANDBOOK)); then
    local asset
    asset=$(json "$OUT/asset.json" 'd["asset"]["id"]')
    api GET "/v1/orgs/$ORG_ID/knowledge/assets/$asset" >"$OUT/asset-indexed.json"
    [[ $(json "$OUT/asset-indexed.json" 'd["status"]') == indexed ]] ||
      die "the handbook was not indexed: $(cat "$OUT/asset-indexed.json")"
  fi
  R[jobs_setup]=$(psql_admin "$DB_NAME" -Atc "SELECT string_agg(type || ' ' || status, ', ' ORDER BY created_at) FROM jobs")
  echo "  set-up jobs: ${R[jobs_setup]}" >&2
}

# --- measurements --------------------------------------------------------------------

# The jobs' server timestamps per measured chat: the kommo:webhook job of its delivery and
# its (first) agent:reply job, as epochs.
jobs_tsv() {
  psql_admin "$DB_NAME" -AtF $'\t' <<SQL
SELECT c.chat_id, extract(epoch FROM wj.created_at), extract(epoch FROM wj.started_at),
       extract(epoch FROM wj.finished_at), extract(epoch FROM rj.created_at),
       extract(epoch FROM rj.started_at)
FROM conversations c
JOIN webhook_events d ON d.kind = 'delivery' AND d.org_id = c.org_id
                     AND strpos(d.raw_body, '=' || c.chat_id || '&') > 0
JOIN jobs wj ON wj.type = 'kommo:webhook' AND wj.payload->>'delivery_id' = d.id::text
JOIN LATERAL (SELECT * FROM jobs j WHERE j.type = 'agent:reply'
                AND j.payload->>'conversation_id' = c.id::text
              ORDER BY j.created_at LIMIT 1) rj ON true
WHERE c.chat_id LIKE 'chat-$1-%';
SQL
}

measure_runtime() {
  local drive=(python3 bench/agent/drive.py webhooks --url "${R[webhook_url]}"
    --interval-ms "$INTERVAL_MS" --account-id "$ACCOUNT_ID" --ai "$AI_BASE" --kommo "$KOMMO_BASE")
  if ((WARMUP > 0)); then
    echo "  warm-up: $WARMUP webhooks" >&2
    "${drive[@]}" --count "$WARMUP" --prefix bench-warm --lead-offset 1000000 \
      --out "$OUT/warmup-rows.json"
    wait_jobs_idle
  fi
  note_rustc
  echo "  $MESSAGES webhooks, one every $INTERVAL_MS ms (~$((MESSAGES * INTERVAL_MS / 1000)) s)" >&2
  local before after wall0 wall1
  before=$(cpu_ticks)
  wall0=$EPOCHREALTIME
  "${drive[@]}" --count "$MESSAGES" --prefix bench-msg --out "$OUT/rows.json"
  wall1=$EPOCHREALTIME
  after=$(cpu_ticks)
  R[runtime.cpu]=$(cpu_cores "$before" "$after" "$wall0" "$wall1")
  wait_jobs_idle
  jobs_tsv bench-msg >"$OUT/jobs.tsv"
  python3 bench/agent/drive.py report --rows "$OUT/rows.json" --jobs "$OUT/jobs.tsv" >"$OUT/runtime.json"
  local f=$OUT/runtime.json
  R[posted]=$(json "$f" 'd["posted"]')
  R[seen]=$(json "$f" 'd["seen"]')
  R[lost]=$(json "$f" 'd["lost"]')
  R[repeated]=$(json "$f" 'd["repeated"]')
  R[notes]=$(json "$f" 'd["notes"]')
  R[joined]=$(json "$f" 'd.get("jobs_joined", 0)')
  local k
  for k in p50 p99 max; do
    R[overhead.$k]=$(json "$f" "d['overhead_ms']['$k']")
    R[webhook.$k]=$(json "$f" "d['webhook_ms']['$k']")
    R[note.$k]=$(json "$f" "d['model_to_note_ms']['$k']")
  done
  local s
  for s in 200_to_webhook_job_started webhook_job_run webhook_job_finished_to_reply_job_started \
    reply_job_started_to_lead_read lead_read_to_model_request; do
    R[split.$s]=$(json "$f" "'%s / %s' % (d['split_ms']['$s']['p50'], d['split_ms']['$s']['p99'])")
  done
  R[replies]=$(psql_admin "$DB_NAME" -Atc "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
    FROM (SELECT status, count(*) n FROM jobs WHERE type = 'agent:reply' GROUP BY status) s")
  R[sources]=$(psql_admin "$DB_NAME" -Atc "SELECT count(*) FILTER (WHERE jsonb_array_length(sources) > 0)
    || ' of ' || count(*) FROM messages WHERE direction = 'out'")
  printf '  overhead p50 %s ms, p99 %s ms, max %s ms; %s of %s seen by the model, %s lost\n' \
    "${R[overhead.p50]}" "${R[overhead.p99]}" "${R[overhead.max]}" "${R[seen]}" "${R[posted]}" "${R[lost]}" >&2
}

measure_chat() {
  local drive=(python3 bench/agent/drive.py chat --base "$BASE" --org "$ORG_ID" --agent "$AGENT_ID"
    --token "$TOKEN" --ai "$AI_BASE")
  if ((WARMUP > 0)); then
    echo "  warm-up: $WARMUP test chats" >&2
    "${drive[@]}" --count "$WARMUP" --prefix bench-chatwarm --out "$OUT/chat-warmup-rows.json" >/dev/null
  fi
  note_rustc
  echo "  $CHATS streamed test chats, one after the other" >&2
  local before after wall0 wall1
  before=$(cpu_ticks)
  wall0=$EPOCHREALTIME
  "${drive[@]}" --count "$CHATS" --prefix bench-test --out "$OUT/chat-rows.json" >"$OUT/chat.json"
  wall1=$EPOCHREALTIME
  after=$(cpu_ticks)
  R[chat.cpu]=$(cpu_cores "$before" "$after" "$wall0" "$wall1")
  local f=$OUT/chat.json k
  R[chat.requests]=$(json "$f" 'd["requests"]')
  R[chat.paired]=$(json "$f" 'd["paired"]')
  R[chat.done]=$(json "$f" 'd["done"]')
  for k in p50 p99 max; do
    R[gap.$k]=$(json "$f" "d['gap_ms']['$k']")
    R[sources.$k]=$(json "$f" "d['request_to_sources_ms']['$k']")
    R[to_model.$k]=$(json "$f" "d['request_to_model_ms']['$k']")
  done
  printf '  first delta after the first token: p50 %s ms, p99 %s ms, max %s ms (%s of %s paired)\n' \
    "${R[gap.p50]}" "${R[gap.p99]}" "${R[gap.max]}" "${R[chat.paired]}" "${R[chat.requests]}" >&2
}

CLK_TCK=$(getconf CLK_TCK)
proc_ticks() { # utime + stime + cutime + cstime of PIDs, in clock ticks
  local pid f ticks=0
  for pid in "$@"; do
    { read -r -a f <"/proc/$pid/stat"; } 2>/dev/null || continue
    ticks=$((ticks + f[13] + f[14] + f[15] + f[16]))
  done
  echo "$ticks"
}
cpu_ticks() { # "server postgres fakes" ticks, and the machine's busy ticks
  # shellcheck disable=SC2046 # one argument per pid
  echo "$(proc_ticks "$SERVER_PID") $(proc_ticks $(pgrep -x postgres)) $(proc_ticks "$AI_PID" "$KOMMO_PID")" \
    "$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat)"
}
# cpu_cores BEFORE AFTER WALL0 WALL1: cores used by the server / PostgreSQL / the fakes,
# and the machine's busy cores, between two cpu_ticks lines.
cpu_cores() {
  local b a
  read -r -a b <<<"$1"
  read -r -a a <<<"$2"
  awk -v t="$CLK_TCK" -v w="$(calc "$4 - $3" %.3f)" -v s=$((a[0] - b[0])) -v p=$((a[1] - b[1])) \
    -v f=$((a[2] - b[2])) -v m=$((a[3] - b[3])) \
    'BEGIN { printf "%.2f / %.2f / %.2f; machine %.2f", s / t / w, p / t / w, f / t / w, m / t / w }'
}

note_rustc() {
  local n
  n=$(pgrep -c -x rustc || true)
  ((n > ${R[rustc_max]:-0})) && R[rustc_max]=$n
  return 0
}

# --- report --------------------------------------------------------------------------

verdict() { if (($(calc "$1" %d))); then echo pass; else echo "**FAIL**"; fi; }

report() {
  echo "| Measure | Measured | Target | |"
  echo "|---|---:|---|---|"
  echo "| Runtime overhead, webhook 200 → model request at the fake, response_delay_secs 0: p50 | ${R[overhead.p50]} ms | ≤ 50 ms | $(verdict "${R[overhead.p50]} <= 50") |"
  echo "| … p99 | ${R[overhead.p99]} ms | ≤ 250 ms | $(verdict "${R[overhead.p99]} <= 250") |"
  echo "| … max | ${R[overhead.max]} ms | | |"
  echo "| … webhooks posted / seen by the model / lost / asked more than once | ${R[posted]} / ${R[seen]} / ${R[lost]} / ${R[repeated]} | none lost | $(verdict "${R[lost]} == 0 && ${R[seen]} == ${R[posted]}") |"
  echo "| … of which (p50 / p99 ms): 200 → kommo:webhook job started | ${R[split.200_to_webhook_job_started]} | | |"
  echo "| … kommo:webhook job run (parse, store events, conversation, message, reply job) | ${R[split.webhook_job_run]} | | |"
  echo "| … webhook job finished → agent:reply job started | ${R[split.webhook_job_finished_to_reply_job_started]} | | |"
  echo "| … reply job started → lead read at the fake Kommo | ${R[split.reply_job_started_to_lead_read]} | | |"
  echo "| … lead read → model request (routing, knowledge search, history, prompt) | ${R[split.lead_read_to_model_request]} | | |"
  echo "| Webhook request itself (client: sent → 200), p50 / p99 | ${R[webhook.p50]} / ${R[webhook.p99]} ms | | |"
  echo "| Model answer → note posted at the fake Kommo (info; includes the Kommo rate-limit slot), p50 / p99 | ${R[note.p50]} / ${R[note.p99]} ms | | |"
  echo "| Test chat, first \`delta\` event at the client − the model's first token (fake waits ${FIRST_TOKEN_MS} ms): p50 | ${R[gap.p50]} ms | ≤ 20 ms | $(verdict "${R[gap.p50]} <= 20") |"
  echo "| … p99 | ${R[gap.p99]} ms | ≤ 20 ms | $(verdict "${R[gap.p99]} <= 20") |"
  echo "| … max | ${R[gap.max]} ms | | |"
  echo "| … requests / paired with a first token / ended with \`done\` | ${R[chat.requests]} / ${R[chat.paired]} / ${R[chat.done]} | all | $(verdict "${R[chat.paired]} == ${R[chat.requests]} && ${R[chat.done]} == ${R[chat.requests]}") |"
  echo "| … request → \`sources\` event (first byte) / → model request at the fake, p50 (p99) | ${R[sources.p50]} (${R[sources.p99]}) / ${R[to_model.p50]} (${R[to_model.p99]}) ms | | |"
  echo "| CPU (cores) during the webhooks: server / PostgreSQL / fakes; machine busy | ${R[runtime.cpu]} | of $(nproc) | |"
  echo "| CPU (cores) during the test chats: server / PostgreSQL / fakes; machine busy | ${R[chat.cpu]} | of $(nproc) | |"
}

machine() {
  local dirty=""
  [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && dirty=" (with uncommitted changes in the working tree)"
  cat <<EOF
- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); the whole run took ${R[elapsed]}
- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty
- CPU: $(nproc) × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1); memory $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $(uname -sr)
- PostgreSQL: $(psql_admin postgres -Atc 'SHOW server_version') at $PGHOST:$PGPORT, $(if [[ ${R[pgvector]} == yes ]]; then echo "pgvector available"; else echo "**no pgvector**: the agent's knowledge search runs full-text only (no embedding call)"; fi) (shared_buffers $(psql_admin postgres -Atc 'SHOW shared_buffers'), synchronous_commit $(psql_admin postgres -Atc 'SHOW synchronous_commit'))
- Redis $(redis-cli -u "$REDIS_URL" INFO server | sed -n 's/^redis_version://p' | tr -d '\r'); $(python3 --version) for the fakes and the clients
- Server: JOB_CONCURRENCY=$JOB_CONCURRENCY, DATABASE_MAX_CONNECTIONS=$POOL, RUST_LOG=$RUST_LOG_LEVEL, LOG_FORMAT=json, rate limits and AI_REQUESTS_PER_MIN 1,000,000/min
- Everything (PostgreSQL, Redis, the server, the two fakes, the clients) shares these $(nproc) cores; load average ${R[load_before]} before the run, ${R[load_after]} after; at most ${R[rustc_max]} rustc processes (other builds) seen at the start of a measurement.
EOF
}

server_log_summary() {
  python3 - "$OUT/server.log" <<'PY'
import collections, json, sys
counts = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    try:
        d = json.loads(line)
    except ValueError:
        counts[("?", line.strip()[:120])] += 1
        continue
    if d.get("level") not in ("WARN", "ERROR"):
        continue
    message = d.get("message") or d.get("fields", {}).get("message", "")
    counts[(d.get("level", "?"), str(message)[:120])] += 1
for (level, message), n in counts.most_common(8):
    print(f"  - {n} × {level} `{message}`")
PY
}

section() {
  cat <<EOF
## Agent runtime

Produced by \`bench/agent.sh\` (see bench/README.md, "Agent runtime"); raw outputs in
bench/out/agent/ (not committed).

### Machine

$(machine)

### Results

$1

### Method

- **Set-up, all through the API**: an org (\`dev-token\`, \`POST /v1/orgs\`), the Kommo
  integration's credentials, a connection from a pasted access token that the fake Kommo
  (bench/agent/fake_kommo.py) accepts (\`GET /api/v4/account\`; the pipelines sync it
  queues is answered and waited for), one agent \`status: active\`,
  \`response_delay_secs: 0\`, ${R[instructions]} characters of instructions, routed
  (\`PUT …/routes\`) to the stage the fake puts every lead in$(if ((HANDBOOK)); then printf ',\n  and a 5-line handbook uploaded for it (indexed; %s outbound answers had sources)' "${R[sources]}"; fi).
  The server runs its job workers (JOB_CONCURRENCY=$JOB_CONCURRENCY: the webhook job in
  the internal lane, the reply job in the external one).
- **Runtime overhead**: bench/agent/drive.py posts $MESSAGES incoming-message webhooks
  (Kommo's form body, as the integration tests' \`incoming_body\`) one every
  $INTERVAL_MS ms on one keep-alive connection, after $WARMUP unmeasured ones; each is a
  new chat on a new lead, and its text carries a token (\`bench-msg-000123\`). The
  fake model (bench/agent/fake_ai.py) records, for every \`/v1/chat/completions\`, the
  time its headers were read and the token of the last user message, and answers at
  once with text (no tool call). Overhead = that time − the time the client read the
  webhook's 200, both \`time.time_ns()\` on this machine. It includes both jobs (parse
  the delivery, record the conversation and message, queue the reply; route the lead by
  reading it from the fake Kommo, knowledge search, history, prompt). The split rows
  pair the same messages with the jobs' \`started_at\`/\`finished_at\` (PostgreSQL's
  \`now()\`, the same clock) and the fake Kommo's arrival time of \`GET /api/v4/leads/{id}\`.
  The interval keeps the replies' Kommo calls (lead read + note) under Kommo's 7/s
  per account, which the server enforces (one slot per 150 ms): the note waits for its
  slot, after the model request, so that limit is outside the measured span.
- **Test chat**: $CHATS \`POST /v1/orgs/{org}/agents/{agent}/test-chat\` with
  \`Accept: text/event-stream\`, one after the other, each on a new connection (raw
  socket, TCP_NODELAY), after $WARMUP unmeasured ones. The fake model sends its headers
  at once, waits ${FIRST_TOKEN_MS} ms, records the time and writes the first content chunk
  (then three more, 2 ms apart, the usage chunk and \`[DONE]\`). The client records when
  the bytes of the first \`event:delta\` arrive; gap = that − the fake's first token.
- Percentiles are nearest-rank over all measured requests.

Reply jobs after the run: ${R[replies]:-none}; outbound answers with knowledge sources: ${R[sources]:-?}.

Server log (warnings and errors, by message):

${R[server_log]:-  - none}
EOF
}

# Replaces the "## Agent runtime" section of $RESULTS (up to the next "## " heading), or
# appends it; the rest of the file stays as it is.
write_section() {
  local new=$OUT/section.md
  section "$1" >"$new"
  if [[ ! -f $RESULTS ]]; then
    { echo "# Benchmark results"; echo; cat "$new"; } >"$RESULTS"
    return
  fi
  awk -v sec="$new" '
    /^## / && skip { skip = 0 }
    /^## Agent runtime[[:space:]]*$/ {
      while ((getline line < sec) > 0) print line
      print ""
      skip = 1; done = 1; next
    }
    !skip { print }
    END { if (!done) { print ""; while ((getline line < sec) > 0) print line } }
  ' "$RESULTS" >"$RESULTS.tmp"
  # No blank lines piled up at the end.
  sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$RESULTS.tmp" >"$RESULTS"
  rm -f "$RESULTS.tmp"
}

# --- main ----------------------------------------------------------------------------

main() {
  local started=$SECONDS
  rm -rf "$OUT"
  mkdir -p "$OUT"
  R[load_before]=$(cut -d' ' -f1-3 /proc/loadavg)
  R[rustc_max]=0
  note_rustc

  if [[ -n $BINARY ]]; then
    cp "$BINARY" "$OUT/agents-api"
  else
    log "Building the release binary"
    ensure_rust
    cargo build --release --bin agents-api
    # A copy, so that someone else's rebuild cannot swap the binary in the middle of a run.
    cp "${CARGO_TARGET_DIR:-target}/release/agents-api" "$OUT/agents-api"
  fi

  log "PostgreSQL, Redis, the fake model on :$AI_PORT and the fake Kommo on :$KOMMO_PORT"
  ensure_services
  start_fakes
  agents_api check-config >"$OUT/check-config.txt" 2>&1 ||
    { cat "$OUT/check-config.txt" >&2; die "the server's configuration is not valid"; }

  log "A fresh database $DB_NAME (migrated, runtime role $RT_ROLE)"
  fresh_database
  R[pgvector]=$(psql_admin "$DB_NAME" -Atc "SELECT CASE WHEN EXISTS (SELECT FROM pg_extension
    WHERE extname = 'vector') THEN 'yes' ELSE 'no' END")

  log "Starting agents-api on $BASE"
  start_server
  set_up

  log "Runtime overhead: webhook accepted → model request"
  measure_runtime

  log "Test chat: first streamed delta after the model's first token"
  measure_chat

  R[load_after]=$(cut -d' ' -f1-3 /proc/loadavg)
  R[server_log]=$(server_log_summary)
  local elapsed=$((SECONDS - started))
  R[elapsed]="$((elapsed / 60)) min $((elapsed % 60)) s"

  local table
  table=$(report)
  write_section "$table"
  log "Agent runtime results (also in $RESULTS, section \"Agent runtime\"; run took ${R[elapsed]})"
  echo "$table"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
