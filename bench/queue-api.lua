-- wrk script for bench/queue-bench.sh: a Nimbus queue over the API (run wrk with -t1).
-- Env: Q_MODE=send|one|recv, Q_APP, Q_QUEUE, Q_BATCH (1..10), Q_SIZE (message bytes),
-- Q_VISIBILITY (recv), NIMBUS_TOKEN.
--   send: every request is POST .../messages/batch with Q_BATCH messages of Q_SIZE bytes.
--   one:  every request is POST .../messages with one message of Q_SIZE bytes as the body.
--   recv: a request is either GET .../messages?max=Q_BATCH (wait 0) or, when a receive
--         has come back with receipts not yet deleted, POST .../messages/delete with
--         those receipts (one batch delete per receive). Every connection thus
--         alternates receive and delete as a consumer would. The first empty receive
--         stops the run (the queue is drained): the rate is messages deleted over the
--         run's duration.
-- The RESULT line adds msgs (sent, or deleted: per-entry results that succeeded)
-- and entry_errors (per-entry errors in 200 answers) to ../shared/bench's fields.
local mode = os.getenv("Q_MODE") or "send"
local app = os.getenv("Q_APP") or "qbench"
local queue = os.getenv("Q_QUEUE") or "q"
local batch = tonumber(os.getenv("Q_BATCH") or "10")
local size = tonumber(os.getenv("Q_SIZE") or "128")
local visibility = os.getenv("Q_VISIBILITY") or "30s"
local token = os.getenv("NIMBUS_TOKEN") or ""
local base = "/v1/apps/" .. app .. "/queues/" .. queue .. "/messages"
local auth = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }

msgs, entry_errors, empties = 0, 0, 0
local pending = {}   -- delete bodies waiting for a connection
local send_req, one_req, recv_req

local threads = {}
setup = function(thread) table.insert(threads, thread) end

init = function(args)
  local body = string.rep("x", size)
  local entries = {}
  for i = 1, batch do entries[i] = '{"body":"' .. body .. '"}' end
  send_req = wrk.format("POST", base .. "/batch", auth, '{"entries":[' .. table.concat(entries, ",") .. ']}')
  one_req = wrk.format("POST", base, { ["Authorization"] = "Bearer " .. token }, body)
  recv_req = wrk.format("GET", base .. "?max=" .. batch .. "&wait=0s&visibility=" .. visibility, auth)
end

request = function()
  if mode == "send" then return send_req end
  if mode == "one" then return one_req end
  local del = table.remove(pending)
  if del then return del end
  return recv_req
end

response = function(status, headers, body)
  if status ~= 200 then return end
  if mode == "send" or mode == "one" then
    local _, ok = body:gsub('"message_id"', "")
    local _, bad = body:gsub('"error"', "")
    msgs, entry_errors = msgs + ok, entry_errors + bad
    return
  end
  if body:find('"messages"', 1, true) then
    local receipts = {}
    for r in body:gmatch('"receipt":"([^"]+)"') do table.insert(receipts, '"' .. r .. '"') end
    if #receipts == 0 then
      empties = empties + 1
      wrk.thread:stop()
      return
    end
    table.insert(pending, wrk.format("POST", base .. "/delete", auth,
      '{"receipts":[' .. table.concat(receipts, ",") .. ']}'))
  else
    local _, ok = body:gsub('"deleted":true', "")
    local _, bad = body:gsub('"error"', "")
    local _, stale = body:gsub('"deleted":false', "")
    msgs, entry_errors = msgs + ok, entry_errors + bad + stale
  end
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local m, ee = 0, 0
  for _, t in ipairs(threads) do m, ee = m + t:get("msgs"), ee + t:get("entry_errors") end
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f msgs=%d msgs_per_s=%.1f entry_errors=%d mean_us=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d sock_errors=%d non2xx=%d\n",
    summary.requests, secs, summary.requests / secs, m, m / secs, ee, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
