#!/usr/bin/env bash
# Two builds through the scheduler, alternated: B/dsv4_a (the baseline) and B/dsv4,
# `bench-batch` greedy; the GPU tests of the new build first (while the file is written).
# Usage, on the GPU machine: bench/gpu/ab-batch.sh B [layers] [streams] [rounds]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}; S=${3:-1,8,32}; R=${4:-2}
. bench/gpu/lib.sh
model_and_tests "$B" "$L" decode forward matvec engine_cuda
for r in $(seq "$R"); do
    for b in dsv4_a dsv4; do
        echo "== $b greedy run $r"
        "$B/$b" bench-batch -m "$f" --backend cuda --text "$B/promessi_sposi.txt" --streams "$S" \
            --context 512 --decode 64 2>&1 | grep -v "^date"
    done
done
