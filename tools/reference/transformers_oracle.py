#!/usr/bin/env python3
"""Reference oracle for the dsv4 forward pass, built on HF transformers' own DeepseekV4 model.

For each variant (f32, q2, q4) this script
  1. draws deterministic random weights in antirez's GGUF layout (oracle_gguf.py),
  2. writes them to a GGUF (`deepseek4` architecture, the published files' names/types/keys),
  3. loads the *decoded* values into a transformers 5.23 `DeepseekV4ForCausalLM` built from a
     `DeepseekV4Config` of the same geometry (float32, CPU, eager attention, eager experts),
  4. re-reads the GGUF and checks, bit for bit, that every tensor decodes to the torch
     parameter it maps to (fails loudly otherwise),
  5. runs fixed token sequences and stores float32 logits at every position (gzip, little-endian,
     row-major [n_tokens, vocab]) plus a manifest `oracle.json`.

It also records diagnostics that tell a consumer how hard to trust a comparison: distance of
every indexer / router top-k decision from a tie, how often the SwiGLU clamp fired, how far the
float32 logits are from a float64 run, and whether transformers' own cached (chunked prefill +
decode) path reproduces the one-shot logits.

Usage (from the repository root):
    /work/venvs/oracle/bin/python tools/reference/transformers_oracle.py           # regenerate all
    /work/venvs/oracle/bin/python tools/reference/transformers_oracle.py --gguf-only   # GGUFs only,
        checked against the sha256 in the committed manifest (how the uncommitted q2/q4 files
        are rebuilt)
    /work/venvs/oracle/bin/python tools/reference/transformers_oracle.py --out /tmp/x  # elsewhere
"""
from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import io
import json
import os
import platform
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle_archref  # noqa: E402
import oracle_gguf as og  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "crates", "model", "tests", "data", "oracle")
SEQ_SEED = 7
# Every indexer/router top-k choice must be at least this many times farther from a tie than the
# f32-vs-f64 score difference, so an independent f32 engine makes the same discrete choices.
MIN_GAP_OVER_NOISE = 50.0
# Largest tolerated |logit| difference between transformers (f32) and oracle_archref (f64).
MAX_ARCHREF_DIFF = 1e-3


# ---------------------------------------------------------------------------------------------
# Token sequences

def sequences(vocab: int) -> dict[str, list[int]]:
    """Three fixed prompts, all starting with BOS (id 0).

    long (400): > 3 ratio-128 rows (emitted at 127, 255, 383), up to 100 ratio-4 rows, so the
        indexer keeps only top_k of them; far beyond the sliding window.
    medium (37): not a multiple of 4; the last two queries see 9 ratio-4 rows (> top_k of the
        f32 model), no ratio-128 row yet.
    short (5): one ratio-4 row, emitted at position 3 and visible only to positions 3 and 4.
    """
    rng = np.random.default_rng(SEQ_SEED)
    out = {}
    for name, n in (("long", 400), ("medium", 37), ("short", 5)):
        ids = rng.integers(1, vocab, size=n).tolist()
        ids[0] = 0
        out[name] = [int(x) for x in ids]
    return out


# ---------------------------------------------------------------------------------------------
# transformers model

