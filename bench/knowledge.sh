#!/usr/bin/env bash
# The knowledge-base rows of spec §9, in one command: bench/knowledge.sh
#
# On a PostgreSQL with pgvector (scripts/pgvector.sh's, unless BENCH_KB_PG_URL names
# another) and Redis, with the release binary and a zero-latency OpenAI-compatible
# endpoint (bench/knowledge/fake_ai.py):
#   1. a 2 MiB UTF-8 text and a 100-page PDF uploaded through the API and indexed by the
#      real process-asset job: upload -> `indexed`, and the server's peak RSS meanwhile;
#   2. hybrid search latency (wrk) over BENCH_KB_CHUNKS chunks of one org, then the same
#      queries again once BENCH_KB_OTHER_CHUNKS chunks of other orgs are in the table;
#   3. the two uploads again, into a new org, over the full table.
# Prints the table and writes it, with the method and the machine, as the "Knowledge
# base" section of bench/results.md (the rest of the file is kept). See bench/README.md.
#
# Knobs (environment): BENCH_KB_CHUNKS (100000), BENCH_KB_OTHER_CHUNKS (1000000),
# BENCH_KB_OTHER_ORGS (100), BENCH_KB_ASSET_CHUNKS (chunks per seeded asset, 1000),
# BENCH_KB_DIMENSIONS (AI_EMBEDDING_DIMENSIONS, 256), BENCH_KB_DURATION (s per search
# measurement, 20), BENCH_KB_WARMUP (s, 5), BENCH_KB_CONNECTIONS ("1 4"),
# BENCH_KB_TEXT_BYTES (2097152), BENCH_KB_PDF_PAGES (100), BENCH_KB_DB_POOL (4 per core),
# BENCH_KB_JOB_CONCURRENCY (2), BENCH_KB_MAINTENANCE_MEM (for the index builds, 3GB),
# BENCH_KB_UPLOAD_AGAIN (1: step 3), BENCH_KB_PORT (18081), BENCH_KB_AI_PORT (18091),
# BENCH_KB_BINARY (a release binary to use instead of building one), BENCH_KB_PG_URL
# (a superuser URL of a PostgreSQL with pgvector).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/services.sh
. scripts/services.sh

CHUNKS=${BENCH_KB_CHUNKS:-100000}
OTHER_CHUNKS=${BENCH_KB_OTHER_CHUNKS:-1000000}
OTHER_ORGS=${BENCH_KB_OTHER_ORGS:-100}
ASSET_CHUNKS=${BENCH_KB_ASSET_CHUNKS:-1000}
DIM=${BENCH_KB_DIMENSIONS:-256}
DURATION=${BENCH_KB_DURATION:-20}
WARMUP=${BENCH_KB_WARMUP:-5}
read -r -a CONNECTIONS <<<"${BENCH_KB_CONNECTIONS:-1 4}"
TEXT_BYTES=${BENCH_KB_TEXT_BYTES:-2097152}
PDF_PAGES=${BENCH_KB_PDF_PAGES:-100}
POOL=${BENCH_KB_DB_POOL:-$((4 * $(nproc)))}
JOB_CONCURRENCY=${BENCH_KB_JOB_CONCURRENCY:-2}
MAINTENANCE_MEM=${BENCH_KB_MAINTENANCE_MEM:-3GB}
UPLOAD_AGAIN=${BENCH_KB_UPLOAD_AGAIN:-1}
PORT=${BENCH_KB_PORT:-18081}
AI_PORT=${BENCH_KB_AI_PORT:-18091}
BINARY=${BENCH_KB_BINARY:-}
PG_URL=${BENCH_KB_PG_URL:-}
QUERIES=500        # the search query set (bench/knowledge/gen_docs.py queries)
SENTENCES=100000   # the sentences seeded chunks are made of
VOCABULARY=30000   # words, Zipf-distributed in every generated text
SEARCH_LIMIT=8     # the API's default; hybrid search ranks 40 of each kind for it
EXPLAIN_QUERIES=10 # queries whose two statements are EXPLAIN ANALYZEd per data set
TEXTS=100000       # distinct chunk texts seeded chunks take in turn

DB_NAME=agents_api_kb_bench
RT_ROLE=agents_api_kb_bench_rt
RT_PASSWORD=agents_api_kb_bench_rt
USER_ID=00000000-0000-7000-8000-0000000000c1

OUT=bench/out/knowledge # raw outputs of this run (ignored by git)
RESULTS=bench/results.md
BASE=http://127.0.0.1:$PORT
AI_URL=http://127.0.0.1:$AI_PORT/v1
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
REDIS_PREFIX="agents-api-kb-bench-$$-$(date +%s):"

SERVER_PID=
AI_PID=
TOKEN=
ORG_ID=
declare -A R=() # every measured number
declare -A INDEX_DEFS=()

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
  redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null |
    xargs -r redis-cli -u "$REDIS_URL" unlink >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT
set -E
trap 'echo "${0##*/}: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# --- the database ------------------------------------------------------------------

