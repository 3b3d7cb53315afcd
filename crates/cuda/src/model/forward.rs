//! The entry points and the pieces every sublayer uses: a chunk of tokens through every
//! layer (the order of `dsv4_model::forward`), the weight product under either numerics, and
//! the logits.

use std::ops::Range;

use dsv4_gguf::GgmlType;
use dsv4_model::config::LayerKind;
use dsv4_model::{ModelConfig, Next, Numerics, Want};

use super::state::{act_stride, mask_stride, GpuState, Scratch, CHUNK};
use super::weights::Hc;
use super::step_batch::MAX_STEP_BATCH;
use super::{Arg, Decode, GpuModel};
use crate::buffer::DeviceBuffer;
use crate::error::{CudaError, Result};
use crate::launch::Queue;
use crate::quant::matvec::{act_bytes, dev_addr};
use crate::quant::{matmul, DeviceMatrix, MAX_BATCH};
use Arg::{F, I, L, P};

/// Fewest tokens a quantized product runs on the tensor cores under the official numerics:
/// from two tokens on, one matmul launch (weights read once) beats a matvec per token.
pub(super) const MATMUL_MIN_TOKENS: usize = 2;

/// Threads of the small kernels (reductions over up to a few thousand values).
pub(super) const BLOCK: usize = 256;

/// Threads of `hc_pre` (`__launch_bounds__` in ops.cu): one block reads a token's whole HC
/// state, so more threads mean fewer dependent steps.
const HC_THREADS: usize = 512;

/// Threads of `attend` (`ATTEND_THREADS` in attention.cu) and its dynamic shared memory for a
/// head of `d` values: the query, then one partial output per warp, then the ids of up to
/// `cap` rows (window + the indexer's top_k).
pub(super) const ATTEND_THREADS: usize = 512;

/// Threads of the top-k kernels (`TOPK_THREADS` in dsv4_common.cuh), one block per token.
pub(super) const TOPK_THREADS: usize = 512;

/// Keys one warp scores in the tensor-core indexer launches sized by the key count (`IX_KEYS`
/// in dsv4_common.cuh), and in the decode step's strided one.
pub(super) const INDEX_KEYS: usize = 128;
const INDEX_KEYS_STEP: usize = 8;

pub(super) fn attend_smem(d: usize, cap: usize) -> usize {
    d * 4 * (1 + ATTEND_THREADS / 32) + cap * 4
}

/// The decode step's attention (`attend_split_step` in attention.cu): query heads a block and
/// its threads, rows a tile, and the most runs a token's rows are split into; then the
/// threads of `attend_merge_step`, a block per head.
pub(super) const ATT_SPLIT_HEADS: usize = 8;
pub(super) const ATT_SPLIT_THREADS: usize = 256;
const ATT_TILE: usize = 32;
const ATT_MAX_SPLITS: usize = 64;
pub(super) const ATT_MERGE_THREADS: usize = 128;

/// Runs a decoded token's rows are split into: a tile's worth each of the most rows the
/// indexer leaves (window + top_k; 20 on Flash), fewer for fewer rows (a run holds at least a
/// tile), longer runs past that (a ratio-128 layer deep into the context).
pub(super) fn att_splits(c: &ModelConfig) -> usize {
    att_splits_for(c.sliding_window, c.indexer_top_k)
}

pub(super) fn att_splits_for(window: usize, top_k: usize) -> usize {
    (window + top_k).div_ceil(ATT_TILE).clamp(1, ATT_MAX_SPLITS)
}

/// Floats of a session's scratch the decode step's attention writes its runs to: per head
/// and run, the weighted value sums, then the maximum and weight sum.
pub(super) fn att_split_floats(c: &ModelConfig) -> usize {
    c.n_head * att_splits(c) * (c.head_dim + 2)
}

