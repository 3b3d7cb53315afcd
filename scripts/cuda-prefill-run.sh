#!/usr/bin/env bash
# On the GPU machine, from a bundle made by scripts/cuda-gpu-bundle: the tests of the
# many-token path (matmul, forward parity, sessions), the matmul benchmark, then the prompt
# rate of decode_bench on synthetic Flash q2 models (official numerics, 2048-token prompt) for
# this build and, when the bundle holds them, earlier builds (`decode_bench_base`, `_mm`, `_v2`), on the
# same files and card. Usage: prefill.sh [layers...]   (default: 2 6)
set -u
cd "$(dirname "$0")"
export DSV4_REQUIRE_GPU=1 DSV4_REQUIRE_NVRTC=1 XDG_CACHE_HOME="$PWD/cache"
layers=${*:-2 6}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv
status=0
step() { echo "== $* ($(date +%T))"; }
step test_matmul
./test_matmul --test-threads 4 --nocapture || status=1
step test_forward
./test_forward --test-threads 1 --nocapture || status=1
step test_session
./test_session --test-threads 2 || status=1
step matmul_bench
./matmul_bench --reps 5 --tokens 16,64,256,512 --types q8_0,iq2_xxs,q2_k || status=1
for l in $layers; do
  f=/tmp/flash$l.gguf
  step "synth $l layers"
  ./dsv4 synth --preset flash --layers "$l" --quant q2 --seed 1 --out "$f" >/dev/null || { status=1; continue; }
  for b in decode_bench_base decode_bench_mm decode_bench_v2 decode_bench; do
    [ -x "./$b" ] || continue
    step "$b $l layers official"
    "./$b" --model "$f" --layers "$l" --prompt 2048 --tokens 16 --official 2>&1 | grep -v '^tokens' || status=1
  done
  step "decode_bench $l layers plain"
  ./decode_bench --model "$f" --layers "$l" --prompt 2048 --tokens 16 2>&1 | grep -v '^tokens' || status=1
  step "decode_bench $l layers official, 8192-token prompt, then profiled"
  ./decode_bench --model "$f" --layers "$l" --prompt 8192 --tokens 16 --official --profile 2>&1 | grep -v '^tokens' || status=1
  rm -f "$f"
done
step "done, status $status"
exit $status
