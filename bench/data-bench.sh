#!/usr/bin/env bash
# The data layer beside its peers, in one run (see docs/benchmarks.md, "Data layer"):
#   kv        host calls from inside a function (N calls in one request, timed in the
#             guest: the fixture's /kv/bench op), the data API over HTTP with wrk
#             (GET of random seeded keys, PUT of a new key per request), a GET through
#             the fixture function on the gateway; redis-server + redis-benchmark at
#             the same concurrency, without persistence and with AOF `appendfsync
#             always` (Nimbus fsyncs every acknowledged write). A second node on a
#             copy of the seeded data dir runs with `--durability crash` (no fsync per
#             commit; peer names nimbus-crash-*): API GET and SET and the host-call
#             set, against redis with AOF `appendfsync no` (acknowledged writes reach
#             the OS before the reply, as in crash mode) and without persistence.
#             Each node's RSS after each API run (and growth per SET) is recorded.
#             Rounds interleaved.
#   docs      1 M documents seeded straight into SQLite (the node stopped), then
#             sequential queries over the API (one keep-alive connection) on an
#             indexed field, the same filter on an unindexed field, and an unindexed
#             filter matching nothing (a full scan); `explain` of each.
#   objects   a 256 MiB object PUT and GET with curl vs `cp` + `sync` of the same file
#             on the same filesystem, and `cat` of it (page cache warm for both).
# Server (nimbus, redis) pinned to CPU0, load generators to CPU1, as in http-bench.sh.
#
# Env: ROUNDS=3 DURATION=10 CONNS=16 DOCS=1000000 KV_KEYS=100000 VALUE_BYTES=64
#      HOSTCALL_GETS=1000000 HOSTCALL_SETS=2000 QUERIES=2000 SCANS=20 OBJ_MIB=256
#      REDIS_N=200000 REDIS_AOF_N=200000 (redis-benchmark -n, for each of SET and GET;
#      AOF always does ~35-40k SET/s here) OTHER_MAX=20 RETRIES=4 (see probe_end)
#      IDLE_WAIT=600 IDLE_MAX=15
#      OUT=<dir> NIMBUS=<binary> NIMBUS_PREBUILT=1 (skip cargo build) NIMBUS_COMMIT=<the
#      binary's commit, if not HEAD> RESULTS=<tsv copy>
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
source "$SHARED/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
DOCS=${DOCS:-1000000}
KV_KEYS=${KV_KEYS:-100000}
VALUE_BYTES=${VALUE_BYTES:-64}
HOSTCALL_GETS=${HOSTCALL_GETS:-1000000}
HOSTCALL_SETS=${HOSTCALL_SETS:-2000}
QUERIES=${QUERIES:-2000}
SCANS=${SCANS:-20}
REDIS_N=${REDIS_N:-200000}
REDIS_AOF_N=${REDIS_AOF_N:-200000}
OBJ_MIB=${OBJ_MIB:-256}
OTHER_MAX=${OTHER_MAX:-20}
RETRIES=${RETRIES:-4}
IDLE_WAIT=${IDLE_WAIT:-600}
IDLE_MAX=${IDLE_MAX:-15}
OUT=${OUT:-$WORK/results/nimbus-data-$(date +%Y%m%dT%H%M%S)}
NIMBUS=${NIMBUS:-$ROOT/target/release/nimbus}
# The fixture is built from this tree into its own target dir (not lib.sh's shared
# CARGO_TARGET_DIR, where other trees' test programs land under the same name).
FIXTURE_TARGET=${FIXTURE_TARGET:-$ROOT/test-programs/target}
FIXTURE=${FIXTURE:-$FIXTURE_TARGET/wasm32-wasip2/release/data_fixture.wasm}
RESULTS=${RESULTS:-$ROOT/docs/bench-results/data-$(date +%Y-%m-%d).tsv}
GW=18110 ADMIN=18210 REDIS_MEM=18120 REDIS_AOF=18121 REDIS_AOF_NO=18122
GW_CRASH=18111 ADMIN_CRASH=18211
if [ -e "$OUT/raw.tsv" ]; then echo "$OUT holds results already; pick another OUT" >&2; exit 1; fi
mkdir -p "$OUT"
trap stop_all EXIT INT TERM
log() { echo "[data-bench $(date +%H:%M:%S)] $*" >&2; }

if [ -z "${NIMBUS_PREBUILT:-}" ]; then
  log "cargo build --release -p nimbus"
  (cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target cargo build -q --release -p nimbus)
