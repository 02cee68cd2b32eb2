//! [`Rng`]: a tiny deterministic generator for randomised tests, so a failing case can be replayed from its seed.

/// xorshift64*: deterministic randomness without a dependency. The same seed gives the same sequence on every
/// machine.
///
/// ```
/// let mut a = tower_kit_test_support::Rng::new(7);
/// let mut b = tower_kit_test_support::Rng::new(7);
/// assert_eq!(a.next(), b.next());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero seed: xorshift never leaves 0).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A value with a random magnitude (a random bit length from 0 to 64), so small, realistic and extreme values
    /// all show up.
    pub fn magnitude(&mut self) -> u64 {
        let bits = self.below(65) as u32;
        if bits == 0 {
            0
        } else {
            self.next() >> (64 - bits)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sequence_and_bounds() {
        let mut rng = Rng::new(1);
        let first = rng.next();
        assert_eq!(Rng::new(1).next(), first);
        assert_ne!(rng.next(), first);
        let mut rng = Rng::new(0);
        for _ in 0..1000 {
            assert!(rng.below(7) < 7);
            let _ = rng.magnitude();
        }
    }
}
