#!/usr/bin/env python3
"""Per-kernel lines from an ncu --csv metrics log: every metric of each profiled launch, then
its eight largest stall reasons per issued instruction.

    ncu_summary.py LOG [--first N]

--first N prints only the first N launches of each kernel name (0: all).
"""

import collections
import csv
import sys


def main():
    args = sys.argv[1:]
    first = 0
    if "--first" in args:
        i = args.index("--first")
        first = int(args[i + 1])
        del args[i : i + 2]
    rows = list(csv.reader(open(args[0])))
    h = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    hdr = rows[h]
    ii, ki, mi, vi = (hdr.index(k) for k in ("ID", "Kernel Name", "Metric Name", "Metric Value"))
    launches = collections.OrderedDict()
    for r in rows[h + 1 :]:
        if len(r) == len(hdr):
            launches.setdefault(r[ii], {"name": r[ki].split("(")[0]})[r[mi]] = r[vi]
    seen = collections.Counter()
    for k in launches.values():
        name = k.pop("name")
        seen[name] += 1
        if first and seen[name] > first:
            continue
        print("--", name)
        stalls = {m: v for m, v in k.items() if "stalled" in m}
        for m, v in k.items():
            if m not in stalls:
                print(f"   {m} = {v}")
        top = sorted(stalls.items(), key=lambda x: -float(x[1].replace(",", "") or 0))[:8]
        print("   stalls/issue: " + ", ".join(f"{m.split('stalled_')[1].split('_per')[0]} {float(v):.2f}" for m, v in top))


if __name__ == "__main__":
    main()
