//! The MoE sublayer of one chunk: routing on the GPU, then each chosen expert once for all
//! the chunk's tokens it serves (their inputs gathered into consecutive rows, its outputs
//! scattered back to their tokens' parts), the shared expert over the whole chunk, and each
//! token's sum of its parts in selection order (the CPU's order, so chunking never changes
//! which values are added, only the matvec's rounding).
//!
//! Chunks of up to `MAX_BATCH / used` tokens (decode) skip the host: the expert products read
//! the routing's choices from device memory, one launch per projection over every (token,
//! pick) slot, each slot's output in its own part (see `quant/experts.rs`). Longer chunks read
//! the choices back once per layer and run each chosen expert once for all its tokens: under
//! the official numerics every expert of the layer in one tensor-core launch per projection
//! (rows gathered by expert, a table of 16- or 64-token tiles), otherwise one expert at a
//! time.

use super::forward::{Pass, BLOCK};
use super::state::{act_stride, Scratch, CHUNK};
use super::weights::{Layer, Route, ROUTE_THREADS};
use super::{Arg, GpuModel};
use crate::error::{CudaError, Result};
use crate::quant::matmul::{self, expert_tiles};
use crate::quant::matvec::act_bytes;
use crate::quant::{DeviceMatrix, ExpertSlots, Matvec, MAX_BATCH};
use dsv4_model::Numerics;
use dsv4_gguf::GgmlType;
use Arg::{F, I, P};

/// Where a grouped expert launch left the down products: row `rows[t · used + k]` of `out`
/// (device addresses; e floats a row) is pick k of token t.
#[derive(Clone, Copy)]
struct Routed {
    out: u64,
    rows: u64,
}

impl GpuModel {
    /// The experts of each token of the chunk (`n × used`, selection order).
    fn chosen(&self, s: &Scratch, lw: &Layer, p: &Pass) -> Result<Vec<usize>> {
        let c = &self.cfg;
        let (n, used) = (p.n(), c.n_expert_used);
        match &lw.route {
            Route::Hash { host, .. } => Ok(p.toks.iter().flat_map(|&t| host[t as usize * used..(t as usize + 1) * used].iter().map(|&x| x as usize)).collect()),
            Route::Scored { .. } => {
                let mut ids = vec![0i32; n * used];
                self.stream.memcpy_dtoh(&s.sel.cuda_slice().slice(..n * used), &mut ids)?;
                self.stream.synchronize()?;
                ids.iter()
                    .map(|&x| usize::try_from(x).ok().filter(|&x| x < c.n_expert))
                    .collect::<Option<_>>()
                    .ok_or_else(|| CudaError::Shape(format!("routing chose experts {ids:?}")))
            }
        }
    }

    pub(super) fn ffn(&self, s: &mut Scratch, il: usize, p: &Pass) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let (n, num) = (p.n(), p.num);
        let (e, used, ffn) = (c.n_embd, c.n_expert_used, c.expert_ffn);
        let (hce, ms) = (c.hc_count * e, c.hc_mix().max(c.hc_count));
        let sp = self.ptr(&s.streams);
        let (x, mix, m) = (self.ptr(&s.x), self.ptr(&s.mix), self.ptr(&s.m));
        let f4 = |a: u64, floats: usize| a + (floats * 4) as u64;
        self.mm(s, num, &lw.hc_ffn.proj, sp, hce, n, m, ms)?;
        self.hc_pre(&lw.hc_ffn, sp, m, 1, &lw.ffn_norm, x, mix, false, n)?;

        let (rlog, sel, wts) = (self.ptr(&s.rlog), self.ptr(&s.sel), self.ptr(&s.wts));
        self.mm(s, num, &lw.gate_inp, x, e, n, rlog, c.n_expert)?;
        let (bias, table) = match &lw.route {
            Route::Hash { dev, .. } => (0, self.ptr(dev)),
            Route::Scored { bias } => (self.ptr(bias), 0),
        };
        let toks = self.ptr(&s.toks);
        let args = [P(rlog), I(c.n_expert as i32), I(used as i32), P(bias), P(table), P(toks), F(c.expert_weights_scale), P(sel), P(wts), P(0)];
        self.launch("route", (n, 1), ROUTE_THREADS, 0, &args)?;
        let stacked = [&lw.gate, &lw.up, &lw.down].iter().all(|m| Matvec::experts_stacked(m));
        if stacked && n * used <= MAX_BATCH && !self.opts.host_experts {
            return self.experts_on_device(s, lw, n, num);
        }
        let experts = self.timed(|| "routing read-back".into(), || self.chosen(s, lw, p))?;

