//! RMSNorm. The mean square is accumulated in f64: a 16384-wide HC state summed in f32
//! loses digits that every later layer inherits.

pub fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let ss: f64 = x.iter().map(|v| (*v as f64) * (*v as f64)).sum();
    1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt()
}

/// `out = x * w / rms(x)`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let s = rms_scale(x, eps);
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = v * s * g;
    }
}

/// In place, without a learned weight (per-head query norm, HC inputs).
pub fn rms_norm_plain_inplace(x: &mut [f32], eps: f32) {
    let s = rms_scale(x, eps);
    x.iter_mut().for_each(|v| *v *= s);
}

pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let s = rms_scale(x, eps);
    for (v, g) in x.iter_mut().zip(w) {
        *v = *v * s * g;
    }
}
