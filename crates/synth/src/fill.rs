//! Random but valid tensor contents with realistic magnitudes.
//!
//! Matrices get element RMS `gain / sqrt(fan_in)`, so a projection of a unit-RMS (normed)
//! input yields unit-RMS outputs and activations stay in range through every layer.
//! Quantized blocks are random code bytes (every byte value is a valid code for these types)
//! with scale fields chosen so the dequantized values are zero-mean with that RMS.

use crate::rng::{mix, Rng};
use crate::SynthError;
use dsv4_gguf::{GgmlType, TensorStream};
use dsv4_model::layout::{Role, TensorSpec};
use dsv4_model::ModelConfig;
use half::f16;
use rayon::prelude::*;
use std::io::Write;
use std::sync::OnceLock;

/// Bytes generated per independent random stream; fixed so output never depends on threads.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks generated in parallel before each write.
const BATCH_CHUNKS: usize = 64;

pub fn write_tensor<W: Write>(
    stream: &mut TensorStream<W>,
    t: &TensorSpec,
    cfg: &ModelConfig,
    seed: u64,
) -> Result<(), SynthError> {
    if t.role == Role::HashTable {
        return write_hash_table(stream, t, cfg, seed);
    }
    let (be, bb) = (t.ty.block_elems(), t.ty.block_bytes());
    let total_blocks = (t.n_elements() / be as u64) as usize;
    let chunk_blocks = (CHUNK_BYTES / bb).max(1);
    let n_chunks = total_blocks.div_ceil(chunk_blocks);
    let filler = Filler::new(t)?;
    let mut buf = vec![0u8; BATCH_CHUNKS.min(n_chunks) * chunk_blocks * bb];
    let mut chunk = 0;
    while chunk < n_chunks {
        let batch = BATCH_CHUNKS.min(n_chunks - chunk);
        let first_block = chunk * chunk_blocks;
        let blocks = (batch * chunk_blocks).min(total_blocks - first_block);
        let out = &mut buf[..blocks * bb];
        out.par_chunks_mut(chunk_blocks * bb).enumerate().for_each(|(i, part)| {
            let mut rng = Rng::new(mix(seed, (chunk + i) as u64));
            filler.fill(part, &mut rng);
        });
        stream.write_tensor_bytes(out)?;
        chunk += batch;
    }
    Ok(())
}

/// `tid2eid`: for every token, `n_expert_used` distinct expert ids.
fn write_hash_table<W: Write>(
    stream: &mut TensorStream<W>,
    t: &TensorSpec,
    cfg: &ModelConfig,
    seed: u64,
) -> Result<(), SynthError> {
    let (used, n_tok) = (t.dims[0] as usize, t.dims[1] as usize);
    let mut rng = Rng::new(seed);
    let mut buf = Vec::with_capacity(used * n_tok * 4);
    let mut pick = Vec::with_capacity(used);
    for _ in 0..n_tok {
        pick.clear();
        while pick.len() < used {
            let e = rng.below(cfg.n_expert as u64) as i32;
            if !pick.contains(&e) {
                pick.push(e);
            }
        }
        for e in &pick {
            buf.extend_from_slice(&e.to_le_bytes());
        }
    }
    stream.write_tensor_bytes(&buf)?;
    Ok(())
}

enum Filler {
    /// Uniform in `center ± half_width`, stored as F32 or F16.
    Float { ty: GgmlType, center: f32, half_width: f32 },
    /// Random codes, with every block's scale set for the target RMS.
    Blocks { ty: GgmlType, scale: f32 },
}

impl Filler {
    fn new(t: &TensorSpec) -> Result<Filler, SynthError> {
        let sqrt3 = 3f32.sqrt();
        let (center, rms) = match t.role {
            Role::NormScale => (1.0, 0.05),
            Role::Small => (0.0, 0.3),
            Role::Embedding => (0.0, 1.0),
            Role::Matrix => (0.0, matrix_gain(&t.name) / (t.dims[0] as f32).sqrt()),
            Role::HashTable => unreachable!("hash tables are written by write_hash_table"),
        };
        match t.ty {
            GgmlType::F32 | GgmlType::F16 => Ok(Filler::Float { ty: t.ty, center, half_width: rms * sqrt3 }),
            GgmlType::Q8_0 | GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::IQ2_XXS => {
                Ok(Filler::Blocks { ty: t.ty, scale: rms / unit_rms(t.ty) })
            }
            other => Err(SynthError::Invalid(format!("{}: cannot synthesise type {other}", t.name))),
        }
    }

