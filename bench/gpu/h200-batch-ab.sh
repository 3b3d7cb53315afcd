#!/usr/bin/env bash
# Two builds through the scheduler on the whole synthetic Flash q2 (43 layers) on one H200,
# alternated: B/dsv4_a (the baseline) and B/dsv4, `bench-batch` greedy for 1, 8 and 32
# streams, after the 86.7 GB file is written into a tmpfs. One device call (kind nvidia-h200,
# needs_h200, carry B). Usage: bench/gpu/h200-batch-ab.sh B [rounds]
# Environment: ORDER, the binaries in turn (default "dsv4_a dsv4" each round; v19 ran
# "dsv4_a dsv4 dsv4 dsv4_a" with rounds 1); TESTS, GPU test binaries of B to run while the
# file is written (e.g. "matvec decode forward"; none by default).
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; R=${2:-1}
. bench/gpu/lib.sh
if [ -n "${TESTS:-}" ]; then
    model_and_tests "$B" 43 $TESTS
else
    big_tmpfs
    f=/mnt/big/flash-q2-43L.gguf
    synth_bg "$B" 43 "$f"
    wait
    echo "synth done after $SECONDS s"
fi
for r in $(seq "$R"); do
    for b in ${ORDER:-dsv4_a dsv4}; do
        left=$((560 - SECONDS))
        echo "== $b run $r"
        timeout $((left > 20 ? left - 10 : 1)) "$B/$b" bench-batch -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
            --streams 1,8,32 --context 512 --decode 32 2> /dev/null | grep -v "^date"
        echo "exit $? after $SECONDS s"
    done
done
