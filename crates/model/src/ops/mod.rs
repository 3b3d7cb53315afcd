//! Small numeric building blocks shared by the layer code.

pub mod hc;
pub mod norm;
pub mod rope;

/// `silu(min(g, c)) * clamp(u, -c, c)`: DeepSeek V4 clamps the gate from above only and the
/// up projection on both sides, for routed and shared experts alike.
#[inline]
pub fn swiglu_clamped(g: f32, u: f32, c: f32) -> f32 {
    let g = g.min(c);
    let u = u.clamp(-c, c);
    g / (1.0 + (-g).exp()) * u
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Numerically stable softplus (the router's score is its square root).
#[inline]
pub fn softplus(z: f32) -> f32 {
    if z > 20.0 {
        z
    } else if z < -20.0 {
        z.exp()
    } else {
        z.exp().ln_1p()
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four lanes let the compiler vectorise while keeping a fixed summation order.
    let mut acc = [0f32; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
