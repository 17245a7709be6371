-- GET /v1/orgs/{org}/agents?limit=20 with a bearer token: the URL comes from the command
-- line, the token from the first argument after `--`.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("report")

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
end
