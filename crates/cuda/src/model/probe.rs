//! The official-numerics kernels on host vectors, for the tests that hold them to the CPU's
//! bits (`tests/forward.rs`). Not for production use: each call allocates and synchronises.

use dsv4_gguf::GgmlType;

use super::attn_chunk::AttendChunk;
use super::GpuModel;
use super::step::GROUP_PICKS_THREADS;
use super::step_batch::{MAX_STEP_BATCH, ROUTED_NT};
use super::weights::{ROUTE_MAX_EXPERTS, ROUTE_MAX_USED, ROUTE_THREADS};
use super::forward::{att_splits_for, attend_split_smem, ATT_MERGE_THREADS, ATT_SPLIT_HEADS, ATT_SPLIT_THREADS, BLOCK, TOPK_THREADS};
use super::Arg::{F, I, L, P};
use crate::device::Gpu;
use crate::error::{CudaError, Result};
use crate::quant::matvec::act_bytes;

impl GpuModel {
    /// `x` quantized on the GPU for weights of type `ty` (Q8_0 or a k/i-quant), as the bytes
    /// `dsv4_cuda::quant::matvec::pack_acts` makes of the CPU's quantization.
    #[doc(hidden)]
    pub fn probe_quantize(&self, gpu: &Gpu, ty: GgmlType, x: &[f32]) -> Result<Vec<u8>> {
        let bytes = act_bytes(ty, x.len())?;
        let xd = gpu.upload(x)?;
        let out = gpu.alloc_zeros::<u8>(bytes)?;
        self.quant_acts(ty == GgmlType::Q8_0, self.ptr(&xd), 0, x.len(), 1, self.ptr(&out), 0)?;
        gpu.download(&out)
    }

    /// Rows of `head_dim` as the official numerics cache them (`Numerics::store_kv_row`).
    #[doc(hidden)]
    pub fn probe_kv_round(&self, gpu: &Gpu, rows: &[f32]) -> Result<Vec<f32>> {
        let d = self.cfg.head_dim;
        if !rows.len().is_multiple_of(d) {
            return Err(CudaError::Shape(format!("{} values are not rows of {d}", rows.len())));
        }
        let buf = gpu.upload(rows)?;
        for r in 0..rows.len() / d {
            self.kv_round(self.ptr(&buf) + (r * d * 4) as u64)?;
        }
        gpu.download(&buf)
    }

    /// Rows of `indexer_head_dim` as the official indexer scores them
    /// (`Numerics::indexer_row`).
    #[doc(hidden)]
    pub fn probe_index_round(&self, gpu: &Gpu, rows: &[f32]) -> Result<Vec<f32>> {
        let id = self.cfg.indexer_head_dim;
        if !rows.len().is_multiple_of(id) {
            return Err(CudaError::Shape(format!("{} values are not rows of {id}", rows.len())));
        }
        let buf = gpu.upload(rows)?;
        self.index_round(self.ptr(&buf), rows.len() / id)?;
        gpu.download(&buf)
    }

    /// The indexer's keep-mask of `scores` (1 for the `k` highest in `f32::total_cmp` order,
    /// ties to the lower index), as the attention kernels use it; `k < scores.len()`.
    #[doc(hidden)]
    pub fn probe_topk(&self, gpu: &Gpu, scores: &[f32], k: usize) -> Result<Vec<u8>> {
        if k == 0 || k >= scores.len() || scores.len() > i32::MAX as usize {
            return Err(CudaError::Shape(format!("top {k} of {} scores", scores.len())));
        }
        let sd = gpu.upload(scores)?;
        let out = gpu.alloc_zeros::<u8>(scores.len())?;
        self.launch("topk_mask", (1, 1), TOPK_THREADS, 0, &[P(self.ptr(&sd)), I(scores.len() as i32), I(k as i32), P(self.ptr(&out))])?;
        gpu.download(&out)
    }

