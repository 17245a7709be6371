#!/usr/bin/env python3
"""EXPLAIN ANALYZE of a hybrid search's two statements, for bench/knowledge.sh.

  explain.py --queries FILE --count N --org ORG --claims JSON --ai URL --dimensions D
             --depth 40 --ef 400 --text-out FILE   (psql connection from PG* variables)

For each of the first N queries: its embedding from the fake endpoint (--ai, as the API
gets it), then, in one transaction as the API's role (`authenticated` with the caller's
claims, so row-level security applies as for a request), EXPLAIN (ANALYZE, BUFFERS) of
the statements hybrid search runs, PREPAREd and EXECUTEd with the request's parameters as
sqlx sends them (so after five executions PostgreSQL may switch to a generic plan, as on
a pooled connection): the full-text one (src/db/knowledge.rs search_fulltext) and the
nearest-neighbour one (src/db/vectors.rs search) with depth = the API's (limit 8 -> 40)
and its hnsw.ef_search and iterative scan (ef_search = depth under pgvector 0.8)
and enable_sort off (the API sets it for the vector statement only; here it is set
for both). The SQL is copied from those files; keep it
in step with them.

Prints one JSON object: per statement the median, p90 and max execution time (ms), the
median planning time, and for full-text the median number of chunks that matched (and
were ranked). The plans of the first query go to --text-out, as text.
"""
import argparse
import json
import statistics
import subprocess
import sys
import urllib.request

FULLTEXT = """WITH words AS MATERIALIZED (
    SELECT q AS all_of_them, knowledge_some_words(q) AS any_of_them
    FROM websearch_to_tsquery('russian', $2) AS q
),
every_word AS MATERIALIZED (
    SELECT m.id, m.asset_id, m.search
    FROM auth.knowledge_text_candidates($1, $3, (SELECT all_of_them FROM words), $5) AS m
),
some_words AS MATERIALIZED (
    SELECT m.id, m.asset_id, m.search
    FROM auth.knowledge_text_some_candidates($1, $3, (SELECT any_of_them FROM words), $5) AS m
    WHERE (SELECT count(*) FROM every_word) < $4
      AND (SELECT any_of_them <> all_of_them FROM words)
      AND NOT EXISTS (SELECT 1 FROM every_word e WHERE e.id = m.id)
),
ranked AS (
    SELECT id, asset_id, 1 + ts_rank_cd(search, (SELECT any_of_them FROM words), 32) AS score
    FROM every_word
    UNION ALL
    SELECT id, asset_id, ts_rank_cd(search, (SELECT any_of_them FROM words), 32)
    FROM some_words
    ORDER BY score DESC, id
    LIMIT $4
)
SELECT r.id AS chunk_id, r.asset_id AS asset_id, a.filename, c.content,
       c.metadata, r.score::float8 AS score
FROM ranked r
     JOIN knowledge_chunks c ON c.id = r.id AND c.org_id = $1
     JOIN knowledge_assets a ON a.id = r.asset_id
ORDER BY r.score DESC, r.id"""

# The vector statement runs with sorting off (src/db/vectors.rs), the full-text one with
# it on, as in the API.
SORT = {"ft": "SELECT set_config('enable_sort', 'on', true) \\g /dev/null",
        "vs": "SELECT set_config('enable_sort', 'off', true) \\g /dev/null"}

# At most this many chunks of each kind are ranked (db::knowledge::fulltext_candidates
# for hybrid search's list of 40).
CANDIDATES = 100

