#!/usr/bin/env bash
# Where a long prompt's time goes: decode_bench --profile (every operation synchronized and
# timed on its own) on a synthetic Flash q2 of N layers, for prompts of several lengths.
# Usage, on the GPU machine: bench/gpu/prefill-profile.sh B [layers] [prompts]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}; P=${3:-4096,16384}
o=${OUT:-/tmp/out}; mkdir -p "$o"
export XDG_CACHE_HOME=/tmp/dsv4-cache
f=/dev/shm/flash-q2-${L}L.gguf
[ -s "$f" ] || "$B/dsv4" synth --preset flash --layers "$L" --quant q2 --out "$f" > "$o/synth.log" 2>&1
for p in ${P//,/ }; do
    "$B/decode_bench" --model "$f" --layers "$L" --official --prompt "$p" --tokens 4 --profile > "$o/prefill-$p.txt" 2>&1
    echo "prompt $p exit $?"
    grep -E "prompt [0-9]+ tokens|profiled" -A 24 "$o/prefill-$p.txt" | head -40
done
