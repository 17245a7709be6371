#!/usr/bin/env bash
# The benchmark of spec §9, in one command: bench/run.sh
#
# Builds the release binary, makes sure PostgreSQL and Redis answer, migrates a fresh
# database, seeds one org with 50 agents, measures the API against pgbench running the
# same SQL (the ceiling) and prints/writes the table to bench/results.md.
# See bench/README.md for what every number means.
#
# Knobs (environment): BENCH_DURATION (s, default 20), BENCH_SLICES (the measured
# seconds of the API and of its pgbench ceiling are cut into this many alternating
# slices, default 4), BENCH_WARMUP (s, default 5),
# BENCH_CONNECTIONS (default "16 64"), BENCH_THREADS (load-generator threads and pgbench
# -j, default 2), BENCH_DB_POOL (the server's DATABASE_MAX_CONNECTIONS, default 4 per
# core: 8 on 2 cores; see bench/README.md for why not more),
# BENCH_PORT (default 18080), BENCH_BINARY (a built agents-api to measure instead of
# building one; bench/profile.sh's comparisons use it), BENCH_TOOL (wrk or oha; default: wrk if it can be had),
# BENCH_GROWTH (1 = also measure the list over 100,000 agents and 1,000,000 other rows;
# default 1), BENCH_KNOWLEDGE (1 = then run bench/knowledge.sh, the knowledge-base rows,
# with this binary; default 1; its BENCH_KB_* knobs pass through), BENCH_AGENT (1 = then
# run bench/agent.sh, the agent-runtime rows, with this binary; default 1; its
# BENCH_AGENT_* knobs pass through), BENCH_JOBS (1 = first run bench/jobs.sh, the job
# rows, with a release build that has test-support's no-op job; default 1; its
# BENCH_JOBS_* knobs pass through).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/services.sh
. scripts/services.sh

DURATION=${BENCH_DURATION:-20}
SLICES=${BENCH_SLICES:-4}
SLICE=$((DURATION / SLICES))
((SLICE >= 1)) || { echo "BENCH_DURATION must be at least BENCH_SLICES seconds" >&2; exit 2; }
WARMUP=${BENCH_WARMUP:-5}
read -r -a CONNECTIONS <<<"${BENCH_CONNECTIONS:-16 64}"
THREADS=${BENCH_THREADS:-2}
POOL=${BENCH_DB_POOL:-$((4 * $(nproc)))}
PORT=${BENCH_PORT:-18080}
TOOL=${BENCH_TOOL:-}
GROWTH=${BENCH_GROWTH:-1}
KNOWLEDGE=${BENCH_KNOWLEDGE:-1}
AGENT=${BENCH_AGENT:-1}
JOBS=${BENCH_JOBS:-1}
GROWTH_AGENTS=100000   # in the measured org, the 50 included
GROWTH_OTHER_ORGS=1000 # each with GROWTH_OTHER_AGENTS agents
GROWTH_OTHER_AGENTS=1000

DB_NAME=agents_api_bench
RT_ROLE=agents_api_bench_rt
RT_PASSWORD=agents_api_bench_rt
ORG_ID=00000000-0000-7000-8000-00000000be01
USER_ID=00000000-0000-7000-8000-00000000be02
CONNECTION_ID=00000000-0000-7000-8000-00000000be03
ACCOUNT_ID=31337
WEBHOOK_TOKEN=bench-webhook-token-0123456789abcdefghijklm # 43 characters, as ours
AGENTS=50
LIST_LIMIT=20
STATEMENT_TIMEOUT=30000ms # REQUEST_TIMEOUT_SECS=30, as src/db/rls.rs formats it

OUT=bench/out       # raw outputs of this run (ignored by git)
TOOLS=bench/.tools  # oha, when it has to be built (ignored by git)
RESULTS=bench/results.md
BASE=http://127.0.0.1:$PORT
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
REDIS_PREFIX="agents-api-bench-$$-$(date +%s):"
RT_URL="postgres://$RT_ROLE:$RT_PASSWORD@$PGHOST:$PGPORT/$DB_NAME"

SERVER_PID=
SAMPLER_PID=
# Set in main: the bearer token and its claims (what pgbench publishes), the webhook
# body pgbench stores, the two measured URLs.
TOKEN= CLAIMS= BODY= LIST_URL= WEBHOOK_URL=
CPU_BEFORE=()
CPU_AFTER=()
declare -A R=() # every measured number, keyed "<measure>.<connections>.<field>"

log() { printf '\n==> %s\n' "$*" >&2; }

# Float arithmetic and formatting: calc 'expression' [printf-format].
calc() { awk "BEGIN { printf \"${2:-%.2f}\", ($1) }"; }

stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "Stopping agents-api (pid $SERVER_PID) ..." >&2
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
}

