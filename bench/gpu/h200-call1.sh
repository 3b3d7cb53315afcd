#!/usr/bin/env bash
# First of two back-to-back calls on one H200 (bench/README.md, "43 layers"): builds the peers
# while writing the 43-layer file into a tmpfs, then runs dsv4's bench, the batch scheduler's
# time to first token during a 32K prefill, and the engine-on-CUDA test (batch of 8 included).
set -u
cd "$(dirname "$0")/../.."
B=target/gpu-h200
o=${OUT:-/tmp/out}
mkdir -p /tmp/f43
bench/gpu/build-peers.sh --src target/gpu-peers --layers 43 --jobs 12 > "$o/build.log" 2>&1 & bp=$!
bench/gpu/flash.sh 43 --engines none --bundle $B --text $B/promessi_sposi.txt --out /tmp/f43 > /dev/null 2>&1
bench/gpu/flash.sh 43 --engines dsv4 --bundle $B --text $B/promessi_sposi.txt --out /tmp/f43 --limit 240 > /dev/null 2>&1
left=$((560 - SECONDS))
echo "== ttft at ${SECONDS}s (limit ${left}s)" >> /tmp/f43/flash.log
XDG_CACHE_HOME=/tmp/dsv4-cache timeout $((left > 10 ? left - 40 : 1)) $B/dsv4 bench-batch -m /mnt/big/flash-q2-43L.gguf --backend cuda \
    --text $B/promessi_sposi.txt --ttft-long 32768 > /tmp/f43/ttft.csv 2>> /tmp/f43/flash.log
echo "ttft exit $?" >> /tmp/f43/flash.log
(cd $B && DSV4_REQUIRE_GPU=1 XDG_CACHE_HOME=/tmp/dsv4-cache timeout 30 ./test_engine_cuda --nocapture) >> /tmp/f43/flash.log 2>&1
echo "engine test exit $?" >> /tmp/f43/flash.log
wait $bp; echo "build exit $?" >> /tmp/f43/flash.log
cp /tmp/f43/*.csv /tmp/f43/*.log /tmp/f43/*.txt "$o/" 2>/dev/null
tail -4 "$o/build.log"; grep -v "^\s*$" /tmp/f43/flash.log | tail -40