fi
log "building the data fixture"
CARGO_TARGET_DIR=$FIXTURE_TARGET cargo build -q --release --target wasm32-wasip2 \
  --manifest-path "$ROOT/test-programs/Cargo.toml"
for tool in "$WRK" redis-server redis-benchmark sqlite3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (run $SHARED/setup.sh; apt sqlite3)" >&2; exit 1; }
done

{ machine_info
  echo "wrk: $($WRK --version 2>&1 | head -1)"
  echo "redis: $(redis-server --version)"
  echo "sqlite3 cli: $(sqlite3 --version | cut -d' ' -f1)"
  echo "nimbus: $("$NIMBUS" --version) (${NIMBUS_COMMIT:-$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)})"
  echo "nimbus binary: $NIMBUS"
  echo "fixture: $FIXTURE (built from $ROOT/test-programs)"
  echo "work tree changes under crates/: $(cd "$ROOT" && git status --porcelain crates sdk | wc -l) files"
  echo "rustc: $(rustc --version)"
  echo "disk: $(df -h "$OUT" | awk 'NR==2 {print $1, $2}') ($(findmnt -no FSTYPE -T "$OUT"))"
  echo "settings: ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS DOCS=$DOCS KV_KEYS=$KV_KEYS" \
    "VALUE_BYTES=$VALUE_BYTES HOSTCALL_GETS=$HOSTCALL_GETS HOSTCALL_SETS=$HOSTCALL_SETS" \
    "QUERIES=$QUERIES SCANS=$SCANS OBJ_MIB=$OBJ_MIB REDIS_N=$REDIS_N REDIS_AOF_N=$REDIS_AOF_N" \
    "OTHER_MAX=$OTHER_MAX RETRIES=$RETRIES IDLE_WAIT=$IDLE_WAIT IDLE_MAX=$IDLE_MAX"
} | tee "$OUT/env.txt"

RAW="$OUT/raw.tsv"
echo -e "round\ttest\tpeer\tconns\tmetric\tvalue" >"$RAW"
put() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" | tee -a "$RAW" >&2; } # round test peer conns metric value
HZ=$(getconf CLK_TCK)