cleanup() {
  local status=$?
  if [[ -n $SAMPLER_PID ]]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
  stop_server
  # The rate-limit buckets and job queue of this run live under its own prefix.
  redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null |
    xargs -r redis-cli -u "$REDIS_URL" unlink >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT
set -E # functions inherit the ERR trap: a failure names its line
trap 'echo "${0##*/}: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# --- tools -------------------------------------------------------------------------

ensure_load_tool() {
  if [[ -z $TOOL || $TOOL == wrk ]]; then
    if command -v wrk >/dev/null; then TOOL=wrk; return; fi
    echo "wrk is missing; trying apt-get install -y wrk ..." >&2
    if as_root apt-get install -y wrk >"$OUT/apt-wrk.log" 2>&1 ||
      { as_root apt-get update >>"$OUT/apt-wrk.log" 2>&1 &&
        as_root apt-get install -y wrk >>"$OUT/apt-wrk.log" 2>&1; }; then
      TOOL=wrk
      return
    fi
    [[ $TOOL == wrk ]] && die "could not install wrk (see $OUT/apt-wrk.log)"
    echo "could not install wrk; falling back to oha from crates.io" >&2
  fi
  TOOL=oha
  if [[ ! -x $TOOLS/bin/oha ]]; then
    echo "Building oha into $TOOLS (once) ..." >&2
    cargo install oha --locked --root "$TOOLS"
  fi
}

# --- database ----------------------------------------------------------------------

fresh_database() {
  psql_admin postgres -q <<SQL
SET client_min_messages = warning;
DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE);
CREATE DATABASE $DB_NAME;
SQL
  agents_api migrate
  # As scripts/dev.sh: the login role can only join api_runtime once the migration made
  # it, and re-runs re-assert that it is neither superuser nor BYPASSRLS.
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
SQL
}

# bench_agents FROM TO: the INSERT of the bench org's agents FROM..TO, 600-byte
# instructions each, statuses in turn.
bench_agents() {
  cat <<SQL
INSERT INTO agents (org_id, name, status, model, instructions, channels, settings)
SELECT '$ORG_ID', 'Bench agent ' || i, (ARRAY['active', 'inactive', 'draft'])[1 + i % 3],
       'gpt-4o-mini',
       left(repeat('Qualify inbound leads politely, ask about budget and timeline, '
                   || 'book a call when the lead is warm, and log every answer in Kommo. ', 10),
            600),
       ARRAY['chat', 'whatsapp'], '{"tone": "friendly", "language": "en"}'::jsonb
FROM generate_series($1, $2) AS i;
SQL
}

seed() {
  local token_sha256
  token_sha256=$(printf '%s' "$WEBHOOK_TOKEN" | sha256sum | cut -d' ' -f1)
  # As the superuser, to whom row-level security does not apply. Instructions are 600
  # bytes each; ids are random (the API's are UUIDv7, the order is by id either way).
  psql_admin "$DB_NAME" -q <<SQL
INSERT INTO organizations (id, name, slug, created_by)
VALUES ('$ORG_ID', 'Bench Org', 'bench', '$USER_ID');
INSERT INTO organization_members (org_id, user_id, role)
VALUES ('$ORG_ID', '$USER_ID', 'owner');
$(bench_agents 1 "$AGENTS")
INSERT INTO crm_connections (id, org_id, provider, base_domain, account_id, status,
                             webhook_token_hash, created_by)
VALUES ('$CONNECTION_ID', '$ORG_ID', 'kommo', 'bench.kommo.com', $ACCOUNT_ID, 'connected',
        decode('$token_sha256', 'hex'), '$USER_ID');
VACUUM ANALYZE;
SQL
}

# The server's warnings and errors, counted by message (it logs at RUST_LOG=warn).
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
    message = d.get("message") or d.get("fields", {}).get("message", "")
    counts[(d.get("level", "?"), str(message)[:120])] += 1
for (level, message), n in counts.most_common(8):
    print(f"  - {n} × {level} `{message}`")
PY
}

# The org grows to GROWTH_AGENTS agents and 1,000,000 agents appear in other orgs. The
# count trigger is off while the rows go in (one statement, counted once afterwards, as
# migration 7 does for existing rows), which makes seeding minutes shorter.
seed_growth() {
  psql_admin "$DB_NAME" -q <<SQL
SET client_min_messages = warning;
ALTER TABLE agents DISABLE TRIGGER agents_count;
$(bench_agents "$((AGENTS + 1))" "$GROWTH_AGENTS")
INSERT INTO organizations (id, name, slug, created_by)
SELECT gen_random_uuid(), 'Other org ' || o, 'other-' || o, gen_random_uuid()
FROM generate_series(1, $GROWTH_OTHER_ORGS) AS o;
INSERT INTO agents (org_id, name, status, model, instructions, channels)
SELECT org.id, 'Other agent ' || i, (ARRAY['active', 'inactive', 'draft'])[1 + i % 3],
       'gpt-4o-mini', 'Answer questions about the catalogue.', ARRAY['chat']
FROM organizations org, generate_series(1, $GROWTH_OTHER_AGENTS) AS i
WHERE org.slug LIKE 'other-%';
ALTER TABLE agents ENABLE TRIGGER agents_count;
TRUNCATE agent_counts;
INSERT INTO agent_counts (org_id, status, n)
SELECT org_id, status, count(*) FROM agents GROUP BY org_id, status;
VACUUM ANALYZE;
CHECKPOINT; -- the seeding's writes are flushed now, not during the measurement
SQL
}

# check_list URL TOKEN FILE TOTAL: one list request, kept in FILE, must answer a full page
# with a next_cursor and `total` TOTAL.
check_list() {
  curl -fsS -H "Authorization: Bearer $2" "$1" >"$3" || die "the list request failed"
  python3 - "$3" "$LIST_LIMIT" "$4" <<'PY' || die "unexpected list response in $3"
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["data"]) == int(sys.argv[2]), len(d["data"])
assert d["total"] == int(sys.argv[3]), d["total"]
assert d["next_cursor"], "no next_cursor"
PY
}


# --- the server --------------------------------------------------------------------

