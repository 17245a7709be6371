-- POST /v1/kommo/webhooks/{connection}/{token} with a form body that differs on every
-- request (thread number + per-thread counter + a run tag), so every request is a new
-- delivery and none is answered as a duplicate. Arguments after `--`: run tag, Kommo
-- account id.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("report")

local counter = 0
local tag, account
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function init(args)
  tag = args[1] or tostring(os.time())
  account = args[2] or "0"
end

function request()
  counter = counter + 1
  local body = string.format(
    "leads%%5Bstatus%%5D%%5B0%%5D%%5Bid%%5D=%d%09d" ..
    "&leads%%5Bstatus%%5D%%5B0%%5D%%5Bstatus_id%%5D=142" ..
    "&leads%%5Bstatus%%5D%%5B0%%5D%%5Bold_status_id%%5D=141" ..
    "&leads%%5Bstatus%%5D%%5B0%%5D%%5Bpipeline_id%%5D=7001" ..
    "&leads%%5Bstatus%%5D%%5B0%%5D%%5Bname%%5D=Bench+lead+%s-%d" ..
    "&account%%5Bid%%5D=%s&account%%5Bsubdomain%%5D=bench",
    tid, counter, tag, counter, account)
  return wrk.format("POST", nil, headers, body)
end
