#!/usr/bin/env bash
# Queues beside their peers, in one run (see docs/benchmarks.md, "Queues"):
#   nimbus        one node with the default durability (power loss: fsync per commit
#                 group) and one with `--durability crash`, each with an app holding
#                 queues and the data fixture. Per node and round:
#                 api-send   wrk, CONNS connections, each POSTing batches of BATCH
#                            messages of SIZE bytes to .../messages/batch (DURATION s);
#                 api-recv   wrk, CONNS connections, each alternating a receive of BATCH
#                            (wait 0) and one batch delete of its receipts, until the
#                            queue (filled by api-send) is empty or DURATION s;
#                 fn-send / fn-recv   the fixture's /queues/bench op: host calls in a
#                            loop in the guest (send: one message per call; recv:
#                            receive BATCH, delete each), FN_CONC concurrent requests of
#                            FN_N messages each, and one request of FN_N1 (sequential).
#   nats          nats-server -js, file store, fresh per round: ../shared/bench's
#                 jetstream-bench (work-queue stream, SIZE-byte messages, async publish
#                 with JS_WINDOW in flight, one durable pull consumer acking each
#                 message); with the default sync (flush to the OS per write, fsync every
#                 2 min) and with `sync_interval: always` (fsync per write).
#   redis         redis-benchmark -t lpush,rpop -c CONNS -P BATCH -d SIZE (a pipeline of
#                 BATCH commands per client ~ a batch of BATCH messages), with AOF
#                 `appendfsync always` (the durable peer), AOF `appendfsync no` (crash
#                 parity) and no persistence.
# Server pinned to CPU0, load generators to CPU1, rounds interleaved, and each part
# waits for the machine to be idle (the cores are shared with builds); a measurement
# during which other processes took more than OTHER_MAX % of a core is repeated.
#
# Env: ROUNDS=3 DURATION=10 CONNS=16 BATCH=10 SIZE=128 FN_CONC=16 FN_N=2000 FN_N1=2000
#      IDLE_MAX=15 (% of both cores busy that counts as idle)
#      JS_MSGS=200000 JS_ALWAYS_MSGS=20000 (sync_interval always: ~4k/s) JS_SYNC_MSGS=2000 JS_WINDOW=256 REDIS_N=1000000
#      REDIS_AOF_N=300000 OTHER_MAX=20 RETRIES=3 IDLE_WAIT=600 NODES="nimbus nimbus-crash"
#      PERF=1 (perf record the power-loss node during one extra api-send run)
#      OUT=<dir> NIMBUS=<binary> NIMBUS_COMMIT=<its commit> FIXTURE=<data_fixture.wasm>
#      FIXTURE_TARGET=<cargo target dir for the fixture> RESULTS=<tsv copy>
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
source "$SHARED/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
BATCH=${BATCH:-10}
SIZE=${SIZE:-128}
FN_CONC=${FN_CONC:-16}
FN_N=${FN_N:-2000}
FN_N1=${FN_N1:-2000}
JS_MSGS=${JS_MSGS:-200000}
JS_SYNC_MSGS=${JS_SYNC_MSGS:-2000}
JS_WINDOW=${JS_WINDOW:-256}
JS_ALWAYS_MSGS=${JS_ALWAYS_MSGS:-20000}
REDIS_N=${REDIS_N:-1000000}
REDIS_AOF_N=${REDIS_AOF_N:-300000}
OTHER_MAX=${OTHER_MAX:-20}
RETRIES=${RETRIES:-3}
IDLE_WAIT=${IDLE_WAIT:-600}
IDLE_MAX=${IDLE_MAX:-15}
NODES=${NODES:-nimbus nimbus-crash}
PERF=${PERF:-1}
OUT=${OUT:-$WORK/results/nimbus-queue-$(date +%Y%m%dT%H%M%S)}
NIMBUS=${NIMBUS:-$ROOT/target/release/nimbus}
FIXTURE_TARGET=${FIXTURE_TARGET:-$ROOT/test-programs/target}
FIXTURE=${FIXTURE:-$FIXTURE_TARGET/wasm32-wasip2/release/data_fixture.wasm}
RESULTS=${RESULTS:-$ROOT/docs/bench-results/queue-$(date +%Y-%m-%d).tsv}
NATS_PORT=18140 REDIS_PORT=18141
if [ -e "$OUT/raw.tsv" ]; then echo "$OUT holds results already; pick another OUT" >&2; exit 1; fi
mkdir -p "$OUT"
trap stop_all EXIT INT TERM
log() { echo "[queue-bench $(date +%H:%M:%S)] $*" >&2; }