# PGHOST/PGPORT/PGUSER/PGPASSWORD of the pgvector server (psql_admin uses them). These
# override the caller's: bench/run.sh's PostgreSQL usually has no pgvector.
use_pg_url() {
  [[ $1 =~ ^postgres(ql)?://([^:@/]+)(:([^@/]*))?@([^:/?]+)(:([0-9]+))?(/[^?]*)?$ ]] ||
    die "cannot read the PostgreSQL URL '$1' (postgres://user[:password]@host[:port]/db)"
  export PGUSER=${BASH_REMATCH[2]} PGHOST=${BASH_REMATCH[5]} PGPORT=${BASH_REMATCH[7]:-5432}
  if [[ -n ${BASH_REMATCH[4]} ]]; then export PGPASSWORD=${BASH_REMATCH[4]}; fi
  is_local_host "$PGHOST" || echo "note: PostgreSQL at $PGHOST is not local" >&2
}

ensure_pgvector() {
  if [[ -z $PG_URL ]]; then
    scripts/pgvector.sh start >&2
    PG_URL=$(scripts/pgvector.sh url)
  fi
  use_pg_url "$PG_URL"
  wait_for 30 pg_up || die "PostgreSQL at $PGHOST:$PGPORT does not answer"
  psql_admin postgres -Atqc "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'" | grep -q 1 ||
    die "PostgreSQL at $PGHOST:$PGPORT has no pgvector (scripts/pgvector.sh start gives one)"
}

fresh_database() {
  psql_admin postgres -q <<SQL
SET client_min_messages = warning;
DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE);
CREATE DATABASE $DB_NAME;
SQL
  # Migrates as the superuser and builds the HNSW index for AI_EMBEDDING_DIMENSIONS.
  agents_api migrate
  # The unprivileged login role the server runs as (in api_runtime; neither superuser
  # nor BYPASSRLS), as scripts/dev.sh makes it.
  (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" RUNTIME_ROLE_PASSWORD="$RT_PASSWORD" \
    ./agents-api runtime-role "$RT_ROLE") >/dev/null
  # The two indexes seeding would otherwise maintain row by row; dropped around each
  # seeding and rebuilt from these exact definitions (the migration's and migrate's).
  local name def
  # knowledge_chunks is partitioned: its indexes print as `ON ONLY` the parent, which
  # would make an empty parent index; without ONLY it is built on every partition.
  while IFS='|' read -r name def; do INDEX_DEFS[$name]=${def/ ON ONLY / ON }; done < <(
    psql_admin "$DB_NAME" -Atc "SELECT indexname, indexdef FROM pg_indexes
      WHERE tablename = 'knowledge_chunks'
        AND indexname IN ('knowledge_chunks_search_idx', 'knowledge_chunks_embedding_${DIM}_idx')")
  ((${#INDEX_DEFS[@]} == 2)) ||
    die "expected the GIN and the HNSW index on knowledge_chunks, found: ${!INDEX_DEFS[*]}"
}

# The sentences and the vectors seeded chunks are made of (superuser-only tables).
load_seed_material() {
  psql_admin "$DB_NAME" -q <<SQL
CREATE SCHEMA bench_kb;
REVOKE ALL ON SCHEMA bench_kb FROM PUBLIC;
CREATE TABLE bench_kb.sentences (n int PRIMARY KEY, s text NOT NULL);
-- k: the fake endpoint's table vector k (what a query embeds to), and its halves and
-- quarters, from which every seeded embedding is summed.
CREATE TABLE bench_kb.vecs (k int PRIMARY KEY, v vector NOT NULL, h vector, q vector);
SQL
  awk '{ print NR - 1 "\t" $0 }' "$OUT/docs/sentences.txt" |
    psql_admin "$DB_NAME" -qc "\\copy bench_kb.sentences (n, s) FROM pstdin"
  curl -fsS "http://127.0.0.1:$AI_PORT/table?dimensions=$DIM" | awk '{ print NR - 1 "\t" $0 }' |
    psql_admin "$DB_NAME" -qc "\\copy bench_kb.vecs (k, v) FROM pstdin"
  psql_admin "$DB_NAME" -q <<SQL
UPDATE bench_kb.vecs SET
  h = (SELECT array_agg(x * 0.5 ORDER BY i)::real[] FROM unnest(v::real[]) WITH ORDINALITY u (x, i))::vector,
  q = (SELECT array_agg(x * 0.25 ORDER BY i)::real[] FROM unnest(v::real[]) WITH ORDINALITY u (x, i))::vector;
ANALYZE bench_kb.sentences, bench_kb.vecs;
SQL
}

# seed NAME ORGS_SQL PER_ORG FIRST_G: PER_ORG chunks for each org of ORGS_SQL (rows
# `o int, org_id uuid`), in assets of ASSET_CHUNKS chunks. Chunk number g (from FIRST_G,
# unique in the run) has text g mod TEXTS (R[seed_sentences] sentences) and the
# embedding vecs.v[g mod 1024] + vecs.h[g/1024 mod 1024] + vecs.q[g/1024² mod 1024]:
# 1,024 clusters around the vectors queries embed to, every vector distinct. Rows go in
# through two sessions at once (one a core), with the GIN and HNSW indexes dropped, and
# the indexes are then rebuilt (concurrently, one a session) from their definitions.
seed() {
  local name=$1 orgs_sql=$2 per_org=$3 first_g=$4 started=$SECONDS
  psql_admin "$DB_NAME" -q <<SQL
SET client_min_messages = warning;
-- TEXTS chunk texts, made once: text n is R[seed_sentences] sentences chosen by n.
CREATE TABLE IF NOT EXISTS bench_kb.texts AS
SELECT t.n, (SELECT string_agg(s.s, ' ' ORDER BY j.j)
             FROM generate_series(0, ${R[seed_sentences]} - 1) AS j (j)
             JOIN bench_kb.sentences s ON s.n = (t.n::bigint * 7919 + j.j * 104729) % $SENTENCES) AS content
FROM generate_series(0, $TEXTS - 1) AS t (n);
CREATE UNIQUE INDEX IF NOT EXISTS texts_n ON bench_kb.texts (n);
DROP TABLE IF EXISTS bench_kb.plan;
CREATE TABLE bench_kb.plan AS
WITH orgs (o, org_id) AS MATERIALIZED ($orgs_sql) -- once: the org ids may be chosen at random
SELECT o, org_id, md5(org_id::text || '/' || a)::uuid AS asset_id,
       $first_g::bigint + (o - 1)::bigint * $per_org + a * $ASSET_CHUNKS AS first_g,
       least($ASSET_CHUNKS, $per_org - a * $ASSET_CHUNKS) AS n, (o + a) % 2 AS part
FROM orgs, generate_series(0, ($per_org - 1) / $ASSET_CHUNKS) a;
INSERT INTO organizations (id, name, slug, created_by)
SELECT DISTINCT org_id, 'Other org ' || o, 'kb-other-' || o, gen_random_uuid()
FROM bench_kb.plan ON CONFLICT (id) DO NOTHING;
INSERT INTO knowledge_assets (id, org_id, filename, format, content_type, size_bytes, sha256,
                              status, progress, chunks_count, embedded)
SELECT asset_id, org_id, 'seeded-' || first_g || '.txt', 'text', 'text/plain',
       n * ${R[seed_chars]}, sha256(convert_to(asset_id::text, 'UTF8')), 'indexed',
       jsonb_build_object('stage', 'indexed', 'done', n, 'total', n), n, true
FROM bench_kb.plan;
DROP INDEX knowledge_chunks_search_idx, knowledge_chunks_embedding_${DIM}_idx;
SQL
  [[ $(psql_admin "$DB_NAME" -Atc "SELECT count(DISTINCT content) = $TEXTS FROM bench_kb.texts") == t ]] ||
    die "the seed texts are not $TEXTS distinct ones"
  local part pids=()
  for part in 0 1; do
    # session_replication_role = replica: no foreign-key triggers (the plan's assets and
    # orgs exist); the generated tsvector column is computed as for any insert.
    psql_admin "$DB_NAME" -q >"$OUT/seed-$name-$part.log" 2>&1 <<SQL &
SET session_replication_role = replica;
INSERT INTO knowledge_chunks (id, org_id, asset_id, agent_id, generation, position, content,
                              token_count, metadata, embedding)
SELECT gen_random_uuid(), p.org_id, p.asset_id, NULL, 0, i,
       (SELECT t.content FROM bench_kb.texts t WHERE t.n = (p.first_g + i) % $TEXTS),
       ${R[seed_tokens]}, '{}'::jsonb,
       (SELECT x.v FROM bench_kb.vecs x WHERE x.k = (p.first_g + i) % 1024)
       + (SELECT x.h FROM bench_kb.vecs x WHERE x.k = (p.first_g + i) / 1024 % 1024)
       + (SELECT x.q FROM bench_kb.vecs x WHERE x.k = (p.first_g + i) / 1048576 % 1024)
FROM bench_kb.plan p
CROSS JOIN LATERAL generate_series(0, p.n - 1) i
WHERE p.part = $part;
SQL
    pids+=($!)
  done
  for part in 0 1; do
    wait "${pids[$part]}" || { cat "$OUT/seed-$name-$part.log" >&2; die "seeding ($name) failed"; }
  done
  R[seed_$name.rows_s]=$((SECONDS - started))
  started=$SECONDS
  rebuild_indexes "$name"
  R[seed_$name.index_s]=$((SECONDS - started))
  started=$SECONDS
  psql_admin "$DB_NAME" -q <<SQL
SET client_min_messages = warning;
VACUUM ANALYZE knowledge_chunks, knowledge_assets, organizations;
CHECKPOINT; -- the seeding's writes are flushed now, not during the measurements
SQL
  R[seed_$name.vacuum_s]=$((SECONDS - started))
  echo "  rows ${R[seed_$name.rows_s]} s, indexes ${R[seed_$name.index_s]} s, vacuum ${R[seed_$name.vacuum_s]} s" >&2
}

# The GIN and the HNSW index, each built in its own session at the same time (GIN builds
# are not parallel in PostgreSQL 16; the HNSW build gets one parallel worker, which has
# the second core to itself once the GIN index is done).
rebuild_indexes() {
  local name pids=() i=0
  for name in knowledge_chunks_search_idx "knowledge_chunks_embedding_${DIM}_idx"; do
    psql_admin "$DB_NAME" -q >"$OUT/index-$1-$name.log" 2>&1 <<SQL &
SET maintenance_work_mem = '$MAINTENANCE_MEM';
SET max_parallel_maintenance_workers = 1;
\\timing on
${INDEX_DEFS[$name]};
SQL
    pids+=($!)
  done
  for name in knowledge_chunks_search_idx "knowledge_chunks_embedding_${DIM}_idx"; do
    wait "${pids[$i]}" || { cat "$OUT/index-$1-$name.log" >&2; die "building $name failed"; }
    i=$((i + 1))
  done
}

# --- the services ------------------------------------------------------------------

ensure_wrk() {
  command -v wrk >/dev/null && return 0
  echo "wrk is missing; trying apt-get install -y wrk ..." >&2
  as_root apt-get install -y wrk >"$OUT/apt-wrk.log" 2>&1 ||
    { as_root apt-get update >>"$OUT/apt-wrk.log" 2>&1 &&
      as_root apt-get install -y wrk >>"$OUT/apt-wrk.log" 2>&1; } ||
    die "could not install wrk (see $OUT/apt-wrk.log)"
}

start_fake_ai() {
  python3 bench/knowledge/fake_ai.py --port "$AI_PORT" --dimensions "$DIM" --warm "$DIM" \
    >"$OUT/fake_ai.log" 2>&1 &
  AI_PID=$!
  wait_for 30 curl -fsS "http://127.0.0.1:$AI_PORT/stats" ||
    { cat "$OUT/fake_ai.log" >&2; die "fake_ai.py did not start on port $AI_PORT"; }
}

server_env() {
  SERVER_ENV=(
    PATH="$PATH" HOME="$HOME"
    APP_ENV=test APP_CONFIG_DIR="$ROOT/config"
    HTTP_ADDR="127.0.0.1:$PORT" METRICS_ADDR=
    DATABASE_URL="postgres://$RT_ROLE:$RT_PASSWORD@$PGHOST:$PGPORT/$DB_NAME"
    DATABASE_MAX_CONNECTIONS="$POOL"
    DATABASE_MIGRATION_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME"
    REDIS_URL="$REDIS_URL" REDIS_KEY_PREFIX="$REDIS_PREFIX"
    JWT_SECRET=bench-only-insecure-jwt-secret-never-in-production
    ENCRYPTION_KEYS=bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
    LOG_FORMAT=json RUST_LOG=warn
    RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_ANON_PER_MIN=1000000
    RATE_LIMIT_WEBHOOK_PER_MIN=1000000
    SHUTDOWN_GRACE_SECS=5
    # Indexing is a job: this process runs the workers too.
    JOB_CONCURRENCY="$JOB_CONCURRENCY"
    # The zero-latency provider; the per-org call limit raised like the request limits.
    AI_BASE_URL="$AI_URL" AI_API_KEY=bench-key
    AI_EMBEDDING_MODEL=text-embedding-3-small AI_EMBEDDING_DIMENSIONS="$DIM"
    AI_REQUESTS_PER_MIN=1000000
  )
  if [[ -n ${PGPASSWORD:-} ]]; then SERVER_ENV+=(PGPASSWORD="$PGPASSWORD"); fi
}

# agents-api COMMAND...: the copied binary, with the server's environment, in $OUT.
agents_api() { (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" ./agents-api "$@"); }

start_server() {
  (cd "$OUT" && exec env -i "${SERVER_ENV[@]}" ./agents-api serve) >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  if ! wait_for 30 curl -fsS "$BASE/health/ready"; then
    tail -n 30 "$OUT/server.log" >&2
    die "agents-api did not become ready on $BASE"
  fi
}

rss_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SERVER_PID/status"; }

# api METHOD PATH [curl arguments...]: the JSON answer, failing on an HTTP error.
api() {
  local method=$1 path=$2
  shift 2
  curl -fsS -X "$method" -H "Authorization: Bearer $TOKEN" "$@" "$BASE$path"
}

create_org() { # create_org NAME SLUG: prints the new org's id
  api POST /v1/orgs -H 'Content-Type: application/json' \
    --data "{\"name\": \"$1\", \"slug\": \"$2\"}" >"$OUT/org-$2.json" ||
    die "POST /v1/orgs failed"
  json "$OUT/org-$2.json" 'd["id"]'
}

# Waits until no job is queued or running (the graph extraction each upload queues).
wait_jobs_idle() {
  local deadline=$((SECONDS + 600)) n
  while :; do
    n=$(psql_admin "$DB_NAME" -Atc "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
    ((n == 0)) && return 0
    ((SECONDS < deadline)) || die "$n jobs still queued or running after 10 minutes"
    sleep 0.5
  done
}

# --- measurements ------------------------------------------------------------------

# upload KEY ORG FILE MIME: one upload, timed to `indexed` (bench/knowledge/upload.py).
upload() {
  local key=$1 org=$2 file=$3 mime=$4 out="$OUT/upload-$1.json"
  wait_jobs_idle
  python3 bench/knowledge/upload.py --base "$BASE" --org "$org" --token "$TOKEN" \
    --file "$file" --type "$mime" --pid "$SERVER_PID" >"$out" ||
    die "the upload of $file failed"
  local f
  for f in client_s upload_s asset_s queue_s job_s; do
    R[$key.$f]=$(json "$out" "'%.3f' % d['$f']")
  done
  for f in rss_peak_kb hwm_kb hwm_reset; do R[$key.$f]=$(json "$out" "d['$f']"); done
  R[$key.chunks]=$(json "$out" 'd["asset"]["chunks_count"]')
  R[$key.embedded]=$(json "$out" 'd["asset"]["embedded"]')
  R[$key.asset]=$(json "$out" 'd["asset"]["id"]')
  # The graph job is queued by the transaction that swaps the chunks in: its created_at
  # (that transaction's start) splits the job's run into extraction + chunking + the
  # embedded batches, and the swap (and the job's own completion).
  local split
  split=$(psql_admin "$DB_NAME" -Atc "SELECT round(extract(epoch FROM g.created_at - p.started_at), 3)
             || ' ' || round(extract(epoch FROM p.finished_at - g.created_at), 3)
      FROM jobs p, jobs g WHERE p.id = '$(json "$out" 'd["job"]["id"]')'
       AND g.type = 'extract-knowledge-graph' AND g.payload->>'asset_id' = '${R[$key.asset]}'")
  read -r "R[$key.batches_s]" "R[$key.swap_s]" <<<"${split:-? ?}"
  # Within the batches: extraction (until `chunking` is set), chunking with the first
  # embedding call (until the first batch's transaction), then each further batch.
  R[$key.extract_s]=$(json "$out" 'round(d["timeline"]["chunking_at"] - d["timeline"]["started_at"], 3) if d["timeline"].get("chunking_at") else "?"')
  R[$key.chunk_s]=$(json "$out" 'round(d["timeline"]["first_batch_at"] - d["timeline"]["chunking_at"], 3) if d["timeline"].get("chunking_at") and d["timeline"].get("first_batch_at") else "?"')
  R[$key.batch_ms]=$(json "$out" '(lambda t: round(64000 * (t["last_batch_at"] - t["first_batch_at"]) / (t["last_batch_done"] - t["first_batch_done"])) if t.get("last_batch_done", 0) - t.get("first_batch_done", 0) >= 64 else "?")(d["timeline"])')
  # The kernel updates VmHWM lazily: the sampled maximum can exceed it.
  R[$key.rss_mb]=$(calc "(${R[$key.hwm_kb]} > ${R[$key.rss_peak_kb]} ? ${R[$key.hwm_kb]} : ${R[$key.rss_peak_kb]}) / 1024" %.1f)
  [[ ${R[$key.embedded]} == True ]] || die "$file was indexed without embeddings: $(cat "$out")"
  printf '  %s: indexed after %s s (upload %s s, job %s s), %s chunks, peak RSS %s MB\n' \
    "$key" "${R[$key.client_s]}" "${R[$key.upload_s]}" "${R[$key.job_s]}" "${R[$key.chunks]}" \
    "${R[$key.rss_mb]}" >&2
}

upload_both() { # upload_both PREFIX ORG
  upload "$1_text" "$2" "$OUT/docs/text.txt" text/plain
  upload "$1_pdf" "$2" "$OUT/docs/doc.pdf" application/pdf
  wait_jobs_idle
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
cpu_ticks() { # "server postgres fake_ai" ticks, and the machine's busy ticks
  # shellcheck disable=SC2046 # one argument per pid
  echo "$(proc_ticks "$SERVER_PID") $(proc_ticks $(pgrep -x postgres)) $(proc_ticks "$AI_PID")" \
    "$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat)"
}

# search KEY CONNECTIONS: wrk warm-up then measurement of hybrid search over the query set.
search() {
  local key=$1.$2 conns=$2 threads=$(($2 < 2 ? $2 : 2)) file="$OUT/search-$1-$2c.txt"
  local url="$BASE/v1/orgs/$ORG_ID/knowledge/search"
  local args=(-t "$threads" -c "$conns" --timeout 5s --latency -s bench/knowledge/search.lua
    "$url" -- "$TOKEN" "$OUT/docs/queries.txt" hybrid)
  echo "search $1 at $conns connections: ${WARMUP}s warm-up, ${DURATION}s measured" >&2
  wrk -d "${WARMUP}s" "${args[@]}" >"$OUT/search-$1-warmup-$2c.txt" 2>&1 ||
    { cat "$OUT/search-$1-warmup-$2c.txt" >&2; die "wrk failed"; }
  local before after wall0 wall1
  read -r -a before <<<"$(cpu_ticks)"
  wall0=$(date +%s.%N)
  wrk -d "${DURATION}s" "${args[@]}" >"$file" 2>&1 || { cat "$file" >&2; die "wrk failed"; }
  wall1=$(date +%s.%N)
  read -r -a after <<<"$(cpu_ticks)"
  local line kv
  line=$(grep -m1 '^BENCH ' "$file") || die "no result line in $file"
  # shellcheck disable=SC2086 # the line is split into its key=value words on purpose
  for kv in ${line#BENCH }; do R[$key.${kv%%=*}]=${kv#*=}; done
  R[$key.errors]=$((${R[$key.non2xx]} + ${R[$key.connect]} + ${R[$key.read]} + ${R[$key.write]} + ${R[$key.timeout]}))
  # CPU per request (ms): server, PostgreSQL, fake endpoint; and the machine's busy cores.
  local n=${R[$key.requests]}
  R[$key.cpu]=$(awk -v t="$CLK_TCK" -v n="$n" -v w="$(calc "$wall1 - $wall0" %.3f)" \
    -v s=$((after[0] - before[0])) -v p=$((after[1] - before[1])) -v a=$((after[2] - before[2])) \
    -v b=$((after[3] - before[3])) 'BEGIN {
      printf "%.1f / %.1f / %.1f ms; machine %.2f cores busy", 1000 * s / t / n, 1000 * p / t / n,
             1000 * a / t / n, b / t / w }')
  printf '  %s req/s, p50 %s ms, p99 %s ms, %s errors; CPU per request server / PostgreSQL / fake AI: %s\n' \
    "${R[$key.rps]}" "${R[$key.p50_ms]}" "${R[$key.p99_ms]}" "${R[$key.errors]}" "${R[$key.cpu]}" >&2
}

# check_search: one request answers 200, mode hybrid, SEARCH_LIMIT hits.
check_search() {
  local q
  q=$(head -n1 "$OUT/docs/queries.txt")
  api POST "/v1/orgs/$ORG_ID/knowledge/search" -H 'Content-Type: application/json' \
    --data "{\"query\": \"$q\", \"mode\": \"hybrid\"}" >"$OUT/search-$1-response.json" ||
    die "the search request failed"
  [[ $(json "$OUT/search-$1-response.json" 'd["mode"]') == hybrid ]] ||
    die "search did not run hybrid: $(head -c 500 "$OUT/search-$1-response.json")"
  [[ $(json "$OUT/search-$1-response.json" 'len(d["data"])') == "$SEARCH_LIMIT" ]] ||
    die "search returned fewer than $SEARCH_LIMIT hits: $(head -c 500 "$OUT/search-$1-response.json")"
}

# explain KEY: EXPLAIN ANALYZE of the search's two statements (bench/knowledge/explain.py).
explain() {
  local claims depth=$((SEARCH_LIMIT * 4))
  # As src/knowledge/search.rs and src/db/vectors.rs: depth = clamp(4 × limit, 40, 200),
  # ef_search = depth (with pgvector 0.8's iterative scan).
  ((depth < 40)) && depth=40
  ((depth > 200)) && depth=200
  local ef=$depth
  claims=$(cut -d. -f2 <<<"$TOKEN" | tr '_-' '/+')
  while ((${#claims} % 4)); do claims+="="; done
  claims=$(base64 -d <<<"$claims")
  # As the API's search transactions get them (plan_cache_mode force_generic_plan,
  # db::knowledge::SEARCH_SETTINGS: a plan per connection), and with a plan per execution.
  local mode suffix f
  for mode in force_generic_plan force_custom_plan; do
    suffix=${mode/force_custom_plan/custom}
    suffix=${suffix/force_generic_plan/auto}
    f=$OUT/explain-$1-$suffix
    PGDATABASE=$DB_NAME python3 bench/knowledge/explain.py --queries "$OUT/docs/queries.txt" \
      --count "$EXPLAIN_QUERIES" --org "$ORG_ID" --claims "$claims" --ai "$AI_URL" \
      --dimensions "$DIM" --depth "$depth" --ef "$ef" --plan-cache-mode "$mode" \
      --text-out "$f.txt" >"$f.json" || die "EXPLAIN failed"
    R[$1.$suffix.ft_ms]=$(json "$f.json" 'd["ft"]["median_ms"]')
    R[$1.$suffix.ft_p90_ms]=$(json "$f.json" 'd["ft"]["p90_ms"]')
    R[$1.$suffix.ft_generic]=$(json "$f.json" 'd["ft"]["generic_plans"]')
    R[$1.$suffix.vs_ms]=$(json "$f.json" 'd["vs"]["median_ms"]')
    R[$1.$suffix.vs_p90_ms]=$(json "$f.json" 'd["vs"]["p90_ms"]')
    R[$1.$suffix.vs_generic]=$(json "$f.json" 'd["vs"]["generic_plans"]')
    R[$1.ft_matched]=$(json "$f.json" 'd["ft"]["matched_median"]')
    printf '  EXPLAIN ANALYZE (%s) medians of %s queries: full-text %s ms (%s chunks ranked; %s generic plans), vector %s ms (%s generic)\n' \
      "$mode" "$EXPLAIN_QUERIES" "${R[$1.$suffix.ft_ms]}" "${R[$1.ft_matched]}" \
      "${R[$1.$suffix.ft_generic]}" "${R[$1.$suffix.vs_ms]}" "${R[$1.$suffix.vs_generic]}" >&2
  done
}

chunk_count() { # chunk_count [ORG]: the table's chunks, or one org's
  local where=""
  if [[ -n ${1:-} ]]; then where="WHERE org_id = '$1'"; fi
  psql_admin "$DB_NAME" -Atc "SELECT count(*) FROM knowledge_chunks $where"
}

# --- report --------------------------------------------------------------------------

verdict() { if (($(calc "$1" %d))); then echo pass; else echo "**FAIL**"; fi; }
num() { sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta' <<<"$1"; } # 1234567 -> 1,234,567

report() {
  local c mb
  echo "| Measure | Measured | Target | |"
  echo "|---|---:|---|---|"
  local key label
  for key in first_text first_pdf again_text again_pdf; do
    [[ -n ${R[$key.client_s]:-} ]] || continue
    case $key in
      *_text) label="$(num "$TEXT_BYTES")-byte UTF-8 text" ;;
      *_pdf) label="$PDF_PAGES-page PDF ($(num "$(stat -c %s "$OUT/docs/doc.pdf")") bytes)" ;;
    esac
    [[ $key == again_* ]] && label+=", into a new org over the $(num "${R[total_chunks]}")-chunk table"
    echo "| $label: upload → \`indexed\` (client clock; ${R[$key.chunks]} chunks, embedded) | ${R[$key.client_s]} s | < 3 s | $(verdict "${R[$key.client_s]} < 3") |"
    echo "| … of which: upload request / job queued → started / job run (server timestamps) | ${R[$key.upload_s]} / ${R[$key.queue_s]} / ${R[$key.job_s]} s | | |"
    echo "| … the job's run: extract, chunk, embed and write the batches / swap the chunks in (one transaction) | ${R[$key.batches_s]} / ${R[$key.swap_s]} s | | |"
    echo "| … within the first: extraction / chunking + the first embedding call / each further batch of 64 (embed, write) | ${R[$key.extract_s]} s / ${R[$key.chunk_s]} s / ${R[$key.batch_ms]} ms | | |"
    echo "| … server peak RSS meanwhile (max of VmHWM, reset before, and VmRSS sampled every 5 ms) | ${R[$key.rss_mb]} MB | < 300 MB | $(verdict "${R[$key.rss_mb]} < 300") |"
  done
  local set what
  for set in alone others; do
    if [[ $set == alone ]]; then
      what="$(num "${R[org_chunks]}") chunks of the org, alone in the table"
    else
      what="the same org, with $(num "${R[other_chunks]}") chunks of $OTHER_ORGS other orgs in the table"
    fi
    for c in "${CONNECTIONS[@]}"; do
      local k=$set.$c
      [[ -n ${R[$k.p50_ms]:-} ]] || continue
      echo "| Hybrid search over $what, $c conn.: p50 | ${R[$k.p50_ms]} ms | ≤ 30 ms | $(verdict "${R[$k.p50_ms]} <= 30") |"
      echo "| … p99 | ${R[$k.p99_ms]} ms | ≤ 100 ms | $(verdict "${R[$k.p99_ms]} <= 100") |"
      echo "| … requests (in ${DURATION} s) / req/s / errors (non-2xx, not hybrid, socket) | ${R[$k.requests]} / ${R[$k.rps]} / ${R[$k.errors]} | errors 0 | $(verdict "${R[$k.errors]} == 0") |"
      echo "| … CPU per request: server / PostgreSQL / fake AI | ${R[$k.cpu]} | | |"
      if [[ $set == others && -n ${R[alone.$c.p50_ms]:-} ]]; then
        # Unaffected: about as fast as alone, and fast (two equally slow runs are not it).
        local x
        x=$(calc "${R[others.$c.p50_ms]} / ${R[alone.$c.p50_ms]}")
        echo "| … p50 with the other orgs / p50 alone (\"unaffected\") | ${x}× | ≤ 1.5× and p50 ≤ 30 ms | $(verdict "$x <= 1.5 && ${R[$k.p50_ms]} <= 30") |"
      fi
    done
    local m
    for m in auto custom; do
      [[ -n ${R[$set.$m.ft_ms]:-} ]] || continue
      if [[ $m == auto ]]; then
        what="as the API's connections plan them (${R[$set.auto.ft_generic]} and ${R[$set.auto.vs_generic]} of $EXPLAIN_QUERIES generic plans)"
      else
        what="with a plan per execution (plan_cache_mode force_custom_plan)"
      fi
      echo "| … EXPLAIN ANALYZE, $what, median (p90) of $EXPLAIN_QUERIES queries: full-text statement ($(num "${R[$set.ft_matched]}") chunks match; at most 100 with all the words and 100 with some are ranked) / vector statement | ${R[$set.$m.ft_ms]} (${R[$set.$m.ft_p90_ms]}) / ${R[$set.$m.vs_ms]} (${R[$set.$m.vs_p90_ms]}) ms | | |"
    done
  done
  mb=$(calc "${R[rss_idle_kb]} / 1024" %.1f)
  echo "| Server RSS idle, before the first request (info) | $mb MB | | |"
}

machine() {
  local dirty=""
  [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && dirty=" (with uncommitted changes in the working tree)"
  cat <<EOF
- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); the whole run took ${R[elapsed]}
- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty; binary: ${R[binary]}
- CPU: $(nproc) × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1); memory $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $(uname -sr)
- PostgreSQL: $(psql_admin postgres -Atc 'SHOW server_version'), pgvector $(psql_admin "$DB_NAME" -Atc "SELECT extversion FROM pg_extension WHERE extname = 'vector'") (shared_buffers $(psql_admin postgres -Atc 'SHOW shared_buffers'), work_mem $(psql_admin postgres -Atc 'SHOW work_mem'), synchronous_commit $(psql_admin postgres -Atc 'SHOW synchronous_commit')), at $PGHOST:$PGPORT
- Redis $(redis-cli -u "$REDIS_URL" INFO server | sed -n 's/^redis_version://p' | tr -d '\r'); $( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $1, $2 }'); $(python3 --version)
- Server: DATABASE_MAX_CONNECTIONS=$POOL, JOB_CONCURRENCY=$JOB_CONCURRENCY, AI_EMBEDDING_DIMENSIONS=$DIM (text-embedding-3-small asked for $DIM dimensions), AI_REQUESTS_PER_MIN and rate limits 1,000,000/min, LOG_FORMAT=json, RUST_LOG=warn
- Everything (PostgreSQL, Redis, the server, fake_ai.py, wrk, the poller) shares these $(nproc) cores; load average ${R[load_before]} before the run, ${R[load_after]} after; at most ${R[rustc_max]} rustc processes (other builds) seen at the start of a measurement.
EOF
}

note_rustc() {
  local n
  n=$(pgrep -c -x rustc || true)
  ((n > ${R[rustc_max]:-0})) && R[rustc_max]=$n
  return 0
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
    message = d.get("message") or d.get("fields", {}).get("message", "")
    counts[(d.get("level", "?"), str(message)[:120])] += 1
for (level, message), n in counts.most_common(8):
    print(f"  - {n} × {level} `{message}`")
PY
}

section() {
  local table=$1
  cat <<EOF
## Knowledge base

Produced by \`bench/knowledge.sh\` (see bench/README.md, "Knowledge base"); raw outputs in
bench/out/knowledge/ (not committed).

### Machine

$(machine)

### Results

$table

### Method

- **Indexing**: $(num "$TEXT_BYTES") bytes of generated UTF-8 prose (paragraphs and
  numbered headings; Zipf frequencies over $(num "$VOCABULARY") words, the ~1,000 common
  English ones first, made-up ones after: ${R[first_text.bytes_per_token]} bytes per
  cl100k token as the API counted them, where English prose has ~4, so about 1.3× the
  chunks 2 MB of English would make) and a $PDF_PAGES-page PDF of the same kind of prose
  (48 lines a page, Helvetica, one Flate stream a page), uploaded with \`curl -F file=@…\` to
  \`POST /v1/orgs/{org}/knowledge/assets\` (202), then \`GET …/assets/{id}\` every 20 ms
  until \`status\` is \`indexed\` (bench/knowledge/upload.py): "upload → indexed" is the
  client's clock from before curl starts to the poll that sees \`indexed\` (so it
  includes up to 20 ms of polling). The job's own \`created_at\`/\`started_at\`/\`finished_at\`
  (\`GET …/jobs/{id}\`) split it. The real \`process-asset\` job runs in the server
  (JOB_CONCURRENCY=$JOB_CONCURRENCY): extraction, ~500-token chunks, embeddings in batches
  from bench/knowledge/fake_ai.py (a stdlib HTTP server that answers at once with
  precomputed $DIM-dimension vectors; batch n + 1 embedded while batch n is written), each chunk written once with its embedding under a new generation of the asset, which the swap makes the searchable one. The graph
  extraction each upload queues afterwards (fake chat answers) is waited for before the
  next measurement, and is not part of it. Peak RSS: VmHWM reset through
  \`/proc/PID/clear_refs\` before each upload and read at \`indexed\`, and VmRSS sampled
  every 5 ms. The first two uploads go into an empty table, the last two (a new org)
  after all the seeding, so into the full GIN and HNSW indexes.
- **Search data**: the measured org holds the two uploads plus $(num "$CHUNKS") seeded
  chunks (assets of $(num "$ASSET_CHUNKS")); then $(num "${R[other_chunks]}") chunks in
  $OTHER_ORGS other orgs are added. Seeded rows are written by SQL as the superuser: a
  chunk's text is one of $(num "$TEXTS") texts of ${R[seed_sentences]} generated sentences
  (taken in turn: no text twice in an org of up to $(num "$TEXTS") chunks), ${R[seed_chars]}
  characters on average like the chunks the API made of the text upload, generation 0 (the assets' searchable one), its
  \`search\` tsvector generated by the table as for any insert, and an embedding summed from
  the fake endpoint's vectors (\`v[g mod 1024] + ½·v[g/1024 mod 1024] + ¼·v[g/1024²
  mod 1024]\`, g the chunk's number: 1,024 clusters around the vectors queries embed to,
  no two alike). The GIN and HNSW indexes are dropped while rows go in and rebuilt from
  the migration's own definitions (maintenance_work_mem $MAINTENANCE_MEM), then
  \`VACUUM ANALYZE\` and \`CHECKPOINT\`. Seeding took: org ${R[seed_own.rows_s]} s of rows,
  ${R[seed_own.index_s]} s of indexes, ${R[seed_own.vacuum_s]} s of vacuum; other orgs
  ${R[seed_others.rows_s]:-?} s, ${R[seed_others.index_s]:-?} s, ${R[seed_others.vacuum_s]:-?} s.
- **Search**: wrk, \`POST /v1/orgs/{org}/knowledge/search\`
  \`{"query": …, "mode": "hybrid"}\` (limit 8: the API ranks 40 full-text and 40 vector
  hits and fuses them), cycling through $QUERIES generated questions of 3–5
  mid-frequency words (bench/knowledge/search.lua); ${WARMUP} s of warm-up, then
  ${DURATION} s measured, at $(printf '%s, ' "${CONNECTIONS[@]}" | sed 's/, $//') connection(s); the same query set with and
  without the other orgs. Every request is the API's whole path: auth, membership,
  the query's embedding from the fake endpoint (and its usage row), the full-text and the
  vector statement, fusion. A 2xx answer whose \`mode\` is not \`hybrid\` counts as an
  error. The EXPLAIN rows run the two statements the API runs (PREPAREd, as the API's
  role under row-level security) for the first $EXPLAIN_QUERIES queries: plans in
  bench/out/knowledge/explain-*.txt.

Server log (warnings and errors, by message):

${R[server_log]:-  - none}
EOF
}

# Replaces the "## Knowledge base" section of $RESULTS (up to the next "## " heading),
# or appends it; the rest of the file stays as it is.
write_section() {
  local new=$OUT/section.md
  section "$1" >"$new"
  if [[ ! -f $RESULTS ]]; then
    { echo "# Benchmark results"; echo; cat "$new"; } >"$RESULTS"
    return
  fi
  awk -v sec="$new" '
    /^## / && skip { skip = 0 }
    /^## Knowledge base[[:space:]]*$/ {
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
  mkdir -p "$OUT/docs"
  R[load_before]=$(cut -d' ' -f1-3 /proc/loadavg)
  R[rustc_max]=0
  note_rustc

  if [[ -n $BINARY ]]; then
    cp "$BINARY" "$OUT/agents-api"
    R[binary]="BENCH_KB_BINARY=$BINARY, built $(date -u -r "$BINARY" '+%Y-%m-%d %H:%M UTC')"
  else
    R[binary]="built by this run"
    log "Building the release binary"
    ensure_rust
    cargo build --release --bin agents-api
    # A copy, so that someone else's rebuild cannot swap the binary in the middle of a run.
    cp "${CARGO_TARGET_DIR:-target}/release/agents-api" "$OUT/agents-api"
  fi

  log "PostgreSQL with pgvector, Redis, wrk"
  ensure_pgvector
  ensure_redis
  ensure_wrk
  server_env

  log "Generating the documents and the query set (bench/knowledge/gen_docs.py)"
  local gen=bench/knowledge/gen_docs.py d=$OUT/docs
  python3 "$gen" vocab "$d/vocab.txt" --size "$VOCABULARY"
  python3 "$gen" text "$d/text.txt" --vocab "$d/vocab.txt" --bytes "$TEXT_BYTES"
  python3 "$gen" pdf "$d/doc.pdf" --vocab "$d/vocab.txt" --pages "$PDF_PAGES"
  python3 "$gen" sentences "$d/sentences.txt" --vocab "$d/vocab.txt" --count "$SENTENCES"
  python3 "$gen" queries "$d/queries.txt" --vocab "$d/vocab.txt" --count "$QUERIES"
  echo "  text $(stat -c %s "$d/text.txt") bytes, PDF $(stat -c %s "$d/doc.pdf") bytes" >&2

  log "The fake AI endpoint on 127.0.0.1:$AI_PORT"
  start_fake_ai

  log "A fresh database $DB_NAME at $PGHOST:$PGPORT (migrated, runtime role $RT_ROLE)"
  fresh_database
  load_seed_material

  log "Starting agents-api on $BASE"
  start_server
  sleep 3
  R[rss_idle_kb]=$(rss_kb VmRSS)
  TOKEN=$(agents_api dev-token --user "$USER_ID" --email kb-bench@example.com --ttl 2h)
  ORG_ID=$(create_org "Knowledge Bench" kb-bench)

  log "Indexing: the text and the PDF, into an empty table"
  note_rustc
  upload_both first "$ORG_ID"

  # Seeded chunks are as long as the ones the API made of the text.
  R[seed_chars]=$(psql_admin "$DB_NAME" -Atc "SELECT round(avg(length(content)))
    FROM knowledge_chunks WHERE asset_id = '${R[first_text.asset]}'")
  R[first_text.bytes_per_token]=$(psql_admin "$DB_NAME" -Atc "SELECT round(sum(octet_length(content))::numeric
    / sum(token_count), 2) FROM knowledge_chunks WHERE asset_id = '${R[first_text.asset]}'")
  R[seed_tokens]=$(psql_admin "$DB_NAME" -Atc "SELECT round(avg(token_count))
    FROM knowledge_chunks WHERE asset_id = '${R[first_text.asset]}'")
  R[seed_sentences]=$(psql_admin "$DB_NAME" -Atc "SELECT greatest(1, round(${R[seed_chars]}
    / (avg(length(s)) + 1))) FROM bench_kb.sentences")

  log "Seeding $(num "$CHUNKS") chunks into the org"
  seed own "SELECT 1, '$ORG_ID'::uuid" "$CHUNKS" 0
  R[org_chunks]=$(chunk_count "$ORG_ID")
  check_search alone
  explain alone
  local c
  for c in "${CONNECTIONS[@]}"; do
    note_rustc
    search alone "$c"
  done

  local per_org=$((OTHER_CHUNKS / OTHER_ORGS))
  log "Seeding $(num $((per_org * OTHER_ORGS))) chunks into $OTHER_ORGS other orgs"
  # Their ids are chosen as the API chooses a new org's (src/db/orgs.rs insert): the one
  # of 512 fresh ones whose chunks go to the partition with the fewest, by statistics —
  # here, any but the org's (the subquery names o, so each org gets its own candidates).
  seed others "SELECT o, knowledge_quiet_org_id(ARRAY(SELECT gen_random_uuid()
                 FROM generate_series(1, 512 + 0 * o))) FROM generate_series(1, $OTHER_ORGS) o" \
    "$per_org" "$CHUNKS"
  R[total_chunks]=$(chunk_count)
  local total=${R[total_chunks]}
  R[other_chunks]=$((total - $(chunk_count "$ORG_ID")))
  check_search others
  explain others
  for c in "${CONNECTIONS[@]}"; do
    note_rustc
    search others "$c"
  done

  if ((UPLOAD_AGAIN)); then
    log "Indexing again, into a new org, over the full table"
    note_rustc
    upload_both again "$(create_org "Knowledge Bench 2" kb-bench-2)"
  fi

  R[load_after]=$(cut -d' ' -f1-3 /proc/loadavg)
  R[server_log]=$(server_log_summary)
  local elapsed=$((SECONDS - started))
  R[elapsed]="$((elapsed / 60)) min $((elapsed % 60)) s"

  local table
  table=$(report)
  write_section "$table"
  log "Knowledge base results (also in $RESULTS, section \"Knowledge base\"; run took ${R[elapsed]})"
  echo "$table"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