        // Which (token, pick) each expert serves, in token order.
        let mut users: Vec<Vec<(usize, usize)>> = vec![Vec::new(); c.n_expert];
        for (i, &xid) in experts.iter().enumerate() {
            users[xid].push((i / used, i % used));
        }
        let tensor_cores = [&lw.gate, &lw.up, &lw.down].iter().all(|m| m.first().is_some_and(|w| matmul::supports(w.ty())));
        if p.official() && stacked && tensor_cores && !self.opts.host_experts {
            let routed = self.experts_grouped(s, lw, &users, n)?;
            return self.shared_and_sum(s, lw, n, num, routed);
        }
        // Experts serving several tokens gather and scatter through index lists, uploaded
        // once per layer: token rows, then route-weight slots, then part slots.
        let shared: Vec<&(usize, usize)> = users.iter().filter(|u| u.len() > 1).flatten().collect();
        let total = shared.len();
        if total > 0 {
            let mut idx: Vec<i32> = shared.iter().map(|&&(t, _)| t as i32).collect();
            idx.extend(shared.iter().map(|&&(t, k)| (t * used + k) as i32));
            idx.extend(shared.iter().map(|&&(t, k)| (k * CHUNK + t) as i32));
            self.stream.memcpy_htod(&idx, &mut s.idx.cuda_slice_mut().slice_mut(..3 * total))?;
        }
        let s = &*s;
        let (g, u, h, parts, xg, dn, idx) = (self.ptr(&s.g), self.ptr(&s.u), self.ptr(&s.h), self.ptr(&s.parts), self.ptr(&s.xg), self.ptr(&s.dn), self.ptr(&s.idx));
        let clamp = lw.clamp;
        let glu = |rows: usize, wk: u64, widx: u64| {
            self.launch("swiglu", (ffn.div_ceil(BLOCK), rows), BLOCK, 0, &[P(g), P(u), P(h), I(ffn as i32), F(clamp), P(wk), P(widx)])
        };
        let mut off = 0;
        for (xid, us) in users.iter().enumerate() {
            match us.len() {
                0 => {}
                1 => {
                    // One token: straight from its input to its part.
                    let (t, k) = us[0];
                    let xt = f4(x, t * e);
                    self.mm(s, num, &lw.gate[xid], xt, e, 1, g, ffn)?;
                    self.mm(s, num, &lw.up[xid], xt, e, 1, u, ffn)?;
                    // The route weight scales the SwiGLU output, before the down projection.
                    glu(1, f4(wts, t * used + k), 0)?;
                    self.mm(s, num, &lw.down[xid], h, ffn, 1, f4(parts, (k * CHUNK + t) * e), e)?;
                }
                cnt => {
                    let grid = (e.div_ceil(BLOCK), cnt);
                    self.launch("gather_rows", grid, BLOCK, 0, &[P(x), P(f4(idx, off)), I(e as i32), P(xg)])?;
                    self.mm(s, num, &lw.gate[xid], xg, e, cnt, g, ffn)?;
                    self.mm(s, num, &lw.up[xid], xg, e, cnt, u, ffn)?;
                    glu(cnt, wts, f4(idx, total + off))?;
                    self.mm(s, num, &lw.down[xid], h, ffn, cnt, dn, e)?;
                    self.launch("scatter_rows", grid, BLOCK, 0, &[P(dn), P(f4(idx, 2 * total + off)), I(e as i32), P(parts)])?;
                    off += cnt;
                }
            }
        }
        self.shared_and_sum(s, lw, n, num, None)
    }

    /// Every chosen expert of the layer under the official numerics, one tensor-core launch per
    /// projection: the chunk's `n` tokens quantized once per activation format and their rows
    /// gathered expert by expert (`users` in expert order) for gate and up, multiplied tile by
    /// tile (each tile one expert's rows), the down products left in expert order. Returns
    /// where they are for the sum ([`Routed`]).
    fn experts_grouped(&self, s: &mut Scratch, lw: &Layer, users: &[Vec<(usize, usize)>], n: usize) -> Result<Option<Routed>> {
        let c = &self.cfg;
        let (e, used, ffn) = (c.n_embd, c.n_expert_used, c.expert_ffn);
        let rows: Vec<(usize, usize)> = users.iter().flatten().copied().collect();
        let total = rows.len();
        if total == 0 {
            return Ok(None);
        }
        if total != n * used {
            return Err(CudaError::Shape(format!("{total} expert rows for {n} tokens of {used} picks")));
        }
        let mut groups = Vec::new();
        let mut off = 0;
        for (xid, us) in users.iter().enumerate().filter(|(_, u)| !u.is_empty()) {
            groups.push((xid, off, us.len()));
            off += us.len();
        }
        // A tile decodes its expert's weights once, so a group longer than the tile decodes
        // them again for each further tile; wider tiles cost more per weight (more MMA work,
        // and the 64-token one a larger CTA). Measured on an H100 (bench/cuda-chunk1024-h100-
        // 2026-11-27.txt, bench/cuda-tile32-h100-2026-11-27.txt): at 12 tokens an expert
        // (512-token chunks) 16-token tiles beat 64-token ones; at 24 (1,024-token chunks)
        // 32-token tiles beat 64-token ones by 4% of the prompt, which beat 16-token ones.
        let bn = if total >= 48 * groups.len() {
            64
        } else if total >= 16 * groups.len() {
            32
        } else {
            16
        };
        let tiles = expert_tiles(&groups, bn);
        // Token rows (gather), route-weight slots (SwiGLU), the row of each (token, pick) (the
        // sum), tiles.
        let mut idx: Vec<i32> = rows.iter().map(|&(t, _)| t as i32).collect();
        idx.extend(rows.iter().map(|&(t, k)| (t * used + k) as i32));
        let mut row_of = vec![0i32; total];
        for (i, &(t, k)) in rows.iter().enumerate() {
            row_of[t * used + k] = i as i32;
        }
        idx.extend(row_of);
        idx.extend_from_slice(&tiles);
        if idx.len() > s.idx.len() || total > CHUNK * used {
            return Err(CudaError::Shape(format!("{total} expert rows and {} tiles exceed the scratch", tiles.len() / 3)));
        }
        self.stream.memcpy_htod(&idx, &mut s.idx.cuda_slice_mut().slice_mut(..idx.len()))?;
        let s = &*s;
        let f4 = |a: u64, floats: usize| a + (floats * 4) as u64;
        let (x, wts) = (self.ptr(&s.x), self.ptr(&s.wts));
        let (g, u, h, xq, dn, ip) = (self.ptr(&s.g), self.ptr(&s.u), self.ptr(&s.h), self.ptr(&s.xg), self.ptr(&s.dn), self.ptr(&s.idx));
        let (tp, nt, stride) = (f4(ip, 3 * total), tiles.len() / 3, act_stride(c));
        // Gate and up read each token's activations quantized once (n rows, into the f32 gather
        // scratch, free on this path) and gathered as bytes into expert order: a sixth of the
        // rows to quantize. Rows are packed to the format's size (16-byte multiple; 4,672
        // bytes for Q8_K at 4,096 columns), a quarter of the scratch's `stride`.
        let grouped_acts = |w: &DeviceMatrix| -> Result<(u64, usize)> {
            let pitch = act_bytes(w.ty(), w.cols())?.next_multiple_of(16);
            if total * pitch > s.acts.len() {
                return Err(CudaError::Shape(format!("{total} rows of {} columns exceed the activation scratch", w.cols())));
            }
            self.quantize_into(w, x, e, n, (xq, pitch, s.xg.len() * 4))?;
            let (acts, words) = (self.ptr(&s.acts), pitch / 4);
            self.launch("gather_rows", (words.div_ceil(BLOCK), total), BLOCK, 0, &[P(xq), P(ip), I(words as i32), P(acts)])?;
            Ok((acts, pitch))
        };
        let (acts, pitch) = grouped_acts(&lw.gate[0])?;
        // SAFETY (the three products): the tiles name experts below n_expert and rows below
        // `total`, whose activation rows (`pitch` or `stride` bytes) and outputs (g/u: ffn
        // floats, dn: e floats) the scratch holds for CHUNK × used rows; outputs are apart from
        // inputs.
        let label = |w: &DeviceMatrix| format!("matmul experts {} {}x{} n{bn}", w.ty(), w.rows(), w.cols());
        self.timed(|| label(&lw.gate[0]), || unsafe { self.mt.run_tiles_raw(&lw.gate, tp, nt, bn, acts, pitch, g, ffn) })?;
        let (acts, pitch) = if lw.up[0].ty() == lw.gate[0].ty() { (acts, pitch) } else { grouped_acts(&lw.up[0])? };
        self.timed(|| label(&lw.up[0]), || unsafe { self.mt.run_tiles_raw(&lw.up, tp, nt, bn, acts, pitch, u, ffn) })?;
        // The route weight scales the SwiGLU output, before the down projection.
        let args = [P(g), P(u), P(h), I(ffn as i32), F(lw.clamp), P(wts), P(f4(ip, total))];
        self.launch("swiglu", (ffn.div_ceil(BLOCK), total), BLOCK, 0, &args)?;
        let acts = self.quantize(s, &lw.down[0], h, ffn, total)?;
        self.timed(|| label(&lw.down[0]), || unsafe { self.mt.run_tiles_raw(&lw.down, tp, nt, bn, acts, stride, dn, e) })?;
        Ok(Some(Routed { out: dn, rows: f4(ip, 2 * total) }))
    }

    /// The routed experts read from the routing's output on the device (no host round trip):
    /// slot `t · used + k` is pick k of token t; gate and up products into rows of `g` and
    /// `u`, the weighted SwiGLU into `h`, the down products into the parts.
    fn experts_on_device(&self, s: &Scratch, lw: &Layer, n: usize, num: Numerics) -> Result<()> {
        let c = &self.cfg;
        let (e, used, ffn) = (c.n_embd, c.n_expert_used, c.expert_ffn);
        let (x, sel, wts) = (self.ptr(&s.x), self.ptr(&s.sel), self.ptr(&s.wts));
        let (g, u, h, parts) = (self.ptr(&s.g), self.ptr(&s.u), self.ptr(&s.h), self.ptr(&s.parts));
        let slots = n * used;
        let tok = ExpertSlots { ids: sel, n: slots, x_div: used, y_mod: 1, y_mul: 0, per_token: 0 };
        self.mm_experts(s, num, &lw.gate, tok, x, e, g, ffn)?;
        self.mm_experts(s, num, &lw.up, tok, x, e, u, ffn)?;
        let args = [P(g), P(u), P(h), I(ffn as i32), F(lw.clamp), P(wts), P(0)];
        self.launch("swiglu", (ffn.div_ceil(BLOCK), slots), BLOCK, 0, &args)?;
        let down = ExpertSlots { ids: sel, n: slots, x_div: 1, y_mod: used, y_mul: CHUNK, per_token: 0 };
        self.mm_experts(s, num, &lw.down, down, h, ffn, parts, e)?;
        self.shared_and_sum(s, lw, n, num, None)
    }

    /// [`GpuModel::mm`] over expert slots: input rows `xs` f32 apart (quantized first, one
    /// row per distinct input, under the official numerics), output rows `ys` apart.
    #[allow(clippy::too_many_arguments)]
    fn mm_experts(&self, s: &Scratch, num: Numerics, ws: &[DeviceMatrix], sl: ExpertSlots, x: u64, xs: usize, y: u64, ys: usize) -> Result<()> {
        let w = &ws[0];
        let float = matches!(w.ty(), GgmlType::F32 | GgmlType::F16);
        if num == Numerics::Plain || float {
            // SAFETY: the slots address the state's scratch rows, sized for CHUNK rows of the
            // largest layer (n · used <= MAX_BATCH checked by the caller); sel holds the slots'
            // ids; outputs are apart from inputs.
            self.counted(1);
            return unsafe { self.mv.run_experts_raw(self.mv.queue(), ws, sl, x, xs * 4, false, y, ys) };
        }
        let stride = act_stride(&self.cfg);
        if act_bytes(w.ty(), w.cols())? > stride {
            return Err(CudaError::Shape(format!("{} columns exceed the activation scratch", w.cols())));
        }
        let acts = self.ptr(&s.acts);
        let rows = sl.n.div_ceil(sl.x_div);
        self.quant_acts(w.ty() == GgmlType::Q8_0, x, xs, w.cols(), rows, acts, stride)?;
        self.counted(1);
        // SAFETY: as above; the activation scratch holds CHUNK rows of `stride` bytes.
        unsafe { self.mv.run_experts_raw(self.mv.queue(), ws, sl, acts, stride, true, y, ys) }
    }

    /// The shared expert over the chunk, then each token's sum of its parts (the routed ones
    /// from `routed` where given), back into the streams.
    fn shared_and_sum(&self, s: &Scratch, lw: &Layer, n: usize, num: Numerics, routed: Option<Routed>) -> Result<()> {
        let c = &self.cfg;
        let (e, used, ffn) = (c.n_embd, c.n_expert_used, c.expert_ffn);
        let sp = self.ptr(&s.streams);
        let (x, mix) = (self.ptr(&s.x), self.ptr(&s.mix));
        let (g, u, h, parts) = (self.ptr(&s.g), self.ptr(&s.u), self.ptr(&s.h), self.ptr(&s.parts));
        let f4 = |a: u64, floats: usize| a + (floats * 4) as u64;
        self.mm(s, num, &lw.gate_sh, x, e, n, g, ffn)?;
        self.mm(s, num, &lw.up_sh, x, e, n, u, ffn)?;
        self.launch("swiglu", (ffn.div_ceil(BLOCK), n), BLOCK, 0, &[P(g), P(u), P(h), I(ffn as i32), F(lw.clamp), P(0), P(0)])?;
        self.mm(s, num, &lw.down_sh, h, ffn, n, f4(parts, used * CHUNK * e), e)?;
        let y = self.ptr(&s.y);
        let (out, rows) = routed.map_or((0, 0), |r| (r.out, r.rows));
        let args = [P(parts), I(used as i32 + 1), I(e as i32), I(CHUNK as i32), P(y), P(out), P(rows), I(used as i32)];
        self.launch("sum_parts", (e.div_ceil(BLOCK), n), BLOCK, 0, &args)?;
        self.hc_post(sp, y, mix, n)
    }
}
