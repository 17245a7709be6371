-- Shared by the wrk scripts: counts non-2xx responses per thread and prints one
-- machine-readable line at the end (parsed by bench/run.sh), and the latency histogram
-- to $WRK_HISTOGRAM when it is set.
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

non2xx = 0

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local non2xx_total = 0
  for _, t in ipairs(threads) do
    non2xx_total = non2xx_total + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f " ..
    "mean_ms=%.3f max_ms=%.3f non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000,
    non2xx_total, e.connect, e.read, e.write, e.timeout))
  -- The whole latency histogram (microseconds, count per line), so that bench/run.sh can
  -- merge the slices of one measurement into exact percentiles.
  local path = os.getenv("WRK_HISTOGRAM")
  if path then
    local f = assert(io.open(path, "w"))
    for i = 1, #latency do
      local value, count = latency(i)
      f:write(string.format("%d %d\n", value, count))
    end
    f:close()
  end
end