VECTOR = """WITH nearest AS MATERIALIZED (
  SELECT c.id AS chunk_id, c.asset_id, a.filename, c.content, c.metadata,
         (c.embedding::vector({d})) <=> (SELECT $2::vector({d}))
             AS distance
  FROM knowledge_chunks c
       JOIN knowledge_assets a ON a.id = c.asset_id AND a.generation = c.generation
  WHERE c.org_id = $1 AND a.org_id = $1 AND vector_dims(c.embedding) = {d}
    AND ($3::uuid IS NULL OR c.agent_id IS NULL OR c.agent_id = $3)
  ORDER BY distance
  LIMIT $4)
SELECT chunk_id, asset_id, filename, content, metadata, 1 - distance AS score
FROM nearest ORDER BY distance, chunk_id"""


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def embed(ai, text, dimensions):
    body = json.dumps({"model": "text-embedding-3-small", "input": [text],
                       "dimensions": dimensions}).encode()
    req = urllib.request.Request(ai.rstrip("/") + "/embeddings", body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        v = json.load(r)["data"][0]["embedding"]
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def generic(plan):
    """Whether a plan is a generic one: it shows the query's parameter ($2, the words or
    the vector) where a custom plan has the value folded in; for the full-text statement
    that is a function scan of websearch_to_tsquery($2). (InitPlans' outputs are $0 and
    $1 here.)"""
    return "$2" in json.dumps(plan) or any(
        n.get("Function Name") == "websearch_to_tsquery" for n in walk(plan))


def walk(node):
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--org", required=True)
    p.add_argument("--claims", required=True)
    p.add_argument("--ai", required=True)
    p.add_argument("--dimensions", type=int, required=True)
    p.add_argument("--depth", type=int, default=40)
    p.add_argument("--ef", type=int, default=400)
    p.add_argument("--text-out", required=True)
    p.add_argument("--plan-cache-mode", default="force_generic_plan",
                   help="force_generic_plan (what the API's search transactions get) or force_custom_plan (a plan per execution)")
    a = p.parse_args()

    with open(a.queries, encoding="utf-8") as f:
        queries = [q.strip() for q in f if q.strip()][: a.count]
    setup = [
        "\\set ON_ERROR_STOP 1",
        "BEGIN;",
        "SELECT set_config('role', 'authenticated', true), "
        "set_config('request.jwt.claims', %s, true), "
        "set_config('hnsw.ef_search', '%d', true), "
        "set_config('plan_cache_mode', %s, true), "
        "CASE WHEN (SELECT string_to_array(extversion, '.')::int[] >= '{0,8}' "
        "FROM pg_extension WHERE extname = 'vector') "
        "THEN set_config('hnsw.iterative_scan', 'relaxed_order', true) END;"
        % (lit(a.claims), a.ef, lit(a.plan_cache_mode)),
        "PREPARE ft(uuid, text, uuid, bigint, bigint) AS %s;" % FULLTEXT,
        "PREPARE vs(uuid, text, uuid, bigint) AS %s;" % VECTOR.format(d=a.dimensions),
    ]
    # How many of the org's chunks the full-text statement matches (and so ranks).
    # (all of them were ranked before FULLTEXT_CANDIDATES; now at most twice that).
    setup.append("PREPARE matched(uuid, text) AS SELECT count(*) FROM knowledge_chunks c "
                 "JOIN knowledge_assets a ON a.id = c.asset_id AND a.generation = c.generation, "
                 "websearch_to_tsquery('russian', $2) AS q_all WHERE c.org_id = $1 "
                 "AND c.search @@ CASE WHEN strpos(q_all::text, '!') > 0 "
                 "THEN q_all ELSE replace(q_all::text, ' & ', ' | ')::tsquery END;")
    script = list(setup)
    vectors = []
    for i, q in enumerate(queries):
        v = embed(a.ai, q, a.dimensions)
        vectors.append(v)
        for name, arg in (("ft", q), ("vs", v)):
            script.append(SORT[name])
            script.append("\\echo @@%s %d" % (name, i))
            script.append("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE %s(%s, %s, NULL, %d%s);"
                          % (name, lit(a.org), lit(arg), a.depth,
                             ", %d" % CANDIDATES if name == "ft" else ""))
        script.append("\\echo @@n %d" % i)
        script.append("EXECUTE matched(%s, %s);" % (lit(a.org), lit(q)))
    script.append("ROLLBACK;")
    out = subprocess.run(["psql", "-X", "-w", "-q", "-A", "-t"], input="\n".join(script),
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("psql failed: " + out.stderr[-2000:])

    results = {"ft": [], "vs": [], "n": []}
    current, buf = None, []
    for line in out.stdout.splitlines() + ["@@end"]:
        if line.startswith("@@"):
            if current and buf:
                results[current].append(json.loads("\n".join(buf))[0] if current != "n"
                                        else int(buf[0]))
            current, buf = (line[2:].split() or [None])[0], []
        elif current:
            buf.append(line)

    summary = {"queries": len(queries)}
    for name in ("ft", "vs"):
        plans = results[name]
        times = [pl["Execution Time"] for pl in plans]
        planning = [pl["Planning Time"] for pl in plans]
        if not times:
            continue
        times_sorted = sorted(times)
        summary[name] = {
            "median_ms": round(statistics.median(times), 2),
            "p90_ms": round(times_sorted[min(len(times) - 1, int(0.9 * len(times)))], 2),
            "max_ms": round(max(times), 2),
            "planning_median_ms": round(statistics.median(planning), 2),
            "generic_plans": sum(1 for pl in plans if generic(pl["Plan"])),
        }
        if name == "ft" and results["n"]:
            summary[name]["matched_median"] = int(statistics.median(results["n"]))
            summary[name]["matched_max"] = max(results["n"])
            # The plan's shape for the chunks: which scan node(s) read them.
            nodes = {n["Node Type"] + (" on " + n["Index Name"] if "Index Name" in n else "")
                     for pl in plans for n in walk(pl["Plan"])
                     if n.get("Relation Name", "").startswith("knowledge_chunks")  # or a partition
                     or "knowledge_chunks" in n.get("Index Name", "")}
            summary[name]["chunk_scans"] = sorted(nodes)

    # The first query's plans, readable, after six executions of each statement: the plans
    # a pooled connection has settled on by then (PostgreSQL weighs a generic plan after
    # five custom ones).
    text = list(setup) + ["\\o /dev/null"]
    for _ in range(6):
        text.append(SORT["ft"])
        text.append("EXECUTE ft(%s, %s, NULL, %d, %d);" % (lit(a.org), lit(queries[0]), a.depth, CANDIDATES))
        text.append(SORT["vs"])
        text.append("EXECUTE vs(%s, %s, NULL, %d);" % (lit(a.org), lit(vectors[0]), a.depth))
    text += [
        "\\o",
        "\\echo '--- plan_cache_mode %s, after 6 executions of each statement'"
        % a.plan_cache_mode,
        "\\echo '--- full-text statement, query: %s'" % queries[0].replace("'", ""),
        SORT["ft"],
        "EXPLAIN (ANALYZE, BUFFERS) EXECUTE ft(%s, %s, NULL, %d, %d);" % (lit(a.org), lit(queries[0]), a.depth, CANDIDATES),
        "\\echo '--- vector statement (the same query''s embedding)'",
        SORT["vs"],
        "EXPLAIN (ANALYZE, BUFFERS) EXECUTE vs(%s, %s, NULL, %d);" % (lit(a.org), lit(vectors[0]), a.depth),
        "ROLLBACK;",
    ]
    out = subprocess.run(["psql", "-X", "-w", "-q"], input="\n".join(text),
                         capture_output=True, text=True)
    with open(a.text_out, "w", encoding="utf-8") as f:
        f.write(out.stdout + out.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
