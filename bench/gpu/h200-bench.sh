#!/usr/bin/env bash
# The issue #7 benchmark on the whole synthetic Flash q2 (43 layers, 86.7 GB in a tmpfs) on one
# H200: the GPU tests while the file is written, then `dsv4 bench` walking promessi_sposi.txt
# to the frontiers (prefill rate of each interval, greedy decode at each frontier).
# One device call: kind nvidia-h200, needs_h200, carry the bundle B (dsv4, the test binaries,
# promessi_sposi.txt). Usage: bench/gpu/h200-bench.sh B [frontiers]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; F=${2:-2048,8192,16384,32768,65536}
. bench/gpu/lib.sh
model_and_tests "$B" 43 decode forward session long_context
left=$((580 - SECONDS))
timeout $((left > 20 ? left - 10 : 1)) "$B/dsv4" bench -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
    --frontiers "$F" --decode 64 > "$o/bench-h200.csv" 2> "$o/bench-h200.log"
echo "dsv4 bench exit $? after $SECONDS s"
cat "$o/bench-h200.csv"; tail -3 "$o/bench-h200.log"
