-- GET / on bench/hello_app.py: the framework-and-server ceiling, same wrk settings as the API.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "report.lua")
done, setup, delay = common.done, common.setup, common.delay
