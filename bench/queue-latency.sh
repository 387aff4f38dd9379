#!/usr/bin/env bash
# Queue latencies and memory under a backlog, beside their peers, in one run (see
# docs/benchmarks.md, "Queues: latency and memory"):
#   send      one message per request (POST .../messages, SIZE bytes), wrk with 1 and
#             with CONNS keep-alive connections for DURATION s: rate and p50/p99.
#   e2e       send -> handler start at low load: E2E_N messages, one at a time,
#             E2E_GAP_MS apart (bench/queue-e2e.py), to a queue with a trigger on the
#             event fixture, which prints the time from each send to its handler's
#             start; p50/p99 over the printed figures.
#   backlog   the node's RSS while BACKLOG messages wait: wrk batch sends (10 per
#             request) in bursts until the queue holds BACKLOG, RSS after each burst,
#             then a receive of 10 at full depth (its latency) and RSS after IDLE_S s.
#   peers     NATS JetStream (file store, default sync and `sync_interval: always`):
#             jetstream-bench's one-at-a-time publish p50; redis LPUSH at -c 1 with
#             AOF `appendfsync always` and with AOF `appendfsync no` (p50 and p99).
# Server pinned to CPU0, clients to CPU1; rounds interleaved; medians of ROUNDS.
#
# Env: ROUNDS=3 DURATION=10 CONNS=16 SIZE=128 E2E_N=1000 E2E_GAP_MS=5 BACKLOG=1000000
#      IDLE_S=10 DURABILITY="power-loss crash" OUT=<dir> NIMBUS=<binary> RESULTS=<tsv copy>
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
source "$SHARED/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
SIZE=${SIZE:-128}
E2E_N=${E2E_N:-1000}
E2E_GAP_MS=${E2E_GAP_MS:-5}
BACKLOG=${BACKLOG:-1000000}
IDLE_S=${IDLE_S:-10}
DURABILITY=${DURABILITY:-power-loss crash}
OUT=${OUT:-$WORK/results/nimbus-queue-latency-$(date +%Y%m%dT%H%M%S)}
NIMBUS=${NIMBUS:-$ROOT/target/release/nimbus}
FIXTURE_TARGET=${FIXTURE_TARGET:-$ROOT/test-programs/target}
FIXTURE=${FIXTURE:-$FIXTURE_TARGET/wasm32-wasip2/release/event_fixture.wasm}
RESULTS=${RESULTS:-$ROOT/docs/bench-results/queue-latency-$(date +%Y-%m-%d).tsv}
NATS_PORT=18240 REDIS_PORT=18241
mkdir -p "$OUT"
trap stop_all EXIT INT TERM
log() { echo "[queue-latency $(date +%H:%M:%S)] $*" >&2; }

if [ -z "${NIMBUS_PREBUILT:-}" ]; then
  log "cargo build --release -p nimbus"
  (cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target cargo build -q --release -p nimbus)
fi
log "building the event fixture"
CARGO_TARGET_DIR=$FIXTURE_TARGET cargo build -q --release --target wasm32-wasip2 \
  --manifest-path "$ROOT/test-programs/Cargo.toml" -p event-fixture
for tool in "$WRK" redis-server redis-benchmark curl "$NATS_SERVER" "$JS_BENCH"; do
  command -v "$tool" >/dev/null || { echo "missing $tool (run $SHARED/setup.sh)" >&2; exit 1; }
done
{ machine_info
  echo "nimbus: $("$NIMBUS" --version) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo "wrk: $($WRK --version 2>&1 | head -1); redis: $(redis-server --version); nats-server: $($NATS_SERVER --version)"
  echo "settings: ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS SIZE=$SIZE E2E_N=$E2E_N E2E_GAP_MS=$E2E_GAP_MS BACKLOG=$BACKLOG"
} | tee "$OUT/env.txt"

RAW="$OUT/raw.tsv"
echo -e "round\ttest\tpeer\tconns\tmetric\tvalue" >"$RAW"
put() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" | tee -a "$RAW" >&2; }
v() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }

# --- the nimbus nodes, one per durability ------------------------------------------
APP="$OUT/app"; mkdir -p "$APP"
cat >"$APP/nimbus.toml" <<TOML
[app]
name = "qlat"

