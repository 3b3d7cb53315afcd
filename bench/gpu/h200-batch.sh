#!/usr/bin/env bash
# Batched decode on the whole synthetic Flash q2 (43 layers) on one H200 (bench/README.md,
# "Batched decode on the GPU"): writes the 86.7 GB file into a tmpfs, then `dsv4 bench-batch`
# for 1, 8 and 32 streams. One device call (kind nvidia-h200, needs_h200, carry the bundle).
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}
. bench/gpu/lib.sh
model_and_tests "$B" 43
left=$((570 - SECONDS))
XDG_CACHE_HOME=/tmp/dsv4-cache timeout $((left > 20 ? left - 10 : 1)) "$B/dsv4" bench-batch -m "$f" --backend cuda \
    --text "$B/promessi_sposi.txt" --streams 1,8,32 --context 512 --decode 32 > "$o/batch-h200.csv" 2> "$o/batch-h200.log"
echo "bench-batch exit $? after $SECONDS s"
cat "$o/batch-h200.csv"; tail -3 "$o/batch-h200.log"
