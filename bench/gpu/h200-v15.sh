#!/usr/bin/env bash
# The whole synthetic Flash q2 (43 layers) on one H200 after v14-v15: the GPU tests of decode
# and the engine while the 86.7 GB file is written into a tmpfs, `dsv4 bench` to 32K, then
# `dsv4 bench-batch` for 1, 8 and 32 streams, greedy and sampled. One device call (kind
# nvidia-h200, needs_h200, carry the bundle B: dsv4, test_decode, test_engine_cuda,
# promessi_sposi.txt). Usage: bench/gpu/h200-v15.sh B
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}
. bench/gpu/lib.sh
model_and_tests "$B" 43 decode engine_cuda
timeout 150 "$B/dsv4" bench -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
    --frontiers 2048,8192,32768 --decode 64 > "$o/bench-h200.csv" 2> "$o/bench-h200.log"
echo "dsv4 bench exit $? after $SECONDS s"
cat "$o/bench-h200.csv"; tail -2 "$o/bench-h200.log"
for mode in "" --sampled; do
    left=$((580 - SECONDS))
    timeout $((left > 20 ? left - 10 : 1)) "$B/dsv4" bench-batch -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
        --streams 1,8,32 --context 512 --decode 32 $mode > "$o/batch-h200${mode}.csv" 2> "$o/batch-h200${mode}.log"
    echo "bench-batch ${mode:-greedy} exit $? after $SECONDS s"
    cat "$o/batch-h200${mode}.csv"; tail -2 "$o/batch-h200${mode}.log"
done
