#!/usr/bin/env bash
# The decode step of two builds on one synthetic Flash q2 file, alternated on one machine:
# B/decode_bench_a (the baseline) and B/decode_bench, one session after each prompt length,
# then batches of 8 and 32 sessions; the GPU tests of the new build first (while the file is
# written). Usage, on the GPU machine: bench/gpu/ab-step.sh B [layers] [prompts] [rounds]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}; P=${3:-2048,65536}; R=${4:-2}
. bench/gpu/lib.sh
model_and_tests "$B" "$L" decode forward session long_context matvec engine_cuda
for r in $(seq "$R"); do
    for p in ${P//,/ }; do
        for b in decode_bench_a decode_bench; do
            echo "== $b prompt $p run $r"
            "$B/$b" --model "$f" --layers "$L" --official --prompt "$p" --tokens 64 2>&1 | grep "^layers"
        done
    done
    for b in decode_bench_a decode_bench; do
        echo "== $b batches run $r"
        "$B/$b" --model "$f" --layers "$L" --official --tokens 32 --batch 1,8,32 2>&1 | grep "^batch"
    done
done
