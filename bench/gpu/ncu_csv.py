"""The launches of an ncu --csv metrics log, in launch order, for the bench/gpu summaries: one
dict a launch with its kernel name, grid and block, and every metric as a float, times in µs
and sizes in bytes whatever unit ncu printed them in."""
import collections
import csv

SCALE = {"ns": 1e-3, "nsecond": 1e-3, "us": 1, "usecond": 1, "ms": 1e3, "msecond": 1e3,
         "byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def launches(path):
    rows = list(csv.reader(open(path)))
    h = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    hdr = rows[h]
    col = {k: hdr.index(k) for k in ("ID", "Kernel Name", "Grid Size", "Block Size", "Metric Name", "Metric Value", "Metric Unit")}
    out = collections.OrderedDict()
    for r in rows[h + 1:]:
        if len(r) != len(hdr):
            continue
        k = out.setdefault(r[col["ID"]], {"name": r[col["Kernel Name"]].split("(")[0],
                                          "grid": r[col["Grid Size"]].replace(" ", ""),
                                          "block": r[col["Block Size"]].replace(" ", "")})
        v = r[col["Metric Value"]].replace(",", "")
        try:
            k[r[col["Metric Name"]]] = float(v) * SCALE.get(r[col["Metric Unit"]], 1)
        except ValueError:
            k[r[col["Metric Name"]]] = v
    return list(out.values())