# The server's whole environment (env -i: nothing else from the caller's shell), and it
# runs in $OUT, so that a developer's .env in the repository does not leak in either.
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
  # An API-only process (no job workers): what is measured is ingestion against its SQL;
  # parsing the deliveries is the workers' job, on replicas of their own (bench/README.md).
  JOB_CONCURRENCY=0
)
if [[ -n ${PGPASSWORD:-} ]]; then SERVER_ENV+=(PGPASSWORD="$PGPASSWORD"); fi

# agents-api COMMAND...: the copied binary, with the server's environment, in $OUT.
agents_api() { (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" ./agents-api "$@"); }

start_server() {
  # exec all the way down, so that $! is the server's own pid (for /proc/<pid>/status).
  (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" ./agents-api serve) >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  if ! wait_for 30 curl -fsS "$BASE/health/ready"; then
    tail -n 30 "$OUT/server.log" >&2
    die "agents-api did not become ready on $BASE"
  fi
}

rss_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SERVER_PID/status"; }

# Samples the server's VmRSS every 200 ms and keeps the maximum in $1.
sample_rss() {
  local max=0 kb
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    kb=$(rss_kb VmRSS) || break
    if ((kb > max)); then
      max=$kb
      echo "$max" >"$1"
    fi
    sleep 0.2
  done
}

# --- CPU accounting ----------------------------------------------------------------
# Who used the cores during a measured run: the server, PostgreSQL (all its processes,
# exited backends included through the postmaster's children times), Redis, the load
# generator (our shell's children times) and everything else ("other": the machine's
# busy time minus those — other builds and tests).

CLK_TCK=$(getconf CLK_TCK)

# proc_ticks PID...: utime + stime + cutime + cstime, in clock ticks.
proc_ticks() {
  local pid f ticks=0
  for pid in "$@"; do
    { read -r -a f <"/proc/$pid/stat"; } 2>/dev/null || continue
    ticks=$((ticks + f[13] + f[14] + f[15] + f[16]))
  done
  echo "$ticks"
}

# cpu_snapshot ARRAY: wall seconds, machine busy ticks, server, PostgreSQL and Redis
# ticks, load generator seconds. Runs in the current shell (`times` must see its
# children), never in $(...).
cpu_snapshot() {
  local -n snap=$1
  times >"$OUT/.times"
  # SC2034: snap is a nameref, the caller's array; SC2046: one argument per pid.
  # shellcheck disable=SC2034,SC2046
  snap=("$(date +%s.%N)"
    "$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat)"
    "$(if [[ -n $SERVER_PID ]]; then proc_ticks "$SERVER_PID"; else echo 0; fi)"
    "$(proc_ticks $(pgrep -x postgres))"
    "$(proc_ticks $(pgrep -x redis-server))"
    "$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
                      printf "%.3f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$OUT/.times")")
}

# cpu_add KEY: adds what was used between the snapshots CPU_BEFORE and CPU_AFTER to
# KEY's sums (wall seconds; machine, server, PostgreSQL, Redis ticks; client seconds):
# a measurement in slices adds each of its slices.
cpu_add() {
  local -a b=("${CPU_BEFORE[@]}") a=("${CPU_AFTER[@]}") s
  read -r -a s <<<"${R[$1.cpu_sums]:-0 0 0 0 0 0}"
  R[$1.cpu_sums]=$(awk -v a="${a[*]}" -v b="${b[*]}" -v s="${s[*]}" 'BEGIN {
      split(a, x, " "); split(b, y, " "); split(s, z, " ")
      for (i = 1; i <= 6; i++) printf "%s%.3f", (i > 1 ? " " : ""), z[i] + x[i] - y[i] }')
}

# cpu_usage KEY: R[KEY.cpu] = "server / PostgreSQL / Redis / client / other", in cores,
# over KEY's sums.
cpu_usage() {
  R[$1.cpu]=$(awk -v t="$CLK_TCK" -v sums="${R[$1.cpu_sums]}" 'BEGIN {
      split(sums, x, " "); wall = x[1]
      s = x[3] / t / wall; p = x[4] / t / wall; r = x[5] / t / wall; c = x[6] / wall
      o = x[2] / t / wall - s - p - r - c; if (o < 0) o = 0
      printf "%.2f / %.2f / %.2f / %.2f / %.2f", s, p, r, c, o }')
}

# --- measurements ------------------------------------------------------------------

# Stores "key=value" pairs of the line starting with BENCH into R["$1.<key>"].
store_fields() {
  local prefix=$1 line kv
  line=$(grep -m1 '^BENCH ' "$2") || die "no result line in $2"
  # shellcheck disable=SC2086 # the line is split into its key=value words on purpose
  for kv in ${line#BENCH }; do R[$prefix.${kv%%=*}]=${kv#*=}; done
}

# load FILE CONNECTIONS SECONDS METHOD URL SCRIPT [script arguments...]: one run of the
# load generator, its BENCH line in FILE.
load() {
  local file=$1 conns=$2 secs=$3 method=$4 url=$5 script=$6
  shift 6
  if [[ $TOOL == wrk ]]; then
    # A response slower than --timeout counts as an error (socket "timeout").
    WRK_HISTOGRAM="$file.hist" wrk -t "$THREADS" -c "$conns" -d "${secs}s" --timeout 2s --latency \
      -s "$script" "$url" -- "$@" >"$file" 2>&1 || { cat "$file" >&2; die "wrk failed"; }
  else
    oha_load "$conns" "$secs" "$method" "$url" "$script" "$@" >"$file" 2>&1 ||
      { cat "$file" >&2; die "oha failed"; }
  fi
}

# The fallback when wrk cannot be installed. oha cannot number its bodies: it picks each
# one at random among the lines of a file (-Z), so some webhook deliveries repeat one
# already stored and are answered as duplicates (the table shows how many).
oha_load() {
  local conns=$1 secs=$2 method=$3 url=$4 script=$5
  shift 5
  local args=(-z "${secs}s" -c "$conns" --no-tui --output-format json -m "$method")
  if [[ $script == *list.lua ]]; then
    args+=(-H "Authorization: Bearer $1")
  else
    local lines="$OUT/webhook-bodies-$1.txt"
    awk -v tag="$1" -v account="$ACCOUNT_ID" 'BEGIN {
      for (i = 1; i <= 200000; i++)
        printf "leads%%5Bstatus%%5D%%5B0%%5D%%5Bid%%5D=%d&leads%%5Bstatus%%5D%%5B0%%5D%%5Bstatus_id%%5D=142" \
               "&leads%%5Bstatus%%5D%%5B0%%5D%%5Bname%%5D=Bench+lead+%s-%d&account%%5Bid%%5D=%s\n",
               1000000000 + i, tag, i, account }' >"$lines"
    args+=(-T application/x-www-form-urlencoded -Z "$lines")
  fi
  "$TOOLS/bin/oha" "${args[@]}" "$url" | python3 -c '
import json, sys
d = json.load(sys.stdin)
s, p = d["summary"], d["latencyPercentiles"]
codes = {int(c): n for c, n in d.get("statusCodeDistribution", {}).items()}
errors = sum(n for e, n in d.get("errorDistribution", {}).items() if "deadline" not in e)
total = sum(codes.values())
ok = sum(n for c, n in codes.items() if 200 <= c < 300)
print("BENCH requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
      "mean_ms=%.3f max_ms=%.3f non2xx=%d connect=0 read=%d write=0 timeout=0" % (
      total, s["total"], total / s["total"], p["p50"] * 1e3, p["p90"] * 1e3,
      p["p99"] * 1e3, s["average"] * 1e3, s["slowest"] * 1e3, total - ok, errors))'
}

# warm_up NAME CONNECTIONS METHOD URL SCRIPT [script arguments...]
warm_up() {
  local name=$1 conns=$2
  shift 2
  echo "$name at $conns connections: ${WARMUP}s warm-up" >&2
  load "$OUT/$name-warmup-${conns}c.txt" "$conns" "$WARMUP" "$@"
}

# measure_api NAME CONNECTIONS METHOD URL SCRIPT [script arguments...]
measure_api() {
  local name=$1 conns=$2 k=$1.$2 file="$OUT/$1-$2c.txt"
  shift 2
  echo "$name at $conns connections: ${DURATION}s measured" >&2
  cpu_snapshot CPU_BEFORE
  load "$file" "$conns" "$DURATION" "$@"
  cpu_snapshot CPU_AFTER
  cpu_add "$k"
  cpu_usage "$k"
  store_fields "$k" "$file"
  R[$k.errors]=$((${R[$k.non2xx]} + ${R[$k.connect]} + ${R[$k.read]} + ${R[$k.write]} + ${R[$k.timeout]}))
  printf '  %s req/s, p50 %s ms, p99 %s ms, %s errors\n' \
    "${R[$k.rps]}" "${R[$k.p50_ms]}" "${R[$k.p99_ms]}" "${R[$k.errors]}" >&2
}

# pgbench_slice NAME CONNECTIONS SECONDS FILE: pgbench running the SQL of the API's
# route NAME (list or webhook) as the runtime role.
pgbench_slice() {
  local args=(-M prepared -n -c "$2" -j "$THREADS" -T "$3")
  case $1 in
    list) args+=(-f bench/sql/list.sql -D "claims=$CLAIMS" -D "stmt_timeout=$STATEMENT_TIMEOUT"
      -D "org_id=$ORG_ID" -D "user_id=$USER_ID") ;;
    webhook) args+=(-f bench/sql/webhook.sql -D "stmt_timeout=$STATEMENT_TIMEOUT"
      -D "org_id=$ORG_ID" -D "connection_id=$CONNECTION_ID" -D "body=$BODY") ;;
  esac
  PGPASSWORD=$RT_PASSWORD pgbench "${args[@]}" -h "$PGHOST" -p "$PGPORT" -U "$RT_ROLE" "$DB_NAME" \
    >"$4" 2>&1 || { cat "$4" >&2; die "pgbench failed"; }
}

# api_slice NAME CONNECTIONS SECONDS FILE TAG: the load generator on route NAME; TAG
# marks the webhook bodies of this slice, so that its deliveries can be counted.
api_slice() {
  case $1 in
    list) load "$4" "$2" "$3" GET "$LIST_URL" bench/wrk/list.lua "$TOKEN" ;;
    webhook) load "$4" "$2" "$3" POST "$WEBHOOK_URL" bench/wrk/webhook.lua "$5" "$ACCOUNT_ID" ;;
  esac
}