def hf_config(g: og.Geometry):
    from transformers import DeepseekV4Config

    layer_types = [
        {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}[r]
        for r in g.ratios
    ]
    cfg = DeepseekV4Config(
        vocab_size=g.vocab,
        hidden_size=g.hidden,
        moe_intermediate_size=g.ffn,
        num_hidden_layers=g.n_layer,
        num_attention_heads=g.n_head,
        num_key_value_heads=1,
        head_dim=g.head_dim,
        partial_rotary_factor=g.rope_dim / g.head_dim,
        q_lora_rank=g.q_lora,
        num_experts_per_tok=g.n_used,
        n_routed_experts=g.n_expert,
        n_shared_experts=1,
        scoring_func="sqrtsoftplus",
        norm_topk_prob=True,
        routed_scaling_factor=g.routed_scale,
        max_position_embeddings=g.context_length,
        rope_theta=g.rope_theta,
        # Explicit schedule: the config's built-in default is V4-Pro's (ARCH.md §6 row 9).
        layer_types=layer_types,
        mlp_layer_types=["hash_moe"] * g.n_hash + ["moe"] * (g.n_layer - g.n_hash),
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
        compress_rope_theta=g.compress_rope_theta,
        # Only the "compress" rope gets these (main stays plain); the config forces
        # attention_factor = 1.0 for it, i.e. no YaRN magnitude scaling (ARCH.md §2.1).
        rope_parameters={
            "rope_type": "yarn",
            "factor": g.yarn_factor,
            "original_max_position_embeddings": g.yarn_orig_ctx,
            "beta_fast": g.yarn_beta_fast,
            "beta_slow": g.yarn_beta_slow,
        },
        hc_mult=g.n_hc,
        hc_sinkhorn_iters=g.sinkhorn_iters,
        hc_eps=g.hc_eps,
        swiglu_limit=g.swiglu_limit,
        sliding_window=g.window,
        o_groups=g.o_groups,
        o_lora_rank=g.o_lora,
        index_n_heads=g.idx_heads,
        index_head_dim=g.idx_dim,
        index_topk=g.idx_topk,
        rms_norm_eps=g.rms_eps,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
    )
    # Eager attention is V4's only backend; eager experts is the plain per-expert loop (the
    # default would pick grouped_mm when torch offers it).
    cfg._attn_implementation = "eager"
    cfg._experts_implementation = "eager"
    cfg.torch_dtype = torch.float32
    return cfg


def torch_key(gguf_name: str) -> tuple[str, str | None]:
    """GGUF tensor name -> (transformers state_dict key, which half of gate_up_proj or None).

    Every mapping is the identity on numpy-order arrays (numpy shape == reversed GGUF ne ==
    PyTorch shape); the only re-layout is the routed gate/up pair, which transformers stores
    concatenated as gate_up_proj[E, 2·ffn, hidden] = cat(gate, up) along dim 1.
    """
    glob = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output.weight": "lm_head.weight",
        "output_norm.weight": "model.norm.weight",
        "output_hc_fn.weight": "model.hc_head.hc_fn",
        "output_hc_base.weight": "model.hc_head.hc_base",
        "output_hc_scale.weight": "model.hc_head.hc_scale",
    }
    if gguf_name in glob:
        return glob[gguf_name], None
    _, il, rest = gguf_name.split(".", 2)
    p = f"model.layers.{il}."
    ix = "self_attn.compressor.indexer."
    per_layer = {
        "hc_attn_fn.weight": "attn_hc.fn",
        "hc_attn_scale.weight": "attn_hc.scale",
        "hc_attn_base.weight": "attn_hc.base",
        "hc_ffn_fn.weight": "ffn_hc.fn",
        "hc_ffn_scale.weight": "ffn_hc.scale",
        "hc_ffn_base.weight": "ffn_hc.base",
        "attn_norm.weight": "input_layernorm.weight",
        "ffn_norm.weight": "post_attention_layernorm.weight",
        "attn_q_a.weight": "self_attn.q_a_proj.weight",
        "attn_q_a_norm.weight": "self_attn.q_a_norm.weight",
        "attn_q_b.weight": "self_attn.q_b_proj.weight",
        "attn_kv.weight": "self_attn.kv_proj.weight",
        "attn_kv_a_norm.weight": "self_attn.kv_norm.weight",
        "attn_sinks.weight": "self_attn.sinks",
        "attn_output_a.weight": "self_attn.o_a_proj.weight",
        "attn_output_b.weight": "self_attn.o_b_proj.weight",
        "attn_compressor_ape.weight": "self_attn.compressor.position_bias",
        "attn_compressor_kv.weight": "self_attn.compressor.kv_proj.weight",
        "attn_compressor_gate.weight": "self_attn.compressor.gate_proj.weight",
        "attn_compressor_norm.weight": "self_attn.compressor.kv_norm.weight",
        "indexer.attn_q_b.weight": ix + "q_b_proj.weight",
        "indexer.proj.weight": ix + "scorer.weights_proj.weight",
        "indexer_compressor_ape.weight": ix + "position_bias",
        "indexer_compressor_kv.weight": ix + "kv_proj.weight",
        "indexer_compressor_gate.weight": ix + "gate_proj.weight",
        "indexer_compressor_norm.weight": ix + "kv_norm.weight",
        "ffn_gate_inp.weight": "mlp.gate.weight",
        "exp_probs_b.bias": "mlp.gate.e_score_correction_bias",
        "ffn_gate_tid2eid.weight": "mlp.gate.tid2eid",
        "ffn_down_exps.weight": "mlp.experts.down_proj",
        "ffn_gate_shexp.weight": "mlp.shared_experts.gate_proj.weight",
        "ffn_up_shexp.weight": "mlp.shared_experts.up_proj.weight",
        "ffn_down_shexp.weight": "mlp.shared_experts.down_proj.weight",
    }
    if rest == "ffn_gate_exps.weight":
        return p + "mlp.experts.gate_up_proj", "gate"
    if rest == "ffn_up_exps.weight":
        return p + "mlp.experts.gate_up_proj", "up"
    return p + per_layer[rest], None


