#!/usr/bin/env bash
# The decode-graph branch's GPU run (copied into the bundle folder made by
# scripts/cuda-gpu-bundle): the forward-pass tests (the graph's among them), the engine on the
# CUDA runner, then decode_bench before (chunk path) and after (eager step, graph step) on 2
# and 6 synthetic Flash layers, plain and official numerics. Log to $1 (default ./log.txt).
set -u
cd "$(dirname "$0")"
log=${1:-log.txt}
export DSV4_REQUIRE_GPU=1 DSV4_REQUIRE_NVRTC=1 XDG_CACHE_HOME="$PWD/cache"
{
date -u
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv
status=0
./test_decode --test-threads 1 --nocapture || status=1
./test_forward --test-threads 1 --nocapture || status=1
./test_session --test-threads 1 --nocapture || status=1
./test_engine_cuda --nocapture || status=1
for n in 2 6; do
    ./decode_bench --layers $n --numerics plain,official --decode chunk,eager,graph --tokens 129 || status=1
done
echo "status $status"
} >"$log" 2>&1
grep -E "^test |test result|passed|FAILED|panicked|kernels per token|^\||^layers|status|synthesized|uploaded" "$log" | grep -v "^tokens" | tail -120
