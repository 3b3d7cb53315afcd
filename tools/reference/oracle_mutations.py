#!/usr/bin/env python3
"""Sensitivity check behind the table in tools/reference/README.md: re-runs oracle_archref.py
with one deliberate semantic change at a time and prints how far its logits move from the
committed transformers logits. Shows which engine bugs the oracle data can and cannot catch.

    /work/venvs/oracle/bin/python tools/reference/oracle_mutations.py [f32|q2|q4]
"""
import gzip
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
DATA = os.path.join(HERE, "..", "..", "crates", "model", "tests", "data", "oracle")

# (description, text in oracle_archref.py, replacement)
MUTATIONS = [
    ("unmodified", "", ""),
    ("HC combine M @ S instead of M.T @ S", "+ M.T @ S", "+ M @ S"),
    ("compressed-row RoPE at window end", "rope_tail(c, pos + 1 - r, self.freqs)", "rope_tail(c, pos, self.freqs)"),
    ("no indexer (all rows visible)", "if n > topk:", "if False:"),
    ("window of W+1 rows", "max(0, pos - W_win + 1)", "max(0, pos - W_win)"),
    ("router sum floored at 2^-14", "p[sel].sum()", "max(p[sel].sum(), 2**-14)"),
    ("no YaRN on compressed layers", "attention.compress_rope_freq_base\"]), yarn)", "attention.compress_rope_freq_base\"]), None)"),
    ("no inverse RoPE on attention output", "o = rope_tail(o, pos, st[\"freqs\"], inverse=True)", "pass"),
    ("Sinkhorn 19 iterations", "for _ in range(iters - 1):", "for _ in range(iters - 2):"),
    ("ratio-4 lanes swapped", "kv = np.concatenate([self.kv[0:4, :Dc], self.kv[4:8, Dc:]], 0)",
     "kv = np.concatenate([self.kv[0:4, Dc:], self.kv[4:8, :Dc]], 0)"),
    ("sink ignored", "+ np.exp(sink - mx))", ")"),
    ("no SwiGLU clamp", "return _silu(np.minimum(g, lim)) * np.clip(u, -lim, lim)", "return _silu(g) * u"),
    ("indexer without ReLU", "np.maximum(0.0, qI @ K.T)", "(qI @ K.T)"),
    ("indexer weight scale 1/sqrt(id) only", "/ math.sqrt(ID * IH)", "/ math.sqrt(ID)"),
    ("selection bias ignored", "(p + Wl[\"exp_probs_b.bias\"])", "p"),
]


def main():
    vn = sys.argv[1] if len(sys.argv) > 1 else "f32"
    man = json.load(open(os.path.join(DATA, "oracle.json")))
    info = man["variants"][vn]["logits"]["long"]
    ref = np.frombuffer(gzip.open(os.path.join(DATA, info["file"])).read(), "<f4").reshape(info["shape"])
    src0 = open(os.path.join(HERE, "oracle_archref.py")).read()
    gguf = os.path.join(DATA, man["variants"][vn]["gguf"])
    for name, a, b in MUTATIONS:
        src = src0
        if a:
            if a not in src:
                raise SystemExit(f"mutation {name!r}: pattern not found in oracle_archref.py")
            src = src.replace(a, b)
        mod = type(sys)("archref_mutant")
        exec(compile(src, "archref_mutant", "exec"), mod.__dict__)
        d = np.abs(mod.forward(gguf, man["sequences"]["long"]) - ref).max(-1)
        first = int(np.argmax(d > 1e-3)) if (d > 1e-3).any() else None
        print(f"{name:40s} max {d.max():.3g}  first position > 1e-3: {first}", flush=True)


if __name__ == "__main__":
    main()