def state_dict_from(named_values: dict[str, np.ndarray], ffn: int) -> dict[str, torch.Tensor]:
    """Build the transformers state_dict from {gguf name: decoded numpy-order values}."""
    sd, halves = {}, {}
    for name, vals in named_values.items():
        key, half = torch_key(name)
        if half is None:
            if key in sd:
                raise SystemExit(f"two GGUF tensors map to {key}")
            sd[key] = torch.from_numpy(np.ascontiguousarray(vals))
        else:
            halves.setdefault(key, {})[half] = vals
    for key, h in halves.items():
        assert h["gate"].shape[1] == ffn and h["up"].shape[1] == ffn
        sd[key] = torch.from_numpy(np.ascontiguousarray(np.concatenate([h["gate"], h["up"]], axis=1)))
    return sd


def torch_view_of(sd: dict[str, torch.Tensor], gguf_name: str, ffn: int) -> np.ndarray:
    """Inverse mapping: the slice of a torch parameter a GGUF tensor must equal."""
    key, half = torch_key(gguf_name)
    t = sd[key].detach().cpu().numpy()
    if half == "gate":
        return t[:, :ffn, :]
    if half == "up":
        return t[:, ffn:, :]
    return t


def build_model(g: og.Geometry, sd: dict[str, torch.Tensor]):
    from transformers import DeepseekV4ForCausalLM

    torch.manual_seed(0)  # the constructor's init is overwritten, but keep it reproducible
    model = DeepseekV4ForCausalLM(hf_config(g)).to(torch.float32).eval()
    want = set(model.state_dict())
    if want != set(sd):
        raise SystemExit(f"state_dict keys differ: missing {sorted(want - set(sd))}, extra {sorted(set(sd) - want)}")
    model.load_state_dict(sd, strict=True)
    assert model.config._experts_implementation == "eager", model.config._experts_implementation
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr(), "LM head tied"
    for p in model.state_dict().values():
        if p.is_floating_point():
            assert p.dtype == torch.float32
    return model


def check_model_against_gguf(model, path: str, g: og.Geometry) -> int:
    """Self-check (deliverable 3): every GGUF tensor, dequantized by gguf-py, equals the torch
    parameter it maps to, bit for bit; and every torch parameter/buffer is covered."""
    _, ts = og.read_gguf(path)
    sd = model.state_dict()
    covered = set()
    bad = []
    for name, (_, _, vals) in ts.items():
        key, _ = torch_key(name)
        covered.add(key)
        tv = torch_view_of(sd, name, g.ffn)
        if tv.dtype == np.int64 or vals.dtype == np.int64:
            ok = tv.shape == vals.shape and np.array_equal(tv, vals)
        else:
            ok = og._bits_equal(tv, vals)
        if not ok:
            bad.append(f"{name} -> {key}")
    missing = set(sd) - covered
    if bad or missing:
        raise SystemExit("torch/GGUF self-check FAILED:\n  " + "\n  ".join(bad + [f"unmapped {m}" for m in sorted(missing)]))
    return len(ts)


