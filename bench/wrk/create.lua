-- POST /v1/orders with the order in order.json (the same body run.py uses to pre-create orders),
-- each request with its own Idempotency-Key: the script argument (a prefix unique to the run)
-- followed by a per-thread counter. The Authorization header comes from wrk's -H flag.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "report.lua")
done, setup, delay = common.done, common.setup, common.delay

local file = assert(io.open(dir .. "order.json", "r"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = file:read("*a"):gsub("%s+$", "")
file:close()

local prefix
sent = 0

function init(args)
  prefix = assert(args[1], "create.lua needs an idempotency-key prefix as its first argument")
  math.randomseed(os.time())
end

function request()
  sent = sent + 1
  wrk.headers["Idempotency-Key"] = prefix .. sent
  return wrk.format()
end
