//! Random draws for load shapes and trace generation, from iluvatar_core's SplitMix64 so
//! that a seed reproduces a run exactly.

use iluvatar_core::{Rng, SplitMix64};

pub struct Draw(SplitMix64);

impl Draw {
    pub fn new(seed: u64) -> Self {
        Draw(SplitMix64::new(seed))
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given rate (mean 1/rate).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.uniform()).ln() / rate
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Log-normal with the given mean and sigma of the underlying normal.
    pub fn lognormal_mean(&mut self, mean: f64, sigma: f64) -> f64 {
        let mu = mean.ln() - sigma * sigma / 2.0;
        (mu + sigma * self.normal()).exp()
    }

    /// An index drawn with probability proportional to `weights` (cumulative, ascending).
    pub fn pick(&mut self, cumulative: &[f64]) -> usize {
        let total = *cumulative.last().unwrap_or(&0.0);
        let x = self.uniform() * total;
        cumulative.partition_point(|&c| c <= x).min(cumulative.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_sane() {
        let (mut a, mut b) = (Draw::new(7), Draw::new(7));
        assert_eq!(a.uniform(), b.uniform());
        let mean = (0..20000).map(|_| a.exponential(2.0)).sum::<f64>() / 20000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let counts = (0..10000).fold([0; 2], |mut c, _| {
            c[a.pick(&[1.0, 4.0])] += 1;
            c
        });
        assert!((2300..2700).contains(&counts[0]), "{counts:?}");
    }
}
