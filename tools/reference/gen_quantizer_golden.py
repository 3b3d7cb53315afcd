"""Writes the Q8_0 quantizer goldens from gguf-py 0.19.0 (its `quantize` is the reference).

Outputs, in crates/quant/tests/data/quantizers/:
  q8_0_input.f32     ROWS x COLS little-endian f32, row-major
  q8_0_expected.bin  ROWS rows of COLS/32 blocks of 34 bytes: gguf.quants.quantize(x, Q8_0)

Run with /work/venvs/ref/bin/python (gguf==0.19.0 + numpy). Deterministic: a fixed seed for
the random rows, and hand-built rows for the edge cases the Rust test cares about.
"""
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

ROWS, COLS = 24, 256
OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/quant/tests/data/quantizers"

rng = np.random.default_rng(20260518)
x = np.zeros((ROWS, COLS), dtype=np.float32)
# Gaussian rows over a range of magnitudes (weights are ~0.02; 1e-5 pushes d into f16
# subnormals, 1e5 gives d ~ 1e3).
for r, s in enumerate([0.02, 0.02, 0.02, 1.0, 1e-3, 1e-5, 1e5, 30.0]):
    x[r] = rng.standard_normal(COLS) * s
# Heavy-tailed rows: one outlier dominates each block's scale.
x[8] = rng.standard_t(2, COLS) * 0.01
x[9] = rng.standard_t(2, COLS) * 0.01
# Row 10 stays zero. Row 11 is constant, row 12 constant negative.
x[11] = 0.37
x[12] = -1.25
# Ties: amax 127 gives d = 1, so codes are the inputs rounded; halves must go away from 0.
x[13] = np.tile(np.concatenate([[127.0], np.arange(-15.5, 15.5, 1.0, dtype=np.float32)]), COLS // 32)
# Values that are exact multiples of a scale that is not an f16 (inverse must be unrounded).
x[14] = np.tile(np.arange(-16, 16, dtype=np.float32) * (0.1 / 127), COLS // 32)
x[14, ::32] = 0.1
# Negative zeros and a single nonzero per block.
x[15] = -0.0
x[15, 5::32] = -3e-3
# Largest magnitude whose scale still fits an f16 (amax/127 <= 65504).
x[16] = rng.standard_normal(COLS) * 1e6
x[16, ::32] = 8.0e6
# Smallest: amax/127 below the smallest f16 subnormal, so d rounds to 0 and codes are still
# computed from the unrounded inverse.
x[17] = rng.standard_normal(COLS) * 1e-9
# Sparse, uniform, mixed-sign small integers, and uniform in [-1, 1].
x[18] = rng.standard_normal(COLS) * (rng.random(COLS) < 0.1) * 0.05
x[19] = rng.uniform(-1, 1, COLS)
x[20] = rng.integers(-3, 4, COLS) * 0.01
x[21] = np.abs(rng.standard_normal(COLS)) * 0.02
x[22] = -np.abs(rng.standard_normal(COLS)) * 0.02
x[23] = rng.standard_normal(COLS).astype(np.float32) * np.float32(0.02) + np.float32(0.5)
x = x.astype(np.float32)

q = quantize(x, T.Q8_0)
assert q.dtype == np.uint8 and q.shape == (ROWS, COLS // 32 * 34), q.shape
OUT.mkdir(parents=True, exist_ok=True)
x.astype("<f4").tofile(OUT / "q8_0_input.f32")
q.tofile(OUT / "q8_0_expected.bin")
print(f"wrote {ROWS}x{COLS} Q8_0 golden to {OUT}")
