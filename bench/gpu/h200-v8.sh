#!/usr/bin/env bash
# The whole synthetic Flash q2 (43 layers) on one H200 after the launch and kernel changes of
# bench/README.md "v8": the GPU tests (while the 86.7 GB file is written into a tmpfs), then
# decode_bench (one session and batches of 8 and 32, both launch modes) and dsv4 bench-batch.
# One device call: kind nvidia-h200, needs_h200, carry the bundle B (dsv4, decode_bench, the
# test binaries, promessi_sposi.txt).
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}
. bench/gpu/lib.sh
model_and_tests "$B" 43 matvec decode forward session
timeout 300 "$B/decode_bench" --model "$f" --layers 43 --numerics official --tokens 64 --prompt 32 \
    --launches overlap,serial --batch 1,8,32 > "$o/decode-h200.txt" 2>&1
echo "decode_bench exit $? after $SECONDS s"
grep -E "^\||^batch" "$o/decode-h200.txt"
left=$((585 - SECONDS))
timeout $((left > 20 ? left - 10 : 1)) "$B/dsv4" bench-batch -m "$f" --backend cuda \
    --text "$B/promessi_sposi.txt" --streams 1,8,32 --context 512 --decode 32 > "$o/batch-h200.csv" 2> "$o/batch-h200.log"
echo "bench-batch exit $? after $SECONDS s"
cat "$o/batch-h200.csv"; tail -3 "$o/batch-h200.log"