# The machine is shared (2 cores): before each part, wait up to IDLE_WAIT seconds
# for the other processes to leave both cores mostly idle (< IDLE_MAX % busy over 2 s,
# default 15).
wait_idle() {
  python3 - "$IDLE_WAIT" "$IDLE_MAX" "$@" <<'PY' | tee -a "$OUT/load.log" >&2
import sys, time
limit, idle_max, pids = float(sys.argv[1]), float(sys.argv[2]), set(sys.argv[3:])
def busy():
    def snap():
        f = open("/proc/stat").readline().split()[1:]
        v = list(map(int, f))
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

# ...and, since a build can start in the middle of a run, each KV measurement is
# bracketed: the machine's user+system ticks (both cores) minus the server's and the
# load generator's (this shell's waited-for children, from `times`) are the other
# processes' share, as % of one core (`other_cpu_pct`). Above OTHER_MAX the
# measurement is discarded, and repeated after wait_idle, up to RETRIES times.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4}' /proc/stat; }
child_ticks() { # sets CHILD_TICKS; not in $(...): `times` must run in this shell
  times >"$OUT/times.txt"
  CHILD_TICKS=$(awk -v hz="$HZ" 'NR == 2 { t = 0
    for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%d", t * hz }' "$OUT/times.txt")
}
probe_start() { # SERVER_PID
  child_ticks; P_C0=$CHILD_TICKS; P_B0=$(busy_ticks); P_S0=$(cpu_ticks "$1"); P_T0=$(date +%s.%N)
}
probe_end() { # SERVER_PID; sets SERVER_PCT and OTHER_PCT
  local t1 s1 b1
  t1=$(date +%s.%N); s1=$(cpu_ticks "$1"); b1=$(busy_ticks); child_ticks
  read -r SERVER_PCT OTHER_PCT < <(python3 -c "
d = ($t1 - $P_T0) * $HZ / 100
print(f'{($s1 - $P_S0) / d:.0f}', f'{max(0, ($b1 - $P_B0) - ($s1 - $P_S0) - ($CHILD_TICKS - $P_C0)) / d:.0f}')")
}
# retry_if_disturbed LABEL ATTEMPT: true (after waiting for idle) if the measurement
# just taken should be repeated.
retry_if_disturbed() {
  [ "$OTHER_PCT" -gt "$OTHER_MAX" ] && [ "$2" -lt "$RETRIES" ] || return 1
  log "$1: other processes took $OTHER_PCT% of a core; repeating"
  echo "$(date +%T) $1 attempt $2 discarded: other_cpu_pct $OTHER_PCT" >>"$OUT/load.log"
  wait_idle
}

# --- the node: deploy once, stop, seed SQLite, start again -------------------------
DATA="$OUT/nimbus-data" APP="$OUT/app"
mkdir -p "$DATA" "$APP"
cat >"$APP/nimbus.toml" <<TOML
[app]
name = "bench"

[functions.api]
source = "$FIXTURE"
timeout = "120s"
concurrency = 1000
uses = ["kv:k", "docs:d", "bucket:b"]

[[routes]]
path = "/{*path}"
function = "api"

[kv.k]

[docs.d]
indexes = ["status"]

[buckets.b]
TOML

start_nimbus() { # NAME DATA_DIR GW_PORT ADMIN_PORT [SERVE ARGS...]; sets LAST_PID
  local name=$1 dir=$2 gw=$3 admin=$4; shift 4
  start_server "$name" "$OUT/$name.server.log" "$NIMBUS" serve --listen "127.0.0.1:$gw" \
    --admin-listen "127.0.0.1:$admin" --data-dir "$dir" "$@"
  wait_tcp 127.0.0.1 "$admin" 60
}
start_nimbus nimbus "$DATA" "$GW" "$ADMIN"; NIMBUS_PID=$LAST_PID
"$NIMBUS" deploy "$APP" --server "http://127.0.0.1:$ADMIN" --data-dir "$DATA" >"$OUT/deploy.log" 2>&1
stop_pid "$NIMBUS_PID"

DB="$DATA/nimbus.db"
sqlite3 "$DB" .schema >"$OUT/schema.sql"
DOCS_ID=$(sqlite3 "$DB" "SELECT id FROM data_stores WHERE app='bench' AND kind='docs' AND name='d'")
KV_ID=$(sqlite3 "$DB" "SELECT id FROM data_stores WHERE app='bench' AND kind='kv' AND name='k'")
log "seeding $DOCS documents into docs store $DOCS_ID and $KV_KEYS keys into kv store $KV_ID"
t0=$(date +%s.%N)
# `status` is indexed, `m` is the same values unindexed: each of s0..s999 matches
# DOCS/1000 documents, spread evenly over the id order.
sqlite3 "$DB" <<SQL
BEGIN;
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < $DOCS)
INSERT INTO data_docs (store_id, id, rev, body)
  SELECT $DOCS_ID, printf('d%07d', i), 1,
         json_object('status', 's' || (i % 1000), 'm', 's' || (i % 1000), 'n', i) FROM c;
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < $KV_KEYS)
INSERT INTO kv_entries (store_id, key, value, version, expires_at)
  SELECT $KV_ID, printf('k%06d', i), CAST(printf('%0${VALUE_BYTES}d', i) AS BLOB), 1, NULL FROM c;
COMMIT;
SQL
put 1 seed sqlite3 - seconds "$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")"
sqlite3 "$DB" "SELECT count(*) FROM data_docs WHERE store_id = $DOCS_ID" >"$OUT/docs.count"
# The crash-durability node: the same seeded state, its own copy (node stopped).
DATA_CRASH="$OUT/nimbus-crash-data"
cp -a "$DATA" "$DATA_CRASH"
start_nimbus nimbus "$DATA" "$GW" "$ADMIN"; NIMBUS_PID=$LAST_PID
start_nimbus nimbus-crash "$DATA_CRASH" "$GW_CRASH" "$ADMIN_CRASH" --durability crash; CRASH_PID=$LAST_PID
TOKEN=$(cat "$DATA/admin-token")
CRASH_TOKEN=$(cat "$DATA_CRASH/admin-token")
AUTH=(-H "Authorization: Bearer $TOKEN")
API="http://127.0.0.1:$ADMIN/v1/apps/bench"
curl -fsS "${AUTH[@]}" "$API/kv/k/keys/k000001" >/dev/null || { echo "seeded key not readable" >&2; exit 1; }
curl -fsS -H "Authorization: Bearer $CRASH_TOKEN" "http://127.0.0.1:$ADMIN_CRASH/v1/apps/bench/kv/k/keys/k000001" \
  >/dev/null || { echo "seeded key not readable on the crash node" >&2; exit 1; }
