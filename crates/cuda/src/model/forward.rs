//! One token through every layer (the order of `dsv4_model::forward`, one token wide).

use dsv4_model::config::LayerKind;
use dsv4_model::Numerics;

use super::state::{comp_rows, GpuState};
use super::weights::{Hc, Layer, Route};
use super::{Arg, GpuModel};
use crate::buffer::DeviceBuffer;
use crate::error::{CudaError, Result};
use crate::quant::matvec::dev_addr;
use crate::quant::DeviceMatrix;
use Arg::{F, I, L, P};

/// Threads of the single-block kernels (reductions over up to a few thousand values).
const BLOCK: usize = 256;

impl GpuModel {
    /// Feeds `tokens` to the session and returns the logits after the last one (empty when
    /// `tokens` is empty). Token ids outside the vocabulary, a full state and numerics other
    /// than `Plain` are errors; nothing is run then.
    pub fn forward(&self, st: &mut GpuState, tokens: &[u32], numerics: Numerics) -> Result<Vec<f32>> {
        if numerics != Numerics::Plain {
            return Err(CudaError::Shape("only Numerics::Plain is implemented on the GPU so far".into()));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(CudaError::Shape(format!("token id {t} is outside the vocabulary (0..{})", self.cfg.vocab_size)));
        }
        if st.pos + tokens.len() as u64 > st.capacity {
            return Err(CudaError::Shape(format!(
                "{} more tokens do not fit a state at {} of {}",
                tokens.len(),
                st.pos,
                st.capacity
            )));
        }
        if st.layers.len() != self.layers.len() || st.streams.len() != self.cfg.hc_count * self.cfg.n_embd {
            return Err(CudaError::Shape("the state belongs to another model".into()));
        }
        for (i, &t) in tokens.iter().enumerate() {
            self.token(st, t, i + 1 == tokens.len())?;
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = vec![0f32; self.cfg.vocab_size];
        self.stream.memcpy_dtoh(&st.s.logits.view(), &mut out)?;
        self.stream.synchronize()?;
        Ok(out)
    }

    fn ptr<T>(&self, b: &DeviceBuffer<T>) -> u64 {
        dev_addr(&self.stream, b)
    }

    /// `y = W x` on device addresses.
    fn mv(&self, w: &DeviceMatrix, x: u64, y: u64) -> Result<()> {
        // SAFETY: every caller passes addresses inside the model's or the state's buffers,
        // sized for the matrix by construction (state.rs sizes scratch from the config the
        // matrices were checked against when bound), and distinct for x and y.
        unsafe { self.mv.run_raw(w, x, y) }
    }

    fn launch(&self, name: &str, grid: usize, block: usize, smem: usize, args: &[Arg]) -> Result<()> {
        self.k.launch(&self.stream, name, grid, block, smem, args)
    }

    fn token(&self, st: &mut GpuState, token: u32, want_logits: bool) -> Result<()> {
        let c = &self.cfg;
        let (e, hcn) = (c.n_embd, c.hc_count);
        let sp = self.ptr(&st.streams);
        let f16 = self.w.embd_f16 as i32;
        self.launch("embed", e.div_ceil(BLOCK), BLOCK, 0, &[P(self.ptr(&self.w.embd)), I(f16), L(token as i64), I(e as i32), I(hcn as i32), P(sp)])?;
        for il in 0..self.layers.len() {
            self.attention(st, il)?;
            self.ffn(st, il, token)?;
        }
        st.pos += 1;
        if want_logits {
            let s = &st.s;
            let h = &self.w.out_hc;
            self.mv(&h.proj, sp, self.ptr(&s.m))?;
            self.hc_pre(h, sp, self.ptr(&s.m), &self.w.out_norm, self.ptr(&s.x), 0, true)?;
            self.mv(&self.w.output, self.ptr(&s.x), self.ptr(&s.logits))?;
        }
        Ok(())
    }

    /// The HC read-out (`hc_pre` in ops.cu) into `out`, normed by `norm`.
    #[allow(clippy::too_many_arguments)]
    fn hc_pre(&self, h: &Hc, streams: u64, m: u64, norm: &DeviceBuffer<f32>, out: u64, mix: u64, head: bool) -> Result<()> {
        let c = &self.cfg;
        self.launch(
            "hc_pre",
            1,
            BLOCK,
            0,
            &[
                P(streams),
                P(m),
                P(self.ptr(&h.scale)),
                P(self.ptr(&h.base)),
                P(self.ptr(norm)),
                P(out),
                P(mix),
                I(c.hc_count as i32),
                I(c.n_embd as i32),
                I(c.sinkhorn_iters as i32),
                F(c.hc_eps),
                F(c.rms_eps),
                I(head as i32),
            ],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_rope(&self, src: u64, dst: u64, w: u64, heads: usize, d: usize, norm: bool, freqs: u64, n_pairs: usize, pos: u64) -> Result<()> {
        let eps = self.cfg.rms_eps;
        let args = [P(src), P(dst), P(w), I(d as i32), I(norm as i32), F(eps), P(freqs), I(n_pairs as i32), L(pos as i64)];
        self.launch("norm_rope", heads, BLOCK, 0, &args)
    }

    /// Pushes one token's compressor inputs; writes the pooled row to `row` when `pos` ends a
    /// window.
    #[allow(clippy::too_many_arguments)]
    fn comp_push(&self, f: &super::state::Frontier, kv: u64, sc: u64, ape: u64, kind: LayerKind, width: usize, pos: u64, row: u64, norm: u64, freqs: u64) -> Result<()> {
        let n_pairs = self.cfg.rope_dim / 2;
        let args = [
            P(self.ptr(&f.kv)),
            P(self.ptr(&f.score)),
            P(kv),
            P(sc),
            P(ape),
            I(kind.ratio() as i32),
            I(width as i32),
            I((kind == LayerKind::Csa) as i32),
            L(pos as i64),
            P(row),
            P(norm),
            F(self.cfg.rms_eps),
            P(freqs),
            I(n_pairs as i32),
        ];
        self.launch("comp_push", 1, BLOCK, 0, &args)
    }

    fn attention(&self, st: &mut GpuState, il: usize) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let ls = &st.layers[il];
        let s = &st.s;
        let pos = st.pos;
        let (d, nh, n_pairs) = (c.head_dim, c.n_head, c.rope_dim / 2);
        let sp = self.ptr(&st.streams);
        let (x, qr, q, mix) = (self.ptr(&s.x), self.ptr(&s.qr), self.ptr(&s.q), self.ptr(&s.mix));
        let freqs = self.ptr(&lw.freqs);

        self.mv(&lw.hc_attn.proj, sp, self.ptr(&s.m))?;
        self.hc_pre(&lw.hc_attn, sp, self.ptr(&s.m), &lw.attn_norm, x, mix, false)?;
        self.mv(&lw.q_a, x, qr)?;
        self.norm_rope(qr, qr, self.ptr(&lw.q_a_norm), 1, c.q_lora_rank, true, 0, 0, pos)?;
        self.mv(&lw.q_b, qr, q)?;
        self.norm_rope(q, q, 0, nh, d, true, freqs, n_pairs, pos)?;
        let window = c.sliding_window;
        let slot = self.ptr(&ls.raw) + ((pos % window as u64) as usize * d * 4) as u64;
        self.mv(&lw.kv, x, self.ptr(&s.kv))?;
        self.norm_rope(self.ptr(&s.kv), slot, self.ptr(&lw.kv_norm), 1, d, true, freqs, n_pairs, pos)?;

        // Compressors: a row emitted by this token is visible to it.
        let ratio = lw.kind.ratio() as u64;
        let n_comp = (pos + 1).checked_div(ratio).unwrap_or(0) as usize;
        let emits = ratio != 0 && pos % ratio == ratio - 1;
        if let (Some(cw), Some((rows, f))) = (&lw.comp, &ls.comp) {
            let width = lw.kind.compressor_lanes() * d;
            let (ckv, csc) = (self.ptr(&s.ckv), self.ptr(&s.csc));
            self.mv(&cw.kv, x, ckv)?;
            self.mv(&cw.gate, x, csc)?;
            let row = if emits { self.ptr(rows) + ((n_comp - 1) * d * 4) as u64 } else { 0 };
            self.comp_push(f, ckv, csc, self.ptr(&cw.ape), lw.kind, width, pos, row, self.ptr(&cw.norm), freqs)?;
        }
        let mut mask = 0u64;
        if let (Some(iw), Some((rows, f))) = (&lw.indexer, &ls.index) {
            let id = c.indexer_head_dim;
            let (ckv, csc) = (self.ptr(&s.ckv), self.ptr(&s.csc));
            self.mv(&iw.comp.kv, x, ckv)?;
            self.mv(&iw.comp.gate, x, csc)?;
            let row = if emits { self.ptr(rows) + ((n_comp - 1) * id * 4) as u64 } else { 0 };
            self.comp_push(f, ckv, csc, self.ptr(&iw.comp.ape), lw.kind, 2 * id, pos, row, self.ptr(&iw.comp.norm), freqs)?;
            if n_comp > c.indexer_top_k {
                let (iq, iwp, score) = (self.ptr(&s.iq), self.ptr(&s.iw), self.ptr(&s.iscore));
                self.mv(&iw.q_b, qr, iq)?;
                self.norm_rope(iq, iq, 0, c.indexer_heads, id, false, freqs, n_pairs, pos)?;
                self.mv(&iw.proj, x, iwp)?;
                let scale = 1.0 / ((id * c.indexer_heads) as f32).sqrt();
                let args = [P(iq), P(iwp), F(scale), P(self.ptr(rows)), I(n_comp as i32), I(c.indexer_heads as i32), I(id as i32), P(score)];
                self.launch("index_scores", (n_comp * 32).div_ceil(BLOCK), BLOCK, 0, &args)?;
                mask = self.ptr(&s.mask);
                let args = [P(score), I(n_comp as i32), I(c.indexer_top_k as i32), P(mask)];
                self.launch("topk_mask", n_comp.div_ceil(BLOCK), BLOCK, 0, &args)?;
            }
        }
        debug_assert!(n_comp <= comp_rows(lw.kind, st.capacity));

        let n_raw = (pos + 1).min(window as u64) as usize;
        let comp = ls.comp.as_ref().map_or(0, |(rows, _)| self.ptr(rows));
        let o = self.ptr(&s.o);
        let args = [
            P(q),
            P(self.ptr(&ls.raw)),
            I(window as i32),
            L(pos as i64),
            I(n_raw as i32),
            P(comp),
            I(n_comp as i32),
            P(mask),
            P(self.ptr(&lw.sinks)),
            P(self.ptr(&s.att)),
            P(o),
            I(d as i32),
            P(freqs),
            I(n_pairs as i32),
        ];
        self.launch("attend", nh, BLOCK, d * 4, &args)?;

        // Grouped low-rank output: each group of heads through its own slice of out_a.
        let (g_in, r) = (c.heads_per_group() * d, c.o_lora_rank);
        let z = self.ptr(&s.z);
        for (g, wa) in lw.out_a.iter().enumerate() {
            self.mv(wa, o + (g * g_in * 4) as u64, z + (g * r * 4) as u64)?;
        }
        let y = self.ptr(&s.y);
        self.mv(&lw.out_b, z, y)?;
        self.launch("hc_post", c.n_embd.div_ceil(BLOCK), BLOCK, 0, &[P(sp), P(y), P(mix), I(c.hc_count as i32), I(c.n_embd as i32)])
    }

    fn ffn(&self, st: &mut GpuState, il: usize, token: u32) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let s = &st.s;
        let (e, used, ffn) = (c.n_embd, c.n_expert_used, c.expert_ffn);
        let sp = self.ptr(&st.streams);
        let (x, mix) = (self.ptr(&s.x), self.ptr(&s.mix));
        self.mv(&lw.hc_ffn.proj, sp, self.ptr(&s.m))?;
        self.hc_pre(&lw.hc_ffn, sp, self.ptr(&s.m), &lw.ffn_norm, x, mix, false)?;

        let (rlog, sel, wts) = (self.ptr(&s.rlog), self.ptr(&s.sel), self.ptr(&s.wts));
        self.mv(&lw.gate_inp, x, rlog)?;
        let (bias, hash_row) = match &lw.route {
            Route::Hash { dev, .. } => (0, self.ptr(dev) + (token as usize * used * 4) as u64),
            Route::Scored { bias } => (self.ptr(bias), 0),
        };
        let args = [P(rlog), I(c.n_expert as i32), I(used as i32), P(bias), P(hash_row), F(c.expert_weights_scale), P(sel), P(wts)];
        self.launch("route", 1, BLOCK, 0, &args)?;
        let experts: Vec<usize> = match &lw.route {
            Route::Hash { host, .. } => host[token as usize * used..(token as usize + 1) * used].iter().map(|&x| x as usize).collect(),
            Route::Scored { .. } => {
                let mut ids = vec![0i32; used];
                self.stream.memcpy_dtoh(&s.sel.view(), &mut ids)?;
                self.stream.synchronize()?;
                ids.iter()
                    .map(|&x| usize::try_from(x).ok().filter(|&x| x < c.n_expert))
                    .collect::<Option<_>>()
                    .ok_or_else(|| CudaError::Shape(format!("routing chose experts {ids:?}")))?
            }
        };

        let (g, u, h, parts) = (self.ptr(&s.g), self.ptr(&s.u), self.ptr(&s.h), self.ptr(&s.parts));
        let clamp = lw.clamp;
        let glu = |wk: u64| self.launch("swiglu", ffn.div_ceil(BLOCK), BLOCK, 0, &[P(g), P(u), P(h), I(ffn as i32), F(clamp), P(wk)]);
        for (k, &xid) in experts.iter().enumerate() {
            self.mv(&lw.gate[xid], x, g)?;
            self.mv(&lw.up[xid], x, u)?;
            // The route weight scales the SwiGLU output, before the down projection.
            glu(wts + (k * 4) as u64)?;
            self.mv(&lw.down[xid], h, parts + (k * e * 4) as u64)?;
        }
        self.mv(&lw.gate_sh, x, g)?;
        self.mv(&lw.up_sh, x, u)?;
        glu(0)?;
        self.mv(&lw.down_sh, h, parts + (used * e * 4) as u64)?;
        let y = self.ptr(&s.y);
        self.launch("sum_parts", e.div_ceil(BLOCK), BLOCK, 0, &[P(parts), I(used as i32 + 1), I(e as i32), P(y)])?;
        self.launch("hc_post", e.div_ceil(BLOCK), BLOCK, 0, &[P(sp), P(y), P(mix), I(c.hc_count as i32), I(e as i32)])
    }
}
