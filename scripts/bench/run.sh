#!/usr/bin/env bash
# The benchmark in one command: tandem, the floor relay and the Yjs peers,
# the same load against each, side by side.
#
#   scripts/bench/run.sh                 # everything, 3 repetitions
#   scripts/bench/run.sh --quick         # short runs, smaller idle ramp, 1 repetition
#   scripts/bench/run.sh --servers "tandem floor" --scenarios "fanout knee"
#   scripts/bench/run.sh --ysweet        # also build y-sweet 0.9.1 (a long cargo install)
#   TANDEM_BEFORE_BIN=/tmp/old/tandem scripts/bench/run.sh --servers "tandem-before tandem"
#                                        # before/after a change, same run
#   scripts/bench/run.sh --servers "tandem tandem-batch floor" --scenarios knee
#                                        # the knee with batched frames (?batch=1) beside the floor
#   scripts/bench/run.sh --servers tandem-redis --scenarios redis
#                                        # two instances over the local Redis and PostgreSQL
#   scripts/bench/run.sh --servers "tandem y-websocket" --scenarios "idle-5k idle-10k idle-19k"
#                                        # idle connections at growing counts: the curve
#   scripts/bench/run.sh --servers "tandem tandem-pg hocuspocus-sqlite y-websocket-leveldb" --scenarios docs5000
#                                        # 5,000 documents x 2 editors at 1 Hz, each server persisting
#   scripts/bench/run.sh --servers "tandem-redis tandem-redis3" --scenarios redis
#                                        # presence fan-out across two and three instances
#   TANDEM_BEFORE_BIN=/tmp/old/tandem scripts/bench/run.sh --scenarios disjoint3
#                                        # three instances, disjoint documents: Redis
#                                        # messages each receives (scripts/bench/scaleout.sh)
#
# Servers run on core $SERVER_CPU (default 0), the load generator on core
# $LOADGEN_CPU (default 1), both SCHED_RR (see PRIO below), each server
# restarted for every run so memory figures start from a fresh process.
# Results are appended, one JSON line per run, to $RESULTS (default
# scripts/bench/results.jsonl); summarize.py prints the medians side by side.
# IDLE_N overrides the idle scenario's connection count; idle-<N>k opens N
# thousand (at most what the open-file limit allows: see below).
set -euo pipefail
cd "$(dirname "$0")/../.."

BENCH=scripts/bench
TARGET=${CARGO_TARGET_DIR:-target}
SCRATCH=$BENCH/.scratch
RESULTS=${RESULTS:-$BENCH/results.jsonl}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
# Real-time round-robin scheduling (root only) for servers and load
# generator: on a shared machine, a compile on the same core otherwise adds
# milliseconds of scheduling delay to every hop (measured: the floor's p50
# went from 20 ms at nice -20 to 0.6 ms under SCHED_RR). BENCH_PRIO=none
# runs them at normal priority.
if [ "${BENCH_PRIO:-rr}" = none ] || [ "$(id -u)" != 0 ]; then PRIO=(); else PRIO=(chrt -r 10); fi
SERVERS="tandem tandem-yws tandem-redis floor y-websocket hocuspocus y-sweet"
SCENARIOS="idle fanout fanout200 knee editing joinstorm redis slow200 slow50"
REPEAT=3
QUICK=0
BUILD_YSWEET=0

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; REPEAT=1 ;;
    --ysweet) BUILD_YSWEET=1 ;;
    --servers) SERVERS=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

# Three instances with their own documents: its own script (three servers,
# three load generators), before/after in one invocation.
if [ "$SCENARIOS" = disjoint3 ]; then
  exec "$BENCH/scaleout.sh" --repeat "$REPEAT"
fi

# Thousands of sockets on each side. Raising the hard limit needs
# CAP_SYS_RESOURCE; without it the soft limit goes up to the hard one, and
# that caps every process's connections (this machine's containers: 20,000).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "== open-file limit per process: $(ulimit -n)"

export TANDEM_JWT_SECRET=${TANDEM_JWT_SECRET:-bench-secret-$RANDOM$RANDOM}
mkdir -p "$SCRATCH"

echo "== build (release): tandem, loadgen, floor"
cargo build --release --quiet --bin tandem --example loadgen --example floor