wait_http "http://127.0.0.1:$GW/kv/get?store=k&key=k000001" 30 >/dev/null
wait_http "http://127.0.0.1:$GW_CRASH/kv/get?store=k&key=k000001" 30 >/dev/null
echo "rss_mib at start: nimbus $(rss_mib "$NIMBUS_PID") nimbus-crash $(rss_mib "$CRASH_PID")" >>"$OUT/env.txt"

# --- redis: no persistence, AOF fsync always, AOF without fsync --------------------
start_redis() { # NAME PORT ARGS...
  local name=$1 port=$2; shift 2
  mkdir -p "$OUT/$name"
  start_server "$name" "$OUT/$name.server.log" redis-server --port "$port" --bind 127.0.0.1 \
    --dir "$OUT/$name" --save '' "$@"
  wait_tcp 127.0.0.1 "$port" 30
}
start_redis redis "$REDIS_MEM" --appendonly no; REDIS_MEM_PID=$LAST_PID
start_redis redis-aof-always "$REDIS_AOF" --appendonly yes --appendfsync always; REDIS_AOF_PID=$LAST_PID
start_redis redis-aof-no "$REDIS_AOF_NO" --appendonly yes --appendfsync no; REDIS_AOF_NO_PID=$LAST_PID

# --- kv: host calls inside one request -------------------------------------------------
hostcall() { # ROUND PEER OP N [GATEWAY_PORT [NODE_PID]]
  local line gw=${5:-$GW} pid=${6:-$NIMBUS_PID} attempt=0
  while :; do
    probe_start "$pid"
    if [ "$3" = set ]; then
      line=$(on_client_cpu curl -fsS -X POST --data-binary "$(head -c "$VALUE_BYTES" /dev/zero | tr '\0' v)" \
        "http://127.0.0.1:$gw/kv/bench?store=k&op=set&key=hs$1-$attempt-&n=$4")
    else
      line=$(on_client_cpu curl -fsS "http://127.0.0.1:$gw/kv/bench?store=k&op=$3&key=k000001&n=$4")
    fi
    probe_end "$pid"
    echo "$2 other_cpu_pct=$OTHER_PCT $line" >>"$OUT/hostcall.log"
    case $line in *"found=$4"*) ;; *) echo "host-call bench failed: $line" >&2; exit 1 ;; esac
    attempt=$((attempt + 1)); retry_if_disturbed "$2 $3" "$attempt" || break
  done
  put "$1" "kv_${3#sdk-}" "$2" 1 ops_s "$(echo "$line" | tr ' ' '\n' | awk -F= '$1=="ops_per_sec" {print $2}')"
  put "$1" "kv_${3#sdk-}" "$2" 1 other_cpu_pct "$OTHER_PCT"
}
curl -fsS "http://127.0.0.1:$GW/kv/bench?store=k&op=get&key=k000001&n=10000" >"$OUT/hostcall.log"; echo >>"$OUT/hostcall.log"

