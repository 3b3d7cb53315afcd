//! A session's per-layer state: everything the next token's forward pass needs from the
//! tokens before it. It is explicit and serialisable so sessions can be snapshotted, rewound
//! and cached on disk.
//!
//! Per layer:
//! - the raw window: the last `sliding_window` KV rows, as a ring indexed by position;
//! - for compressed layers, the compressed rows emitted so far and the compressor frontier
//!   (the projections of the tokens of the window being filled and, for ratio 4, of the
//!   previous window, whose lane A the next row also mixes);
//! - for ratio-4 layers, the indexer's own compressed key rows and frontier.

use crate::config::{LayerKind, ModelConfig};

/// Rows that a compressor pools, kept between tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Frontier {
    pub ratio: usize,
    /// Width of one token's projection: lanes × compressed dim.
    pub width: usize,
    /// `slots × width` projected values and their scores (gate logits + position bias).
    /// Ratio 4 keeps 8 slots (previous window, then current); other ratios keep `ratio`.
    pub kv: Vec<f32>,
    pub score: Vec<f32>,
}

impl Frontier {
    pub fn new(kind: LayerKind, dim: usize) -> Frontier {
        let n = Frontier::values(kind, dim);
        // An empty slot scores -inf: the first ratio-4 window has no previous window to mix.
        Frontier { kv: vec![0.0; n], score: vec![f32::NEG_INFINITY; n], ..Frontier::unfilled(kind, dim) }
    }

    /// Values in `kv` (and in `score`) of this layer kind's frontier: `slots × width`.
    pub fn values(kind: LayerKind, dim: usize) -> usize {
        let ratio = kind.ratio() as usize;
        let slots = if kind == LayerKind::Csa { 2 * ratio } else { ratio };
        slots * kind.compressor_lanes() * dim
    }

    /// The geometry with no values yet, for a backend that copies them in from its own
    /// frontier (the CUDA checkpoints) rather than filling a fresh one twice.
    pub fn unfilled(kind: LayerKind, dim: usize) -> Frontier {
        Frontier { ratio: kind.ratio() as usize, width: kind.compressor_lanes() * dim, kv: Vec::new(), score: Vec::new() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerState {
    /// `window × head_dim`; the row of position p is at `p % window`.
    pub raw: Vec<f32>,
    pub compressor: Option<Frontier>,
    /// `n_comp × head_dim`.
    pub comp_rows: Vec<f32>,
    pub indexer: Option<Frontier>,
    /// `n_comp × indexer_head_dim`.
    pub index_rows: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SessionState {
    /// Tokens consumed so far; the next token is at this position.
    pub pos: u64,
    pub layers: Vec<LayerState>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("not a dsv4 session state (bad magic)")]
    Magic,
    #[error("session state format version {0} is not supported")]
    Version(u32),
    #[error("session state is for a different model geometry")]
    Geometry,
    #[error("session state is truncated or malformed")]
    Malformed,
}

const MAGIC: &[u8; 8] = b"DSV4STAT";
const VERSION: u32 = 1;

impl LayerState {
    pub fn new(cfg: &ModelConfig, kind: LayerKind) -> LayerState {
        LayerState {
            raw: vec![0.0; cfg.sliding_window * cfg.head_dim],
            compressor: (kind != LayerKind::Window).then(|| Frontier::new(kind, cfg.head_dim)),
            comp_rows: Vec::new(),
            indexer: (kind == LayerKind::Csa).then(|| Frontier::new(kind, cfg.indexer_head_dim)),
            index_rows: Vec::new(),
        }
    }
}

impl SessionState {
    pub fn new(cfg: &ModelConfig) -> SessionState {
        let layers = cfg.layer_kinds.iter().map(|&kind| LayerState::new(cfg, kind)).collect();
        SessionState { pos: 0, layers }
    }

    /// Little-endian binary form: magic, version, a geometry fingerprint, then every array with
    /// its length. Restoring it continues bit-identically.
    pub fn to_bytes(&self, cfg: &ModelConfig) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&fingerprint(cfg).to_le_bytes());
        out.extend_from_slice(&self.pos.to_le_bytes());
        let mut put = |v: &[f32]| {
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        };
        for l in &self.layers {
            put(&l.raw);
            put(&l.comp_rows);
            put(&l.index_rows);
            for f in [&l.compressor, &l.indexer].into_iter().flatten() {
                put(&f.kv);
                put(&f.score);
            }
        }
        out
    }

    pub fn from_bytes(cfg: &ModelConfig, bytes: &[u8]) -> Result<SessionState, StateError> {
        let mut r = Reader(bytes);
        if r.take(8)? != MAGIC {
            return Err(StateError::Magic);
        }
        let version = u32::from_le_bytes(r.take(4)?.try_into().unwrap());
        if version != VERSION {
            return Err(StateError::Version(version));
        }
        if u64::from_le_bytes(r.take(8)?.try_into().unwrap()) != fingerprint(cfg) {
            return Err(StateError::Geometry);
        }
        let mut st = SessionState::new(cfg);
        st.pos = u64::from_le_bytes(r.take(8)?.try_into().unwrap());
        for (l, kind) in st.layers.iter_mut().zip(&cfg.layer_kinds) {
            r.fill_exact(&mut l.raw)?;
            l.comp_rows = r.vec()?;
            l.index_rows = r.vec()?;
            // Rows must be whole, absent where the layer has no compressor, and the indexer must
            // hold one key per compressed row.
            let n = l.comp_rows.len() / cfg.head_dim;
            let whole = l.comp_rows.len() % cfg.head_dim == 0 && l.index_rows.len() % cfg.indexer_head_dim == 0;
            let index_ok = match kind {
                LayerKind::Csa => l.index_rows.len() == n * cfg.indexer_head_dim,
                _ => l.index_rows.is_empty(),
            };
            if !whole || !index_ok || (*kind == LayerKind::Window && n != 0) {
                return Err(StateError::Malformed);
            }
            for f in [&mut l.compressor, &mut l.indexer].into_iter().flatten() {
                r.fill_exact(&mut f.kv)?;
                r.fill_exact(&mut f.score)?;
            }
        }
        if !r.0.is_empty() {
            return Err(StateError::Malformed);
        }
        Ok(st)
    }
}

/// Distinguishes geometries whose states are not interchangeable.
fn fingerprint(cfg: &ModelConfig) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let dims = [cfg.n_layer, cfg.n_embd, cfg.head_dim, cfg.sliding_window, cfg.indexer_head_dim, cfg.vocab_size];
    for v in dims.iter().map(|&d| d as u64).chain(cfg.layer_kinds.iter().map(|k| k.ratio() as u64)) {
        h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.0.len() < n {
            return Err(StateError::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn len(&mut self) -> Result<usize, StateError> {
        let n = u64::from_le_bytes(self.take(8)?.try_into().unwrap());
        usize::try_from(n).ok().filter(|n| n.checked_mul(4).is_some_and(|b| b <= self.0.len())).ok_or(StateError::Malformed)
    }

    fn vec(&mut self) -> Result<Vec<f32>, StateError> {
        let n = self.len()?;
        Ok(self.take(n * 4)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    }

    fn fill_exact(&mut self, dst: &mut [f32]) -> Result<(), StateError> {
        let v = self.vec()?;
        if v.len() != dst.len() {
            return Err(StateError::Malformed);
        }
        dst.copy_from_slice(&v);
        Ok(())
    }
}

/// The part of a session's state that later tokens overwrite, captured at one position so the
/// session can be rewound there without replaying from the start. Compressed and indexer rows
/// are append-only, so only their counts are kept: rewinding truncates them.
///
/// The parts are public so that other backends (the GPU runner) can produce and consume
/// checkpoints of the same content; [`SessionState::restore`] checks their sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub pos: u64,
    pub layers: Vec<LayerCheckpoint>,
}

/// One layer's part of a [`Checkpoint`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCheckpoint {
    /// The raw window ring, whole.
    pub raw: Vec<f32>,
    /// Floats (not rows) of compressed and indexer rows at the checkpoint.
    pub comp_len: usize,
    pub index_len: usize,
    pub compressor: Option<Frontier>,
    pub indexer: Option<Frontier>,
}

impl Checkpoint {
    /// Bytes this checkpoint holds (for memory budgeting).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let f = |f: &Option<Frontier>| f.as_ref().map_or(0, |f| f.kv.len() + f.score.len());
                4 * (l.raw.len() + f(&l.compressor) + f(&l.indexer))
            })
            .sum()
    }
}

