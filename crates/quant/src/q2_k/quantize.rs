//! Quantizer (in progress).