# --- kv over the API (wrk) and redis-benchmark, interleaved ----------------------------
v() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }
wrk_kv() { # ROUND MODE PEER TEST URL [NODE_PID] [TOKEN]
  local line pid=${6:-$NIMBUS_PID} rss0 rss1 attempt=0
  while :; do
    rss0=$(rss_mib "$pid")
    probe_start "$pid"
    # KV_TAG: a SET run writes new keys, also when repeated.
    line=$(KV_MODE=$2 KV_KEYS=$KV_KEYS KV_VALUE_BYTES=$VALUE_BYTES NIMBUS_TOKEN=${7:-$TOKEN} \
      KV_TAG="r$1a$attempt" on_client_cpu "$WRK" -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s \
      -s "$ROOT/bench/data-kv.lua" "$5" | grep '^RESULT')
    probe_end "$pid"
    rss1=$(rss_mib "$pid")
    [ "$(v non2xx)" = 0 ] && [ "$(v sock_errors)" = 0 ] || { echo "wrk errors: $line" >&2; exit 1; }
    attempt=$((attempt + 1)); retry_if_disturbed "$3 $2" "$attempt" || break
  done
  put "$1" "$4" "$3" "$CONNS" ops_s "$(v rps)"
  put "$1" "$4" "$3" "$CONNS" p50_us "$(v p50_us)"
  put "$1" "$4" "$3" "$CONNS" p99_us "$(v p99_us)"
  put "$1" "$4" "$3" "$CONNS" server_cpu_pct "$SERVER_PCT"
  put "$1" "$4" "$3" "$CONNS" other_cpu_pct "$OTHER_PCT"
  # The node's RSS right after the run; for SETs (one new key each) also the growth
  # per write over the run, in bytes.
  put "$1" "$4" "$3" "$CONNS" rss_mib "$rss1"
  if [ "$2" = set ]; then
    put "$1" "$4" "$3" "$CONNS" writes "$(v requests)"
    put "$1" "$4" "$3" "$CONNS" rss_growth_b_per_write \
      "$(python3 -c "print(f'{($rss1 - $rss0) * 1048576 / max(1, $(v requests)):.0f}')")"
  fi
}
redis_kv() { # ROUND NAME PORT PID REQUESTS
  local csv attempt=0
  while :; do
    probe_start "$4"
    csv=$(on_client_cpu redis-benchmark -h 127.0.0.1 -p "$3" -t set,get -c "$CONNS" -n "$5" \
      -d "$VALUE_BYTES" -r "$KV_KEYS" --csv)
    probe_end "$4"
    echo "$csv" >>"$OUT/$2.bench.csv"
    attempt=$((attempt + 1)); retry_if_disturbed "$2" "$attempt" || break
  done
  # The two tests share one CPU figure: redis-benchmark runs them back to back.
  local cpu=$SERVER_PCT
  echo "$csv" | python3 -c '
import csv, sys
for r in csv.DictReader(sys.stdin):
    t = {"SET": "kv_set", "GET": "kv_get"}[r["test"]]
    print(t, r["rps"], float(r["p50_latency_ms"]) * 1000, float(r["p99_latency_ms"]) * 1000)' |
  while read -r test rps p50 p99; do
    put "$1" "$test" "$2" "$CONNS" ops_s "$rps"
    put "$1" "$test" "$2" "$CONNS" p50_us "$p50"
    put "$1" "$test" "$2" "$CONNS" p99_us "$p99"
    put "$1" "$test" "$2" "$CONNS" server_cpu_pct "$cpu"
    put "$1" "$test" "$2" "$CONNS" other_cpu_pct "$OTHER_PCT"
  done
}
log "kv: warm-up"
KV_MODE=get KV_KEYS=$KV_KEYS NIMBUS_TOKEN=$TOKEN on_client_cpu "$WRK" -t1 -c"$CONNS" -d2s \
  -s "$ROOT/bench/data-kv.lua" "http://127.0.0.1:$ADMIN/" >/dev/null
KV_MODE=get KV_KEYS=$KV_KEYS NIMBUS_TOKEN=$CRASH_TOKEN on_client_cpu "$WRK" -t1 -c"$CONNS" -d2s \
  -s "$ROOT/bench/data-kv.lua" "http://127.0.0.1:$ADMIN_CRASH/" >/dev/null
for r in $(seq "$ROUNDS"); do
  wait_idle
  log "kv round $r"
  { echo "round $r $(date +%T) loadavg $(cat /proc/loadavg)"; top -bn1 -w 120 | sed -n 3p\;8,13p; } >>"$OUT/load.log"
  hostcall "$r" nimbus-hostcall-wasi get "$HOSTCALL_GETS"
  hostcall "$r" nimbus-hostcall-sdk sdk-get "$HOSTCALL_GETS"
  hostcall "$r" nimbus-hostcall set "$HOSTCALL_SETS"
  hostcall "$r" nimbus-crash-hostcall set "$HOSTCALL_SETS" "$GW_CRASH" "$CRASH_PID"
  wrk_kv "$r" get nimbus-api kv_get "http://127.0.0.1:$ADMIN/"
  wrk_kv "$r" get nimbus-crash-api kv_get "http://127.0.0.1:$ADMIN_CRASH/" "$CRASH_PID" "$CRASH_TOKEN"
  wrk_kv "$r" set nimbus-api kv_set "http://127.0.0.1:$ADMIN/"
  wrk_kv "$r" set nimbus-crash-api kv_set "http://127.0.0.1:$ADMIN_CRASH/" "$CRASH_PID" "$CRASH_TOKEN"
  wrk_kv "$r" fn-get nimbus-function kv_get "http://127.0.0.1:$GW/"
  redis_kv "$r" redis "$REDIS_MEM" "$REDIS_MEM_PID" "$REDIS_N"
  redis_kv "$r" redis-aof-always "$REDIS_AOF" "$REDIS_AOF_PID" "$REDIS_AOF_N"
  redis_kv "$r" redis-aof-no "$REDIS_AOF_NO" "$REDIS_AOF_NO_PID" "$REDIS_N"