echo "== peers (npm, into $SCRATCH/npm)"
if [ ! -f "$SCRATCH/npm/node_modules/@y/websocket-server/src/server.js" ] \
  || [ ! -d "$SCRATCH/npm/node_modules/@hocuspocus/server" ]; then
  mkdir -p "$SCRATCH/npm"
  [ -f "$SCRATCH/npm/package.json" ] || echo '{"name":"bench-peers","private":true}' > "$SCRATCH/npm/package.json"
  npm install --prefix "$SCRATCH/npm" --no-audit --no-fund --silent \
    @y/websocket-server@0.1.1 yjs@13 @hocuspocus/server@3.4.4
fi
# The peers' own persistence, for the many-documents scenario.
case " $SERVERS " in *" y-websocket-leveldb "*|*" hocuspocus-sqlite "*)
  if [ ! -d "$SCRATCH/npm/node_modules/y-leveldb" ] || [ ! -d "$SCRATCH/npm/node_modules/@hocuspocus/extension-sqlite" ]; then
    npm install --prefix "$SCRATCH/npm" --no-audit --no-fund --silent y-leveldb@0.1.2 @hocuspocus/extension-sqlite@3.4.4
  fi ;;
esac
# ES module resolution starts from the script's own directory.
cp "$BENCH/hocuspocus-server.mjs" "$SCRATCH/npm/"

YSWEET=$SCRATCH/bin/y-sweet
if [ ! -x "$YSWEET" ] && [ "$BUILD_YSWEET" = 1 ]; then
  echo "== y-sweet 0.9.1 (cargo install; several minutes on 2 cores)"
  cargo install --locked y-sweet --version 0.9.1 --root "$SCRATCH" --quiet \
    || echo "y-sweet failed to build: skipped" >&2
fi

PID=""
PIDS=()
TMPDIRS=()
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for dir in "${TMPDIRS[@]}"; do rm -rf "$dir"; done
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listening on port $1" >&2
  return 1
}

