//! Activations as the official numerics feed them to a weight type (FORMATS §3.1): ds4's CPU
//! scalar x86 path quantizes `x` to Q8_0-like blocks for Q8_0 weights and to Q8_K for the
//! k-quant/i-quant expert weights, and keeps f32 for float weights.

pub mod q8_0;
pub mod q8_k;

pub use q8_0::BlockQ8_0Act;
pub use q8_k::BlockQ8K;

use crate::{GgmlType, QuantError};

/// Which activation format a weight type is multiplied with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActFormat {
    /// Float weights (F32, F16, BF16): activations stay f32.
    F32,
    /// Q8_0 weights: ds4's Q8_0-like blocks with an f32 scale.
    Q8_0,
    /// Q2_K, Q4_K and IQ2_XXS weights.
    Q8K,
}

impl ActFormat {
    pub fn for_weight(ty: GgmlType) -> Result<Self, QuantError> {
        match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => Ok(ActFormat::F32),
            GgmlType::Q8_0 => Ok(ActFormat::Q8_0),
            GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::IQ2_XXS => Ok(ActFormat::Q8K),
            other => Err(QuantError::Unsupported(other)),
        }
    }

    /// Elements per activation block (1 for f32).
    pub fn block_elems(self) -> usize {
        match self {
            ActFormat::F32 => 1,
            ActFormat::Q8_0 => q8_0::BLOCK_ELEMS,
            ActFormat::Q8K => q8_k::BLOCK_ELEMS,
        }
    }
}

/// One activation vector in the format some weight type needs. Quantize once, then use it
/// for every row (and, for the MoE, every expert) that multiplies the same `x`.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantizedActs {
    F32(Vec<f32>),
    Q8_0(Vec<BlockQ8_0Act>),
    Q8K(Vec<BlockQ8K>),
}

impl QuantizedActs {
    /// Quantizes `x` to `format`. Errors when `x` is not a whole number of blocks.
    pub fn quantize(format: ActFormat, x: &[f32]) -> Result<Self, QuantError> {
        let block = format.block_elems();
        if !x.len().is_multiple_of(block) {
            return Err(QuantError::PartialActBlock { format, elems: x.len(), block });
        }
        Ok(match format {
            ActFormat::F32 => QuantizedActs::F32(x.to_vec()),
            ActFormat::Q8_0 => QuantizedActs::Q8_0(q8_0::quantize_row(x)),
            ActFormat::Q8K => QuantizedActs::Q8K(q8_k::quantize_row(x)),
        })
    }

    /// Quantizes `x` to the format that weights of type `ty` need.
    pub fn for_weight(ty: GgmlType, x: &[f32]) -> Result<Self, QuantError> {
        Self::quantize(ActFormat::for_weight(ty)?, x)
    }

    pub fn format(&self) -> ActFormat {
        match self {
            QuantizedActs::F32(_) => ActFormat::F32,
            QuantizedActs::Q8_0(_) => ActFormat::Q8_0,
            QuantizedActs::Q8K(_) => ActFormat::Q8K,
        }
    }

    /// Number of activation elements represented.
    pub fn len(&self) -> usize {
        match self {
            QuantizedActs::F32(v) => v.len(),
            QuantizedActs::Q8_0(v) => v.len() * q8_0::BLOCK_ELEMS,
            QuantizedActs::Q8K(v) => v.len() * q8_k::BLOCK_ELEMS,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
