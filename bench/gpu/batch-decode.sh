#!/usr/bin/env bash
# Batched decode on one GPU (bench/README.md, "Batched decode"): the decode-step tests (a
# step of several sessions equals each alone, bit for bit), the engine on the CUDA runner
# (the batch of 8), then on a synthetic Flash q2 of N layers in a tmpfs: aggregate decode of
# 1, 8 and 32 streams (`dsv4 bench-batch`) and the single-stream step (`decode_bench`).
# Usage, in the repository on the GPU machine, after scripts/cuda-gpu-bundle B:
#   bench/gpu/batch-decode.sh [B] [layers] [streams]     (default target/gpu-bundle 6 1,8,32)
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}
L=${2:-6}
S=${3:-1,8,32}
o=${OUT:-/tmp/out}
mkdir -p "$o"
export DSV4_REQUIRE_GPU=1 DSV4_REQUIRE_NVRTC=1 XDG_CACHE_HOME=/tmp/dsv4-cache
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$o/card.txt" 2>&1
for t in matvec decode forward session long_context; do
    (cd "$B" && ./test_$t --test-threads 2 --nocapture) > "$o/test_$t.log" 2>&1
    echo "test_$t exit $?"
done
(cd "$B" && ./test_engine_cuda --nocapture) > "$o/test_engine_cuda.log" 2>&1
echo "test_engine_cuda exit $?"
f=/dev/shm/flash-q2-${L}L.gguf
"$B/dsv4" synth --preset flash --layers "$L" --quant q2 --out "$f" > "$o/synth.log" 2>&1
echo "synth exit $?"
for num in "" --plain-numerics; do
    "$B/dsv4" bench-batch -m "$f" --backend cuda --text "$B/promessi_sposi.txt" --streams "$S" --context 512 --decode 64 $num >> "$o/batch.csv" 2>> "$o/batch.log"
    echo "bench-batch $num exit $?"
done
"$B/decode_bench" --model "$f" --layers "$L" --numerics official,plain --tokens 64 > "$o/decode_bench.txt" 2>&1
echo "decode_bench exit $?"
rm -f "$f"
grep -hE "equal each|test result|FAIL|panicked" "$o"/test_*.log | head -30
cat "$o/batch.csv"
tail -12 "$o/decode_bench.txt"