    /// The router's picks and weights for each row of `logits` (`bias.len()` experts a row,
    /// `used` picks, weights scaled by `scale`) through the `route` kernel: scored routing, or
    /// with `hash` = (table, tokens) hash routing, row r taking the `used` experts of table
    /// row tokens[r].
    #[doc(hidden)]
    pub fn probe_route(&self, gpu: &Gpu, logits: &[f32], bias: &[f32], used: usize, scale: f32, hash: Option<(&[i32], &[i32])>) -> Result<(Vec<i32>, Vec<f32>)> {
        let ne = bias.len();
        if ne == 0 || ne > ROUTE_MAX_EXPERTS || used == 0 || used > ne.min(ROUTE_MAX_USED) || !logits.len().is_multiple_of(ne) {
            return Err(CudaError::Shape(format!("{used} of {ne} experts over {} logits", logits.len())));
        }
        let n = logits.len() / ne;
        if let Some((table, toks)) = hash {
            let rows = table.len() / used;
            let bad_entry = table.iter().any(|&e| e < 0 || e as usize >= ne);
            if toks.len() != n || !table.len().is_multiple_of(used) || bad_entry || toks.iter().any(|&t| t < 0 || t as usize >= rows) {
                return Err(CudaError::Shape(format!("a hash table of {} entries for {n} rows of {used} picks", table.len())));
            }
        }
        let (ld, bd) = (gpu.upload(logits)?, gpu.upload(bias)?);
        let hd = hash.map(|(table, toks)| Ok::<_, CudaError>((gpu.upload(table)?, gpu.upload(toks)?))).transpose()?;
        let (tp, kp) = hd.as_ref().map_or((0, 0), |(t, k)| (self.ptr(t), self.ptr(k)));
        let sel = gpu.upload(&vec![-1i32; n * used])?;
        let wts = gpu.upload(&vec![f32::NAN; n * used])?;
        let args = [P(self.ptr(&ld)), I(ne as i32), I(used as i32), P(self.ptr(&bd)), P(tp), P(kp), F(scale), P(self.ptr(&sel)), P(self.ptr(&wts)), P(0)];
        self.launch("route", (n, 1), ROUTE_THREADS, 0, &args)?;
        Ok((gpu.download(&sel)?, gpu.download(&wts)?))
    }

    /// The decode step's grouping of routed picks by expert (`group_picks`): the tables it
    /// writes for the expert ids `sel` (`used` a token, ids below `n_expert`; others belong to
    /// no expert): the down projections' (`sel.len()` entries) and the stacked gate-up pair's
    /// (twice that), [`ROUTED_NT`] picks an entry.
    #[doc(hidden)]
    pub fn probe_group_picks(&self, gpu: &Gpu, sel: &[i32], used: usize, n_expert: usize) -> Result<(Vec<i32>, Vec<i32>)> {
        let picks = sel.len();
        if picks == 0 || used == 0 || !picks.is_multiple_of(used) || picks > MAX_STEP_BATCH * ROUTE_MAX_USED || n_expert == 0 || n_expert > ROUTE_MAX_EXPERTS {
            return Err(CudaError::Shape(format!("{picks} picks of {used} a token over {n_expert} experts")));
        }
        let w = 2 + ROUTED_NT;
        let sd = gpu.upload(sel)?;
        let (t, tg) = (gpu.upload(&vec![i32::MIN; picks * w])?, gpu.upload(&vec![i32::MIN; 2 * picks * w])?);
        let args = [P(self.ptr(&sd)), I(picks as i32), I(used as i32), I(n_expert as i32), P(self.ptr(&t)), P(self.ptr(&tg))];
        self.launch("group_picks", (1, 1), GROUP_PICKS_THREADS, (picks + 2 * n_expert + 1) * 4, &args)?;
        Ok((gpu.download(&t)?, gpu.download(&tg)?))
    }

    /// The indexer's scores of one token (`q`: heads × dim, `w`: heads, already scaled) over
    /// the key rows `keys`, as the per-token path runs them: on the tensor cores with `fp4`
    /// (inputs that went through the official round trip), else in f32.
    #[doc(hidden)]
    pub fn probe_index_scores(&self, gpu: &Gpu, q: &[f32], w: &[f32], keys: &[f32], fp4: bool) -> Result<Vec<f32>> {
        let (heads, dim) = (w.len(), q.len() / w.len().max(1));
        if heads == 0 || q.len() != heads * dim || !keys.len().is_multiple_of(dim) || (fp4 && !self.index_fp4_shape(heads, dim)) {
            return Err(CudaError::Shape(format!("{heads} heads of {dim} over {} key values", keys.len())));
        }
        let n = keys.len() / dim;
        let (qd, wd, kd) = (gpu.upload(q)?, gpu.upload(w)?, gpu.upload(keys)?);
        let out = gpu.upload(&vec![f32::NAN; n])?;
        let args = [P(self.ptr(&qd)), P(self.ptr(&wd)), F(1.0), P(self.ptr(&kd)), I(n as i32), I(heads as i32), I(dim as i32), P(self.ptr(&out)), I(fp4 as i32)];
        self.launch("index_scores", (self.index_blocks(n, fp4, false), 1), BLOCK, 0, &args)?;
        gpu.download(&out)
    }

