//! Moving a session's state between the GPU and the CPU types of `dsv4_model::state`, so the
//! engine keeps one format for checkpoints, rewinds, forks and the disk cache whichever
//! backend runs the tokens.
//!
//! What is copied: per layer the raw window ring, the compressed and indexer rows emitted so
//! far (the first `pos / ratio` rows of the preallocated buffers) and the compressor
//! frontiers. The device layouts are those of the CPU types (frontier `slots × width` values
//! then scores), so every copy is a verbatim block of f32.

use dsv4_model::config::LayerKind;
use dsv4_model::state::{Frontier as HostFrontier, LayerCheckpoint, LayerState as HostLayer};
use dsv4_model::{Checkpoint, SessionState};
use rayon::prelude::*;

use super::state::{comp_rows, Frontier, GpuState};
use super::GpuModel;
use crate::buffer::DeviceBuffer;
use crate::device::Gpu;
use crate::error::{CudaError, Result};

fn bad(why: impl Into<String>) -> CudaError {
    CudaError::Shape(why.into())
}

/// Floats the page-locked staging of [`GpuModel::download`] holds at most (32 MiB): a Flash
/// checkpoint (~20 MB) is one round; a long context's state takes several.
const STAGE_FLOATS: usize = 8 << 20;

/// Whether `f` has the shape a fresh frontier of this layer has.
fn same_frontier_shape(f: &HostFrontier, kind: LayerKind, dim: usize) -> bool {
    let (w, n) = (HostFrontier::unfilled(kind, dim), HostFrontier::values(kind, dim));
    (f.ratio, f.width, f.kv.len(), f.score.len()) == (w.ratio, w.width, n, n)
}

impl GpuModel {
    /// Refuses a state made for another model.
    pub(super) fn check_state(&self, st: &GpuState) -> Result<()> {
        let c = &self.cfg;
        let raw = c.sliding_window * c.head_dim;
        if st.layers.len() != self.layers.len() || st.layers.iter().any(|l| l.raw.len() != raw) || !st.att.len().is_multiple_of(c.n_head) {
            return Err(bad("the state belongs to another model"));
        }
        Ok(())
    }

