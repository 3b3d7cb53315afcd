#!/usr/bin/env bash
# Two builds on long prompts: B/decode_bench_a (the baseline) and B/decode_bench, prompt rate
# and the decode step after it, for each prompt length, on a synthetic Flash q2 of N layers;
# then the GPU tests of the new build (the long-context test included) and its prompt profile
# at the longest length. Usage, on the GPU machine: bench/gpu/ab-prefill.sh B [layers] [prompts]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}; P=${3:-4096,16384}
o=${OUT:-/tmp/out}; mkdir -p "$o"
export DSV4_REQUIRE_GPU=1 DSV4_REQUIRE_NVRTC=1 XDG_CACHE_HOME=/tmp/dsv4-cache
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$o/card.txt" 2>&1
f=/dev/shm/flash-q2-${L}L.gguf
"$B/dsv4" synth --preset flash --layers "$L" --quant q2 --out "$f" > "$o/synth.log" 2>&1 &
for t in decode forward session long_context; do
    (cd "$B" && ./test_$t --test-threads 2 --nocapture) >> "$o/tests.log" 2>&1
    echo "test_$t exit $?"
done
wait
grep -hE "test result|FAIL|panicked|max rel" "$o/tests.log" | head -20
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
