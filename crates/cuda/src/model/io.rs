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

use super::state::{comp_rows, Frontier, GpuState};
use super::GpuModel;
use crate::buffer::DeviceBuffer;
use crate::device::Gpu;
use crate::error::{CudaError, Result};

fn bad(why: impl Into<String>) -> CudaError {
    CudaError::Shape(why.into())
}

/// Whether `f` has the shape a fresh frontier of this layer has.
fn same_frontier_shape(f: &HostFrontier, kind: LayerKind, dim: usize) -> bool {
    let w = HostFrontier::new(kind, dim);
    (f.ratio, f.width, f.kv.len(), f.score.len()) == (w.ratio, w.width, w.kv.len(), w.score.len())
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

    /// The first `n` values of `b`, queued; valid after the caller's synchronize.
    fn down(&self, b: &DeviceBuffer<f32>, n: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; n];
        if n > 0 {
            self.stream.memcpy_dtoh(&b.cuda_slice().slice(..n), &mut out)?;
        }
        Ok(out)
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

    fn frontier_down(&self, f: &Frontier, kind: LayerKind, dim: usize) -> Result<HostFrontier> {
        let mut h = HostFrontier::new(kind, dim);
        h.kv = self.down(&f.kv, h.kv.len())?;
        h.score = self.down(&f.score, h.score.len())?;
        Ok(h)
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
        let mut layers = Vec::with_capacity(st.layers.len());
        for (&kind, ls) in c.layer_kinds.iter().zip(&st.layers) {
            let n = comp_rows(kind, st.pos);
            layers.push(LayerCheckpoint {
                raw: self.down(&ls.raw, ls.raw.len())?,
                comp_len: if ls.comp.is_some() { n * c.head_dim } else { 0 },
                index_len: if ls.index.is_some() { n * c.indexer_head_dim } else { 0 },
                compressor: ls.comp.as_ref().map(|(_, f)| self.frontier_down(f, kind, c.head_dim)).transpose()?,
                indexer: ls.index.as_ref().map(|(_, f)| self.frontier_down(f, kind, c.indexer_head_dim)).transpose()?,
            });
        }
        self.stream.synchronize()?;
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
        let mut layers = Vec::with_capacity(st.layers.len());
        for (&kind, ls) in c.layer_kinds.iter().zip(&st.layers) {
            let n = comp_rows(kind, st.pos);
            let mut h = HostLayer::new(c, kind);
            h.raw = self.down(&ls.raw, ls.raw.len())?;
            if let Some((rows, f)) = &ls.comp {
                h.comp_rows = self.down(rows, n * c.head_dim)?;
                h.compressor = Some(self.frontier_down(f, kind, c.head_dim)?);
            }
            if let Some((rows, f)) = &ls.index {
                h.index_rows = self.down(rows, n * c.indexer_head_dim)?;
                h.indexer = Some(self.frontier_down(f, kind, c.indexer_head_dim)?);
            }
            layers.push(h);
        }
        self.stream.synchronize()?;
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
