#!/usr/bin/env bash
# Programmatic dependent launches (launch.rs) on one GPU: the GPU tests (graph == eager,
# batch == alone, parity, sessions) with overlapping launches on, then decode_bench on a
# synthetic Flash q2 of N layers with the two launch modes alternated, then per-kernel bytes
# and times (ncu-step.sh). Usage, on the GPU machine after scripts/cuda-gpu-bundle B:
#   bench/gpu/pdl.sh B [layers]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}
. bench/gpu/lib.sh
model_and_tests "$B" "$L" matvec decode forward session
"$B/decode_bench" --model "$f" --layers "$L" --numerics official,plain --tokens 64 --launches overlap,serial,overlap,serial > "$o/decode.txt" 2>&1
echo "decode_bench exit $?"; grep -E "^\|" "$o/decode.txt"
"$B/decode_bench" --model "$f" --layers "$L" --numerics official --tokens 32 --batch 1,8,32 --launches overlap,serial,overlap,serial > "$o/batch.txt" 2>&1
echo "batch exit $?"; grep -E "^batch" "$o/batch.txt"
for n in 8; do
    mkdir -p /tmp/ncu$n; bash bench/gpu/ncu-step.sh "$B" "$f" "$L" $n /tmp/ncu$n > "$o/ncu$n.txt" 2>&1
done
head -50 "$o/ncu8.txt"
