#!/usr/bin/env bash
# Nimbus beside its peers on hello-world HTTP, in one run: interleaved rounds
# (round -> connections -> peer), medians, server pinned to CPU0 and wrk to CPU1.
# The peers and helpers come from ../shared/bench (run its setup.sh first):
#   native          hyper hello server: the physical limit
#   workerd         Cloudflare workerd, one JS fetch handler
#   wasmtime        `wasmtime serve -Scli`, a fresh instance per request
#   wasmtime-reuse  same with --max-instance-reuse-count 1000
#   nimbus          `nimbus serve`, the same component, warm instances reused (default)
#   nimbus-fresh    same with `reuse = false` (a fresh instance per request)
# Also measured: deploy -> first 200, restart (kill -9) -> first 200, and the
# per-request instantiation time (nimbus-fresh's cold-start median).
#
# Env: DURATION=10 ROUNDS=3 CONNS="1 16 64" WARMUP=2 PEERS="..." OUT=<dir>
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
source "$SHARED/lib.sh"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"1 16 64"}
WARMUP=${WARMUP:-2}
PEERS=${PEERS:-"native workerd wasmtime wasmtime-reuse nimbus nimbus-fresh"}
OUT=${OUT:-$WORK/results/nimbus-http-$(date +%Y%m%dT%H%M%S)}
NIMBUS=${NIMBUS:-$ROOT/target/release/nimbus}
if [ -e "$OUT/raw.tsv" ]; then echo "$OUT holds results already; pick another OUT" >&2; exit 1; fi
mkdir -p "$OUT"
trap stop_all EXIT INT TERM

if [ -z "${NIMBUS_PREBUILT:-}" ]; then
  (cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target cargo build -q --release -p nimbus)
fi
[ -f "$HELLO_WASM" ] || { echo "run $SHARED/setup.sh first (no $HELLO_WASM)" >&2; exit 1; }

port_of() {
  case $1 in
    native) echo 18090 ;; workerd) echo 18091 ;; wasmtime) echo 18092 ;;
    wasmtime-reuse) echo 18094 ;; nimbus) echo 18096 ;; nimbus-fresh) echo 18097 ;;
    *) echo "unknown peer $1" >&2; return 1 ;;
  esac
}

# A Nimbus app serving the shared hello component on GET /.
nimbus_app() { # DIR REUSE
  mkdir -p "$1"
  cat >"$1/nimbus.toml" <<TOML
[app]
name = "hello"

[functions.hello]
source = "$HELLO_WASM"
reuse = $2
concurrency = 1000

[[routes]]
method = "GET"
path = "/"
function = "hello"
TOML
}

start_nimbus() { # NAME REUSE
  local name=$1 port; port=$(port_of "$1")
  local data="$OUT/$name-data"
  rm -rf "$data"; mkdir -p "$data"
  nimbus_app "$OUT/$name-app" "$2"
  start_server "$name" "$OUT/$name.server.log" "$NIMBUS" serve --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$((port + 100))" --data-dir "$data"
  wait_tcp 127.0.0.1 "$((port + 100))" 60
  # deploy start -> first 200, and deploy returned -> first 200 (ms)
  python3 "$ROOT/bench/deploy-probe.py" "$port" / -- "$NIMBUS" deploy "$OUT/$name-app" \
    --server "http://127.0.0.1:$((port + 100))" --data-dir "$data" |
    awk -v n="$name" '{print n "\tdeploy_to_first_200_ms\t" $1 "\n" n "\tdeploy_returned_to_first_200_ms\t" $2}' \
    >>"$OUT/startup.tsv"
}

start_peer() { # NAME -> sets LAST_PID
  local name=$1 port; port=$(port_of "$1")
  local log="$OUT/$name.server.log"
  case $name in
    native)  start_server "$name" "$log" "$HELLO_NATIVE" "127.0.0.1:$port" ;;
    workerd) start_server "$name" "$log" "$WORKERD" serve "$PEERS_DIR/workerd/config.capnp" \
               --socket-addr "http=127.0.0.1:$port" ;;
    wasmtime) start_server "$name" "$log" "$WASMTIME" serve -Scli --addr "127.0.0.1:$port" "$HELLO_WASM" ;;
    wasmtime-reuse) start_server "$name" "$log" "$WASMTIME" serve -Scli --max-instance-reuse-count 1000 \
               --addr "127.0.0.1:$port" "$HELLO_WASM" ;;
    nimbus) start_nimbus nimbus true ;;
    nimbus-fresh) start_nimbus nimbus-fresh false ;;
  esac
}

