#!/usr/bin/env bash
# Three builds' prompt rates alternated in one call: B/decode_bench_a (baseline),
# B/decode_bench_b and B/decode_bench, each prompt length, REPS rounds; with PROFILE=1 each run
# is followed by a --profile run of the same build (every operation synchronized) and its
# lines matching PROFILE_RE are printed. The model is a synthetic Flash q2 of L layers in /dev/shm.
#   bench/gpu/ab3-prefill.sh B [layers] [prompts] [reps]
set -u
B=${1:-target/gpu-bundle}; L=${2:-6}; P=${3:-4096,16384}; R=${4:-2}
o=${OUT:-/tmp/out}; mkdir -p "$o"
export XDG_CACHE_HOME=/tmp/dsv4-cache
f=/dev/shm/flash-q2-${L}L.gguf
[ -s "$f" ] || "$B/dsv4" synth --preset flash --layers "$L" --quant q2 --out "$f" > "$o/synth.log" 2>&1
for _ in $(seq "$R"); do for p in ${P//,/ }; do for b in decode_bench_a decode_bench_b decode_bench; do
    "$B/$b" --model "$f" --layers "$L" --official --prompt "$p" --tokens 4 > "$o/x.txt" 2>&1
    echo "$b prompt $p rc $?: $(grep -E '^layers' "$o/x.txt" | sed 's/; decode.*//')"
    if [ "${PROFILE:-0}" = 1 ]; then
        "$B/$b" --model "$f" --layers "$L" --official --prompt "$p" --tokens 4 --profile > "$o/x.txt" 2>&1
        grep -E "${PROFILE_RE:-IQ2_XXS 2048x4096}" "$o/x.txt" | head -3 | sed 's/^/    /'
    fi
done; done; done
rm -f "$o/x.txt"
