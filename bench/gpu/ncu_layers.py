#!/usr/bin/env python3
"""Layers 3 and 4 (Flash's first ratio-128 and ratio-4 layers with top-k routing) of the last
decode step in an ncu log of bench/gpu/ncu-step.sh, kernel by kernel in launch order, then what
follows the last layer (the output head): GPU time, DRAM bytes read, achieved GB/s.

    ncu_layers.py LOG
"""
import csv, sys, collections
allr = list(csv.reader(open(sys.argv[1])))
h = next(i for i, r in enumerate(allr) if "Kernel Name" in r)
hdr = allr[h]; rows = [r for r in allr[h + 1:] if len(r) == len(hdr)]
ii = hdr.index("ID"); ki = hdr.index("Kernel Name"); gi = hdr.index("Grid Size"); bi = hdr.index("Block Size")
mi = hdr.index("Metric Name"); vi = hdr.index("Metric Value"); ui = hdr.index("Metric Unit")
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1, "usecond": 1, "ms": 1e3, "msecond": 1e3, "byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}
ks = collections.OrderedDict()
for r in rows:
    k = ks.setdefault(r[ii], {"name": r[ki].split("(")[0], "grid": r[gi].replace(" ", ""), "block": r[bi].replace(" ","")})
    k[r[mi]] = float(r[vi].replace(",", "")) * scale.get(r[ui], 1)
ks = list(ks.values())
starts = [i for i, k in enumerate(ks) if k["name"].startswith("embed")]
print(len(ks), "kernels;", len(starts), "steps; embed grids", [ks[i]["grid"] for i in starts][-6:])
s0 = starts[-1]; seg = ks[s0:]
hp = [i for i, k in enumerate(seg) if k["name"] == "hc_proj"]
print("hc_proj count", len(hp))
for L in (l for l in (3, 4) if 2 * l + 2 < len(hp)):
    a, b = hp[2*L], hp[2*L+2]
    print(f"-- layer {L}: {b-a} kernels, {sum(k['gpu__time_duration.sum'] for k in seg[a:b]):.1f} us, {sum(k['dram__bytes_read.sum'] for k in seg[a:b])/1e6:.1f} MB")
    for k in seg[a:b]:
        t = k["gpu__time_duration.sum"]; rd = k["dram__bytes_read.sum"]
        print(f"{t:7.1f} us {rd/1e6:8.2f} MB {rd/t/1e3:6.0f} GB/s  {k['name']} {k['grid']}x{k['block']}")
# The layers' hc_proj come in pairs; an odd last one is the output head's read-out.
print("-- after the last layer")
for k in seg[hp[-1] if len(hp) % 2 else len(seg):]:
    t = k["gpu__time_duration.sum"]; rd = k["dram__bytes_read.sum"]
    print(f"{t:7.1f} us {rd/1e6:8.2f} MB {rd/t/1e3:6.0f} GB/s  {k['name']} {k['grid']}x{k['block']}")
print("total", sum(k["gpu__time_duration.sum"] for k in seg), "us", sum(k["dram__bytes_read.sum"] for k in seg)/1e6, "MB")