    /// The first `n` values of each `(b, n)`, through page-locked staging. A state is up to 7
    /// buffers a layer. Copied one by one into pageable memory, each copy was synchronous and
    /// staged by the driver; the scheduler takes a checkpoint at every answer's end while all
    /// sessions wait, and 32 answers ending together held one step for 75–96 ms on 6 H100
    /// layers (29–33 ms this way; bench/README.md, v23). Here the copies are queued back to
    /// back into the staging, one synchronize a round.
    fn download(&self, pieces: &[(&DeviceBuffer<f32>, usize)]) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Vec<f32>> = pieces.iter().map(|&(_, n)| Vec::with_capacity(n)).collect();
        let total: usize = pieces.iter().map(|&(_, n)| n).sum();
        if total == 0 {
            return Ok(out);
        }
        if let Some(&(b, n)) = pieces.iter().find(|&&(b, n)| n > b.len()) {
            return Err(bad(format!("{n} values asked of a buffer of {}", b.len())));
        }
        let mut guard = self.staging.lock().map_err(|_| bad("the download staging was poisoned by a panic"))?;
        let cap = total.min(STAGE_FLOATS);
        if guard.as_ref().is_none_or(|s| s.len() < cap) {
            *guard = None;
            // SAFETY: page-locked host memory of this context, written only by the copies
            // below and read after their stream's synchronize.
            *guard = Some(unsafe { self.stream.context().alloc_pinned_with_flags::<f32>(cap, 0)? });
        }
        let stage = guard.as_mut().expect("just made").as_mut_slice()?;
        let (mut i, mut off) = (0, 0);
        while i < pieces.len() {
            // One round: (piece, offset in the staging, count), pieces split at the edge.
            let mut round = Vec::new();
            let mut used = 0;
            while i < pieces.len() && used < cap {
                let (b, n) = pieces[i];
                let take = (n - off).min(cap - used);
                if take > 0 {
                    self.stream.memcpy_dtoh(&b.cuda_slice().slice(off..off + take), &mut stage[used..used + take])?;
                    round.push((i, used, take));
                }
                used += take;
                off += take;
                if off == n {
                    (i, off) = (i + 1, 0);
                }
            }
            self.stream.synchronize()?;
            // Fresh host pages fault on first touch: on a 2-core VM, 20 MB of new vectors (a
            // Flash checkpoint) took 15–18 ms to fill on one thread. So the pieces fill in
            // parallel. A round names each piece once, in order.
            let stage: &[f32] = stage;
            let mut fill: Vec<(&mut Vec<f32>, &[f32])> = Vec::with_capacity(round.len());
            let mut rest = out.iter_mut().enumerate();
            for (p, at, take) in round {
                let v = rest.find(|(i, _)| *i == p).map(|(_, v)| v).ok_or_else(|| bad("a download round out of order"))?;
                fill.push((v, &stage[at..at + take]));
            }
            fill.into_par_iter().for_each(|(v, src)| v.extend_from_slice(src));
        }
        Ok(out)
    }

    /// The device buffers of `f` for [`download`](Self::download), with the host frontier
    /// they fill.
    fn frontier_pieces<'a>(f: &'a Frontier, kind: LayerKind, dim: usize, pieces: &mut Vec<(&'a DeviceBuffer<f32>, usize)>) -> HostFrontier {
        let n = HostFrontier::values(kind, dim);
        pieces.push((&f.kv, n));
        pieces.push((&f.score, n));
        HostFrontier::unfilled(kind, dim)
    }

    /// Writes `src` over the first `src.len()` values of `b`.
    fn up(&self, src: &[f32], b: &mut DeviceBuffer<f32>) -> Result<()> {
        if src.len() > b.len() {
            return Err(bad(format!("{} values do not fit a buffer of {}", src.len(), b.len())));
        }
        if !src.is_empty() {
            self.stream.memcpy_htod(src, &mut b.cuda_slice_mut().slice_mut(..src.len()))?;
        }
        Ok(())
    }

    fn frontier_up(&self, h: &Option<HostFrontier>, f: Option<&mut Frontier>, kind: LayerKind, dim: usize) -> Result<()> {
        match (h, f) {
            (None, None) => Ok(()),
            (Some(h), Some(f)) => {
                if !same_frontier_shape(h, kind, dim) {
                    return Err(bad("a compressor frontier has another geometry"));
                }
                self.up(&h.kv, &mut f.kv)?;
                self.up(&h.score, &mut f.score)
            }
            _ => Err(bad("a compressor frontier is missing or extra")),
        }
    }

    /// The state a CPU [`SessionState::checkpoint`] would capture after the same tokens
    /// (equal up to the GPU's f32 rounding).
    pub fn checkpoint(&self, st: &GpuState) -> Result<Checkpoint> {
        self.check_state(st)?;
        let c = &self.cfg;
        let mut pieces = Vec::new();
        let mut layers = Vec::with_capacity(st.layers.len());
        for (&kind, ls) in c.layer_kinds.iter().zip(&st.layers) {
            let n = comp_rows(kind, st.pos);
            pieces.push((&ls.raw, ls.raw.len()));
            layers.push(LayerCheckpoint {
                raw: Vec::new(),
                comp_len: if ls.comp.is_some() { n * c.head_dim } else { 0 },
                index_len: if ls.index.is_some() { n * c.indexer_head_dim } else { 0 },
                compressor: ls.comp.as_ref().map(|(_, f)| Self::frontier_pieces(f, kind, c.head_dim, &mut pieces)),
                indexer: ls.index.as_ref().map(|(_, f)| Self::frontier_pieces(f, kind, c.indexer_head_dim, &mut pieces)),
            });
        }
        // The pieces' order: each layer's raw ring, then its frontiers' kv and scores.
        let mut got = self.download(&pieces)?.into_iter();
        let mut next = || got.next().ok_or_else(|| bad("a download came back short"));
        for l in &mut layers {
            l.raw = next()?;
            for f in [&mut l.compressor, &mut l.indexer].into_iter().flatten() {
                f.kv = next()?;
                f.score = next()?;
            }
        }
        Ok(Checkpoint { pos: st.pos, layers })
    }

    /// Rewinds `st` to `cp`, taken from this session (on the GPU or the CPU) at or before its
    /// position with the same tokens since. Compressed rows are append-only, so only the raw
    /// windows and frontiers are uploaded; rows past the checkpoint are simply overwritten
    /// later. Nothing changes on an error.
    pub fn restore(&self, st: &mut GpuState, cp: &Checkpoint) -> Result<()> {
        self.check_state(st)?;
        let c = &self.cfg;
        if cp.pos > st.pos || cp.layers.len() != st.layers.len() {
            return Err(bad(format!("a checkpoint at {} of {} layers does not fit a state at {}", cp.pos, cp.layers.len(), st.pos)));
        }
        for (&kind, cl) in c.layer_kinds.iter().zip(&cp.layers) {
            let n = comp_rows(kind, cp.pos);
            let want_comp = if kind == LayerKind::Window { 0 } else { n * c.head_dim };
            let want_index = if kind == LayerKind::Csa { n * c.indexer_head_dim } else { 0 };
            let fr = |f: &Option<HostFrontier>, present: bool, dim: usize| match f {
                None => !present,
                Some(f) => present && same_frontier_shape(f, kind, dim),
            };
            let ok = cl.raw.len() == c.sliding_window * c.head_dim
                && cl.comp_len == want_comp
                && cl.index_len == want_index
                && fr(&cl.compressor, kind != LayerKind::Window, c.head_dim)
                && fr(&cl.indexer, kind == LayerKind::Csa, c.indexer_head_dim);
            if !ok {
                return Err(bad("the checkpoint is for another geometry or inconsistent with its position"));
            }
        }
        for ((&kind, cl), ls) in c.layer_kinds.iter().zip(&cp.layers).zip(&mut st.layers) {
            self.up(&cl.raw, &mut ls.raw)?;
            self.frontier_up(&cl.compressor, ls.comp.as_mut().map(|(_, f)| f), kind, c.head_dim)?;
            self.frontier_up(&cl.indexer, ls.index.as_mut().map(|(_, f)| f), kind, c.indexer_head_dim)?;
        }
        self.stream.synchronize()?;
        st.pos = cp.pos;
        Ok(())
    }

    /// The whole session state as the CPU type (to save to disk, or to fork a session).
    pub fn to_host(&self, st: &GpuState) -> Result<SessionState> {
        self.check_state(st)?;
        let c = &self.cfg;
        let mut pieces = Vec::new();
        let mut layers = Vec::with_capacity(st.layers.len());
        for (&kind, ls) in c.layer_kinds.iter().zip(&st.layers) {
            let n = comp_rows(kind, st.pos);
            let mut h = HostLayer { raw: Vec::new(), compressor: None, comp_rows: Vec::new(), indexer: None, index_rows: Vec::new() };
            pieces.push((&ls.raw, ls.raw.len()));
            if let Some((rows, f)) = &ls.comp {
                pieces.push((rows, n * c.head_dim));
                h.compressor = Some(Self::frontier_pieces(f, kind, c.head_dim, &mut pieces));
            }
            if let Some((rows, f)) = &ls.index {
                pieces.push((rows, n * c.indexer_head_dim));
                h.indexer = Some(Self::frontier_pieces(f, kind, c.indexer_head_dim, &mut pieces));
            }
            layers.push(h);
        }
        // The pieces' order: each layer's raw ring, then per compressor its rows, kv, scores.
        let mut got = self.download(&pieces)?.into_iter();
        let mut next = || got.next().ok_or_else(|| bad("a download came back short"));
        for h in &mut layers {
            h.raw = next()?;
            if let Some(f) = &mut h.compressor {
                h.comp_rows = next()?;
                f.kv = next()?;
                f.score = next()?;
            }
            if let Some(f) = &mut h.indexer {
                h.index_rows = next()?;
                f.kv = next()?;
                f.score = next()?;
            }
        }
        Ok(SessionState { pos: st.pos, layers })
    }

    /// A GPU session holding `host` (a CPU prefill, a state loaded from disk), able to grow to
    /// `capacity` tokens.
    pub fn state_from_host(&self, gpu: &Gpu, host: &SessionState, capacity: u64) -> Result<GpuState> {
        let c = &self.cfg;
        if host.pos > capacity {
            return Err(bad(format!("a state at {} does not fit a capacity of {capacity}", host.pos)));
        }
        if host.layers.len() != c.n_layer {
            return Err(bad(format!("a state of {} layers for a model of {}", host.layers.len(), c.n_layer)));
        }
        let mut st = self.new_state(gpu, capacity)?;
        for ((&kind, h), ls) in c.layer_kinds.iter().zip(&host.layers).zip(&mut st.layers) {
            let n = comp_rows(kind, host.pos);
            let want_comp = if kind == LayerKind::Window { 0 } else { n * c.head_dim };
            let want_index = if kind == LayerKind::Csa { n * c.indexer_head_dim } else { 0 };
            if h.raw.len() != ls.raw.len() || h.comp_rows.len() != want_comp || h.index_rows.len() != want_index {
                return Err(bad("the state is for another geometry or inconsistent with its position"));
            }
            self.up(&h.raw, &mut ls.raw)?;
            if let Some((rows, _)) = ls.comp.as_mut() {
                self.up(&h.comp_rows, rows)?;
            }
            if let Some((rows, _)) = ls.index.as_mut() {
                self.up(&h.index_rows, rows)?;
            }
            self.frontier_up(&h.compressor, ls.comp.as_mut().map(|(_, f)| f), kind, c.head_dim)?;
            self.frontier_up(&h.indexer, ls.index.as_mut().map(|(_, f)| f), kind, c.indexer_head_dim)?;
        }
        self.stream.synchronize()?;
        st.pos = host.pos;
        Ok(st)
    }
}