{ machine_info
  echo "wrk: $($WRK --version 2>&1 | head -1)"
  [ -x "$WORKERD" ] && echo "workerd: $($WORKERD --version 2>&1)"
  [ -x "$WASMTIME" ] && echo "wasmtime: $($WASMTIME --version)"
  echo "nimbus: $("$NIMBUS" --version) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo "rustc: $(rustc --version)"
  echo "settings: DURATION=$DURATION ROUNDS=$ROUNDS CONNS=$CONNS WARMUP=$WARMUP PEERS=$PEERS"
} | tee "$OUT/env.txt"

: >"$OUT/startup.tsv"
declare -A PID
for p in $PEERS; do
  start_peer "$p"; PID[$p]=$LAST_PID
  wait_http "http://127.0.0.1:$(port_of "$p")/" 120 >/dev/null
  on_client_cpu "$WRK" -t1 -c16 -d"${WARMUP}s" "http://127.0.0.1:$(port_of "$p")/" >/dev/null
done

RAW="$OUT/raw.tsv"
echo -e "round\tpeer\tconns\trps\tmean_us\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\tsock_errors\tnon2xx\tserver_cpu_pct\trss_mib" >"$RAW"
HZ=$(getconf CLK_TCK)
v() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }
for r in $(seq "$ROUNDS"); do
  for c in $CONNS; do
    for p in $PEERS; do
      pid=${PID[$p]}
      t0=$(cpu_ticks "$pid"); s0=$(date +%s.%N)
      line=$(on_client_cpu "$WRK" -t1 -c"$c" -d"${DURATION}s" --timeout 5s -s "$PEERS_DIR/wrk-report.lua" \
               "http://127.0.0.1:$(port_of "$p")/" | grep '^RESULT')
      t1=$(cpu_ticks "$pid"); s1=$(date +%s.%N)
      cpu=$(python3 -c "print(f'{100*($t1-$t0)/$HZ/($s1-$s0):.0f}')")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$p" "$c" \
        "$(v rps)" "$(v mean_us)" "$(v p50_us)" "$(v p90_us)" "$(v p99_us)" "$(v p999_us)" "$(v max_us)" \
        "$(v sock_errors)" "$(v non2xx)" "$cpu" "$(rss_mib "$pid")" | tee -a "$RAW"
    done
  done
done

# Per-request instantiation: every request of nimbus-fresh is a cold start.
if [ -n "${PID[native]:-}" ]; then stop_pid "${PID[native]}"; fi
for p in $PEERS; do
  case $p in nimbus|nimbus-fresh)
    port=$(port_of "$p")
    "$NIMBUS" status --json --server "http://127.0.0.1:$((port + 100))" --data-dir "$OUT/$p-data" \
      >"$OUT/$p.status.json"
    python3 - "$p" "$OUT/$p.status.json" >>"$OUT/startup.tsv" <<'PY'
import json, sys
f = json.load(open(sys.argv[2]))["apps"][0]["functions"][0]
print(f"{sys.argv[1]}\tinstantiation_p50_ms\t{f['cold_start_p50_ms']}")
print(f"{sys.argv[1]}\tcold_starts\t{f['cold_starts']}")
PY
  esac
done

# Restart -> first 200 (kill -9, same data dir: compiled code comes from the cache),
# spawn to first 200 measured by an already-running probe polling every 0.5 ms.
for p in $PEERS; do
  case $p in nimbus|nimbus-fresh)
    port=$(port_of "$p")
    stop_pid "${PID[$p]}"
    for _ in 1 2 3 4 5; do
      ms=$(python3 "$PEERS_DIR/startup-probe.py" "$port" -- "${CLEAN_ENV[@]}" taskset -c "$SERVER_CPU" \
        "$NIMBUS" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 100))" \
        --data-dir "$OUT/$p-data")
      printf '%s\trestart_to_first_200_ms\t%s\n' "$p" "$ms" >>"$OUT/startup.tsv"
    done
  esac
done
# The same for the native hyper server, the floor.
for _ in 1 2 3 4 5; do
  ms=$(python3 "$PEERS_DIR/startup-probe.py" 18090 -- "${CLEAN_ENV[@]}" taskset -c "$SERVER_CPU" \
    "$HELLO_NATIVE" 127.0.0.1:18090)
  printf 'native\tstart_to_first_200_ms\t%s\n' "$ms" >>"$OUT/startup.tsv"
done

stop_all
cat "$OUT/startup.tsv"
python3 "$PEERS_DIR/summarize.py" "$RAW" --group peer,conns \
  --metrics rps,p50_us,p99_us,p999_us,server_cpu_pct,rss_mib | tee "$OUT/summary.md"
echo "raw results: $OUT"