/// Whether a checkpoint's frontier can replace a state's (checkpoints may now be built by
/// other backends, so their sizes are checked rather than trusted).
fn same_shape(a: &Option<Frontier>, b: &Option<Frontier>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.ratio == b.ratio && a.width == b.width && a.kv.len() == b.kv.len() && a.score.len() == b.score.len(),
        _ => false,
    }
}

impl SessionState {
    pub fn checkpoint(&self) -> Checkpoint {
        let layers = self
            .layers
            .iter()
            .map(|l| LayerCheckpoint {
                raw: l.raw.clone(),
                comp_len: l.comp_rows.len(),
                index_len: l.index_rows.len(),
                compressor: l.compressor.clone(),
                indexer: l.indexer.clone(),
            })
            .collect();
        Checkpoint { pos: self.pos, layers }
    }

    /// Goes back to `c`, which must have been taken from this session at or before its
    /// current position, with the same tokens since (the caller's duty: rows emitted after
    /// the checkpoint are dropped, rows before it are trusted).
    pub fn restore(&mut self, c: &Checkpoint) -> Result<(), StateError> {
        let fits = c.pos <= self.pos
            && c.layers.len() == self.layers.len()
            && c.layers.iter().zip(&self.layers).all(|(cl, l)| {
                cl.raw.len() == l.raw.len()
                    && cl.comp_len <= l.comp_rows.len()
                    && cl.index_len <= l.index_rows.len()
                    && same_shape(&cl.compressor, &l.compressor)
                    && same_shape(&cl.indexer, &l.indexer)
            });
        if !fits {
            return Err(StateError::Geometry);
        }
        for (cl, l) in c.layers.iter().zip(&mut self.layers) {
            l.raw.copy_from_slice(&cl.raw);
            l.comp_rows.truncate(cl.comp_len);
            l.index_rows.truncate(cl.index_len);
            l.compressor = cl.compressor.clone();
            l.indexer = cl.indexer.clone();
        }
        self.pos = c.pos;
        Ok(())
    }
}
