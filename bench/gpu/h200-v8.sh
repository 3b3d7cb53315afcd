#!/usr/bin/env bash
# The whole synthetic Flash q2 (43 layers) on one H200 after the launch and kernel changes of
# bench/README.md "v8": the GPU tests (while the 86.7 GB file is written into a tmpfs), then
# decode_bench (one session and batches of 8 and 32, both launch modes) and dsv4 bench-batch.
# One device call: kind nvidia-h200, needs_h200, carry the bundle B (dsv4, decode_bench, the
# test binaries, promessi_sposi.txt).
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}
o=${OUT:-/tmp/out}
mkdir -p "$o" /mnt/big
mountpoint -q /mnt/big || mount -t tmpfs -o size=92G tmpfs /mnt/big
f=/mnt/big/flash-q2-43L.gguf
export DSV4_REQUIRE_GPU=1 DSV4_REQUIRE_NVRTC=1 XDG_CACHE_HOME=/tmp/dsv4-cache
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$o/card.txt" 2>&1
t0=$SECONDS
( [ -s "$f" ] || "$B/dsv4" synth --preset flash --layers 43 --quant q2 --out "$f" > "$o/synth.log" 2>&1 ) &
for t in matvec decode forward session; do
    (cd "$B" && ./test_$t --test-threads 2 --nocapture) >> "$o/tests.log" 2>&1
    echo "test_$t exit $?"
done
wait
echo "synth done after $((SECONDS - t0)) s"
grep -hE "test result|FAIL|panicked" "$o/tests.log" | head -20
timeout 300 "$B/decode_bench" --model "$f" --layers 43 --numerics official --tokens 64 --prompt 32 \
    --launches overlap,serial --batch 1,8,32 > "$o/decode-h200.txt" 2>&1
echo "decode_bench exit $? after $SECONDS s"
grep -E "^\||^batch" "$o/decode-h200.txt"
left=$((585 - SECONDS))
timeout $((left > 20 ? left - 10 : 1)) "$B/dsv4" bench-batch -m "$f" --backend cuda \
    --text "$B/promessi_sposi.txt" --streams 1,8,32 --context 512 --decode 32 > "$o/batch-h200.csv" 2> "$o/batch-h200.log"
echo "bench-batch exit $? after $SECONDS s"
cat "$o/batch-h200.csv"; tail -3 "$o/batch-h200.log"