# ---------------------------------------------------------------------------------------------
# Diagnostics gathered with hooks during the one-shot forward

class Probe:
    """Forward hooks recording the scores every top-k decision is taken over (indexer: per query
    over its visible compressed rows; router: sqrt-softplus + bias over experts), and counting
    how often the SwiGLU clamp fires. Comparing the records of the float32 model with those of
    the float64 model tells how far each decision is from a tie, in units of the rounding noise
    (see `decision_margins`)."""

    def __init__(self, model, g: og.Geometry, count_clamp: bool):
        from transformers.models.deepseek_v4 import modeling_deepseek_v4 as m

        self.g = g
        self.handles = []
        self.tag = None                      # name of the sequence being run
        self.indexer = {}                    # (tag, layer) -> [S, T] float64 scores
        self.router = {}                     # (tag, layer) -> [S, E] float64 selection scores
        self.clamp = {"gate_hi": 0, "up_abs": 0, "n": 0}
        self._restore = None
        for il, layer in enumerate(model.model.layers):
            comp = layer.self_attn.compressor
            if isinstance(comp, m.DeepseekV4CSACompressor):
                self.handles.append(comp.indexer.scorer.register_forward_hook(self._indexer_hook(il)))
            gate = layer.mlp.gate
            if isinstance(gate, m.DeepseekV4TopKRouter):
                self.handles.append(gate.register_forward_hook(self._router_hook(il, gate)))
            if count_clamp:
                sh = layer.mlp.shared_experts
                self.handles.append(sh.gate_proj.register_forward_hook(self._clamp_hook("gate_hi")))
                self.handles.append(sh.up_proj.register_forward_hook(self._clamp_hook("up_abs")))
        if count_clamp:
            # Routed experts: wrap the class's gate/up activation so routed values are counted too.
            orig = m.DeepseekV4Experts._apply_gate
            probe = self

            def counting_gate(self_, gate_up):
                gte, up = gate_up.chunk(2, dim=-1)
                probe._count(gte, "gate_hi")
                probe._count(up, "up_abs")
                return orig(self_, gate_up)

            self._restore = (m.DeepseekV4Experts, orig)
            m.DeepseekV4Experts._apply_gate = counting_gate

    def close(self):
        for h in self.handles:
            h.remove()
        if self._restore:
            cls, orig = self._restore
            cls._apply_gate = orig

    def _count(self, x, kind):
        lim = self.g.swiglu_limit
        if kind == "gate_hi":
            self.clamp["gate_hi"] += int((x > lim).sum())
            self.clamp["n"] += x.numel()
        else:
            self.clamp["up_abs"] += int((x.abs() > lim).sum())

    def _clamp_hook(self, kind):
        def hook(mod, inp, out):
            self._count(out, kind)
        return hook

    def _indexer_hook(self, il):
        def hook(mod, inp, out):
            self.indexer[(self.tag, il)] = out[0].detach().double().clone()  # [S, T], before masking
        return hook

    def _router_hook(self, il, gate):
        def hook(mod, inp, out):
            logits = out[0].detach().double()
            scores = torch.nn.functional.softplus(logits).sqrt()
            self.router[(self.tag, il)] = (scores + gate.e_score_correction_bias.double(), scores)
        return hook