# start_server NAME: sets PID and the loadgen flags for it (LG_ARGS).
start_server() {
  local name=$1 dir
  dir=$(mktemp -d); TMPDIRS+=("$dir")
  case "$name" in
    tandem|tandem-yws|tandem-before|tandem-yws-before|tandem-batch|tandem-pg)
      # tandem-batch: the same server, clients connect with ?batch=1 (--batch).
      # tandem-before: another build (TANDEM_BEFORE_BIN) for before/after comparisons.
      # tandem-pg: on the local PostgreSQL (database tandem_bench, recreated per run).
      local bin="$TARGET"/release/tandem
      case "$name" in *-before) bin=${TANDEM_BEFORE_BIN:?set TANDEM_BEFORE_BIN to the binary to compare} ;; esac
      local database="sqlite://$dir/tandem.db?mode=rwc"
      if [ "$name" = tandem-pg ]; then
        local pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
        psql "$pg/postgres" -qc 'DROP DATABASE IF EXISTS tandem_bench' -c 'CREATE DATABASE tandem_bench' >/dev/null
        database="$pg/tandem_bench"
      fi
      PORT=18080
      # Rate limit raised: the knee steps past 100 messages/s per connection.
      # Presence rate unlimited: the knee measures relaying every move, as the
      # floor relay does (the default 30 Hz cap would drop the moves between).
      # A short room grace period lets the cold join storm find its document unloaded.
      TANDEM_BIND=127.0.0.1:$PORT DATABASE_URL="$database" TANDEM_MAX_CONNECTIONS_PER_IP=100000 \
        TANDEM_RATE_LIMIT_PER_SECOND=100000 TANDEM_RATE_LIMIT_BURST=100000 TANDEM_PRESENCE_MAX_HZ=0 \
        TANDEM_ROOM_GRACE_PERIOD=1s RUST_LOG=warn \
        "${PRIO[@]}" taskset -c "$SERVER_CPU" "$bin" >"$dir/server.log" 2>&1 &
      PID=$!
      if [ "$name" = tandem-batch ]; then
        LG_ARGS=(--protocol tandem-json --batch --addr 127.0.0.1:$PORT)
      elif [ "${name#tandem-yws}" = "$name" ]; then
        LG_ARGS=(--protocol tandem-json --addr 127.0.0.1:$PORT)
      else
        LG_ARGS=(--protocol yws --addr 127.0.0.1:$PORT)
      fi
      [ "$name" = tandem-pg ] || LG_ARGS+=(--db-path "$dir/tandem.db")
      LG_ARGS+=(--metrics-url "http://127.0.0.1:$PORT/metrics")
      ;;
    tandem-redis|tandem-redis3)
      # Two (three) instances sharing PostgreSQL (database tandem_bench,
      # recreated per run) and fanned out through the machine's Redis (own
      # key prefix), all on the server core.
      PORT=18081
      local pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
      psql "$pg/postgres" -qc 'DROP DATABASE IF EXISTS tandem_bench' -c 'CREATE DATABASE tandem_bench' >/dev/null
      local prefix=bench$RANDOM ports="18081 18082"
      [ "$name" = tandem-redis3 ] && ports="18081 18082 18083"
      LG_ARGS=(--protocol tandem-json --addr 127.0.0.1:18081)
      for port in $ports; do
        TANDEM_BIND=127.0.0.1:$port DATABASE_URL="$pg/tandem_bench" \
          REDIS_URL=${BENCH_REDIS:-redis://127.0.0.1:6379} TANDEM_REDIS_PREFIX=$prefix \
          TANDEM_RATE_LIMIT_PER_SECOND=100000 TANDEM_RATE_LIMIT_BURST=100000 TANDEM_PRESENCE_MAX_HZ=0 RUST_LOG=warn \
          "${PRIO[@]}" taskset -c "$SERVER_CPU" "$TARGET"/release/tandem >"$dir/server-$port.log" 2>&1 &
        if [ "$port" = 18081 ]; then
          PID=$!; wait_port 18081
        else
          PIDS+=($!); wait_port "$port"
          LG_ARGS+=(--addr2 127.0.0.1:$port --server2-pid "$!")
        fi
      done
      local redis_pid
      redis_pid=$(pgrep -xo redis-server || true)
      [ -n "$redis_pid" ] && LG_ARGS+=(--redis-pid "$redis_pid")
      ;;
    floor)
      PORT=19000
      "${PRIO[@]}" taskset -c "$SERVER_CPU" "$TARGET"/release/examples/floor --bind 127.0.0.1:$PORT >"$dir/server.log" 2>&1 &
      PID=$!
      LG_ARGS=(--protocol floor --addr 127.0.0.1:$PORT)
      ;;
    y-websocket|y-websocket-leveldb)
      # y-websocket-leveldb: with its LevelDB persistence (YPERSISTENCE), which
      # writes every update and acknowledges nothing.
      PORT=11234
      local persistence=()
      [ "$name" = y-websocket-leveldb ] && persistence=(YPERSISTENCE="$dir/leveldb")
      env "${persistence[@]}" HOST=127.0.0.1 PORT=$PORT "${PRIO[@]}" taskset -c "$SERVER_CPU" \
        node "$SCRATCH/npm/node_modules/@y/websocket-server/src/server.js" >"$dir/server.log" 2>&1 &
      PID=$!
      LG_ARGS=(--protocol yws --url "ws://127.0.0.1:$PORT/{doc}")
      ;;
    hocuspocus|hocuspocus-sqlite)
      # hocuspocus-sqlite: with its SQLite extension (HOCUSPOCUS_SQLITE, the
      # database file), which stores documents after a debounce.
      PORT=11235
      local sqlite=()
      [ "$name" = hocuspocus-sqlite ] && sqlite=(HOCUSPOCUS_SQLITE="$dir/hocuspocus.sqlite")
      env "${sqlite[@]}" HOST=127.0.0.1 PORT=$PORT "${PRIO[@]}" taskset -c "$SERVER_CPU" \
        node "$SCRATCH/npm/hocuspocus-server.mjs" >"$dir/server.log" 2>&1 &
      PID=$!
      LG_ARGS=(--protocol hocuspocus --addr 127.0.0.1:$PORT)
      ;;
    y-sweet)
      PORT=18090
      "${PRIO[@]}" taskset -c "$SERVER_CPU" "$YSWEET" serve "$dir/store" --host 127.0.0.1 --port $PORT >"$dir/server.log" 2>&1 &
      PID=$!
      LG_ARGS=(--protocol yws --url "ws://127.0.0.1:$PORT/d/{doc}/ws/{doc}"
        --create-docs-url "http://127.0.0.1:$PORT/doc/new")
      ;;
  esac
  wait_port "$PORT"
}

stop_server() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

# Scenario flags; --quick shortens every run.
if [ "$QUICK" = 1 ]; then
  DUR=(--warmup 1 --duration 4); IDLE_N=${IDLE_N:-3000}; KNEE_DUR=(--warmup 1 --duration 3)
else
  DUR=(--warmup 2 --duration 10); IDLE_N=${IDLE_N:-10000}; KNEE_DUR=(--warmup 1 --duration 5)
