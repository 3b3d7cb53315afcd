//! Tensor-info records and the size rules both the reader and the writer enforce.

use crate::error::{GgufError, Result};
use crate::{GgmlType, MAX_DIMS};

/// One tensor-info record of a parsed file.
///
/// Only the reader creates these, after checking that the sizes are consistent and the data
/// lies inside the file, so the accessors cannot fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub(crate) name: String,
    pub(crate) dims: Vec<u64>,
    pub(crate) ty: GgmlType,
    pub(crate) offset: u64,
    pub(crate) n_elements: u64,
    pub(crate) n_bytes: u64,
}

impl TensorInfo {
    /// The tensor name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimension sizes in GGUF `ne` order: `dims()[0]` is the contiguous (fastest) one, the
    /// reverse of the PyTorch shape. Between 1 and [`MAX_DIMS`] entries, none zero.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// The element type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Byte offset of the data relative to [`GgufFile::data_start`](crate::GgufFile::data_start).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The product of the dimensions.
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Bytes of data: rows times the bytes of one row of `dims()[0]` elements.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }
}

/// Checks a tensor's shape and returns `(n_elements, n_bytes)`.
///
/// Zero dimensions are refused: ds4's tensors all have fixed nonzero shapes, a zero-size tensor
/// has no data to bounds-check, and in a header a zero is far likelier corruption than intent.
pub(crate) fn tensor_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<(u64, u64)> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name.to_owned(),
            n_dims: dims.len() as u64,
        });
    }
    if dims.contains(&0) {
        return Err(GgufError::ZeroDim {
            tensor: name.to_owned(),
            dims: dims.to_vec(),
        });
    }
    let overflow = || GgufError::SizeOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let block = ty.block_elems() as u64;
    if !dims[0].is_multiple_of(block) {
        return Err(GgufError::PartialBlock {
            tensor: name.to_owned(),
            ty,
            ne0: dims[0],
            block,
        });
    }
    let row_bytes = ty.row_bytes(dims[0]).ok_or_else(overflow)?;
    let n_bytes = row_bytes
        .checked_mul(n_elements / dims[0])
        .ok_or_else(overflow)?;
    Ok((n_elements, n_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_flash_tensors() {
        assert_eq!(
            tensor_size("e", &[4096, 2048, 256], GgmlType::IQ2_XXS).unwrap(),
            (4096 * 2048 * 256, 16 * 66 * 2048 * 256)
        );
        assert_eq!(
            tensor_size("d", &[2048, 4096, 256], GgmlType::Q2_K)
                .unwrap()
                .1,
            672 << 20
        );
        assert_eq!(
            tensor_size("t", &[6, 129280], GgmlType::I32).unwrap(),
            (6 * 129280, 24 * 129280)
        );
        assert_eq!(tensor_size("s", &[1], GgmlType::F32).unwrap(), (1, 4));
    }

    #[test]
    fn bad_shapes() {
        assert!(matches!(
            tensor_size("x", &[], GgmlType::F32),
            Err(GgufError::BadDimCount { n_dims: 0, .. })
        ));
        assert!(matches!(
            tensor_size("x", &[1; 9], GgmlType::F32),
            Err(GgufError::BadDimCount { n_dims: 9, .. })
        ));
        assert!(tensor_size("x", &[1; 8], GgmlType::F32).is_ok());
        assert!(matches!(
            tensor_size("x", &[4, 0], GgmlType::F32),
            Err(GgufError::ZeroDim { .. })
        ));
        assert!(matches!(
            tensor_size("x", &[1 << 32, 1 << 32], GgmlType::I8),
            Err(GgufError::SizeOverflow { .. })
        ));
        // Fits as an element count but not as bytes.
        assert!(matches!(
            tensor_size("x", &[1 << 62], GgmlType::F32),
            Err(GgufError::SizeOverflow { .. })
        ));
        assert!(matches!(
            tensor_size("x", &[100, 2], GgmlType::Q4_K),
            Err(GgufError::PartialBlock {
                ne0: 100,
                block: 256,
                ..
            })
        ));
    }
}
