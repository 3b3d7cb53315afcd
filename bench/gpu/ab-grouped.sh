#!/usr/bin/env bash
# The routed experts of a batched decode step read per pick (slots) or grouped by expert on
# the device, alternated in one process, and the baseline build (B/decode_bench_a) beside this
# one (B/decode_bench) for one session after a 2,048-token prompt and for batches; the GPU
# tests of the new build first (while the file is written).
# Usage, on the GPU machine: bench/gpu/ab-grouped.sh B [layers] [rounds] [batches]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}; R=${3:-2}; N=${4:-8,16,32}
. bench/gpu/lib.sh
model_and_tests "$B" "$L" decode forward matvec engine_cuda
for r in $(seq "$R"); do
    for b in decode_bench_a decode_bench; do
        echo "== $b prompt 2048 run $r"
        "$B/$b" --model "$f" --layers "$L" --official --prompt 2048 --tokens 64 2>&1 | grep "^layers"
    done
    echo "== decode_bench_a batches run $r"
    "$B/decode_bench_a" --model "$f" --layers "$L" --official --tokens 32 --batch "$N" 2>&1 | grep "^batch"
    echo "== decode_bench batches run $r"
    "$B/decode_bench" --model "$f" --layers "$L" --official --tokens 32 --batch "$N" --experts slots,grouped 2>&1 | grep "^batch"
done
