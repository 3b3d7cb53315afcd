#!/usr/bin/env bash
# Several builds of the decode step on one synthetic Flash q2 file, alternated on one machine:
# B/decode_bench_<x> for each suffix x listed (an empty suffix is B/decode_bench, the newest);
# the GPU tests of the newest build first (matvec, decode, forward), B/matvec_bench_<x> on
# the one-token quantized kernels for the matvec suffixes listed, then one session after 2K
# and batches of 1, 8 and 32 sessions R times, and an eager profile of the newest build's
# batches of 8 and 32. TESTS (environment) lists other GPU test binaries to run first.
# Usage, on the GPU machine: bench/gpu/ab3.sh B [layers] [rounds] [builds] [matvec builds]
#   e.g. bench/gpu/ab3.sh /tmp/b 6 2 a,c, c,
set -u
cd "$(dirname "$0")/../.."
B=${1:-target/gpu-bundle}; L=${2:-6}; R=${3:-2}; D=${4:-a,}; M=${5:-a,}
. bench/gpu/lib.sh
model_and_tests "$B" "$L" ${TESTS:-matvec decode forward}
name() { if [ -n "$2" ]; then echo "$1_$2"; else echo "$1"; fi; }
for r in $(seq "$R"); do
    for x in ${M//,/ } ""; do
        case ",$M," in *",$x,"*) ;; *) continue ;; esac
        b=$(name matvec_bench "$x")
        echo "== $b run $r"
        "$B/$b" --types q8_0,iq2_xxs,q2_k --batch 1 --reps 20 2>&1 | grep -v "^#" | grep -E "slots|g4n1|g2n1|q8act|copy"
    done
done
for r in $(seq "$R"); do
    for x in ${D//,/ } ""; do
        case ",$D," in *",$x,"*) ;; *) continue ;; esac
        b=$(name decode_bench "$x")
        echo "== $b prompt 2048 run $r"
        "$B/$b" --model "$f" --layers "$L" --official --prompt 2048 --tokens 64 2>&1 | grep "^layers"
        echo "== $b batches run $r"
        "$B/$b" --model "$f" --layers "$L" --official --tokens 32 --batch 1,8,32 2>&1 | grep "^batch"
    done
done
"$B/decode_bench" --model "$f" --layers "$L" --official --tokens 8 --batch 8,32 --profile > "$o/profile.txt" 2>&1
echo "profile exit $?"
