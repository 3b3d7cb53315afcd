#!/usr/bin/env bash
# Two builds on long prompts: B/decode_bench_a (the baseline) and B/decode_bench, prompt rate
# and the decode step after it, for each prompt length, on a synthetic Flash q2 of N layers;
# then the GPU tests of the new build (the long-context test included) and its prompt profile
# at the longest length. Usage, on the GPU machine: bench/gpu/ab-prefill.sh B [layers] [prompts]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}; P=${3:-4096,16384}
. bench/gpu/lib.sh
model_and_tests "$B" "$L" decode forward session long_context
for p in ${P//,/ }; do
    for b in decode_bench_a decode_bench; do
        "$B/$b" --model "$f" --layers "$L" --official --prompt "$p" --tokens 32 > "$o/x.txt" 2>&1
        echo "$b prompt $p exit $?: $(grep -E '^layers' "$o/x.txt")" | tee -a "$o/ab.txt"
    done
done
last=${P##*,}
"$B/decode_bench" --model "$f" --layers "$L" --official --prompt "$last" --tokens 4 --profile > "$o/profile-$last.txt" 2>&1
grep -E "profiled" -A 16 "$o/profile-$last.txt"
rm -f "$o/x.txt"