if [ -z "${NIMBUS_PREBUILT:-}" ]; then
  log "cargo build --release -p nimbus"
  (cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target cargo build -q --release -p nimbus)
fi
if [ -z "${FIXTURE_PREBUILT:-}" ]; then
  log "building the data fixture"
  CARGO_TARGET_DIR=$FIXTURE_TARGET cargo build -q --release --target wasm32-wasip2 \
    --manifest-path "$ROOT/test-programs/Cargo.toml" -p data-fixture
fi
for tool in "$WRK" redis-server redis-benchmark curl "$NATS_SERVER" "$JS_BENCH"; do
  command -v "$tool" >/dev/null || { echo "missing $tool (run $SHARED/setup.sh)" >&2; exit 1; }
done

{ machine_info
  echo "wrk: $($WRK --version 2>&1 | head -1)"
  echo "redis: $(redis-server --version)"
  echo "nats-server: $($NATS_SERVER --version)"
  echo "jetstream-bench: $JS_BENCH"
  echo "nimbus: $("$NIMBUS" --version) (${NIMBUS_COMMIT:-$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)})"
  echo "nimbus binary: $NIMBUS"
  echo "fixture: $FIXTURE"
  echo "rustc: $(rustc --version)"
  echo "disk: $(df -h "$OUT" | awk 'NR==2 {print $1, $2}') ($(findmnt -no FSTYPE -T "$OUT"))"
  echo "settings: ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS BATCH=$BATCH SIZE=$SIZE" \
    "FN_CONC=$FN_CONC FN_N=$FN_N FN_N1=$FN_N1 JS_MSGS=$JS_MSGS JS_ALWAYS_MSGS=$JS_ALWAYS_MSGS JS_SYNC_MSGS=$JS_SYNC_MSGS" \
    "JS_WINDOW=$JS_WINDOW REDIS_N=$REDIS_N REDIS_AOF_N=$REDIS_AOF_N OTHER_MAX=$OTHER_MAX" \
    "RETRIES=$RETRIES IDLE_WAIT=$IDLE_WAIT IDLE_MAX=$IDLE_MAX NODES=$NODES"
} | tee "$OUT/env.txt"

RAW="$OUT/raw.tsv"
echo -e "round\ttest\tpeer\tconns\tmetric\tvalue" >"$RAW"
put() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" | tee -a "$RAW" >&2; } # round test peer conns metric value
HZ=$(getconf CLK_TCK)