    /// One token's attention at position `pos` through the chunk path's kernel: `q` is its
    /// heads × `d` queries, `ring` the raw window (`window` rows of `d`, position p in slot
    /// p % window, the token's own row included), `comp` the (pos + 1) / ratio compressed rows,
    /// `mask` (one byte per compressed row) and `top_k` the indexer's choice, applied when
    /// more rows than top_k exist; `freqs` the RoPE frequencies of the output's tail. On the
    /// tensor cores with `mma` (rows on the BF16 grid, as the official numerics keep them;
    /// an error where that kernel does not take the sizes), else in f32.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn probe_attend_chunk(&self, gpu: &Gpu, q: &[f32], ring: &[f32], comp: &[f32], ratio: usize, pos: u64, mask: Option<(&[u8], usize)>, sinks: &[f32], d: usize, freqs: &[f32], mma: bool) -> Result<Vec<f32>> {
        let heads = sinks.len();
        let shape = |what: &str| Err(CudaError::Shape(format!("attention probe: {what}")));
        if d == 0 || heads == 0 || q.len() != heads * d || !ring.len().is_multiple_of(d) || ring.is_empty() || !comp.len().is_multiple_of(d) || 2 * freqs.len() > d {
            return shape("queries, rows or frequencies do not match the heads and d");
        }
        let (window, n_comp) = (ring.len() / d, comp.len() / d);
        if (ratio == 0 && n_comp > 0) || (ratio > 0 && (pos + 1) / ratio as u64 != n_comp as u64) {
            return shape("the compressed rows are not those visible at pos");
        }
        let n_raw = (pos as usize + 1).min(window);
        let masked = mask.filter(|(m, k)| m.len() == n_comp && n_comp > *k);
        if mask.is_some() && masked.is_none() {
            return shape("the mask covers other rows, or keeps them all");
        }
        let ncap = n_raw + masked.map_or(n_comp, |(_, k)| k);
        if mma && !super::attn_chunk::attend_mma_fits(self, heads, d, ncap, masked.is_some()) {
            return shape("too large for the tensor-core kernel");
        }
        let (qd, rd, sd) = (gpu.upload(q)?, gpu.upload(ring)?, gpu.upload(sinks)?);
        let cd = gpu.upload(if comp.is_empty() { &[0.0f32][..] } else { comp })?;
        let md = gpu.upload(masked.map_or(&[0u8][..], |(m, _)| m))?;
        let fd = gpu.upload(if freqs.is_empty() { &[0.0f32][..] } else { freqs })?;
        let out = gpu.upload(&vec![f32::NAN; heads * d])?;
        let a = AttendChunk {
            q: self.ptr(&qd),
            kvn: self.ptr(&rd) + (pos as usize % window * d * 4) as u64,
            pos0: pos,
            raw: self.ptr(&rd),
            window,
            comp: if n_comp > 0 { self.ptr(&cd) } else { 0 },
            ratio,
            masks: if masked.is_some() { self.ptr(&md) } else { 0 },
            mstride: n_comp,
            top_k: masked.map_or(n_comp, |(_, k)| k),
            sinks: self.ptr(&sd),
            out: self.ptr(&out),
            heads,
            d,
            freqs: self.ptr(&fd),
            n_pairs: freqs.len(),
            tokens: 1,
            ncap,
            ids: if masked.is_some() { ncap } else { 0 },
        };
        self.attend_chunk(&a, mma)?;
        gpu.download(&out)
    }

    /// The same token's attention through the decode step's kernels (`attend_split_step`, then
    /// `attend_merge_step`), in f32 under either numerics; the rows split as the step splits
    /// them for a model of this window and indexer top-k (the mask's, else the model's).
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn probe_attend_step(&self, gpu: &Gpu, q: &[f32], ring: &[f32], comp: &[f32], ratio: usize, pos: u64, mask: Option<(&[u8], usize)>, sinks: &[f32], d: usize, freqs: &[f32], hpg: usize) -> Result<(Vec<f32>, Vec<u8>)> {
        let heads = sinks.len();
        let shape = |what: &str| Err(CudaError::Shape(format!("attention probe: {what}")));
        if hpg == 0 || !heads.is_multiple_of(hpg) {
            return shape("heads are not whole groups");
        }
        if d == 0 || !d.is_multiple_of(32) || d > 512 || heads == 0 || q.len() != heads * d || ring.is_empty() || !ring.len().is_multiple_of(d) || !comp.len().is_multiple_of(d) || 2 * freqs.len() > d || pos >= i32::MAX as u64 {
            return shape("queries, rows or frequencies do not match the heads and d");
        }
        let (window, n_comp) = (ring.len() / d, comp.len() / d);
        if (ratio == 0 && n_comp > 0) || (ratio > 0 && (pos + 1) / ratio as u64 != n_comp as u64) {
            return shape("the compressed rows are not those visible at pos");
        }
        let masked = mask.filter(|(m, k)| m.len() == n_comp && n_comp > *k && m.iter().filter(|&&b| b != 0).count() == *k);
        if mask.is_some() && masked.is_none() {
            return shape("the mask covers other rows, keeps them all or keeps other than top_k");
        }
        let top_k = masked.map_or(self.cfg.indexer_top_k, |(_, k)| k);
        let splits = att_splits_for(window, top_k);
        let (qd, rd, sd) = (gpu.upload(q)?, gpu.upload(ring)?, gpu.upload(sinks)?);
        let cd = gpu.upload(if comp.is_empty() { &[0.0f32][..] } else { comp })?;
        let md = gpu.upload(masked.map_or(&[0u8][..], |(m, _)| m))?;
        let fd = gpu.upload(if freqs.is_empty() { &[0.0f32][..] } else { freqs })?;
        let parts = gpu.upload(&vec![f32::NAN; heads * splits * (d + 2)])?;
        let out = gpu.upload(&vec![f32::NAN; heads * d])?;
        // The merge's Q8_0 output: a row per group of hpg heads.
        let q_stride = act_bytes(GgmlType::Q8_0, hpg * d)?;
        let acts = gpu.upload(&vec![0xa5u8; heads / hpg * q_stride])?;
        let table = |p: u64| gpu.upload(&[p]);
        let (raws, comps, masks, pd) = (table(self.ptr(&rd))?, table(self.ptr(&cd))?, table(self.ptr(&md))?, table(self.ptr(&parts))?);
        let posd = gpu.upload(&[pos as i32])?;
        let comps_arg = if n_comp > 0 { self.ptr(&comps) } else { 0 };
        let masks_arg = if masked.is_some() { self.ptr(&masks) } else { 0 };
        let args = [P(self.ptr(&qd)), P(self.ptr(&raws)), I(window as i32), P(comps_arg), I(ratio as i32), P(masks_arg), I(top_k as i32), P(self.ptr(&pd)), I(d as i32), I(heads as i32), I(splits as i32), P(self.ptr(&posd))];
        let blocks = heads.div_ceil(ATT_SPLIT_HEADS) * splits;
        self.launch("attend_split_step", (blocks, 1), ATT_SPLIT_THREADS, attend_split_smem(d, window + top_k), &args)?;
        let args = [
            P(self.ptr(&pd)),
            P(self.ptr(&sd)),
            P(self.ptr(&out)),
            I(d as i32),
            I(heads as i32),
            I(splits as i32),
            I(window as i32),
            I(ratio as i32),
            I(masked.is_some() as i32),
            I(top_k as i32),
            P(self.ptr(&fd)),
            I(freqs.len() as i32),
            P(self.ptr(&posd)),
            P(self.ptr(&acts)),
            L(q_stride as i64),
            I(hpg as i32),
        ];
        self.launch("attend_merge_step", (heads, 1), ATT_MERGE_THREADS, 0, &args)?;
        Ok((gpu.download(&out)?, gpu.download(&acts)?))
    }

    /// `hc_out_step` and `hc_norm_step` for `n` tokens: the read-out of `streams` (hc × e a token) with the
    /// pre weights from the mixing partials `m_raw` (`parts` partial sums of each of the hc
    /// values, a token's hc · parts floats together) and the state's squares `ss` (`parts` a
    /// token), normed by `norm` (e values), and quantized for the weights `tys` (e a multiple
    /// of 256 where one is given): the outputs and the two lanes' activation rows (a token's
    /// act_bytes apart).
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn probe_hc_read(&self, gpu: &Gpu, streams: &[f32], m_raw: &[f32], ss: &[f64], scale: &[f32; 3], base: &[f32], norm: &[f32], hc: usize, parts: usize, tys: [Option<GgmlType>; 2]) -> Result<(Vec<f32>, [Vec<u8>; 2])> {
        let e = norm.len();
        let n = ss.len() / parts.max(1);
        if hc == 0 || hc > 16 || parts == 0 || parts > 16 || e == 0 || n == 0 || ss.len() != n * parts || streams.len() != n * hc * e || m_raw.len() != n * hc * parts || base.len() < hc {
            return Err(CudaError::Shape("HC read-out probe: sizes do not match".into()));
        }
        let (sd, md, ssd, scd, bd, nd) = (gpu.upload(streams)?, gpu.upload(m_raw)?, gpu.upload(ss)?, gpu.upload(scale)?, gpu.upload(base)?, gpu.upload(norm)?);
        let out = gpu.upload(&vec![f32::NAN; n * e])?;
        let mut q = Vec::new();
        for ty in tys {
            let code = match ty {
                None => 0,
                Some(t) if !e.is_multiple_of(BLOCK) => return Err(CudaError::Shape(format!("{e} columns are not whole slices for {t}"))),
                Some(GgmlType::Q8_0) => 1,
                Some(_) => 2,
            };
            q.push((code, ty.map_or(Ok(0), |t| act_bytes(t, e))?));
        }
        // One row stride for both lanes, as the step's scratch has.
        let stride = q[0].1.max(q[1].1);
        let q: Vec<(i32, usize, _)> = q.into_iter().map(|(c, b)| Ok((c, b, gpu.upload(&vec![0xa5u8; (n * stride).max(1)])?))).collect::<Result<_>>()?;
        let blocks = e.div_ceil(BLOCK);
        let qp = |k: usize| if q[k].0 != 0 { self.ptr(&q[k].2) } else { 0 };
        let part = gpu.alloc_zeros::<f64>(n * blocks)?;
        let args = [
            P(self.ptr(&sd)),
            P(self.ptr(&md)),
            P(self.ptr(&ssd)),
            P(self.ptr(&scd)),
            P(self.ptr(&bd)),
            P(self.ptr(&out)),
            P(self.ptr(&part)),
            I(hc as i32),
            I(e as i32),
            I((hc * parts) as i32),
            I(parts as i32),
            F(self.cfg.rms_eps),
            F(self.cfg.hc_eps),
        ];
        self.launch("hc_out_step", (blocks, n), BLOCK, 0, &args)?;
        let args = [P(self.ptr(&out)), P(self.ptr(&part)), I(blocks as i32), P(self.ptr(&nd)), I(e as i32), F(self.cfg.rms_eps), P(qp(0)), I(q[0].0), P(qp(1)), I(q[1].0), L(stride as i64)];
        self.launch("hc_norm_step", (blocks, n), BLOCK, 0, &args)?;
        // Each lane's rows, their bytes only.
        let down = |k: usize| -> Result<Vec<u8>> {
            let all = if q[k].0 != 0 { gpu.download(&q[k].2)? } else { Vec::new() };
            Ok(all.chunks(stride.max(1)).flat_map(|r| r[..q[k].1].to_vec()).collect())
        };
        Ok((gpu.download(&out)?, [down(0)?, down(1)?]))
    }

    /// `norm_rope` as the decode step runs it on q_a's output: each row of `d` values in `x`
    /// normed by `w` (no RoPE) and quantized for weights `ty` (d a multiple of 256): the rows
    /// and their activations (rows act_bytes apart).
    #[doc(hidden)]
    pub fn probe_norm_quant(&self, gpu: &Gpu, x: &[f32], w: &[f32], ty: GgmlType) -> Result<(Vec<f32>, Vec<u8>)> {
        let d = w.len();
        if d == 0 || !d.is_multiple_of(BLOCK) || x.is_empty() || !x.len().is_multiple_of(d) {
            return Err(CudaError::Shape(format!("norm probe: rows of {d} (a multiple of {BLOCK}) from {} values", x.len())));
        }
        let (n, stride) = (x.len() / d, act_bytes(ty, d)?);
        let (xd, wd) = (gpu.upload(x)?, gpu.upload(w)?);
        let acts = gpu.upload(&vec![0xa5u8; n * stride])?;
        let code = if ty == GgmlType::Q8_0 { 1 } else { 2 };
        let args = [P(self.ptr(&xd)), P(self.ptr(&xd)), P(self.ptr(&wd)), I(d as i32), I(1), F(self.cfg.rms_eps), P(0), I(0), L(0), L(d as i64), P(self.ptr(&acts)), I(code), L(stride as i64)];
        self.launch("norm_rope", (1, n), BLOCK, 0, &args)?;
        Ok((gpu.download(&xd)?, gpu.download(&acts)?))
    }
}
