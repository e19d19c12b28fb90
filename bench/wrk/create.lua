-- POST /v1/orders with the order in order.json (the same body run.py uses to pre-create orders).
-- A static request (no request() function) keeps wrk's own CPU cost minimal: it shares the
-- machine's cores with the server. The Authorization header comes from wrk's -H flag.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
done = dofile(dir .. "report.lua").done

local file = assert(io.open(dir .. "order.json", "r"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = file:read("*a"):gsub("%s+$", "")
file:close()