# --- idle wait and disturbance guard (as in bench/data-bench.sh) -------------------
# IDLE_MAX: the busy share of the whole machine (both cores) that counts as idle.
wait_idle() {
  python3 - "$IDLE_WAIT" "$IDLE_MAX" <<'PY' | tee -a "$OUT/load.log" >&2
import sys, time
limit, idle_max = float(sys.argv[1]), float(sys.argv[2])
def busy():
    def snap():
        v = list(map(int, open("/proc/stat").readline().split()[1:]))
        return sum(v), v[3] + v[4]
    (t0, i0), _ = snap(), time.sleep(2)
    t1, i1 = snap()
    return 100 * (1 - (i1 - i0) / max(1, t1 - t0))
t = time.time()
while True:
    b = busy()
    if b < idle_max or time.time() - t > limit:
        print(f"{time.strftime('%T')} cpu busy {b:.0f}% after waiting {time.time() - t:.0f}s")
        break
PY
}
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4}' /proc/stat; }
child_ticks() { # sets CHILD_TICKS (this shell's waited-for children); not in $(...)
  times >"$OUT/times.txt"
  CHILD_TICKS=$(awk -v hz="$HZ" 'NR == 2 { t = 0
    for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%d", t * hz }' "$OUT/times.txt")
}
probe_start() { # SERVER_PID
  child_ticks; P_C0=$CHILD_TICKS; P_B0=$(busy_ticks); P_S0=$(cpu_ticks "$1"); P_T0=$(date +%s.%N)
}
probe_end() { # SERVER_PID; sets SERVER_PCT, CLIENT_PCT (the load generator) and OTHER_PCT
  local t1 s1 b1
  t1=$(date +%s.%N); s1=$(cpu_ticks "$1"); b1=$(busy_ticks); child_ticks
  read -r SERVER_PCT CLIENT_PCT OTHER_PCT < <(python3 -c "
d = ($t1 - $P_T0) * $HZ / 100
s, c = $s1 - $P_S0, $CHILD_TICKS - $P_C0
print(f'{s / d:.0f}', f'{c / d:.0f}', f'{max(0, ($b1 - $P_B0) - s - c) / d:.0f}')")
}
retry_if_disturbed() { # LABEL ATTEMPT
  [ "$OTHER_PCT" -gt "$OTHER_MAX" ] && [ "$2" -lt "$RETRIES" ] || return 1
  log "$1: other processes took $OTHER_PCT% of a core; repeating"
  echo "$(date +%T) $1 attempt $2 discarded: other_cpu_pct $OTHER_PCT" >>"$OUT/load.log"
  wait_idle
}
v() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }

# --- the nimbus nodes ------------------------------------------------------------------
APP="$OUT/app"
mkdir -p "$APP"
cat >"$APP/nimbus.toml" <<TOML
[app]
name = "qbench"

[functions.api]
source = "$FIXTURE"
timeout = "300s"
concurrency = 1000
uses = ["queue:q", "queue:f"]

[[routes]]
path = "/{*path}"
function = "api"

[queues.q]

[queues.f]
TOML

declare -A PID_OF GW_OF ADMIN_OF TOKEN_OF
port=18150
for node in $NODES; do
  dir="$OUT/$node-data"; mkdir -p "$dir"
  gw=$port admin=$((port + 1)); port=$((port + 2))
  args=(); [ "$node" = nimbus-crash ] && args=(--durability crash)
  start_server "$node" "$OUT/$node.server.log" "$NIMBUS" serve --listen "127.0.0.1:$gw" \
    --admin-listen "127.0.0.1:$admin" --data-dir "$dir" "${args[@]}"
  PID_OF[$node]=$LAST_PID GW_OF[$node]=$gw ADMIN_OF[$node]=$admin
  wait_tcp 127.0.0.1 "$admin" 60
  "$NIMBUS" deploy "$APP" --server "http://127.0.0.1:$admin" --data-dir "$dir" >"$OUT/$node.deploy.log" 2>&1
  TOKEN_OF[$node]=$(cat "$dir/admin-token")
  wait_http "http://127.0.0.1:$gw/queues/bench?queue=f&op=send&n=1" 30 >/dev/null
  curl -fsS "http://127.0.0.1:$gw/queues/bench?queue=f&op=recv&n=10" >/dev/null
  echo "rss_mib at start: $node $(rss_mib "$LAST_PID")" >>"$OUT/env.txt"
done

qstats() { # NODE QUEUE
  curl -fsS -H "Authorization: Bearer ${TOKEN_OF[$1]}" \
    "http://127.0.0.1:${ADMIN_OF[$1]}/v1/apps/qbench/queues/$2"
}

wrk_q() { # ROUND NODE MODE(send|recv)
  local r=$1 node=$2 mode=$3 pid=${PID_OF[$2]} attempt=0
  while :; do
    probe_start "$pid"
    line=$(Q_MODE=$mode Q_BATCH=$BATCH Q_SIZE=$SIZE NIMBUS_TOKEN=${TOKEN_OF[$node]} \
      on_client_cpu "$WRK" -t1 -c"$CONNS" -d"${DURATION}s" --timeout 10s \
      -s "$ROOT/bench/queue-api.lua" "http://127.0.0.1:${ADMIN_OF[$node]}/" | grep '^RESULT')
    probe_end "$pid"
    echo "$node api-$mode r$r a$attempt other=$OTHER_PCT $line" >>"$OUT/runs.log"
    [ "$(v non2xx)" = 0 ] && [ "$(v sock_errors)" = 0 ] && [ "$(v entry_errors)" = 0 ] ||
      { echo "wrk errors: $line" >&2; exit 1; }
    attempt=$((attempt + 1))
    # A repeated recv finds the queue as the discarded run left it: refill it.
    if retry_if_disturbed "$node api-$mode" "$attempt"; then
      [ "$mode" = recv ] && wrk_fill "$node"
      continue
    fi
    break
  done
  put "$r" "api_$mode" "$node" "$CONNS" msgs_s "$(v msgs_per_s)"
  put "$r" "api_$mode" "$node" "$CONNS" msgs "$(v msgs)"
  put "$r" "api_$mode" "$node" "$CONNS" duration_s "$(v duration_s)"
  put "$r" "api_$mode" "$node" "$CONNS" req_p50_us "$(v p50_us)"
  put "$r" "api_$mode" "$node" "$CONNS" req_p99_us "$(v p99_us)"
  put "$r" "api_$mode" "$node" "$CONNS" server_cpu_pct "$SERVER_PCT"
  put "$r" "api_$mode" "$node" "$CONNS" client_cpu_pct "$CLIENT_PCT"
  put "$r" "api_$mode" "$node" "$CONNS" other_cpu_pct "$OTHER_PCT"
  put "$r" "api_$mode" "$node" "$CONNS" rss_mib "$(rss_mib "$pid")"
}
wrk_fill() { # NODE: an unmeasured send run, so that a repeated recv has messages
  Q_MODE=send Q_BATCH=$BATCH Q_SIZE=$SIZE NIMBUS_TOKEN=${TOKEN_OF[$1]} on_client_cpu "$WRK" -t1 \
    -c"$CONNS" -d"${DURATION}s" -s "$ROOT/bench/queue-api.lua" "http://127.0.0.1:${ADMIN_OF[$1]}/" >/dev/null
}

fn_q() { # ROUND NODE OP CONCURRENCY N
  local r=$1 node=$2 op=$3 conc=$4 n=$5 pid=${PID_OF[$2]} attempt=0
  while :; do
    if [ "$op" = recv ] && [ "$attempt" -gt 0 ]; then # refill after a discarded run
      on_client_cpu python3 "$ROOT/bench/queue-fn.py" "${GW_OF[$node]}" f send $((conc * n / 4 + 1)) 4 >/dev/null
    fi
    probe_start "$pid"
    line=$(on_client_cpu python3 "$ROOT/bench/queue-fn.py" "${GW_OF[$node]}" f "$op" "$n" "$conc" "$BATCH")
    probe_end "$pid"
    echo "$node fn-$op c=$conc r$r a$attempt other=$OTHER_PCT $line" >>"$OUT/runs.log"
    attempt=$((attempt + 1)); retry_if_disturbed "$node fn-$op c$conc" "$attempt" || break
  done
  [ "$(v msgs)" = $((conc * n)) ] || { echo "fn-$op moved $(v msgs) of $((conc * n)) messages" >&2; exit 1; }
  put "$r" "fn_$op" "$node" "$conc" msgs_s "$(v msgs_per_s)"
  put "$r" "fn_$op" "$node" "$conc" guest_msgs_s_sum "$(v guest_msgs_per_s_sum)"
  put "$r" "fn_$op" "$node" "$conc" server_cpu_pct "$SERVER_PCT"
  put "$r" "fn_$op" "$node" "$conc" other_cpu_pct "$OTHER_PCT"
}

# --- peers -----------------------------------------------------------------------------
run_nats() { # ROUND NAME MSGS [SYNC]: a fresh file store each time
  local r=$1 name=$2 msgs=$3 dir="$OUT/nats-data" conf="$OUT/nats.conf" attempt=0; shift
  while :; do
    rm -rf "$dir"; mkdir -p "$dir"
    { echo "listen: 127.0.0.1:$NATS_PORT"
      echo "jetstream { store_dir: \"$dir\"${3:+, sync_interval: $3} }"; } >"$conf"
    start_server "$name" "$OUT/$name.server.log" "$NATS_SERVER" -c "$conf"
    local pid=$LAST_PID
    wait_tcp 127.0.0.1 "$NATS_PORT" 30
    probe_start "$pid"
    on_client_cpu "$JS_BENCH" "127.0.0.1:$NATS_PORT" "$msgs" "$SIZE" "$JS_WINDOW" "$JS_SYNC_MSGS" \
      >"$OUT/$name.r$r.txt"
    probe_end "$pid"
    stop_pid "$pid"
    attempt=$((attempt + 1)); retry_if_disturbed "$name" "$attempt" || break
  done
  rm -rf "$dir"
  grep -q 'remaining_msgs=0' "$OUT/$name.r$r.txt" || { echo "$name: queue not drained" >&2; exit 1; }
  local phase test
  for phase in async_publish consume_ack sync_publish; do
    line=$(grep "phase=$phase " "$OUT/$name.r$r.txt")
    case $phase in async_publish) test=send ;; consume_ack) test=recv ;; *) test=send_sync ;; esac
    put "$r" "$test" "$name" 1 msgs_s "$(v msgs_per_s)"
    [ "$phase" = sync_publish ] && put "$r" "$test" "$name" 1 p50_us "$(v p50_us)"
  done
  # One CPU figure for the whole jetstream-bench run (all phases).
  put "$r" send "$name" 1 server_cpu_pct "$SERVER_PCT"
  put "$r" send "$name" 1 other_cpu_pct "$OTHER_PCT"
}

