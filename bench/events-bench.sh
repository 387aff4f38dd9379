#!/usr/bin/env bash
# The event bus and topics beside their anchors, in one run (docs/benchmarks.md,
# "Event bus"):
#   put       wrk, CONNS connections, each POSTing batches of BATCH CloudEvents to
#             /v1/apps/APP/events, for apps with 100 and with 1,000 rules (each rule
#             `{ type = ["t.I"], data = { total = [{ numeric = [">", 100] }] } }` -> a
#             queue; the events cycle through the types, so every event matches one
#             rule and makes one delivery), DURATION s; then the time the dispatcher
#             takes to deliver what was put.
#   matcher   the same rule sets matched in-process by the indexed RuleSet and by the
#             naive matcher (every rule, every field): cargo run --example match-bench.
#   latency   publish -> function start: E2E_N messages, E2E_GAP_MS apart, to a topic
#             whose subscription is the event fixture (an async invocation); the
#             handler prints the time since the message's send.
#   fan-out   wrk publishes single messages to a topic with 10 queue subscriptions.
#   nats      nats-server (core, no JetStream): publish rate of NATS_N messages on one
#             connection (bench/nats-pub.py).
# Server on CPU0, clients on CPU1; rounds interleaved; medians of ROUNDS.
#
# Env: ROUNDS=3 DURATION=10 CONNS=16 BATCH=10 E2E_N=500 E2E_GAP_MS=5 NATS_N=1000000
#      OUT=<dir> NIMBUS=<binary> RESULTS=<tsv copy>
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
source "$SHARED/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
BATCH=${BATCH:-10}
E2E_N=${E2E_N:-500}
E2E_GAP_MS=${E2E_GAP_MS:-5}
NATS_N=${NATS_N:-1000000}
OUT=${OUT:-$WORK/results/nimbus-events-$(date +%Y%m%dT%H%M%S)}
NIMBUS=${NIMBUS:-$ROOT/target/release/nimbus}
FIXTURE=${FIXTURE:-$ROOT/test-programs/target/wasm32-wasip2/release/event_fixture.wasm}
RESULTS=${RESULTS:-$ROOT/docs/bench-results/events-$(date +%Y-%m-%d).tsv}
NATS_PORT=18340
mkdir -p "$OUT"
trap stop_all EXIT INT TERM
log() { echo "[events-bench $(date +%H:%M:%S)] $*" >&2; }

if [ -z "${NIMBUS_PREBUILT:-}" ]; then
  log "cargo build --release -p nimbus"
  (cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target cargo build -q --release -p nimbus)
fi
(cd "$ROOT/test-programs" && CARGO_TARGET_DIR=$ROOT/test-programs/target cargo build -q --release --target wasm32-wasip2 -p event-fixture)
(cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target cargo build -q --release -p nimbus-core --example match-bench)
MATCH_BENCH=$ROOT/target/release/examples/match-bench
for tool in "$WRK" curl "$NATS_SERVER"; do
  command -v "$tool" >/dev/null || { echo "missing $tool (run $SHARED/setup.sh)" >&2; exit 1; }
done
{ machine_info
  echo "nimbus: $("$NIMBUS" --version) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo "wrk: $($WRK --version 2>&1 | head -1); nats-server: $($NATS_SERVER --version)"
  echo "settings: ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS BATCH=$BATCH E2E_N=$E2E_N E2E_GAP_MS=$E2E_GAP_MS NATS_N=$NATS_N"
} | tee "$OUT/env.txt"
RAW="$OUT/raw.tsv"
echo -e "round\ttest\tpeer\tconns\tmetric\tvalue" >"$RAW"
put() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" | tee -a "$RAW" >&2; }
v() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }

