-- wrk script for bench/data-bench.sh: key-value GET or PUT over the data API.
-- Env: KV_MODE=get|set|fn-get, KV_APP, KV_STORE, KV_KEYS (keys k000000.. seeded for
-- get), KV_VALUE_BYTES (set), NIMBUS_TOKEN, KV_TAG. `set` writes a new key per
-- request (KV_TAG plus a counter; run wrk with -t1), so no two writes hit the same
-- row. `fn-get` calls the fixture function through the gateway (/kv/get?store=..&key=..).
local mode = os.getenv("KV_MODE") or "get"
local app = os.getenv("KV_APP") or "bench"
local store = os.getenv("KV_STORE") or "k"
local keys = tonumber(os.getenv("KV_KEYS") or "100000")
local value = string.rep("v", tonumber(os.getenv("KV_VALUE_BYTES") or "64"))
local token = os.getenv("NIMBUS_TOKEN") or ""
local base = "/v1/apps/" .. app .. "/kv/" .. store .. "/keys/"
local tag = os.getenv("KV_TAG") or tostring(os.time())
local counter = 0

init = function(args)
  math.randomseed(os.time())
end

request = function()
  if mode == "set" then
    counter = counter + 1
    return wrk.format("PUT", base .. "w" .. tag .. "-" .. counter,
      { ["Authorization"] = "Bearer " .. token }, value)
  elseif mode == "fn-get" then
    return wrk.format("GET", string.format("/kv/get?store=%s&key=k%06d", store, math.random(0, keys - 1)))
  else
    return wrk.format("GET", base .. string.format("k%06d", math.random(0, keys - 1)),
      { ["Authorization"] = "Bearer " .. token })
  end
end

-- Same reporter as ../shared/bench/wrk-report.lua: one RESULT line.
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f mean_us=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d sock_errors=%d non2xx=%d\n",
    summary.requests, secs, summary.requests / secs, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