done
echo "nimbus-crash rss_mib after kv $(rss_mib "$CRASH_PID")" >>"$OUT/env.txt"
stop_pid "$REDIS_MEM_PID"; stop_pid "$REDIS_AOF_PID"; stop_pid "$REDIS_AOF_NO_PID"; stop_pid "$CRASH_PID"

# --- documents ----------------------------------------------------------------------
wait_idle
log "docs: explain"
for field in status m; do
  curl -fsS "${AUTH[@]}" -H 'Content-Type: application/json' -X POST "$API/docs/d/explain" \
    -d "{\"filter\": {\"$field\": \"s7\"}, \"limit\": 10}" >"$OUT/explain-$field.json"
  echo "$field: $(cat "$OUT/explain-$field.json")" >&2
done
query() { # PEER FIELD COUNT LIMIT [VALUE]
  local line
  line=$(on_client_cpu python3 "$ROOT/bench/data-query.py" "$ADMIN" "$TOKEN" bench d "$2" "$3" "$4" ${5:+"$5"})
  for m in p50_us p90_us p99_us mean_us; do put 1 docs_query "$1" 1 "$m" "$(echo "$line" | tr ' ' '\n' | awk -F= -v k=$m '$1==k {print $2}')"; done
  put 1 docs_query "$1" 1 docs "$(echo "$line" | tr ' ' '\n' | awk -F= '$1=="docs_per_query" {print $2}')"
}
log "docs: queries"
query "indexed (status), limit 10" status "$QUERIES" 10
query "indexed (status), limit 100" status "$QUERIES" 100
query "unindexed (m), limit 10" m "$QUERIES" 10
query "unindexed (m), no match: full scan" m "$SCANS" 10 none

# --- objects ----------------------------------------------------------------------------
wait_idle
log "objects: $OBJ_MIB MiB"
SRC="$OUT/object.bin"
head -c "$((OBJ_MIB << 20))" /dev/urandom >"$SRC"
BYTES=$(stat -c %s "$SRC")
mbs() { python3 -c "print(f'{$BYTES / 1e6 / $1:.1f}')"; }
secs_of() { local s0 s1; s0=$(date +%s.%N); "$@" >/dev/null; s1=$(date +%s.%N); python3 -c "print(f'{$s1 - $s0:.4f}')"; }
for r in $(seq "$ROUNDS"); do
  rm -f "$OUT/object.copy"; sync
  wait_idle
  # The limit: the same bytes copied into the same filesystem and made durable...
  s=$(secs_of on_server_cpu sh -c 'cp "$1" "$2" && sync "$2"' _ "$SRC" "$OUT/object.copy")
  put "$r" object_put file-copy 1 seconds "$s"; put "$r" object_put file-copy 1 mb_s "$(mbs "$s")"
  s=$(secs_of on_client_cpu curl -fsS -o /dev/null -H 'Expect:' -H 'Content-Type: application/octet-stream' \
    "${AUTH[@]}" -T "$SRC" "$API/buckets/b/objects/obj-$r")
  put "$r" object_put nimbus 1 seconds "$s"; put "$r" object_put nimbus 1 mb_s "$(mbs "$s")"
  # ...and read back (page cache warm for both: both were just written).
  s=$(secs_of on_server_cpu sh -c 'cat "$1" >/dev/null' _ "$OUT/object.copy")
  put "$r" object_get file-copy 1 seconds "$s"; put "$r" object_get file-copy 1 mb_s "$(mbs "$s")"
  s=$(secs_of on_client_cpu curl -fsS -o /dev/null "${AUTH[@]}" "$API/buckets/b/objects/obj-$r")
  put "$r" object_get nimbus 1 seconds "$s"; put "$r" object_get nimbus 1 mb_s "$(mbs "$s")"
done
got=$(curl -fsS "${AUTH[@]}" "$API/buckets/b/objects/obj-1" | sha256sum | cut -d' ' -f1)
[ "$got" = "$(sha256sum "$SRC" | cut -d' ' -f1)" ] || { echo "object read back differs" >&2; exit 1; }
rm -f "$SRC" "$OUT/object.copy"

echo "nimbus rss_mib at the end $(rss_mib "$NIMBUS_PID")" >>"$OUT/env.txt"
stop_all
mkdir -p "$(dirname "$RESULTS")"
cp "$RAW" "$RESULTS"
python3 "$ROOT/bench/data-summary.py" "$RAW" | tee "$OUT/summary.md"
echo "raw results: $OUT (copied to $RESULTS)"
