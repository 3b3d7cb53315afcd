#!/usr/bin/env bash
# Per-kernel GPU times of the last decode step of decode_bench (graph replays profiled node by
# node), for one session and for a batch: bench/gpu/ncu-step.sh BUNDLE MODEL LAYERS BATCH OUT.
# Each kernel is timed alone (ncu serializes them), so the sum is an upper bound on the
# graph's time and the split between kernels is what it says.
set -u
B=$1; f=$2; L=$3; N=$4; o=$5
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
export XDG_CACHE_HOME=/tmp/dsv4-cache
"$NCU" --graph-profiling node --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
  --log-file "$o/ncu.csv" "$B/decode_bench" --model "$f" --layers "$L" --numerics official --prompt 16 --tokens 3 --batch "$N" \
  > "$o/ncu-bench.out" 2> "$o/ncu.err"
echo "ncu rc $?"; tail -3 "$o/ncu.err"
python3 - "$o/ncu.csv" "$N" <<'PY'
import csv, sys, collections
allr = list(csv.reader(open(sys.argv[1])))
h = next(i for i, r in enumerate(allr) if "Kernel Name" in r)
hdr = allr[h]; rows = [r for r in allr[h + 1:] if len(r) == len(hdr)]
ki = hdr.index("Kernel Name"); gi = hdr.index("Grid Size"); vi = hdr.index("Metric Value"); ui = hdr.index("Metric Unit")
def us(r):
    v = float(r[vi].replace(",", ""))
    return v / 1000 if r[ui] in ("ns", "nsecond") else (v * 1000 if r[ui] in ("ms", "msecond") else v)
# Steps start at `embed`; a decode step's embed has grid (x, tokens, 1).
starts = [i for i, r in enumerate(rows) if r[ki].startswith("embed")]
def summary(a, b, title):
    seg = rows[a:b]; tot = sum(us(r) for r in seg)
    print(f"== {title}: {len(seg)} kernels, {tot:.1f} us summed")
    agg = collections.defaultdict(lambda: [0.0, 0])
    for r in seg:
        k = r[ki].split("(")[0][:40] + " " + r[gi]; agg[k][0] += us(r); agg[k][1] += 1
    for k, (v, n) in sorted(agg.items(), key=lambda x: -x[1][0])[:28]: print(f"{v:9.1f} us {n:4d}x  {k}")
# The single-session decode steps are the starts whose embed grid has y == 1 after the prompt;
# the batch steps the last ones.
single = [i for i in starts if rows[i][gi].replace(" ", "").endswith(",1,1)") ]
last_single = single[-1] if single else None
if last_single is not None:
    nxt = next((i for i in starts if i > last_single), len(rows))
    summary(last_single, nxt, "last single-session step")
summary(starts[-1], len(rows), f"last step of the batch of {sys.argv[2]}")
PY
