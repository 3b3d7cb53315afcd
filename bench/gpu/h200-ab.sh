#!/usr/bin/env bash
# Two builds on the whole synthetic Flash q2 (43 layers) on one H200, alternated: B/dsv4_a (the
# baseline) and B/dsv4, `dsv4 bench` to 8K twice each, then `bench-batch` of the new build;
# the decode GPU test first, while the 86.7 GB file is written into a tmpfs. One device call
# (kind nvidia-h200, needs_h200, carry B). Usage: bench/gpu/h200-ab.sh B
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}
. bench/gpu/lib.sh
model_and_tests "$B" 43 decode
for r in 1 2; do
    for b in dsv4_a dsv4; do
        echo "== $b run $r"
        timeout 90 "$B/$b" bench -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
            --frontiers 2048,8192 --decode 64 2> /dev/null | grep -v "^date"
    done
done
left=$((580 - SECONDS))
timeout $((left > 20 ? left - 10 : 1)) "$B/dsv4" bench-batch -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
    --streams 1,8,32 --context 512 --decode 32 2> /dev/null
echo "bench-batch exit $? after $SECONDS s"
