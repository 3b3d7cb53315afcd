"""A second, transformers-free reference: the forward pass exactly as /work/shared/spec/ARCH.md §3
describes it (decode recurrence, one token at a time, with the compressor frontier state of §3.6
and §5), with --plain-numerics semantics (no FP8 / Hadamard / FP4 round trips), in float64,
reading weights and hyperparameters only from the GGUF.

transformers_oracle.py runs it on every oracle GGUF and requires its logits to agree with
transformers' to within rounding. That proves (a) the GGUF layout/mapping is the one ARCH.md
specifies, and (b) the differences listed in tools/reference/README.md are the only ones
between transformers and ARCH.md for these inputs. It is written for clarity, not speed.
"""
from __future__ import annotations

import math

import numpy as np

import oracle_gguf as og


def _rms(v, w=None, eps=1e-6):
    r = v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps)
    return r * w if w is not None else r


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softplus(z):
    # ARCH.md §2.5
    return np.where(z > 20, z, np.where(z < -20, np.exp(np.minimum(z, 0)), np.log1p(np.exp(np.minimum(z, 20)))))


def _silu(z):
    return z * _sigmoid(z)


def rope_freqs(R: int, base: float, yarn: dict | None) -> np.ndarray:
    """ARCH.md §2.1: one frequency per adjacent pair of the R-dim tail."""
    i = np.arange(R // 2, dtype=np.float64)
    f = base ** (-2.0 * i / R)
    if yarn is None:
        return f

    def corr(beta):
        return R * math.log(yarn["orig"] / (beta * 2 * math.pi)) / (2 * math.log(base))

    low = max(0, math.floor(corr(yarn["beta_fast"])))
    high = min(R - 1, math.ceil(corr(yarn["beta_slow"])))
    r = 1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)
    return (f / yarn["factor"]) * (1 - r) + f * r


def rope_tail(x, pos, freqs, inverse=False):
    """Rotate adjacent pairs of the last 2·len(freqs) dims of x[..., :] by pos·f (or −pos·f)."""
    R = 2 * len(freqs)
    ang = pos * freqs * (-1.0 if inverse else 1.0)
    c, s = np.cos(ang), np.sin(ang)
    out = x.copy()
    t = x[..., -R:]
    a, b = t[..., 0::2], t[..., 1::2]
    out[..., -R:][..., 0::2] = a * c - b * s
    out[..., -R:][..., 1::2] = a * s + b * c
    return out


class Compressor:
    """§3.6 frontier state for one compressor (main: Dc = head_dim, indexer: Dc = idx_dim)."""

    def __init__(self, ratio, Dc, W, pfx, freqs, eps):
        self.ratio, self.Dc, self.freqs, self.eps = ratio, Dc, freqs, eps
        self.coff = 2 if ratio == 4 else 1
        self.kv_w, self.gate_w = W[pfx + "_kv.weight"], W[pfx + "_gate.weight"]
        self.ape, self.norm = W[pfx + "_ape.weight"], W[pfx + "_norm.weight"]
        nrow = 8 if ratio == 4 else ratio
        self.kv = np.zeros((nrow, self.coff * Dc))
        self.sc = np.full((nrow, self.coff * Dc), -np.inf)
        self.rows = []

    def step(self, a, pos):
        r, Dc = self.ratio, self.Dc
        pm = pos % r
        kvt = self.kv_w @ a
        sct = self.gate_w @ a + self.ape[pm]
        slot = 4 + pm if r == 4 else pm
        self.kv[slot], self.sc[slot] = kvt, sct
        if (pos + 1) % r:
            return
        if r == 4:
            kv = np.concatenate([self.kv[0:4, :Dc], self.kv[4:8, Dc:]], 0)   # prev lane A, cur lane B
            sc = np.concatenate([self.sc[0:4, :Dc], self.sc[4:8, Dc:]], 0)
        else:
            kv, sc = self.kv, self.sc
        w = np.exp(sc - sc.max(0, keepdims=True))
        w /= w.sum(0, keepdims=True)
        c = (w * kv).sum(0)
        if r == 4:
            self.kv[0:4], self.sc[0:4] = self.kv[4:8].copy(), self.sc[4:8].copy()
        c = _rms(c, self.norm, self.eps)
        self.rows.append(rope_tail(c, pos + 1 - r, self.freqs))


