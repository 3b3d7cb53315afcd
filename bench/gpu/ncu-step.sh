#!/usr/bin/env bash
# Per-kernel GPU times and DRAM bytes of the last decode step of decode_bench (graph replays
# profiled node by node), for one session and for a batch:
#   bench/gpu/ncu-step.sh BUNDLE MODEL LAYERS BATCH OUT [PROMPT [DECODE_BENCH_ARGS..]]
# PROMPT (default 16) is the context the profiled steps decode at; further arguments go to
# decode_bench (for example --dense tensor).
# Each kernel is timed alone (ncu serializes them), so the sum is an upper bound on the
# graph's time and the split between kernels is what it says. Prints, per step, the kernels
# aggregated by name and grid (time, bytes read, achieved GB/s), then the first layer's
# kernels in launch order.
set -u
B=$1; f=$2; L=$3; N=$4; o=$5; P=${6:-16}; X=("${@:7}")
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
export XDG_CACHE_HOME=/tmp/dsv4-cache
"$NCU" --graph-profiling node --clock-control none --cache-control none \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --csv \
  --log-file "$o/ncu.csv" "$B/decode_bench" --model "$f" --layers "$L" --numerics official --prompt "$P" --tokens 3 --batch "$N" "${X[@]}" \
  > "$o/ncu-bench.out" 2> "$o/ncu.err"
echo "ncu rc $?"; tail -3 "$o/ncu.err"
python3 - "$o/ncu.csv" "$N" <<'PY'
import csv, sys, collections
allr = list(csv.reader(open(sys.argv[1])))
h = next(i for i, r in enumerate(allr) if "Kernel Name" in r)
hdr = allr[h]; rows = [r for r in allr[h + 1:] if len(r) == len(hdr)]
ii = hdr.index("ID"); ki = hdr.index("Kernel Name"); gi = hdr.index("Grid Size")
mi = hdr.index("Metric Name"); vi = hdr.index("Metric Value"); ui = hdr.index("Metric Unit")
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1, "usecond": 1, "ms": 1e3, "msecond": 1e3,
         "byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}
ks = collections.OrderedDict()
for r in rows:
    k = ks.setdefault(r[ii], {"name": r[ki].split("(")[0][:34], "grid": r[gi].replace(" ", "")})
    k[r[mi]] = float(r[vi].replace(",", "")) * scale.get(r[ui], 1)
ks = list(ks.values())
us = lambda k: k.get("gpu__time_duration.sum", 0.0)
rd = lambda k: k.get("dram__bytes_read.sum", 0.0)
starts = [i for i, k in enumerate(ks) if k["name"].startswith("embed")]
def summary(a, b, title):
    seg = ks[a:b]; tot = sum(us(k) for k in seg); byt = sum(rd(k) for k in seg)
    print(f"== {title}: {len(seg)} kernels, {tot:.1f} us summed, {byt / 1e6:.1f} MB read ({byt / tot / 1e3:.0f} GB/s)")
    agg = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for k in seg:
        a_ = agg[k["name"] + " " + k["grid"]]; a_[0] += us(k); a_[1] += rd(k); a_[2] += 1
    for name, (t, b_, n) in sorted(agg.items(), key=lambda x: -x[1][0])[:30]:
        print(f"{t:9.1f} us {n:4d}x {b_ / 1e6:9.2f} MB {b_ / max(t, 1e-9) / 1e3:6.0f} GB/s  {name}")
    # The first layer in launch order: from the first hc_proj to the third one (attention
    # and FFN read-outs of layer 0 are the first two).
    hp = [i for i in range(a, b) if ks[i]["name"].startswith("hc_proj")]
    if len(hp) >= 3:
        print(f"-- layer 0 in order")
        for k in ks[hp[0]:hp[2]]:
            print(f"{us(k):8.1f} us {rd(k) / 1e6:8.2f} MB {rd(k) / max(us(k), 1e-9) / 1e3:6.0f} GB/s  {k['name']} {k['grid']}")
single = [i for i in starts if ks[i]["grid"].endswith(",1,1)")]
if single:
    s0 = single[-1]; nxt = next((i for i in starts if i > s0), len(ks))
    summary(s0, nxt, "last single-session step")
summary(starts[-1], len(ks), f"last step of the batch of {sys.argv[2]}")
PY
