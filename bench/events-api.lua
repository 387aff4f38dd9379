-- wrk script for bench/events-bench.sh (run wrk with -t1).
-- Env: E_MODE=put|publish, E_PATH (the API path), E_BATCH (events per put), E_TYPES
-- (event types t.0 .. t.(E_TYPES-1), picked in turn), NIMBUS_TOKEN.
--   put:     POST E_PATH with a JSON list of E_BATCH CloudEvents ({"total": 150} as data)
--   publish: POST E_PATH with one 128-byte message
-- The RESULT line adds ok (events put, or messages published) and errors (per-entry).
local mode = os.getenv("E_MODE") or "put"
local path = os.getenv("E_PATH")
local batch = tonumber(os.getenv("E_BATCH") or "10")
local types = tonumber(os.getenv("E_TYPES") or "100")
local token = os.getenv("NIMBUS_TOKEN") or ""
local headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }

ok, errors = 0, 0
local n = 0
local threads = {}
setup = function(thread) table.insert(threads, thread) end

request = function()
  if mode == "publish" then
    return wrk.format("POST", path, headers, string.rep("m", 128))
  end
  local events = {}
  for i = 1, batch do
    n = n + 1
    events[i] = string.format(
      '{"specversion":"1.0","id":"e%d","source":"bench","type":"t.%d","data":{"total":150}}',
      n, n % types)
  end
  return wrk.format("POST", path, headers, "[" .. table.concat(events, ",") .. "]")
end

response = function(status, hdrs, body)
  if status ~= 200 then errors = errors + 1 return end
  if mode == "publish" then ok = ok + 1 return end
  local _, good = body:gsub('"matched_rules"', "")
  local _, bad = body:gsub('"error"', "")
  ok, errors = ok + good, errors + bad
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local o, e = 0, 0
  for _, t in ipairs(threads) do o, e = o + t:get("ok"), e + t:get("errors") end
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f ok=%d ok_per_s=%.1f errors=%d p50_us=%d p99_us=%d non2xx=%d\n",
    summary.requests, secs, o, o / secs, e, latency:percentile(50), latency:percentile(99),
    summary.errors.status))
end