run_redis() { # ROUND NAME N ARGS...
  local r=$1 name=$2 n=$3 dir="$OUT/redis-data" attempt=0 csv; shift 3
  while :; do
    rm -rf "$dir"; mkdir -p "$dir"
    start_server "$name" "$OUT/$name.server.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
      --dir "$dir" --save '' "$@"
    local pid=$LAST_PID
    wait_tcp 127.0.0.1 "$REDIS_PORT" 30
    probe_start "$pid"
    csv=$(on_client_cpu redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t lpush,rpop -c "$CONNS" \
      -P "$BATCH" -d "$SIZE" -n "$n" --csv)
    probe_end "$pid"
    stop_pid "$pid"
    echo "$csv" >>"$OUT/$name.bench.csv"
    attempt=$((attempt + 1)); retry_if_disturbed "$name" "$attempt" || break
  done
  rm -rf "$dir"
  local cpu=$SERVER_PCT
  echo "$csv" | python3 -c '
import csv, sys
for r in csv.DictReader(sys.stdin):
    print({"LPUSH": "send", "RPOP": "recv"}[r["test"]], r["rps"])' |
  while read -r test rps; do
    put "$r" "$test" "$name" "$CONNS" msgs_s "$rps"
    put "$r" "$test" "$name" "$CONNS" server_cpu_pct "$cpu"
    put "$r" "$test" "$name" "$CONNS" other_cpu_pct "$OTHER_PCT"
  done
}

