#!/usr/bin/env python3
"""Golden GGUF files for the dsv4-gguf tests, written by gguf-py 0.19.0.

    make_gguf_golden.py [--out-dir crates/gguf/tests/data]
        Writes golden.gguf (every metadata value type, five tensors, default alignment)
        and golden_align64.gguf (general.alignment = 64). The Rust tests assert every value
        and byte of both, and that the Rust writer reproduces them byte for byte, so the
        contents here and in crates/gguf/tests/golden.rs must change together.

    make_gguf_golden.py --read FILE [--expect-rust-sample]
        Reads FILE with gguf-py's GGUFReader and prints its metadata and tensors: a check
        that a file written by the Rust writer is readable by the reference implementation.
        With --expect-rust-sample, also asserts the contents of the sample that the Rust test
        `rust_sample_for_gguf_py` writes when DSV4_GGUF_SAMPLE is set.

Run with the reference venv: /work/venvs/ref/bin/python (gguf==0.19.0, numpy).
Tensor data are simple formulas so the Rust test can rebuild them exactly; every float is
exactly representable in its type (or, for the f32 1e-6 and f64 0.1 scalars, rounds the same
from the decimal in both languages).
"""

import argparse
import hashlib
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType as V, GGUFWriter


def q8_0_bytes(n_rows, n_blocks_per_row):
    """Q8_0 blocks: f16 scale 0.125*(b+1), then 32 int8 codes ((b*32+j)*37+11) mod 256."""
    out = bytearray()
    for b in range(n_rows * n_blocks_per_row):
        out += np.float16(0.125 * (b + 1)).tobytes()
        out += bytes(((b * 32 + j) * 37 + 11) % 256 for j in range(32))
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(n_rows, n_blocks_per_row * 34)


