#!/usr/bin/env python3
"""One line per kernel and grid size of an ncu log of bench/gpu/ncu-kernels.sh: launches, µs and
DRAM MB a call, achieved GB/s, issue-active and warps-active %, M warp instructions a call,
registers, and the fraction of the elapsed cycles the SMs were active.

    ncu_table.py LOG
"""
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ncu_csv import launches

f = lambda k, m: k.get(m, 0.0) if isinstance(k.get(m, 0.0), float) else 0.0
agg = collections.OrderedDict()
for k in launches(sys.argv[1]):
    key = (k["name"], int(f(k, "launch__grid_size")))
    a = agg.setdefault(key, [0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    a[0] += 1; a[1] += f(k, "gpu__time_duration.sum"); a[2] += f(k, "dram__bytes_read.sum") / 1e6
    a[3] += f(k, "smsp__issue_active.avg.pct_of_peak_sustained_active"); a[4] += f(k, "sm__warps_active.avg.pct_of_peak_sustained_active")
    a[5] += f(k, "sm__inst_executed.sum") / 1e6; a[6] += f(k, "launch__registers_per_thread")
    a[7] += f(k, "sm__cycles_active.avg") / max(f(k, "sm__cycles_elapsed.avg"), 1)
print(f"{'kernel':24s} {'grid':>6s} {'n':>3s} {'us/call':>8s} {'MB/call':>8s} {'GB/s':>6s} {'issue%':>6s} {'warps%':>6s} {'Minst':>7s} {'regs':>4s} {'SMact':>5s}")
for (name, grid), a in agg.items():
    n = a[0]
    print(f"{name:24s} {grid:6d} {n:3d} {a[1]/n:8.1f} {a[2]/n:8.2f} {a[2]/a[1]*1e3 if a[1] else 0:6.0f} {a[3]/n:6.1f} {a[4]/n:6.1f} {a[5]/n:7.2f} {a[6]/n:4.0f} {a[7]/n:5.2f}")
