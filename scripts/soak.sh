#!/usr/bin/env bash
# Soak: N connections moving cursors and editing for a given time against a
# release build on SQLite, sampling the server every --interval seconds: RSS,
# open file descriptors, threads, send-queue depths and the write-behind
# backlog (from /metrics), and the database's size on disk. Ends with a
# verdict on memory: flat when the last segment's peak RSS is within 10% (and
# 16 MiB) of the second segment's (the first warms caches and the allocator).
#
#   scripts/soak.sh                                # 500 connections for 1 h
#   scripts/soak.sh --connections 100 --duration 120 --interval 10
#
# Half the connections move cursors for the whole run (rooms of 10, 2 Hz
# each). The other half type into one Y.Text per room of 10 (1 edit/s each,
# acked after commit), each at its own cursor, past its share of 2,000
# characters deleting its own oldest text; every --segment seconds (600) they
# close their documents and open new ones, as people do. A Yjs document's
# history grows with every edit (yrs keeps an item per edit, about 200 bytes)
# for as long as it is open, so a steady state needs documents that close:
# what the soak then checks is that closing gives everything back (rooms,
# documents, sessions, presence, queues). The series is written to
# <out>/soak.csv, the load generator's reports to <out>/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=500
duration=3600
interval=30
segment=600
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) connections=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --segment) segment=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
out=${out:-$(mktemp -d /tmp/tandem-soak.XXXXXX)}
mkdir -p "$out"
cursors=$((connections / 2))
editors=$((connections - cursors))

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --bin tandem --example loadgen
fi
ulimit -n 65536 2>/dev/null || true

export TANDEM_JWT_SECRET="soak-$RANDOM$RANDOM$RANDOM"
db="$out/soak.db"
TANDEM_BIND=127.0.0.1:0 DATABASE_URL="sqlite://$db?mode=rwc" RUST_LOG=warn,tandem=info \
  target/release/tandem serve >"$out/server.log" 2>&1 &
server=$!
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap cleanup EXIT
addr=""
for _ in $(seq 1 100); do
  addr=$(grep -Eo 'local_addr=127\.0\.0\.1:[0-9]+' "$out/server.log" | head -1 | cut -d= -f2 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "tandem did not start:" >&2; cat "$out/server.log" >&2; exit 1; }
echo "soak: $connections connections ($cursors moving cursors, $editors editing) for ${duration}s against $addr; output in $out"

loadgen=(target/release/examples/loadgen --addr "$addr" --server-pid "$server" --warmup 5)
"${loadgen[@]}" --duration "$duration" --scenario fanout --rooms $(((cursors + 9) / 10)) --members 10 --rate 2 \
  --json-out "$out/cursors.json" >"$out/cursors.log" 2>&1 &
pids+=($!)
(
  # Editors: one load generator run per segment, each on new documents.
  left=$duration
  while [ "$left" -gt 0 ]; do
    run=$((left < segment ? left : segment))
    "${loadgen[@]}" --duration "$run" --settle 2 --scenario editing --docs $(((editors + 9) / 10)) --editors 10 \
      --edit-rate 1 --typing --max-text 2000 --db-path "$db" --json-out "$out/editing.json" >>"$out/editing.log" 2>&1 \
      || exit 1
    left=$((left - run))
  done
) &
pids+=($!)

metric() { awk -v name="$1" '$1 == name { print $2; exit }' "$out/metrics.txt"; }
echo "elapsed_s,rss_kib,fds,threads,connections,send_queue_messages,send_queue_deepest,send_queue_bytes,write_backlog,db_bytes" >"$out/soak.csv"
start=$(date +%s)
end=$((start + duration + 10))
while :; do
  now=$(date +%s)
  kill -0 "$server" 2>/dev/null || { echo "the server died" >&2; exit 1; }
  curl -fsS "http://$addr/metrics" >"$out/metrics.txt" || : >"$out/metrics.txt"
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$server/status")
  fds=$(find "/proc/$server/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  threads=$(awk '/^Threads:/ { print $2 }' "/proc/$server/status")
  db_bytes=$(du -cb "$db"* 2>/dev/null | awk 'END { print $1 }')
  line="$((now - start)),$rss,$fds,$threads,$(metric 'tandem_connections{protocol="json"}'),$(metric tandem_send_queue_messages),$(metric tandem_send_queue_deepest_messages),$(metric tandem_send_queue_bytes),$(metric tandem_write_backlog),$db_bytes"
  echo "$line" >>"$out/soak.csv"
  echo "  $line"
  [ "$now" -ge "$end" ] && break
  sleep "$interval"
done

status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
pids=()
[ "$status" = 0 ] || echo "a load generator failed: see $out/cursors.log and $out/editing.log" >&2

# Verdict: peak RSS per segment, the second's against the last's.
awk -F, -v segment="$segment" -v duration="$duration" -v status="$status" '
  NR == 1 { next }
  $1 < duration { s = int($1 / segment); if ($2 > peak[s]) peak[s] = $2; if (s > last) last = s }
  NR == 2 { fds_first = $3 }
  { fds_last = $3 }
  END {
    base = (last >= 1) ? peak[1] : peak[0]
    growth = peak[last] - base; pct = base ? 100 * growth / base : 0
    flat = (pct < 10 && growth < 16384)
    printf "segment peaks (KiB):"; for (i = 0; i <= last; i++) printf " %d", peak[i]; printf "\n"
    printf "verdict: peak RSS %d KiB in segment %d -> %d KiB in segment %d (%+.1f%%, %+d KiB): %s; fds %d -> %d\n",
      base, (last >= 1), peak[last], last, pct, growth, flat ? "flat" : "GROWING", fds_first, fds_last
    exit (flat && status == 0) ? 0 : 1
  }' "$out/soak.csv"