def write_golden(path):
    w = GGUFWriter(path, arch="deepseek4")  # general.architecture comes first
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 1e-6)
    w.add_bool("test.bool_true", True)
    w.add_bool("test.bool_false", False)
    w.add_string("test.string", "DeepSeek V4 Flash ✓ ü")
    w.add_uint64("test.u64", 2**63 + 12345)
    w.add_int64("test.i64", -(2**62) - 7)
    w.add_float64("test.f64", 0.1)
    # add_array infers INT32 / FLOAT32 / BOOL / STRING from Python values; other element
    # types need an explicit sub_type.
    w.add_array("test.array.i32", [0, 0, 4, 128, -1])
    w.add_array("test.array.f32", [10.0, 0.5, -2.25])
    w.add_array("test.array.bool", [True, False, True])
    w.add_array("test.array.string", ["<｜begin▁of▁sentence｜>", "Ġthe", "", "é"])
    w.add_array("test.array.u8", bytes([0, 1, 255]))
    w.add_key_value("test.array.i8", [-128, 127], V.ARRAY, sub_type=V.INT8)
    w.add_key_value("test.array.u16", [1, 65535], V.ARRAY, sub_type=V.UINT16)
    w.add_key_value("test.array.i16", [-32768, 5], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("test.array.u32", [0, 4, 128], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("test.array.u64", [2**64 - 1, 0], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.array.i64", [-(2**63), 2**63 - 1], V.ARRAY, sub_type=V.INT64)
    w.add_key_value("test.array.f64", [0.1, -1e300], V.ARRAY, sub_type=V.FLOAT64)
    # Nested arrays: the inner element type is inferred per inner list.
    w.add_array("test.array.nested_i32", [[1, 2], [3, 4, 5]])
    w.add_array("test.array.nested_str", [["a", "b"], ["c"]])
    w.add_array("test.array.nested3", [[[7]], [[8, 9]]])

    w.add_tensor("f32.matrix", np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5 - 2)
    w.add_tensor("f16.odd", (np.arange(7) * 0.25 - 1).astype(np.float16))
    w.add_tensor("q8_0.weight", q8_0_bytes(2, 2), raw_dtype=T.Q8_0)
    w.add_tensor("i32.ids", (np.arange(6, dtype=np.int32) * 1000 - 2500).reshape(2, 3))
    w.add_tensor("f32.cube", np.arange(30, dtype=np.float32).reshape(2, 3, 5) * 0.125 - 1)
    finish(w)


def write_golden_align64(path):
    w = GGUFWriter(path, arch="deepseek4")
    w.add_custom_alignment(64)
    w.add_string("general.name", "align64")
    w.add_tensor("a", np.array([1.0, 2.0, 3.0], dtype=np.float32))
    w.add_tensor("b", np.array([0.5, -0.5, 4.0, 8.0, -16.0], dtype=np.float16))
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def describe(path):
    r = GGUFReader(path)
    fields = {}
    print(f"{path}: {os.path.getsize(path)} bytes, alignment {r.alignment}, data at {r.data_offset}")
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        types = [t.name for t in f.types]
        try:
            value = f.contents()
        except Exception as e:  # gguf-py cannot decode every value it can parse
            value = f"<contents() failed: {e!r}>"
        fields[name] = (types, value)
        print(f"  kv {name} {types} = {value!r}"[:200])
    tensors = {}
    for t in r.tensors:
        digest = hashlib.sha256(bytes(t.data.tobytes())).hexdigest()[:16]
        tensors[t.name] = (t.tensor_type.name, [int(x) for x in t.shape], int(t.data_offset), int(t.n_bytes), t.data)
        print(f"  tensor {t.name} {t.tensor_type.name} ne={list(map(int, t.shape))} "
              f"at {t.data_offset} {t.n_bytes} bytes sha256:{digest}")
    return r, fields, tensors


def check_rust_sample(r, fields, tensors):
    """Mirrors `rust_sample_for_gguf_py` in crates/gguf/tests/golden.rs."""
    assert r.alignment == 128, r.alignment
    assert fields["general.alignment"] == (["UINT32"], 128)
    assert fields["general.architecture"] == (["STRING"], "deepseek4")
    assert fields["rust.u64"] == (["UINT64"], 2**64 - 1)
    assert fields["rust.f64"] == (["FLOAT64"], -0.0)
    assert fields["rust.tokens"] == (["ARRAY", "STRING"], ["a", "ü", "", "Ġx"])
    assert fields["rust.ratios"] == (["ARRAY", "UINT32"], [0, 0, 4, 128])
    # gguf-py lists an array's element type only by way of its elements, so an empty
    # array reads back as plain ARRAY.
    assert fields["rust.empty_f32"] == (["ARRAY"], [])
    expect = {
        "token_embd.weight": ("F16", [8, 3]),
        "blk.0.ffn_gate_exps.weight": ("IQ2_XXS", [256, 2, 2]),
        "blk.0.ffn_down_exps.weight": ("Q2_K", [256, 2]),
        "blk.0.attn_q_a.weight": ("Q4_K", [512, 1]),
        "output.weight": ("Q8_0", [32, 3]),
        "bf16": ("BF16", [5]),
        "ids": ("I32", [6, 2]),
    }
    assert list(tensors) == list(expect), list(tensors)
    for name, (ty, ne) in expect.items():
        assert tensors[name][:2] == (ty, ne), (name, tensors[name][:2])
        # Every tensor's bytes are i*7+name_len mod 256 (see the Rust test).
        raw = np.frombuffer(tensors[name][4].tobytes(), dtype=np.uint8)
        want = (np.arange(raw.size) * 7 + len(name)) % 256
        assert (raw == want).all(), name
        assert tensors[name][2] % 128 == 0, name
    print("rust sample: all checks passed")


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out-dir", default=os.path.normpath(os.path.join(here, "..", "..", "crates", "gguf", "tests", "data")))
    ap.add_argument("--read")
    ap.add_argument("--expect-rust-sample", action="store_true")
    args = ap.parse_args()
    if args.read:
        r, fields, tensors = describe(args.read)
        if args.expect_rust_sample:
            check_rust_sample(r, fields, tensors)
        return
    os.makedirs(args.out_dir, exist_ok=True)
    for name, fn in [("golden.gguf", write_golden), ("golden_align64.gguf", write_golden_align64)]:
        path = os.path.join(args.out_dir, name)
        fn(path)
        describe(path)


if __name__ == "__main__":
    sys.exit(main())
