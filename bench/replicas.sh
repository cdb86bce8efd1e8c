#!/usr/bin/env bash
# Replicas against torch threads on the same cores: dartserve with R replicas x T torch threads,
# under the same closed-loop load from dartserve-loadgen, for each R:T pair, alternating, ROUNDS
# times; prints one line per run (images/s and latency percentiles from loadgen's JSON).
#
#   bench/replicas.sh [ROUNDS=2] [PAIRS="1:2 2:1"] [DURATION=20] [CONCURRENCY=16]
#
# Needs a build (scripts/build.sh) and a quiet machine; the load generator shares the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
pairs=${2:-"1:2 2:1"}
duration=${3:-20}
concurrency=${4:-16}
build=${BUILD_DIR:-build}
port=${PORT:-50071}
model=${MODEL:-fmnist-dart-fm=weights/fmnist-dart-fm}
mix=${MIX:-class:0-9,guidance:2,preview_every:0}
out=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$out"' EXIT

printf '%-10s %-6s %10s %8s %8s %8s\n' 'replicas x threads' round images/s p50_s p90_s p99_s
for round in $(seq "$rounds"); do
  for pair in $pairs; do
    replicas=${pair%%:*}
    threads=${pair##*:}
    "$build"/server/dartserve --model "$model" --port "$port" --metrics_port -1 \
      --replicas "$replicas" --threads "$threads" >"$out/server.log" 2>&1 &
    server=$!
    for _ in $(seq 600); do  # until the server reports SERVING (warm-up done), at most 5 min
      grep -q "health SERVING" "$out/server.log" && break
      kill -0 "$server" 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
      sleep 0.5
    done
    "$build"/client/dartserve-loadgen --server "localhost:$port" --concurrency "$concurrency" \
      --duration "$duration" --mix "$mix" --warmup 8 \
      --json "$out/run.json" >/dev/null 2>"$out/loadgen.log"
    kill -TERM "$server"
    wait "$server" || true
    /usr/bin/python3 - "$out/run.json" "$replicas x $threads" "$round" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<10} {sys.argv[3]:<6} {r['images_per_second']:10.1f} "
      f"{r['latency_p50_s']:8.3f} {r['latency_p90_s']:8.3f} {r['latency_p99_s']:8.3f}")
PY
  done
done
