-- POST /v1/orders/{id}/<action> walking a list of order ids: each request takes the next id, so
-- every order is acted on exactly once (run wrk with -t1: one Lua state builds every request).
-- Should the run outlast the list it starts again from the top; those repeats are counted in
-- `wrapped` (the server answers them 409, as the order has already moved on).
--
-- Script arguments:
--   1  file with one order id per line
--   2  action: pay or fulfill
--   3  Idempotency-Key prefix, unique to the run (a per-thread counter is appended)
--   4  file with one JSON body per line; the order at list position i (0-based) gets body
--      (offset + i) mod #bodies + 1, which is how run.py assigns each order to a funded wallet
--   5  offset: the first order's position in run.py's whole pool
-- The Authorization header comes from wrk's -H flag.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "report.lua")
done, setup, delay = common.done, common.setup, common.delay

local paths, bodies = {}, {}
local prefix, offset
sent = 0
wrapped = 0

function init(args)
  local ids_path = assert(args[1], "walk.lua needs the ids file as its first argument")
  local action = assert(args[2], "walk.lua needs the action as its second argument")
  prefix = assert(args[3], "walk.lua needs an idempotency-key prefix as its third argument")
  local bodies_path = assert(args[4], "walk.lua needs the bodies file as its fourth argument")
  for line in io.lines(bodies_path) do
    if line ~= "" then
      bodies[#bodies + 1] = line
    end
  end
  offset = tonumber(args[5] or "0")
  for line in io.lines(ids_path) do
    if line ~= "" then
      paths[#paths + 1] = "/v1/orders/" .. line .. "/" .. action
    end
  end
  assert(#paths > 0, "no order ids in " .. ids_path)
  assert(#bodies > 0, "no bodies in " .. bodies_path)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  math.randomseed(os.time())
end

function request()
  local i = sent % #paths
  if sent >= #paths then
    wrapped = wrapped + 1
  end
  sent = sent + 1
  wrk.headers["Idempotency-Key"] = prefix .. sent
  return wrk.format(nil, paths[i + 1], nil, bodies[(offset + i) % #bodies + 1])
end
