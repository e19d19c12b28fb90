-- GET /v1/orders/{id} for a random pre-created order per request.
-- Script argument 1: a file with one order id per line (written by bench/run.py).
-- The Authorization header comes from wrk's -H flag.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "report.lua")
done, setup, delay = common.done, common.setup, common.delay

local ids = {}
sent = 0

function init(args)
  local path = assert(args[1], "get.lua needs the ids file as its first argument")
  for line in io.lines(path) do
    if line ~= "" then
      ids[#ids + 1] = "/v1/orders/" .. line
    end
  end
  assert(#ids > 0, "no order ids in " .. path)
  math.randomseed(os.time())
end

function request()
  sent = sent + 1
  return wrk.format(nil, ids[math.random(#ids)])
end