def decision_margins(p32: Probe, p64: Probe, g: og.Geometry) -> dict:
    """For every top-k decision: gap = k-th minus (k+1)-th largest score of the float64 model,
    noise = largest |score_f32 - score_f64| among the candidates. An engine computing in f32 can
    only choose differently when its own error is comparable to the gap, so gap/noise is the
    safety factor of the oracle's discrete choices. Also checks that both models chose the same
    sets."""
    out = {"indexer": {}, "router": {}}
    for (tag, il), s64 in p64.indexer.items():
        s32 = p32.indexer[(tag, il)]
        k = g.idx_topk
        d = out["indexer"].setdefault(str(il), {"decisions": 0, "min_rel_gap": None, "min_gap_over_noise": None})
        for t in range(s64.shape[0]):
            vis = (t + 1) // 4          # rows completed at or before t (ARCH.md §4)
            if vis <= k:
                continue
            a, b = s64[t, :vis], s32[t, :vis]
            top = torch.sort(a, descending=True).values
            gap = float(top[k - 1] - top[k])
            noise = float((a - b).abs().max())
            if set(torch.topk(a, k).indices.tolist()) != set(torch.topk(b, k).indices.tolist()):
                raise SystemExit(f"indexer layer {il} {tag} query {t}: f32 and f64 models select different rows")
            rel = gap / float(top.abs().max())
            ratio = gap / max(noise, 1e-300)
            d["decisions"] += 1
            d["min_rel_gap"] = rel if d["min_rel_gap"] is None else min(d["min_rel_gap"], rel)
            d["min_gap_over_noise"] = ratio if d["min_gap_over_noise"] is None else min(d["min_gap_over_noise"], ratio)
    changed = total = 0
    for (tag, il), (sel64, sc64) in p64.router.items():
        sel32, _ = p32.router[(tag, il)]
        k = g.n_used
        top = torch.sort(sel64, dim=-1, descending=True).values
        gap = top[:, k - 1] - top[:, k]
        noise = (sel64 - sel32).abs().amax(-1)
        i64 = torch.topk(sel64, k, dim=-1).indices.sort(-1).values
        i32 = torch.topk(sel32, k, dim=-1).indices.sort(-1).values
        if not torch.equal(i64, i32):
            raise SystemExit(f"router layer {il} {tag}: f32 and f64 models select different experts")
        d = out["router"].setdefault(str(il), {"decisions": 0, "min_gap": None, "min_gap_over_noise": None})
        mg, mr = float(gap.min()), float((gap / noise.clamp_min(1e-300)).min())
        d["decisions"] += int(gap.numel())
        d["min_gap"] = mg if d["min_gap"] is None else min(d["min_gap"], mg)
        d["min_gap_over_noise"] = mr if d["min_gap_over_noise"] is None else min(d["min_gap_over_noise"], mr)
        unbiased = torch.topk(sc64, k, dim=-1).indices.sort(-1).values
        changed += int((unbiased != i64).any(-1).sum())
        total += int(gap.numel())
    out["router_bias_changed_selection_fraction"] = changed / max(1, total)
    return out


# ---------------------------------------------------------------------------------------------
# Runs

@torch.no_grad()
def logits_one_shot(model, ids: list[int]) -> torch.Tensor:
    x = torch.tensor([ids], dtype=torch.long)
    return model(input_ids=x, use_cache=False).logits[0]