def forward(path: str, tokens: list[int]) -> np.ndarray:
    kv_meta, ts = og.read_gguf(path)
    md = {k: v[1] for k, v in kv_meta.items()}
    A = og.ARCH + "."
    nl = md[A + "block_count"]
    E = md[A + "embedding_length"]
    Hn, D, R = md[A + "attention.head_count"], md[A + "attention.key_length"], md[A + "rope.dimension_count"]
    G, rank = md[A + "attention.output_group_count"], md[A + "attention.output_lora_rank"]
    W_win = md[A + "attention.sliding_window"]
    IH, ID, topk = (md[A + "attention.indexer.head_count"], md[A + "attention.indexer.key_length"],
                    md[A + "attention.indexer.top_k"])
    n_used, n_hash = md[A + "expert_used_count"], md[A + "hash_layer_count"]
    ratios = list(md[A + "attention.compress_ratios"])[:nl]
    clamp = [float(x) for x in md[A + "swiglu_clamp_exp"]][:nl]
    nhc, iters = md[A + "hyper_connection.count"], md[A + "hyper_connection.sinkhorn_iterations"]
    eps = float(np.float32(md[A + "attention.layer_norm_rms_epsilon"]))
    hc_eps = float(np.float32(md[A + "hyper_connection.epsilon"]))
    scale = float(md[A + "expert_weights_scale"])
    yarn = {"orig": md[A + "rope.scaling.original_context_length"], "factor": float(md[A + "rope.scaling.factor"]),
            "beta_fast": float(md[A + "rope.scaling.yarn_beta_fast"]),
            "beta_slow": float(md[A + "rope.scaling.yarn_beta_slow"])}
    f_main = rope_freqs(R, float(md[A + "rope.freq_base"]), None)
    f_comp = rope_freqs(R, float(md[A + "attention.compress_rope_freq_base"]), yarn)
    W = {n: (v if v.dtype == np.int64 else v.astype(np.float64)) for n, (_, _, v) in ts.items()}

    layers = []
    for il in range(nl):
        p = f"blk.{il}."
        Li = {k[len(p):]: v for k, v in W.items() if k.startswith(p)}
        r = ratios[il]
        st = {"W": Li, "ratio": r, "raw": [], "freqs": f_comp if r else f_main}
        if r:
            st["comp"] = Compressor(r, D, Li, "attn_compressor", f_comp, eps)
        if r == 4:
            st["icomp"] = Compressor(4, ID, Li, "indexer_compressor", f_comp, eps)
        layers.append(st)

    def hc_pre(S, fn, sc, base):
        m = fn @ _rms(S.reshape(-1), None, eps)
        pre = _sigmoid(m[:nhc] * sc[0] + base[:nhc]) + hc_eps
        post = 2 * _sigmoid(m[nhc:2 * nhc] * sc[1] + base[nhc:2 * nhc])
        C = (m[2 * nhc:] * sc[2] + base[2 * nhc:]).reshape(nhc, nhc)       # C[a][b], a = source
        M = np.exp(C - C.max(1, keepdims=True))
        M = M / M.sum(1, keepdims=True) + hc_eps
        M = M / (M.sum(0, keepdims=True) + hc_eps)
        for _ in range(iters - 1):
            M = M / (M.sum(1, keepdims=True) + hc_eps)
            M = M / (M.sum(0, keepdims=True) + hc_eps)
        return (pre[:, None] * S).sum(0), post, M

    def hc_post(S, y, post, M):
        return post[:, None] * y[None, :] + M.T @ S

    def attention(st, x, pos):
        Wl, r = st["W"], st["ratio"]
        a = _rms(x, Wl["attn_norm.weight"], eps)
        qr = _rms(Wl["attn_q_a.weight"] @ a, Wl["attn_q_a_norm.weight"], eps)
        q = rope_tail(_rms((Wl["attn_q_b.weight"] @ qr).reshape(Hn, D), None, eps), pos, st["freqs"])
        kv = rope_tail(_rms(Wl["attn_kv.weight"] @ a, Wl["attn_kv_a_norm.weight"], eps), pos, st["freqs"])
        st["raw"].append(kv)
        rows = st["raw"][max(0, pos - W_win + 1):pos + 1]          # window includes the current row
        if r:
            st["comp"].step(a, pos)
            comp = st["comp"].rows
            if r == 4:
                st["icomp"].step(a, pos)
                n = len(comp)
                if n > topk:
                    qI = rope_tail((Wl["indexer.attn_q_b.weight"] @ qr).reshape(IH, ID), pos, f_comp)
                    wI = (Wl["indexer.proj.weight"] @ a) / math.sqrt(ID * IH)
                    K = np.stack(st["icomp"].rows)
                    score = (wI[:, None] * np.maximum(0.0, qI @ K.T)).sum(0)
                    sel = sorted(np.argsort(-score, kind="stable")[:topk])   # ties -> lower index
                    comp = [comp[c] for c in sel]
            rows = rows + list(comp)
        Kr = np.stack(rows)
        s = q @ Kr.T / math.sqrt(D)
        sink = Wl["attn_sinks.weight"][:, None]
        mx = np.maximum(s.max(1, keepdims=True), sink)
        e = np.exp(s - mx)
        o = (e @ Kr) / (e.sum(1, keepdims=True) + np.exp(sink - mx))
        o = rope_tail(o, pos, st["freqs"], inverse=True)
        oa = Wl["attn_output_a.weight"]
        per = Hn * D // G
        z = np.concatenate([oa[g * rank:(g + 1) * rank] @ o.reshape(-1)[g * per:(g + 1) * per] for g in range(G)])
        return Wl["attn_output_b.weight"] @ z

    def moe(il, st, x, tok):
        Wl = st["W"]
        f = _rms(x, Wl["ffn_norm.weight"], eps)
        p = np.sqrt(_softplus(Wl["ffn_gate_inp.weight"] @ f))
        if il < n_hash:
            sel = list(Wl["ffn_gate_tid2eid.weight"][tok])
        else:
            sel = list(np.argsort(-(p + Wl["exp_probs_b.bias"]), kind="stable")[:n_used])
        w = scale * p[sel] / p[sel].sum()
        lim = clamp[il]

        def swiglu(g, u):
            return _silu(np.minimum(g, lim)) * np.clip(u, -lim, lim)

        y = np.zeros(E)
        for e_id, wk in zip(sel, w):
            h = swiglu(Wl["ffn_gate_exps.weight"][e_id] @ f, Wl["ffn_up_exps.weight"][e_id] @ f) * wk
            y += Wl["ffn_down_exps.weight"][e_id] @ h
        y += Wl["ffn_down_shexp.weight"] @ swiglu(Wl["ffn_gate_shexp.weight"] @ f, Wl["ffn_up_shexp.weight"] @ f)
        return y

    out = np.zeros((len(tokens), W["output.weight"].shape[0]))
    for pos, tok in enumerate(tokens):
        S = np.tile(W["token_embd.weight"][tok], (nhc, 1))
        for il, st in enumerate(layers):
            Wl = st["W"]
            x, post, M = hc_pre(S, Wl["hc_attn_fn.weight"], Wl["hc_attn_scale.weight"], Wl["hc_attn_base.weight"])
            S = hc_post(S, attention(st, x, pos), post, M)
            x, post, M = hc_pre(S, Wl["hc_ffn_fn.weight"], Wl["hc_ffn_scale.weight"], Wl["hc_ffn_base.weight"])
            S = hc_post(S, moe(il, st, x, tok), post, M)
        m = W["output_hc_fn.weight"] @ _rms(S.reshape(-1), None, eps)
        wh = _sigmoid(m * W["output_hc_scale.weight"][0] + W["output_hc_base.weight"]) + hc_eps
        v = (wh[:, None] * S).sum(0)
        out[pos] = W["output.weight"] @ _rms(v, W["output_norm.weight"], eps)
    return out