# --- apps --------------------------------------------------------------------------
rules_app() { # NAME RULES
  mkdir -p "$OUT/$1"
  { echo -e "[app]\nname = \"$1\"\n\n[queues.q]\n"
    for i in $(seq 0 $(($2 - 1))); do
      echo "[bus.rules.r$i]"
      echo "pattern = { type = [\"t.$i\"], data = { total = [{ numeric = [\">\", 100] }] } }"
      echo 'targets = [{ queue = "q" }]'
    done
  } >"$OUT/$1/nimbus.toml"
}
rules_app r100 100
rules_app r1000 1000
mkdir -p "$OUT/topics"
{ echo -e "[app]\nname = \"topics\"\n\n[functions.handler]\nsource = \"$FIXTURE\"\nconcurrency = 16\n"
  for i in $(seq 0 9); do echo "[queues.s$i]"; done
  echo -e "\n[topics.fan]\nsubscriptions = ["
  for i in $(seq 0 9); do echo "  { queue = \"s$i\" },"; done
  echo -e "]\n\n[topics.lat]\nsubscriptions = [{ function = \"handler\" }]"
} >"$OUT/topics/nimbus.toml"

GW=18350 ADMIN=18351
SERVER_LOG="$OUT/nimbus.server.log"
NIMBUS_LOG=info start_server nimbus "$SERVER_LOG" "$NIMBUS" serve --listen "127.0.0.1:$GW" \
  --admin-listen "127.0.0.1:$ADMIN" --data-dir "$OUT/data"
PID=$LAST_PID
wait_tcp 127.0.0.1 "$ADMIN" 60
for app in r100 r1000 topics; do
  "$NIMBUS" deploy "$OUT/$app" --server "http://127.0.0.1:$ADMIN" --data-dir "$OUT/data" >"$OUT/$app.deploy.log" 2>&1
done
TOKEN=$(cat "$OUT/data/admin-token")
api() { curl -fsS -X "$1" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN/v1/apps/$2"; }

pending() { # APP: deliveries not yet made
  api GET "$1/bus/rules" | python3 -c '
import json, sys
print(sum(t["pending"] for r in json.load(sys.stdin)["rules"] for t in r["targets"]))'
}

put_events() { # ROUND APP RULES
  local t0 t1
  line=$(E_MODE=put E_PATH="/v1/apps/$2/events" E_BATCH=$BATCH E_TYPES=$3 NIMBUS_TOKEN=$TOKEN \
    on_client_cpu "$WRK" -t1 -c"$CONNS" -d"${DURATION}s" -s "$ROOT/bench/events-api.lua" \
    "http://127.0.0.1:$ADMIN" | grep '^RESULT')
  [ "$(v non2xx)" = 0 ] && [ "$(v errors)" = 0 ] || { echo "put errors: $line" >&2; exit 1; }
  put "$1" put_events "nimbus-$3-rules" "$CONNS" events_s "$(v ok_per_s)"
  put "$1" put_events "nimbus-$3-rules" "$CONNS" req_p50_us "$(v p50_us)"
  put "$1" put_events "nimbus-$3-rules" "$CONNS" req_p99_us "$(v p99_us)"
  put "$1" put_events "nimbus-$3-rules" "$CONNS" rss_mib "$(rss_mib "$PID")"
  # The dispatcher's backlog after the run, and how long it takes to drain.
  local backlog; backlog=$(pending "$2")
  t0=$(date +%s.%N)
  while [ "$(pending "$2")" != 0 ]; do sleep 0.5; done
  t1=$(date +%s.%N)
  put "$1" put_events "nimbus-$3-rules" "$CONNS" backlog_after "$backlog"
  put "$1" put_events "nimbus-$3-rules" "$CONNS" deliveries_s_draining \
    "$(python3 -c "print(f'{$backlog / max(0.001, $t1 - $t0):.0f}')")"
  api POST "$2/queues/q/purge" >/dev/null
}

matcher() { # ROUND RULES
  local m
  while read -r m; do
    line=$m
    put "$1" match "$(v matcher)-$2-rules" 1 events_s "$(v events_per_s)"
  done < <(on_client_cpu "$MATCH_BENCH" "$2" $(( $2 >= 1000 ? 50000 : 500000 )))
}

latency() { # ROUND
  local before n p50 p99
  before=$(grep -c 'queue-latency-us=' "$SERVER_LOG" || true)
  python3 - "$ADMIN" "$TOKEN" "$E2E_N" "$E2E_GAP_MS" <<'PY'
import http.client, sys, time
port, token, n, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) / 1000
conn = http.client.HTTPConnection("127.0.0.1", int(port))
for _ in range(n):
    conn.request("POST", "/v1/apps/topics/topics/lat/messages", body=f"t={time.time_ns()}",
                 headers={"Authorization": f"Bearer {token}"})
    r = conn.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"publish failed: {r.status}")
    time.sleep(gap)
