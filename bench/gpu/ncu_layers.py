#!/usr/bin/env python3
"""Layers 3 and 4 (Flash's first ratio-128 and ratio-4 layers with top-k routing) of the last
decode step in an ncu log of bench/gpu/ncu-step.sh, kernel by kernel in launch order, then what
follows the last layer (the output head): GPU time, DRAM bytes read, achieved GB/s.

    ncu_layers.py LOG
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ncu_csv import launches

ks = launches(sys.argv[1])
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
