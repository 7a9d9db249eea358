//! numpy's legacy `np.random.RandomState`: the MT19937 generator seeded like
//! `RandomState(seed)` and `randint` for `uint32` / `uint64` bounded ranges (numpy's masked
//! rejection sampling), bit for bit. MinHash draws its permutations from it, as datasketch
//! does.

/// MT19937 (the 32-bit Mersenne Twister) in numpy's legacy seeding (`init_genrand`).
#[derive(Clone)]
pub struct Mt19937 {
    mt: [u32; 624],
    idx: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937").field("idx", &self.idx).finish()
    }
}

const N: usize = 624;
const M: usize = 397;

impl Mt19937 {
    /// The generator of `np.random.RandomState(seed)`.
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; N];
        mt[0] = seed;
        for i in 1..N {
            mt[i] = 1812433253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Self { mt, idx: N }
    }

    fn generate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..N {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % N] & LOWER);
            let mut v = self.mt[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= MATRIX_A;
            }
            self.mt[i] = v;
        }
        self.idx = 0;
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= N {
            self.generate();
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// The next 64-bit output: two 32-bit outputs, the first in the high half (numpy's
    /// `mt19937_next64`).
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        (hi << 32) | self.next_u32() as u64
    }

    /// `randint(low, high, dtype=np.uint32)`: uniform in `[low, high)`; `high > low`.
    pub fn randint_u32(&mut self, low: u32, high_exclusive: u64) -> u32 {
        let rng = (high_exclusive - 1 - low as u64) as u32;
        if rng == 0 {
            return low;
        }
        if rng == u32::MAX {
            return low.wrapping_add(self.next_u32());
        }
        let mask = mask32(rng);
        loop {
            let v = self.next_u32() & mask;
            if v <= rng {
                return low + v;
            }
        }
    }

    /// `randint(low, high, dtype=np.uint64)`: uniform in `[low, high)`; `high > low`.
    pub fn randint_u64(&mut self, low: u64, high_exclusive: u64) -> u64 {
        let rng = high_exclusive - 1 - low;
        if rng == 0 {
            return low;
        }
        if rng <= u32::MAX as u64 {
            return self.randint_u32(0, rng + 1) as u64 + low;
        }
        let mask = mask64(rng);
        loop {
            let v = self.next_u64() & mask;
            if v <= rng {
                return low + v;
            }
        }
    }
}

fn mask32(mut m: u32) -> u32 {
    m |= m >> 1;
    m |= m >> 2;
    m |= m >> 4;
    m |= m >> 8;
    m | (m >> 16)
}

fn mask64(mut m: u64) -> u64 {
    m |= m >> 1;
    m |= m >> 2;
    m |= m >> 4;
    m |= m >> 8;
    m |= m >> 16;
    m | (m >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outputs_match_the_reference_mt19937() {
        // init_genrand(5489), the reference implementation's default seed: 10000th output
        // is 4123659995 (C++ std::mt19937's required value).
        let mut g = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10000 {
            last = g.next_u32();
        }
        assert_eq!(last, 4123659995);
    }
}
