#!/usr/bin/env bash
# The issue #7 benchmark on the whole synthetic Flash q2 (43 layers, 86.7 GB in a tmpfs) on one
# H200: the GPU tests while the file is written, then `dsv4 bench` walking promessi_sposi.txt
# to the frontiers (prefill rate of each interval, greedy decode at each frontier).
# One device call: kind nvidia-h200, needs_h200, carry the bundle B (dsv4, the test binaries,
# promessi_sposi.txt). Usage: bench/gpu/h200-bench.sh B [frontiers]
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; F=${2:-2048,8192,16384,32768,65536}
o=${OUT:-/tmp/out}
mkdir -p "$o" /mnt/big
mountpoint -q /mnt/big || mount -t tmpfs -o size=92G tmpfs /mnt/big
f=/mnt/big/flash-q2-43L.gguf
export DSV4_REQUIRE_GPU=1 DSV4_REQUIRE_NVRTC=1 XDG_CACHE_HOME=/tmp/dsv4-cache
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$o/card.txt" 2>&1
t0=$SECONDS
( [ -s "$f" ] || "$B/dsv4" synth --preset flash --layers 43 --quant q2 --out "$f" > "$o/synth.log" 2>&1 ) &
for t in decode forward session long_context; do
    (cd "$B" && ./test_$t --test-threads 2 --nocapture) >> "$o/tests.log" 2>&1
    echo "test_$t exit $?"
done
wait
echo "synth done after $((SECONDS - t0)) s"
grep -hE "test result|FAIL|panicked" "$o/tests.log" | head -20
left=$((580 - SECONDS))
timeout $((left > 20 ? left - 10 : 1)) "$B/dsv4" bench -m "$f" --backend cuda --text "$B/promessi_sposi.txt" \
    --frontiers "$F" --decode 64 > "$o/bench-h200.csv" 2> "$o/bench-h200.log"
echo "dsv4 bench exit $? after $SECONDS s"
cat "$o/bench-h200.csv"; tail -3 "$o/bench-h200.log"