/// Dynamic shared memory of `attend_split_step`: the block's queries, the warps' partial
/// scores of a tile, its scores, its weights, the rescale factors, the tile's row addresses,
/// then up to `cap` row ids.
pub(super) fn attend_split_smem(d: usize, cap: usize) -> usize {
    let hg = ATT_SPLIT_HEADS;
    (hg * d + 8 * hg * ATT_TILE + 2 * hg * ATT_TILE + hg) * 4 + ATT_TILE * 8 + cap * 4
}

/// What one chunk's pass needs besides the state.
pub(super) struct Pass<'a> {
    pub num: Numerics,
    /// The chunk's tokens (host copy: hash routing picks matrices from it).
    pub toks: &'a [u32],
    /// Position of the chunk's first token.
    pub pos0: u64,
}

impl Pass<'_> {
    pub fn n(&self) -> usize {
        self.toks.len()
    }

    pub fn official(&self) -> bool {
        self.num == Numerics::Official
    }
}

impl GpuModel {
    /// Feeds `tokens` to the session and returns the logits after the last one (empty when
    /// `tokens` is empty). Token ids outside the vocabulary and a full state are errors;
    /// nothing is run then.
    pub fn forward(&self, st: &mut GpuState, tokens: &[u32], numerics: Numerics) -> Result<Vec<f32>> {
        Ok(self.run(st, tokens, numerics, false)?.pop().unwrap_or_default())
    }

    /// As [`forward`](Self::forward), returning the logits after every token, in order.
    pub fn forward_all(&self, st: &mut GpuState, tokens: &[u32], numerics: Numerics) -> Result<Vec<Vec<f32>>> {
        self.run(st, tokens, numerics, true)
    }

    /// One token for each of several sessions (continuous batching): the logits after each,
    /// as each session would get them alone. Decode steps carry up to [`MAX_STEP_BATCH`]
    /// sessions; larger lists run as several steps. Tokens outside the vocabulary and full
    /// states are errors; nothing is run then.
    pub fn forward_step(&self, states: &mut [&mut GpuState], tokens: &[u32], numerics: Numerics) -> Result<Vec<Vec<f32>>> {
        let wants = vec![Want::Row; tokens.len()];
        whole_rows(self.forward_step_picked(states, tokens, &wants, numerics)?)
    }

    /// As [`forward_step`](Self::forward_step), handing back what each session's next draw
    /// needs (`wants`, dsv4_model::pick): the step reduces its logits on the device and moves
    /// only the reductions (and the rows asked for whole, or whose kept set overflows
    /// [`PICK_CAP`](super::step_batch::PICK_CAP)); the reductions equal the host's of the rows.
    pub fn forward_step_picked(&self, states: &mut [&mut GpuState], tokens: &[u32], wants: &[Want], numerics: Numerics) -> Result<Vec<Next>> {
        if states.len() != tokens.len() || wants.len() != tokens.len() {
            return Err(CudaError::Shape(format!("{} states for {} tokens and {} wants", states.len(), tokens.len(), wants.len())));
        }
        for (st, &t) in states.iter().zip(tokens) {
            self.check_call(st, std::slice::from_ref(&t), numerics)?;
        }
        if self.opts.decode == Decode::Chunk || !states.iter().all(|st| self.step_ok(st)) {
            return states.iter_mut().zip(tokens).zip(wants).map(|((st, &t), &w)| Ok(Next::of(self.forward(st, &[t], numerics)?, w))).collect();
        }
        let mut out = Vec::with_capacity(states.len());
        for ((sts, toks), ws) in states.chunks_mut(MAX_STEP_BATCH).zip(tokens.chunks(MAX_STEP_BATCH)).zip(wants.chunks(MAX_STEP_BATCH)) {
            out.extend(self.step(sts, toks, ws, numerics)?);
        }
        Ok(out)
    }