# combine_api FILE SLICE...: one BENCH line for the API's slices: counts and seconds
# summed, percentiles and mean from their merged latency histograms (wrk), or the
# slices' worst percentiles when there are none (oha).
combine_api() {
  local file=$1
  shift
  python3 - "$@" >"$file" <<'PY'
import os, sys
sums = dict.fromkeys(("requests", "non2xx", "connect", "read", "write", "timeout"), 0)
duration, worst, counts = 0.0, {}, {}
for path in sys.argv[1:]:
    line = next(l for l in open(path) if l.startswith("BENCH "))
    kv = dict(word.split("=", 1) for word in line.split()[1:])
    for k in sums:
        sums[k] += int(kv[k])
    duration += float(kv["duration_s"])
    for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"):
        worst[k] = max(worst.get(k, 0.0), float(kv[k]))
    if counts is not None and os.path.exists(path + ".hist"):
        for row in open(path + ".hist"):
            value, n = map(int, row.split())
            counts[value] = counts.get(value, 0) + n
    else:
        counts = None
stats = dict(worst)
if counts:
    total = sum(counts.values())
    values = sorted(counts)
    def percentile(p):
        need, seen = p / 100 * total, 0
        for v in values:
            seen += counts[v]
            if seen >= need:
                return v / 1000
    stats.update(p50_ms=percentile(50), p90_ms=percentile(90), p99_ms=percentile(99),
                 mean_ms=sum(v * n for v, n in counts.items()) / total / 1000)
print("BENCH requests=%d duration_s=%.3f rps=%.1f %s non2xx=%d connect=%d read=%d write=%d timeout=%d" % (
    sums["requests"], duration, sums["requests"] / duration,
    " ".join("%s=%.3f" % (k, stats[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")),
    sums["non2xx"], sums["connect"], sums["read"], sums["write"], sums["timeout"]))
PY
}

# combine_pgbench KEY SLICE...: R[KEY.tps] (all slices' transactions over their summed
# time), R[KEY.avg_ms] (per transaction) and R[KEY.failed].
combine_pgbench() {
  local k=$1 line
  shift
  line=$(python3 - "$@" <<'PY'
import re, sys
n = seconds = latency = failed = 0.0
for path in sys.argv[1:]:
    text = open(path).read()
    done = int(re.search(r"^number of transactions actually processed: (\d+)", text, re.M)[1])
    tps = float(re.search(r"^tps = ([\d.]+)", text, re.M)[1])
    avg = float(re.search(r"^latency average = ([\d.]+) ms", text, re.M)[1])
    lost = re.search(r"^number of failed transactions: (\d+)", text, re.M)
    n += done; seconds += done / tps; latency += done * avg; failed += int(lost[1]) if lost else 0
print("%.1f %.3f %d" % (n / seconds, latency / n, failed))
PY
  ) || die "cannot read pgbench's output: $*"
  read -r "R[$k.tps]" "R[$k.avg_ms]" "R[$k.failed]" <<<"$line"
}

# measure_pair NAME CONNECTIONS: the API's route NAME (list or webhook) and pgbench
# running its SQL, each for DURATION seconds, in SLICES alternating slices (pgbench, API,
# API, pgbench, pgbench, API, …) after a warm-up of each, so that both meet the machine
# of the same minutes: on this shared virtual machine the speed drifts by a third within
# an hour, and a ceiling measured minutes apart decided the ratio. Results in
# R[NAME.CONNECTIONS.*] (the API) and R[pg_NAME.CONNECTIONS.*] (pgbench).
measure_pair() {
  local name=$1 c=$2 i side api=$1.$2 pg=pg_$1.$2
  local -a api_files=() pg_files=() order
  echo "$name at $c connections: ${WARMUP}s warm-up each, ${DURATION}s measured each in $SLICES slices" >&2
  pgbench_slice "$name" "$c" "$WARMUP" "$OUT/pg_$name-warmup-${c}c.txt"
  api_slice "$name" "$c" "$WARMUP" "$OUT/$name-warmup-${c}c.txt" "$$-$c-warmup"
  for ((i = 1; i <= SLICES; i++)); do
    order=(pg api)
    ((i % 2)) || order=(api pg)
    for side in "${order[@]}"; do
      note_rustc
      cpu_snapshot CPU_BEFORE
      if [[ $side == pg ]]; then
        pg_files+=("$OUT/pg_$name-${c}c-$i.txt")
        pgbench_slice "$name" "$c" "$SLICE" "${pg_files[-1]}"
        cpu_snapshot CPU_AFTER
        cpu_add "$pg"
      else
        api_files+=("$OUT/$name-${c}c-$i.txt")
        api_slice "$name" "$c" "$SLICE" "${api_files[-1]}" "$$-$c-s$i"
        cpu_snapshot CPU_AFTER
        cpu_add "$api"
      fi
    done
  done
  cpu_usage "$api"
  cpu_usage "$pg"
  combine_api "$OUT/$name-${c}c.txt" "${api_files[@]}"
  store_fields "$api" "$OUT/$name-${c}c.txt"
  R[$api.errors]=$((${R[$api.non2xx]} + ${R[$api.connect]} + ${R[$api.read]} + ${R[$api.write]} + ${R[$api.timeout]}))
  combine_pgbench "$pg" "${pg_files[@]}"
  printf '  API %s req/s, p50 %s ms, p99 %s ms, %s errors; pgbench %s tps, average %s ms, %s failed\n' \
    "${R[$api.rps]}" "${R[$api.p50_ms]}" "${R[$api.p99_ms]}" "${R[$api.errors]}" \
    "${R[$pg.tps]}" "${R[$pg.avg_ms]}" "${R[$pg.failed]}" >&2
}

# How many PostgreSQL connections are free, so pgbench at 64 clients does not fail
# halfway for lack of slots (others may be running tests on the same server).
check_connection_slots() {
  local need=$1 free
  free=$(psql_admin postgres -Atc "SELECT current_setting('max_connections')::int
           - current_setting('superuser_reserved_connections')::int
           - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')")
  ((free >= need)) ||
    die "PostgreSQL has $free free connections, pgbench needs $need: raise max_connections or lower BENCH_CONNECTIONS"
}

# --- report --------------------------------------------------------------------------

verdict() { if (($(calc "$1" %d))); then echo pass; else echo "**FAIL**"; fi; }

# row LABEL TARGET FORMAT KEY...: one cell per connection count, FORMAT filled with the
# values of the KEYs, in which "@" stands for the connection count.
row() {
  local label=$1 target=$2 format=$3 c key cells="" values
  shift 3
  for c in "${CONNECTIONS[@]}"; do
    values=()
    for key in "$@"; do values+=("${R[${key//@/$c}]:-?}"); done
    # shellcheck disable=SC2059 # the formats are the literal ones below
    cells+=" $(printf "$format" "${values[@]}") |"
  done
  printf '| %s |%s %s |\n' "$label" "$cells" "$target"
}

pass_if() { if (($1)); then echo pass; else echo "**FAIL**"; fi; }

report() {
  local c first=${CONNECTIONS[0]} header="| Measure |" rule="|---|"
  for c in "${CONNECTIONS[@]}"; do header+=" $c conn. |"; rule+="---:|"; done
  header+=" Target |"
  rule+="---|"

  local ratio_ok=1 wh_ratio_ok=1 errors_ok=1
  for c in "${CONNECTIONS[@]}"; do
    R[ratio.$c]=$(calc "${R[list.$c.rps]} / ${R[pg_list.$c.tps]}")
    R[wh_ratio.$c]=$(calc "${R[webhook.$c.rps]} / ${R[pg_webhook.$c.tps]}")
    R[p99x.$c]=$(calc "${R[list.$c.p99_ms]} / ${R[pg_list.$c.avg_ms]}")
    # 2xx answers that stored no new delivery ("duplicate"); requests still in flight
    # when the load generator stops can make the difference slightly negative.
    R[wh_dups.$c]=$((${R[webhook.$c.requests]} - ${R[webhook.$c.non2xx]} - ${R[webhook.$c.new]}))
    if ((${R[wh_dups.$c]} < 0)); then R[wh_dups.$c]=0; fi
    (($(calc "${R[ratio.$c]} >= 0.8" %d))) || ratio_ok=0
    (($(calc "${R[wh_ratio.$c]} >= 0.8" %d))) || wh_ratio_ok=0
    ((${R[list.$c.errors]} + ${R[webhook.$c.errors]} == 0)) || errors_ok=0
    if ((GROWTH)); then
      R[growth_p50x.$c]=$(calc "${R[growth.$c.p50_ms]} / ${R[list.$c.p50_ms]}")
      R[growth_p99x.$c]=$(calc "${R[growth.$c.p99_ms]} / ${R[list.$c.p99_ms]}")
      ((${R[growth.$c.errors]} == 0)) || errors_ok=0
    fi
  done
  local idle_mb load_mb hwm_mb
  idle_mb=$(calc "${R[rss_idle_kb]} / 1024" %.1f)
  load_mb=$(calc "${R[rss_load_kb]} / 1024" %.1f)
  # The kernel updates VmHWM lazily: the sampled maximum can exceed it.
  hwm_mb=$(calc "(${R[rss_hwm_kb]} > ${R[rss_load_kb]} ? ${R[rss_hwm_kb]} : ${R[rss_load_kb]}) / 1024" %.1f)

  echo "$header"
  echo "$rule"
  row "API list, requests/s" "" %s list.@.rps
  row "API list, p50 (ms)" "" %s list.@.p50_ms
  row "API list, p99 (ms)" "" %s list.@.p99_ms
  row "API list, errors (non-2xx + socket)" "0: $(pass_if "$errors_ok")" %s list.@.errors
  row "pgbench list, tps (ceiling)" "" %s pg_list.@.tps
  row "pgbench list, average latency (ms)" "" %s pg_list.@.avg_ms
  row "**ratio API / ceiling (list)**" "≥ 0.8: $(pass_if "$ratio_ok")" "**%s**" ratio.@
  row "API list p99 / pgbench average" "≤ 2.5 at $first: $(verdict "${R[p99x.$first]} <= 2.5")" %s p99x.@
  row "API webhook, requests/s" "" %s webhook.@.rps
  row "API webhook, p50 (ms)" "" %s webhook.@.p50_ms
  row "API webhook, p99 (ms)" "" %s webhook.@.p99_ms
  row "API webhook, errors (non-2xx + socket)" "0" %s webhook.@.errors
  row "API webhook, new deliveries / duplicates" "" "%s / %s" webhook.@.new wh_dups.@
  row "pgbench webhook, tps (ceiling)" "" %s pg_webhook.@.tps
  row "pgbench webhook, average latency (ms)" "" %s pg_webhook.@.avg_ms
  row "**ratio API / ceiling (webhook)**" "≥ 0.8: $(pass_if "$wh_ratio_ok")" "**%s**" wh_ratio.@
  row "pgbench failed transactions (list / webhook)" "0" "%s / %s" pg_list.@.failed pg_webhook.@.failed
  if ((GROWTH)); then
    row "API list over $GROWTH_AGENTS agents (+ $((GROWTH_OTHER_ORGS * GROWTH_OTHER_AGENTS)) in other orgs), requests/s" "" %s growth.@.rps
    row "… p50 (ms) / × the p50 over $AGENTS agents" "≤ 1.5×: $(verdict "${R[growth_p50x.$first]} <= 1.5")" "%s / %s×" growth.@.p50_ms growth_p50x.@
    row "… p99 (ms) / × the p99 over $AGENTS agents" "" "%s / %s×" growth.@.p99_ms growth_p99x.@
    row "… errors (non-2xx + socket)" "0" %s growth.@.errors
  fi
  row "CPU, API list run (cores): server / PostgreSQL / Redis / $TOOL / other" "of $(nproc)" %s list.@.cpu
  row "CPU, pgbench list run (cores): – / PostgreSQL / Redis / pgbench / other" "of $(nproc)" %s pg_list.@.cpu
  row "CPU, API webhook run (cores): server / PostgreSQL / Redis / $TOOL / other" "of $(nproc)" %s webhook.@.cpu
  row "CPU, pgbench webhook run (cores): – / PostgreSQL / Redis / pgbench / other" "of $(nproc)" %s pg_webhook.@.cpu
  echo
  echo "| Server memory | MB | Target |"
  echo "|---|---:|---|"
  echo "| RSS idle (VmRSS before any request) | $idle_mb | < 30: $(verdict "$idle_mb < 30") |"
  echo "| RSS at load (max VmRSS sampled during the ${CONNECTIONS[-1]}-connection list run) | $load_mb | < 100: $(verdict "$load_mb < 100") |"
  echo "| RSS peak over the whole run (max of VmHWM and the samples, webhooks included) | $hwm_mb | < 100: $(verdict "$hwm_mb < 100") |"
}

machine() {
  local dirty=""
  [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && dirty=" (with uncommitted changes in the working tree)"
  cat <<EOF
- Date: $(date -u '+%Y-%m-%d %H:%M UTC')
- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty
- CPU: $(nproc) × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
- Memory: $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
- Kernel: $(uname -sr)
- PostgreSQL: $(psql_admin postgres -Atc 'SHOW server_version') (shared_buffers $(psql_admin postgres -Atc 'SHOW shared_buffers'), synchronous_commit $(psql_admin postgres -Atc 'SHOW synchronous_commit'), max_connections $(psql_admin postgres -Atc 'SHOW max_connections'))
- Redis: $(redis-cli -u "$REDIS_URL" INFO server | sed -n 's/^redis_version://p' | tr -d '\r')
- Rust: $(rustc --version)
- Load generator: ${R[tool_version]}, $THREADS threads; pgbench $(pgbench --version | awk '{ print $3 }'), -j $THREADS
- Server: DATABASE_MAX_CONNECTIONS=$POOL, JOB_CONCURRENCY=0, LOG_FORMAT=json, RUST_LOG=warn, metrics off, rate limits 1,000,000/min
- Everything (PostgreSQL, Redis, server, load generator) shares these $(nproc) cores.
- Other load on the machine: load average ${R[load_before]} before the run, ${R[load_after]} after
  (this includes the benchmark's own clients); at most ${R[rustc_max]} rustc processes (other
  builds) seen at the start of each measurement; the "other" CPU rows below measure the rest.
EOF
}

note_rustc() {
  local n
  n=$(pgrep -c -x rustc || true)
  ((n > ${R[rustc_max]:-0})) && R[rustc_max]=$n
  return 0
}

# --- main ----------------------------------------------------------------------------

main() {
  rm -rf "$OUT"
  mkdir -p "$OUT"
  R[load_before]=$(cut -d' ' -f1-3 /proc/loadavg)
  R[rustc_max]=0
  note_rustc

  local binary=${BENCH_BINARY:-}
  if [[ -z $binary ]]; then
    log "Building the release binary"
    ensure_rust
    cargo build --release --bin agents-api
    binary=${CARGO_TARGET_DIR:-target}/release/agents-api
  fi
  # A copy, so that someone else's rebuild cannot swap the binary in the middle of a run.
  cp "$binary" "$OUT/agents-api"

  log "Checking PostgreSQL, Redis and the load generator"
  ensure_services
  ensure_load_tool
  if [[ $TOOL == wrk ]]; then
    R[tool_version]=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $1, $2 }')
  else
    R[tool_version]=$("$TOOLS/bin/oha" --version)
  fi
  command -v pgbench >/dev/null || die "pgbench is missing: apt-get install postgresql-contrib (or postgresql)"

  log "Creating and seeding a fresh database $DB_NAME"
  fresh_database
  seed

  # The token is minted before the server starts: its claims are what pgbench publishes.
  local claims
  TOKEN=$(agents_api dev-token --user "$USER_ID" --email bench@example.com --ttl 2h)
  claims=$(cut -d. -f2 <<<"$TOKEN" | tr '_-' '/+')
  while ((${#claims} % 4)); do claims+="="; done
  CLAIMS=$(base64 -d <<<"$claims")
  # The same shape and size as the bodies bench/wrk/webhook.lua sends.
  BODY=$(printf 'leads%%5Bstatus%%5D%%5B0%%5D%%5Bid%%5D=%s&leads%%5Bstatus%%5D%%5B0%%5D%%5Bstatus_id%%5D=142&leads%%5Bstatus%%5D%%5B0%%5D%%5Bold_status_id%%5D=141&leads%%5Bstatus%%5D%%5B0%%5D%%5Bpipeline_id%%5D=7001&leads%%5Bstatus%%5D%%5B0%%5D%%5Bname%%5D=Bench+lead+pgbench-1&account%%5Bid%%5D=%s&account%%5Bsubdomain%%5D=bench' 1000000001 "$ACCOUNT_ID")
  LIST_URL="$BASE/v1/orgs/$ORG_ID/agents?limit=$LIST_LIMIT"
  WEBHOOK_URL="$BASE/v1/kommo/webhooks/$CONNECTION_ID/$WEBHOOK_TOKEN"

  # pgbench's clients and the server's pool are connected at the same time.
  check_connection_slots $((${CONNECTIONS[-1]} + POOL + 2))
  log "Starting agents-api on $BASE"
  start_server
  sleep 3
  R[rss_idle_kb]=$(rss_kb VmRSS)
  echo "idle RSS: ${R[rss_idle_kb]} kB" >&2

  # One request of each kind, checked, before any load.
  check_list "$LIST_URL" "$TOKEN" "$OUT/list-response.json" "$AGENTS"
  R[list_bytes]=$(stat -c %s "$OUT/list-response.json")
  curl -fsS -H 'Content-Type: application/x-www-form-urlencoded' --data "$BODY" "$WEBHOOK_URL" \
    >"$OUT/webhook-response.json" || die "the webhook request failed"
  grep -q '"accepted"' "$OUT/webhook-response.json" ||
    die "the webhook was not accepted: $(cat "$OUT/webhook-response.json")"

  log "GET /v1/orgs/{org}/agents?limit=$LIST_LIMIT ($TOOL) against pgbench -M prepared as $RT_ROLE, alternating"
  local c
  for c in "${CONNECTIONS[@]}"; do
    if [[ $c == "${CONNECTIONS[-1]}" ]]; then
      sample_rss "$OUT/rss-load-kb.txt" &
      SAMPLER_PID=$!
    fi
    measure_pair list "$c"
  done
  kill "$SAMPLER_PID" 2>/dev/null || true
  wait "$SAMPLER_PID" 2>/dev/null || true # reaped now, not during a later measurement
  SAMPLER_PID=
  R[rss_load_kb]=$(cat "$OUT/rss-load-kb.txt")

  log "POST /v1/kommo/webhooks/{connection}/{token} ($TOOL) against pgbench, alternating"
  for c in "${CONNECTIONS[@]}"; do
    measure_pair webhook "$c"
    sleep 1 # the last requests in flight land
    # The deliveries the API's measured slices stored, told from pgbench's by their tags.
    R[webhook.$c.new]=$(psql_admin "$DB_NAME" -Atc "SELECT count(*) FROM webhook_events
      WHERE kind = 'delivery' AND raw_body LIKE '%+lead+$$-$c-s%'")
  done
  if ((GROWTH)); then
    log "Growth: $GROWTH_AGENTS agents in the org, $((GROWTH_OTHER_ORGS * GROWTH_OTHER_AGENTS)) in $GROWTH_OTHER_ORGS others"
    seed_growth
    check_list "$LIST_URL" "$TOKEN" "$OUT/growth-response.json" "$GROWTH_AGENTS"
    for c in "${CONNECTIONS[@]}"; do
      note_rustc
      warm_up growth "$c" GET "$LIST_URL" bench/wrk/list.lua "$TOKEN"
      measure_api growth "$c" GET "$LIST_URL" bench/wrk/list.lua "$TOKEN"
    done
  fi

  R[rss_hwm_kb]=$(rss_kb VmHWM)
  R[jobs]=$(psql_admin "$DB_NAME" -Atc "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
                                         FROM (SELECT status, count(*) n FROM jobs GROUP BY status) s")
  R[load_after]=$(cut -d' ' -f1-3 /proc/loadavg)
  R[server_log]=$(server_log_summary)
  note_rustc

  local table knowledge_section=""
  table=$(report)
  # bench/knowledge.sh's and bench/agent.sh's sections of the previous results, kept when
  # they do not run now.
  if [[ -f $RESULTS ]]; then
    knowledge_section=$(awk -v kb="$KNOWLEDGE" -v ag="$AGENT" -v jb="$JOBS" \
      '/^## / { keep = (/^## Knowledge base/ && !kb) || (/^## Agent runtime/ && !ag) || (/^## Jobs/ && !jb) } keep' "$RESULTS")
  fi
  {
    echo "# Benchmark results"
    echo
    echo "Produced by \`bench/run.sh\` (see bench/README.md). ${DURATION} s per measurement after a"
    echo "${WARMUP} s warm-up at the same concurrency; the API and pgbench alternate in $SLICES slices"
    echo "of ${SLICE} s each. ${AGENTS} agents of 600-byte instructions, one list response is"
    echo "${R[list_bytes]} bytes."
    echo
    echo "## Machine"
    echo
    machine
    echo
    echo "## Results"
    echo
    echo "$table"
    echo
    echo "Webhook jobs after the run (the server runs no workers, JOB_CONCURRENCY=0; they wait for a worker replica): ${R[jobs]:-none}."
    echo
    echo "Server log (warnings and errors, by message):"
    echo
    echo "${R[server_log]:-  - none}"
    echo
    echo "Raw outputs of this run: bench/out/ (not committed)."
    if [[ -n $knowledge_section ]]; then printf '\n%s\n' "$knowledge_section"; fi
  } >"$RESULTS"
  log "Results (also in $RESULTS)"
  echo "$table"
  if ((JOBS)); then
    stop_server
    log "The job pipeline: bench/jobs.sh (BENCH_JOBS=0 skips it)"
    bench/jobs.sh
  fi
  if ((KNOWLEDGE)); then
    stop_server
    log "The knowledge base: bench/knowledge.sh (BENCH_KNOWLEDGE=0 skips it)"
    BENCH_KB_BINARY="$OUT/agents-api" bench/knowledge.sh
  fi
  if ((AGENT)); then
    stop_server
    log "The agent runtime: bench/agent.sh (BENCH_AGENT=0 skips it)"
    BENCH_AGENT_BINARY="$OUT/agents-api" bench/agent.sh
  fi
}

# Sourcing the file (to try one function) defines everything and runs nothing.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
