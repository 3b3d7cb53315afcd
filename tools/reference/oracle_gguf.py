"""GGUF side of the transformers oracle: tiny-model geometry, the antirez (ds4) tensor layout,
deterministic random weights (plain and quantized), the GGUF writer and the read-back check.

Everything here is numpy + gguf-py only, so the GGUF bytes do not depend on torch or on the
CPU: numpy's PCG64 streams, float16 casts and gguf-py's dequantizers are platform-independent.
The torch model is loaded from the *dequantized* values produced here, so the GGUF and the
transformers model hold bit-identical weights by construction (and `verify_gguf` re-proves it
from the file).
"""
from __future__ import annotations

import dataclasses
import hashlib
import zlib
from dataclasses import dataclass, field

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

ARCH = "deepseek4"


@dataclass(frozen=True)
class Geometry:
    """The shape of one tiny model. Field names follow the GGUF metadata keys they feed."""

    name: str
    vocab: int
    hidden: int
    ratios: tuple[int, ...]          # per layer: 0 (window only), 4 (CSA + indexer), 128 (HCA)
    n_hash: int                      # layers 0..n_hash-1 route by tid2eid
    n_head: int
    head_dim: int
    rope_dim: int                    # rotated tail of every head (and of every indexer head)
    q_lora: int
    o_groups: int
    o_lora: int
    n_expert: int
    n_used: int
    ffn: int                         # routed and shared expert width
    window: int                      # raw sliding window, current token included
    idx_heads: int
    idx_dim: int
    idx_topk: int
    n_hc: int = 4
    sinkhorn_iters: int = 20
    # Numeric hyperparameters: kept at the real Flash values so the engine is tested on the
    # constants it will meet in antirez's files.
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    yarn_factor: float = 16.0
    yarn_orig_ctx: int = 65536
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    routed_scale: float = 1.5
    rms_eps: float = 1e-6
    hc_eps: float = 1e-6
    swiglu_limit: float = 10.0
    context_length: int = 1048576

    @property
    def n_layer(self) -> int:
        return len(self.ratios)


# The "f32" model is small enough to commit its GGUF; k-quants and IQ2_XXS need rows that are
# multiples of 256, which forces hidden = ffn = 256 for the quantized models.
GEOMETRIES = {
    "tiny64": Geometry(
        name="tiny64", vocab=256, hidden=64, ratios=(0, 0, 4, 128, 4, 128), n_hash=3,
        n_head=4, head_dim=64, rope_dim=16, q_lora=32, o_groups=2, o_lora=32,
        n_expert=8, n_used=3, ffn=32, window=16, idx_heads=16, idx_dim=32, idx_topk=8,
    ),
    "tiny256": Geometry(
        name="tiny256", vocab=256, hidden=256, ratios=(0, 0, 4, 128, 4, 128), n_hash=3,
        n_head=8, head_dim=128, rope_dim=32, q_lora=64, o_groups=4, o_lora=32,
        n_expert=8, n_used=2, ffn=256, window=8, idx_heads=16, idx_dim=64, idx_topk=5,
    ),
}


@dataclass(frozen=True)
class Variant:
    name: str
    geometry: str
    seed: int
    # GGUF type per tensor class. "q8" = tensors antirez stores as Q8_0, "exp_gu"/"exp_down" =
    # routed experts. "f16"/"f32" classes always keep the real file's type.
    types: dict = field(default_factory=dict)
    commit_gguf: bool = False


# Seeds were picked (tools/reference/README.md) so that every indexer/router top-k decision of
# the oracle runs is far from a tie; transformers_oracle.py re-checks that on every run.
VARIANTS = {
    "f32": Variant("f32", "tiny64", 1020,
                   {"q8": T.F32, "exp_gu": T.F32, "exp_down": T.F32}, commit_gguf=True),
    "q2": Variant("q2", "tiny256", 2026,
                  {"q8": T.Q8_0, "exp_gu": T.IQ2_XXS, "exp_down": T.Q2_K}),
    "q4": Variant("q4", "tiny256", 3010,
                  {"q8": T.Q8_0, "exp_gu": T.Q4_K, "exp_down": T.Q4_K}),
}


@dataclass
class TensorSpec:
    """One GGUF tensor: its name, `ne` (GGUF order), type class and how to draw its values."""

    name: str
    ne: tuple[int, ...]
    cls: str                 # f16 | f32 | q8 | exp_gu | exp_down | i32
    init: tuple              # ("normal", std) | ("norm",) | ("uniform", lo, hi) | ("tid2eid",)

    @property
    def np_shape(self) -> tuple[int, ...]:
        # numpy/PyTorch order is the reverse of GGUF ne
        return tuple(reversed(self.ne))


