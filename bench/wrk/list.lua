-- GET on the URL given to wrk, unchanged for every request: the filtered orders list page
-- (run.py passes /v1/orders?status=paid&limit=20). A static request keeps wrk's CPU cost minimal.
-- The Authorization header comes from wrk's -H flag.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "report.lua")
done, setup, delay = common.done, common.setup, common.delay
