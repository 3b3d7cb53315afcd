#!/usr/bin/env bash
# Per-kernel GPU times of one decode step (6 synthetic Flash layers, eager step path, position ~159).
cd "$(dirname "$0")"
export XDG_CACHE_HOME="$PWD/cache"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
"$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
  --launch-skip $((150*159)) --launch-count 150 \
  --log-file $1/ncu.csv ./decode_bench --layers 6 --prompt 1 --tokens 160 --decode eager > $1/bench.out 2> $1/ncu.err
echo "rc $?"; tail -5 $1/ncu.err
python3 - "$1/ncu.csv" <<'PY'
import csv, sys, collections
allr = list(csv.reader(open(sys.argv[1])))
h = next(i for i, r in enumerate(allr) if "Kernel Name" in r)
hdr = allr[h]; rows = [r for r in allr[h + 1:] if len(r) == len(hdr)]
ki = hdr.index("Kernel Name"); gi = hdr.index("Grid Size"); bi = hdr.index("Block Size"); vi = hdr.index("Metric Value"); ui = hdr.index("Metric Unit")
tot = 0.0; per = []
for i, r in enumerate(rows):
    v = float(r[vi].replace(",", "")); v = v / 1000 if r[ui] == "nsecond" else (v * 1000 if r[ui] == "msecond" else v)
    tot += v; per.append((v, i, r[ki][:60], r[gi], r[bi]))
print(f"{len(rows)} kernels, total {tot:.1f} us")
agg = collections.defaultdict(lambda: [0.0, 0])
for v, i, k, g, b in per: agg[k][0] += v; agg[k][1] += 1
for k, (v, n) in sorted(agg.items(), key=lambda x: -x[1][0]): print(f"{v:9.1f} us {n:4d}x  {k}")
print("--- one layer (#i: us kernel grid block), CSA layer 2 = kernels from the 45th on")
for v, i, k, g, b in per[:80]: print(f"#{i:3d} {v:7.1f} {k} {g} {b}")
PY