[functions.handler]
source = "$FIXTURE"
concurrency = 16

[queues.q]
[queues.lat]
[queues.backlog]

[[triggers]]
queue = "lat"
function = "handler"
TOML
declare -A PID_OF ADMIN_OF TOKEN_OF LOG_OF
port=18250
for d in $DURABILITY; do
  dir="$OUT/$d-data"; mkdir -p "$dir"
  gw=$port admin=$((port + 1)); port=$((port + 2))
  LOG_OF[$d]="$OUT/$d.server.log"
  NIMBUS_LOG=info start_server "nimbus-$d" "${LOG_OF[$d]}" "$NIMBUS" serve --listen "127.0.0.1:$gw" \
    --admin-listen "127.0.0.1:$admin" --data-dir "$dir" --durability "$d"
  PID_OF[$d]=$LAST_PID ADMIN_OF[$d]=$admin
  wait_tcp 127.0.0.1 "$admin" 60
  "$NIMBUS" deploy "$APP" --server "http://127.0.0.1:$admin" --data-dir "$dir" >"$OUT/$d.deploy.log" 2>&1
  TOKEN_OF[$d]=$(cat "$dir/admin-token")
done
api() { # DURABILITY METHOD PATH
  curl -fsS -X "$2" -H "Authorization: Bearer ${TOKEN_OF[$1]}" "http://127.0.0.1:${ADMIN_OF[$1]}/v1/apps/qlat/$3"
}

send_latency() { # ROUND DURABILITY CONNS
  line=$(Q_MODE=one Q_APP=qlat Q_QUEUE=q Q_SIZE=$SIZE NIMBUS_TOKEN=${TOKEN_OF[$2]} \
    on_client_cpu "$WRK" -t1 -c"$3" -d"${DURATION}s" -s "$ROOT/bench/queue-api.lua" \
    "http://127.0.0.1:${ADMIN_OF[$2]}" | grep '^RESULT')
  [ "$(v non2xx)" = 0 ] && [ "$(v entry_errors)" = 0 ] || { echo "send errors: $line" >&2; exit 1; }
  put "$1" send_one "nimbus-$2" "$3" msgs_s "$(v msgs_per_s)"
  put "$1" send_one "nimbus-$2" "$3" p50_us "$(v p50_us)"
  put "$1" send_one "nimbus-$2" "$3" p99_us "$(v p99_us)"
  api "$2" POST queues/q/purge >/dev/null
}

