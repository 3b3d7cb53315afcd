#!/usr/bin/env bash
# How the batched decode step reads the routed experts, per batch size: `--experts slots` and
# `--experts grouped` alternated in one decode_bench process (same file, same sessions), for
# each build B/decode_bench_<x> listed (empty suffix: B/decode_bench). Greedy, official.
# Usage, on the GPU machine: bench/gpu/experts-ab.sh B LAYERS BATCHES [builds]
#   e.g. bench/gpu/experts-ab.sh /tmp/b 6 8,16,24,32 ,x
set -u
cd "$(dirname "$0")/../.."
B=$1; L=$2; N=$3; D=${4:-,}
. bench/gpu/lib.sh
f=/dev/shm/flash-q2-${L}L.gguf
synth_bg "$B" "$L" "$f"
wait
for x in ${D//,/ } ""; do
    case ",$D," in *",$x,"*) ;; *) continue ;; esac
    b=decode_bench; [ -n "$x" ] && b=decode_bench_$x
    echo "== $b"
    "$B/$b" --model "$f" --layers "$L" --official --tokens 32 --batch "$N" --experts slots,grouped,slots,grouped 2>&1 | grep "^batch"
done