fi
scenario_args() {
  case "$1" in
    idle) echo --scenario idle --connections "$IDLE_N" --per-room 10 --hold 5 ;;
    fanout) echo --scenario fanout --rooms 50 --members 10 --rate 10 "${DUR[@]}" ;;
    fanout200) echo --scenario fanout --rooms 1 --members 200 --rate 10 "${DUR[@]}" ;;
    knee) echo --scenario fanout --find-knee --rooms 50 --members 10 --rate 2 --knee-factor 1.5 "${KNEE_DUR[@]}" ;;
    editing) echo --scenario editing --docs 10 --editors 10 --edit-rate 5 "${DUR[@]}" ;;
    joinstorm) echo --scenario joinstorm --clients 1000 --storm-window 1 --history-bytes 1000000 ;;
    joinstorm-cold) echo --scenario joinstorm --clients 1000 --storm-window 1 --history-bytes 1000000 --cold-wait 3 ;;
    redis) echo --scenario fanout --rooms 50 --members 10 --rate 10 "${DUR[@]}" ;;
    # Idle connections at a count of thousands; four loopback source
    # addresses past the ephemeral port range; held 35 s so the idle CPU
    # covers a round of heartbeats (loadgen: 30 s) and server pings.
    idle-*k) local thousands=${1#idle-}
      echo --scenario idle --connections "$(( ${thousands%k} * 1000 ))" --per-room 10 --hold 35 --source-addrs 4 ;;
    # Many documents: 5,000 x 2 editors at 1 Hz (10,000 connections), durable acks on tandem.
    docs5000) echo --scenario editing --docs 5000 --editors 2 --edit-rate 1 --warmup 5 --duration 20 --settle 5 ;;
    # A slow reader (reads 10x slower than its room sends, 16 KiB receive
    # buffer, sends nothing) in the one 200-member room / in each of 50 rooms.
    slow200) echo --scenario fanout --rooms 1 --members 200 --rate 10 --slow-readers 1 "${DUR[@]}" ;;
    slow50) echo --scenario fanout --rooms 50 --members 10 --rate 10 --slow-readers 50 "${DUR[@]}" ;;
  esac
}

# Which scenarios each server can do.
supports() {
  case "$1:$2" in
    tandem-redis:redis|tandem-redis3:redis) return 0 ;;
    tandem-redis*:*|*:redis) return 1 ;;
    *-leveldb:docs5000|*-sqlite:docs5000|tandem:docs5000|tandem-pg:docs5000) return 0 ;;
    *:docs5000|*-leveldb:*|*-sqlite:*) return 1 ;;
    tandem-pg:*) return 1 ;;
    floor:editing|floor:joinstorm|floor:joinstorm-cold) return 1 ;;
    tandem:joinstorm-cold|tandem-before:joinstorm-cold) return 0 ;;
    tandem:slow*|tandem-before:slow*|floor:slow*) return 0 ;;
    *:slow*) return 1 ;;
    *:joinstorm-cold) return 1 ;;
  esac
  return 0
}

for scenario in $SCENARIOS; do
  [ "$scenario" = joinstorm ] && case " $SCENARIOS " in *" joinstorm-cold "*) ;; *) SCENARIOS="$SCENARIOS joinstorm-cold" ;; esac
done

for scenario in $SCENARIOS; do
  for server in $SERVERS; do
    supports "$server" "$scenario" || continue
    if [ "$server" = y-sweet ] && [ ! -x "$YSWEET" ]; then
      echo "-- y-sweet not installed (run with --ysweet): skipped"
      continue
    fi
    for run in $(seq 1 "$REPEAT"); do
      echo "== $scenario on $server (run $run/$REPEAT)"
      start_server "$server"
      # shellcheck disable=SC2046
      "${PRIO[@]}" taskset -c "$LOADGEN_CPU" "$TARGET"/release/examples/loadgen "${LG_ARGS[@]}" \
        --label "$server" --server-pid "$PID" --json-out "$RESULTS" $(scenario_args "$scenario") \
        | grep -E '^(scenario|server|connections|rate_hz|delivered_per_s|latency_p|relay_p|ack_p|rss_per|time_to|knee_rate|errors|disconnects|converged|server_cpu_pct|server[0-9]_cpu_pct|redis_cpu_pct|db_|connect_rate|handshake_p|cross_added|latency_cross_p|loadgen_cpu|slow_)' || true
      stop_server
      sleep 1
    done
  done
done

echo "== results appended to $RESULTS"
python3 "$BENCH/summarize.py" "$RESULTS" || true
