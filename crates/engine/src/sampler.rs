//! Token sampling: greedy, temperature, top-k, top-p and min-p, reproducible from a seed.
//!
//! Order of the filters (as ds4 and most servers apply them): top-k (if set) on the logits,
//! softmax at the temperature, then keep tokens in descending probability while
//! `p >= min_p · p_max` (the best token always survives) and until the kept mass reaches
//! `top_p`, then draw proportionally from what is kept.

use dsv4_model::pick::{max_logit, Next, Want};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use dsv4_model::pick::argmax;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 (or less) means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 means off.
    pub top_k: usize,
    pub min_p: f32,
    /// `None` draws a seed from the clock; a given seed makes the draw sequence reproducible.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// The defaults DeepSeek's hosted API and ds4 use: temperature 1, top-p 1, min-p 0.05.
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.05, seed: None }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Default::default() }
    }

    /// Rejects values outside their meaningful ranges instead of sampling something odd.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature > 100.0 {
            return Err(format!("temperature {} is outside 0..=100", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p.is_nan() {
            return Err(format!("top_p {} is outside 0..=1", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) || self.min_p.is_nan() {
            return Err(format!("min_p {} is outside 0..=1", self.min_p));
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Scratch reused across steps: (token, probability).
    kept: Vec<(u32, f32)>,
}

/// The cap on top-k, so a huge k cannot turn every step into a full sort.
const TOP_K_CAP: usize = 1024;

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let seed = params.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            t.as_nanos() as u64 ^ (std::process::id() as u64) << 32
        });
        Sampler { params, rng: ChaCha8Rng::seed_from_u64(seed), kept: Vec::new() }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// What the next draw needs from the logits row (`force_greedy` as for
    /// [`sample`](Self::sample)): the argmax when it is greedy (also at a temperature so low
    /// that 1 / T overflows), the min-p kept set when min-p is on without top-k, else the
    /// whole row.
    pub fn want(&self, force_greedy: bool) -> Want {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        if force_greedy || p.temperature <= 0.0 || p.top_k == 1 || !inv_t.is_finite() {
            Want::Argmax
        } else if p.top_k > 0 || p.min_p <= 0.0 {
            Want::Row
        } else {
            Want::Kept { inv_t, floor: p.min_p.ln() }
        }
    }

    /// Picks the next token. `force_greedy` overrides the temperature (DSML syntax is decoded
    /// greedily even when its payloads are sampled).
    pub fn sample(&mut self, logits: &[f32], force_greedy: bool) -> u32 {
        let want = self.want(force_greedy);
        if want == Want::Argmax {
            return argmax(logits);
        }
        let max = max_logit(logits);
        if !max.is_finite() {
            return argmax(logits);
        }
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        self.kept.clear();
        if p.top_k > 0 {
            let k = p.top_k.min(TOP_K_CAP).min(logits.len());
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            idx.truncate(k);
            self.kept.extend(idx.into_iter().map(|t| (t, ((logits[t as usize] - max) * inv_t).exp())));
        } else {
            // Relative to the best token, a token whose probability falls under min_p can be
            // dropped before normalising: p/p_max = exp((l - max)/T).
            let floor = if p.min_p > 0.0 { p.min_p.ln() } else { f32::NEG_INFINITY };
            for (t, &l) in logits.iter().enumerate() {
                if dsv4_model::pick::kept(l, max, inv_t, floor) {
                    self.kept.push((t as u32, ((l - max) * inv_t).exp()));
                }
            }
        }
        self.draw()
    }

    /// As [`sample`](Self::sample) from what a backend handed back: the same token from the
    /// same generator state. A reduction made for another draw than this one is an error (the
    /// caller asked for the wrong [`Want`]), never a guess.
    pub fn sample_next(&mut self, next: &Next, force_greedy: bool) -> Result<u32, String> {
        let r = match next {
            Next::Logits(l) => return Ok(self.sample(l, force_greedy)),
            Next::Reduced(r) => r,
        };
        let want = self.want(force_greedy);
        if r.want != want {
            return Err(format!("logits reduced for {:?}, the draw needs {want:?}", r.want));
        }
        let Want::Kept { inv_t, .. } = want else { return Ok(r.argmax) };
        if !r.max.is_finite() {
            return Ok(r.argmax);
        }
        self.kept.clear();
        self.kept.extend(r.kept.iter().map(|&(t, l)| (t, ((l - r.max) * inv_t).exp())));
        if self.kept.is_empty() {
            return Err("a kept set without its best token".into());
        }
        Ok(self.draw())
    }

    /// Draws from `self.kept` ((token, relative probability), at least one): normalises,
    /// orders, applies min-p and top-p, and draws.
    fn draw(&mut self) -> u32 {
        let p = &self.params;
        let sum: f32 = self.kept.iter().map(|k| k.1).sum();
        self.kept.iter_mut().for_each(|k| k.1 /= sum);
        // Descending probability, ties by token id so the order is reproducible.
        self.kept.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let pmax = self.kept[0].1;
        let mut mass = 0.0;
        let mut n = 0;
        for &(_, prob) in &self.kept {
            if n > 0 && (prob < p.min_p * pmax || mass >= p.top_p) {
                break;
            }
            mass += prob;
            n += 1;
        }
        let r: f32 = self.rng.gen::<f32>() * mass;
        let mut acc = 0.0;
        for &(t, prob) in &self.kept[..n] {
            acc += prob;
            if r < acc {
                return t;
            }
        }
        self.kept[n - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, top_p: f32, top_k: usize, min_p: f32) -> SamplingParams {
        SamplingParams { temperature: t, top_p, top_k, min_p, seed: Some(42) }
    }

    fn counts(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<usize> {
        let mut c = vec![0; logits.len()];
        for _ in 0..n {
            c[s.sample(logits, false) as usize] += 1;
        }
        c
    }

    #[test]
    fn greedy_and_forced_greedy_take_the_argmax() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        assert_eq!(Sampler::new(SamplingParams::greedy()).sample(&logits, false), 1);
        let mut s = Sampler::new(params(5.0, 1.0, 0, 0.0));
        assert!((0..50).all(|_| s.sample(&logits, true) == 1));
        assert_eq!(argmax(&[1.0, 5.0, 5.0]), 1, "ties go to the lower index");
        // Against the plain one-pass scan, over lengths around the 8-lane chunks, with NaNs,
        // infinities and ties anywhere.
        let naive = |v: &[f32]| {
            let mut best = 0;
            for (i, &l) in v.iter().enumerate() {
                if l > v[best] || (v[best].is_nan() && !l.is_nan()) {
                    best = i;
                }
            }
            if v.iter().all(|x| x.is_nan()) { 0 } else { best as u32 }
        };
        let mut state = 7u64;
        for len in [1usize, 7, 8, 9, 16, 17, 100, 129_280] {
            for round in 0..4 {
                let v: Vec<f32> = (0..len)
                    .map(|i| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        match (state >> 59, round) {
                            (0, 1) => f32::NAN,
                            (1, 2) => f32::INFINITY,
                            (2, 3) => -f32::INFINITY,
                            _ => ((state >> 40) % 64) as f32 - (i % 3) as f32,
                        }
                    })
                    .collect();
                assert_eq!(argmax(&v), naive(&v), "length {len}, round {round}");
            }
        }
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NAN, 2.0, 3.0, 3.0]), 2);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 97) as f32 * 0.05).collect();
        let mut a = Sampler::new(params(1.0, 0.95, 0, 0.0));
        let mut b = Sampler::new(params(1.0, 0.95, 0, 0.0));
        let da: Vec<u32> = (0..200).map(|_| a.sample(&logits, false)).collect();
        let db: Vec<u32> = (0..200).map(|_| b.sample(&logits, false)).collect();
        assert_eq!(da, db);
        assert!(da.iter().collect::<std::collections::HashSet<_>>().len() > 10, "it really samples");
    }

    #[test]
    fn temperature_one_follows_the_softmax() {
        // p = [0.5, 0.25, 0.25] from logits ln 2, 0, 0.
        let logits = [2f32.ln(), 0.0, 0.0];
        let c = counts(&mut Sampler::new(params(1.0, 1.0, 0, 0.0)), &logits, 20_000);
        let f: Vec<f64> = c.iter().map(|&x| x as f64 / 20_000.0).collect();
        assert!((f[0] - 0.5).abs() < 0.02 && (f[1] - 0.25).abs() < 0.02, "{f:?}");
    }

    #[test]
    fn filters_remove_the_tail() {
        let logits = [3.0, 2.5, 0.0, -2.0, -5.0];
        // min_p 0.2: p/p_max = exp(l - 3) >= 0.2 keeps only tokens 0 and 1.
        let c = counts(&mut Sampler::new(params(1.0, 1.0, 0, 0.2)), &logits, 5000);
        assert!(c[2] == 0 && c[3] == 0 && c[4] == 0 && c[0] > 0 && c[1] > 0, "{c:?}");
        // top_k 2: the same two.
        let c = counts(&mut Sampler::new(params(1.0, 1.0, 2, 0.0)), &logits, 5000);
        assert!(c[2..].iter().all(|&x| x == 0) && c[1] > 0, "{c:?}");
        // top_p 0.5: the best token alone holds more than half the mass.
        let c = counts(&mut Sampler::new(params(1.0, 0.5, 0, 0.0)), &logits, 2000);
        assert_eq!(c[0], 2000, "{c:?}");
    }

    /// Rows with ties, NaN and infinities, some all NaN.
    fn odd_rows(n: usize) -> Vec<Vec<f32>> {
        let mut state = 11u64;
        (0..n)
            .map(|r| {
                (0..300)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        match (r % 5, state >> 58) {
                            (4, _) => f32::NAN,
                            (1, 0) => f32::NAN,
                            (2, 1) => f32::NEG_INFINITY,
                            (3, 2) if r % 2 == 1 => f32::INFINITY,
                            _ => ((state >> 40) % 16) as f32 * 0.25,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn reduced_rows_draw_what_whole_rows_draw() {
        let kinds = [
            SamplingParams::greedy(),
            SamplingParams { seed: Some(5), ..SamplingParams::default() },
            params(0.7, 0.9, 0, 0.1),
            params(1.3, 1.0, 0, 0.01),
            params(1.0, 1.0, 3, 0.05),
            params(1.0, 0.8, 0, 0.0),
            params(1e-40, 1.0, 0, 0.05),
        ];
        let rows = odd_rows(40);
        for kind in kinds {
            let (mut whole, mut reduced) = (Sampler::new(kind.clone()), Sampler::new(kind.clone()));
            let mut wants = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                for draw in 0..5 {
                    let greedy = (i + draw) % 7 == 0;
                    let want = reduced.want(greedy);
                    wants.push(want);
                    let next = Next::of(row.clone(), want);
                    let a = whole.sample(row, greedy);
                    let b = reduced.sample_next(&next, greedy).unwrap();
                    assert_eq!(a, b, "{kind:?}, row {i}, draw {draw}, {want:?}");
                }
            }
            let kinds_of_want = |f: fn(&Want) -> bool| wants.iter().any(f);
            if kind.temperature > 1e-3 && kind.top_k == 0 && kind.min_p > 0.0 {
                assert!(kinds_of_want(|w| matches!(w, Want::Kept { .. })), "{kind:?} drew from kept sets");
            }
        }
        // A reduction made for another draw is refused.
        let mut s = Sampler::new(SamplingParams::default());
        let argmax_only = Next::of(rows[0].clone(), Want::Argmax);
        assert!(s.sample_next(&argmax_only, false).is_err());
        assert!(s.sample_next(&argmax_only, true).is_ok());
    }

    #[test]
    fn invalid_params_are_named() {
        assert!(params(f32::NAN, 1.0, 0, 0.0).validate().unwrap_err().contains("temperature"));
        assert!(params(1.0, 1.5, 0, 0.0).validate().unwrap_err().contains("top_p"));
        assert!(params(1.0, 1.0, 0, -0.1).validate().unwrap_err().contains("min_p"));
        assert!(SamplingParams::default().validate().is_ok());
    }
}