# --- rounds ----------------------------------------------------------------------------
log "warm-up"
for node in $NODES; do
  DURATION=2 wrk_fill "$node"
  Q_MODE=recv Q_BATCH=$BATCH NIMBUS_TOKEN=${TOKEN_OF[$node]} on_client_cpu "$WRK" -t1 -c"$CONNS" -d20s \
    -s "$ROOT/bench/queue-api.lua" "http://127.0.0.1:${ADMIN_OF[$node]}/" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  wait_idle
  log "round $r"
  { echo "round $r $(date +%T) loadavg $(cat /proc/loadavg)"; top -bn1 -w 120 | sed -n 3p\;8,13p; } >>"$OUT/load.log"
  for node in $NODES; do
    wrk_q "$r" "$node" send
    echo "$node r$r after send: $(qstats "$node" q)" >>"$OUT/runs.log"
    wrk_q "$r" "$node" recv
    echo "$node r$r after recv: $(qstats "$node" q)" >>"$OUT/runs.log"
    # Each round's api-send starts from an empty queue (api-recv drains less than
    # api-send fills in the same time).
    curl -fsS -X POST -H "Authorization: Bearer ${TOKEN_OF[$node]}" \
      "http://127.0.0.1:${ADMIN_OF[$node]}/v1/apps/qbench/queues/q/purge" >>"$OUT/runs.log"; echo >>"$OUT/runs.log"
    fn_q "$r" "$node" send "$FN_CONC" "$FN_N"
    fn_q "$r" "$node" recv "$FN_CONC" "$FN_N"
    fn_q "$r" "$node" send 1 "$FN_N1"
    fn_q "$r" "$node" recv 1 "$FN_N1"
    echo "$node r$r after fn: $(qstats "$node" f)" >>"$OUT/runs.log"
  done
  run_nats "$r" nats-js-file "$JS_MSGS"
  run_nats "$r" nats-js-file-sync-always "$JS_ALWAYS_MSGS" always
  run_redis "$r" redis-aof-always "$REDIS_AOF_N" --appendonly yes --appendfsync always
  run_redis "$r" redis-aof-no "$REDIS_N" --appendonly yes --appendfsync no
  run_redis "$r" redis "$REDIS_N" --appendonly no