PY
  sleep 2
  read -r n p50 p99 < <(grep -o 'queue-latency-us=[0-9]*' "$SERVER_LOG" | tail -n +"$((before + 1))" |
    cut -d= -f2 | python3 -c '
import sys
xs = sorted(int(x) for x in sys.stdin); n = len(xs)
print(n, xs[n // 2], xs[min(n - 1, n * 99 // 100)])')
  [ "$n" = "$E2E_N" ] || { echo "latency: $n of $E2E_N handler starts seen" >&2; exit 1; }
  put "$1" publish_to_handler nimbus 1 p50_us "$p50"
  put "$1" publish_to_handler nimbus 1 p99_us "$p99"
}

fanout() { # ROUND
  line=$(E_MODE=publish E_PATH="/v1/apps/topics/topics/fan/messages" NIMBUS_TOKEN=$TOKEN \
    on_client_cpu "$WRK" -t1 -c"$CONNS" -d"${DURATION}s" -s "$ROOT/bench/events-api.lua" \
    "http://127.0.0.1:$ADMIN" | grep '^RESULT')
  [ "$(v non2xx)" = 0 ] || { echo "publish errors: $line" >&2; exit 1; }
  put "$1" fanout_10 nimbus "$CONNS" publishes_s "$(v ok_per_s)"
  put "$1" fanout_10 nimbus "$CONNS" req_p50_us "$(v p50_us)"
  # Wait until every subscription queue got every message (the deliveries).
  local want t0; want=$(v ok); t0=$(date +%s.%N)
  while :; do
    local got; got=$(api GET "topics/queues/s9" | python3 -c 'import json,sys; print(json.load(sys.stdin)["visible"])')
    [ "$got" -ge "$want" ] && break
    sleep 0.5
  done
  put "$1" fanout_10 nimbus "$CONNS" drain_after_s "$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")"
  for i in $(seq 0 9); do api POST "topics/queues/s$i/purge" >/dev/null; done
}

nats() { # ROUND
  start_server nats-core "$OUT/nats.server.log" "$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT"
  local pid=$LAST_PID
  wait_tcp 127.0.0.1 "$NATS_PORT" 30
  line=$(on_client_cpu python3 "$ROOT/bench/nats-pub.py" "$NATS_PORT" "$NATS_N" 128)
  stop_pid "$pid"
  put "$1" publish nats-core 1 msgs_s "$(v msgs_per_s)"
}

for r in $(seq "$ROUNDS"); do
  log "round $r"
  put_events "$r" r100 100
  put_events "$r" r1000 1000
  matcher "$r" 100
  matcher "$r" 1000
  latency "$r"
  fanout "$r"
  nats "$r"
done

mkdir -p "$(dirname "$RESULTS")"
cp "$RAW" "$RESULTS"
python3 - "$RAW" <<'PY' | tee "$OUT/summary.md"
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]).read().splitlines()[1:]:
    r, test, peer, conns, metric, value = line.split("\t")
    rows[(test, peer, conns, metric)].append(float(value))
print("| test | peer | conns | metric | median [min–max] |\n|---|---|---|---|---|")
for (test, peer, conns, metric), xs in rows.items():
    print(f"| {test} | {peer} | {conns} | {metric} | {statistics.median(xs):,.0f} [{min(xs):,.0f}–{max(xs):,.0f}] |")
PY
log "raw results: $RAW (copied to $RESULTS)"
