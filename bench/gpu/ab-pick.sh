#!/usr/bin/env bash
# Logits reduced on the GPU (model/pick.cu) against whole rows reduced on the host, through
# the scheduler: B/dsv4_a (the same tree with the runner's decode step downloading whole rows
# and reducing them on the host) and B/dsv4, alternated, `bench-batch` greedy and sampled;
# the GPU tests of the new build first (while the file is written).
# Usage, on the GPU machine: bench/gpu/ab-pick.sh B [layers] [streams] [rounds]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}; S=${3:-1,8,32}; R=${4:-2}
. bench/gpu/lib.sh
model_and_tests "$B" "$L" decode engine_cuda
for r in $(seq "$R"); do
    for mode in "" --sampled; do
        for b in dsv4_a dsv4; do
            echo "== $b ${mode:-greedy} run $r"
            "$B/$b" bench-batch -m "$f" --backend cuda --text "$B/promessi_sposi.txt" --streams "$S" \
                --context 512 --decode 64 $mode 2>&1 | grep -v "^date"
        done
    done
done