e2e_latency() { # ROUND DURABILITY
  local before; before=$(grep -c 'queue-latency-us=' "${LOG_OF[$2]}" || true)
  line=$(on_client_cpu python3 "$ROOT/bench/queue-e2e.py" "${ADMIN_OF[$2]}" "${TOKEN_OF[$2]}" \
    qlat lat "$E2E_N" "$E2E_GAP_MS")
  sleep 1
  local stats
  stats=$(grep -o 'queue-latency-us=[0-9]*' "${LOG_OF[$2]}" | tail -n +"$((before + 1))" | cut -d= -f2 |
    python3 -c '
import sys
xs = sorted(int(x) for x in sys.stdin)
n = len(xs)
print(n, xs[n // 2], xs[min(n - 1, n * 99 // 100)])')
  read -r n p50 p99 <<<"$stats"
  [ "$n" = "$E2E_N" ] || { echo "e2e: $n of $E2E_N handler starts seen" >&2; exit 1; }
  put "$1" send_to_handler "nimbus-$2" 1 p50_us "$p50"
  put "$1" send_to_handler "nimbus-$2" 1 p99_us "$p99"
  put "$1" send_to_handler "nimbus-$2" 1 send_p50_us "$(v send_p50_us)"
}

backlog() { # DURABILITY (once, after the rounds)
  local d=$1 pid=${PID_OF[$1]} depth=0 burst=0
  put 0 backlog "nimbus-$d" 0 "rss_mib_at_depth_0" "$(rss_mib "$pid")"
  while [ "$depth" -lt "$BACKLOG" ] && [ "$burst" -lt 60 ]; do
    Q_MODE=send Q_APP=qlat Q_QUEUE=backlog Q_BATCH=10 Q_SIZE=$SIZE NIMBUS_TOKEN=${TOKEN_OF[$d]} \
      on_client_cpu "$WRK" -t1 -c"$CONNS" -d5s -s "$ROOT/bench/queue-api.lua" \
      "http://127.0.0.1:${ADMIN_OF[$d]}" >/dev/null
    depth=$(api "$d" GET queues/backlog | python3 -c 'import json, sys; print(json.load(sys.stdin)["visible"])')
    burst=$((burst + 1))
    put 0 backlog "nimbus-$d" 0 "rss_mib_at_depth_$depth" "$(rss_mib "$pid")"
  done
  # Receives of 10 at full depth, each timed by curl itself (median of 20).
  local i
  put 0 backlog "nimbus-$d" 0 receive10_at_depth_us "$(for i in $(seq 20); do
      curl -fsS -H "Authorization: Bearer ${TOKEN_OF[$d]}" -w '%{time_total}\n' -o /dev/null \
        "http://127.0.0.1:${ADMIN_OF[$d]}/v1/apps/qlat/queues/backlog/messages?max=10&visibility=30s"
    done | sort -n | awk '{t[NR] = $1} END {printf "%d", t[int((NR + 1) / 2)] * 1e6}')"
  sleep "$IDLE_S"
  put 0 backlog "nimbus-$d" 0 "rss_mib_idle_at_depth_$depth" "$(rss_mib "$pid")"
  put 0 backlog "nimbus-$d" 0 idle_cpu_ticks_per_s "$(a=$(cpu_ticks "$pid"); sleep 5; echo $((($(cpu_ticks "$pid") - a) / 5)))"
}

# --- peers -----------------------------------------------------------------------------
nats_sync() { # ROUND NAME [SYNC]
  local dir="$OUT/nats-data" conf="$OUT/nats.conf"
  rm -rf "$dir"; mkdir -p "$dir"
  { echo "listen: 127.0.0.1:$NATS_PORT"
    echo "jetstream { store_dir: \"$dir\"${3:+, sync_interval: $3} }"; } >"$conf"
  start_server "$2" "$OUT/$2.server.log" "$NATS_SERVER" -c "$conf"
  local pid=$LAST_PID
  wait_tcp 127.0.0.1 "$NATS_PORT" 30
  on_client_cpu "$JS_BENCH" "127.0.0.1:$NATS_PORT" 1000 "$SIZE" 256 2000 >"$OUT/$2.r$1.txt"
  stop_pid "$pid"; rm -rf "$dir"
  line=$(grep "phase=sync_publish " "$OUT/$2.r$1.txt")
  put "$1" send_one "$2" 1 msgs_s "$(v msgs_per_s)"
  put "$1" send_one "$2" 1 p50_us "$(v p50_us)"
}

redis_one() { # ROUND NAME ARGS...
  local r=$1 name=$2 dir="$OUT/redis-data" csv; shift 2
  rm -rf "$dir"; mkdir -p "$dir"
  start_server "$name" "$OUT/$name.server.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --dir "$dir" --save '' "$@"
  local pid=$LAST_PID
  wait_tcp 127.0.0.1 "$REDIS_PORT" 30
  csv=$(on_client_cpu redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t lpush -c 1 -d "$SIZE" -n 50000 --csv)
  stop_pid "$pid"; rm -rf "$dir"
  read -r rps p50 p99 < <(echo "$csv" | python3 -c '
import csv, sys
r = next(csv.DictReader(sys.stdin))
print(r["rps"], float(r["p50_latency_ms"]) * 1000, float(r["p99_latency_ms"]) * 1000)')
  put "$r" send_one "$name" 1 msgs_s "$rps"
  put "$r" send_one "$name" 1 p50_us "$p50"
  put "$r" send_one "$name" 1 p99_us "$p99"
}

for r in $(seq "$ROUNDS"); do
  log "round $r"
  for d in $DURABILITY; do
    send_latency "$r" "$d" 1
    send_latency "$r" "$d" "$CONNS"
    e2e_latency "$r" "$d"
  done
  nats_sync "$r" nats-js-default
  nats_sync "$r" nats-js-always always
  redis_one "$r" redis-aof-always --appendonly yes --appendfsync always
  redis_one "$r" redis-aof-no --appendonly yes --appendfsync no
done
for d in $DURABILITY; do backlog "$d"; done

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
