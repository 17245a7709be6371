#!/usr/bin/env bash
# Where the server's CPU goes per request, in instructions (valgrind's callgrind): counts
# that do not depend on what else the machine is doing, so a change can be compared with
# the one before it on a busy machine. bench/profile.sh [list|webhook]...
#
# Sets up as bench/run.sh does (same database, seed, token and server environment), starts
# the release server under callgrind with instrumentation off, warms it up, then collects over
# BENCH_PROFILE_SECS (default 10) of wrk at BENCH_PROFILE_CONNECTIONS (default 16) per
# scenario and prints instructions per request and the top functions (inclusive and
# self). BENCH_PROFILE_BINARY=path profiles that binary instead of building. Raw profiles: bench/out/profile/callgrind.<scenario>.out (callgrind_annotate or
# kcachegrind read them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/run.sh
. bench/run.sh

SECS=${BENCH_PROFILE_SECS:-10}
CONNS=${BENCH_PROFILE_CONNECTIONS:-16}
PROFILE_OUT=$ROOT/$OUT/profile
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(list webhook)

# Inclusive and self cost of the top functions, names shortened to their last segments.
top_functions() {
  local file=$1 mode=$2
  # `head` closes the pipe early on purpose.
  local -
  set +o pipefail
  callgrind_annotate --inclusive="$mode" --threshold=100 "$file" 2>/dev/null |
    awk '/^-+$/ { rule++; next } rule >= 3 && NF && $1 ~ /^[0-9,]+/ { print }' |
    head -n "${3:-40}" |
    sed -E 's/ \[[^]]*\]$//; s/<[^<>]*>//g; s/<[^<>]*>//g; s/<[^<>]*>//g' |
    cut -c1-160
}

# requests FILE: how many requests wrk completed.
requests() { awk '/requests in/ { print $1; exit }' "$1"; }

profile_main() {
  rm -rf "$OUT"
  mkdir -p "$PROFILE_OUT"
  command -v valgrind >/dev/null || die "valgrind is missing: apt-get install valgrind"
  local binary=${BENCH_PROFILE_BINARY:-}
  if [[ -z $binary ]]; then
    ensure_rust
    # Symbols are kept (strip = "debuginfo"), which is all a per-function profile needs.
    log "Building the release binary"
    cargo build --release --bin agents-api
    binary=${CARGO_TARGET_DIR:-target}/release/agents-api
  fi
  cp "$binary" "$OUT/agents-api"
  ensure_services
  TOOL=wrk
  ensure_load_tool
  fresh_database
  seed
  local token body
  token=$(agents_api dev-token --user "$USER_ID" --email bench@example.com --ttl 2h)
  local list_url="$BASE/v1/orgs/$ORG_ID/agents?limit=$LIST_LIMIT"
  local webhook_url="$BASE/v1/kommo/webhooks/$CONNECTION_ID/$WEBHOOK_TOKEN"

  log "Starting agents-api under callgrind on $BASE"
  (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$PROFILE_OUT/callgrind.%p.out" ./agents-api serve) >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  wait_for 120 curl -fsS "$BASE/health/ready" >/dev/null ||
    { tail -n 30 "$OUT/server.log" >&2; die "agents-api did not become ready under valgrind"; }

  local scenario file n ir
  for scenario in "${SCENARIOS[@]}"; do
    case $scenario in
      list) set -- GET "$list_url" bench/wrk/list.lua "$token" ;;
      webhook) set -- POST "$webhook_url" bench/wrk/webhook.lua "$$-profile" "$ACCOUNT_ID" ;;
      *) die "unknown scenario $scenario (list or webhook)" ;;
    esac
    log "$scenario: warm-up 3 s, then ${SECS} s collected at $CONNS connections"
    callgrind_control -i on "$SERVER_PID" >/dev/null
    load "$PROFILE_OUT/$scenario-warmup.txt" "$CONNS" 3 "$@"
    callgrind_control -z "$SERVER_PID" >/dev/null
    load "$PROFILE_OUT/$scenario.txt" "$CONNS" "$SECS" "$@"
    callgrind_control -d "$scenario" "$SERVER_PID" >/dev/null
    callgrind_control -i off "$SERVER_PID" >/dev/null
    sleep 1
    file=$(ls -t "$PROFILE_OUT"/callgrind.*.out* | head -n 1)
    mv "$file" "$PROFILE_OUT/callgrind.$scenario.out"
    file=$PROFILE_OUT/callgrind.$scenario.out
    n=$(requests "$PROFILE_OUT/$scenario.txt")
    ir=$(awk '/^summary:|^totals:/ { print $2; exit }' "$file")
    R[$scenario.ir_per_request]=$(calc "$ir / $n" %.0f)
    {
      echo "## $scenario: $n requests, $ir instructions, ${R[$scenario.ir_per_request]} per request"
      echo
      echo "### Inclusive"
      top_functions "$file" yes
      echo
      echo "### Self"
      top_functions "$file" no 25
      echo
    } | tee "$PROFILE_OUT/$scenario.txt.top"
  done
  log "Instructions per request"
  for scenario in "${SCENARIOS[@]}"; do
    printf '  %s: %s\n' "$scenario" "${R[$scenario.ir_per_request]}"
  done
}

profile_main
