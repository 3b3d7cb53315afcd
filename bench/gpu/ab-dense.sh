#!/usr/bin/env bash
# The batched decode step's dense Q8_0 products on the CUDA cores and on the int8 tensor cores
# (DecodeOptions::tensor_cores), alternated in one process: first the GPU tests that hold the
# tensor-core kernel to the one-token bits (matvec, decode), while the file is written; then
# decode_bench --batch with --dense cores,tensor, R rounds.
# B holds dsv4 (for the synthetic file), decode_bench, test_matvec and test_decode (the
# release test binaries of crates/cuda/tests/matvec.rs and decode.rs).
# Usage, on the GPU machine: bench/gpu/ab-dense.sh B [layers] [rounds] [batches]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}; R=${3:-2}; N=${4:-8,16,32}
. bench/gpu/lib.sh
model_and_tests "$B" "$L" matvec decode
for r in $(seq "$R"); do
    echo "== run $r"
    "$B/decode_bench" --model "$f" --layers "$L" --official --tokens 32 --batch "$N" --dense cores,tensor 2>&1 | grep "^batch"
done