@torch.no_grad()
def logits_cached(model, ids: list[int], cuts: list[int]) -> torch.Tensor:
    """transformers' stateful path: chunked prefill at `cuts`, one token at a time between the
    last two cuts, then the rest as a chunk. Exercises the compressor buffers, the CSA overlap
    carry and the sliding-window cache across calls."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out, pos = [], 0
    pieces = []
    a, b, c = cuts
    pieces += [(0, a), (a, b)] + [(p, p + 1) for p in range(b, c)] + [(c, len(ids))]
    for s, e in pieces:
        x = torch.tensor([ids[s:e]], dtype=torch.long)
        o = model(input_ids=x, past_key_values=cache, use_cache=True,
                  position_ids=torch.arange(s, e).unsqueeze(0))
        out.append(o.logits[0])
        pos = e
    assert pos == len(ids)
    return torch.cat(out, 0)


def f32_bytes(x: torch.Tensor) -> bytes:
    return np.ascontiguousarray(x.detach().cpu().numpy().astype("<f4")).tobytes()


def write_gz(path: str, data: bytes) -> None:
    # mtime=0 and no embedded file name, so the .gz bytes are reproducible.
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(data)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def rope_tables(model) -> dict:
    """The inverse frequencies transformers actually uses (main and YaRN 'compress'), recorded so
    an engine can compare its own tables."""
    re = model.model.rotary_emb
    return {
        "main_inv_freq": [float(x) for x in re.main_inv_freq],
        "compress_inv_freq": [float(x) for x in re.compress_inv_freq],
        "main_attention_scaling": float(re.main_attention_scaling),
        "compress_attention_scaling": float(re.compress_attention_scaling),
    }


def run_variant(vname: str, out_dir: str, seqs: dict, gguf_only: bool, manifest_old: dict | None) -> dict:
    v = og.VARIANTS[vname]
    g = og.GEOMETRIES[v.geometry]
    t0 = time.time()
    tensors = og.make_tensors(v)
    gguf_name = f"oracle-{vname}.gguf"
    gguf_path = os.path.join(out_dir, gguf_name)
    og.write_gguf(gguf_path, v, tensors)
    og.verify_gguf(gguf_path, v, tensors)
    sha = og.sha256_file(gguf_path)
    info = {
        "gguf": gguf_name,
        "gguf_sha256": sha,
        "gguf_bytes": os.path.getsize(gguf_path),
        "gguf_committed": v.commit_gguf,
        "geometry": og.geometry_dict(g),
        "seed": v.seed,
        "tensor_types": {t.spec.name: t.qtype.name for t in tensors},
    }
    if manifest_old and vname in manifest_old.get("variants", {}):
        old = manifest_old["variants"][vname]["gguf_sha256"]
        if old != sha:
            raise SystemExit(f"{gguf_name}: sha256 {sha} differs from the manifest's {old}")
        print(f"[{vname}] {gguf_name} matches the manifest sha256")
    if gguf_only:
        return info

    sd = state_dict_from({t.spec.name: t.values for t in tensors}, g.ffn)
    model = build_model(g, sd)
    n_checked = check_model_against_gguf(model, gguf_path, g)
    print(f"[{vname}] GGUF written and self-checked ({n_checked} tensors bit-identical to the torch model)")

    p32 = Probe(model, g, count_clamp=True)
    logits = {}
    for sname, ids in seqs.items():
        p32.tag = sname
        logits[sname] = logits_one_shot(model, ids)
    p32.close()

    # Same weights, float64 model: a yardstick for f32 rounding noise and for how far each
    # top-k decision is from a tie. Not pure f64: several transformers ops cast to float32
    # internally (HC `.float()`, RoPE tables, indexer scorer), so it bounds noise from below.
    m64 = copy.deepcopy(model).double()
    p64 = Probe(m64, g, count_clamp=False)
    diff64 = {}
    for sname, ids in seqs.items():
        p64.tag = sname
        l64 = logits_one_shot(m64, ids)
        diff64[sname] = float((l64 - logits[sname].double()).abs().max())
    p64.close()
    del m64
    margins = decision_margins(p32, p64, g)
    c = p32.clamp
    diag = {
        "topk_margins": margins,
        "swiglu_gate_clamped_fraction": c["gate_hi"] / max(1, c["n"]),
        "swiglu_up_clamped_fraction": c["up_abs"] / max(1, c["n"]),
    }
    worst = min([d["min_gap_over_noise"] for d in margins["indexer"].values()] +
                [d["min_gap_over_noise"] for d in margins["router"].values()])
    print(f"[{vname}] top-k margins: {json.dumps(margins)}")
    if worst < MIN_GAP_OVER_NOISE:
        raise SystemExit(f"[{vname}] a top-k decision is within {worst:.1f}x the f32 rounding noise of a tie; "
                         "pick another seed so the oracle's discrete choices are robust")

    # The transformers-free float64 implementation of ARCH.md, fed only the GGUF: agreement to
    # rounding level shows the layout mapping and the documented semantics are complete.
    diff_arch = {}
    for sname, ids in seqs.items():
        ref = oracle_archref.forward(gguf_path, ids)
        diff_arch[sname] = float(np.abs(ref - logits[sname].double().numpy()).max())
        if diff_arch[sname] > MAX_ARCHREF_DIFF:
            raise SystemExit(f"[{vname}] {sname}: ARCH.md reference disagrees with transformers by {diff_arch[sname]}")

    ids = seqs["long"]
    cached = logits_cached(model, ids, [150, 230, 262])
    cache_diff = float((cached - logits["long"]).abs().max())
    if cache_diff > 1e-3:
        raise SystemExit(f"[{vname}] transformers' cached path disagrees with its one-shot path by {cache_diff}")

    files = {}
    for sname, lg in logits.items():
        raw = f32_bytes(lg)
        fname = f"logits-{vname}-{sname}.f32.gz"
        write_gz(os.path.join(out_dir, fname), raw)
        top1 = lg.argmax(-1)
        files[sname] = {
            "file": fname,
            "shape": list(lg.shape),
            "dtype": "float32 little-endian, row-major [n_tokens, vocab], gzip",
            "sha256_raw": hashlib.sha256(raw).hexdigest(),
            "logit_std": float(lg.std()),
            "logit_absmax": float(lg.abs().max()),
            "distinct_top1": int(top1.unique().numel()),
            "max_abs_diff_vs_float64_model": diff64[sname],
            "max_abs_diff_vs_archref_float64": diff_arch[sname],
        }
    info.update({
        "hf_config": json.loads(model.config.to_json_string(use_diff=False)),
        "rope": rope_tables(model),
        "logits": files,
        "diagnostics": {
            **diag,
            "cached_path_max_abs_diff_long": cache_diff,
            "cached_path_schedule": "prefill [0,150), chunk [150,230), single tokens 230..261, chunk [262,400)",
        },
    })
    print(f"[{vname}] done in {time.time() - t0:.1f} s; top1 distinct "
          f"{[files[s]['distinct_top1'] for s in files]}, |f32-f64| {[round(diff64[s], 7) for s in diff64]}, "
          f"ARCH.md reference diff {[round(diff_arch[s], 7) for s in diff_arch]}, cached-path diff {cache_diff:.3g}")
    print(f"[{vname}] diagnostics: {json.dumps(diag)}")
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: the committed test data)")
    ap.add_argument("--variants", default="f32,q2,q4")
    ap.add_argument("--gguf-only", action="store_true",
                    help="only write the GGUFs and check them against the manifest's sha256")
    args = ap.parse_args()

    # Determinism: float32, CPU, one thread (GEMM blocking can depend on the thread count),
    # deterministic kernels, fixed seeds everywhere.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)

    os.makedirs(args.out, exist_ok=True)
    man_path = os.path.join(args.out, "oracle.json")
    manifest_old = None
    committed = os.path.join(DEFAULT_OUT, "oracle.json")
    if args.gguf_only and os.path.exists(committed):
        with open(committed) as f:
            manifest_old = json.load(f)

    import transformers
    import gguf  # noqa: F401
    from importlib.metadata import version

    vocab = {og.GEOMETRIES[og.VARIANTS[v].geometry].vocab for v in args.variants.split(",")}
    assert len(vocab) == 1, "all variants share the token sequences, so they must share the vocab"
    seqs = sequences(vocab.pop())
    variants = {}
    for vname in args.variants.split(","):
        variants[vname] = run_variant(vname, args.out, seqs, args.gguf_only, manifest_old)
    if args.gguf_only:
        return

    manifest = {
        "format": "dsv4-transformers-oracle/1",
        "generator": "tools/reference/transformers_oracle.py (see tools/reference/README.md)",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gguf": version("gguf"),
            "numpy": np.__version__,
        },
        "sequences": seqs,
        "variants": variants,
    }
    with open(man_path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"wrote {man_path}")


if __name__ == "__main__":
    main()