done
for node in $NODES; do echo "rss_mib at the end: $node $(rss_mib "${PID_OF[$node]}")" >>"$OUT/env.txt"; done

# --- a profile of the power-loss node under api-send (not a measurement) ---------------
if [ "$PERF" = 1 ] && command -v perf >/dev/null && [[ " $NODES " == *" nimbus "* ]]; then
  wait_idle
  log "perf record of nimbus under api-send"
  Q_MODE=send Q_BATCH=$BATCH Q_SIZE=$SIZE NIMBUS_TOKEN=${TOKEN_OF[nimbus]} on_client_cpu "$WRK" -t1 \
    -c"$CONNS" -d12s -s "$ROOT/bench/queue-api.lua" "http://127.0.0.1:${ADMIN_OF[nimbus]}/" >"$OUT/perf-wrk.txt" &
  wrk_pid=$!
  sleep 1
  perf record -F 1999 -g -p "${PID_OF[nimbus]}" -o "$OUT/perf.data" -- sleep 8 2>"$OUT/perf-record.log" || true
  strace_pid=
  if command -v strace >/dev/null; then
    strace -c -f -p "${PID_OF[nimbus]}" -o "$OUT/strace-send.txt" & strace_pid=$!
  fi
  wait "$wrk_pid" || true
  if [ -n "$strace_pid" ]; then kill -INT "$strace_pid" 2>/dev/null || true; wait "$strace_pid" 2>/dev/null || true; fi
  perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -60 >"$OUT/perf-self.txt" || true
  perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -80 >"$OUT/perf-children.txt" || true
fi

stop_all
mkdir -p "$(dirname "$RESULTS")"
cp "$RAW" "$RESULTS"
python3 "$ROOT/bench/queue-summary.py" "$RAW" | tee "$OUT/summary.md"
echo "raw results: $OUT (copied to $RESULTS)"
