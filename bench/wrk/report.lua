-- Shared by every bench script.
--
-- done():  at the end of a run, print one machine-readable line that bench/run.py parses. Latency
--          figures are in microseconds, as wrk records them. "sent" is the number of requests the
--          scripts' request() functions built (the global `sent` in each thread; 0 for static
--          scripts), which run.py uses to know how many ids a run used up and as the upper bound of
--          writes that may have reached the server.
-- setup(): remembers wrk's threads so done() can read their counters.
-- delay:   nil, unless the environment variable BENCH_DELAY_MS holds a mean delay in milliseconds:
--          then a function wrk calls before each request on a connection after its first (rate
--          limiting for the half-peak-rate runs). Each delay is drawn uniformly from 0 to twice the
--          mean, so the connections do not send in lockstep bursts; wrk takes whole milliseconds,
--          so the draw is rounded down or up at random in the proportions that keep the mean. wrk
--          decides whether a script has a delay() when it loads it, so it is chosen here, not in
--          init().
local M = {}
local threads = {}

function M.setup(thread)
  threads[#threads + 1] = thread
end

function M.done(summary, latency, requests)
  local e = summary.errors
  local sent, wrapped = 0, 0
  for _, thread in ipairs(threads) do
    sent = sent + (tonumber(thread:get("sent")) or 0)
    wrapped = wrapped + (tonumber(thread:get("wrapped")) or 0)
  end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"sent":%d,"wrapped":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p95":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, sent, wrapped,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max
  ))
end

local mean = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if mean then
  M.delay = function()
    -- uniform on [0, 2 * mean]: connections drift apart instead of firing in lockstep bursts
    local d = 2 * mean * math.random()
    local whole = math.floor(d)
    if math.random() < d - whole then
      return whole + 1
    end
    return whole
  end
end

return M
