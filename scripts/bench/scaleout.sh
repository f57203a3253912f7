#!/usr/bin/env bash
# Three instances over one Redis and one PostgreSQL, each with its own,
# disjoint set of documents (one load generator per instance, each with its
# own rooms). Reports, per instance, the Redis messages it received per
# second (tandem_redis_messages_received_total) and its CPU, next to what it
# published. With per-document subscriptions an instance receives ~0 of the
# others' traffic; with the old pattern subscription it receives all of it.
#
#   scripts/bench/scaleout.sh [--builds "before after"] [--repeat N]
#
# Builds: `after` is target/debug/tandem (or $TANDEM_BIN); `before` is
# $TANDEM_BEFORE_BIN. The counts do not depend on the build's optimisation;
# CPU does (the printed CPU is only comparable between runs of one build type).
# Raw JSON lines go to benches/results/scaleout-<date>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILDS="before after"
REPEAT=3
ROOMS=${ROOMS:-4}
MEMBERS=${MEMBERS:-5}
RATE=${RATE:-5}
DURATION=${DURATION:-10}
while [ $# -gt 0 ]; do
  case "$1" in
    --builds) BUILDS=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

AFTER_BIN=${TANDEM_BIN:-target/debug/tandem}
BEFORE_BIN=${TANDEM_BEFORE_BIN:-}
LOADGEN=${LOADGEN_BIN:-target/debug/examples/loadgen}
[ -x "$LOADGEN" ] || cargo build --quiet --example loadgen
[ -x "$AFTER_BIN" ] || cargo build --quiet --bin tandem
PG=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS=${TEST_REDIS_URL:-redis://127.0.0.1:6379}
SECRET="bench-scaleout-$RANDOM"
RESULTS="benches/results/scaleout-$(date -u +%Y-%m-%d).jsonl"
mkdir -p benches/results

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

metric() { # metric PORT NAME -> value (0 when absent)
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2; found=1} END {if (!found) print 0}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for run in $(seq 1 "$REPEAT"); do
  for build in $BUILDS; do
    case "$build" in
      after) BIN=$AFTER_BIN ;;
      before) BIN=$BEFORE_BIN; [ -n "$BIN" ] || { echo "set TANDEM_BEFORE_BIN for the before build" >&2; exit 2; } ;;
      *) echo "unknown build $build" >&2; exit 2 ;;
    esac
    db="tandem_bench_scaleout_$$_$run"
    psql "$PG" -qc "DROP DATABASE IF EXISTS $db" >/dev/null
    psql "$PG" -qc "CREATE DATABASE $db" >/dev/null
    db_url="${PG%/*}/$db"
    prefix="bench-scaleout-$$-$run-$build"
    ports=(); pids=(); logs=()
    # One at a time: the first migrates the fresh database.
    for i in 0 1 2; do
      log=$(mktemp); logs+=("$log")
      TANDEM_BIND=127.0.0.1:0 DATABASE_URL="$db_url" REDIS_URL="$REDIS" TANDEM_REDIS_PREFIX="$prefix" \
        TANDEM_JWT_SECRET="$SECRET" RUST_LOG=info "$BIN" serve >"$log" 2>&1 &
      pids+=($!); PIDS+=($!)
      port=""
      for _ in $(seq 1 200); do
        port=$(grep -Eo 'local_addr=127\.0\.0\.1:[0-9]+' "$log" | head -1 | cut -d: -f2 || true)
        [ -n "$port" ] && break
        sleep 0.1
      done
      [ -n "$port" ] || { cat "$log" >&2; exit 1; }
      ports+=("$port")
    done
    sleep 2 # subscribed, heartbeats out
    declare -a rx0 tx0 cpu0
    for i in 0 1 2; do
      rx0[$i]=$(metric "${ports[$i]}" tandem_redis_messages_received_total)
      tx0[$i]=$(metric "${ports[$i]}" tandem_redis_messages_published_total)
      cpu0[$i]=$(cpu_ticks "${pids[$i]}")
    done
    started=$(date +%s.%N)
    lg=()
    for i in 0 1 2; do
      "$LOADGEN" --protocol tandem-json --addr "127.0.0.1:${ports[$i]}" --jwt-secret "$SECRET" \
        --scenario fanout --rooms "$ROOMS" --members "$MEMBERS" --rate "$RATE" \
        --warmup 1 --duration "$DURATION" >/dev/null 2>&1 &
      lg+=($!)
    done
    for pid in "${lg[@]}"; do wait "$pid" || true; done
    elapsed=$(echo "$(date +%s.%N) - $started" | bc)
    hz=$(getconf CLK_TCK)
    for i in 0 1 2; do
      rx=$(metric "${ports[$i]}" tandem_redis_messages_received_total)
      tx=$(metric "${ports[$i]}" tandem_redis_messages_published_total)
      cpu=$(cpu_ticks "${pids[$i]}")
      line=$(python3 - "$build" "$run" "$((i + 1))" "${rx0[$i]}" "$rx" "${tx0[$i]}" "$tx" "${cpu0[$i]}" "$cpu" "$elapsed" "$hz" "$ROOMS" "$MEMBERS" "$RATE" <<'PY'
import json, sys
build, run, inst, rx0, rx, tx0, tx, c0, c1, elapsed, hz, rooms, members, rate = sys.argv[1:]
e = float(elapsed)
print(json.dumps({
    "scenario": "disjoint3", "build": build, "run": int(run), "instance": int(inst),
    "rooms": int(rooms), "members": int(members), "rate_hz": float(rate),
    "received_per_s": round((float(rx) - float(rx0)) / e, 1),
    "published_per_s": round((float(tx) - float(tx0)) / e, 1),
    "cpu_pct": round((float(c1) - float(c0)) / float(hz) / e * 100, 1),
    "seconds": round(e, 1),
}))
PY
)
      echo "$line" | tee -a "$RESULTS"
    done
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql "$PG" -qc "DROP DATABASE IF EXISTS $db" >/dev/null || true
  done
done
echo "results appended to $RESULTS"
