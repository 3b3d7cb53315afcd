#!/usr/bin/env bash
# Second call on the same warm H200: ds4 and llama.cpp on the file call 1 wrote, then the
# summary of all three engines.
set -u
cd "$(dirname "$0")/../.."
B=target/gpu-h200
o=${OUT:-/tmp/out}
bench/gpu/flash.sh 43 --engines ds4,llama --bundle $B --text $B/promessi_sposi.txt --out /tmp/f43 --limit 270 --llama-args "-r 2" > /dev/null 2>&1
cp /tmp/f43/*.csv /tmp/f43/*.log /tmp/f43/*.txt "$o/" 2>/dev/null
grep -v "^\s*$" /tmp/f43/flash.log | tail -30