    fn fill(&self, out: &mut [u8], rng: &mut Rng) {
        match *self {
            Filler::Float { ty: GgmlType::F32, center, half_width } => {
                for c in out.chunks_exact_mut(4) {
                    c.copy_from_slice(&(center + half_width * rng.symmetric()).to_le_bytes());
                }
            }
            Filler::Float { center, half_width, .. } => {
                for c in out.chunks_exact_mut(2) {
                    c.copy_from_slice(&f16::from_f32(center + half_width * rng.symmetric()).to_le_bytes());
                }
            }
            Filler::Blocks { ty, scale } => {
                rng.fill(out);
                for blk in out.chunks_exact_mut(ty.block_bytes()) {
                    set_scales(ty, blk, scale, rng);
                }
            }
        }
    }
}

/// The LM head gets a larger gain so synthetic logits are peaked like a trained model's
/// rather than nearly uniform over 129K tokens.
fn matrix_gain(name: &str) -> f32 {
    if name == "output.weight" { 3.0 } else { 1.0 }
}

/// Writes a block's scale fields so that, with random codes, its values are zero-mean with
/// an RMS proportional to `s`. For the min-offset formats the min equals the scale times the
/// codes' mean, centring the codes (Q2_K codes 0..3 have mean 1.5, Q4_K codes 0..15 mean 7.5).
fn set_scales(ty: GgmlType, blk: &mut [u8], s: f32, rng: &mut Rng) {
    let h = |x: f32| f16::from_f32(x).to_le_bytes();
    match ty {
        GgmlType::Q8_0 | GgmlType::IQ2_XXS => blk[0..2].copy_from_slice(&h(s)),
        GgmlType::Q2_K => {
            for b in &mut blk[0..16] {
                let sc = 1 + rng.below(15) as u8;
                *b = sc | (sc << 4);
            }
            blk[80..82].copy_from_slice(&h(s));
            blk[82..84].copy_from_slice(&h(1.5 * s));
        }
        GgmlType::Q4_K => {
            blk[0..2].copy_from_slice(&h(s));
            blk[2..4].copy_from_slice(&h(7.5 * s));
            let mut packed = [0u8; 12];
            for j in 0..8 {
                let v = 1 + rng.below(63) as u8;
                if j < 4 {
                    packed[j] = v;
                    packed[j + 4] = v;
                } else {
                    packed[j + 4] = (v & 15) | ((v & 15) << 4);
                    packed[j - 4] |= (v >> 4) << 6;
                    packed[j] |= (v >> 4) << 6;
                }
            }
            blk[4..16].copy_from_slice(&packed);
        }
        _ => unreachable!("only block types reach set_scales"),
    }
}

/// RMS of dequantized values for scale 1, measured once per type on a fixed sample.
fn unit_rms(ty: GgmlType) -> f32 {
    static CACHE: OnceLock<[f32; 4]> = OnceLock::new();
    let table = CACHE.get_or_init(|| {
        [GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS].map(|ty| {
            let blocks = 512;
            let mut raw = vec![0u8; blocks * ty.block_bytes()];
            let mut rng = Rng::new(0xca11b);
            rng.fill(&mut raw);
            for blk in raw.chunks_exact_mut(ty.block_bytes()) {
                set_scales(ty, blk, 1.0, &mut rng);
            }
            let mut vals = vec![0f32; blocks * ty.block_elems()];
            dsv4_quant::dequantize_row(ty, &raw, &mut vals).expect("sample row is whole blocks");
            let ms = vals.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / vals.len() as f64;
            ms.sqrt() as f32
        })
    });
    match ty {
        GgmlType::Q8_0 => table[0],
        GgmlType::Q2_K => table[1],
        GgmlType::Q4_K => table[2],
        _ => table[3],
    }
}
