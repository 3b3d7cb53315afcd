#!/usr/bin/env bash
# Two builds of decode_bench on one synthetic Flash q2 file, alternated: B/decode_bench_a (the
# baseline) and B/decode_bench, then the GPU tests of the new build and per-kernel times of
# its step (ncu-step.sh). Usage, on the GPU machine: bench/gpu/ab-decode.sh B [layers]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}
. bench/gpu/lib.sh
model_and_tests "$B" "$L" matvec decode forward session
for r in 1 2; do
    for b in decode_bench_a decode_bench; do
        echo "== $b run $r" >> "$o/ab.txt"
        "$B/$b" --model "$f" --layers "$L" --numerics official,plain --tokens 64 --batch 1,8 > "$o/ab-$b-$r.txt" 2>&1
        echo "$b exit $?"
        grep -E "^\||^batch" "$o/ab-$b-$r.txt" >> "$o/ab.txt"
        rm -f "$o/ab-$b-$r.txt"
    done
done
cat "$o/ab.txt"
mkdir -p /tmp/ncu8; bash bench/gpu/ncu-step.sh "$B" "$f" "$L" 8 /tmp/ncu8 > "$o/ncu8.txt" 2>&1
head -36 "$o/ncu8.txt"
