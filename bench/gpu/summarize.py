#!/usr/bin/env python3
"""One table from flash.sh's three CSVs: each engine's prefill and decode rate per context,
and the same per layer, so runs with different layer counts can be set side by side.

    summarize.py --layers N --dir OUT

Per-layer figures divide the whole token's time by N: the embedding, the output head and
the sampling (one LM head of 129,280 x 4,096 Q8_0, ~0.56 GB read per decoded token) are
counted into the layers, which inflates ms/token/layer most for small N.
"""

import argparse
import csv
import os
import sys


def read_csv(path):
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r]
    return rows or None


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def rows_dsv4(rows):
    for r in rows:
        yield str(r.get("frontier")), num(r.get("prefill_tps")), num(r.get("decode_tps"))


def rows_ds4(rows):
    for r in rows:
        yield str(r.get("ctx_tokens")), num(r.get("prefill_tps")), num(r.get("gen_tps"))


def rows_llama(rows):
    # One prefill row (n_gen 0) and one decode row (n_prompt 0) per depth.
    by_depth = {}
    for r in rows:
        d = r.get("n_depth", "0")
        p, g, ts = num(r.get("n_prompt")), num(r.get("n_gen")), num(r.get("avg_ts"))
        slot = by_depth.setdefault(d, [None, None])
        if g == 0 and p:
            slot[0] = ts
        elif p == 0 and g:
            slot[1] = ts
    for d, (p, g) in sorted(by_depth.items(), key=lambda kv: int(float(kv[0]))):
        yield f"depth {d}", p, g


def copy_gbs(log):
    if not os.path.exists(log):
        return None
    best = None
    with open(log) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) == 6 and parts[0] == "copy":
                best = num(parts[3])  # the last (largest) size printed
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    n = a.layers
    if n <= 0:
        sys.exit("--layers must be positive")

    fmt = "{:<6} {:<11} {:>12} {:>11} {:>10} {:>14} {:>18}"
    print(fmt.format("engine", "context", "prefill t/s", "decode t/s", "ms/token", "ms/token/layer", "prefill t/s x layers"))
    sources = [
        ("dsv4", "dsv4.csv", rows_dsv4),
        ("ds4", "ds4.csv", rows_ds4),
        ("llama", "llama.csv", rows_llama),
    ]
    for name, file, parse in sources:
        rows = read_csv(os.path.join(a.dir, file))
        if rows is None:
            print(fmt.format(name, "(no data)", "-", "-", "-", "-", "-"))
            continue
        for ctx, p, g in parse(rows):
            ms = 1000.0 / g if g else None
            print(
                fmt.format(
                    name,
                    ctx,
                    f"{p:.1f}" if p else "-",
                    f"{g:.2f}" if g else "-",
                    f"{ms:.3f}" if ms else "-",
                    f"{ms / n:.4f}" if ms else "-",
                    f"{p * n:.0f}" if p else "-",
                )
            )
    c = copy_gbs(os.path.join(a.dir, "flash.log"))
    if c:
        print(f"device-to-device copy: {c:.0f} GB/s (read + write)")
    print(f"{n} layers; per-layer figures include the head and embedding (see summarize.py)")


if __name__ == "__main__":
    main()
