#!/usr/bin/env bash
# First of two calls on one H200 (issue #7's side-by-side run): ds4 built from target/gpu-peers
# in the background while the 43-layer file is written and the GPU tests run; then `dsv4 bench`
# to the frontiers and the time to first token of a 200-token request during a 32K prefill.
# The second call, on the warm machine: bench/gpu/flash.sh 43 --engines ds4,dsv4 (same file).
# One device call: kind nvidia-h200, needs_h200, carry the bundle B (dsv4, the test binaries,
# promessi_sposi.txt) and target/gpu-peers. Usage: bench/gpu/h200-final.sh B [frontiers]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; F=${2:-2048,8192,16384,32768,65536}
. bench/gpu/lib.sh
# (model_and_tests waits for every background job, this build included: its status goes to a file.)
(bench/gpu/build-peers.sh --src target/gpu-peers --layers 43 --only ds4 --jobs 8 > "$o/build.log" 2>&1; echo "ds4 build exit $?" >> "$o/build.log") &
model_and_tests "$B" 43 decode forward session long_context engine_cuda
timeout 250 "$B/dsv4" bench -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
    --frontiers "$F" --decode 64 > "$o/bench-h200.csv" 2> "$o/bench-h200.log"
echo "dsv4 bench exit $? after $SECONDS s"
cat "$o/bench-h200.csv"; tail -3 "$o/bench-h200.log"
left=$((575 - SECONDS))
timeout $((left > 20 ? left - 10 : 1)) "$B/dsv4" bench-batch -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
    --ttft-long 32768 > "$o/ttft-h200.csv" 2> "$o/ttft-h200.log"
echo "ttft exit $? after $SECONDS s"; cat "$o/ttft-h200.csv"
wait; tail -2 "$o/build.log"
