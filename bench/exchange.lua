-- wrk script: rotate through a file of pre-minted tokens, one request per token.
--
--   wrk -t1 -c64 -d10s -s bench/exchange.lua URL -- TOKENS METHOD PATH BODY MEAN_DELAY_MS
--
-- Every request is formatted once, in init(), so the per-request cost in wrk is
-- one table index. MEAN_DELAY_MS > 0 makes each connection wait an exponentially
-- distributed time (that mean) between a response and its next request: with C
-- connections the offered load is about C * 1000 / (MEAN_DELAY_MS + latency)
-- requests per second. done() prints one line starting with "BENCH " holding JSON.

local requests = {}
local count = 0
local next_index = 0
local mean_delay = 0

function init(args)
  local path, method, url_path, body = args[1], args[2], args[3], args[4]
  mean_delay = tonumber(args[5] or "0") or 0
  if body == "" then
    body = nil
  end
  for token in io.lines(path) do
    if token ~= "" then
      local headers = { ["Authorization"] = "Bearer " .. token }
      if body ~= nil then
        headers["Content-Type"] = "application/json"
      end
      count = count + 1
      requests[count] = wrk.format(method, url_path, headers, body)
    end
  end
  if count == 0 then
    error("no tokens in " .. path)
  end
  math.randomseed(os.time())
  next_index = math.random(count) - 1
  if mean_delay > 0 then
    -- Defined only when asked for: wrk takes a slower path for every request
    -- once a script has a delay() function.
    delay = function()
      return -mean_delay * math.log(1 - math.random())
    end
  end
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

function done(summary, latency, requests_stats)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,'
      .. '"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean
  ))
end
