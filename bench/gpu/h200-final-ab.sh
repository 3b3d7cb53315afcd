#!/usr/bin/env bash
# The closing check of a session on one H200: the GPU tests named in TESTS (default matvec,
# decode, forward) while the whole synthetic Flash q2 (43 layers, 86.7 GB) is written into a
# tmpfs, then `bench-batch` (greedy, 1, 8 and 32 streams) of B/dsv4_a (the baseline) and
# B/dsv4, in the order a, new, new, a. One device call (kind nvidia-h200, needs_h200).
# Usage, on the GPU machine: bench/gpu/h200-final-ab.sh B
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}
. bench/gpu/lib.sh
model_and_tests "$B" 43 ${TESTS:-matvec decode forward}
r=0
for b in dsv4_a dsv4 dsv4 dsv4_a; do
    r=$((r + 1))
    left=$((560 - SECONDS))
    echo "== $b ($r)"
    timeout $((left > 20 ? left - 10 : 1)) "$B/$b" bench-batch -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
        --streams 1,8,32 --context 512 --decode 32 2> /dev/null | grep -v "^date"
    echo "exit $? after $SECONDS s"
done
