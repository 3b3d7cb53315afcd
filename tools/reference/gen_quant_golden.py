"""Writes the golden files the dsv4-quant tests compare against (deterministic, seeded).

Run with the reference venv (gguf==0.19.0, numpy, ml_dtypes==0.6.0):

    /work/venvs/ref/bin/python tools/reference/gen_quant_golden.py

Outputs, under crates/quant/tests/data/ (all little-endian, gzip-compressed):

dequant.bin.gz -- for each type, one section:
    u32 ggml type id, u32 element count n, u32 byte count b, b raw bytes, n f32 (gguf-py
    `dequantize` output). The raw blocks are random: every code byte random (every byte value
    is a valid code), the f16 `d`/`dmin` fields random finite values with every exponent
    (subnormals, zero, negatives, 65504) equally likely. F16 and BF16 sections are random bit
    patterns and include infinities and NaNs.

fp.bin.gz -- the FP8/FP4 rounding of ml_dtypes:
    u32 n, n f32 inputs, n u8 float8_e4m3fn codes  (values across every binade, subnormals,
                                                     exact ties and their neighbours, the max
                                                     and beyond)
    u32 m, m f32 inputs, m u8 float4_e2m1fn codes   (same idea for E2M1)
    256 f32: float8_e4m3fn code -> float32; 16 f32: float4_e2m1fn; 256 f32: float8_e8m0fnu
"""
import gzip
import os
import struct

import ml_dtypes
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "quant", "tests", "data")
rng = np.random.default_rng(0x5EED_D5F4)


def finite_f16_bits(n):
    """Random finite f16 bit patterns: exponent field uniform in 0..30 (0 = zero/subnormal)."""
    sign = rng.integers(0, 2, n).astype(np.uint16) << 15
    exp = rng.integers(0, 31, n).astype(np.uint16) << 10
    man = rng.integers(0, 1024, n).astype(np.uint16)
    return sign | exp | man


def random_blocks(qtype, n_blocks):
    """Random blocks of `qtype` with finite f16 scale fields at their layout offsets."""
    _, bb = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_blocks, bb), dtype=np.uint8)
    f16_offsets = {T.Q8_0: [0], T.Q2_K: [80, 82], T.Q4_K: [0, 2], T.IQ2_XXS: [0]}[qtype]
    for off in f16_offsets:
        raw[:, off:off + 2] = finite_f16_bits(n_blocks).view(np.uint8).reshape(n_blocks, 2)
    # A few hand-picked scales: smallest subnormal, largest finite, negative zero, -1.
    for i, h in enumerate([0x0001, 0x7BFF, 0x8000, 0xBC00, 0x83FF]):
        for off in f16_offsets:
            raw[i, off:off + 2] = np.array([h], dtype=np.uint16).view(np.uint8)
    return raw.reshape(-1)


def section(qtype, raw, values):
    values = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    return struct.pack("<III", int(qtype), values.size, raw.size) + raw.tobytes() + values.tobytes()


def dequant_golden():
    parts = []
    for qtype, n_blocks in [(T.Q8_0, 256), (T.Q2_K, 48), (T.Q4_K, 48), (T.IQ2_XXS, 48)]:
        raw = random_blocks(qtype, n_blocks)
        parts.append(section(qtype, raw, dequantize(raw, qtype)))
    for qtype in (T.F16, T.BF16):
        bits = rng.integers(0, 0x10000, 4096).astype(np.uint16)
        # every special pattern appears at least once: zeros, infinities, a NaN, subnormals
        bits[:8] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x0001, 0x7F80, 0xFF80]
        raw = bits.view(np.uint8)
        parts.append(section(qtype, raw, dequantize(raw, qtype)))
    return b"".join(parts)


def grid_values(dtype, max_code):
    """All non-negative finite values of a small float type, ascending (codes 0..max_code)."""
    return np.arange(max_code + 1, dtype=np.uint8).view(dtype).astype(np.float32)


def probe_values(grid, top, binades):
    """Representable values, midpoints (exact ties), their f32 neighbours, random values per
    binade, f32 subnormals and values past the top, with both signs."""
    g = grid.astype(np.float32)
    mids = ((g[:-1].astype(np.float64) + g[1:]) / 2).astype(np.float32)
    vals = [g, mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(0))]
    for e in binades:
        lo = np.float32(2.0) ** e
        vals.append((lo * (1 + rng.random(40))).astype(np.float32))
    vals.append(np.exp(rng.uniform(np.log(1e-6), np.log(top * 1.2), 400)).astype(np.float32))
    vals.append(np.array([1e-45, 1e-40, 1e-38, top, np.nextafter(np.float32(top), np.float32(0)),
                          top * 1.03, top * 1.2, 1e6, 3.0e38], dtype=np.float32))
    v = np.concatenate(vals).astype(np.float32)
    return np.concatenate([v, -v]).astype(np.float32)


def fp_golden():
    e4 = ml_dtypes.float8_e4m3fn
    e2 = ml_dtypes.float4_e2m1fn
    e8 = ml_dtypes.float8_e8m0fnu
    # e4m3fn: codes 0..126 finite; binades 2^-12 .. 2^9 cover zero-rounding, subnormals,
    # every normal binade and the overflow region; 464 is the tie between 448 and NaN.
    x4 = probe_values(grid_values(e4, 126), 448.0, range(-12, 10))
    x4 = np.concatenate([x4, np.array([464.0, -464.0, 460.0, 470.0], dtype=np.float32)])
    c4 = x4.astype(e4).view(np.uint8)
    x2 = probe_values(grid_values(e2, 7), 6.0, range(-4, 4))
    c2 = x2.astype(e2).view(np.uint8)
    dec4 = np.arange(256, dtype=np.uint8).view(e4).astype(np.float32)
    dec2 = np.arange(16, dtype=np.uint8).view(e2).astype(np.float32)
    dec8 = np.arange(256, dtype=np.uint8).view(e8).astype(np.float32)
    out = [struct.pack("<I", x4.size), x4.astype("<f4").tobytes(), c4.tobytes(),
           struct.pack("<I", x2.size), x2.astype("<f4").tobytes(), c2.tobytes(),
           dec4.astype("<f4").tobytes(), dec2.astype("<f4").tobytes(), dec8.astype("<f4").tobytes()]
    return b"".join(out), x4.size, x2.size


def write(name, data):
    path = os.path.join(OUT, name)
    # mtime=0 keeps the gzip bytes reproducible
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as g:
        g.write(data)
    print(f"{name}: {len(data)} bytes raw, {os.path.getsize(path)} gz")


def main():
    os.makedirs(OUT, exist_ok=True)
    write("dequant.bin.gz", dequant_golden())
    fp, n4, n2 = fp_golden()
    write("fp.bin.gz", fp)
    print(f"e4m3 probes {n4}, e2m1 probes {n2}")


if __name__ == "__main__":
    main()
