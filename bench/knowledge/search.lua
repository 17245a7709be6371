-- POST /v1/orgs/{org}/knowledge/search with a bearer token, for bench/knowledge.sh.
-- Arguments after `--`: token, queries file (one query a line, plain words), mode
-- (hybrid). Each request sends the next query of the file ({"query": …, "mode": …});
-- the threads start at different places in it. A 2xx answer whose `mode` is not the one
-- asked for (hybrid falling back to full-text) counts as an error, like a non-2xx one.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "../wrk/?.lua"
require("report")

local queries = {}
local next_query = 1
local mode = "hybrid"
local headers = { ["Content-Type"] = "application/json" }

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

function init(args)
  headers["Authorization"] = "Bearer " .. args[1]
  mode = args[3] or mode
  for line in io.lines(args[2]) do
    if line ~= "" then table.insert(queries, line) end
  end
  assert(#queries > 0, "no queries in " .. args[2])
  -- Thread N starts N/8 of the way through the file.
  next_query = 1 + math.floor((tid - 1) * #queries / 8) % #queries
end

function request()
  local q = queries[next_query]
  next_query = next_query % #queries + 1
  local body = '{"query":' .. json_string(q) .. ',"mode":"' .. mode .. '"}'
  return wrk.format("POST", nil, headers, body)
end

local expected = nil

function response(status, headers, body)
  expected = expected or ('"mode":"' .. mode .. '"')
  if status < 200 or status > 299 or not body:find(expected, 1, true) then
    non2xx = non2xx + 1
  end
end