def tensor_specs(g: Geometry) -> list[TensorSpec]:
    """The tensor inventory of ARCH.md §7.3/§7.4 for geometry g, in file order.

    Standard deviations are chosen so every sublayer sees O(1) activations: linear weights are
    N(0, gain²/fan_in). Gains > 1 where a mechanism must be visibly exercised: expert gate/up
    outputs have std ≈ 5 so the SwiGLU clamp at ±10 fires on a few percent of the values,
    compressor gate logits are sharp enough that the window softmax is not uniform, and the
    LM head gives logits with a clear but varying top-1.
    """
    H, V, E, I = g.hidden, g.vocab, g.n_expert, g.ffn
    hc_mix = (2 + g.n_hc) * g.n_hc
    s = []

    def w(name, ne, cls, gain=1.0):
        s.append(TensorSpec(name, tuple(ne), cls, ("normal", gain / np.sqrt(ne[0]))))

    s.append(TensorSpec("token_embd.weight", (H, V), "f16", ("normal", 1.0)))
    for il, ratio in enumerate(g.ratios):
        p = f"blk.{il}."
        coff = 2 if ratio == 4 else 1
        w(p + "hc_attn_fn.weight", (g.n_hc * H, hc_mix), "f16")
        s.append(TensorSpec(p + "hc_attn_scale.weight", (3,), "f32", ("uniform", 0.5, 1.5)))
        s.append(TensorSpec(p + "hc_attn_base.weight", (hc_mix,), "f32", ("normal", 0.5)))
        s.append(TensorSpec(p + "attn_norm.weight", (H,), "f32", ("norm",)))
        w(p + "attn_q_a.weight", (H, g.q_lora), "q8")
        s.append(TensorSpec(p + "attn_q_a_norm.weight", (g.q_lora,), "f32", ("norm",)))
        w(p + "attn_q_b.weight", (g.q_lora, g.n_head * g.head_dim), "q8")
        w(p + "attn_kv.weight", (H, g.head_dim), "q8")
        s.append(TensorSpec(p + "attn_kv_a_norm.weight", (g.head_dim,), "f32", ("norm",)))
        s.append(TensorSpec(p + "attn_sinks.weight", (g.n_head,), "f32", ("normal", 1.0)))
        w(p + "attn_output_a.weight", (g.n_head * g.head_dim // g.o_groups, g.o_groups * g.o_lora), "q8")
        w(p + "attn_output_b.weight", (g.o_groups * g.o_lora, H), "q8")
        if ratio:
            s.append(TensorSpec(p + "attn_compressor_ape.weight", (coff * g.head_dim, ratio), "f16", ("normal", 1.0)))
            w(p + "attn_compressor_kv.weight", (H, coff * g.head_dim), "f16")
            w(p + "attn_compressor_gate.weight", (H, coff * g.head_dim), "f16", gain=2.0)
            s.append(TensorSpec(p + "attn_compressor_norm.weight", (g.head_dim,), "f32", ("norm",)))
        if ratio == 4:
            w(p + "indexer.attn_q_b.weight", (g.q_lora, g.idx_heads * g.idx_dim), "f16")
            w(p + "indexer.proj.weight", (H, g.idx_heads), "f16")
            s.append(TensorSpec(p + "indexer_compressor_ape.weight", (2 * g.idx_dim, 4), "f16", ("normal", 1.0)))
            w(p + "indexer_compressor_kv.weight", (H, 2 * g.idx_dim), "f16")
            w(p + "indexer_compressor_gate.weight", (H, 2 * g.idx_dim), "f16", gain=2.0)
            s.append(TensorSpec(p + "indexer_compressor_norm.weight", (g.idx_dim,), "f32", ("norm",)))
        w(p + "hc_ffn_fn.weight", (g.n_hc * H, hc_mix), "f16")
        s.append(TensorSpec(p + "hc_ffn_scale.weight", (3,), "f32", ("uniform", 0.5, 1.5)))
        s.append(TensorSpec(p + "hc_ffn_base.weight", (hc_mix,), "f32", ("normal", 0.5)))
        s.append(TensorSpec(p + "ffn_norm.weight", (H,), "f32", ("norm",)))
        w(p + "ffn_gate_inp.weight", (H, E), "f16", gain=1.5)
        if il < g.n_hash:
            s.append(TensorSpec(p + "ffn_gate_tid2eid.weight", (g.n_used, V), "i32", ("tid2eid",)))
        else:
            # Comparable to the spread of sqrt(softplus) scores, so the bias changes selections.
            s.append(TensorSpec(p + "exp_probs_b.bias", (E,), "f32", ("normal", 0.3)))
        w(p + "ffn_gate_exps.weight", (H, I, E), "exp_gu", gain=5.0)
        w(p + "ffn_up_exps.weight", (H, I, E), "exp_gu", gain=5.0)
        w(p + "ffn_down_exps.weight", (I, H, E), "exp_down", gain=0.1)
        w(p + "ffn_gate_shexp.weight", (H, I), "q8", gain=5.0)
        w(p + "ffn_up_shexp.weight", (H, I), "q8", gain=5.0)
        w(p + "ffn_down_shexp.weight", (I, H), "q8", gain=0.1)
    w("output_hc_fn.weight", (g.n_hc * H, g.n_hc), "f16")
    s.append(TensorSpec("output_hc_base.weight", (g.n_hc,), "f32", ("normal", 0.5)))
    s.append(TensorSpec("output_hc_scale.weight", (1,), "f32", ("uniform", 0.5, 1.5)))
    s.append(TensorSpec("output_norm.weight", (H,), "f32", ("norm",)))
    w("output.weight", (H, V), "q8", gain=2.0)
    return s


def gguf_type(spec: TensorSpec, v: Variant) -> T:
    if spec.cls == "f16":
        return T.F16
    if spec.cls == "f32":
        return T.F32
    if spec.cls == "i32":
        return T.I32
    return v.types[spec.cls]


def _rng(seed: int, name: str, qtype: T) -> np.random.Generator:
    # Keyed by tensor name and type, not by draw order: adding a tensor never changes the others,
    # and q2/q4 (same seed) share every tensor whose type is the same.
    return np.random.default_rng([seed, zlib.crc32(name.encode()), int(qtype)])


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.astype(np.float16)).view(np.uint8).reshape(*x.shape, 2)


# Byte offsets of the f16 scale fields inside one block (FORMATS.md §2).
_D_OFF = {T.Q8_0: 0, T.Q2_K: 80, T.Q4_K: 0, T.IQ2_XXS: 0}
_DMIN_OFF = {T.Q2_K: 82, T.Q4_K: 2}


def random_quant_rows(rng: np.random.Generator, qtype: T, n_rows: int, ne0: int, std: float) -> np.ndarray:
    """Random but valid blocks of `qtype`: random code bytes (every byte value is a legal code for
    these four types), finite positive f16 scales chosen so the dequantized weights have roughly
    the requested std and, for the types with a min, roughly zero mean. Returns uint8
    (n_rows, row_bytes)."""
    bs, tb = GGML_QUANT_SIZES[qtype]
    assert ne0 % bs == 0, (qtype, ne0)
    nb = ne0 // bs
    raw = rng.integers(0, 256, size=(n_rows, nb, tb), dtype=np.uint8)
    if qtype == T.Q8_0:
        # Quantizers never emit -128; stay inside what a real file can contain.
        raw[..., 2:] = rng.integers(-127, 128, size=(n_rows, nb, 32), dtype=np.int8).view(np.uint8)

    def deq(d, dmin):
        r = raw.copy()
        r[..., _D_OFF[qtype]:_D_OFF[qtype] + 2] = _f16_bytes(d)
        if qtype in _DMIN_OFF:
            r[..., _DMIN_OFF[qtype]:_DMIN_OFF[qtype] + 2] = _f16_bytes(dmin)
        return r, dequantize(r.reshape(n_rows, nb * tb), qtype).reshape(n_rows, nb, bs)

    ones = np.ones((n_rows, nb), np.float32)
    zeros = np.zeros((n_rows, nb), np.float32)
    if qtype in _DMIN_OFF:
        # y = d·(scale·q) − dmin·min: pick dmin/d so the expected block mean is zero.
        _, a = deq(ones, zeros)
        _, m = deq(zeros, ones)
        c = float(a.mean() / -m.mean())
    else:
        c = 0.0
    _, unit = deq(ones, np.full_like(ones, c))
    unit_std = float(unit.std())
    jitter = np.exp(rng.normal(0.0, 0.25, size=(n_rows, nb))).astype(np.float32)
    d = (std / unit_std * jitter).astype(np.float32)
    r, _ = deq(d, d * np.float32(c))
    return r.reshape(n_rows, nb * tb)


@dataclass
class Tensor:
    spec: TensorSpec
    qtype: T
    data: np.ndarray      # what goes into the file (f32 / f16 / i32 / uint8 blocks), numpy order
    values: np.ndarray    # exact f32 (or int64 for tid2eid) values the file decodes to, numpy order


def make_tensor(spec: TensorSpec, v: Variant, g: Geometry) -> Tensor:
    qtype = gguf_type(spec, v)
    rng = _rng(v.seed, spec.name, qtype)
    shape = spec.np_shape
    kind = spec.init[0]
    if kind == "tid2eid":
        # Distinct experts per token (a repeated id would be counted twice by transformers);
        # a permutation prefix per token spreads load over all experts.
        ids = np.stack([rng.permutation(g.n_expert)[: g.n_used] for _ in range(g.vocab)]).astype(np.int32)
        return Tensor(spec, qtype, ids, ids.astype(np.int64))
    if qtype in (T.F32, T.F16):
        if kind == "normal":
            x = rng.standard_normal(shape, dtype=np.float32) * np.float32(spec.init[1])
        elif kind == "norm":
            x = np.float32(1.0) + np.float32(0.1) * rng.standard_normal(shape, dtype=np.float32)
        elif kind == "uniform":
            x = rng.uniform(spec.init[1], spec.init[2], size=shape).astype(np.float32)
        else:
            raise ValueError(kind)
        if qtype == T.F16:
            x16 = x.astype(np.float16)
            return Tensor(spec, qtype, x16, x16.astype(np.float32))
        return Tensor(spec, qtype, x, x)
    assert kind == "normal", spec.name
    ne0 = spec.ne[0]
    n_rows = int(np.prod(spec.ne[1:]))
    raw = random_quant_rows(rng, qtype, n_rows, ne0, spec.init[1])
    raw = raw.reshape(*shape[:-1], raw.shape[-1])
    vals = dequantize(raw, qtype)
    assert vals.shape == shape and vals.dtype == np.float32
    return Tensor(spec, qtype, raw, vals)


def make_tensors(v: Variant) -> list[Tensor]:
    g = GEOMETRIES[v.geometry]
    return [make_tensor(sp, v, g) for sp in tensor_specs(g)]


def metadata(g: Geometry, label: str) -> list[tuple[str, GGUFValueType, object, GGUFValueType | None]]:
    """deepseek4.* keys of ARCH.md §7.1 / FORMATS.md §7.1-7.2 with GGUF value types as in
    antirez's files: u32 integers, f32 floats, bool expert_weights_norm, u64 context_length (ds4
    reads it with model_get_u64, which accepts only UINT64). Both per-layer arrays carry one
    extra trailing entry for the MTP stage, as the published files do (ds4 checks only the first
    block_count entries; llama.cpp wants exactly one per layer)."""
    U32, F32, = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    A = GGUFValueType.ARRAY
    k = f"{ARCH}."
    ratios = list(g.ratios) + [0]
    return [
        ("general.name", GGUFValueType.STRING, f"dsv4 transformers oracle {label}", None),
        (k + "context_length", GGUFValueType.UINT64, g.context_length, None),
        (k + "block_count", U32, g.n_layer, None),
        (k + "embedding_length", U32, g.hidden, None),
        (k + "vocab_size", U32, g.vocab, None),
        (k + "attention.head_count", U32, g.n_head, None),
        (k + "attention.head_count_kv", U32, 1, None),
        (k + "attention.key_length", U32, g.head_dim, None),
        (k + "attention.value_length", U32, g.head_dim, None),
        (k + "rope.dimension_count", U32, g.rope_dim, None),
        (k + "attention.q_lora_rank", U32, g.q_lora, None),
        (k + "attention.output_lora_rank", U32, g.o_lora, None),
        (k + "attention.output_group_count", U32, g.o_groups, None),
        (k + "expert_count", U32, g.n_expert, None),
        (k + "expert_used_count", U32, g.n_used, None),
        (k + "expert_feed_forward_length", U32, g.ffn, None),
        (k + "expert_shared_count", U32, 1, None),
        (k + "hash_layer_count", U32, g.n_hash, None),
        (k + "expert_group_count", U32, 0, None),
        (k + "expert_group_used_count", U32, 0, None),
        (k + "expert_gating_func", U32, 4, None),
        (k + "attention.sliding_window", U32, g.window, None),
        (k + "attention.indexer.head_count", U32, g.idx_heads, None),
        (k + "attention.indexer.key_length", U32, g.idx_dim, None),
        (k + "attention.indexer.top_k", U32, g.idx_topk, None),
        (k + "hyper_connection.count", U32, g.n_hc, None),
        (k + "hyper_connection.sinkhorn_iterations", U32, g.sinkhorn_iters, None),
        (k + "attention.compress_ratios", A, ratios, GGUFValueType.INT32),
        (k + "swiglu_clamp_exp", A, [g.swiglu_limit] * len(ratios), F32),
        (k + "rope.scaling.type", GGUFValueType.STRING, "yarn", None),
        (k + "rope.scaling.original_context_length", U32, g.yarn_orig_ctx, None),
        (k + "rope.freq_base", F32, g.rope_theta, None),
        (k + "rope.scaling.factor", F32, g.yarn_factor, None),
        (k + "rope.scaling.yarn_beta_fast", F32, g.yarn_beta_fast, None),
        (k + "rope.scaling.yarn_beta_slow", F32, g.yarn_beta_slow, None),
        (k + "attention.compress_rope_freq_base", F32, g.compress_rope_theta, None),
        (k + "expert_weights_scale", F32, g.routed_scale, None),
        (k + "expert_weights_norm", GGUFValueType.BOOL, True, None),
        (k + "attention.layer_norm_rms_epsilon", F32, g.rms_eps, None),
        (k + "hyper_connection.epsilon", F32, g.hc_eps, None),
    ]


def write_gguf(path: str, v: Variant, tensors: list[Tensor]) -> None:
    g = GEOMETRIES[v.geometry]
    wr = GGUFWriter(path, arch=ARCH)
    for key, vt, val, sub in metadata(g, v.name):
        wr.add_key_value(key, val, vt, sub_type=sub)
    for t in tensors:
        if t.qtype in (T.F32, T.F16, T.I32):
            wr.add_tensor(t.spec.name, np.ascontiguousarray(t.data))
        else:
            wr.add_tensor(t.spec.name, np.ascontiguousarray(t.data), raw_dtype=t.qtype)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return np.array_equal(np.ascontiguousarray(a, np.float32).view(np.uint32),
                              np.ascontiguousarray(b, np.float32).view(np.uint32))
    return np.array_equal(a, b)


def read_gguf(path: str) -> tuple[dict, dict]:
    """Returns ({key: (types, value)}, {name: (qtype, ne, f32-or-int values in numpy order)})."""
    r = GGUFReader(path)
    kv = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        kv[name] = ([int(t) for t in f.types], f.contents())
    ts = {}
    for t in r.tensors:
        qt = T(int(t.tensor_type))
        ne = tuple(int(x) for x in t.shape)
        if qt in (T.F32, T.F16):
            vals = np.asarray(t.data).astype(np.float32).reshape(tuple(reversed(ne)))
        elif qt == T.I32:
            vals = np.asarray(t.data).astype(np.int64).reshape(tuple(reversed(ne)))
        else:
            vals = dequantize(np.asarray(t.data), qt).reshape(tuple(reversed(ne)))
        ts[t.name] = (qt, ne, vals)
    return kv, ts


def verify_gguf(path: str, v: Variant, expected: list[Tensor]) -> dict:
    """Re-read the file and check metadata values/types and every tensor's name, type, ne and
    dequantized bits against what was generated. Raises on any mismatch."""
    g = GEOMETRIES[v.geometry]
    kv, ts = read_gguf(path)
    errors = []
    if kv.get("general.architecture", (None, None))[1] != ARCH:
        errors.append("general.architecture")
    for key, vt, val, sub in metadata(g, v.name):
        if key not in kv:
            errors.append(f"missing key {key}")
            continue
        types, got = kv[key]
        want_types = [int(vt)] + ([int(sub)] if sub is not None else [])
        if types != want_types:
            errors.append(f"{key}: types {types} != {want_types}")
        if isinstance(val, float):
            ok = np.float32(got) == np.float32(val)
        elif isinstance(val, list) and val and isinstance(val[0], float):
            ok = list(np.float32(got)) == list(np.float32(val))
        else:
            ok = got == val
        if not ok:
            errors.append(f"{key}: {got!r} != {val!r}")
    names = [t.spec.name for t in expected]
    if sorted(ts) != sorted(names):
        errors.append(f"tensor set differs: extra {sorted(set(ts) - set(names))}, missing {sorted(set(names) - set(ts))}")
    for t in expected:
        if t.spec.name not in ts:
            continue
        qt, ne, vals = ts[t.spec.name]
        if qt != t.qtype or ne != t.spec.ne:
            errors.append(f"{t.spec.name}: {qt.name} {ne} != {t.qtype.name} {t.spec.ne}")
        elif not _bits_equal(vals, t.values):
            errors.append(f"{t.spec.name}: decoded values differ")
    if errors:
        raise SystemExit(f"GGUF self-check FAILED for {path}:\n  " + "\n  ".join(errors))
    return {"tensors": len(ts), "keys": len(kv)}


def geometry_dict(g: Geometry) -> dict:
    d = dataclasses.asdict(g)
    d["ratios"] = list(g.ratios)
    d["n_layer"] = g.n_layer
    return d