    /// The checks every call makes before running anything.
    fn check_call(&self, st: &GpuState, tokens: &[u32], num: Numerics) -> Result<()> {
        let c = &self.cfg;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(CudaError::Shape(format!("token id {t} is outside the vocabulary (0..{})", c.vocab_size)));
        }
        if st.pos + tokens.len() as u64 > st.capacity {
            return Err(CudaError::Shape(format!("{} more tokens do not fit a state at {} of {}", tokens.len(), st.pos, st.capacity)));
        }
        self.check_state(st)?;
        if num == Numerics::Official {
            self.check_official()?;
        }
        Ok(())
    }

    fn run(&self, st: &mut GpuState, tokens: &[u32], num: Numerics, all: bool) -> Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        self.check_call(st, tokens, num)?;
        if let [tok] = *tokens {
            if self.opts.decode != Decode::Chunk && self.step_ok(st) {
                return whole_rows(self.step(&mut [st], &[tok], &[Want::Row], num)?);
            }
        }
        let v = c.vocab_size;
        let chunks = tokens.len().div_ceil(CHUNK);
        let mut out = Vec::new();
        let mut guard = self.prefill.lock().map_err(|_| CudaError::Shape("the prefill scratch was poisoned by a panic".into()))?;
        let s = match guard.as_mut() {
            Some(s) if s.rows >= mask_stride(c, st.capacity) => s,
            _ => return Err(CudaError::Shape("the state was not made by this model's new_state".into())),
        };
        for (ci, chunk) in tokens.chunks(CHUNK).enumerate() {
            let n = chunk.len();
            let want = if all {
                0..n
            } else if ci + 1 == chunks {
                n - 1..n
            } else {
                0..0
            };
            self.chunk(st, s, chunk, num, want.clone())?;
            if !want.is_empty() {
                let mut host = vec![0f32; want.len() * v];
                self.stream.memcpy_dtoh(&s.logits.cuda_slice().slice(want.start * v..want.end * v), &mut host)?;
                self.stream.synchronize()?;
                out.extend(host.chunks_exact(v).map(<[f32]>::to_vec));
            }
        }
        Ok(out)
    }

    /// Whether the indexer scores on the int8 tensor cores (`index_scores_mma`): under the
    /// official numerics (its queries and keys are FP4 values by then) and for the head counts
    /// and widths the kernel takes.
    pub(super) fn index_fp4(&self, official: bool) -> bool {
        official && self.index_fp4_shape(self.cfg.indexer_heads, self.cfg.indexer_head_dim)
    }

    /// The shapes `index_scores_mma` (dsv4_common.cuh) takes: up to four 16-head tiles and
    /// four 32-value blocks.
    pub(super) fn index_fp4_shape(&self, heads: usize, dim: usize) -> bool {
        (1..=64).contains(&heads) && dim.is_multiple_of(32) && dim <= 128
    }

    /// Blocks of [`BLOCK`] threads for the indexer's scores of `keys` keys: a warp per key in
    /// f32, [`INDEX_KEYS`] keys a warp on the tensor cores (a tenth of those for the decode
    /// step's strided launch, `step`, whose warps share the keys out).
    pub(super) fn index_blocks(&self, keys: usize, fp4: bool, step: bool) -> usize {
        let warps = BLOCK / 32;
        match (fp4, step) {
            (false, _) => (keys * 32).div_ceil(BLOCK),
            (true, false) => keys.div_ceil(INDEX_KEYS).div_ceil(warps),
            (true, true) => keys.div_ceil(INDEX_KEYS_STEP).div_ceil(warps),
        }
    }

    /// The official numerics' kernel limits (index_round takes one thread per value).
    fn check_official(&self) -> Result<()> {
        let c = &self.cfg;
        let id = c.indexer_head_dim;
        let has_indexer = c.layer_kinds.contains(&LayerKind::Csa);
        if has_indexer && !(id.is_power_of_two() && (32..=1024).contains(&id)) {
            return Err(CudaError::Shape(format!("official numerics need a power-of-two indexer head dim in 32..=1024, got {id}")));
        }
        Ok(())
    }

    /// Tokens `toks` (at most CHUNK) through every layer; logits of the chunk's tokens
    /// `want` into `s.logits` (token t's at `t · vocab`).
    fn chunk(&self, st: &mut GpuState, s: &mut Scratch, toks: &[u32], num: Numerics, want: Range<usize>) -> Result<()> {
        let c = &self.cfg;
        let (e, hcn, n) = (c.n_embd, c.hc_count, toks.len());
        let ids: Vec<i32> = toks.iter().map(|&t| t as i32).collect();
        self.stream.memcpy_htod(&ids, &mut s.toks.cuda_slice_mut().slice_mut(..n))?;
        let sp = self.ptr(&s.streams);
        let args = [P(self.ptr(&self.w.embd)), I(self.w.embd_f16 as i32), P(self.ptr(&s.toks)), I(e as i32), I(hcn as i32), P(sp)];
        self.launch("embed", (e.div_ceil(BLOCK), n), BLOCK, 0, &args)?;
        let p = Pass { num, toks, pos0: st.pos };
        for il in 0..self.layers.len() {
            self.attention(st, s, il, &p)?;
            self.ffn(s, il, &p)?;
        }
        st.pos += n as u64;
        if !want.is_empty() {
            let (a, k) = (want.start, want.len());
            let (hce, ms) = (hcn * e, c.hc_mix().max(hcn));
            let h = &self.w.out_hc;
            let (sa, ma, xa) = (sp + (a * hce * 4) as u64, self.ptr(&s.m) + (a * ms * 4) as u64, self.ptr(&s.x) + (a * e * 4) as u64);
            self.mm(s, num, &h.proj, sa, hce, k, ma, ms)?;
            self.hc_pre(h, sa, ma, 1, &self.w.out_norm, xa, 0, true, k)?;
            let la = self.ptr(&s.logits) + (a * c.vocab_size * 4) as u64;
            self.mm(s, num, &self.w.output, xa, e, k, la, c.vocab_size)?;
        }
        Ok(())
    }

    pub(super) fn ptr<T>(&self, b: &DeviceBuffer<T>) -> u64 {
        dev_addr(&self.stream, b)
    }

    pub(super) fn launch(&self, name: &str, grid: (usize, usize), block: usize, smem: usize, args: &[Arg]) -> Result<()> {
        self.launch3(name, (grid.0, grid.1, 1), block, smem, args)
    }

    pub(super) fn launch3(&self, name: &str, grid: (usize, usize, usize), block: usize, smem: usize, args: &[Arg]) -> Result<()> {
        self.launch_on(self.mv.queue(), name, grid, block, smem, args)
    }

    /// Every model launch: counted, timed while profiling, queued on `q`.
    pub(super) fn launch_on(&self, q: Queue, name: &str, grid: (usize, usize, usize), block: usize, smem: usize, args: &[Arg]) -> Result<()> {
        self.counted(1);
        let overlap = q.overlap && self.mv.overlap();
        self.timed(|| name.to_string(), || self.k.launch(q.stream, name, grid, block, smem, args, overlap))
    }

    /// `y_t = W x_t` for `n` tokens (strides in f32 elements) under `num`: with the official
    /// numerics a quantized `W` takes each token's `x` quantized the CPU's way (Q8_0-like
    /// blocks for Q8_0, Q8_K for the k- and i-quants), float weights take f32 either way.
    /// Several tokens under the official numerics go through the tensor-core matmul (one
    /// launch, the CPU's results bit for bit); float weights over several tokens through one
    /// many-token launch (F16 on the BF16 tensor cores to f32 accuracy, F32 in f32); the plain
    /// quantized products run [`MAX_BATCH`] tokens per launch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mm(&self, s: &Scratch, num: Numerics, w: &DeviceMatrix, x: u64, xs: usize, n: usize, y: u64, ys: usize) -> Result<()> {
        let float = matches!(w.ty(), GgmlType::F32 | GgmlType::F16);
        let label = |what: &str| format!("{what} {} {}x{}", w.ty(), w.rows(), w.cols());
        if float && n >= MATMUL_MIN_TOKENS {
            // SAFETY: as below.
            self.counted(1);
            return self.timed(|| label("matmul_f"), || unsafe { self.mt.run_f16_mma_raw(w, x, xs, n, y, ys, self.ptr(&s.part), s.part.len()) });
        }
        if num == Numerics::Plain || float {
            return self.timed(
                || label("matvec"),
                || {
                    for t0 in (0..n).step_by(MAX_BATCH) {
                        self.counted(1);
                        let (xa, ya) = (x + (t0 * xs * 4) as u64, y + (t0 * ys * 4) as u64);
                        // SAFETY: every caller passes addresses inside the model's or the
                        // state's buffers, sized for the matrix and the chunk by construction
                        // (state.rs sizes scratch from the config the matrices were checked
                        // against when bound), with outputs apart from inputs.
                        unsafe { self.mv.run_batch_raw(w, xa, xs, MAX_BATCH.min(n - t0), ya, ys)? };
                    }
                    Ok(())
                },
            );
        }
        let acts = self.quantize(s, w, x, xs, n)?;
        let stride = act_stride(&self.cfg);
        if n >= MATMUL_MIN_TOKENS && matmul::supports(w.ty()) {
            self.counted(1);
            // SAFETY: as above; the activation scratch holds `n` rows of `stride` bytes.
            return self.timed(|| label("matmul"), || unsafe { self.mt.run_raw(w, acts, stride, n, y, ys) });
        }
        self.timed(
            || label("matvec_q"),
            || {
                self.counted(n as u64);
                for t in 0..n {
                    // SAFETY: as above; the activation scratch holds CHUNK tokens of `stride`
                    // bytes, checked to cover this matrix's activations.
                    unsafe { self.mv.run_q_raw(w, acts + (t * stride) as u64, y + (t * ys * 4) as u64)? };
                }
                Ok(())
            },
        )
    }

    /// Quantizes `n` rows of `x` (`xs` floats apart) for `w`'s type into the activation
    /// scratch, [`act_stride`] bytes per row; returns its address.
    pub(super) fn quantize(&self, s: &Scratch, w: &DeviceMatrix, x: u64, xs: usize, n: usize) -> Result<u64> {
        let acts = self.ptr(&s.acts);
        self.quantize_into(w, x, xs, n, (acts, act_stride(&self.cfg), s.acts.len()))?;
        Ok(acts)
    }

    /// [`quantize`](Self::quantize) into `out` = (address, row pitch, bytes there), the pitch
    /// and the room checked against `w`'s activation rows.
    pub(super) fn quantize_into(&self, w: &DeviceMatrix, x: u64, xs: usize, n: usize, (out, pitch, room): (u64, usize, usize)) -> Result<()> {
        if act_bytes(w.ty(), w.cols())? > pitch || n * pitch > room {
            return Err(CudaError::Shape(format!("{n} rows of {} columns exceed the activation scratch", w.cols())));
        }
        self.quant_acts(w.ty() == GgmlType::Q8_0, x, xs, w.cols(), n, out, pitch)
    }

    /// Quantizes `rows` rows of `cols` f32 at `x` (`xs` floats apart) into the official
    /// activation blocks at `out` (`stride` bytes apart): Q8_0-like blocks (`q8_0`, for Q8_0
    /// weights) or Q8_K (the k- and i-quants).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn quant_acts(&self, q8_0: bool, x: u64, xs: usize, cols: usize, rows: usize, out: u64, stride: usize) -> Result<()> {
        self.quant_acts_on(self.mv.queue(), q8_0, x, xs, cols, rows, out, stride)
    }

    /// [`quant_acts`](Self::quant_acts) queued on `q`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn quant_acts_on(&self, q: Queue, q8_0: bool, x: u64, xs: usize, cols: usize, rows: usize, out: u64, stride: usize) -> Result<()> {
        let args = |nb: usize| [P(x), L(xs as i64), P(out), L(stride as i64), I(nb as i32)];
        if q8_0 {
            // Eight 32-column blocks per CTA, a warp each.
            let nb = cols / 32;
            self.launch_on(q, "quant_q8_0", (nb.div_ceil(8), rows, 1), 256, 0, &args(nb))
        } else {
            self.launch_on(q, "quant_q8_k", (cols / 256, rows, 1), 256, 0, &args(cols / 256))
        }
    }

    /// The HC read-out (`hc_pre` in ops.cu) of `n` tokens into `out`, normed by `norm`; each
    /// mixing value at `m` is the sum of `parts` partial products (1: the value itself).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hc_pre(&self, h: &Hc, streams: u64, m: u64, parts: usize, norm: &DeviceBuffer<f32>, out: u64, mix: u64, head: bool, n: usize) -> Result<()> {
        let c = &self.cfg;
        let args = [
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
            // Each token's mixing values are `parts` partial sums each (hc_proj's layout).
            I((c.hc_mix().max(c.hc_count) * parts) as i32),
            I(c.hc_mix() as i32),
            I(parts as i32),
        ];
        self.launch("hc_pre", (n, 1), HC_THREADS, 0, &args)
    }

    /// `hc_post` of `n` tokens: each writes its sublayer output `y` back into its streams.
    pub(super) fn hc_post(&self, streams: u64, y: u64, mix: u64, n: usize) -> Result<()> {
        let c = &self.cfg;
        let args = [P(streams), P(y), P(mix), I(c.hc_count as i32), I(c.n_embd as i32), I(c.hc_mix() as i32)];
        self.launch("hc_post", (c.n_embd.div_ceil(BLOCK), n), BLOCK, 0, &args)
    }

    /// `norm_rope` of `n` tokens (`stride` floats apart, token t at position `pos + t`), each
    /// `heads` vectors of `d`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn norm_rope(&self, src: u64, dst: u64, w: u64, heads: usize, d: usize, norm: bool, freqs: u64, n_pairs: usize, pos: u64, n: usize, stride: usize) -> Result<()> {
        let eps = self.cfg.rms_eps;
        let args = [P(src), P(dst), P(w), I(d as i32), I(norm as i32), F(eps), P(freqs), I(n_pairs as i32), L(pos as i64), L(stride as i64), P(0), I(0), L(0)];
        self.launch("norm_rope", (heads, n), BLOCK, 0, &args)
    }

    /// A cached KV row as the official numerics store it (FP8 round trip, BF16).
    pub(super) fn kv_round(&self, row: u64) -> Result<()> {
        let c = &self.cfg;
        self.launch("kv_round", (1, 1), 64, 0, &[P(row), I(c.head_dim as i32), I(c.rope_dim as i32), L(c.head_dim as i64)])
    }

    /// `rows` indexer vectors (queries or a key), contiguous, as the official indexer scores
    /// them (Hadamard, FP4 round trip).
    pub(super) fn index_round(&self, ptr: u64, rows: usize) -> Result<()> {
        let id = self.cfg.indexer_head_dim;
        self.launch("index_round", (rows, 1), id, id * 4, &[P(ptr), I(id as i32), L(id as i64)])
    }
}

/// The rows of a step whose every want was [`Want::Row`].
fn whole_rows(next: Vec<Next>) -> Result<Vec<Vec<f32>>> {
    next.into_iter()
        .map(|r| match r {
            Next::Logits(l) => Ok(l),
            Next::Reduced(_) => Err(CudaError::Shape("a whole row was asked for and a reduction came".into())),
        })
        .collect()
}
