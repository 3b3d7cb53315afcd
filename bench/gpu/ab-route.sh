#!/usr/bin/env bash
# The one-warp router against the baseline: the GPU tests of forward and decode while the
# 6-layer file is written, then B/decode_bench_a (baseline) and B/decode_bench alternated:
# one session after a 2,048-token prompt (twice each), and batches of 1 and 8.
# Usage, on the GPU machine: bench/gpu/ab-route.sh B
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=6
. bench/gpu/lib.sh
model_and_tests "$B" "$L" forward decode
for r in 1 2; do
    for b in decode_bench_a decode_bench; do
        echo "== $b prompt 2048 run $r"
        "$B/$b" --model "$f" --layers "$L" --official --prompt 2048 --tokens 64 2>&1 | grep "^layers"
    done
done
for b in decode_bench_a decode_bench; do
    echo "== $b batches"
    "$B/$b" --model "$f" --layers "$L" --official --tokens 32 --batch 1,8 2>&1 | grep "^batch"
done
