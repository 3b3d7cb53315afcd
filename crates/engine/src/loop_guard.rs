//! A guard against endless verbatim loops: greedy or low-temperature decoding of a weak
//! prompt can repeat the same span forever, burning the whole token budget. The guard stops
//! generation once the last tokens are one span repeated `min_repeats` times covering at least
//! `min_tokens` tokens. Off for test-vector runs, which must decode exactly as told.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopGuard {
    pub max_period: usize,
    pub min_repeats: usize,
    pub min_tokens: usize,
}

impl Default for LoopGuard {
    /// Loose enough never to cut real text (a period of up to 256 tokens must repeat 8 times,
    /// and the loop must cover at least 512 tokens).
    fn default() -> Self {
        LoopGuard { max_period: 256, min_repeats: 8, min_tokens: 512 }
    }
}

impl LoopGuard {
    /// True when `tokens` ends in a loop by this guard's definition.
    pub fn looping(&self, tokens: &[u32]) -> bool {
        for period in 1..=self.max_period {
            let span = period * self.min_repeats.max(self.min_tokens.div_ceil(period));
            if span > tokens.len() {
                break;
            }
            let tail = &tokens[tokens.len() - span..];
            if tail.iter().zip(&tail[period..]).all(|(a, b)| a == b) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_repeated_spans_and_nothing_else() {
        let g = LoopGuard { max_period: 8, min_repeats: 4, min_tokens: 12 };
        let rep: Vec<u32> = [1, 2, 3].repeat(4);
        assert!(g.looping(&rep));
        assert!(!g.looping(&rep[1..]), "11 tokens are under min_tokens");
        let mut almost = rep.clone();
        almost[5] = 9;
        assert!(!g.looping(&almost));
        assert!(g.looping(&[vec![7, 8, 9], vec![5; 12]].concat()));
        let varied: Vec<u32> = (0..1000).map(|i| (i * 7919 % 1009) as u32).collect();
        assert!(!LoopGuard::default().looping(&varied));
    }
}
